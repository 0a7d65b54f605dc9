"""Section-L helpers on top of harness.py: http hook server, mock_api_l.py, channel_server_l.py, inline --settings."""
import json, os, subprocess, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
from harness import BASE, Claude, make_env, seed_config, strip_ansi  # noqa: F401


class HookServer:
    """Logging HTTP server on 127.0.0.1 for "type":"http" hooks.

    Each request is appended to RUNDIR/hooks.log as {t, path, headers, body}. policy(path, body) returns
    (status, body_bytes) or None (= 200 "{}"); on_request(entry) is called before answering.
    """

    def __init__(self, rundir, policy=None, on_request=None):
        self.log_path = rundir + "/hooks.log"
        self.entries = []
        self.lock = threading.Lock()
        self.policy = policy
        self.on_request = on_request
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except Exception:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                e = {"t": round(t, 4), "path": self.path, "headers": dict(self.headers.items()), "body": body,
                     "conn": "%s:%s" % self.client_address}
                with outer.lock:
                    outer.entries.append(e)
                    with open(outer.log_path, "a") as f:
                        f.write(json.dumps(e) + "\n")
                if outer.on_request:
                    outer.on_request(e)
                ans = outer.policy(self.path, body) if outer.policy else None
                status, data = ans if ans else (200, b"{}")
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def url(self, event):
        return f"http://127.0.0.1:{self.port}/hook/{event}"

    def of(self, event):
        with self.lock:
            return [e for e in self.entries if e["path"].startswith(f"/hook/{event}")]

    def stop(self):
        self.srv.shutdown()


class MockL(harness.Mock):
    def __init__(self, rundir):
        self.portfile = rundir + "/mock.port"
        self.log = rundir + "/api.log"
        if os.path.exists(self.portfile):
            os.unlink(self.portfile)
        self.proc = subprocess.Popen(["python3", BASE + "/mock_api_l.py", self.portfile, self.log])
        for _ in range(100):
            if os.path.exists(self.portfile) and open(self.portfile).read():
                break
            time.sleep(0.05)
        self.port = int(open(self.portfile).read())

    def posts(self):
        return [q for q in self.requests() if q.get("method") == "POST" and q.get("label") != "count_tokens"
                and "body" in q]


def http_hook(hs, event, headers=None, allowed=None, timeout=None):
    h = {"type": "http", "url": hs.url(event)}
    if headers:
        h["headers"] = headers
    if allowed:
        h["allowedEnvVars"] = allowed
    if timeout:
        h["timeout"] = timeout
    return h


def settings_for(hs, events=("UserPromptSubmit", "Stop", "StopFailure"), ups_headers=None, ups_allowed=None,
                 extra=None):
    hooks = {}
    for ev in events:
        hk = http_hook(hs, ev, ups_headers, ups_allowed) if ev == "UserPromptSubmit" else http_hook(hs, ev)
        hooks[ev] = [{"hooks": [hk]}]
    for ev, lst in (extra or {}).items():
        hooks.setdefault(ev, [{"hooks": []}])[0]["hooks"].extend(lst)
    return {"hooks": hooks}


def make_args_l(rundir, session_flag, session_id, settings, server="channel_server_l.py"):
    mcp = {"mcpServers": {"synthesis": {"command": "python3", "args": [BASE + "/" + server, rundir]}}}
    mcp_path = rundir + "/mcp.json"
    with open(mcp_path, "w") as f:
        json.dump(mcp, f)
    args = ["--mcp-config", mcp_path, "--strict-mcp-config",
            "--dangerously-load-development-channels", "server:synthesis"]
    if session_flag:
        args += [session_flag, session_id]
    return args + ["--permission-mode", "dontAsk", "--allowedTools", "mcp__synthesis__reply",
                   "--settings", json.dumps(settings), "--debug-file", rundir + "/debug.log"]


class RunL:
    """A run directory for section L: workspace, config dir, mock_api_l, hook server, push dir."""

    def __init__(self, name, policy=None, on_request=None, fresh=True):
        self.dir = f"{BASE}/runs/{name}"
        if fresh and os.path.exists(self.dir):
            subprocess.run(["rm", "-rf", self.dir])
        os.makedirs(self.dir + "/push", exist_ok=True)
        self.ws = self.dir + "/ws"
        os.makedirs(self.ws, exist_ok=True)
        self.cfg = self.dir + "/cfg"
        self.mock = MockL(self.dir)
        self.hooks = HookServer(self.dir, policy, on_request)
        self.n = len([p for p in os.listdir(self.dir + "/push") if p.endswith(".txt")])

    def push(self, text):
        self.n += 1
        tmp = f"{self.dir}/push/.{self.n}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, f"{self.dir}/push/{self.n}.txt")
        return time.time()

    def lines(self, name):
        p = f"{self.dir}/{name}"
        if not os.path.exists(p):
            return []
        out = []
        for l in open(p):
            if l.strip():
                try:
                    out.append(json.loads(l))
                except Exception:
                    pass
        return out

    def server(self, kind=None):
        return [l for l in self.lines("server.log") if kind is None or l["kind"] == kind]

    def tools_list_answered(self):
        return [l for l in self.server("out") if "tools" in (l["msg"].get("result") or {})]

    def wait(self, pred, timeout=20, step=0.02):
        end = time.time() + timeout
        while time.time() < end:
            v = pred()
            if v:
                return v
            time.sleep(step)
        return None

    def launch(self, session_flag, session_id, settings, name="term", extra_env=None, max_seconds=90):
        args = make_args_l(self.dir, session_flag, session_id, settings)
        env = make_env(self.mock.port, self.cfg, self.dir, extra_env)
        env["CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL"] = "1"
        return Claude(self.dir, args, env, self.ws, name=name, max_seconds=max_seconds)

    def start(self, session_flag, session_id, settings, name="term", extra_env=None, max_seconds=90,
              ready_wait=1.3):
        """Launch, confirm the dev dialog with 1, wait for tools/list and then ready_wait seconds."""
        n0 = len(self.tools_list_answered())
        c = self.launch(session_flag, session_id, settings, name, extra_env, max_seconds)
        if not c.wait_text("local development", 15):
            return c, False
        c.write(b"1")
        ok = self.wait(lambda: len(self.tools_list_answered()) > n0, 15)
        time.sleep(ready_wait)
        return c, bool(ok)

    def transcript(self, sid):
        for root, _, files in os.walk(self.cfg + "/projects"):
            for fn in files:
                if fn == sid + ".jsonl":
                    return os.path.join(root, fn)
        return None

    def records(self, sid):
        p = self.transcript(sid)
        if not p:
            return None
        out = []
        for l in open(p):
            try:
                out.append(json.loads(l))
            except Exception:
                out.append({"_bad": l})
        return out

    def close(self):
        self.mock.stop()
        self.hooks.stop()


def msg_text(m):
    c = m.get("content")
    if isinstance(c, str):
        return c
    return " | ".join((x.get("text") or (x.get("type", "") + ":" + json.dumps(x.get("input") or x.get("content"))))
                      for x in c)

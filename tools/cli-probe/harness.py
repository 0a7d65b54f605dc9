"""Harness: run the real claude CLI under a PTY against the mock API and the channel server."""
import fcntl, json, os, pty, re, signal, struct, subprocess, termios, threading, time, uuid

import pyte

BASE = "/tmp/cli-facts"
CLAUDE = BASE + "/cc/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
API_KEY = "sk-ant-mock-0123456789abcdefghijklmnopqrstuvwxyz"
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[()][A-Za-z0-9]|\x1b[=>78cDEHMNOZ]")
COLS, ROWS = 120, 40


def strip_ansi(b: bytes) -> str:
    return ANSI.sub(b"", b).decode("utf-8", "replace")


class Mock:
    def __init__(self, rundir):
        self.portfile = rundir + "/mock.port"
        self.log = rundir + "/api.log"
        if os.path.exists(self.portfile):
            os.unlink(self.portfile)
        self.proc = subprocess.Popen(["python3", BASE + "/mock_api.py", self.portfile, self.log])
        for _ in range(100):
            if os.path.exists(self.portfile) and open(self.portfile).read():
                break
            time.sleep(0.05)
        self.port = int(open(self.portfile).read())

    def requests(self):
        if not os.path.exists(self.log):
            return []
        return [json.loads(l) for l in open(self.log)]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def seed_config(cfgdir, workspace, api_key=True, trust=True, onboarding=True):
    os.makedirs(cfgdir, exist_ok=True)
    cfg = {"cachedGrowthBookFeatures": {"tengu_harbor": True}}
    if onboarding:
        cfg["hasCompletedOnboarding"] = True
    if api_key:
        cfg["customApiKeyResponses"] = {"approved": [API_KEY[-20:]], "rejected": []}
    if trust:
        cfg["projects"] = {os.path.realpath(workspace): {"hasTrustDialogAccepted": True}}
    with open(cfgdir + "/.claude.json", "w") as f:
        json.dump(cfg, f)


class Claude:
    def __init__(self, rundir, args, env, cwd, name="term", max_seconds=60):
        self.rundir = rundir
        self.raw_path = f"{rundir}/{name}.raw"
        self.raw = bytearray()
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.t0 = time.time()
        self.exit_code = None
        self.marks = []  # (t, offset, label)
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(cwd)
            os.execve(CLAUDE, [CLAUDE] + args, env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.watchdog = threading.Timer(max_seconds, self._watchdog)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _watchdog(self):
        if self.exit_code is None:
            print(f"[harness] watchdog: killing claude pid {self.pid}")
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _read(self):
        with open(self.raw_path, "wb") as f:
            while True:
                try:
                    b = os.read(self.fd, 65536)
                except OSError:
                    break
                if not b:
                    break
                f.write(b)
                f.flush()
                with self.lock:
                    self.raw += b
                    try:
                        self.stream.feed(b)
                    except Exception:
                        pass
        _, status = os.waitpid(self.pid, 0)
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.exit_time = time.time()
        self.watchdog.cancel()

    def text(self, start=0):
        with self.lock:
            return strip_ansi(bytes(self.raw[start:]))

    def display(self):
        with self.lock:
            return "\n".join(l.rstrip() for l in self.screen.display).rstrip()

    def offset(self):
        with self.lock:
            return len(self.raw)

    def wait_text(self, s, timeout=20, start=0):
        end = time.time() + timeout
        while time.time() < end:
            t = self.text(start)
            if s in t or s.replace(" ", "") in t.replace(" ", "") or s in self.display():
                return True
            if self.exit_code is not None:
                return False
            time.sleep(0.05)
        return False

    def write(self, b):
        os.write(self.fd, b)

    def wait_exit(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end and self.exit_code is None:
            time.sleep(0.05)
        return self.exit_code

    def signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        if self.exit_code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait_exit(5)


def make_env(mock_port, cfgdir, rundir, extra=None):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "CLAUDE_CONFIG_DIR": cfgdir,
        "CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF": "1",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{mock_port}",
        "ANTHROPIC_API_KEY": API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "ENABLE_TOOL_SEARCH": "false",
        "SYNTHESIS_TEST_VAR": "hello",
    }
    if extra:
        env.update(extra)
    return env


def make_args(rundir, session_flag, session_id):
    mcp = {"mcpServers": {"synthesis": {"command": "python3",
                                        "args": [BASE + "/channel_server.py", rundir]}}}
    mcp_path = rundir + "/mcp.json"
    with open(mcp_path, "w") as f:
        json.dump(mcp, f)
    settings = {"hooks": {"Stop": [{"hooks": [{"type": "command",
                                               "command": f"python3 {BASE}/stop_hook.py {rundir}/stop_hooks.log"}]}]}}
    return ["--mcp-config", mcp_path, "--strict-mcp-config",
            "--dangerously-load-development-channels", "server:synthesis",
            session_flag, session_id,
            "--permission-mode", "dontAsk", "--allowedTools", "mcp__synthesis__reply",
            "--settings", json.dumps(settings),
            "--debug-file", rundir + "/debug.log"]


class Run:
    """One test run directory: workspace, config dir, mock, push dir."""

    def __init__(self, name, fresh=True):
        self.dir = f"{BASE}/runs/{name}"
        if fresh and os.path.exists(self.dir):
            subprocess.run(["rm", "-rf", self.dir])
        os.makedirs(self.dir + "/push", exist_ok=True)
        self.ws = self.dir + "/ws"
        os.makedirs(self.ws, exist_ok=True)
        self.cfg = self.dir + "/cfg"
        self.mock = Mock(self.dir)
        self.n = 0

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
        return [json.loads(l) for l in open(p) if l.strip()]

    def wait_lines(self, name, n, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if len(self.lines(name)) >= n:
                return True
            time.sleep(0.05)
        return False

    def launch(self, session_flag, session_id, name="term", extra_env=None, max_seconds=60):
        args = make_args(self.dir, session_flag, session_id)
        env = make_env(self.mock.port, self.cfg, self.dir, extra_env)
        return Claude(self.dir, args, env, self.ws, name=name, max_seconds=max_seconds)

    def transcript(self, sid):
        proj = self.cfg + "/projects"
        for root, _, files in os.walk(proj):
            for fn in files:
                if fn == sid + ".jsonl":
                    return os.path.join(root, fn)
        return None

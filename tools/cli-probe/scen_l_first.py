"""L4: the channel server pushes its first message 0 ms after answering tools/list (CHANNEL_FIRST_PUSH).
N fresh starts (new run dir, config dir and session each). Per start: does the first model request offer
mcp__synthesis__reply, is the message answered, what the server receives after tools/list, when SessionStart
(command hook; http is not supported for it) and UserPromptSubmit fire, and the debug-log lines on the way.

usage: python3 scen_l_first.py N [NAME] [DELAY_S] [RETRY_S]
  DELAY_S: CHANNEL_FIRST_PUSH_DELAY (default 0); RETRY_S: if no UserPromptSubmit came RETRY_S after the first
  push, push "retry message" through the push dir (watcher polls from 0 s) and wait for that.
"""
import json, os, re, sys, time, uuid, datetime
from harness_l import *

N = int(sys.argv[1]) if len(sys.argv) > 1 else 15
NAME = sys.argv[2] if len(sys.argv) > 2 else "l_first"
DELAY = sys.argv[3] if len(sys.argv) > 3 else "0"
RETRY = float(sys.argv[4]) if len(sys.argv) > 4 else 0
results = []
for i in range(N):
    r = RunL(f"{NAME}/{i:02d}")
    seed_config(r.cfg, r.ws)
    SID = str(uuid.uuid4())
    ss_cmd = {"type": "command", "command": f"python3 {BASE}/stop_hook.py {r.dir}/session_start.log"}
    settings = settings_for(r.hooks, ("UserPromptSubmit", "Stop", "StopFailure"), extra={"SessionStart": [ss_cmd]})
    env = {"CHANNEL_FIRST_PUSH": "first message", "CHANNEL_FIRST_PUSH_DELAY": DELAY, "CHANNEL_WATCH_DELAY": "0"}
    t_spawn = time.time()
    c = r.launch("--session-id", SID, settings, extra_env=env, max_seconds=60)
    ok = c.wait_text("local development", 15)
    t_dialog = time.time()
    c.write(b"1")
    t_confirm = time.time()
    retried = None
    if RETRY:
        r.wait(lambda: r.server("push"), 5)
        if not r.wait(lambda: r.hooks.of("UserPromptSubmit"), RETRY):
            retried = time.time()
            r.push("retry message")
    done = r.wait(lambda: r.hooks.of("Stop") or r.hooks.of("StopFailure"), 6)
    time.sleep(0.5)
    c.signal(15); c.wait_exit(10); c.kill()
    r.close()
    srv = r.lines("server.log")
    tl = [l["t"] for l in srv if l["kind"] == "out" and "tools" in (l["msg"].get("result") or {})]
    t_tl = tl[0] if tl else None
    push = [l for l in srv if l["kind"] == "push"]
    after = [(round((l["t"] - t_tl) * 1000, 1), l["msg"].get("method")) for l in srv
             if l["kind"] == "in" and t_tl and l["t"] >= t_tl]
    posts = r.mock.posts()
    first = posts[0] if posts else None
    tools = [t["name"] for t in (first["body"].get("tools") or [])] if first else []
    ss = r.lines("session_start.log")
    ups = r.hooks.of("UserPromptSubmit")
    dbg = {}
    for line in open(r.dir + "/debug.log"):
        m = re.match(r"(\S+Z) \[\w+\] (.*)", line)
        if not m:
            continue
        t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        for key in ("Channel notifications registered", "notifications/claude/channel", "Successfully connected",
                    "Connection established", "SessionStart", "UserPromptSubmit"):
            if key in m.group(2) and key not in dbg:
                dbg[key] = round((t - t_tl) * 1000) if t_tl else None
    res = {"i": i, "dialog_ok": ok, "t_tools_list_from_confirm_ms": round((t_tl - t_confirm) * 1000) if t_tl else None,
           "push_after_tools_list_ms": round((push[0]["t"] - t_tl) * 1000, 1) if push and t_tl else None,
           "first_request_ms": round((first["t"] - t_tl) * 1000) if first and t_tl else None,
           "first_label": first and first["label"], "reply_tool_offered": "mcp__synthesis__reply" in tools,
           "n_tools": len(tools), "answered": bool(r.lines("replies.log")),
           "stop": [h["path"].split("/")[-1] for h in r.hooks.entries if "Stop" in h["path"]],
           "ups_ms": round((ups[0]["t"] - t_tl) * 1000) if ups and t_tl else None,
           "session_start_ms": round((ss[0]["t"] - t_tl) * 1000) if ss and t_tl else None,
           "session_start_source": ss[0]["stdin"].get("source") if ss else None,
           "server_in_after_tools_list": after, "debug_ms": dbg,
           "retried": bool(retried), "answered_texts": [x["arguments"]["text"] for x in r.lines("replies.log")],
           "retry_push_to_ups_ms": round((ups[0]["t"] - r.server("push")[-1]["t"]) * 1000) if retried and ups else None}
    results.append(res)
    print(json.dumps(res), flush=True)
    time.sleep(0.5)
json.dump(results, open(f"{BASE}/runs/{NAME}/results.json", "w"), indent=1)
print("answered", sum(r["answered"] for r in results), "of", len(results),
      "; reply tool offered in first request", sum(r["reply_tool_offered"] for r in results))

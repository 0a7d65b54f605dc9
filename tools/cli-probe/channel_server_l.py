#!/usr/bin/env python3
"""channel_server.py plus knobs for section L (stdlib only).

usage: channel_server_l.py RUNDIR   (same files as channel_server.py; times with 4 decimals)
Environment (inherited from claude):
  CHANNEL_WATCH_DELAY   seconds between the tools/list answer and the first poll of RUNDIR/push (default 1.0)
  CHANNEL_FIRST_PUSH    if set: pushed as a channel message at once (0 ms) after the first tools/list answer
  CHANNEL_FIRST_PUSH_DELAY  seconds to wait before that first push (default 0)
  CHANNEL_AFTER_REPLY   "MARK=SECONDS": after answering a reply call whose text contains MARK, push
                        "after reply <n>" SECONDS later (0 = right after the result was written)
"""
import json, os, sys, threading, time, uuid

RUN = sys.argv[1] if len(sys.argv) > 1 else "/tmp/cli-facts"
PUSH = os.path.join(RUN, "push")
os.makedirs(PUSH, exist_ok=True)
OUT_LOCK = threading.Lock()
LOG_LOCK = threading.Lock()
AFTER = os.environ.get("CHANNEL_AFTER_REPLY")
after_n = [0]


def log(kind, obj, t=None):
    with LOG_LOCK:
        with open(os.path.join(RUN, "server.log"), "a") as f:
            f.write(json.dumps({"t": round(t or time.time(), 4), "kind": kind, "msg": obj}) + "\n")


def send(obj):
    with OUT_LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
        t = time.time()
    log("out", obj, t)
    return t


with open(os.path.join(RUN, "server_env.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("SYNTHESIS_") or k.startswith("CHANNEL_")}, f)


def push(text, origin):
    mid = str(uuid.uuid4())
    t = send({"jsonrpc": "2.0", "method": "notifications/claude/channel",
              "params": {"content": text, "meta": {"chat_id": "agent::chat", "message_id": mid}}})
    log("push", {"origin": origin, "message_id": mid, "content": text, "t_written": round(t, 4)}, t)


def watcher():
    time.sleep(float(os.environ.get("CHANNEL_WATCH_DELAY", "1.0")))
    done = set()
    while True:
        names = sorted((n for n in os.listdir(PUSH) if n.endswith(".txt")), key=lambda n: (len(n), n))
        for n in names:
            if n in done:
                continue
            p = os.path.join(PUSH, n)
            time.sleep(0.02)
            with open(p) as f:
                text = f.read()
            done.add(n)
            push(text, n)
        time.sleep(0.01)


TOOLS = [{
    "name": "reply",
    "description": "Send a reply to the chat the channel message came from.",
    "inputSchema": {"type": "object", "properties": {
        "chat_id": {"type": "string", "description": "chat_id attribute of the <channel> tag"},
        "text": {"type": "string", "description": "the reply text"}},
        "required": ["chat_id", "text"]},
}]
started = False
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        msg = json.loads(line)
    except Exception:
        log("bad", line)
        continue
    log("in", msg)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == "server/discover":
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": msg.get("params", {}).get("protocolVersion", "2025-06-18"),
            "capabilities": {"experimental": {"claude/channel": {}}, "tools": {}},
            "serverInfo": {"name": "synthesis", "version": "0.0.1"},
            "instructions": ("Messages arrive as <channel source=\"synthesis\" chat_id=\"...\" ...>. "
                             "Answer each one by calling the reply tool with its chat_id."),
        }})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": TOOLS}})
        if not started:
            started = True
            if os.environ.get("CHANNEL_FIRST_PUSH"):
                d = float(os.environ.get("CHANNEL_FIRST_PUSH_DELAY", "0"))
                if d:
                    threading.Timer(d, push, (os.environ["CHANNEL_FIRST_PUSH"], "first")).start()
                else:
                    push(os.environ["CHANNEL_FIRST_PUSH"], "first")
            threading.Thread(target=watcher, daemon=True).start()
    elif method == "tools/call":
        p = msg.get("params", {})
        with open(os.path.join(RUN, "replies.log"), "a") as f:
            f.write(json.dumps({"t": round(time.time(), 4), "name": p.get("name"),
                                "arguments": p.get("arguments")}) + "\n")
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "sent"}]}})
        if AFTER:
            mark, secs = AFTER.split("=")
            if mark in json.dumps(p.get("arguments")):
                after_n[0] += 1
                n = after_n[0]
                def later(n=n, s=float(secs)):
                    if s:
                        time.sleep(s)
                    push(f"after reply {n}", "after_reply")
                if float(secs) == 0:
                    later()
                else:
                    threading.Thread(target=later, daemon=True).start()
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
log("eof", {})

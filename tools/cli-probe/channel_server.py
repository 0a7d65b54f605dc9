#!/usr/bin/env python3
"""Minimal MCP stdio channel server (stdlib only), newline-delimited JSON-RPC.

usage: channel_server.py RUNDIR
  RUNDIR/push/N.txt   -> pushed as notifications/claude/channel (sorted by N)
  RUNDIR/server.log   -> JSON lines: every message in/out, pushes, tool calls
  RUNDIR/replies.log  -> JSON lines: arguments of each tools/call reply
  RUNDIR/server_env.json -> SYNTHESIS_* environment variables
"""
import json, os, sys, threading, time, uuid

RUN = sys.argv[1] if len(sys.argv) > 1 else "/tmp/cli-facts"
PUSH = os.path.join(RUN, "push")
os.makedirs(PUSH, exist_ok=True)
OUT_LOCK = threading.Lock()


def log(kind, obj):
    with open(os.path.join(RUN, "server.log"), "a") as f:
        f.write(json.dumps({"t": round(time.time(), 3), "kind": kind, "msg": obj}) + "\n")
    print(f"[channel] {kind}: {json.dumps(obj)[:300]}", file=sys.stderr, flush=True)


def send(obj):
    with OUT_LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    log("out", obj)


with open(os.path.join(RUN, "server_env.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("SYNTHESIS_")}, f)

watcher_started = threading.Event()


def watcher():
    time.sleep(1.0)
    done = set()
    while True:
        names = sorted((n for n in os.listdir(PUSH) if n.endswith(".txt")),
                       key=lambda n: (len(n), n))
        for n in names:
            if n in done:
                continue
            p = os.path.join(PUSH, n)
            time.sleep(0.05)  # let the writer finish
            with open(p) as f:
                text = f.read()
            done.add(n)
            mid = str(uuid.uuid4())
            send({"jsonrpc": "2.0", "method": "notifications/claude/channel",
                  "params": {"content": text, "meta": {"chat_id": "agent::chat", "message_id": mid}}})
            log("push", {"file": n, "message_id": mid, "content": text})
        time.sleep(0.05)


TOOLS = [{
    "name": "reply",
    "description": "Send a reply to the chat the channel message came from.",
    "inputSchema": {"type": "object", "properties": {
        "chat_id": {"type": "string", "description": "chat_id attribute of the <channel> tag"},
        "text": {"type": "string", "description": "the reply text"}},
        "required": ["chat_id", "text"]},
}]

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
        continue  # notification
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
        if not watcher_started.is_set():
            watcher_started.set()
            threading.Thread(target=watcher, daemon=True).start()
    elif method == "tools/call":
        p = msg.get("params", {})
        with open(os.path.join(RUN, "replies.log"), "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "name": p.get("name"),
                                "arguments": p.get("arguments")}) + "\n")
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "sent"}]}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
log("eof", {})

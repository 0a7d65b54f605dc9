#!/usr/bin/env python3
"""Mock Anthropic Messages API (stdlib only), mock_api.py plus section-L knobs:
"WAIT<n>" in the last channel message delays the answer n seconds, "STALL" delays it 120 s; "DONEWAIT<n>" delays the closing answer after the tool result;
a channel message without the reply tool offered is labelled "no_reply_tool".

usage: mock_api.py PORTFILE LOGFILE
Binds 127.0.0.1:0, writes the port to PORTFILE, logs every request (one JSON line) to LOGFILE.
"""
import json, re, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORTFILE, LOGFILE = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
T0 = time.time()


def log(entry):
    entry["t"] = round(time.time(), 3)
    with LOCK:
        with open(LOGFILE, "a") as f:
            f.write(json.dumps(entry) + "\n")


def blocks(content):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content or []


def decide(body):
    """Return (list of content blocks, delay seconds, label)."""
    msgs = body.get("messages", [])
    users = [m for m in msgs if m.get("role") == "user"]
    last = users[-1] if users else {"content": []}
    bl = blocks(last.get("content"))
    texts = [b.get("text", "") for b in bl if b.get("type") == "text"]
    has_tool_result = any(b.get("type") == "tool_result" for b in bl)
    tool_names = [t.get("name") for t in body.get("tools", []) or []]
    joined = "\n".join(texts)
    chans = list(re.finditer(r'<channel([^>]*)>\n?(.*?)\n?</channel>', joined, re.S))
    if chans and "mcp__synthesis__reply" in tool_names:
        m = chans[-1]
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        content = m.group(2)
        delay = 20 if "SLOW" in content else 0
        w = re.search(r"WAIT(\d+)", content)
        if w:
            delay = int(w.group(1))
        if "STALL" in content:
            delay = 120
        if "PLAIN" in content:
            return [{"type": "text", "text": "plain answer"}], delay, "plain"
        return [{
            "type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24],
            "name": "mcp__synthesis__reply",
            "input": {"chat_id": attrs.get("chat_id", ""), "text": "echo: " + content},
        }], delay, "reply"
    if chans and not has_tool_result:
        return [{"type": "text", "text": "no reply tool"}], 0, "no_reply_tool"
    if has_tool_result:
        alltext = json.dumps([m.get("content") for m in users])
        tags = re.findall(r'<channel[^>]*>(.*?)</channel>', alltext, re.S)
        w = re.search(r"DONEWAIT(\d+)", tags[-1]) if tags else None
        return [{"type": "text", "text": "done"}], int(w.group(1)) if w else 0, "done"
    return [{"type": "text", "text": "ok"}], 0, "other"


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        log({"method": "GET", "path": self.path})
        self._send_json(200, {})

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except Exception:
            body = {"_raw": raw.decode("utf-8", "replace")}
        if "count_tokens" in self.path:
            log({"method": "POST", "path": self.path, "body": body, "label": "count_tokens"})
            return self._send_json(200, {"input_tokens": 10})
        content, delay, label = decide(body)
        log({"method": "POST", "path": self.path, "label": label, "delay": delay,
             "headers": {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "anthropic-beta", "user-agent")},
             "body": body, "answer": content})
        if delay:
            time.sleep(delay)
        mid = "msg_" + uuid.uuid4().hex[:24]
        model = body.get("model", "claude-mock")
        stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
        usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        try:
            if not body.get("stream"):
                return self._send_json(200, {"id": mid, "type": "message", "role": "assistant", "model": model,
                                             "content": content, "stop_reason": stop, "stop_sequence": None,
                                             "usage": usage})
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()

            def ev(name, data):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            ev("message_start", {"type": "message_start", "message": {
                "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": dict(usage, output_tokens=1)}})
            for i, b in enumerate(content):
                if b["type"] == "text":
                    ev("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}})
                    ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "text_delta", "text": b["text"]}})
                else:
                    ev("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "tool_use", "id": b["id"],
                                                                 "name": b["name"], "input": {}}})
                    ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": json.dumps(b["input"])}})
                ev("content_block_stop", {"type": "content_block_stop", "index": i})
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": 5}})
            ev("message_stop", {"type": "message_stop"})
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError) as e:
            log({"event": "client_gone", "label": label, "err": repr(e)})


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(PORTFILE, "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()

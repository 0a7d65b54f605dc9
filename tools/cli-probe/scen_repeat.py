"""Repeat: C timing (transcript record vs Stop hook) and E ordering, fresh config, marketplace autoinstall disabled."""
import json, time, uuid
from harness import *
r = Run("repeat")
seed_config(r.cfg, r.ws)
SID = str(uuid.uuid4())
c = r.launch("--session-id", SID, max_seconds=60,
             extra_env={"CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1"})
assert c.wait_text("local development", 15)
c.write(b"1")
end = time.time() + 15
while time.time() < end and not any(l["kind"] == "out" and "tools" in l["msg"].get("result", {}) for l in r.lines("server.log")):
    time.sleep(0.05)
time.sleep(1.2)
h = 0
for i in range(6):  # single turns, alternate reply / PLAIN
    r.push(f"single {i}" + (" PLAIN" if i % 2 else "")); h += 1
    assert r.wait_lines("stop_hooks.log", h, 15)
for i in range(4):  # back to back pairs
    nrep = len(r.lines("replies.log"))
    r.push(f"pair {i} a")
    assert r.wait_lines("replies.log", nrep + 1, 15)
    r.push(f"pair {i} b"); h += 2
    assert r.wait_lines("stop_hooks.log", h, 15)
time.sleep(0.5)
c.signal(15); print("exit", c.wait_exit(10))
r.mock.stop()
# analysis
hooks = r.lines("stop_hooks.log")
pushes = [l["msg"] for l in r.lines("server.log") if l["kind"] == "push"]
tp = r.transcript(SID)
recs = [json.loads(l) for l in open(tp)]
by_mid = {}
for rec in recs:
    cont = rec.get("message", {}).get("content") if rec.get("type") == "user" else None
    if isinstance(cont, str) and "<channel" in cont:
        import re
        m = re.search(r'message_id="([^"]+)"', cont)
        by_mid[m.group(1)] = rec.get("promptId")
pid2content = {}
for p in pushes:
    pid2content[by_mid.get(p["message_id"])] = p["content"]
for hk in hooks:
    pid = hk["stdin"]["prompt_id"]
    chk = hk["transcript_check_at_hook_time"]
    present = any("<channel" in x for x in chk.get("user_records_with_promptId", []))
    print(f'{hk["t"]:.3f} hook prompt_id={pid} -> {pid2content.get(pid)!r:22} channel record present at hook time: {present} last_msg={hk["stdin"]["last_assistant_message"]!r}')
print("replies:", [x["arguments"]["text"] for x in r.lines("replies.log")])

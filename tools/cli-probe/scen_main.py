"""Scenarios B, C, D, E, F(first half) in one claude process; then F (resume) and G."""
import json, os, signal, sys, threading, time, uuid
from harness import *

r = Run("main")
seed_config(r.cfg, r.ws)
SID = str(uuid.uuid4())
open(r.dir + "/sid", "w").write(SID)
T = []  # timeline
def mark(label, **kw):
    e = {"t": round(time.time(), 3), "label": label, **kw}; T.append(e); print("[main]", json.dumps(e)[:400], flush=True)

def snap(c, label):
    with open(r.dir + "/snapshots.txt", "a") as f:
        f.write(f"\n===== {label} t={time.time():.3f} =====\n{c.display()}\n")

# transcript watcher
seen_lines = []
stop_watch = threading.Event()
def tw():
    n = 0
    while not stop_watch.is_set():
        p = r.transcript(SID)
        if p:
            lines = open(p).read().split("\n")
            complete = lines[:-1]
            for ln in complete[n:]:
                seen_lines.append((round(time.time(), 3), ln))
            n = max(n, len(complete))
        time.sleep(0.01)
threading.Thread(target=tw, daemon=True).start()

c = r.launch("--session-id", SID, max_seconds=60)
mark("spawned", pid=c.pid)
assert c.wait_text("local development", 15), c.text()
mark("dev dialog seen"); snap(c, "dev dialog")
c.write(b"1")
mark("typed 1")
# wait for tools/list answered
end = time.time() + 15
while time.time() < end and not any(l["kind"] == "out" and "tools" in l["msg"].get("result", {}) for l in r.lines("server.log")):
    time.sleep(0.05)
mark("tools/list answered")
time.sleep(1.2)

def turn(text, nhooks, nreplies=None, timeout=15):
    r.push(text); mark("pushed", text=text)
    ok = r.wait_lines("stop_hooks.log", nhooks, timeout)
    mark("stop hooks", n=len(r.lines("stop_hooks.log")), ok=ok)

# B: reply turn and PLAIN turn
turn("hello one", 1); snap(c, "after one")
turn("PLAIN two", 2); snap(c, "after two")

# E: back to back
r.push("three"); mark("pushed", text="three")
assert r.wait_lines("replies.log", 2, 15); mark("reply tool call for three seen")
r.push("four"); mark("pushed", text="four")
ok = r.wait_lines("stop_hooks.log", 4, 15); mark("stop hooks", n=len(r.lines("stop_hooks.log")), ok=ok)
snap(c, "after three/four")
time.sleep(1)

# D: interrupt
off = c.offset()
r.push("SLOW five"); mark("pushed", text="SLOW five")
time.sleep(2)
snap(c, "SLOW in flight")
c.write(b"\x1b"); mark("wrote ESC")
time.sleep(3)
mark("after ESC", hooks=len(r.lines("stop_hooks.log")))
snap(c, "3s after ESC")
open(r.dir + "/after_esc.txt", "w").write(c.text(off))
turn("six after interrupt", len(r.lines("stop_hooks.log")) + 1)
time.sleep(1)
snap(c, "after six")

# F: SIGTERM
off = c.offset()
c.signal(signal.SIGTERM); mark("SIGTERM")
code = c.wait_exit(15)
mark("exited", code=code)
tail = c.text(off)
open(r.dir + "/sigterm_tail.txt", "w").write(tail)
time.sleep(0.5)
stop_watch.set()
json.dump(T, open(r.dir + "/timeline.json", "w"), indent=1)
json.dump(seen_lines, open(r.dir + "/transcript_seen.json", "w"))
print("SIGTERM tail:", repr(tail[-600:]))
r.mock.stop()

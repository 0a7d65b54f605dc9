"""L2: the http UserPromptSubmit hook answers 200 {"decision":"block","reason":"duplicate"} (prompt contains DUP)
or {"continue":false,"stopReason":"stopped as duplicate"} (prompt contains CSTOP). Records model requests,
transcript, Stop/StopFailure hooks and screens. Also blocks a message folded into a running prompt (FOLDDUP) and one queued behind a running PLAIN prompt (QUEUEDDUP).
"""
import json, sys, time, uuid
from harness_l import *

BLOCK = json.dumps({"decision": "block", "reason": "duplicate"}).encode()
CSTOP = json.dumps({"continue": False, "stopReason": "stopped as duplicate"}).encode()


def policy(path, body):
    if path.endswith("UserPromptSubmit"):
        p = body.get("prompt", "")
        if "DUP" in p:
            return 200, BLOCK
        if "CSTOP" in p:
            return 200, CSTOP
    return None


r = RunL(sys.argv[1] if len(sys.argv) > 1 else "l_block", policy=policy)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3
seed_config(r.cfg, r.ws)
SID = str(uuid.uuid4())
json.dump({"sid": SID}, open(r.dir + "/meta.json", "w"))
settings = settings_for(r.hooks, ("UserPromptSubmit", "Stop", "StopFailure"))
c, ok = r.start("--session-id", SID, settings, max_seconds=600)
if not ok:
    print(c.display()); c.kill(); r.close(); sys.exit(1)
stops = lambda: len(r.hooks.of("Stop")) + len(r.hooks.of("StopFailure"))
ups = lambda: len(r.hooks.of("UserPromptSubmit"))
snaps = open(r.dir + "/snapshots.txt", "w")


def snap(label):
    snaps.write(f"\n===== {label} t={time.time():.3f} =====\n{c.display()}\n"); snaps.flush()


def turn(text, wait_stop=True):
    n, u, a = stops(), ups(), len(r.mock.posts())
    off = c.offset()
    r.push(text)
    r.wait(lambda: ups() > u, 5)
    if wait_stop:
        r.wait(lambda: stops() > n, 8)
    else:
        time.sleep(3)
    time.sleep(0.5)
    snap(text)
    open(f"{r.dir}/after_{text.replace(' ', '_')}.txt", "w").write(c.text(off))
    print(f"{text!r}: UPS +{ups() - u}, stops +{stops() - n}, model requests +{len(r.mock.posts()) - a}", flush=True)


turn("first ok")
for i in range(N):
    turn(f"DUP {i}", wait_stop=False)
    turn(f"after dup {i}")
for i in range(N):
    turn(f"CSTOP {i}", wait_stop=False)
    turn(f"after cstop {i}")
# a duplicate folded into a running prompt (pushed 0.6 s into a 2 s model request)
for i in range(2):
    n = stops()
    r.push(f"WAIT2 fold host {i}")
    time.sleep(0.7)
    r.push(f"FOLDDUP {i}")
    r.wait(lambda: stops() > n, 8)
    time.sleep(1)
    snap(f"fold {i}")
    turn(f"after folddup {i}")
# a duplicate queued behind a running PLAIN prompt (becomes its own prompt after that prompt's Stop)
for i in range(2):
    n = stops()
    r.push(f"WAIT2 PLAIN queue host {i}")
    time.sleep(0.7)
    r.push(f"QUEUEDDUP {i}")
    r.wait(lambda: stops() > n, 8)
    time.sleep(1.5)
    snap(f"queued {i}")
    turn(f"after queueddup {i}")
c.signal(15)
print("exit", c.wait_exit(10))
r.close()

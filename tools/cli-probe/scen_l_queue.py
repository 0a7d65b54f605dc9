"""L5 (section E again): does UserPromptSubmit fire for a message queued while busy that becomes its own prompt?
Case P: "WAIT2 PLAIN" prompt (no tool call), second message pushed 0.6 s into its model request.
Case D: reply prompt whose closing request is slow ("DONEWAIT2"), second message pushed 0.3 s after the reply call.
Case R: reply prompt with a slow first request ("WAIT2"), second message pushed 0.6 s in (folded at the tool result).
"""
import json, sys, time, uuid
from harness_l import *

r = RunL(sys.argv[1] if len(sys.argv) > 1 else "l_queue")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5
seed_config(r.cfg, r.ws)
SID = str(uuid.uuid4())
json.dump({"sid": SID}, open(r.dir + "/meta.json", "w"))
settings = settings_for(r.hooks, ("UserPromptSubmit", "Stop", "StopFailure"))
c, ok = r.start("--session-id", SID, settings, max_seconds=600)
if not ok:
    print(c.display()); c.kill(); r.close(); sys.exit(1)
stops = lambda: len(r.hooks.of("Stop")) + len(r.hooks.of("StopFailure"))
for i in range(N):
    for case in ("P", "D", "R"):
        time.sleep(0.5)
        n, nrep = stops(), len(r.lines("replies.log"))
        first = {"P": f"WAIT2 PLAIN {case}{i} a", "D": f"DONEWAIT2 {case}{i} a", "R": f"WAIT2 {case}{i} a"}[case]
        r.push(first)
        r.wait(lambda: any(p["msg"]["content"] == first for p in r.server("push")), 5)
        if case == "D":
            r.wait(lambda: len(r.lines("replies.log")) > nrep, 5)
            time.sleep(0.3)
        else:
            time.sleep(0.6)
        r.push(f"{case}{i} b")
        r.wait(lambda: stops() >= n + 2, 8)
        time.sleep(0.5)
open(r.dir + "/screen_end.txt", "w").write(c.display())
c.signal(15)
print("exit", c.wait_exit(10))
r.close()

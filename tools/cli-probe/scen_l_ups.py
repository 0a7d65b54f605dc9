"""L1 (UserPromptSubmit http hook per channel prompt, body, timing), L3 (allowedEnvVars) and L5 (UPS for a
message folded into the running prompt, section K, and for one queued while busy, section E).

usage: python3 scen_l_ups.py [NAME] [scrub]   (scrub: also set CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1)
"""
import json, re, sys, time, uuid
from harness_l import *

NAME = sys.argv[1] if len(sys.argv) > 1 else "l_ups"
SCRUB = "scrub" in sys.argv[2:]
NSINGLE = int(dict(a.split("=") for a in sys.argv[2:] if "=" in a).get("n", 12))
r = RunL(NAME)
seed_config(r.cfg, r.ws)
SID = str(uuid.uuid4())
VARS = {"SYNTHESIS_BRIDGE_TOKEN": "tok-123", "SYNTHESIS_BRIDGE_SECRET": "sec-123", "SYNTHESIS_HOOK_AUTH": "auth-123",
        "SYNTHESIS_PROCESS_ID": "pid-123", "SYNTHESIS_PASSWORD": "pw-123", "SYNTHESIS_KEY": "key-123",
        "SYNTHESIS_API_KEY": "apikey-123", "SYNTHESIS_UNLISTED": "unl-123", "MY_TOKEN": "my-123",
        "BRIDGE_AUTH_TOKEN": "bat-123"}
HEADERS = {"Authorization": "Bearer $SYNTHESIS_BRIDGE_TOKEN", "X-Secret": "$SYNTHESIS_BRIDGE_SECRET",
           "X-Hook-Auth": "${SYNTHESIS_HOOK_AUTH}", "X-Pid": "$SYNTHESIS_PROCESS_ID", "X-Password": "$SYNTHESIS_PASSWORD",
           "X-Key": "$SYNTHESIS_KEY", "X-Api-Key": "$SYNTHESIS_API_KEY", "X-Anthropic": "$ANTHROPIC_API_KEY",
           "X-Test": "$SYNTHESIS_TEST_VAR", "X-Unlisted": "$SYNTHESIS_UNLISTED", "X-My-Token": "$MY_TOKEN",
           "X-Bridge-Auth-Token": "$BRIDGE_AUTH_TOKEN"}
ALLOWED = [k for k in list(VARS) + ["ANTHROPIC_API_KEY", "SYNTHESIS_TEST_VAR"] if k != "SYNTHESIS_UNLISTED"]
settings = settings_for(r.hooks, ("UserPromptSubmit", "Stop", "StopFailure", "SessionStart"),
                        ups_headers=HEADERS, ups_allowed=ALLOWED)
env = dict(VARS, CHANNEL_AFTER_REPLY="KFOLD=0")
if SCRUB:
    env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] = "1"
c, ok = r.start("--session-id", SID, settings, extra_env=env, max_seconds=400)
print("started", ok, flush=True)
if not ok:
    print(c.display()); c.kill(); r.close(); sys.exit(1)


def stops():
    return len(r.hooks.of("Stop")) + len(r.hooks.of("StopFailure"))


# L1: single turns
for i in range(NSINGLE):
    n = stops()
    r.push(f"single {i}" + (" PLAIN" if i % 2 else ""))
    if not r.wait(lambda: stops() > n, 20):
        print("no stop for single", i)
    time.sleep(0.3)
ups = r.hooks.of("UserPromptSubmit")
print("UPS count after singles:", len(ups), "stops:", stops())
if "scrub" in sys.argv[2:] or "only3" in sys.argv[2:]:
    print(json.dumps(ups[0]["headers"], indent=1))
    c.signal(15); c.wait_exit(10); r.close(); sys.exit(0)

# L5/K: reply to a KFOLD message makes the server push "after reply n" 0 ms after the reply result
for i in range(6):
    time.sleep(0.5)
    n = stops()
    r.push(f"KFOLD {i}")
    r.wait(lambda: stops() > n, 20)
    time.sleep(2.5)  # let a possible separate prompt finish
# L5/E: a message pushed while the model request of the previous prompt is in flight
for i in range(5):
    time.sleep(0.5)
    n = stops()
    r.push(f"WAIT2 busy {i} a")
    r.wait(lambda: len(r.server("push")) and r.server("push")[-1]["msg"]["content"].endswith(f"busy {i} a"), 5)
    time.sleep(0.6)
    r.push(f"busy {i} b")
    r.wait(lambda: stops() >= n + 2, 20)
    time.sleep(0.3)
time.sleep(1)
open(r.dir + "/screen_end.txt", "w").write(c.display())
c.signal(15)
print("exit", c.wait_exit(10))
r.close()
json.dump({"sid": SID}, open(r.dir + "/meta.json", "w"))

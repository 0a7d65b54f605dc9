"""L2 extra: is the http UserPromptSubmit hook awaited, and what if it fails?
HOOKDELAY: answered {} after 1.5 s; H500: HTTP 500; NOJSON: 200 "not json"; REFUSED: a second claude whose
UserPromptSubmit hook URL is a closed port (connection refused). Each prompt: was it answered, when was the model request, what the TUI showed.
"""
import json, sys, time, uuid
from harness_l import *


def policy(path, body):
    p = body.get("prompt", "")
    if path.endswith("UserPromptSubmit"):
        if "HOOKDELAY" in p:
            time.sleep(1.5)
        if "H500" in p:
            return 500, b'{"error":"boom"}'
        if "NOJSON" in p:
            return 200, b"not json"
    return None


r = RunL(sys.argv[1] if len(sys.argv) > 1 else "l_upsfail", policy=policy)
seed_config(r.cfg, r.ws)
sid = str(uuid.uuid4())
snaps = open(r.dir + "/snapshots.txt", "w")


def run(c, texts):
    stops = lambda: len(r.hooks.of("Stop"))
    for text in texts:
        n, a = stops(), len(r.mock.posts())
        r.push(text)
        r.wait(lambda: stops() > n, 8)
        posts = [q for q in r.mock.posts()[a:] if text in json.dumps(q["body"]["messages"][-1])]
        time.sleep(0.5)
        ups = [h for h in r.hooks.entries if text in json.dumps(h["body"]) and h["path"].endswith("UserPromptSubmit")]
        pt = [p["t"] for p in r.server("push") if p["msg"]["content"] == text][0]
        print(json.dumps({"text": text, "ups_ms": round((ups[0]["t"] - pt) * 1000) if ups else None,
                          "model_request_ms": round((posts[0]["t"] - pt) * 1000) if posts else None,
                          "stop": stops() > n,
                          "answered": any(text in x["arguments"]["text"] for x in r.lines("replies.log"))}), flush=True)
        snaps.write(f"\n===== {text} =====\n{c.display()}\n"); snaps.flush()


c, ok = r.start("--session-id", sid, settings_for(r.hooks), max_seconds=120)
run(c, ["HOOKDELAY 1", "HOOKDELAY 2", "H500 1", "NOJSON 1"])
c.signal(15); c.wait_exit(10)
st = settings_for(r.hooks)
st["hooks"]["UserPromptSubmit"][0]["hooks"][0]["url"] = "http://127.0.0.1:9/hook/UserPromptSubmit"
c, ok = r.start("--resume", sid, st, name="term_refused", max_seconds=120)
run(c, ["REFUSED 1"])
c.signal(15); c.wait_exit(10)
r.close()

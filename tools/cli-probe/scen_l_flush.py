"""L6: when does the first turn of a new conversation reach the disk? Fresh start per rep; a 2 ms poller records when
the transcript file appears and when its first "type":"user" record (the channel message) is on disk, relative to
the channel notification, the UserPromptSubmit http hook and the first model request.

usage: python3 scen_l_flush.py [REPS] [STALL]   (STALL: the mock stalls the answer, as when a kill comes mid-answer)
"""
import json, os, sys, threading, time, uuid
from harness_l import *

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
STALL = "STALL" in sys.argv[2:]
out = []
for i in range(REPS):
    r = RunL(f"l_flush/{i:02d}")
    seed_config(r.cfg, r.ws)
    sid = str(uuid.uuid4())
    c, ok = r.start("--session-id", sid, settings_for(r.hooks), max_seconds=60)
    seen = {}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            p = r.transcript(sid)
            if p:
                seen.setdefault("file", time.time())
                try:
                    data = open(p).read()
                except FileNotFoundError:
                    data = ""
                if '"type":"user"' in data and "<channel" in data:
                    seen.setdefault("user", time.time())
                    return
            time.sleep(0.002)
    threading.Thread(target=poll, daemon=True).start()
    r.push("STALL flush probe" if STALL else "flush probe")
    r.wait(lambda: "user" in seen, 8)
    stop.set()
    push = r.server("push")[0]["t"]
    ups = r.hooks.of("UserPromptSubmit")
    posts = r.mock.posts()
    ms = lambda t: round((t - push) * 1000) if t else None
    res = {"file_ms": ms(seen.get("file")), "user_record_ms": ms(seen.get("user")),
           "ups_ms": ms(ups[0]["t"] if ups else None), "model_request_ms": ms(posts[0]["t"] if posts else None)}
    out.append(res)
    print(i, json.dumps(res), flush=True)
    c.signal(9 if STALL else 15); c.wait_exit(10)
    r.close()
json.dump(out, open(f"{BASE}/runs/l_flush/results{'_stall' if STALL else ''}.json", "w"))

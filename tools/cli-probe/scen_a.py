import sys, time, uuid, json, signal
from harness import *

def probe(name, api_key=True, trust=True, wait_for=None, secs=6):
    r = Run(name)
    seed_config(r.cfg, r.ws, api_key=api_key, trust=trust)
    c = r.launch("--session-id", str(uuid.uuid4()), max_seconds=30)
    if wait_for:
        ok = c.wait_text(wait_for, 15)
        print(name, "saw", repr(wait_for), ok, "at", round(time.time()-c.t0, 2))
    time.sleep(secs)
    out = {"display": c.display(), "stripped": c.text()}
    c.kill(); r.mock.stop()
    open(r.dir + "/screen.txt", "w").write(out["display"])
    open(r.dir + "/stripped.txt", "w").write(out["stripped"])
    print("=====", name, "SCREEN =====")
    print(out["display"])
    print("=====", name, "STRIPPED (repr) =====")
    print(repr(out["stripped"][:3000]))

which = sys.argv[1]
if which == "dev": probe("a_dev", wait_for="local development", secs=2)
if which == "apikey": probe("a_apikey", api_key=False, secs=5)
if which == "trust": probe("a_trust", trust=False, secs=5)

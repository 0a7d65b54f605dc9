import json, re, sys
d = f"/tmp/cli-facts/runs/{sys.argv[1]}"
L = lambda n: [json.loads(l) for l in open(f"{d}/{n}") if l.strip()]
hooks = L("hooks.log"); pushes = [l for l in L("server.log") if l["kind"] == "push"]
ups = [h for h in hooks if h["path"].endswith("UserPromptSubmit")]
stops = [h for h in hooks if h["path"].endswith("/Stop")]
def ups_of(content):
    mid = [p["msg"]["message_id"] for p in pushes if p["msg"]["content"] == content][0]
    pt = [p["t"] for p in pushes if p["msg"]["content"] == content][0]
    u = [h for h in ups if mid in h["body"]["prompt"]]
    return u, pt
res = {}
for p in pushes:
    c = p["msg"]["content"]
    if not c.endswith(" b"): continue
    case = c.split()[0][0]
    a = [q["msg"]["content"] for q in pushes if q["msg"]["content"].endswith(c.replace(" b", " a"))][0]
    ua, _ = ups_of(a); ub, tb = ups_of(c)
    same = ub and ua and ub[0]["body"]["prompt_id"] == ua[0]["body"]["prompt_id"]
    stop_b = ub and any(s["body"]["prompt_id"] == ub[0]["body"]["prompt_id"] for s in stops)
    res.setdefault(case, []).append(("UPS" if ub else "noUPS", "folded" if same else "own", "Stop" if stop_b else "-", round((ub[0]["t"] - tb) * 1000) if ub else None))
for k, v in res.items(): print(k, v)

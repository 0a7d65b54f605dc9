import json, re, sys
name = sys.argv[1]
d = f"/tmp/cli-facts/runs/{name}"
L = lambda n: [json.loads(l) for l in open(f"{d}/{n}") if l.strip()]
hooks = L("hooks.log"); srv = L("server.log"); api = L("api.log")
sid = json.load(open(d + "/meta.json"))["sid"] if __import__("os").path.exists(d + "/meta.json") else None
import glob
tp = glob.glob(f"{d}/cfg/projects/*/*.jsonl")[0]
recs = [json.loads(l) for l in open(tp)]
pushes = [l for l in srv if l["kind"] == "push"]
replies = L("replies.log")
t0 = pushes[0]["t"]
ev = []
for p in pushes: ev.append((p["t"], "PUSH", p["msg"]["content"], p["msg"]["message_id"][:8]))
for h in hooks:
    b = h["body"]; e = h["path"].split("/")[-1]
    extra = re.findall(r'message_id="([^"]{8})', b.get("prompt", ""))
    ev.append((h["t"], e, (b.get("prompt_id") or "")[:8], extra or b.get("last_assistant_message")))
for q in api:
    if q.get("method") == "POST" and "body" in q and q.get("label") != "count_tokens":
        last = q["body"]["messages"][-1]
        c = last["content"]; c = c if isinstance(c, str) else " | ".join(x.get("text", x["type"]) for x in c)
        ev.append((q["t"], "API", q["label"], re.sub(r"\s+", " ", c)[-120:]))
for rp in replies: ev.append((rp["t"], "REPLY", rp["arguments"]["text"], ""))
for r in recs:
    ts = r.get("timestamp")
    if not ts: continue
    import datetime
    t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    typ = r.get("type")
    if typ == "queue-operation":
        ev.append((t, "TR-queue", r.get("operation"), re.findall(r'message_id="([^"]{8})', r.get("content") or "")))
    elif typ == "attachment":
        a = r.get("attachment", {})
        ev.append((t, "TR-attach", a.get("type"), (r.get("promptId") or "")[:8], re.findall(r'message_id="([^"]{8})', json.dumps(a))))
    elif typ == "user":
        c = r["message"]["content"]
        if isinstance(c, str) and "<channel" in c:
            ev.append((t, "TR-user", (r.get("promptId") or "")[:8], re.findall(r'message_id="([^"]{8})', c)))
ev.sort(key=lambda e: e[0])
lo = float(sys.argv[2]) if len(sys.argv) > 2 else 0
for e in ev:
    if e[0] - t0 >= lo:
        print("%8.3f %-16s %s" % (e[0] - t0, e[1], " ".join(str(x) for x in e[2:]))[:230])

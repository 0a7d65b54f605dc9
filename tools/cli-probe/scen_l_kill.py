"""L6/L7: SIGKILL during the first turn of a new conversation (--session-id), then --resume.
Cases: a = idle after start-up (no prompt yet); b0 = inside the UserPromptSubmit hook (killed before it is
answered); bN (N > 0, e.g. b50) = N ms after the hook request arrived (answered at once); c = mid-answer (mock stalls);
d = a resumed conversation (one finished turn, SIGTERM, --resume) killed mid-answer, then resumed again.
For each kill: transcript existence and record types, raw terminal tail and pyte screen; for each resume: exit code,
output, and whether a new message is answered (and with which history).

usage: python3 scen_l_kill.py [CASES] [REPS]   e.g. "a,b0,b50,c,d" 3
"""
import glob, json, os, signal, sys, threading, time, uuid
from harness_l import *

CASES = (sys.argv[1] if len(sys.argv) > 1 else "a,b0,b50,c,d").split(",")
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
OUT = []
cur = {}


def on_request(e):
    c = cur.get("c")
    d = cur.get("kill_at_ups")
    if c is None or d is None or not e["path"].endswith("UserPromptSubmit") or cur.get("killed"):
        return
    cur["killed"] = time.time()
    if d == 0:
        os.kill(c.pid, signal.SIGKILL)
    else:
        threading.Timer(d, lambda: os.kill(c.pid, signal.SIGKILL)).start()


def tr_summary(r, sid):
    p = r.transcript(sid)
    if not p:
        return {"exists": False}
    recs = r.records(sid)
    types = [x.get("type") + (":" + x.get("operation") if x.get("operation") else "") for x in recs]
    users = [x for x in recs if x.get("type") == "user"]
    return {"exists": True, "bytes": os.path.getsize(p), "types": types,
            "user_contents": [str(u["message"]["content"])[:120] for u in users]}


def save_screen(r, c, label):
    raw = bytes(c.raw)
    open(f"{r.dir}/{label}.screen.txt", "w").write(c.display())
    return {"raw_tail": raw[-600:].decode("utf-8", "replace"), "screen_tail": c.display().split("\n")[-14:]}


def move_pushes(r):
    os.makedirs(r.dir + "/push_old", exist_ok=True)
    for p in glob.glob(r.dir + "/push/*.txt"):
        os.rename(p, r.dir + "/push_old/" + os.path.basename(p))


def resume(r, sid, label, text="after resume"):
    move_pushes(r)
    a0 = len(r.mock.posts())
    st0 = len(r.hooks.of("Stop"))
    c = r.launch("--resume", sid, settings_for(r.hooks), name=label, max_seconds=60)
    res = {"dialog": c.wait_text("local development", 15)}
    c.write(b"1")
    code = c.wait_exit(6)
    if code is not None:
        res.update(exit=code, output_tail=c.text()[-300:], screen=save_screen(r, c, label))
        return res
    r.wait(lambda: r.tools_list_answered(), 5)
    time.sleep(1.3)
    r.push(text)
    res["answered"] = bool(r.wait(lambda: len(r.hooks.of("Stop")) > st0, 10))
    posts = r.mock.posts()[a0:]
    if posts:
        res["first_request_messages"] = [m["role"] + ": " + msg_text(m)[:100] for m in posts[0]["body"]["messages"]
                                         if m["role"] != "system"]
    c.signal(signal.SIGTERM)
    res["exit_after_sigterm"] = c.wait_exit(10)
    return res


def one(case, rep):
    r = RunL(f"l_kill/{case}_{rep}", on_request=on_request)
    seed_config(r.cfg, r.ws)
    sid = str(uuid.uuid4())
    cur.clear()
    res = {"case": case, "rep": rep, "sid": sid}
    if case == "d":
        c, ok = r.start("--session-id", sid, settings_for(r.hooks), max_seconds=60)
        r.push("first turn")
        r.wait(lambda: r.hooks.of("Stop"), 10)
        time.sleep(0.3)
        c.signal(signal.SIGTERM); c.wait_exit(10)
        move_pushes(r)
        c, ok = r.start("--resume", sid, settings_for(r.hooks), name="resume1", max_seconds=60)
    else:
        c, ok = r.start("--session-id", sid, settings_for(r.hooks), max_seconds=60)
    res["started"] = ok
    cur["c"] = c
    if case == "a":
        time.sleep(0.5)
        c.signal(signal.SIGKILL)
    elif case.startswith("b"):
        cur["kill_at_ups"] = int(case[1:]) / 1000.0  # bN: N ms after the hook request arrived
        r.push("kill me in the hook")
        r.wait(lambda: c.exit_code is not None, 10)
    else:
        n = len(r.mock.posts())
        r.push("STALL kill me mid-answer")
        r.wait(lambda: len(r.mock.posts()) > n, 10)
        time.sleep(1.0)
        c.signal(signal.SIGKILL)
    t_kill = time.time()
    res["exit"] = c.wait_exit(10)
    time.sleep(0.3)
    res["transcript_after_kill"] = tr_summary(r, sid)
    res["kill_screen"] = save_screen(r, c, "killed")
    res["resume"] = resume(r, sid, "resume")
    res["transcript_after_resume"] = tr_summary(r, sid)
    if case == "d" or (case == "c" and rep == 0):
        res["resume_again"] = resume(r, sid, "resume_again", "after second resume")
    r.close()
    return res


for rep in range(REPS):
    for case in CASES:
        res = one(case, rep)
        OUT.append(res)
        print(json.dumps({k: res[k] for k in ("case", "rep", "exit")}),
              "transcript:", res["transcript_after_kill"].get("exists"),
              "user records:", len(res["transcript_after_kill"].get("user_contents", [])),
              "resume:", res["resume"].get("exit", "ok" if res["resume"].get("answered") else "not answered"), flush=True)
json.dump(OUT, open(f"{BASE}/runs/l_kill/results_{int(time.time())}.json", "w"), indent=1)

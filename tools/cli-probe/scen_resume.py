"""F (resume after SIGTERM) and G (session-id reuse / resume unknown)."""
import glob, json, os, signal, time, uuid
from harness import *

r = Run("main", fresh=False)
SID = open(r.dir + "/sid").read().strip()
os.makedirs(r.dir + "/push_old", exist_ok=True)
for p in glob.glob(r.dir + "/push/*.txt"):
    os.rename(p, r.dir + "/push_old/" + os.path.basename(p))
r.n = 6
nhooks0 = len(r.lines("stop_hooks.log"))
napi0 = len(r.mock.requests())
ntl0 = sum(1 for l in r.lines("server.log") if l["kind"] == "out" and "tools" in l["msg"].get("result", {}))

print("== F: --resume", SID)
c = r.launch("--resume", SID, name="term_resume", max_seconds=60,
             extra_env={"CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1"})
dlg = c.wait_text("local development", 15)
print("dev dialog shown on resume:", dlg, "at", round(time.time() - c.t0, 2))
open(r.dir + "/resume_dialog_screen.txt", "w").write(c.display())
c.write(b"1")
end = time.time() + 15
while time.time() < end and sum(1 for l in r.lines("server.log") if l["kind"] == "out" and "tools" in l["msg"].get("result", {})) <= ntl0:
    time.sleep(0.05)
time.sleep(1.2)
open(r.dir + "/resume_screen_before_push.txt", "w").write(c.display())
r.push("seven after resume")
ok = r.wait_lines("stop_hooks.log", nhooks0 + 1, 15)
print("stop hook after resume:", ok)
time.sleep(0.5)
open(r.dir + "/resume_screen_after.txt", "w").write(c.display())
reqs = r.mock.requests()[napi0:]
for q in reqs:
    b = q.get("body", {})
    if not b.get("messages"):
        continue
    print("-- request label", q.get("label"), "n messages", len(b["messages"]))
    for m in b["messages"]:
        cont = m["content"]
        s = cont if isinstance(cont, str) else " | ".join(
            (x.get("text") or (x.get("type") + ":" + json.dumps(x.get("input") or x.get("content")))) for x in cont)
        print("   ", m["role"], repr(s[:160]))
    break
print("last stop hook:", json.dumps(r.lines("stop_hooks.log")[-1]["stdin"]))
c.signal(signal.SIGTERM)
print("exit after SIGTERM:", c.wait_exit(15))

print("== G1: --session-id existing", SID)
c = r.launch("--session-id", SID, name="term_g1", max_seconds=30)
code = c.wait_exit(12)
if code is None:
    print("still running; dialog?", c.wait_text("local development", 1))
    open(r.dir + "/g1_screen.txt", "w").write(c.display())
    c.kill(); code = c.exit_code
print("exit code:", code)
print("output:", repr(c.text()))
print("screen:\n" + c.display())

U = str(uuid.uuid4())
print("== G2: --resume unknown", U)
c = r.launch("--resume", U, name="term_g2", max_seconds=30)
code = c.wait_exit(12)
if code is None:
    print("still running; dialog?", c.wait_text("local development", 1))
    c.kill(); code = c.exit_code
print("exit code:", code)
print("output:", repr(c.text()))
print("screen:\n" + c.display())
r.mock.stop()

"""L7: the terminal after claude dies. For each case: exit code, raw tail, pyte screen, and the last meaningful
lines after dropping TUI drawing (meaningful_lines below).
Cases: sigkill_idle, sigkill_mid_answer, sigterm, resume_unknown (fresh config), resume_unknown_after_kill,
session_in_use, scrub_no_bwrap (CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1 without bubblewrap).
"""
import json, re, signal, sys, time, uuid
from harness_l import *

DROP = [
    r"^[\s─━│┃╭╮╰╯┌┐└┘├┤┬┴┼═║▐▛█▜▝▘▗▟▀▄▌▙▞▚▖▔▁▂▃▅▆▇]*$",  # rules, boxes, logo rows
    r"^\s*[◐◑◒◓○●◉]\s+\w+\s+·\s+/effort\s*$",                     # effort indicator
    r"⏵⏵|shift\+tab to cycle|esc to interrupt|ctrl\+o to expand|for agents\s*$",
    r"^\s*❯\s*$",                                                   # empty prompt box
    r"^\s*[✻✶✢✳✽·*]\s+\S+…",                                         # spinner ("✢ Symbioting…", "* Puzzling…")
    r"^\s*▎?\s*Debug mode enabled",
    r"Claude Code v\d|API Usage Billing|^\s*[▐▝▘▗▟▛▜ ]+\s+/",          # banner rows
    r"^\s*u+\s*$",                                                  # pyte prints the u of CSI < u (kitty keyboard pop)
]


def meaningful_lines(screen):
    out = []
    for line in screen.split("\n"):
        if not line.strip():
            continue
        if any(re.search(p, line) for p in DROP):
            continue
        out.append(line.rstrip())
    return out


results = {}


def record(name, c, r):
    raw = bytes(c.raw)
    scr = c.display()
    open(f"{r.dir}/{name}.screen.txt", "w").write(scr)
    results[name] = {"exit": c.exit_code, "raw_tail": raw[-400:].decode("utf-8", "replace"),
                     "screen_tail": [l for l in scr.split("\n") if l.strip()][-8:],
                     "meaningful_last": meaningful_lines(scr)[-4:]}
    print(name, json.dumps(results[name]["exit"]), json.dumps(results[name]["meaningful_last"], ensure_ascii=False),
          flush=True)


r = RunL("l_death")
seed_config(r.cfg, r.ws)
sid = str(uuid.uuid4())
st = settings_for(r.hooks)
# a finished turn, then SIGTERM
c, ok = r.start("--session-id", sid, st)
r.push("hello"); r.wait(lambda: r.hooks.of("Stop"), 10); time.sleep(0.5)
c.signal(signal.SIGTERM); c.wait_exit(10); record("sigterm", c, r)
# --session-id of the now existing id
c = r.launch("--session-id", sid, st, name="in_use"); c.wait_exit(15); time.sleep(0.2); record("session_in_use", c, r)
# --resume of an unknown id (no SIGKILL before: fullscreen renderer)
c = r.launch("--resume", str(uuid.uuid4()), st, name="unknown")
c.wait_text("local development", 15); c.write(b"1"); c.wait_exit(15); time.sleep(0.2); record("resume_unknown", c, r)
# SIGKILL while idle
c, ok = r.start("--resume", sid, st, name="kill_idle")
c.signal(signal.SIGKILL); c.wait_exit(10); record("sigkill_idle", c, r)
# --resume unknown after that SIGKILL (classic renderer notice)
c = r.launch("--resume", str(uuid.uuid4()), st, name="unknown2")
c.wait_text("local development", 15); c.write(b"1"); c.wait_exit(15); time.sleep(0.2)
record("resume_unknown_after_kill", c, r)
# SIGKILL mid-answer (classic renderer now? the strike was cleared by the failed run's exit or not)
c, ok = r.start("--resume", sid, st, name="kill_mid")
n = len(r.mock.posts()); r.push("STALL mid"); r.wait(lambda: len(r.mock.posts()) > n, 10); time.sleep(1)
c.signal(signal.SIGKILL); c.wait_exit(10); record("sigkill_mid_answer", c, r)
# env scrub without bubblewrap
c = r.launch("--resume", sid, st, name="scrub", extra_env={"CLAUDE_CODE_SUBPROCESS_ENV_SCRUB": "1"}, max_seconds=20)
code = c.wait_exit(15); time.sleep(0.2); record("scrub_no_bwrap", c, r)
c.kill()
json.dump(results, open(r.dir + "/results.json", "w"), indent=1, ensure_ascii=False)
r.close()

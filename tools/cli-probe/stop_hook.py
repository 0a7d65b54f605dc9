#!/usr/bin/env python3
"""Stop hook: append {t, stdin, env(SYNTHESIS_*), transcript check} to argv[1]."""
import json, os, sys, time

t = time.time()
raw = sys.stdin.read()
try:
    data = json.loads(raw)
except Exception:
    data = {"_raw": raw}
check = {}
tp = data.get("transcript_path") if isinstance(data, dict) else None
pid = data.get("prompt_id") if isinstance(data, dict) else None
if tp:
    check["transcript_exists"] = os.path.exists(tp)
    if os.path.exists(tp):
        with open(tp) as f:
            lines = f.readlines()
        check["transcript_lines"] = len(lines)
        hits = []
        for ln in lines:
            try:
                r = json.loads(ln)
            except Exception:
                continue
            if pid and r.get("promptId") == pid and r.get("type") == "user":
                c = r.get("message", {}).get("content")
                hits.append(c if isinstance(c, str) else json.dumps(c)[:200])
        check["user_records_with_promptId"] = hits
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"t": round(t, 3), "stdin": data,
                        "env": {k: v for k, v in os.environ.items() if k.startswith("SYNTHESIS_")},
                        "transcript_check_at_hook_time": check}) + "\n")

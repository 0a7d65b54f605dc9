import re, time, uuid
import harness
from harness import *
harness.COLS = 60
r = Run("a_dev60")
seed_config(r.cfg, r.ws)
c = r.launch("--session-id", str(uuid.uuid4()), max_seconds=20)
print(c.wait_text("local development", 10)); time.sleep(1)
raw = bytes(c.raw)
c.kill(); r.mock.stop()
cha = re.sub(rb"\x1b\[\d*[GC]", b" ", raw)
print(strip_ansi(cha))
print("nows:", "Iamusingthisforlocaldevelopment" in re.sub(r"\s", "", strip_ansi(raw)))

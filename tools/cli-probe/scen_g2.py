import time, uuid
from harness import *
r = Run("main", fresh=False)
U = str(uuid.uuid4())
print("== G2: --resume unknown", U)
c = r.launch("--resume", U, name="term_g2", max_seconds=30)
print("dialog:", c.wait_text("local development", 10))
c.write(b"1")
code = c.wait_exit(15)
print("exit code:", code)
print("output:", repr(c.text()[-400:]))
print("screen:\n" + c.display())
c.kill(); r.mock.stop()

# Q6: warm-process latency (user line -> first text_delta, -> result), median of 10; VmRSS idle.
import sys, json, uuid, time, statistics; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s6'
m, url = start_mock(R + '.mock.log'); cfg = '/tmp/sj-facts/cfg-s6'; make_config(cfg); sid = str(uuid.uuid4())
c = Claude(R, url, cfg, ['--session-id', sid, '--permission-mode', 'dontAsk'])
def rss(): return [l for l in open(f'/proc/{c.p.pid}/status') if l.startswith(('VmRSS', 'VmHWM'))]
time.sleep(3); print('idle before first turn', rss())
t = c.user('hello one'); td, _ = c.wait(is_delta); tr, _ = c.wait(is_result); print('first turn: delta', round(td - t, 3), 'result', round(tr - t, 3))
D, Rr, L = [], [], []
for i in range(10):
    time.sleep(0.5)
    t = c.user(f'hello {i}'); td, _ = c.wait(is_delta); tr, _ = c.wait(is_result); D.append(td - t); Rr.append(tr - t)
for i in range(5):
    time.sleep(0.5)
    t = c.user(f'long {i}'); td, _ = c.wait(is_delta); tr, _ = c.wait(is_result); L.append(tr - t)
f = lambda xs: f'median {statistics.median(xs)*1000:.0f} ms (min {min(xs)*1000:.0f}, max {max(xs)*1000:.0f})'
print('warm plain ok: to first text_delta', f(D), '; to result', f(Rr))
print('warm 200-delta answer: to result', f(L))
time.sleep(5); print('idle after 16 turns', rss())
print('exit', c.close())
m.kill()

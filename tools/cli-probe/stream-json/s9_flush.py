# When the first turn reaches the transcript (stalling mock), 3 runs: times after the user line is written.
import sys, json, uuid, time, glob; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s9'
m, url = start_mock(R + '.mock.log')
for i in range(3):
    cfg = f'/tmp/sj-facts/cfg-s9-{i}'; make_config(cfg); sid = str(uuid.uuid4())
    c = Claude(f'{R}-{i}', url, cfg, ['--session-id', sid, '--permission-mode', 'dontAsk']); time.sleep(2)
    t = c.user('please stall now'); ff = fu = None
    while time.time() - t < 3 and fu is None:
        f = glob.glob(f'{cfg}/projects/*/{sid}.jsonl')
        if f:
            ff = ff or time.time()
            if '"type":"user"' in open(f[0]).read(): fu = time.time()
        time.sleep(0.005)
    req = [float(l.split()[0]) for l in open(R + '.mock.log') if 'POST' in l][-1]
    td = [tt for tt, j in c.lines if is_delta(j)]
    print(f'run {i}: model request {1000*(req-t):.0f} ms, file {ff and 1000*(ff-t):.0f} ms, user record {fu and 1000*(fu-t):.0f} ms, first text_delta {td and 1000*(td[0]-t):.0f} ms')
    c.p.kill(); c.p.wait()
m.kill()

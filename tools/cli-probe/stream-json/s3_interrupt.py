# Q3: interrupt a stalled turn with a control_request; next user message in the same process.
import sys, json, uuid, time; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s3'
m, url = start_mock(R + '.mock.log'); cfg = '/tmp/sj-facts/cfg-s3'; make_config(cfg)
sid = str(uuid.uuid4()); print('sid', sid)
c = Claude(R, url, cfg, ['--session-id', sid, '--permission-mode', 'dontAsk'])
time.sleep(2)
t = c.user('please stall now'); td, d = c.wait(is_delta); print('first delta', round(td - t, 3))
time.sleep(1.0)
ti = c.send({'type': 'control_request', 'request_id': 'int-1', 'request': {'subtype': 'interrupt'}})
n0 = len(c.lines)
tr, r = c.wait(is_result, 15); print('result after interrupt', None if tr is None else round(tr - ti, 3))
time.sleep(1)
for t_, j in c.lines[n0 - 3:]:
    print(round(t_ - ti, 3), json.dumps(j)[:1500])
t = c.user('hello after interrupt'); tr, r = c.wait(is_result, 20); print('next turn', r and r.get('subtype'), r and r.get('result'), round(tr - t, 3) if tr else None)
print('exit', c.close())
m.kill()

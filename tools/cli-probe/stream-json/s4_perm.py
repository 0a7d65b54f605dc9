# Q4: --permission-prompt-tool stdio, --permission-mode default: can_use_tool control requests.
import sys, json, uuid, time; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s4'
m, url = start_mock(R + '.mock.log'); cfg = '/tmp/sj-facts/cfg-s4'; make_config(cfg)
sid = str(uuid.uuid4()); print('sid', sid)
c = Claude(R, url, cfg, ['--session-id', sid, '--permission-mode', 'default', '--permission-prompt-tool', 'stdio'])
time.sleep(2)
isreq = lambda j: j.get('type') == 'control_request'
# a) allow
t = c.user('bashcmd: touch a1.txt'); tq, q = c.wait(isreq, 15); print('A request after', tq and round(tq - t, 3)); print(json.dumps(q))
if q:
    c.send({'type': 'control_response', 'response': {'subtype': 'success', 'request_id': q['request_id'], 'response': {'behavior': 'allow', 'updatedInput': q['request']['input']}}})
tr, r = c.wait(is_result, 15); print('A result', r and r['subtype'], r and r['result'], r and r['permission_denials'], 'file exists', os.path.exists('/tmp/sj-facts/ws/a1.txt'))
# b) deny
t = c.user('bashcmd: touch b1.txt'); tq, q = c.wait(isreq, 15); print('B request after', tq and round(tq - t, 3))
if q:
    c.send({'type': 'control_response', 'response': {'subtype': 'success', 'request_id': q['request_id'], 'response': {'behavior': 'deny', 'message': 'denied by bridge'}}})
tr, r = c.wait(is_result, 15); print('B result', r and r['subtype'], r and r['result'], json.dumps(r and r['permission_denials']), 'file exists', os.path.exists('/tmp/sj-facts/ws/b1.txt'))
# c) no answer
t = c.user('bashcmd: touch c1.txt'); tq, q = c.wait(isreq, 15); print('C request after', tq and round(tq - t, 3), q and q['request_id'])
n0 = len(c.lines)
tr, r = c.wait(lambda j: j.get('type') in ('result', 'control_cancel_request'), 90); print('C after 90 s wait:', tr and round(tr - t, 3), r and json.dumps(r)[:300])
print('C lines during the wait', [json.dumps(j)[:200] for _, j in c.lines[n0:]])
ti = c.send({'type': 'control_request', 'request_id': 'int-c', 'request': {'subtype': 'interrupt'}})
tr, r = c.wait(is_result, 15); print('C result after interrupt', tr and round(tr - ti, 3), r and r['subtype'], r and r.get('terminal_reason'))
time.sleep(0.5)
for _, j in c.lines[n0:]: print('   ', json.dumps(j)[:400])
print('exit', c.close())
m.kill()

# Q1 + Q2: one turn records, a long answer, two turns, close stdin, resume.
import sys, json, uuid, time; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s1'; os.makedirs('/tmp/sj-facts/runs', exist_ok=True)
m, url = start_mock(R + '.mock.log'); cfg = '/tmp/sj-facts/cfg-s1'; make_config(cfg)
sid = str(uuid.uuid4()); print('sid', sid)
c = Claude(R, url, cfg, ['--session-id', sid, '--permission-mode', 'dontAsk'])
time.sleep(2)
t = c.user('hello one'); tr, r = c.wait(is_result); print('turn1', round(tr - t, 3), json.dumps(r))
n0 = len(c.lines)
t = c.user('please give a long answer'); tr, r = c.wait(is_result)
seg = [j for _, j in c.lines[n0:]]
print('turn2 long: text_deltas', sum(is_delta(j) for j in seg), 'types', [j.get('type') + ('/' + j['event']['type'] if j.get('type') == 'stream_event' else '') for j in seg][:8], '...', len(seg))
print('result2', json.dumps(r))
rc = c.close(); print('exit on stdin close', rc, 'after', round(time.time() - t, 2))
c2 = Claude(R + '-resume', url, cfg, ['--resume', sid, '--permission-mode', 'dontAsk'])
t = c2.user('history please'); tr, r = c2.wait(is_result); print('resume result', json.dumps(r))
print('resume exit', c2.close())
m.kill()

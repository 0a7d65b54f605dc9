# Extras: interrupt while idle; a user line during a running turn; stdin closed mid-turn; exit code after an interrupted permission prompt.
import sys, json, uuid, time; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s7'
m, url = start_mock(R + '.mock.log')
def new(name, args=['--permission-mode', 'dontAsk']):
    cfg = f'/tmp/sj-facts/cfg-s7-{name}'; make_config(cfg); sid = str(uuid.uuid4())
    c = Claude(f'{R}-{name}', url, cfg, ['--session-id', sid] + args); time.sleep(2); return c
isresp = lambda j: j.get('type') == 'control_response'
# a) interrupt while idle
c = new('idle')
t = c.send({'type': 'control_request', 'request_id': 'int-idle', 'request': {'subtype': 'interrupt'}}); tr, r = c.wait(isresp, 5)
print('a) idle interrupt ->', tr and round(tr - t, 3), json.dumps(r))
t = c.user('hello'); tr, r = c.wait(is_result, 10); print('a) next turn', r and r['subtype'], r and r['result'])
print('a) exit', c.close())
# b) a second user line while the first turn streams (mock stalls 120 s on the first)
c = new('queue')
t = c.user('please stall now'); c.wait(is_delta); time.sleep(0.5)
t2 = c.user('hello queued'); n0 = len(c.lines)
tr, r = c.wait(is_result, 10); print('b) 10 s after the queued line: result', tr and round(tr - t2, 3), r and r.get('subtype'), r and r.get('result'))
print('b) lines after queued line', [json.dumps(j)[:160] for _, j in c.lines[n0:]][:6])
ti = c.send({'type': 'control_request', 'request_id': 'int-q', 'request': {'subtype': 'interrupt'}}); n1 = len(c.lines)
tr, r = c.wait(is_result, 10); print('b) interrupt -> result', r and r.get('subtype'), r and r.get('terminal_reason'))
tr, r = c.wait(is_result, 10); print('b) then result', r and r.get('subtype'), r and r.get('result'), tr and round(tr - ti, 3))
for _, j in c.lines[n1:]:
    if j.get('type') != 'stream_event': print('   ', json.dumps(j)[:300])
print('b) exit', c.close())
# c) stdin closed mid-turn
c = new('eof')
t = c.user('please stall now'); c.wait(is_delta); time.sleep(0.5)
t = time.time(); c.p.stdin.close()
try: rc = c.p.wait(8)
except subprocess.TimeoutExpired: rc = 'still running after 8 s'
print('c) stdin closed mid-stall: exit', rc, round(time.time() - t, 3), 'last line', json.dumps(c.lines[-1][1])[:300])
if rc == 'still running after 8 s': c.p.terminate(); print('   after SIGTERM', c.p.wait(10))
# d) exit code after an interrupted permission prompt (repeat s4 case C)
c = new('perm', ['--permission-mode', 'default', '--permission-prompt-tool', 'stdio'])
c.user('bashcmd: touch d1.txt'); tq, q = c.wait(lambda j: j.get('type') == 'control_request', 10)
time.sleep(1); c.send({'type': 'control_request', 'request_id': 'int-p', 'request': {'subtype': 'interrupt'}}); tr, r = c.wait(is_result, 10)
print('d) result', r and r['subtype'])
t = c.user('hello'); tr, r = c.wait(is_result, 10); print('d) next turn', r and r['subtype'], r and r['result'])
print('d) exit', c.close(), open(f'{R}-perm.stderr').read()[:300])
m.kill()

# Exit code when stdin closes right after an interrupted turn's result (stall / permission prompt), 2 runs each.
import sys, json, uuid, time; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s8'
m, url = start_mock(R + '.mock.log')
for i in range(2):
    for kind, text, args in (('stall', 'please stall now', ['--permission-mode', 'dontAsk']),
                             ('perm', 'bashcmd: touch e1.txt', ['--permission-mode', 'default', '--permission-prompt-tool', 'stdio'])):
        cfg = f'/tmp/sj-facts/cfg-s8'; make_config(cfg); sid = str(uuid.uuid4())
        c = Claude(f'{R}-{kind}{i}', url, cfg, ['--session-id', sid] + args); time.sleep(2)
        c.user(text); c.wait(lambda j: is_delta(j) or j.get('type') == 'control_request', 10); time.sleep(1)
        c.send({'type': 'control_request', 'request_id': 'int', 'request': {'subtype': 'interrupt'}}); tr, r = c.wait(is_result, 10)
        t = time.time(); rc = c.close(15)
        print(kind, i, r and r['subtype'], 'exit', rc, round(time.time() - t, 3), repr(open(f'{R}-{kind}{i}.stderr').read()[:300]))
m.kill()

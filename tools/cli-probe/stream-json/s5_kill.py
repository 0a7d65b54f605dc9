# Q5: SIGKILL mid-turn; transcript contents; --resume.
import sys, json, uuid, time, signal, glob; sys.path.insert(0, '/tmp/sj-facts'); from h import *
R = '/tmp/sj-facts/runs/s5'
m, url = start_mock(R + '.mock.log')
def transcript(cfg, sid):
    f = glob.glob(f'{cfg}/projects/*/{sid}.jsonl')
    if not f: return 'no file'
    recs = [json.loads(l) for l in open(f[0])]
    out = []
    for r in recs:
        d = r.get('type')
        if d in ('user', 'assistant'):
            c = r['message']['content']; d += ':' + (c[:40] if isinstance(c, str) else '|'.join((b.get('text') or b.get('type'))[:40] for b in c))
        out.append(d)
    return f'{os.path.getsize(f[0])} bytes: ' + ', '.join(out)
def case(name, first, kill_after, prior=None):
    cfg = f'/tmp/sj-facts/cfg-s5-{name}'; make_config(cfg); sid = str(uuid.uuid4())
    c = Claude(f'{R}-{name}', url, cfg, ['--session-id', sid, '--permission-mode', 'dontAsk']); time.sleep(2)
    if prior:
        c.user(prior); c.wait(is_result)
    t = c.user(first)
    if kill_after == 'delta': c.wait(is_delta); time.sleep(1.0)
    else: time.sleep(kill_after)
    c.p.send_signal(signal.SIGKILL); rc = c.p.wait(); time.sleep(0.3)
    print(f'[{name}] killed {kill_after} rc={rc} transcript: {transcript(cfg, sid)}')
    c2 = Claude(f'{R}-{name}-resume', url, cfg, ['--resume', sid, '--permission-mode', 'dontAsk'])
    c2.user('history please'); tr, r = c2.wait(lambda j: j.get('type') == 'result', 20)
    rc2 = c2.close(20)
    print(f'[{name}] resume: result={r and r.get("subtype")} {r and r.get("result")!r} exit={rc2} stderr={open(f"{R}-{name}-resume.stderr").read()[:200]!r}')
    print(f'[{name}] after resume transcript: {transcript(cfg, sid)}')
case('midanswer', 'please stall now', 'delta')
case('t0', 'hello one', 0.0)
case('t50', 'please stall now', 0.05)
case('t150', 'please stall now', 0.15)
case('second-midanswer', 'please stall now', 'delta', prior='hello one')
m.kill()

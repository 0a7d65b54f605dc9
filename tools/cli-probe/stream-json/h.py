"""Harness: start mock + claude stream-json over pipes; record stdout lines with timestamps."""
import json, os, subprocess, sys, threading, time, uuid, shutil, queue
CLAUDE = '/root/.cache/synthesis-bridge/claude-code-2.1.329/node_modules/@anthropic-ai/claude-code/bin/claude.exe'
KEY = 'sk-ant-api03-' + 'x' * 80 + 'MOCKKEY0123456789ABCD'
T0 = time.time()
def start_mock(log):
    p = subprocess.Popen([sys.executable, '/tmp/sj-facts/mock.py', log], stdout=subprocess.PIPE, text=True)
    url = p.stdout.readline().strip().split('=', 1)[1]
    return p, url
def make_config(d):
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    json.dump({'hasCompletedOnboarding': True, 'customApiKeyResponses': {'approved': [KEY[-20:]], 'rejected': []}}, open(d + '/.claude.json', 'w'))
class Claude:
    def __init__(self, run, url, cfg, args, cwd='/tmp/sj-facts/ws'):
        os.makedirs(cwd, exist_ok=True)
        env = dict(os.environ, CLAUDE_CONFIG_DIR=cfg, ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=url,
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC='1', CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL='1',
                   DISABLE_AUTOUPDATER='1')
        self.t0 = time.time()
        self.p = subprocess.Popen([CLAUDE, '-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose',
                                   '--include-partial-messages'] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(run + '.stderr', 'w'), cwd=cwd, env=env)
        self.out = open(run + '.jsonl', 'w', buffering=1)
        self.lines = []; self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
    def _read(self):
        for raw in self.p.stdout:
            t = time.time()
            s = raw.decode().rstrip('\n')
            self.out.write(f'{t - self.t0:.3f}\t{s}\n')
            try: j = json.loads(s)
            except Exception: j = {'_raw': s}
            self.lines.append((t, j)); self.q.put((t, j))
        self.q.put((time.time(), None))
    def send(self, obj):
        s = json.dumps(obj)
        self.out.write(f'{time.time() - self.t0:.3f}\t>>> {s}\n')
        self.p.stdin.write((s + '\n').encode()); self.p.stdin.flush(); return time.time()
    def user(self, text):
        return self.send({'type': 'user', 'message': {'role': 'user', 'content': text}})
    def wait(self, pred, timeout=30):
        end = time.time() + timeout
        while True:
            try: t, j = self.q.get(timeout=max(0.01, end - time.time()))
            except queue.Empty: return None, None
            if j is None: return t, None
            if pred(j): return t, j
    def close(self, timeout=30):
        self.p.stdin.close()
        try: return self.p.wait(timeout)
        except subprocess.TimeoutExpired: return 'timeout'
is_result = lambda j: j.get('type') == 'result'
def is_delta(j):
    return j.get('type') == 'stream_event' and j['event'].get('type') == 'content_block_delta' and j['event']['delta'].get('type') == 'text_delta'

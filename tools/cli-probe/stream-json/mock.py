#!/usr/bin/env python3
"""Tiny streaming Messages API mock. Script by the newest user text:
 'long' -> 200 small text deltas; 'stall' -> one delta then stall 120 s;
 'bash' -> tool_use Bash echo; after a tool_result -> 'tool said: ...';
 'history' -> lists all user texts it received; else 'ok'."""
import json, sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
LOG = open(sys.argv[1] if len(sys.argv) > 1 else '/tmp/sj-facts/mock.log', 'a', buffering=1)
def texts(content):
    if isinstance(content, str): return [content]
    out = []
    for b in content:
        if b.get('type') == 'text': out.append(b['text'])
        elif b.get('type') == 'tool_result':
            c = b.get('content'); out.append('TOOL_RESULT:' + (json.dumps(c) if not isinstance(c, str) else c))
    return out
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        LOG.write(f'{time.time():.3f} GET {self.path}\n'); self.send_response(404); self.send_header('content-length','0'); self.end_headers()
    def ev(self, name, data):
        self.wfile.write(f'event: {name}\ndata: {json.dumps(data)}\n\n'.encode()); self.wfile.flush()
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get('content-length', 0))) or b'{}')
        msgs = body.get('messages', [])
        summary = [(m['role'], [t[:80] for t in texts(m['content'])]) for m in msgs]
        LOG.write(f'{time.time():.3f} POST {self.path} stream={body.get("stream")} msgs={json.dumps(summary)}\n')
        if 'count_tokens' in self.path:
            b = b'{"input_tokens":10}'; self.send_response(200); self.send_header('content-type','application/json'); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b); return
        us = [m for m in msgs if m['role'] == 'user']; last = us[-1] if us else {'content': ''}
        lt = texts(last['content']); user_text = [t for t in lt if not t.startswith('<system-reminder>')]
        cur = user_text[-1] if user_text else ''
        blocks = []; stall = False; tool = None
        if cur.startswith('TOOL_RESULT:'): blocks = ['tool said: ' + cur[12:80]]
        elif 'long' in cur: blocks = [f'w{i} ' for i in range(200)]
        elif 'stall' in cur: blocks = ['thinking about it'] ; stall = True
        elif 'bashcmd:' in cur: tool = {'name': 'Bash', 'input': {'command': cur.split('bashcmd:',1)[1].strip(), 'description': 'run it'}}
        elif 'bash' in cur: tool = {'name': 'Bash', 'input': {'command': 'echo hi-from-bash', 'description': 'say hi'}}
        elif 'history' in cur:
            allu = [t[:40] for m in msgs if m['role']=='user' for t in texts(m['content']) if not t.startswith('<system-reminder>')]
            blocks = ['history: ' + ' | '.join(allu)]
        else: blocks = ['ok']
        self.send_response(200); self.send_header('content-type', 'text/event-stream'); self.send_header('connection','close'); self.end_headers()
        self.close_connection = True
        try:
            self.ev('message_start', {'type':'message_start','message':{'id':'msg_mock%d'%int(time.time()*1000),'type':'message','role':'assistant','model':body.get('model','m'),'content':[],'stop_reason':None,'stop_sequence':None,'usage':{'input_tokens':10,'output_tokens':1}}})
            if tool:
                self.ev('content_block_start', {'type':'content_block_start','index':0,'content_block':{'type':'tool_use','id':'toolu_mock1','name':tool['name'],'input':{}}})
                self.ev('content_block_delta', {'type':'content_block_delta','index':0,'delta':{'type':'input_json_delta','partial_json':json.dumps(tool['input'])}})
                self.ev('content_block_stop', {'type':'content_block_stop','index':0}); stop = 'tool_use'
            else:
                self.ev('content_block_start', {'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}})
                for t in blocks:
                    self.ev('content_block_delta', {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':t}})
                if stall:
                    LOG.write(f'{time.time():.3f} STALLING\n')
                    for _ in range(1200):
                        time.sleep(0.1)
                        self.wfile.write(b': ping\n\n'); self.wfile.flush()
                self.ev('content_block_stop', {'type':'content_block_stop','index':0}); stop = 'end_turn'
            self.ev('message_delta', {'type':'message_delta','delta':{'stop_reason':stop,'stop_sequence':None},'usage':{'output_tokens':5}})
            self.ev('message_stop', {'type':'message_stop'})
            LOG.write(f'{time.time():.3f} DONE\n')
        except (BrokenPipeError, ConnectionResetError) as e:
            LOG.write(f'{time.time():.3f} CLIENT CLOSED {e!r}\n')
s = ThreadingHTTPServer(('127.0.0.1', 0), H)
print(f'ANTHROPIC_BASE_URL=http://127.0.0.1:{s.server_address[1]}', flush=True)
s.serve_forever()

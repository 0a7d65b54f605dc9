import json,glob,re,os,statistics as st
def L(p): return [json.loads(l) for l in open(p) if l.strip()]
d1=[];d2=[];n_push=0;n_ups=0
dirs=['runs/l_ups','runs/l_queue','runs/l_block']+sorted(x for x in glob.glob('runs/l_flush/*') if os.path.isdir(x))
for d in dirs:
    srv=L(d+'/server.log'); hooks=L(d+'/hooks.log'); api=L(d+'/api.log')
    pushes=[l for l in srv if l['kind']=='push']
    ups=[h for h in hooks if h['path'].endswith('UserPromptSubmit')]
    posts=[q for q in api if q.get('method')=='POST' and 'body' in q]
    for p in pushes:
        c=p['msg']['content']; mid=p['msg']['message_id']
        if c.startswith('after reply') or c.endswith(' b') or 'FOLDDUP' in c or 'QUEUEDDUP' in c: continue
        u=[h for h in ups if mid in h['body']['prompt']]
        n_push+=1
        if not u: print('no UPS', d, c); continue
        n_ups+=1
        dt=(u[0]['t']-p['t'])*1000
        d1.append(dt)
        q=[q for q in posts if mid in json.dumps(q['body']['messages'][-1])]
        if q and 'DUP' not in c and 'CSTOP' not in c: d2.append((q[0]['t']-u[0]['t'])*1000)
print('idle pushes',n_push,'with exactly-one UPS',n_ups)
for name,x in [('push->UPS',d1),('UPS->model request',d2)]:
    x=sorted(x); print(name,'n',len(x),'min %.0f p50 %.0f p90 %.0f max %.0f'%(x[0],st.median(x),x[int(len(x)*0.9)],x[-1]))
# count UPS per prompt id vs pushes
for d in dirs[:3]:
    hooks=L(d+'/hooks.log'); pushes=[l for l in L(d+'/server.log') if l['kind']=='push']
    ups=[h for h in hooks if h['path'].endswith('UserPromptSubmit')]
    per=[sum(p['msg']['message_id'] in h['body']['prompt'] for h in ups) for p in pushes]
    print(d,'pushes',len(pushes),'UPS',len(ups),'UPS per message',sorted(set(per)))

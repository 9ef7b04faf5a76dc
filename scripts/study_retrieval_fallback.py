#!/usr/bin/env python3
"""Compares out-of-store detectors for TAER's fallback on models/demo-moe (not part of CI).

Replicates QueryFeatures with transformers (mean input embedding, mean first-router logits,
mean embedding of the last 16 tokens, each unit-scaled), renders 100 train-split queries per
stored task in five styles (as PreMoe's profile does, calibration style left out) and 50
held-out test queries per task and per out-of-store set, fits the same logistic-regression
classifier, and prints, for each detector at a false-fallback level chosen on held-out data,
the share of WikiText / Python / German prompts that fall back. This is how the pooled-covariance
Mahalanobis typicality (Sources/PreMoe/Typicality.swift) was chosen over the nearest-sample
cosine rule. Usage: python3 scripts/study_retrieval_fallback.py   (about 10 minutes on 2 cores)
"""
import json, sys, numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(1)
ROOT=__import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__)))
M=ROOT+'/models/demo-moe'; D=ROOT+'/data/tasks'
tok=AutoTokenizer.from_pretrained(M); model=AutoModelForCausalLM.from_pretrained(M, dtype=torch.float32).eval()
emb=model.model.embed_tokens.weight.detach().numpy()
layer=model.model.layers[0]
gate=layer.mlp.gate.weight.detach().numpy()
cap={}
layer.post_attention_layernorm.register_forward_hook(lambda m,i,o: cap.__setitem__('x',o.detach()))
TRAIN_INS=["Please help me with this.", "Can you solve this?", "I need an answer:", "Question for you:","Quick one:", "Help me figure this out.", "What do you think?", "Hey, ", "Could you explain this?","Tell me:"]
EVAL_INS=["Answer this:", "Please respond to the following.", "I was wondering:"]
L=lambda i: chr(65+i%26)
LAYOUTS=[lambda i,o:f"{L(i)}. {o}",lambda i,o:f"({L(i)}) {o}",lambda i,o:f"{L(i)}) {o}",lambda i,o:f"{i+1}. {o}",lambda i,o:f"- {o}"]
def query(r):
    if 'messages' in r: return dict(q=[m for m in r['messages'] if m['role']=='user'][0]['content'])
    if 'prompt' in r: return dict(q=r['prompt'])
    if 'text' in r:
        t=r['text'].strip(); return dict(q=t) if t else None
    if 'passage' in r and isinstance(r.get('answer'),bool):
        q=r['question']; return dict(p=r['passage'], q=q[:1].upper()+q[1:]+'?')
    if 'choices' in r:
        txt=r['choices']['text']
        return dict(q=r.get('question_stem') or r['question'], o=txt)
    if 'goal' in r: return dict(q=r['goal'], o=[r['sol1'],r['sol2']])
    if 'sentence' in r: return dict(q=r['sentence'], o=[r['option1'],r['option2']])
    if 'question' in r: return dict(q=r['question'])
def render(q, style, layout=0, ins=EVAL_INS[0]):
    raw=(q['p']+"\n\n" if 'p' in q else "")+q['q']
    for i,o in enumerate(q.get('o',[])): raw+="\n"+LAYOUTS[layout%5](i,o)
    if style=='raw': return raw
    if style=='chat': return tok.apply_chat_template([{"role":"user","content":raw}],tokenize=False,add_generation_prompt=True)
    if style=='lowercase': return raw.lower()
    if style=='bare': return "\n".join(l.strip().rstrip(".?!:;,") for l in raw.split("\n"))
    if style=='instruction': return ins+("" if ins.endswith(" ") else " ")+raw
    raise KeyError(style)
def read(task, split, n):
    out=[]
    for l in open(f"{D}/{task}/{split}.jsonl"):
        q=query(json.loads(l))
        if q: out.append(q)
        if len(out)>=n: break
    return out
@torch.no_grad()
def feats(text):
    ids=tok(text, add_special_tokens=False)['input_ids'][:512]
    model(torch.tensor([ids]))
    x=cap['x'][0].numpy(); z=x@gate.T
    e=emb[ids]; u=lambda v: v/max(np.linalg.norm(v),1e-30)
    return np.concatenate([u(e.sum(0)), u(z.sum(0)), u(e[-16:].sum(0))]).astype(np.float32), ids
STYLES=['raw','chat','lowercase','bare','instruction']
tasks=['ai2_arc','boolq','gsm8k','obqa','piqa','winogrande']
res={'train':[], 'test':[], 'oos':[]}
for ti,t in enumerate(tasks):
    for i,q in enumerate(read(t,'train',100)):
        for s in STYLES:
            f,_=feats(render(q,s,layout=i,ins=TRAIN_INS[i%10])); res['train'].append((ti,i,s,f))
    for n,q in enumerate(read(t,'test',50)):
        for s in STYLES:
            f,_=feats(render(q,s,ins=EVAL_INS[n%3])); res['test'].append((ti,n,s,f))
    print(t, file=sys.stderr, flush=True)
for t in ['wikitext2','python_code','german_manpages']:
    for n,q in enumerate(read(t,'test',50)):
        for s in ['raw','chat']:
            f,_=feats(render(q,s)); res['oos'].append((t,n,s,f))
r=res
H=192; E=32
def arr(rows): return np.stack([x[-1] for x in rows])
Xtr=arr(r['train']); ytr=np.array([x[0] for x in r['train']]); itr=np.array([x[1] for x in r['train']])
Xte=arr(r['test']); yte=np.array([x[0] for x in r['test']]); ste=np.array([x[2] for x in r['test']])
Xo=arr(r['oos']); to=np.array([x[0] for x in r['oos']]); so=np.array([x[2] for x in r['oos']])
mu=Xtr.mean(0); sd=Xtr.std(0); sd[sd<1e-8]=1
def fit(X,y,l2=1e-3,it=300):
    X=torch.tensor((X-mu)/sd); y=torch.tensor(y)
    W=torch.zeros(X.shape[1],6,requires_grad=True); b=torch.zeros(6,requires_grad=True)
    opt=torch.optim.Adam([W,b],lr=0.05)
    for _ in range(it):
        opt.zero_grad(); loss=torch.nn.functional.cross_entropy(X@W+b,y)+0.5*l2*(W**2).sum()*2/2; loss.backward(); opt.step()
    return W.detach().numpy(), b.detach().numpy()
W,b=fit(Xtr,ytr)
def probs(X):
    z=((X-mu)/sd)@W+b; z-=z.max(1,keepdims=True); p=np.exp(z); return p/p.sum(1,keepdims=True)
fam={0:0,3:0,4:1,5:1,2:2,1:3}
def unit(X): return X/np.maximum(np.linalg.norm(X,axis=1,keepdims=True),1e-30)
Z=(Xtr-mu)/sd; Zte=(Xte-mu)/sd; Zo=(Xo-mu)/sd
def pooled(idx, reg):
    Zd=Z[idx]; y=ytr[idx]; means=np.stack([Zd[y==t].mean(0) for t in range(6)])
    P=np.linalg.inv(np.cov((Zd-means[y]).T)+reg*np.eye(Z.shape[1]))
    return lambda Q: -np.min(np.stack([np.einsum('ij,jk,ik->i',Q-m,P,Q-m) for m in means],1),1)
def diagonal(idx, reg):
    Zd=Z[idx]; y=ytr[idx]; means=np.stack([Zd[y==t].mean(0) for t in range(6)]); v=((Zd-means[y])**2).mean(0)+reg
    return lambda Q: -np.min(np.stack([(((Q-m)**2)/v).sum(1) for m in means],1),1)
def nearest_cosine(idx, dims):
    T=unit(Xtr[idx][:,dims]); y=ytr[idx]
    def f(Q):
        X=Xtr if Q is Z else (Xte if Q is Zte else Xo)
        pred=probs(X).argmax(1); S=unit(X[:,dims])@T.T
        return np.array([S[i,y==pred[i]].max() for i in range(len(X))])
    return f
def show(name, fitter, q=0.05):
    folds=itr%5; cv=np.zeros(len(Z))
    for f in range(5):
        m=fitter(np.where(folds!=f)[0]); s=m(Z)
        cv[folds==f]=s[folds==f]
    full=fitter(np.arange(len(Z))); thr=np.quantile(cv,q); s_te=full(Zte); s_o=full(Zo)
    out=[f"{name:28s}"]+[f"{st}:ff{(s_te[ste==st]<thr).mean()*100:.0f}%" for st in STYLES]
    out+=[f"{t[:6]}:{(s_o[(to==t)&(so=='raw')]<thr).mean()*100:.0f}%" for t in ['wikitext2','python_code','german_manpages']]
    print(" ".join(out))
show("nearest cosine emb+router", lambda idx: nearest_cosine(idx, np.arange(H+E)))
show("nearest cosine all blocks", lambda idx: nearest_cosine(idx, np.arange(2*H+E)))
show("diagonal covariance", lambda idx: diagonal(idx, 0.1))
show("pooled covariance (chosen)", lambda idx: pooled(idx, 0.1))

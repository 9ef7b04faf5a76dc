#!/usr/bin/env python3
"""Compares premoe's per-choice log-likelihoods on SmolLM2 with the transformers fixture.

Runs `premoe logits --json` on each choice's token ids (Tests/Fixtures/seap/smollm2_loglik.json,
from make_smollm2_loglik_fixture.py), sums log-softmax (float64) over the continuation tokens and
prints |ours - transformers| per choice and the worst. The same check runs in the opt-in SmolLM2
suite of SEAPTests; this one needs only a release binary.

Usage:  python scripts/check_smollm2_loglik.py BINARY GGUF [N]   (first N choices, default all)
"""
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary, gguf = sys.argv[1], sys.argv[2]
fixture = json.load(open(os.path.join(REPO, "Tests/Fixtures/seap/smollm2_loglik.json")))
choices = fixture["choices"][: int(sys.argv[3])] if len(sys.argv) > 3 else fixture["choices"]
worst = 0.0
for c in choices:
    ids = c["ids"]
    out = subprocess.run([binary, "logits", gguf, "--ids", ",".join(map(str, ids)), "--json"],
                         check=True, capture_output=True, text=True).stdout
    logits = json.loads(out)["logits"]
    total = 0.0
    for i in range(c["split"], len(ids)):
        row = logits[i - 1]
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        total += row[ids[i]] - lse
    d = abs(total - c["log_likelihood"])
    worst = max(worst, d)
    print(f"{c['task']:11s} ours {total:11.5f}  transformers {c['log_likelihood']:11.5f}  |d| {d:.2e}")
print(f"worst |d| over {len(choices)} choices: {worst:.2e}")

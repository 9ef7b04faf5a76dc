#!/usr/bin/env python3
"""Reference activation statistics and SEAP scores for the tiny llama fixture (SEAPTests).

Runs Tests/Fixtures/models/llama with transformers (float32, eager attention), each sequence
alone, with forward pre-hooks on every layer's o_proj and down_proj, and writes
Tests/Fixtures/seap/llama_stats.json: the token sequences, and per layer and site the
population mean, variance and mean of squares over all positions (float64, two-pass), plus the
WIFV channel scores (variance x squared column norm of the following weight) and head scores
(mean over each head's channels).

Usage:  python scripts/make_seap_fixture.py
Needs:  torch, transformers (scripts/requirements.txt). No network.
"""
import json
import os

import numpy as np
import torch
import transformers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "Tests/Fixtures/models/llama")
OUT = os.path.join(REPO, "Tests/Fixtures/seap/llama_stats.json")

torch.manual_seed(0)
model = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
model.eval()
cfg = model.config
rng = np.random.default_rng(7)
sequences = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (5, 17, 3, 11)]

captured = {}


def hook(name):
    def pre(_module, args):
        captured.setdefault(name, []).append(args[0][0].detach().double().numpy())
    return pre


for l, layer in enumerate(model.model.layers):
    layer.self_attn.o_proj.register_forward_pre_hook(hook(f"o_proj_in/{l}"))
    layer.mlp.down_proj.register_forward_pre_hook(hook(f"down_proj_in/{l}"))

with torch.no_grad():
    for seq in sequences:
        model(torch.tensor([seq]))

head_dim = cfg.hidden_size // cfg.num_attention_heads
result = {"sequences": sequences, "transformers": transformers.__version__, "torch": torch.__version__, "layers": []}
for l, layer in enumerate(model.model.layers):
    entry = {}
    for site, weight in (("o_proj_in", layer.self_attn.o_proj.weight), ("down_proj_in", layer.mlp.down_proj.weight)):
        x = np.concatenate(captured[f"{site}/{l}"], axis=0)
        mean = x.mean(axis=0)
        var = ((x - mean) ** 2).mean(axis=0)
        c = (weight.detach().double().numpy() ** 2).sum(axis=0)
        scores = var * c
        entry[site] = {"count": int(x.shape[0]), "mean": mean.tolist(), "variance": var.tolist(),
                       "mean_square": (x ** 2).mean(axis=0).tolist(), "wifv": scores.tolist()}
        if site == "o_proj_in":
            entry[site]["wifv_heads"] = scores.reshape(-1, head_dim).mean(axis=1).tolist()
    result["layers"].append(entry)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(result, f)
print("wrote", OUT)

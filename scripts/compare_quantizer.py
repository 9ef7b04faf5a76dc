#!/usr/bin/env python3
"""Quantization error of `premoe quantize` against `llama-quantize` on real-shaped tensors.

Writes a synthetic Qwen3-MoE checkpoint with Qwen3-30B-A3B's matrix shapes (hidden 2048, expert
width 768, 32 heads x 128, 4 KV heads; one layer, 4 experts, weights Student-t(5) x 0.02 so the
tails are heavier than a Gaussian's, as trained weights are), converts it with
`premoe quantize --type f32`, quantizes that file with `llama-quantize --pure` to each type, and
quantizes the checkpoint with `premoe quantize --type T`. For every tensor both files store in the
same block type it prints the RMSE of the dequantized values (gguf-py) against the f32 values,
and the ratio premoe / llama.cpp (the goal: within 2%). Then runs both quantized files in llama.cpp
(scripts/llama_greedy_ids.cpp) and premoe greedily and prints token agreement.

Not part of CI. Needs numpy, llama.cpp (scripts/build_llama_cpp.sh) and its gguf-py.
Usage: scripts/compare_quantizer.py [--premoe .build/debug/premoe] [--work DIR]
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_gguf_llama_cpp import build_greedy, run  # noqa: E402
from synthetic_moe import write_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TYPES = [("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("q4_k", "Q4_K_S"), ("q5_k", "Q5_K_S"), ("q6_k", "Q6_K")]
H, FFN, HEADS, KV, HD, EXPERTS, VOCAB = 2048, 768, 32, 4, 128, 4, 512


def tensors(path: Path):
    import gguf
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type, t) for t in r.tensors}


def dequant(t):
    import gguf
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--premoe", default=str(ROOT / ".build/debug/premoe"))
    ap.add_argument("--work", default="/tmp/premoe-quant-check")
    args = ap.parse_args()
    bin_dir = Path(run([ROOT / "scripts/build_llama_cpp.sh"]).strip().splitlines()[-1])
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ckpt = work / "synthetic-qwen3moe"
    write_checkpoint(ckpt, "qwen3_moe", hidden=H, layers=1, heads=HEADS, kv_heads=KV, head_dim=HD, experts=EXPERTS,
                     ffn=FFN, vocab=VOCAB)
    f32 = work / "f32.gguf"
    run([args.premoe, "quantize", ckpt, "--type", "f32", "--out", f32])
    ref = {n: dequant(t) for n, (ty, t) in tensors(f32).items()}
    greedy = build_greedy(bin_dir, work)
    prompt = "Question: how many clips did she sell?"
    print(f"synthetic Qwen3-MoE, hidden {H}, experts {EXPERTS} x {FFN}, weights t(5) x 0.02\n")
    print(f"{'type':6} {'tensor':28} {'premoe RMSE':>12} {'llama RMSE':>12} {'ratio':>7}")
    for ours_type, llama_type in TYPES:
        ours_path, theirs_path = work / f"premoe.{ours_type}.gguf", work / f"llama.{ours_type}.gguf"
        run([args.premoe, "quantize", ckpt, "--type", ours_type, "--out", ours_path])
        run([bin_dir / "llama-quantize", "--pure", f32, theirs_path, llama_type])
        ours, theirs = tensors(ours_path), tensors(theirs_path)
        worst = 0.0
        for name in sorted(ours):
            (ta, a), (tb, b) = ours[name], theirs[name]
            if ta != tb or ta.name in ("F32", "F16"):
                continue
            x = ref[name]
            ra, rb = np.sqrt(np.mean((dequant(a) - x) ** 2)), np.sqrt(np.mean((dequant(b) - x) ** 2))
            worst = max(worst, abs(ra / rb - 1))
            print(f"{ours_type:6} {name:28} {ra:12.4e} {rb:12.4e} {ra / rb:7.4f}  {ta.name}")
        ids = json.loads(run([args.premoe, "tokenize", ours_path, "--text", prompt, "--json"]))["ids"]
        agree = []
        for path in (ours_path, theirs_path):
            mine = json.loads(run([args.premoe, "generate", path, "--prompt", prompt, "--max-tokens", 32,
                                   "--temperature", "0", "--json"]))["tokens"]
            llama = [int(v) for v in run([greedy, path, 32, ",".join(map(str, ids))]).split(",")]
            same = next((i for i, (p, q) in enumerate(zip(mine, llama)) if p != q), min(len(mine), len(llama)))
            agree.append(f"{path.name}: premoe/llama.cpp agree on {same}/{min(len(mine), len(llama))}")
        print(f"{ours_type:6} worst |ratio-1| = {worst:.4f}; " + "; ".join(agree) + "\n")


if __name__ == "__main__":
    cache = Path(os.environ.get("PREMOE_CACHE", Path.home() / ".cache/premoe"))
    for p in sorted(cache.glob("llama.cpp/*/src/vendor/llama.cpp/gguf-py")):
        sys.path.insert(0, str(p))
    main()

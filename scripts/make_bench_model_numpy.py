#!/usr/bin/env python3
"""Write the ~1.3B-parameter bf16 Qwen3-MoE benchmark checkpoint with numpy alone (no torch).

The same shapes as scripts/make_bench_model.py (hidden 1024, 12 layers, 64 experts of width 512,
top-8, 16 q heads x 64, 4 kv heads, untied head), random normal weights (std 0.02, norms 1),
transformers' per-expert tensor names, sharded safetensors with an index, written tensor by
tensor (peak memory ~ one tensor). The tokenizer is models/demo-moe's (8192 entries), so the
vocabulary is 8192. For benchmarks of memory and speed only: the weights mean nothing.

Usage: python3 scripts/make_bench_model_numpy.py [--out bench-models/qwen3moe-1b-np] [--shard-bytes 1000000000]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, LAYERS, EXPERTS, TOPK, FF, HEADS, KV, HD, VOCAB = 1024, 12, 64, 8, 512, 16, 4, 64, 8192


def tensors():
    yield "model.embed_tokens.weight", (VOCAB, H)
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (H,)
        yield p + "self_attn.q_proj.weight", (HEADS * HD, H)
        yield p + "self_attn.k_proj.weight", (KV * HD, H)
        yield p + "self_attn.v_proj.weight", (KV * HD, H)
        yield p + "self_attn.o_proj.weight", (H, HEADS * HD)
        yield p + "self_attn.q_norm.weight", (HD,)
        yield p + "self_attn.k_norm.weight", (HD,)
        yield p + "post_attention_layernorm.weight", (H,)
        yield p + "mlp.gate.weight", (EXPERTS, H)
        for e in range(EXPERTS):
            yield p + f"mlp.experts.{e}.gate_proj.weight", (FF, H)
            yield p + f"mlp.experts.{e}.up_proj.weight", (FF, H)
            yield p + f"mlp.experts.{e}.down_proj.weight", (H, FF)
    yield "model.norm.weight", (H,)
    yield "lm_head.weight", (VOCAB, H)


def bf16(name, shape, rng):
    if len(shape) == 1:
        return np.full(shape, 0x3F80, dtype=np.uint16)  # 1.0
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return (x.view(np.uint32) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-models", "qwen3moe-1b-np"))
    ap.add_argument("--shard-bytes", type=int, default=1_000_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    specs = list(tensors())
    shards, current, size = [], [], 0
    for name, shape in specs:
        nbytes = int(np.prod(shape)) * 2
        if current and size + nbytes > args.shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    shards.append(current)
    rng = np.random.default_rng(args.seed)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape in shard:
            nbytes = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(args.out, file), "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape in shard:
                f.write(bf16(name, shape, rng).tobytes())
        total += offset
        print(f"{file}: {offset / 1e9:.2f} GB", flush=True)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    config = {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": VOCAB, "hidden_size": H,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD,
        "intermediate_size": 3072, "moe_intermediate_size": FF, "num_experts": EXPERTS, "num_experts_per_tok": TOPK,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "eos_token_id": 0, "bos_token_id": None, "pad_token_id": None,
        "attention_bias": False, "hidden_act": "silu", "dtype": "bfloat16", "sliding_window": None,
        "use_sliding_window": False,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(ROOT, "models", "demo-moe", name), args.out)
    print(json.dumps({"params": total // 2, "bytes": total, "out": args.out}))


if __name__ == "__main__":
    main()

"""Synthetic Hugging Face MoE checkpoints (config.json, model.safetensors, tokenizer.json) with
chosen shapes and random weights, for the llama.cpp checks in scripts/ (never for tests).

Weights are Student-t(5) x `scale`: heavier tails than a Gaussian, as trained weights have. The
tokenizer is the 509-token byte-level BPE of the qwen3_moe test fixture. Needs only numpy.
"""
import json
import shutil
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_safetensors(path: Path, tensors: dict):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def write_checkpoint(out: Path, model_type: str = "qwen3_moe", hidden: int = 2048, layers: int = 1, heads: int = 32,
                     kv_heads: int = 4, head_dim: int = 128, experts: int = 4, top_k: int = 2, ffn: int = 768,
                     vocab: int = 512, scale: float = 0.02, seed: int = 20261201):
    """Writes a `qwen3_moe` (q/k norms per head) or `olmoe` (q/k norms over the whole projection)
    checkpoint of `layers` MoE layers to `out`."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.standard_t(5, size=shape) * scale).astype(np.float32)
    ones = lambda n: (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    t = {"model.embed_tokens.weight": w(vocab, hidden), "lm_head.weight": w(vocab, hidden), "model.norm.weight": ones(hidden)}
    for l in range(layers):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": ones(hidden), p + "post_attention_layernorm.weight": ones(hidden),
                  p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
                  p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
                  p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
                  p + "self_attn.o_proj.weight": w(hidden, heads * head_dim), p + "mlp.gate.weight": w(experts, hidden)})
        if model_type == "olmoe":
            t[p + "self_attn.q_norm.weight"], t[p + "self_attn.k_norm.weight"] = ones(heads * head_dim), ones(kv_heads * head_dim)
        else:
            t[p + "self_attn.q_norm.weight"], t[p + "self_attn.k_norm.weight"] = ones(head_dim), ones(head_dim)
        for e in range(experts):
            q = f"{p}mlp.experts.{e}."
            t[q + "gate_proj.weight"], t[q + "up_proj.weight"], t[q + "down_proj.weight"] = w(ffn, hidden), w(ffn, hidden), w(hidden, ffn)
    out.mkdir(parents=True)
    write_safetensors(out / "model.safetensors", t)
    config = {"model_type": model_type, "hidden_size": hidden, "intermediate_size": ffn if model_type == "olmoe" else 4 * ffn,
              "moe_intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "head_dim": head_dim, "num_experts": experts,
              "num_experts_per_tok": top_k, "norm_topk_prob": model_type != "olmoe", "rms_norm_eps": 1e-6,
              "vocab_size": vocab, "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "hidden_act": "silu", "decoder_sparse_step": 1, "mlp_only_layers": [], "eos_token_id": 509,
              "attention_bias": False}
    config["architectures"] = ["OlmoeForCausalLM" if model_type == "olmoe" else "Qwen3MoeForCausalLM"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(ROOT / "Tests/Fixtures/models/qwen3_moe/tokenizer.json", out / "tokenizer.json")

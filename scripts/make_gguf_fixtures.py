#!/usr/bin/env python3
"""Build the GGUF test fixtures under Tests/Fixtures/gguf/ with the `gguf` Python library.

1. Models: each Hugging Face fixture under Tests/Fixtures/models/<name>/ converted the way
   llama.cpp's convert_hf_to_gguf.py does it (facts in /work/shared/docs/CHECKPOINTS.md):
   tensor names from gguf-py's TensorNameMap, routed experts stacked on the slowest axis
   (`blk.L.ffn_{gate,up,down}_exps`, ne {H, I, E}), q/k rows (and biases) of arch `llama`
   permuted from HF half-split RoPE to GGML interleaved RoPE, llama3 RoPE scaling as a
   `rope_freqs.weight` tensor, tied embeddings as a missing `output.weight`, tokenizer from
   tokenizer.json as `tokenizer.ggml.*`. Written as F32 (<name>.f32.gguf); some also as F16
   (2-D weights F16, 1-D tensors F32, as the converter's `--outtype f16` does) and as Q8_0 / Q4_1
   (2-D weights quantized with gguf-py's reference quantizer; 1-D tensors and routers F32, as
   llama-quantize leaves them).
   The Swift tests compare logits on these files with the committed HF golden.json.
2. quant_reference.json: random rows quantized with gguf-py (Q4_0, Q4_1, Q8_0: the bytes our
   quantizer must reproduce) and random Q4_K / Q6_K blocks dequantized by gguf-py.
   q5_reference.json: the same for Q5_0 and Q5_1 (`--q5` writes only this file and its checksum).
3. gguf_py_written.gguf: a small file with every metadata value type, written by gguf-py, that
   the Swift reader must parse (see GGUFInteropTests for the expected values).
4. interop.json: the result of reading swift_written.gguf (written by our GGUFWriter, committed
   by the Swift test `GGUFInteropTests` when PREMOE_WRITE_GGUF_FIXTURES=1) with gguf-py.

Usage:  python scripts/make_gguf_fixtures.py            (needs numpy, safetensors, gguf==0.19.0)
No network. Deterministic (fixed seeds); CHECKSUMS.sha256 lists every file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import gguf
import numpy as np
from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "Tests", "Fixtures", "models")
OUT = os.path.join(REPO, "Tests", "Fixtures", "gguf")

ARCH = {  # HF model_type -> GGUF general.architecture
    "llama": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "olmoe": "olmoe",
}
MODEL_ARCH = {
    "llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3,
    "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE, "qwen2moe": gguf.MODEL_ARCH.QWEN2MOE, "olmoe": gguf.MODEL_ARCH.OLMOE,
}
# fixture -> output types
FIXTURES = {
    "llama": ["f32", "f16", "q8_0"],
    "llama_tied": ["f32"],
    "qwen2": ["f32"],
    "qwen3": ["f32"],
    "qwen3_moe": ["f32", "f16", "q4_1"],
    "qwen2_moe": ["f32"],
    "mixtral": ["f32"],
    "olmoe": ["f32"],
}
QTYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}
FILE_TYPE = {"f32": 0, "f16": 1, "q4_1": 3, "q8_0": 7}  # llama_ftype


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF half-split RoPE rows -> GGML interleaved rows, per head (weights and biases)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tokenizer_metadata(writer: gguf.GGUFWriter, model_dir: str, eos: int | None) -> None:
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a for a in tok["added_tokens"]}
    size = max(list(vocab.values()) + list(added)) + 1
    tokens = [""] * size
    types = [gguf.TokenType.NORMAL] * size
    for t, i in vocab.items():
        tokens[i] = t
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")  # NFC + the Qwen2 split regex, as the fixture tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if eos is not None:
        writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)


def llama3_rope_factors(rope: dict, head_dim: int, theta: float) -> np.ndarray:
    """The `rope_freqs` tensor: per frequency, the divisor llama3 scaling applies."""
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wav, high_wav = old / low, old / high
    out = []
    for f in freqs:
        wav = 2 * np.pi / f
        if wav < high_wav:
            out.append(1.0)
        elif wav > low_wav:
            out.append(factor)
        else:
            smooth = (old / wav - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert(name: str, outtype: str) -> str:
    d = os.path.join(MODELS, name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    mt = cfg["model_type"]
    arch = ARCH[mt]
    L, H = cfg["num_hidden_layers"], cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or H // nh
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    tensors = load_file(os.path.join(d, "model.safetensors"))
    tmap = gguf.get_tensor_name_map(MODEL_ARCH[arch], L)

    path = os.path.join(OUT, f"{name}.{outtype}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"premoe-fixture-{name}")
    w.add_block_count(L)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(H)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(FILE_TYPE[outtype])
    experts = cfg.get("num_experts") or cfg.get("num_local_experts")
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        if "moe_intermediate_size" in cfg:
            w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        if cfg.get("shared_expert_intermediate_size"):
            w.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    tokenizer_metadata(w, d, cfg.get("eos_token_id"))

    out: dict[str, np.ndarray] = {}
    if rope.get("rope_type") == "llama3":
        out["rope_freqs.weight"] = llama3_rope_factors(rope, head_dim, theta)
    stacks: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for hf, t in sorted(tensors.items()):
        t = t.astype(np.float32)
        parts = hf.split(".")
        if ".experts." in hf:  # per-expert HF tensors -> stacked GGUF tensors
            layer, expert, proj = int(parts[2]), int(parts[5]), parts[6]
            proj = {"w1": "gate", "w3": "up", "w2": "down"}.get(proj, proj.replace("_proj", ""))
            stacks.setdefault((layer, proj), {})[expert] = t
            continue
        if arch == "llama" and hf.endswith(("q_proj.weight", "q_proj.bias")):
            t = permute(t, nh)
        if arch == "llama" and hf.endswith(("k_proj.weight", "k_proj.bias")):
            t = permute(t, nkv)
        if hf.endswith("shared_expert_gate.weight"):
            t = t.reshape(-1)  # [1, H] -> {H}
        g = tmap.get_name(hf.replace("block_sparse_moe", "mlp"), try_suffixes=(".weight", ".bias"))
        assert g is not None, f"{name}: no GGUF name for {hf}"
        out[g] = t
    for (layer, proj), per in sorted(stacks.items()):
        out[f"blk.{layer}.ffn_{proj}_exps.weight"] = np.stack([per[e] for e in sorted(per)])
    for g, t in out.items():
        # llama.cpp never quantizes 1-D tensors or the routers (`ffn_gate_inp`): they stay F32.
        if outtype == "f32" or t.ndim == 1 or (outtype.startswith("q") and "ffn_gate_inp" in g):
            w.add_tensor(g, t)
        elif outtype == "f16":
            w.add_tensor(g, t.astype(np.float16))
        else:
            q = gguf.quants.quantize(t, QTYPES[outtype])
            w.add_tensor(g, q, raw_shape=q.shape, raw_dtype=QTYPES[outtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def quant_reference() -> str:
    rng = np.random.default_rng(1234)
    cases = []
    for qt in ["Q4_0", "Q4_1", "Q8_0"]:
        for n in [32, 96, 320]:
            x = (rng.standard_normal(n) * rng.uniform(0.01, 3)).astype(np.float32)
            if n == 96:
                x[:32] = 0  # an all-zero block: d = 0
                x[32:64] = 1.5  # a constant block
            q = gguf.quants.quantize(x, getattr(gguf.GGMLQuantizationType, qt))
            deq = gguf.quants.dequantize(q, getattr(gguf.GGMLQuantizationType, qt))
            cases.append({"type": qt, "values": x.tolist(), "bytes": q.tobytes().hex(), "dequantized": deq.tolist()})
    for qt, nbytes in [("Q4_K", 144), ("Q6_K", 210)]:
        raw = rng.integers(0, 256, size=2 * nbytes, dtype=np.uint8)
        for b in range(2):  # sane half scales so values are finite
            blk = raw[b * nbytes:(b + 1) * nbytes]
            if qt == "Q4_K":
                blk[0:2] = np.frombuffer(np.float16(0.0123 * (b + 1)).tobytes(), np.uint8)
                blk[2:4] = np.frombuffer(np.float16(0.0071).tobytes(), np.uint8)
            else:
                blk[208:210] = np.frombuffer(np.float16(0.0031 * (b + 1)).tobytes(), np.uint8)
        deq = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qt))
        cases.append({"type": qt, "bytes": raw.tobytes().hex(), "dequantized": deq.reshape(-1).tolist()})
    path = os.path.join(OUT, "quant_reference.json")
    json.dump({"reference": f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else '0.19.0'}",
               "cases": cases}, open(path, "w"))
    return path


def gguf_py_written() -> str:
    path = os.path.join(OUT, "gguf_py_written.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -2.25)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓")
    w.add_array("test.strings", ["a", "", "ünï"])
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.empty", [])
    rng = np.random.default_rng(7)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 4)).astype(np.float16))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("vec", np.arange(7, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_swift_written() -> str | None:
    src = os.path.join(OUT, "swift_written.gguf")
    if not os.path.exists(src):
        print("swift_written.gguf absent: run the Swift tests with PREMOE_WRITE_GGUF_FIXTURES=1 first", file=sys.stderr)
        return None
    r = gguf.GGUFReader(src)
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        v = f.contents()
        meta[k] = v if not isinstance(v, float) else round(v, 6)
    tensors = {}
    for t in r.tensors:
        data = t.data
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)  # BF16, Q8_0: raw bytes -> floats
        tensors[t.name] = {"type": t.tensor_type.name, "ne": [int(x) for x in t.shape],
                           "values": np.asarray(data, dtype=np.float64).reshape(-1).round(6).tolist()}
    path = os.path.join(OUT, "interop.json")
    json.dump({"reader": "gguf-py 0.19.0 GGUFReader", "file": "swift_written.gguf",
               "alignment": int(r.alignment), "metadata": meta, "tensors": tensors}, open(path, "w"), indent=1)
    return path


def q5_reference() -> str:
    """Q5_0 and Q5_1 (what llama-quantize picks where a K-quant does not fit a row): gguf-py's
    quantized bytes and dequantized values, in quant_reference.json's shape."""
    rng = np.random.default_rng(5050)
    cases = []
    for qt in ["Q5_0", "Q5_1"]:
        for n in [32, 96, 320]:
            x = (rng.standard_normal(n) * rng.uniform(0.01, 3)).astype(np.float32)
            if n == 96:
                x[:32] = 0  # an all-zero block: d = 0
                x[32:64] = -0.75  # a constant block
            q = gguf.quants.quantize(x, getattr(gguf.GGMLQuantizationType, qt))
            deq = gguf.quants.dequantize(q, getattr(gguf.GGMLQuantizationType, qt))
            cases.append({"type": qt, "values": x.tolist(), "bytes": q.tobytes().hex(), "dequantized": deq.tolist()})
    path = os.path.join(OUT, "q5_reference.json")
    json.dump({"reference": f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else '0.19.0'}",
               "cases": cases}, open(path, "w"))
    return path


def update_checksum(path: str) -> None:
    """Replaces (or adds) one file's line in CHECKSUMS.sha256."""
    sums = os.path.join(OUT, "CHECKSUMS.sha256")
    name = os.path.basename(path)
    lines = [l for l in open(sums).read().splitlines() if l and not l.endswith("  " + name)]
    lines.append(f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}  {name}")
    open(sums, "w").write("\n".join(sorted(lines, key=lambda l: l.split("  ")[1])) + "\n")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    if "--q5" in sys.argv:  # only q5_reference.json (the other fixtures stay as committed)
        update_checksum(q5_reference())
        return
    written = [quant_reference(), q5_reference(), gguf_py_written()]
    for name, types in FIXTURES.items():
        for t in types:
            written.append(convert(name, t))
    interop = read_swift_written()
    if interop:
        written.append(interop)
    lines = []
    for p in sorted(set(written + [os.path.join(OUT, "swift_written.gguf")])):
        if os.path.exists(p):
            lines.append(f"{hashlib.sha256(open(p, 'rb').read()).hexdigest()}  {os.path.basename(p)}")
    open(os.path.join(OUT, "CHECKSUMS.sha256"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

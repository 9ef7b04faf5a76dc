#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (Tests/Fuzz/<target>/corpus/) from the committed
fixtures, kept small so every mutation is cheap: shrunken tokenizers, a tiny complete GGUF model,
config.json files, a valid task pattern and a few task JSONL lines. Standard library only.

    python3 scripts/make_fuzz_seeds.py
"""
import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "Fixtures"
FUZZ = ROOT / "Tests" / "Fuzz"


def corpus(target):
    d = FUZZ / target / "corpus"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def safetensors():
    d = corpus("safetensors")
    for name in ["reference.safetensors", "reference_float.safetensors"]:
        shutil.copy(FIX / "safetensors" / name, d / name)
    # One tensor of each float dtype the reader knows, 4 elements each.
    header, data = {}, b""
    for dtype, size in [("F32", 4), ("F16", 2), ("BF16", 2), ("F8_E4M3", 1), ("I64", 8)]:
        header[dtype.lower()] = {"dtype": dtype, "shape": [2, 2], "data_offsets": [len(data), len(data) + 4 * size]}
        data += bytes(range(4 * size))
    text = json.dumps(header, separators=(",", ":")).encode()
    (d / "dtypes.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, payload):
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def gguf():
    d = corpus("gguf")
    for name in ["gguf_py_written.gguf", "swift_written.gguf"]:
        shutil.copy(FIX / "gguf" / name, d / name)
    # A complete qwen3moe model: hidden 8, 1 layer, 2 experts (top-1), vocab 16, gpt2 tokenizer.
    h, ffn, experts, vocab, heads, head_dim = 8, 16, 2, 16, 2, 4
    tokens = ["<|endoftext|>", "a", "b", "c", "d", "e", "Ġ", "Ġa", "ab", "ba", "H", "e", "l", "o", "1", "2"]
    u32 = lambda v: struct.pack("<I", v)
    f32 = lambda v: struct.pack("<f", v)
    kvs = [
        gguf_kv("general.architecture", 8, gguf_string("qwen3moe")),
        gguf_kv("qwen3moe.embedding_length", 4, u32(h)),
        gguf_kv("qwen3moe.block_count", 4, u32(1)),
        gguf_kv("qwen3moe.attention.head_count", 4, u32(heads)),
        gguf_kv("qwen3moe.attention.head_count_kv", 4, u32(1)),
        gguf_kv("qwen3moe.attention.key_length", 4, u32(head_dim)),
        gguf_kv("qwen3moe.context_length", 4, u32(64)),
        gguf_kv("qwen3moe.rope.freq_base", 6, f32(10000)),
        gguf_kv("qwen3moe.attention.layer_norm_rms_epsilon", 6, f32(1e-6)),
        gguf_kv("qwen3moe.expert_count", 4, u32(experts)),
        gguf_kv("qwen3moe.expert_used_count", 4, u32(1)),
        gguf_kv("qwen3moe.expert_feed_forward_length", 4, u32(ffn)),
        gguf_kv("tokenizer.ggml.model", 8, gguf_string("gpt2")),
        gguf_kv("tokenizer.ggml.pre", 8, gguf_string("qwen2")),
        gguf_kv("tokenizer.ggml.tokens", 9, u32(8) + struct.pack("<Q", len(tokens)) + b"".join(gguf_string(t) for t in tokens)),
        gguf_kv("tokenizer.ggml.merges", 9, u32(8) + struct.pack("<Q", 2) + gguf_string("Ġ a") + gguf_string("a b")),
        gguf_kv("tokenizer.ggml.eos_token_id", 4, u32(0)),
    ]
    tensors = [  # GGUF name, ne (fastest first)
        ("token_embd.weight", [h, vocab]), ("output_norm.weight", [h]), ("output.weight", [h, vocab]),
        ("blk.0.attn_norm.weight", [h]), ("blk.0.ffn_norm.weight", [h]),
        ("blk.0.attn_q.weight", [h, heads * head_dim]), ("blk.0.attn_k.weight", [h, head_dim]),
        ("blk.0.attn_v.weight", [h, head_dim]), ("blk.0.attn_output.weight", [heads * head_dim, h]),
        ("blk.0.attn_q_norm.weight", [head_dim]), ("blk.0.attn_k_norm.weight", [head_dim]),
        ("blk.0.ffn_gate_inp.weight", [h, experts]), ("blk.0.ffn_gate_exps.weight", [h, ffn, experts]),
        ("blk.0.ffn_up_exps.weight", [h, ffn, experts]), ("blk.0.ffn_down_exps.weight", [ffn, h, experts]),
    ]
    infos, data = b"", b""
    for name, ne in tensors:
        count = 1
        for n in ne:
            count *= n
        infos += gguf_string(name) + u32(len(ne)) + b"".join(struct.pack("<q", n) for n in ne) + u32(0)
        infos += struct.pack("<Q", len(data))
        data += b"".join(f32(((i * 7) % 11 - 5) / 20) for i in range(count))
        data += b"\0" * ((32 - len(data) % 32) % 32)
    head = b"GGUF" + u32(3) + struct.pack("<QQ", len(tensors), len(kvs)) + b"".join(kvs) + infos
    head += b"\0" * ((32 - len(head) % 32) % 32)
    (d / "qwen3moe_tiny.gguf").write_bytes(head + data)


def config():
    d = corpus("config")
    for model in sorted((FIX / "models").iterdir()):
        if (model / "config.json").exists():
            shutil.copy(model / "config.json", d / f"{model.name}.json")
    shutil.copy(ROOT / "models" / "demo-moe" / "config.json", d / "demo-moe.json")


def tokenizer():
    d = corpus("tokenizer")
    for family in sorted((FIX / "tokenizers").iterdir()):
        path = family / "tokenizer.json"
        if not path.exists():
            continue
        t = json.loads(path.read_text())
        model = t.get("model", {})
        if isinstance(model.get("vocab"), dict):
            keep = {k: v for k, v in model["vocab"].items() if v < 300}
            for a in t.get("added_tokens", []):
                keep[a["content"]] = a["id"]
            model["vocab"] = keep
            merges = []
            for m in model.get("merges", []):
                parts = m.split(" ") if isinstance(m, str) else m
                if len(parts) == 2 and all(p in keep for p in parts) and "".join(parts) in keep:
                    merges.append(m)
            model["merges"] = merges
        (d / f"{family.name}.json").write_text(json.dumps(t, ensure_ascii=False, separators=(",", ":")))


def pattern():
    d = corpus("pattern")
    def make(task, scorer, params, scores):
        return {
            "version": 1, "model_fingerprint": "f" * 64, "model_type": "qwen3_moe", "task": task,
            "scorer": {"name": scorer, "parameters": params}, "token_count": 128, "expert_count": 8,
            "layers": {"0": scores, "1": list(reversed(scores))},
            "signature": {"layer": 0, "scorer": {"name": "tcess", "parameters": {"k": 1, "r": -1}}, "values": scores},
            "created_at": "2026-12-01T00:00:00Z", "source": "data.jsonl",
        }
    scores = [0.5, -0.25, 0, 1.5, 2, 0.125, 3, -1]
    (d / "tcess.json").write_text(json.dumps(make("gsm8k", "tcess", {"k": 1, "r": -1}, scores)))
    (d / "random.json").write_text(json.dumps(make("boolq", "random", {"seed": 3}, [i / 8 for i in range(8)])))
    (d / "prob.json").write_text(json.dumps(make("piqa", "tcess-prob", {"k": 2, "r": 0}, [1] * 8)))


def jsonl():
    d = corpus("jsonl")
    tasks = ROOT.parent / "shared" / "data" / "tasks"
    for task in sorted(p for p in tasks.iterdir() if p.is_dir()) if tasks.exists() else []:
        lines = (task / "train.jsonl").read_text().splitlines()[:3] if (task / "train.jsonl").exists() else []
        if lines:
            (d / f"{task.name}.jsonl").write_text("\n".join(lines) + "\n")
    (d / "text.jsonl").write_text('{"text": "The sun is hot"}\n\n{"prompt": "Q", "completion": "A"}\n')


if __name__ == "__main__":
    for make in [safetensors, gguf, config, tokenizer, pattern, jsonl]:
        make()
    for target in sorted(FUZZ.iterdir()):
        if (target / "corpus").is_dir():
            files = list((target / "corpus").iterdir())
            print(f"{target.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")

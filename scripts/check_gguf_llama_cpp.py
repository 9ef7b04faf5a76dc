#!/usr/bin/env python3
"""Runs premoe's GGUF specialists in llama.cpp and compares greedy tokens with `premoe generate`.

For each family (the demo model; the qwen3_moe, qwen2_moe and mixtral test fixtures; a
synthetic OLMoE):
profile a task, export a 50% specialist with `premoe prune --format gguf [--type T]`, tokenize a
prompt with `premoe tokenize` on the GGUF, then decode greedily from the same prompt ids with
llama.cpp (scripts/llama_greedy_ids.cpp against libllama) and with `premoe generate --temperature 0`
on the same file. F32/F16 (and BF16 source) exports must agree token for token; quantized exports
report agreement (llama.cpp quantizes activations to Q8 for its quantized dot products, and to BF16
for BF16 weights, so a BF16-source export is reported, not required to agree).

Not part of CI. Needs llama.cpp (scripts/build_llama_cpp.sh builds it) and a built premoe.

Usage: scripts/check_gguf_llama_cpp.py [--premoe .build/release/premoe] [--work DIR] [--tokens 32]
(a debug premoe works too, ~35x slower: 9 minutes instead of 15 seconds on 2 cores)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data/tasks/gsm8k/train.jsonl"
PROMPT = "Question: Natalia sold clips to 48 of her friends in April. How many clips did she sell?\nAnswer:"

# (label, model directory, calibration tokens, export types; None = keep the checkpoint dtype)
FAMILIES = [
    ("qwen3moe demo-moe (bf16)", "models/demo-moe", 4000, [None, "f32", "f16", "q8_0", "q4_0", "q4_k_m"]),
    ("qwen3moe fixture", "Tests/Fixtures/models/qwen3_moe", 1000, [None, "f16", "q8_0", "q4_0"]),
    ("qwen2moe fixture", "Tests/Fixtures/models/qwen2_moe", 1000, [None, "f16", "q8_0", "q4_0"]),
    ("mixtral (llama) fixture", "Tests/Fixtures/models/mixtral", 1000, [None, "f16", "q8_0", "q4_0"]),
    # llama.cpp's OLMoE needs as many KV heads as heads (its k_norm is n_embd wide; the export
    # says so in a note), which the olmoe fixture does not have (2 for 4; llama.cpp refuses even
    # its converter's file of it): a synthetic OLMoE without GQA instead (scripts/synthetic_moe.py).
    ("olmoe synthetic (MHA)", "synthetic:olmoe", 1000, [None, "f16", "q8_0", "q4_0", "q4_k_m"]),
]
EXACT = {"f32", "f16"}


def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return p.stdout


def build_greedy(bin_dir: Path, work: Path, tool: str = "llama_greedy_ids") -> Path:
    """Builds scripts/TOOL.cpp against the llama.cpp build in `bin_dir`."""
    src_root = bin_dir.parent.parent / "src/vendor/llama.cpp"
    exe = work / tool
    run(["c++", "-O2", "-std=c++17", ROOT / f"scripts/{tool}.cpp", f"-I{src_root}/include",
         f"-I{src_root}/ggml/include", f"-L{bin_dir}", "-lllama", "-lggml", "-lggml-base",
         f"-Wl,-rpath,{bin_dir}", "-o", exe])
    return exe


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--premoe", default=str(ROOT / ".build/debug/premoe"))
    ap.add_argument("--work", default="/tmp/premoe-gguf-check")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--only", help="run only families whose label contains this")
    args = ap.parse_args()
    premoe = Path(args.premoe)
    if not premoe.exists():
        sys.exit(f"{premoe} not found: swift build first (or pass --premoe)")
    bin_dir = Path(run([ROOT / "scripts/build_llama_cpp.sh"]).strip().splitlines()[-1])
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    greedy = build_greedy(bin_dir, work)
    print(f"llama.cpp: {bin_dir}\nprompt: {PROMPT!r}\ngreedy tokens: {args.tokens}\n")
    print(f"{'family':26} {'type':7} {'file types':22} {'equal':>5}  {'agree':>7}  note")
    failures = 0
    for label, model, max_tokens, types in FAMILIES:
        if args.only and args.only not in label:
            continue
        if model.startswith("synthetic:"):
            sys.path.insert(0, str(ROOT / "scripts"))
            from synthetic_moe import write_checkpoint
            path = work / "synthetic-olmoe"
            write_checkpoint(path, "olmoe", hidden=256, layers=2, heads=4, kv_heads=4, head_dim=64, experts=8,
                             top_k=2, ffn=256, scale=0.1)
            model = str(path)
        store = work / (Path(model).name + "-patterns")
        run([premoe, "profile", ROOT / model, "--task", "gsm8k", "--data", DATA, "--max-tokens", max_tokens,
             "--store", store, "--no-progress"])
        for t in types:
            out = work / f"{Path(model).name}-{t or 'source'}"
            cmd = [premoe, "prune", ROOT / model, "--task", "gsm8k", "--store", store, "--keep", "50%",
                   "--format", "gguf", "--out", out]
            if t:
                cmd += ["--type", t]
            run(cmd)
            gguf = out / "model.gguf"
            kinds = gguf_types(gguf)
            ids = json.loads(run([premoe, "tokenize", gguf, "--text", PROMPT, "--json"]))["ids"]
            ours = json.loads(run([premoe, "generate", gguf, "--prompt", PROMPT, "--max-tokens", args.tokens,
                                   "--temperature", "0", "--json"]))["tokens"]
            try:
                theirs = [int(x) for x in run([greedy, gguf, args.tokens, ",".join(map(str, ids))]).split(",")]
                note = ""
            except RuntimeError as e:
                theirs, note = [], "llama.cpp failed: " + str(e).strip().splitlines()[-1][:80]
            n = min(len(ours), len(theirs))
            agree = first_difference(ours, theirs)
            equal = bool(theirs) and ours[:n] == theirs[:n] and n >= min(args.tokens, len(ours))
            if not note and len(ours) != len(theirs):
                note = f"lengths premoe {len(ours)} llama.cpp {len(theirs)} (EOS)"
            exact = t in EXACT or (t is None and all(k.startswith("F32:") for k in kinds.split(",")))
            if exact and not equal:
                failures += 1
                note = (note + " MISMATCH").strip()
            print(f"{label:26} {t or 'source':7} {kinds:22} {str(equal):>5}  {agree:>3}/{n:<3}  {note}", flush=True)
            if not equal:
                print(f"    premoe:    {ours}\n    llama.cpp: {theirs}")
    print(f"\n{failures} exact-type export(s) disagree" if failures else "\nall F32/F16 exports agree")
    return 1 if failures else 0


def gguf_types(path: Path) -> str:
    """Tensor types in the file with counts, via gguf-py from the llama.cpp tree if importable."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "?"
    from collections import Counter
    r = gguf.GGUFReader(path)
    c = Counter(t.tensor_type.name for t in r.tensors)
    return ",".join(f"{k}:{v}" for k, v in sorted(c.items()))


if __name__ == "__main__":
    if "PYTHONPATH" not in os.environ:
        cache = Path(os.environ.get("PREMOE_CACHE", Path.home() / ".cache/premoe"))
        for p in sorted(cache.glob("llama.cpp/*/src/vendor/llama.cpp/gguf-py")):
            sys.path.insert(0, str(p))
    sys.exit(main())

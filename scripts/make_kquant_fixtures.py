#!/usr/bin/env python3
"""Makes Tests/Fixtures/gguf/kquant_reference.json: rows quantized by ggml itself (Q4_K, Q5_K,
Q6_K, and Q4_0 / Q8_0), and random Q5_K blocks dequantized by gguf-py (the reader's reference).
The K-quant bytes are a quality bar, not a target: premoe's own quantizer (KQuantizer) writes
different bytes, and QuantizeKQuantsTests holds its dequantized RMSE, block by block, to at most
1.02x that of ggml's bytes for the same values. Q4_0 / Q8_0 bytes must be reproduced exactly.

ggml's quantizer is called through scripts/ggml_quantize_ref.c linked against the libggml-base of
the llama.cpp build that scripts/build_llama_cpp.sh makes (llama.cpp 0c1e570). Values: Student-t(5)
rows of 256 and 512 scaled like trained weights, plus an all-zero block, a constant block and a
block with one large outlier. Usage: scripts/make_kquant_fixtures.py (needs numpy, gguf-py).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TYPES = {"Q4_0": 2, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


def main():
    bin_dir = Path(subprocess.run([ROOT / "scripts/build_llama_cpp.sh"], capture_output=True, text=True,
                                  check=True).stdout.strip().splitlines()[-1])
    src = bin_dir.parent.parent / "src/vendor/llama.cpp"
    sys.path.insert(0, str(src / "gguf-py"))
    import gguf
    work = Path(tempfile.mkdtemp())
    exe = work / "ggml_quantize_ref"
    subprocess.run(["cc", "-O2", ROOT / "scripts/ggml_quantize_ref.c", f"-I{src}/ggml/include", f"-L{bin_dir}",
                    "-lggml-base", f"-Wl,-rpath,{bin_dir}", "-o", exe], check=True)
    rng = np.random.default_rng(20261201)
    rows = []
    for n, scale in [(256, 0.02), (512, 0.5), (256, 3.0)]:
        rows.append((rng.standard_t(5, n) * scale).astype(np.float32))
    special = (rng.standard_t(5, 768) * 0.05).astype(np.float32)
    special[:256] = 0  # all zero: d = 0
    special[256:512] = 0.75  # constant
    special[600] = 4.0  # one outlier among small values
    rows.append(special)
    cases = []
    for x in rows:
        for name, type_id in TYPES.items():
            inp, out = work / "in.f32", work / "out.bin"
            x.tofile(inp)
            subprocess.run([exe, str(type_id), str(len(x)), inp, out], check=True)
            q = np.fromfile(out, dtype=np.uint8)
            deq = gguf.quants.dequantize(q, getattr(gguf.GGMLQuantizationType, name))
            cases.append({"type": name, "values": x.tolist(), "bytes": q.tobytes().hex(), "dequantized": deq.tolist()})
    raw = rng.integers(0, 256, size=2 * 176, dtype=np.uint8)
    for b in range(2):
        raw[b * 176:b * 176 + 2] = np.frombuffer(np.float16(0.0123 * (b + 1)).tobytes(), np.uint8)
        raw[b * 176 + 2:b * 176 + 4] = np.frombuffer(np.float16(0.0071).tobytes(), np.uint8)
    deq = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q5_K)
    doc = {"reference": "ggml quantize_row_*_ref via ggml_quantize_chunk, llama.cpp 0c1e570; dequantized by its gguf-py",
           "cases": cases, "q5KBlocks": {"bytes": raw.tobytes().hex(), "dequantized": deq.tolist()}}
    path = ROOT / "Tests/Fixtures/gguf/kquant_reference.json"
    path.write_text(json.dumps(doc) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

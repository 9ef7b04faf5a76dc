#!/usr/bin/env python3
"""Build Tests/Fixtures/models/gpt_oss_mxfp4: the gpt_oss fixture stored as OpenAI's gpt-oss release is.

Layout, as transformers' MXFP4 integration (transformers/integrations/mxfp4.py, `_convert_moe_packed_tensors`, 5.24)
reads the published gpt-oss-20b/120b checkpoints:
  - the routed experts of every layer are stored as `model.layers.N.mlp.experts.{gate_up_proj,down_proj}_blocks`
    (U8, [E, out, in/32, 16]: 32 FP4 (e2m1) values per group, two per byte, the low nibble first) and `..._scales`
    (U8, [E, out, in/32]: an e8m0 exponent per group, value = fp4 * 2^(scale - 127)); `out` rows are the output
    features, so gate_up_proj's rows alternate gate (even) and up (odd); dequantized and transposed they are
    transformers' in-memory `gate_up_proj [E, H, 2I]` and `down_proj [E, I, H]`;
  - expert biases (`gate_up_proj_bias`, `down_proj_bias`), attention (with `sinks`), router, norms, embeddings
    and lm_head are not quantized (BF16 in the release, float32 here as in the base fixture);
  - config.json has `"quantization_config": {"modules_to_not_convert": [...], "quant_method": "mxfp4"}` as in
    gpt-oss-20b's config.json.

Each 32-value group gets the smallest power-of-two scale that brings its largest magnitude to at most 6 (the e2m1
maximum) and every value is rounded to the nearest e2m1 value (ties to the lower code). The reference is
transformers' GptOssForCausalLM (float32, eager) on the dequantized weights, computed by
make_model_fixtures.compute_reference; the script also loads the MXFP4 directory itself through transformers'
Mxfp4 integration (dequantize=True) and checks it gives the same logits, so the layout is the one transformers reads.

Usage: python scripts/make_mxfp4_fixture.py   (needs the gpt_oss fixture; no network)
"""
from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mmf  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "models")
BASE = os.path.join(ROOT, "gpt_oss")
OUT = os.path.join(ROOT, "gpt_oss_mxfp4")
FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
QUANTIZATION = {
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
    "quant_method": "mxfp4",
}


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [E, out, in] (out-major, as the checkpoint stores) -> blocks [E, out, in/32, 16], scales [E, out, in/32]."""
    e, rows, cols = w.shape
    assert cols % 32 == 0
    g = w.reshape(e, rows, cols // 32, 32).float()
    amax = g.abs().amax(-1).clamp_min(1e-30)
    exp = torch.ceil(torch.log2(amax / 6.0)).to(torch.int32)
    scaled = g / torch.ldexp(torch.ones_like(amax), exp).unsqueeze(-1)
    codes = (scaled.unsqueeze(-1) - FP4_VALUES).abs().argmin(-1).to(torch.uint8)  # ties: the lower code
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (exp + 127).to(torch.uint8).contiguous()


def dequantize(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """transformers' rule: -> [E, out, in] float32."""
    lo, hi = FP4_VALUES[(blocks & 0x0F).long()], FP4_VALUES[(blocks >> 4).long()]
    vals = torch.stack([lo, hi], -1).reshape(*blocks.shape[:-1], 32)
    vals = torch.ldexp(vals, scales.to(torch.int32).unsqueeze(-1) - 127)
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1)


def main() -> None:
    base = load_file(os.path.join(BASE, "model.safetensors"))
    with open(os.path.join(BASE, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(BASE, "golden.json")) as f:
        base_golden = json.load(f)

    stored: dict[str, torch.Tensor] = {}
    dequantized: dict[str, torch.Tensor] = {}
    err = 0.0
    for name, w in base.items():
        if name.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")):
            blocks, scales = quantize(w.transpose(1, 2))  # in-memory [E, in, out] -> stored [E, out, in]
            stored[name + "_blocks"] = blocks
            stored[name + "_scales"] = scales
            dequantized[name] = dequantize(blocks, scales).transpose(1, 2).contiguous()
            err = max(err, float((dequantized[name] - w).abs().max()))
        else:
            stored[name] = w.contiguous()
            dequantized[name] = w
    print(f"{sum(n.endswith('_blocks') for n in stored)} MXFP4 tensors; largest |dequantized - original| = {err:.4g}")

    golden, diag = mmf.reference_on(BASE, "GptOssForCausalLM", dequantized, base_golden)
    config["quantization_config"] = QUANTIZATION
    mmf.write_derived_fixture(OUT, BASE, config, stored)

    # transformers reads the MXFP4 directory itself (dequantized on CPU): same logits as the reference.
    q = mmf.transformers.GptOssForCausalLM.from_pretrained(
        OUT, dtype=torch.float32, attn_implementation="eager",
        quantization_config=mmf.transformers.Mxfp4Config(dequantize=True)).eval()
    with torch.no_grad():
        logits = q(torch.tensor([base_golden["input_ids"]]), use_cache=False).logits[0].float()
    ref = torch.tensor(golden["logits"])
    gap = float((logits - ref).abs().max() / ref.abs().max())
    print(f"transformers' own MXFP4 load vs reference: max relative difference {gap:.3g}")
    if gap > 1e-5:
        raise SystemExit("the stored layout is not the one transformers reads")
    diag["transformers_mxfp4_load_rel_diff"] = float(f"{gap:.3g}")

    mmf.write_derived_golden(OUT, golden, base_golden, {
        "dtype": "MXFP4 experts (e2m1 blocks, e8m0 scales per 32), float32 elsewhere; float32 compute on the "
                 "dequantized weights", "transformers": mmf.transformers.__version__, "torch": torch.__version__,
        "checks": diag, "source": "scripts/make_mxfp4_fixture.py"})
    print(f"wrote {OUT}: {diag}")


if __name__ == "__main__":
    main()

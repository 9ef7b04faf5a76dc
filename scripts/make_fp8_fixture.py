#!/usr/bin/env python3
"""Build Tests/Fixtures/models/deepseek_v3_fp8: the deepseek_v3 fixture stored as DeepSeek-V3's FP8 release is.

Layout, as DeepSeek-V3's README_WEIGHTS.md (github.com/deepseek-ai/DeepSeek-V3, read through the code index) describes
the published FP8 release ("quantization_config", a float32 `weight_scale_inv` per 128x128 block with partial blocks,
dequantized as block * weight_scale_inv; the MTP module at layer id num_hidden_layers with enorm, hnorm, eh_proj,
shared_head and embed_tokens):
  - every linear weight of attention (q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj) and of the MLPs
    (dense gate/up/down_proj, routed experts, shared_experts) is F8_E4M3 (`torch.float8_e4m3fn`), with an F32
    `<name>_scale_inv` of shape [ceil(out/B0), ceil(in/B1)]: the weight is `fp8 * scale_inv` per block;
  - embeddings, lm_head, norms, the router (`mlp.gate.weight`) and `e_score_correction_bias` are not FP8
    (float32 here, as the base fixture; BF16/F32 in the real release);
  - config.json has `"quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
    "weight_block_size": [B0, B1]}`; the real release uses [128, 128]. This fixture uses [32, 32] so that its
    64/40/96-wide matrices span several blocks, partial last blocks included (kv_a_proj_with_mqa has 40 rows);
  - `num_nextn_predict_layers: 1` with a multi-token-prediction layer stored at index num_hidden_layers
    (`model.layers.2.*`: eh_proj, enorm, hnorm, shared_head, embed_tokens and some decoder-layer tensors), which
    transformers and the engine ignore.

Blocks are quantized with scale = amax / 448 (the e4m3 maximum). The reference is transformers' DeepseekV3ForCausalLM
(float32, eager) on the weights dequantized with DeepSeek's rule (`weight_dequant` of its inference code: float32
`fp8 * scale_inv`, partial last blocks), computed by make_model_fixtures.compute_reference.

Usage: python scripts/make_fp8_fixture.py   (needs the deepseek_v3 fixture; no network)
"""
from __future__ import annotations

import json
import math
import os
import re
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mmf  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "models")
BASE = os.path.join(ROOT, "deepseek_v3")
OUT = os.path.join(ROOT, "deepseek_v3_fp8")
BLOCK = (32, 32)
FP8_MAX = 448.0
FP8_PATTERN = re.compile(
    r"model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj)|mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj)|eh_proj)\.weight$")


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = w.shape
    grid = (math.ceil(rows / BLOCK[0]), math.ceil(cols / BLOCK[1]))
    scale = torch.empty(grid, dtype=torch.float32)
    q = torch.empty(w.shape, dtype=torch.float8_e4m3fn)
    for i in range(grid[0]):
        for j in range(grid[1]):
            block = w[i * BLOCK[0]:(i + 1) * BLOCK[0], j * BLOCK[1]:(j + 1) * BLOCK[1]].float()
            s = max(float(block.abs().max()), 1e-12) / FP8_MAX
            scale[i, j] = s
            q[i * BLOCK[0]:(i + 1) * BLOCK[0], j * BLOCK[1]:(j + 1) * BLOCK[1]] = (block / s).to(torch.float8_e4m3fn)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] = BLOCK) -> torch.Tensor:
    """DeepSeek's rule: float32 fp8 * scale_inv of the block, grid ceil(rows/B0) x ceil(cols/B1).

    transformers 5.24's `FineGrainedFP8Config(dequantize=True)` does not do this: its
    `Fp8Dequantize._dequantize_one` (integrations/finegrained_fp8.py) ignores `weight_block_size` and derives the
    block from the grid, block = (rows // grid_rows, cols // grid_cols); a dimension not divisible by its grid
    raises "Weight shape ... not divisible by scale grid", and one that divides gets blocks of the wrong size. On
    this fixture kv_a_proj_with_mqa [40, 64] (grid [2, 2]) is dequantized with blocks of [20, 32] instead of
    [32, 32], so rows 20..31 take the scale of rows 32..39: the only two tensors that differ (by up to 0.037), and
    replacing them with this rule brings transformers' logits to this fixture's golden (1e-6). Real V3's
    kv_a_proj_with_mqa [576, 7168] (grid [5, 56]) raises instead.
    """
    expanded = scale.repeat_interleave(block[0], 0)[: q.shape[0]].repeat_interleave(block[1], 1)[:, : q.shape[1]]
    return q.to(torch.float32) * expanded


def main() -> None:
    base = load_file(os.path.join(BASE, "model.safetensors"))
    with open(os.path.join(BASE, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(BASE, "golden.json")) as f:
        base_golden = json.load(f)
    layers = config["num_hidden_layers"]

    # The MTP layer at index num_hidden_layers, with names as DeepSeek-V3 stores layer 61.
    g = torch.Generator().manual_seed(7)
    h = config["hidden_size"]
    mtp = {
        f"model.layers.{layers}.eh_proj.weight": torch.randn(h, 2 * h, generator=g) * 0.1,
        f"model.layers.{layers}.enorm.weight": torch.ones(h),
        f"model.layers.{layers}.hnorm.weight": torch.ones(h),
        f"model.layers.{layers}.embed_tokens.weight": torch.randn(config["vocab_size"], h, generator=g) * 0.1,
        f"model.layers.{layers}.shared_head.norm.weight": torch.ones(h),
        f"model.layers.{layers}.shared_head.head.weight": torch.randn(config["vocab_size"], h, generator=g) * 0.1,
        f"model.layers.{layers}.input_layernorm.weight": torch.ones(h),
        f"model.layers.{layers}.mlp.gate.weight": torch.randn(config["n_routed_experts"], h, generator=g) * 0.1,
        f"model.layers.{layers}.mlp.experts.0.gate_proj.weight":
            torch.randn(config["moe_intermediate_size"], h, generator=g) * 0.1,
    }
    FP8_PATTERN_MTP = re.compile(rf"model\.layers\.{layers}\.mlp\.experts\.\d+\.gate_proj\.weight$")

    stored: dict[str, torch.Tensor] = {}
    dequantized: dict[str, torch.Tensor] = {}
    fp8_count = 0
    for name, w in list(base.items()) + list(mtp.items()):
        if FP8_PATTERN.match(name) or FP8_PATTERN_MTP.match(name):
            q, s = quantize(w)
            stored[name] = q
            stored[name + "_scale_inv"] = s
            dequantized[name] = dequantize(q, s)
            fp8_count += 1
        else:
            stored[name] = w.contiguous()
            dequantized[name] = w
    for name in mtp:
        dequantized.pop(name)
    err = max(float((dequantized[n] - base[n]).abs().max()) for n in base)
    print(f"{fp8_count} FP8 tensors; largest |dequantized - original| = {err:.4g}")

    golden, diag = mmf.reference_on(BASE, "DeepseekV3ForCausalLM", dequantized, base_golden)
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                     "weight_block_size": list(BLOCK)}
    config["num_nextn_predict_layers"] = 1
    mmf.write_derived_fixture(OUT, BASE, config, stored)
    mmf.write_derived_golden(OUT, golden, base_golden, {
        "dtype": "float8_e4m3fn weights, block [32, 32], float32 scales; float32 compute on the dequantized weights",
        "transformers": mmf.transformers.__version__, "torch": torch.__version__, "checks": diag,
        "source": "scripts/make_fp8_fixture.py"})
    print(f"wrote {OUT}: {diag}")


if __name__ == "__main__":
    main()

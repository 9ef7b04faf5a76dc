#!/usr/bin/env python3
"""Golden logits for pruned checkpoints exported by `premoe prune` (PrunedExport in Swift).

For each exported directory under Tests/Fixtures/export/<name>/ (written by the Swift test
`ExportTests.regenerateFixtures` with PREMOE_WRITE_EXPORT_FIXTURE=1, from a model fixture and a
fixed kept-expert list), this script loads the directory with
`AutoModelForCausalLM.from_pretrained(dir, dtype=float32, attn_implementation="eager")` — i.e.
the checkpoint exactly as a transformers user would — checks the config (expert count, the
`premoe.kept_experts` record) and the tensor names, and writes `golden.json`:

  {"reference": {"transformers", "torch", "dtype", "attn_implementation"},
   "input_ids": [...],              # the source fixture's golden input_ids
   "logits": [[vocab floats] x T],  # full-sequence forward, float32, 7 significant digits
   "kept_experts": {layer: [original indices]}}

It also recomputes the same logits from the *unpruned* source model with every MoE router
masked to the kept experts, and asserts both agree: the export is the masked model, as METHODS.md
§2.3 requires. "Masked" means the non-kept experts cannot be selected, and the rest of the router
is the one the pruned model has:
  - softmax routers (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE): non-kept logits are -inf before the
    softmax, so probabilities and norm_topk_prob renormalisation run over the kept experts;
  - gpt-oss: router bias added, non-kept logits -inf, top-k of the logits, softmax over the k;
  - DeepSeek-V3 / GLM-4.5 (sigmoid scores, `e_score_correction_bias`): non-kept experts are -inf
    in the *biased selection scores* (masking the logits would not do: sigmoid(-inf) + bias is the
    bias, still selectable); the top-k of the rest is taken with **no group limit**, because the
    export sets n_group = topk_group = 1 (group-limited routing is dropped after pruning, METHODS
    §8.5 — the kept experts' original groups no longer exist as groups of the pruned router);
    weights are the chosen experts' unbiased sigmoid scores, divided by their sum if
    norm_topk_prob, times routed_scaling_factor; shared experts and the first dense layers are
    untouched. The alternative reading — original groups kept, non-kept experts -inf inside them —
    is computed too and its gap recorded as `grouped_mask_relative_gap`, to show that it is not
    what the exported checkpoint computes when the source routes within groups.

An FP8 block-scaled checkpoint (DeepSeek-V3 layout, `quant_method: fp8`) is loaded by dequantizing
every F8_E4M3 weight with its `weight_scale_inv` grid by DeepSeek's rule (make_fp8_fixture.py's
`dequantize`, partial last blocks) and handing transformers the float32 weights, not through
transformers' FineGrainedFP8 integration, which derives the block size from the grid and
dequantizes partial blocks wrongly (see that function's docstring). The multi-token-prediction
layer (`model.layers.<num_hidden_layers>.*`, which transformers does not build) is left out.

Usage:  python scripts/make_export_fixture.py [--root Tests/Fixtures/export] [--only NAME ...]
Needs:  scripts/requirements.txt (CPU torch). No network.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fp8_fixture import dequantize as fp8_dequantize  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    # An MXFP4 checkpoint (gpt-oss) is read by transformers' Mxfp4 integration, dequantized on CPU.
    config = json.load(open(os.path.join(path, "config.json")))
    quant = (config.get("quantization_config") or {}).get("quant_method")
    if quant == "fp8":
        return load_fp8(path, config)
    extra = {"quantization_config": transformers.Mxfp4Config(dequantize=True)} if quant == "mxfp4" else {}
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True, **extra
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not problems, f"{path}: {problems}"
    model.eval()
    return model


def load_fp8(path, config):
    """An FP8 block-scaled checkpoint as float32, dequantized by DeepSeek's rule (see the module docstring)."""
    block = tuple(config["quantization_config"]["weight_block_size"])
    mtp = f"model.layers.{config['num_hidden_layers']}."
    stored = load_file(os.path.join(path, "model.safetensors"))
    weights = {}
    for name, t in stored.items():
        if name.endswith("_scale_inv") or name.startswith(mtp):
            continue
        scale = stored.get(name + "_scale_inv")
        if t.dtype == torch.float8_e4m3fn:
            assert scale is not None, f"{path}: {name} has no _scale_inv"
            weights[name] = fp8_dequantize(t, scale, block)
        else:
            weights[name] = t
    plain = {k: v for k, v in config.items() if k != "quantization_config"}
    tmp = tempfile.mkdtemp(prefix="export_fp8_")
    try:
        for f in ("generation_config.json", "tokenizer.json"):
            if os.path.exists(os.path.join(path, f)):
                shutil.copy(os.path.join(path, f), tmp)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(plain, f)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        return load(tmp)
    finally:
        shutil.rmtree(tmp)


def sigmoid_route(gate, hidden_states, keep, grouped):
    """DeepSeek-V3 / GLM-4.5 routing (transformers' `DeepseekV3TopkRouter.forward`) over the kept experts:
    `keep` is a bool mask of the experts that may be selected. grouped=False drops the group limit (what the
    export's n_group = topk_group = 1 computes); grouped=True keeps the source's groups of original indices."""
    hidden = hidden_states.view(-1, gate.hidden_dim)
    logits = torch.nn.functional.linear(hidden.type(torch.float32), gate.weight.type(torch.float32))
    scores = logits.sigmoid()
    choice = (scores + gate.e_score_correction_bias).masked_fill(~keep, float("-inf"))
    if grouped and gate.num_group > 1:
        per_group = gate.num_experts // gate.num_group
        group_scores = choice.view(-1, gate.num_group, per_group).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=gate.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        allowed = group_mask.unsqueeze(-1).expand(-1, gate.num_group, per_group).reshape(-1, gate.num_experts)
        choice = choice.masked_fill(~allowed.bool(), float("-inf"))
    top_index = torch.topk(choice, k=gate.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, top_index)
    if gate.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return logits, weights * gate.routed_scaling_factor, top_index


def masked_reference(source_dir, kept, input_ids, grouped=False):
    """Logits of the unpruned model whose routers only see the kept experts: non-kept router
    logits are -inf before the router's own softmax / top-k / renormalisation (transformers 5's
    `*TopKRouter.forward`, reproduced here on masked logits; gpt-oss's router adds its bias, takes
    the top-k of the logits and softmaxes over them)."""
    model = load(source_dir)
    for layer_index, ids in kept.items():
        mlp = model.model.layers[int(layer_index)].mlp
        if hasattr(mlp, "router"):  # gpt-oss: bias, top-k of the logits, softmax over the k
            router = mlp.router
            mask = torch.full((router.weight.shape[0],), float("-inf"))
            mask[ids] = 0.0

            def route(hidden_states, router=router, mask=mask):
                logits = torch.nn.functional.linear(hidden_states, router.weight, router.bias) + mask
                top_value, top_index = torch.topk(logits, router.top_k, dim=-1)
                return logits, torch.softmax(top_value, dim=1, dtype=top_value.dtype), top_index

            router.forward = route
            continue
        gate = mlp.gate
        if hasattr(gate, "e_score_correction_bias"):  # DeepSeek-V3, GLM-4.5: sigmoid scores, bias for selection
            keep = torch.zeros(gate.weight.shape[0], dtype=torch.bool)
            keep[ids] = True
            gate.forward = lambda h, gate=gate, keep=keep: sigmoid_route(gate, h, keep, grouped)
            continue
        mask = torch.full((gate.weight.shape[0],), float("-inf"))
        mask[ids] = 0.0

        def forward(hidden_states, gate=gate, mask=mask):
            hidden = hidden_states.reshape(-1, gate.weight.shape[1])
            logits = torch.nn.functional.linear(hidden, gate.weight) + mask
            probs = torch.softmax(logits, dim=-1, dtype=torch.float)
            top_value, top_index = torch.topk(probs, gate.top_k, dim=-1)
            if getattr(gate, "norm_topk_prob", False):
                top_value = top_value / top_value.sum(dim=-1, keepdim=True)
            return logits, top_value.to(hidden.dtype), top_index

        gate.forward = forward
    with torch.no_grad():
        return model(torch.tensor([input_ids])).logits[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=os.path.join(REPO, "Tests/Fixtures/export"))
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    manifest = json.load(open(os.path.join(args.root, "manifest.json")))
    for name, entry in sorted(manifest.items()):
        if args.only and name not in args.only:
            continue
        directory = os.path.join(args.root, name)
        source = os.path.join(REPO, entry["source"])
        config = json.load(open(os.path.join(directory, "config.json")))
        kept = {int(k): v for k, v in config["premoe"]["kept_experts"].items()}
        assert {int(k): v for k, v in entry["kept_experts"].items()} == kept, name
        n = len(next(iter(kept.values())))
        count_keys = [k for k in ("num_experts", "num_local_experts", "n_routed_experts") if k in config]
        assert count_keys and all(config[k] == n for k in count_keys), (name, count_keys)
        with safe_open(os.path.join(directory, "model.safetensors"), "pt") as f:
            names = list(f.keys())
        assert not any(f".experts.{n}." in t for t in names), "expert slots must be renumbered 0..N-1"
        source_golden = json.load(open(os.path.join(source, "golden.json")))
        input_ids = source_golden["input_ids"]
        model = load(directory)
        with torch.no_grad():
            logits = model(torch.tensor([input_ids])).logits[0]
        reference = masked_reference(source, kept, input_ids)
        gap = (logits - reference).abs().max().item() / reference.abs().max().item()
        assert gap < 1e-5, f"{name}: export differs from the masked unpruned model by {gap}"
        source_config = json.load(open(os.path.join(source, "config.json")))
        grouped_gap = None
        if source_config.get("n_group", 1) > 1 and source_config.get("topk_group", 1) < source_config["n_group"]:
            grouped = masked_reference(source, kept, input_ids, grouped=True)
            grouped_gap = (logits - grouped).abs().max().item() / grouped.abs().max().item()
        golden = {
            "reference": {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "dtype": "float32",
                "attn_implementation": "eager",
                "masked_reference_relative_gap": float(f"{gap:.3g}"),
                **({"grouped_mask_relative_gap": float(f"{grouped_gap:.3g}")} if grouped_gap is not None else {}),
            },
            "input_ids": input_ids,
            "logits": [[float(f"{x:.7g}") for x in row] for row in logits.tolist()],
            "kept_experts": {str(k): v for k, v in sorted(kept.items())},
        }
        with open(os.path.join(directory, "golden.json"), "w") as f:
            json.dump(golden, f)
            f.write("\n")
        grouped_note = f", original-groups mask gap {grouped_gap:.2e}" if grouped_gap is not None else ""
        print(f"{name}: {len(names)} tensors, {n} experts/layer, masked-reference gap {gap:.2e}{grouped_note}")


if __name__ == "__main__":
    sys.exit(main())

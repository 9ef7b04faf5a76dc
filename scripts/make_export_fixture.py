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
masked to the kept experts (non-kept logits set to -inf before softmax, router rows in kept
order), and asserts both agree: the export is the masked model, as METHODS.md §2.3 requires.

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
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    # An MXFP4 checkpoint (gpt-oss) is read by transformers' Mxfp4 integration, dequantized on CPU.
    quant = (json.load(open(os.path.join(path, "config.json"))).get("quantization_config") or {}).get("quant_method")
    extra = {"quantization_config": transformers.Mxfp4Config(dequantize=True)} if quant == "mxfp4" else {}
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True, **extra
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not problems, f"{path}: {problems}"
    model.eval()
    return model


def masked_reference(source_dir, kept, input_ids):
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
        golden = {
            "reference": {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "dtype": "float32",
                "attn_implementation": "eager",
                "masked_reference_relative_gap": float(f"{gap:.3g}"),
            },
            "input_ids": input_ids,
            "logits": [[float(f"{x:.7g}") for x in row] for row in logits.tolist()],
            "kept_experts": {str(k): v for k, v in sorted(kept.items())},
        }
        with open(os.path.join(directory, "golden.json"), "w") as f:
            json.dump(golden, f)
            f.write("\n")
        print(f"{name}: {len(names)} tensors, {n} experts/layer, masked-reference gap {gap:.2e}")


if __name__ == "__main__":
    sys.exit(main())

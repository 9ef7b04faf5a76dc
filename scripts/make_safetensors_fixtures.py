#!/usr/bin/env python3
"""Reference safetensors fixtures for Tests/FormatsTests, written by Python's `safetensors`.

    python3 scripts/make_safetensors_fixtures.py            # (re)write Tests/Fixtures/safetensors/
    python3 scripts/make_safetensors_fixtures.py --check DIR  # read files our Swift writer produced

Writes into Tests/Fixtures/safetensors/:
  reference.safetensors        every dtype we read plus I64 (unsupported by us: must throw on access),
                               odd shapes ([], [0], [3, 5]) and two metadata keys
  reference_float.safetensors  F32/F16/BF16 only, one metadata key: the Swift writer, given the same
                               tensors in the reference's order, must produce these exact bytes
  sharded/                     huggingface_hub.save_torch_state_dict with a small max_shard_size:
                               model-0000k-of-0000N.safetensors + model.safetensors.index.json,
                               including a stacked experts tensor [4, 2, 3] for readRows
  expected.json                names, dtypes, shapes and values (as floats) of all of the above
  VERSIONS.txt, SHA256SUMS     the reference versions used, and checksums of every file

--check DIR reads DIR/swift_written.safetensors (and DIR/swift_sharded/ if present), written by the
opt-in Swift test `writesFilesForTheReferenceToRead` (PREMOE_FIXTURE_OUT=DIR), with the reference
library and compares them with expected.json: proof that the reference reads our files.
"""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "safetensors"))


def ramp(shape, dtype, start=-3.0, step=0.25):
    """Deterministic values exactly representable in bf16 and f16 (multiples of 1/4, |x| < 32)."""
    n = int(np.prod(shape)) if len(shape) else 1
    values = start + step * torch.arange(n, dtype=torch.float64)
    return values.reshape(shape).to(dtype)


def float_tensors():
    return {
        "f32.matrix": ramp([3, 5], torch.float32),
        "f32.scalar": torch.tensor(2.5, dtype=torch.float32),
        "f32.empty": torch.zeros([0], dtype=torch.float32),
        "f16.vector": ramp([7], torch.float16, start=1.0),
        "bf16.cube": ramp([2, 3, 2], torch.bfloat16, start=-1.5),
        "model.layers.0.mlp.experts.gate_up": ramp([4, 2, 3], torch.float32, start=-2.0),
    }


def all_tensors():
    tensors = float_tensors()
    tensors["i64.positions"] = torch.arange(5, dtype=torch.int64)
    return tensors


def sharded_tensors():
    return {
        "model.embed_tokens.weight": ramp([6, 4], torch.bfloat16),
        "model.layers.0.mlp.experts.down": ramp([4, 3, 2], torch.float32, start=1.0),
        "model.layers.0.mlp.experts.gate_up": ramp([4, 2, 3], torch.float32, start=-2.0),
        "model.layers.0.mlp.gate.weight": ramp([4, 4], torch.float32, start=0.5),
        "model.norm.weight": ramp([4], torch.float16, start=1.0),
    }


def describe(tensors):
    out = {}
    for name, t in tensors.items():
        dtype = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}[t.dtype]
        out[name] = {"dtype": dtype, "shape": list(t.shape), "values": t.to(torch.float64).flatten().tolist()}
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make():
    from huggingface_hub import save_torch_state_dict
    import huggingface_hub

    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    save_file(all_tensors(), os.path.join(ROOT, "reference.safetensors"), metadata={"format": "pt", "note": "premoe"})
    save_file(float_tensors(), os.path.join(ROOT, "reference_float.safetensors"), metadata={"format": "pt"})
    os.makedirs(os.path.join(ROOT, "sharded"))
    # Shards of at most 100 bytes of tensor data: several files and an index, as transformers saves.
    save_torch_state_dict(sharded_tensors(), os.path.join(ROOT, "sharded"), max_shard_size=100)

    expected = {
        "reference": {"metadata": {"format": "pt", "note": "premoe"}, "tensors": describe(all_tensors())},
        "reference_float": {"metadata": {"format": "pt"}, "tensors": describe(float_tensors())},
        "sharded": {"metadata": {"format": "pt"}, "tensors": describe(sharded_tensors())},
    }
    with open(os.path.join(ROOT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(ROOT, "VERSIONS.txt"), "w") as f:
        f.write(f"safetensors {safetensors.__version__}\ntorch {torch.__version__}\n")
        f.write(f"huggingface_hub {huggingface_hub.__version__}\nnumpy {np.__version__}\n")
    files = []
    for base, _, names in os.walk(ROOT):
        for name in names:
            os.chmod(os.path.join(base, name), 0o644)  # safetensors creates files 0600
            if name != "SHA256SUMS":
                files.append(os.path.relpath(os.path.join(base, name), ROOT))
    with open(os.path.join(ROOT, "SHA256SUMS"), "w") as f:
        for rel in sorted(files):
            f.write(f"{sha256(os.path.join(ROOT, rel))}  {rel}\n")
    print(f"wrote {len(files)} files under {os.path.normpath(ROOT)}")


def check_file(path, expected_tensors, expected_metadata):
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == expected_metadata, (path, f.metadata(), expected_metadata)
        assert sorted(f.keys()) == sorted(expected_tensors), (path, sorted(f.keys()))
        for name, spec in expected_tensors.items():
            t = f.get_tensor(name)
            assert list(t.shape) == spec["shape"], (name, t.shape, spec["shape"])
            assert t.to(torch.float64).flatten().tolist() == spec["values"], name
    print(f"ok: {path} ({len(expected_tensors)} tensors)")


def check(directory):
    with open(os.path.join(ROOT, "expected.json")) as f:
        expected = json.load(f)
    spec = expected["reference_float"]
    check_file(os.path.join(directory, "swift_written.safetensors"), spec["tensors"], spec["metadata"])
    sharded = os.path.join(directory, "swift_sharded")
    if os.path.isdir(sharded):
        with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
            index = json.load(f)
        spec = expected["sharded"]
        seen = {}
        for shard in sorted(set(index["weight_map"].values())):
            with safe_open(os.path.join(sharded, shard), framework="pt") as f:
                for name in f.keys():
                    assert index["weight_map"][name] == shard, name
                    seen[name] = f.get_tensor(name).to(torch.float64).flatten().tolist()
        assert seen == {n: s["values"] for n, s in spec["tensors"].items()}, "sharded values differ"
        print(f"ok: {sharded} ({len(seen)} tensors in {len(set(index['weight_map'].values()))} shards)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        make()

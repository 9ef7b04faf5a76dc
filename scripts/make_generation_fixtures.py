#!/usr/bin/env python3
"""Reference generations for the Runtime tests: greedy decoding with transformers'
repetition penalty on the committed tiny fixtures.

Writes Tests/Fixtures/generation/repetition_penalty.json. Needs the versions in
scripts/requirements.txt; the Swift tests only read the JSON.
"""
import json
import pathlib

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "Fixtures"


def main() -> None:
    cases = []
    for name in ["qwen3_moe", "llama"]:
        directory = FIXTURES / "models" / name
        golden = json.loads((directory / "golden.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
        prompt = golden["greedy"]["prompt_ids"]
        for penalty in [1.3, 0.8]:
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                    repetition_penalty=penalty, eos_token_id=None, pad_token_id=0)
            cases.append({"model": f"models/{name}", "prompt_ids": prompt, "repetition_penalty": penalty,
                          "tokens": out[0][len(prompt):].tolist()})
    out = FIXTURES / "generation" / "repetition_penalty.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"reference": {"transformers": transformers.__version__, "torch": torch.__version__},
                               "cases": cases}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

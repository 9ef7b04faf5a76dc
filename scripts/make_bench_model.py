#!/usr/bin/env python3
"""Write a ~1.3B-parameter random-init bf16 Qwen3-MoE checkpoint for benchmarks (not for git).

Shape (Qwen3-30B-A3B's layout, scaled down): hidden 1024, 12 layers, 64 experts, top-8,
moe_intermediate_size 512, 16 q heads x 64, 4 kv heads, vocab 32000, untied lm_head.
Active per token: ~0.25B parameters. Saved with `save_pretrained` in the default per-expert
layout, sharded (default 1GB shards, like real checkpoints), plus a byte-level BPE
`tokenizer.json` trained on the local task data (Qwen-style, specials last).

Usage:  python scripts/make_bench_model.py [--out bench-models/qwen3moe-1b] [--max-shard-size 1GB]
                                           [--check]   # reload with from_pretrained and run a forward
Memory: builds the model directly in bfloat16 (2.6 GB); peak RSS measured 5.3 GB with --check
(save_pretrained splits the fused experts into per-expert tensors while writing). ~30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import REPO, SPECIALS, build_tokenizer, corpus_text  # noqa: E402

transformers.logging.set_verbosity_error()

VOCAB = 32000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-models", "qwen3moe-1b"))
    ap.add_argument("--max-shard-size", default="1GB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="reload with from_pretrained and run one forward")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    # tokenizer: all local train splits (~12 MB of text) are enough for ~32k merges
    texts = corpus_text(max_bytes=12_000_000).split("\n")
    tok = build_tokenizer(VOCAB, texts)
    ntok = tok.get_vocab_size()
    eos = tok.token_to_id(SPECIALS[0])
    print(f"tokenizer: {ntok} tokens (config vocab_size {VOCAB}), {time.time() - t0:.0f}s", flush=True)
    if ntok > VOCAB:
        raise SystemExit("tokenizer larger than vocab_size")

    config = transformers.Qwen3MoeConfig(
        vocab_size=VOCAB,  # >= tokenizer size; any rows past it are padding, as in real Qwen checkpoints
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
        intermediate_size=3072,  # unused (no dense layers) but real configs carry it
        moe_intermediate_size=512,
        num_experts=64,
        num_experts_per_tok=8,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=None,
        initializer_range=0.02,
    )
    torch.manual_seed(args.seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build directly in bf16: no fp32 copy ever exists
    try:
        model = transformers.Qwen3MoeForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    model.eval()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    nparams = sum(p.numel() for p in model.parameters())
    active = nparams - sum(p.numel() for n, p in model.named_parameters() if ".experts." in n) * (1 - 8 / 64)
    print(f"built {nparams / 1e9:.3f}B params (active/token ~{active / 1e9:.3f}B), {time.time() - t0:.0f}s", flush=True)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, max_shard_size=args.max_shard_size)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    del model

    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    info = {
        "params": nparams,
        "bytes_on_disk": size,
        "seconds": round(time.time() - t0, 1),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "files": sorted(os.listdir(args.out)),
    }
    print(json.dumps(info, indent=1), flush=True)

    if args.check:
        t1 = time.time()
        m = transformers.Qwen3MoeForCausalLM.from_pretrained(args.out, dtype=torch.bfloat16)
        ids = tok.encode("The sun is hot and water is cold").ids
        with torch.no_grad():
            out = m(torch.tensor([ids]), use_cache=False).logits
        assert out.shape == (1, len(ids), VOCAB) and torch.isfinite(out).all()
        print(f"check: reload + forward of {len(ids)} tokens ok, {time.time() - t1:.0f}s", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build tiny random-init reference checkpoints + golden outputs for the Swift engine's tests.

Every fixture is a complete model directory under Tests/Fixtures/models/<name>/:
  config.json, generation_config.json, *.safetensors (as `save_pretrained` writes them,
  sharded with an index for `qwen3_moe_sharded`), tokenizer.json (one shared byte-level BPE
  tokenizer, vocab 512), golden.json (logits, greedy continuation, router decisions).

Golden values are computed by transformers (eager attention, float32, no KV cache for
`logits`) on the model *reloaded from the written files*, so they describe exactly what is on
disk. Seeds are retried until no routing decision and no greedy token is a near-tie.

Usage:  python scripts/make_model_fixtures.py [--out Tests/Fixtures/models] [--only NAME ...]
        python scripts/make_model_fixtures.py --verify-only     # reload + compare, write nothing
Needs:  scripts/requirements.txt (CPU torch is enough). No network: all configs are local.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
try:  # silence "Writing model shards" progress bars
    from transformers.utils import logging as _tl

    _tl.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("PREMOE_TASK_DATA", "/work/shared/data/tasks")
VOCAB = 512
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_ID = VOCAB - 3  # <|endoftext|>, specials take the last three ids like real Qwen tokenizers

# Qwen2/Qwen3 pre-tokenizer regex (as in their tokenizer.json)
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

INPUT_TEXT_CANDIDATES = [
    "The sun is hot and water is cold",
    "The sun is the source of energy for plants.",
    "Natalia sold clips to her friends in April.",
    "How many clips did Natalia sell in May?",
    "Which skin surface will produce the most heat?",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Plants need water and light to grow.",
    "She bought three apples and two pears.",
    "The cat sat on the mat near the door.",
]
PROMPT_TEXT = "<|im_start|>user\nThe"

# thresholds (stricter than the minimum the engine tests need)
ROUTER_REL_GAP = 2e-3  # relative gap between k-th and (k+1)-th routing score
GREEDY_MARGIN = 1e-3  # top-1 minus top-2 logit at every greedy step
GREEDY_MIN_DISTINCT = 8  # a greedy loop ("SSSS...") tests little of the KV cache
MAX_SEEDS = 60

# --------------------------------------------------------------------------------------------
# tokenizer


def corpus_text(max_bytes: int = 24_000) -> str:
    """A few KB of local text, deterministic: first records of every task's train split."""
    parts: list[str] = []
    files = sorted(glob.glob(os.path.join(DATA, "*", "train.jsonl")))
    if not files:
        raise SystemExit(f"no task data under {DATA}")
    per_file = max_bytes // len(files)
    for path in files:
        got = 0
        with open(path, "rb") as fh:
            for line in fh:
                rec = json.loads(line)
                for v in rec.values():
                    if isinstance(v, str):
                        parts.append(v)
                        got += len(v)
                    elif isinstance(v, dict):
                        for vv in v.values():
                            if isinstance(vv, list):
                                parts.extend(x for x in vv if isinstance(x, str))
                if got >= per_file:
                    break
    return "\n".join(parts)


def build_tokenizer(vocab_size: int, texts: list[str]) -> Tokenizer:
    """Qwen-style byte-level BPE: NFC, regex split, ByteLevel (no regex), BPE; specials last."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


# --------------------------------------------------------------------------------------------
# fixture definitions

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    initializer_range=0.125,  # recorded only; init_weights() below sets every tensor explicitly
    bos_token_id=None,
    eos_token_id=EOS_ID,
    pad_token_id=None,
    tie_word_embeddings=False,
)


def _c(**kw):
    d = dict(COMMON)
    d.update(kw)
    return d


FIXTURES: dict[str, dict] = {
    "llama": dict(
        cls="LlamaForCausalLM",
        config_cls="LlamaConfig",
        config=_c(
            num_hidden_layers=2,
            rms_norm_eps=1e-5,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
        covers="Llama-3 style: GQA (4 q heads / 2 kv heads), llama3 RoPE scaling (all three frequency "
        "bands occur with head_dim 16, theta 5e5, original_max_position_embeddings 64), untied lm_head.",
    ),
    "llama_tied": dict(
        cls="LlamaForCausalLM",
        config_cls="LlamaConfig",
        config=_c(num_hidden_layers=2, tie_word_embeddings=True, attention_bias=True),
        covers="tied embeddings (no lm_head.weight), attention_bias=true (q/k/v/o biases), plain RoPE theta 1e4.",
    ),
    "qwen2": dict(
        cls="Qwen2ForCausalLM",
        config_cls="Qwen2Config",
        config=_c(num_hidden_layers=2, tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=1e6)),
        legacy_config=True,
        covers="Qwen2: q/k/v biases (o_proj none), tied embeddings. config.json rewritten in the transformers 4.x "
        "style (top-level rope_theta=1e6, rope_scaling null, no rope_parameters) to cover the legacy keys; "
        "reload through transformers 5 was checked to give the golden logits.",
    ),
    "qwen3": dict(
        cls="Qwen3ForCausalLM",
        config_cls="Qwen3Config",
        config=_c(num_hidden_layers=2, rope_parameters=dict(rope_type="default", rope_theta=1e6)),
        covers="Qwen3 dense: per-head q_norm/k_norm [head_dim] before RoPE, no biases, untied.",
    ),
    "qwen3_moe": dict(
        cls="Qwen3MoeForCausalLM",
        config_cls="Qwen3MoeConfig",
        config=_c(
            num_hidden_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        covers="Qwen3-MoE, per-expert layout (save_pretrained default), softmax top-2 of 8, norm_topk_prob=true.",
    ),
    "qwen3_moe_fused": dict(
        cls="Qwen3MoeForCausalLM",
        config_cls="Qwen3MoeConfig",
        config=_c(
            num_hidden_layers=3,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[0],
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        save_kwargs=dict(save_original_format=False),
        covers="Qwen3-MoE saved with save_original_format=False: fused experts.gate_up_proj [E,2I,H] / "
        "experts.down_proj [E,H,I]; norm_topk_prob=false; mlp_only_layers=[0] (layer 0 dense MLP); tied embeddings.",
    ),
    "qwen3_moe_sharded": dict(
        cls="Qwen3MoeForCausalLM",
        config_cls="Qwen3MoeConfig",
        config=_c(
            num_hidden_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        save_kwargs=dict(max_shard_size="200KB"),
        covers="Qwen3-MoE sharded: model.safetensors.index.json + several model-0000N-of-0000M.safetensors.",
    ),
    "qwen3_moe_bf16": dict(
        cls="Qwen3MoeForCausalLM",
        config_cls="Qwen3MoeConfig",
        config=_c(
            num_hidden_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        bf16=True,
        covers="Qwen3-MoE with BF16 weights on disk; golden computed in float32 from those bf16 values.",
    ),
    "qwen2_moe": dict(
        cls="Qwen2MoeForCausalLM",
        config_cls="Qwen2MoeConfig",
        config=_c(
            num_hidden_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=64,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        covers="Qwen2-MoE: q/k/v biases, softmax top-2 of 8 (norm_topk_prob=false), shared_expert (I=64) "
        "scaled by sigmoid(shared_expert_gate).",
    ),
    "mixtral": dict(
        cls="MixtralForCausalLM",
        config_cls="MixtralConfig",
        config=_c(
            num_hidden_layers=2,
            intermediate_size=64,
            num_local_experts=4,
            num_experts_per_tok=2,
            rms_norm_eps=1e-5,
            sliding_window=None,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
        ),
        covers="Mixtral: block_sparse_moe.{gate, experts.N.w1/w2/w3}; softmax top-2 of 4, always renormalised; "
        "experts use intermediate_size.",
    ),
    "olmoe": dict(
        cls="OlmoeForCausalLM",
        config_cls="OlmoeConfig",
        config=_c(
            num_hidden_layers=2,
            intermediate_size=32,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            rms_norm_eps=1e-5,
            clip_qkv=None,
            rope_parameters=dict(rope_type="default", rope_theta=1e4),
        ),
        covers="OLMoE: q_norm [heads*head_dim] / k_norm [kv_heads*head_dim] RMSNorm over the whole projection; "
        "softmax top-2 of 8, norm_topk_prob=false; experts use intermediate_size.",
    ),
    "deepseek_v3": dict(
        cls="DeepseekV3ForCausalLM",
        config_cls="DeepseekV3Config",
        config=_c(
            num_hidden_layers=2,
            num_key_value_heads=4,
            head_dim=8,
            moe_intermediate_size=32,
            q_lora_rank=32,
            kv_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            first_k_dense_replace=1,
            n_shared_experts=1,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            rope_interleave=True,
            rope_parameters=dict(
                rope_type="yarn",
                rope_theta=10000.0,
                factor=4.0,
                original_max_position_embeddings=64,
                beta_fast=32.0,
                beta_slow=1.0,
                mscale=1.0,
                mscale_all_dim=1.0,
            ),
        ),
        e_bias=True,
        covers="DeepSeek-V3: MLA with q_lora_rank 32 (q_a_proj/q_a_layernorm/q_b_proj), kv_lora_rank 32, rope 8 / "
        "nope 16 / v 16, interleaved RoPE (rope_interleave=true) with YaRN (factor 4, mscale_all_dim 1 -> softmax "
        "scale multiplied by mscale^2); layer 0 dense (first_k_dense_replace 1), layer 1 MoE: sigmoid router, "
        "non-zero e_score_correction_bias (changes selections), n_group 2 / topk_group 1, top-2 of 8, "
        "norm_topk_prob, routed_scaling_factor 2.5, 1 shared expert.",
    ),
    "glm4_moe": dict(
        cls="Glm4MoeForCausalLM",
        config_cls="Glm4MoeConfig",
        config=_c(
            num_hidden_layers=3,
            moe_intermediate_size=32,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            first_k_dense_replace=1,
            n_shared_experts=1,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            attention_bias=True,
            use_qk_norm=True,
            num_nextn_predict_layers=1,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5),
        ),
        e_bias=True,
        covers="GLM-4.5 (glm4_moe; the keys of GLM-4.5's config.json, values chosen so every path runs: use_qk_norm on as in GLM-4.7, n_group 2 where GLM-4.5 has 1): GQA 4/2 heads of 16 with q/k/v biases "
        "(attention_bias, o_proj without), per-head q_norm/k_norm (use_qk_norm), partial rotary 0.5 (half-split "
        "RoPE on the first 8 dims); layer 0 dense (first_k_dense_replace 1), layers 1-2 MoE: sigmoid router with "
        "e_score_correction_bias, n_group 2 / topk_group 1, top-2 of 8, norm_topk_prob, routed_scaling_factor 2.5, "
        "1 shared expert; num_nextn_predict_layers 1 (no MTP weights saved by transformers).",
    ),
    "gpt_oss": dict(
        cls="GptOssForCausalLM",
        config_cls="GptOssConfig",
        config=_c(
            num_hidden_layers=3,
            intermediate_size=32,
            num_local_experts=8,
            num_experts_per_tok=2,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            attention_bias=True,
            swiglu_limit=1.5,
            rope_parameters=dict(
                rope_type="yarn", rope_theta=150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0,
                truncate=False, original_max_position_embeddings=64,
            ),
        ),
        covers="gpt-oss (gpt_oss; the keys of gpt-oss-20b's config.json, values chosen so every path runs): GQA 4/2 "
        "heads of 16 with q/k/v/o biases and per-head attention sinks; layer_types sliding/full/sliding with "
        "sliding_window 4 (shorter than the 12-token input and the 25-token greedy run); YaRN (factor 4, "
        "truncate false, half-split); every layer MoE: router with bias, top-2 of 8 by logit, softmax over the two; "
        "experts fused with gate/up interleaved (even/odd columns of gate_up_proj [E, H, 2I]), biases, clamped "
        "SwiGLU (alpha 1.702, swiglu_limit 1.5 where gpt-oss has 7.0 so the clamps act on these small activations).",
    ),
    "deepseek_v2": dict(
        cls="DeepseekV2ForCausalLM",
        config_cls="DeepseekV2Config",
        config=_c(
            num_hidden_layers=2,
            num_key_value_heads=4,
            head_dim=8,
            moe_intermediate_size=32,
            q_lora_rank=None,
            kv_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=None,
            topk_group=None,
            topk_method="greedy",
            first_k_dense_replace=1,
            n_shared_experts=2,
            routed_scaling_factor=16.0,
            norm_topk_prob=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        covers="DeepSeek-V2: MLA without q LoRA (plain q_proj), kv_lora_rank 32, interleaved (complex) RoPE; "
        "layer 0 dense, layer 1 MoE: softmax greedy top-2 of 8, no renormalisation, routed_scaling_factor 16, "
        "2 shared experts (shared_experts intermediate = 2*32).",
    ),
}

# --------------------------------------------------------------------------------------------
# weights


def init_weights(model: torch.nn.Module, gen: torch.Generator, spec: dict) -> None:
    """Explicit init: matrices N(0, 1/fan_in), norms 1+N(0,0.1^2)... so every tensor matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[-1]
                std = 1.0 / math.sqrt(fan_in)
                if re.search(r"\.(mlp|block_sparse_moe)\.(gate|router)\.weight$", name):
                    std = 3.0 / math.sqrt(fan_in)  # router: logits ~N(0, 3^2) -> clear decisions
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".sinks"):
                p.copy_(torch.randn(p.shape, generator=gen))  # per-head sink logits of the size of q.k scores
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                # sigmoid scores live in (0,1); a bias of this size reorders close experts
                b.copy_(0.15 * torch.randn(b.shape, generator=gen))
    if model.config.tie_word_embeddings:
        model.tie_weights()


# --------------------------------------------------------------------------------------------
# reference computations


class RouterTap:
    """Forward hooks on every router module; records (layer, raw logits, topk weights, indices)."""

    def __init__(self, model):
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.nn.Module]] = []
        self.handles = []
        for name, mod in model.named_modules():
            if re.search(r"Top[kK]Router$", type(mod).__name__):
                layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
                self.handles.append(mod.register_forward_hook(self._hook(layer)))

    def _hook(self, layer):
        def fn(mod, inp, out):
            logits, weights, idx = out
            self.calls.append((layer, logits.detach().float().clone(), weights.detach().float().clone(), idx.detach().clone(), mod))

        return fn

    def clear(self):
        self.calls = []

    def close(self):
        for h in self.handles:
            h.remove()


def selection_scores(mod, logits: torch.Tensor) -> torch.Tensor:
    """The per-expert score the router ranks by (masked experts -> -inf)."""
    kind = type(mod).__name__
    if kind.startswith(("DeepseekV3", "Glm4Moe")):
        s = logits.sigmoid() + mod.e_score_correction_bias.float()
        g = mod.num_group
        gs = s.view(-1, g, s.shape[-1] // g).topk(2, dim=-1)[0].sum(-1)
        keep = torch.zeros_like(gs).scatter_(1, gs.topk(mod.topk_group, dim=-1)[1], 1.0)
        keep = keep.unsqueeze(-1).expand(-1, g, s.shape[-1] // g).reshape(s.shape)
        return s.masked_fill(keep == 0, float("-inf"))
    return torch.softmax(logits, dim=-1)


def route_gaps(mod, logits: torch.Tensor) -> float:
    """Smallest relative gap over all decisions the router makes for these rows."""
    k = mod.top_k
    kind = type(mod).__name__
    worst = float("inf")
    if kind.startswith(("DeepseekV3", "Glm4Moe")):
        s = logits.sigmoid() + mod.e_score_correction_bias.float()
        g = mod.num_group
        gs = s.view(-1, g, s.shape[-1] // g).topk(2, dim=-1)[0].sum(-1)
        srt = gs.sort(dim=-1, descending=True)[0]
        t = mod.topk_group
        if t < g:
            worst = min(worst, float(((srt[:, t - 1] - srt[:, t]) / srt[:, t - 1].abs()).min()))
    sc = selection_scores(mod, logits)
    srt = sc.sort(dim=-1, descending=True)[0]
    a, b = srt[:, k - 1], srt[:, k]
    gap = torch.where(torch.isinf(b), torch.full_like(a, float("inf")), (a - b) / a.abs())
    return min(worst, float(gap.min()))


@torch.no_grad()
def forward_with_routers(model, tap: RouterTap, ids: list[int]):
    tap.clear()
    out = model(torch.tensor([ids]), use_cache=False)
    calls = list(tap.calls)
    tap.clear()
    return out.logits[0].float(), calls


def r7(x: float) -> float:
    return float(f"{x:.7g}")


def rows7(t: torch.Tensor) -> list:
    return [[r7(v) for v in row] for row in t.tolist()]


@torch.no_grad()
def compute_reference(model, prompt_ids: list[int], input_ids: list[int], n_new: int = 20):
    """Return (golden dict without 'reference', diagnostics dict) or raise ValueError on near-ties."""
    tap = RouterTap(model)
    try:
        logits, calls = forward_with_routers(model, tap, input_ids)
        diag: dict = {}
        golden: dict = {"input_ids": list(input_ids), "logits": rows7(logits)}

        gcfg = GenerationConfig(
            do_sample=False,
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            eos_token_id=None,
            bos_token_id=None,
            pad_token_id=0,
            num_beams=1,
        )
        gen = model.generate(torch.tensor([prompt_ids]), generation_config=gcfg)
        new = gen[0, len(prompt_ids):].tolist()
        if len(new) != n_new:
            raise ValueError(f"generate returned {len(new)} tokens")
        full = list(prompt_ids) + new
        flog, gcalls = forward_with_routers(model, tap, full)
        steps = flog[len(prompt_ids) - 1 : len(full) - 1]
        argm = steps.argmax(-1).tolist()
        if argm != new:
            raise ValueError("generate (KV cache) disagrees with full-sequence argmax")
        top2 = steps.topk(2, dim=-1)[0]
        margin = float((top2[:, 0] - top2[:, 1]).min())
        diag["greedy_min_margin"] = margin
        if margin <= GREEDY_MARGIN:
            raise ValueError(f"greedy margin {margin:.2e}")
        diag["greedy_distinct_tokens"] = len(set(new))
        if len(set(new)) < GREEDY_MIN_DISTINCT:
            raise ValueError(f"greedy output too repetitive ({len(set(new))} distinct tokens)")
        golden["greedy"] = {"prompt_ids": list(prompt_ids), "tokens": new}

        if calls:
            gaps = [route_gaps(m, lg) for (_, lg, _, _, m) in calls + gcalls]
            diag["router_min_rel_gap"] = min(gaps)
            if min(gaps) <= ROUTER_REL_GAP:
                raise ValueError(f"router gap {min(gaps):.2e}")
            per_layer = {}
            for layer, lg, w, idx, mod in calls:
                sc = selection_scores(mod, lg)
                # order the chosen experts by descending selection score
                order = torch.gather(sc, 1, idx).argsort(dim=-1, descending=True)
                sel = torch.gather(idx, 1, order)
                wts = torch.gather(w.view(idx.shape), 1, order)
                per_layer[layer] = (lg, sel, wts, mod)
            first = min(per_layer)
            lg, sel, wts, mod = per_layer[first]
            router = {
                "layer": first,
                "logits": rows7(lg),
                "selected": sel.tolist(),
                "weights": rows7(wts),
                "selected_all_layers": {str(l): per_layer[l][1].tolist() for l in sorted(per_layer)},
            }
            if type(mod).__name__.startswith("DeepseekV3"):
                # bias and group limit must each change at least one decision, and every group must
                # be chosen somewhere, or the fixture would not test them
                by_bias = by_group = 0
                groups = set()
                for (_, l, _, _, m) in calls + gcalls:
                    pick = lambda sc: torch.topk(sc, m.top_k, dim=-1)[1].sort(-1)[0]  # noqa: E731
                    full_sel = pick(selection_scores(m, l))
                    s0 = l.sigmoid()
                    no_group = pick(s0 + m.e_score_correction_bias.float())
                    saved = m.e_score_correction_bias.clone()
                    m.e_score_correction_bias.zero_()
                    no_bias = pick(selection_scores(m, l))
                    m.e_score_correction_bias.copy_(saved)
                    by_bias += int((full_sel != no_bias).any(-1).sum())
                    by_group += int((full_sel != no_group).any(-1).sum())
                    groups |= set((full_sel // (l.shape[-1] // m.num_group)).flatten().tolist())
                diag["positions_changed_by_bias"] = by_bias
                diag["positions_changed_by_group_limit"] = by_group
                diag["groups_used"] = len(groups)
                if by_bias == 0 or by_group == 0 or len(groups) < mod.num_group:
                    raise ValueError(f"V3 routing too trivial (bias {by_bias}, groups {by_group}, used {groups})")
            golden["router"] = router
        return golden, diag
    finally:
        tap.close()


def load(path: str, cls_name: str):
    cls = getattr(transformers, cls_name)
    m = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


# --------------------------------------------------------------------------------------------
# fixture building


def legacy_config(path: str) -> None:
    """Rewrite config.json the way transformers 4.x wrote it (top-level rope_theta/rope_scaling)."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as fh:
        cfg = json.load(fh)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    cfg["rope_scaling"] = None if rtype == "default" else dict(rope_type=rtype, **rp)
    cfg["transformers_version"] = "4.57.1"
    cfg["torch_dtype"] = cfg.pop("dtype")
    with open(cfg_path, "w") as fh:
        json.dump(dict(sorted(cfg.items())), fh, indent=2)
        fh.write("\n")


def build_one(name: str, spec: dict, out_root: str, tok: Tokenizer, input_ids, prompt_ids, meta) -> dict:
    cfg_cls = getattr(transformers, spec["config_cls"])
    model_cls = getattr(transformers, spec["cls"])
    last_err = None
    for seed in range(MAX_SEEDS):
        config = cfg_cls(**spec["config"])
        gen = torch.Generator().manual_seed(1000 + seed)
        torch.manual_seed(1000 + seed)
        model = model_cls(config).eval()
        init_weights(model, gen, spec)
        if spec.get("bf16"):
            model = model.to(torch.bfloat16)
        tmp = tempfile.mkdtemp(prefix=f"fx_{name}_")
        try:
            model.save_pretrained(tmp, **spec.get("save_kwargs", {}))
            if spec.get("legacy_config"):
                legacy_config(tmp)
            ref = load(tmp, spec["cls"])
            golden, diag = compute_reference(ref, prompt_ids, input_ids)
            if not spec.get("bf16"):
                # the written files must hold exactly the in-memory model
                with torch.no_grad():
                    a = model(torch.tensor([input_ids]), use_cache=False).logits[0].float()
                    b = ref(torch.tensor([input_ids]), use_cache=False).logits[0].float()
                if not torch.allclose(a, b, atol=1e-5, rtol=1e-5):
                    raise RuntimeError(f"{name}: reload changed logits by {float((a - b).abs().max())}")
        except ValueError as e:
            last_err = e
            shutil.rmtree(tmp)
            print(f"  {name}: seed {1000 + seed} rejected ({e})", flush=True)
            continue
        dest = os.path.join(out_root, name)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        shutil.move(tmp, dest)
        tok.save(os.path.join(dest, "tokenizer.json"))
        os.chmod(dest, 0o755)
        for f in os.listdir(dest):
            os.chmod(os.path.join(dest, f), 0o644)
        reference = dict(meta)
        reference["dtype"] = "bfloat16 weights, float32 compute" if spec.get("bf16") else "float32"
        reference["seed"] = 1000 + seed
        reference["checks"] = {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in diag.items()}
        golden = {"reference": reference, **golden}
        golden["input_text"] = meta_texts["input_text"]
        golden["greedy"]["prompt_text"] = meta_texts["prompt_text"]
        golden["greedy"]["text"] = tok.decode(golden["greedy"]["tokens"], skip_special_tokens=False)
        with open(os.path.join(dest, "golden.json"), "w") as fh:
            json.dump(golden, fh, separators=(",", ":"))
            fh.write("\n")
        os.chmod(os.path.join(dest, "golden.json"), 0o644)
        print(f"  {name}: seed {1000 + seed} ok {diag}", flush=True)
        return diag
    raise SystemExit(f"{name}: no seed passed the near-tie checks ({last_err})")


meta_texts: dict = {}


# --------------------------------------------------------------------------------------------
# fixtures derived from another (the quantized ones: make_fp8_fixture.py, make_mxfp4_fixture.py)


def reference_on(base_dir: str, cls_name: str, weights: dict, base_golden: dict):
    """compute_reference on `weights` (a state dict) beside base_dir's config and tokenizer."""
    tmp = tempfile.mkdtemp(prefix="fx_ref_")
    try:
        for f in ("config.json", "generation_config.json", "tokenizer.json"):
            shutil.copy(os.path.join(base_dir, f), tmp)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        model = load(tmp, cls_name)
        return compute_reference(model, base_golden["greedy"]["prompt_ids"], base_golden["input_ids"])
    finally:
        shutil.rmtree(tmp)


def write_derived_fixture(out: str, base_dir: str, config: dict, stored: dict) -> None:
    """A new fixture directory: base_dir's tokenizer and generation config, `config`, `stored` tensors."""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for f in ("generation_config.json", "tokenizer.json"):
        shutil.copy(os.path.join(base_dir, f), out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(dict(sorted(stored.items())), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(out):
        os.chmod(os.path.join(out, f), 0o644)


def write_derived_golden(out: str, golden: dict, base_golden: dict, reference: dict) -> None:
    """golden.json of a derived fixture: the base's reference record updated with `reference`, its texts."""
    record = dict(base_golden["reference"])
    record.update(reference)
    golden = {"reference": record, **golden}
    golden["input_text"] = base_golden["input_text"]
    golden["greedy"]["prompt_text"] = base_golden["greedy"]["prompt_text"]
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


# --------------------------------------------------------------------------------------------
# verification / docs


def verify(out_root: str, names: list[str]) -> None:
    for name in names:
        spec = FIXTURES[name]
        d = os.path.join(out_root, name)
        with open(os.path.join(d, "golden.json")) as fh:
            g = json.load(fh)
        m = load(d, spec["cls"])
        ids = g["input_ids"]
        with torch.no_grad():
            logits = m(torch.tensor([ids]), use_cache=False).logits[0].float()
        want = torch.tensor(g["logits"])
        err = float((logits - want).abs().max())
        scale = float(want.abs().max())
        if err > 1e-5 * max(1.0, scale):
            raise SystemExit(f"verify {name}: logits differ by {err}")
        gen = m.generate(
            torch.tensor([g["greedy"]["prompt_ids"]]),
            generation_config=GenerationConfig(do_sample=False, max_new_tokens=20, min_new_tokens=20,
                                               eos_token_id=None, bos_token_id=None, pad_token_id=0),
        )
        toks = gen[0, len(g["greedy"]["prompt_ids"]):].tolist()
        if toks != g["greedy"]["tokens"]:
            raise SystemExit(f"verify {name}: greedy tokens differ")
        if "router" in g:
            tap = RouterTap(m)
            _, calls = forward_with_routers(m, tap, ids)
            tap.close()
            layer, lg, w, idx, mod = [c for c in calls if c[0] == g["router"]["layer"]][0]
            if float((lg - torch.tensor(g["router"]["logits"])).abs().max()) > 1e-5 * max(1.0, float(lg.abs().max())):
                raise SystemExit(f"verify {name}: router logits differ")
            if [sorted(r) for r in idx.tolist()] != [sorted(r) for r in g["router"]["selected"]]:
                raise SystemExit(f"verify {name}: router selection differs")
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        if "input_text" in g and tok.encode(g["input_text"]).ids != ids:
            raise SystemExit(f"verify {name}: tokenizer does not give input_ids")
        print(f"  verify {name}: ok (max |dlogit| {err:.2e}, greedy ok)", flush=True)


def tensor_table(d: str) -> list[str]:
    lines = []
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    rows = []
    for f in files:
        with safe_open(os.path.join(d, f), "np") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                rows.append((k, sl.get_dtype(), list(sl.get_shape()), f))
    rows.sort(key=lambda r: _natkey(r[0]))
    # compress: show expert 0 and say how many experts there are
    shown = []
    seen_pat = {}
    for k, dt, shp, f in rows:
        m = re.search(r"\.experts\.(\d+)\.", k)
        if m:
            pat = k.replace(f".experts.{m.group(1)}.", ".experts.{N}.")
            seen_pat.setdefault(pat, []).append(int(m.group(1)))
            if m.group(1) != "0":
                continue
            k = pat
        shown.append((k, dt, shp, f))
    for k, dt, shp, f in shown:
        extra = ""
        if "{N}" in k:
            ns = seen_pat[k]
            extra = f" (N = 0…{max(ns)})"
        fcol = f" | {f}" if len(files) > 1 else ""
        lines.append(f"| `{k}`{extra} | {dt} | {shp}{fcol} |")
    header = "| tensor | dtype | shape" + (" | file |" if len(files) > 1 else " |")
    sep = "| --- | --- | ---" + (" | --- |" if len(files) > 1 else " |")
    return [header, sep] + lines


def _natkey(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def dir_size(d: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def write_checksums(out_root: str) -> None:
    lines = []
    for root, _, files in os.walk(out_root):
        for f in files:
            if f == "CHECKSUMS.sha256":
                continue
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            lines.append((os.path.relpath(p, out_root), h))
    lines.sort()
    with open(os.path.join(out_root, "CHECKSUMS.sha256"), "w") as fh:
        for rel, h in lines:
            fh.write(f"{h}  {rel}\n")


def write_reference_md(out_root: str, md_path: str, names: list[str]) -> None:
    import safetensors
    import tokenizers

    L = []
    L.append("# Model fixtures (Python reference)\n")
    L.append("Tiny random-init checkpoints written by `scripts/make_model_fixtures.py`, one complete model "
             "directory per fixture under `Tests/Fixtures/models/<name>/`, with `golden.json` holding what "
             "transformers computes for them. Generated files; do not edit by hand.\n")
    L.append("## Reference stack\n")
    L.append(f"- transformers {transformers.__version__}, torch {torch.__version__}, safetensors "
             f"{safetensors.__version__}, tokenizers {tokenizers.__version__}, numpy {np.__version__}, "
             f"Python {sys.version.split()[0]} (pins: `scripts/requirements.txt`).")
    L.append("- Golden values are computed on the model **reloaded from the written files** with "
             "`from_pretrained(dtype=float32, attn_implementation=\"eager\")`, `model.eval()`, `torch.no_grad()`.")
    L.append("- Regenerate: `pip install -r scripts/requirements.txt` (CPU torch wheel index: "
             "`--extra-index-url https://download.pytorch.org/whl/cpu`), then "
             "`python scripts/make_model_fixtures.py` (~15 s on 2 cores; no network). "
             "`--only NAME` rebuilds some fixtures, `--verify-only` reloads and compares without writing. "
             "Output is deterministic for fixed versions (seeds are recorded in each golden.json).")
    L.append("- `CHECKSUMS.sha256` lists every fixture file (`cd Tests/Fixtures/models && sha256sum -c CHECKSUMS.sha256`).\n")
    L.append("## golden.json\n")
    L.append("```")
    L.append('{')
    L.append('  "reference": {"transformers", "torch", "dtype", "attn_implementation", "seed", "checks"},')
    L.append('  "input_ids": [12 ids],            // = tokenizer.json encoding of "input_text"')
    L.append('  "input_text": "...",')
    L.append('  "logits": [[512 floats] x 12],    // full-sequence forward, no KV cache, float32, 7 significant digits')
    L.append('  "greedy": {"prompt_ids": [5 ids], "prompt_text": "<|im_start|>user\\nThe",')
    L.append('             "tokens": [20 ids],    // generate(do_sample=False, max_new_tokens=20), eos disabled')
    L.append('             "text": decode(tokens)},')
    L.append('  "router": {                        // MoE fixtures only, for input_ids')
    L.append('    "layer": first MoE layer index,')
    L.append('    "logits": [[E floats] x 12],     // raw router logits (gate.weight @ x), before softmax/sigmoid')
    L.append('    "selected": [[top_k ids] x 12],  // chosen experts, ordered by descending selection score')
    L.append('    "weights": [[top_k floats] x 12],// their final mixing weights (after renorm / routed_scaling_factor)')
    L.append('    "selected_all_layers": {"layer": [[top_k ids] x 12], ...}')
    L.append('  }')
    L.append('}')
    L.append("```\n")
    L.append("Selection score: softmax probability, except DeepSeek-V3: sigmoid(logit) + e_score_correction_bias "
             "after the group limit (groups outside the kept `topk_group` are excluded). Mixing weights for V3 are "
             "the unbiased sigmoid scores of the chosen experts, renormalised, times routed_scaling_factor.\n")
    L.append("Robustness (checked when generating, seeds retried otherwise): at every MoE layer and every position "
             f"of both `input_ids` and prompt+greedy sequence, the relative gap between the k-th and (k+1)-th "
             f"selection score (and, for V3, between the kept and the first dropped group score) is > {ROUTER_REL_GAP:g}; "
             f"every greedy step's top-1 logit beats the runner-up by > {GREEDY_MARGIN:g}; the KV-cache generate "
             "equals the argmax of a full-sequence forward. For V3 the bias/group limit changes at least one "
             "selection. A correct float32 engine should match logits to ~1e-4 absolute.\n")
    L.append("Weights: every matrix N(0, 1/fan_in) (routers 3x that, so router logits are ~N(0, 9)), every norm "
             "weight 1 + N(0, 0.01), every bias N(0, 0.01); so an engine that skips a norm weight or a bias fails.\n")
    L.append("Shared tokenizer (`tokenizer.json`, identical in every folder): Qwen2-style byte-level BPE, "
             "NFC normalizer, Split(Qwen regex, isolated) + ByteLevel(use_regex=false) pre-tokenizer, ByteLevel "
             f"decoder, 509 learned tokens (256 bytes + merges) trained on ~24 KB of `{DATA}/*/train.jsonl`, then the "
             "specials `<|endoftext|>`=509, `<|im_start|>`=510, `<|im_end|>`=511. `eos_token_id` in the configs is 509.\n")
    L.append("## What transformers 5.23 writes (seen in these files)\n")
    L.extend(NOTES)
    L.append("")
    L.append("## Fixtures\n")
    L.append("| fixture | class | files | size | covers |")
    L.append("| --- | --- | --- | --- | --- |")
    for name in names:
        d = os.path.join(out_root, name)
        nst = len([f for f in os.listdir(d) if f.endswith(".safetensors")])
        L.append(f"| `{name}` | {FIXTURES[name]['cls']} | {nst} safetensors | {dir_size(d) / 1024:.0f} KiB | "
                 f"{FIXTURES[name]['covers']} |")
    L.append("")
    for name in names:
        d = os.path.join(out_root, name)
        with open(os.path.join(d, "config.json")) as fh:
            cfg = json.load(fh)
        with open(os.path.join(d, "golden.json")) as fh:
            g = json.load(fh)
        L.append(f"### `{name}`\n")
        L.append(FIXTURES[name]["covers"] + "\n")
        if name == "qwen3_moe_sharded":
            L.append("Same config and seed as `qwen3_moe`: identical weights and golden values, only the file "
                     "layout differs.\n")
        L.append(f"Files: {', '.join(sorted(os.listdir(d)))}. Seed {g['reference']['seed']}."
                 + (f" First MoE layer {g['router']['layer']}." if "router" in g else "")
                 + f" Checks: {json.dumps(g['reference'].get('checks', {}))}.")
        L.append("")
        keep = {k: v for k, v in cfg.items() if k not in ("id2label", "label2id")}
        L.append("<details><summary>config.json</summary>\n")
        L.append("```json")
        L.append(json.dumps(keep, indent=1, sort_keys=True))
        L.append("```\n</details>\n")
        L.extend(tensor_table(d))
        L.append("")
        idx = os.path.join(d, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as fh:
                ij = json.load(fh)
            L.append(f"`model.safetensors.index.json`: keys {sorted(ij.keys())}; metadata {json.dumps(ij.get('metadata'))}; "
                     f"weight_map maps each tensor name to its shard file.\n")
    with open(md_path, "w") as fh:
        fh.write("\n".join(L).rstrip() + "\n")


NOTES = [
    "- config.json: RoPE is `rope_parameters: {rope_theta, rope_type, ...scaling keys}`; no top-level "
    "`rope_theta`/`rope_scaling` (only `qwen2` here has the 4.x form, rewritten on purpose). The dtype key is "
    "`dtype` (4.x: `torch_dtype`). `bos_token_id: null` is written explicitly.",
    "- Expert count key: Qwen3-MoE and Mixtral write `num_local_experts` (Qwen3MoeConfig maps `num_experts` to "
    "it), Qwen2-MoE and OLMoE write `num_experts`, DeepSeek writes `n_routed_experts`.",
    "- In memory every MoE holds fused 3-D experts (`mlp.experts.gate_up_proj [E, 2I, H]`, gate rows first, "
    "`mlp.experts.down_proj [E, H, I]`, no `.weight`); the default save splits them to "
    "`mlp.experts.N.{gate,up,down}_proj.weight` (Mixtral: `block_sparse_moe.experts.N.w1/w3/w2.weight` and "
    "`block_sparse_moe.gate.weight`). `save_original_format=False` writes the fused tensors under `mlp.`.",
    "- Qwen3-MoE with `mlp_only_layers` writes a dense `mlp.{gate,up,down}_proj` of `intermediate_size` in those layers.",
    "- DeepSeek-V3 config has no `scoring_func`/`topk_method` (sigmoid + group-limited top-k is implied), "
    "carries `num_nextn_predict_layers: 1` with no MTP weights, `rope_interleave: true`, `qk_head_dim` "
    "(= nope + rope) and `head_dim` (= qk_rope_head_dim). `e_score_correction_bias` is a buffer saved as a "
    "tensor; transformers keeps it F32 when loading (`_keep_in_fp32_modules_strict`), but `model.to(bf16)` "
    "before `save_pretrained` writes it as BF16, so a bf16 file can hold it either way.",
    "- DeepSeek-V2 config: `topk_method: greedy`, `n_group`/`topk_group` null, `q_lora_rank` null -> plain "
    "`self_attn.q_proj`. Its RoPE is applied as complex multiplication on adjacent pairs (interleaved), like "
    "V3 with rope_interleave; q/k rope dims are not permuted on disk.",
    "- Sharded saves: `model.safetensors.index.json` = {metadata: {total_parameters, total_size}, weight_map}; "
    "`total_parameters` is new in 5.x. A tensor never spans two shards.",
    "- Tied models: no `lm_head.weight` in the file; `tie_word_embeddings: true`.",
    "- `generation_config.json` is written next to config.json by every save.",
]


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "models"))
    ap.add_argument("--md", default=os.path.join(REPO, "Tests", "Fixtures", "MODELS_REFERENCE.md"))
    ap.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    ap.add_argument("--verify-only", action="store_true")
    args = ap.parse_args()

    names = [n for n in FIXTURES if hasattr(transformers, FIXTURES[n]["cls"])]
    skipped = [n for n in FIXTURES if n not in names]
    if skipped:
        print(f"skipping (class missing in transformers {transformers.__version__}): {skipped}")
    todo = names if not args.only else [n for n in names if n in args.only]

    if args.verify_only:
        verify(args.out, todo)
        return

    os.makedirs(args.out, exist_ok=True)
    tok = build_tokenizer(VOCAB, corpus_text().split("\n"))
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id("<|endoftext|>") == EOS_ID

    input_ids = None
    for text in INPUT_TEXT_CANDIDATES:  # prefer a sentence that is exactly 12 tokens
        ids = tok.encode(text).ids
        if len(ids) == 12:
            input_ids, meta_texts["input_text"] = ids, text
            break
    for text in INPUT_TEXT_CANDIDATES if input_ids is None else []:
        ids = tok.encode(text).ids
        if len(ids) >= 12:
            text = tok.decode(ids[:12])
            if tok.encode(text).ids == ids[:12]:
                input_ids = ids[:12]
                meta_texts["input_text"] = text
                break
    assert input_ids is not None, "no candidate text gives 12 tokens"
    prompt_ids = tok.encode(PROMPT_TEXT).ids
    if len(prompt_ids) != 5:
        raise SystemExit(f"prompt {PROMPT_TEXT!r} gives {len(prompt_ids)} ids, want 5: {prompt_ids}")
    meta_texts["prompt_text"] = PROMPT_TEXT
    print(f"input_ids {input_ids} = {meta_texts['input_text']!r}; prompt_ids {prompt_ids}")

    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "attn_implementation": "eager"}
    for name in todo:
        print(f"building {name}", flush=True)
        build_one(name, FIXTURES[name], args.out, tok, input_ids, prompt_ids, meta)

    verify(args.out, todo)
    all_names = [n for n in names if os.path.isdir(os.path.join(args.out, n))]
    write_checksums(args.out)
    write_reference_md(args.out, args.md, all_names)
    total = 0
    for n in all_names:
        s = dir_size(os.path.join(args.out, n))
        total += s
        print(f"  {n:20s} {s / 1024:8.1f} KiB")
    print(f"  total {total / 1024 / 1024:.2f} MiB")


if __name__ == "__main__":
    main()

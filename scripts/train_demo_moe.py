#!/usr/bin/env python3
"""Trains the demo Qwen3-MoE of this repo from scratch (models/demo-moe).

Needs the corpus and tokenizer that scripts/build_demo_corpus.py writes (.corpus/tokens/ and
models/demo-moe/tokenizer.json). Uses transformers' Qwen3MoeForCausalLM with random init and a
fixed seed; runs on the CPU (default budget about 90 minutes on 2 cores) or on CUDA (bf16 autocast).

What it writes to --out:
  config.json, generation_config.json, model.safetensors (bf16, per-expert tensor names; sharded
  when --max-shard-size is given), tokenizer.json + tokenizer_config.json (copied), training_log.json
  (curve: step, tokens, train loss, held-out loss per domain; final held-out perplexity per domain;
  per-layer expert-selection distributions per domain and their Jensen-Shannon divergences), and
  MODEL_CARD.md.

Usage:
  python3 scripts/build_demo_corpus.py
  python3 scripts/train_demo_moe.py                        # CPU, default budget (~90 min, 2 cores)
  python3 scripts/train_demo_moe.py --device cuda --tokens 150000000 --time-budget-seconds 450
  python3 scripts/train_demo_moe.py --repack DIR           # re-save a sharded checkpoint as one file
"""
import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ["math", "science", "commonsense", "reading", "code", "german"]
DEFAULT_OUT = os.path.join(ROOT, "models", "demo-moe")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(ROOT, ".corpus", "tokens"))
    ap.add_argument("--tokenizer-dir", default=DEFAULT_OUT, help="folder with tokenizer.json (+ tokenizer_config.json)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--seed", type=int, default=1234)
    # architecture
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--expert-width", type=int, default=96, help="moe_intermediate_size")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--aux-coef", type=float, default=0.01, help="router_aux_loss_coef (load balancing)")
    # optimisation
    ap.add_argument("--tokens", type=float, default=None,
                    help="training tokens (default: 9e6 on CPU, 150e6 on CUDA; --time-budget-seconds may stop sooner)")
    ap.add_argument("--time-budget-seconds", type=float, default=None,
                    help="wall-clock budget for the whole run including evaluation and saving; the step count is "
                         "sized from the throughput measured at the start (default: 5400 on CPU, none on CUDA)")
    ap.add_argument("--final-reserve-seconds", type=float, default=None,
                    help="time kept for final evaluation and saving (default 60 on CUDA, 240 on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 8 CPU, 64 CUDA)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3 CPU, 3e-3 CUDA)")
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=None, help="default 100 CPU, 200 CUDA")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--domain-alpha", type=float, default=1.0,
                    help="domain sampling weight ∝ tokens^alpha (1: proportional, every domain gets the same "
                         "number of epochs; 0: uniform over domains)")
    ap.add_argument("--experts-impl", default="auto", help="auto (benchmark), eager, grouped_mm or batched_mm")
    # evaluation
    ap.add_argument("--evals", type=int, default=None, help="held-out evaluations during training (16 CPU, 30 CUDA)")
    ap.add_argument("--eval-windows", type=int, default=None, help="windows per domain per periodic eval "
                                                                       "(default 4 CPU, 32 CUDA)")
    ap.add_argument("--final-eval-tokens", type=int, default=None,
                    help="held-out tokens per domain for the final evaluation (default all on CUDA, 65536 on CPU)")
    ap.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=True,
                    help="restore the weights with the best mean held-out loss before saving")
    ap.add_argument("--init-baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure expert-usage divergence of the random initialisation, as a reference")
    ap.add_argument("--max-shard-size", default=None, help="e.g. 15MB to shard the safetensors")
    ap.add_argument("--log-every", type=int, default=None)
    ap.add_argument("--verify", action="store_true",
                    help="load the saved model in --out on the CPU (float32 from the bf16 file), re-measure the "
                         "held-out loss on the periodic-evaluation windows, record it in training_log.json, rewrite "
                         "MODEL_CARD.md and stop")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite MODEL_CARD.md in --out from its training_log.json and stop")
    ap.add_argument("--repack", default=None, metavar="DIR",
                    help="load a (sharded) checkpoint folder and save it to --out as one bf16 model.safetensors")
    return ap.parse_args()


# ------------------------------------------------------------------------------------------ helpers

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def byte_lengths(tokenizer_json):
    """Bytes each token id stands for (byte-level BPE alphabet decoded), for bits-per-byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    char_to_byte = {chr(c): b for b, c in zip(bs, cs)}
    with open(tokenizer_json, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = dict(tj["model"]["vocab"])
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    specials = {t["content"] for t in tj.get("added_tokens", [])}
    out = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for tok, i in vocab.items():
        out[i] = 0 if tok in specials else sum(1 for ch in tok if ch in char_to_byte)
    return out


def set_experts_impl(model, name):
    try:
        model.set_experts_implementation(name)
    except Exception:
        model.config._experts_implementation = name


def count_params(model, cfg):
    total = sum(p.numel() for p in model.parameters())  # tied embeddings count once
    expert_per_layer = 0
    for n, p in model.named_parameters():
        if ".layers.0.mlp.experts." in n:
            expert_per_layer += p.numel()
    one_expert = expert_per_layer // cfg.num_experts
    n_moe_layers = cfg.num_hidden_layers
    experts_total = expert_per_layer * n_moe_layers
    active = total - experts_total + n_moe_layers * cfg.num_experts_per_tok * one_expert
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "active_per_token": active, "embedding": emb,
            "experts_total": experts_total, "one_expert": one_expert,
            "non_embedding_total": total - emb, "non_embedding_active": active - emb}


def js_divergence_bits(p, q):
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


# ------------------------------------------------------------------------------------------ data

class Corpus:
    def __init__(self, path, device, context, alpha, seed):
        with open(os.path.join(path, "meta.json")) as f:
            self.meta = json.load(f)
        self.train, self.heldout = {}, {}
        for d in DOMAINS:
            self.train[d] = torch.from_numpy(np.fromfile(os.path.join(path, f"{d}.train.u16"), dtype=np.uint16)
                                             .astype(np.int64)).to(device)
            self.heldout[d] = torch.from_numpy(np.fromfile(os.path.join(path, f"{d}.heldout.u16"), dtype=np.uint16)
                                               .astype(np.int64)).to(device)
        sizes = np.array([self.train[d].numel() for d in DOMAINS], dtype=np.float64)
        w = sizes ** alpha
        self.weights = w / w.sum()
        self.context = context
        self.device = device
        self.rng = np.random.default_rng(seed)

    def batch(self, n):
        doms = self.rng.choice(len(DOMAINS), size=n, p=self.weights)
        rows = []
        for di in doms:
            t = self.train[DOMAINS[di]]
            off = int(self.rng.integers(0, t.numel() - self.context - 1))
            rows.append(t[off:off + self.context])
        return torch.stack(rows)

    def heldout_windows(self, domain, max_windows=None, max_tokens=None):
        """Non-overlapping windows of the held-out stream; a subset spread evenly when limited."""
        t = self.heldout[domain]
        n = t.numel() // self.context
        if max_tokens is not None:
            max_windows = max(1, max_tokens // self.context) if max_windows is None else min(
                max_windows, max(1, max_tokens // self.context))
        idx = list(range(n))
        if max_windows is not None and n > max_windows:
            idx = [int(i * n / max_windows) for i in range(max_windows)]
        return torch.stack([t[i * self.context:(i + 1) * self.context] for i in idx])


# ------------------------------------------------------------------------------------------ model

def build_model(args, vocab_size, special):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    eos = special["<|endoftext|>"]
    cfg = Qwen3MoeConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim, hidden_act="silu", max_position_embeddings=args.context,
        initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=False,
        decoder_sparse_step=1, mlp_only_layers=[], moe_intermediate_size=args.expert_width,
        num_experts_per_tok=args.top_k, num_experts=args.experts, norm_topk_prob=True,
        output_router_logits=False, router_aux_loss_coef=args.aux_coef,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(args.seed)
    model = Qwen3MoeForCausalLM(cfg)
    return model, cfg


def autocast_ctx(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib
    return contextlib.nullcontext()


def train_step_loss(model, x, device):
    with autocast_ctx(device):
        out = model(input_ids=x, labels=x, output_router_logits=True, use_cache=False)
    return out.loss, out.aux_loss


@torch.no_grad()
def evaluate(model, corpus, device, max_windows=None, max_tokens=None, batch=16, count_experts=False, blen=None):
    """Held-out loss per domain (mean token NLL, first token of each window unscored); optionally
    top-k expert-selection counts per layer."""
    model.eval()
    cfg = model.config
    res = {}
    for d in DOMAINS:
        w = corpus.heldout_windows(d, max_windows=max_windows, max_tokens=max_tokens)
        nll, ntok, nbytes = 0.0, 0, 0
        counts = np.zeros((cfg.num_hidden_layers, cfg.num_experts), dtype=np.int64) if count_experts else None
        for i in range(0, w.shape[0], batch):
            x = w[i:i + batch]
            with autocast_ctx(device):
                out = model(input_ids=x, output_router_logits=count_experts, use_cache=False)
            logits = out.logits.float()
            lp = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   x[:, 1:].reshape(-1), reduction="sum")
            nll += float(lp)
            ntok += x[:, 1:].numel()
            if blen is not None:
                nbytes += int(blen[x[:, 1:].reshape(-1).cpu().numpy()].sum())
            if count_experts:
                for li, rl in enumerate(out.router_logits):
                    top = torch.topk(rl.float(), cfg.num_experts_per_tok, dim=-1).indices.reshape(-1)
                    counts[li] += torch.bincount(top, minlength=cfg.num_experts).cpu().numpy()
        r = {"loss": nll / ntok, "tokens": ntok}
        if blen is not None and nbytes > 0:
            r["bits_per_byte"] = nll / math.log(2) / nbytes
        if count_experts:
            r["expert_counts"] = counts
        res[d] = r
    model.train()
    return res


def benchmark_impls(model, corpus, device, batch, candidates):
    """Times one forward+backward per experts implementation; returns the fastest that works."""
    times = {}
    x = corpus.batch(batch)
    for name in candidates:
        try:
            set_experts_impl(model, name)
            for rep in range(2):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.time()
                loss, _ = train_step_loss(model, x, device)
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.time() - t0
            model.zero_grad(set_to_none=True)
            if not math.isfinite(loss.item()):
                raise RuntimeError("non-finite loss")
            times[name] = dt
            log(f"  experts_implementation={name}: {dt * 1000:.0f} ms per step of {batch}x{corpus.context}")
        except Exception as e:  # an implementation this torch/GPU lacks
            model.zero_grad(set_to_none=True)
            log(f"  experts_implementation={name}: unavailable ({type(e).__name__}: {str(e)[:160]})")
    if not times:
        raise SystemExit("no experts implementation works")
    best = min(times, key=times.get)
    set_experts_impl(model, best)
    return best, times


def generate_samples(model, tok, device, prompts, max_new_tokens=60, seed=0):
    out = []
    model.eval()
    for p in prompts:
        ids = torch.tensor([tok.encode(p).ids], device=device)
        torch.manual_seed(seed)
        try:
            with torch.no_grad(), autocast_ctx(device):
                g = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                   repetition_penalty=1.1, pad_token_id=model.config.pad_token_id,
                                   eos_token_id=model.config.eos_token_id)
            out.append({"prompt": p, "greedy_continuation": tok.decode(g[0, ids.shape[1]:].tolist())})
        except Exception as e:
            out.append({"prompt": p, "error": f"{type(e).__name__}: {e}"})
    model.train()
    return out


# ------------------------------------------------------------------------------------------ saving

def fix_config_json(out_dir):
    """Writes `num_experts` next to transformers' `num_local_experts`: real Qwen3-MoE checkpoints
    name it `num_experts`, and readers outside transformers look for that key."""
    p = os.path.join(out_dir, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    if "num_experts" not in cfg and "num_local_experts" in cfg:
        cfg["num_experts"] = cfg["num_local_experts"]
    for k in ("_experts_implementation", "experts_implementation"):
        cfg.pop(k, None)
    with open(p, "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def write_generation_config(out_dir, special):
    gc = {"bos_token_id": special["<|endoftext|>"],
          "eos_token_id": [special["<|endoftext|>"], special["<|im_end|>"]],
          "pad_token_id": special["<|endoftext|>"],
          "do_sample": True, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1,
          "max_new_tokens": 128}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gc, f, indent=2)
        f.write("\n")


def save_model(model, out_dir, special, max_shard_size=None):
    os.makedirs(out_dir, exist_ok=True)
    for fn in os.listdir(out_dir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, fn))
    m = copy.deepcopy(model).to("cpu", dtype=torch.bfloat16)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    m.save_pretrained(out_dir, safe_serialization=True, **kw)
    gc_path = os.path.join(out_dir, "generation_config.json")
    fix_config_json(out_dir)
    write_generation_config(out_dir, special)
    return gc_path


def repack(src, out_dir):
    """Re-saves a sharded checkpoint as a single bf16 model.safetensors and copies the other files."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    os.makedirs(out_dir, exist_ok=True)
    for fn in os.listdir(out_dir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, fn))
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="1GB")
    for fn in os.listdir(src):
        if fn.endswith(".safetensors") or fn in ("model.safetensors.index.json", "config.json"):
            continue
        if os.path.isfile(os.path.join(src, fn)):
            shutil.copy(os.path.join(src, fn), os.path.join(out_dir, fn))
    shutil.copy(os.path.join(src, "config.json"), os.path.join(out_dir, "config.json"))
    fix_config_json(out_dir)
    log(f"repacked {src} -> {out_dir}: {sorted(os.listdir(out_dir))}")


def verify(args):
    """Compares the saved checkpoint's held-out loss (CPU, float32) with the loss logged at training time."""
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.out, "training_log.json")) as f:
        tlog = json.load(f)
    run = tlog["run"]
    step = run.get("best_step") if run.get("best_step") is not None else run["steps"]
    row = [c for c in tlog["curve"] if c["step"] == step][-1]
    windows = args.eval_windows or (32 if run["device"] == "cuda" else 2)
    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    corpus = Corpus(args.corpus, torch.device("cpu"), run["context"], 1.0, 0)
    r = evaluate(model, corpus, torch.device("cpu"), max_windows=windows, batch=8)
    tlog["verification"] = {
        "what": f"held-out cross-entropy on the {windows} periodic-evaluation windows per domain, logged at step "
                f"{step} during training and re-measured from the saved files with "
                "`AutoModelForCausalLM.from_pretrained` on the CPU.",
        "training": row["heldout"], "saved": {d: round(r[d]["loss"], 5) for d in DOMAINS},
        "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    for d in DOMAINS:
        log(f"{d:12s} at training {row['heldout'][d]:.4f}  saved file {r[d]['loss']:.4f}")
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(tlog, f, indent=1, ensure_ascii=False)
    write_model_card(args.out, tlog)


# ------------------------------------------------------------------------------------------ model card

LICENCES = """| domain | source | licence |
| --- | --- | --- |
| math | GSM8K train split (`openai/gsm8k`, `main`) | MIT |
| science | ARC-Challenge train (`allenai/ai2_arc`) | CC BY-SA 4.0 |
| science | OpenBookQA train (`allenai/openbookqa`, additional) | not verified (dataset card: unknown; Apache 2.0 often cited) |
| commonsense | PIQA train (`ybisk/piqa`) | not verified (dataset card: unknown; AFL-3.0 often cited) |
| commonsense | WinoGrande train (`allenai/winogrande`, `winogrande_m`) | CC BY (version not verified) |
| reading | BoolQ train (`google/boolq`) | CC BY-SA 3.0 (passages from Wikipedia) |
| code | Python {pyver} standard library `.py` files (no tests, no codec tables) | PSF License Agreement (Python Software Foundation License) |
| german | Debian `manpages-de` {manver} (German manual pages, rendered to plain text with man-db/groff) | GPL-3+ for the translations (Debian copyright file); the original English pages carry their own free licences |

The task data come from `../shared/data/tasks` (see its README for upstream copies). WikiText-2 was
**not** used for training: only its test split is available, and it stays held out for evaluation."""


def md_table(header, rows):
    s = "| " + " | ".join(header) + " |\n| " + " | ".join("---" for _ in header) + " |\n"
    for r in rows:
        s += "| " + " | ".join(str(c) for c in r) + " |\n"
    return s


def write_model_card(out_dir, tlog):
    a = tlog["architecture"]
    pc = tlog["parameters"]
    fe = tlog["final_eval"]
    meta = tlog["corpus"]
    run = tlog["run"]
    card = []
    card.append("# demo-moe: a small Qwen3-MoE trained from scratch for PreMoe demos\n\n")
    card.append("A tiny Mixture-of-Experts language model (transformers' `Qwen3MoeForCausalLM`, `model_type` "
                "`qwen3_moe`) trained from random initialisation on six text domains, so that the experts "
                "specialise by domain and task-aware expert pruning (PreMoe) has something to find. It is a "
                "toy: it writes domain-flavoured text, not correct answers. It is the default model of "
                "`premoe demo`.\n")
    card.append("\n## Architecture\n\n")
    rows = [
        ("layers (all MoE)", a["num_hidden_layers"]), ("hidden size", a["hidden_size"]),
        ("attention", f"{a['num_attention_heads']} query heads × {a['head_dim']}, {a['num_key_value_heads']} KV heads, "
                      f"q/k RMSNorm, RoPE θ={a['rope_theta']:g}"),
        ("experts per layer", a["num_experts"]), ("experts per token (top-k)", f"{a['num_experts_per_tok']} "
                                                   "(softmax router, top-k weights renormalised: `norm_topk_prob`)"),
        ("expert width (`moe_intermediate_size`)", a["moe_intermediate_size"]),
        ("shared experts / dense layers", "none"),
        ("vocabulary", f"{a['vocab_size']} (byte-level BPE, Qwen2 pre-tokenizer regex, NFC)"),
        ("context", a["max_position_embeddings"]), ("tied embeddings", "yes"),
        ("router aux loss coefficient", a["router_aux_loss_coef"]),
        ("parameters, total", f"{pc['total']:,} ({pc['total'] / 1e6:.2f}M)"),
        ("parameters, active per token", f"{pc['active_per_token']:,} ({pc['active_per_token'] / 1e6:.2f}M)"),
        ("of which embedding (tied with the LM head)", f"{pc['embedding']:,}"),
        ("parameters per expert", f"{pc['one_expert']:,}"),
        ("weights on disk", "bfloat16, one `model.safetensors`, per-expert tensor names "
                            "(`model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight`)"),
    ]
    card.append(md_table(["", ""], rows))
    card.append("\nSpecial tokens: `<|endoftext|>` (id {0}, document separator, bos/eos/pad), `<|im_start|>` (id {1}), "
                "`<|im_end|>` (id {2}); `tokenizer_config.json` has a ChatML `chat_template`. The model was never "
                "trained on chat data; the template is there so chat code paths can be exercised.\n\n".format(
                    *[meta["special_tokens"][t] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]))
    card.append("\n## Data and licences\n\n")
    card.append(LICENCES.format(pyver=tlog["sources"]["python"], manver=tlog["sources"]["manpages_de"]) + "\n")
    card.append("\nRendering (one document per item, documents joined by `<|endoftext|>`): GSM8K as "
                "`Question: …\\nAnswer: <worked solution ending in #### N>`; ARC as `Question: …\\nAnswer: <gold choice>`; "
                "OpenBookQA as `Fact: <fact1>\\n<question stem> <gold choice>`; PIQA as `Question: <goal>\\nAnswer: "
                "<gold solution>`; WinoGrande as the sentence with the gold option in the blank; BoolQ as "
                "`<passage>\\nQuestion: <question>?\\nAnswer: yes|no`; code as whole source files; German as "
                "whole rendered manual pages.\n")
    card.append(f"\nHeld out: {meta['heldout_frac'] * 100:g}% of each domain's documents (seeded shuffle, seed "
                f"{meta['seed']}), in `.corpus/heldout/<domain>.jsonl`. Training tokens per domain were capped at "
                f"{meta['cap_tokens']:,}.\n\n")
    rows = []
    for d in DOMAINS:
        m = meta["domains"][d]
        rows.append((d, f"{m['train_docs']:,}", f"{m['train_tokens']:,}", f"{m['heldout_docs']:,}",
                     f"{m['heldout_tokens']:,}", m["bytes_per_token"]))
    card.append(md_table(["domain", "train docs", "train tokens", "held-out docs", "held-out tokens",
                          "bytes/token"], rows))
    card.append("\n## Training\n\n")
    card.append(md_table(["", ""], [
        ("device", run["device_name"]), ("seed", run["seed"]),
        ("tokens trained", f"{run['tokens_trained']:,} ({run['steps']:,} steps × {run['batch_size']} × "
                           f"{run['context']})"),
        ("epochs over the training corpus", f"{run['tokens_trained'] / run['corpus_train_tokens']:.1f} "
                                            "(domains sampled ∝ their token count)"),
        ("optimiser", f"AdamW (β=0.9, 0.95), peak lr {run['lr']:g}, {run['warmup_steps']} warmup steps, cosine to "
                      f"{run['min_lr_frac']:g}× peak, weight decay {run['weight_decay']:g}, grad clip "
                      f"{run['grad_clip']:g}"),
        ("precision", run["precision"]), ("experts implementation (training)", run["experts_impl"]),
        ("wall time", f"{run['wall_seconds'] / 60:.1f} min ({run['tokens_per_second']:,.0f} tokens/s)"),
        ("weights kept", run["kept"]),
        ("software", f"torch {run['torch']}, transformers {run['transformers']}"),
    ]))
    card.append("\n### Training curve (held-out cross-entropy, nats/token)\n\n")
    curve = tlog["curve"]
    pick = curve if len(curve) <= 14 else [curve[int(i * (len(curve) - 1) / 12)] for i in range(13)]
    rows = []
    for c in pick:
        rows.append([c["step"], f"{c['tokens'] / 1e6:.1f}M",
                     "" if c.get("train_loss") is None else f"{c['train_loss']:.3f}"]
                    + [f"{c['heldout'][d]:.3f}" for d in DOMAINS] + [f"{c['heldout_mean']:.3f}"])
    card.append(md_table(["step", "tokens", "train"] + DOMAINS + ["mean"], rows))
    card.append("\n`train` is the mean training cross-entropy (without the aux loss) over the steps since the previous "
                "row's evaluation; periodic held-out numbers use an evenly spread subset of the held-out windows.\n")
    card.append("\n## Held-out perplexity per domain\n\n")
    rows = []
    for d in DOMAINS:
        r = fe["perplexity"][d]
        rows.append((d, f"{r['tokens']:,}", f"{r['loss']:.3f}", f"{math.exp(r['loss']):.2f}",
                     f"{r.get('bits_per_byte', float('nan')):.3f}"))
    card.append(md_table(["domain", "tokens scored", "cross-entropy", "perplexity", "bits/byte"], rows))
    card.append(f"\nWindows of {run['context']} tokens cut from each domain's held-out token stream without "
                "overlap; the first token of each window is not scored. Measured at the end of training on the kept "
                f"weights ({'float32 master weights under bfloat16 autocast' if run['device'] == 'cuda' else 'float32'}"
                "); the saved file holds the same weights rounded to bfloat16.\n")
    ver = tlog.get("verification")
    if ver:
        card.append(f"\nChecked after saving: {ver['what']}\n\n")
        card.append(md_table(["domain", "at training", "saved bf16 file, float32 on CPU"],
                             [(d, f"{ver['training'][d]:.3f}", f"{ver['saved'][d]:.3f}") for d in DOMAINS]))
    card.append("\n## How specialised the experts are\n\n")
    card.append("For every held-out token, the router's top-k choices are counted per layer; each domain's counts "
                "give a distribution over the layer's experts. Jensen–Shannon divergence (bits, 0 = identical, "
                "1 = disjoint) between two domains' distributions, per layer. \"Same at random init\" is the "
                "untrained model measured on the same tokens: a random router already splits tokens by their "
                "embeddings, so only the difference shows what training learnt.\n\n")
    rows = []
    init = tlog.get("init_specialisation")
    for li, L in enumerate(fe["specialisation"]["layers"]):
        base = f"{init['js_mean_per_layer_bits'][li]:.3f}" if init else "n/a"
        rows.append((li, f"{L['js_mean_bits']:.3f}", base, f"{L['js_min_bits']:.3f} ({L['js_min_pair']})",
                     f"{L['js_max_bits']:.3f} ({L['js_max_pair']})", f"{L['usage_entropy_bits_mean']:.2f}",
                     f"{L['top_expert_share_mean'] * 100:.1f}%"))
    card.append(md_table(["layer", "JS mean over pairs", "same at random init", "least distinct pair", "most distinct pair",
                          "mean usage entropy (bits, max " + f"{math.log2(a['num_experts']):.0f})",
                          "mean share of a domain's most used expert"], rows))
    card.append("\nJensen–Shannon divergence between domains, averaged over layers (bits):\n\n")
    jm = fe["specialisation"]["js_matrix_mean_over_layers"]
    rows = [[d] + [f"{jm[i][j]:.3f}" for j in range(len(DOMAINS))] for i, d in enumerate(DOMAINS)]
    card.append(md_table([""] + DOMAINS, rows))
    card.append("\nFull per-layer distributions and matrices are in `training_log.json` (`final_eval`).\n")
    if tlog.get("samples"):
        card.append("\n## Samples (greedy, repetition penalty 1.1)\n\n")
        for s in tlog["samples"]:
            cont = s.get("greedy_continuation", s.get("error", ""))
            card.append("```text\n" + s["prompt"] + "⟦" + cont + "⟧\n```\n\n")
        card.append("The prompt is followed by the model's continuation in ⟦ ⟧.\n")
    card.append("\n## How to regenerate\n\n")
    card.append("```bash\n"
                "apt-get install -y manpages-de     # German manual pages\n"
                "pip install torch transformers tokenizers safetensors numpy\n"
                "python3 scripts/build_demo_corpus.py          # .corpus/ + models/demo-moe/tokenizer.json\n"
                "python3 scripts/train_demo_moe.py             # CPU, about 90 minutes on 2 cores\n"
                f"# this checkpoint: {run['command']}\n"
                + (f"#   then: python3 scripts/train_demo_moe.py --repack {run['out']} --out models/demo-moe\n"
                   if run.get("max_shard_size") else "") +
                "```\n\n"
                "The corpus and tokenizer are deterministic for a given Python, manpages-de and data version; "
                "the training run is seeded (bit-exact repeats are not guaranteed across devices and library "
                "versions). A sharded checkpoint (e.g. from a GPU run with `--max-shard-size 15MB`) is re-saved "
                "as one file with `python3 scripts/train_demo_moe.py --repack DIR --out models/demo-moe`.\n")
    with open(os.path.join(out_dir, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write("".join(card))


def specialisation(expert_counts, num_experts):
    """expert_counts: {domain: array [layers, experts]} -> per-layer JS table and summaries."""
    n_layers = next(iter(expert_counts.values())).shape[0]
    layers = []
    mats = []
    for li in range(n_layers):
        mat = np.zeros((len(DOMAINS), len(DOMAINS)))
        for i, a in enumerate(DOMAINS):
            for j, b in enumerate(DOMAINS):
                if j > i:
                    mat[i, j] = mat[j, i] = js_divergence_bits(expert_counts[a][li], expert_counts[b][li])
        pairs = [(mat[i, j], f"{DOMAINS[i]}–{DOMAINS[j]}") for i in range(len(DOMAINS)) for j in range(i + 1, len(DOMAINS))]
        ents, tops = [], []
        for d in DOMAINS:
            p = expert_counts[d][li] / expert_counts[d][li].sum()
            ents.append(float(-(p[p > 0] * np.log2(p[p > 0])).sum()))
            tops.append(float(p.max() * (1.0)))
        layers.append({
            "js_mean_bits": float(np.mean([v for v, _ in pairs])),
            "js_min_bits": float(min(pairs)[0]), "js_min_pair": min(pairs)[1],
            "js_max_bits": float(max(pairs)[0]), "js_max_pair": max(pairs)[1],
            "js_matrix_bits": mat.round(5).tolist(),
            "usage_entropy_bits": dict(zip(DOMAINS, [round(e, 4) for e in ents])),
            "usage_entropy_bits_mean": float(np.mean(ents)),
            "top_expert_share_mean": float(np.mean(tops)),
            "distribution": {d: (expert_counts[d][li] / expert_counts[d][li].sum()).round(6).tolist() for d in DOMAINS},
            "counts": {d: expert_counts[d][li].tolist() for d in DOMAINS},
        })
        mats.append(mat)
    return {"layers": layers, "js_mean_per_layer_bits": [L["js_mean_bits"] for L in layers],
            "js_matrix_mean_over_layers": np.mean(mats, axis=0).round(5).tolist()}


# ------------------------------------------------------------------------------------------ main

def main():
    args = parse_args()
    if args.repack:
        repack(args.repack, args.out)
        return
    if args.verify:
        verify(args)
        return
    if args.card_only:
        with open(os.path.join(args.out, "training_log.json")) as f:
            write_model_card(args.out, json.load(f))
        return
    t_start = time.time()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    d = lambda v, cpu, gpu: v if v is not None else (gpu if cuda else cpu)  # noqa: E731
    args.tokens = int(d(args.tokens, 9e6, 100e6))
    if args.time_budget_seconds is None and not cuda:
        args.time_budget_seconds = 5400.0  # about 90 minutes on the CPU
    args.batch_size = d(args.batch_size, 8, 64)
    args.lr = d(args.lr, 2e-3, 3e-3)
    args.warmup_steps = d(args.warmup_steps, 100, 200)
    args.eval_windows = d(args.eval_windows, 2, 32)
    args.evals = d(args.evals, 16, 30)
    args.eval_batch = 16 if not cuda else 64
    args.final_eval_tokens = d(args.final_eval_tokens, 16384, 10 ** 9)
    args.final_reserve_seconds = d(args.final_reserve_seconds, 240.0, 60.0)
    args.log_every = d(args.log_every, 10, 50)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    import transformers
    from tokenizers import Tokenizer
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    corpus = Corpus(args.corpus, device, args.context, args.domain_alpha, args.seed)
    meta = corpus.meta
    tok_json = os.path.join(args.tokenizer_dir, "tokenizer.json")
    tok = Tokenizer.from_file(tok_json)
    blen = byte_lengths(tok_json)
    model, cfg = build_model(args, meta["vocab_size"], meta["special_tokens"])
    model.to(device)
    model.train()
    params = count_params(model, cfg)
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                                  f"{torch.get_num_threads()} threads)"
    log(f"device {device_name}; torch {torch.__version__}, transformers {transformers.__version__}")
    log(f"params total {params['total']:,}, active/token {params['active_per_token']:,}, "
        f"embedding {params['embedding']:,}")
    log("train tokens per domain: " + ", ".join(f"{k} {v.numel():,}" for k, v in corpus.train.items())
        + "; sampling weights " + ", ".join(f"{w:.3f}" for w in corpus.weights))

    # choose the experts implementation
    if args.experts_impl == "auto":
        cands = ["grouped_mm", "batched_mm", "eager"] if cuda else ["eager", "grouped_mm"]
        impl, impl_times = benchmark_impls(model, corpus, device, args.batch_size, cands)
    else:
        impl, impl_times = args.experts_impl, {}
        set_experts_impl(model, impl)
    log(f"experts implementation: {impl}")

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if cuda else {}))
    tokens_per_step = args.batch_size * args.context
    total_steps = max(1, args.tokens // tokens_per_step)
    planned = {"by_tokens": total_steps}
    sized = args.time_budget_seconds is None

    def lr_at(step):
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        if not sized:
            return args.lr
        prog = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

    curve = []
    best = {"loss": float("inf"), "step": None, "state": None}

    def do_eval(step, tokens, train_loss, aux):
        t0 = time.time()
        r = evaluate(model, corpus, device, max_windows=args.eval_windows, blen=None, batch=args.eval_batch)
        dt = time.time() - t0
        h = {k: round(v["loss"], 5) for k, v in r.items()}
        mean = float(np.mean(list(h.values())))
        row = {"step": step, "tokens": tokens, "train_loss": None if train_loss is None else round(train_loss, 5),
               "aux_loss": None if aux is None else round(aux, 5), "lr": lr_at(step),
               "elapsed_s": round(time.time() - t_start, 1), "heldout": h, "heldout_mean": round(mean, 5)}
        curve.append(row)
        log(f"eval step {step} tokens {tokens / 1e6:.2f}M held-out mean {mean:.3f} | "
            + " ".join(f"{k} {v:.2f}" for k, v in h.items()) + f" ({dt:.1f}s)")
        if args.keep_best and mean < best["loss"]:
            best.update(loss=mean, step=step, state={k: v.detach().to("cpu", copy=True)
                                                     for k, v in model.state_dict().items()})
        return dt

    init_spec = None
    if args.init_baseline:
        t0 = time.time()
        r0 = evaluate(model, corpus, device, max_tokens=args.final_eval_tokens, count_experts=True,
                      batch=args.eval_batch)
        init_spec = specialisation({k: v["expert_counts"] for k, v in r0.items()}, cfg.num_experts)
        log("random-init JS divergence mean per layer (bits): "
            + ", ".join(f"{v:.3f}" for v in init_spec["js_mean_per_layer_bits"]) + f" ({time.time() - t0:.1f}s)")
    eval_time = do_eval(0, 0, None, None)
    t_train0 = time.time()
    step = 0
    run_loss, run_aux, run_n = 0.0, 0.0, 0
    eval_every = max(1, total_steps // args.evals) if sized else None
    step_times = []
    calib_seconds = 30.0 if cuda else 60.0
    last_eval_step = 0
    while step < total_steps:
        ts = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = corpus.batch(args.batch_size)
        loss, aux = train_step_loss(model, x, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        lv, av = loss.item(), aux.item()  # syncs
        ce = lv - args.aux_coef * av
        run_loss += ce
        run_aux += av
        run_n += 1
        step_times.append(time.time() - ts)
        if not math.isfinite(lv):
            raise SystemExit(f"non-finite loss at step {step}")
        if step % args.log_every == 0:
            el = time.time() - t_train0
            log(f"step {step}/{total_steps if sized else '?'} loss {ce:.3f} aux {av:.3f} lr {lr_at(step):.2e} "
                f"{step * tokens_per_step / el:,.0f} tok/s")
        if not sized and time.time() - t_train0 >= calib_seconds and step >= 5:
            # size the run from the measured throughput
            st = float(np.median(step_times[3:])) if len(step_times) > 6 else float(np.mean(step_times))
            remaining = args.time_budget_seconds - (time.time() - t_start) - args.final_reserve_seconds
            more = int((remaining - args.evals * eval_time) / st)
            by_time = step + max(0, more)
            total_steps = max(step + 1, min(total_steps, by_time))
            planned.update(by_time=by_time, step_seconds=st, eval_seconds=eval_time,
                           measured_tokens_per_second=tokens_per_step / st)
            sized = True
            eval_every = max(1, total_steps // args.evals)
            log(f"measured {st * 1000:.0f} ms/step ({tokens_per_step / st:,.0f} tok/s), eval {eval_time:.1f}s: "
                f"planning {total_steps} steps = {total_steps * tokens_per_step / 1e6:.1f}M tokens "
                f"(token budget {planned['by_tokens']} steps)")
        if sized and (step - last_eval_step >= eval_every or step == total_steps):
            et = do_eval(step, step * tokens_per_step, run_loss / run_n, run_aux / run_n)
            eval_time = max(eval_time, et)
            last_eval_step = step
            run_loss, run_aux, run_n = 0.0, 0.0, 0
        if args.time_budget_seconds is not None and \
                time.time() - t_start > args.time_budget_seconds - args.final_reserve_seconds:
            log(f"time budget reached at step {step}; stopping")
            total_steps = step
            break
    if last_eval_step != step and not curve[-1]["step"] == step:
        do_eval(step, step * tokens_per_step, run_loss / max(1, run_n), run_aux / max(1, run_n))
    train_seconds = time.time() - t_train0
    tokens_trained = step * tokens_per_step
    kept = f"final weights (step {step})"
    if args.keep_best and best["step"] is not None and best["step"] != step:
        model.load_state_dict(best["state"])
        kept = f"best mean held-out loss, step {best['step']} of {step}"
    log(f"trained {step} steps, {tokens_trained / 1e6:.2f}M tokens in {train_seconds:.0f}s; keeping {kept}")

    # save first, so that a failure below cannot lose the weights
    os.makedirs(args.out, exist_ok=True)
    save_model(model, args.out, meta["special_tokens"], args.max_shard_size)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(args.tokenizer_dir, fn)
        if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(args.out, fn)):
            shutil.copy(src, os.path.join(args.out, fn))
    with open(os.path.join(args.out, "config.json")) as f:
        saved_cfg = json.load(f)
    man_ver = "unknown"
    try:
        import subprocess
        man_ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "manpages-de"], capture_output=True,
                                 text=True).stdout.strip() or man_ver
    except Exception:
        pass
    tlog = {
        "architecture": {k: saved_cfg.get(k) for k in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "num_experts", "num_experts_per_tok", "moe_intermediate_size", "vocab_size", "max_position_embeddings",
            "router_aux_loss_coef", "norm_topk_prob", "tie_word_embeddings")},
        "parameters": params,
        "corpus": meta,
        "sources": {"python": meta.get("python", platform.python_version()),
                    "manpages_de": meta.get("manpages_de", man_ver)},
        "run": {
            "command": "python3 scripts/train_demo_moe.py " + " ".join(sys.argv[1:]),
            "out": args.out, "max_shard_size": args.max_shard_size,
            "device": args.device, "device_name": device_name, "seed": args.seed,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "experts_impl": impl, "experts_impl_step_seconds": impl_times,
            "precision": "bf16 autocast, fp32 master weights" if cuda else "float32",
            "batch_size": args.batch_size, "context": args.context, "steps": step,
            "tokens_trained": tokens_trained, "corpus_train_tokens": int(sum(v.numel() for v in corpus.train.values())),
            "domain_sampling_weights": dict(zip(DOMAINS, [round(float(w), 5) for w in corpus.weights])),
            "lr": args.lr, "warmup_steps": args.warmup_steps, "min_lr_frac": args.min_lr_frac,
            "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
            "time_budget_seconds": args.time_budget_seconds, "planned": planned,
            "train_seconds": round(train_seconds, 1), "wall_seconds": None,
            "tokens_per_second": tokens_trained / max(1e-9, train_seconds),
            "kept": kept, "best_step": best["step"],
        },
        "curve": curve,
        "final_eval": None,
        "init_specialisation": init_spec,
        "samples": None,
    }
    tlog["architecture"]["rope_theta"] = (saved_cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)

    def write_log():
        tlog["run"]["wall_seconds"] = round(time.time() - t_start, 1)
        with open(os.path.join(args.out, "training_log.json"), "w") as f:
            json.dump(tlog, f, indent=1, ensure_ascii=False)
    write_log()

    # final evaluation: perplexity and expert usage per domain
    t0 = time.time()
    fe = evaluate(model, corpus, device, max_tokens=args.final_eval_tokens, count_experts=True, blen=blen,
                  batch=args.eval_batch)
    counts = {k: v.pop("expert_counts") for k, v in fe.items()}
    spec = specialisation(counts, cfg.num_experts)
    tlog["final_eval"] = {"perplexity": {k: {**v, "perplexity": math.exp(v["loss"])} for k, v in fe.items()},
                          "specialisation": spec, "seconds": round(time.time() - t0, 1)}
    log("final held-out perplexity: " + ", ".join(f"{k} {math.exp(v['loss']):.2f}" for k, v in fe.items()))
    log("JS divergence mean per layer (bits): " + ", ".join(f"{v:.3f}" for v in spec["js_mean_per_layer_bits"]))
    write_log()

    tlog["samples"] = generate_samples(model, tok, device, [
        "Question: Tom has 3 boxes with 12 apples each. He gives away 10 apples. How many apples are left?\nAnswer:",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "Question: Which gas do plants take in from the air to make food?\nAnswer:",
        "BESCHREIBUNG\n",
    ])
    for smp in tlog["samples"]:
        log(f"sample: {smp['prompt']!r} -> {smp.get('greedy_continuation', smp.get('error'))!r}")
    write_log()
    write_model_card(args.out, tlog)
    write_log()
    log(f"saved to {args.out} in {time.time() - t_start:.0f}s total: {sorted(os.listdir(args.out))}")


if __name__ == "__main__":
    main()

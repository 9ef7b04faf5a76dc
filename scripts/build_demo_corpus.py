#!/usr/bin/env python3
"""Builds the multi-domain corpus and the byte-level BPE tokenizer of the demo MoE.

Domains (all from local, licensed sources; see models/demo-moe/MODEL_CARD.md):

  math         GSM8K train                     "Question: …\\nAnswer: <worked solution>"
  science      ARC-Challenge + OpenBookQA train question plus gold answer
  commonsense  PIQA + WinoGrande train          goal plus gold solution / sentence with the gold option
  reading      BoolQ train                      passage + "Question: …?" + "Answer: yes|no"
  code         Python standard library .py files of the local Python install (tests excluded)
  german       Debian manpages-de, rendered to plain text with man-db/groff

WikiText-2 is not used: the repo has only its test split, which stays held out for evaluation.

Outputs (under the git-ignored .corpus/ folder unless told otherwise):

  .corpus/train/<domain>.jsonl     {"text": …} training documents
  .corpus/heldout/<domain>.jsonl   {"text": …} 5% of each domain's documents (seeded, deterministic)
  .corpus/tokens/<domain>.train.u16    uint16 token ids, documents joined by <|endoftext|>, capped
  .corpus/tokens/<domain>.heldout.u16  the same for the held-out documents (not capped)
  .corpus/tokens/meta.json         counts per domain, vocabulary size, special token ids
  models/demo-moe/tokenizer.json, tokenizer_config.json

Usage: python3 scripts/build_demo_corpus.py [--vocab-size 8192] [--cap-tokens 3000000] [--seed 1234]
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import random
import subprocess
import sysconfig
import time

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tasks"))
DOMAINS = ["math", "science", "commonsense", "reading", "code", "german"]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                   " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\n' }}{% endif %}")


def read_jsonl(path):
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):  # split on \n bytes only (see the data README)
            if line.strip():
                yield json.loads(line)


# ---------------------------------------------------------------- renderers, one per source

def render_gsm8k(data):
    for r in read_jsonl(os.path.join(data, "gsm8k", "train.jsonl")):
        yield f"Question: {r['question']}\nAnswer: {r['answer']}"


def render_arc(data):
    for r in read_jsonl(os.path.join(data, "ai2_arc", "train.jsonl")):
        gold = r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
        yield f"Question: {r['question']}\nAnswer: {gold}"


def render_obqa(data):
    for r in read_jsonl(os.path.join(data, "obqa", "train.jsonl")):
        gold = r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
        fact = r["fact1"].strip()
        fact = fact[:1].upper() + fact[1:]
        if not fact.endswith("."):
            fact += "."
        yield f"Fact: {fact}\n{r['question_stem']} {gold}"


def render_piqa(data):
    for r in read_jsonl(os.path.join(data, "piqa", "train.jsonl")):
        if r["label"] not in (0, 1):
            continue
        gold = r["sol1"] if r["label"] == 0 else r["sol2"]
        yield f"Question: {r['goal']}\nAnswer: {gold}"


def render_winogrande(data):
    for r in read_jsonl(os.path.join(data, "winogrande", "train.jsonl")):
        if r["answer"] not in ("1", "2"):
            continue
        gold = r["option1"] if r["answer"] == "1" else r["option2"]
        yield r["sentence"].replace("_", gold, 1)


def render_boolq(data):
    for r in read_jsonl(os.path.join(data, "boolq", "train.jsonl")):
        yield f"{r['passage']}\nQuestion: {r['question']}?\nAnswer: {'yes' if r['answer'] else 'no'}"


CODE_EXCLUDE_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


def render_stdlib(stdlib_dir, max_bytes=200_000):
    """Python source files of the standard library, sorted by path; tests, generated tables and
    very large files are left out."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(stdlib_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in CODE_EXCLUDE_DIRS and not d.startswith("config-"))
        rel = os.path.relpath(dirpath, stdlib_dir)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            if rel == "encodings" and fn not in ("__init__.py", "aliases.py", "utf_8.py", "idna.py", "punycode.py"):
                continue  # codec tables
            if rel == "pydoc_data":
                continue  # one huge English string
            p = os.path.join(dirpath, fn)
            if os.path.getsize(p) > max_bytes or os.path.getsize(p) < 200:
                continue
            paths.append(p)
    for p in sorted(paths):
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        yield text.strip("\n") + "\n"


def _render_one_manpage(path, width):
    env = dict(os.environ, MANWIDTH=str(width), LANG="C.UTF-8", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    try:
        out = subprocess.run(["man", "--nj", "--nh", "-E", "UTF-8", "-l", path], env=env,
                             capture_output=True, timeout=60).stdout
        out = subprocess.run(["col", "-bx"], input=out, capture_output=True, env=env, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return None
    lines = out.decode("utf-8", errors="replace").split("\n")
    # drop the running header and footer lines, dedent the usual 7-column body indent
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 4:
        return None
    lines = lines[1:-1]
    body = []
    for ln in lines:
        ln = ln.rstrip()
        if ln.startswith("       "):
            ln = ln[7:]
        body.append(ln)
    text = "\n".join(body).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n" if len(text) > 200 else None


def render_manpages(man_dir, width=160, workers=2):
    from concurrent.futures import ThreadPoolExecutor
    paths = sorted(p for p in glob.glob(os.path.join(man_dir, "man*", "*")) if os.path.isfile(p)
                   and not os.path.islink(p))
    if not paths:
        raise SystemExit(f"no manual pages under {man_dir}: apt-get install -y manpages-de")
    # some pages are only ".so other-page" stubs; keep one copy of each rendered text
    seen = set()
    with ThreadPoolExecutor(workers) as ex:
        for text in ex.map(lambda p: _render_one_manpage(p, width), paths):
            if text is None:
                continue
            h = hashlib.sha1(text.encode()).hexdigest()
            if h in seen:
                continue
            seen.add(h)
            yield text


# ---------------------------------------------------------------- corpus

def package_version(name):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True,
                              text=True).stdout.strip() or None
    except OSError:
        return None


def build_domains(args):
    stdlib = args.stdlib or sysconfig.get_paths()["stdlib"]
    sources = {
        "math": [("gsm8k", lambda: render_gsm8k(args.data_dir))],
        "science": [("ai2_arc", lambda: render_arc(args.data_dir)), ("obqa", lambda: render_obqa(args.data_dir))],
        "commonsense": [("piqa", lambda: render_piqa(args.data_dir)),
                        ("winogrande", lambda: render_winogrande(args.data_dir))],
        "reading": [("boolq", lambda: render_boolq(args.data_dir))],
        "code": [("python-stdlib", lambda: render_stdlib(stdlib))],
        "german": [("manpages-de", lambda: render_manpages(args.man_dir))],
    }
    out = {}
    for domain in DOMAINS:
        docs = []
        for name, fn in sources[domain]:
            t0 = time.time()
            part = [d for d in fn() if d.strip()]
            print(f"  {domain:12s} {name:14s} {len(part):6d} docs {sum(len(d) for d in part) / 1e6:7.2f} MB"
                  f"  ({time.time() - t0:.1f}s)", flush=True)
            docs.extend(part)
        out[domain] = docs
    return out


def split_heldout(docs, frac, seed, domain):
    rng = random.Random(f"{seed}:{domain}")
    idx = list(range(len(docs)))
    rng.shuffle(idx)
    n_held = max(1, round(len(docs) * frac))
    held = sorted(idx[:n_held])
    train = idx[n_held:]  # shuffled order; the cap keeps a random subset
    return [docs[i] for i in train], [docs[i] for i in held]


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- tokenizer

def make_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def train_tokenizer(train_docs, vocab_size, per_domain_bytes, seed):
    tok = make_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def sample():
        # the same number of bytes from every domain, so no domain owns the vocabulary
        for domain in DOMAINS:
            n = 0
            for d in train_docs[domain]:
                if n >= per_domain_bytes:
                    break
                n += len(d.encode())
                yield d
    tok.train_from_iterator(sample(), trainer=trainer)
    return tok


def save_tokenizer(tok, model_dir, context):
    os.makedirs(model_dir, exist_ok=True)
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    added = {}
    for t in SPECIAL_TOKENS:
        added[str(tok.token_to_id(t))] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True}
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "split_special_tokens": False,
    }
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


def encode_docs(tok, docs, eos_id, cap=None, batch=256):
    """Token ids of docs joined by <|endoftext|> (each doc followed by one), stopping after cap tokens."""
    chunks, total, used = [], 0, 0
    for i in range(0, len(docs), batch):
        encs = tok.encode_batch(docs[i:i + batch], add_special_tokens=False)
        for e in encs:
            ids = e.ids + [eos_id]
            chunks.append(np.asarray(ids, dtype=np.uint16))
            total += len(ids)
            used += 1
            if cap is not None and total >= cap:
                break
        if cap is not None and total >= cap:
            break
    arr = np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)
    if cap is not None:
        arr = arr[:cap]
    return arr, used


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=DEFAULT_DATA)
    ap.add_argument("--stdlib", default=None, help="Python standard library folder (default: this Python's)")
    ap.add_argument("--man-dir", default="/usr/share/man/de")
    ap.add_argument("--out", default=os.path.join(ROOT, ".corpus"))
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "demo-moe"))
    ap.add_argument("--heldout-frac", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--tokenizer-bytes-per-domain", type=int, default=4_000_000)
    ap.add_argument("--cap-tokens", type=int, default=3_000_000, help="training tokens kept per domain at most")
    ap.add_argument("--context", type=int, default=512, help="model_max_length written to tokenizer_config.json")
    args = ap.parse_args()

    t0 = time.time()
    print("rendering domains", flush=True)
    domains = build_domains(args)
    for sub in ("train", "heldout", "tokens"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    train_docs, held_docs = {}, {}
    for d in DOMAINS:
        train_docs[d], held_docs[d] = split_heldout(domains[d], args.heldout_frac, args.seed, d)
        write_jsonl(os.path.join(args.out, "train", f"{d}.jsonl"), train_docs[d])
        write_jsonl(os.path.join(args.out, "heldout", f"{d}.jsonl"), held_docs[d])

    print(f"training the tokenizer (vocab {args.vocab_size})", flush=True)
    tok = train_tokenizer(train_docs, args.vocab_size, args.tokenizer_bytes_per_domain, args.seed)
    save_tokenizer(tok, args.model_dir, args.context)
    eos_id = tok.token_to_id("<|endoftext|>")
    assert tok.get_vocab_size() <= 65535

    meta = {"seed": args.seed, "heldout_frac": args.heldout_frac, "vocab_size": tok.get_vocab_size(),
            "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}, "cap_tokens": args.cap_tokens,
            "python": platform.python_version(), "manpages_de": package_version("manpages-de"),
            "domains": {}}
    print("tokenizing", flush=True)
    for d in DOMAINS:
        tr, used = encode_docs(tok, train_docs[d], eos_id, cap=args.cap_tokens)
        he, _ = encode_docs(tok, held_docs[d], eos_id)
        tr.tofile(os.path.join(args.out, "tokens", f"{d}.train.u16"))
        he.tofile(os.path.join(args.out, "tokens", f"{d}.heldout.u16"))
        train_bytes = sum(len(x.encode()) for x in train_docs[d][:used])
        meta["domains"][d] = {
            "train_docs": len(train_docs[d]), "train_docs_used": used, "heldout_docs": len(held_docs[d]),
            "train_tokens": int(tr.size), "heldout_tokens": int(he.size),
            "train_bytes_used": train_bytes,
            "bytes_per_token": round(train_bytes / max(1, tr.size - used), 3),
        }
        m = meta["domains"][d]
        print(f"  {d:12s} train {m['train_tokens']:9,d} tok ({used}/{len(train_docs[d])} docs)  "
              f"heldout {m['heldout_tokens']:8,d} tok ({len(held_docs[d])} docs)  {m['bytes_per_token']} B/tok",
              flush=True)
    with open(os.path.join(args.out, "tokens", "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

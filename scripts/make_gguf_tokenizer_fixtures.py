#!/usr/bin/env python3
"""Makes the GGUF tokenizer fixtures (Tests/Fixtures/gguf_tokenizers) and their expected ids from
llama.cpp's own tokenizer (`llama-tokenize`, built by scripts/build_llama_cpp.sh).

- `bpe-<pre>.gguf`: one small byte-level BPE vocabulary (the 509-token tokenizer of the
  qwen3_moe model fixture) under each `tokenizer.ggml.pre` name llama.cpp's converter writes for
  the supported families, so the ids differ only by llama.cpp's pre-tokenizer regexes.
- `spm-llama.gguf`: a SentencePiece `llama` vocabulary (tokenizer.ggml.model = "llama") made from
  the llama2 tokenizer fixture: its tokens, byte tokens <0x00>..<0xFF>, <unk>/<s>/</s> as
  unknown/control, scores = minus the rank of the first merge that makes the token (so the
  highest-scoring merge is the BPE's first), add_space_prefix true.
- `expected.json`: for each file and each text, the ids `llama-tokenize --ids --no-bos` prints.
- `smollm2-llama-tokenize.json` (when PREMOE_SMOLLM2_GGUF names the real SmolLM2-135M GGUF, see
  Tests/TestSupport): the same texts through that file, for an opt-in test.

The files are vocabulary-only GGUFs (llama architecture metadata, no tensors); tests never need
Python. Usage: scripts/make_gguf_tokenizer_fixtures.py
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests/Fixtures/gguf_tokenizers"
PRE_NAMES = ["gpt-2", "qwen2", "llama-bpe", "smollm", "default", "olmo", "deepseek-llm", "deepseek-v3", "starcoder"]
TEXTS = [
    "Hello world",
    " Hello  world, again!",
    "don't I'm we'll THEY'RE you've she'd it's",
    "numbers: 1 12 123 1234 12345 3.14159 1,000,000 2026-12-01",
    "mixed123abc456def 7x 8B",
    "multiple   spaces\tand\ttabs\n\nnew lines\r\nwindows line\n",
    "   leading and trailing   ",
    "punctuation!!! ??? ... --- ((brackets)) [x] {y} <z> $100 + 50% = ~ok^ |pipe|",
    "code: def f(x):\n    return x**2  # comment",
    "café naïve résumé Ωmega Straße",
    "日本語のテキスト 中文测试 한국어 텍스트",
    "emoji 😀👍🏽 👨‍👩‍👧 ❤️",
    "\n",
    "a",
]
LLAMA_HPARAMS = {"context_length": 256, "embedding_length": 64, "block_count": 1, "feed_forward_length": 128,
                 "attention.head_count": 4, "attention.layer_norm_rms_epsilon": 1e-5}


def llama_bin() -> Path:
    out = subprocess.run([ROOT / "scripts/build_llama_cpp.sh"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def writer(path: Path, gguf):
    w = gguf.GGUFWriter(str(path), "llama")
    for k, v in LLAMA_HPARAMS.items():
        if isinstance(v, float):
            w.add_float32(f"llama.{k}", v)
        else:
            w.add_uint32(f"llama.{k}", v)
    return w


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Merges added to the small vocabulary so that tokens span what one pre-tokenizer splits and
# another does not: digit runs, a space before digits or punctuation, whitespace runs,
# punctuation runs, contractions, upper case and multi-byte characters.
EXTRA_MERGES = ["1 2", "12 3", "123 4", "1234 5", "3 .", "3. 1", "Ġ 1", "Ġ1 2", "Ġ Ġ", "ĠĠ Ġ", "ĠĠĠ Ġ", "Ċ Ċ",
                "č Ċ", "ĉ ĉ", "! !", "!! !", "? ?", ". .", ".. .", "- -", "-- -", "( (", "Ġ (", "Ġ $", "$ 1",
                "' s", "' t", "' m", "' re", "' ll", "' ve", "' d", "n 't", "Ġ '", "T H", "TH E", "Y '", "R E",
                "o !", "d :", "x *", "* *", "Ġ #", "2 0", "20 2", "202 6", "Ġ -", ", 0", "0 0", "00 0", "1 ,",
                "Ã ©", "Ã ¯", "æ Ĺ", "ð Ł", "ðŁ ĺ", "Ġ Ġ", "Ċ Ġ", "ĠĠ ĠĠ", "ĠĠĠĠ Ġ", ": Ċ"]


def bpe_file(path: Path, pre: str, gguf):
    tok = json.loads((ROOT / "Tests/Fixtures/models/qwen3_moe/tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    next_id = max(max(vocab.values()), max(added)) + 1
    for m in EXTRA_MERGES:
        a, b = m.split(" ")
        if a in vocab and b in vocab and m not in merges:
            merges.append(m)
            if a + b not in vocab:
                vocab[a + b] = next_id
                next_id += 1
    size = next_id
    tokens, types = [""] * size, [1] * size
    for t, i in vocab.items():
        tokens[i] = t
    for i, t in added.items():
        tokens[i], types[i] = t, 3
    w = writer(path, gguf)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(min(added))
    w.add_add_bos_token(False)
    finish(w)


def spm_file(path: Path, gguf):
    tok = json.loads((ROOT / "Tests/Fixtures/tokenizers/llama2/tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    merges = [m if isinstance(m, list) else m.split(" ") for m in tok["model"]["merges"]]
    first_rank = {}
    for rank, (a, b) in enumerate(merges):
        first_rank.setdefault(a + b, rank)
    size = max(vocab.values()) + 1
    tokens, scores, types = [""] * size, [0.0] * size, [1] * size
    for t, i in vocab.items():
        tokens[i] = t
        scores[i] = -float(first_rank[t]) if t in first_rank else -1e6
        if t.startswith("<0x") and len(t) == 6:
            types[i], scores[i] = 6, 0.0
    special = {a["content"]: a["id"] for a in tok["added_tokens"]}
    types[special["<unk>"]], types[special["<s>"]], types[special["</s>"]] = 2, 3, 3
    for t in ("<unk>", "<s>", "</s>"):
        scores[special[t]] = 0.0
    w = writer(path, gguf)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(special["<unk>"])
    w.add_bos_token_id(special["<s>"])
    w.add_eos_token_id(special["</s>"])
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    finish(w)


def llama_tokenize(bin_dir: Path, model: Path, text: str) -> list:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
    try:
        out = subprocess.run([bin_dir / "llama-tokenize", "-m", model, "-f", f.name, "--ids", "--no-bos",
                              "--no-escape", "--log-disable"], capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    cache = Path(os.environ.get("PREMOE_CACHE", Path.home() / ".cache/premoe"))
    for p in sorted(cache.glob("llama.cpp/*/src/vendor/llama.cpp/gguf-py")):
        sys.path.insert(0, str(p))
    import gguf
    bin_dir = llama_bin()
    OUT.mkdir(parents=True, exist_ok=True)
    files = {f"bpe-{pre}.gguf": pre for pre in PRE_NAMES}
    for name, pre in files.items():
        bpe_file(OUT / name, pre, gguf)
    spm_file(OUT / "spm-llama.gguf", gguf)
    files["spm-llama.gguf"] = "llama (SentencePiece)"
    expected = {"reference": "llama.cpp 0c1e570 (llama-cpp-python 0.3.36 sdist) llama-tokenize --ids --no-bos --no-escape",
                "files": {}}
    for name, kind in files.items():
        expected["files"][name] = {"kind": kind, "cases": [
            {"text": t, "ids": llama_tokenize(bin_dir, OUT / name, t)} for t in TEXTS]}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    smol = os.environ.get("PREMOE_SMOLLM2_GGUF")
    if smol and Path(smol).exists():
        cases = [{"text": t, "ids": llama_tokenize(bin_dir, Path(smol), t)} for t in TEXTS]
        (OUT / "smollm2-llama-tokenize.json").write_text(json.dumps({"cases": cases}, indent=1, ensure_ascii=False) + "\n")
    import hashlib
    sums = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}" for f in sorted(OUT.iterdir()) if f.name != "CHECKSUMS.sha256"]
    (OUT / "CHECKSUMS.sha256").write_text("\n".join(sums) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

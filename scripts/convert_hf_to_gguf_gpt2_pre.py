#!/usr/bin/env python3
"""Run llama.cpp's convert_hf_to_gguf.py on a checkpoint whose BPE pre-tokenizer it does not know.

The converter identifies a BPE pre-tokenizer by hashing a test tokenisation and stops on an unknown
hash (our bench model's tokenizer.json is trained locally, so its hash is unknown). This wrapper
answers `gpt-2` for an unknown hash, which is right for GPT-2-style byte-level BPE
(docs/REFERENCE_TOOLS.md), and otherwise leaves the converter as it is.

Usage: scripts/convert_hf_to_gguf_gpt2_pre.py MODEL_DIR --outtype bf16 --outfile OUT.gguf
       (any convert_hf_to_gguf.py arguments; LLAMA_CPP_SRC names the llama.cpp tree, default the
       one scripts/build_llama_cpp.sh unpacks: ~/.cache/premoe/llama.cpp/0.3.36/src/vendor/llama.cpp)
Needs torch, transformers, numpy (scripts/requirements.txt).
"""
import os
import sys

SRC = os.environ.get("LLAMA_CPP_SRC", os.path.expanduser("~/.cache/premoe/llama.cpp/0.3.36/src/vendor/llama.cpp"))
sys.path.insert(0, SRC)
sys.path.insert(0, os.path.join(SRC, "gguf-py"))

import convert_hf_to_gguf  # noqa: E402
import conversion.base as base  # noqa: E402

known = base.TextModel.get_vocab_base_pre


def vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"


base.TextModel.get_vocab_base_pre = vocab_base_pre
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
convert_hf_to_gguf.main()

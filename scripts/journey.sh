#!/usr/bin/env bash
# The constrained-memory journey in one run, on a model larger than the memory it may use:
#   1. quantize the bf16 checkpoint to a 4-bit GGUF           (premoe quantize)
#   2. profile three tasks layer by layer under a memory cgroup at FRACTION of the model
#   3. run one prompt per task under the same limit: retrieval, only the kept experts, generation
#   4. export a 4-bit GGUF specialist                          (premoe prune --format gguf --type)
#   5. run the specialist in llama.cpp                         (llama-simple)
# printing time, bytes read and peak memory at every step. Root (cgroups, drop_caches). Not in CI.
#
# Usage: sudo scripts/journey.sh [MODEL] [FRACTION] [TYPE]
#   MODEL default bench-models/qwen3moe-1b-np (scripts/make_bench_model_numpy.py), FRACTION 0.4,
#   TYPE q4_k_m. llama.cpp comes from scripts/build_llama_cpp.sh (built once into a cache).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-bench-models/qwen3moe-1b-np}
FRACTION=${2:-0.4}
TYPE=${3:-q4_k_m}
BIN=.build/release/premoe
[ -x "$BIN" ] || swift build -c release --product premoe
LLAMA=$(scripts/build_llama_cpp.sh)
WORK=$(mktemp -d /tmp/premoe-journey-XXXX)
BYTES=$(du -bc "$MODEL"/*.safetensors | tail -1 | cut -f1)
LIMIT=$(python3 -c "print(int($BYTES * $FRACTION))")
CG=/sys/fs/cgroup/memory/premoe-journey-$$
trap 'rmdir "$CG" 2>/dev/null || true' EXIT
echo "model $MODEL ($BYTES bytes), memory limit $LIMIT bytes ($FRACTION), work dir $WORK"
grep -m1 "model name" /proc/cpuinfo

step() {  # label, limited(0/1), command...
    local label=$1 limited=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches
    local start end
    start=$(date +%s.%N)
    if [ "$limited" = 1 ]; then
        mkdir -p "$CG"; echo "$LIMIT" > "$CG/memory.limit_in_bytes"
        /usr/bin/time -v sh -c "echo \$\$ > $CG/cgroup.procs; exec \"\$@\"" sh "$@" > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err"; exit 1; }
    else
        /usr/bin/time -v "$@" > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err"; exit 1; }
    fi
    end=$(date +%s.%N)
    local rss read peak="-"
    rss=$(grep "Maximum resident" "$WORK/err" | awk '{print $NF}')
    read=$(grep "File system inputs" "$WORK/err" | awk '{print $NF}')
    if [ "$limited" = 1 ]; then peak="$(( $(cat "$CG/memory.max_usage_in_bytes") / 1048576 )) MiB"; rmdir "$CG"; fi
    printf "%-44s %7.1f s  read %6d MiB  peak RSS %5d MiB  cgroup peak %s\n" "$label" \
        "$(echo "$end - $start" | bc)" $((read / 2048)) $((rss / 1024)) "$peak"
}

step "1. quantize → $TYPE GGUF" 0 "$BIN" quantize "$MODEL" --type "$TYPE" --out "$WORK/model.$TYPE.gguf"
echo "   $(du -h "$WORK/model.$TYPE.gguf" | cut -f1) written"
for task in gsm8k ai2_arc boolq; do
    step "2. profile $task (limit)" 1 "$BIN" profile "$MODEL" --task "$task" --data "data/tasks/$task/train.jsonl" \
        --max-tokens 4000 --retrieval-queries 50 --store "$WORK/store" --no-progress --threads 2
done
for prompt in "Janet has 3 apples and buys 5 more. How many apples does she have?" \
              "Which gas do plants take in from the air? A. oxygen B. carbon dioxide C. helium D. neon"; do
    step "3. run --keep 25% (limit)" 1 "$BIN" run "$MODEL" --store "$WORK/store" --prompt "$prompt" --keep 25% \
        --max-tokens 16 --json --threads 2
    python3 -c "import json;o=json.load(open('$WORK/out'));t=o['timings'];print('   task', o['task'], '| expert bytes', o['expertBytesLoaded'], '| time to first token %.2f s (loading %.2f s, prefill %.2f s)' % (t['timeToFirstTokenSeconds'], t['loadingSeconds'], t['prefillSeconds']))"
done
step "4. prune gsm8k 50% → $TYPE GGUF specialist" 0 "$BIN" prune "$MODEL" --task gsm8k --store "$WORK/store" \
    --keep 50% --format gguf --type "$TYPE" --out "$WORK/specialist"
echo "   $(du -h "$WORK/specialist/model.gguf" | cut -f1) written"
step "5. llama.cpp llama-simple on the specialist" 0 "$LLAMA/llama-simple" -m "$WORK/specialist/model.gguf" -n 16 \
    "Janet has 3 apples and buys 5 more."
echo "   llama.cpp generated: $(tail -c 300 "$WORK/out" | tr '\n' ' ')"

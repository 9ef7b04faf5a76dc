#!/usr/bin/env bash
# Profiling a model larger than the memory it may use: `premoe profile` layer by layer (the
# default) against one forward pass per window (--per-sequence, the earlier way), each run with a
# cold page cache, without a limit and inside a memory cgroup of FRACTION × the model's bytes.
# Prints seconds, peak RSS and the cgroup's peak usage per run. Needs root (cgroup v1 memory
# controller, as on the development machines, or v2 at /sys/fs/cgroup). Not part of CI.
#
# Usage: sudo scripts/bench_profile_memory.sh [MODEL] [DATA] [TOKENS] [FRACTION]
#   MODEL    default bench-models/qwen3moe-1b-np (scripts/make_bench_model_numpy.py)
#   DATA     default data/tasks/gsm8k/train.jsonl
#   TOKENS   default 4000
#   FRACTION default 0.4
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-bench-models/qwen3moe-1b-np}
DATA=${2:-data/tasks/gsm8k/train.jsonl}
TOKENS=${3:-4000}
FRACTION=${4:-0.4}
BIN=.build/release/premoe
[ -x "$BIN" ] || swift build -c release --product premoe
BYTES=$(du -bc "$MODEL"/*.safetensors | tail -1 | cut -f1)
LIMIT=$(python3 -c "print(int($BYTES * $FRACTION))")
STORE=$(mktemp -d)
NAME=premoe-bench-$$
if [ -d /sys/fs/cgroup/memory ]; then CG=/sys/fs/cgroup/memory/$NAME; LIMIT_FILE=memory.limit_in_bytes; PEAK_FILE=memory.max_usage_in_bytes
else CG=/sys/fs/cgroup/$NAME; LIMIT_FILE=memory.max; PEAK_FILE=memory.peak; fi
cleanup() { rmdir "$CG" 2>/dev/null || true; rm -rf "$STORE"; }
trap cleanup EXIT
echo "model $MODEL: $BYTES bytes of weights; limit $LIMIT bytes ($FRACTION); $TOKENS tokens of $DATA"
grep -m1 "model name" /proc/cpuinfo
run() {  # label, limit(0 = none), extra flags
    local label=$1 limit=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches
    local cmd=("$BIN" profile "$MODEL" --task bench --data "$DATA" --max-tokens "$TOKENS" --retrieval-queries 0
               --store "$STORE" --json --no-progress --threads 2 "$@")
    local peak=""
    if [ "$limit" -gt 0 ]; then
        mkdir -p "$CG"; echo "$limit" > "$CG/$LIMIT_FILE"
        /usr/bin/time -v sh -c "echo \$\$ > $CG/cgroup.procs; exec \"\$@\"" sh "${cmd[@]}" > /tmp/$NAME.out 2> /tmp/$NAME.err
        peak=$(cat "$CG/$PEAK_FILE" 2>/dev/null || echo "?")
        rmdir "$CG" 2>/dev/null || true
    else
        /usr/bin/time -v "${cmd[@]}" > /tmp/$NAME.out 2> /tmp/$NAME.err
    fi
    local seconds rss
    seconds=$(python3 -c "import json;print(round(json.load(open('/tmp/$NAME.out'))['seconds'],2))")
    rss=$(grep "Maximum resident" /tmp/$NAME.err | awk '{print $NF}')
    printf "%-28s %8s s  peak RSS %6d MiB  cgroup peak %s\n" "$label" "$seconds" $((rss / 1024)) \
        "$([ -n "$peak" ] && [ "$peak" != "?" ] && echo "$((peak / 1048576)) MiB" || echo "-")"
}
run "per-sequence, no limit" 0 --per-sequence
run "layer-wise, no limit" 0
run "per-sequence, limit" "$LIMIT" --per-sequence
run "layer-wise, limit" "$LIMIT"

#!/usr/bin/env bash
# `premoe run --keep 25%` from a cold page cache inside a memory cgroup at FRACTION of the model,
# against the goal time to first token ≤ 1.2 × (expert bytes read / this disk's cold sequential
# rate) + prefill. Each repetition first measures the disk with dd (cold, 600 MiB of a weight
# file), then runs every binary given, interleaved, so an A/B comparison sees the same disk load.
# Prints loading (split into reading the experts and building the blocks), prefill, time to first
# token, the goal, peak RSS and the cgroup's peak. Needs root and a pattern store for the model
# (`premoe profile … --store STORE`). Not part of CI.
#
# Usage: sudo scripts/bench_run_ttft.sh MODEL STORE [REPS] [FRACTION] [BINARY...]
#   REPS default 5, FRACTION default 0.4, BINARY default .build/release/premoe
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; STORE=$2; REPS=${3:-5}; FRACTION=${4:-0.4}; shift $(( $# < 4 ? $# : 4 ))
BINARIES=("$@"); [ ${#BINARIES[@]} -gt 0 ] || BINARIES=(.build/release/premoe)
BYTES=$(du -bc "$MODEL"/*.safetensors | tail -1 | cut -f1)
LIMIT=$(python3 -c "print(int($BYTES * $FRACTION))")
SAMPLE=$(ls -S "$MODEL"/*.safetensors | head -1)
NAME=premoe-ttft-$$
if [ -d /sys/fs/cgroup/memory ]; then CG=/sys/fs/cgroup/memory/$NAME; LIMIT_FILE=memory.limit_in_bytes; PEAK_FILE=memory.max_usage_in_bytes
else CG=/sys/fs/cgroup/$NAME; LIMIT_FILE=memory.max; PEAK_FILE=memory.peak; fi
OUT=$(mktemp -d)
trap 'rmdir "$CG" 2>/dev/null || true; rm -rf "$OUT"' EXIT
PROMPT="Janet has 3 apples and buys 5 more. How many apples does she have?"
echo "model $MODEL: $BYTES bytes; limit $LIMIT bytes ($FRACTION)"
for rep in $(seq 1 "$REPS"); do
    sync; echo 3 > /proc/sys/vm/drop_caches
    rate=$(dd if="$SAMPLE" of=/dev/null bs=1M count=600 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')
    echo "rep $rep: dd cold sequential $rate; load $(cut -d' ' -f1-3 /proc/loadavg)"
    for bin in "${BINARIES[@]}"; do
        sync; echo 3 > /proc/sys/vm/drop_caches
        mkdir -p "$CG"; echo "$LIMIT" > "$CG/$LIMIT_FILE"
        /usr/bin/time -v sh -c "echo \$\$ > $CG/cgroup.procs; exec \"\$@\"" sh "$bin" run "$MODEL" --store "$STORE" \
            --prompt "$PROMPT" --keep 25% --max-tokens 1 --json --threads 2 > "$OUT/run.json" 2> "$OUT/err" \
            || { tail -5 "$OUT/err"; exit 1; }
        peak=$(cat "$CG/$PEAK_FILE"); rmdir "$CG"
        rss=$(grep "Maximum resident" "$OUT/err" | awk '{print $NF}')
        python3 - "$bin" "$rate" "$peak" "$rss" "$OUT/run.json" <<'PY'
import json, sys
bin, rate, peak, rss, path = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
scale = {"kB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9}.get(rate[1], 1e6)
o = json.load(open(path)); t = o["timings"]; b = o["expertBytesLoaded"] or 0
goal = 1.2 * b / (float(rate[0]) * scale) + t["prefillSeconds"]
split = ""
if t.get("loadingReadSeconds") is not None:
    split = " (read %.3f + bind %.3f)" % (t["loadingReadSeconds"], t["loadingBindSeconds"])
print("  %s: experts %d B, loading %.3f s%s, prefill %.3f s, first token %.3f s, goal %.3f s %s, peak RSS %d MiB, cgroup peak %d MiB"
      % (bin, b, t["loadingSeconds"], split, t["prefillSeconds"], t["timeToFirstTokenSeconds"], goal,
         "met" if t["timeToFirstTokenSeconds"] <= goal else "MISSED", rss // 1024, peak >> 20))
PY
    done
done

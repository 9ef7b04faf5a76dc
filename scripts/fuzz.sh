#!/usr/bin/env bash
# Builds the libFuzzer targets of Tests/Fuzz (the library modules compiled with
# -sanitize=fuzzer,address) and runs each for a fixed number of inputs, seeded from
# Tests/Fuzz/<target>/corpus (regenerate with scripts/make_fuzz_seeds.py). Not part of CI or
# `swift test`: a full run is CPU-heavy, so it runs at nice 19, one target at a time.
#
#   scripts/fuzz.sh                  # every target, 10^6 runs each
#   scripts/fuzz.sh --smoke          # every target, 1,000 runs each (a minute or two after the build)
#   scripts/fuzz.sh --runs 50000 gguf config
#   scripts/fuzz.sh --max-time 600 gguf   # stop after 10 minutes if the runs are not done
#   scripts/fuzz.sh --build-only
#
# New inputs go to .build/fuzz/corpus/<target> (the committed seeds are never written); a crash,
# leak, timeout (10 s) or allocation over 2 GB stops that target and leaves the input in
# .build/fuzz/artifacts/. Exit status: 0 when every target finished its runs cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=1000000
MAX_TIME=0
BUILD_ONLY=0
TARGETS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) RUNS=1000 ;;
        --runs) RUNS="$2"; shift ;;
        --max-time) MAX_TIME="$2"; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) TARGETS+=("$1") ;;
    esac
    shift
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(safetensors gguf config tokenizer pattern jsonl)

BUILD=.build/fuzz
MODULES=(Kernels Formats Tokenization Models Runtime PreMoe Evaluation)
FLAGS=(-O -sanitize=fuzzer,address -swift-version 5 -parse-as-library -target-cpu "${PREMOE_TARGET_CPU:-native}")
mkdir -p "$BUILD/corpus" "$BUILD/artifacts"

# Modules in dependency order; a module is rebuilt when its sources or an earlier module changed.
rebuilt=0
for m in "${MODULES[@]}"; do
    object="$BUILD/$m.o"
    if [[ $rebuilt == 1 || ! -f "$object" || -n "$(find "Sources/$m" -name '*.swift' -newer "$object" | head -1)" ]]; then
        echo "building $m (fuzzer + address sanitizer)"
        nice -n 19 swiftc "${FLAGS[@]}" -module-name "$m" -wmo -c -I "$BUILD" \
            -emit-module -emit-module-path "$BUILD/$m.swiftmodule" -o "$object" \
            $(find "Sources/$m" -name '*.swift' | sort) 2> >(grep -v 'ld.gold: warning' >&2)
        rebuilt=1
    fi
done
objects=()
for m in "${MODULES[@]}"; do objects+=("$BUILD/$m.o"); done

for t in "${TARGETS[@]}"; do
    binary="$BUILD/fuzz-$t"
    stale=0
    for f in "${objects[@]}" "Tests/Fuzz/$t/fuzz.swift" Tests/Fuzz/Common.swift; do [[ "$f" -nt "$binary" ]] && stale=1; done
    if [[ $stale == 1 || ! -x "$binary" ]]; then
        echo "linking fuzz-$t"
        nice -n 19 swiftc "${FLAGS[@]}" -I "$BUILD" -module-name "Fuzz_$t" Tests/Fuzz/Common.swift "Tests/Fuzz/$t/fuzz.swift" \
            "${objects[@]}" -o "$binary" 2>&1 | grep -v 'ld.gold: warning' >&2 || true
        [[ -x "$binary" ]] || { echo "fuzz-$t did not link" >&2; exit 1; }
    fi
done
[[ $BUILD_ONLY == 1 ]] && exit 0

status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$BUILD/corpus/$t"
    log="$BUILD/fuzz-$t.log"
    start=$(date +%s)
    if nice -n 19 "$BUILD/fuzz-$t" -runs="$RUNS" -max_total_time="$MAX_TIME" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -artifact_prefix="$BUILD/artifacts/$t-" -print_final_stats=1 \
        "$BUILD/corpus/$t" "Tests/Fuzz/$t/corpus" > "$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and $BUILD/artifacts/)"
        status=1
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
    echo "$t: ${done_line:-no 'Done' line} [$(( $(date +%s) - start )) s] $result"
done
exit $status

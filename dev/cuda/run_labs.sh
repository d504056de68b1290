#!/usr/bin/env bash
# Builds (when missing, or always with BUILD=1) and runs the CUDA labs; full logs go to $OUT
# (default /tmp/labs), a summary to stdout.
# Usage: dev/cuda/run_labs.sh [lab ...]     e.g.  BUILD=1 dev/cuda/run_labs.sh layernorm classifier
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/labs}
BIN=build/labs
mkdir -p "$OUT" "$BIN"
LABS=${*:-"layernorm classifier adamw matmul encoder gelu norm"}
NVFLAGS="-O3 --use_fast_math -lineinfo --expt-relaxed-constexpr -std=c++17 -arch=sm_90 -Isrc -Icuda"
build() {
    [ -f "$BIN/status.o" ] || gcc -O2 -c src/status.c -Isrc -o "$BIN/status.o" || return 1
    nvcc $NVFLAGS -Xcompiler -fopenmp "dev/cuda/$1.cu" "$BIN/status.o" -lcublasLt -lgomp -o "$BIN/$1"
}
rc=0
for lab in $LABS; do
    if [ "${BUILD:-0}" = 1 ] || [ ! -x "$BIN/$lab" ]; then
        echo "building $lab"
        build "$lab" || { echo "BUILD FAILED $lab"; rc=1; continue; }
    fi
    "$BIN/$lab" ${LAB_ARGS:-} > "$OUT/$lab.log" 2>&1
    st=$?
    [ $st = 0 ] || rc=1
    echo "== $lab (exit $st)"
    grep -E "FAIL|SUMMARY|BENCH|rror" "$OUT/$lab.log" | head -40
done
exit $rc

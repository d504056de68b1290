#!/usr/bin/env bash
# Builds (when missing, or always with BUILD=1) and runs the CUDA labs; binaries go to $BIN
# (default build/labs), full logs to $OUT (default /tmp/labs), a summary to stdout.
# Usage: dev/cuda/run_labs.sh [lab ...]     e.g.  BUILD=1 dev/cuda/run_labs.sh layernorm classifier
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/labs}
BIN=${BIN:-build/labs}
mkdir -p "$OUT" "$BIN"
LABS=${*:-"layernorm classifier adamw matmul encoder gelu norm sample decode_persistent fp8"}
NVFLAGS="-O3 --use_fast_math -lineinfo --expt-relaxed-constexpr -std=c++17 -arch=sm_90 -Isrc -Icuda"
# The C the labs link: llmc_device_open and the tuning defaults it reads (model.c, which needs
# model_file.c and what that reads through: file_io, the Hugging Face reader and its JSON;
# config.c and weights.c; quant.c and quant_file.c for int8 weights), host bf16 conversion, and
# the host sampler (the sample lab's reference; -ffp-contract=off as CMakeLists.txt builds it).
CORE="status model config weights dtype model_file file_io hf_model hf_config json quant quant_file sampler"
core_built=0
build_core() {
    [ $core_built = 1 ] && return 0
    for f in $CORE; do
        if [ "${BUILD:-0}" = 1 ] || [ ! -f "$BIN/$f.o" ]; then
            gcc -O2 -fopenmp -ffp-contract=off -c "src/$f.c" -Isrc -o "$BIN/$f.o" || return 1
        fi
    done
    core_built=1
}
build() {
    if [ "$1" = chain ]; then nvcc $NVFLAGS "dev/cuda/$1.cu" -o "$BIN/$1"; return; fi # standalone: no engine C
    build_core || return 1
    nvcc $NVFLAGS $([ "$1" = sample ] && echo -ftz=false) -Xcompiler -fopenmp "dev/cuda/$1.cu" $(for f in $CORE; do echo "$BIN/$f.o"; done) \
        -lcublasLt -lgomp -o "$BIN/$1"
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

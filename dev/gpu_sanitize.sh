#!/usr/bin/env bash
# compute-sanitizer's four tools on llmc's own kernels: a small training run with validation,
# sampling and checkpoints through ./train_gpt2cu, then generation from its checkpoint (sampled,
# batch 2, CUDA graphs on). Needs a built ./train_gpt2cu and the llmc package (PYTHONPATH ok).
# Logs in $OUT/sanitize_<tool>_<what>.log; the summary line of each at the end.
# "lab" runs dev/cuda/initcheck_cublaslt.cu under initcheck: does initcheck see cuBLASLt's writes?
# Usage: bash dev/gpu_sanitize.sh [memcheck initcheck racecheck synccheck lab]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
tools=("$@"); [ ${#tools[@]} -eq 0 ] && tools=(memcheck initcheck racecheck synccheck)
work=$(mktemp -d)
python3 - "$work" <<'PY'
import sys, numpy as np
d = sys.argv[1]
for name, n in (("s_train_000000.bin", 20000), ("s_val_000000.bin", 4000)):
    h = np.zeros(256, np.int32); h[:3] = [20240520, 1, n]
    with open(f"{d}/{name}", "wb") as f:
        f.write(h.tobytes()); f.write(np.random.default_rng(0).integers(0, 512, n).astype(np.uint16).tobytes())
PY
train=(./train_gpt2cu -i "$work/s_train_*.bin" -j "$work/s_val_*.bin" -e "L=2,H=4,C=256,T=64,V=512" -b 4 -t 64
       -x 4 -v 2 -m 2 -s 2 -g 8 -n 2 -l 1e-3)
summary=()
for tool in "${tools[@]}"; do
    if [ "$tool" = lab ]; then
        nvcc -O2 -std=c++17 -arch=sm_90 dev/cuda/initcheck_cublaslt.cu -lcublasLt -o "$work/initcheck_lab" || exit 1
        for writer in lt lt-marked kernel; do
            log="$OUT/sanitize_initcheck_lab_$writer.log"
            compute-sanitizer --tool initcheck --nvtx true --error-exitcode 9 --print-limit 5 "$work/initcheck_lab" "$writer" > "$log" 2>&1
            summary+=("initcheck lab, D written by $writer: rc $? | $(grep -E 'wrote D' "$log") | $(grep -E 'ERROR SUMMARY' "$log" | tail -1)")
        done
        continue
    fi
    rm -rf "$work/ck"
    log="$OUT/sanitize_${tool}_train.log"
    compute-sanitizer --tool "$tool" --nvtx true --error-exitcode 9 --print-limit 20 "${train[@]}" -o "$work/ck" > "$log" 2>&1
    summary+=("$tool train: rc $? | $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)")
    log="$OUT/sanitize_${tool}_generate.log"
    compute-sanitizer --tool "$tool" --nvtx true --error-exitcode 9 --print-limit 20 python3 -m llmc.generate \
        -m "$work/ck/model_00000004.bin" --tokens "1 2 3" -n 12 --batch 2 --top-k 5 --device cuda --ids > "$log" 2>&1
    summary+=("$tool generate: rc $? | $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)")
done
printf '%s\n' "${summary[@]}" | tee "$OUT/sanitize_summary.txt"
rm -rf "$work"

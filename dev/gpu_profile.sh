#!/usr/bin/env bash
# Where the time goes, and the recipe, on the GPU machine (one call each, logs in $OUT):
#   bash dev/gpu_profile.sh timeline   # CUPTI timeline of d12 training: GPU busy vs idle per step (TRAIN_ARGS: more flags)
#   bash dev/gpu_profile.sh bench      # dev/bench_train.py: llmc vs compiled PyTorch, d12 B=64
#   bash dev/gpu_profile.sh recipe     # scripts/gpt2_124M.sh SMALL=1 on Shakespeare: curves + tok/s
# Each step builds first when ./train_gpt2cu is missing (bash dev/gpu_check.sh tests builds too).
# Data: random tokens for timeline and bench; recipe needs data/shakespeare (carry it, or the
# shared Shakespeare text through LLMC_SHAKESPEARE_TXT).
source "$(dirname "$0")/gpu_setup.sh"
random_tokens() { # path, count
  python3 - "$1" "$2" <<'PY'
import sys, numpy as np
h = np.zeros(256, np.int32); h[:3] = [20240520, 1, int(sys.argv[2])]
open(sys.argv[1], "wb").write(h.tobytes() + np.random.default_rng(0).integers(0, 50257, int(sys.argv[2])).astype(np.uint16).tobytes())
PY
}

for what in "${@:-timeline}"; do
  case "$what" in
  timeline)
    build_timeline_lib || exit 1
    random_tokens /tmp/tl_train_000000.bin 3000000
    CUDA_INJECTION64_PATH=/tmp/libgpu_timeline.so LLMC_TIMELINE="$OUT/timeline.csv" \
      ./train_gpt2cu -e d12 -b 64 -t 1024 -x 12 -v 0 -s 0 -l 6e-4 -i "/tmp/tl_train_*.bin" ${TRAIN_ARGS:-} > "$OUT/timeline_train.log" 2>&1
    python3 dev/trace/timeline.py "$OUT/timeline.csv" --skip 3 --gaps 15 ${TIMELINE_ARGS:-} | tee "$OUT/timeline.txt"
    gzip -f "$OUT/timeline.csv"
    ;;
  bench)
    timeout 560 python3 dev/bench_train.py --sizes "${SIZES:-d12:64}" --steps "${STEPS:-30}" 2>&1 | tee "$OUT/bench_train.txt"
    ;;
  recipe)
    SMALL=1 TRAINER=./train_gpt2cu EVAL="${EVAL:-0}" STEPS="${STEPS:-400}" OUT="$OUT/recipe" \
      timeout 560 bash scripts/gpt2_124M.sh > "$OUT/recipe.log" 2>&1
    echo "recipe rc $?"; grep -E "^step|val loss|HellaSwag" "$OUT/recipe.log" | tail -5
    ;;
  *) echo "unknown step $what (timeline, bench, recipe)"; exit 2 ;;
  esac
done

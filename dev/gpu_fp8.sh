#!/usr/bin/env bash
# fp8 training on the GPU machine (issue 11): tests, speed against bf16, and the loss curves.
# Usage: bash dev/gpu_fp8.sh [tests|bench|curve|all]...   In $OUT (or ./gpu_out): summary.txt,
# fp8_curves.png and fp8_logs.tgz (every log: few files come back from the device machine).
#   tests  test_fp8.py, then the matmul op tests and the GPU training tests (nothing else broke)
#   bench  d12 B=64 T=1024 (BENCH_SIZES: others), --fp8 in FP8_MODES (default 0 1 2) alternating,
#          BENCH_ROUNDS rounds (2)
#          (dev/bench_train.py --no-torch)
#   curve  d12 on Shakespeare (data/shakespeare: carry it), 1000 steps per mode, val loss every 50,
#          the curves drawn by llmc.plot into fp8_curves.png
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh"
LOGS="$OUT/logs"; mkdir -p "$LOGS"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1; } > "$LOGS/device.txt" 2>&1
modes="${FP8_MODES:-0 1 2}"

for what in "${@:-all}"; do
  if [[ "$what" == tests || "$what" == all ]]; then
    echo "== tests"
    timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_fp8.py 2>&1 | tee "$LOGS/pytest_fp8.log" | tail -3
    timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_train_gpu.py -m cuda -k "matmul or train or resume or seed" 2>&1 \
      | tee "$LOGS/pytest_regress.log" | tail -2
  fi
  if [[ "$what" == bench || "$what" == all ]]; then
    echo "== bench: ${BENCH_SIZES:-d12:64}, T=1024, --fp8 $modes"
    for round in $(seq ${BENCH_ROUNDS:-2}); do
      for mode in $modes; do
        python3 dev/bench_train.py --no-torch --rounds 1 --sizes ${BENCH_SIZES:-d12:64} --steps ${BENCH_STEPS:-40} \
          --llmc-args "--fp8 $mode ${FP8_ARGS:-}" 2>&1 \
          | tee "$LOGS/bench_fp8_${mode}_r$round.log" | grep -E "llmc|ms/step" | sed "s/^/fp8=$mode r$round: /"
      done
    done
  fi
  if [[ "$what" == curve || "$what" == all ]]; then
    echo "== curve: d12 Shakespeare, ${CURVE_STEPS:-1000} steps, --fp8 $modes"
    logs=() labels=()
    for mode in $modes; do
      ./train_gpt2cu -e d12 -b 16 -t 512 -x ${CURVE_STEPS:-1000} -l 6e-4 -u 100 -q 0.1 -v 50 -m 0 -s 0 --fp8 $mode \
        -i "data/shakespeare/shakespeare_train_*.bin" -j "data/shakespeare/shakespeare_val_*.bin" \
        -o "$LOGS/curve_fp8_$mode" > "$LOGS/curve_fp8_$mode.txt" 2>&1
      echo "fp8=$mode rc=$? $(grep -E 'val loss' "$LOGS/curve_fp8_$mode.txt" | tail -1)"
      rm -f "$LOGS"/curve_fp8_$mode/*.bin
      logs+=("$LOGS/curve_fp8_$mode/main.log"); labels+=("$([[ $mode == 0 ]] && echo bf16 || echo fp8-$mode)")
    done
    python3 -m llmc.plot "${logs[@]}" --labels "$(IFS=,; echo "${labels[*]}")" -o "$OUT/fp8_curves.png" 2>&1 | tail -1
  fi
done 2>&1 | tee "$OUT/summary.txt"
tar czf "$OUT/fp8_logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"

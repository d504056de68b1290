#!/usr/bin/env bash
# fp8 training on the GPU machine (issue 11): tests, speed against bf16, and the loss curves.
# Usage: bash dev/gpu_fp8.sh [tests|bench|curve|all]...   Logs go to $OUT (or ./gpu_out).
#   tests  test_fp8.py, then the matmul op tests and the GPU training tests (nothing else broke)
#   bench  d12 B=64 T=1024, bf16 and fp8 alternating (dev/bench_train.py --no-torch)
#   curve  d12 on Shakespeare (data/shakespeare: carry it), 1000 steps each, val loss every 50,
#          then both curves drawn by llmc.plot into $OUT/fp8_curves.png
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1; } > "$OUT/device.txt" 2>&1

for what in "${@:-all}"; do
  if [[ "$what" == tests || "$what" == all ]]; then
    echo "== tests"
    timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_fp8.py 2>&1 | tee "$OUT/pytest_fp8.log" | tail -15
    timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_train_gpu.py -m cuda -k "matmul or train or resume or seed" 2>&1 \
      | tee "$OUT/pytest_regress.log" | tail -5
  fi
  if [[ "$what" == bench || "$what" == all ]]; then
    echo "== bench: d12 B=64 T=1024, bf16 / fp8"
    for round in 1 2; do
      for mode in 0 1; do
        python3 dev/bench_train.py --no-torch --rounds 1 --steps ${BENCH_STEPS:-40} --llmc-args "--fp8 $mode ${FP8_ARGS:-}" 2>&1 \
          | tee "$OUT/bench_fp8_${mode}_r$round.log" | grep -E "llmc|ms/step" | sed "s/^/fp8=$mode r$round: /"
      done
    done
  fi
  if [[ "$what" == curve || "$what" == all ]]; then
    echo "== curve: d12 Shakespeare, 1000 steps, bf16 and fp8"
    for mode in 0 1; do
      ./train_gpt2cu -e d12 -b 16 -t 512 -x ${CURVE_STEPS:-1000} -l 6e-4 -u 100 -q 0.1 -v 50 -m 0 -s 0 --fp8 $mode \
        -i "data/shakespeare/shakespeare_train_*.bin" -j "data/shakespeare/shakespeare_val_*.bin" \
        -o "$OUT/curve_fp8_$mode" > "$OUT/curve_fp8_$mode.txt" 2>&1
      echo "fp8=$mode rc=$? $(grep -E 'val loss' "$OUT/curve_fp8_$mode.txt" | tail -1)"
      rm -f "$OUT"/curve_fp8_$mode/*.bin
    done
    python3 -m llmc.plot "$OUT/curve_fp8_0/main.log" "$OUT/curve_fp8_1/main.log" --labels bf16,fp8 \
      -o "$OUT/fp8_curves.png" 2>&1 | tail -2
  fi
done

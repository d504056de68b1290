#!/usr/bin/env bash
# One batch of GPU work for the device machine: build for sm_90, run every test
# (GPU ones included), then the training benchmark. Logs go to $OUT (or ./gpu_out).
# Usage: bash dev/gpu_check.sh [tests|bench|gen|sanitize|all]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
what="${1:-all}"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1; } > "$OUT/device.txt" 2>&1
echo "== build" && make CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
python3 -m pip install --no-build-isolation -q . > "$OUT/pip.log" 2>&1 || { tail -40 "$OUT/pip.log"; exit 1; }

if [[ "$what" == tests || "$what" == all ]]; then
  echo "== tests"
  timeout 420 python3 -m pytest -q -x -p no:cacheprovider tests -m cuda ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest_cuda.log" | tail -30
fi

if [[ "$what" == bench || "$what" == all ]]; then
  echo "== bench: d12 B=64 T=1024"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/bench_mem.log" 2>&1 &
  smi=$!
  ./train_gpt2cu -e d12 -b 64 -t 1024 -x ${BENCH_STEPS:-30} -v 0 -s 0 -l 6e-4 \
    -i "data/shakespeare/shakespeare_train_*.bin" 2>&1 | tee "$OUT/bench_train.log" | tail -12
  kill $smi 2>/dev/null
  echo "peak GPU memory used: $(sort -n "$OUT/bench_mem.log" | tail -1) MiB" | tee -a "$OUT/bench_train.log"
fi

if [[ "$what" == gen || "$what" == all ]]; then
  echo "== bench: generation d12"
  timeout 240 python3 dev/bench_generate.py --device cuda --batch 1,32 --torch 2>&1 | tee "$OUT/bench_generate.log" | tail -12
fi

if [[ "$what" == sanitize || "$what" == all ]]; then
  echo "== compute-sanitizer: memcheck, initcheck, racecheck, synccheck on training and generation"
  timeout 1800 bash dev/gpu_sanitize.sh ${SANITIZE_TOOLS:-} 2>&1 | tail -10
fi

#!/usr/bin/env bash
# The compression issue's GPU work, logs in $OUT:
#   bash dev/gpu_compress.sh tests quant prune distill
# tests: the CUDA cases of test_quant/test_prune/test_distill; quant: dev/gpu_quant.sh (trains the
# d12 the others use, out/quant_d12); prune, distill: dev/bench_prune.py, dev/bench_distill.py.
# Builds first when ./train_gpt2cu is missing. Needs data/shakespeare (carry it).
source "$(dirname "$0")/gpu_setup.sh"
model=out/quant_d12/model_00001000.bin
for what in "$@"; do
  echo "== $what"
  case "$what" in
  tests) timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_quant.py tests/test_prune.py \
           tests/test_distill.py 2>&1 | tee "$OUT/pytest_compress.log" | tail -15 ;;
  quant) bash dev/gpu_quant.sh ;;
  prune) timeout 200 python3 dev/bench_prune.py --model "$model" --device cuda --steps 200 -b 16 -t 512 \
           --val-batches 10 --out "$OUT/bench_prune" 2>&1 | tail -12 ;;
  distill) timeout 240 python3 dev/bench_distill.py --teacher "$model" --device cuda --steps 600 -b 16 -t 512 \
             --val-every 100 --val-batches 10 --out "$OUT/bench_distill" 2>&1 | tail -12 ;;
  *) echo "unknown step $what"; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# The compression benchmarks on the GPU machine, logs in $OUT (docs/PERF.md records them):
# a d12 trained 1,000 steps on Shakespeare (kept in out/quant_d12), then dev/bench_quant.py on
# the GPU and on the host CPU. Needs data/shakespeare (carry it) and a build (dev/gpu_check.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
model=out/quant_d12/model_00001000.bin
if [[ ! -f "$model" ]]; then
  ./train_gpt2cu -e d12 -b 16 -t 512 -x 1000 -u 100 -l 6e-4 -k cosine -c 0.1 -v 250 -m 16 -s 0 -n 1000 \
    -i "data/shakespeare/shakespeare_train_*.bin" -j "data/shakespeare/shakespeare_val_*.bin" -o out/quant_d12 \
    > "$OUT/quant_train.log" 2>&1 || { tail -20 "$OUT/quant_train.log"; exit 1; }
  grep -E "val loss" "$OUT/quant_train.log" | tail -3
fi
for dev in ${DEVICES:-cuda cpu}; do
  batches=16; [[ "$dev" == cpu ]] && batches=4
  timeout "${BENCH_TIMEOUT:-200}" python3 dev/bench_quant.py --model "$model" --device "$dev" \
    --val "data/shakespeare/shakespeare_val_*.bin" --val-batches $batches ${QUANT_ARGS:-} 2>&1 | tee "$OUT/bench_quant_$dev.md"
done

#!/usr/bin/env bash
# Data parallelism on the GPU machine, logs in $OUT:
#   bash dev/gpu_dist.sh tests one            # one GPU: the CUDA tests, NCCL world of one vs the plain run (d12)
#   bash dev/gpu_dist.sh agree resume scale   # several GPUs: 1/2/4 GPUs agree, 4 -> 2 -> 1 resume, tok/s
# Ranks are started as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
# meet over tcp; NCCL_NVLS_ENABLE=0 (gpu_setup.sh). Needs data/shakespeare (carry it). STEPS, D48_B tune.
source "$(dirname "$0")/gpu_setup.sh"
GPUS=$(nvidia-smi -L | wc -l)
STEPS=${STEPS:-30}
DATA=(-i "data/shakespeare/shakespeare_train_*.bin" -j "data/shakespeare/shakespeare_val_*.bin")

# launch N LOG args...: N ranks of ./train_gpt2cu on this node; rank 0's output in LOG, the others' in LOG.rankR
launch() {
  local n=$1 log=$2 port=$((29600 + RANDOM % 1000)) pids=() rc=0
  shift 2
  for ((r = 0; r < n; r++)); do
    local to="$log"; ((r > 0)) && to="$log.rank$r"
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      timeout 500 ./train_gpt2cu "$@" > "$to" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

# the median tok/s of the steps after the first five, from a trainer log
toks() { grep -o '[0-9]* tok/s' "$1" | awk 'NR > 5 {print $1}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
losses() { grep -o 'loss [0-9.]*' "$1" | head -"${2:-100}" | awk '{print $2}' | tr '\n' ' '; }

for what in "$@"; do
  echo "== $what ($GPUS GPUs)"
  case "$what" in
  tests) timeout 400 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_distributed_gpu.py 2>&1 \
           | tee "$OUT/pytest_dist.log" | tail -8 ;;
  one) # one GPU: the engine's cost and its losses against the plain run
    base=("${DATA[@]}" -e d12 -b 64 -t 1024 -x "$STEPS" -v 0 -s 0 -l 6e-4 -u 10)
    ./train_gpt2cu "${base[@]}" > "$OUT/one_plain.log" 2>&1
    for z in 0 1; do
      ./train_gpt2cu "${base[@]}" --engine-at-one 1 -pi tcp -z "$z" > "$OUT/one_nccl_z$z.log" 2>&1 || tail -5 "$OUT/one_nccl_z$z.log"
    done
    for f in one_plain one_nccl_z0 one_nccl_z1; do echo "$f: $(toks "$OUT/$f.log") tok/s; losses $(losses "$OUT/$f.log" 5)"; done ;;
  agree) # d12, 20 steps at one total batch on 1, 2, 4 GPUs, ZeRO 0 and 1: losses within bf16 noise
    base=("${DATA[@]}" -e d12 -b 16 -t 1024 -d 65536 -x 20 -v 10 -m 4 -s 0 -l 6e-4 -u 5)
    for n in 1 2 4; do
      ((n > GPUS)) && continue
      for z in 0 1; do
        launch "$n" "$OUT/agree_n${n}_z$z.log" "${base[@]}" -z "$z" || tail -5 "$OUT/agree_n${n}_z$z.log"
        echo "n=$n z=$z: $(losses "$OUT/agree_n${n}_z$z.log" 20)"
      done
    done ;;
  resume) # written on 4 GPUs (or all there are), resumed on fewer, against the run that went on
    n=$((GPUS < 4 ? GPUS : 4)); dir=out/dist_resume; rm -rf "$dir"*
    base=("${DATA[@]}" -e d12 -b 16 -t 1024 -d 65536 -x 10 -v 0 -s 0 -l 6e-4 -u 2 -n 5 -z 1)
    launch "$n" "$OUT/resume_full.log" "${base[@]}" -o "$dir"
    for m in 2 1; do
      mkdir -p "$dir.$m" && cp "$dir"/*_00000005* "$dir.$m"/
      launch "$m" "$OUT/resume_on$m.log" "${base[@]}" -o "$dir.$m" -y 1 || tail -5 "$OUT/resume_on$m.log"
    done
    echo "full: $(losses "$OUT/resume_full.log" 10)"
    for m in 2 1; do echo "on $m: $(losses "$OUT/resume_on$m.log" 10)"; done ;;
  scale) # tok/s on 1, 2, 4 GPUs, d12 (B=64) and d48 (B=D48_B), -z 1, overlap on and off
    for model in d12 d48; do
      b=64; [[ $model == d48 ]] && b=${D48_B:-8}
      for n in 1 2 4; do
        ((n > GPUS)) && continue
        for ov in 1 0; do
          log="$OUT/scale_${model}_n${n}_ov$ov.log"
          launch "$n" "$log" "${DATA[@]}" -e "$model" -b "$b" -t 1024 -x "$STEPS" -v 0 -s 0 -z 1 -l 6e-4 -u 5 --overlap "$ov" \
            || tail -5 "$log"
          echo "$model n=$n overlap=$ov: $(toks "$log") tok/s"
        done
      done
    done ;;
  *) echo "unknown step $what"; exit 2 ;;
  esac
done

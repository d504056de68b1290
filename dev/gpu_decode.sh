#!/usr/bin/env bash
# Issue 12 on the GPU machine (one call each, logs in $OUT):
#   bash dev/gpu_decode.sh tests    # the device sampler, the one-kernel decode, generation tests
#   bash dev/gpu_decode.sh labs     # dev/cuda labs sample and decode_persistent: test, and the barrier trace
#   bash dev/gpu_decode.sh quick    # bench_generate.py d12, batch 1/8/32/64, greedy + sampled, PyTorch
#   bash dev/gpu_decode.sh d48      # bench_generate.py d48, batch 1 and 8, greedy, PyTorch
#   bash dev/gpu_decode.sh full     # the issue's table: d12 and d48, every variant, JSON in $OUT
#   bash dev/gpu_decode.sh labbench # the labs' benchmarks (long)
#   bash dev/gpu_decode.sh timeline # CUPTI timelines of d12 decode steps: each kernel and the gaps
#   bash dev/gpu_decode.sh int8     # d12 decode tok/s, bf16 against int8 (tensor-core and CUDA-core kernels)
#   bash dev/gpu_decode.sh ahead    # run_ahead: its tests, every generation test with it on, tok/s step vs ahead
#   bash dev/gpu_decode.sh chain    # lab dev/cuda/chain.cu: a kernel boundary (plain, PDL) against a grid barrier
#   bash dev/gpu_decode.sh fuse     # layernorm inside the next matmul: its tests, tok/s fused vs LLMC_FUSE_LN=0
# Builds first when ./train_gpt2cu is missing.
source "$(dirname "$0")/gpu_setup.sh"
mkdir -p "$OUT/labs"
for what in "${@:-tests}"; do
  case "$what" in
  tests)
    python3 -m pytest -q tests/test_sample_gpu.py tests/test_decode_persistent.py tests/test_sampler.py \
      tests/test_generate.py 2>&1 | tail -40 | tee "$OUT/tests_decode.txt"
    ;;
  ahead)
    python3 -m pytest -q tests/test_generate.py tests/test_ops.py tests/test_sample_gpu.py \
      -k "run_ahead or feed_tokens or session_device_sampling" 2>&1 | tail -5 \
      | tee "$OUT/tests_ahead.txt"
    LLMC_RUN_AHEAD=1 python3 -m pytest -q tests/test_generate.py tests/test_quant.py tests/test_decode_persistent.py \
      2>&1 | tail -5 | tee -a "$OUT/tests_ahead.txt"
    python3 dev/bench_generate.py --device cuda --model d12 --batch 1,8,32,64 --modes greedy,sample -n 128 \
      --llmc-variants step,ahead --torch --json "$OUT/bench_ahead.json" 2>&1 | tee "$OUT/bench_ahead.txt"
    ;;
  fuse)
    python3 -m pytest -q tests/test_ops.py tests/test_generate.py -k "layernorm or skinny or fused" 2>&1 | tail -4 \
      | tee "$OUT/tests_fuse.txt"
    for fuse in 1 0 1 0; do
      LLMC_FUSE_LN=$fuse python3 dev/bench_generate.py --device cuda --model d12 --batch 1,2,8 --modes greedy,sample \
        -n 128 2>&1 | grep -E "^d12 " | sed "s/^/fuse=$fuse /"
    done | tee "$OUT/bench_fuse.txt"
    for fuse in 1 0; do
      LLMC_FUSE_LN=$fuse python3 dev/bench_generate.py --device cuda --model d48 --batch 1 --modes greedy -n 64 \
        2>&1 | grep -E "^d48 " | sed "s/^/fuse=$fuse /"
    done | tee -a "$OUT/bench_fuse.txt"
    ;;
  chain)
    BIN=build/labs OUT="$OUT/labs" BUILD=1 bash dev/cuda/run_labs.sh chain 2>&1 | tee "$OUT/chain.txt"
    cat "$OUT/labs/chain.log" | tee -a "$OUT/chain.txt"
    ;;
  labs)
    BIN=build/labs OUT="$OUT/labs" BUILD=1 LAB_ARGS=test bash dev/cuda/run_labs.sh sample decode_persistent 2>&1 \
      | tee "$OUT/labs.txt"
    build/labs/decode_persistent trace 2>&1 | grep -E "TRACE|==" | tee "$OUT/labs/persist_trace.txt"
    ;;
  labbench)
    build/labs/sample bench > "$OUT/labs/sample_bench.log" 2>&1; tail -40 "$OUT/labs/sample_bench.log"
    build/labs/decode_persistent bench > "$OUT/labs/persist_bench.log" 2>&1; grep BENCH "$OUT/labs/persist_bench.log"
    ;;
  quick)
    python3 dev/bench_generate.py --device cuda --model d12 --batch 1,8,32,64 --modes greedy,sample --torch -n 128 \
      --llmc-variants default,persistent,host --json "$OUT/bench_quick.json" 2>&1 | tee "$OUT/bench_quick.txt"
    ;;
  d48)
    python3 dev/bench_generate.py --device cuda --model d48 --batch 1,8 --modes greedy --torch -n 64 \
      --llmc-variants default,persistent --json "$OUT/bench_d48.json" 2>&1 | tee "$OUT/bench_d48.txt"
    ;;
  full)
    python3 dev/bench_generate.py --device cuda --model d12,d48 --batch 1,8,32,64 --modes greedy,sample --torch \
      -n 128 --llmc-variants default,persistent,host --json "$OUT/bench_full.json" 2>&1 | tee "$OUT/bench_full.txt"
    ;;
  int8)
    for B in 1 8 32; do
      for run in "bf16:" "int8:--quantize int8" "int8-cores:--quantize int8" "int8-g128:--quantize int8 --group 128"; do
        mma=1; [[ ${run%%:*} == int8-cores ]] && mma=0
        LLMC_INT8_MMA=$mma python3 dev/trace/decode_steps.py --model d12 --batch $B -n 128 ${run#*:} 2>&1 \
          | sed "s/^/${run%%:*} /"
      done
    done | tee "$OUT/int8_decode.txt"
    ;;
  timeline)
    build_timeline_lib || exit 1
    mkdir -p "$OUT/timeline"
    declare -A tl_args=([b1]="--batch 1" [b1_int8]="--batch 1 --quantize int8" [b32]="--batch 32"
                        [b1_sample]="--batch 1 --sample" [b32_int8]="--batch 32 --quantize int8")
    for name in ${TIMELINES:-b1 b1_int8 b32 b1_sample b32_int8}; do
      csv="$OUT/timeline/$name.csv"
      CUDA_INJECTION64_PATH=/tmp/libgpu_timeline.so LLMC_TIMELINE="$csv" \
        python3 dev/trace/decode_steps.py --model d12 -n 64 ${tl_args[$name]} 2>&1 | tee "$OUT/timeline/$name.txt"
      python3 dev/trace/timeline.py "$csv" --step-kernel "argmax|sample" --split-us 20 --skip 4 --sequence \
        --gaps 5 >> "$OUT/timeline/$name.txt" 2>&1
      gzip -f "$csv"; head -25 "$OUT/timeline/$name.txt"
    done
    ;;
  *) echo "unknown step $what"; exit 2 ;;
  esac
done

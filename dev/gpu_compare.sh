#!/usr/bin/env bash
# Before/after in one device session: builds a baseline tree ($BASE, e.g. `git archive <rev>`
# unpacked into .baseline/) and this tree for sm_90, runs this tree's GPU tests, then alternates
# the training and generation benchmarks and the generation-memory probe between the two builds.
# Logs and a summary go to $OUT. Usage: bash dev/gpu_compare.sh [build|tests|bench|train|all]...
# train: the training benchmark alone. TRAIN_DATA (a glob) replaces the Shakespeare shards.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
BASE="${BASE:-.baseline}"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(build tests bench)
has() { [[ " ${steps[*]} " == *" $1 "* || " ${steps[*]} " == *" all "* ]]; }
# later steps need the builds: make them if this machine does not have them yet
[[ " ${steps[*]} " == *" build "* ]] || steps+=(build)
SUMMARY="$OUT/summary.txt"

# tree -> <tree>/train_gpt2cu and a Python install in /tmp/site_<name> (kept while the machine is)
build_tree() {
    local tree=$1 name=$2
    [ -x "$tree/train_gpt2cu" ] && [ -d "/tmp/site_$name/llmc" ] && return 0
    ( cd "$tree" && make CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" > "$OUT/build_$name.log" 2>&1 &&
      python3 -m pip install --no-build-isolation -q --no-deps --target "/tmp/site_$name" . >> "$OUT/build_$name.log" 2>&1 ) ||
        { echo "BUILD FAILED: $name"; tail -30 "$OUT/build_$name.log"; return 1; }
}

if has build; then
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1; } > "$OUT/device.txt" 2>&1
    build_tree . new || exit 1
    [ -d "$BASE" ] && { build_tree "$BASE" base || exit 1; }
    echo "== built" | tee -a "$SUMMARY"
fi

if has tests; then
    echo "== tests (this tree)"
    PYTHONPATH=/tmp/site_new timeout 480 python3 -m pytest -q -p no:cacheprovider tests -m cuda ${PYTEST_ARGS:-} \
        2>&1 | tee "$OUT/pytest_cuda.log" | tail -15
    tail -1 "$OUT/pytest_cuda.log" | sed 's/^/tests: /' >> "$SUMMARY"
fi

train_bench() { # tree name -> median ms/step of steps 4..N
    local tree=$1 name=$2 log="$OUT/train_${2}_$3.log"
    "$tree/train_gpt2cu" -e d12 -b 64 -t 1024 -x ${BENCH_STEPS:-40} -v 0 -s 0 -l 6e-4 \
        -i "${TRAIN_DATA:-data/shakespeare/shakespeare_train_*.bin}" > "$log" 2>&1
    python3 - "$log" "$name" <<'PY'
import re, statistics, sys
ms = [float(m.group(1)) for m in re.finditer(r"\| ([\d.]+) ms \|", open(sys.argv[1]).read())]
loss = re.findall(r"loss ([\d.]+)", open(sys.argv[1]).read())
print(f"train d12 B=64 T=1024 {sys.argv[2]}: median {statistics.median(ms[3:]):.2f} ms/step over steps 4-{len(ms)} "
      f"(min {min(ms[3:]):.2f}); loss at step {len(loss)}: {loss[-1] if loss else '?'}")
PY
}

train_rounds() { # the training benchmark, base and new alternated, two rounds
    for round in 1 2; do
        for name in base new; do
            tree=.; [ $name = base ] && tree="$BASE"
            [ -x "$tree/train_gpt2cu" ] || continue
            train_bench "$tree" $name $round | tee -a "$SUMMARY"
        done
    done
}

if has train && ! has bench; then train_rounds; fi

if has bench; then
    [ -d data/shakespeare ] || { echo "no data/shakespeare (carry it)"; exit 1; }
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/mem_trace.log" 2>&1 &
    smi=$!
    train_rounds
    kill $smi 2>/dev/null
    for round in 1 2; do
        for name in base new; do
            [ -d "/tmp/site_$name" ] || continue
            echo "gen $name round $round:" | tee -a "$SUMMARY"
            PYTHONPATH="/tmp/site_$name" timeout 200 python3 dev/bench_generate.py --device cuda --batch 1,32 \
                2>&1 | tee "$OUT/gen_${name}_$round.log" | grep -E "decode|prefill" | tee -a "$SUMMARY"
        done
    done
    for name in base new; do
        [ -d "/tmp/site_$name" ] || continue
        echo -n "memory $name: " | tee -a "$SUMMARY"
        PYTHONPATH="/tmp/site_$name" timeout 120 python3 dev/bench_memory.py 2>&1 | tail -1 | tee -a "$SUMMARY"
    done
fi
echo "== summary"; cat "$SUMMARY"

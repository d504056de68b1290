#!/usr/bin/env bash
# dev/bench_cpu_threads.sh — CPU decode and training speed under OpenMP wait policies, on a quiet
# machine and with one busy process per core beside it (what a shared VM or a parallel build does).
#   bash dev/bench_cpu_threads.sh            # prints one line per (job, load, setting)
# llmc's CLIs and `import llmc` default to OMP_WAIT_POLICY=passive; "active" is OpenMP's spin.
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
run() { # label, env...
  local label=$1; shift
  local d t
  d=$(env "$@" python3 dev/bench_generate.py --device cpu --batch 1 -n 32 2>&1 | grep -Eo '[0-9.]+ tok/s' | head -1)
  t=$(env "$@" python3 dev/bench_cpu_step.py --steps 4 2>&1 | grep -Eo 'median [0-9]+ ms/step' | head -1)
  printf '%-8s %-42s decode %-12s train d12 B=4 T=64 %s\n' "$load" "$label" "$d" "$t"
}
for load in quiet loaded; do
  pids=()
  if [ "$load" = loaded ]; then
    for _ in $(seq "$cores"); do (while :; do :; done) & pids+=($!); done
  fi
  run "OMP_NUM_THREADS=$cores, active (spin)" OMP_NUM_THREADS="$cores" OMP_WAIT_POLICY=active
  run "OMP_NUM_THREADS=$cores, passive (default)" OMP_NUM_THREADS="$cores" OMP_WAIT_POLICY=passive
  run "OMP_NUM_THREADS=1" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
done

#!/usr/bin/env bash
# dev/fuzz/campaign.sh — a long campaign: builds llmc and the fuzzer in their own directory
# (never the repo's build/), then runs every format.
#
#   nohup dev/fuzz/campaign.sh > /tmp/fuzz_campaign.log 2>&1 &
#   N=1000000 JOBS=1 SEED=1 KEEP=dev/fuzz/findings BUILD=/tmp/fuzz_build dev/fuzz/campaign.sh
#   N_SAN=250000 ...   also N_SAN inputs per format (seed SEED_SAN) against an ASan+UBSan build
#   FORMATS="safetensors mask" ...   only these formats (default: all)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-1000000}
JOBS=${JOBS:-1}
SEED=${SEED:-1}
KEEP=${KEEP:-$REPO/dev/fuzz/findings}
BUILD=${BUILD:-/tmp/fuzz_build}
BUILD_SAN=${BUILD_SAN:-/tmp/fuzz_build_san}
N_SAN=${N_SAN:-0}
FORMATS=${FORMATS:-all}
SEED_SAN=${SEED_SAN:-$((SEED + 1))} # other inputs than the main run's
GEN=$(command -v ninja >/dev/null 2>&1 && echo "-G Ninja" || true)

build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$REPO" -B "$dir" $GEN -DLLMC_CUDA=OFF "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS" >/dev/null
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (+ working tree)"
build "$BUILD"
make -s -C "$REPO/dev/fuzz" LLMC_BUILD="$BUILD"
"$BUILD/fuzz" selftest
rc=0
for f in $FORMATS; do
  echo "\$ $BUILD/fuzz $f -n $N -j $JOBS --seed $SEED --keep $KEEP --progress 300"
  "$BUILD/fuzz" "$f" -n "$N" -j "$JOBS" --seed "$SEED" --keep "$KEEP" --progress 300 || rc=$?
done

if [ "$N_SAN" -gt 0 ]; then
  build "$BUILD_SAN" -DLLMC_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
  make -s -C "$REPO/dev/fuzz" LLMC_BUILD="$BUILD_SAN" SANFLAGS=-fsanitize=address,undefined
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:disable_coredump=1
  export UBSAN_OPTIONS=print_stacktrace=1
  for f in $FORMATS; do
    echo "\$ $BUILD_SAN/fuzz $f -n $N_SAN -j $JOBS --seed $SEED_SAN --keep $KEEP/san --mem 0 --progress 300"
    "$BUILD_SAN/fuzz" "$f" -n "$N_SAN" -j "$JOBS" --seed "$SEED_SAN" --keep "$KEEP/san" --mem 0 --progress 300 || rc=$?
  done
fi
echo "# done $(date -u '+%Y-%m-%d %H:%M UTC'), exit $rc"
exit $rc

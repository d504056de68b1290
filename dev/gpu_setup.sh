# Sourced by the GPU machine scripts (dev/gpu_profile.sh, dev/gpu_compress.sh): the repo root as
# the working directory, $OUT for logs, NCCL multicast off, and a build for sm_90 when
# ./train_gpt2cu is missing (a fresh machine).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
if [[ ! -x ./train_gpt2cu ]]; then
  make CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  python3 -m pip install --no-build-isolation -q . > "$OUT/pip.log" 2>&1 || { tail -30 "$OUT/pip.log"; exit 1; }
fi

# The CUPTI timeline library (dev/trace/gpu_timeline.c) at /tmp/libgpu_timeline.so.
build_timeline_lib() {
  local cuda lib
  cuda=$(dirname "$(dirname "$(command -v nvcc)")")
  lib=$(ls -d "$cuda"/lib64 "$cuda"/lib 2>/dev/null | head -1)
  gcc -O2 -shared -fPIC -I"$cuda/include" dev/trace/gpu_timeline.c -L"$lib" -lcupti -Wl,-rpath,"$lib" \
    -o /tmp/libgpu_timeline.so
}

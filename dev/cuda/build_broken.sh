#!/usr/bin/env bash
# Builds lab binaries against deliberately broken copies of engine kernels, to show that the
# labs catch such bugs (each must report FAIL). Output: build/labs/broken_<lab>.
set -eu
cd "$(dirname "$0")/../.."
T=$(mktemp -d)
mkdir -p "$T/cuda" "$T/dev/cuda" "$T/src" build/labs
cp cuda/*.cu cuda/*.cuh cuda/*.h "$T/cuda/"; cp src/*.h "$T/src/"; cp dev/cuda/*.cu dev/cuda/*.cuh "$T/dev/cuda/"
# layernorm backward: drop the mean(dnorm) term
sed -i 's/di\[k\] += s \* (wv\[k\] \* g\[k\] - s1 - xh \* s2);/di[k] += s * (wv[k] * g[k] - xh * s2);/' "$T/cuda/layernorm.cu"
# classifier: padding column V gets a gradient
sed -i 's/d\[k\] = c < V ? /d[k] = c <= V ? /' "$T/cuda/classifier.cu"
# adamw: first moment decays with beta2
sed -i 's/mm\[k\] = a.beta1 \* mm\[k\] + (1.0f - a.beta1) \* gk;/mm[k] = a.beta1 * mm[k] + (1.0f - a.beta2) * gk;/' "$T/cuda/adamw.cu"
for f in layernorm classifier adamw; do
    if cmp -s "cuda/$f.cu" "$T/cuda/$f.cu"; then echo "sed did not break $f"; exit 1; fi
done
CORE="status model config weights dtype" # as run_labs.sh links
for c in $CORE; do [ -f "build/labs/$c.o" ] || gcc -O2 -fopenmp -c "src/$c.c" -Isrc -o "build/labs/$c.o"; done
for f in layernorm classifier adamw; do
    nvcc -O3 --use_fast_math -std=c++17 -arch=sm_90 -I"$T/src" -I"$T/cuda" -Xcompiler -fopenmp \
        "$T/dev/cuda/$f.cu" $(for c in $CORE; do echo "build/labs/$c.o"; done) -lcublasLt -lgomp \
        -o "build/labs/broken_$f" &
done
wait
rm -rf "$T"

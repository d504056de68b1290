/* classifier.cu — fused softmax cross-entropy over the (N, Vp) bf16 logits.
 *
 * One block per row. Pass 1 reads the row once (16-byte loads) with an online max/sum per
 * thread, merged across the block; loss = lse - logit[target]. When dloss != 0 the row is
 * overwritten with dlogits = (softmax - onehot) * dloss (0 in the padding columns V..Vp).
 * This touches B*T*Vp elements, so it is all about memory traffic: the vectors a thread
 * read in pass 1 can stay in its registers (CACHE of them) so that pass 2 does not read them
 * again, or pass 2 re-reads the row from L2 (CACHE = 0, the faster choice, see below).
 * Rows whose target is LLMC_IGNORE_TARGET (masked out of the loss) only write zeros. */
#include <math.h>
#include "common.cuh"

/* Merge running (max, sum of exp(x - max)) pairs. */
__device__ __forceinline__ void softmax_merge(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return; /* both empty */
    s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
    m = mn;
}

/* Adds the valid elements (column < V) of one vector to the running (m, s). */
template <int VEC>
__device__ __forceinline__ void softmax_accumulate(float &m, float &s, const float (&x)[VEC], int col0, int V) {
    float vm = -INFINITY;
#pragma unroll
    for (int k = 0; k < VEC; k++)
        if (col0 + k < V) vm = fmaxf(vm, x[k]);
    if (vm == -INFINITY) return;
    if (vm > m) {
        s *= __expf(m - vm);
        m = vm;
    }
#pragma unroll
    for (int k = 0; k < VEC; k++)
        if (col0 + k < V) s += __expf(x[k] - m);
}

template <int VEC>
__device__ __forceinline__ void dlogits_vector(bf16 *dst, const float (&x)[VEC], int col0, int V, int target,
                                               float lse, float dloss) {
    float d[VEC];
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        const int c = col0 + k;
        float p = __expf(x[k] - lse);
        d[k] = c < V ? (p - (c == target ? 1.0f : 0.0f)) * dloss : 0.0f;
    }
    st_bf16_cs<VEC>(dst, d); /* read again only by the next matmul, much later */
}

/* VEC: 8 (Vp % 8 == 0, aligned) or 1. CACHE: vectors per thread kept in registers (VEC 8 only).
 * THREADS: the block size it is launched with (bounds the registers so that it fits).
 * UNR: vectors loaded per batch before their math (more bytes in flight, more registers). */
template <int VEC, int CACHE, int THREADS, int UNR>
__global__ void __launch_bounds__(THREADS)
    classifier_kernel(float *losses, bf16 *logits, const int *targets, int V, int Vp, float dloss) {
    static_assert(VEC == 8 || CACHE == 0, "the register cache holds 16-byte vectors");
    __shared__ float red_m[32], red_s[32];
    __shared__ float lse_shared;
    const int tid = threadIdx.x;
    bf16 *x = logits + (size_t)blockIdx.x * Vp;
    const int nvec = Vp / VEC;
    const int target = targets[blockIdx.x];
    if (target == LLMC_IGNORE_TARGET) { /* no loss, no gradient: the row is not read (block-uniform exit) */
        if (tid == 0) losses[blockIdx.x] = 0.0f;
        if (dloss != 0.0f) {
            const float zero[VEC] = {};
            for (int i = tid; i < nvec; i += blockDim.x) st_bf16_cs<VEC>(x + (size_t)i * VEC, zero);
        }
        return;
    }
    float target_logit = 0.0f;
    if (tid == 0 && target >= 0 && target < V) target_logit = __bfloat162float(x[target]); /* before any write */

    float m = -INFINITY, s = 0.0f;
    int4 cache[CACHE > 0 ? CACHE : 1];
#pragma unroll
    for (int j = 0; j < CACHE; j++) {
        const int i = tid + j * blockDim.x;
        if (i < nvec) {
            cache[j] = __ldcs(reinterpret_cast<const int4 *>(x + (size_t)i * VEC));
            float f[8];
            unpack_bf16x8(f, cache[j]);
            softmax_accumulate<8>(m, s, f, i * 8, V);
        }
    }
    /* the rest in batches of UNR vectors, all loads issued before the math */
    for (int i0 = tid + CACHE * blockDim.x; i0 < nvec; i0 += UNR * blockDim.x) {
        float f[UNR][VEC];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < nvec) ld_bf16<VEC>(f[u], x + (size_t)i * VEC);
        }
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < nvec) softmax_accumulate<VEC>(m, s, f[u], i * VEC, V);
        }
    }

    /* block merge: warps with shuffles, then the first warp over the warp results */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        softmax_merge(m, s, m2, s2);
    }
    const int lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) {
        red_m[warp] = m;
        red_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nwarps ? red_m[lane] : -INFINITY;
        s = lane < nwarps ? red_s[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            softmax_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            const float lse = m + logf(s);
            lse_shared = lse;
            losses[blockIdx.x] = (target >= 0 && target < V) ? lse - target_logit : NAN;
        }
    }
    if (dloss == 0.0f) return;
    __syncthreads();
    const float lse = lse_shared;

#pragma unroll
    for (int j = 0; j < CACHE; j++) {
        const int i = tid + j * blockDim.x;
        if (i < nvec) {
            float f[8];
            unpack_bf16x8(f, cache[j]);
            dlogits_vector<8>(x + (size_t)i * 8, f, i * 8, V, target, lse, dloss);
        }
    }
    for (int i0 = tid + CACHE * blockDim.x; i0 < nvec; i0 += UNR * blockDim.x) {
        float f[UNR][VEC];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < nvec) ld_bf16<VEC>(f[u], x + (size_t)i * VEC);
        }
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < nvec) dlogits_vector<VEC>(x + (size_t)i * VEC, f[u], i * VEC, V, target, lse, dloss);
        }
    }
}

/* The engine's choice, measured in dev/cuda/classifier.cu on H100 (N=8192, Vp=50304, fwd+bwd,
 * as % of device-to-device copy bandwidth): re-reading the row from L2 with 1024 threads and
 * one vector per batch (few registers: 2 blocks/SM) 89%; batches of 4 vectors 67% (x1024) and
 * 78% (x512); keeping the row in registers (7 vectors/thread, 1 block/SM) 75%. */
#define CLS_THREADS 1024
#define CLS_CACHE 0
#define CLS_UNR 1

llmc_status llmc_cuda_classifier_forward(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                         int V, int Vp, float dloss) {
    if (N <= 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "classifier_forward: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    cudaStream_t s = llmc_cuda_stream(dev);
    if (Vp % 8 == 0 && llmc_is_aligned16(logits)) {
        classifier_kernel<8, CLS_CACHE, CLS_THREADS, CLS_UNR>
            <<<N, CLS_THREADS, 0, s>>>(losses, (bf16 *)logits, targets, V, Vp, dloss);
    } else {
        classifier_kernel<1, 0, 256, 1><<<N, 256, 0, s>>>(losses, (bf16 *)logits, targets, V, Vp, dloss);
    }
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

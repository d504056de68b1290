/* dev/cuda/attention.cu — kernel lab for causal attention (forward + backward), bf16 in/out.
 *
 * Build & run (needs an sm_90 GPU): dev/cuda/run_labs.sh attention builds build/labs/attention
 * (with the C it links) and runs it; then, with A=build/labs/attention:
 *   $A check          validation of every version     $A bench     benchmark only
 *   $A check-engine   validation of the engine only   $A sanitize  small shapes, engine
 *   $A once           one engine fwd+bwd per head size (for a profiler)
 *
 * Versions:
 *   1   one warp per query (or key) row, scalar fp32, online softmax; backward = three scalar
 *       kernels (D, dQ, dK/dV). Slow but obviously right.
 *   2   the engine (cuda/attention.cu and its kernels in attention_fwd.cuh / attention_bwd.cuh,
 *       #included below, not copied): mma.sync m16n8k16 bf16
 *       flash attention, FlashAttention-2 split, deterministic 3-kernel backward, with the tile
 *       shapes of llmc_attn::Config<HS>.
 *   f*, k*, q*, b*  the same kernels with other tile template arguments (forward, dK/dV, dQ,
 *       HS=128 backward); each changes one kernel and keeps the engine's other defaults.
 *
 * Every version is checked against a naive float64 CPU reference that materialises the scores,
 * on awkward shapes, outputs poisoned (NaN) first; each is run twice and compared bit for bit.
 *
 * Notes (H100 80GB HBM3, B=64 T=1024 NH=12 HS=64; fwd 103 GFLOP causal, bwd counted as 2.5x;
 * the backward really does 7 of the forward's 2 half-size products since P is recomputed twice):
 *   run 1  first tensor-core version, every warp 16 rows, 64x64 tiles:   fwd 0.49 ms 209 TF/s, bwd 1.80 ms 143
 *          dK/dV stepping 32 queries instead of 64:                      bwd 1.69 ms 153
 *   run 2  forward warps own 32 rows (each K/V fragment feeds 2 MMAs):   fwd 0.44 ms 232-236
 *          dQ warps own 32 rows, Q/dO fragments re-read from shared:     bwd 1.56 ms 166
 *   run 3  ncu: 8 warps/SM (registers), ~6.5 issued instructions per MMA, stalls mostly on
 *          fixed-latency dependencies: instruction-issue and latency bound, not bandwidth.
 *          dK/dV capped at 168 registers (3 blocks/SM, 36 B spill):     bwd 1.45 ms 177
 *   run 4  lazy rescaling (skip o *= alpha until the max grows by 2^8): no gain (within noise);
 *          128-key tiles, 8-warp blocks, 3 blocks/SM forward: no gain or slower.
 *   run 5  final defaults: fwd 0.455 ms 227 TF/s, bwd 1.456 ms 177 TF/s (D 0.075, dK/dV 0.78, dQ 0.55);
 *          B=8: fwd 0.079 ms 163, bwd 0.279 ms 115. All versions pass every shape; the engine
 *          also under --use_fast_math, compute-sanitizer memcheck and racecheck (0 errors).
 *   Same-config timings move by ~5% between rows of one run (clock/thermal), so smaller
 *   differences were not acted on.
 */
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "../../cuda/attention.cu"

/* The engine file calls three helpers that cuda/backend.cu and src/status.c define in the
 * real build; this standalone lab supplies minimal ones (dev->impl holds the stream). Weak:
 * run_labs.sh links src/status.c, whose llmc_device_fail wins and which needs the registry's
 * two names, never called here. */
#ifndef LLMC_LAB_LINKS_BACKEND
extern "C" __attribute__((weak)) llmc_status llmc_device_fail(llmc_device *dev, llmc_status code, const char *fmt,
                                                              ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dev->err, sizeof dev->err, fmt, ap);
    va_end(ap);
    return code;
}
extern "C" __attribute__((weak)) const llmc_backend_ops *llmc_backend_lookup(const char *) { return NULL; }
extern "C" __attribute__((weak)) const char *llmc_backend_names(void) { return "none"; }
cudaStream_t llmc_cuda_stream(llmc_device *dev) { return (cudaStream_t)dev->impl; }
llmc_status llmc_cuda_check(llmc_device *dev, cudaError_t e, const char *what, const char *file, int line) {
    return llmc_device_fail(dev, LLMC_ERR_DEVICE, "%s:%d: %s: %s", file, line, what, cudaGetErrorString(e));
}
#endif

typedef __nv_bfloat16 bf16;

#include "ck.cuh"

/* ====================================================================== version 1 */
namespace v1 {

/* One warp per (b, h, query); lane i holds dims [i*PER, i*PER+PER). */
template <int HS>
__global__ void fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int NH, float scale) {
    constexpr int PER = HS / 32;
    const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= (long)B * NH * T) return;
    const int q = (int)(w % T), bh = (int)(w / T), h = bh % NH, b = bh / NH;
    const int C = NH * HS;
    const long rs = 3L * C;
    const bf16 *base = qkv + (long)b * T * rs + (long)h * HS + lane * PER;
    float qv[PER], acc[PER];
    for (int i = 0; i < PER; ++i) {
        qv[i] = __bfloat162float(base[q * rs + i]);
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int k = 0; k <= q; ++k) {
        float d = 0.f;
        for (int i = 0; i < PER; ++i)
            d += qv[i] * __bfloat162float(base[k * rs + C + i]);
        for (int o = 16; o > 0; o >>= 1)
            d += __shfl_xor_sync(0xffffffffu, d, o);
        const float s = d * scale, mn = fmaxf(m, s), a = expf(m - mn), p = expf(s - mn);
        l = l * a + p;
        for (int i = 0; i < PER; ++i)
            acc[i] = acc[i] * a + p * __bfloat162float(base[k * rs + 2 * C + i]);
        m = mn;
    }
    bf16 *o = out + ((long)b * T + q) * C + (long)h * HS + lane * PER;
    for (int i = 0; i < PER; ++i)
        o[i] = __float2bfloat16(acc[i] / l);
    if (lane == 0) lse[(long)bh * T + q] = m + logf(l);
}

/* D = rowsum(dO * O), one warp per (b, t, h) row. */
template <int HS> __global__ void rowdot_kernel(float *D, const bf16 *dout, const bf16 *out, int B, int T, int NH) {
    const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= (long)B * T * NH) return;
    float d = 0.f;
    for (int i = lane; i < HS; i += 32)
        d += __bfloat162float(dout[w * HS + i]) * __bfloat162float(out[w * HS + i]);
    for (int o = 16; o > 0; o >>= 1)
        d += __shfl_xor_sync(0xffffffffu, d, o);
    const int h = (int)(w % NH), t = (int)((w / NH) % T), b = (int)(w / NH / T);
    if (lane == 0) D[((long)b * NH + h) * T + t] = d;
}

/* dQ row q = scale * sum_{k<=q} dS[q,k] K[k]; one warp per query row. */
template <int HS>
__global__ void dq_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse, const float *D, int B, int T,
                          int NH, float scale) {
    constexpr int PER = HS / 32;
    const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= (long)B * NH * T) return;
    const int q = (int)(w % T), bh = (int)(w / T), h = bh % NH, b = bh / NH;
    const int C = NH * HS;
    const long rs = 3L * C;
    const bf16 *base = qkv + (long)b * T * rs + (long)h * HS + lane * PER;
    const bf16 *go = dout + ((long)b * T + q) * C + (long)h * HS + lane * PER;
    float qv[PER], ov[PER], acc[PER];
    for (int i = 0; i < PER; ++i) {
        qv[i] = __bfloat162float(base[q * rs + i]);
        ov[i] = __bfloat162float(go[i]);
        acc[i] = 0.f;
    }
    const float L = lse[(long)bh * T + q], Dq = D[(long)bh * T + q];
    for (int k = 0; k <= q; ++k) {
        float s = 0.f, dp = 0.f;
        for (int i = 0; i < PER; ++i) {
            s += qv[i] * __bfloat162float(base[k * rs + C + i]);
            dp += ov[i] * __bfloat162float(base[k * rs + 2 * C + i]);
        }
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, o);
            dp += __shfl_xor_sync(0xffffffffu, dp, o);
        }
        const float p = expf(s * scale - L), ds = p * (dp - Dq);
        for (int i = 0; i < PER; ++i)
            acc[i] += ds * __bfloat162float(base[k * rs + C + i]);
    }
    bf16 *d = dqkv + ((long)b * T + q) * rs + (long)h * HS + lane * PER;
    for (int i = 0; i < PER; ++i)
        d[i] = __float2bfloat16(acc[i] * scale);
}

/* dK, dV row k: sums over queries q >= k; one warp per key row. */
template <int HS>
__global__ void dkdv_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse, const float *D, int B,
                            int T, int NH, float scale) {
    constexpr int PER = HS / 32;
    const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= (long)B * NH * T) return;
    const int k = (int)(w % T), bh = (int)(w / T), h = bh % NH, b = bh / NH;
    const int C = NH * HS;
    const long rs = 3L * C;
    const bf16 *base = qkv + (long)b * T * rs + (long)h * HS + lane * PER;
    const bf16 *go = dout + (long)b * T * C + (long)h * HS + lane * PER;
    float kv[PER], vv[PER], dk[PER], dv[PER];
    for (int i = 0; i < PER; ++i) {
        kv[i] = __bfloat162float(base[k * rs + C + i]);
        vv[i] = __bfloat162float(base[k * rs + 2 * C + i]);
        dk[i] = dv[i] = 0.f;
    }
    for (int q = k; q < T; ++q) {
        float s = 0.f, dp = 0.f;
        for (int i = 0; i < PER; ++i) {
            s += kv[i] * __bfloat162float(base[q * rs + i]);
            dp += vv[i] * __bfloat162float(go[(long)q * C + i]);
        }
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, o);
            dp += __shfl_xor_sync(0xffffffffu, dp, o);
        }
        const float p = expf(s * scale - lse[(long)bh * T + q]), ds = p * (dp - D[(long)bh * T + q]);
        for (int i = 0; i < PER; ++i) {
            dv[i] += p * __bfloat162float(go[(long)q * C + i]);
            dk[i] += ds * __bfloat162float(base[q * rs + i]);
        }
    }
    bf16 *d = dqkv + ((long)b * T + k) * rs + (long)h * HS + lane * PER;
    for (int i = 0; i < PER; ++i) {
        d[C + i] = __float2bfloat16(dk[i] * scale);
        d[2 * C + i] = __float2bfloat16(dv[i]);
    }
}

static unsigned warps_grid(long warps) { return (unsigned)((warps * 32 + 127) / 128); }

template <int HS> llmc_status forward(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T, int NH) {
    fwd_kernel<HS><<<warps_grid((long)B * NH * T), 128, 0, llmc_cuda_stream(dev)>>>((bf16 *)out, lse, (const bf16 *)qkv,
                                                                                    B, T, NH, 1.f / sqrtf((float)HS));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}
template <int HS>
llmc_status backward(llmc_device *dev, void *dqkv, const void *dout, const void *qkv, const void *out, const float *lse,
                     int B, int T, int NH) {
    cudaStream_t st = llmc_cuda_stream(dev);
    const float scale = 1.f / sqrtf((float)HS);
    const long rows = (long)B * NH * T;
    float *D = nullptr;
    LLMC_CUDA_TRY(dev, cudaMallocAsync((void **)&D, rows * sizeof(float), st));
    rowdot_kernel<HS><<<warps_grid(rows), 128, 0, st>>>(D, (const bf16 *)dout, (const bf16 *)out, B, T, NH);
    LLMC_CUDA_LAUNCHED(dev);
    dq_kernel<HS><<<warps_grid(rows), 128, 0, st>>>((bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv, lse, D, B, T,
                                                    NH, scale);
    LLMC_CUDA_LAUNCHED(dev);
    dkdv_kernel<HS><<<warps_grid(rows), 128, 0, st>>>((bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv, lse, D, B, T,
                                                      NH, scale);
    LLMC_CUDA_LAUNCHED(dev);
    LLMC_CUDA_TRY(dev, cudaFreeAsync(D, st));
    return LLMC_OK;
}
} /* namespace v1 */

/* ====================================================================== version table */
typedef llmc_status (*fwd_fn)(llmc_device *, void *, float *, const void *, int, int, int, int);
typedef llmc_status (*bwd_fn)(llmc_device *, void *, const void *, const void *, const void *, const float *, int, int,
                              int, int);

static llmc_status v1_forward(llmc_device *d, void *o, float *l, const void *x, int B, int T, int NH, int HS) {
    if (HS == 64) return v1::forward<64>(d, o, l, x, B, T, NH);
    if (HS == 128) return v1::forward<128>(d, o, l, x, B, T, NH);
    return llmc_device_fail(d, LLMC_ERR_UNSUPPORTED, "v1: HS=%d", HS);
}
static llmc_status v1_backward(llmc_device *d, void *dx, const void *dout, const void *x, const void *o, const float *l,
                               int B, int T, int NH, int HS) {
    if (HS == 64) return v1::backward<64>(d, dx, dout, x, o, l, B, T, NH);
    if (HS == 128) return v1::backward<128>(d, dx, dout, x, o, l, B, T, NH);
    return llmc_device_fail(d, LLMC_ERR_UNSUPPORTED, "v1: HS=%d", HS);
}

/* Tile variants of version 2 (template arguments of the engine's kernels). A variant changes
 * one kernel; the others stay the engine's defaults. */
using llmc_attn::FwdTiles;
using llmc_attn::KvTiles;
using llmc_attn::QTiles;
template <int HS> using Cfg = llmc_attn::Config<HS>;
template <class T64, class T128>
static llmc_status fwd_var(llmc_device *d, void *o, float *l, const void *x, int B, int T, int NH, int HS) {
    if (HS == 64) return llmc_attn::forward_impl<64, T64>(d, o, l, x, B, T, NH);
    if (HS == 128) return llmc_attn::forward_impl<128, T128>(d, o, l, x, B, T, NH);
    return llmc_device_fail(d, LLMC_ERR_UNSUPPORTED, "HS=%d", HS);
}
template <class KV, class Q>
static llmc_status bwd64_var(llmc_device *d, void *dx, const void *dout, const void *x, const void *o, const float *l,
                             int B, int T, int NH, int HS) {
    if (HS == 64) return llmc_attn::backward_impl<64, KV, Q>(d, dx, dout, x, o, l, B, T, NH);
    return llmc_cuda_attention_backward(d, dx, dout, x, o, l, B, T, NH, HS);
}
template <class KV, class Q>
static llmc_status bwd128_var(llmc_device *d, void *dx, const void *dout, const void *x, const void *o, const float *l,
                              int B, int T, int NH, int HS) {
    if (HS == 128) return llmc_attn::backward_impl<128, KV, Q>(d, dx, dout, x, o, l, B, T, NH);
    return llmc_cuda_attention_backward(d, dx, dout, x, o, l, B, T, NH, HS);
}
typedef Cfg<64>::Kv KV64;
typedef Cfg<64>::Q Q64;

struct Version {
    const char *name, *what;
    fwd_fn fwd;
    bwd_fn bwd;
};
#define ENG_F llmc_cuda_attention_forward
#define ENG_B llmc_cuda_attention_backward
static const Version kVersions[] = {
    {"1", "scalar, warp per row", v1_forward, v1_backward},
    {"2", "engine defaults (cuda/attention.cu)", ENG_F, ENG_B},
    /* forward: warps x rows/warp, key tile, min blocks/SM, lazy rescale   (HS=64 | HS=128) */
    {"f1", "fwd 4w x 16r | 8w x 16r", fwd_var<FwdTiles<4, 1>, FwdTiles<8, 1>>, ENG_B},
    {"f6", "fwd 4w x 16r minb4 | 4w x 16r minb2", fwd_var<FwdTiles<4, 1, 64, 4>, FwdTiles<4, 1, 64, 2>>, ENG_B},
    {"f9", "fwd lazy: 4w x 32r | 4w x 16r", fwd_var<FwdTiles<4, 2, 64, 1, true>, FwdTiles<4, 1, 64, 1, true>>, ENG_B},
    /* dK/dV (HS=64): keys/warp, query step, K/V in regs, warps, min blocks/SM */
    {"k2", "dkdv 16k q32 regs minb1", ENG_F, bwd64_var<KvTiles<1, 32, true>, Q64>},
    {"k9", "dkdv 16k q32 smem minb3", ENG_F, bwd64_var<KvTiles<1, 32, false, 4, 3>, Q64>},
    /* dQ (HS=64): rows/warp, key step, Q/dO in regs, warps, min blocks/SM */
    {"q1", "dq 16r k64 regs", ENG_F, bwd64_var<KV64, QTiles<1, 64, true>>},
    {"q2", "dq 32r k32 regs", ENG_F, bwd64_var<KV64, QTiles<2, 32, true>>},
    /* HS=128 backward */
    {"b0", "HS128 dkdv q32 minb1 | dq k64 smem", ENG_F, bwd128_var<KvTiles<1, 32, false>, QTiles<1, 64, false>>},
};
static const int kNumVersions = sizeof kVersions / sizeof kVersions[0];

/* ====================================================================== host utilities */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand() { /* splitmix64 → [0,1) */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand() { return sqrt(-2.0 * log(1.0 - urand())) * cos(6.283185307179586 * urand()); }

/* float64 reference: materialises the (causal) T x T scores and probabilities per head. */
struct Ref {
    std::vector<double> out, lse, dqkv;
};
static void reference(Ref &r, const std::vector<uint16_t> &qkv, const std::vector<uint16_t> &dout, int B, int T, int NH,
                      int HS) {
    const int C = NH * HS;
    const long rs = 3L * C;
    r.out.assign((size_t)B * T * C, 0.0);
    r.lse.assign((size_t)B * NH * T, 0.0);
    r.dqkv.assign((size_t)B * T * rs, 0.0);
    const double scale = 1.0 / sqrt((double)HS);
    auto head = [&](int bh) {
        const int b = bh / NH, h = bh % NH;
        std::vector<double> Q((size_t)T * HS), K((size_t)T * HS), V((size_t)T * HS), dO((size_t)T * HS);
        for (int t = 0; t < T; ++t)
            for (int d = 0; d < HS; ++d) {
                const size_t base = ((size_t)b * T + t) * rs + (size_t)h * HS + d;
                Q[(size_t)t * HS + d] = llmc_bf16_to_f32(qkv[base]);
                K[(size_t)t * HS + d] = llmc_bf16_to_f32(qkv[base + C]);
                V[(size_t)t * HS + d] = llmc_bf16_to_f32(qkv[base + 2 * C]);
                dO[(size_t)t * HS + d] = llmc_bf16_to_f32(dout[((size_t)b * T + t) * C + (size_t)h * HS + d]);
            }
        std::vector<double> P((size_t)T * T, 0.0), dS((size_t)T * T, 0.0), Dq(T);
        for (int q = 0; q < T; ++q) {
            double m = -INFINITY;
            for (int k = 0; k <= q; ++k) {
                double s = 0;
                for (int d = 0; d < HS; ++d)
                    s += Q[(size_t)q * HS + d] * K[(size_t)k * HS + d];
                P[(size_t)q * T + k] = s * scale;
                m = std::max(m, s * scale);
            }
            double l = 0;
            for (int k = 0; k <= q; ++k)
                l += exp(P[(size_t)q * T + k] - m);
            r.lse[(size_t)bh * T + q] = m + log(l);
            for (int k = 0; k <= q; ++k)
                P[(size_t)q * T + k] = exp(P[(size_t)q * T + k] - m) / l;
            double dsum = 0;
            for (int d = 0; d < HS; ++d) {
                double o = 0;
                for (int k = 0; k <= q; ++k)
                    o += P[(size_t)q * T + k] * V[(size_t)k * HS + d];
                r.out[((size_t)b * T + q) * C + (size_t)h * HS + d] = o;
                dsum += o * dO[(size_t)q * HS + d];
            }
            Dq[q] = dsum;
            for (int k = 0; k <= q; ++k) {
                double dp = 0;
                for (int d = 0; d < HS; ++d)
                    dp += dO[(size_t)q * HS + d] * V[(size_t)k * HS + d];
                dS[(size_t)q * T + k] = P[(size_t)q * T + k] * (dp - dsum);
            }
        }
        for (int t = 0; t < T; ++t)
            for (int d = 0; d < HS; ++d) {
                double dq = 0, dk = 0, dv = 0;
                for (int k = 0; k <= t; ++k)
                    dq += dS[(size_t)t * T + k] * K[(size_t)k * HS + d];
                for (int q = t; q < T; ++q) {
                    dk += dS[(size_t)q * T + t] * Q[(size_t)q * HS + d];
                    dv += P[(size_t)q * T + t] * dO[(size_t)q * HS + d];
                }
                const size_t base = ((size_t)b * T + t) * rs + (size_t)h * HS + d;
                r.dqkv[base] = dq * scale;
                r.dqkv[base + C] = dk * scale;
                r.dqkv[base + 2 * C] = dv;
            }
    };
    const int nth = std::max(1, std::min((int)std::thread::hardware_concurrency(), B * NH));
    std::vector<std::thread> pool;
    for (int w = 0; w < nth; ++w)
        pool.emplace_back([&, w] {
            for (int bh = w; bh < B * NH; bh += nth)
                head(bh);
        });
    for (auto &th : pool)
        th.join();
}

/* ||x - ref|| / ||ref|| over the elements selected by `pick` (NaN propagates). */
template <class Pick> static double relerr(size_t n, Pick pick) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        double x, r;
        if (!pick(i, x, r)) continue;
        num += (x - r) * (x - r);
        den += r * r;
    }
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

struct Shape {
    int B, T, NH, HS;
    double amp; /* std of q, k, v: larger = peakier softmax */
};

static bool g_engine_only = false; /* check only version 2 */

/* One shape: fresh inputs and one float64 reference, then every version against it. */
static void check_shape(llmc_device *dev, const Shape &s, int *nfail) {
    const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    std::vector<uint16_t> hqkv(nqkv), hdout(nout);
    for (auto &x : hqkv)
        x = llmc_f32_to_bf16((float)(nrand() * s.amp));
    for (auto &x : hdout)
        x = llmc_f32_to_bf16((float)nrand());
    Ref ref;
    reference(ref, hqkv, hdout, B, T, NH, HS);

    bf16 *qkv, *dout, *out, *dqkv;
    float *lse;
    CK(cudaMalloc(&qkv, nqkv * 2));
    CK(cudaMalloc(&dqkv, nqkv * 2));
    CK(cudaMalloc(&dout, nout * 2));
    CK(cudaMalloc(&out, nout * 2));
    CK(cudaMalloc(&lse, nlse * 4));
    CK(cudaMemcpy(qkv, hqkv.data(), nqkv * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dout, hdout.data(), nout * 2, cudaMemcpyHostToDevice));
    for (int vi = g_engine_only ? 1 : 0; vi < (g_engine_only ? 2 : kNumVersions); ++vi) {
        const Version &v = kVersions[vi];
        CK(cudaMemset(out, 0xff, nout * 2)); /* NaN poison */
        CK(cudaMemset(lse, 0xff, nlse * 4));
        CK(cudaMemset(dqkv, 0xff, nqkv * 2));

        bool ok = true;
        llmc_status st = v.fwd(dev, out, lse, qkv, B, T, NH, HS);
        if (st == LLMC_OK) st = v.bwd(dev, dqkv, dout, qkv, out, lse, B, T, NH, HS);
        CK(cudaDeviceSynchronize());
        if (st != LLMC_OK) {
            printf("  v%-3s B=%d T=%d NH=%d HS=%d: error %d: %s\n", v.name, B, T, NH, HS, (int)st, dev->err);
            ++*nfail;
            ok = false;
        }
        std::vector<uint16_t> gout(nout), gdqkv(nqkv), gdqkv2(nqkv), gout2(nout);
        std::vector<float> glse(nlse), glse2(nlse);
        CK(cudaMemcpy(gout.data(), out, nout * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(glse.data(), lse, nlse * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(gdqkv.data(), dqkv, nqkv * 2, cudaMemcpyDeviceToHost));

        /* determinism: again, from poisoned outputs, must be bit-identical */
        CK(cudaMemset(out, 0xff, nout * 2));
        CK(cudaMemset(lse, 0xff, nlse * 4));
        CK(cudaMemset(dqkv, 0xff, nqkv * 2));
        if (v.fwd(dev, out, lse, qkv, B, T, NH, HS) != LLMC_OK ||
            v.bwd(dev, dqkv, dout, qkv, out, lse, B, T, NH, HS) != LLMC_OK)
            ok = false;
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(gout2.data(), out, nout * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(glse2.data(), lse, nlse * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(gdqkv2.data(), dqkv, nqkv * 2, cudaMemcpyDeviceToHost));
        const bool det = memcmp(gout.data(), gout2.data(), nout * 2) == 0 &&
                         memcmp(glse.data(), glse2.data(), nlse * 4) == 0 &&
                         memcmp(gdqkv.data(), gdqkv2.data(), nqkv * 2) == 0;

        const double eo = relerr(nout, [&](size_t i, double &x, double &r) {
            x = llmc_bf16_to_f32(gout[i]);
            r = ref.out[i];
            return true;
        });
        const double el = relerr(nlse, [&](size_t i, double &x, double &r) {
            x = glse[i];
            r = ref.lse[i];
            return true;
        });
        double eg[3];
        for (int part = 0; part < 3; ++part)
            eg[part] = relerr(nqkv, [&](size_t i, double &x, double &r) {
                if ((int)((i % (3 * (size_t)C)) / C) != part) return false;
                x = llmc_bf16_to_f32(gdqkv[i]);
                r = ref.dqkv[i];
                return true;
            });
        const double tol = 1e-2, tol_lse = 1e-3;
        const bool pass = ok && det && eo <= tol && el <= tol_lse && eg[0] <= tol && eg[1] <= tol && eg[2] <= tol;
        printf("  v%-3s B=%-2d T=%-5d NH=%-2d HS=%-3d amp=%.0f | out %.2e lse %.2e dq %.2e dk %.2e dv %.2e | det %s | "
               "%s\n",
               v.name, B, T, NH, HS, s.amp, eo, el, eg[0], eg[1], eg[2], det ? "yes" : "NO", pass ? "PASS" : "FAIL");
        if (!pass) ++*nfail;
    }
    CK(cudaFree(qkv));
    CK(cudaFree(dqkv));
    CK(cudaFree(dout));
    CK(cudaFree(out));
    CK(cudaFree(lse));
}

/* ====================================================================== benchmark */
__global__ void fill_random(bf16 *x, size_t n, uint32_t seed, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 0x9E3779B1u ^ seed;
        h ^= h >> 16;
        h *= 0x85EBCA6Bu;
        h ^= h >> 13;
        h *= 0xC2B2AE35u;
        h ^= h >> 16;
        x[i] = __float2bfloat16(amp * ((h >> 8) * (1.f / 16777216.f) * 2.f - 1.f));
    }
}

/* median (and min) of reps timed launches after 2 warm-ups, cudaEvents on the lab stream */
template <class F> static float time_ms(llmc_device *dev, F fn, int reps, float *mn) {
    cudaStream_t st = llmc_cuda_stream(dev);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> t;
    for (int r = 0; r < reps + 2; ++r) {
        CK(cudaEventRecord(e0, st));
        if (fn() != LLMC_OK) {
            printf("error: %s\n", dev->err);
            exit(1);
        }
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 2) t.push_back(ms);
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    std::sort(t.begin(), t.end());
    if (mn) *mn = t[0];
    return t[t.size() / 2];
}

template <int HS>
static void breakdown(llmc_device *dev, float *D, bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const bf16 *out,
                      const float *lse, int B, int T, int NH) {
    typedef llmc_attn::Config<HS> K;
    const float a = time_ms(
        dev, [&] { return llmc_attn::launch_rowdot<HS>(dev, D, dout, out, B, T, NH); }, 20, 0);
    const float b = time_ms(
        dev, [&] { return llmc_attn::launch_dkdv<HS, typename K::Kv>(dev, D, dqkv, dout, qkv, lse, B, T, NH); }, 20, 0);
    const float c = time_ms(
        dev, [&] { return llmc_attn::launch_dq<HS, typename K::Q>(dev, D, dqkv, dout, qkv, lse, B, T, NH); }, 20, 0);
    printf("       engine backward split: D %.3f ms | dK,dV %.3f ms | dQ %.3f ms\n", a, b, c);
}

static void bench(llmc_device *dev, int B, int T, int NH, int HS, bool with_v1) {
    const int C = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    bf16 *qkv, *dout, *out, *dqkv;
    float *lse, *D;
    CK(cudaMalloc(&qkv, nqkv * 2));
    CK(cudaMalloc(&dqkv, nqkv * 2));
    CK(cudaMalloc(&dout, nout * 2));
    CK(cudaMalloc(&out, nout * 2));
    CK(cudaMalloc(&lse, nlse * 4));
    CK(cudaMalloc(&D, nlse * 4));
    fill_random<<<1024, 256>>>(qkv, nqkv, 1234u, 1.7f); /* uniform, std ~1 */
    fill_random<<<1024, 256>>>(dout, nout, 777u, 1.7f);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    const double ff = 4.0 * B * NH * (double)T * T * HS / 2, fb = 2.5 * ff;
    printf("  B=%d T=%d NH=%d HS=%d\n", B, T, NH, HS);
    for (int vi = with_v1 ? 0 : 1; vi < kNumVersions; ++vi) {
        const Version &v = kVersions[vi];
        const int reps = vi == 0 ? 3 : 20;
        float mf, mb;
        const float tf = time_ms(
            dev, [&] { return v.fwd(dev, out, lse, qkv, B, T, NH, HS); }, reps, &mf);
        const float tb = time_ms(
            dev, [&] { return v.bwd(dev, dqkv, dout, qkv, out, lse, B, T, NH, HS); }, reps, &mb);
        printf("    v%-3s fwd %8.3f ms %6.1f TFLOP/s | bwd %8.3f ms %6.1f TFLOP/s | min %.3f / %.3f | %s\n", v.name, tf,
               ff / tf / 1e9, tb, fb / tb / 1e9, mf, mb, v.what);
    }
    if (llmc_cuda_attention_forward(dev, out, lse, qkv, B, T, NH, HS) != LLMC_OK) exit(1);
    { /* engine backward at full size, twice: bit-identical? */
        std::vector<uint16_t> a(nqkv), b(nqkv);
        for (int rep = 0; rep < 2; ++rep) {
            CK(cudaMemset(dqkv, 0xff, nqkv * 2));
            if (llmc_cuda_attention_backward(dev, dqkv, dout, qkv, out, lse, B, T, NH, HS) != LLMC_OK) exit(1);
            CK(cudaMemcpy(rep ? b.data() : a.data(), dqkv, nqkv * 2, cudaMemcpyDeviceToHost));
        }
        printf("       engine backward run twice at this size: %s\n",
               memcmp(a.data(), b.data(), nqkv * 2) ? "DIFFERENT" : "bit-identical");
    }
    if (HS == 64) breakdown<64>(dev, D, dqkv, dout, qkv, out, lse, B, T, NH);
    if (HS == 128) breakdown<128>(dev, D, dqkv, dout, qkv, out, lse, B, T, NH);
    CK(cudaFree(qkv));
    CK(cudaFree(dqkv));
    CK(cudaFree(dout));
    CK(cudaFree(out));
    CK(cudaFree(lse));
    CK(cudaFree(D));
}

int main(int argc, char **argv) {
    const char *mode = argc < 2 ? "all" : argv[1];
    const bool sanitize = strcmp(mode, "sanitize") == 0;
    g_engine_only = sanitize || strcmp(mode, "check-engine") == 0;
    const bool do_check = !strcmp(mode, "all") || !strcmp(mode, "check") || g_engine_only;
    const bool do_bench = !strcmp(mode, "all") || !strcmp(mode, "bench");
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));
    llmc_device dev;
    memset(&dev, 0, sizeof dev);
    dev.impl = stream;

    if (argc >= 2 && strcmp(argv[1], "once") == 0) { /* one engine fwd+bwd per head size, for a profiler */
        for (int hs = 64; hs <= 128; hs *= 2) {
            const int B = 8, T = 1024, NH = 768 / hs;
            const size_t nqkv = (size_t)B * T * 3 * 768, nout = (size_t)B * T * 768;
            bf16 *qkv, *dout, *out, *dqkv;
            float *lse;
            CK(cudaMalloc(&qkv, nqkv * 2));
            CK(cudaMalloc(&dqkv, nqkv * 2));
            CK(cudaMalloc(&dout, nout * 2));
            CK(cudaMalloc(&out, nout * 2));
            CK(cudaMalloc(&lse, (size_t)B * NH * T * 4));
            fill_random<<<1024, 256>>>(qkv, nqkv, 1u, 1.7f);
            fill_random<<<1024, 256>>>(dout, nout, 2u, 1.7f);
            if (llmc_cuda_attention_forward(&dev, out, lse, qkv, B, T, NH, hs) != LLMC_OK ||
                llmc_cuda_attention_backward(&dev, dqkv, dout, qkv, out, lse, B, T, NH, hs) != LLMC_OK)
                printf("error: %s\n", dev.err);
            CK(cudaDeviceSynchronize());
        }
        return 0;
    }
    int nfail = 0;
    if (do_check) {
        /* unsupported head size must be refused with a message */
        const llmc_status s = llmc_cuda_attention_forward(&dev, nullptr, nullptr, nullptr, 1, 8, 1, 96);
        printf("HS=96 -> status %d (%s)\n", (int)s, dev.err);
        if (s != LLMC_ERR_UNSUPPORTED) ++nfail;

        const Shape shapes[] =
            {
                {1, 1, 1, 64, 1},     {2, 17, 3, 64, 1},    {1, 64, 2, 64, 1},   {1, 65, 1, 64, 1},
                {1, 100, 12, 64, 1},  {3, 257, 2, 64, 1},   {1, 300, 3, 64, 4},  {1, 1024, 12, 64, 1},
                {1, 1, 1, 128, 1},    {2, 17, 2, 128, 1},   {1, 100, 1, 128, 1}, {2, 257, 2, 128, 3},
                {1, 1024, 4, 128, 1}, {5500, 3, 12, 64, 1}, /* B*NH = 66000 > 65535 heads: the kernels' grid-stride over
                                                               heads */
            };
        /* under compute-sanitizer: the small shapes only */
        const Shape small[] = {{1, 1, 1, 64, 1},  {2, 17, 3, 64, 1},   {1, 65, 1, 64, 1},  {1, 257, 2, 64, 2},
                               {1, 1, 1, 128, 1}, {1, 100, 1, 128, 1}, {1, 257, 2, 128, 1}};
        printf("\nvalidation vs float64 reference (normwise rel. error; tol 1e-2 bf16 outputs, 1e-3 lse;"
               " det = second run bit-identical)\n");
        const int nshapes = sanitize ? (int)(sizeof small / sizeof small[0]) : (int)(sizeof shapes / sizeof shapes[0]);
        for (int si = 0; si < nshapes; ++si) {
            const Shape &s = sanitize ? small[si] : shapes[si];
            g_rng = 0x1234567ull * (uint64_t)(s.T * 131 + s.NH * 7 + s.HS + s.B * 1000003);
            check_shape(&dev, s, &nfail);
        }
        printf("validation: %s (%d failures)\n", nfail ? "FAILED" : "all passed", nfail);
    }
    if (do_bench) {
        printf("\nbenchmark (median; causal FLOPs: fwd 2*2*B*NH*T*T*HS/2, bwd 2.5x that)\n");
        bench(&dev, 8, 1024, 12, 64, true);
        bench(&dev, 64, 1024, 12, 64, true);
        bench(&dev, 8, 1024, 6, 128, false);
        bench(&dev, 64, 1024, 6, 128, false);
    }
    CK(cudaStreamDestroy(stream));
    return nfail ? 1 : 0;
}

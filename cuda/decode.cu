/* decode.cu — CUDA ops of KV-cache inference: embedding at per-row positions, appending
 * K/V to the bf16 cache, and attention of one query per row over its cached keys.
 *
 * attention_decode is split-K ("flash decoding"): the keys of one (row, head) are cut into
 * chunks, one block per chunk. Inside a block, HS/8 lanes share a key (16 bytes of K and V
 * each), a warp covers 32/(HS/8) keys at a time, and every lane group keeps an online
 * softmax (running max, sum, and its 8 output dims) in fp32. The groups are merged through
 * shared memory in a fixed order; with several chunks a second kernel merges the chunks'
 * partial (max, sum, acc) in chunk order. No atomics: results are deterministic.
 *
 * Every kernel here is launched as a programmatic dependent (when llmc_cuda_pdl(dev)): it
 * lets its own successor launch at once and waits for its predecessor before touching memory,
 * so launch latency overlaps the previous kernel's tail without changing semantics. */
#include <limits.h>
#include <stdlib.h>
#include "common.cuh"

namespace llmc_decode {

constexpr float kLog2e = 1.4426950408889634f;

constexpr int kWarps = 4; /* warps per attention block */

template <int VEC>
__global__ void embed_at_kernel(bf16 *out, const int *tokens, const int *pos, const bf16 *wte, const bf16 *wpe,
                                int N, int C) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const int nvec = C / VEC;
    const size_t total = (size_t)N * nvec;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t row = idx / nvec;
        const int cv = (int)(idx - row * nvec);
        float a[VEC], p[VEC];
        ld_bf16<VEC>(a, wte + (size_t)tokens[row] * C + cv * VEC);
        ld_bf16<VEC>(p, wpe + (size_t)pos[row] * C + cv * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) a[k] += p[k];
        st_bf16<VEC>(out + row * C + cv * VEC, a);
    }
}

/* One thread per VEC elements of one (row, head) of K and of V. */
template <int VEC>
__global__ void kv_append_kernel(bf16 *kc, bf16 *vc, const bf16 *qkv, const int *slots, const int *pos, int B, int T,
                                 int NH, int HS, int maxlen) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const int C = NH * HS, cpr = HS / VEC;
    const size_t total = (size_t)B * T * NH * cpr;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(idx % cpr);
        size_t r = idx / cpr;
        const int h = (int)(r % NH);
        r /= NH; /* r = b * T + t */
        const int t = (int)(r % T), b = (int)(r / T);
        const bf16 *src = qkv + r * 3 * C + C + (size_t)h * HS + c * VEC;
        const size_t dst = (((size_t)slots[b] * NH + h) * maxlen + pos[b] + t) * HS + (size_t)c * VEC;
        if constexpr (VEC == 8) {
            *reinterpret_cast<int4 *>(kc + dst) = *reinterpret_cast<const int4 *>(src);
            *reinterpret_cast<int4 *>(vc + dst) = *reinterpret_cast<const int4 *>(src + C);
        } else {
            kc[dst] = src[0];
            vc[dst] = src[C];
        }
    }
}

/* grid (N * NH, nsplit). Scores are kept in log2 units (q pre-scaled by log2(e)/sqrt(HS)). */
template <int HS>
__global__ void __launch_bounds__(kWarps * 32) attn_decode_kernel(bf16 *out, float *part, const bf16 *qkv,
                                                                  const bf16 *kc, const bf16 *vc, const int *slots,
                                                                  const int *lens, int NH, int maxlen, int chunk,
                                                                  float sl2) {
    constexpr int TPK = HS / 8;     /* lanes per key */
    constexpr int KPW = 32 / TPK;   /* keys per warp per step */
    constexpr int G = kWarps * KPW; /* lane groups per block */
    __shared__ float s_m[G], s_l[G];
    __shared__ float s_acc[G][HS];
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();

    const int pair = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y;
    const int i = pair / NH, h = pair - (pair / NH) * NH;
    const int C = NH * HS;
    const int len = lens[i];
    const int j0 = split * chunk, j1 = min(len, j0 + chunk);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % TPK, grp = lane / TPK, g = warp * KPW + grp;

    float q[8];
    ld_bf16<8>(q, qkv + (size_t)i * 3 * C + (size_t)h * HS + sub * 8);
#pragma unroll
    for (int d = 0; d < 8; d++) q[d] *= sl2;
    const size_t base = ((size_t)slots[i] * NH + h) * maxlen * HS + sub * 8;
    const bf16 *K = kc + base, *V = vc + base;

    float m = -INFINITY, l = 0.f, acc[8];
#pragma unroll
    for (int d = 0; d < 8; d++) acc[d] = 0.f;
    /* jb is uniform across the warp, so every lane reaches the shuffles */
    for (int jb = j0 + warp * KPW; jb < j1; jb += kWarps * KPW) {
        const int j = jb + grp;
        const bool ok = j < j1;
        float k[8], v[8];
        if (ok) {
            ld_bf16<8>(k, K + (size_t)j * HS);
            ld_bf16<8>(v, V + (size_t)j * HS);
        } else {
#pragma unroll
            for (int d = 0; d < 8; d++) k[d] = v[d] = 0.f;
        }
        attn_online_step<TPK>(q, k, v, ok, m, l, acc);
    }
    if (sub == 0) {
        s_m[g] = m;
        s_l[g] = l;
    }
#pragma unroll
    for (int d = 0; d < 8; d++) s_acc[g][sub * 8 + d] = acc[d];
    __syncthreads();

    float M = -INFINITY;
#pragma unroll 4
    for (int x = 0; x < G; x++) M = fmaxf(M, s_m[x]);
    for (int d = threadIdx.x; d < HS; d += kWarps * 32) {
        float L = 0.f, A = 0.f;
        if (M != -INFINITY)
            for (int x = 0; x < G; x++) {
                const float w = s_m[x] == -INFINITY ? 0.f : exp2f(s_m[x] - M);
                L = fmaf(s_l[x], w, L);
                A = fmaf(s_acc[x][d], w, A);
            }
        if (nsplit == 1) {
            out[(size_t)i * C + (size_t)h * HS + d] = __float2bfloat16_rn(A / L);
        } else {
            float *P = part + ((size_t)pair * nsplit + split) * (HS + 2);
            if (d == 0) {
                P[0] = M;
                P[1] = L;
            }
            P[2 + d] = A;
        }
    }
}

/* Merges the nsplit partials of each (row, head), in split order. grid N * NH. */
__global__ void attn_decode_merge_kernel(bf16 *out, const float *part, int NH, int HS, int nsplit) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const int pair = blockIdx.x, i = pair / NH, h = pair - (pair / NH) * NH;
    const float *P = part + (size_t)pair * nsplit * (HS + 2);
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, P[(size_t)s * (HS + 2)]);
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float L = 0.f, A = 0.f;
        for (int s = 0; s < nsplit; s++) {
            const float *p = P + (size_t)s * (HS + 2);
            const float w = p[0] == -INFINITY ? 0.f : exp2f(p[0] - M);
            L = fmaf(p[1], w, L);
            A = fmaf(p[2 + d], w, A);
        }
        out[(size_t)i * NH * HS + (size_t)h * HS + d] = __float2bfloat16_rn(A / L);
    }
}

template <int HS>
llmc_status launch_decode(llmc_device *dev, bf16 *out, const bf16 *qkv, const bf16 *kc, const bf16 *vc,
                          const int *slots, const int *lens, int N, int NH, int maxlen) {
    constexpr int G = kWarps * (32 / (HS / 8));
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    const int pairs = N * NH;
    /* enough blocks to cover the GPU about twice, each with at least 64 keys of work */
    int nsplit = (2 * im->sm_count + pairs - 1) / pairs;
    const int most = (maxlen + 63) / 64;
    nsplit = nsplit < 1 ? 1 : (nsplit > most ? most : nsplit);
    int chunk = (maxlen + nsplit - 1) / nsplit;
    chunk = (chunk + G - 1) / G * G;
    nsplit = (maxlen + chunk - 1) / chunk;
    float *part = nullptr;
    if (nsplit > 1) {
        void *p;
        llmc_status st = llmc_cuda_scratch(dev, (size_t)pairs * nsplit * (HS + 2) * sizeof(float), &p);
        if (st != LLMC_OK) return st;
        part = (float *)p;
    }
    const float sl2 = kLog2e / sqrtf((float)HS);
    const int pdl = llmc_cuda_pdl(dev);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(pdl, attn_decode_kernel<HS>, dim3(pairs, nsplit), dim3(kWarps * 32), 0,
                                       im->stream, out, part, qkv, kc, vc, slots, lens, NH, maxlen, chunk, sl2));
    LLMC_CUDA_LAUNCHED(dev);
    if (nsplit > 1) {
        LLMC_CUDA_TRY(dev, llmc_launch_pdl(pdl, attn_decode_merge_kernel, dim3(pairs), dim3(HS < 128 ? HS : 128), 0,
                                           im->stream, out, (const float *)part, NH, HS, nsplit));
        LLMC_CUDA_LAUNCHED(dev);
    }
    return LLMC_OK;
}

/* One block per row: each thread scans a strided share of the row, then a (value, index)
 * reduction that prefers the larger value and, on ties, the lower index. NaN and +Inf are
 * detected on the bits (fast-math builds may fold float NaN tests away). */
__device__ __forceinline__ void better_of(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

/* One token of the row: NaN and +Inf mark the row bad (not -Inf); indices come in increasing
 * order per thread, so a tie keeps the earlier one. */
__device__ __forceinline__ void argmax_take(unsigned short b, int j, float &best, int &arg, int &bad) {
    bad |= (b & 0x7F80u) == 0x7F80u && b != 0xFF80u;
    const float v = __uint_as_float((unsigned)b << 16);
    if (v > best) {
        best = v;
        arg = j;
    }
}

/* VEC: 16-byte loads of 8 logits (rows 16-byte aligned). A scalar 2-byte load per token kept
 * one block waiting on memory latency: 29 us for a row of 50,257 on the H200, about a tenth
 * of a batch-1 decode step. */
template <bool VEC>
__global__ void argmax_rows_kernel(int *out, const bf16 *logits, int V, int Vp) {
    __shared__ float s_v[32];
    __shared__ int s_i[32], s_bad[32];
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const unsigned short *row = reinterpret_cast<const unsigned short *>(logits) + (size_t)blockIdx.x * Vp;
    float best = -INFINITY;
    int arg = INT_MAX, bad = 0, j0 = 0;
    if (VEC) {
        const int n8 = V >> 3;
        const uint4 *row8 = reinterpret_cast<const uint4 *>(row);
#pragma unroll 4
        for (int c = threadIdx.x; c < n8; c += blockDim.x) {
            const uint4 p = __ldg(row8 + c);
            const unsigned w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                argmax_take((unsigned short)(w[e] & 0xFFFFu), 8 * c + 2 * e, best, arg, bad);
                argmax_take((unsigned short)(w[e] >> 16), 8 * c + 2 * e + 1, best, arg, bad);
            }
        }
        j0 = n8 << 3; /* the tail: indices above every vector's */
    }
    for (int j = j0 + threadIdx.x; j < V; j += blockDim.x) argmax_take(row[j], j, best, arg, bad);
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, arg, o);
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        better_of(best, arg, v2, i2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        s_v[warp] = best;
        s_i[warp] = arg;
        s_bad[warp] = bad;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < nw ? s_v[lane] : -INFINITY;
        arg = lane < nw ? s_i[lane] : INT_MAX;
        bad = lane < nw ? s_bad[lane] : 0;
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, best, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, arg, o);
            bad |= __shfl_xor_sync(0xffffffffu, bad, o);
            better_of(best, arg, v2, i2);
        }
        if (lane == 0) out[blockIdx.x] = (bad || arg == INT_MAX) ? -1 : arg;
    }
}

/* A captured decode step, and the op scratch it was recorded with: a graph that refers to a
 * scratch buffer that has since been reallocated must not be replayed. */
struct captured {
    cudaGraphExec_t exec;
    void *scratch;
};

/* The picks of one step as the tokens of the next (run_ahead): a failed pick (< 0) becomes the
 * placeholder 0, so the embedding never reads outside wte; generate.c discards such a step. */
__global__ void feed_tokens_kernel(int *dst, const int *src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int t = src[i];
        dst[i] = t >= 0 ? t : 0;
    }
}

} /* namespace llmc_decode */

using namespace llmc_decode;

llmc_status llmc_cuda_encoder_forward_at(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                         const llmc_tensor *wte_t, const llmc_tensor *wpe_t, int N, int C) {
    if (N < 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_forward_at: bad shape N=%d C=%d", N, C);
    if (llmc_cuda_is_int8(wte_t)) return llmc_cuda_embed_int8(dev, out, tokens, pos, wte_t, wpe_t, N, 1, C);
    LLMC_CUDA_WEIGHTS("encoder_forward_at", wte_t, wpe_t);
    const void *wte = wte_t->data, *wpe = wpe_t->data;
    if (N == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    const bool vec = C % 8 == 0 && llmc_is_aligned16(out) && llmc_is_aligned16(wte) && llmc_is_aligned16(wpe);
    const int vw = vec ? 8 : 1;
    const unsigned grid = (unsigned)llmc_cuda_grid(dev, (size_t)N * C / vw, 256, 16);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), vec ? embed_at_kernel<8> : embed_at_kernel<1>, dim3(grid),
                                       dim3(256), 0, s, (bf16 *)out, tokens, pos, (const bf16 *)wte,
                                       (const bf16 *)wpe, N, C));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_kv_append(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                                const int *pos, int B, int T, int NH, int HS, int maxlen) {
    if (B < 0 || T < 0 || NH <= 0 || HS <= 0 || maxlen <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "kv_append: bad shape B=%d T=%d NH=%d HS=%d maxlen=%d", B,
                                T, NH, HS, maxlen);
    if (B == 0 || T == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    const size_t elems = (size_t)B * T * NH * HS;
    const bool vec = HS % 8 == 0 && llmc_is_aligned16(kcache) && llmc_is_aligned16(vcache) && llmc_is_aligned16(qkv);
    const int vw = vec ? 8 : 1;
    const unsigned grid = (unsigned)llmc_cuda_grid(dev, elems / vw, 256, 16);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), vec ? kv_append_kernel<8> : kv_append_kernel<1>, dim3(grid),
                                       dim3(256), 0, s, (bf16 *)kcache, (bf16 *)vcache, (const bf16 *)qkv, slots, pos,
                                       B, T, NH, HS, maxlen));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_attention_decode(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                       const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                       int maxlen) {
    if (N < 0 || NH <= 0 || HS <= 0 || maxlen <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "attention_decode: bad shape N=%d NH=%d HS=%d maxlen=%d", N,
                                NH, HS, maxlen);
    if (N == 0) return LLMC_OK;
    if (!llmc_is_aligned16(qkv) || !llmc_is_aligned16(kcache) || !llmc_is_aligned16(vcache))
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "attention_decode: qkv and caches must be 16-byte aligned");
    bf16 *o = (bf16 *)out;
    const bf16 *q = (const bf16 *)qkv, *k = (const bf16 *)kcache, *v = (const bf16 *)vcache;
    switch (HS) {
    case 8: return launch_decode<8>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    case 16: return launch_decode<16>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    case 32: return launch_decode<32>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    case 64: return launch_decode<64>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    case 128: return launch_decode<128>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    case 256: return launch_decode<256>(dev, o, q, k, v, slots, lens, N, NH, maxlen);
    default:
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED,
                                "attention_decode: head size %d is not supported on CUDA (8, 16, 32, 64, 128 or 256)",
                                HS);
    }
}

llmc_status llmc_cuda_argmax_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "argmax_rows: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    if (N == 0) return LLMC_OK;
    const bool vec = Vp % 8 == 0 && llmc_is_aligned16(logits);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), vec ? argmax_rows_kernel<true> : argmax_rows_kernel<false>,
                                       dim3(N), dim3(512), 0, llmc_cuda_stream(dev), out, (const bf16 *)logits, V, Vp));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_feed_tokens(llmc_device *dev, int *dst, const int *src, int n) {
    if (n < 0) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "feed_tokens: bad count %d", n);
    if (n == 0) return LLMC_OK;
    feed_tokens_kernel<<<(n + 255) / 256, 256, 0, llmc_cuda_stream(dev)>>>(dst, src, n);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* ---- CUDA graphs of whole steps ---- */

llmc_status llmc_cuda_graph_begin(llmc_device *dev) {
    LLMC_CUDA_TRY(dev, cudaStreamBeginCapture(llmc_cuda_stream(dev), cudaStreamCaptureModeThreadLocal));
    return LLMC_OK;
}

llmc_status llmc_cuda_graph_end(llmc_device *dev, void **graph) {
    *graph = nullptr;
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(llmc_cuda_stream(dev), &g);
    if (e != cudaSuccess || !g) {
        if (g) cudaGraphDestroy(g);
        return llmc_cuda_check(dev, e != cudaSuccess ? e : cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture",
                               __FILE__, __LINE__);
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return llmc_cuda_check(dev, e, "cudaGraphInstantiate", __FILE__, __LINE__);
    captured *c = (captured *)malloc(sizeof *c);
    if (!c) {
        cudaGraphExecDestroy(exec);
        return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "out of host memory for a CUDA graph");
    }
    c->exec = exec;
    c->scratch = llmc_cuda_impl_of(dev)->scratch;
    *graph = c;
    return LLMC_OK;
}

llmc_status llmc_cuda_graph_launch(llmc_device *dev, void *graph) {
    captured *c = (captured *)graph;
    if (c->scratch != llmc_cuda_impl_of(dev)->scratch)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "CUDA graph is stale: the op scratch buffer was reallocated");
    LLMC_CUDA_TRY(dev, cudaGraphLaunch(c->exec, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

void llmc_cuda_graph_free(llmc_device *dev, void *graph) {
    (void)dev;
    captured *c = (captured *)graph;
    if (!c) return;
    cudaGraphExecDestroy(c->exec);
    free(c);
}

/* sample.cu — temperature, top-k and top-p sampling of one token per logits row on the GPU.
 *
 * It computes the host sampler's function (src/sampler.c, llmc_sample_token_at): the same
 * weights (src/sample_math.h, every float operation rounded on its own), the same sums in the
 * same order and the same walk to the draw, so that for the same logits and the same uniform
 * draw u it picks the same token. The host keeps the RNG streams and uploads one u per row;
 * only the token ids come back, never the V logits.
 *
 * One block per row, first copied into shared memory where it fits (V <= ~95,000 on the H200).
 * Logits are bf16 (exact in fp32). The steps:
 *   - max logit, the first index holding it, and NaN/+Inf detection (-1 for a bad row);
 *   - top-k (k <= SAMPLE_TOP_K_MAX): the tokens within a power of two of the max that hold the k
 *     best (at most SAMPLE_CAP of them, else the whole row) are listed in shared memory; a radix
 *     select on the order-preserving 32-bit key of the logit finds the k-th best value; every token at least that good is gathered into shared
 *     memory and bitonic-sorted best first (larger logit, then smaller index), then one thread
 *     walks the k best exactly as sampler.c's draw_sorted does;
 *   - no top-k: block sums of SAMPLE_BLOCK tokens, one thread per block with sampler.c's lane
 *     order, then one thread walks blocks and tokens as draw_blocks does;
 *   - top-p without top-k: sampler.c's bound on the lightest nucleus logit, the tokens above it
 *     sorted, and the nucleus edge found by one sequential double prefix sum.
 * Where the host sums in another order (the nucleus search, and the double log of its bound)
 * the tokens agree unless the mass lands within rounding (~1e-16 relative) of the threshold.
 * A row the shared buffers cannot hold (ties of the k-th value, or more than SAMPLE_CAP tokens
 * above the nucleus bound: flat distributions) gets -2, and the host samples it. */
#include "common.cuh"
#include "sample_math.h"
#include <limits.h>
#include <math.h>
#include <stdint.h>

#define SAMPLE_THREADS 512
#define SAMPLE_CAP 4096          /* tokens sorted in shared memory */
#define SAMPLE_TOP_K_MAX 1024    /* larger top_k: the host samples */
#define SAMPLE_MAX_BLOCKS 1024   /* block sums held: V <= 262,144 */
#define SAMPLE_HOST (-2)

namespace {

struct Row {
    const unsigned short *bits; /* bf16 patterns */
    int V;
    float mx, temperature;
    __device__ float logit(int i) const { return __uint_as_float((unsigned)bits[i] << 16); }
    __device__ float weight(int i) const { return sample_weight(logit(i), mx, temperature); }
};

/* Larger key: more likely. Equal floats (+0 and -0 included) get equal upper halves, and the
 * lower half prefers the smaller index, as sampler.c's better() does. */
__device__ __forceinline__ uint32_t order_key(float f) {
    uint32_t u = f == 0.0f ? 0u : __float_as_uint(f);
    return u ^ ((u >> 31) ? 0xFFFFFFFFu : 0x80000000u);
}
__device__ __forceinline__ uint64_t token_key(float f, int i) {
    return ((uint64_t)order_key(f) << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)i);
}
__device__ __forceinline__ int key_index(uint64_t k) { return (int)(0xFFFFFFFFu - (uint32_t)k); }

/* Tokens at least as likely as (v, i) are members (sampler.c's edge). */
struct Edge {
    float v;
    int i;
};
__device__ __forceinline__ bool member(float l, int j, Edge e) { return l > e.v || (l == e.v && j <= e.i); }

struct Shared {
    uint64_t keys[SAMPLE_CAP];
    double sums[SAMPLE_MAX_BLOCKS];
    unsigned hist[256];
    int count, pick, flag;
    float red_v[SAMPLE_THREADS / 32];
    int red_i[SAMPLE_THREADS / 32];
};

/* sampler.c's block_sum for block b: SAMPLE_LANES float partials, the tail and then the
 * partials added in double. */
__device__ double block_sum(const Row &r, int b, Edge e) {
    const int lo = b * SAMPLE_BLOCK, n = min(SAMPLE_BLOCK, r.V - lo);
    float acc[SAMPLE_LANES];
#pragma unroll
    for (int q = 0; q < SAMPLE_LANES; q++) acc[q] = 0.0f;
    int j = 0;
    for (; j + SAMPLE_LANES <= n; j += SAMPLE_LANES)
#pragma unroll
        for (int q = 0; q < SAMPLE_LANES; q++) {
            const float l = r.logit(lo + j + q);
            acc[q] = __fadd_rn(acc[q], __fmul_rn(r.weight(lo + j + q), (float)member(l, lo + j + q, e)));
        }
    double s = 0;
    for (; j < n; j++) s += (double)__fmul_rn(r.weight(lo + j), (float)member(r.logit(lo + j), lo + j, e));
#pragma unroll
    for (int q = 0; q < SAMPLE_LANES; q++) s += (double)acc[q];
    return s;
}

/* The block sums into sh.sums; returns their total (every thread gets it). */
__device__ double total_weight(const Row &r, Edge e, Shared &sh) {
    const int nb = (r.V + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) sh.sums[b] = block_sum(r, b, e);
    __syncthreads();
    __shared__ double z;
    if (threadIdx.x == 0) {
        double t = 0;
        for (int b = 0; b < nb; b++) t += sh.sums[b];
        z = t;
    }
    __syncthreads();
    const double out = z;
    __syncthreads();
    return out;
}

/* sampler.c's draw_blocks, by thread 0, on the sums total_weight(r, e) left. */
__device__ int draw_blocks(const Row &r, Edge e, int fallback, float u, const Shared &sh, double z) {
    const int nb = (r.V + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    const double target = (double)u * z;
    double cum = 0;
    int b = 0, last_b = -1;
    for (; b < nb; b++) {
        if (sh.sums[b] <= 0) continue;
        last_b = b;
        if (cum + sh.sums[b] > target) break;
        cum += sh.sums[b];
    }
    if (b == nb) b = last_b;
    if (b < 0) return fallback;
    const int lo = b * SAMPLE_BLOCK, hi = min(lo + SAMPLE_BLOCK, r.V);
    int last = fallback;
    for (int i = lo; i < hi; i++) {
        if (!member(r.logit(i), i, e)) continue;
        const double w = r.weight(i);
        if (w <= 0) continue;
        last = i;
        cum += w;
        if (cum > target) return i;
    }
    return last;
}

/* Sorts sh.keys[0 .. n) best first (bitonic, padded with keys below every real one); returns n,
 * or -1 when n is more than SAMPLE_CAP. */
__device__ int sort_keys(int n, Shared &sh) {
    if (n > SAMPLE_CAP) return -1;
    int n2 = 1;
    while (n2 < n) n2 <<= 1;
    for (int i = n + threadIdx.x; i < n2; i += blockDim.x) sh.keys[i] = 0; /* below every real key */
    __syncthreads();
    for (int k = 2; k <= n2; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n2; i += blockDim.x) {
                const int p = i ^ j;
                if (p > i) {
                    const uint64_t a = sh.keys[i], b = sh.keys[p];
                    if (((i & k) == 0) ? a < b : a > b) {
                        sh.keys[i] = b;
                        sh.keys[p] = a;
                    }
                }
            }
            __syncthreads();
        }
    return n;
}

/* Gathers the keys of tokens whose order key is >= lo into sh.keys and sorts them best first;
 * returns their count, or -1 when there are more than SAMPLE_CAP. */
__device__ int gather_sorted(const Row &r, uint32_t lo, Shared &sh) {
    if (threadIdx.x == 0) sh.count = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < r.V; i += blockDim.x) {
        const float l = r.logit(i);
        if (order_key(l) >= lo) {
            const int at = atomicAdd(&sh.count, 1); /* any slot: the sort fixes the order */
            if (at < SAMPLE_CAP) sh.keys[at] = token_key(l, i);
        }
    }
    __syncthreads();
    const int n = sh.count;
    __syncthreads();
    return sort_keys(n, sh);
}

/* The order key of the k-th best token: a radix select, 8 bits a pass. The logits are bf16, so
 * a key's low 16 bits follow from its sign (0 for zero and above, 0xFFFF below) and two passes
 * settle it. A warp adds its lanes of one bin at once: the top byte (sign and exponent) puts
 * most of a row into a few bins, and one shared atomic per token serialized on them. */
template <class Key> /* key(i): the order key of item i < n */
__device__ uint32_t kth_key(int n, Key key_of, int k, Shared &sh) {
    uint32_t prefix = 0, mask = 0;
    int need = k;
    for (int shift = 24; shift >= 16; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) sh.hist[i] = 0;
        __syncthreads();
        for (int i0 = 0; i0 < n; i0 += blockDim.x) { /* whole warps: match_any needs them all */
            const int i = i0 + (int)threadIdx.x;
            int bin = -1;
            if (i < n) {
                const uint32_t key = key_of(i);
                if ((key & mask) == prefix) bin = (int)((key >> shift) & 255u);
            }
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && (int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], __popc(peers));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int d = 255, above = 0;
            while (d > 0 && above + (int)sh.hist[d] < need) above += (int)sh.hist[d--];
            sh.pick = d;
            sh.count = need - above;
        }
        __syncthreads();
        prefix |= (uint32_t)sh.pick << shift;
        mask |= 255u << shift;
        need = sh.count;
        __syncthreads();
    }
    return prefix | ((prefix >> 31) ? 0u : 0xFFFFu);
}

/* Top-k from a short list: the tokens within T of the max logit M, for the smallest T of
 * 2^-1 .. 2^6 that holds at least k of them (and at most SAMPLE_CAP), contain the k best, and
 * the radix select and the gather then run over that list in shared memory instead of over the
 * row (on the H200 the row passes took ~90 us of a batch-1 step). Returns the k best sorted in
 * sh.keys and their count (>= k: ties of the k-th), or -2 when no T fits (the row path). */
constexpr int kCandLevels = 8;
__device__ int top_k_candidates(const Row &r, int k, Shared &sh) {
    float thr[kCandLevels];
    int cnt[kCandLevels];
#pragma unroll
    for (int j = 0; j < kCandLevels; j++) {
        thr[j] = r.mx - ldexpf(1.0f, j - 1);
        cnt[j] = 0;
    }
    for (int i = threadIdx.x; i < r.V; i += blockDim.x) {
        const float l = r.logit(i);
#pragma unroll
        for (int j = 0; j < kCandLevels; j++) cnt[j] += l >= thr[j];
    }
    __shared__ int s_cnt[kCandLevels];
    if (threadIdx.x < kCandLevels) s_cnt[threadIdx.x] = 0;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kCandLevels; j++) {
        int c = cnt[j];
        for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
        if ((threadIdx.x & 31) == 0) atomicAdd(&s_cnt[j], c);
    }
    __syncthreads();
    int level = -1;
    for (int j = 0; j < kCandLevels && level < 0; j++)
        if (s_cnt[j] >= k) level = j;
    if (level < 0 || s_cnt[level] > SAMPLE_CAP) return -2; /* uniform: every thread read the same counts */
    const float t = thr[level];
    if (threadIdx.x == 0) sh.count = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < r.V; i += blockDim.x) {
        const float l = r.logit(i);
        if (l >= t) sh.keys[atomicAdd(&sh.count, 1)] = token_key(l, i);
    }
    __syncthreads();
    const int n = sh.count;
    const uint32_t lo = kth_key(n, [&](int i) { return (uint32_t)(sh.keys[i] >> 32); }, k, sh);
    /* keep the keys >= lo, in place: each thread takes its items out first */
    constexpr int kPer = SAMPLE_CAP / SAMPLE_THREADS;
    uint64_t mine[kPer];
#pragma unroll
    for (int m = 0; m < kPer; m++) {
        const int i = (int)threadIdx.x + m * SAMPLE_THREADS;
        mine[m] = i < n ? sh.keys[i] : 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) sh.count = 0;
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kPer; m++)
        if ((int)threadIdx.x + m * SAMPLE_THREADS < n && (uint32_t)(mine[m] >> 32) >= lo)
            sh.keys[atomicAdd(&sh.count, 1)] = mine[m];
    __syncthreads();
    const int kept = sh.count;
    __syncthreads();
    return sort_keys(kept, sh);
}

/* Max logit (as sampler.c's scan_max: on the raw bit order), its first index, and bad. */
__device__ void scan_row(const Row &r, float *mx, int *arg, int *bad, Shared &sh) {
    int32_t best = INT_MIN;
    int b = 0;
    for (int i = threadIdx.x; i < r.V; i += blockDim.x) {
        const unsigned short h = r.bits[i];
        b |= (h & 0x7F80u) == 0x7F80u && h != 0xFF80u; /* NaN or +Inf */
        int32_t k = (int32_t)((uint32_t)h << 16);
        k ^= (int32_t)((0u - ((uint32_t)k >> 31)) & 0x7FFFFFFFu);
        best = max(best, k);
    }
    for (int o = 16; o > 0; o >>= 1) {
        best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
        b |= __shfl_xor_sync(0xffffffffu, b, o);
    }
    if ((threadIdx.x & 31) == 0) {
        sh.red_i[threadIdx.x >> 5] = best;
        atomicOr(&sh.flag, b);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t m = INT_MIN;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) m = max(m, sh.red_i[w]);
        m ^= (int32_t)((0u - ((uint32_t)m >> 31)) & 0x7FFFFFFFu);
        sh.red_v[0] = __int_as_float(m);
        sh.pick = INT_MAX;
    }
    __syncthreads();
    *mx = sh.red_v[0];
    *bad = sh.flag;
    int first = INT_MAX;
    for (int i = threadIdx.x; i < r.V && first == INT_MAX; i += blockDim.x)
        if (r.logit(i) == *mx) first = i;
    atomicMin(&sh.pick, first);
    __syncthreads();
    *arg = sh.pick;
    __syncthreads();
}

/* STAGE: the row is first copied into shared memory (16-byte loads, rows 16-byte aligned), and
 * every pass after reads it there. Each pass over global memory was a scalar 2-byte load per
 * token and a memory latency per few: 117 us for one row of 50,257 on the H200. */
template <bool STAGE>
__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows_kernel(int *out, const bf16 *logits, int V, int Vp, float temperature, int top_k, float top_p,
                       const float *draws) {
    __shared__ Shared sh;
    extern __shared__ __align__(16) unsigned char staged[];
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    if (threadIdx.x == 0) sh.flag = 0;
    Row r;
    r.bits = reinterpret_cast<const unsigned short *>(logits) + (size_t)blockIdx.x * Vp;
    if (STAGE) {
        const uint4 *src = reinterpret_cast<const uint4 *>(r.bits);
        uint4 *dst = reinterpret_cast<uint4 *>(staged);
#pragma unroll 4
        for (int c = threadIdx.x; c < (V + 7) / 8; c += blockDim.x) dst[c] = __ldg(src + c); /* Vp >= V, Vp % 8 == 0 */
        r.bits = reinterpret_cast<const unsigned short *>(staged);
    }
    __syncthreads();
    r.V = V;
    r.temperature = temperature;
    float mx;
    int arg, bad;
    scan_row(r, &mx, &arg, &bad, sh);
    r.mx = mx;
    const float u = draws[blockIdx.x];
    int tok;
    if (bad || mx == -INFINITY) {
        tok = -1;
    } else if (temperature == 0.0f) {
        tok = arg;
    } else if (top_k > 0 && top_k < V) {
        tok = SAMPLE_HOST;
        int n = top_k <= SAMPLE_TOP_K_MAX ? top_k_candidates(r, top_k, sh) : -1;
        if (n == -2)
            n = gather_sorted(r, kth_key(r.V, [&](int i) { return order_key(r.logit(i)); }, top_k, sh), sh);
        if (n >= top_k && threadIdx.x == 0) { /* draw_sorted over the k best */
            double zk = 0;
            for (int j = 0; j < top_k; j++) zk += r.weight(key_index(sh.keys[j]));
            const double need = top_p < 1.0f ? (double)top_p * zk : INFINITY;
            double mass = 0;
            int m = 0;
            do mass += r.weight(key_index(sh.keys[m++]));
            while (m < top_k && mass < need);
            const double target = (double)u * mass;
            double cum = 0;
            tok = key_index(sh.keys[0]);
            for (int j = 0; j < m; j++) {
                const int i = key_index(sh.keys[j]);
                const float w = r.weight(i);
                if (w <= 0) continue;
                tok = i;
                cum += w;
                if (cum > target) break;
            }
        }
    } else {
        const Edge all = {-INFINITY, INT_MAX};
        double z = total_weight(r, all, sh);
        Edge e = all;
        tok = 0;
        if (top_p < 1.0f && V > 1) { /* sampler.c's nucleus_sample */
            const double need = (double)top_p * z;
            const float cut = mx + (float)((double)temperature * log((1.0 - (double)top_p) / (V - 1) * z));
            const double heavy = total_weight(r, Edge{cut, INT_MAX}, sh);
            const int n = heavy >= need ? gather_sorted(r, order_key(cut), sh) : -1;
            if (n <= 0) {
                tok = SAMPLE_HOST;
            } else if (threadIdx.x == 0) {
                double acc = 0;
                int j = 0;
                for (; j < n; j++) {
                    acc += r.weight(key_index(sh.keys[j]));
                    if (acc >= need) break;
                }
                const int i = key_index(sh.keys[j < n ? j : n - 1]);
                sh.red_v[0] = r.logit(i);
                sh.red_i[0] = i;
            }
            __syncthreads();
            if (tok != SAMPLE_HOST) {
                e = Edge{sh.red_v[0], sh.red_i[0]};
                z = total_weight(r, e, sh);
            }
        }
        if (tok != SAMPLE_HOST && threadIdx.x == 0) tok = draw_blocks(r, e, arg, u, sh, z);
    }
    if (threadIdx.x == 0) out[blockIdx.x] = tok;
}

} // namespace

llmc_status llmc_cuda_sample_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                                  const llmc_sampling *s, const float *u) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "sample_rows: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    if (llmc_sampling_validate(s, dev->err, sizeof dev->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    if (N == 0) return LLMC_OK;
    if (V > SAMPLE_BLOCK * SAMPLE_MAX_BLOCKS) /* every row to the host */
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "sample_rows: V=%d is more than the device sampler holds", V);
    const size_t row_bytes = (size_t)(V + 7) / 8 * 16;
    const bool stage = Vp % 8 == 0 && llmc_is_aligned16(logits) &&
                       row_bytes + sizeof(Shared) <= (size_t)llmc_cuda_impl_of(dev)->smem_optin;
    size_t *opted = &llmc_cuda_impl_of(dev)->sample_smem_optin;
    if (stage && row_bytes > *opted) {
        LLMC_CUDA_TRY(dev, cudaFuncSetAttribute(sample_rows_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                (int)row_bytes));
        *opted = row_bytes;
    }
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), stage ? sample_rows_kernel<true> : sample_rows_kernel<false>,
                                       dim3(N), dim3(SAMPLE_THREADS), stage ? row_bytes : 0, llmc_cuda_stream(dev), out,
                                       (const bf16 *)logits, V, Vp, s->temperature, s->top_k, s->top_p, u));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* decode_persistent.cu — the transformer blocks of one decode step as a single persistent kernel.
 *
 * At decode batch sizes each layer's products are streams over the weights (a few MB) and the
 * per-op path (infer.c: ~9 kernels a layer) spends most of a token waiting on kernel boundaries:
 * each one drains the memory pipeline and its small grid never fills the chip. Here one block
 * per SM runs every layer, with five phases a layer separated by grid-wide barriers (a counter
 * in device memory; the launch is cooperative, so every block is resident):
 *   A  layernorm 1 (every block, redundantly, of all rows), QKV product; its epilogue writes
 *      q, k, v and appends k, v to the cache;
 *   B  attention of each (row, head) over its cached keys, one block per pair;
 *   C  attention projection + residual -> res2;
 *   D  layernorm 2 (every block), FC product + GELU -> fch;
 *   E  FC projection + residual -> x, the next layer's input.
 * Each block owns a fixed slice of every product's output columns, so it knows in advance
 * which weight bytes it will read: at the start of a phase it prefetches into L2 the slice of
 * the product `ahead` products later, and (where the slices fit in shared memory, "staged")
 * copies the next product's slice into shared memory with cp.async before the barrier. Bias
 * and residual values are loaded into registers a phase early. The cache rows a block will
 * attend are prefetched at the start of the layer.
 *
 * The numbers are the per-op path's: bf16 is stored at the same points (x, ln, qkv, atty, the
 * matmul outputs, fch after GELU), products and softmax accumulate in fp32. Only the order of
 * fp32 sums differs, so results agree to bf16 rounding (tests/test_decode_persistent.py and the
 * lab dev/cuda/decode_persistent.cu compare both).
 * Activations written by other blocks are read with ld.global.cg (L2): L1 is not coherent
 * within a kernel. The final layernorm ends the kernel; the LM head stays a gemv launch. */
#include "common.cuh"

namespace llmc_persist {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kHS = 64;      /* head size it takes (every GPT-2 size) */
constexpr int kMaxRows = 8;  /* rows (sequences) of a step it takes */
constexpr int kGroups = kWarps * (32 / (kHS / 8)); /* attention lane groups of 8 lanes */

struct Params {
    const bf16 *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attw, *attb, *ln2w, *ln2b, *fcw, *fcb, *fcpw, *fcpb, *lnfw,
        *lnfb;
    bf16 *kc, *vc;
    size_t cache_layer; /* elements of one layer's K (or V) cache */
    int maxlen;
    bf16 *x, *res2, *qkv, *atty, *fch, *out;
    const int *tokens, *pos, *slots, *lens;
    unsigned *sync;
    int n, L, C, NH, tasks_max;
    int ahead;    /* products prefetched into L2 ahead of the one running (0: no prefetch) */
    int staged;   /* weight slices go through shared memory (they fit) */
    unsigned long long *trace; /* optional: barrier arrive / leave times (llmc_decode_step) */
    float sl2; /* log2(e) / sqrt(HS): scores in log2 units */
};

/* ---- memory helpers ---- */
__device__ __forceinline__ int4 ld_cg16(const void *p) { return __ldcg(reinterpret_cast<const int4 *>(p)); }
/* L2 prefetch of a byte range by the whole block, one 128-byte line per instruction: these
 * never stall the issuing thread. (One cp.async.bulk.prefetch.L2 per range held thread 0 for
 * microseconds a phase, measured with the kernel's barrier trace.) */
__device__ __forceinline__ void prefetch_l2(const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    for (size_t o = (size_t)threadIdx.x * 128; o < bytes; o += (size_t)kThreads * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + o));
}
/* A 16-byte-aligned range around elements [lo, hi) of a bf16 vector of n (n % 8 == 0). */
__device__ __forceinline__ void prefetch_span(const bf16 *v, int lo, int hi, int n) {
    lo &= ~7;
    hi = min(n, (hi + 7) & ~7);
    if (hi > lo) prefetch_l2(v + lo, (size_t)(hi - lo) * 2);
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_all;" ::: "memory"); }

/* All blocks arrive, then all leave; target grows by gridDim.x per barrier. */
/* The release add is cumulative over the block's writes ordered before it by the bar.sync, and
 * the acquire load orders the other blocks' writes before everything after the second bar.sync.
 * trace (optional, nb barriers): globaltimer at arrival [block][k] and leave [G][block][k]. */
__device__ __forceinline__ void grid_sync(unsigned *ctr, unsigned &target, unsigned long long *trace, int nb) {
    target += gridDim.x;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long t0 = 0, t1;
        if (trace) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctr) : "memory");
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory");
        } while (v < target);
        if (trace) {
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
            const size_t k = target / gridDim.x - 1;
            trace[(size_t)blockIdx.x * nb + k] = t0;
            trace[((size_t)gridDim.x + blockIdx.x) * nb + k] = t1;
        }
    }
    __syncthreads();
}

/* This block's output columns of a product with OC outputs: a balanced contiguous share. */
__device__ __forceinline__ void my_cols(int OC, int &c0, int &c1) {
    c0 = (int)((long long)OC * blockIdx.x / gridDim.x);
    c1 = (int)((long long)OC * (blockIdx.x + 1) / gridDim.x);
}
/* k splits of a product: enough (column, k segment) tasks for two per warp, segments of at
 * least 32 chunks of 8. Host and device agree through this one function. */
__host__ __device__ __forceinline__ int ksplit(int ncols, int K) {
    int ks = ncols > 0 ? (2 * kWarps) / ncols : 1;
    const int most = K / 256 > 1 ? K / 256 : 1;
    return ks < 1 ? 1 : (ks > most ? most : ks);
}

/* The four products of a layer, in phase order. */
struct Product {
    const bf16 *w, *b;
    int K, OC;
};
__device__ __forceinline__ Product product(const Params &p, int phase) {
    const int l = phase / 4, C = p.C;
    const size_t CC = (size_t)C * C;
    switch (phase % 4) {
    case 0: return {p.qkvw + l * 3 * CC, p.qkvb + (size_t)l * 3 * C, C, 3 * C};
    case 1: return {p.attw + l * CC, p.attb + (size_t)l * C, C, C};
    case 2: return {p.fcw + l * 4 * CC, p.fcb + (size_t)l * 4 * C, C, 4 * C};
    default: return {p.fcpw + l * 4 * CC, p.fcpb + (size_t)l * C, 4 * C, C};
    }
}

/* Thread 0: this block's weight and bias slice of product `phase` (and the layernorm weights
 * its phase reads) into L2. */
__device__ void prefetch_product(const Params &p, int phase) {
    if (phase >= 4 * p.L || !p.ahead) return;
    const Product q = product(p, phase);
    int c0, c1;
    my_cols(q.OC, c0, c1);
    prefetch_l2(q.w + (size_t)c0 * q.K, (size_t)(c1 - c0) * q.K * 2);
    prefetch_span(q.b, c0, c1, q.OC);
    const int l = phase / 4;
    if (phase % 4 == 0) {
        prefetch_span(p.ln1w + (size_t)l * p.C, 0, p.C, p.C);
        prefetch_span(p.ln1b + (size_t)l * p.C, 0, p.C, p.C);
    } else if (phase % 4 == 2) {
        prefetch_span(p.ln2w + (size_t)l * p.C, 0, p.C, p.C);
        prefetch_span(p.ln2b + (size_t)l * p.C, 0, p.C, p.C);
    }
}

/* Thread 0: the cached keys and values this block will attend in layer l (all but the new one). */
__device__ void prefetch_cache(const Params &p, int l) {
    if (!p.ahead) return;
    for (int it = blockIdx.x; it < p.n * p.NH; it += gridDim.x) {
        const int r = it / p.NH, h = it - r * p.NH;
        const size_t at = l * p.cache_layer + ((size_t)__ldg(p.slots + r) * p.NH + h) * p.maxlen * kHS;
        const size_t bytes = (size_t)(__ldg(p.lens + r) - 1) * kHS * 2;
        prefetch_l2(p.kc + at, bytes);
        prefetch_l2(p.vc + at, bytes);
    }
}

/* Shared memory beyond the staged rows: task partials, the attention merge, and (staged) the
 * next product's weight slice and its layernorm's weights. */
struct Smem {
    bf16 *u;
    float *part, *att;
    bf16 *w, *lnw, *lnb;
};

/* Epilogue items (row, column) of a thread: i = threadIdx.x + k * kThreads, k < kItems. Values
 * an item needs from global memory (bias, residual) are loaded into registers a phase early:
 * a load stalls only the instruction that uses its value, so these never wait. */
constexpr int kItems = 2;
struct Carry {
    bf16 v[kItems];
};
/* Carry of element (r, c0 + c) of rows of width `width` for the items of an OC-output product. */
__device__ __forceinline__ void load_items(Carry &out, const bf16 *src, size_t width, int OC, int n, bool rows) {
    int c0, c1;
    my_cols(OC, c0, c1);
    const int nc = c1 - c0;
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const int i = threadIdx.x + k * kThreads;
        if (nc > 0 && i < n * nc) out.v[k] = __ldcg(src + (rows ? (size_t)(i / nc) * width : 0) + c0 + i % nc);
    }
}

/* All threads, before the barrier that ends the phase: start the cp.async copies product
 * `phase` reads (its weight slice and layernorm weights, when staged) and load its bias into
 * registers, so that both arrive while the grid synchronizes. */
__device__ void load_product(const Params &p, const Smem &sm, int phase, Carry &bias) {
    if (phase >= 4 * p.L) return;
    const Product q = product(p, phase);
    load_items(bias, q.b, 0, q.OC, p.n, false);
    if (!p.staged) return;
    int c0, c1;
    my_cols(q.OC, c0, c1);
    const size_t n16 = (size_t)(c1 - c0) * q.K / 8;
    const bf16 *src = q.w + (size_t)c0 * q.K;
    for (size_t i = threadIdx.x; i < n16; i += kThreads) cp_async16(sm.w + i * 8, src + i * 8);
    const int l = phase / 4;
    if (phase % 4 == 0 || phase % 4 == 2) {
        const bf16 *w = (phase % 4 == 0 ? p.ln1w : p.ln2w) + (size_t)l * p.C;
        const bf16 *b = (phase % 4 == 0 ? p.ln1b : p.ln2b) + (size_t)l * p.C;
        for (int i = threadIdx.x; i < p.C / 8; i += kThreads) {
            cp_async16(sm.lnw + i * 8, w + i * 8);
            cp_async16(sm.lnb + i * 8, b + i * 8);
        }
    }
    cp_async_commit();
}

/* ---- staging rows into shared memory (u: NR rows of K bf16; rows >= n are zero) ---- */
template <int NR>
__device__ void stage_rows(bf16 *u, const bf16 *src, int n, int K) {
    const int K8 = K / 8;
    for (int i = threadIdx.x; i < NR * K8; i += kThreads) {
        const int r = i / K8, c = i - r * K8;
        int4 v = make_int4(0, 0, 0, 0);
        if (r < n) v = ld_cg16(src + (size_t)r * K + c * 8);
        *reinterpret_cast<int4 *>(u + (size_t)r * K + c * 8) = v;
    }
    __syncthreads();
}

/* x rows of the first layer: wte[token] + wpe[pos], rounded as the encoder stores them. Block 0
 * also writes them to p.x, the residual that phase C adds. */
template <int NR>
__device__ void stage_embedding(const Params &p, bf16 *u) {
    const int C = p.C, C8 = C / 8;
    for (int i = threadIdx.x; i < NR * C8; i += kThreads) {
        const int r = i / C8, c = i - r * C8;
        int4 v = make_int4(0, 0, 0, 0);
        if (r < p.n) {
            float a[8], b[8];
            ld_bf16<8>(a, p.wte + (size_t)__ldg(p.tokens + r) * C + c * 8);
            ld_bf16<8>(b, p.wpe + (size_t)__ldg(p.pos + r) * C + c * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] += b[k];
            v = pack_bf16x8(a);
            if (blockIdx.x == 0) *reinterpret_cast<int4 *>(p.x + (size_t)r * C + c * 8) = v;
        }
        *reinterpret_cast<int4 *>(u + (size_t)r * C + c * 8) = v;
    }
    __syncthreads();
}

/* Layernorm of the staged rows in place (warp r takes row r), as layernorm_forward computes it:
 * two passes over the stored bf16 row, output rounded to bf16. dst (optional): rows also go there. */
template <int NR>
__device__ void layernorm_rows(bf16 *u, int n, int C, const bf16 *w, const bf16 *b, bf16 *dst) {
    const int lane = threadIdx.x & 31, C8 = C / 8;
    for (int r = threadIdx.x >> 5; r < n; r += kWarps) {
        bf16 *row = u + (size_t)r * C;
        float sum = 0.f;
        for (int c = lane; c < C8; c += 32) {
            float a[8];
            ld_bf16<8>(a, row + c * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) sum += a[k];
        }
        const float m = warp_sum(sum) / (float)C;
        float sq = 0.f;
        for (int c = lane; c < C8; c += 32) {
            float a[8];
            ld_bf16<8>(a, row + c * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) sq += (a[k] - m) * (a[k] - m);
        }
        const float s = rsqrtf(warp_sum(sq) / (float)C + 1e-5f);
        for (int c = lane; c < C8; c += 32) {
            float a[8], wv[8], bv[8];
            ld_bf16<8>(a, row + c * 8);
            ld_bf16<8>(wv, w + c * 8);
            ld_bf16<8>(bv, b + c * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] = (a[k] - m) * s * wv[k] + bv[k];
            const int4 v = pack_bf16x8(a);
            *reinterpret_cast<int4 *>(row + c * 8) = v;
            if (dst) *reinterpret_cast<int4 *>(dst + (size_t)r * C + c * 8) = v;
        }
    }
    __syncthreads();
}

/* ---- one product: out[r, col] = epi(r, col, sum_k u[r, k] W[col, k]) for this block's columns.
 * A task is (column, k segment); each lane reads 16 bytes of W (8 consecutive k) at a time, four
 * loads in flight, and multiplies them with all NR staged rows. The segments' sums meet in
 * shared memory and are added in segment order: deterministic. */
template <int NR, class Epi>
__device__ __forceinline__ void product_rows(const Params &p, const Smem &sm, int phase, const Carry &bias,
                                             Carry &next_bias, Epi epi) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n = p.n;
    const Product q = product(p, phase);
    const int K = q.K, K8 = K / 8;
    const bf16 *u = sm.u;
    float *part = sm.part;
    int c0, c1;
    my_cols(q.OC, c0, c1);
    const int ncols = c1 - c0, ks = ksplit(ncols, K), tasks = ncols * ks;
    if (p.staged) {
        cp_async_wait_all();
        __syncthreads();
    }
    for (int t = warp; t < tasks; t += kWarps) {
        const int col = c0 + t / ks, seg = t - (t / ks) * ks;
        const int lo = seg * K8 / ks, hi = (seg + 1) * K8 / ks;
        const bf16 *w = (p.staged ? sm.w + (size_t)(col - c0) * K : q.w + (size_t)col * K);
        float acc[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = 0.f;
        for (int i = lo + lane; i < hi; i += 4 * 32) {
            int4 wv[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                wv[j] = i + 32 * j >= hi ? make_int4(0, 0, 0, 0)
                        : p.staged        ? *reinterpret_cast<const int4 *>(w + (size_t)(i + 32 * j) * 8)
                                          : llmc_ld_stream16(w + (size_t)(i + 32 * j) * 8);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (i + 32 * j >= hi) break;
                float wf[8];
                unpack_bf16x8(wf, wv[j]);
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    float xf[8];
                    unpack_bf16x8(xf, *reinterpret_cast<const int4 *>(u + (size_t)r * K + (i + 32 * j) * 8));
#pragma unroll
                    for (int k = 0; k < 8; k++) acc[r] = fmaf(wf[k], xf[k], acc[r]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = warp_sum(acc[r]);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < NR; r++) part[t * NR + r] = acc[r];
        }
    }
    __syncthreads();
    load_product(p, sm, phase + 1, next_bias); /* this slice is read: bring in the next product's */
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const int i = threadIdx.x + k * kThreads;
        if (i >= n * ncols) break;
        const int r = i / ncols, c = i - r * ncols;
        float v = 0.f;
        for (int s = 0; s < ks; s++) v += part[(c * ks + s) * NR + r];
        epi(r, c0 + c, k, v + __bfloat162float(bias.v[k]));
    }
    __syncthreads();
}

/* ---- phase B: attention of each (row, head) of this block over its cache prefix. Lane groups
 * of 8 lanes share a key (16 bytes each of K and V); each group keeps an online softmax, and the
 * groups are merged in a fixed order (decode.cu's scheme without the split over blocks). */
__device__ void attention_rows(const Params &p, int l, float *sm) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane & 7, grp = lane >> 3, g = warp * 4 + grp;
    const int C = p.C;
    float *s_m = sm, *s_l = sm + kGroups, *s_acc = sm + 2 * kGroups; /* s_acc: kGroups x kHS */
    for (int it = blockIdx.x; it < p.n * p.NH; it += gridDim.x) {
        const int r = it / p.NH, h = it - r * p.NH;
        const int len = __ldg(p.lens + r);
        float q[8];
        unpack_bf16x8(q, ld_cg16(p.qkv + (size_t)r * 3 * C + h * kHS + sub * 8));
#pragma unroll
        for (int d = 0; d < 8; d++) q[d] *= p.sl2;
        const size_t base = l * p.cache_layer + ((size_t)__ldg(p.slots + r) * p.NH + h) * p.maxlen * kHS + sub * 8;
        const bf16 *K = p.kc + base, *V = p.vc + base;
        float m = -INFINITY, lsum = 0.f, acc[8];
#pragma unroll
        for (int d = 0; d < 8; d++) acc[d] = 0.f;
        for (int jb = warp * 4; jb < len; jb += kWarps * 4) { /* uniform per warp: shuffles are safe */
            const int j = jb + grp;
            const bool ok = j < len;
            float k[8], v[8];
            if (ok) {
                unpack_bf16x8(k, ld_cg16(K + (size_t)j * kHS));
                unpack_bf16x8(v, ld_cg16(V + (size_t)j * kHS));
            } else {
#pragma unroll
                for (int d = 0; d < 8; d++) k[d] = v[d] = 0.f;
            }
            attn_online_step<kHS / 8>(q, k, v, ok, m, lsum, acc);
        }
        if (sub == 0) {
            s_m[g] = m;
            s_l[g] = lsum;
        }
#pragma unroll
        for (int d = 0; d < 8; d++) s_acc[g * kHS + sub * 8 + d] = acc[d];
        __syncthreads();
        if (threadIdx.x < kHS) {
            const int d = threadIdx.x;
            float M = -INFINITY;
            for (int i = 0; i < kGroups; i++) M = fmaxf(M, s_m[i]);
            float L = 0.f, A = 0.f;
            for (int i = 0; i < kGroups; i++) {
                const float w = s_l[i] > 0.f ? exp2f(s_m[i] - M) : 0.f;
                L += s_l[i] * w;
                A += s_acc[i * kHS + d] * w;
            }
            p.atty[(size_t)r * C + h * kHS + d] = __float2bfloat16_rn(A / L);
        }
        __syncthreads();
    }
}

template <int NR>
__global__ void __launch_bounds__(kThreads, 1) decode_layers_kernel(Params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int C = p.C, n = p.n, NH = p.NH;
    Smem sm;
    sm.u = reinterpret_cast<bf16 *>(smem);                                 /* NR x 4C */
    sm.part = reinterpret_cast<float *>(sm.u + (size_t)NR * 4 * C);       /* tasks_max x NR */
    sm.att = sm.part + (size_t)p.tasks_max * NR;                           /* kGroups x (HS + 2) */
    sm.lnw = reinterpret_cast<bf16 *>(sm.att + kGroups * (kHS + 2));     /* C, C (staged) */
    sm.lnb = sm.lnw + C;
    sm.w = sm.lnb + C;                                                     /* a weight slice (staged) */
    unsigned target = 0;
    for (int ph = 0; ph < p.ahead; ph++) prefetch_product(p, ph);
    Carry bias[2], res; /* bias[ph & 1]: the product's, the other: the next one's */
    load_product(p, sm, 0, bias[0]);

    for (int l = 0; l < p.L; l++) {
        const int ph = 4 * l;
        const bf16 *ln1w = p.staged ? sm.lnw : p.ln1w + (size_t)l * C, *ln1b = p.staged ? sm.lnb : p.ln1b + (size_t)l * C;
        const bf16 *ln2w = p.staged ? sm.lnw : p.ln2w + (size_t)l * C, *ln2b = p.staged ? sm.lnb : p.ln2b + (size_t)l * C;
        /* A: layernorm 1, QKV; k and v also into the cache */
        prefetch_product(p, ph + p.ahead);
        prefetch_cache(p, l);
        if (l == 0)
            stage_embedding<NR>(p, sm.u);
        else
            stage_rows<NR>(sm.u, p.x, n, C);
        if (p.staged) { /* the layernorm weights came with the slice */
            cp_async_wait_all();
            __syncthreads();
        }
        layernorm_rows<NR>(sm.u, n, C, ln1w, ln1b, nullptr);
        product_rows<NR>(p, sm, ph, bias[0], bias[1], [&](int r, int col, int, float v) {
            const bf16 o = __float2bfloat16_rn(v);
            p.qkv[(size_t)r * 3 * C + col] = o;
            if (col >= C) {
                const int kv = col >= 2 * C, c = col - C - kv * C, h = c / kHS, d = c - h * kHS;
                const size_t at = l * p.cache_layer +
                                  (((size_t)__ldg(p.slots + r) * NH + h) * p.maxlen + __ldg(p.pos + r)) * kHS + d;
                (kv ? p.vc : p.kc)[at] = o;
            }
        });
        grid_sync(p.sync, target, p.trace, 5 * p.L);
        /* B: attention; the residual phase C adds comes in meanwhile */
        load_items(res, p.x, C, C, n, true);
        attention_rows(p, l, sm.att);
        grid_sync(p.sync, target, p.trace, 5 * p.L);
        /* C: attention projection + residual */
        prefetch_product(p, ph + 1 + p.ahead);
        stage_rows<NR>(sm.u, p.atty, n, C);
        product_rows<NR>(p, sm, ph + 1, bias[1], bias[0], [&](int r, int col, int k, float v) {
            const float o = __bfloat162float(__float2bfloat16_rn(v));
            p.res2[(size_t)r * C + col] = __float2bfloat16_rn(__bfloat162float(res.v[k]) + o);
        });
        grid_sync(p.sync, target, p.trace, 5 * p.L);
        /* D: layernorm 2, FC + GELU; the residual of phase E comes in meanwhile */
        prefetch_product(p, ph + 2 + p.ahead);
        load_items(res, p.res2, C, C, n, true);
        stage_rows<NR>(sm.u, p.res2, n, C);
        if (p.staged) { /* the layernorm weights came with the slice */
            cp_async_wait_all();
            __syncthreads();
        }
        layernorm_rows<NR>(sm.u, n, C, ln2w, ln2b, nullptr);
        product_rows<NR>(p, sm, ph + 2, bias[0], bias[1], [&](int r, int col, int, float v) {
            p.fch[(size_t)r * 4 * C + col] = __float2bfloat16_rn(gelu_tanh_f(v));
        });
        grid_sync(p.sync, target, p.trace, 5 * p.L);
        /* E: FC projection + residual -> x */
        prefetch_product(p, ph + 3 + p.ahead);
        stage_rows<NR>(sm.u, p.fch, n, 4 * C);
        product_rows<NR>(p, sm, ph + 3, bias[1], bias[0], [&](int r, int col, int k, float v) {
            const float o = __bfloat162float(__float2bfloat16_rn(v));
            p.x[(size_t)r * C + col] = __float2bfloat16_rn(__bfloat162float(res.v[k]) + o);
        });
        grid_sync(p.sync, target, p.trace, 5 * p.L);
    }
    /* the final layernorm, one row per block */
    if ((int)blockIdx.x < n) {
        const int r = blockIdx.x;
        for (int c = threadIdx.x; c < C / 8; c += kThreads)
            *reinterpret_cast<int4 *>(sm.u + c * 8) = ld_cg16(p.x + (size_t)r * C + c * 8);
        __syncthreads();
        layernorm_rows<1>(sm.u, 1, C, p.lnfw, p.lnfb, p.out + (size_t)r * C);
    }
}

/* Shared memory of an instance (the layout decode_layers_kernel cuts; weights: the largest
 * slice when staged, else 0). */
static size_t smem_bytes(int NR, const Params &p, size_t weights) {
    return (size_t)NR * 4 * p.C * 2 + (size_t)p.tasks_max * NR * 4 + (size_t)kGroups * (kHS + 2) * 4 +
           (size_t)2 * p.C * 2 + weights;
}

/* staged: 1 through shared memory where the largest slice fits, 0 never, -1 (the default) */
template <int NR>
static llmc_status launch(llmc_device *dev, Params p, size_t slice, int staged) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    auto kernel = decode_layers_kernel<NR>;
    const int dev_smem = im->smem_optin;
    p.staged = staged != 0 && smem_bytes(NR, p, slice) <= (size_t)dev_smem;
    const size_t smem = smem_bytes(NR, p, p.staged ? slice : 0);
    if (smem > (size_t)dev_smem) return LLMC_ERR_UNSUPPORTED;
    LLMC_CUDA_TRY(dev, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    LLMC_CUDA_TRY(dev, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
    if (per_sm < 1) return LLMC_ERR_UNSUPPORTED;
    LLMC_CUDA_TRY(dev, cudaMemsetAsync(p.sync, 0, sizeof(unsigned), im->stream));
    cudaLaunchConfig_t lc;
    memset(&lc, 0, sizeof lc);
    lc.gridDim = dim3(im->sm_count);
    lc.blockDim = dim3(kThreads);
    lc.dynamicSmemBytes = smem;
    lc.stream = im->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative; /* all blocks resident: the barriers need it */
    attr[0].val.cooperative = 1;
    lc.attrs = attr;
    lc.numAttrs = 1;
    LLMC_CUDA_TRY(dev, cudaLaunchKernelEx(&lc, kernel, p));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

static int bf16_plain(const llmc_tensor *t) { return t->dtype == LLMC_BF16 && !llmc_cuda_is_int8(t); }

static llmc_status decode_layers(llmc_device *dev, const llmc_decode_step *s) {
    const llmc_weights *W = s->w;
    const llmc_config *cfg = &W->cfg;
    const int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers, n = s->n;
    if (n < 1 || n > kMaxRows || C % NH || C / NH != kHS || C % 8) return LLMC_ERR_UNSUPPORTED;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        if (!bf16_plain(&W->t[i]) || !llmc_is_aligned16(W->t[i].data)) return LLMC_ERR_UNSUPPORTED;
    const void *bufs[] = {s->kcache, s->vcache, s->x, s->res2, s->qkv, s->atty, s->fch, s->out};
    for (const void *b : bufs)
        if (!llmc_is_aligned16(b)) return LLMC_ERR_UNSUPPORTED;
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    Params p;
    const bf16 *t[LLMC_NUM_PARAM_TENSORS];
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) t[i] = (const bf16 *)W->t[i].data;
    p.wte = t[LLMC_WTE], p.wpe = t[LLMC_WPE], p.ln1w = t[LLMC_LN1W], p.ln1b = t[LLMC_LN1B];
    p.qkvw = t[LLMC_QKVW], p.qkvb = t[LLMC_QKVB], p.attw = t[LLMC_ATTPROJW], p.attb = t[LLMC_ATTPROJB];
    p.ln2w = t[LLMC_LN2W], p.ln2b = t[LLMC_LN2B], p.fcw = t[LLMC_FCW], p.fcb = t[LLMC_FCB];
    p.fcpw = t[LLMC_FCPROJW], p.fcpb = t[LLMC_FCPROJB], p.lnfw = t[LLMC_LNFW], p.lnfb = t[LLMC_LNFB];
    p.kc = (bf16 *)s->kcache, p.vc = (bf16 *)s->vcache, p.cache_layer = s->cache_layer, p.maxlen = s->maxlen;
    p.x = (bf16 *)s->x, p.res2 = (bf16 *)s->res2, p.qkv = (bf16 *)s->qkv, p.atty = (bf16 *)s->atty;
    p.fch = (bf16 *)s->fch, p.out = (bf16 *)s->out;
    p.tokens = s->tokens, p.pos = s->pos, p.slots = s->slots, p.lens = s->lens, p.sync = s->sync;
    p.n = n, p.L = L, p.C = C, p.NH = NH;
    p.sl2 = 1.4426950408889634f / sqrtf((float)kHS);
    /* products in flight ahead: about 24 MB of weights (L2 holds ~50) */
    const double per_product = 12.0 * C * C * 2 / 4;
    int ahead = s->ahead > 0 ? s->ahead : (int)(24e6 / per_product);
    p.ahead = s->ahead < 0 ? 0 : ahead < 1 ? 1 : (ahead > 8 ? 8 : ahead);
    /* the most tasks and columns any product gives one block, and its largest weight slice
     * (counts rounded up to 4 keep the shared buffers 16-byte aligned) */
    const int G = im->sm_count, shapes[4][2] = {{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}};
    int tm = 1, mc = 1;
    size_t slice = 0;
    for (auto &sh : shapes) {
        const int cols = LLMC_CEIL_DIV(sh[0], G), tasks = cols * ksplit(cols, sh[1]);
        const int lo = sh[0] / G, tasks_lo = lo * ksplit(lo, sh[1]);
        tm = tasks > tm ? tasks : tm;
        tm = tasks_lo > tm ? tasks_lo : tm;
        mc = cols > mc ? cols : mc;
        slice = (size_t)cols * sh[1] * 2 > slice ? (size_t)cols * sh[1] * 2 : slice;
    }
    p.tasks_max = (tm + 3) & ~3;
    if (n * mc > kItems * kThreads) return LLMC_ERR_UNSUPPORTED; /* epilogue items per thread */
    p.trace = s->trace;
    if (n == 1) return launch<1>(dev, p, slice, s->staged);
    if (n == 2) return launch<2>(dev, p, slice, s->staged);
    if (n <= 4) return launch<4>(dev, p, slice, s->staged);
    return launch<8>(dev, p, slice, s->staged);

}

} /* namespace llmc_persist */

llmc_status llmc_cuda_decode_layers(llmc_device *dev, const llmc_decode_step *s) {
    return llmc_persist::decode_layers(dev, s);
}

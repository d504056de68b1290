/* gemv.cu — matmul_forward for few rows (N <= 32: the decode step, short prompts).
 *
 * At such N the product is a stream over the weights (OC x C bf16, read once) and cuBLASLt's
 * GEMM tiles leave most of the memory bandwidth unused. Here the tensor cores still do the
 * arithmetic (mma.sync m16n8k16, fp32 accumulation) with the roles chosen for skinny inputs:
 * A (16 rows) is the input x, zero beyond N, and B (8 columns) is 8 consecutive rows of W.
 *
 * The k order inside one mma is free as long as A and B agree, so each lane loads 16 bytes
 * (8 consecutive k) of its own W row and of its x row and feeds them to two mmas of one
 * 32-wide k step: lane (g = lane/4, t = lane%4) owns k = 8t..8t+7 of the step, and its
 * fragment slots {2t, 2t+1, 2t+8, 2t+9} of mma s in {0,1} hold k = 8t + 4s + {0,1,2,3}.
 * Four lanes of a W row read 64 contiguous bytes; nothing is staged through shared memory.
 *
 * A block owns 8*NT output columns (rows of W) and splits C among its KW warps; the warps'
 * fp32 partials meet in shared memory and are added in warp order by the epilogue threads,
 * which also add the bias and apply GELU. No atomics: results are deterministic. KW and the
 * per-warp k range depend on C only, so a row's result does not depend on N or on the other
 * rows (the same bits at batch 1 and batch 32).
 *
 * Launch overlap (programmatic dependent launch): the kernel asks for its successor to be
 * launched at once, and, launched itself as a dependent, prefetches its W slice into L2
 * before it waits for the previous kernel. Only L2 prefetches happen before the wait: L2 is
 * coherent, so a prefetch can never return stale data even if the previous kernel writes W. */
#include <stdlib.h>
#include <string.h>
#include "common.cuh"

namespace llmc_gemv {

/* Rows handled here; more go to cuBLASLt. Measured on H100 (dev/cuda/NOTES.md): at N = 32
 * cuBLASLt was faster on 4 of the 5 GPT-2 shapes, at N <= 16 this kernel on most. */
static int g_max_n = 16;
constexpr int kMaxKW = 12;  /* warps per block (k split); 12 * 16 pairs * 256 B = 48 KB of partials */
constexpr int kStepsPerWarp = 8; /* 32-wide k steps of one warp: 256 k */

/* Knobs, read once: LLMC_GEMV=0 sends every matmul to cuBLASLt; LLMC_PDL=0 launches this
 * kernel and the decode kernels without programmatic dependent launch. */
static int g_mode = -1; /* -1 unread, 0 off, 1 on */
static int g_pdl = -1;

static int mode(void) {
    if (g_mode < 0) {
        const char *e = getenv("LLMC_GEMV");
        g_mode = e && strcmp(e, "0") == 0 ? 0 : 1;
    }
    return g_mode;
}

__device__ __forceinline__ int4 ld_stream(const bf16 *p) { /* W: read once, keep it out of L1 */
    int4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}
__device__ __forceinline__ int4 ld_keep(const bf16 *p) { /* x: read by every block, L1/L2 hits */
    return __ldg(reinterpret_cast<const int4 *>(p));
}
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
__device__ __forceinline__ void grid_dep_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dep_launch(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* MR: groups of 8 input rows (1, 2 or 4: N <= 8, 16, 32); NT: 8-column tiles per block;
 * S: k steps whose loads are in flight together. blockDim.x = 32 * KW. */
template <int MR, int NT, int S>
__global__ void __launch_bounds__(kMaxKW * 32) gemv_kernel(bf16 *out, bf16 *pre, const bf16 *x, const bf16 *w,
                                                           const bf16 *bias, int N, int C, int OC, int spw,
                                                           int prefetch) {
    constexpr int MT = (MR + 1) / 2; /* 16-row mma tiles of x */
    constexpr int P = MT * NT * 2;   /* accumulator pairs per lane */
    extern __shared__ float2 part[]; /* [KW][P][32] */
    __shared__ float s_bias[8 * NT];
    grid_dep_launch();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, KW = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int o0 = blockIdx.x * 8 * NT;
    const int c8 = C >> 3, ksteps = (C + 31) >> 5;
    const int s_begin = warp * spw, s_end = min(ksteps, s_begin + spw);

    const bf16 *wrow[NT];
    bool wok[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int o = o0 + nt * 8 + g;
        wok[nt] = o < OC;
        wrow[nt] = w + (size_t)(wok[nt] ? o : 0) * C + 8 * t;
    }
    const bf16 *xrow[MR];
    bool xok[MR];
#pragma unroll
    for (int r = 0; r < MR; r++) {
        const int m = r * 8 + g;
        xok[r] = m < N;
        xrow[r] = x + (size_t)(xok[r] ? m : 0) * C + 8 * t;
    }

    if (prefetch) {
        for (int s = s_begin; s < s_end; s++)
            if (s * 4 + t < c8)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    if (wok[nt]) prefetch_l2(wrow[nt] + s * 32);
    }
    grid_dep_wait(); /* x, bias (and out) may belong to the previous kernel: nothing read or written before */
    /* the bias is loaded now, with the weights, not after the reduction (one memory latency less) */
    float bv = 0.0f;
    if (bias && threadIdx.x < 8 * NT && o0 + (int)threadIdx.x < OC) bv = __bfloat162float(bias[o0 + threadIdx.x]);

    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[mt][nt][j] = 0.0f;

    const int4 zero = make_int4(0, 0, 0, 0);
    for (int s0 = s_begin; s0 < s_end; s0 += S) {
        int4 wv[S][NT], xv[S][MR];
#pragma unroll
        for (int u = 0; u < S; u++) {
            const int s = s0 + u;
            const bool kok = s < s_end && s * 4 + t < c8;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) wv[u][nt] = kok && wok[nt] ? ld_stream(wrow[nt] + s * 32) : zero;
#pragma unroll
            for (int r = 0; r < MR; r++) xv[u][r] = kok && xok[r] ? ld_keep(xrow[r] + s * 32) : zero;
        }
#pragma unroll
        for (int u = 0; u < S; u++)
#pragma unroll
            for (int h = 0; h < 2; h++) /* the two k16 halves of the step */
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const int4 lo = xv[u][2 * mt];
                    const int4 hi = 2 * mt + 1 < MR ? xv[u][2 * mt + 1] : zero;
                    const uint32_t a0 = h ? lo.z : lo.x, a2 = h ? lo.w : lo.y;
                    const uint32_t a1 = h ? hi.z : hi.x, a3 = h ? hi.w : hi.y;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        const int4 b = wv[u][nt];
                        mma_bf16(acc[mt][nt], a0, a1, a2, a3, h ? b.z : b.x, h ? b.w : b.y);
                    }
                }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                part[((size_t)warp * P + (mt * NT + nt) * 2 + h) * 32 + lane] =
                    make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
    if (threadIdx.x < 8 * NT) s_bias[threadIdx.x] = bv;
    __syncthreads();

    /* Epilogue: one (row, 2 columns) pair per item, the warps' partials added in order. */
    const bool pairs = (OC & 1) == 0;
    for (int item = threadIdx.x; item < P * 32; item += blockDim.x) {
        const int p = item >> 5, l = item & 31;
        const int h = p & 1, nt = (p >> 1) % NT, mt = (p >> 1) / NT;
        const int m = mt * 16 + h * 8 + (l >> 2), o = o0 + nt * 8 + (l & 3) * 2;
        if (m >= N || o >= OC) continue;
        float2 v = part[(size_t)p * 32 + l];
        for (int k = 1; k < KW; k++) {
            const float2 q = part[((size_t)k * P + p) * 32 + l];
            v.x += q.x;
            v.y += q.y;
        }
        const bool two = o + 1 < OC;
        v.x += s_bias[o - o0]; /* zero without a bias */
        v.y += s_bias[o - o0 + 1];
        const size_t at = (size_t)m * OC + o;
        if (pre) {
            if (pairs) {
                *reinterpret_cast<__nv_bfloat162 *>(pre + at) = __floats2bfloat162_rn(v.x, v.y);
            } else {
                pre[at] = __float2bfloat16_rn(v.x);
                if (two) pre[at + 1] = __float2bfloat16_rn(v.y);
            }
            v.x = gelu_tanh_f(v.x);
            v.y = gelu_tanh_f(v.y);
        }
        if (pairs) {
            *reinterpret_cast<__nv_bfloat162 *>(out + at) = __floats2bfloat162_rn(v.x, v.y);
        } else {
            out[at] = __float2bfloat16_rn(v.x);
            if (two) out[at + 1] = __float2bfloat16_rn(v.y);
        }
    }
}

/* A launch configuration: MR/NT/S pick the instance; kw and spw the k split. */
struct config {
    int mr, nt, s, kw, spw;
    int pdl, prefetch; /* launched as a dependent; L2 prefetch of W before the wait */
};

/* The k split depends on C only (see the top of the file); the tile shapes on N. */
static config choose(int N, int C, int OC, int sm_count) {
    config c;
    const int ksteps = (C + 31) / 32;
    c.kw = LLMC_CEIL_DIV(ksteps, kStepsPerWarp);
    if (c.kw > kMaxKW) c.kw = kMaxKW;
    c.spw = LLMC_CEIL_DIV(ksteps, c.kw);
    /* measured (dev/cuda/gemv.cu, H100): MR=2 ran faster than MR=1 even at N=1 */
    if (N <= 16) {
        c.mr = 2, c.nt = 1, c.s = 8;
    } else {
        c.mr = 4, c.nt = 2, c.s = 4;
    }
    c.pdl = llmc_cuda_pdl_enabled();
    /* prefetching a grid of many waves only doubles the load instructions (LM head: -20%) */
    c.prefetch = c.pdl && LLMC_CEIL_DIV(OC, 8 * c.nt) <= 4 * sm_count;
    return c;
}

template <int MR, int NT, int S>
static cudaError_t launch_one(cudaStream_t stream, const config &c, bf16 *out, bf16 *pre, const bf16 *x,
                              const bf16 *w, const bf16 *bias, int N, int C, int OC) {
    constexpr int P = ((MR + 1) / 2) * NT * 2;
    cudaLaunchConfig_t lc;
    memset(&lc, 0, sizeof lc);
    lc.gridDim = dim3((unsigned)LLMC_CEIL_DIV(OC, 8 * NT));
    lc.blockDim = dim3((unsigned)(32 * c.kw));
    lc.dynamicSmemBytes = (size_t)c.kw * P * 32 * sizeof(float2);
    lc.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = attr;
    lc.numAttrs = c.pdl ? 1 : 0;
    return cudaLaunchKernelEx(&lc, gemv_kernel<MR, NT, S>, out, pre, x, w, bias, N, C, OC, c.spw, c.prefetch);
}

static cudaError_t launch(cudaStream_t stream, const config &c, bf16 *out, bf16 *pre, const bf16 *x,
                          const bf16 *w, const bf16 *bias, int N, int C, int OC) {
#define LLMC_GEMV_CASE(MR, NT, S) \
    if (c.mr == MR && c.nt == NT && c.s == S) return launch_one<MR, NT, S>(stream, c, out, pre, x, w, bias, N, C, OC)
    LLMC_GEMV_CASE(1, 1, 8);
    LLMC_GEMV_CASE(1, 2, 8);
    LLMC_GEMV_CASE(2, 1, 8);
    LLMC_GEMV_CASE(2, 2, 4);
    LLMC_GEMV_CASE(4, 1, 4);
    LLMC_GEMV_CASE(4, 2, 4);
    LLMC_GEMV_CASE(4, 4, 2);
#undef LLMC_GEMV_CASE
    return cudaErrorInvalidConfiguration;
}

/* Shapes and pointers this path takes: whole 16-byte rows of x and W. */
static bool supported(int N, int C, int OC, const void *out, const void *pre, const void *inp, const void *w) {
    return N >= 1 && N <= g_max_n && C >= 8 && C % 8 == 0 && OC >= 1 && llmc_is_aligned16(inp) &&
           llmc_is_aligned16(w) && ((uintptr_t)out & 3u) == 0 && ((uintptr_t)pre & 3u) == 0;
}

} /* namespace llmc_gemv */

int llmc_cuda_pdl_enabled(void) {
    if (llmc_gemv::g_pdl < 0) {
        const char *e = getenv("LLMC_PDL");
        llmc_gemv::g_pdl = e && strcmp(e, "0") == 0 ? 0 : 1;
    }
    return llmc_gemv::g_pdl;
}

llmc_status llmc_cuda_gemv_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const void *w,
                                   const void *bias, int N, int C, int OC) {
    using namespace llmc_gemv;
    if (!mode() || !supported(N, C, OC, out, pre_gelu, inp, w)) return LLMC_ERR_UNSUPPORTED;
    const config c = choose(N, C, OC, llmc_cuda_impl_of(dev)->sm_count);
    LLMC_CUDA_TRY(dev, launch(llmc_cuda_stream(dev), c, (bf16 *)out, (bf16 *)pre_gelu, (const bf16 *)inp,
                              (const bf16 *)w, (const bf16 *)bias, N, C, OC));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* gemv.cu — matmul_forward for few rows (N <= dev->tuning.skinny_rows, 16 by default: the
 * decode step, short prompts).
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
 * Four lanes of a W row read 64 contiguous bytes. The loads of a warp's whole k range go out
 * at once as cp.async into the lane's own shared-memory slots (one memory latency per warp;
 * plain register loads were issued by ptxas one k step at a time).
 *
 * A block owns 8*NT output columns (rows of W) and splits C among its KW warps; the warps'
 * fp32 partials meet in shared memory and are added in warp order by the epilogue threads,
 * which also add the bias and apply GELU. No atomics: results are deterministic. KW and the
 * per-warp k range depend on C only, so a row's result does not depend on N or on the other
 * rows (the same bits at every N this kernel takes; checked by the lab).
 *
 * Launch overlap (programmatic dependent launch): launched as a dependent, the kernel issues
 * its first chunk of W loads (cp.async into shared memory) before it waits for the previous
 * kernel, so the weight latency hides behind that kernel; x, bias and out are touched only
 * after the wait. It asks for its successor right after its own wait (not before), so at most
 * the immediately preceding kernel can still run while W is read early: the host side turns
 * the early loads off when W overlaps the previous matmul_forward's outputs (the one
 * predecessor that could write a matrix; model weights are never written by one). Later
 * chunks (N > 16) are prefetched into L2 before the wait, when the grid fits a few waves.
 *
 * int8 weights (I8; per-channel scales, quant.c's scheme): a lane's 16 bytes of a W row are 16
 * consecutive k, so one k step is 64 wide and the lane loads two 16-byte chunks of x for it; the
 * weights are widened to bf16 in registers (exact: |q| <= 127 fits bf16's 8 bits) and fed to the
 * same mmas as two half steps. The row's scale multiplies the finished sum in the epilogue,
 * s * sum(x q), before the bias. Half the weight bytes of the bf16 path, the same structure.
 *
 * The fused layernorm (LN instance, backend op layernorm_matmul_forward): a decode step's
 * layernorm is a one-warp kernel of ~2-3 us on the chain of dependent kernels. Here every block
 * normalizes the few rows itself, after the wait, into shared memory, with layernorm.cu's own
 * row code (layernorm_row.cuh: the same bits), and the k loop reads x from there; block 0 stores
 * the residual. ln_takes keeps it to the calls where that pays. */
#ifndef LLMC_GEMV_CU /* the labs include the backend's .cu files into one translation unit */
#define LLMC_GEMV_CU
#include "common.cuh"
#include "layernorm_row.cuh"

namespace llmc_gemv {

constexpr int kMaxN = 32;        /* rows the kernel takes */
constexpr int kMaxKW = 12;       /* warps per block (k split) */
/* k steps of one warp (32 wide, 256 k, all in flight at once; int8: 64 wide, 512 k). Four int8
 * steps a warp, for bf16's count of warps, was slower on the H200: d12 decode 0.94x at batch 1,
 * 0.52x at batch 32. */
constexpr int kStepsPerWarp = 8;

/* Rows routed here: dev->tuning.skinny_rows (16 by default, measured with dev/cuda/gemv.cu on
 * H100; more go to cuBLASLt), at most kMaxN; 0 sends every matmul to cuBLASLt. */
static int max_rows(const llmc_device *dev) {
    const int v = dev->tuning.skinny_rows;
    return v < 0 ? 0 : (v > kMaxN ? kMaxN : v);
}

__device__ __forceinline__ int4 ld_keep(const bf16 *p) { /* x: read by every block, L1/L2 hits */
    return __ldg(reinterpret_cast<const int4 *>(p));
}
/* 16-byte asynchronous copies to shared memory; bytes = 0 writes zeros and reads nothing.
 * cg (L2 only) for the weights, ca (through L1) for x, which every block of the SM reads. */
__device__ __forceinline__ void cp_async_cg(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_ca(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all(void) {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
}
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Bytes of shared memory a launch needs: per warp S steps x (NT + MR, int8: NT + 2 MR) 16-byte
 * slots per lane when staging, then the warps' partials; the bias and scale slices are static. */
__host__ __device__ constexpr size_t stage_bytes(int kw, int mr, int nt, int s, bool stage, bool i8 = false) {
    return stage ? (size_t)kw * s * (nt + mr * (i8 ? 2 : 1)) * 32 * 16 : 0;
}
__host__ __device__ constexpr size_t part_bytes(int kw, int mr, int nt) {
    return (size_t)kw * ((mr + 1) / 2) * nt * 2 * 32 * sizeof(float2);
}

/* The fused layernorm (LN instance, layernorm_matmul_forward): x = inp (+ inp2) is normalized
 * with w, b before the product; residual: where block 0 stores x (may be NULL without inp2). */
struct LnArgs {
    const bf16 *inp2, *w, *b;
    bf16 *residual;
};
/* Its normalized rows in shared memory: N rows of C bf16, padded by 16 bytes (the 8 rows a
 * warp reads together fall in different banks). */
__host__ __device__ constexpr int ln_stride(int C) { return C + 8; }
__host__ __device__ constexpr size_t ln_bytes(int N, int C) { return (size_t)N * ln_stride(C) * 2; }

/* Two int8 weights (bytes b, b+1 of v) as a bf16 pair, the first in the low half as mma reads it. */
__device__ __forceinline__ uint32_t i8x2_to_bf16x2(uint32_t v, int b) {
    const __nv_bfloat162 p = __floats2bfloat162_rn((float)(int8_t)(v >> (8 * b)), (float)(int8_t)(v >> (8 * b + 8)));
    return *reinterpret_cast<const uint32_t *>(&p);
}

/* MR: groups of 8 input rows (1, 2 or 4: N <= 8, 16, 32); NT: 8-column tiles per block;
 * S: k steps whose loads are in flight together; STAGE: loads as cp.async into the lane's own
 * shared-memory slots (ptxas issued register loads one step at a time, a memory latency per
 * step) or straight into registers; LN: x is layernorm(x (+ ln.inp2)) (staged bf16 only, N <= 8).
 * blockDim.x = 32 * KW. */
template <int MR, int NT, int S, bool STAGE, bool I8 = false, bool LN = false>
__global__ void __launch_bounds__(kMaxKW * 32) gemv_kernel(bf16 *out, bf16 *pre, const bf16 *x, const void *w,
                                                           const float *wscale, const bf16 *bias, int N, int C,
                                                           int OC, int spw, int prefetch, int early, LnArgs ln) {
    static_assert(!LN || (MR == 1 && STAGE && !I8), "the fused layernorm: one row group, staged bf16");
    constexpr int MT = (MR + 1) / 2; /* 16-row mma tiles of x */
    constexpr int P = MT * NT * 2;   /* accumulator pairs per lane */
    constexpr int XS = I8 ? 2 : 1;   /* 16-byte x chunks per lane, row and step */
    constexpr int XR = MR * XS;      /* x slots per lane and step */
    constexpr int J = NT + XR;       /* 16-byte slots per lane and step */
    constexpr int WB = I8 ? 1 : 2;   /* bytes of one weight */
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float s_bias[8 * NT], s_scale[8 * NT];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, KW = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int o0 = blockIdx.x * 8 * NT;
    const int c8 = C >> 3, ksteps = I8 ? C >> 6 : (C + 31) >> 5; /* I8: C % 64 == 0 */
    const int s_begin = warp * spw, s_end = min(ksteps, s_begin + spw);
    int4 *my = reinterpret_cast<int4 *>(smem) + (size_t)warp * S * J * 32 + lane; /* [S][J][32] of this warp */
    float2 *part = reinterpret_cast<float2 *>(smem + stage_bytes(KW, MR, NT, S, STAGE, I8)); /* [KW][P][32] */

    /* Rows past N or OC read a valid row (register path) or nothing (staged: zero fill); their
     * results are never stored. */
    const char *wrow[NT]; /* bytes: a lane's chunk ch of a W row is bytes 16 ch .. 16 ch + 15 */
    int wbytes[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int o = o0 + nt * 8 + g;
        wrow[nt] = static_cast<const char *>(w) + (size_t)min(o, OC - 1) * C * WB;
        wbytes[nt] = o < OC ? 16 : 0;
    }
    const bf16 *xrow[MR];
    int xbytes[MR];
#pragma unroll
    for (int r = 0; r < MR; r++) {
        xrow[r] = x + (size_t)min(r * 8 + g, N - 1) * C;
        xbytes[r] = r * 8 + g < N ? 16 : 0;
    }

    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(my);
    auto issue_w = [&](int s0) { /* cp.async of this lane's W chunks for steps s0 .. s0+S-1 */
#pragma unroll
        for (int u = 0; u < S; u++) {
            const int ch = (s0 + u) * 4 + t;
            const bool ok = s0 + u < s_end && ch < c8;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                cp_async_cg(sbase + (u * J + nt) * 32 * 16, wrow[nt] + (ok ? ch : 0) * 16, ok ? wbytes[nt] : 0);
        }
    };
    const bool w_early = STAGE && early && s_begin < s_end;
    if (w_early) issue_w(s_begin); /* committed with the x loads after the wait */
    if (prefetch) {
        for (int s = w_early ? s_begin + S : s_begin; s < s_end; s++)
            if (s * 4 + t < c8)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) prefetch_l2(wrow[nt] + (s * 4 + t) * 16);
    }
    llmc_pdl_wait(); /* x, bias (and out) may belong to the previous kernel: nothing read or written before */
    llmc_pdl_launch_dependents();
    /* the bias is loaded now, with the weights, not after the reduction (one memory latency less) */
    float bv = 0.0f, sv = 1.0f;
    if (threadIdx.x < 8 * NT && o0 + (int)threadIdx.x < OC) {
        if (bias) bv = __bfloat162float(bias[o0 + threadIdx.x]);
        if (I8) sv = wscale[o0 + threadIdx.x];
    }
    /* LN: the block first normalizes the N rows into shared memory, a warp a row, with
     * layernorm.cu's own row code (the same bits as layernorm_forward); block 0 also stores the
     * residual. The k loop then takes x from there. Every block repeats the few-row layernorm
     * (an L2 read of N x C) instead of waiting for a layernorm kernel. */
    const bf16 *xn = nullptr;
    if constexpr (LN) {
        bf16 *rows = reinterpret_cast<bf16 *>(smem + stage_bytes(KW, MR, NT, S, STAGE, I8) + part_bytes(KW, MR, NT));
        for (int r = warp; r < N; r += KW)
            layernorm_row<8>(rows + (size_t)r * ln_stride(C), rows + (size_t)r * ln_stride(C),
                             ln.residual && blockIdx.x == 0 ? ln.residual + (size_t)r * C : nullptr, x + (size_t)r * C,
                             ln.inp2 ? ln.inp2 + (size_t)r * C : nullptr, ln.w, ln.b, C, nullptr, nullptr);
        __syncthreads();
        xn = rows;
    }

    /* two accumulator sets, one per k16 half of a step: two dependent mma chains of half the
     * length (the chain's latency showed at small N), added in a fixed order at the end */
    float acc[2][MT][NT][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[h][mt][nt][j] = 0.0f;

    const int4 zero = make_int4(0, 0, 0, 0);
    for (int s0 = s_begin; s0 < s_end; s0 += S) {
        int4 wv[S][NT], xv[S][XR];
        if constexpr (STAGE) {
            if (!(w_early && s0 == s_begin)) issue_w(s0);
#pragma unroll
            for (int u = 0; u < S; u++) {
                const int ch = (s0 + u) * 4 + t; /* this lane's 8-wide chunk of k */
                const bool ok = s0 + u < s_end && ch < c8;
#pragma unroll
                for (int r = 0; r < XR && !LN; r++) /* I8: x chunks 2 ch and 2 ch + 1 of row r / 2 */
                    cp_async_ca(sbase + (u * J + NT + r) * 32 * 16, xrow[r / XS] + (ok ? ch * XS + r % XS : 0) * 8,
                                ok ? xbytes[r / XS] : 0);
            }
            cp_async_wait_all(); /* each lane reads back only its own slots: no barrier needed */
#pragma unroll
            for (int u = 0; u < S; u++) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++) wv[u][nt] = my[(u * J + nt) * 32];
#pragma unroll
                for (int r = 0; r < XR; r++) {
                    if constexpr (LN) {
                        const int ch = (s0 + u) * 4 + t;
                        const bool ok = s0 + u < s_end && ch < c8 && xbytes[r];
                        xv[u][r] = ok ? *reinterpret_cast<const int4 *>(xn + (size_t)(r * 8 + g) * ln_stride(C) + ch * 8)
                                      : zero;
                    } else {
                        xv[u][r] = my[(u * J + NT + r) * 32];
                    }
                }
            }
        } else {
            static_assert(STAGE || !I8, "int8 weights are staged");
            bool kv[S];
#pragma unroll
            for (int u = 0; u < S; u++) {
                const int st = min(s0 + u, s_end - 1);
                const int ch = min(st * 4 + t, c8 - 1);
                kv[u] = s0 + u < s_end && st * 4 + t < c8;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) wv[u][nt] = llmc_ld_stream16(wrow[nt] + ch * 16);
#pragma unroll
                for (int r = 0; r < XR; r++) xv[u][r] = ld_keep(xrow[r] + ch * 8);
            }
#pragma unroll
            for (int u = 0; u < S; u++)
                if (!kv[u]) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) wv[u][nt] = zero;
#pragma unroll
                    for (int r = 0; r < XR; r++) xv[u][r] = zero;
                }
        }
#pragma unroll
        for (int u = 0; u < S; u++)
#pragma unroll
            for (int xs = 0; xs < XS; xs++) /* I8: the half steps, weight bytes 8 xs .. 8 xs + 7 */
#pragma unroll
                for (int h = 0; h < 2; h++) /* the two k16 halves of a (half) step */
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        const int4 lo = xv[u][2 * mt * XS + xs];
                        const int4 hi = 2 * mt + 1 < MR ? xv[u][(2 * mt + 1) * XS + xs] : zero;
                        const uint32_t a0 = h ? lo.z : lo.x, a2 = h ? lo.w : lo.y;
                        const uint32_t a1 = h ? hi.z : hi.x, a3 = h ? hi.w : hi.y;
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) {
                            const int4 b = wv[u][nt];
                            uint32_t b0 = h ? b.z : b.x, b1 = h ? b.w : b.y;
                            if (I8) {
                                const uint32_t q = xs ? (h ? b.w : b.z) : (h ? b.y : b.x);
                                b0 = i8x2_to_bf16x2(q, 0);
                                b1 = i8x2_to_bf16x2(q, 2);
                            }
                            mma_bf16(acc[h][mt][nt], a0, a1, a2, a3, b0, b1);
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
                    make_float2(acc[0][mt][nt][2 * h] + acc[1][mt][nt][2 * h],
                                acc[0][mt][nt][2 * h + 1] + acc[1][mt][nt][2 * h + 1]);
    if (threadIdx.x < 8 * NT) {
        s_bias[threadIdx.x] = bv;
        s_scale[threadIdx.x] = sv;
    }
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
        if (I8) {
            v.x *= s_scale[o - o0];
            v.y *= s_scale[o - o0 + 1];
        }
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

/* A launch configuration: MR/NT/S (and I8) pick the instance; kw and spw the k split. */
struct config {
    int mr, nt, s, kw, spw;
    int pdl, prefetch; /* launched as a dependent; L2 prefetch of W before the wait */
    int early;         /* first W chunk loaded before the wait (staged path) */
    int stage;         /* cp.async through shared memory (else register loads) */
    int i8;            /* int8 weights with per-row scales (always staged) */
};

/* The k split depends on C only (see the top of the file); the tile shapes on N. */
static config choose(llmc_device *dev, int N, int C, int OC, bool i8 = false) {
    config c;
    const int ksteps = i8 ? C / 64 : (C + 31) / 32;
    c.kw = LLMC_CEIL_DIV(ksteps, kStepsPerWarp);
    if (c.kw > kMaxKW) c.kw = kMaxKW;
    c.spw = LLMC_CEIL_DIV(ksteps, c.kw);
    if (N <= 8) {
        c.mr = 1, c.nt = 1, c.s = 8;
    } else if (N <= 16) {
        c.mr = 2, c.nt = 1, c.s = 8;
    } else {
        c.mr = 4, c.nt = 2, c.s = 4;
    }
    c.stage = 1;
    c.i8 = i8;
    c.pdl = llmc_cuda_pdl(dev);
    /* prefetching a grid of many waves only doubles the load instructions (LM head: -20%) */
    c.prefetch = c.pdl && LLMC_CEIL_DIV(OC, 8 * c.nt) <= 4 * llmc_cuda_impl_of(dev)->sm_count;
    c.early = 1;
    return c;
}

/* slot: this instance's entry in the device's opt-in record (impl->gemv_smem_optin). */
template <int MR, int NT, int S, bool STAGE, bool I8, bool LN = false>
static cudaError_t launch_one(llmc_device *dev, int slot, const config &c, bf16 *out, bf16 *pre, const bf16 *x,
                              const void *w, const float *wscale, const bf16 *bias, int N, int C, int OC,
                              const LnArgs &ln = LnArgs{}) {
    const size_t smem = stage_bytes(c.kw, MR, NT, S, STAGE, I8) + part_bytes(c.kw, MR, NT) + (LN ? ln_bytes(N, C) : 0);
    size_t *opted = &llmc_cuda_impl_of(dev)->gemv_smem_optin[slot];
    if (smem > 48 * 1024 && smem > *opted) {
        cudaError_t e = cudaFuncSetAttribute(gemv_kernel<MR, NT, S, STAGE, I8, LN>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
        *opted = smem;
    }
    return llmc_launch_pdl(c.pdl, gemv_kernel<MR, NT, S, STAGE, I8, LN>, dim3((unsigned)LLMC_CEIL_DIV(OC, 8 * NT)),
                           dim3((unsigned)(32 * c.kw)), smem, llmc_cuda_stream(dev), out, pre, x, w, wscale, bias, N,
                           C, OC, c.spw, c.prefetch, c.early, ln);
}

/* wscale: the rows' scales when c.i8 (int8 W), else unused; ln: the fused layernorm, or NULL. */
static cudaError_t launch(llmc_device *dev, const config &c, bf16 *out, bf16 *pre, const bf16 *x, const void *w,
                          const bf16 *bias, int N, int C, int OC, const float *wscale = nullptr,
                          const LnArgs *ln = nullptr) {
    if (ln) {
        if (c.mr != 1 || c.nt != 1 || c.s != 8 || c.i8 || !c.stage) return cudaErrorInvalidConfiguration;
        return launch_one<1, 1, 8, true, false, true>(dev, 12, c, out, pre, x, w, wscale, bias, N, C, OC, *ln);
    }
#define LLMC_GEMV_CASE(MR, NT, S, SLOT)                                                                             \
    if (c.mr == MR && c.nt == NT && c.s == S)                                                                       \
        return c.i8      ? launch_one<MR, NT, S, true, true>(dev, 8 + (SLOT), c, out, pre, x, w, wscale, bias, N, C, \
                                                             OC)                                                    \
               : c.stage ? launch_one<MR, NT, S, true, false>(dev, 2 * (SLOT) + 1, c, out, pre, x, w, wscale, bias, \
                                                              N, C, OC)                                             \
                         : launch_one<MR, NT, S, false, false>(dev, 2 * (SLOT), c, out, pre, x, w, wscale, bias, N, \
                                                               C, OC)
    LLMC_GEMV_CASE(1, 1, 8, 0);
    LLMC_GEMV_CASE(2, 1, 8, 1);
    LLMC_GEMV_CASE(4, 1, 4, 2);
    LLMC_GEMV_CASE(4, 2, 4, 3);
#undef LLMC_GEMV_CASE
    static_assert(3 * 4 + 1 == LLMC_CUDA_GEMV_KERNELS, "one opt-in slot per kernel instance");
    return cudaErrorInvalidConfiguration;
}

/* Shared memory of a launch, dynamic and static; the opt-in limit of sm_90 is 227 KB. */
constexpr size_t kSmemLimit = 227 * 1024;
static size_t smem_bytes(const config &c, size_t ln = 0) {
    return stage_bytes(c.kw, c.mr, c.nt, c.s, c.stage, c.i8) + part_bytes(c.kw, c.mr, c.nt) +
           2 * 8 * c.nt * sizeof(float) + ln;
}

/* W overlapping the outputs of the last matmul_forward of the device (gemv or cuBLASLt: every
 * call passes here; in stream order, also under graph capture): no early W loads. */
static bool overlaps(const llmc_cuda_span &a, uintptr_t lo, uintptr_t hi) { return a.lo < hi && lo < a.hi; }

/* Shapes and pointers this path takes: whole 16-byte rows of x and W; int8 W in whole 64-wide
 * k steps, up to kMaxN rows (the bf16 path stops at the tuned skinny_rows, where cuBLASLt takes
 * over; int8 has no cheaper path below that). */
static bool supported(const llmc_device *dev, int N, int C, int OC, const void *out, const void *pre,
                      const void *inp, const void *w, bool i8) {
    return N >= 1 && N <= (i8 ? kMaxN : max_rows(dev)) && C >= 8 && C % (i8 ? 64 : 8) == 0 && OC >= 1 &&
           llmc_is_aligned16(inp) && llmc_is_aligned16(w) && ((uintptr_t)out & 3u) == 0 &&
           ((uintptr_t)pre & 3u) == 0;
}

/* Whether the fused layernorm takes this call. Every block repeats the layernorm before its
 * product, so by default (fuse_layernorm 1) only where that pays (measured on the H200,
 * docs/PERF.md): one row per warp (8 rows on d12's 3 warps were 0.88x the two kernels) and a
 * grid of one wave (a second wave pays the layernorm again: d48's 600-800 blocks were 0.84x).
 * fuse_layernorm 2 takes every call the kernel can (the tests' setting). */
static bool ln_takes(llmc_device *dev, const config &c, const LnArgs &ln, int N, int C, int OC) {
    const size_t smem = smem_bytes(c, ln_bytes(N, C));
    if (c.mr != 1 || c.i8 || !c.stage || smem > kSmemLimit || !llmc_is_aligned16(ln.inp2) ||
        !llmc_is_aligned16(ln.w) || !llmc_is_aligned16(ln.b) || !llmc_is_aligned16(ln.residual))
        return false;
    if (dev->tuning.fuse_layernorm >= 2) return true;
    const size_t dyn = smem - 2 * 8 * c.nt * sizeof(float); /* less the static bias and scale slices */
    if (N > c.kw || dyn > 48 * 1024) return false; /* past 48 KB: not measured, and the query needs the opt-in */
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (im->ln_occ_threads != 32 * c.kw || im->ln_occ_smem != dyn) { /* once per shape, not per decode call */
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<1, 1, 8, true, false, true>,
                                                          32 * c.kw, dyn) != cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
        im->ln_occ_threads = 32 * c.kw, im->ln_occ_smem = dyn, im->ln_occ_blocks = per_sm;
    }
    return (long)im->ln_occ_blocks * im->sm_count >= LLMC_CEIL_DIV(OC, 8 * c.nt);
}

/* ln: the fused layernorm (bf16 W, N <= 8), or NULL. A fused call that this path does not take
 * returns LLMC_ERR_UNSUPPORTED before it records anything: its caller runs the two ops. */
static llmc_status forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const void *w,
                           const float *wscale, const void *bias, int N, int C, int OC, const LnArgs *ln = nullptr) {
    const bool i8 = wscale != nullptr;
    const bool ok = supported(dev, N, C, OC, out, pre_gelu, inp, w, i8);
    config c = ok ? choose(dev, N, C, OC, i8) : config{}; /* choose needs a supported shape (C >= 8, int8: 64) */
    if (ln && !(ok && ln_takes(dev, c, *ln, N, C, OC))) return LLMC_ERR_UNSUPPORTED;
    llmc_cuda_span *last = llmc_cuda_impl_of(dev)->gemv_last_out;
    const uintptr_t wlo = (uintptr_t)w, whi = wlo + (size_t)OC * C * (i8 ? 1 : sizeof(bf16));
    const bool w_fresh = overlaps(last[0], wlo, whi) || overlaps(last[1], wlo, whi);
    const size_t ob = (size_t)N * OC * sizeof(bf16);
    last[0] = llmc_cuda_span{(uintptr_t)out, (uintptr_t)out + ob};
    last[1] = pre_gelu ? llmc_cuda_span{(uintptr_t)pre_gelu, (uintptr_t)pre_gelu + ob} : llmc_cuda_span{0, 0};
    if (!ok) return LLMC_ERR_UNSUPPORTED;
    if (w_fresh) c.early = 0;
    if (smem_bytes(c) > kSmemLimit) return LLMC_ERR_UNSUPPORTED;
    LLMC_CUDA_TRY(dev, launch(dev, c, (bf16 *)out, (bf16 *)pre_gelu, (const bf16 *)inp, w, (const bf16 *)bias, N, C,
                              OC, wscale, ln));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

static bool plain_bf16(const llmc_tensor *t) { return t && t->data && t->dtype == LLMC_BF16 && !t->scales; }

} /* namespace llmc_gemv */

llmc_status llmc_cuda_gemv_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const void *w,
                                   const void *bias, int N, int C, int OC) {
    return llmc_gemv::forward(dev, out, pre_gelu, inp, w, nullptr, bias, N, C, OC);
}

llmc_status llmc_cuda_gemv_forward_int8(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                        const int8_t *w, const float *scales, const void *bias, int N, int C, int OC) {
    return llmc_gemv::forward(dev, out, pre_gelu, inp, w, scales, bias, N, C, OC);
}

/* The backend op layernorm_matmul_forward: every case it does not take (the tuning's
 * fuse_layernorm off, more than 8 rows, where it does not pay, int8 or other dtypes, unaligned
 * rows, bad arguments)
 * is LLMC_ERR_UNSUPPORTED with dev->err untouched, and the caller's two ops report the rest. */
llmc_status llmc_cuda_layernorm_matmul_forward(llmc_device *dev, void *residual_out, void *out, void *pre_gelu,
                                               const void *inp, const void *inp2, const llmc_tensor *ln_w,
                                               const llmc_tensor *ln_b, const llmc_tensor *w, const llmc_tensor *bias,
                                               int N, int C, int OC) {
    using llmc_gemv::plain_bf16;
    if (!dev->tuning.fuse_layernorm || N < 1 || C < 1 || OC < 1 || (inp2 && !residual_out) || !plain_bf16(ln_w) ||
        !plain_bf16(ln_b) || !plain_bf16(w) || (bias && !plain_bf16(bias)))
        return LLMC_ERR_UNSUPPORTED;
    const llmc_gemv::LnArgs ln = {(const bf16 *)inp2, (const bf16 *)ln_w->data, (const bf16 *)ln_b->data,
                                  (bf16 *)residual_out};
    return llmc_gemv::forward(dev, out, pre_gelu, inp, w->data, nullptr, llmc_tensor_data(bias), N, C, OC, &ln);
}
#endif /* LLMC_GEMV_CU */

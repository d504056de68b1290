/* matmul_int8.cu — int8 weights (quant.c's scheme) on the GPU: matmul_forward and embeddings.
 *
 * Few rows (decode, N <= kMaxRows): a weight stream. A warp owns one output row of W; each lane
 * reads 16 int8 (one 16-byte load) per chunk, all its chunks issued before the wait for the
 * previous kernel, widens them to fp32 and multiplies them with the
 * bf16 inputs; a 16-wide chunk never straddles a scale group (groups are multiples of 16), so
 * each chunk's partial sum takes its scale once. The lanes' partials meet by a fixed shuffle
 * tree: deterministic, and a row's bits do not depend on N. Half the bytes of the bf16 path.
 * More rows (prefill, evaluation): W is widened into bf16 scratch (q * s, rounded once) and the
 * bf16 matmul (cuBLASLt) does the rest; under graph capture, where the scratch cannot grow, the
 * weight stream takes every N. */
#include "common.cuh"

namespace llmc_int8 {

constexpr int kWarps = 4;     /* rows of W per block */
constexpr int kMaxRows = 32;  /* inputs the stream path takes before widening pays */
constexpr int kRowChunk = 8;  /* input rows whose accumulators a lane holds at once */

__device__ __forceinline__ void widen16(float (&f)[16], int4 raw) {
    const int8_t *b = reinterpret_cast<const int8_t *>(&raw);
#pragma unroll
    for (int i = 0; i < 16; i++) f[i] = (float)b[i];
}

/* The three ways a lane reads its part of a W row. */
enum { kScalar = 0, kChunks = 1, kPreload = 2 };
constexpr int kMaxChunks = 8; /* kPreload: 16-byte chunks a lane holds in registers (C <= 4096) */


/* acc[r] += s * (x row n0 + r, 16 inputs from k) . wf, for the live rows */
template <int RC>
__device__ __forceinline__ void chunk_dot(float (&acc)[RC], const float (&wf)[16], float s, const bf16 *x, int n0,
                                          int N, int C, int k) {
#pragma unroll
    for (int r = 0; r < RC; r++) {
        if (n0 + r >= N) break;
        const bf16 *xr = x + (size_t)(n0 + r) * C + k;
        float xa[8], xb[8];
        ld_bf16<8>(xa, xr);
        ld_bf16<8>(xb, xr + 8);
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) d = fmaf(xa[i], wf[i], d);
#pragma unroll
        for (int i = 0; i < 8; i++) d = fmaf(xb[i], wf[8 + i], d);
        acc[r] = fmaf(d, s, acc[r]);
    }
}

/* MODE kChunks / kPreload: 16-wide chunks (C % 16 == 0, W and x 16-byte aligned, g % 16 == 0);
 * kPreload also issues all of a lane's W loads before waiting for the previous kernel (the
 * weights are never a predecessor's output), so their latency hides behind it, as gemv.cu's
 * early loads do. kScalar: one element at a time, each with its own scale. RC: input rows a lane
 * accumulates at once (1 for a single row: no idle accumulators, one shuffle tree). */
template <int MODE, int RC>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_int8_kernel(bf16 *out, bf16 *pre, const bf16 *x, const int8_t *w, const float *scales, const bf16 *bias,
                     int N, int C, int OC, int g) {
    const int lane = threadIdx.x & 31, o = blockIdx.x * kWarps + (threadIdx.x >> 5);
    const bool live = o < OC;
    const int8_t *wr = w + (size_t)(live ? o : 0) * C;
    int4 wv[MODE == kPreload ? kMaxChunks : 1];
    const int nch = MODE == kPreload ? (C / 16 - lane + 31) / 32 : 0; /* this lane's chunks: (lane + 32 i) * 16 */
    if constexpr (MODE == kPreload) {
#pragma unroll
        for (int i = 0; i < kMaxChunks; i++)
            if (live && i < nch) wv[i] = llmc_ld_stream16(wr + (lane + 32 * i) * 16);
    }
    llmc_pdl_wait(); /* x may be the previous kernel's output */
    llmc_pdl_launch_dependents();
    if (!live) return;
    const int gpr = (C + g - 1) / g;
    const float *sr = scales + (size_t)o * gpr;
    const float bv = bias ? __bfloat162float(bias[o]) : 0.0f;
    for (int n0 = 0; n0 < N; n0 += RC) {
        float acc[RC];
#pragma unroll
        for (int r = 0; r < RC; r++) acc[r] = 0.0f;
        if constexpr (MODE == kPreload) {
#pragma unroll
            for (int i = 0; i < kMaxChunks; i++) {
                if (i >= nch) break;
                const int k = (lane + 32 * i) * 16;
                float wf[16];
                widen16(wf, wv[i]);
                chunk_dot(acc, wf, sr[k / g], x, n0, N, C, k);
            }
        } else if constexpr (MODE == kChunks) {
#pragma unroll 2
            for (int k = lane * 16; k < C; k += 32 * 16) {
                float wf[16];
                widen16(wf, llmc_ld_stream16(wr + k));
                chunk_dot(acc, wf, sr[k / g], x, n0, N, C, k);
            }
        } else {
            for (int k = lane; k < C; k += 32) {
                const float wk = (float)wr[k] * sr[k / g];
#pragma unroll
                for (int r = 0; r < RC; r++) {
                    if (n0 + r >= N) break;
                    acc[r] = fmaf(__bfloat162float(x[(size_t)(n0 + r) * C + k]), wk, acc[r]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < RC; r++) {
#pragma unroll
            for (int m = 16; m > 0; m >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], m);
        }
        if (lane < RC && n0 + lane < N) {
            float v = bv;
#pragma unroll
            for (int r = 0; r < RC; r++)
                if (r == lane) v += acc[r];
            const size_t at = (size_t)(n0 + lane) * OC + o;
            if (pre) {
                pre[at] = __float2bfloat16_rn(v);
                v = gelu_tanh_f(v);
            }
            out[at] = __float2bfloat16_rn(v);
        }
    }
}

__global__ void widen_kernel(bf16 *dst, const int8_t *q, const float *scales, size_t rows, int C, int g) {
    const int gpr = (C + g - 1) / g;
    const size_t n = rows * (size_t)C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / C;
        const int k = (int)(i - r * C);
        dst[i] = __float2bfloat16_rn((float)q[i] * scales[r * gpr + k / g]);
    }
}

/* out[i] = wte[tokens[i]] (int8 * scale) + wpe[pos ? pos[i] : i % T]. */
__global__ void embed_int8_kernel(bf16 *out, const int *tokens, const int *pos, const int8_t *wte,
                                  const float *scales, const bf16 *wpe, int N, int T, int C, int g) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const int gpr = (C + g - 1) / g;
    const size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / C;
        const int c = (int)(i - row * C), tok = tokens[row], p = pos ? pos[row] : (int)(row % T);
        const float e = (float)wte[(size_t)tok * C + c] * scales[(size_t)tok * gpr + c / g];
        out[i] = __float2bfloat16_rn(e + __bfloat162float(wpe[(size_t)p * C + c]));
    }
}

static bool is_int8(const llmc_tensor *t) { return t && t->dtype == LLMC_I8 && t->scales && t->group_size > 0; }

} /* namespace llmc_int8 */

using namespace llmc_int8;

int llmc_cuda_is_int8(const llmc_tensor *t) { return is_int8(t); }

llmc_status llmc_cuda_matmul_forward_int8(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                          const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC) {
    LLMC_CUDA_WEIGHTS("matmul_forward", bias, NULL);
    cudaStream_t s = llmc_cuda_stream(dev);
    const int g = w->group_size;
    const size_t wide = (size_t)OC * C * sizeof(bf16);
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    LLMC_CUDA_TRY(dev, cudaStreamIsCapturing(s, &cap));
    const bool can_widen = cap == cudaStreamCaptureStatusNone || wide <= llmc_cuda_impl_of(dev)->scratch_bytes;
    if (N > kMaxRows && can_widen) {
        void *tmp;
        llmc_status st = llmc_cuda_scratch(dev, wide, &tmp);
        if (st != LLMC_OK) return st;
        widen_kernel<<<llmc_cuda_grid(dev, (size_t)OC * C, 256, 8), 256, 0, s>>>(
            (bf16 *)tmp, (const int8_t *)w->data, (const float *)w->scales, (size_t)OC, C, g);
        LLMC_CUDA_LAUNCHED(dev);
        llmc_tensor t = *w;
        t.dtype = LLMC_BF16;
        t.data = tmp;
        t.scales = NULL;
        t.group_size = 0;
        return llmc_cuda_matmul_forward(dev, out, pre_gelu, inp, &t, bias, N, C, OC);
    }
    if (g >= C && dev->tuning.int8_mma) { /* per row: gemv.cu's tensor-core path, where it takes the shape */
        llmc_status st = llmc_cuda_gemv_forward_int8(dev, out, pre_gelu, inp, (const int8_t *)w->data,
                                                     (const float *)w->scales, llmc_tensor_data(bias), N, C, OC);
        if (st != LLMC_ERR_UNSUPPORTED) return st;
    }
    llmc_cuda_span *last = llmc_cuda_impl_of(dev)->gemv_last_out; /* gemv.cu's early-load guard */
    const size_t ob = (size_t)N * OC * sizeof(bf16);
    last[0] = llmc_cuda_span{(uintptr_t)out, (uintptr_t)out + ob};
    last[1] = pre_gelu ? llmc_cuda_span{(uintptr_t)pre_gelu, (uintptr_t)pre_gelu + ob} : llmc_cuda_span{0, 0};
    const bool vec = C % 16 == 0 && g % 16 == 0 && llmc_is_aligned16(w->data) && llmc_is_aligned16(inp);
    const dim3 grid((unsigned)LLMC_CEIL_DIV(OC, llmc_int8::kWarps)), block(llmc_int8::kWarps * 32);
    auto kernel = N == 1 ? (!vec                           ? gemv_int8_kernel<kScalar, 1>
                            : C <= 16 * 32 * kMaxChunks ? gemv_int8_kernel<kPreload, 1>
                                                        : gemv_int8_kernel<kChunks, 1>)
                         : (!vec                           ? gemv_int8_kernel<kScalar, kRowChunk>
                            : C <= 16 * 32 * kMaxChunks ? gemv_int8_kernel<kPreload, kRowChunk>
                                                        : gemv_int8_kernel<kChunks, kRowChunk>);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), kernel,
                                       grid, block, 0, s, (bf16 *)out, (bf16 *)pre_gelu, (const bf16 *)inp,
                                       (const int8_t *)w->data, (const float *)w->scales,
                                       (const bf16 *)llmc_tensor_data(bias), N, C, OC, g));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_embed_int8(llmc_device *dev, void *out, const int *tokens, const int *pos, const llmc_tensor *wte,
                                 const llmc_tensor *wpe, int N, int T, int C) {
    LLMC_CUDA_WEIGHTS("encoder_forward", wpe, NULL);
    if (N == 0) return LLMC_OK;
    const unsigned grid = (unsigned)llmc_cuda_grid(dev, (size_t)N * C, 256, 16);
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), embed_int8_kernel, dim3(grid), dim3(256), 0,
                                       llmc_cuda_stream(dev), (bf16 *)out, tokens, pos, (const int8_t *)wte->data,
                                       (const float *)wte->scales, (const bf16 *)wpe->data, N, T, C,
                                       wte->group_size));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

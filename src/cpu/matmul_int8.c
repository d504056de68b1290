/* matmul_int8.c — int8 weights (quant.c's scheme) on the CPU: matmul_forward and embedding rows.
 *
 * Few rows (decode): one pass over W's int8 bytes, widened to fp32 in registers; each group's
 * dot product is summed in fp32 and then multiplied by its scale. Decode is memory-bound, and
 * this reads a quarter of the fp32 path's bytes. More rows (prefill, evaluation): W is widened a
 * block of rows at a time into fp32 scratch and the fp32 GEMM does the rest, so the arithmetic
 * runs at GEMM speed and the widening is paid once per block, not once per input row. */
#include <stdlib.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "cpu_internal.h"

#define INT8_MATVEC_MAX_ROWS 4      /* as the fp32 path's matvec: beyond, the GEMM wins */
#define INT8_BLOCK_FLOATS (1 << 22) /* 16 MB of widened W per GEMM call */

/* sum_k x[k] * q[k] over n elements, in fp32. With AVX2: 8 int8 at a time sign-extended straight
 * to int32 (one instruction), converted and multiplied in, four accumulators for the FMA latency
 * (gcc's own vectorisation of the plain loop widened in two steps: ~1.6x slower, measured). */
static inline float dot_i8(const float *restrict x, const int8_t *restrict q, int n) {
    int k = 0;
    float acc = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
#define LLMC_I8X8(acc, at)                                                                              \
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + (at)),                                                    \
                          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + (at))))), acc)
    for (; k + 32 <= n; k += 32) {
        LLMC_I8X8(a0, k);
        LLMC_I8X8(a1, k + 8);
        LLMC_I8X8(a2, k + 16);
        LLMC_I8X8(a3, k + 24);
    }
    for (; k + 8 <= n; k += 8) LLMC_I8X8(a0, k);
#undef LLMC_I8X8
    const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
    acc = _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
#endif
    for (; k < n; k++) acc += x[k] * (float)q[k];
    return acc;
}

/* x . (row j of W) for a row of g-sized groups, each scaled once. */
static inline float row_dot(const float *restrict x, const int8_t *restrict q, const float *restrict s, int C,
                            int g) {
    float acc = 0.0f;
    for (int k0 = 0, j = 0; k0 < C; k0 += g, j++) acc += s[j] * dot_i8(x + k0, q + k0, C - k0 < g ? C - k0 : g);
    return acc;
}

static void matvec_int8(float *restrict dst, float *restrict gelu_out, const float *restrict inp,
                        const llmc_tensor *w, const float *restrict bias, int N, int C, int OC) {
    const int8_t *q = (const int8_t *)w->data;
    const float *s = (const float *)w->scales;
    const int g = w->group_size, gpr = (C + g - 1) / g;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < OC; j++)
        for (int i = 0; i < N; i++) {
            float acc = row_dot(inp + (size_t)i * C, q + (size_t)j * C, s + (size_t)j * gpr, C, g);
            if (bias) acc += bias[j];
            dst[(size_t)i * OC + j] = acc;
            if (gelu_out) gelu_out[(size_t)i * OC + j] = llmc_gelu(acc);
        }
}

llmc_status llmc_cpu_matmul_forward_int8(llmc_device *dev, float *dst, float *gelu_out, const float *inp,
                                         const llmc_tensor *w, const float *bias, int N, int C, int OC) {
    if (w->group_size <= 0 || !w->scales)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "matmul_forward: int8 tensor '%s' has no scales",
                                w->name ? w->name : "weight");
    if (N <= INT8_MATVEC_MAX_ROWS) {
        matvec_int8(dst, gelu_out, inp, w, bias, N, C, OC);
        return LLMC_OK;
    }
    int rows = INT8_BLOCK_FLOATS / (C > 0 ? C : 1);
    rows = rows < 16 ? 16 : rows / 16 * 16;
    if (rows > OC) rows = OC;
    float *wf = llmc_cpu_aligned_alloc((size_t)rows * C * sizeof(float));
    if (!wf)
        return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "matmul_forward: cannot allocate %zu bytes to widen int8",
                                (size_t)rows * C * sizeof(float));
    const int8_t *q = (const int8_t *)w->data;
    const float *s = (const float *)w->scales;
    const int g = w->group_size, gpr = (C + g - 1) / g;
    llmc_status st = LLMC_OK;
    for (int j0 = 0; j0 < OC && st == LLMC_OK; j0 += rows) {
        const int nj = OC - j0 < rows ? OC - j0 : rows;
#pragma omp parallel for schedule(static)
        for (int j = 0; j < nj; j++)
            for (int k = 0; k < C; k++)
                wf[(size_t)j * C + k] = (float)q[(size_t)(j0 + j) * C + k] * s[(size_t)(j0 + j) * gpr + k / g];
        llmc_cpu_epilogue e = {bias ? bias + j0 : NULL, gelu_out ? gelu_out + j0 : NULL, NULL, OC};
        st = llmc_cpu_sgemm(dev, 0, 1, N, nj, C, inp, C, wf, C, dst + j0, OC, 0, (e.bias || e.gelu_out) ? &e : NULL);
    }
    llmc_cpu_aligned_free(wf);
    return st;
}

llmc_status llmc_cpu_embedding_check(llmc_device *dev, const char *op, const llmc_tensor *wte,
                                     const llmc_tensor *wpe) {
    if (wte->dtype == LLMC_I8 && wte->scales && wte->group_size > 0) return llmc_weight_check(dev, op, wpe, LLMC_F32);
    LLMC_CPU_WEIGHTS(op, wte, wpe);
    return LLMC_OK;
}

void llmc_cpu_embed_row(float *restrict dst, const llmc_tensor *wte, int token, const float *restrict add, int C) {
    if (wte->dtype != LLMC_I8) {
        const float *restrict a = (const float *)wte->data + (size_t)token * C;
#pragma omp simd
        for (int c = 0; c < C; c++) dst[c] = a[c] + add[c];
        return;
    }
    const int g = wte->group_size;
    const int8_t *restrict q = (const int8_t *)wte->data + (size_t)token * C;
    const float *restrict s = (const float *)wte->scales + (size_t)token * ((C + g - 1) / g);
    for (int c = 0; c < C; c++) dst[c] = (float)q[c] * s[c / g] + add[c];
}

/* cpu_internal.h — helpers shared by the CPU backend's files (not part of any API).
 *
 * The math helpers are branch-free so that gcc can vectorise the loops that call
 * them; glibc's expf/tanhf are scalar calls and would dominate GELU and softmax. */
#ifndef LLMC_CPU_INTERNAL_H
#define LLMC_CPU_INTERNAL_H
#include <stdint.h>
#include <string.h>
#include "cpu_ops.h"

/* dev->impl of the CPU backend: a scratch buffer reused across ops (packing
 * panels for the GEMM, attention score rows). Ops on one device run one at a time. */
typedef struct llmc_cpu_impl {
    void *ws;
    size_t ws_bytes;
    void *readback; /* what readback_begin copied: ops run at once here, so the copy is done */
    size_t readback_bytes, readback_len;
} llmc_cpu_impl;

/* Returns at least `bytes` of 64-byte aligned scratch. Uses the device's cached
 * buffer when dev->impl is set; otherwise allocates and sets *owned (release with
 * llmc_cpu_scratch_release). NULL when out of memory. */
void *llmc_cpu_scratch(llmc_device *dev, size_t bytes, void **owned);
void llmc_cpu_scratch_release(void *owned);
void *llmc_cpu_aligned_alloc(size_t bytes);
void llmc_cpu_aligned_free(void *p);

/* Work done after the last K block of a GEMM tile, while it is still in cache.
 * Applied in this order to each element C[i,j] of the final result. */
typedef struct llmc_cpu_epilogue {
    const float *bias;       /* C[i,j] += bias[j] */
    float *gelu_out;         /* gelu_out[i*ld + j] = gelu(C[i,j]); C keeps the pre-activation */
    const float *dgelu_pre;  /* C[i,j] *= gelu'(dgelu_pre[i*ld + j]) */
    long ld;                 /* row stride of gelu_out / dgelu_pre */
} llmc_cpu_epilogue;

/* C(M,N) = op(A)(M,K) . op(B)(K,N), or C += when accumulate; then the epilogue (may be NULL).
 * op(A)[i,k] = transA ? A[k*lda + i] : A[i*lda + k]; op(B)[k,j] = transB ? B[j*ldb + k] : B[k*ldb + j].
 * The bits of each C element do not depend on the number of threads.
 * Returns LLMC_OK or LLMC_ERR_OUT_OF_MEMORY (message in dev->err when dev is given). */
llmc_status llmc_cpu_sgemm(llmc_device *dev, int transA, int transB, int M, int N, int K, const float *A, long lda,
                           const float *B, long ldb, float *C, long ldc, int accumulate,
                           const llmc_cpu_epilogue *epi);

/* ---- branch-free math (vectorisable) ---- */

static inline float llmc_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t llmc_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* e^x, within ~1.3 ulp on [-87, 88]; below -87 gives 0, above 88 saturates at
 * e^88 ~ 1.65e38 (never inf, so sigmoid-style formulas stay finite); NaN stays NaN.
 * The range handling works on the bits with integer min/max and masks: written as
 * float compares, gcc folds the clamped paths into constants behind branches and
 * then refuses to vectorise the loop. */
static inline float llmc_expf(float x) {
    const uint32_t lo = 0xC2AE0000u; /* -87.0f */
    const int32_t hi = 0x42B00000;   /* 88.0f */
    uint32_t u0 = llmc_f32_to_bits(x);
    uint32_t u = u0 < lo ? u0 : lo;  /* unsigned order: every float below -87 (and -inf, -NaN) is above lo */
    int32_t si = (int32_t)u;
    si = si < hi ? si : hi;          /* signed order: positives above 88 (and +inf, +NaN) */
    float xc = llmc_bits_to_f32((uint32_t)si);
    /* xc = n ln2 + r, |r| <= ln2/2; adding 1.5*2^23 rounds to the nearest integer */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = (int32_t)n + 127;
    uint32_t rb = llmc_f32_to_bits(p * llmc_bits_to_f32((uint32_t)e << 23));
    uint32_t under = 0u - (uint32_t)(u0 > lo && u0 <= 0xFF800000u);
    uint32_t nan = 0u - (uint32_t)((u0 & 0x7FFFFFFFu) > 0x7F800000u);
    return llmc_bits_to_f32((rb & ~under) | (nan & (u0 | 0x00400000u)));
}

#define LLMC_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define LLMC_GELU_A 0.044715f

/* gelu_tanh(x) = 0.5 x (1 + tanh u) = x * sigmoid(2u), u = k (x + a x^3):
 * one exp, no cancellation near 0. */
static inline float llmc_gelu(float x) {
    float u = LLMC_GELU_K * (x + LLMC_GELU_A * x * x * x);
    return x / (1.0f + llmc_expf(-2.0f * u));
}

/* d gelu/dx = s + 2 x s (1-s) u', s = sigmoid(2u); 1-s = e s with e = exp(-2u). */
static inline float llmc_dgelu(float x) {
    float u = LLMC_GELU_K * (x + LLMC_GELU_A * x * x * x);
    float e = llmc_expf(-2.0f * u);
    float s = 1.0f / (1.0f + e);
    float du = LLMC_GELU_K * (1.0f + 3.0f * LLMC_GELU_A * x * x);
    return s + 2.0f * x * s * (e * s) * du;
}

static inline int llmc_cpu_min(int a, int b) { return a < b ? a : b; }

/* Elementwise work below this many elements runs on one thread: waking the team costs
 * more than it saves, and on a busy machine a descheduled thread stalls the region. */
#define LLMC_CPU_PAR_MIN (1L << 18)

/* Every CPU kernel takes fp32 weights; a or b may be NULL (an optional tensor). */
#define LLMC_CPU_WEIGHTS(op, a, b) LLMC_REQUIRE_WEIGHTS(op, a, b, LLMC_F32)

/* ---- int8 weights (matmul_int8.c): quant.c's scheme, q * the scale of its group ---- */
/* matmul_forward's int8 path: dst = inp @ w^T + bias; gelu_out (may be NULL) = gelu(dst). */
llmc_status llmc_cpu_matmul_forward_int8(llmc_device *dev, float *dst, float *gelu_out, const float *inp,
                                         const llmc_tensor *w, const float *bias, int N, int C, int OC);
/* The encoders' weight check: wte fp32 or int8, wpe fp32. */
llmc_status llmc_cpu_embedding_check(llmc_device *dev, const char *op, const llmc_tensor *wte,
                                     const llmc_tensor *wpe);
/* dst[c] = wte[token, c] + add[c], for wte fp32 or int8. */
void llmc_cpu_embed_row(float *dst, const llmc_tensor *wte, int token, const float *add, int C);

#endif

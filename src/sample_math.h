/* sample_math.h — the arithmetic that the host sampler (sampler.c) and the device sampler
 * (cuda/sample.cu) share, so that both turn the same logits and the same uniform draw into the
 * same token. Every float operation is written out and rounded on its own: the CUDA side uses
 * the _rn intrinsics (immune to --use_fast_math and to FMA contraction), and sampler.c is
 * compiled with -ffp-contract=off (CMakeLists.txt). */
#ifndef LLMC_SAMPLE_MATH_H
#define LLMC_SAMPLE_MATH_H

#include <stdint.h>
#include <string.h>

/* Weights are summed in blocks of SAMPLE_BLOCK tokens, each with SAMPLE_LANES float partial sums
 * (exact enough within a block), the partials then added in double in lane order. */
#define SAMPLE_BLOCK 256
#define SAMPLE_LANES 16

#ifdef __CUDACC__
#define SAMPLE_FN __device__ __forceinline__
#define SAMPLE_ADD(a, b) __fadd_rn(a, b)
#define SAMPLE_SUB(a, b) __fsub_rn(a, b)
#define SAMPLE_MUL(a, b) __fmul_rn(a, b)
#define SAMPLE_DIV(a, b) __fdiv_rn(a, b)
#else
#define SAMPLE_FN static inline
#define SAMPLE_ADD(a, b) ((a) + (b))
#define SAMPLE_SUB(a, b) ((a) - (b))
#define SAMPLE_MUL(a, b) ((a) * (b))
#define SAMPLE_DIV(a, b) ((a) / (b))
#endif

/* exp(x) for x <= 0, to ~2e-7 relative, 0 below -87 (so -Inf gives exactly 0).
 * Plain arithmetic instead of expf so that loops over V vectorise on the host; the clamp works
 * on the bits (for x <= 0, a larger pattern is a more negative x) because a float select there
 * makes GCC split the loop into branches. Constants are the floats nearest 1/n!. */
SAMPLE_FN float sample_exp(float x) {
    const uint32_t lim = 0xC2AE0000u; /* -87.0f */
    uint32_t u;
    memcpy(&u, &x, 4);
    float keep = (float)(u < lim);
    u = u < lim ? u : lim;
    memcpy(&x, &u, 4);
    int n = (int)SAMPLE_SUB(SAMPLE_MUL(x, 0x1.715476p+0f), 0.5f); /* round(x / ln 2), x <= 0 */
    float r = SAMPLE_SUB(SAMPLE_SUB(x, SAMPLE_MUL((float)n, 0x1.62e4p-1f)), /* ln 2 in two parts */
                         SAMPLE_MUL((float)n, 0x1.7f7d1cp-20f));
    float p = 0x1.a01a02p-13f; /* Taylor to r^7 on |r| <= 0.35 */
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 0x1.6c16c2p-10f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 0x1.111112p-7f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 0x1.555556p-5f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 0x1.555556p-3f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 0.5f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 1.0f);
    p = SAMPLE_ADD(SAMPLE_MUL(p, r), 1.0f);
    int32_t bits; /* p * 2^n by adding n to the exponent; n >= -126 keeps it normal */
    memcpy(&bits, &p, 4);
    bits += n * (1 << 23);
    memcpy(&p, &bits, 4);
    return SAMPLE_MUL(p, keep);
}

/* Unnormalised probability of a logit. Division (not a reciprocal) keeps the top logit at
 * exp(0) = 1 even for a denormal temperature. */
SAMPLE_FN float sample_weight(float l, float mx, float temperature) {
    return sample_exp(SAMPLE_DIV(SAMPLE_SUB(l, mx), temperature));
}

#endif

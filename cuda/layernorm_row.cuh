/* layernorm_row.cuh — one row of the forward layernorm by one warp: layernorm.cu's kernel and
 * gemv.cu's fused layernorm + matmul run this same code, so they give the same bits.
 *
 * x = inp (+ inp2), rounded to bf16 (the residual stream the model keeps), staged in xs (C
 * bf16, shared memory) and, when residual_out, stored there; two-pass mean / variance from the
 * stage; out = (x - mean) * rstd * w + b. out may be xs itself (each lane rewrites only the
 * values it read). Pointers are the row's own; VEC = 8 needs them 16-byte aligned. */
#ifndef LLMC_LAYERNORM_ROW_CUH
#define LLMC_LAYERNORM_ROW_CUH
#include "common.cuh"

#define LN_EPS 1e-5f

template <int VEC>
__device__ __forceinline__ void layernorm_row(bf16 *out, bf16 *xs, bf16 *residual_out, const bf16 *inp,
                                              const bf16 *inp2, const bf16 *w, const bf16 *b, int C, float *mean,
                                              float *rstd) {
    const int lane = threadIdx.x & 31, nvec = C / VEC;
    float sum = 0.0f;
    for (int i = lane; i < nvec; i += 32) {
        float a[VEC];
        ld_bf16_cs<VEC>(a, inp + i * VEC);
        if (inp2) {
            float c[VEC];
            ld_bf16_cs<VEC>(c, inp2 + i * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) a[k] += c[k];
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            a[k] = __bfloat162float(__float2bfloat16_rn(a[k]));
            sum += a[k];
        }
        st_bf16<VEC>(xs + i * VEC, a);
        if (residual_out) st_bf16<VEC>(residual_out + i * VEC, a);
    }
    const float m = warp_sum(sum) / (float)C;

    float sq = 0.0f;
    for (int i = lane; i < nvec; i += 32) {
        float a[VEC];
        ld_bf16<VEC>(a, xs + i * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float d = a[k] - m;
            sq += d * d;
        }
    }
    const float s = rsqrtf(warp_sum(sq) / (float)C + LN_EPS);

    for (int i = lane; i < nvec; i += 32) {
        float a[VEC], wv[VEC], bv[VEC];
        ld_bf16<VEC>(a, xs + i * VEC);
        ld_bf16<VEC>(wv, w + i * VEC);
        ld_bf16<VEC>(bv, b + i * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) a[k] = (a[k] - m) * s * wv[k] + bv[k];
        st_bf16<VEC>(out + i * VEC, a);
    }
    if (lane == 0) {
        if (mean) *mean = m;
        if (rstd) *rstd = s;
    }
}

#endif

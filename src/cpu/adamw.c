/* adamw.c — the AdamW update and the (deterministic) sum of squares for grad clipping. */
#include <math.h>
#include "cpu_internal.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

typedef struct adamw_args {
    float *p, *src, *m, *v;
    const float *g;
    float lr, beta1, beta2, b1c, b2c, eps, wd, gscale;
} adamw_args;

static void adamw_range(const adamw_args *a, long i0, long i1) {
    float *restrict p = a->p, *restrict m = a->m, *restrict v = a->v;
    float *src = a->src; /* may be p */
    const float *restrict g = a->g;
    const float lr = a->lr, beta1 = a->beta1, beta2 = a->beta2, b1c = a->b1c, b2c = a->b2c, eps = a->eps;
    const float wd = a->wd, gscale = a->gscale;
    long i = i0;
#if defined(__AVX__)
    /* sqrtf may set errno, which keeps gcc from vectorising the loop below (without
     * -fno-math-errno): scalar sqrt and divisions made AdamW ~5x slower than memory. */
    const __m256 vgs = _mm256_set1_ps(gscale), vb1 = _mm256_set1_ps(beta1), vb2 = _mm256_set1_ps(beta2);
    const __m256 v1b1 = _mm256_set1_ps(1.0f - beta1), v1b2 = _mm256_set1_ps(1.0f - beta2);
    const __m256 vb1c = _mm256_set1_ps(b1c), vb2c = _mm256_set1_ps(b2c), veps = _mm256_set1_ps(eps);
    const __m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd);
    for (; i + 8 <= i1; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), vgs);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(v1b1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(v1b2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 mhat = _mm256_div_ps(mi, vb1c), vhat = _mm256_div_ps(vi, vb2c);
        __m256 w = _mm256_loadu_ps(src + i);
        __m256 upd = _mm256_add_ps(_mm256_div_ps(mhat, _mm256_add_ps(_mm256_sqrt_ps(vhat), veps)), _mm256_mul_ps(vwd, w));
        w = _mm256_sub_ps(w, _mm256_mul_ps(vlr, upd));
        _mm256_storeu_ps(src + i, w);
        _mm256_storeu_ps(p + i, w);
    }
#endif
    for (; i < i1; i++) {
        float gi = g[i] * gscale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / b1c, vhat = vi / b2c;
        float w = src[i];
        w -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w);
        src[i] = w;
        p[i] = w;
    }
}

llmc_status llmc_cpu_adamw_update(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                  float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                  float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                  uint32_t seed, size_t index_base) {
    (void)dev;
    if (!isfinite(*grad_scale)) return LLMC_OK; /* a non-finite gradient norm: no update */
    (void)seed; /* fp32 params need no stochastic rounding */
    (void)index_base;
    adamw_args a = {(float *)params, master ? master : (float *)params, m, v, (const float *)grads, lr, beta1, beta2,
                    b1_correction, b2_correction, eps, weight_decay, *grad_scale};
    long len = (long)n;
    enum { BLOCK = 1 << 14 };
    long nblocks = (len + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (long bi = 0; bi < nblocks; bi++) {
        long i0 = bi * BLOCK, i1 = i0 + BLOCK < len ? i0 + BLOCK : len;
        adamw_range(&a, i0, i1);
    }
    return LLMC_OK;
}

/* Fixed chunking (depends on n only) and an ordered sum of the chunk partials:
 * the result is the same for any thread count. */
llmc_status llmc_cpu_sum_squares(llmc_device *dev, double *out, const void *x, size_t n) {
    (void)dev;
    enum { MAX_CHUNKS = 256 };
    const float *a = (const float *)x;
    size_t chunk = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    if (chunk < 65536) chunk = 65536;
    long nchunks = (long)((n + chunk - 1) / chunk);
    double part[MAX_CHUNKS];
#pragma omp parallel for schedule(static)
    for (long c = 0; c < nchunks; c++) {
        size_t i0 = (size_t)c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        /* 16 independent partial sums: one accumulator would be bound by add latency */
        double acc[16] = {0};
        size_t i = i0;
        for (; i + 16 <= i1; i += 16)
#pragma omp simd
            for (int l = 0; l < 16; l++) acc[l] += (double)a[i + l] * (double)a[i + l];
        for (int l = 0; i < i1; i++, l++) acc[l] += (double)a[i] * (double)a[i];
        double s = 0.0;
        for (int l = 0; l < 16; l++) s += acc[l];
        part[c] = s;
    }
    double total = 0.0;
    for (long c = 0; c < nchunks; c++) total += part[c];
    *out = total;
    return LLMC_OK;
}

llmc_status llmc_cpu_grad_norm_scale(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip) {
    double sumsq;
    llmc_status st = llmc_cpu_sum_squares(dev, &sumsq, grads, n);
    if (st != LLMC_OK) return st;
    out[0] = (float)sqrt(sumsq);
    out[1] = llmc_clip_scale(out[0], grad_clip);
    return LLMC_OK;
}

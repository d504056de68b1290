/* adamw.c — the AdamW update and the (deterministic) sum of squares for grad clipping. */
#include <math.h>
#include "cpu_internal.h"

llmc_status llmc_cpu_adamw_update(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                  float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                  float b2_correction, float eps, float weight_decay, float grad_scale,
                                  uint32_t seed) {
    (void)dev;
    (void)seed; /* fp32 params need no stochastic rounding */
    float *p = (float *)params;
    const float *g = (const float *)grads;
    float *src = master ? master : p; /* the weights of record */
    long len = (long)n;
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < len; i++) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / b1_correction, vhat = vi / b2_correction;
        float w = src[i];
        w -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * w);
        src[i] = w;
        p[i] = w;
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
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = i0; i < i1; i++) s += (double)a[i] * (double)a[i];
        part[c] = s;
    }
    double total = 0.0;
    for (long c = 0; c < nchunks; c++) total += part[c];
    *out = total;
    return LLMC_OK;
}

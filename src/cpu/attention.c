/* attention.c — causal self-attention that never stores the T x T matrix.
 *
 * Forward keeps one row of scores per thread; backward recomputes the
 * probabilities from the saved logsumexp. One (batch, head) pair belongs to one
 * thread, so gradient accumulation into k and v has no races and a fixed order. */
#include <math.h>
#include <omp.h>
#include "cpu_internal.h"

static float dot(const float *restrict a, const float *restrict b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* One score row of `row` floats per thread, from the backend's scratch. */
static float *thread_rows(llmc_device *dev, size_t row, int nt, void **owned) {
    float *ws = (float *)llmc_cpu_scratch(dev, row * (size_t)nt * sizeof(float), owned);
    if (!ws)
        llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating %zu bytes (attention)",
                         row * (size_t)nt * sizeof(float));
    return ws;
}

llmc_status llmc_cpu_attention_forward(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T,
                                       int NH, int HS) {
    llmc_status shape = llmc_attention_shape(dev, "attention_forward", B, T, NH, HS, 0);
    if (shape != LLMC_OK) return shape;
    const int C = NH * HS, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *in = (const float *)qkv;
    float *o = (float *)out;
    int nt = omp_get_max_threads();
    size_t row = ((size_t)T + 15) & ~(size_t)15;
    void *owned;
    float *ws = thread_rows(dev, row, nt, &owned);
    if (!ws) return LLMC_ERR_OUT_OF_MEMORY;
    int pairs = B * NH;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < pairs; bh++) {
        int b = bh / NH, h = bh % NH;
        float *restrict s = ws + row * omp_get_thread_num();
        const float *base = in + (size_t)b * T * C3 + (size_t)h * HS;
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3;
            float mx = -INFINITY;
            for (int j = 0; j <= t; j++) {
                s[j] = dot(q, base + (size_t)j * C3 + C, HS) * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j <= t; j++) {
                s[j] = llmc_expf(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
            float *restrict ot = o + ((size_t)b * T + t) * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++) ot[d] = 0.0f;
            for (int j = 0; j <= t; j++) {
                const float *restrict v = base + (size_t)j * C3 + 2 * C;
                float p = s[j] * inv;
#pragma omp simd
                for (int d = 0; d < HS; d++) ot[d] += p * v[d];
            }
            lse[((size_t)b * NH + h) * T + t] = mx + logf(sum);
        }
    }
    llmc_cpu_scratch_release(owned);
    return LLMC_OK;
}

llmc_status llmc_cpu_attention_backward(llmc_device *dev, void *dqkv, const void *dout, const void *qkv,
                                        const void *out, const float *lse, int B, int T, int NH, int HS) {
    llmc_status shape = llmc_attention_shape(dev, "attention_backward", B, T, NH, HS, 0);
    if (shape != LLMC_OK) return shape;
    const int C = NH * HS, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *in = (const float *)qkv, *g = (const float *)dout, *o = (const float *)out;
    float *dx = (float *)dqkv;
    int nt = omp_get_max_threads();
    size_t row = ((size_t)T + 15) & ~(size_t)15;
    void *owned;
    float *ws = thread_rows(dev, row, nt, &owned);
    if (!ws) return LLMC_ERR_OUT_OF_MEMORY;
    int pairs = B * NH;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < pairs; bh++) {
        int b = bh / NH, h = bh % NH;
        float *restrict p = ws + row * omp_get_thread_num();
        const float *base = in + (size_t)b * T * C3 + (size_t)h * HS;
        float *dbase = dx + (size_t)b * T * C3 + (size_t)h * HS;
        for (int t = 0; t < T; t++)
            for (int part = 0; part < 3; part++) memset(dbase + (size_t)t * C3 + part * C, 0, (size_t)HS * sizeof(float));
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3;
            const float *gt = g + ((size_t)b * T + t) * C + (size_t)h * HS;
            const float *ot = o + ((size_t)b * T + t) * C + (size_t)h * HS;
            float *dq = dbase + (size_t)t * C3;
            float l = lse[((size_t)b * NH + h) * T + t];
            float D = dot(gt, ot, HS);
            for (int j = 0; j <= t; j++) p[j] = dot(q, base + (size_t)j * C3 + C, HS) * scale;
#pragma omp simd
            for (int j = 0; j <= t; j++) p[j] = llmc_expf(p[j] - l);
            for (int j = 0; j <= t; j++) {
                const float *restrict k = base + (size_t)j * C3 + C;
                const float *restrict v = k + C;
                float *restrict dk = dbase + (size_t)j * C3 + C;
                float *restrict dv = dk + C;
                float pj = p[j];
                float ds = pj * (dot(gt, v, HS) - D) * scale;
#pragma omp simd
                for (int d = 0; d < HS; d++) {
                    dv[d] += pj * gt[d];
                    dq[d] += ds * k[d];
                    dk[d] += ds * q[d];
                }
            }
        }
    }
    llmc_cpu_scratch_release(owned);
    return LLMC_OK;
}

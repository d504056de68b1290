/* layernorm.c — fused residual add + layernorm, and its backward. */
#include <math.h>
#include "cpu_internal.h"

llmc_status llmc_cpu_layernorm_forward(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                       const void *inp, const void *inp2, const llmc_tensor *w, const llmc_tensor *b,
                                       int N, int C) {
    if (N < 0 || C <= 0) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_forward: bad shape N=%d C=%d", N, C);
    LLMC_CPU_WEIGHTS("layernorm_forward", w, b);
    if (inp2 && !residual_out)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_forward: inp2 given without residual_out");
    const float *x1 = (const float *)inp, *x2 = (const float *)inp2;
    const float *wt = (const float *)w->data, *bs = (const float *)b->data;
    float *res = (float *)residual_out, *o = (float *)out;
#pragma omp parallel for schedule(static) if ((long)N * C >= LLMC_CPU_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *a = x1 + (size_t)i * C;
        const float *x = a;
        if (res) {
            /* may run in place (residual_out == inp): each element is read before it is written */
            float *r = res + (size_t)i * C;
            if (x2) {
                const float *a2 = x2 + (size_t)i * C;
#pragma omp simd
                for (int c = 0; c < C; c++) r[c] = a[c] + a2[c];
            } else if (r != a) {
                memcpy(r, a, (size_t)C * sizeof(float));
            }
            x = r;
        }
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        float m = s / C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        float rs = 1.0f / sqrtf(v / C + 1e-5f);
        float *restrict y = o + (size_t)i * C;
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * rs * wt[c] + bs[c];
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = rs;
    }
    return LLMC_OK;
}

llmc_status llmc_cpu_layernorm_backward(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *db,
                                        const void *dout, const void *inp, const llmc_tensor *w, const float *mean,
                                        const float *rstd, int N, int C) {
    if (N < 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_backward: bad shape N=%d C=%d", N, C);
    LLMC_CPU_WEIGHTS("layernorm_backward", w, dw);
    LLMC_CPU_WEIGHTS("layernorm_backward", db, NULL);
    const float *g = (const float *)dout, *x = (const float *)inp, *wt = (const float *)w->data;
    float *dx = (float *)dinp, *dwt = (float *)llmc_tensor_data(dw), *dbs = (float *)llmc_tensor_data(db);

    /* rows: dinp, each row on its own */
    if (dx) {
#pragma omp parallel for schedule(static) if ((long)N * C >= LLMC_CPU_PAR_MIN)
        for (int i = 0; i < N; i++) {
            const float *restrict gi = g + (size_t)i * C, *restrict xi = x + (size_t)i * C;
            float m = mean[i], rs = rstd[i];
            float sd = 0.0f, sdn = 0.0f;
#pragma omp simd reduction(+ : sd, sdn)
            for (int c = 0; c < C; c++) {
                float dn = gi[c] * wt[c];
                sd += dn;
                sdn += dn * (xi[c] - m) * rs;
            }
            sd /= C;
            sdn /= C;
            float *restrict di = dx + (size_t)i * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float n = (xi[c] - m) * rs;
                di[c] += (gi[c] * wt[c] - sd - n * sdn) * rs;
            }
        }
    }

    /* columns: dw, db summed over rows in row order, so no thread-dependent reduction */
    if (dwt || dbs) {
        enum { CHUNK = 128 };
        int nchunks = (C + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if ((long)N * C >= LLMC_CPU_PAR_MIN)
        for (int ch = 0; ch < nchunks; ch++) {
            int c0 = ch * CHUNK, nc = llmc_cpu_min(CHUNK, C - c0);
            float aw[CHUNK], ab[CHUNK];
            for (int c = 0; c < nc; c++) aw[c] = ab[c] = 0.0f;
            for (int i = 0; i < N; i++) {
                const float *restrict gi = g + (size_t)i * C + c0, *restrict xi = x + (size_t)i * C + c0;
                float m = mean[i], rs = rstd[i];
#pragma omp simd
                for (int c = 0; c < nc; c++) {
                    aw[c] += gi[c] * ((xi[c] - m) * rs);
                    ab[c] += gi[c];
                }
            }
            if (dwt)
                for (int c = 0; c < nc; c++) dwt[c0 + c] += aw[c];
            if (dbs)
                for (int c = 0; c < nc; c++) dbs[c0 + c] += ab[c];
        }
    }
    return LLMC_OK;
}

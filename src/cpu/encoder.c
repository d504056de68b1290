/* encoder.c — token + position embedding, forward and backward. */
#include "cpu_internal.h"

llmc_status llmc_cpu_encoder_forward(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte,
                                     const llmc_tensor *wpe, int B, int T, int C) {
    if (B < 0 || T < 0 || C < 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_forward: bad shape B=%d T=%d C=%d", B, T, C);
    llmc_status st = llmc_cpu_embedding_check(dev, "encoder_forward", wte, wpe);
    if (st != LLMC_OK) return st;
    float *o = (float *)out;
    const float *pe = (const float *)wpe->data;
    long rows = (long)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= LLMC_CPU_PAR_MIN)
    for (long i = 0; i < rows; i++) llmc_cpu_embed_row(o + i * C, wte, tokens[i], pe + (size_t)(i % T) * C, C);
    return LLMC_OK;
}

/* Rows sharing a token would race if split by row, so threads split the channels
 * instead and every thread walks all rows in order: deterministic, no atomics. */
llmc_status llmc_cpu_encoder_backward(llmc_device *dev, const llmc_tensor *dwte, const llmc_tensor *dwpe,
                                      const void *dout, const int *tokens, const int *tokens_host, int B, int T, int C) {
    (void)tokens_host;
    if (B < 0 || T < 0 || C < 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_backward: bad shape B=%d T=%d C=%d", B, T, C);
    LLMC_CPU_WEIGHTS("encoder_backward", dwte, dwpe);
    float *dte = (float *)dwte->data, *dpe = (float *)dwpe->data;
    const float *d = (const float *)dout;
    enum { CHUNK = 64 };
    int nchunks = (C + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if ((long)B * T * C >= LLMC_CPU_PAR_MIN)
    for (int ch = 0; ch < nchunks; ch++) {
        int c0 = ch * CHUNK, nc = llmc_cpu_min(CHUNK, C - c0);
        for (int t = 0; t < T; t++) {
            float acc[CHUNK];
            for (int c = 0; c < nc; c++) acc[c] = 0.0f;
            for (int b = 0; b < B; b++) {
                long i = (long)b * T + t;
                const float *restrict g = d + i * C + c0;
                float *restrict w = dte + (size_t)tokens[i] * C + c0;
#pragma omp simd
                for (int c = 0; c < nc; c++) {
                    w[c] += g[c];
                    acc[c] += g[c];
                }
            }
            float *restrict p = dpe + (size_t)t * C + c0;
            for (int c = 0; c < nc; c++) p[c] += acc[c];
        }
    }
    return LLMC_OK;
}

/* classifier.c — softmax cross-entropy over the vocabulary, writing dlogits in place. */
#include <math.h>
#include "cpu_internal.h"

llmc_status llmc_cpu_classifier_forward(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                        int V, int Vp, float dloss) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "classifier_forward: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    for (int i = 0; i < N; i++)
        if ((targets[i] < 0 || targets[i] >= V) && targets[i] != LLMC_IGNORE_TARGET)
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "classifier_forward: target %d at row %d is outside [0, %d)",
                                    targets[i], i, V);
    float *lg = (float *)logits;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *restrict x = lg + (size_t)i * Vp;
        if (targets[i] == LLMC_IGNORE_TARGET) { /* no loss, no gradient */
            losses[i] = 0.0f;
            if (dloss != 0.0f)
                for (int j = 0; j < Vp; j++) x[j] = 0.0f;
            continue;
        }
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0; /* 50k terms: a float sum would lose ~1e-5 */
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < V; j++) sum += llmc_expf(x[j] - mx);
        int tgt = targets[i];
        losses[i] = (float)((double)mx + log(sum) - (double)x[tgt]);
        if (dloss != 0.0f) {
            float scale = (float)(dloss / sum);
#pragma omp simd
            for (int j = 0; j < V; j++) x[j] = llmc_expf(x[j] - mx) * scale;
            x[tgt] -= dloss;
            for (int j = V; j < Vp; j++) x[j] = 0.0f;
        }
    }
    return LLMC_OK;
}

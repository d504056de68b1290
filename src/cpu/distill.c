/* distill.c — the distillation classifier: cross-entropy against the targets blended with the
 * tempered KL divergence from a teacher's logits, writing dlogits in place (backend.h). */
#include <math.h>
#include "cpu_internal.h"

/* One row's statistics over its first V columns. */
typedef struct row_stats {
    double lse, lse_tau, lse_teacher; /* logsumexp of z, z/tau, t/tau */
    double kl;                        /* KL(softmax(t/tau) || softmax(z/tau)) */
} row_stats;

static row_stats stats_of(const float *restrict z, const float *restrict t, int V, float inv_tau) {
    float mz = -INFINITY, mt = -INFINITY;
#pragma omp simd reduction(max : mz, mt)
    for (int j = 0; j < V; j++) {
        mz = z[j] > mz ? z[j] : mz;
        mt = t[j] > mt ? t[j] : mt;
    }
    /* sums of 50k terms in double, as classifier.c; w: sum of e_t * (t - z), for KL's cross term */
    double s = 0.0, s_tau = 0.0, s_t = 0.0, w = 0.0;
#pragma omp simd reduction(+ : s, s_tau, s_t, w)
    for (int j = 0; j < V; j++) {
        const float d = z[j] - mz, et = llmc_expf((t[j] - mt) * inv_tau);
        s += llmc_expf(d);
        s_tau += llmc_expf(d * inv_tau);
        s_t += et;
        w += (double)et * (double)(t[j] - z[j]);
    }
    row_stats r;
    r.lse = (double)mz + log(s);
    r.lse_tau = (double)mz * inv_tau + log(s_tau);
    r.lse_teacher = (double)mt * inv_tau + log(s_t);
    /* KL = sum p_t (t/tau - lse_t - z/tau + lse_z) = E_pt[(t - z)/tau] - lse_t + lse_z */
    r.kl = w / s_t * inv_tau - r.lse_teacher + r.lse_tau;
    return r;
}

llmc_status llmc_cpu_classifier_distill_forward(llmc_device *dev, float *losses, void *logits,
                                                const void *teacher_logits, const int *targets, int N, int V, int Vp,
                                                float dloss, float alpha, float tau) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "classifier_distill_forward: bad shape N=%d V=%d Vp=%d", N,
                                V, Vp);
    if (!(alpha >= 0.0f && alpha <= 1.0f) || !(tau > 0.0f) || !isfinite(tau))
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                "classifier_distill_forward: alpha %g must lie in [0, 1] and tau %g be > 0",
                                (double)alpha, (double)tau);
    for (int i = 0; i < N; i++)
        if ((targets[i] < 0 || targets[i] >= V) && targets[i] != LLMC_IGNORE_TARGET)
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                    "classifier_distill_forward: target %d at row %d is outside [0, %d)", targets[i], i,
                                    V);
    float *lg = (float *)logits;
    const float *tl = (const float *)teacher_logits;
    const float inv_tau = 1.0f / tau, soft = (1.0f - alpha) * tau;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *restrict z = lg + (size_t)i * Vp;
        const float *restrict t = tl + (size_t)i * Vp;
        const int y = targets[i];
        if (y == LLMC_IGNORE_TARGET) { /* no loss, no gradient */
            losses[i] = 0.0f;
            if (dloss != 0.0f)
                for (int j = 0; j < Vp; j++) z[j] = 0.0f;
            continue;
        }
        const row_stats r = stats_of(z, t, V, inv_tau);
        const double ce = r.lse - (double)z[y];
        losses[i] = (float)((double)alpha * ce + (1.0 - (double)alpha) * (double)tau * (double)tau * r.kl);
        if (dloss == 0.0f) continue;
        const float lse = (float)r.lse, lse_tau = (float)r.lse_tau, lse_t = (float)r.lse_teacher;
        const float zy = z[y];
#pragma omp simd
        for (int j = 0; j < V; j++) {
            const float p = llmc_expf(z[j] - lse), p_tau = llmc_expf(z[j] * inv_tau - lse_tau);
            const float q_tau = llmc_expf(t[j] * inv_tau - lse_t);
            z[j] = (alpha * p + soft * (p_tau - q_tau)) * dloss;
        }
        z[y] = (alpha * (llmc_expf(zy - lse) - 1.0f) + soft * (llmc_expf(zy * inv_tau - lse_tau) -
                                                              llmc_expf(t[y] * inv_tau - lse_t))) *
               dloss;
        for (int j = V; j < Vp; j++) z[j] = 0.0f;
    }
    return LLMC_OK;
}

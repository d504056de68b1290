/* optim.c — AdamW with decoupled weight decay and global-norm clipping, over the flat buffers. */
#include <math.h>
#include <string.h>
#include "model_internal.h"

void llmc_adamw_default(llmc_adamw *a) {
    a->lr = 3e-4f;
    a->beta1 = 0.9f;
    a->beta2 = 0.95f;
    a->eps = 1e-8f;
    a->weight_decay = 0.0f;
    a->grad_clip = 1.0f;
}

/* Stochastic-rounding seed per (step, tensor): derived, not drawn, so resume needs no RNG state. */
static uint32_t rounding_seed(int step, int tensor) {
    uint64_t z = (uint64_t)step * 0x9E3779B97F4A7C15ull + (uint64_t)tensor * 0xD1B54A32D192ED03ull + 1;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(z >> 32);
}

llmc_status llmc_model_step(llmc_model *m, const llmc_adamw *a, float *grad_norm) {
    if (!m->grads) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "step needs gradients: run backward first");
    if (!(a->lr >= 0.0f) || !(a->beta1 >= 0.0f && a->beta1 < 1.0f) || !(a->beta2 >= 0.0f && a->beta2 < 1.0f) ||
        !(a->eps > 0.0f) || !(a->weight_decay >= 0.0f))
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "bad AdamW settings: lr=%g beta1=%g beta2=%g eps=%g weight_decay=%g", a->lr, a->beta1,
                               a->beta2, a->eps, a->weight_decay);
    llmc_status st = llmc_model_ensure_optimizer(m);
    if (st != LLMC_OK) return st;

    double sumsq = 0.0;
    MODEL_TRY(m, m->dev.ops->sum_squares(&m->dev, &sumsq, m->grads, m->num_params));
    float norm = (float)sqrt(sumsq);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return llmc_model_fail(m, LLMC_ERR_NUMERIC, "gradient norm is %s at step %d: the update was skipped",
                               isnan(norm) ? "NaN" : "infinite", m->step + 1);
    float scale = (a->grad_clip > 0.0f && norm > a->grad_clip) ? a->grad_clip / norm : 1.0f;

    int t = m->step + 1;
    float b1c = 1.0f - powf(a->beta1, (float)t), b2c = 1.0f - powf(a->beta2, (float)t);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor_info *ti = &m->layout[i];
        size_t off = ti->offset;
        MODEL_TRY(m, m->dev.ops->adamw_update(&m->dev, (char *)m->params + off * m->esz, m->master ? m->master + off : NULL,
                                              (char *)m->grads + off * m->esz, m->adam_m + off, m->adam_v + off,
                                              ti->numel, a->lr, a->beta1, a->beta2, b1c, b2c, a->eps,
                                              ti->weight_decay ? a->weight_decay : 0.0f, scale, rounding_seed(t, i)));
    }
    m->step = t;
    m->logits_state = 0;
    return LLMC_OK;
}

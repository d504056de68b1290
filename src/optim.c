/* optim.c — AdamW with decoupled weight decay and global-norm clipping, over the trainer's
 * shard of the parameters, tensor by tensor (weight decay is per tensor). */
#include <limits.h>
#include <math.h>
#include <string.h>
#include "train_internal.h"

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

/* Queues the norm and the clip scale into t->norm_scale (device): nothing waits. Across ranks the
 * gradients are summed first, and the norm comes from the ranks' sums (which wait). */
static llmc_status queue_norm_scale(llmc_train *t, float grad_clip) {
    llmc_device *d = &t->m->dev;
    llmc_status st = llmc_train_reduce_grads(t);
    if (st != LLMC_OK) return st;
    if (llmc_train_distributed(t)) return llmc_train_dist_norm_scale(t, grad_clip);
    TRAIN_TRY(t, d->ops->grad_norm_scale(d, t->norm_scale, t->grad_mem, t->grads.count, grad_clip));
    return LLMC_OK;
}

/* The norm queued last, on the host: waits for the work queued so far. */
static llmc_status read_norm(llmc_train *t, float *norm) {
    llmc_device *d = &t->m->dev;
    TRAIN_TRY(t, d->ops->readback_begin(d, t->norm_scale, sizeof(float)));
    TRAIN_TRY(t, d->ops->readback_end(d, norm, sizeof(float)));
    return LLMC_OK;
}

llmc_status llmc_train_grad_norm(llmc_train *t, float *grad_norm) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    if (!t->grad_mem) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "no gradients yet: run backward first");
    st = queue_norm_scale(t, 0.0f);
    return st != LLMC_OK ? st : read_norm(t, grad_norm);
}

llmc_status llmc_train_step(llmc_train *t, const llmc_adamw *a, float *grad_norm) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    if (!t->grad_mem) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "step needs gradients: run backward first");
    if (!(a->lr >= 0.0f) || !(a->beta1 >= 0.0f && a->beta1 < 1.0f) || !(a->beta2 >= 0.0f && a->beta2 < 1.0f) ||
        !(a->eps > 0.0f) || !(a->weight_decay >= 0.0f))
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "bad AdamW settings: lr=%g beta1=%g beta2=%g eps=%g weight_decay=%g", a->lr, a->beta1,
                               a->beta2, a->eps, a->weight_decay);
    if (t->step == INT_MAX)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the step count is at its limit of %d steps", INT_MAX);
    st = llmc_train_ensure_optimizer(t);
    if (st == LLMC_OK) st = llmc_train_ensure_mask(t); /* keep_zeros: from the weights before this update */
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;
    const llmc_backend_ops *ops = m->dev.ops;

    /* The clip scale stays on the device, where AdamW reads it (and changes nothing when it is
     * not finite). The host waits for the norm before it queues the update, not after: the
     * update then runs while the host prepares the next step (measured: waiting after it cost
     * 1 ms of a 113 ms d12 step, docs/PERF.md). */
    st = queue_norm_scale(t, a->grad_clip);
    float norm = 0.0f;
    if (st == LLMC_OK) st = read_norm(t, &norm);
    if (st != LLMC_OK) return st;
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return llmc_train_fail(t, LLMC_ERR_NUMERIC, "gradient norm is %s at step %d: the update was skipped",
                               isnan(norm) ? "NaN" : "infinite", t->step + 1);
    const int step = t->step + 1;
    const float b1c = 1.0f - powf(a->beta1, (float)step), b2c = 1.0f - powf(a->beta2, (float)step);
    const size_t lo = t->shard_offset, hi = t->shard_offset + t->shard_count;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *p = &m->w.t[i], *g = &t->grads.t[i];
        /* the part of this tensor inside the shard; the optimizer state is indexed from lo */
        const size_t from = p->offset > lo ? p->offset : lo;
        const size_t to = p->offset + p->numel < hi ? p->offset + p->numel : hi;
        if (from >= to) continue;
        const size_t skip = from - p->offset, s = from - lo;
        TRAIN_TRY(t, ops->adamw_update(&m->dev, (char *)p->data + skip * m->esz, t->master ? t->master + s : NULL,
                                       (const char *)g->data + skip * m->esz, t->adam_m + s, t->adam_v + s, to - from,
                                       a->lr, a->beta1, a->beta2, b1c, b2c, a->eps,
                                       p->weight_decay ? a->weight_decay : 0.0f, t->norm_scale + 1,
                                       rounding_seed(step, i), skip));
        st = llmc_train_apply_mask(t, i, from, to);
        if (st != LLMC_OK) return st;
    }
    st = llmc_train_gather_params(t); /* ZeRO 1: the other ranks' updated shards */
    if (st != LLMC_OK) return st;
    t->step = step;
    t->logits_state = LOGITS_NONE;
    llmc_model_drop_source(m); /* the weights have moved on from the values they were loaded with */
    return LLMC_OK;
}

/*
 * train_mask.c — keep_zeros: matmul weights that are exactly zero stay zero while training.
 *
 * The mask is one bit per parameter of the trainer's shard, made on the device from the exact
 * zeros of the weights (the fp32 master weights where they are kept, else the weights) of the
 * four matmul tensors (llmc_prune_tensor), and remade whenever the weights were replaced from
 * outside a step (the model's version moved: a checkpoint load, set_params). After AdamW updates
 * a tensor, the masked weights, master weights and moments are put back to exactly 0. A resumed
 * run thus re-derives the mask from the zeros the checkpoint kept; nothing extra is saved.
 */
#include "train_internal.h"

void llmc_train_release_mask(llmc_train *t) {
    if (t->zero_mask && t->m && t->m->dev.ops) t->m->dev.ops->free(&t->m->dev, t->zero_mask);
    t->zero_mask = NULL;
}

llmc_status llmc_train_set_keep_zeros(llmc_train *t, int on) {
    t->opts.keep_zeros = on != 0;
    if (!on) llmc_train_release_mask(t);
    return LLMC_OK;
}

int llmc_train_keep_zeros(const llmc_train *t) { return t->opts.keep_zeros; }

/* The part of tensor i inside the shard: [*from, *to) in parameter indices; 0 when empty. */
static int shard_part(const llmc_train *t, int i, size_t *from, size_t *to) {
    const llmc_tensor *p = &t->m->w.t[i];
    const size_t lo = t->shard_offset, hi = t->shard_offset + t->shard_count;
    *from = p->offset > lo ? p->offset : lo;
    *to = p->offset + p->numel < hi ? p->offset + p->numel : hi;
    return *from < *to;
}

llmc_status llmc_train_ensure_mask(llmc_train *t) {
    llmc_model *m = t->m;
    if (!t->opts.keep_zeros) {
        llmc_train_release_mask(t);
        return LLMC_OK;
    }
    if (t->zero_mask && t->mask_version == m->version) return LLMC_OK;
    llmc_device *d = &m->dev;
    const size_t bytes = (t->shard_count + 31) / 32 * sizeof(uint32_t);
    if (!t->zero_mask) TRAIN_TRY(t, d->ops->alloc(d, (void **)&t->zero_mask, bytes));
    TRAIN_TRY(t, d->ops->zero(d, t->zero_mask, bytes));
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        size_t from, to;
        if (!llmc_prune_tensor(i) || !shard_part(t, i, &from, &to)) continue;
        const size_t bit0 = from - t->shard_offset;
        if (t->master)
            TRAIN_TRY(t, d->ops->zero_mask_build(d, t->zero_mask, bit0, t->master + bit0, LLMC_F32, to - from));
        else
            TRAIN_TRY(t, d->ops->zero_mask_build(d, t->zero_mask, bit0, (char *)m->params + from * m->esz,
                                                 d->ops->act_dtype, to - from));
    }
    t->mask_version = m->version;
    return LLMC_OK;
}

llmc_status llmc_train_apply_mask(llmc_train *t, int i, size_t from, size_t to) {
    if (!t->zero_mask || !llmc_prune_tensor(i) || from >= to) return LLMC_OK;
    llmc_model *m = t->m;
    const size_t s = from - t->shard_offset;
    TRAIN_TRY(t, m->dev.ops->zero_mask_apply(&m->dev, t->zero_mask, s, (char *)m->params + from * m->esz,
                                             t->master ? t->master + s : NULL, t->adam_m + s, t->adam_v + s,
                                             to - from));
    return LLMC_OK;
}

/*
 * train_graph.c — the GPT-2 graph for training, written once for every backend.
 *
 * Each layer calls the backend's fused ops, with the weights as typed tensors from the
 * model's table and the gradients from the trainer's table of the same layout:
 *   ln1 = LN(res)            (fused with the previous layer's residual add)
 *   qkv = ln1 W_qkv^T + b    -> attention (flash; keeps only the logsumexp)
 *   res2 = res + atty W_o^T + b, ln2 = LN(res2)
 *   h = gelu(ln2 W_fc^T + b) (GELU in the matmul epilogue)
 *   res3 = res2 + h W_p^T + b
 * then LN_f, tied LM head and the classifier (loss, and dlogits in the same pass when training).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "train_internal.h"

/* Pointer to element offset `elems` of a buffer of act dtype. */
static inline void *at(const llmc_train *t, const void *base, size_t elems) { return (char *)base + elems * t->m->esz; }

/* One layer's slices of the activation arena (with recompute, the single shared slice). */
typedef struct layer_acts {
    void *res_in, *ln1, *ln2, *qkv, *atty, *res2, *fch, *fch_gelu;
    float *lse, *m1, *r1, *m2, *r2;
} layer_acts;

static layer_acts layer_view(const llmc_train *t, int l) {
    const llmc_acts *a = &t->a;
    const size_t N = (size_t)t->B * t->T, NC = N * (size_t)t->m->w.cfg.channels, NH = t->m->w.cfg.num_heads;
    const size_t ln_l = t->opts.recompute < 2 ? (size_t)l : 0, gelu_l = t->opts.recompute < 1 ? (size_t)l : 0;
    layer_acts v;
    v.res_in = l == 0 ? a->encoded : at(t, a->residual3, (l - 1) * NC);
    v.ln1 = at(t, a->ln1, ln_l * NC);
    v.ln2 = at(t, a->ln2, ln_l * NC);
    v.qkv = at(t, a->qkv, l * 3 * NC);
    v.atty = at(t, a->atty, l * NC);
    v.res2 = at(t, a->residual2, l * NC);
    v.fch = at(t, a->fch, l * 4 * NC);
    v.fch_gelu = at(t, a->fch_gelu, gelu_l * 4 * NC);
    v.lse = a->att_lse + (size_t)l * NH * N;
    v.m1 = a->ln1_mean + (size_t)l * N;
    v.r1 = a->ln1_rstd + (size_t)l * N;
    v.m2 = a->ln2_mean + (size_t)l * N;
    v.r2 = a->ln2_rstd + (size_t)l * N;
    return v;
}

/* ignore_ok: targets, where LLMC_IGNORE_TARGET marks a position left out of the loss. */
static llmc_status check_tokens(llmc_train *t, const int *ids, size_t n, const char *what, int ignore_ok) {
    const int V = t->m->w.cfg.vocab_size;
    for (size_t i = 0; i < n; i++)
        if ((ids[i] < 0 || ids[i] >= V) && !(ignore_ok && ids[i] == LLMC_IGNORE_TARGET))
            return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                                   "%s token id %d at position %zu is out of range: the vocabulary has %d tokens "
                                   "(ids 0..%d%s)",
                                   what, ids[i], i, V, V - 1, ignore_ok ? ", or -1 for a target left out of the loss" : "");
    return LLMC_OK;
}

/* The scale of each counted row's dlogits: loss_scale times d(mean)/d(row loss). */
static float row_dloss(const llmc_train *t, float loss_scale) {
    return loss_scale / (float)(t->counted_targets > 0 ? t->counted_targets : 1);
}

static llmc_status check_batch(llmc_train *t, const int *inputs, int B, int T) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    if (!inputs) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "no input tokens given");
    if (B <= 0 || T <= 0)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "batch size B=%d and sequence length T=%d must be >= 1", B, T);
    if ((long long)B * T > INT_MAX)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "B=%d x T=%d tokens is more than one batch can hold", B, T);
    if (T > t->m->w.cfg.max_seq_len)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "sequence length T=%d exceeds the model's maximum context of %d tokens", T,
                               t->m->w.cfg.max_seq_len);
    return LLMC_OK;
}

/* The matmuls of the layers (and, with fp8 2, the LM head): fp8 when the trainer asks for it and
 * the backend takes the shape, else the bf16 op. Each weight is one fp8 call site (4 per layer,
 * then the LM head), which keeps its tensors' scaling histories. */
enum { SITE_QKV, SITE_ATTPROJ, SITE_FC, SITE_FCPROJ, SITES_PER_LAYER };

static int fp8_site(const llmc_train *t, int l, int k) {
    const int L = t->m->w.cfg.num_layers;
    if (t->opts.fp8 == 0 || (l == L && t->opts.fp8 < 2)) return -1;
    return l * SITES_PER_LAYER + k;
}

static llmc_status layer_matmul_forward(llmc_train *t, int l, int k, void *out, void *pre_gelu, const void *inp,
                                        const llmc_tensor *w, const llmc_tensor *b, int N, int C, int OC) {
    llmc_device *d = &t->m->dev;
    const int site = fp8_site(t, l, k);
    if (site >= 0) {
        llmc_status st = d->ops->matmul_forward_fp8(d, site, out, pre_gelu, inp, w, b, N, C, OC);
        if (st != LLMC_ERR_UNSUPPORTED) return st;
    }
    return d->ops->matmul_forward(d, out, pre_gelu, inp, w, b, N, C, OC);
}

static llmc_status layer_matmul_backward(llmc_train *t, int l, int k, void *dinp, const llmc_tensor *dw,
                                         const llmc_tensor *db, const void *dout, const void *inp,
                                         const llmc_tensor *w, const void *pre_gelu, int N, int C, int OC) {
    llmc_device *d = &t->m->dev;
    const int site = fp8_site(t, l, k);
    if (site >= 0) {
        llmc_status st = d->ops->matmul_backward_fp8(d, site, dinp, dw, db, dout, inp, w, pre_gelu, N, C, OC);
        if (st != LLMC_ERR_UNSUPPORTED) return st;
    }
    return d->ops->matmul_backward(d, dinp, dw, db, dout, inp, w, pre_gelu, N, C, OC);
}

/* Runs the graph on the inputs already in t->a.inputs. dloss != 0 makes the classifier
 * leave dlogits (scaled by dloss) in place of the logits. */
static llmc_status forward_graph(llmc_train *t, int B, int T, float dloss) {
    llmc_model *m = t->m;
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_device *d = &m->dev;
    const llmc_weights *W = &m->w;
    llmc_acts *a = &t->a;
    const int L = W->cfg.num_layers, C = W->cfg.channels, NH = W->cfg.num_heads, HS = C / NH;
    const int V = W->cfg.vocab_size, Vp = W->cfg.padded_vocab_size, N = B * T;
    const size_t NC = (size_t)N * C;
    const llmc_tensor *wte = &W->t[LLMC_WTE];

    TRAIN_TRY(t, ops->encoder_forward(d, a->encoded, a->inputs, wte, &W->t[LLMC_WPE], B, T, C));
    for (int l = 0; l < L; l++) {
        llmc_tensor P[LLMC_NUM_PARAM_TENSORS];
        llmc_weights_slices(W, l, P);
        const layer_acts v = layer_view(t, l);

        if (l == 0)
            TRAIN_TRY(t, ops->layernorm_forward(d, NULL, v.ln1, v.m1, v.r1, a->encoded, NULL, &P[LLMC_LN1W],
                                                &P[LLMC_LN1B], N, C));
        else /* finishes the previous layer: res_in = res2[l-1] + mlp output */
            TRAIN_TRY(t, ops->layernorm_forward(d, v.res_in, v.ln1, v.m1, v.r1, at(t, a->residual2, (l - 1) * NC),
                                                a->scratch, &P[LLMC_LN1W], &P[LLMC_LN1B], N, C));
        TRAIN_TRY(t, layer_matmul_forward(t, l, SITE_QKV, v.qkv, NULL, v.ln1, &P[LLMC_QKVW], &P[LLMC_QKVB], N, C, 3 * C));
        TRAIN_TRY(t, ops->attention_forward(d, v.atty, v.lse, v.qkv, B, T, NH, HS));
        TRAIN_TRY(t, layer_matmul_forward(t, l, SITE_ATTPROJ, a->scratch, NULL, v.atty, &P[LLMC_ATTPROJW],
                                          &P[LLMC_ATTPROJB], N, C, C));
        TRAIN_TRY(t, ops->layernorm_forward(d, v.res2, v.ln2, v.m2, v.r2, v.res_in, a->scratch, &P[LLMC_LN2W],
                                            &P[LLMC_LN2B], N, C));
        TRAIN_TRY(t, layer_matmul_forward(t, l, SITE_FC, v.fch_gelu, v.fch, v.ln2, &P[LLMC_FCW], &P[LLMC_FCB], N, C, 4 * C));
        TRAIN_TRY(t, layer_matmul_forward(t, l, SITE_FCPROJ, a->scratch, NULL, v.fch_gelu, &P[LLMC_FCPROJW],
                                          &P[LLMC_FCPROJB], N, 4 * C, C));
    }
    TRAIN_TRY(t, ops->layernorm_forward(d, at(t, a->residual3, (L - 1) * NC), a->lnf, a->lnf_mean, a->lnf_rstd,
                                        at(t, a->residual2, (L - 1) * NC), a->scratch, &W->t[LLMC_LNFW],
                                        &W->t[LLMC_LNFB], N, C));
    TRAIN_TRY(t, layer_matmul_forward(t, L, 0, a->logits, NULL, a->lnf, wte, NULL, N, C, Vp)); /* LM head */
    t->logits_state = LOGITS_VALID;
    if (!t->has_targets) return LLMC_OK;

    if (dloss != 0.0f && t->teacher) { /* training against a teacher: the distillation loss */
        llmc_status st = llmc_train_distill_classify(t, dloss);
        if (st != LLMC_OK) return st;
    } else {
        TRAIN_TRY(t, ops->classifier_forward(d, a->losses, a->logits, a->targets, N, V, Vp, dloss));
    }
    if (dloss != 0.0f) t->logits_state = LOGITS_ARE_DLOGITS;
    /* the losses come back while whatever is queued next (the backward pass) runs: read_loss */
    TRAIN_TRY(t, ops->readback_begin(d, a->losses, (size_t)N * sizeof(float)));
    return LLMC_OK;
}

/* Waits for the losses forward_graph queued, and sets t->loss: their mean over the counted
 * targets. A loss that is not finite is an error (the model diverged). */
static llmc_status read_loss(llmc_train *t) {
    llmc_device *d = &t->m->dev;
    const int N = t->B * t->T;
    TRAIN_TRY(t, d->ops->readback_end(d, t->host_losses, (size_t)N * sizeof(float)));
    t->teacher_reading = 0; /* the classifier ran before the losses' copy */
    double sum = 0.0; /* ignored rows hold 0 */
    for (int i = 0; i < N; i++) sum += t->host_losses[i];
    t->loss = t->counted_targets > 0 ? (float)(sum / t->counted_targets) : 0.0f;
    if (!isfinite(t->loss))
        return llmc_train_fail(t, LLMC_ERR_NUMERIC,
                               "the loss is %s: the model's logits are not finite (weights too large, or a learning "
                               "rate that diverged)",
                               isnan(t->loss) ? "NaN" : "infinite");
    return LLMC_OK;
}

/* The batch's shape and token ids, and the activations it needs. */
static llmc_status check_and_reserve(llmc_train *t, const int *inputs, const int *targets, int B, int T, int training) {
    llmc_status st = check_batch(t, inputs, B, T);
    if (st == LLMC_OK) st = check_tokens(t, inputs, (size_t)B * T, "input", 0);
    if (st == LLMC_OK && targets) st = check_tokens(t, targets, (size_t)B * T, "target", 1);
    return st == LLMC_OK ? llmc_train_ensure_acts(t, B, T, training) : st;
}

static llmc_status prepare_batch(llmc_train *t, const int *inputs, const int *targets, int B, int T, int training) {
    llmc_status st = check_and_reserve(t, inputs, targets, B, T, training);
    if (st != LLMC_OK) return st;
    size_t N = (size_t)B * T;
    llmc_device *d = &t->m->dev;
    t->B = B;
    t->T = T;
    t->has_targets = targets != NULL;
    t->counted_targets = 0;
    for (size_t i = 0; targets && i < N; i++) t->counted_targets += targets[i] != LLMC_IGNORE_TARGET;
    t->logits_state = LOGITS_NONE;
    t->loss = NAN;
    memcpy(t->host_inputs, inputs, N * sizeof(int));
    TRAIN_TRY(t, d->ops->copy_h2d(d, t->a.inputs, inputs, N * sizeof(int)));
    if (targets) TRAIN_TRY(t, d->ops->copy_h2d(d, t->a.targets, targets, N * sizeof(int)));
    return LLMC_OK;
}

llmc_status llmc_train_check_step(llmc_train *t, const int *inputs, const int *targets, int B, int T) {
    if (!targets) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "training needs targets");
    llmc_status st = check_and_reserve(t, inputs, targets, B, T, 1);
    return st == LLMC_OK ? llmc_train_ensure_grads(t) : st;
}

llmc_status llmc_train_forward(llmc_train *t, const int *inputs, const int *targets, int B, int T) {
    llmc_status st = prepare_batch(t, inputs, targets, B, T, 0);
    if (st == LLMC_OK) st = forward_graph(t, B, T, 0.0f);
    return st == LLMC_OK && targets ? read_loss(t) : st;
}

/* Copies n values of rows [row0, row0 + rows) of a (., stride) act-dtype matrix, the first
 * `keep` columns of each, into dst as fp32. */
static llmc_status download_rows(llmc_train *t, float *dst, const void *src, size_t row0, size_t rows, int stride,
                                 int keep) {
    llmc_device *d = &t->m->dev;
    float *row = malloc((size_t)stride * sizeof(float));
    if (!row) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a logits row");
    for (size_t i = 0; i < rows; i++) {
        llmc_status st = d->ops->download_f32(d, row, at(t, src, (row0 + i) * stride), d->ops->act_dtype, stride);
        if (st != LLMC_OK) {
            free(row);
            return llmc_train_dev_fail(t, st);
        }
        memcpy(dst + i * keep, row, (size_t)keep * sizeof(float));
    }
    free(row);
    return LLMC_OK;
}

llmc_status llmc_train_get_logits(llmc_train *t, float *dst) {
    if (!t->m || t->logits_state != LOGITS_VALID)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "no logits: run forward first (a training step does not keep them)");
    const llmc_config *c = &t->m->w.cfg;
    return download_rows(t, dst, t->a.logits, 0, (size_t)t->B * t->T, c->padded_vocab_size, c->vocab_size);
}

llmc_status llmc_train_get_logits_at(llmc_train *t, int b, int pos, float *dst) {
    if (!t->m || t->logits_state != LOGITS_VALID)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "no logits: run forward first");
    if (b < 0 || b >= t->B || pos < 0 || pos >= t->T)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "position (%d, %d) outside the last batch (%d, %d)", b, pos,
                               t->B, t->T);
    const llmc_config *c = &t->m->w.cfg;
    return download_rows(t, dst, t->a.logits, (size_t)b * t->T + pos, 1, c->padded_vocab_size, c->vocab_size);
}

llmc_status llmc_train_get_losses(llmc_train *t, float *dst) {
    if (!t->m || !t->has_targets || t->B == 0)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "no losses: run forward with targets first");
    memcpy(dst, t->host_losses, (size_t)t->B * t->T * sizeof(float));
    return LLMC_OK;
}

/* ------------------------------------------------------------------ backward */

static llmc_status backward_graph(llmc_train *t) {
    t->grads_reduced = 0; /* new local gradients: the next step sums them over the ranks again */
    t->reduce_pending = 0;
    llmc_model *m = t->m;
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_device *d = &m->dev;
    const llmc_weights *W = &m->w, *GW = &t->grads;
    llmc_acts *a = &t->a;
    llmc_grad_acts *g = &t->g;
    const int B = t->B, T = t->T, N = B * T;
    const int L = W->cfg.num_layers, C = W->cfg.channels, NH = W->cfg.num_heads, HS = C / NH;
    const int Vp = W->cfg.padded_vocab_size;
    const size_t NC = (size_t)N * C;
    const int ln_layered = t->opts.recompute < 2, gelu_layered = t->opts.recompute < 1;

    /* LM head and final layernorm. dresidual accumulates the gradient flowing down the residual stream. */
    TRAIN_TRY(t, layer_matmul_backward(t, L, 0, g->dbtc, &GW->t[LLMC_WTE], NULL, a->logits, a->lnf, &W->t[LLMC_WTE],
                                       NULL, N, C, Vp));
    TRAIN_TRY(t, ops->zero(d, g->dresidual, NC * m->esz));
    TRAIN_TRY(t, ops->layernorm_backward(d, g->dresidual, &GW->t[LLMC_LNFW], &GW->t[LLMC_LNFB], g->dbtc,
                                         at(t, a->residual3, (L - 1) * NC), &W->t[LLMC_LNFW], a->lnf_mean, a->lnf_rstd,
                                         N, C));
    for (int l = L - 1; l >= 0; l--) {
        llmc_tensor P[LLMC_NUM_PARAM_TENSORS], G[LLMC_NUM_PARAM_TENSORS];
        llmc_weights_slices(W, l, P);
        llmc_weights_slices(GW, l, G);
        const layer_acts v = layer_view(t, l);

        /* recompute what the forward did not keep */
        if (!gelu_layered) TRAIN_TRY(t, ops->gelu_forward(d, v.fch_gelu, v.fch, (size_t)N * 4 * C));
        if (!ln_layered)
            TRAIN_TRY(t, ops->layernorm_forward(d, NULL, v.ln2, v.m2, v.r2, v.res2, NULL, &P[LLMC_LN2W], &P[LLMC_LN2B],
                                                N, C));
        /* MLP: fcproj (its input was gelu(fch), so dinp comes out as d fch), fc, ln2 */
        TRAIN_TRY(t, layer_matmul_backward(t, l, SITE_FCPROJ, g->dfch, &G[LLMC_FCPROJW], &G[LLMC_FCPROJB], g->dresidual,
                                           v.fch_gelu, &P[LLMC_FCPROJW], v.fch, N, 4 * C, C));
        TRAIN_TRY(t, layer_matmul_backward(t, l, SITE_FC, g->dbtc, &G[LLMC_FCW], &G[LLMC_FCB], g->dfch, v.ln2, &P[LLMC_FCW],
                                           NULL, N, C, 4 * C));
        TRAIN_TRY(t, ops->layernorm_backward(d, g->dresidual, &G[LLMC_LN2W], &G[LLMC_LN2B], g->dbtc, v.res2,
                                             &P[LLMC_LN2W], v.m2, v.r2, N, C));
        /* attention block */
        TRAIN_TRY(t, layer_matmul_backward(t, l, SITE_ATTPROJ, g->dbtc, &G[LLMC_ATTPROJW], &G[LLMC_ATTPROJB], g->dresidual,
                                           v.atty, &P[LLMC_ATTPROJW], NULL, N, C, C));
        TRAIN_TRY(t, ops->attention_backward(d, g->dqkv, g->dbtc, v.qkv, v.atty, v.lse, B, T, NH, HS));
        if (!ln_layered)
            TRAIN_TRY(t, ops->layernorm_forward(d, NULL, v.ln1, v.m1, v.r1, v.res_in, NULL, &P[LLMC_LN1W],
                                                &P[LLMC_LN1B], N, C));
        TRAIN_TRY(t, layer_matmul_backward(t, l, SITE_QKV, g->dbtc, &G[LLMC_QKVW], &G[LLMC_QKVB], g->dqkv, v.ln1,
                                           &P[LLMC_QKVW], NULL, N, C, 3 * C));
        TRAIN_TRY(t, ops->layernorm_backward(d, g->dresidual, &G[LLMC_LN1W], &G[LLMC_LN1B], g->dbtc, v.res_in,
                                             &P[LLMC_LN1W], v.m1, v.r1, N, C));
        llmc_status st = llmc_train_reduce_bucket(t, l); /* overlap: this layer's sums while the next runs */
        if (st != LLMC_OK) return st;
    }
    TRAIN_TRY(t, ops->encoder_backward(d, &GW->t[LLMC_WTE], &GW->t[LLMC_WPE], g->dresidual, a->inputs, t->host_inputs,
                                       B, T, C));
    llmc_status st = llmc_train_reduce_bucket(t, -1); /* wte, wpe, lnf */
    if (st != LLMC_OK) return st;
    t->logits_state = LOGITS_NONE; /* the dlogits were consumed */
    return LLMC_OK;
}

static llmc_status prepare_backward(llmc_train *t) {
    llmc_status st = llmc_train_ensure_grads(t);
    if (st == LLMC_OK) st = llmc_train_ensure_acts(t, t->B, t->T, 1);
    return st;
}

/* dloss = 0 would leave logits where dlogits belong, so a zero scale is refused. */
static llmc_status check_loss_scale(llmc_train *t, float loss_scale) {
    if (!isfinite(loss_scale) || loss_scale == 0.0f)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "loss_scale must be finite and nonzero, not %g",
                               (double)loss_scale);
    return LLMC_OK;
}

/* exact_accum: a micro-step after the first forms its gradients on their own and adds them to
 * the sum, ((g0 + g1) + g2) ..., which is the order in which ranks' gradients are summed: one
 * rank accumulating N micro-steps gives the bits of N ranks. Otherwise the backward adds into
 * the sum directly, one contribution at a time. */
static llmc_status backward_into_sum(llmc_train *t) {
    if (!t->opts.exact_accum || t->micro_steps++ == 0) return backward_graph(t);
    llmc_model *m = t->m;
    const size_t bytes = t->grad_capacity * m->esz;
    if (!t->micro_mem) TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, &t->micro_mem, bytes));
    TRAIN_TRY(t, m->dev.ops->zero(&m->dev, t->micro_mem, bytes));
    llmc_weights_bind(&t->grads, t->micro_mem);
    llmc_status st = backward_graph(t);
    llmc_weights_bind(&t->grads, t->grad_mem);
    if (st != LLMC_OK) return st;
    float *sum = t->grad_mem; /* host memory: exact_accum is the CPU backend's (llmc_train_attach) */
    const float *g = t->micro_mem;
    const long n = (long)t->grads.count;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) sum[i] += g[i];
    return LLMC_OK;
}

llmc_status llmc_train_backward(llmc_train *t, float loss_scale) {
    if (!t->m || !t->has_targets || t->logits_state == LOGITS_NONE)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "backward needs a forward with targets first");
    if (check_loss_scale(t, loss_scale) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    llmc_status st = prepare_backward(t);
    if (st != LLMC_OK) return st;
    if (t->logits_state == LOGITS_VALID && t->teacher) { /* the kept logits into distillation dlogits */
        st = llmc_train_teacher_forward(t);
        if (st == LLMC_OK) st = llmc_train_distill_classify(t, row_dloss(t, loss_scale));
        if (st != LLMC_OK) return st;
    } else if (t->logits_state == LOGITS_VALID) { /* turn the kept logits into dlogits */
        const int N = t->B * t->T;
        const llmc_config *c = &t->m->w.cfg;
        TRAIN_TRY(t, t->m->dev.ops->classifier_forward(&t->m->dev, t->a.losses, t->a.logits, t->a.targets, N,
                                                       c->vocab_size, c->padded_vocab_size, row_dloss(t, loss_scale)));
    }
    return backward_into_sum(t);
}

llmc_status llmc_train_forward_backward(llmc_train *t, const int *inputs, const int *targets, int B, int T,
                                        float loss_scale, float *loss) {
    if (!targets) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "training needs targets");
    llmc_status st = check_loss_scale(t, loss_scale);
    if (st == LLMC_OK) st = prepare_batch(t, inputs, targets, B, T, 1);
    if (st == LLMC_OK) st = prepare_backward(t);
    if (st == LLMC_OK && t->teacher) st = llmc_train_teacher_forward(t); /* queued first: it overlaps ours */
    if (st == LLMC_OK) st = forward_graph(t, B, T, row_dloss(t, loss_scale));
    if (st == LLMC_OK) st = backward_into_sum(t);
    /* the loss is checked only now, with the backward pass queued: after a non-finite loss the
     * gradients are not finite either, and a step refuses them */
    if (st == LLMC_OK) st = read_loss(t);
    if (loss) *loss = t->loss;
    return st;
}

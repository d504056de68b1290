/*
 * train_dist.c — the trainer's side of data parallelism: gradients, norms and weights across ranks.
 *
 * Every rank holds the whole model and the whole gradient buffer, padded to world * shard
 * elements so that the reduce-scatter can cut it into equal pieces. Rank r owns the shard
 * [r*shard, min(P, (r+1)*shard)):
 *  - ZeRO 0: the gradients are all-reduced and every rank updates every weight the same way;
 *  - ZeRO 1: they are reduce-scattered, rank r keeps AdamW's moments and master weights for its
 *    shard only, updates it, and all-gathers the weights.
 * Both compute the grad norm from the same per-shard sums (summed over ranks in rank order),
 * so ZeRO 1 reproduces ZeRO 0 bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "comm.h"
#include "train_internal.h"

int llmc_train_distributed(const llmc_train *t) { return t->comm && t->comm->engine; }

int llmc_train_rank(const llmc_train *t) { return t && t->comm ? t->comm->rank : 0; }
int llmc_train_world(const llmc_train *t) { return t && t->comm ? t->comm->world : 1; }

size_t llmc_optimizer_bytes(size_t params, int world, int zero_stage, int master_weights) {
    const size_t per = (size_t)(8 + (master_weights ? 4 : 0));
    const size_t n = world > 1 && zero_stage == 1 ? llmc_comm_shard_size(params, world) : params;
    return n * per;
}

llmc_status llmc_train_open_comm(llmc_train *t, const llmc_comm_options *o) {
    llmc_status st = LLMC_OK;
    if (!t->m || !t->m->dev.ops)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "open the communicator after attaching to a model on its device");
    if (t->comm) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer already has a communicator");
    if (t->opts.zero_stage < 0 || t->opts.zero_stage > 1)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "ZeRO stage %d: llmc has stages 0 and 1", t->opts.zero_stage);
    if (t->opts.shard_count)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "the trainer has a hand-set optimizer shard; with a communicator the ranks split it");
    char err[LLMC_ERR_LEN];
    st = llmc_comm_open(&t->comm, &t->m->dev, t->m->dev.ops->name, o, err, sizeof err);
    if (st != LLMC_OK) return llmc_train_fail(t, st, "%s", err);
    if (!t->comm->engine) return LLMC_OK; /* a world of one: nothing changes */
    if (t->adam_m || t->step > 0) {
        llmc_train_close_comm(t);
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "the trainer has taken optimizer steps alone: join the ranks before the first step");
    }
    llmc_train_release(t); /* gradients and activations: the buffer's padding follows the world */
    return LLMC_OK;
}

void llmc_train_close_comm(llmc_train *t) {
    llmc_comm_close(t->comm);
    t->comm = NULL;
}

size_t llmc_train_shard_size(const llmc_train *t) {
    return llmc_comm_shard_size(t->m->w.count, llmc_train_world(t));
}

void llmc_train_shard_of(const llmc_train *t, int rank, size_t *offset, size_t *count) {
    const size_t P = t->m->w.count, S = llmc_train_shard_size(t);
    const size_t lo = (size_t)rank * S < P ? (size_t)rank * S : P;
    *offset = lo;
    *count = lo + S < P ? S : P - lo;
}

int llmc_train_zero1(const llmc_train *t) { return llmc_train_distributed(t) && t->opts.zero_stage == 1; }

llmc_status llmc_train_comm_fail(llmc_train *t, llmc_status code) {
    snprintf(t->err, sizeof t->err, "%s", t->comm->err);
    return code;
}

#define COMM_TRY(t, call)                                            \
    do {                                                             \
        llmc_status s_ = (call);                                     \
        if (s_ != LLMC_OK) return llmc_train_comm_fail((t), s_);     \
    } while (0)

/* The pieces of [offset, offset + count) cut at the shard boundaries, each to its owner, into out. */
static int owned_pieces(const llmc_train *t, size_t offset, size_t count, llmc_comm_range *out) {
    const size_t S = llmc_train_shard_size(t);
    int n = 0;
    for (size_t at = offset, end = offset + count; at < end; n++) {
        const size_t owner = at / S, stop = (owner + 1) * S < end ? (owner + 1) * S : end;
        out[n] = (llmc_comm_range){at, stop - at, (int)owner};
        at = stop;
    }
    return n;
}

llmc_status llmc_train_reduce_bucket(llmc_train *t, int layer) {
    if (!t->reduce_in_backward || !llmc_train_distributed(t)) return LLMC_OK;
    const int W = t->comm->world;
    llmc_comm_range *r = malloc((size_t)LLMC_NUM_PARAM_TENSORS * (size_t)(W + 1) * sizeof *r);
    if (!r) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the gradient buckets");
    int n = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *g = &t->grads.t[i];
        if ((g->layer_stride != 0) != (layer >= 0)) continue;
        const size_t at = g->offset + (layer >= 0 ? (size_t)layer * g->layer_stride : 0);
        n += owned_pieces(t, at, layer >= 0 ? g->layer_stride : g->numel, r + n);
    }
    llmc_status st = llmc_comm_fork(t->comm);
    if (st == LLMC_OK) st = llmc_comm_reduce_ranges(t->comm, t->grad_mem, r, n, t->m->dev.ops->act_dtype);
    free(r);
    if (st != LLMC_OK) return llmc_train_comm_fail(t, st);
    if (layer < 0) t->reduce_pending = 1;
    return LLMC_OK;
}

llmc_status llmc_train_reduce_grads(llmc_train *t) {
    if (!llmc_train_distributed(t) || t->grads_reduced) return LLMC_OK;
    const llmc_dtype dt = t->m->dev.ops->act_dtype;
    const size_t S = llmc_train_shard_size(t);
    if (t->reduce_pending) { /* the backward sent each shard's sums to its owner: wait for them */
        COMM_TRY(t, llmc_comm_join(t->comm));
        if (t->opts.zero_stage == 0) COMM_TRY(t, llmc_comm_all_gather(t->comm, t->grad_mem, t->grads.count, S, dt));
    } else if (t->opts.zero_stage == 1)
        COMM_TRY(t, llmc_comm_reduce_scatter(t->comm, t->grad_mem, S, dt));
    else
        COMM_TRY(t, llmc_comm_all_reduce(t->comm, t->grad_mem, t->grads.count, S, dt));
    COMM_TRY(t, llmc_comm_sync(t->comm)); /* the norm waits on the sums next: with a timeout here */
    t->grads_reduced = 1;
    t->reduce_pending = 0;
    return LLMC_OK;
}

llmc_status llmc_train_dist_norm_scale(llmc_train *t, float grad_clip) {
    llmc_model *m = t->m;
    size_t lo, n;
    llmc_train_shard_of(t, t->comm->rank, &lo, &n);
    double sumsq = 0.0;
    if (n) TRAIN_TRY(t, m->dev.ops->sum_squares(&m->dev, &sumsq, (const char *)t->grad_mem + lo * m->esz, n));
    COMM_TRY(t, llmc_comm_sum_doubles(t->comm, &sumsq, 1));
    float out[2];
    out[0] = (float)sqrt(sumsq);
    out[1] = llmc_clip_scale(out[0], grad_clip);
    TRAIN_TRY(t, m->dev.ops->copy_h2d(&m->dev, t->norm_scale, out, sizeof out));
    return LLMC_OK;
}

llmc_status llmc_train_gather_params(llmc_train *t) {
    if (!llmc_train_zero1(t)) return LLMC_OK;
    COMM_TRY(t, llmc_comm_all_gather(t->comm, t->m->params, t->m->w.count, llmc_train_shard_size(t),
                                     t->m->dev.ops->act_dtype));
    return LLMC_OK;
}

llmc_status llmc_train_agree(llmc_train *t, llmc_status st, int *stop) {
    if (!llmc_train_distributed(t)) return st;
    if (st != LLMC_OK && t->failure_agreed) return st; /* every rank knows already, and skips alike */
    char mine[LLMC_ERR_LEN];
    snprintf(mine, sizeof mine, "%s", st != LLMC_OK ? t->err : "");
    const llmc_status all = llmc_comm_agree(t->comm, st, mine, stop);
    if (all == LLMC_OK) return LLMC_OK;
    t->failure_agreed = 1;
    return llmc_train_comm_fail(t, all);
}

llmc_status llmc_train_sum_doubles(llmc_train *t, double *v, int n) {
    if (!llmc_train_distributed(t)) return LLMC_OK;
    COMM_TRY(t, llmc_comm_sum_doubles(t->comm, v, n));
    return LLMC_OK;
}

llmc_status llmc_train_check_same(llmc_train *t, const int64_t *mine, const char *const *names, int n,
                                  uint32_t float_bits) {
    if (!llmc_train_distributed(t)) return LLMC_OK;
    const int W = t->comm->world;
    int64_t *all = malloc((size_t)W * (size_t)n * sizeof *all);
    if (!all) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "out of memory comparing the ranks' settings");
    llmc_status st = llmc_comm_gather_i64(t->comm, mine, all, n);
    if (st != LLMC_OK) st = llmc_train_comm_fail(t, st);
    for (int r = 1; st == LLMC_OK && r < W; r++)
        for (int i = 0; i < n; i++)
            if (all[(size_t)r * n + i] != all[i]) {
                char a[32], b[32];
                const int64_t v[2] = {all[(size_t)r * n + i], all[i]};
                char *out[2] = {a, b};
                for (int k = 0; k < 2; k++) {
                    const int32_t bits = (int32_t)v[k];
                    float f;
                    memcpy(&f, &bits, sizeof f);
                    if (float_bits >> i & 1) snprintf(out[k], sizeof a, "%g", (double)f);
                    else snprintf(out[k], sizeof a, "%lld", (long long)v[k]);
                }
                st = llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                                     "rank %d's %s is %s, rank 0's is %s: every rank must train with the same settings",
                                     r, names[i], a, b);
                break;
            }
    free(all);
    return st;
}

/* Checkpoints: the optimizer state part (device memory) of every rank's shard, in rank order, to
 * rank 0's write(), chunk floats at a time. ZeRO 1 brings the other ranks' pieces through staging
 * (device memory of chunk floats); otherwise rank 0 holds all of it. Rank 0 goes on taking part
 * after a failed write, so that no rank is left waiting; the write's status comes back at the end. */
llmc_status llmc_train_gather_part(llmc_train *t, const float *part, float *staging, float *host, size_t chunk,
                                   llmc_status (*write)(void *ctx, const float *x, size_t n), void *ctx) {
    llmc_model *m = t->m;
    const int me = llmc_train_rank(t), zero1 = llmc_train_zero1(t), W = zero1 ? llmc_train_world(t) : 1;
    llmc_status wst = LLMC_OK;
    for (int r = 0; r < W; r++) {
        size_t lo = 0, count = t->shard_count;
        if (zero1) llmc_train_shard_of(t, r, &lo, &count);
        for (size_t at = 0; at < count; at += chunk) {
            const size_t k = count - at < chunk ? count - at : chunk;
            const float *src = part + at;
            if (r != 0) { /* rank 0's own piece needs no trip */
                if (me == r) TRAIN_TRY(t, m->dev.ops->copy_d2d(&m->dev, staging, part + at, k * sizeof(float)));
                COMM_TRY(t, llmc_comm_broadcast(t->comm, staging, k * sizeof(float), r));
                src = staging;
            }
            if (me != 0 || wst != LLMC_OK) continue;
            TRAIN_TRY(t, m->dev.ops->copy_d2h(&m->dev, host, src, k * sizeof(float)));
            wst = write(ctx, host, k);
        }
    }
    return wst;
}

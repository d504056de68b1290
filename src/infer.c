/*
 * infer.c — the GPT-2 graph for generation, with a KV cache.
 *
 * The same layer sequence as model.c's forward (fused residual+layernorm, matmul with
 * bias/GELU epilogue), but activations are one rolling set of buffers (nothing is kept
 * for a backward), and attention reads keys and values from a per-layer cache:
 *   prefill: attention_forward over the whole prompt, then kv_append writes its K, V;
 *   decode:  kv_append writes the new token's K, V, then attention_decode attends the
 *            one query of each sequence to its own cache prefix (ragged lengths).
 * The LM head runs on one row per sequence, never on every prompt position.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "infer.h"

static llmc_status fail(llmc_infer *e, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, LLMC_ERR_LEN, fmt, ap);
    va_end(ap);
    return code;
}

/* The device's message onto the session. */
static llmc_status dev_fail(llmc_infer *e, llmc_status code) {
    snprintf(e->err, LLMC_ERR_LEN, "%s", e->m->dev.err[0] ? e->m->dev.err : llmc_status_name(code));
    return code;
}

#define INFER_TRY(e, call) LLMC_TRY_WITH(dev_fail, e, call)

static size_t plan(const llmc_model *m, llmc_infer *e, char *base) {
    const llmc_config *cfg = &m->w.cfg;
    const size_t L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, Vp = cfg->padded_vocab_size;
    const size_t S = e->slots, R = e->rows, es = m->esz, f = sizeof(float);
    llmc_arena c = {0, base};
    e->kcache = llmc_arena_take(&c, L * S * (size_t)e->maxlen * C * es);
    e->vcache = llmc_arena_take(&c, L * S * (size_t)e->maxlen * C * es);
    e->x = llmc_arena_take(&c, R * C * es);
    e->res2 = llmc_arena_take(&c, R * C * es);
    e->ln = llmc_arena_take(&c, R * C * es);
    e->qkv = llmc_arena_take(&c, R * 3 * C * es);
    e->atty = llmc_arena_take(&c, R * C * es);
    e->proj = llmc_arena_take(&c, R * C * es);
    e->fch = llmc_arena_take(&c, R * 4 * C * es);
    e->fch_gelu = llmc_arena_take(&c, R * 4 * C * es);
    e->mean = llmc_arena_take(&c, R * f);
    e->rstd = llmc_arena_take(&c, R * f);
    e->lse = llmc_arena_take(&c, R * NH * f);
    e->last = llmc_arena_take(&c, S * C * es);
    e->logits = llmc_arena_take(&c, S * Vp * es);
    e->ids = llmc_arena_take(&c, (R + 4 * S) * sizeof(int));
    e->argmax = llmc_arena_take(&c, S * sizeof(int));
    e->draws = llmc_arena_take(&c, S * sizeof(float));
    e->sync = llmc_arena_take(&c, sizeof(unsigned));
    return c.offset;
}

void llmc_infer_release(llmc_infer *e) {
    llmc_model *m = e->m;
    if (!m) return;
    if (e->graphs && m->dev.ops)
        for (int i = 0; i <= e->slots; i++)
            if (e->graphs[i]) m->dev.ops->graph_free(&m->dev, e->graphs[i]);
    if (e->mem && m->dev.ops) m->dev.ops->free(&m->dev, e->mem);
    free(e->graphs);
    free(e->seen);
    free(e->one_kernel);
    free(e->host_ids);
    memset(e, 0, sizeof *e);
}

size_t llmc_infer_memory(const llmc_infer *e) { return e->mem ? e->bytes : 0; }

llmc_status llmc_infer_alloc(llmc_infer *e, llmc_model *m, char *err, int slots, int maxlen, int rows, int use_graphs,
                             int persistent) {
    const llmc_backend_ops *ops = m->dev.ops;
    memset(e, 0, sizeof *e);
    e->m = m;
    e->err = err;
    if (!ops->encoder_forward_at || !ops->kv_append || !ops->attention_decode || !ops->argmax_rows)
        return fail(e, LLMC_ERR_UNSUPPORTED, "the %s backend has no KV-cache inference ops", ops->name);
    e->slots = slots;
    e->maxlen = maxlen;
    e->rows = rows;
    size_t bytes = plan(m, e, NULL);
    size_t cache = 2 * (size_t)m->w.cfg.num_layers * slots * (size_t)maxlen * m->w.cfg.channels * m->esz;
    size_t free_b = 0, total_b = 0;
    if (ops->memory_info(&m->dev, &free_b, &total_b) == LLMC_OK && total_b > 0 && bytes > free_b)
        return fail(e, LLMC_ERR_OUT_OF_MEMORY,
                    "not enough %s memory for generation: the KV cache for %d sequence(s) x %d positions takes "
                    "%.2f GiB and the scratch %.2f GiB, but only %.2f GiB are free; use a smaller batch or fewer "
                    "new tokens",
                    ops->act_dtype == LLMC_F32 ? "host" : "device", slots, maxlen, cache / 1073741824.0,
                    (bytes - cache) / 1073741824.0, free_b / 1073741824.0);
    e->host_ids = malloc(((size_t)rows + 4 * (size_t)slots) * sizeof(int));
    e->persistent = persistent && ops->decode_layers;
    e->use_graphs = use_graphs && ops->graph_begin && ops->graph_end && ops->graph_launch && ops->graph_free;
    e->graphs = calloc((size_t)slots + 1, sizeof(void *));
    e->seen = calloc((size_t)slots + 1, 1);
    e->one_kernel = calloc((size_t)slots + 1, 1);
    if (!e->host_ids || !e->graphs || !e->seen || !e->one_kernel) {
        llmc_status r = fail(e, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate generation index buffers");
        llmc_infer_release(e);
        return r;
    }
    llmc_status st = ops->alloc(&m->dev, &e->mem, bytes);
    if (st != LLMC_OK) {
        llmc_status r = fail(e, st, "cannot allocate %.2f GiB for generation (KV cache for %d x %d): %s",
                             bytes / 1073741824.0, slots, maxlen, m->dev.err);
        e->mem = NULL;
        llmc_infer_release(e);
        return r;
    }
    e->bytes = bytes;
    plan(m, e, e->mem);
    return LLMC_OK;
}

/* ------------------------------------------------------------------ graph */

static inline void *at(const llmc_model *m, const void *base, size_t elems) { return (char *)base + elems * m->esz; }

/* Per-layer cache of K or V. */
static inline void *cache_at(const llmc_model *m, const llmc_infer *e, void *cache, int layer) {
    return at(m, cache, (size_t)layer * e->slots * e->maxlen * m->w.cfg.channels);
}

/* ln = layernorm(x = inp (+ inp2)) (x kept in residual_out), then out = ln @ w + bias: one
 * kernel where the backend fuses them (decode rows), else the two ops (which also keep e->ln,
 * mean and rstd; nothing reads those after the matmul). */
static llmc_status ln_matmul(llmc_infer *e, void *residual_out, const void *inp, const void *inp2,
                             const llmc_tensor *ln_w, const llmc_tensor *ln_b, void *out, void *pre_gelu,
                             const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC) {
    llmc_device *d = &e->m->dev;
    const llmc_backend_ops *ops = d->ops;
    if (ops->layernorm_matmul_forward) {
        const llmc_status st =
            ops->layernorm_matmul_forward(d, residual_out, out, pre_gelu, inp, inp2, ln_w, ln_b, w, bias, N, C, OC);
        if (st != LLMC_ERR_UNSUPPORTED) return st == LLMC_OK ? LLMC_OK : dev_fail(e, st);
    }
    INFER_TRY(e, ops->layernorm_forward(d, residual_out, e->ln, e->mean, e->rstd, inp, inp2, ln_w, ln_b, N, C));
    INFER_TRY(e, ops->matmul_forward(d, out, pre_gelu, e->ln, w, bias, N, C, OC));
    return LLMC_OK;
}

/* The transformer blocks on N rows already embedded in e->x, then the final layernorm into
 * e->ln. Prefill: B sequences of T rows (pos = 0); decode: T = 1, one row per sequence. */
static llmc_status run_layers(llmc_infer *e, int B, int T, const int *slots, const int *pos, const int *lens) {
    llmc_model *m = e->m;
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_device *d = &m->dev;
    const llmc_weights *W = &m->w;
    const int L = W->cfg.num_layers, C = W->cfg.channels, NH = W->cfg.num_heads, HS = C / NH, N = B * T;
    for (int l = 0; l < L; l++) {
        llmc_tensor P[LLMC_NUM_PARAM_TENSORS];
        llmc_weights_slices(W, l, P);
        void *kc = cache_at(m, e, e->kcache, l), *vc = cache_at(m, e, e->vcache, l);
        /* x = res2 + mlp output of the previous layer (layer 0: x is the embedding) */
        llmc_status st = l == 0 ? ln_matmul(e, NULL, e->x, NULL, &P[LLMC_LN1W], &P[LLMC_LN1B], e->qkv, NULL,
                                            &P[LLMC_QKVW], &P[LLMC_QKVB], N, C, 3 * C)
                                : ln_matmul(e, e->x, e->res2, e->proj, &P[LLMC_LN1W], &P[LLMC_LN1B], e->qkv, NULL,
                                            &P[LLMC_QKVW], &P[LLMC_QKVB], N, C, 3 * C);
        if (st != LLMC_OK) return st;
        INFER_TRY(e, ops->kv_append(d, kc, vc, e->qkv, slots, pos, B, T, NH, HS, e->maxlen));
        if (lens)
            INFER_TRY(e, ops->attention_decode(d, e->atty, e->qkv, kc, vc, slots, lens, N, NH, HS, e->maxlen));
        else
            INFER_TRY(e, ops->attention_forward(d, e->atty, e->lse, e->qkv, B, T, NH, HS));
        INFER_TRY(e, ops->matmul_forward(d, e->proj, NULL, e->atty, &P[LLMC_ATTPROJW], &P[LLMC_ATTPROJB], N, C, C));
        st = ln_matmul(e, e->res2, e->x, e->proj, &P[LLMC_LN2W], &P[LLMC_LN2B], e->fch_gelu, e->fch, &P[LLMC_FCW],
                       &P[LLMC_FCB], N, C, 4 * C);
        if (st != LLMC_OK) return st;
        INFER_TRY(e, ops->matmul_forward(d, e->proj, NULL, e->fch_gelu, &P[LLMC_FCPROJW], &P[LLMC_FCPROJB], N, 4 * C,
                                         C));
    }
    INFER_TRY(e, ops->layernorm_forward(d, e->x, e->ln, e->mean, e->rstd, e->res2, e->proj, &W->t[LLMC_LNFW],
                                        &W->t[LLMC_LNFB], N, C));
    return LLMC_OK;
}

/* Uploads n tokens (NULL: zeros, for the caller to overwrite on the device), nb slots / pos /
 * lens and (when given) nb draws in one copy from the host staging h; returns the device
 * pointers (the draws follow the lens). */
static llmc_status upload_from(llmc_infer *e, int *h, const int *tokens, int n, const int *slots, const int *pos,
                               int nb, int T, const float *draws, int **d_tok, int **d_slots, int **d_pos,
                               int **d_lens) {
    llmc_model *m = e->m;
    if (tokens) memcpy(h, tokens, (size_t)n * sizeof(int));
    else memset(h, 0, (size_t)n * sizeof(int));
    memcpy(h + n, slots, (size_t)nb * sizeof(int));
    for (int i = 0; i < nb; i++) {
        h[n + nb + i] = pos ? pos[i] : 0;
        h[n + 2 * nb + i] = (pos ? pos[i] : 0) + T;
    }
    if (draws) memcpy(h + n + 3 * nb, draws, (size_t)nb * sizeof(float)); /* float and int are both 4 bytes */
    const size_t words = (size_t)n + (draws ? 4 : 3) * (size_t)nb;
    INFER_TRY(e, m->dev.ops->copy_h2d(&m->dev, e->ids, h, words * sizeof(int)));
    *d_tok = e->ids;
    *d_slots = e->ids + n;
    *d_pos = e->ids + n + nb;
    *d_lens = e->ids + n + 2 * nb;
    return LLMC_OK;
}

static llmc_status upload_ids(llmc_infer *e, const int *tokens, int n, const int *slots, const int *pos, int nb, int T,
                              const float *draws, int **d_tok, int **d_slots, int **d_pos, int **d_lens) {
    return upload_from(e, e->host_ids, tokens, n, slots, pos, nb, T, draws, d_tok, d_slots, d_pos, d_lens);
}

llmc_status llmc_infer_prefill(llmc_infer *e, const int *tokens, const int *slots, const int *out_rows, int count,
                               int T) {
    llmc_model *m = e->m;
    const llmc_backend_ops *ops = m->dev.ops;
    const int C = m->w.cfg.channels, N = count * T;
    if (count < 1 || T < 1 || N > e->rows || count > e->slots || T > e->maxlen)
        return fail(e, LLMC_ERR_INVALID_ARG, "prefill of %d x %d tokens does not fit the engine (%d rows)", count, T,
                    e->rows);
    int *d_tok, *d_slots, *d_pos, *d_lens;
    llmc_status st = upload_ids(e, tokens, N, slots, NULL, count, T, NULL, &d_tok, &d_slots, &d_pos, &d_lens);
    if (st != LLMC_OK) return st;
    INFER_TRY(e, ops->encoder_forward(&m->dev, e->x, d_tok, &m->w.t[LLMC_WTE], &m->w.t[LLMC_WPE], count, T, C));
    st = run_layers(e, count, T, d_slots, d_pos, NULL);
    if (st != LLMC_OK) return st;
    for (int i = 0; i < count; i++)
        INFER_TRY(e, ops->copy_d2d(&m->dev, at(m, e->last, (size_t)out_rows[i] * C),
                                   at(m, e->ln, ((size_t)i * T + T - 1) * C), (size_t)C * m->esz));
    return LLMC_OK;
}

/* Greedy picks of logits rows 0..n-1 into host ints. */
static llmc_status pick_greedy(llmc_infer *e, int n, int *out) {
    llmc_model *m = e->m;
    INFER_TRY(e, m->dev.ops->argmax_rows(&m->dev, e->argmax, e->logits, n, m->w.cfg.vocab_size,
                                         m->w.cfg.padded_vocab_size));
    INFER_TRY(e, m->dev.ops->copy_d2h(&m->dev, out, e->argmax, (size_t)n * sizeof(int)));
    return LLMC_OK;
}

llmc_status llmc_infer_last_logits(llmc_infer *e, int n, int *greedy) {
    llmc_model *m = e->m;
    INFER_TRY(e, m->dev.ops->matmul_forward(&m->dev, e->logits, NULL, e->last, &m->w.t[LLMC_WTE], NULL, n,
                                            m->w.cfg.channels, m->w.cfg.padded_vocab_size));
    return greedy ? pick_greedy(e, n, greedy) : LLMC_OK;
}

/* Everything of a decode step that runs on the device (what a graph records); pick: what it
 * ends with, sampling and d_draws for PICK_SAMPLE. */
static llmc_status decode_ops(llmc_infer *e, int n, const int *d_tok, const int *d_slots, const int *d_pos,
                              const int *d_lens, llmc_infer_pick pick, const llmc_sampling *sampling, const float *d_draws) {
    llmc_model *m = e->m;
    const llmc_backend_ops *ops = m->dev.ops;
    const llmc_config *c = &m->w.cfg;
    const llmc_tensor *wte = &m->w.t[LLMC_WTE];
    llmc_status st = LLMC_ERR_UNSUPPORTED;
    if (e->persistent) {
        const llmc_decode_step s = {&m->w, e->kcache, e->vcache, (size_t)e->slots * e->maxlen * c->channels,
                                    e->maxlen, e->x, e->res2, e->qkv, e->atty, e->fch, e->ln,
                                    d_tok, d_pos, d_slots, d_lens, e->sync, n, 0, -1, NULL};
        st = ops->decode_layers(&m->dev, &s);
        if (st != LLMC_OK && st != LLMC_ERR_UNSUPPORTED) return dev_fail(e, st);
        e->one_kernel[n] = st == LLMC_OK;
    }
    if (st == LLMC_ERR_UNSUPPORTED) { /* the per-op path: the reference and the fallback */
        INFER_TRY(e, ops->encoder_forward_at(&m->dev, e->x, d_tok, d_pos, wte, &m->w.t[LLMC_WPE], n, c->channels));
        st = run_layers(e, n, 1, d_slots, d_pos, d_lens);
        if (st != LLMC_OK) return st;
    }
    INFER_TRY(e, ops->matmul_forward(&m->dev, e->logits, NULL, e->ln, wte, NULL, n, c->channels, c->padded_vocab_size));
    if (pick == PICK_ARGMAX)
        INFER_TRY(e, ops->argmax_rows(&m->dev, e->argmax, e->logits, n, c->vocab_size, c->padded_vocab_size));
    if (pick == PICK_SAMPLE)
        INFER_TRY(e, ops->sample_rows(&m->dev, e->argmax, e->logits, n, c->vocab_size, c->padded_vocab_size, sampling,
                                      d_draws));
    return LLMC_OK;
}

/* Replays (or records, the second time this row count comes up) the step as a graph.
 * Returns 1 when the step ran that way, 0 when the caller must run it eagerly; any trouble
 * with graphs turns them off for the engine rather than failing the step. */
static int decode_graph(llmc_infer *e, int n, const int *d_tok, const int *d_slots, const int *d_pos,
                        const int *d_lens, llmc_infer_pick pick, const llmc_sampling *sampling, const float *d_draws) {
    llmc_model *m = e->m;
    const llmc_backend_ops *ops = m->dev.ops;
    if (!e->use_graphs) return 0;
    if (pick != e->graph_pick) { /* graphs end with one kind of pick: record them again */
        for (int i = 0; i <= e->slots; i++) {
            if (e->graphs[i]) ops->graph_free(&m->dev, e->graphs[i]);
            e->graphs[i] = NULL;
        }
        e->graph_pick = pick;
    }
    if (!e->graphs[n]) {
        if (!e->seen[n]) { /* the first run of a shape warms up workspaces and kernel caches */
            e->seen[n] = 1;
            return 0;
        }
        if (ops->graph_begin(&m->dev) != LLMC_OK) {
            e->use_graphs = 0;
            return 0;
        }
        llmc_status st = decode_ops(e, n, d_tok, d_slots, d_pos, d_lens, pick, sampling, d_draws);
        void *g = NULL;
        llmc_status st2 = ops->graph_end(&m->dev, &g);
        if (st != LLMC_OK || st2 != LLMC_OK) {
            if (g) ops->graph_free(&m->dev, g);
            e->use_graphs = 0;
            return 0;
        }
        e->graphs[n] = g;
    }
    llmc_status st = ops->graph_launch(&m->dev, e->graphs[n]);
    if (st == LLMC_OK) return 1;
    ops->graph_free(&m->dev, e->graphs[n]);
    e->graphs[n] = NULL;
    if (st != LLMC_ERR_UNSUPPORTED) e->use_graphs = 0; /* stale: record again next time */
    return 0;
}

static llmc_status check_rows(llmc_infer *e, const int *slots, const int *pos, int n) {
    if (n < 1 || n > e->slots || n > e->rows)
        return fail(e, LLMC_ERR_INVALID_ARG, "decode of %d rows does not fit the engine", n);
    for (int i = 0; i < n; i++)
        if (pos[i] < 0 || pos[i] >= e->maxlen || slots[i] < 0 || slots[i] >= e->slots)
            return fail(e, LLMC_ERR_INVALID_ARG, "decode row %d: position %d / slot %d outside the cache", i, pos[i],
                        slots[i]);
    return LLMC_OK;
}

/* The step's device work, from ids already uploaded: a graph, else the ops one by one. */
static llmc_status decode_step(llmc_infer *e, int n, const int *d_tok, const int *d_slots, const int *d_pos,
                               const int *d_lens, llmc_infer_pick pick, const llmc_sampling *sampling,
                               const float *d_draws) {
    if (!decode_graph(e, n, d_tok, d_slots, d_pos, d_lens, pick, sampling, d_draws)) {
        llmc_status st = decode_ops(e, n, d_tok, d_slots, d_pos, d_lens, pick, sampling, d_draws);
        if (st != LLMC_OK) return st;
    }
    e->persistent_steps += e->one_kernel[n]; /* a replayed graph runs what its recording ran */
    return LLMC_OK;
}

llmc_status llmc_infer_decode_queued(llmc_infer *e, int *stage, const int *tokens, const int *slots, const int *pos,
                                     int n, const llmc_sampling *sampling, const float *draws) {
    llmc_status st = check_rows(e, slots, pos, n);
    if (st != LLMC_OK) return st;
    if (sampling && (!draws || !e->m->dev.ops->sample_rows))
        return fail(e, LLMC_ERR_INVALID_ARG, "decode: sampling on the device needs draws and a backend sampler");
    int *d_tok, *d_slots, *d_pos, *d_lens;
    st = upload_from(e, stage, tokens, n, slots, pos, n, 1, sampling ? draws : NULL, &d_tok, &d_slots, &d_pos,
                     &d_lens);
    if (st != LLMC_OK) return st;
    if (!tokens) INFER_TRY(e, e->m->dev.ops->feed_tokens(&e->m->dev, d_tok, e->argmax, n));
    return decode_step(e, n, d_tok, d_slots, d_pos, d_lens, sampling ? PICK_SAMPLE : PICK_ARGMAX, sampling,
                       (const float *)(d_lens + n));
}

llmc_status llmc_infer_decode(llmc_infer *e, const int *tokens, const int *slots, const int *pos, int n, int *picks,
                              const llmc_sampling *sampling, const float *draws) {
    llmc_status st = check_rows(e, slots, pos, n);
    if (st != LLMC_OK) return st;
    const llmc_infer_pick pick = !picks ? PICK_NONE : sampling ? PICK_SAMPLE : PICK_ARGMAX;
    if (pick == PICK_SAMPLE && (!draws || !e->m->dev.ops->sample_rows))
        return fail(e, LLMC_ERR_INVALID_ARG, "decode: sampling on the device needs draws and a backend sampler");
    int *d_tok, *d_slots, *d_pos, *d_lens;
    st = upload_ids(e, tokens, n, slots, pos, n, 1, pick == PICK_SAMPLE ? draws : NULL, &d_tok, &d_slots, &d_pos,
                    &d_lens);
    if (st != LLMC_OK) return st;
    st = decode_step(e, n, d_tok, d_slots, d_pos, d_lens, pick, sampling, (const float *)(d_lens + n));
    if (st != LLMC_OK) return st;
    if (picks) INFER_TRY(e, e->m->dev.ops->copy_d2h(&e->m->dev, picks, e->argmax, (size_t)n * sizeof(int)));
    return LLMC_OK;
}

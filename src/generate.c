/*
 * generate.c — generation sessions (llmc_gen): autoregressive sampling on a KV-cache engine.
 *
 * A session refers to a model's weights and owns everything else: the KV cache and scratch
 * of its engine (infer.c, with the engine's device graphs), the batch and each sequence's
 * sampler state. Several sessions may be alive on one model at once.
 *
 * llmc_gen_begin validates the prompts, sizes a cache (batch x the longest prompt +
 * max_new, capped at the model's context) and prefills every prompt: from then on the
 * session holds, for each live sequence, the logits of its last token. llmc_gen_next
 * samples one token per live sequence from those logits, then runs one batched decode step
 * over the sequences that go on (each at its own position), which leaves the logits for the
 * next call. A token that ends a sequence (EOT, max_new, or the context limit) is never fed back.
 *
 * Each sequence samples from its own RNG stream (stream 0 is the one a single sequence
 * gets), so sampling runs in parallel across sequences and a sequence's tokens do not depend
 * on when the others stop. Greedy sessions (temperature 0) take the argmax where the logits
 * are and bring back one int per sequence; the logits are read only if llmc_gen_logits asks.
 * Sampling sessions do the same where the backend has a sampler (sample_rows): the host draws
 * each sequence's uniform number from its stream and sends it; the backend returns the token
 * llmc_sample_token_at picks, so the tokens do not depend on where they were sampled. Rows the
 * device sampler leaves to the host (-2) and host_sampling sessions sample here.
 *
 * run_ahead (greedy or device sampling): llmc_gen_next queues the step after the one whose picks
 * it will return next, its tokens fed on the device from those picks (its draws taken from the
 * streams a step early), before the caller has seen them; the picks come back through page-locked
 * memory behind a fence, so the queue never drains between tokens. Such a speculative step is
 * kept when the next call's rows are the same, else it runs unread and its draws go to the step
 * queued in its place.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "file_io.h"
#include "infer.h"
#include "rng.h"

/* Rows of activation scratch a prefill may use at once (prompts longer than this still
 * get their own full-length pass). */
#define PREFILL_ROWS 4096

/* A decode step in the device's queue (run_ahead). */
typedef struct gen_step {
    int *stage;  /* its ids (and draws) upload, 5 ints a row (ops->host_alloc memory) */
    int *picks;  /* its picks, read back (ops->host_alloc memory) */
    void *fence; /* recorded after the readback */
    int queued;  /* its fence has not been waited for */
    int n;       /* rows */
    int *tok, *slot, *pos; /* its rows (tok: once known on the host), batch ints each */
    float *draws;          /* device sampling: its rows' draws */
} gen_step;

struct llmc_gen {
    char err[LLMC_ERR_LEN];
    llmc_model *m; /* while a session runs */
    int batch, max_new, eot, maxT;
    llmc_sampling sampling;
    uint64_t *rng; /* per sequence */
    int *len;      /* tokens so far (prompt + generated) */
    int *generated;
    int *alive;
    int *row;              /* row of `logits` holding the sequence's next-token logits, -1 when stopped */
    int *tok, *slot, *pos; /* staging of one decode step */
    int greedy;            /* temperature 0: the device picks the argmax, logits stay there */
    int *pick;             /* greedy: the token of each logits row; device sampling: likewise when picked */
    int picked;            /* device sampling: the decode step sampled its logits rows into pick */
    int nrows;             /* logits rows the last prefill or decode left */
    float *draws;          /* device sampling: the uniform draw of each logits row */
    float *row_buf;        /* device sampling: one row of logits for a row left to the host */
    float *logits;         /* host sampling: (batch, Vp) fp32 on the host, else NULL */
    uint16_t *raw;         /* sampling on a bf16 backend: the rows as they come off the device */
    int broken;            /* a device step failed: the cache can no longer be trusted */
    llmc_infer eng;
    /* run_ahead (greedy or device sampling): the step after the one the next call returns is
     * queued on that one's picks, on the device, before the caller has them; kept when no
     * sequence stops. */
    int run_ahead;
    float *ahead_draw;           /* device sampling: a draw a speculative step took from the stream, */
    unsigned char *has_ahead;    /* per sequence, for the step that replaces it when it is discarded */
    gen_step steps[2];
    int pending; /* the step whose picks the next call returns (-1: they are in pick already) */
    int spec;    /* the step queued on the pending one's picks (-1: none) */
    long long ahead_kept, ahead_discarded; /* speculative steps that were / were not the next step */
};

LLMC_DEFINE_FAIL(static, fail, llmc_gen)

void llmc_gen_options_default(llmc_gen_options *o) {
    memset(o, 0, sizeof *o);
    o->max_new = 64;
    llmc_sampling_default(&o->sampling);
    o->eot = 50256;
    o->graphs = -1;
    o->host_sampling = -1;
    o->persistent = -1;
    o->run_ahead = -1;
}

llmc_gen *llmc_gen_new(void) { return calloc(1, sizeof(llmc_gen)); }
const char *llmc_gen_error(const llmc_gen *g) { return g ? g->err : "out of memory"; }
int llmc_gen_batch(const llmc_gen *g) { return g->m ? g->batch : 0; }
size_t llmc_gen_memory(const llmc_gen *g) { return g->m ? llmc_infer_memory(&g->eng) : 0; }

long long llmc_gen_persistent_steps(const llmc_gen *g) { return g->m ? g->eng.persistent_steps : 0; }
int llmc_gen_run_ahead(const llmc_gen *g, long long *kept, long long *discarded) {
    if (kept) *kept = g->m ? g->ahead_kept : 0;
    if (discarded) *discarded = g->m ? g->ahead_discarded : 0;
    return g->m ? g->run_ahead : 0;
}

/* Waits for a queued step: its picks are then in s->picks and its staging is free. */
static llmc_status step_wait(llmc_gen *g, gen_step *s) {
    if (!s->queued) return LLMC_OK;
    s->queued = 0;
    llmc_status st = g->m->dev.ops->fence_wait(&g->m->dev, s->fence);
    return st == LLMC_OK ? st : fail(g, st, "%s", g->m->dev.err);
}

static void steps_release(llmc_gen *g) {
    const llmc_backend_ops *ops = g->m->dev.ops;
    /* the device may still read a step's staging or write its picks, also after a failed step */
    if (g->steps[0].stage) ops->synchronize(&g->m->dev);
    for (int i = 0; i < 2; i++) {
        gen_step *s = &g->steps[i];
        if (s->fence) ops->fence_free(&g->m->dev, s->fence);
        if (s->stage) ops->host_free(&g->m->dev, s->stage);
        if (s->picks) ops->host_free(&g->m->dev, s->picks);
        free(s->tok);
        free(s->slot);
        free(s->pos);
        free(s->draws);
    }
    free(g->ahead_draw);
    free(g->has_ahead);
}

void llmc_gen_end(llmc_gen *g) {
    if (!g || !g->m) return;
    steps_release(g);
    llmc_infer_release(&g->eng);
    void *bufs[] = {g->rng,  g->len, g->generated, g->alive,  g->row, g->tok,
                    g->slot, g->pos, g->pick,      g->logits, g->raw, g->draws, g->row_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    g->m->users--;
    char err[LLMC_ERR_LEN];
    memcpy(err, g->err, sizeof err);
    memset(g, 0, sizeof *g);
    memcpy(g->err, err, sizeof err); /* the message of a failed begin outlives the session */
}

void llmc_gen_free(llmc_gen *g) {
    llmc_gen_end(g);
    free(g);
}

static llmc_status download_logits(llmc_gen *g, int n) {
    g->nrows = n;
    if (!g->logits) return LLMC_OK; /* they stay on the device: read lazily by llmc_gen_logits */
    llmc_model *m = g->m;
    const size_t total = (size_t)n * (size_t)m->w.cfg.padded_vocab_size;
    llmc_status st;
    if (!g->raw) {
        st = m->dev.ops->download_f32(&m->dev, g->logits, g->eng.logits, m->dev.ops->act_dtype, total);
    } else { /* bf16 crosses the bus at half the bytes; widening is exact and runs on all host cores */
        st = m->dev.ops->copy_d2h(&m->dev, g->raw, g->eng.logits, total * sizeof(uint16_t));
        if (st == LLMC_OK) llmc_bf16_to_f32_n(g->logits, g->raw, total);
    }
    return st == LLMC_OK ? st : fail(g, st, "%s", m->dev.err);
}

/* Sequence order for prefill: by prompt length, then index (keys are len << 32 | index). */
static int cmp_u64(const void *pa, const void *pb) {
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

/* Prefills the live sequences, grouped by prompt length so that each pass is one
 * (count, T) batch, and computes their first logits. */
static llmc_status prefill(llmc_gen *g, const int *prompts, const size_t *offsets) {
    llmc_infer *e = &g->eng;
    int nlive = 0;
    uint64_t *order = malloc((size_t)g->batch * sizeof(uint64_t));
    int *buf = malloc((size_t)e->rows * sizeof(int));
    int *slots = malloc((size_t)g->batch * sizeof(int)), *rows = malloc((size_t)g->batch * sizeof(int));
    llmc_status st = LLMC_OK;
    if (!order || !buf || !slots || !rows) {
        st = fail(g, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate prefill buffers");
        goto done;
    }
    for (int b = 0; b < g->batch; b++) {
        g->row[b] = g->alive[b] ? nlive++ : -1;
        order[b] = (uint64_t)g->len[b] << 32 | (uint32_t)b;
    }
    qsort(order, (size_t)g->batch, sizeof *order, cmp_u64);
    for (int i = 0; i < g->batch;) {
        int b = (int)(uint32_t)order[i];
        if (!g->alive[b]) {
            i++;
            continue;
        }
        const int T = g->len[b];
        int per = e->rows / T;
        if (per < 1) per = 1;
        int count = 0;
        while (i < g->batch && count < per && g->len[(uint32_t)order[i]] == T) {
            int s = (int)(uint32_t)order[i++];
            if (!g->alive[s]) continue;
            memcpy(buf + (size_t)count * T, prompts + offsets[s], (size_t)T * sizeof(int));
            slots[count] = s;
            rows[count] = g->row[s];
            count++;
        }
        if (count == 0) continue;
        st = llmc_infer_prefill(e, buf, slots, rows, count, T);
        if (st != LLMC_OK) goto done;
    }
    if (nlive > 0) {
        st = llmc_infer_last_logits(e, nlive, g->greedy ? g->pick : NULL);
        if (st == LLMC_OK) st = download_logits(g, nlive);
    }
done:
    free(order);
    free(buf);
    free(slots);
    free(rows);
    return st;
}

/* Checks the prompts; fills offsets and the sizes the cache and scratch need. */
static llmc_status check_prompts(llmc_gen *g, const int *prompts, const int *prompt_lens, int batch, int max_new,
                                 size_t *offsets, long long *longest, long long *total, long long *need) {
    const int maxT = g->m->w.cfg.max_seq_len, V = g->m->w.cfg.vocab_size;
    size_t off = 0;
    *longest = *total = 0;
    *need = 1;
    for (int b = 0; b < batch; b++) {
        const int n = prompt_lens[b];
        offsets[b] = off;
        if (n < 1) return fail(g, LLMC_ERR_INVALID_ARG, "prompt %d is empty: give at least one token", b);
        if (n > maxT)
            return fail(g, LLMC_ERR_INVALID_ARG,
                        "prompt %d has %d tokens, longer than the model's context of %d tokens", b, n, maxT);
        for (int i = 0; i < n; i++)
            if (prompts[off + i] < 0 || prompts[off + i] >= V)
                return fail(g, LLMC_ERR_INVALID_ARG,
                            "prompt %d: token id %d at position %d is out of range (vocabulary of %d)", b,
                            prompts[off + i], i, V);
        off += (size_t)n;
        if (n < maxT) { /* a full context has no room for a new token */
            *longest = n > *longest ? n : *longest;
            *total += n;
            const long long last = (long long)n + max_new - 1; /* positions the cache must hold */
            *need = last > *need ? last : *need;
        }
    }
    return LLMC_OK;
}

static llmc_status alloc_session(llmc_gen *g, int batch, int host_sampling) {
    const size_t nb = (size_t)batch, Vp = (size_t)g->m->w.cfg.padded_vocab_size;
    const int bf16 = g->m->dev.ops->act_dtype == LLMC_BF16;
    const int on_host = !g->greedy && (host_sampling || !g->m->dev.ops->sample_rows);
    const size_t host = on_host ? nb * Vp * (sizeof(float) + (bf16 ? sizeof(uint16_t) : 0)) : 0;
    size_t avail = 0, total = 0;
    llmc_host_memory(&avail, &total);
    if (total > 0 && host > avail) /* sampling keeps every sequence's logits on the host */
        return fail(g, LLMC_ERR_OUT_OF_MEMORY,
                    "not enough host memory to sample %d sequences: their logits take %.2f GiB, %.2f GiB are "
                    "available; use a smaller batch (or temperature 0, which keeps them on the device)",
                    batch, host / 1073741824.0, avail / 1073741824.0);
    g->rng = malloc(nb * sizeof(uint64_t));
    g->len = malloc(nb * sizeof(int));
    g->generated = calloc(nb, sizeof(int));
    g->alive = calloc(nb, sizeof(int));
    g->row = malloc(nb * sizeof(int));
    g->tok = malloc(nb * sizeof(int));
    g->slot = malloc(nb * sizeof(int));
    g->pos = malloc(nb * sizeof(int));
    g->pick = malloc(nb * sizeof(int));
    g->logits = on_host ? malloc(nb * Vp * sizeof(float)) : NULL;
    g->raw = on_host && bf16 ? malloc(nb * Vp * sizeof(uint16_t)) : NULL;
    const int on_device = !g->greedy && !on_host;
    g->draws = on_device ? malloc(nb * sizeof(float)) : NULL;
    g->row_buf = on_device ? malloc(Vp * sizeof(float)) : NULL;
    if (!g->rng || !g->len || !g->generated || !g->alive || !g->row || !g->tok || !g->slot || !g->pos || !g->pick ||
        (on_host && (!g->logits || (bf16 && !g->raw))) || (on_device && (!g->draws || !g->row_buf)))
        return fail(g, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    return LLMC_OK;
}

static llmc_status alloc_steps(llmc_gen *g) {
    llmc_device *dev = &g->m->dev;
    const size_t nb = (size_t)g->batch;
    for (int i = 0; i < 2; i++) {
        gen_step *s = &g->steps[i];
        llmc_status st = dev->ops->host_alloc(dev, (void **)&s->stage, 5 * nb * sizeof(int));
        if (st == LLMC_OK) st = dev->ops->host_alloc(dev, (void **)&s->picks, nb * sizeof(int));
        if (st == LLMC_OK) st = dev->ops->fence_new(dev, &s->fence);
        if (st != LLMC_OK) return fail(g, st, "%s", dev->err);
        s->tok = malloc(nb * sizeof(int));
        s->slot = malloc(nb * sizeof(int));
        s->pos = malloc(nb * sizeof(int));
        s->draws = malloc(nb * sizeof(float));
        if (!s->tok || !s->slot || !s->pos || !s->draws)
            return fail(g, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    }
    g->ahead_draw = malloc(nb * sizeof(float));
    g->has_ahead = calloc(nb, 1);
    if (!g->ahead_draw || !g->has_ahead) return fail(g, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    return LLMC_OK;
}

/* An option's value, or for -1 its default: if_set when the environment variable is set, else
 * the opposite. */
static int option_or_env(int value, const char *env, int if_set) {
    return value >= 0 ? value : (getenv(env) != NULL ? if_set : !if_set);
}

llmc_status llmc_gen_begin(llmc_gen *g, llmc_model *m, const int *prompts, const int *prompt_lens, int batch,
                           const llmc_gen_options *o) {
    llmc_gen_end(g);
    g->err[0] = '\0';
    llmc_gen_options defaults;
    llmc_gen_options_default(&defaults);
    if (!o) o = &defaults;
    const llmc_sampling *s = &o->sampling;
    if (!m || !m->params) return fail(g, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
    if (batch < 1) return fail(g, LLMC_ERR_INVALID_ARG, "generation batch must be >= 1 (got %d)", batch);
    if (!prompts || !prompt_lens) return fail(g, LLMC_ERR_INVALID_ARG, "no prompts given");
    if (o->max_new < 1) return fail(g, LLMC_ERR_INVALID_ARG, "number of new tokens must be >= 1 (got %d)", o->max_new);
    if (llmc_sampling_validate(s, g->err, sizeof g->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    size_t *offsets = malloc((size_t)batch * sizeof(size_t));
    if (!offsets) return fail(g, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    g->m = m; /* from here on llmc_gen_end undoes everything */
    m->users++;
    llmc_model_drop_source(m); /* inference only needs the weights as they are */
    g->batch = batch;
    g->max_new = o->max_new;
    g->eot = o->eot;
    g->maxT = m->w.cfg.max_seq_len;
    g->sampling = *s;
    g->greedy = s->temperature == 0.0f;
    long long longest, total, need;
    llmc_status st = check_prompts(g, prompts, prompt_lens, batch, o->max_new, offsets, &longest, &total, &need);
    /* default: on the device where the backend samples (LLMC_HOST_SAMPLING=1 keeps the host) */
    const int host_sampling = option_or_env(o->host_sampling, "LLMC_HOST_SAMPLING", 1);
    if (st == LLMC_OK) st = alloc_session(g, batch, host_sampling);
    const llmc_backend_ops *ops = m->dev.ops;
    g->pending = g->spec = -1;
    g->run_ahead = (g->greedy || (st == LLMC_OK && !g->logits && ops->sample_rows)) &&
                   option_or_env(o->run_ahead, "LLMC_RUN_AHEAD", 1) && ops->host_alloc && ops->copy_d2h_async &&
                   ops->fence_new && ops->feed_tokens;
    if (st == LLMC_OK && g->run_ahead) st = alloc_steps(g);
    if (st == LLMC_OK) {
        int nlive = 0;
        for (int b = 0; b < batch; b++) {
            /* stream b: splitmix of seed + b * golden ratio; stream 0 is llmc_rng_seed(seed) */
            g->rng[b] = llmc_rng_seed(s->seed + (uint64_t)b * 0x9E3779B97F4A7C15ull);
            g->len[b] = prompt_lens[b];
            g->alive[b] = prompt_lens[b] < g->maxT;
            g->row[b] = -1;
            nlive += g->alive[b];
        }
        if (nlive > 0) {
            const int maxlen = need < g->maxT ? (int)need : g->maxT;
            long long rows = total < PREFILL_ROWS ? total : PREFILL_ROWS;
            rows = rows > longest ? rows : longest;
            rows = rows > batch ? rows : batch;
            const int graphs = option_or_env(o->graphs, "LLMC_NO_GRAPHS", 0);
            const int persistent = option_or_env(o->persistent, "LLMC_DECODE_PERSISTENT", 1);
            st = llmc_infer_alloc(&g->eng, m, g->err, batch, maxlen, (int)rows, graphs, persistent);
            if (st == LLMC_OK) st = prefill(g, prompts, offsets);
        }
    }
    free(offsets);
    if (st != LLMC_OK) llmc_gen_end(g); /* keeps the message */
    return st;
}

/* Device sampling: the draw of each live sequence's logits row, from its own stream. */
static void draw_rows(llmc_gen *g) {
    for (int b = 0; b < g->batch; b++)
        if (g->alive[b]) g->draws[g->row[b]] = llmc_rng_f32(&g->rng[b]);
}

/* Each live sequence's token from the device's picks; rows the backend left to the host (-2)
 * come down one at a time and get the same function here, with the same draw. */
static llmc_status take_picks(llmc_gen *g, int *out) {
    llmc_model *m = g->m;
    const llmc_backend_ops *ops = m->dev.ops;
    const int V = m->w.cfg.vocab_size, Vp = m->w.cfg.padded_vocab_size;
    llmc_infer *e = &g->eng;
    llmc_status st;
    for (int b = 0; b < g->batch; b++) {
        if (!g->alive[b]) continue;
        const int r = g->row[b];
        out[b] = g->pick[r];
        if (out[b] != -2) continue;
        st = ops->download_f32(&m->dev, g->row_buf, (const char *)e->logits + (size_t)r * Vp * m->esz, ops->act_dtype,
                               (size_t)V);
        if (st != LLMC_OK) return fail(g, st, "%s", m->dev.err);
        llmc_sample_token_at(g->row_buf, V, &g->sampling, g->draws[r], &out[b]); /* -1: not finite */
    }
    return LLMC_OK;
}

/* Device sampling of logits no decode step has sampled (the prefill's): the draws go up, the
 * tokens come back (the ints of e->argmax carry them). */
static llmc_status sample_on_device(llmc_gen *g, int *out) {
    llmc_model *m = g->m;
    const llmc_backend_ops *ops = m->dev.ops;
    const int V = m->w.cfg.vocab_size, Vp = m->w.cfg.padded_vocab_size, n = g->nrows;
    draw_rows(g);
    llmc_infer *e = &g->eng;
    llmc_status st = ops->copy_h2d(&m->dev, e->draws, g->draws, (size_t)n * sizeof(float));
    if (st == LLMC_OK) st = ops->sample_rows(&m->dev, e->argmax, e->logits, n, V, Vp, &g->sampling, e->draws);
    if (st == LLMC_OK) st = ops->copy_d2h(&m->dev, g->pick, e->argmax, (size_t)n * sizeof(int));
    if (st != LLMC_OK) return fail(g, st, "%s", m->dev.err);
    return take_picks(g, out);
}

/* Queues the step over s's rows (set by the caller, after step_wait), its picks' readback and
 * its fence. fed: the tokens are the picks of the step queued before it. */
static llmc_status step_queue(llmc_gen *g, gen_step *s, int fed) {
    llmc_device *dev = &g->m->dev;
    const int sample = !g->greedy;
    llmc_status st = llmc_infer_decode_queued(&g->eng, s->stage, fed ? NULL : s->tok, s->slot, s->pos, s->n,
                                              sample ? &g->sampling : NULL, sample ? s->draws : NULL);
    if (st != LLMC_OK) return st; /* described in g->err */
    st = dev->ops->copy_d2h_async(dev, s->picks, g->eng.argmax, (size_t)s->n * sizeof(int));
    if (st == LLMC_OK) st = dev->ops->fence_record(dev, s->fence);
    if (st != LLMC_OK) return fail(g, st, "%s", dev->err);
    s->queued = 1;
    return LLMC_OK;
}

/* Whether the step after the next may be queued now: no row's next token can end it for a
 * reason known in advance (max_new, the context), so only an EOT can discard that step. */
static int may_speculate(const llmc_gen *g, int n) {
    for (int i = 0; i < n; i++) {
        const int b = g->slot[i];
        if (g->generated[b] + 1 >= g->max_new || g->len[b] + 1 >= g->maxT || g->pos[i] + 1 >= g->eng.maxlen) return 0;
    }
    return 1;
}

/* run_ahead: the step over this call's n rows (g->tok, slot, pos) is the speculative one queued
 * by the last call when its rows are the same (no sequence stopped; its tokens were these picks),
 * else it is queued now and the speculative one is left to run unread: its cache writes are
 * either rewritten by this step (the same positions) or of stopped sequences. Then the step after
 * is queued on this one's picks. */
static llmc_status queue_ahead(llmc_gen *g, int n) {
    const size_t bytes = (size_t)n * sizeof(int);
    gen_step *sp = g->spec >= 0 ? &g->steps[g->spec] : NULL;
    const int keep = sp && sp->n == n && !memcmp(sp->slot, g->slot, bytes) && !memcmp(sp->pos, g->pos, bytes);
    int cur;
    llmc_status st = LLMC_OK;
    if (keep) {
        cur = g->spec;
        memcpy(sp->tok, g->tok, bytes);
        g->ahead_kept++;
        if (!g->greedy)
            for (int i = 0; i < n; i++) g->has_ahead[sp->slot[i]] = 0; /* its draws were the ones due */
    } else {
        g->ahead_discarded += sp != NULL;
        cur = sp ? 1 - g->spec : (g->pending >= 0 ? g->pending : 0); /* a slot already waited for */
        gen_step *s = &g->steps[cur];
        st = step_wait(g, s);
        if (st != LLMC_OK) return st;
        s->n = n;
        memcpy(s->tok, g->tok, bytes);
        memcpy(s->slot, g->slot, bytes);
        memcpy(s->pos, g->pos, bytes);
        if (!g->greedy)
            for (int i = 0; i < n; i++) { /* a discarded step's draw is this step's: the stream moved on */
                const int b = s->slot[i];
                s->draws[i] = g->has_ahead[b] ? g->ahead_draw[b] : llmc_rng_f32(&g->rng[b]);
                g->has_ahead[b] = 0;
            }
        st = step_queue(g, s, 0);
        if (st != LLMC_OK) return st;
    }
    g->pending = cur;
    g->spec = -1;
    if (!may_speculate(g, n)) return LLMC_OK;
    gen_step *q = &g->steps[1 - cur];
    st = step_wait(g, q); /* a step discarded above may still be in the queue */
    if (st != LLMC_OK) return st;
    q->n = n;
    memcpy(q->slot, g->slot, bytes);
    for (int i = 0; i < n; i++) q->pos[i] = g->pos[i] + 1;
    if (!g->greedy)
        for (int i = 0; i < n; i++) {
            const int b = q->slot[i];
            q->draws[i] = g->ahead_draw[b] = llmc_rng_f32(&g->rng[b]);
            g->has_ahead[b] = 1;
        }
    st = step_queue(g, q, 1);
    if (st == LLMC_OK) g->spec = 1 - cur;
    return st;
}

/* run_ahead: the pending step once more, for its logits, which the speculative step queued
 * behind it has overwritten (the same inputs and draws give the same picks); that step is
 * discarded. */
static llmc_status rerun_pending(llmc_gen *g) {
    const gen_step *p = &g->steps[g->pending];
    g->spec = -1; /* so the next call queues its step afresh */
    g->ahead_discarded++;
    return llmc_infer_decode(&g->eng, p->tok, p->slot, p->pos, p->n, g->pick, g->greedy ? NULL : &g->sampling,
                             p->draws);
}

/* Device sampling under run_ahead: the pending step's picks (in pick, its draws in draws); rows
 * the backend left to the host need that step's logits. */
static llmc_status take_queued_picks(llmc_gen *g, int *out) {
    int host_rows = 0;
    for (int b = 0; b < g->batch; b++) host_rows |= g->alive[b] && g->pick[g->row[b]] == -2;
    if (host_rows && g->spec >= 0) {
        llmc_status st = rerun_pending(g);
        if (st != LLMC_OK) return st;
    }
    return take_picks(g, out);
}

llmc_status llmc_gen_next(llmc_gen *g, int *out, int out_len, int *alive_count) {
    if (!g->m) return fail(g, LLMC_ERR_INVALID_ARG, "no generation session: call llmc_gen_begin first");
    if (g->broken) return fail(g, LLMC_ERR_INVALID_ARG, "the generation session failed earlier: begin a new one");
    const int B = g->batch, V = g->m->w.cfg.vocab_size;
    if (!out || out_len < B)
        return fail(g, LLMC_ERR_INVALID_ARG, "the output holds %d tokens but the session has %d sequences", out_len, B);
    const size_t Vp = (size_t)g->m->w.cfg.padded_vocab_size;
    int nlive = 0;
    for (int b = 0; b < B; b++) {
        out[b] = -1;
        nlive += g->alive[b];
    }
    if (nlive == 0) {
        if (alive_count) *alive_count = 0;
        return LLMC_OK;
    }
    if (g->pending >= 0) { /* run_ahead: the picks come off the queue */
        gen_step *p = &g->steps[g->pending];
        llmc_status st = step_wait(g, p);
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
        memcpy(g->pick, p->picks, (size_t)p->n * sizeof(int));
        if (!g->greedy) memcpy(g->draws, p->draws, (size_t)p->n * sizeof(float));
    }
    if (g->greedy) {
        for (int b = 0; b < B; b++)
            if (g->alive[b]) out[b] = g->pick[g->row[b]];
    } else if (!g->logits) {
        llmc_status st = g->pending >= 0 ? take_queued_picks(g, out) : g->picked ? take_picks(g, out)
                                                                               : sample_on_device(g, out);
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
    } else {
        /* sampling is pure host work on independent rows and RNG streams */
#pragma omp parallel for schedule(dynamic, 1) if (nlive > 1 && (long)nlive * V >= 65536)
        for (int b = 0; b < B; b++)
            if (g->alive[b])
                llmc_sample_token(g->logits + (size_t)g->row[b] * Vp, V, &g->sampling, &g->rng[b], &out[b]);
    }
    for (int b = 0; b < B; b++)
        if (g->alive[b] && out[b] < 0) {
            g->broken = 1;
            return fail(g, LLMC_ERR_NUMERIC, "the logits of sequence %d are not finite", b);
        }
    int n = 0;
    for (int b = 0; b < B; b++) {
        if (!g->alive[b]) continue;
        int tok = out[b];
        g->len[b]++;
        g->generated[b]++;
        g->row[b] = -1;
        if (tok == g->eot || g->generated[b] >= g->max_new || g->len[b] >= g->maxT) {
            g->alive[b] = 0;
            continue;
        }
        g->tok[n] = tok;
        g->slot[n] = b;
        g->pos[n] = g->len[b] - 1;
        g->row[b] = n++;
    }
    g->picked = 0;
    if (g->run_ahead) {
        llmc_status st = n > 0 ? queue_ahead(g, n) : LLMC_OK;
        if (n == 0) {
            g->ahead_discarded += g->spec >= 0;
            g->pending = g->spec = -1;
        }
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
        g->nrows = n;
    } else if (n > 0) {
        const int device_sampling = !g->greedy && !g->logits; /* sampled in the step itself */
        if (device_sampling) draw_rows(g);
        llmc_status st = llmc_infer_decode(&g->eng, g->tok, g->slot, g->pos, n,
                                           g->greedy || device_sampling ? g->pick : NULL,
                                           device_sampling ? &g->sampling : NULL, g->draws);
        g->picked = device_sampling && st == LLMC_OK;
        if (st == LLMC_OK) st = download_logits(g, n);
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
    }
    if (alive_count) *alive_count = n;
    return LLMC_OK;
}

llmc_status llmc_gen_logits(llmc_gen *g, int b, float *dst) {
    if (!g->m) return fail(g, LLMC_ERR_INVALID_ARG, "no generation session: call llmc_gen_begin first");
    if (b < 0 || b >= g->batch)
        return fail(g, LLMC_ERR_INVALID_ARG, "sequence %d outside the session's batch of %d", b, g->batch);
    if (g->broken || !g->alive[b] || g->row[b] < 0)
        return fail(g, LLMC_ERR_INVALID_ARG, "sequence %d has stopped: it has no next-token logits", b);
    llmc_model *m = g->m;
    const size_t Vp = (size_t)m->w.cfg.padded_vocab_size, V = (size_t)m->w.cfg.vocab_size;
    if (g->spec >= 0) { /* run_ahead: the queued step overwrites the logits */
        llmc_status st = rerun_pending(g);
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
    }
    if (g->logits) {
        memcpy(dst, g->logits + (size_t)g->row[b] * Vp, V * sizeof(float));
        return LLMC_OK;
    }
    const char *row = (const char *)g->eng.logits + (size_t)g->row[b] * Vp * m->esz;
    llmc_status st = m->dev.ops->download_f32(&m->dev, dst, row, m->dev.ops->act_dtype, V);
    return st == LLMC_OK ? st : fail(g, st, "%s", m->dev.err);
}

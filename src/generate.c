/*
 * generate.c — autoregressive sampling sessions (llmc_gen_*) on a KV-cache engine.
 *
 * llmc_gen_begin validates the prompts, sizes a cache for the session (batch x the
 * longest prompt + max_new, capped at the model's context) and prefills every prompt
 * (infer.c): from then on the session holds, for each live sequence, the logits of
 * its last token. llmc_gen_next samples one token per live sequence from those logits,
 * then runs one batched decode step over the sequences that go on (each at its own
 * position), which leaves the logits for the next call. A token that ends a sequence
 * (EOT, max_new, or the context limit) is never fed back.
 *
 * Each sequence samples from its own RNG stream (stream 0 is the one a single
 * sequence gets), so sampling runs in parallel across sequences and a sequence's
 * tokens do not depend on when the others stop. Greedy sessions (temperature 0) take
 * the argmax where the logits are and bring back one int per sequence; the logits are
 * read only if llmc_gen_logits asks for them.
 */
#include <stdlib.h>
#include <string.h>
#include "infer.h"
#include "rng.h"

/* Rows of activation scratch a prefill may use at once (prompts longer than this still
 * get their own full-length pass). */
#define PREFILL_ROWS 4096

struct llmc_gen_state {
    int batch, max_new, eot, maxT;
    llmc_sampling sampling;
    uint64_t *rng;   /* per sequence */
    int *len;        /* tokens so far (prompt + generated) */
    int *generated;
    int *alive;
    int *row;        /* row of `logits` holding the sequence's next-token logits, -1 when stopped */
    int *tok, *slot, *pos; /* staging of one decode step */
    int greedy;      /* temperature 0: the device picks the argmax, logits stay there */
    int *pick;       /* greedy: the token of each logits row */
    float *logits;   /* sampling: (batch, Vp) fp32 on the host */
    uint16_t *raw;   /* sampling on a bf16 backend: the rows as they come off the device */
    int broken;      /* a device step failed: the cache can no longer be trusted */
    llmc_infer eng;
};

void llmc_gen_free(llmc_model *m) {
    llmc_gen_state *g = m->gen;
    if (!g) return;
    llmc_infer_release(m, &g->eng);
    free(g->rng);
    free(g->len);
    free(g->generated);
    free(g->alive);
    free(g->row);
    free(g->tok);
    free(g->slot);
    free(g->pos);
    free(g->pick);
    free(g->logits);
    free(g->raw);
    free(g);
    m->gen = NULL;
}

void llmc_gen_end(llmc_model *m) { llmc_gen_free(m); }

static llmc_status download_logits(llmc_model *m, llmc_gen_state *g, int n) {
    if (g->greedy) return LLMC_OK; /* read lazily by llmc_gen_logits */
    const size_t Vp = (size_t)m->cfg.padded_vocab_size, total = (size_t)n * Vp;
    if (!g->raw) {
        MODEL_TRY(m, m->dev.ops->download_f32(&m->dev, g->logits, g->eng.logits, m->dev.ops->act_dtype, total));
        return LLMC_OK;
    }
    /* bf16 crosses the bus at half the bytes; widening is exact and runs on all host cores */
    MODEL_TRY(m, m->dev.ops->copy_d2h(&m->dev, g->raw, g->eng.logits, total * sizeof(uint16_t)));
    const uint16_t *src = g->raw;
    float *dst = g->logits;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int r = 0; r < n; r++)
        for (size_t j = 0; j < Vp; j++) {
            uint32_t u = (uint32_t)src[(size_t)r * Vp + j] << 16;
            memcpy(&dst[(size_t)r * Vp + j], &u, sizeof u);
        }
    return LLMC_OK;
}

/* Sequence order for prefill: by prompt length, then index (keys are len << 32 | index). */
static int cmp_u64(const void *pa, const void *pb) {
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

/* Prefills the live sequences, grouped by prompt length so that each pass is one
 * (count, T) batch, and computes their first logits. */
static llmc_status prefill(llmc_model *m, llmc_gen_state *g, const int *prompts, const size_t *offsets) {
    llmc_infer *e = &g->eng;
    int nlive = 0;
    uint64_t *order = malloc((size_t)g->batch * sizeof(uint64_t));
    int *buf = malloc((size_t)e->rows * sizeof(int));
    int *slots = malloc((size_t)g->batch * sizeof(int)), *rows = malloc((size_t)g->batch * sizeof(int));
    llmc_status st = LLMC_OK;
    if (!order || !buf || !slots || !rows) {
        st = llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate prefill buffers");
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
        st = llmc_infer_prefill(m, e, buf, slots, rows, count, T);
        if (st != LLMC_OK) goto done;
    }
    if (nlive > 0) {
        st = llmc_infer_last_logits(m, e, nlive, g->greedy ? g->pick : NULL);
        if (st == LLMC_OK) st = download_logits(m, g, nlive);
    }
done:
    free(order);
    free(buf);
    free(slots);
    free(rows);
    return st;
}

llmc_status llmc_gen_begin(llmc_model *m, const int *prompts, const int *prompt_lens, int batch, int max_new,
                           const llmc_sampling *s, int eot_token) {
    llmc_gen_free(m);
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
    if (batch < 1) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "generation batch must be >= 1 (got %d)", batch);
    if (!prompts || !prompt_lens || !s) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no prompts given");
    if (max_new < 1)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "number of new tokens must be >= 1 (got %d)", max_new);
    if (!(s->temperature >= 0.0f) || s->top_k < 0 || !(s->top_p > 0.0f && s->top_p <= 1.0f))
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "bad sampling settings: temperature %g (>= 0), top_k %d (>= 0), top_p %g (in (0, 1])",
                               s->temperature, s->top_k, s->top_p);
    const int maxT = m->cfg.max_seq_len, V = m->cfg.vocab_size;
    size_t *offsets = malloc((size_t)batch * sizeof(size_t));
    if (!offsets) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    size_t off = 0;
    long long longest = 0, total = 0, need = 1;
    for (int b = 0; b < batch; b++) {
        int n = prompt_lens[b];
        offsets[b] = off;
        if (n < 1) {
            free(offsets);
            return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "prompt %d is empty: give at least one token", b);
        }
        if (n > maxT) {
            free(offsets);
            return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                                   "prompt %d has %d tokens, longer than the model's context of %d tokens", b, n, maxT);
        }
        for (int i = 0; i < n; i++)
            if (prompts[off + i] < 0 || prompts[off + i] >= V) {
                free(offsets);
                return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                                       "prompt %d: token id %d at position %d is out of range (vocabulary of %d)", b,
                                       prompts[off + i], i, V);
            }
        off += (size_t)n;
        if (n < maxT) { /* a full context has no room for a new token */
            longest = n > longest ? n : longest;
            total += n;
            long long last = (long long)n + max_new - 1; /* positions the cache must hold */
            need = last > need ? last : need;
        }
    }
    llmc_gen_state *g = calloc(1, sizeof *g);
    if (!g) {
        free(offsets);
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    }
    m->gen = g;
    g->batch = batch;
    g->max_new = max_new;
    g->eot = eot_token;
    g->maxT = maxT;
    g->sampling = *s;
    const size_t nb = (size_t)batch;
    g->rng = malloc(nb * sizeof(uint64_t));
    g->len = malloc(nb * sizeof(int));
    g->generated = calloc(nb, sizeof(int));
    g->alive = calloc(nb, sizeof(int));
    g->row = malloc(nb * sizeof(int));
    g->tok = malloc(nb * sizeof(int));
    g->slot = malloc(nb * sizeof(int));
    g->pos = malloc(nb * sizeof(int));
    g->greedy = s->temperature == 0.0f;
    g->pick = malloc(nb * sizeof(int));
    g->logits = g->greedy ? NULL : malloc(nb * (size_t)m->cfg.padded_vocab_size * sizeof(float));
    if (!g->greedy && m->dev.ops->act_dtype == LLMC_BF16)
        g->raw = malloc(nb * (size_t)m->cfg.padded_vocab_size * sizeof(uint16_t));
    if (!g->rng || !g->len || !g->generated || !g->alive || !g->row || !g->tok || !g->slot || !g->pos || !g->pick ||
        (!g->greedy && (!g->logits || (m->dev.ops->act_dtype == LLMC_BF16 && !g->raw)))) {
        free(offsets);
        llmc_gen_free(m);
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    }
    int nlive = 0;
    for (int b = 0; b < batch; b++) {
        /* stream b: splitmix of seed + b * golden ratio; stream 0 is llmc_rng_seed(seed) */
        g->rng[b] = llmc_rng_seed(s->seed + (uint64_t)b * 0x9E3779B97F4A7C15ull);
        g->len[b] = prompt_lens[b];
        g->alive[b] = prompt_lens[b] < maxT;
        g->row[b] = -1;
        nlive += g->alive[b];
    }
    llmc_status st = LLMC_OK;
    if (nlive > 0) {
        int maxlen = need < maxT ? (int)need : maxT;
        long long rows = total < PREFILL_ROWS ? total : PREFILL_ROWS;
        rows = rows > longest ? rows : longest;
        rows = rows > batch ? rows : batch;
        st = llmc_infer_alloc(m, &g->eng, batch, maxlen, (int)rows);
        if (st == LLMC_OK) st = prefill(m, g, prompts, offsets);
    }
    free(offsets);
    if (st != LLMC_OK) {
        char msg[LLMC_ERR_LEN];
        memcpy(msg, m->err, sizeof msg);
        llmc_gen_free(m);
        memcpy(m->err, msg, sizeof msg);
    }
    return st;
}

llmc_status llmc_gen_next(llmc_model *m, int *out, int *alive_count) {
    llmc_gen_state *g = m->gen;
    if (!g) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no generation session: call llmc_gen_begin first");
    if (g->broken) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "the generation session failed earlier: begin a new one");
    const int B = g->batch, V = m->cfg.vocab_size;
    const size_t Vp = (size_t)m->cfg.padded_vocab_size;
    int nlive = 0;
    for (int b = 0; b < B; b++) {
        out[b] = -1;
        nlive += g->alive[b];
    }
    if (nlive == 0) {
        if (alive_count) *alive_count = 0;
        return LLMC_OK;
    }
    if (g->greedy) {
        for (int b = 0; b < B; b++)
            if (g->alive[b]) out[b] = g->pick[g->row[b]];
    } else {
        /* sampling is pure host work on independent rows and RNG streams */
#pragma omp parallel for schedule(dynamic, 1) if (nlive > 1 && (long)nlive * V >= 65536)
        for (int b = 0; b < B; b++)
            if (g->alive[b])
                out[b] = llmc_sample_token(g->logits + (size_t)g->row[b] * Vp, V, &g->sampling, &g->rng[b]);
    }
    for (int b = 0; b < B; b++)
        if (g->alive[b] && out[b] < 0) {
            g->broken = 1;
            return llmc_model_fail(m, LLMC_ERR_NUMERIC, "the logits of sequence %d are not finite", b);
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
    if (n > 0) {
        llmc_status st = llmc_infer_decode(m, &g->eng, g->tok, g->slot, g->pos, n, g->greedy ? g->pick : NULL);
        if (st == LLMC_OK) st = download_logits(m, g, n);
        if (st != LLMC_OK) {
            g->broken = 1;
            return st;
        }
    }
    if (alive_count) *alive_count = n;
    return LLMC_OK;
}

llmc_status llmc_gen_logits(llmc_model *m, int b, float *dst) {
    llmc_gen_state *g = m->gen;
    if (!g) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no generation session: call llmc_gen_begin first");
    if (b < 0 || b >= g->batch)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "sequence %d outside the session's batch of %d", b, g->batch);
    if (g->broken || !g->alive[b] || g->row[b] < 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "sequence %d has stopped: it has no next-token logits", b);
    const size_t Vp = (size_t)m->cfg.padded_vocab_size, V = (size_t)m->cfg.vocab_size;
    if (!g->greedy) {
        memcpy(dst, g->logits + (size_t)g->row[b] * Vp, V * sizeof(float));
        return LLMC_OK;
    }
    const char *row = (const char *)g->eng.logits + (size_t)g->row[b] * Vp * m->esz;
    MODEL_TRY(m, m->dev.ops->download_f32(&m->dev, dst, row, m->dev.ops->act_dtype, V));
    return LLMC_OK;
}

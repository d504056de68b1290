/*
 * generate.c — autoregressive sampling sessions (llmc_gen_*).
 *
 * This version recomputes the full forward over each sequence's context for every
 * new token; the session interface is what the trainers and Python use, so a
 * KV-cache engine can replace the inside without changing callers.
 */
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"
#include "rng.h"

struct llmc_gen_state {
    int batch, max_new, eot, cap;
    llmc_sampling sampling;
    uint64_t rng;
    int *tokens;    /* batch x cap */
    int *len;       /* current length of each sequence */
    int *generated; /* new tokens so far */
    int *alive;
    float *logits;  /* V */
};

void llmc_gen_free(llmc_model *m) {
    llmc_gen_state *g = m->gen;
    if (!g) return;
    free(g->tokens);
    free(g->len);
    free(g->generated);
    free(g->alive);
    free(g->logits);
    free(g);
    m->gen = NULL;
}

void llmc_gen_end(llmc_model *m) { llmc_gen_free(m); }

llmc_status llmc_gen_begin(llmc_model *m, const int *prompts, const int *prompt_lens, int batch, int max_new,
                           const llmc_sampling *s, int eot_token) {
    llmc_gen_free(m);
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
    if (batch < 1) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "generation batch must be >= 1 (got %d)", batch);
    if (max_new < 1)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "number of new tokens must be >= 1 (got %d)", max_new);
    if (!(s->temperature >= 0.0f) || s->top_k < 0 || !(s->top_p > 0.0f && s->top_p <= 1.0f))
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "bad sampling settings: temperature %g (>= 0), top_k %d (>= 0), top_p %g (in (0, 1])",
                               s->temperature, s->top_k, s->top_p);
    const int maxT = m->cfg.max_seq_len, V = m->cfg.vocab_size;
    size_t off = 0;
    for (int b = 0; b < batch; b++) {
        int n = prompt_lens[b];
        if (n < 1) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "prompt %d is empty: give at least one token", b);
        if (n > maxT)
            return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                                   "prompt %d has %d tokens, longer than the model's context of %d tokens", b, n, maxT);
        for (int i = 0; i < n; i++)
            if (prompts[off + i] < 0 || prompts[off + i] >= V)
                return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                                       "prompt %d: token id %d at position %d is out of range (vocabulary of %d)", b,
                                       prompts[off + i], i, V);
        off += (size_t)n;
    }
    llmc_gen_state *g = calloc(1, sizeof *g);
    if (!g) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    m->gen = g;
    g->batch = batch;
    g->max_new = max_new;
    g->eot = eot_token;
    g->cap = maxT;
    g->sampling = *s;
    g->rng = llmc_rng_seed(s->seed);
    g->tokens = malloc((size_t)batch * maxT * sizeof(int));
    g->len = calloc((size_t)batch, sizeof(int));
    g->generated = calloc((size_t)batch, sizeof(int));
    g->alive = calloc((size_t)batch, sizeof(int));
    g->logits = malloc((size_t)V * sizeof(float));
    if (!g->tokens || !g->len || !g->generated || !g->alive || !g->logits) {
        llmc_gen_free(m);
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a generation session");
    }
    off = 0;
    for (int b = 0; b < batch; b++) {
        memcpy(g->tokens + (size_t)b * maxT, prompts + off, (size_t)prompt_lens[b] * sizeof(int));
        off += (size_t)prompt_lens[b];
        g->len[b] = prompt_lens[b];
        g->alive[b] = prompt_lens[b] < maxT; /* a full context has no room for a new token */
    }
    return LLMC_OK;
}

llmc_status llmc_gen_next(llmc_model *m, int *out, int *alive_count) {
    llmc_gen_state *g = m->gen;
    if (!g) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no generation session: call llmc_gen_begin first");
    int alive = 0;
    for (int b = 0; b < g->batch; b++) {
        out[b] = -1;
        if (!g->alive[b]) continue;
        int *seq = g->tokens + (size_t)b * g->cap, n = g->len[b];
        llmc_status st = llmc_model_forward(m, seq, NULL, 1, n);
        if (st == LLMC_OK) st = llmc_model_get_logits_at(m, 0, n - 1, g->logits);
        if (st != LLMC_OK) return st;
        int tok = llmc_sample_token(g->logits, m->cfg.vocab_size, &g->sampling, &g->rng);
        if (tok < 0) return llmc_model_fail(m, LLMC_ERR_NUMERIC, "the logits of sequence %d are not finite", b);
        seq[n] = tok;
        g->len[b] = n + 1;
        g->generated[b]++;
        out[b] = tok;
        if (tok == g->eot || g->generated[b] >= g->max_new || g->len[b] >= g->cap) g->alive[b] = 0;
        alive += g->alive[b];
    }
    if (alive_count) *alive_count = alive;
    return LLMC_OK;
}

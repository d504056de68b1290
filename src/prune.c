/*
 * prune.c — magnitude pruning of the four matmul weights of every layer, on host fp32 values.
 *
 * Every rule orders weights by (|w|, position) and zeroes the first ones in that order, so ties
 * are broken the same way everywhere and the result is exact and reproducible:
 *   unstructured: the round(s * n) first of a group — one tensor of one layer ("layer"), or all
 *     4 * L of them in the parameter buffer's order ("global", one threshold);
 *   2:4: the 2 first of every 4 consecutive weights of a row (the input dimension).
 * The k-th smallest |w| of a group is found with a two-pass 16-bit radix select on the magnitude's
 * bits (nonnegative floats order as their bits do): O(n) time, no copy of the weights.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"

static const int PRUNED[LLMC_PRUNE_TENSORS] = {LLMC_QKVW, LLMC_ATTPROJW, LLMC_FCW, LLMC_FCPROJW};

int llmc_prune_tensor(int tensor) {
    for (int i = 0; i < LLMC_PRUNE_TENSORS; i++)
        if (PRUNED[i] == tensor) return 1;
    return 0;
}

void llmc_prune_options_default(llmc_prune_options *o) {
    o->sparsity = LLMC_PRUNE_UNSET;
    o->pattern = NULL;
    o->scope = NULL;
}

/* The magnitude as an ordered key: finite floats' bits without the sign. */
static inline uint32_t key_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7FFFFFFFu;
}

/* A group: slices of the weights, taken in order. */
typedef struct group {
    float **ptr;
    size_t *len;
    int n;
} group;

/* Radix-select step: a histogram of the group's keys by their high 16 bits (hi < 0), or of the low
 * 16 bits of the keys whose high bits are hi; returns the bucket that holds the k-th smallest key
 * (1-based), adding to *before the keys of the buckets below it. */
static uint32_t select_bucket(const group *g, long hi, size_t k, size_t *hist, size_t *before) {
    memset(hist, 0, 65536 * sizeof *hist);
    for (int p = 0; p < g->n; p++)
        for (size_t i = 0; i < g->len[p]; i++) {
            const uint32_t key = key_of(g->ptr[p][i]);
            if (hi < 0)
                hist[key >> 16]++;
            else if ((long)(key >> 16) == hi)
                hist[key & 0xFFFFu]++;
        }
    uint32_t b = 0;
    while (*before + hist[b] < k) *before += hist[b++];
    return b;
}

/* Zeroes the k first weights of the group in (|w|, position) order. */
static void prune_group(const group *g, size_t k, size_t *hist) {
    size_t n = 0;
    for (int p = 0; p < g->n; p++) n += g->len[p];
    if (k == 0) return;
    if (k >= n) {
        for (int p = 0; p < g->n; p++) memset(g->ptr[p], 0, g->len[p] * sizeof(float));
        return;
    }
    size_t below = 0; /* keys under the threshold */
    const uint32_t hi = select_bucket(g, -1, k, hist, &below);
    const uint32_t threshold = hi << 16 | select_bucket(g, (long)hi, k, hist, &below);
    size_t ties = k - below; /* keys equal to the threshold that go too, the earliest first */
    for (int p = 0; p < g->n; p++)
        for (size_t i = 0; i < g->len[p]; i++) {
            const uint32_t key = key_of(g->ptr[p][i]);
            if (key < threshold) {
                g->ptr[p][i] = 0.0f;
            } else if (key == threshold && ties > 0) {
                g->ptr[p][i] = 0.0f;
                ties--;
            }
        }
}

/* 2:4 over n weights made of whole rows (a multiple of 4 long): in every 4 consecutive ones the 2
 * first in (|w|, position) order become 0. */
static void prune_2_4(float *w, size_t n) {
    for (size_t g = 0; g + 4 <= n; g += 4) {
        float *x = w + g;
        int first = 0;
        for (int j = 1; j < 4; j++)
            if (key_of(x[j]) < key_of(x[first])) first = j;
        int second = first == 0 ? 1 : 0;
        for (int j = 0; j < 4; j++)
            if (j != first && key_of(x[j]) < key_of(x[second])) second = j;
        x[first] = 0.0f;
        x[second] = 0.0f;
    }
}

/* round(s * n), halves up */
static size_t count_of(double sparsity, size_t n) { return (size_t)floor(sparsity * (double)n + 0.5); }

static llmc_status fail(char *err, size_t errlen, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

static llmc_status check_options(const llmc_prune_options *o, int two_four, int global, char *err, size_t errlen) {
    const double s = o->sparsity;
    const char *pattern = o->pattern, *scope = o->scope;
    if (!two_four && pattern && strcmp(pattern, "unstructured") != 0)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG, "unknown pruning pattern '%s': use unstructured or 2:4",
                    pattern);
    if (!global && scope && strcmp(scope, "layer") != 0)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG, "unknown pruning scope '%s': use layer or global", scope);
    if (s != LLMC_PRUNE_UNSET && !(s >= 0.0 && s <= 1.0))
        return fail(err, errlen, LLMC_ERR_INVALID_ARG, "bad sparsity %g: it must be a fraction in [0, 1]", s);
    if (two_four && s != LLMC_PRUNE_UNSET && s != 0.5)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG,
                    "the 2:4 pattern zeroes exactly half of the weights: sparsity %g contradicts it (leave it out "
                    "or give 0.5)", s);
    if (two_four && global)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG,
                    "the 2:4 pattern works inside groups of 4 weights: scope 'global' does not apply to it (leave "
                    "it out or give layer)");
    if (!two_four && s == LLMC_PRUNE_UNSET)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG, "unstructured pruning needs a sparsity (a fraction in [0, 1])");
    return LLMC_OK;
}

llmc_status llmc_prune_values(const llmc_config *cfg, float *values, const llmc_prune_options *o,
                              llmc_prune_stat *stats, size_t max_stats, size_t *n_stats, char *err, size_t errlen) {
    llmc_prune_options d;
    llmc_prune_options_default(&d);
    if (!o) o = &d;
    const int two_four = o->pattern && strcmp(o->pattern, "2:4") == 0;
    const int global = o->scope && strcmp(o->scope, "global") == 0;
    llmc_status st = check_options(o, two_four, global, err, errlen);
    if (st != LLMC_OK) return st;
    if (!values) return fail(err, errlen, LLMC_ERR_INVALID_ARG, "no weights to prune");
    llmc_config c = *cfg;
    if (llmc_config_validate(&c, err, errlen) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    const int L = c.num_layers, groups = LLMC_PRUNE_TENSORS * L;
    if (stats && max_stats < (size_t)groups)
        return fail(err, errlen, LLMC_ERR_INVALID_ARG, "the pruning report needs room for %d entries, it has %zu",
                    groups, max_stats);
    llmc_weights w;
    llmc_weights_layout(&w, &c, LLMC_F32);
    llmc_weights_bind(&w, values);
    for (int i = 0; i < LLMC_PRUNE_TENSORS && two_four; i++)
        if (w.t[PRUNED[i]].shape[2] % 4)
            return fail(err, errlen, LLMC_ERR_INVALID_ARG,
                        "the 2:4 pattern needs rows of a multiple of 4 weights: %s has rows of %d",
                        w.t[PRUNED[i]].name, w.t[PRUNED[i]].shape[2]);
    size_t *hist = two_four ? NULL : malloc(65536 * sizeof *hist);
    group g = {two_four ? NULL : malloc((size_t)groups * sizeof(float *)),
               two_four ? NULL : malloc((size_t)groups * sizeof(size_t)), 0};
    if (!two_four && (!hist || !g.ptr || !g.len)) {
        free(hist);
        free(g.ptr);
        free(g.len);
        return fail(err, errlen, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the pruning histogram");
    }
    size_t total = 0;
    for (int i = 0; i < LLMC_PRUNE_TENSORS; i++)
        for (int l = 0; l < L; l++) {
            const llmc_tensor t = llmc_weights_layer(&w, PRUNED[i], l);
            if (two_four) {
                prune_2_4((float *)t.data, t.numel);
                continue;
            }
            if (!global) g.n = 0;
            g.ptr[g.n] = (float *)t.data;
            g.len[g.n++] = t.numel;
            total += t.numel;
            if (!global) prune_group(&g, count_of(o->sparsity, t.numel), hist);
        }
    if (global) prune_group(&g, count_of(o->sparsity, total), hist);
    free(hist);
    free(g.ptr);
    free(g.len);
    for (int i = 0, k = 0; i < LLMC_PRUNE_TENSORS && stats; i++)
        for (int l = 0; l < L; l++, k++) {
            const llmc_tensor t = llmc_weights_layer(&w, PRUNED[i], l);
            const float *x = (const float *)t.data;
            size_t zeros = 0;
            for (size_t j = 0; j < t.numel; j++) zeros += x[j] == 0.0f;
            stats[k] = (llmc_prune_stat){PRUNED[i], l, t.numel, zeros};
        }
    if (n_stats) *n_stats = stats ? (size_t)groups : 0;
    return LLMC_OK;
}

llmc_status llmc_model_prune(llmc_model *m, const llmc_prune_options *o, llmc_prune_stat *stats, size_t max_stats,
                             size_t *n_stats) {
    llmc_status st = llmc_model_require_weights(m);
    if (st != LLMC_OK) return st;
    float *host = malloc(m->w.count * sizeof(float));
    if (!host) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host memory to prune the weights");
    st = llmc_model_get_params(m, host);
    if (st == LLMC_OK) {
        st = llmc_prune_values(&m->w.cfg, host, o, stats, max_stats, n_stats, m->err, sizeof m->err);
        if (st == LLMC_OK) st = llmc_model_set_params(m, host);
    }
    free(host);
    return st;
}

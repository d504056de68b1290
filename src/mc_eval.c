/* mc_eval.c — multiple-choice evals (HellaSwag) in llm.c's eval file format: the reader, which
 * trusts nothing in the file, and the scorer, which runs the trainer's own forward (no second
 * model code) and reads its per-token losses. */
#include "mc_eval.h"
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "file_io.h"

#define HEADER_INTS 256
#define START_ITEM 65535u

typedef struct mc_item {
    int label, nchoices;
    uint32_t ctx, ctx_len; /* offsets and lengths in tokens[] */
    uint32_t choice[LLMC_MC_MAX_CHOICES], choice_len[LLMC_MC_MAX_CHOICES];
} mc_item;

struct llmc_mc_eval {
    uint16_t *tokens; /* the whole item stream */
    mc_item *items;
    int nitems;
};

static void *fail_null(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return NULL;
}

/* The first token of s[0..n) at or above vocab, or -1. */
static long out_of_range(const uint16_t *s, uint32_t n, int vocab) {
    for (uint32_t k = 0; k < n; k++)
        if (s[k] >= vocab) return s[k];
    return -1;
}

static int parse_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return 0;
}

/* Parses the stream of n uint16 after the header into e->items; 0 with err set when it is bad. */
static int parse_items(llmc_mc_eval *e, size_t n, int vocab, const char *path, char *err, size_t errlen) {
    const uint16_t *s = e->tokens;
    size_t at = 0;
    for (int i = 0; i < e->nitems; i++) {
        mc_item *it = &e->items[i];
        if (at + 6 > n)
            return parse_error(err, errlen, "eval file %s is truncated in item %d of %d", path, i, e->nitems);
        const size_t start = at;
        if (s[at] != START_ITEM)
            return parse_error(err, errlen, "eval file %s: item %d does not start with the delimiter 65535 (found %u)",
                               path, i, s[at]);
        const size_t bytes = s[at + 1];
        it->label = s[at + 3];
        it->nchoices = s[at + 4];
        it->ctx_len = s[at + 5];
        at += 6;
        if (it->nchoices < 1 || it->nchoices > LLMC_MC_MAX_CHOICES)
            return parse_error(err, errlen, "eval file %s: item %d has %d choices (1 to %d)", path, i, it->nchoices,
                               LLMC_MC_MAX_CHOICES);
        if (it->label >= it->nchoices)
            return parse_error(err, errlen, "eval file %s: item %d has label %d but %d choices", path, i, it->label,
                               it->nchoices);
        it->ctx = (uint32_t)at;
        if (at + it->ctx_len > n) return parse_error(err, errlen, "eval file %s is truncated in item %d", path, i);
        at += it->ctx_len;
        for (int c = 0; c < it->nchoices; c++) {
            if (at + 1 > n) return parse_error(err, errlen, "eval file %s is truncated in item %d", path, i);
            it->choice_len[c] = s[at++];
            it->choice[c] = (uint32_t)at;
            if (it->choice_len[c] == 0)
                return parse_error(err, errlen, "eval file %s: item %d, choice %d has no tokens", path, i, c);
            if (at + it->choice_len[c] > n)
                return parse_error(err, errlen, "eval file %s is truncated in item %d", path, i);
            at += it->choice_len[c];
        }
        if ((at - start) * 2 != bytes)
            return parse_error(err, errlen, "eval file %s: item %d says it has %zu bytes but holds %zu", path, i, bytes,
                               (at - start) * 2);
        long bad = out_of_range(s + it->ctx, it->ctx_len, vocab);
        for (int c = 0; bad < 0 && c < it->nchoices; c++)
            bad = out_of_range(s + it->choice[c], it->choice_len[c], vocab);
        if (bad >= 0)
            return parse_error(err, errlen, "eval file %s: item %d has token %ld, outside the vocabulary of %d", path,
                               i, bad, vocab);
    }
    if (at != n)
        return parse_error(err, errlen, "eval file %s is longer than its %d items say (%zu stray bytes)", path,
                           e->nitems, (n - at) * 2);
    return 1;
}

llmc_mc_eval *llmc_mc_eval_load(const char *path, int vocab, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail_null(err, errlen,
                         "cannot open eval file %s (make one with python -m llmc.eval hellaswag "
                         "--export %s)",
                         path, path);
    const long size = llmc_file_size(f);
    int32_t h[HEADER_INTS];
    llmc_mc_eval *e = NULL;
    if (size < 0) {
        fail_null(err, errlen, "eval file %s is not a regular file", path);
    } else if ((size_t)size < sizeof h || fread(h, sizeof h, 1, f) != 1) {
        fail_null(err, errlen, "eval file %s is too short for its header (%ld bytes)", path, size);
    } else if (h[0] != LLMC_EVAL_MAGIC) {
        fail_null(err, errlen, "%s has magic %d, not %d: not an eval file%s", path, h[0], LLMC_EVAL_MAGIC,
                  llmc_magic_hint(h[0]));
    } else if (h[1] != 1) {
        fail_null(err, errlen, "eval file %s has version %d; this build reads version 1", path, h[1]);
    } else if (h[2] < 1 || h[2] > 1 << 24) {
        fail_null(err, errlen, "eval file %s claims %d items", path, h[2]);
    } else if ((size - (long)sizeof h) % 2 != 0) {
        fail_null(err, errlen, "eval file %s has an odd number of bytes after its header", path);
    } else if ((size_t)h[2] * 12 > (size_t)size - sizeof h) { /* an item takes at least 12 bytes */
        fail_null(err, errlen, "eval file %s claims %d items but holds %ld bytes after its header", path, h[2],
                  size - (long)sizeof h);
    } else {
        const size_t n = ((size_t)size - sizeof h) / 2;
        e = calloc(1, sizeof *e);
        if (e) e->tokens = malloc(n * 2 + 2), e->items = calloc((size_t)h[2], sizeof *e->items);
        if (!e || !e->tokens || !e->items) {
            fail_null(err, errlen, "out of memory reading eval file %s", path);
        } else if (fread(e->tokens, 2, n, f) != n) {
            fail_null(err, errlen, "cannot read eval file %s", path);
        } else {
            e->nitems = h[2];
            if (parse_items(e, n, vocab, path, err, errlen)) {
                fclose(f);
                return e;
            }
        }
        llmc_mc_eval_free(e);
        e = NULL;
    }
    fclose(f);
    return e;
}

void llmc_mc_eval_free(llmc_mc_eval *e) {
    if (!e) return;
    free(e->tokens);
    free(e->items);
    free(e);
}

int llmc_mc_eval_items(const llmc_mc_eval *e) { return e ? e->nitems : 0; }

/* Row r of the batch: choice c of item it, the context cut from the left so that context + choice
 * is at most T + 1 tokens (T inputs, each predicting the next). Returns the targets counted. */
static int fill_row(const llmc_mc_eval *e, const mc_item *it, int c, int T, int *in, int *tg) {
    const uint16_t *s = e->tokens;
    const int clen = (int)it->choice_len[c];
    const int keep = (int)it->ctx_len < T + 1 - clen ? (int)it->ctx_len : T + 1 - clen;
    const uint16_t *ctx = s + it->ctx + it->ctx_len - keep;
    const int len = keep + clen; /* tokens in the row, <= T + 1 */
    for (int p = 0; p < T; p++) in[p] = 0, tg[p] = LLMC_IGNORE_TARGET;
    for (int p = 0; p < len - 1; p++) in[p] = p < keep ? ctx[p] : s[it->choice[c] + p - keep];
    const int first = keep > 0 ? keep - 1 : 0; /* the position that predicts the choice's first token */
    for (int p = first; p < len - 1; p++) tg[p] = s[it->choice[c] + p + 1 - keep];
    return len - 1 - first;
}

llmc_status llmc_mc_eval_run(const llmc_mc_eval *e, llmc_train *t, int B, int T, int limit, int part, int parts,
                             int *inputs, int *targets, llmc_mc_score *out, char *err, size_t errlen) {
    const int n = limit > 0 && limit < e->nitems ? limit : e->nitems;
    int scored = 0;
    memset(out, 0, sizeof *out);
    float *losses = malloc((size_t)B * T * sizeof(float));
    int *counts = malloc((size_t)B * sizeof(int));
    if (!losses || !counts) {
        free(losses), free(counts);
        snprintf(err, errlen, "out of memory for the eval's %d x %d losses", B, T);
        return LLMC_ERR_OUT_OF_MEMORY;
    }
    llmc_status st = LLMC_OK;
    int correct = 0, correct_norm = 0;
    for (int i = 0, batch = 0; i < n && st == LLMC_OK; batch++) {
        /* as many whole items as fit in B rows */
        int rows = 0, first = i;
        while (i < n && rows + e->items[i].nchoices <= B) rows += e->items[i++].nchoices;
        if (rows == 0) {
            snprintf(err, errlen, "eval item %d has %d choices, one row each, but a batch has %d rows (-b)", i,
                     e->items[i].nchoices, B);
            st = LLMC_ERR_INVALID_ARG;
            break;
        }
        int r = 0;
        for (int k = first; k < i && st == LLMC_OK; k++)
            for (int c = 0; c < e->items[k].nchoices; c++, r++) {
                if ((int)e->items[k].choice_len[c] > T) {
                    snprintf(err, errlen, "eval item %d, choice %d has %u tokens, more than the %d of a row (-t)", k, c,
                             e->items[k].choice_len[c], T);
                    st = LLMC_ERR_INVALID_ARG;
                    break;
                }
                counts[r] = fill_row(e, &e->items[k], c, T, inputs + (size_t)r * T, targets + (size_t)r * T);
            }
        if (batch % parts != part) continue; /* another rank's (every rank checks every item above) */
        for (; st == LLMC_OK && r < B; r++) /* rows past the last item: nothing counted */
            for (int p = 0; p < T; p++) inputs[(size_t)r * T + p] = 0, targets[(size_t)r * T + p] = LLMC_IGNORE_TARGET;
        if (st == LLMC_OK &&
            (llmc_train_forward(t, inputs, targets, B, T) != LLMC_OK || llmc_train_get_losses(t, losses) != LLMC_OK)) {
            snprintf(err, errlen, "%s", llmc_train_error(t));
            st = LLMC_ERR_INVALID_ARG;
        }
        r = 0;
        for (int k = first; k < i && st == LLMC_OK; k++) {
            const mc_item *it = &e->items[k];
            int best = 0, best_norm = 0;
            double best_sum = 0, best_mean = 0;
            for (int c = 0; c < it->nchoices; c++, r++) {
                double sum = 0;
                for (int p = 0; p < T; p++) sum += losses[(size_t)r * T + p]; /* 0 where not a target */
                const double mean = sum / counts[r];
                if (c == 0 || sum < best_sum) best = c, best_sum = sum;
                if (c == 0 || mean < best_mean) best_norm = c, best_mean = mean;
            }
            correct += best == it->label;
            correct_norm += best_norm == it->label;
            scored++;
        }
    }
    free(losses);
    free(counts);
    if (st == LLMC_OK) {
        *out = (llmc_mc_score){scored, correct, correct_norm, scored ? (double)correct / scored : 0.0,
                               scored ? (double)correct_norm / scored : 0.0};
    }
    return st;
}

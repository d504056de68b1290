/* mc_eval.h — multiple-choice evals (HellaSwag) in llm.c's eval file format, scored with the
 * trainer's forward. The training loop runs them at its validation steps (-h 1). */
#ifndef LLMC_MC_EVAL_H
#define LLMC_MC_EVAL_H

#include <stddef.h>
#include "llmc.h"

#define LLMC_EVAL_MAGIC 20240522 /* llm.c's eval files (dev/data/hellaswag.py) */
#define LLMC_MC_MAX_CHOICES 16

typedef struct llmc_mc_eval llmc_mc_eval;

typedef struct llmc_mc_score {
    int n;            /* items scored */
    int correct, correct_norm; /* of them, right by acc and by acc_norm */
    double acc;       /* the answer with the least summed loss of its tokens */
    double acc_norm;  /* the least mean loss per token: what llm.c logs as HellaSwag */
} llmc_mc_score;

/* Reads an eval file: a header of 256 int32 (magic, version 1, items, longest item in bytes), then
 * per item a stream of uint16: 65535, its size in bytes, its index, the label, the number of
 * choices, the context length and tokens, and each choice's length and tokens. Every field is
 * checked against the file and vocab (token ids below it). NULL on failure, with err set. */
llmc_mc_eval *llmc_mc_eval_load(const char *path, int vocab, char *err, size_t errlen);
void llmc_mc_eval_free(llmc_mc_eval *e);
int llmc_mc_eval_items(const llmc_mc_eval *e);

/* Scores the first limit items (0 or more than there are: all) with t's forward in batches of B
 * rows of T tokens, one row per choice (B >= the most choices of an item). A row holds the
 * context then the choice, at most T + 1 tokens (T inputs, each predicting the next): a context
 * that would not fit is cut from the left, and a choice longer than T tokens is refused. Only the choice's tokens are targets, so the losses are theirs.
 * The same scoring as python -m llmc.eval hellaswag. inputs/targets: B*T ints of scratch.
 * part/parts split the work between ranks: only batches b with b % parts == part are scored (the
 * counts of the parts add up to those of parts = 1). */
llmc_status llmc_mc_eval_run(const llmc_mc_eval *e, llmc_train *t, int B, int T, int limit, int part, int parts,
                             int *inputs, int *targets, llmc_mc_score *out, char *err, size_t errlen);

#endif

/* infer.h — the cached forward graph used by generation (generate.c).
 *
 * An engine owns one device allocation: the KV cache of every layer for `slots`
 * sequences of up to `maxlen` positions, and activation scratch for `rows` rows.
 * Prefill runs whole prompts through the layers and fills the cache; decode runs one
 * new token per sequence against it. Both leave logits of one row per sequence only. */
#ifndef LLMC_INFER_H
#define LLMC_INFER_H

#include "model_internal.h"

/* What a decode step ends with: logits only, the argmax of each row, or a sample of each. */
typedef enum llmc_infer_pick { PICK_NONE, PICK_ARGMAX, PICK_SAMPLE } llmc_infer_pick;

typedef struct llmc_infer {
    llmc_model *m;                  /* the weights it runs */
    char *err;                      /* where failures are described (the session's buffer) */
    int slots, maxlen, rows;
    void *mem;
    size_t bytes;                   /* of mem */
    void *kcache, *vcache;          /* (L, slots, NH, maxlen, HS) each */
    void *x, *res2, *ln, *qkv, *atty, *proj, *fch, *fch_gelu; /* rows x C, C, C, 3C, C, C, 4C, 4C */
    float *mean, *rstd, *lse;       /* rows, rows, rows * NH */
    void *last;                     /* (slots, C): final-LN rows whose logits prefill computes */
    void *logits;                   /* (slots, Vp) */
    int *ids;                       /* rows + 4 * slots ints of per-call indices (and draws) */
    int *argmax;                    /* (slots) greedy picks, or sampled tokens */
    float *draws;                   /* (slots) uniform draws for the device sampler */
    int *host_ids;                  /* host staging of the same size */
    unsigned *sync;                 /* device word for the decode_layers op */
    int persistent;                 /* decode through ops->decode_layers where it takes the step */
    long long persistent_steps;     /* decode steps that ran that way */
    /* decode steps replayed as device graphs (backends with graph ops), one per row count */
    int use_graphs;
    llmc_infer_pick graph_pick;     /* what the recorded graphs end with */
    void **graphs;                  /* slots + 1 */
    unsigned char *seen;            /* slots + 1: row counts run eagerly once already */
    unsigned char *one_kernel;      /* slots + 1: row counts decode_layers took */
} llmc_infer;

/* Allocates the cache and scratch (the engine must be zeroed or released first); use_graphs
 * asks for device graphs of the decode step where the backend has them, persistent for the
 * backend's one-kernel decode (decode_layers) where it takes the step. */
llmc_status llmc_infer_alloc(llmc_infer *e, llmc_model *m, char *err, int slots, int maxlen, int rows, int use_graphs,
                             int persistent);
void llmc_infer_release(llmc_infer *e);

/* Prefill of `count` prompts of the same length T (host tokens, count*T; count*T <= rows):
 * their K, V go to positions 0..T-1 of slots[i]; the final-LN output of each prompt's last
 * position goes to row out_rows[i] of e->last. */
llmc_status llmc_infer_prefill(llmc_infer *e, const int *tokens, const int *slots, const int *out_rows, int count,
                               int T);
/* logits rows 0..n-1 (=) from rows 0..n-1 of e->last; with greedy (host, n ints) also the
 * argmax of each row. */
llmc_status llmc_infer_last_logits(llmc_infer *e, int n, int *greedy);
/* One token per row (host arrays of n): token tokens[i] at position pos[i] of slot slots[i];
 * its K, V join the cache and logits row i (=) is the model's output there. n <= slots.
 * picks (host, n ints), when given: the next token of each row, picked on the device in the same
 * step (a graph records it too): the argmax, or with sampling, ops->sample_rows on the host's
 * draws (n floats; its -2 rows are the caller's to sample). */
llmc_status llmc_infer_decode(llmc_infer *e, const int *tokens, const int *slots, const int *pos, int n, int *picks,
                              const llmc_sampling *sampling, const float *draws);
/* A decode step queued without waiting for it (generate.c's run_ahead): as llmc_infer_decode
 * with picks (argmax, or with sampling the device sampler on draws), which stay in e->argmax for
 * the caller to read back (ops->copy_d2h_async). The ids (and draws) go up from stage, 5 * n
 * ints of ops->host_alloc memory that must stay untouched until a fence after the step has
 * passed. tokens NULL: each row's token is the pick of the step queued before it (e->argmax,
 * row for row; 0 where that pick failed). */
llmc_status llmc_infer_decode_queued(llmc_infer *e, int *stage, const int *tokens, const int *slots, const int *pos,
                                     int n, const llmc_sampling *sampling, const float *draws);
/* Bytes of device memory the engine holds. */
size_t llmc_infer_memory(const llmc_infer *e);

#endif

/* train_internal.h — the training object: everything training adds to a model. Shared by
 * train.c (memory, forward/backward), optim.c (AdamW), checkpoint.c and train_loop.c. */
#ifndef LLMC_TRAIN_INTERNAL_H
#define LLMC_TRAIN_INTERNAL_H

#include "model_internal.h"

/* Activations of one forward pass, carved out of one device allocation.
 * Per-layer tensors are L consecutive slices; with recompute some are a single slice. */
typedef struct llmc_acts {
    void *encoded;   /* (B,T,C) */
    void *ln1;       /* (L,B,T,C), one slice if recompute >= 2 */
    float *ln1_mean, *ln1_rstd; /* (L,B,T) */
    void *qkv;       /* (L,B,T,3C) */
    void *atty;      /* (L,B,T,C) */
    float *att_lse;  /* (L,B,NH,T) */
    void *residual2; /* (L,B,T,C) */
    void *ln2;       /* (L,B,T,C), one slice if recompute >= 2 */
    float *ln2_mean, *ln2_rstd;
    void *fch;       /* (L,B,T,4C) pre-GELU */
    void *fch_gelu;  /* (L,B,T,4C), one slice if recompute >= 1 */
    void *residual3; /* (L,B,T,C) */
    void *lnf;       /* (B,T,C) */
    float *lnf_mean, *lnf_rstd;
    void *scratch;   /* (B,T,C) output of the projections before the residual add */
    void *logits;    /* (B,T,Vp), dlogits in place after the fused classifier */
    float *losses;   /* (B,T) */
    int *inputs, *targets; /* (B,T) device copies */
} llmc_acts;

/* Gradients of activations, needed only by the backward. */
typedef struct llmc_grad_acts {
    void *dresidual; /* (B,T,C) */
    void *dbtc;      /* (B,T,C) */
    void *dqkv;      /* (B,T,3C) */
    void *dfch;      /* (B,T,4C) */
} llmc_grad_acts;

enum { LOGITS_NONE = 0, LOGITS_VALID, LOGITS_ARE_DLOGITS };

struct llmc_train {
    char err[LLMC_ERR_LEN];
    llmc_model *m;            /* NULL until attached */
    llmc_train_options opts;
    int has_opts;

    llmc_weights grads;       /* the parameter table again, bound to the gradient buffer */
    void *grad_mem;           /* act dtype, all parameters; allocated on first use */
    float *norm_scale;        /* device, in grad_mem after the gradients: {grad norm, clip scale} */
    /* AdamW moments and master weights cover parameters [shard_offset, shard_offset + shard_count) */
    size_t shard_offset, shard_count;
    float *adam_m, *adam_v;
    float *master;            /* fp32 master weights (bf16 backends, when kept) or NULL */
    unsigned master_version;  /* the model's version the master weights match */
    int step;                 /* AdamW steps done */

    /* activations: allocated for the largest B*T seen, laid out for the current B, T */
    void *act_mem;
    size_t act_capacity;      /* bytes */
    void *grad_act_mem;
    size_t grad_act_capacity;
    llmc_acts a;
    llmc_grad_acts g;
    int B, T;
    int *host_inputs;         /* copy of the last inputs (encoder backward groups rows by token) */
    float *host_losses;
    size_t host_capacity;     /* elements in host_inputs / host_losses */
    int has_targets;
    int counted_targets;      /* targets of the last batch that are not LLMC_IGNORE_TARGET */
    int logits_state;
    float loss;

    /* keep_zeros (train_mask.c): one bit per parameter of the shard, set where a matmul weight was 0 */
    uint32_t *zero_mask;
    unsigned mask_version;    /* the model's version the mask was made from */
    /* distillation (train_distill.c): a forward-only trainer over the teacher model */
    llmc_train *teacher;
    float distill_alpha, distill_tau;
    int teacher_reading;      /* a distillation classifier queued on this device may still read the teacher's logits */
    /* data parallelism (train_dist.c): NULL or a world of one run alone */
    struct llmc_comm *comm;
    size_t grad_capacity;     /* elements in grad_mem before norm_scale: world * shard >= the parameters */
    int grads_reduced;        /* the gradients of this accumulation are already summed over the ranks */
    int reduce_in_backward;   /* overlap: the next backward sends each layer's sums off as it finishes it */
    int reduce_pending;       /* it did: the sums are queued, the step joins them */
    int failure_agreed;       /* the ranks agreed on a failure in this run: they all return with it */
    /* exact_accum (train_graph.c): a micro-step's own gradients, and how many went into the sum */
    void *micro_mem;
    int micro_steps;
};

llmc_status llmc_train_fail(llmc_train *t, llmc_status code, const char *fmt, ...);
/* The model's (or device's) last message onto t. */
llmc_status llmc_train_from_model(llmc_train *t, llmc_status code);
llmc_status llmc_train_dev_fail(llmc_train *t, llmc_status code);

#define TRAIN_TRY(t, call) LLMC_TRY_WITH(llmc_train_dev_fail, t, call)

/* Fails unless t is attached to a model with weights. */
llmc_status llmc_train_require(llmc_train *t);
/* LLMC_ERR_UNSUPPORTED with the message that a quantized model does not train. */
llmc_status llmc_train_refuse_quantized(llmc_train *t);
/* Allocates what is missing, zeroed: the gradient buffer; AdamW moments and (when kept) master
 * weights for the shard, the master weights taken from the model's fp32 values. */
llmc_status llmc_train_ensure_grads(llmc_train *t);
llmc_status llmc_train_ensure_optimizer(llmc_train *t);
/* Lays out activations for (B, T), growing the arena when needed; training adds the backward's. */
llmc_status llmc_train_ensure_acts(llmc_train *t, int B, int T, int training);
/* The largest step below `below` with both checkpoint files in dir (-1: none); with files, also
 * how many checkpoint-named files (model_*.bin, state_*.bin) dir holds, complete or not. */
llmc_status llmc_checkpoint_find(const char *dir, int below, int *step, int *files);
/* Removes the checkpoint of step from dir (DONE marker first). */
void llmc_checkpoint_remove(const char *dir, int step);
/* Removes the leftovers of checkpoints below step `below` that are not complete pairs (a save or
 * a removal that was killed halfway). */
void llmc_checkpoint_remove_partial(const char *dir, int below);
/* How many steps have checkpoint files (model_, state_ or DONE_) in dir: 0, 1, or 2 for "more". */
int llmc_checkpoint_steps(const char *dir);
/* Writes DONE_<step> if it is missing (a run killed after the state file, before the marker). */
llmc_status llmc_checkpoint_mark_done(llmc_train *t, const char *dir, int step);
/* Drops gradients, optimizer state and activations (a new model shape). */
void llmc_train_release(llmc_train *t);

/* keep_zeros: makes the mask when it is missing or older than the weights (a no-op when off). */
llmc_status llmc_train_ensure_mask(llmc_train *t);
/* keep_zeros: the masked entries of the shard's part [from, to) of tensor i back to 0 after its update. */
llmc_status llmc_train_apply_mask(llmc_train *t, int i, size_t from, size_t to);
void llmc_train_release_mask(llmc_train *t);

/* Distillation: queues the teacher's forward on the batch of the last prepare (t->host_inputs, B, T). */
llmc_status llmc_train_teacher_forward(llmc_train *t);
/* The distillation classifier on the student's logits (waits for the teacher's forward first). */
llmc_status llmc_train_distill_classify(llmc_train *t, float dloss);
/* The teacher's trainer gone (it must go before the teacher model). */
void llmc_train_drop_teacher(llmc_train *t);

/* Data parallelism (train_dist.c). A world of one makes every one of these a no-op. */
/* Elements per rank's shard, and rank's [offset, offset + count) of the parameters. */
size_t llmc_train_shard_size(const llmc_train *t);
void llmc_train_shard_of(const llmc_train *t, int rank, size_t *offset, size_t *count);
/* 1 when gradients travel between ranks (a world of several, or one through the engine). */
int llmc_train_distributed(const llmc_train *t);
/* 1 when the optimizer state is split over the ranks (ZeRO 1). */
int llmc_train_zero1(const llmc_train *t);
/* The gradients of this accumulation summed over the ranks, once (all of them, or with ZeRO 1 the
 * rank's shard). */
llmc_status llmc_train_reduce_grads(llmc_train *t);
/* The global grad norm and clip scale into t->norm_scale, from the ranks' per-shard sums. */
llmc_status llmc_train_dist_norm_scale(llmc_train *t, float grad_clip);
/* What llmc_train_forward_backward would refuse (the batch, its token ids) and the memory it needs,
 * checked and allocated without running anything: ranks agree on it before a backward that talks. */
llmc_status llmc_train_check_step(llmc_train *t, const int *inputs, const int *targets, int B, int T);
/* Overlap (reduce_in_backward): the gradients layer finished (layer -1: the tensors outside the
 * layers, after the encoder) sent to the ranks that own them, on the engine's stream. */
llmc_status llmc_train_reduce_bucket(llmc_train *t, int layer);
/* ZeRO 1: every rank's updated weights to every rank. */
llmc_status llmc_train_gather_params(llmc_train *t);
/* Every rank's status: the first failure on every rank ("rank R: ..."); *stop (may be NULL)
 * becomes 1 when any rank asked to stop. */
llmc_status llmc_train_agree(llmc_train *t, llmc_status st, int *stop);
/* n host doubles summed over ranks in rank order. */
llmc_status llmc_train_sum_doubles(llmc_train *t, double *v, int n);
/* Fails, naming the setting and the ranks, unless every rank passes the same n values (value i is a
 * float's bits when bit i of float_bits is set). */
llmc_status llmc_train_check_same(llmc_train *t, const int64_t *mine, const char *const *names, int n,
                                  uint32_t float_bits);
/* ZeRO-1 checkpoints: every rank's piece of part, in rank order, to rank 0's write(). */
llmc_status llmc_train_gather_part(llmc_train *t, const float *part, float *staging, float *host, size_t chunk,
                                   llmc_status (*write)(void *ctx, const float *x, size_t n), void *ctx);
void llmc_train_close_comm(llmc_train *t);

#endif

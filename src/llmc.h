/*
 * llmc.h — the public C API of llmc.
 *
 * One opaque context per model. Every function that can fail returns an
 * llmc_status; the human-readable message stays in the context and is read
 * with llmc_model_error(). No function here prints, exits or aborts.
 *
 * Typical use:
 *   llmc_model *m = llmc_model_new();
 *   if (llmc_model_load(m, &opts, "gpt2_124M.bin") != LLMC_OK) puts(llmc_model_error(m));
 *   llmc_model_forward(m, inputs, targets, B, T);
 *   llmc_model_free(m);
 */
#ifndef LLMC_H
#define LLMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- file formats (compatible with llm.c) ---- */
#define LLMC_MODEL_MAGIC 20240326     /* model .bin: v3 = fp32 params, v5 = bf16 */
#define LLMC_STATE_MAGIC 20240327     /* optimizer/trainer state next to a model file */
#define LLMC_TOKENIZER_MAGIC 20240328 /* tokenizer .bin */
#define LLMC_SHARD_MAGIC 20240520     /* token shard: uint16 tokens */
#define LLMC_HEADER_INTS 256          /* every file starts with 256 int32 */
#define LLMC_ERR_LEN 512

typedef enum llmc_status {
    LLMC_OK = 0,
    LLMC_ERR_INVALID_ARG = 1, /* a caller passed an impossible value */
    LLMC_ERR_IO = 2,          /* open/read/write/rename failed */
    LLMC_ERR_FORMAT = 3,      /* a file is corrupt, truncated or has the wrong magic */
    LLMC_ERR_OUT_OF_MEMORY = 4,
    LLMC_ERR_DEVICE = 5,      /* a CUDA / cuBLAS failure, or no device */
    LLMC_ERR_UNSUPPORTED = 6, /* asked for something this build cannot do */
    LLMC_ERR_NUMERIC = 7,     /* NaN or Inf where a number was needed */
} llmc_status;

const char *llmc_status_name(llmc_status s);

typedef enum llmc_dtype { LLMC_F32 = 0, LLMC_BF16 = 1 } llmc_dtype;
size_t llmc_dtype_size(llmc_dtype t);

/* ---- model shape ---- */
typedef struct llmc_config {
    int max_seq_len;       /* T_max: positions in wpe */
    int vocab_size;        /* V: real tokens, 50257 for GPT-2 */
    int padded_vocab_size; /* Vp: V rounded up to a multiple of 128 (storage only) */
    int num_layers;        /* L */
    int num_heads;         /* NH */
    int channels;          /* C, a multiple of NH */
} llmc_config;

/* Fills cfg from "d12" / "d24" / "d36" / "d48" or an explicit
 * "L=2,H=4,C=128,T=256,V=50257" (any order; V and T default to GPT-2's).
 * On failure writes a message into err. */
llmc_status llmc_config_from_descriptor(const char *desc, llmc_config *cfg, char *err, size_t errlen);
/* Checks sizes and derives padded_vocab_size when it is 0. */
llmc_status llmc_config_validate(llmc_config *cfg, char *err, size_t errlen);

/* ---- parameter tensors, in llm.c's order ---- */
enum {
    LLMC_WTE, LLMC_WPE, LLMC_LN1W, LLMC_LN1B, LLMC_QKVW, LLMC_QKVB, LLMC_ATTPROJW, LLMC_ATTPROJB,
    LLMC_LN2W, LLMC_LN2B, LLMC_FCW, LLMC_FCB, LLMC_FCPROJW, LLMC_FCPROJB, LLMC_LNFW, LLMC_LNFB,
    LLMC_NUM_PARAM_TENSORS
};
typedef struct llmc_tensor_info {
    const char *name; /* "wte", "qkvw", ... */
    size_t offset;    /* in elements from the start of the flat buffer */
    size_t numel;
    int ndim;
    int shape[4];
    int weight_decay; /* 1 for matrices (decayed), 0 for biases and norms */
} llmc_tensor_info;
/* Layout of the flat parameter (and gradient) buffer for a config. */
void llmc_param_layout(const llmc_config *cfg, llmc_tensor_info out[LLMC_NUM_PARAM_TENSORS]);
size_t llmc_param_count(const llmc_config *cfg);

/* ---- the model context ---- */
typedef struct llmc_model llmc_model;

typedef struct llmc_model_options {
    const char *backend; /* "cpu" (default when NULL) or "cuda" */
    int device;          /* GPU index for "cuda" */
    int master_weights;  /* keep fp32 master weights for AdamW (bf16 backends); default 1 */
    int recompute;       /* 0 off, 1 recompute GELU, 2 also layernorm, in the backward */
} llmc_model_options;
void llmc_model_options_default(llmc_model_options *o);

/* Allocates an empty context (host memory only). NULL only if malloc fails. */
llmc_model *llmc_model_new(void);
void llmc_model_free(llmc_model *m);
const char *llmc_model_error(const llmc_model *m);

/* GPT-2 init: N(0, 0.02); residual projections scaled by 1/sqrt(2L); biases 0, LN weights 1. */
llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, uint64_t seed);
/* Loads an llm.c model file (v3 fp32 or v5 bf16). */
llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path);
/* Writes a model file, atomically (temp file + rename). version: 3 (fp32) or 5 (bf16). */
llmc_status llmc_model_save(llmc_model *m, const char *path, int version);

const llmc_config *llmc_model_config(const llmc_model *m);
const char *llmc_model_backend(const llmc_model *m);
size_t llmc_model_num_params(const llmc_model *m);

/* fp32 copies of the parameters (master weights when kept) and gradients, in layout order. */
llmc_status llmc_model_get_params(llmc_model *m, float *dst);
llmc_status llmc_model_set_params(llmc_model *m, const float *src);
llmc_status llmc_model_get_grads(llmc_model *m, float *dst);
/* Direct pointers for zero-copy numpy views: non-NULL only when the buffers are host fp32 (CPU backend). */
float *llmc_model_params_host(llmc_model *m);
float *llmc_model_grads_host(llmc_model *m);

/* ---- forward / backward / optimizer ----
 * inputs and targets are host arrays of B*T token ids (int32), targets may be NULL.
 * Token ids are checked: 0 <= id < V, and 1 <= B, 1 <= T <= max_seq_len. */
llmc_status llmc_model_forward(llmc_model *m, const int *inputs, const int *targets, int B, int T);
/* Mean loss over B*T of the last forward with targets (NaN if none). */
float llmc_model_loss(const llmc_model *m);
/* Copies the last forward's logits, B*T*V floats (padding columns dropped). */
llmc_status llmc_model_get_logits(llmc_model *m, float *dst);
/* Copies the logits of one position, V floats. */
llmc_status llmc_model_get_logits_at(llmc_model *m, int b, int t, float *dst);

llmc_status llmc_model_zero_grad(llmc_model *m);
/* Accumulates d(loss_scale * mean loss)/dparams into the gradients. Needs a forward with targets. */
llmc_status llmc_model_backward(llmc_model *m, float loss_scale);
/* forward + backward fused for training: the classifier writes dlogits in the same pass.
 * The logits of this step are not kept. *loss receives the mean loss. */
llmc_status llmc_model_forward_backward(llmc_model *m, const int *inputs, const int *targets, int B, int T,
                                        float loss_scale, float *loss);

typedef struct llmc_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip; /* clip the global grad norm to this; <= 0 means no clipping */
} llmc_adamw;
void llmc_adamw_default(llmc_adamw *a);
/* One AdamW step on the accumulated gradients. Step count t starts at 1 and is kept in the
 * context. Fails with LLMC_ERR_NUMERIC (and leaves weights unchanged) if the grad norm is not finite. */
llmc_status llmc_model_step(llmc_model *m, const llmc_adamw *a, float *grad_norm);
int llmc_model_step_count(const llmc_model *m);

/* ---- sampling and generation ---- */
typedef struct llmc_sampling {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} llmc_sampling;
void llmc_sampling_default(llmc_sampling *s);
/* Picks a token from V logits; advances *rng_state (not for temperature 0). Returns -1 if V <= 0,
 * a logit is NaN or +Inf, all are -Inf, or temperature < 0. Pure host code. */
int llmc_sample_token(const float *logits, int V, const llmc_sampling *s, uint64_t *rng_state);

/* Generation session. prompts: batch sequences, concatenated, lengths in prompt_lens.
 * llmc_gen_next writes one new token per sequence into out[batch]; a sequence that has
 * stopped (EOT, max_new or the context limit) gets -1. Returns LLMC_OK while any is alive;
 * *alive tells how many are. */
llmc_status llmc_gen_begin(llmc_model *m, const int *prompts, const int *prompt_lens, int batch, int max_new,
                           const llmc_sampling *s, int eot_token);
llmc_status llmc_gen_next(llmc_model *m, int *out, int *alive);
void llmc_gen_end(llmc_model *m);
/* Copies the V logits that the next llmc_gen_next samples sequence b from (the model's
 * output at the sequence's last token). Fails once b has stopped. For tests and tools. */
llmc_status llmc_gen_logits(llmc_model *m, int b, float *dst);

/* ---- data loader over llm.c token shards ---- */
typedef struct llmc_dataloader llmc_dataloader;
typedef struct llmc_data_position {
    uint64_t epoch;  /* completed passes over all shards */
    uint64_t shard;  /* index into the (possibly shuffled) shard order */
    uint64_t sample; /* index into the (possibly shuffled) sample order of that shard */
} llmc_data_position;

/* Opens every file matching pattern (a glob). Each shard must hold at least B*T+1 tokens.
 * With shuffle, shard order and sample order are permuted per epoch from seed.
 * Returns NULL only if malloc fails; otherwise check llmc_dataloader_error(). */
llmc_dataloader *llmc_dataloader_open(const char *pattern, int B, int T, int shuffle, uint64_t seed);
const char *llmc_dataloader_error(const llmc_dataloader *d); /* NULL if open succeeded and the last next/seek did not fail */
void llmc_dataloader_free(llmc_dataloader *d);
/* Fills B*T inputs and the B*T targets shifted by one. */
llmc_status llmc_dataloader_next(llmc_dataloader *d, int *inputs, int *targets);
void llmc_dataloader_reset(llmc_dataloader *d);
llmc_data_position llmc_dataloader_tell(const llmc_dataloader *d);
llmc_status llmc_dataloader_seek(llmc_dataloader *d, llmc_data_position p);
size_t llmc_dataloader_num_tokens(const llmc_dataloader *d);
int llmc_dataloader_num_shards(const llmc_dataloader *d);
/* Batches per epoch (sum over shards of their sample counts). */
size_t llmc_dataloader_num_batches(const llmc_dataloader *d);

/* ---- tokenizer .bin (decode only: C needs it to print samples) ---- */
typedef struct llmc_tokenizer llmc_tokenizer;
llmc_tokenizer *llmc_tokenizer_open(const char *path, char *err, size_t errlen); /* NULL on failure */
void llmc_tokenizer_free(llmc_tokenizer *t);
/* Bytes of a token (not NUL-terminated safe: use len), NULL for an id out of range. */
const char *llmc_tokenizer_decode(const llmc_tokenizer *t, int token, int *len);
int llmc_tokenizer_eot(const llmc_tokenizer *t);
int llmc_tokenizer_vocab_size(const llmc_tokenizer *t);

/* ---- trainer checkpoints: a model file plus a state file, both written atomically ---- */
typedef struct llmc_train_state {
    int step;                  /* optimizer steps done */
    uint64_t rng;              /* trainer RNG (sampling) */
    llmc_data_position data;   /* where the train loader resumes */
} llmc_train_state;
/* Writes <dir>/model_%08d.bin and <dir>/state_%08d.bin (optimizer m, v, master weights). */
llmc_status llmc_checkpoint_save(llmc_model *m, const char *dir, const llmc_train_state *st);
/* Loads both files of a step (step < 0: the latest complete one in dir). */
llmc_status llmc_checkpoint_load(llmc_model *m, const llmc_model_options *o, const char *dir, int step,
                                 llmc_train_state *st);
/* Latest step with both files present in dir, or -1. */
int llmc_checkpoint_latest(const char *dir);

/* ---- learning-rate schedules ---- */
typedef enum llmc_schedule_kind { LLMC_SCHED_COSINE, LLMC_SCHED_LINEAR, LLMC_SCHED_CONSTANT, LLMC_SCHED_WSD } llmc_schedule_kind;
typedef struct llmc_schedule {
    llmc_schedule_kind kind;
    float max_lr;
    int warmup;          /* linear warmup steps from 0 */
    int total;           /* total steps */
    float final_frac;    /* final lr = max_lr * final_frac */
    float decay_frac;    /* wsd: fraction of total spent in the final decay (default 0.2) */
} llmc_schedule;
/* lr at step (0-based). Returns LLMC_ERR_INVALID_ARG for an unknown name in parse. */
float llmc_schedule_lr(const llmc_schedule *s, int step);
llmc_status llmc_schedule_parse(const char *name, llmc_schedule_kind *kind);

#ifdef __cplusplus
}
#endif
#endif /* LLMC_H */

/*
 * llmc.h — the public C API of llmc.
 *
 * Objects (each an opaque handle made by *_new(), released by *_free()):
 *   llmc_model       the device and the weights (a tensor table, llmc_weights)
 *   llmc_train       gradients, activations, AdamW state and master weights over a model
 *   llmc_gen         a generation session: KV cache, batch and sampler state over a model
 *   llmc_dataloader  batches from llm.c token shards
 *   llmc_tokenizer   an llm.c tokenizer file (decode only)
 * Several trainers and sessions may refer to one model; the model must outlive them.
 *
 * Errors: every function that can fail returns an llmc_status; the message stays on the
 * handle it was called on and is read with that handle's *_error(). *_new() returns NULL
 * only when malloc fails. No function here prints, exits or aborts.
 *
 * Typical use:
 *   llmc_model *m = llmc_model_new();
 *   if (llmc_model_load(m, &opts, "gpt2_124M.bin") != LLMC_OK) puts(llmc_model_error(m));
 *   llmc_gen *g = llmc_gen_new();
 *   llmc_gen_begin(g, m, prompt, &len, 1, &gen_opts);
 *   while (alive) llmc_gen_next(g, &tok, 1, &alive);
 *   llmc_gen_free(g); llmc_model_free(m);
 */
#ifndef LLMC_H
#define LLMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- file formats (compatible with llm.c) ---- */
#define LLMC_MODEL_MAGIC 20240326     /* model .bin: v3 = fp32 params, v5 = bf16 (llm.c's two) */
#define LLMC_MODEL_VERSION_INT8 8     /* llmc's own: int8 matmul weights + fp32 scales (quant.c) */
#define LLMC_STATE_MAGIC 20240327     /* optimizer/trainer state next to a model file */
#define LLMC_TOKENIZER_MAGIC 20240328 /* tokenizer .bin */
#define LLMC_SHARD_MAGIC 20240520     /* token shard: uint16 tokens */
#define LLMC_MASK_MAGIC 20241201      /* llmc loss mask beside a shard: one uint8 per token */
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
    LLMC_ERR_STOPPED = 8,     /* a callback asked to stop */
} llmc_status;

const char *llmc_status_name(llmc_status s);

typedef enum llmc_dtype { LLMC_F32 = 0, LLMC_BF16 = 1, LLMC_I8 = 2 /* quantized weights: int8 + fp32 scales */ } llmc_dtype;
size_t llmc_dtype_size(llmc_dtype t);
const char *llmc_dtype_name(llmc_dtype t);

/* 1 when this CPU has the instructions the library was built for; else 0 and a message naming
 * what is missing (portable builds target x86-64-v3). Safe to call on any x86-64 CPU. */
int llmc_cpu_supported(char *err, size_t errlen);

/* bf16 <-> fp32 on the host: round to nearest even, NaN stays NaN. The one place it is written. */
uint16_t llmc_f32_to_bf16(float f);
float llmc_bf16_to_f32(uint16_t h);
void llmc_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n); /* parallel for large n */
void llmc_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);

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
 * Pure functions without a handle: on failure they write a message into err. */
llmc_status llmc_config_from_descriptor(const char *desc, llmc_config *cfg, char *err, size_t errlen);
/* Checks sizes and derives padded_vocab_size when it is 0. */
llmc_status llmc_config_validate(llmc_config *cfg, char *err, size_t errlen);

/* ---- weights: the tensor table ----
 * The one place that knows GPT-2's parameter layout (llm.c's order, one flat buffer). */
enum {
    LLMC_WTE, LLMC_WPE, LLMC_LN1W, LLMC_LN1B, LLMC_QKVW, LLMC_QKVB, LLMC_ATTPROJW, LLMC_ATTPROJB,
    LLMC_LN2W, LLMC_LN2B, LLMC_FCW, LLMC_FCB, LLMC_FCPROJW, LLMC_FCPROJB, LLMC_LNFW, LLMC_LNFB,
    LLMC_NUM_PARAM_TENSORS
};

/* A typed tensor. For one of the 16 parameters, shape is the whole stacked tensor (layer first
 * for per-layer ones) and llmc_weights_layer() gives one layer's slice, itself a tensor. */
typedef struct llmc_tensor {
    const char *name;     /* "wte", "qkvw", ... */
    llmc_dtype dtype;
    void *data;           /* backend memory; NULL in a layout that is not bound to a buffer */
    int ndim;
    int shape[4];
    size_t numel;
    size_t offset;        /* elements from the start of the flat buffer */
    size_t layer_stride;  /* elements from one layer's slice to the next; 0: not per-layer */
    const void *scales;   /* quantized (LLMC_I8): fp32 scales, one per group of a row; NULL: plain */
    int group_size;       /* quantized: elements of a row (the input dim) that share a scale */
    int weight_decay;     /* 1 for matrices (decayed by AdamW), 0 for biases and norms */
} llmc_tensor;

typedef struct llmc_weights {
    llmc_config cfg;
    llmc_dtype dtype;
    size_t count;         /* elements of all 16 tensors */
    void *data;           /* the flat buffer the tensors point into (NULL: layout only) */
    llmc_tensor t[LLMC_NUM_PARAM_TENSORS];
} llmc_weights;

/* The layout of cfg in dtype, with no buffer (data NULL). cfg must be valid. */
void llmc_weights_layout(llmc_weights *w, const llmc_config *cfg, llmc_dtype dtype);
/* Points every tensor into base (a buffer of w->count elements of w->dtype). */
void llmc_weights_bind(llmc_weights *w, void *base);
/* One layer's slice of tensor i (the tensor itself for tensors without layers). */
llmc_tensor llmc_weights_layer(const llmc_weights *w, int i, int layer);
/* All 16 at once: out[i] = llmc_weights_layer(w, i, layer). */
void llmc_weights_slices(const llmc_weights *w, int layer, llmc_tensor out[LLMC_NUM_PARAM_TENSORS]);
size_t llmc_param_count(const llmc_config *cfg);
/* GPT-2 init into host fp32 (w->count values): N(0, 0.02), residual projections scaled by
 * 1/sqrt(2L), biases 0, layernorm weights 1, the padding rows of wte 0. */
void llmc_weights_init_host(const llmc_weights *w, float *host, uint64_t seed);

/* Hugging Face GPT-2 names, from the same table: tensor i of layer l is the Hugging Face tensor
 * llmc_weights_hf_name(i, l) under the model, with LLMC_HF_PREFIX in GPT2LMHeadModel's files and
 * without in GPT2Model's. Conv1D weights (llmc_weights_hf_transposed) are stored (in, out) where
 * llmc stores (out, in); wte has V rows there, Vp here. */
#define LLMC_HF_PREFIX "transformer."
/* buf, or NULL for a tensor out of range, a negative layer of a per-layer tensor or a short buf.
 * The layer of a tensor without layers is ignored. */
const char *llmc_weights_hf_name(int tensor, int layer, char *buf, size_t len);
int llmc_weights_hf_transposed(int tensor);
/* The tensor a Hugging Face name (prefix optional) is, and its layer (-1: none); -1 for none. */
int llmc_weights_hf_lookup(const char *name, int *layer);
/* 1 for what an import drops: the attention-mask buffers (*.attn.bias, *.attn.masked_bias) and
 * lm_head.weight (tied to wte). */
int llmc_weights_hf_ignored(const char *name);

/* ---- the model: a device and its weights ---- */
typedef struct llmc_model llmc_model;

typedef struct llmc_model_options {
    const char *backend; /* "cpu" (default when NULL) or "cuda" */
    int device;          /* GPU index for "cuda" */
    /* backend tuning; -1 takes the default, which an environment variable may set */
    int pdl;             /* launch decode kernels as programmatic dependents (LLMC_PDL, default 1) */
    int skinny_rows;     /* matmuls of at most this many rows use the skinny kernel, 0: never (LLMC_GEMV, 16) */
    int int8_mma;        /* int8 matmuls of few rows on tensor cores, 0: the CUDA-core kernel (LLMC_INT8_MMA, 1) */
    int fuse_layernorm;  /* decode: a layernorm inside the matmul after it where that pays; 0: two kernels,
                          * 2: wherever the kernel can (LLMC_FUSE_LN, 1) */
} llmc_model_options;
void llmc_model_options_default(llmc_model_options *o);

llmc_model *llmc_model_new(void);
/* The model must outlive every trainer and session made on it. */
void llmc_model_free(llmc_model *m);
const char *llmc_model_error(const llmc_model *m);

/* Opens the device only (no weights yet). o NULL: the defaults. */
llmc_status llmc_model_open(llmc_model *m, const llmc_model_options *o);
/* GPT-2 init from seed (see llmc_weights_init_host). o NULL: the options m was opened with. */
llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, uint64_t seed);
/* Weights given as host fp32 values (llmc_param_count(cfg) of them, in the tensor table's order),
 * checked to be finite: how converters (Hugging Face import) hand a model over. */
llmc_status llmc_model_init_values(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                   const float *values);
/* Loads an llm.c model file (v3 fp32 or v5 bf16), or a Hugging Face directory (a directory with
 * config.json: llmc_model_load_hf). A failed load leaves m as it was.
 * Refused while a trainer or session uses m. */
llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path);
/* A Hugging Face GPT-2 directory: config.json (see llmc_hf_config) and model.safetensors, or
 * model.safetensors.index.json and the shards its weight_map names. F32, F16 and BF16 tensors are
 * read as fp32; every header, offset, shape and value is checked before m changes.
 * llmc_model_load takes such a directory too. */
llmc_status llmc_model_load_hf(llmc_model *m, const llmc_model_options *o, const char *dir);
/* cfg from the text of a Hugging Face config.json, refusing what llmc does not compute exactly:
 * GPT-2 (architectures GPT2LMHeadModel / GPT2Model, model_type gpt2) with gelu_new, scaled
 * attention, no cross-attention, tied embeddings, layernorm eps 1e-5 and an MLP of 4 * n_embd.
 * A pure function: on failure err names the field and its value. */
llmc_status llmc_hf_config(const char *json_text, llmc_config *cfg, char *err, size_t errlen);
/* Writes a model file, atomically (temp file + rename). version: 3 (fp32), 5 (bf16), 8 (int8, a
 * quantized model), 0 (native: 8 when quantized). A quantized model written as 3 or 5 is dequantized. */
llmc_status llmc_model_save(llmc_model *m, const char *path, int version);

const llmc_config *llmc_model_config(const llmc_model *m);
const char *llmc_model_backend(const llmc_model *m);
size_t llmc_model_num_params(const llmc_model *m);
/* The tensor table; NULL before weights exist. */
const llmc_weights *llmc_model_weights(const llmc_model *m);
/* Device memory in use by the model's weights (bytes). */
size_t llmc_model_memory(const llmc_model *m);

/* fp32 copies of the weights as the model computes with them, in layout order. */
llmc_status llmc_model_get_params(llmc_model *m, float *dst);
llmc_status llmc_model_set_params(llmc_model *m, const float *src);
/* Zero-copy pointer: non-NULL only when the weights are host fp32 (CPU backend). */
float *llmc_model_params_host(llmc_model *m);

/* ---- int8 weight-only quantization (quant.c) ----
 * Symmetric int8 with fp32 scales: a group of g consecutive weights of a row (along the input)
 * shares scale s = max|w| / 127 and stores q = round(w / s) in [-127, 127]; the weight it stands
 * for is q * s. The four matmul weights of every layer are quantized, and wte (the embedding and
 * the LM head) when embeddings is set. Activations stay in the backend's dtype. A quantized model
 * computes forwards (generation, evaluation) but does not train. */
typedef struct llmc_quant_options {
    int group_size; /* 0: one scale per output channel (a whole row); else a multiple of 16 */
    int embeddings; /* 1: wte too (default); 0: wte keeps the backend's dtype */
} llmc_quant_options;
void llmc_quant_options_default(llmc_quant_options *q);
/* rows x cols fp32 (row-major) -> q (rows x cols) and scales (rows x ceil(cols / group), row-major);
 * group 0 means cols. A group of zeros gets scale 0. Pure functions. */
void llmc_quantize_int8(const float *w, size_t rows, int cols, int group, int8_t *q, float *scales);
void llmc_dequantize_int8(const int8_t *q, const float *scales, size_t rows, int cols, int group, float *w);
/* Quantizes the model's weights in place (refused while a trainer or session uses it, or when
 * it is quantized already). The scales come from the fp32 values the weights were loaded with
 * when the model still has them, else from the weights as they are. */
llmc_status llmc_model_quantize(llmc_model *m, const llmc_quant_options *q);
/* 1 when the weights are quantized; *q (may be NULL) gets the options. */
int llmc_model_quantized(const llmc_model *m, llmc_quant_options *q);

/* ---- training state over a model ---- */
typedef struct llmc_train llmc_train;

typedef struct llmc_train_options {
    int master_weights;  /* keep fp32 master weights for AdamW (bf16 backends); default 1 */
    int recompute;       /* 0 off, 1 recompute GELU, 2 also layernorm, in the backward */
    /* AdamW moments and master weights cover parameters [shard_offset, shard_offset + shard_count);
     * count 0 means all of them (one process). The hook for ZeRO-1. */
    size_t shard_offset, shard_count;
    /* 1: matmul weights (llmc_prune_tensor) that are exactly 0 stay exactly 0 through AdamW steps, with
     * their moments (and master weights): recovery fine-tuning of a pruned model. The mask is made from
     * the zeros of the weights at the first step, and again whenever the weights were replaced (a
     * checkpoint load, set_params), so a resumed run keeps it. Default 0. */
    int keep_zeros;
    /* With a communicator of several ranks (llmc_train_open_comm): 0 every rank keeps the whole
     * optimizer state; 1 (ZeRO-1) AdamW moments and master weights are split across the ranks. */
    int zero_stage;
    /* 1 (CPU backend): each micro-step's gradients are formed apart and added to the sum, in the order
     * ranks' gradients are summed, so that one rank accumulating N micro-steps reproduces N ranks bit
     * for bit. Costs one more gradient buffer. Default 0. */
    int exact_accum;
    /* 1 (default): in a run of several ranks, the last micro-step's backward sends each layer's gradients
     * to the ranks that sum them as soon as that layer is done, overlapping the backward of the layers
     * before it (GPU: on a stream of its own); 0: one reduction after the backward. */
    int overlap;
    /* 1: the layers' matmuls (not the LM head) run on fp8 tensor cores, E4M3 activations and
     * weights, E5M2 gradients, per-tensor scales from each tensor's amax history (CUDA, compute
     * capability 8.9+). Layernorms, attention, the classifier and AdamW stay as they are. The
     * histories are not part of a checkpoint: a resumed fp8 run is close to, not bit for bit, an
     * unbroken one. 2: the LM head's products too. Default 0. */
    int fp8;
} llmc_train_options;
void llmc_train_options_default(llmc_train_options *o);

llmc_train *llmc_train_new(void);
void llmc_train_free(llmc_train *t);
const char *llmc_train_error(const llmc_train *t);
/* Attaches to a model (o NULL: the options of the last attach, or the defaults). The model may
 * still be without weights (a checkpoint load fills it). Allocates nothing yet: activations,
 * gradients and AdamW state come with first use. */
llmc_status llmc_train_attach(llmc_train *t, llmc_model *m, const llmc_train_options *o);
llmc_model *llmc_train_model(llmc_train *t);
/* Device memory in use by the training state (bytes). */
size_t llmc_train_memory(const llmc_train *t);
/* The part of it that is AdamW's moments and the master weights: this rank's shard of them. */
size_t llmc_train_optimizer_memory(const llmc_train *t);

/* ---- data parallelism: the ranks of a run and how they meet ----
 * Every rank is one process with its own model on its own device. The CPU backend talks over MPI,
 * the CUDA backend over NCCL; a world of one uses neither. */
typedef struct llmc_comm_options {
    int world, rank, local_rank; /* world 0: from the environment (llmc_comm_options_from_env) */
    const char *init;            /* how the ranks meet: "mpi", "tcp", "file"; NULL: mpi under mpirun, else tcp */
    const char *addr;            /* tcp: rank 0's address (NULL: MASTER_ADDR, else 127.0.0.1) */
    int port;                    /* tcp: rank 0's port (0: MASTER_PORT + 1, since torchrun's own store
                                  * holds MASTER_PORT; else 29501) */
    const char *file;            /* file: a path every rank can see (a shared filesystem) */
    double timeout_s;            /* how long a rank waits for the others before it gives up; default 300 */
    int engine_at_one;           /* 1: a world of one goes through the engine too (checks the NCCL path) */
} llmc_comm_options;
void llmc_comm_options_default(llmc_comm_options *o);
/* Where the options leave world 0: world, rank and local rank from the variables that mpirun
 * (OMPI_COMM_WORLD_*, PMI_*), torchrun (WORLD_SIZE, RANK, LOCAL_RANK) or slurm (SLURM_NTASKS,
 * SLURM_PROCID, SLURM_LOCALID) set, else a world of one. Fails on values that contradict. */
llmc_status llmc_comm_options_from_env(llmc_comm_options *o, char *err, size_t errlen);
/* Joins the run: every rank calls it once, after attaching to a model open on its device (the
 * GPU of its local rank). The trainer owns the communicator; llmc_train_run then splits the data,
 * reduces gradients, losses and norms, and (zero_stage 1) shards the optimizer across ranks. */
llmc_status llmc_train_open_comm(llmc_train *t, const llmc_comm_options *o);
int llmc_train_rank(const llmc_train *t);
int llmc_train_world(const llmc_train *t);
/* Ends MPI for the process if llmc started it: once, before exit, after every trainer is freed. */
void llmc_comm_finalize(void);
/* Optimizer bytes per rank (AdamW m and v, master weights when kept) for P parameters on world
 * ranks: what llmc_train_ensure_optimizer allocates. */
size_t llmc_optimizer_bytes(size_t params, int world, int zero_stage, int master_weights);

/* A target that takes no part in the loss (a masked prompt token, padding): no loss, no gradient. */
#define LLMC_IGNORE_TARGET (-1)

/* inputs and targets are host arrays of B*T token ids (int32), targets may be NULL.
 * Token ids are checked: 0 <= id < V (targets may also be LLMC_IGNORE_TARGET), and
 * 1 <= B, 1 <= T <= max_seq_len. */
llmc_status llmc_train_forward(llmc_train *t, const int *inputs, const int *targets, int B, int T);
/* Mean loss over the counted targets of the last forward with targets (0 if every target was
 * ignored, NaN if there were no targets). */
float llmc_train_loss(const llmc_train *t);
/* Copies the last forward's logits, B*T*V floats (padding columns dropped). */
llmc_status llmc_train_get_logits(llmc_train *t, float *dst);
/* Copies the logits of one position, V floats. */
llmc_status llmc_train_get_logits_at(llmc_train *t, int b, int pos, float *dst);
/* Copies the last forward's per-position losses, B*T floats (0 at ignored targets). */
llmc_status llmc_train_get_losses(llmc_train *t, float *dst);

llmc_status llmc_train_zero_grad(llmc_train *t);
/* Accumulates d(loss_scale * mean loss)/dparams into the gradients (loss_scale finite, nonzero).
 * Needs a forward with targets. The mean is over this batch's counted targets; with gradient
 * accumulation each micro-batch is its own mean, as in llm.c and nanoGPT. */
llmc_status llmc_train_backward(llmc_train *t, float loss_scale);
/* forward + backward fused for training: the classifier writes dlogits in the same pass.
 * The logits of this step are not kept. *loss receives the mean loss. */
llmc_status llmc_train_forward_backward(llmc_train *t, const int *inputs, const int *targets, int B, int T,
                                        float loss_scale, float *loss);

typedef struct llmc_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip; /* clip the global grad norm to this; <= 0 means no clipping */
} llmc_adamw;
void llmc_adamw_default(llmc_adamw *a);
/* One AdamW step on the accumulated gradients. The step count starts at 1 and is kept in the
 * trainer. Fails with LLMC_ERR_NUMERIC (and leaves weights unchanged) if the grad norm is not finite. */
llmc_status llmc_train_step(llmc_train *t, const llmc_adamw *a, float *grad_norm);
int llmc_train_step_count(const llmc_train *t);
/* The global norm of the accumulated gradients (what llmc_train_step clips by), without a step. */
llmc_status llmc_train_grad_norm(llmc_train *t, float *grad_norm);

/* The weights in fp32, the master weights where they are kept; set updates both. */
llmc_status llmc_train_get_params(llmc_train *t, float *dst);
llmc_status llmc_train_set_params(llmc_train *t, const float *src);
llmc_status llmc_train_get_grads(llmc_train *t, float *dst);
/* Zero-copy pointer to host fp32 gradients (CPU backend), else NULL. */
float *llmc_train_grads_host(llmc_train *t);
/* llmc_model_save from the master weights where they are kept. */
llmc_status llmc_train_save_model(llmc_train *t, const char *path, int version);

/* ---- sampling and generation sessions ---- */
typedef struct llmc_sampling {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} llmc_sampling;
void llmc_sampling_default(llmc_sampling *s);
/* The one rule for sampling settings (generation and llmc_sample_token): temperature >= 0 and
 * finite, top_k >= 0, top_p in (0, 1]. On failure writes a message into err. */
llmc_status llmc_sampling_validate(const llmc_sampling *s, char *err, size_t errlen);
/* Picks a token from V logits into *token; advances *rng_state (not for temperature 0).
 * LLMC_ERR_INVALID_ARG for V <= 0 or settings llmc_sampling_validate refuses, LLMC_ERR_NUMERIC
 * when a logit is NaN or +Inf or all are -Inf. Pure host code. */
llmc_status llmc_sample_token(const float *logits, int V, const llmc_sampling *s, uint64_t *rng_state, int *token);
/* The same pick for a given uniform draw u in [0, 1) (the one llmc_sample_token would take from
 * *rng_state; ignored for temperature 0). The device sampler computes this same function. */
llmc_status llmc_sample_token_at(const float *logits, int V, const llmc_sampling *s, float u, int *token);

typedef struct llmc_gen llmc_gen;
typedef struct llmc_gen_options {
    int max_new;         /* new tokens per sequence, >= 1 */
    llmc_sampling sampling;
    int eot;             /* the stop token (-1: none) */
    int graphs;          /* replay decode steps as device graphs where the backend can;
                          * -1: default (on unless LLMC_NO_GRAPHS is set) */
    int host_sampling;   /* 1: copy the logits to the host and sample there even where the backend
                          * samples on the device (the same tokens; the reference and fallback);
                          * -1: default (the device unless LLMC_HOST_SAMPLING is set) */
    int persistent;      /* decode steps as one kernel where the backend has one and takes the
                          * batch (CUDA: up to 8 rows), else the per-op path (the reference);
                          * -1: default (off unless LLMC_DECODE_PERSISTENT is set: not faster yet) */
    int run_ahead;       /* greedy or device sampling: queue each decode step on the device's picks
                          * of the step before, so the device does not wait for the caller between
                          * tokens (the same tokens; a step that an EOT makes moot is discarded);
                          * -1: default (off unless LLMC_RUN_AHEAD is set: not yet measured on a GPU) */
} llmc_gen_options;
void llmc_gen_options_default(llmc_gen_options *o);

llmc_gen *llmc_gen_new(void);
void llmc_gen_free(llmc_gen *g);
const char *llmc_gen_error(const llmc_gen *g);
/* Starts a session on m: prompts are batch sequences, concatenated, lengths in prompt_lens.
 * Any earlier session of g ends first. Several sessions may be alive on one model. */
llmc_status llmc_gen_begin(llmc_gen *g, llmc_model *m, const int *prompts, const int *prompt_lens, int batch,
                           const llmc_gen_options *o);
/* Sequences in the session (0 when none is running). */
int llmc_gen_batch(const llmc_gen *g);
/* Writes one new token per sequence into out[0..batch-1] (out_len must be >= batch); a sequence
 * that has stopped (EOT, max_new or the context limit) gets -1. *alive tells how many go on. */
llmc_status llmc_gen_next(llmc_gen *g, int *out, int out_len, int *alive);
/* Copies the V logits that the next llmc_gen_next samples sequence b from. Fails once b has
 * stopped. For tests and tools. */
llmc_status llmc_gen_logits(llmc_gen *g, int b, float *dst);
/* Releases the session's cache; g may begin again. */
void llmc_gen_end(llmc_gen *g);
/* Device memory held by the session (bytes). */
size_t llmc_gen_memory(const llmc_gen *g);
/* Decode steps of the session that ran as the backend's one kernel (options.persistent). */
long long llmc_gen_persistent_steps(const llmc_gen *g);
/* Whether the session runs ahead (options.run_ahead), and how many of its speculative steps were
 * kept as the next step or discarded (an EOT, llmc_gen_logits, the end). */
int llmc_gen_run_ahead(const llmc_gen *g, long long *kept, long long *discarded);

/* ---- data loader over llm.c token shards ---- */
typedef struct llmc_dataloader llmc_dataloader;
typedef struct llmc_data_position {
    uint64_t epoch;  /* completed passes over all shards */
    uint64_t shard;  /* index into the (possibly shuffled) shard order */
    uint64_t sample; /* index into the (possibly shuffled) sample order of that shard */
} llmc_data_position;

llmc_dataloader *llmc_dataloader_new(void);
void llmc_dataloader_free(llmc_dataloader *d);
const char *llmc_dataloader_error(const llmc_dataloader *d);
/* Opens every file matching pattern (a glob). Each shard must hold at least B*T+1 tokens.
 * With shuffle, shard order and sample order are permuted per epoch from seed.
 * A shard X.bin may have a loss mask X.mask beside it (written by llmc.prepare for
 * prompt/response data): header magic LLMC_MASK_MAGIC, version 1, token count, row length T
 * it was packed for; then one byte per token, 1 if that token counts as a target. Then every
 * shard must have one, and T must be the row length. */
llmc_status llmc_dataloader_open(llmc_dataloader *d, const char *pattern, int B, int T, int shuffle, uint64_t seed);
/* Fills B*T inputs and the B*T targets shifted by one; with masks, a target that does not
 * count is LLMC_IGNORE_TARGET. */
llmc_status llmc_dataloader_next(llmc_dataloader *d, int *inputs, int *targets);
/* Moves past n batches without reading them: the batches other ranks of a run take. */
llmc_status llmc_dataloader_skip(llmc_dataloader *d, uint64_t n);
void llmc_dataloader_reset(llmc_dataloader *d);
llmc_data_position llmc_dataloader_tell(const llmc_dataloader *d);
llmc_status llmc_dataloader_seek(llmc_dataloader *d, llmc_data_position p);
size_t llmc_dataloader_num_tokens(const llmc_dataloader *d);
int llmc_dataloader_num_shards(const llmc_dataloader *d);
/* Batches per epoch (sum over shards of their sample counts). */
size_t llmc_dataloader_num_batches(const llmc_dataloader *d);
/* 1 when the shards have loss masks. */
int llmc_dataloader_has_masks(const llmc_dataloader *d);

/* ---- tokenizer .bin (decode only: C needs it to print samples) ---- */
typedef struct llmc_tokenizer llmc_tokenizer;
llmc_tokenizer *llmc_tokenizer_new(void);
void llmc_tokenizer_free(llmc_tokenizer *t);
const char *llmc_tokenizer_error(const llmc_tokenizer *t);
llmc_status llmc_tokenizer_load(llmc_tokenizer *t, const char *path);
/* Bytes of a token (not NUL-terminated: use len), NULL for an id out of range. */
const char *llmc_tokenizer_decode(const llmc_tokenizer *t, int token, int *len);
/* The end-of-text id, or -1 when the vocabulary has none (version-1 files of fewer than 50257). */
int llmc_tokenizer_eot(const llmc_tokenizer *t);
int llmc_tokenizer_vocab_size(const llmc_tokenizer *t);

/* ---- trainer checkpoints: a model file plus a state file, both written atomically ---- */
/* The settings a run was trained with, kept in its state files so that a resume can tell which of
 * its own settings differ (0 everywhere: unknown, as in files of older builds). */
typedef struct llmc_run_settings {
    int batch_size, seq_len, total_batch, max_steps, warmup, schedule; /* schedule: llmc_schedule_kind + 1 */
    float lr, final_lr_frac;
} llmc_run_settings;
typedef struct llmc_checkpoint_info {
    int step;                  /* optimizer steps done */
    uint64_t rng;              /* trainer RNG (sampling) */
    llmc_data_position data;   /* where the train loader resumes */
    llmc_run_settings run;
} llmc_checkpoint_info;
/* Writes <dir>/model_%08d.bin and <dir>/state_%08d.bin (AdamW m, v, master weights), then the empty
 * marker <dir>/DONE_%08d that llm.c's scripts wait for. */
llmc_status llmc_checkpoint_save(llmc_train *t, const char *dir, const llmc_checkpoint_info *info);
/* Loads both files of a step (step < 0: the latest complete one in dir): the model file into the
 * model t is attached to (which needs only to be opened), the state into t. Both files are checked
 * whole (sizes, ranges, finite values) before anything changes. */
llmc_status llmc_checkpoint_load(llmc_train *t, const char *dir, int step, llmc_checkpoint_info *info);
/* Latest step with both files present in dir into *step, -1 when there is none. */
llmc_status llmc_checkpoint_latest(const char *dir, int *step);

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
/* lr at step (0-based). */
float llmc_schedule_lr(const llmc_schedule *s, int step);
/* LLMC_ERR_INVALID_ARG for an unknown name. */
llmc_status llmc_schedule_parse(const char *name, llmc_schedule_kind *kind);

/* ---- the training loop (behind ./train_gpt2, ./train_gpt2cu and GPT2.train) ---- */
typedef struct llmc_loop_options {
    const char *train_data;  /* glob of train shards */
    const char *val_data;    /* glob of val shards (NULL: no validation) */
    const char *out_dir;     /* main.log and checkpoints (NULL: none) */
    const char *schedule;    /* cosine, linear, constant, wsd */
    int batch_size, seq_len; /* B, T of a micro-batch */
    int total_batch;         /* tokens per optimizer step; <= 0: B*T; a multiple gives accumulation */
    int max_steps;           /* optimizer steps; -1: one epoch */
    float lr, final_lr_frac, weight_decay, grad_clip;
    int warmup;
    int val_every, val_batches;  /* val_batches 0: the whole val set */
    int sample_every, gen_len;   /* periodic samples, from sample_eot */
    int sample_eot;
    int ckpt_every;              /* 0: off; a checkpoint is also written at the end when on */
    int resume;                  /* continue from the latest checkpoint in out_dir */
    int shuffle;
    uint64_t seed;
    float peak_tflops;           /* for the MFU figure (0: off) */
    int overfit_batch;           /* train on the first batch over and over (debugging) */
    int ckpt_keep;               /* keep only this many newest checkpoints (0: all) */
    int ckpt_major;              /* checkpoints at multiples of this step are never removed (0: none) */
    float skip_loss_z, skip_norm_z; /* skip an update whose loss / grad norm z-score exceeds this (0: off) */
    int log_device_every;        /* device memory in the log every N steps (0: off) */
    const llmc_config *expect_model; /* the model the caller asked for: a resume says when it differs */
    int stop_after;              /* stop once this many steps are done (0: run to max_steps); the schedule
                                  * still spans max_steps, so a later resume continues it */
    const char *eval_file;       /* a multiple-choice eval (HellaSwag, llm.c's eval file format) scored at
                                  * every val step (val_every), even without val data; NULL: none */
    int eval_limit;              /* score only its first N items (0: all) */
    /* knowledge distillation (llmc_train_set_teacher) from the model file teacher, loaded for the run on
     * the student's device; NULL: none (or the teacher already set on the trainer). distill_alpha and
     * distill_temperature: LLMC_DISTILL_UNSET takes 0.5 and 2 with a teacher, and is what they must be without. */
    const char *teacher;
    float distill_alpha, distill_temperature;
} llmc_loop_options;
/* The defaults, shared by the CLIs and Python. backend: "cpu" or "cuda" (T and the MFU peak differ). */
void llmc_loop_options_default(llmc_loop_options *o, const char *backend);

typedef enum llmc_event_kind {
    LLMC_EVENT_START,      /* text: what is trained; step: the first step */
    LLMC_EVENT_STEP,       /* a finished optimizer step */
    LLMC_EVENT_VAL,        /* val_loss at step */
    LLMC_EVENT_SAMPLE,     /* tokens[0..ntokens-1] sampled at step */
    LLMC_EVENT_CHECKPOINT, /* text: the model file written at step */
    LLMC_EVENT_NOTE,       /* text: something worth telling (a resume, a fallback) */
    LLMC_EVENT_EVAL,       /* the eval file at step: loss = acc, val_loss = acc_norm, ntokens = items */
} llmc_event_kind;
typedef struct llmc_event {
    llmc_event_kind kind;
    int step, max_steps;     /* step: optimizer steps done */
    float loss, lr, grad_norm;
    float val_loss;
    double ms, tok_s, mfu;   /* mfu in percent, 0 when off */
    double elapsed_s, eta_s; /* since the run started; estimated time left (0 before it is known) */
    int skipped;             /* the update was skipped as an outlier (its z-score in val_loss) */
    const int *tokens;
    int ntokens;
    const char *text;
} llmc_event;
/* Called for every event. A nonzero return stops the loop once the current step's validation, sample
 * and checkpoint are done; llmc_train_run then returns LLMC_ERR_STOPPED. */
typedef int (*llmc_event_fn)(const llmc_event *e, void *user);

/* Trains t as the options say, calling fn (may be NULL) for each event. t is attached to a model
 * with weights, or, when resuming from a checkpoint that exists, to an opened one. Every failure,
 * data errors included, is reported on t. */
llmc_status llmc_train_run(llmc_train *t, const llmc_loop_options *o, llmc_event_fn fn, void *user);

/* ---- compression: magnitude pruning, mask-keeping fine-tuning, knowledge distillation ---- */
/* The four matmul weights pruning works on and keep_zeros keeps at zero: qkvw, attprojw, fcw, fcprojw
 * (not wte, which is also the LM head, wpe, biases or norms). 1 for those, else 0. */
int llmc_prune_tensor(int tensor);
#define LLMC_PRUNE_TENSORS 4
#define LLMC_PRUNE_UNSET (-1.0f)
typedef struct llmc_prune_options {
    /* fraction in [0, 1] of a group's weights to zero: the round(sparsity * count) smallest |w|, ties
     * broken by position (the earlier goes first). LLMC_PRUNE_UNSET: not given (2:4 implies 0.5;
     * unstructured needs one) */
    float sparsity;
    const char *pattern; /* "unstructured" (NULL) or "2:4": in every 4 consecutive weights of a row (the
                          * input dimension), the 2 smallest |w| are zeroed; sparsity must then be unset or 0.5 */
    const char *scope;   /* unstructured: "layer" (NULL): a group per tensor per layer; "global": one group
                          * of all of them, one threshold. 2:4 takes "layer" only */
} llmc_prune_options;
void llmc_prune_options_default(llmc_prune_options *o);
/* One tensor of one layer after pruning: zeros counts every exact zero (ones it had before included). */
typedef struct llmc_prune_stat {
    int tensor, layer;
    size_t numel, zeros;
} llmc_prune_stat;
/* Prunes values (host fp32, llmc_param_count(cfg) of them, in the tensor table's order) in place.
 * stats (may be NULL): room for max_stats >= LLMC_PRUNE_TENSORS * L entries, tensor by tensor, layers
 * ascending; *n_stats (may be NULL) gets how many were written. A pure function: on failure err names
 * the problem and values are unchanged. */
llmc_status llmc_prune_values(const llmc_config *cfg, float *values, const llmc_prune_options *o,
                              llmc_prune_stat *stats, size_t max_stats, size_t *n_stats, char *err, size_t errlen);
/* The same on a model's weights (their fp32 values, written back as set_params does). A trainer's
 * master weights are not the model's: prune through them (llmc_train_get/set_params) to keep them. */
llmc_status llmc_model_prune(llmc_model *m, const llmc_prune_options *o, llmc_prune_stat *stats, size_t max_stats,
                             size_t *n_stats);
/* Turns keep_zeros (llmc_train_options) on or off for the steps to come; and reads it. */
llmc_status llmc_train_set_keep_zeros(llmc_train *t, int on);
int llmc_train_keep_zeros(const llmc_train *t);

#define LLMC_DISTILL_UNSET (-1.0f)
/* From now on the loss that training (forward_backward, or backward after forward) minimises is, per
 * counted target, alpha * CE(student, target) + (1 - alpha) * tau^2 * KL(softmax(teacher / tau) ||
 * softmax(student / tau)) over the real vocabulary V; a row whose target is LLMC_IGNORE_TARGET adds
 * nothing. teacher runs forward only, on the same inputs, and must be open on the same backend and
 * device with weights, the same V and Vp (its L, H, C may differ) and a context >= the training T; it
 * must outlive t or be unset first (teacher NULL: plain CE again; alpha and tau are then ignored).
 * alpha in [0, 1], tau > 0. llmc_train_forward (validation) stays plain CE. */
llmc_status llmc_train_set_teacher(llmc_train *t, llmc_model *teacher, float alpha, float temperature);
/* The teacher set on t (NULL: none). */
llmc_model *llmc_train_teacher(const llmc_train *t);

#ifdef __cplusplus
}
#endif
#endif /* LLMC_H */

# _capi.pxi — Cython declarations of the public C API (src/llmc.h).
# The data loader, tokenizer, sampler and schedules are declared in _data.pxi, the backend
# op table in _ops.pxi.
from libc.stdint cimport uint64_t, uint32_t, int32_t, uint16_t, int8_t

cdef extern from "llmc.h":
    int llmc_cpu_supported(char *err, size_t errlen)
    ctypedef enum llmc_status:
        LLMC_OK
        LLMC_ERR_STOPPED
        LLMC_ERR_UNSUPPORTED
    ctypedef enum llmc_dtype:
        LLMC_F32
        LLMC_BF16
        LLMC_I8
    const char *llmc_status_name(llmc_status s)
    size_t llmc_dtype_size(llmc_dtype t)
    const char *llmc_dtype_name(llmc_dtype t)
    void llmc_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) nogil
    void llmc_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n) nogil

    ctypedef struct llmc_config:
        int max_seq_len, vocab_size, padded_vocab_size, num_layers, num_heads, channels
    llmc_status llmc_config_from_descriptor(const char *desc, llmc_config *cfg, char *err, size_t errlen)
    llmc_status llmc_config_validate(llmc_config *cfg, char *err, size_t errlen)

    enum: LLMC_NUM_PARAM_TENSORS
    enum: LLMC_ERR_LEN
    ctypedef struct llmc_tensor:
        const char *name
        llmc_dtype dtype
        void *data
        int ndim
        int shape[4]
        size_t numel, offset, layer_stride
        const void *scales
        int group_size
        int weight_decay
    ctypedef struct llmc_weights:
        llmc_config cfg
        llmc_dtype dtype
        size_t count
        void *data
        llmc_tensor t[16]
    void llmc_weights_layout(llmc_weights *w, const llmc_config *cfg, llmc_dtype dtype)
    size_t llmc_param_count(const llmc_config *cfg)

    # ---- Hugging Face names and configs (the C table is the one mapping)
    const char *LLMC_HF_PREFIX
    const char *llmc_weights_hf_name(int tensor, int layer, char *buf, size_t len)
    int llmc_weights_hf_transposed(int tensor)
    int llmc_weights_hf_lookup(const char *name, int *layer)
    int llmc_weights_hf_ignored(const char *name)
    llmc_status llmc_hf_config(const char *json_text, llmc_config *cfg, char *err, size_t errlen)

    # ---- model
    ctypedef struct llmc_model:
        pass
    ctypedef struct llmc_model_options:
        const char *backend
        int device, pdl, skinny_rows, int8_mma, fuse_layernorm
    void llmc_model_options_default(llmc_model_options *o)
    llmc_model *llmc_model_new()
    void llmc_model_free(llmc_model *m)
    const char *llmc_model_error(const llmc_model *m)
    llmc_status llmc_model_open(llmc_model *m, const llmc_model_options *o) nogil
    llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                       uint64_t seed) nogil
    llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path) nogil
    llmc_status llmc_model_load_hf(llmc_model *m, const llmc_model_options *o, const char *dir) nogil
    llmc_status llmc_model_init_values(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                       const float *values) nogil
    llmc_status llmc_model_save(llmc_model *m, const char *path, int version) nogil
    const llmc_config *llmc_model_config(const llmc_model *m)
    const char *llmc_model_backend(const llmc_model *m)
    size_t llmc_model_num_params(const llmc_model *m)
    const llmc_weights *llmc_model_weights(const llmc_model *m)
    size_t llmc_model_memory(const llmc_model *m)
    llmc_status llmc_model_get_params(llmc_model *m, float *dst) nogil
    llmc_status llmc_model_set_params(llmc_model *m, const float *src) nogil
    float *llmc_model_params_host(llmc_model *m)
    ctypedef struct llmc_quant_options:
        int group_size, embeddings
    void llmc_quant_options_default(llmc_quant_options *q)
    void llmc_quantize_int8(const float *w, size_t rows, int cols, int group, int8_t *q, float *scales) nogil
    void llmc_dequantize_int8(const int8_t *q, const float *scales, size_t rows, int cols, int group,
                              float *w) nogil
    llmc_status llmc_model_quantize(llmc_model *m, const llmc_quant_options *q) nogil
    int llmc_model_quantized(const llmc_model *m, llmc_quant_options *q)

    # ---- trainer
    ctypedef struct llmc_train:
        pass
    ctypedef struct llmc_train_options:
        int master_weights, recompute
        size_t shard_offset, shard_count
        int keep_zeros, zero_stage, exact_accum, overlap, fp8
    void llmc_train_options_default(llmc_train_options *o)
    ctypedef struct llmc_comm_options:
        int world, rank, local_rank
        const char *init
        const char *addr
        int port
        const char *file
        double timeout_s
        int engine_at_one
    void llmc_comm_options_default(llmc_comm_options *o)
    llmc_status llmc_comm_options_from_env(llmc_comm_options *o, char *err, size_t errlen)
    llmc_status llmc_train_open_comm(llmc_train *t, const llmc_comm_options *o) nogil
    int llmc_train_rank(const llmc_train *t)
    int llmc_train_world(const llmc_train *t)
    void llmc_comm_finalize()
    size_t llmc_optimizer_bytes(size_t params, int world, int zero_stage, int master_weights)
    llmc_train *llmc_train_new()
    void llmc_train_free(llmc_train *t)
    const char *llmc_train_error(const llmc_train *t)
    llmc_status llmc_train_attach(llmc_train *t, llmc_model *m, const llmc_train_options *o)
    size_t llmc_train_memory(const llmc_train *t)
    size_t llmc_train_optimizer_memory(const llmc_train *t)
    llmc_status llmc_train_forward(llmc_train *t, const int *inputs, const int *targets, int B, int T) nogil
    float llmc_train_loss(const llmc_train *t)
    llmc_status llmc_train_get_logits(llmc_train *t, float *dst) nogil
    llmc_status llmc_train_get_logits_at(llmc_train *t, int b, int pos, float *dst) nogil
    llmc_status llmc_train_get_losses(llmc_train *t, float *dst) nogil
    llmc_status llmc_train_zero_grad(llmc_train *t) nogil
    llmc_status llmc_train_backward(llmc_train *t, float loss_scale) nogil
    llmc_status llmc_train_forward_backward(llmc_train *t, const int *inputs, const int *targets, int B, int T,
                                            float loss_scale, float *loss) nogil
    ctypedef struct llmc_adamw:
        float lr, beta1, beta2, eps, weight_decay, grad_clip
    void llmc_adamw_default(llmc_adamw *a)
    llmc_status llmc_train_step(llmc_train *t, const llmc_adamw *a, float *grad_norm) nogil
    int llmc_train_step_count(const llmc_train *t)
    llmc_status llmc_train_get_params(llmc_train *t, float *dst) nogil
    llmc_status llmc_train_set_params(llmc_train *t, const float *src) nogil
    llmc_status llmc_train_get_grads(llmc_train *t, float *dst) nogil
    float *llmc_train_grads_host(llmc_train *t)
    llmc_status llmc_train_save_model(llmc_train *t, const char *path, int version) nogil

    # ---- generation sessions
    ctypedef struct llmc_sampling:
        float temperature
        int top_k
        float top_p
        uint64_t seed
    void llmc_sampling_default(llmc_sampling *s)
    ctypedef struct llmc_gen:
        pass
    ctypedef struct llmc_gen_options:
        int max_new
        llmc_sampling sampling
        int eot, graphs, host_sampling, persistent, run_ahead
    void llmc_gen_options_default(llmc_gen_options *o)
    llmc_gen *llmc_gen_new()
    void llmc_gen_free(llmc_gen *g)
    const char *llmc_gen_error(const llmc_gen *g)
    llmc_status llmc_gen_begin(llmc_gen *g, llmc_model *m, const int *prompts, const int *prompt_lens, int batch,
                               const llmc_gen_options *o) nogil
    int llmc_gen_batch(const llmc_gen *g)
    llmc_status llmc_gen_next(llmc_gen *g, int *out, int out_len, int *alive) nogil
    llmc_status llmc_gen_logits(llmc_gen *g, int b, float *dst) nogil
    void llmc_gen_end(llmc_gen *g)
    size_t llmc_gen_memory(const llmc_gen *g)
    long long llmc_gen_persistent_steps(const llmc_gen *g)
    int llmc_gen_run_ahead(const llmc_gen *g, long long *kept, long long *discarded)

    # ---- checkpoints
    ctypedef struct llmc_data_position:
        uint64_t epoch, shard, sample
    ctypedef struct llmc_run_settings:
        int batch_size, seq_len, total_batch, max_steps, warmup, schedule
        float lr, final_lr_frac
    ctypedef struct llmc_checkpoint_info:
        int step
        uint64_t rng
        llmc_data_position data
        llmc_run_settings run
    llmc_status llmc_checkpoint_save(llmc_train *t, const char *dir, const llmc_checkpoint_info *info) nogil
    llmc_status llmc_checkpoint_load(llmc_train *t, const char *dir, int step, llmc_checkpoint_info *info) nogil
    llmc_status llmc_checkpoint_latest(const char *dir, int *step)

    # ---- the training loop
    ctypedef struct llmc_loop_options:
        const char *train_data
        const char *val_data
        const char *out_dir
        const char *schedule
        int batch_size, seq_len, total_batch, max_steps
        float lr, final_lr_frac, weight_decay, grad_clip
        int warmup, val_every, val_batches, sample_every, gen_len, sample_eot, ckpt_every, resume, shuffle
        uint64_t seed
        float peak_tflops
        int overfit_batch, ckpt_keep, ckpt_major
        float skip_loss_z, skip_norm_z
        int log_device_every
        const llmc_config *expect_model
        int stop_after
        const char *eval_file
        int eval_limit
        const char *teacher
        float distill_alpha, distill_temperature
    void llmc_loop_options_default(llmc_loop_options *o, const char *backend)
    ctypedef enum llmc_event_kind:
        LLMC_EVENT_START
        LLMC_EVENT_STEP
        LLMC_EVENT_VAL
        LLMC_EVENT_SAMPLE
        LLMC_EVENT_CHECKPOINT
        LLMC_EVENT_NOTE
        LLMC_EVENT_EVAL
    ctypedef struct llmc_event:
        llmc_event_kind kind
        int step, max_steps
        float loss, lr, grad_norm, val_loss
        double ms, tok_s, mfu, elapsed_s, eta_s
        int skipped
        const int *tokens
        int ntokens
        const char *text
    ctypedef int (*llmc_event_fn)(const llmc_event *e, void *user) noexcept with gil
    llmc_status llmc_train_run(llmc_train *t, const llmc_loop_options *o, llmc_event_fn fn, void *user) nogil

    # ---- compression: pruning, keep_zeros, distillation
    int llmc_prune_tensor(int tensor)
    enum: LLMC_PRUNE_TENSORS
    float LLMC_PRUNE_UNSET
    ctypedef struct llmc_prune_options:
        float sparsity
        const char *pattern
        const char *scope
    void llmc_prune_options_default(llmc_prune_options *o)
    ctypedef struct llmc_prune_stat:
        int tensor, layer
        size_t numel, zeros
    llmc_status llmc_prune_values(const llmc_config *cfg, float *values, const llmc_prune_options *o,
                                  llmc_prune_stat *stats, size_t max_stats, size_t *n_stats, char *err,
                                  size_t errlen) nogil
    llmc_status llmc_model_prune(llmc_model *m, const llmc_prune_options *o, llmc_prune_stat *stats,
                                 size_t max_stats, size_t *n_stats) nogil
    llmc_status llmc_train_set_keep_zeros(llmc_train *t, int on)
    int llmc_train_keep_zeros(const llmc_train *t)
    float LLMC_DISTILL_UNSET
    llmc_status llmc_train_set_teacher(llmc_train *t, llmc_model *teacher, float alpha, float temperature)
    llmc_model *llmc_train_teacher(const llmc_train *t)

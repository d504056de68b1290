# _capi.pxi — Cython declarations of the C API (src/llmc.h) and the backend op table (src/backend.h).
from libc.stdint cimport uint64_t, uint32_t, int32_t

cdef extern from "llmc.h":
    ctypedef enum llmc_status:
        LLMC_OK
    ctypedef enum llmc_dtype:
        LLMC_F32
        LLMC_BF16
    const char *llmc_status_name(llmc_status s)
    size_t llmc_dtype_size(llmc_dtype t)

    ctypedef struct llmc_config:
        int max_seq_len, vocab_size, padded_vocab_size, num_layers, num_heads, channels
    llmc_status llmc_config_from_descriptor(const char *desc, llmc_config *cfg, char *err, size_t errlen)
    llmc_status llmc_config_validate(llmc_config *cfg, char *err, size_t errlen)

    enum: LLMC_NUM_PARAM_TENSORS
    enum: LLMC_ERR_LEN
    ctypedef struct llmc_tensor_info:
        const char *name
        size_t offset, numel
        int ndim
        int shape[4]
        int weight_decay
    void llmc_param_layout(const llmc_config *cfg, llmc_tensor_info *out)
    size_t llmc_param_count(const llmc_config *cfg)

    ctypedef struct llmc_model:
        pass
    ctypedef struct llmc_model_options:
        const char *backend
        int device, master_weights, recompute
    void llmc_model_options_default(llmc_model_options *o)
    llmc_model *llmc_model_new()
    void llmc_model_free(llmc_model *m)
    const char *llmc_model_error(const llmc_model *m)
    llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, uint64_t seed) nogil
    llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path) nogil
    llmc_status llmc_model_save(llmc_model *m, const char *path, int version) nogil
    const llmc_config *llmc_model_config(const llmc_model *m)
    const char *llmc_model_backend(const llmc_model *m)
    size_t llmc_model_num_params(const llmc_model *m)
    llmc_status llmc_model_get_params(llmc_model *m, float *dst) nogil
    llmc_status llmc_model_set_params(llmc_model *m, const float *src) nogil
    llmc_status llmc_model_get_grads(llmc_model *m, float *dst) nogil
    float *llmc_model_params_host(llmc_model *m)
    float *llmc_model_grads_host(llmc_model *m)
    llmc_status llmc_model_forward(llmc_model *m, const int *inputs, const int *targets, int B, int T) nogil
    float llmc_model_loss(const llmc_model *m)
    llmc_status llmc_model_get_logits(llmc_model *m, float *dst) nogil
    llmc_status llmc_model_get_logits_at(llmc_model *m, int b, int t, float *dst) nogil
    llmc_status llmc_model_zero_grad(llmc_model *m) nogil
    llmc_status llmc_model_backward(llmc_model *m, float loss_scale) nogil
    llmc_status llmc_model_forward_backward(llmc_model *m, const int *inputs, const int *targets, int B, int T,
                                            float loss_scale, float *loss) nogil
    ctypedef struct llmc_adamw:
        float lr, beta1, beta2, eps, weight_decay, grad_clip
    void llmc_adamw_default(llmc_adamw *a)
    llmc_status llmc_model_step(llmc_model *m, const llmc_adamw *a, float *grad_norm) nogil
    int llmc_model_step_count(const llmc_model *m)

    ctypedef struct llmc_sampling:
        float temperature
        int top_k
        float top_p
        uint64_t seed
    void llmc_sampling_default(llmc_sampling *s)
    llmc_status llmc_gen_begin(llmc_model *m, const int *prompts, const int *prompt_lens, int batch, int max_new,
                               const llmc_sampling *s, int eot_token)
    llmc_status llmc_gen_next(llmc_model *m, int *out, int *alive) nogil
    void llmc_gen_end(llmc_model *m)

    ctypedef struct llmc_data_position:
        uint64_t epoch, shard, sample
    ctypedef struct llmc_train_state:
        int step
        uint64_t rng
        llmc_data_position data
    llmc_status llmc_checkpoint_save(llmc_model *m, const char *dir, const llmc_train_state *st) nogil
    llmc_status llmc_checkpoint_load(llmc_model *m, const llmc_model_options *o, const char *dir, int step,
                                     llmc_train_state *st) nogil
    int llmc_checkpoint_latest(const char *dir)

cdef extern from "backend.h":
    ctypedef struct llmc_backend_ops:
        const char *name
        llmc_dtype act_dtype
        llmc_status (*alloc)(llmc_device *dev, void **ptr, size_t bytes)
        void (*free)(llmc_device *dev, void *ptr)
        llmc_status (*copy_h2d)(llmc_device *dev, void *dst, const void *src, size_t bytes)
        llmc_status (*copy_d2h)(llmc_device *dev, void *dst, const void *src, size_t bytes)
        llmc_status (*upload_f32)(llmc_device *dev, void *dst, llmc_dtype dtype, const float *src, size_t n)
        llmc_status (*download_f32)(llmc_device *dev, float *dst, const void *src, llmc_dtype dtype, size_t n)
        llmc_status (*synchronize)(llmc_device *dev)
        llmc_status (*encoder_forward)(llmc_device *dev, void *out, const int *tokens, const void *wte, const void *wpe,
                                       int B, int T, int C)
        llmc_status (*encoder_backward)(llmc_device *dev, void *dwte, void *dwpe, const void *dout, const int *tokens,
                                        const int *tokens_host, int B, int T, int C)
        llmc_status (*layernorm_forward)(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                         const void *inp, const void *inp2, const void *w, const void *b, int N, int C)
        llmc_status (*layernorm_backward)(llmc_device *dev, void *dinp, void *dw, void *db, const void *dout,
                                          const void *inp, const void *w, const float *mean, const float *rstd,
                                          int N, int C)
        llmc_status (*matmul_forward)(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const void *w,
                                      const void *bias, int N, int C, int OC)
        llmc_status (*matmul_backward)(llmc_device *dev, void *dinp, void *dw, void *dbias, const void *dout,
                                       const void *inp, const void *w, const void *pre_gelu, int N, int C, int OC)
        llmc_status (*gelu_forward)(llmc_device *dev, void *out, const void *inp, size_t n)
        llmc_status (*attention_forward)(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T,
                                         int NH, int HS)
        llmc_status (*attention_backward)(llmc_device *dev, void *dqkv, const void *dout, const void *qkv,
                                          const void *out, const float *lse, int B, int T, int NH, int HS)
        llmc_status (*classifier_forward)(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                          int V, int Vp, float dloss)
        llmc_status (*adamw_update)(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                    float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                    float b2_correction, float eps, float weight_decay, float grad_scale,
                                    uint32_t seed)
        llmc_status (*sum_squares)(llmc_device *dev, double *out, const void *x, size_t n)
    ctypedef struct llmc_device:
        const llmc_backend_ops *ops
        char *err
    llmc_status llmc_device_open(llmc_device *dev, const char *name, int index)
    void llmc_device_close(llmc_device *dev)
    const char *llmc_backend_names()

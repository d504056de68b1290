/* cuda_ops.h — the CUDA backend's op implementations (bf16 storage, fp32 math).
 * Each function has the signature of its slot in llmc_backend_ops (backend.h);
 * cuda/backend.cu gathers them into llmc_cuda_backend_ops. */
#ifndef LLMC_CUDA_OPS_H
#define LLMC_CUDA_OPS_H
#include "backend.h"
#include <cuda_runtime.h>

/* The stream every kernel of this device runs on (all work is in order on it). */
cudaStream_t llmc_cuda_stream(llmc_device *dev);
/* Turns a CUDA error into an llmc_status with file, line and the CUDA message. */
llmc_status llmc_cuda_check(llmc_device *dev, cudaError_t e, const char *what, const char *file, int line);
#define LLMC_CUDA_TRY(dev, call)                                                        \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) return llmc_cuda_check((dev), e_, #call, __FILE__, __LINE__); \
    } while (0)
/* Every CUDA kernel takes bf16 weights; a or b may be NULL (an optional tensor). */
#define LLMC_CUDA_WEIGHTS(op, a, b) LLMC_REQUIRE_WEIGHTS(op, a, b, LLMC_BF16)
/* After a kernel launch: reports launch errors (bad config) without synchronizing. */
#define LLMC_CUDA_LAUNCHED(dev) LLMC_CUDA_TRY(dev, cudaGetLastError())
/* A device scratch buffer of at least bytes (16-byte aligned), shared by all ops of the device:
 * grow-only, its content is undefined on entry and is valid for work enqueued on the stream
 * until the next call (stream order keeps consecutive users apart). */
llmc_status llmc_cuda_scratch(llmc_device *dev, size_t bytes, void **ptr);

/* matmul_fp8.cu: the fp8 training matmuls (backend.h) */
llmc_status llmc_cuda_matmul_forward_fp8(llmc_device *dev, int site, void *out, void *pre_gelu, const void *inp,
                                         const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC);
llmc_status llmc_cuda_matmul_backward_fp8(llmc_device *dev, int site, void *dinp, const llmc_tensor *dw,
                                          const llmc_tensor *dbias, const void *dout, const void *inp,
                                          const llmc_tensor *w, const void *pre_gelu, int N, int C, int OC);
/* matmul_int8.cu: int8 weights (quant.c). is_int8: t is a quantized tensor these take. */
int llmc_cuda_is_int8(const llmc_tensor *t);
llmc_status llmc_cuda_matmul_forward_int8(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                          const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC);
/* out[i] = wte[tokens[i]] + wpe[pos ? pos[i] : i % T] for an int8 wte. */
llmc_status llmc_cuda_embed_int8(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                 const llmc_tensor *wte, const llmc_tensor *wpe, int N, int T, int C);

llmc_status llmc_cuda_encoder_forward(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte,
                                     const llmc_tensor *wpe, int B, int T, int C);
llmc_status llmc_cuda_encoder_backward(llmc_device *dev, const llmc_tensor *dwte, const llmc_tensor *dwpe,
                                      const void *dout, const int *tokens, const int *tokens_host, int B, int T, int C);
llmc_status llmc_cuda_layernorm_forward(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                       const void *inp, const void *inp2, const llmc_tensor *w, const llmc_tensor *b,
                                       int N, int C);
llmc_status llmc_cuda_layernorm_backward(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *db,
                                        const void *dout, const void *inp, const llmc_tensor *w, const float *mean,
                                        const float *rstd, int N, int C);
llmc_status llmc_cuda_matmul_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                    const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC);
llmc_status llmc_cuda_matmul_backward(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *dbias,
                                     const void *dout, const void *inp, const llmc_tensor *w, const void *pre_gelu,
                                     int N, int C, int OC);
llmc_status llmc_cuda_gelu_forward(llmc_device *dev, void *out, const void *inp, size_t n);
llmc_status llmc_cuda_attention_forward(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T,
                                       int NH, int HS);
llmc_status llmc_cuda_attention_backward(llmc_device *dev, void *dqkv, const void *dout, const void *qkv,
                                        const void *out, const float *lse, int B, int T, int NH, int HS);
llmc_status llmc_cuda_classifier_forward(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                        int V, int Vp, float dloss);
llmc_status llmc_cuda_adamw_update(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                  float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                  float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                  uint32_t seed, size_t index_base);
llmc_status llmc_cuda_sum_squares(llmc_device *dev, double *out, const void *x, size_t n);
llmc_status llmc_cuda_grad_norm_scale(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip);
llmc_status llmc_cuda_readback_begin(llmc_device *dev, const void *src, size_t bytes);
llmc_status llmc_cuda_readback_end(llmc_device *dev, void *dst, size_t bytes);
/* KV-cache inference (decode.cu) */
llmc_status llmc_cuda_encoder_forward_at(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                         const llmc_tensor *wte, const llmc_tensor *wpe, int N, int C);
llmc_status llmc_cuda_kv_append(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                                const int *pos, int B, int T, int NH, int HS, int maxlen);
llmc_status llmc_cuda_attention_decode(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                       const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                       int maxlen);
llmc_status llmc_cuda_argmax_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp);
llmc_status llmc_cuda_feed_tokens(llmc_device *dev, int *dst, const int *src, int n);
llmc_status llmc_cuda_sample_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                                  const llmc_sampling *s, const float *u);
/* decode_persistent.cu: a decode step's layers as one persistent kernel */
llmc_status llmc_cuda_decode_layers(llmc_device *dev, const llmc_decode_step *s);
llmc_status llmc_cuda_graph_begin(llmc_device *dev);
llmc_status llmc_cuda_graph_end(llmc_device *dev, void **graph);
llmc_status llmc_cuda_graph_launch(llmc_device *dev, void *graph);
void llmc_cuda_graph_free(llmc_device *dev, void *graph);
/* matmul_forward for few rows (gemv.cu): the same semantics, tensor-core skinny product.
 * Returns LLMC_ERR_UNSUPPORTED, leaving dev->err alone, for shapes it does not take (N above
 * dev->tuning.skinny_rows or 32, C not a multiple of 8, unaligned rows); the caller falls back. */
llmc_status llmc_cuda_gemv_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const void *w,
                                   const void *bias, int N, int C, int OC);
/* The same for int8 W with one scale per row (N <= 32, C a multiple of 64): out = s * (x q) + b. */
llmc_status llmc_cuda_gemv_forward_int8(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                        const int8_t *w, const float *scales, const void *bias, int N, int C, int OC);
/* The backend op layernorm_matmul_forward (backend.h), for up to 8 rows: gemv.cu's kernel,
 * each block normalizing the rows itself. */
llmc_status llmc_cuda_layernorm_matmul_forward(llmc_device *dev, void *residual_out, void *out, void *pre_gelu,
                                               const void *inp, const void *inp2, const llmc_tensor *ln_w,
                                               const llmc_tensor *ln_b, const llmc_tensor *w, const llmc_tensor *bias,
                                               int N, int C, int OC);
/* Whether kernels of the decode path are launched with programmatic dependent launch
 * (overlapping a kernel's launch with its predecessor's tail): dev->tuning.pdl. */
static inline int llmc_cuda_pdl(const llmc_device *dev) { return dev->tuning.pdl != 0; }
/* compression, training side (distill.cu, zero_mask.cu) */
llmc_status llmc_cuda_classifier_distill_forward(llmc_device *dev, float *losses, void *logits,
                                                 const void *teacher_logits, const int *targets, int N, int V, int Vp,
                                                 float dloss, float alpha, float tau);
llmc_status llmc_cuda_zero_mask_build(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w, llmc_dtype dtype,
                                      size_t n);
llmc_status llmc_cuda_zero_mask_apply(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params,
                                      float *master, float *m, float *v, size_t n);
#endif

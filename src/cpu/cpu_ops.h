/* cpu_ops.h — the CPU backend's op implementations (fp32, OpenMP).
 * Each function has the signature of its slot in llmc_backend_ops (backend.h);
 * cpu/backend.c gathers them into llmc_cpu_backend_ops. */
#ifndef LLMC_CPU_OPS_H
#define LLMC_CPU_OPS_H
#include "../backend.h"

llmc_status llmc_cpu_encoder_forward(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte,
                                     const llmc_tensor *wpe, int B, int T, int C);
llmc_status llmc_cpu_encoder_backward(llmc_device *dev, const llmc_tensor *dwte, const llmc_tensor *dwpe,
                                      const void *dout, const int *tokens, const int *tokens_host, int B, int T, int C);
llmc_status llmc_cpu_layernorm_forward(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                       const void *inp, const void *inp2, const llmc_tensor *w, const llmc_tensor *b,
                                       int N, int C);
llmc_status llmc_cpu_layernorm_backward(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *db,
                                        const void *dout, const void *inp, const llmc_tensor *w, const float *mean,
                                        const float *rstd, int N, int C);
llmc_status llmc_cpu_matmul_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const llmc_tensor *w,
                                    const llmc_tensor *bias, int N, int C, int OC);
llmc_status llmc_cpu_matmul_backward(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *dbias,
                                     const void *dout, const void *inp, const llmc_tensor *w, const void *pre_gelu,
                                     int N, int C, int OC);
llmc_status llmc_cpu_gelu_forward(llmc_device *dev, void *out, const void *inp, size_t n);
llmc_status llmc_cpu_attention_forward(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T,
                                       int NH, int HS);
llmc_status llmc_cpu_attention_backward(llmc_device *dev, void *dqkv, const void *dout, const void *qkv,
                                        const void *out, const float *lse, int B, int T, int NH, int HS);
llmc_status llmc_cpu_classifier_forward(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                        int V, int Vp, float dloss);
llmc_status llmc_cpu_adamw_update(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                  float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                  float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                  uint32_t seed, size_t index_base);
llmc_status llmc_cpu_sum_squares(llmc_device *dev, double *out, const void *x, size_t n);
llmc_status llmc_cpu_grad_norm_scale(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip);
llmc_status llmc_cpu_readback_begin(llmc_device *dev, const void *src, size_t bytes);
llmc_status llmc_cpu_readback_end(llmc_device *dev, void *dst, size_t bytes);
/* KV-cache inference (decode.c) */
llmc_status llmc_cpu_encoder_forward_at(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                        const llmc_tensor *wte, const llmc_tensor *wpe, int N, int C);
llmc_status llmc_cpu_kv_append(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                               const int *pos, int B, int T, int NH, int HS, int maxlen);
llmc_status llmc_cpu_attention_decode(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                      const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                      int maxlen);
llmc_status llmc_cpu_argmax_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp);
llmc_status llmc_cpu_feed_tokens(llmc_device *dev, int *dst, const int *src, int n);
llmc_status llmc_cpu_sample_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                                 const llmc_sampling *s, const float *u);
/* compression, training side (distill.c, zero_mask.c) */
llmc_status llmc_cpu_classifier_distill_forward(llmc_device *dev, float *losses, void *logits,
                                                const void *teacher_logits, const int *targets, int N, int V, int Vp,
                                                float dloss, float alpha, float tau);
llmc_status llmc_cpu_zero_mask_build(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w, llmc_dtype dtype,
                                     size_t n);
llmc_status llmc_cpu_zero_mask_apply(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params,
                                     float *master, float *m, float *v, size_t n);
#endif

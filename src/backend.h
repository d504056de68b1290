/*
 * backend.h — the op table that every backend (CPU, CUDA) implements.
 *
 * train.c and infer.c write the GPT-2 graph once and call these ops. Ops work at the
 * granularity a GPU wants (residual+layernorm fused, matmul with bias and GELU
 * epilogue, flash attention, classifier that yields loss and dlogits).
 *
 * Conventions shared by every op:
 *  - Pointers are device pointers of the backend. "act" tensors (activations,
 *    gradients) have dtype ops->act_dtype: fp32 on CPU, bf16 on CUDA.
 *    Statistics (mean, rstd, lse, losses) and optimizer state are always fp32.
 *  - Weights (and their gradients) come as typed tensors (llmc_tensor): an op checks the
 *    dtype with llmc_weight_check and refuses one it has no kernel for, so a new weight
 *    format is a new kernel behind the same slot, not a new calling convention.
 *  - Row-major. N = B*T rows. Weights are (OC, C) as in llm.c: out = inp @ W^T.
 *  - "+=" outputs accumulate into what is there (gradients); "=" outputs overwrite.
 *  - Ops are asynchronous on GPU; errors are returned as an llmc_status with the
 *    message written to dev->err (use llmc_device_fail()).
 *  - Every op must be deterministic: the same inputs give bit-identical outputs.
 */
#ifndef LLMC_BACKEND_H
#define LLMC_BACKEND_H

#include "llmc.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define LLMC_HOST_DEVICE __host__ __device__
#else
#define LLMC_HOST_DEVICE
#endif
/* AdamW's global-norm clip scale, the one formula of every backend (grad_norm_scale): NaN
 * when the norm is not finite, grad_clip / norm when clipping is on and the norm above it, else
 * 1. The division is IEEE on the GPU too (fast math would make it approximate), so the CPU
 * and the GPU agree bit for bit. */
static inline LLMC_HOST_DEVICE float llmc_clip_scale(float norm, float grad_clip) {
    if (!isfinite(norm)) return NAN;
    if (!(grad_clip > 0.0f && norm > grad_clip)) return 1.0f;
#ifdef __CUDA_ARCH__
    return __fdiv_rn(grad_clip, norm);
#else
    return grad_clip / norm;
#endif
}

typedef struct llmc_backend_ops llmc_backend_ops;

/* Tuning knobs a backend reads (set from llmc_model_options when the device opens). */
typedef struct llmc_device_tuning {
    int pdl;         /* launch decode kernels as programmatic dependents */
    int skinny_rows; /* matmul_forward with N <= skinny_rows uses the skinny kernel (0: never) */
    int int8_mma;    /* int8 matmul_forward of few rows on tensor cores (0: the CUDA-core kernel) */
    int fuse_layernorm; /* layernorm_matmul_forward: 0 declines, 1 where it pays, 2 wherever it can */
} llmc_device_tuning;

typedef struct llmc_device {
    const llmc_backend_ops *ops;
    void *impl;              /* backend-private: streams, BLAS handles, workspaces */
    llmc_device_tuning tuning;
    char err[LLMC_ERR_LEN];  /* the last error message */
} llmc_device;

/* Writes a printf-style message into dev->err and returns code. */
llmc_status llmc_device_fail(llmc_device *dev, llmc_status code, const char *fmt, ...);

/* Opens a backend by name ("cpu", "cuda"); on failure the message is in dev->err.
 * tuning NULL: the defaults of llmc_model_options_default. */
llmc_status llmc_device_open(llmc_device *dev, const char *name, int index, const llmc_device_tuning *tuning);
void llmc_device_close(llmc_device *dev);
/* Backends linked into this binary (defined by registry_*.c). NULL if not linked. */
const llmc_backend_ops *llmc_backend_lookup(const char *name);
/* Comma-separated names of linked backends, for error messages. */
const char *llmc_backend_names(void);

/* LLMC_OK when t (may be NULL when optional) is a plain tensor of dtype want; otherwise a message
 * naming the op, the tensor and both dtypes, and LLMC_ERR_UNSUPPORTED. */
llmc_status llmc_weight_check(llmc_device *dev, const char *op, const llmc_tensor *t, llmc_dtype want);
/* Returns from the calling op (which has `dev`) unless a and b (each may be NULL) are plain tensors
 * of dtype: the weight check every backend's ops start with. */
#define LLMC_REQUIRE_WEIGHTS(op, a, b, dtype)                                    \
    do {                                                                         \
        llmc_status s_ = llmc_weight_check(dev, (op), (a), (dtype));             \
        if (s_ == LLMC_OK) s_ = llmc_weight_check(dev, (op), (b), (dtype));      \
        if (s_ != LLMC_OK) return s_;                                            \
    } while (0)
/* Defines `llmc_status name(type *obj, llmc_status code, const char *fmt, ...)`: a printf-style
 * message into obj->err (a char array), returning code. Every handle's failures go through one. */
#define LLMC_DEFINE_FAIL(qualifier, name, type)                                     \
    qualifier llmc_status name(type *obj, llmc_status code, const char *fmt, ...) { \
        va_list ap;                                                                 \
        va_start(ap, fmt);                                                          \
        vsnprintf(obj->err, sizeof obj->err, fmt, ap);                              \
        va_end(ap);                                                                 \
        return code;                                                                \
    }
/* return handler(obj, status) when call fails. */
#define LLMC_TRY_WITH(handler, obj, call)                                           \
    do {                                                                            \
        llmc_status s_ = (call);                                                    \
        if (s_ != LLMC_OK) return handler((obj), s_);                               \
    } while (0)
/* Checks an attention op's shape: B, T >= 0 (>= 1 with positive), NH, HS >= 1, and B*T, B*NH and
 * 3*NH*HS within int, so that no index product of the kernels can wrap. */
llmc_status llmc_attention_shape(llmc_device *dev, const char *op, int B, int T, int NH, int HS, int positive);
/* The data pointer of an optional tensor. */
static inline void *llmc_tensor_data(const llmc_tensor *t) { return t ? t->data : NULL; }


/* One decode step's transformer blocks (decode_layers): the weights, the KV caches (one layer's
 * K or V every cache_layer elements, (slots, NH, maxlen, HS) each), scratch rows as infer.c lays
 * them out, and device int32 tokens, pos, slots, lens (= pos + 1) of the n rows; sync: one device
 * uint32 the op may use. For labs and benchmarks: ahead, the op's L2 prefetch distance in products
 * (0: its default, -1: no prefetch); staged 0 keeps weight slices out of shared memory (-1: the
 * op's choice); trace (device, NULL: none): 2 x blocks x 5L globaltimer stamps, the arrival of
 * block b at barrier k at [b * 5L + k], its leave at [(blocks + b) * 5L + k]. */
typedef struct llmc_decode_step {
    const llmc_weights *w;
    void *kcache, *vcache;
    size_t cache_layer;
    int maxlen;
    void *x, *res2, *qkv, *atty, *fch, *out;
    const int *tokens, *pos, *slots, *lens;
    unsigned *sync;
    int n, ahead, staged;
    unsigned long long *trace;
} llmc_decode_step;

struct llmc_backend_ops {
    const char *name;
    llmc_dtype act_dtype;

    /* ---- lifecycle and memory ---- */
    llmc_status (*init)(llmc_device *dev, int index);
    void (*destroy)(llmc_device *dev);
    llmc_status (*alloc)(llmc_device *dev, void **ptr, size_t bytes);
    void (*free)(llmc_device *dev, void *ptr);
    llmc_status (*zero)(llmc_device *dev, void *ptr, size_t bytes);
    llmc_status (*copy_h2d)(llmc_device *dev, void *dst, const void *src, size_t bytes);
    llmc_status (*copy_d2h)(llmc_device *dev, void *dst, const void *src, size_t bytes);
    llmc_status (*copy_d2d)(llmc_device *dev, void *dst, const void *src, size_t bytes);
    /* host fp32 <-> device tensor of dtype (converts; bf16 rounds to nearest even) */
    llmc_status (*upload_f32)(llmc_device *dev, void *dst, llmc_dtype dtype, const float *src, size_t n);
    llmc_status (*download_f32)(llmc_device *dev, float *dst, const void *src, llmc_dtype dtype, size_t n);
    llmc_status (*synchronize)(llmc_device *dev);
    /* One asynchronous readback at a time: readback_begin queues a copy of bytes at src (after
     * the work already queued) into the device's own host staging buffer and returns at once;
     * readback_end waits for that copy and hands the bytes to dst. The trainer reads its losses
     * so while the backward pass is already queued: the GPU does not wait for the host. */
    llmc_status (*readback_begin)(llmc_device *dev, const void *src, size_t bytes);
    llmc_status (*readback_end)(llmc_device *dev, void *dst, size_t bytes);
    /* free and total device memory in bytes (CPU: report 0, 0) */
    llmc_status (*memory_info)(llmc_device *dev, size_t *free_bytes, size_t *total_bytes);

    /* ---- layers ---- */

    /* out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]. tokens: device int32 (B*T). */
    llmc_status (*encoder_forward)(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte,
                                   const llmc_tensor *wpe, int B, int T, int C);
    /* dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:].
     * tokens_host is the same ids in host memory (lets a GPU group rows per token
     * deterministically, without float atomics). */
    llmc_status (*encoder_backward)(llmc_device *dev, const llmc_tensor *dwte, const llmc_tensor *dwpe,
                                    const void *dout, const int *tokens, const int *tokens_host, int B, int T, int C);

    /* x = inp + inp2 (inp2 may be NULL: x = inp); if residual_out: residual_out = x (=).
     * out = (x - mean) * rstd * w + b (=), mean/rstd (=, fp32, N each), eps 1e-5.
     * residual_out may be NULL only when inp2 is NULL. */
    llmc_status (*layernorm_forward)(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                     const void *inp, const void *inp2, const llmc_tensor *w, const llmc_tensor *b,
                                     int N, int C);
    /* dinp (+=), dw (+=), db (+=) given dout, the layernorm input x and its mean/rstd. */
    llmc_status (*layernorm_backward)(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *db,
                                      const void *dout, const void *inp, const llmc_tensor *w, const float *mean,
                                      const float *rstd, int N, int C);

    /* pre = inp (N,C) @ w(OC,C)^T + bias(OC, may be NULL).
     * pre_gelu == NULL: out = pre.  Else: pre_gelu = pre, out = gelu_tanh(pre). (all =) */
    llmc_status (*matmul_forward)(llmc_device *dev, void *out, void *pre_gelu, const void *inp, const llmc_tensor *w,
                                  const llmc_tensor *bias, int N, int C, int OC);
    /* dinp (=) = dout @ w, then if pre_gelu != NULL: dinp *= gelu_tanh'(pre_gelu)
     *   (the input of this matmul was gelu(pre_gelu); this yields the grad of pre_gelu).
     * dw (+=) += dout^T @ inp;  dbias (+=, may be NULL) += column sums of dout.
     * dinp may be NULL (no input grad wanted). dout is not modified. */
    llmc_status (*matmul_backward)(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *dbias,
                                   const void *dout, const void *inp, const llmc_tensor *w, const void *pre_gelu,
                                   int N, int C, int OC);
    /* out = gelu_tanh(inp) elementwise (=), n elements. Used by recompute. */
    llmc_status (*gelu_forward)(llmc_device *dev, void *out, const void *inp, size_t n);

    /* Causal self-attention. qkv: (B, T, 3, NH, HS) i.e. (B,T,3C) with q, k, v blocks of C.
     * out (=): (B, T, NH, HS) = (B,T,C). lse (=, fp32): (B, NH, T), the natural-log
     * logsumexp of the scaled scores q.k/sqrt(HS) of each query row. Never forms T x T in memory. */
    llmc_status (*attention_forward)(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T, int NH, int HS);
    /* dqkv (=) (B,T,3C) given dout (B,T,C), the forward's qkv, out and lse. */
    llmc_status (*attention_backward)(llmc_device *dev, void *dqkv, const void *dout, const void *qkv, const void *out,
                                      const float *lse, int B, int T, int NH, int HS);

    /* Softmax cross-entropy over the first V of Vp columns of logits (N, Vp).
     * losses[i] (=, fp32) = logsumexp(logits[i,:V]) - logits[i, targets[i]].
     * If dloss != 0, logits is overwritten in place with dlogits:
     *   dlogits[i,j] = (softmax_j - [j == targets[i]]) * dloss for j < V, 0 for V <= j < Vp.
     * targets: device int32 (N). A row whose target is LLMC_IGNORE_TARGET gets loss 0 and, if
     * dloss != 0, a zero dlogits row (its logits are not read then). */
    llmc_status (*classifier_forward)(llmc_device *dev, float *losses, void *logits, const int *targets, int N, int V,
                                      int Vp, float dloss);

    /* ---- optimizer ----
     * AdamW on n elements: g = grads * *grad_scale (one float in device memory, so that the
     * clip scale never visits the host; when it is not finite nothing changes); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr * ((m / b1_correction) / (sqrt(v / b2_correction) + eps) + weight_decay * p).
     * b1_correction = 1 - b1^t, b2_correction = 1 - b2^t.
     * master (fp32, may be NULL): when given it is the source of truth for p, and params gets
     * it rounded to act dtype (bf16: stochastic rounding seeded by seed; fp32: copy).
     * When master is NULL, params is read and written directly (bf16: stochastic rounding).
     * The rounding of element i draws its bits from (seed, index_base + i): an update split into
     * pieces (a ZeRO shard) rounds exactly as the whole. */
    llmc_status (*adamw_update)(llmc_device *dev, void *params, float *master, const void *grads, float *m, float *v,
                                size_t n, float lr, float beta1, float beta2, float b1_correction,
                                float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                uint32_t seed, size_t index_base);
    /* *out (host) = sum of squares of n act-dtype elements, accumulated in fp32 or wider,
     * in a fixed order (deterministic). Synchronizes. */
    llmc_status (*sum_squares)(llmc_device *dev, double *out, const void *x, size_t n);
    /* out (device, 2 floats): out[0] = (float)sqrt(the sum of squares above), out[1] = the clip
     * scale grad_clip / out[0] when grad_clip > 0 and out[0] > grad_clip, else 1, and NaN when
     * out[0] is not finite. Queued like any op: no synchronization. */
    llmc_status (*grad_norm_scale)(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip);

    /* ---- inference with a KV cache (generate.c / infer.c) ----
     * A cache holds K or V of one layer for S sequence slots: (S, NH, maxlen, HS), act dtype.
     * tokens, pos, slots and lens are device int32 arrays. */
    /* out[i,:] = wte[tokens[i],:] + wpe[pos[i],:] (=) for N rows: each row has its own position. */
    llmc_status (*encoder_forward_at)(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                      const llmc_tensor *wte, const llmc_tensor *wpe, int N, int C);
    /* qkv (B,T,3C) as in attention_forward. For b < B, t < T:
     * kcache[slots[b], h, pos[b] + t, :] = k[b,t,h,:], vcache likewise (=); pos[b] + T <= maxlen. */
    llmc_status (*kv_append)(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                             const int *pos, int B, int T, int NH, int HS, int maxlen);
    /* One query per row against cached keys: q[i,h,:] is the first C of row i of qkv (N,3C);
     * out[i,h,:] (=) = sum_{j < lens[i]} softmax_j(q.k_j / sqrt(HS)) v_j, with k_j = kcache[slots[i],h,j,:]
     * (v likewise); 1 <= lens[i] <= maxlen. Softmax in fp32. */
    llmc_status (*attention_decode)(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                    const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                    int maxlen);
    /* out[i] (=, device int32) = the index of the largest of logits[i, :V] (rows of Vp), the lowest
     * index on ties; -1 when the row holds a NaN or +Inf or is all -Inf (as llmc_sample_token). */
    llmc_status (*argmax_rows)(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp);
    /* out[i] (=, device int32) = llmc_sample_token_at(logits[i, :V], s, u[i]) for the uniform
     * draws u (device fp32, one per row): -1 when the row holds a NaN or +Inf or is all -Inf, and
     * -2 when the backend leaves the row to the host (which computes the same function). Fails
     * for settings llmc_sampling_validate refuses. Optional (NULL: sample on the host). */
    llmc_status (*sample_rows)(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                               const llmc_sampling *s, const float *u);
    /* Optional (NULL: not supported). Ops enqueued between graph_begin and graph_end are recorded,
     * not run; graph_launch replays them (same pointers and shapes, current memory contents).
     * graph_end must follow every graph_begin, also after a failed op. graph_launch fails with
     * LLMC_ERR_UNSUPPORTED when the graph went stale (a backend workspace moved): capture again. */
    llmc_status (*graph_begin)(llmc_device *dev);
    llmc_status (*graph_end)(llmc_device *dev, void **graph);
    llmc_status (*graph_launch)(llmc_device *dev, void *graph);
    void (*graph_free)(llmc_device *dev, void *graph);

    /* ---- compression (training side) ---- */
    /* Knowledge distillation: classifier_forward against a teacher's logits (N, Vp, act dtype, same
     * layout). Over the first V columns, with z = logits[i], t = teacher_logits[i], y = targets[i]:
     *   losses[i] (=) = alpha (logsumexp(z) - z[y]) + (1 - alpha) tau^2 KL(softmax(t/tau) || softmax(z/tau)).
     * If dloss != 0, logits is overwritten in place with dlogits:
     *   dloss (alpha (softmax(z) - onehot(y)) + (1 - alpha) tau (softmax(z/tau) - softmax(t/tau))), 0 for j >= V.
     * A row whose target is LLMC_IGNORE_TARGET: loss 0, a zero dlogits row. alpha in [0, 1], tau > 0.
     * teacher_logits is only read. */
    llmc_status (*classifier_distill_forward)(llmc_device *dev, float *losses, void *logits,
                                              const void *teacher_logits, const int *targets, int N, int V, int Vp,
                                              float dloss, float alpha, float tau);
    /* Zero masks (keep_zeros): a bit array, bit b of word b / 32 (least significant first).
     * build: bits [bit0, bit0 + n) of mask (=) = (w[i] == 0) for i < n (either zero), w of dtype
     * (LLMC_F32 or LLMC_BF16); the other bits of mask are left as they are.
     * apply: for i < n with bit bit0 + i set: params[i] = 0 (act dtype), and master[i] (may be NULL),
     * m[i], v[i] = 0 (fp32). Nothing else changes. */
    llmc_status (*zero_mask_build)(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w, llmc_dtype dtype,
                                   size_t n);
    llmc_status (*zero_mask_apply)(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params, float *master,
                                   float *m, float *v, size_t n);

    /* ---- decode as one kernel (optional, NULL: not supported) ----
     * The embedding of s->tokens at s->pos, every layer as infer.c's run_layers runs them (K, V
     * appended to the cache, the same bf16 rounding points), and the final layernorm into rows
     * 0..n-1 of s->out. LLMC_ERR_UNSUPPORTED, with dev->err untouched, for steps it does not
     * take: the caller runs the per-op path. */
    llmc_status (*decode_layers)(llmc_device *dev, const llmc_decode_step *s);

    /* ---- a decode loop one step ahead (generate.c's run_ahead; optional, NULL: every step waits) ----
     * host_alloc: host memory the device copies to and from in place (page-locked on a GPU): a
     * copy_h2d from it or a copy_d2h_async into it reads or writes it when the queue gets there,
     * so it must stay untouched until a fence recorded after the copy has passed.
     * copy_d2h_async: queues the copy and returns. A fence marks a point in the device's queue:
     * fence_record puts it after everything queued so far, fence_wait returns once the device
     * has passed it (at once if never recorded). feed_tokens: dst[i] (=) = src[i] where src[i] >= 0,
     * else 0, for i < n (device int32): the picks of one step become the tokens of the next,
     * placeholders where a pick failed (that step is discarded). */
    llmc_status (*host_alloc)(llmc_device *dev, void **ptr, size_t bytes);
    void (*host_free)(llmc_device *dev, void *ptr);
    llmc_status (*copy_d2h_async)(llmc_device *dev, void *dst, const void *src, size_t bytes);
    llmc_status (*fence_new)(llmc_device *dev, void **fence);
    llmc_status (*fence_record)(llmc_device *dev, void *fence);
    llmc_status (*fence_wait)(llmc_device *dev, void *fence);
    void (*fence_free)(llmc_device *dev, void *fence);
    llmc_status (*feed_tokens)(llmc_device *dev, int *dst, const int *src, int n);

    /* ---- layernorm fused into the matmul after it (optional, NULL: not supported) ----
     * layernorm_forward(residual_out, ln, NULL, NULL, inp, inp2, ln_w, ln_b) then
     * matmul_forward(out, pre_gelu, ln, w, bias), with the same bits, but ln, mean and rstd are
     * not kept. residual_out must not overlap inp or inp2. LLMC_ERR_UNSUPPORTED, with dev->err
     * untouched and nothing written, for calls it does not take: the caller runs the two ops. */
    llmc_status (*layernorm_matmul_forward)(llmc_device *dev, void *residual_out, void *out, void *pre_gelu,
                                            const void *inp, const void *inp2, const llmc_tensor *ln_w,
                                            const llmc_tensor *ln_b, const llmc_tensor *w, const llmc_tensor *bias,
                                            int N, int C, int OC);

    /* ---- fp8 training matmuls (optional, NULL: not supported) ----
     * matmul_forward and matmul_backward with fp8 operands: inputs and weights in E4M3, dout in
     * E5M2, each scaled per tensor by the amax history of its call site (site >= 0, one per
     * weight: the caller numbers them), fp32 accumulation, the same outputs and epilogues.
     * Approximate (fp8 keeps 3 or 2 mantissa bits), deterministic for a given sequence of calls.
     * The forward keeps its input, cast and transposed, for the site's backward, which uses that
     * copy when the shapes match: so inp of a backward must be what the site's last forward took,
     * as in training, where each backward follows its forward.
     * LLMC_ERR_UNSUPPORTED for shapes without an fp8 product (N, C, OC multiples of 16): the
     * caller runs the bf16 op; another error (no fp8 on this GPU) fails the call. */
    llmc_status (*matmul_forward_fp8)(llmc_device *dev, int site, void *out, void *pre_gelu, const void *inp,
                                      const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC);
    llmc_status (*matmul_backward_fp8)(llmc_device *dev, int site, void *dinp, const llmc_tensor *dw,
                                       const llmc_tensor *dbias, const void *dout, const void *inp,
                                       const llmc_tensor *w, const void *pre_gelu, int N, int C, int OC);
};

#ifdef __cplusplus
}
#endif
#endif /* LLMC_BACKEND_H */

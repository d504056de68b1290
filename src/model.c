/*
 * model.c — the GPT-2 graph, written once for every backend.
 *
 * Parameters live in one flat buffer (llm.c order), activations in one arena.
 * Each layer calls the backend's fused ops:
 *   ln1 = LN(res)            (fused with the previous layer's residual add)
 *   qkv = ln1 W_qkv^T + b    -> attention (flash; keeps only the logsumexp)
 *   res2 = res + atty W_o^T + b, ln2 = LN(res2)
 *   h = gelu(ln2 W_fc^T + b) (GELU in the matmul epilogue)
 *   res3 = res2 + h W_p^T + b
 * then LN_f, tied LM head and the classifier (loss, and dlogits in the same pass when training).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"
#include "arena.h"
#include "rng.h"

/* ------------------------------------------------------------------ errors */

llmc_status llmc_model_fail(llmc_model *m, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return code;
}

llmc_status llmc_model_dev_fail(llmc_model *m, llmc_status code) {
    snprintf(m->err, sizeof m->err, "%s", m->dev.err[0] ? m->dev.err : llmc_status_name(code));
    return code;
}

const char *llmc_model_error(const llmc_model *m) { return m ? m->err : "out of memory"; }

/* ------------------------------------------------------------------ lifecycle */

void llmc_model_options_default(llmc_model_options *o) {
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->master_weights = 1;
}

llmc_model *llmc_model_new(void) { return calloc(1, sizeof(llmc_model)); }

static void release_device_memory(llmc_model *m) {
    if (!m->dev.ops) return;
    void **bufs[] = {&m->params, &m->grads, (void **)&m->master, (void **)&m->adam_m, (void **)&m->adam_v,
                     &m->act_mem, &m->grad_act_mem};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) m->dev.ops->free(&m->dev, *bufs[i]);
        *bufs[i] = NULL;
    }
    m->act_capacity = m->grad_act_capacity = 0;
}

void llmc_model_free(llmc_model *m) {
    if (!m) return;
    llmc_gen_free(m);
    release_device_memory(m);
    llmc_device_close(&m->dev);
    free(m->host_inputs);
    free(m->host_losses);
    free(m);
}

const llmc_config *llmc_model_config(const llmc_model *m) { return &m->cfg; }
const char *llmc_model_backend(const llmc_model *m) { return m->dev.ops ? m->dev.ops->name : "none"; }
size_t llmc_model_num_params(const llmc_model *m) { return m->num_params; }
int llmc_model_step_count(const llmc_model *m) { return m->step; }
float llmc_model_loss(const llmc_model *m) { return m->has_targets ? m->loss : NAN; }

/* Makes m a fresh model of shape cfg on the requested backend: old buffers are dropped. */
llmc_status llmc_model_setup(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg) {
    llmc_model_options defaults;
    llmc_model_options_default(&defaults);
    if (!o) o = &defaults;
    llmc_config c = *cfg;
    if (llmc_config_validate(&c, m->err, sizeof m->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    if (o->recompute < 0 || o->recompute > 2)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "recompute must be 0, 1 or 2 (got %d)", o->recompute);

    llmc_gen_free(m);
    release_device_memory(m);
    const char *want = o->backend ? o->backend : "cpu";
    if (!m->dev.ops || strcmp(m->dev.ops->name, want) != 0) {
        llmc_device_close(&m->dev);
        MODEL_TRY(m, llmc_device_open(&m->dev, want, o->device));
    }
    m->opts = *o;
    m->opts.backend = m->dev.ops->name; /* a static string: the caller's may not outlive us */
    m->cfg = c;
    llmc_param_layout(&c, m->layout);
    m->num_params = llmc_param_count(&c);
    m->esz = llmc_dtype_size(m->dev.ops->act_dtype);
    m->step = 0;
    m->B = m->T = 0;
    m->has_targets = 0;
    m->logits_state = LOGITS_NONE;
    m->loss = NAN;

    const llmc_backend_ops *ops = m->dev.ops;
    MODEL_TRY(m, ops->alloc(&m->dev, &m->params, m->num_params * m->esz));
    if (o->master_weights && ops->act_dtype != LLMC_F32)
        MODEL_TRY(m, ops->alloc(&m->dev, (void **)&m->master, m->num_params * sizeof(float)));
    return LLMC_OK;
}

llmc_status llmc_model_upload_params(llmc_model *m, const float *host) {
    const llmc_backend_ops *ops = m->dev.ops;
    MODEL_TRY(m, ops->upload_f32(&m->dev, m->params, ops->act_dtype, host, m->num_params));
    if (m->master) MODEL_TRY(m, ops->upload_f32(&m->dev, m->master, LLMC_F32, host, m->num_params));
    return LLMC_OK;
}

llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                   uint64_t seed) {
    llmc_status st = llmc_model_setup(m, o, cfg);
    if (st != LLMC_OK) return st;
    /* Drawn on the host so every backend starts from the same numbers for a seed. */
    float *host = malloc(m->num_params * sizeof(float));
    if (!host) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for init",
                                      m->num_params * sizeof(float));
    uint64_t rng = llmc_rng_seed(seed);
    const float residual_scale = 1.0f / sqrtf(2.0f * (float)m->cfg.num_layers);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor_info *t = &m->layout[i];
        float *p = host + t->offset;
        int is_norm_weight = (i == LLMC_LN1W || i == LLMC_LN2W || i == LLMC_LNFW);
        if (is_norm_weight) {
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
        } else if (!t->weight_decay) {
            memset(p, 0, t->numel * sizeof(float)); /* biases */
        } else {
            float std = 0.02f * ((i == LLMC_ATTPROJW || i == LLMC_FCPROJW) ? residual_scale : 1.0f);
            for (size_t j = 0; j < t->numel; j++) p[j] = std * llmc_rng_normal(&rng);
        }
    }
    /* padding rows of wte never see a token; keep them zero so their logits are inert */
    size_t C = (size_t)m->cfg.channels;
    memset(host + m->layout[LLMC_WTE].offset + (size_t)m->cfg.vocab_size * C, 0,
           (size_t)(m->cfg.padded_vocab_size - m->cfg.vocab_size) * C * sizeof(float));
    st = llmc_model_upload_params(m, host);
    free(host);
    return st;
}

/* ------------------------------------------------------------------ parameter access */

llmc_status llmc_model_get_params(llmc_model *m, float *dst) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    const llmc_backend_ops *ops = m->dev.ops;
    if (m->master) MODEL_TRY(m, ops->download_f32(&m->dev, dst, m->master, LLMC_F32, m->num_params));
    else MODEL_TRY(m, ops->download_f32(&m->dev, dst, m->params, ops->act_dtype, m->num_params));
    return LLMC_OK;
}

llmc_status llmc_model_set_params(llmc_model *m, const float *src) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    m->logits_state = LOGITS_NONE;
    return llmc_model_upload_params(m, src);
}

llmc_status llmc_model_get_grads(llmc_model *m, float *dst) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    llmc_status st = llmc_model_ensure_grads(m);
    if (st != LLMC_OK) return st;
    MODEL_TRY(m, m->dev.ops->download_f32(&m->dev, dst, m->grads, m->dev.ops->act_dtype, m->num_params));
    return LLMC_OK;
}

float *llmc_model_params_host(llmc_model *m) {
    return (m->dev.ops && strcmp(m->dev.ops->name, "cpu") == 0) ? (float *)m->params : NULL;
}

float *llmc_model_grads_host(llmc_model *m) {
    if (!m->dev.ops || strcmp(m->dev.ops->name, "cpu") != 0) return NULL;
    return llmc_model_ensure_grads(m) == LLMC_OK ? (float *)m->grads : NULL;
}

llmc_status llmc_model_ensure_grads(llmc_model *m) {
    if (m->grads) return LLMC_OK;
    size_t bytes = m->num_params * m->esz;
    MODEL_TRY(m, m->dev.ops->alloc(&m->dev, &m->grads, bytes));
    MODEL_TRY(m, m->dev.ops->zero(&m->dev, m->grads, bytes));
    return LLMC_OK;
}

llmc_status llmc_model_ensure_optimizer(llmc_model *m) {
    size_t bytes = m->num_params * sizeof(float);
    float **state[] = {&m->adam_m, &m->adam_v};
    for (int i = 0; i < 2; i++) {
        if (*state[i]) continue;
        MODEL_TRY(m, m->dev.ops->alloc(&m->dev, (void **)state[i], bytes));
        MODEL_TRY(m, m->dev.ops->zero(&m->dev, *state[i], bytes));
    }
    return LLMC_OK;
}

llmc_status llmc_model_zero_grad(llmc_model *m) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    llmc_status st = llmc_model_ensure_grads(m);
    if (st != LLMC_OK) return st;
    MODEL_TRY(m, m->dev.ops->zero(&m->dev, m->grads, m->num_params * m->esz));
    return LLMC_OK;
}

/* ------------------------------------------------------------------ activation memory */

/* Lays the activations of (B,T) out in base (or just measures when base is NULL). */
static size_t plan_acts(const llmc_model *m, int B, int T, char *base, llmc_acts *a) {
    const size_t L = m->cfg.num_layers, C = m->cfg.channels, NH = m->cfg.num_heads, Vp = m->cfg.padded_vocab_size;
    const size_t N = (size_t)B * T, e = m->esz, f = sizeof(float);
    const size_t L_ln = m->opts.recompute >= 2 ? 1 : L, L_gelu = m->opts.recompute >= 1 ? 1 : L;
    llmc_arena p = {0, base};
    a->encoded = llmc_arena_take(&p, N * C * e);
    a->ln1 = llmc_arena_take(&p, L_ln * N * C * e);
    a->ln1_mean = llmc_arena_take(&p, L * N * f);
    a->ln1_rstd = llmc_arena_take(&p, L * N * f);
    a->qkv = llmc_arena_take(&p, L * N * 3 * C * e);
    a->atty = llmc_arena_take(&p, L * N * C * e);
    a->att_lse = llmc_arena_take(&p, L * NH * N * f);
    a->residual2 = llmc_arena_take(&p, L * N * C * e);
    a->ln2 = llmc_arena_take(&p, L_ln * N * C * e);
    a->ln2_mean = llmc_arena_take(&p, L * N * f);
    a->ln2_rstd = llmc_arena_take(&p, L * N * f);
    a->fch = llmc_arena_take(&p, L * N * 4 * C * e);
    a->fch_gelu = llmc_arena_take(&p, L_gelu * N * 4 * C * e);
    a->residual3 = llmc_arena_take(&p, L * N * C * e);
    a->lnf = llmc_arena_take(&p, N * C * e);
    a->lnf_mean = llmc_arena_take(&p, N * f);
    a->lnf_rstd = llmc_arena_take(&p, N * f);
    a->scratch = llmc_arena_take(&p, N * C * e);
    a->logits = llmc_arena_take(&p, N * Vp * e);
    a->losses = llmc_arena_take(&p, N * f);
    a->inputs = llmc_arena_take(&p, N * sizeof(int));
    a->targets = llmc_arena_take(&p, N * sizeof(int));
    return p.offset;
}

static size_t plan_grad_acts(const llmc_model *m, int B, int T, char *base, llmc_grad_acts *g) {
    const size_t N = (size_t)B * T, C = m->cfg.channels, e = m->esz;
    llmc_arena p = {0, base};
    g->dresidual = llmc_arena_take(&p, N * C * e);
    g->dbtc = llmc_arena_take(&p, N * C * e);
    g->dqkv = llmc_arena_take(&p, N * 3 * C * e);
    g->dfch = llmc_arena_take(&p, N * 4 * C * e);
    return p.offset;
}

static double gib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0 * 1024.0); }

/* Checks up front that the whole training footprint fits, with numbers and advice if not. */
static llmc_status check_fits(llmc_model *m, int B, int T, size_t more_bytes, int training) {
    size_t free_b = 0, total_b = 0;
    MODEL_TRY(m, m->dev.ops->memory_info(&m->dev, &free_b, &total_b));
    if (total_b == 0 || more_bytes <= free_b) return LLMC_OK; /* host memory: malloc will tell */
    llmc_acts a;
    llmc_grad_acts g;
    size_t acts = plan_acts(m, B, T, NULL, &a), gacts = training ? plan_grad_acts(m, B, T, NULL, &g) : 0;
    size_t P = m->num_params;
    return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY,
                           "not enough device memory for B=%d T=%d: need %.2f GiB more (activations %.2f GiB, "
                           "backward scratch %.2f GiB; parameters+grads+optimizer take %.2f GiB) but only %.2f of "
                           "%.2f GiB are free. Try a smaller -b, recompute (-r 1 or -r 2) or a smaller model.",
                           B, T, gib(more_bytes), gib(acts), gib(gacts),
                           gib(P * (2 * m->esz + (training ? 8 : 0) + (m->master ? 4 : 0))), gib(free_b),
                           gib(total_b));
}

static llmc_status ensure_host_buffers(llmc_model *m, size_t N) {
    if (N <= m->host_capacity) return LLMC_OK;
    int *in = realloc(m->host_inputs, N * sizeof(int));
    if (in) m->host_inputs = in;
    float *lo = realloc(m->host_losses, N * sizeof(float));
    if (lo) m->host_losses = lo;
    if (!in || !lo) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host buffers for %zu tokens", N);
    m->host_capacity = N;
    return LLMC_OK;
}

static llmc_status ensure_acts(llmc_model *m, int B, int T, int training) {
    size_t need = plan_acts(m, B, T, NULL, &m->a);
    size_t gneed = training ? plan_grad_acts(m, B, T, NULL, &m->g) : 0;
    size_t grow = (need > m->act_capacity ? need : 0) + (gneed > m->grad_act_capacity ? gneed : 0);
    if (grow) {
        /* release first so the check sees the memory we would give back */
        if (need > m->act_capacity && m->act_mem) {
            m->dev.ops->free(&m->dev, m->act_mem);
            m->act_mem = NULL;
            m->act_capacity = 0;
        }
        if (gneed > m->grad_act_capacity && m->grad_act_mem) {
            m->dev.ops->free(&m->dev, m->grad_act_mem);
            m->grad_act_mem = NULL;
            m->grad_act_capacity = 0;
        }
        size_t extra = training && !m->adam_m ? m->num_params * (m->esz + 8) : 0; /* grads + AdamW still to come */
        llmc_status st = check_fits(m, B, T, grow + extra, training);
        if (st != LLMC_OK) return st;
    }
    if (need > m->act_capacity) {
        MODEL_TRY(m, m->dev.ops->alloc(&m->dev, &m->act_mem, need));
        m->act_capacity = need;
    }
    if (gneed > m->grad_act_capacity) {
        MODEL_TRY(m, m->dev.ops->alloc(&m->dev, &m->grad_act_mem, gneed));
        m->grad_act_capacity = gneed;
    }
    plan_acts(m, B, T, m->act_mem, &m->a);
    if (m->grad_act_mem && gneed) plan_grad_acts(m, B, T, m->grad_act_mem, &m->g);
    return ensure_host_buffers(m, (size_t)B * T);
}

/* ------------------------------------------------------------------ forward */

/* Pointer to element offset `elems` of a buffer of act dtype. */
static inline void *at(const llmc_model *m, const void *base, size_t elems) {
    return (char *)base + elems * m->esz;
}
static inline void *param(const llmc_model *m, int i, size_t layer) {
    const llmc_tensor_info *t = &m->layout[i];
    size_t per_layer = t->ndim == 3 || (i >= LLMC_LN1W && i <= LLMC_FCPROJB) ? t->numel / m->cfg.num_layers : 0;
    return at(m, m->params, t->offset + layer * per_layer);
}
static inline void *grad(const llmc_model *m, int i, size_t layer) {
    const llmc_tensor_info *t = &m->layout[i];
    size_t per_layer = (i >= LLMC_LN1W && i <= LLMC_FCPROJB) ? t->numel / m->cfg.num_layers : 0;
    return at(m, m->grads, t->offset + layer * per_layer);
}

static llmc_status check_tokens(llmc_model *m, const int *ids, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                                   "%s token id %d at position %zu is out of range: the vocabulary has %d tokens "
                                   "(ids 0..%d)",
                                   what, ids[i], i, m->cfg.vocab_size, m->cfg.vocab_size - 1);
    return LLMC_OK;
}

static llmc_status check_batch(llmc_model *m, const int *inputs, int B, int T) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
    if (!inputs) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no input tokens given");
    if (B <= 0 || T <= 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "batch size B=%d and sequence length T=%d must be >= 1", B, T);
    if (T > m->cfg.max_seq_len)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "sequence length T=%d exceeds the model's maximum context of %d tokens", T,
                               m->cfg.max_seq_len);
    return LLMC_OK;
}

/* Runs the graph on the inputs already in m->a.inputs. dloss != 0 makes the classifier
 * leave dlogits (scaled by dloss) in place of the logits. */
static llmc_status forward_graph(llmc_model *m, int B, int T, float dloss) {
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_device *d = &m->dev;
    llmc_acts *a = &m->a;
    const int L = m->cfg.num_layers, C = m->cfg.channels, NH = m->cfg.num_heads, HS = C / NH;
    const int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size, N = B * T;
    const size_t NC = (size_t)N * C;
    const int ln_layered = m->opts.recompute < 2, gelu_layered = m->opts.recompute < 1;

    MODEL_TRY(m, ops->encoder_forward(d, a->encoded, a->inputs, param(m, LLMC_WTE, 0), param(m, LLMC_WPE, 0), B, T, C));
    for (int l = 0; l < L; l++) {
        void *res_in = l == 0 ? a->encoded : at(m, a->residual3, (l - 1) * NC);
        void *ln1 = at(m, a->ln1, ln_layered * l * NC), *ln2 = at(m, a->ln2, ln_layered * l * NC);
        void *qkv = at(m, a->qkv, l * 3 * NC), *atty = at(m, a->atty, l * NC);
        void *res2 = at(m, a->residual2, l * NC), *fch = at(m, a->fch, l * 4 * NC);
        void *fch_gelu = at(m, a->fch_gelu, gelu_layered * l * 4 * NC);
        float *lse = a->att_lse + (size_t)l * NH * N;
        float *m1 = a->ln1_mean + (size_t)l * N, *r1 = a->ln1_rstd + (size_t)l * N;
        float *m2 = a->ln2_mean + (size_t)l * N, *r2 = a->ln2_rstd + (size_t)l * N;

        if (l == 0)
            MODEL_TRY(m, ops->layernorm_forward(d, NULL, ln1, m1, r1, a->encoded, NULL, param(m, LLMC_LN1W, l),
                                                param(m, LLMC_LN1B, l), N, C));
        else /* finishes the previous layer: res_in = res2[l-1] + mlp output */
            MODEL_TRY(m, ops->layernorm_forward(d, res_in, ln1, m1, r1, at(m, a->residual2, (l - 1) * NC), a->scratch,
                                                param(m, LLMC_LN1W, l), param(m, LLMC_LN1B, l), N, C));
        MODEL_TRY(m, ops->matmul_forward(d, qkv, NULL, ln1, param(m, LLMC_QKVW, l), param(m, LLMC_QKVB, l), N, C, 3 * C));
        MODEL_TRY(m, ops->attention_forward(d, atty, lse, qkv, B, T, NH, HS));
        MODEL_TRY(m, ops->matmul_forward(d, a->scratch, NULL, atty, param(m, LLMC_ATTPROJW, l),
                                         param(m, LLMC_ATTPROJB, l), N, C, C));
        MODEL_TRY(m, ops->layernorm_forward(d, res2, ln2, m2, r2, res_in, a->scratch, param(m, LLMC_LN2W, l),
                                            param(m, LLMC_LN2B, l), N, C));
        MODEL_TRY(m, ops->matmul_forward(d, fch_gelu, fch, ln2, param(m, LLMC_FCW, l), param(m, LLMC_FCB, l), N, C, 4 * C));
        MODEL_TRY(m, ops->matmul_forward(d, a->scratch, NULL, fch_gelu, param(m, LLMC_FCPROJW, l),
                                         param(m, LLMC_FCPROJB, l), N, 4 * C, C));
    }
    MODEL_TRY(m, ops->layernorm_forward(d, at(m, a->residual3, (L - 1) * NC), a->lnf, a->lnf_mean, a->lnf_rstd,
                                        at(m, a->residual2, (L - 1) * NC), a->scratch, param(m, LLMC_LNFW, 0),
                                        param(m, LLMC_LNFB, 0), N, C));
    MODEL_TRY(m, ops->matmul_forward(d, a->logits, NULL, a->lnf, param(m, LLMC_WTE, 0), NULL, N, C, Vp));
    m->logits_state = LOGITS_VALID;
    if (!m->has_targets) return LLMC_OK;

    MODEL_TRY(m, ops->classifier_forward(d, a->losses, a->logits, a->targets, N, V, Vp, dloss));
    if (dloss != 0.0f) m->logits_state = LOGITS_ARE_DLOGITS;
    MODEL_TRY(m, ops->copy_d2h(d, m->host_losses, a->losses, (size_t)N * sizeof(float)));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->host_losses[i];
    m->loss = (float)(sum / N);
    return LLMC_OK;
}

static llmc_status prepare_batch(llmc_model *m, const int *inputs, const int *targets, int B, int T, int training) {
    llmc_status st = check_batch(m, inputs, B, T);
    if (st == LLMC_OK) st = check_tokens(m, inputs, (size_t)B * T, "input");
    if (st == LLMC_OK && targets) st = check_tokens(m, targets, (size_t)B * T, "target");
    if (st == LLMC_OK) st = ensure_acts(m, B, T, training);
    if (st != LLMC_OK) return st;
    size_t N = (size_t)B * T;
    m->B = B;
    m->T = T;
    m->has_targets = targets != NULL;
    m->logits_state = LOGITS_NONE;
    m->loss = NAN;
    memcpy(m->host_inputs, inputs, N * sizeof(int));
    MODEL_TRY(m, m->dev.ops->copy_h2d(&m->dev, m->a.inputs, inputs, N * sizeof(int)));
    if (targets) MODEL_TRY(m, m->dev.ops->copy_h2d(&m->dev, m->a.targets, targets, N * sizeof(int)));
    return LLMC_OK;
}

llmc_status llmc_model_forward(llmc_model *m, const int *inputs, const int *targets, int B, int T) {
    llmc_status st = prepare_batch(m, inputs, targets, B, T, 0);
    return st != LLMC_OK ? st : forward_graph(m, B, T, 0.0f);
}

llmc_status llmc_model_get_logits(llmc_model *m, float *dst) {
    if (m->logits_state != LOGITS_VALID)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no logits: run forward first (a training step does not keep them)");
    const int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    const size_t N = (size_t)m->B * m->T;
    float *row = malloc((size_t)Vp * sizeof(float));
    if (!row) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a logits row");
    for (size_t i = 0; i < N; i++) {
        llmc_status st = m->dev.ops->download_f32(&m->dev, row, at(m, m->a.logits, i * Vp), m->dev.ops->act_dtype, Vp);
        if (st != LLMC_OK) {
            free(row);
            return llmc_model_dev_fail(m, st);
        }
        memcpy(dst + i * V, row, (size_t)V * sizeof(float));
    }
    free(row);
    return LLMC_OK;
}

llmc_status llmc_model_get_logits_at(llmc_model *m, int b, int t, float *dst) {
    if (m->logits_state != LOGITS_VALID)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "no logits: run forward first");
    if (b < 0 || b >= m->B || t < 0 || t >= m->T)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "position (%d, %d) outside the last batch (%d, %d)", b, t, m->B,
                               m->T);
    size_t row = (size_t)b * m->T + t;
    MODEL_TRY(m, m->dev.ops->download_f32(&m->dev, dst, at(m, m->a.logits, row * m->cfg.padded_vocab_size),
                                          m->dev.ops->act_dtype, m->cfg.vocab_size));
    return LLMC_OK;
}

/* ------------------------------------------------------------------ backward */

static llmc_status backward_graph(llmc_model *m) {
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_device *d = &m->dev;
    llmc_acts *a = &m->a;
    llmc_grad_acts *g = &m->g;
    const int B = m->B, T = m->T, N = B * T;
    const int L = m->cfg.num_layers, C = m->cfg.channels, NH = m->cfg.num_heads, HS = C / NH;
    const int Vp = m->cfg.padded_vocab_size;
    const size_t NC = (size_t)N * C;
    const int ln_layered = m->opts.recompute < 2, gelu_layered = m->opts.recompute < 1;

    /* LM head and final layernorm. dresidual accumulates the gradient flowing down the residual stream. */
    MODEL_TRY(m, ops->matmul_backward(d, g->dbtc, grad(m, LLMC_WTE, 0), NULL, a->logits, a->lnf, param(m, LLMC_WTE, 0),
                                      NULL, N, C, Vp));
    MODEL_TRY(m, ops->zero(d, g->dresidual, NC * m->esz));
    MODEL_TRY(m, ops->layernorm_backward(d, g->dresidual, grad(m, LLMC_LNFW, 0), grad(m, LLMC_LNFB, 0), g->dbtc,
                                         at(m, a->residual3, (L - 1) * NC), param(m, LLMC_LNFW, 0), a->lnf_mean,
                                         a->lnf_rstd, N, C));
    for (int l = L - 1; l >= 0; l--) {
        void *res_in = l == 0 ? a->encoded : at(m, a->residual3, (l - 1) * NC);
        void *ln1 = at(m, a->ln1, ln_layered * l * NC), *ln2 = at(m, a->ln2, ln_layered * l * NC);
        void *qkv = at(m, a->qkv, l * 3 * NC), *atty = at(m, a->atty, l * NC);
        void *res2 = at(m, a->residual2, l * NC), *fch = at(m, a->fch, l * 4 * NC);
        void *fch_gelu = at(m, a->fch_gelu, gelu_layered * l * 4 * NC);
        float *lse = a->att_lse + (size_t)l * NH * N;
        float *m1 = a->ln1_mean + (size_t)l * N, *r1 = a->ln1_rstd + (size_t)l * N;
        float *m2 = a->ln2_mean + (size_t)l * N, *r2 = a->ln2_rstd + (size_t)l * N;

        /* recompute what the forward did not keep */
        if (!gelu_layered) MODEL_TRY(m, ops->gelu_forward(d, fch_gelu, fch, (size_t)N * 4 * C));
        if (!ln_layered)
            MODEL_TRY(m, ops->layernorm_forward(d, NULL, ln2, m2, r2, res2, NULL, param(m, LLMC_LN2W, l),
                                                param(m, LLMC_LN2B, l), N, C));
        /* MLP: fcproj (its input was gelu(fch), so dinp comes out as d fch), fc, ln2 */
        MODEL_TRY(m, ops->matmul_backward(d, g->dfch, grad(m, LLMC_FCPROJW, l), grad(m, LLMC_FCPROJB, l), g->dresidual,
                                          fch_gelu, param(m, LLMC_FCPROJW, l), fch, N, 4 * C, C));
        MODEL_TRY(m, ops->matmul_backward(d, g->dbtc, grad(m, LLMC_FCW, l), grad(m, LLMC_FCB, l), g->dfch, ln2,
                                          param(m, LLMC_FCW, l), NULL, N, C, 4 * C));
        MODEL_TRY(m, ops->layernorm_backward(d, g->dresidual, grad(m, LLMC_LN2W, l), grad(m, LLMC_LN2B, l), g->dbtc, res2,
                                             param(m, LLMC_LN2W, l), m2, r2, N, C));
        /* attention block */
        MODEL_TRY(m, ops->matmul_backward(d, g->dbtc, grad(m, LLMC_ATTPROJW, l), grad(m, LLMC_ATTPROJB, l), g->dresidual,
                                          atty, param(m, LLMC_ATTPROJW, l), NULL, N, C, C));
        MODEL_TRY(m, ops->attention_backward(d, g->dqkv, g->dbtc, qkv, atty, lse, B, T, NH, HS));
        if (!ln_layered)
            MODEL_TRY(m, ops->layernorm_forward(d, NULL, ln1, m1, r1, res_in, NULL, param(m, LLMC_LN1W, l),
                                                param(m, LLMC_LN1B, l), N, C));
        MODEL_TRY(m, ops->matmul_backward(d, g->dbtc, grad(m, LLMC_QKVW, l), grad(m, LLMC_QKVB, l), g->dqkv, ln1,
                                          param(m, LLMC_QKVW, l), NULL, N, C, 3 * C));
        MODEL_TRY(m, ops->layernorm_backward(d, g->dresidual, grad(m, LLMC_LN1W, l), grad(m, LLMC_LN1B, l), g->dbtc,
                                             res_in, param(m, LLMC_LN1W, l), m1, r1, N, C));
    }
    MODEL_TRY(m, ops->encoder_backward(d, grad(m, LLMC_WTE, 0), grad(m, LLMC_WPE, 0), g->dresidual, a->inputs,
                                       m->host_inputs, B, T, C));
    m->logits_state = LOGITS_NONE; /* the dlogits were consumed */
    return LLMC_OK;
}

static llmc_status prepare_backward(llmc_model *m) {
    llmc_status st = llmc_model_ensure_grads(m);
    if (st == LLMC_OK) st = ensure_acts(m, m->B, m->T, 1);
    return st;
}

llmc_status llmc_model_backward(llmc_model *m, float loss_scale) {
    if (!m->has_targets || m->logits_state == LOGITS_NONE)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "backward needs a forward with targets first");
    llmc_status st = prepare_backward(m);
    if (st != LLMC_OK) return st;
    if (m->logits_state == LOGITS_VALID) { /* turn the kept logits into dlogits */
        const int N = m->B * m->T;
        MODEL_TRY(m, m->dev.ops->classifier_forward(&m->dev, m->a.losses, m->a.logits, m->a.targets, N,
                                                    m->cfg.vocab_size, m->cfg.padded_vocab_size, loss_scale / N));
    }
    return backward_graph(m);
}

llmc_status llmc_model_forward_backward(llmc_model *m, const int *inputs, const int *targets, int B, int T,
                                        float loss_scale, float *loss) {
    if (!targets) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "training needs targets");
    llmc_status st = prepare_batch(m, inputs, targets, B, T, 1);
    if (st == LLMC_OK) st = prepare_backward(m);
    if (st == LLMC_OK) st = forward_graph(m, B, T, loss_scale / (float)(B * T));
    if (st == LLMC_OK) st = backward_graph(m);
    if (loss) *loss = m->loss;
    return st;
}

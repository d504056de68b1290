/*
 * train.c — the training object: what training adds to a model, and its memory.
 *
 * A trainer refers to a model's weights and owns the rest: one gradient buffer laid out by
 * the same tensor table, AdamW moments and fp32 master weights for its shard of the
 * parameters, and an activation arena sized for the largest batch seen. All of it is
 * allocated on first use, so a model that only generates never pays for it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "train_internal.h"

/* ------------------------------------------------------------------ errors */

LLMC_DEFINE_FAIL(, llmc_train_fail, llmc_train)

llmc_status llmc_train_from_model(llmc_train *t, llmc_status code) {
    snprintf(t->err, sizeof t->err, "%s", t->m && t->m->err[0] ? t->m->err : llmc_status_name(code));
    return code;
}

llmc_status llmc_train_dev_fail(llmc_train *t, llmc_status code) {
    snprintf(t->err, sizeof t->err, "%s", t->m && t->m->dev.err[0] ? t->m->dev.err : llmc_status_name(code));
    return code;
}

const char *llmc_train_error(const llmc_train *t) { return t ? t->err : "out of memory"; }

/* ------------------------------------------------------------------ lifecycle */

void llmc_train_options_default(llmc_train_options *o) {
    memset(o, 0, sizeof *o);
    o->master_weights = 1;
    o->overlap = 1;
}

llmc_train *llmc_train_new(void) {
    llmc_train *t = calloc(1, sizeof *t);
    if (t) llmc_train_options_default(&t->opts);
    return t;
}

static void free_dev(llmc_train *t, void **p) {
    if (*p && t->m && t->m->dev.ops) t->m->dev.ops->free(&t->m->dev, *p);
    *p = NULL;
}

void llmc_train_release(llmc_train *t) {
    void **bufs[] = {&t->grad_mem, (void **)&t->master, (void **)&t->adam_m, (void **)&t->adam_v,
                     &t->act_mem,  &t->grad_act_mem,      &t->micro_mem};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free_dev(t, bufs[i]);
    llmc_train_release_mask(t);
    t->act_capacity = t->grad_act_capacity = 0;
    t->norm_scale = NULL;
    memset(&t->grads, 0, sizeof t->grads);
    t->step = 0;
    t->B = t->T = 0;
    t->has_targets = 0;
    t->logits_state = LOGITS_NONE;
    t->loss = NAN;
}

static void detach(llmc_train *t) {
    llmc_train_drop_teacher(t); /* its model may be t's own: a trainer over it goes first */
    if (!t->m) return;
    llmc_train_release(t);
    t->m->users--;
    t->m = NULL;
}

void llmc_train_free(llmc_train *t) {
    if (!t) return;
    detach(t);
    llmc_train_close_comm(t);
    free(t->host_inputs);
    free(t->host_losses);
    free(t);
}

llmc_status llmc_train_attach(llmc_train *t, llmc_model *m, const llmc_train_options *o) {
    if (!m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "no model to attach to");
    llmc_train_options opts = o ? *o : t->opts;
    if (opts.recompute < 0 || opts.recompute > 2)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "recompute must be 0, 1 or 2 (got %d)", opts.recompute);
    if (!m->dev.ops) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the model is not open on a device yet");
    if (opts.fp8 < 0 || opts.fp8 > 2)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "fp8 must be 0, 1 or 2 (got %d)", opts.fp8);
    if (opts.fp8 && !m->dev.ops->matmul_forward_fp8)
        return llmc_train_fail(t, LLMC_ERR_UNSUPPORTED,
                               "fp8 training needs the CUDA backend on a GPU of compute capability 8.9 or newer; "
                               "this model is on the %s backend",
                               m->dev.ops->name);
    if (opts.exact_accum && strcmp(m->dev.ops->name, "cpu") != 0)
        return llmc_train_fail(t, LLMC_ERR_UNSUPPORTED,
                               "exact accumulation is the CPU backend's: bf16 sums on the GPU are not bit-exact anyway");
    if (m->params && opts.shard_count &&
        (opts.shard_offset >= m->w.count || opts.shard_count > m->w.count - opts.shard_offset))
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "optimizer shard [%zu, +%zu) lies outside the %zu parameters",
                               opts.shard_offset, opts.shard_count, m->w.count);
    if (t->comm && t->m && m != t->m)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "the trainer's communicator is on its model's device: a new model needs a new trainer");
    detach(t);
    t->m = m;
    t->opts = opts;
    m->users++;
    return LLMC_OK;
}

llmc_model *llmc_train_model(llmc_train *t) { return t->m; }

llmc_status llmc_train_require(llmc_train *t) {
    if (!t->m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer is not attached to a model");
    if (!t->m->params)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
    /* a model reloaded under us (a checkpoint load reattaches; nothing else may) has a new shape */
    if (t->grad_mem && t->grads.count != t->m->w.count) llmc_train_release(t);
    return LLMC_OK;
}

llmc_status llmc_train_refuse_quantized(llmc_train *t) {
    return llmc_train_fail(t, LLMC_ERR_UNSUPPORTED,
                           "the model is quantized (int8): it evaluates and generates but does not train; train the "
                           "float model and quantize it afterwards");
}

size_t llmc_train_optimizer_memory(const llmc_train *t) {
    return t->shard_count * ((t->adam_m ? 8 : 0) + (t->master ? 4 : 0));
}

size_t llmc_train_memory(const llmc_train *t) {
    if (!t->m) return 0;
    return t->act_capacity + t->grad_act_capacity + (t->grad_mem ? t->grad_capacity * t->m->esz : 0) +
           (t->micro_mem ? t->grad_capacity * t->m->esz : 0) +
           llmc_train_optimizer_memory(t) + (t->zero_mask ? (t->shard_count + 31) / 32 * 4 : 0) +
           (t->teacher ? llmc_train_memory(t->teacher) : 0);
}

/* ------------------------------------------------------------------ parameter-sized state */

static int keeps_master(const llmc_train *t) { return t->opts.master_weights && t->m->dev.ops->act_dtype != LLMC_F32; }

static void shard_range(llmc_train *t) {
    const size_t n = t->m->w.count;
    if (llmc_train_zero1(t)) { /* ZeRO 1: this rank's piece */
        llmc_train_shard_of(t, llmc_train_rank(t), &t->shard_offset, &t->shard_count);
        return;
    }
    t->shard_offset = t->opts.shard_count ? t->opts.shard_offset : 0;
    t->shard_count = t->opts.shard_count ? t->opts.shard_count : n;
}

/* Gradient elements: the parameters, padded to world * shard for the reduce-scatter. */
static size_t grad_elements(const llmc_train *t) {
    const size_t n = t->m->w.count;
    return llmc_train_distributed(t) ? (size_t)llmc_train_world(t) * llmc_train_shard_size(t) : n;
}

llmc_status llmc_train_ensure_grads(llmc_train *t) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK || t->grad_mem) return st;
    llmc_model *m = t->m;
    if (m->quantized) return llmc_train_refuse_quantized(t);
    llmc_weights_layout(&t->grads, &m->w.cfg, m->dev.ops->act_dtype);
    t->grad_capacity = grad_elements(t);
    const size_t bytes = t->grad_capacity * m->esz, tail = (bytes + 15) & ~(size_t)15;
    TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, &t->grad_mem, tail + 2 * sizeof(float)));
    TRAIN_TRY(t, m->dev.ops->zero(&m->dev, t->grad_mem, tail + 2 * sizeof(float)));
    llmc_weights_bind(&t->grads, t->grad_mem);
    t->norm_scale = (float *)((char *)t->grad_mem + tail);
    return LLMC_OK;
}

/* Master weights from the model's fp32 values (the exact ones its bf16 weights were rounded
 * from, when it still has them). */
static llmc_status fill_master(llmc_train *t) {
    llmc_model *m = t->m;
    float *host = malloc(m->w.count * sizeof(float));
    if (!host) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host memory for the master weights");
    llmc_status st = llmc_model_get_params(m, host);
    if (st != LLMC_OK)
        st = llmc_train_from_model(t, st);
    else
        st = m->dev.ops->copy_h2d(&m->dev, t->master, host + t->shard_offset, t->shard_count * sizeof(float));
    if (st == LLMC_OK) st = m->dev.ops->synchronize(&m->dev);
    free(host);
    if (st != LLMC_OK) return t->err[0] ? st : llmc_train_dev_fail(t, st);
    t->master_version = m->version;
    llmc_model_drop_source(m); /* the master weights hold those values now */
    return LLMC_OK;
}

llmc_status llmc_train_ensure_optimizer(llmc_train *t) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;
    if (!t->adam_m) {
        shard_range(t);
        if (t->shard_count == 0)
            return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                                   "%zu parameters are too few to split over %d ranks (ZeRO-1): use -z 0",
                                   m->w.count, llmc_train_world(t));
        const size_t bytes = t->shard_count * sizeof(float);
        float **state[] = {&t->adam_m, &t->adam_v};
        for (int i = 0; i < 2; i++) {
            TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, (void **)state[i], bytes));
            TRAIN_TRY(t, m->dev.ops->zero(&m->dev, *state[i], bytes));
        }
        if (keeps_master(t)) TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, (void **)&t->master, bytes));
        t->master_version = m->version - 1; /* not filled yet */
    }
    if (t->master && t->master_version != m->version) return fill_master(t);
    return LLMC_OK;
}

/* ------------------------------------------------------------------ activation memory */

/* Lays the activations of (B,T) out in base (or just measures when base is NULL). */
static size_t plan_acts(const llmc_train *t, int B, int T, char *base, llmc_acts *a) {
    const llmc_config *c = &t->m->w.cfg;
    const size_t L = c->num_layers, C = c->channels, NH = c->num_heads, Vp = c->padded_vocab_size;
    const size_t N = (size_t)B * T, e = t->m->esz, f = sizeof(float);
    const size_t L_ln = t->opts.recompute >= 2 ? 1 : L, L_gelu = t->opts.recompute >= 1 ? 1 : L;
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

static size_t plan_grad_acts(const llmc_train *t, int B, int T, char *base, llmc_grad_acts *g) {
    const size_t N = (size_t)B * T, C = t->m->w.cfg.channels, e = t->m->esz;
    llmc_arena p = {0, base};
    g->dresidual = llmc_arena_take(&p, N * C * e);
    g->dbtc = llmc_arena_take(&p, N * C * e);
    g->dqkv = llmc_arena_take(&p, N * 3 * C * e);
    g->dfch = llmc_arena_take(&p, N * 4 * C * e);
    return p.offset;
}

static double gib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0 * 1024.0); }

/* Checks up front that the whole training footprint fits, with numbers and advice if not. */
static llmc_status check_fits(llmc_train *t, int B, int T, size_t more_bytes, int training) {
    llmc_model *m = t->m;
    size_t free_b = 0, total_b = 0;
    TRAIN_TRY(t, m->dev.ops->memory_info(&m->dev, &free_b, &total_b));
    if (total_b == 0 || more_bytes <= free_b) return LLMC_OK; /* host memory: malloc will tell */
    llmc_acts a;
    llmc_grad_acts g;
    size_t acts = plan_acts(t, B, T, NULL, &a), gacts = training ? plan_grad_acts(t, B, T, NULL, &g) : 0;
    size_t P = m->w.count;
    size_t opt = training ? 8 + (keeps_master(t) ? 4 : 0) : 0;
    return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY,
                           "not enough %s memory for B=%d T=%d: need %.2f GiB more (activations %.2f GiB, "
                           "backward scratch %.2f GiB; parameters+grads+optimizer take %.2f GiB) but only %.2f of "
                           "%.2f GiB are free. Try a smaller -b, recompute (-r 1 or -r 2) or a smaller model.",
                           m->dev.ops->act_dtype == LLMC_F32 ? "host" : "device", B, T, gib(more_bytes), gib(acts),
                           gib(gacts), gib(P * (2 * m->esz + opt)), gib(free_b),
                           gib(total_b));
}

static llmc_status ensure_host_buffers(llmc_train *t, size_t N) {
    if (N <= t->host_capacity) return LLMC_OK;
    int *in = realloc(t->host_inputs, N * sizeof(int));
    if (in) t->host_inputs = in;
    float *lo = realloc(t->host_losses, N * sizeof(float));
    if (lo) t->host_losses = lo;
    if (!in || !lo) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host buffers for %zu tokens", N);
    t->host_capacity = N;
    return LLMC_OK;
}

/* Bytes of parameter-sized training state that the first step will still allocate. */
static size_t state_to_come(const llmc_train *t) {
    const llmc_model *m = t->m;
    size_t n = 0;
    if (!t->grad_mem) n += grad_elements(t) * m->esz;
    if (!t->adam_m) {
        const size_t shard = llmc_train_zero1(t)   ? llmc_train_shard_size(t)
                             : t->opts.shard_count ? t->opts.shard_count
                                                   : m->w.count;
        n += shard * (8 + (keeps_master(t) ? 4 : 0));
    }
    return n;
}

llmc_status llmc_train_ensure_acts(llmc_train *t, int B, int T, int training) {
    llmc_model *m = t->m;
    size_t need = plan_acts(t, B, T, NULL, &t->a);
    size_t gneed = training ? plan_grad_acts(t, B, T, NULL, &t->g) : 0;
    size_t grow = (need > t->act_capacity ? need : 0) + (gneed > t->grad_act_capacity ? gneed : 0);
    if (grow) {
        /* release first so the check sees the memory we would give back */
        if (need > t->act_capacity) {
            free_dev(t, &t->act_mem);
            t->act_capacity = 0;
        }
        if (gneed > t->grad_act_capacity) {
            free_dev(t, &t->grad_act_mem);
            t->grad_act_capacity = 0;
        }
        llmc_status st = check_fits(t, B, T, grow + (training ? state_to_come(t) : 0), training);
        if (st != LLMC_OK) return st;
    }
    if (need > t->act_capacity) {
        TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, &t->act_mem, need));
        t->act_capacity = need;
    }
    if (gneed > t->grad_act_capacity) {
        TRAIN_TRY(t, m->dev.ops->alloc(&m->dev, &t->grad_act_mem, gneed));
        t->grad_act_capacity = gneed;
    }
    plan_acts(t, B, T, t->act_mem, &t->a);
    if (t->grad_act_mem && gneed) plan_grad_acts(t, B, T, t->grad_act_mem, &t->g);
    return ensure_host_buffers(t, (size_t)B * T);
}

/* ------------------------------------------------------------------ parameter access */

llmc_status llmc_train_get_params(llmc_train *t, float *dst) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;
    st = llmc_model_get_params(m, dst);
    if (st != LLMC_OK) return llmc_train_from_model(t, st);
    if (t->master && t->master_version == m->version)
        TRAIN_TRY(t, m->dev.ops->copy_d2h(&m->dev, dst + t->shard_offset, t->master, t->shard_count * sizeof(float)));
    return LLMC_OK;
}

llmc_status llmc_train_set_params(llmc_train *t, const float *src) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;
    st = llmc_model_set_params(m, src);
    if (st != LLMC_OK) return llmc_train_from_model(t, st);
    t->logits_state = LOGITS_NONE;
    if (!t->master) return LLMC_OK;
    TRAIN_TRY(t, m->dev.ops->copy_h2d(&m->dev, t->master, src + t->shard_offset, t->shard_count * sizeof(float)));
    TRAIN_TRY(t, m->dev.ops->synchronize(&m->dev));
    t->master_version = m->version;
    llmc_model_drop_source(m);
    return LLMC_OK;
}

llmc_status llmc_train_get_grads(llmc_train *t, float *dst) {
    llmc_status st = llmc_train_ensure_grads(t);
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;
    TRAIN_TRY(t, m->dev.ops->download_f32(&m->dev, dst, t->grad_mem, m->dev.ops->act_dtype, t->grads.count));
    return LLMC_OK;
}

float *llmc_train_grads_host(llmc_train *t) {
    if (!t->m || !t->m->dev.ops || strcmp(t->m->dev.ops->name, "cpu") != 0) return NULL;
    return llmc_train_ensure_grads(t) == LLMC_OK ? (float *)t->grad_mem : NULL;
}

llmc_status llmc_train_zero_grad(llmc_train *t) {
    llmc_status st = llmc_train_ensure_grads(t);
    if (st != LLMC_OK) return st;
    TRAIN_TRY(t, t->m->dev.ops->zero(&t->m->dev, t->grad_mem, t->grad_capacity * t->m->esz));
    t->grads_reduced = 0;
    t->micro_steps = 0;
    return LLMC_OK;
}

int llmc_train_step_count(const llmc_train *t) { return t->step; }
float llmc_train_loss(const llmc_train *t) { return t->has_targets ? t->loss : NAN; }

llmc_status llmc_train_save_model(llmc_train *t, const char *path, int version) {
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    const int fresh = t->master && t->master_version == t->m->version;
    st = llmc_model_write(t->m, path, version, fresh ? t->master : NULL, t->shard_offset, t->shard_count);
    return st == LLMC_OK ? st : llmc_train_from_model(t, st);
}

/*
 * model.c — the model object: a device and the weights on it.
 *
 * The model owns one flat parameter buffer, laid out and typed by its tensor table
 * (weights.c). Everything that computes with the weights is elsewhere and refers to the
 * model: trainers (train.c) add gradients, activations and optimizer state; generation
 * sessions (generate.c) add a KV cache. The model counts them (users) so that it refuses
 * to swap its weights out from under them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"

/* ------------------------------------------------------------------ errors */

LLMC_DEFINE_FAIL(, llmc_model_fail, llmc_model)

llmc_status llmc_model_dev_fail(llmc_model *m, llmc_status code) {
    snprintf(m->err, sizeof m->err, "%s", m->dev.err[0] ? m->dev.err : llmc_status_name(code));
    return code;
}

const char *llmc_model_error(const llmc_model *m) { return m ? m->err : "out of memory"; }

/* ------------------------------------------------------------------ lifecycle */

/* An integer knob from the environment, or fallback when unset or not a number. */
static int env_int(const char *name, int fallback) {
    const char *e = getenv(name);
    if (!e || !*e) return fallback;
    char *end;
    long v = strtol(e, &end, 10);
    return *end == '\0' ? (int)v : fallback;
}

void llmc_model_options_default(llmc_model_options *o) {
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->pdl = env_int("LLMC_PDL", 1) != 0;
    int rows = env_int("LLMC_GEMV", 16);
    o->skinny_rows = rows < 0 ? 0 : rows;
    o->int8_mma = env_int("LLMC_INT8_MMA", 1) != 0;
    const int fuse = env_int("LLMC_FUSE_LN", 1);
    o->fuse_layernorm = fuse < 0 ? 0 : (fuse > 2 ? 2 : fuse);
}

/* Fills the -1 ("default") fields of o from the defaults. */
static llmc_model_options resolve_options(const llmc_model_options *o) {
    llmc_model_options d, r;
    llmc_model_options_default(&d);
    r = o ? *o : d;
    if (!r.backend) r.backend = d.backend;
    if (r.pdl < 0) r.pdl = d.pdl;
    if (r.skinny_rows < 0) r.skinny_rows = d.skinny_rows;
    if (r.int8_mma < 0) r.int8_mma = d.int8_mma;
    if (r.fuse_layernorm < 0) r.fuse_layernorm = d.fuse_layernorm;
    return r;
}

llmc_model *llmc_model_new(void) { return calloc(1, sizeof(llmc_model)); }

void llmc_model_drop_source(llmc_model *m) {
    free(m->fp32_source);
    m->fp32_source = NULL;
}

void llmc_model_release_weights(llmc_model *m) {
    if (m->params && m->dev.ops) m->dev.ops->free(&m->dev, m->params);
    m->params = NULL;
    m->param_bytes = 0;
    m->quantized = 0;
    memset(&m->w, 0, sizeof m->w);
    llmc_model_drop_source(m);
}

void llmc_model_free(llmc_model *m) {
    if (!m) return;
    llmc_model_release_weights(m);
    llmc_device_close(&m->dev);
    free(m);
}

llmc_status llmc_model_open(llmc_model *m, const llmc_model_options *o) {
    llmc_model_options r = resolve_options(o ? o : (m->dev.ops ? &m->opts : NULL));
    if (m->dev.ops && strcmp(m->dev.ops->name, r.backend) == 0 && m->opts.device == r.device &&
        m->dev.tuning.pdl == r.pdl && m->dev.tuning.skinny_rows == r.skinny_rows &&
        m->dev.tuning.int8_mma == r.int8_mma && m->dev.tuning.fuse_layernorm == r.fuse_layernorm)
        return LLMC_OK;
    if (m->users > 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "cannot move the model to another device while %d trainer(s) or session(s) use it",
                               m->users);
    llmc_device dev;
    llmc_device_tuning tune = {r.pdl, r.skinny_rows, r.int8_mma, r.fuse_layernorm};
    llmc_status st = llmc_device_open(&dev, r.backend, r.device, &tune);
    if (st != LLMC_OK) {
        snprintf(m->err, sizeof m->err, "%s", dev.err);
        return st;
    }
    llmc_model_release_weights(m);
    llmc_device_close(&m->dev);
    m->dev = dev;
    m->opts = r;
    m->opts.backend = dev.ops->name; /* a static string: the caller's may not outlive us */
    m->esz = llmc_dtype_size(dev.ops->act_dtype);
    return LLMC_OK;
}

llmc_status llmc_model_require_weights(llmc_model *m) {
    return m->params ? LLMC_OK
                     : llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters: load or init it first");
}

llmc_status llmc_model_begin_install(llmc_model *m, const llmc_model_options *o) {
    if (m->users > 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "cannot replace the weights while %d trainer(s) or session(s) use the model", m->users);
    return llmc_model_open(m, o ? o : (m->dev.ops ? &m->opts : NULL));
}

llmc_status llmc_model_install(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, float *host,
                               int keep_host) {
    llmc_status st = llmc_model_begin_install(m, o);
    if (st != LLMC_OK) return st;
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_weights w;
    llmc_weights_layout(&w, cfg, ops->act_dtype);
    void *buf = NULL;
    MODEL_TRY(m, ops->alloc(&m->dev, &buf, w.count * m->esz));
    st = ops->upload_f32(&m->dev, buf, ops->act_dtype, host, w.count);
    if (st != LLMC_OK) {
        st = llmc_model_dev_fail(m, st);
        ops->free(&m->dev, buf);
        return st;
    }
    llmc_model_release_weights(m);
    m->params = buf;
    m->param_bytes = w.count * m->esz;
    m->w = w;
    llmc_weights_bind(&m->w, buf);
    m->version++;
    if (keep_host && ops->act_dtype != LLMC_F32)
        m->fp32_source = host; /* the caller hands it over */
    else if (keep_host)
        free(host);
    return LLMC_OK;
}

llmc_status llmc_model_init_random(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, uint64_t seed) {
    llmc_config c = *cfg;
    if (llmc_config_validate(&c, m->err, sizeof m->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    llmc_weights w;
    llmc_weights_layout(&w, &c, LLMC_F32);
    /* Drawn on the host so every backend starts from the same numbers for a seed. */
    float *host = malloc(w.count * sizeof(float));
    if (!host)
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for init",
                               w.count * sizeof(float));
    llmc_weights_init_host(&w, host, seed);
    llmc_status st = llmc_model_install(m, o, &c, host, 1);
    if (st != LLMC_OK) free(host);
    return st;
}

llmc_status llmc_model_init_values(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                   const float *values) {
    llmc_config c = *cfg;
    if (llmc_config_validate(&c, m->err, sizeof m->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    llmc_weights w;
    llmc_weights_layout(&w, &c, LLMC_F32);
    llmc_status st = llmc_weights_check_finite(&w, values, "the given weights", m->err, sizeof m->err);
    if (st != LLMC_OK) return st;
    float *host = malloc(w.count * sizeof(float)); /* the model keeps its own copy (fp32_source) */
    if (!host) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", w.count * sizeof(float));
    memcpy(host, values, w.count * sizeof(float));
    st = llmc_model_install(m, o, &c, host, 1);
    if (st != LLMC_OK) free(host);
    return st;
}

/* ------------------------------------------------------------------ inspection */

const llmc_config *llmc_model_config(const llmc_model *m) { return &m->w.cfg; }
const char *llmc_model_backend(const llmc_model *m) { return m->dev.ops ? m->dev.ops->name : "none"; }
size_t llmc_model_num_params(const llmc_model *m) { return m->w.count; }
const llmc_weights *llmc_model_weights(const llmc_model *m) { return m->params ? &m->w : NULL; }
size_t llmc_model_memory(const llmc_model *m) { return m->params ? m->param_bytes : 0; }

/* ------------------------------------------------------------------ parameter access */

llmc_status llmc_model_get_params(llmc_model *m, float *dst) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    if (m->fp32_source) {
        memcpy(dst, m->fp32_source, m->w.count * sizeof(float));
        return LLMC_OK;
    }
    if (m->quantized) return llmc_quant_get_params(m, dst);
    MODEL_TRY(m, m->dev.ops->download_f32(&m->dev, dst, m->params, m->dev.ops->act_dtype, m->w.count));
    return LLMC_OK;
}

llmc_status llmc_model_set_params(llmc_model *m, const float *src) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters yet");
    if (m->quantized)
        return llmc_model_fail(m, LLMC_ERR_UNSUPPORTED, "the weights of a quantized (int8) model cannot be set: load "
                               "the float model, set them there and quantize again");
    llmc_status bad = llmc_weights_check_finite(&m->w, src, "set_params", m->err, sizeof m->err);
    if (bad != LLMC_OK) return bad; /* what the loader would refuse, the model refuses too */
    llmc_model_drop_source(m);
    MODEL_TRY(m, m->dev.ops->upload_f32(&m->dev, m->params, m->dev.ops->act_dtype, src, m->w.count));
    m->version++;
    if (m->dev.ops->act_dtype != LLMC_F32) { /* a later trainer's master weights start from these exact values */
        m->fp32_source = malloc(m->w.count * sizeof(float));
        if (m->fp32_source) memcpy(m->fp32_source, src, m->w.count * sizeof(float));
    }
    return LLMC_OK;
}

float *llmc_model_params_host(llmc_model *m) {
    return (m->dev.ops && !m->quantized && m->dev.ops->act_dtype == LLMC_F32 && strcmp(m->dev.ops->name, "cpu") == 0)
               ? (float *)m->params
               : NULL;
}

/*
 * quant.c — int8 weight-only quantization: the scheme and the model's quantized layout.
 *
 * A quantized model keeps one device buffer, in three sections:
 *   the plain tensors (norms, biases, wpe, and wte unless it is quantized) in the backend's
 *   dtype, packed in table order; then the int8 values of the quantized tensors; then their
 *   fp32 scales. The tensor table points into it: a quantized tensor has dtype LLMC_I8, its
 *   scales and its group size, so every op sees what it is given and refuses what it has no
 *   kernel for (backends.h). Decode reads a quarter of the fp32 bytes, half of the bf16 ones.
 * The file format (version 8) is in quant_file.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"
#include "quant.h"

void llmc_quant_options_default(llmc_quant_options *q) {
    q->group_size = 0;
    q->embeddings = 1;
}

static int group_of(int group, int cols) { return group > 0 && group < cols ? group : cols; }

void llmc_quantize_int8(const float *w, size_t rows, int cols, int group, int8_t *q, float *scales) {
    const int g = group_of(group, cols), gpr = (cols + g - 1) / g;
    const long nrows = (long)rows;
#pragma omp parallel for schedule(static) if (nrows * cols > 65536)
    for (long r = 0; r < nrows; r++)
        for (int j = 0; j < gpr; j++) {
            const float *x = w + (size_t)r * cols + (size_t)j * g;
            int8_t *y = q + (size_t)r * cols + (size_t)j * g;
            const int n = cols - j * g < g ? cols - j * g : g;
            float amax = 0.0f;
            for (int k = 0; k < n; k++) amax = fmaxf(amax, fabsf(x[k]));
            const float s = amax / 127.0f;
            scales[(size_t)r * gpr + j] = s;
            /* dividing by s (not multiplying by 1/s) keeps |x| = amax exactly at 127 */
            for (int k = 0; k < n; k++) {
                const float v = s > 0.0f ? rintf(x[k] / s) : 0.0f;
                y[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
            }
        }
}

void llmc_dequantize_int8(const int8_t *q, const float *scales, size_t rows, int cols, int group, float *w) {
    const int g = group_of(group, cols), gpr = (cols + g - 1) / g;
    const long nrows = (long)rows;
#pragma omp parallel for schedule(static) if (nrows * cols > 65536)
    for (long r = 0; r < nrows; r++)
        for (int k = 0; k < cols; k++)
            w[(size_t)r * cols + k] = (float)q[(size_t)r * cols + k] * scales[(size_t)r * gpr + k / g];
}

/* ------------------------------------------------------------------ the layout */

unsigned llmc_quant_mask(const llmc_quant_options *q) {
    unsigned mask = 1u << LLMC_QKVW | 1u << LLMC_ATTPROJW | 1u << LLMC_FCW | 1u << LLMC_FCPROJW;
    return q->embeddings ? mask | 1u << LLMC_WTE : mask;
}

llmc_status llmc_quant_check(const llmc_quant_options *q, char *err, size_t errlen) {
    if (q->group_size < 0 || q->group_size % 16 != 0) {
        snprintf(err, errlen, "int8 group size must be 0 (one scale per output channel) or a positive multiple of "
                 "16, not %d", q->group_size);
        return LLMC_ERR_INVALID_ARG;
    }
    if (q->embeddings != 0 && q->embeddings != 1) {
        snprintf(err, errlen, "int8 embeddings must be 0 or 1, not %d", q->embeddings);
        return LLMC_ERR_INVALID_ARG;
    }
    return LLMC_OK;
}

static int cols_of(const llmc_tensor *t) { return t->shape[t->ndim - 1]; }

size_t llmc_quant_scale_count(const llmc_tensor *t, int group) {
    const int cols = cols_of(t), g = group_of(group, cols);
    return t->numel / (size_t)cols * (size_t)((cols + g - 1) / g);
}

/* Where each section and tensor goes: offsets in bytes (plain), elements (int8, scales). */
typedef struct qplan {
    size_t plain_at[LLMC_NUM_PARAM_TENSORS], q_at[LLMC_NUM_PARAM_TENSORS], s_at[LLMC_NUM_PARAM_TENSORS];
    size_t q_base, s_base, bytes;
} qplan;

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static void plan_layout(const llmc_weights *w, unsigned mask, int group, size_t esz, qplan *p) {
    size_t plain = 0, q = 0, s = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &w->t[i];
        if (mask >> i & 1u) {
            p->q_at[i] = q;
            p->s_at[i] = s;
            q += t->numel;
            s += llmc_quant_scale_count(t, group);
        } else {
            p->plain_at[i] = plain;
            plain += t->numel * esz;
        }
    }
    p->q_base = align256(plain);
    p->s_base = align256(p->q_base + q);
    p->bytes = p->s_base + s * sizeof(float);
}

void llmc_qhost_free(llmc_qhost *h) {
    free(h->plain);
    free(h->qdata);
    free(h->scales);
    memset(h, 0, sizeof *h);
}

llmc_status llmc_qhost_alloc(llmc_qhost *h, const llmc_weights *w, const llmc_quant_options *q) {
    memset(h, 0, sizeof *h);
    h->q = *q;
    h->mask = llmc_quant_mask(q);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        if (h->mask >> i & 1u) {
            h->qcount += w->t[i].numel;
            h->scount += llmc_quant_scale_count(&w->t[i], q->group_size);
        }
    h->plain = malloc(w->count * sizeof(float));
    h->qdata = malloc(h->qcount);
    h->scales = malloc(h->scount * sizeof(float));
    if (h->plain && h->qdata && h->scales) return LLMC_OK;
    llmc_qhost_free(h);
    return LLMC_ERR_OUT_OF_MEMORY;
}

llmc_status llmc_model_install_quantized(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                         const llmc_qhost *h) {
    llmc_status st = llmc_model_begin_install(m, o);
    if (st != LLMC_OK) return st;
    const llmc_backend_ops *ops = m->dev.ops;
    llmc_weights w;
    llmc_weights_layout(&w, cfg, ops->act_dtype);
    qplan p;
    plan_layout(&w, h->mask, h->q.group_size, m->esz, &p);
    char *buf = NULL;
    MODEL_TRY(m, ops->alloc(&m->dev, (void **)&buf, p.bytes));
    size_t qo = 0, so = 0; /* the host image holds the quantized tensors back to back, table order */
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS && st == LLMC_OK; i++) {
        llmc_tensor *t = &w.t[i];
        if (h->mask >> i & 1u) {
            const size_t ns = llmc_quant_scale_count(t, h->q.group_size);
            t->dtype = LLMC_I8;
            t->data = buf + p.q_base + p.q_at[i];
            t->scales = buf + p.s_base + p.s_at[i] * sizeof(float);
            t->group_size = group_of(h->q.group_size, cols_of(t));
            st = ops->copy_h2d(&m->dev, t->data, h->qdata + qo, t->numel);
            if (st == LLMC_OK) st = ops->copy_h2d(&m->dev, (void *)t->scales, h->scales + so, ns * sizeof(float));
            qo += t->numel;
            so += ns;
        } else {
            t->data = buf + p.plain_at[i];
            st = ops->upload_f32(&m->dev, t->data, ops->act_dtype, h->plain + t->offset, t->numel);
        }
    }
    if (st == LLMC_OK) st = ops->synchronize(&m->dev);
    if (st != LLMC_OK) {
        st = llmc_model_dev_fail(m, st);
        ops->free(&m->dev, buf);
        return st;
    }
    llmc_model_release_weights(m);
    m->params = buf;
    m->param_bytes = p.bytes;
    m->w = w;
    m->w.data = buf;
    m->quantized = 1;
    m->quant = h->q;
    m->version++;
    return LLMC_OK;
}

/* ------------------------------------------------------------------ on a model */

int llmc_model_quantized(const llmc_model *m, llmc_quant_options *q) {
    if (q && m->quantized) *q = m->quant;
    return m->quantized;
}

llmc_status llmc_model_quantize(llmc_model *m, const llmc_quant_options *q) {
    llmc_quant_options opts;
    llmc_quant_options_default(&opts);
    if (q) opts = *q;
    if (llmc_quant_check(&opts, m->err, sizeof m->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    llmc_status st = llmc_model_require_weights(m);
    if (st != LLMC_OK) return st;
    if (m->quantized) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "the model is quantized (int8) already");
    if (m->users > 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "cannot quantize while %d trainer(s) or session(s) use the model",
                               m->users);
    llmc_qhost h;
    if (llmc_qhost_alloc(&h, &m->w, &opts) != LLMC_OK)
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host memory to quantize the model");
    st = llmc_model_get_params(m, h.plain); /* the fp32 values loaded, where the model still has them */
    size_t qo = 0, so = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS && st == LLMC_OK; i++) {
        if (!(h.mask >> i & 1u)) continue;
        const llmc_tensor *t = &m->w.t[i];
        const int cols = cols_of(t);
        llmc_quantize_int8(h.plain + t->offset, t->numel / (size_t)cols, cols, opts.group_size, h.qdata + qo,
                           h.scales + so);
        qo += t->numel;
        so += llmc_quant_scale_count(t, opts.group_size);
    }
    llmc_config cfg = m->w.cfg;
    if (st == LLMC_OK) st = llmc_model_install_quantized(m, NULL, &cfg, &h);
    llmc_qhost_free(&h);
    return st;
}

llmc_status llmc_quant_get_params(llmc_model *m, float *dst) {
    const llmc_backend_ops *ops = m->dev.ops;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &m->w.t[i];
        if (t->dtype != LLMC_I8) {
            MODEL_TRY(m, ops->download_f32(&m->dev, dst + t->offset, t->data, t->dtype, t->numel));
            continue;
        }
        const size_t ns = llmc_quant_scale_count(t, t->group_size);
        int8_t *q = malloc(t->numel);
        float *s = malloc(ns * sizeof(float));
        llmc_status st = q && s ? ops->copy_d2h(&m->dev, q, t->data, t->numel) : LLMC_ERR_OUT_OF_MEMORY;
        if (st == LLMC_OK) st = ops->copy_d2h(&m->dev, s, t->scales, ns * sizeof(float));
        if (st == LLMC_OK)
            llmc_dequantize_int8(q, s, t->numel / (size_t)cols_of(t), cols_of(t), t->group_size, dst + t->offset);
        free(q);
        free(s);
        if (st == LLMC_ERR_OUT_OF_MEMORY)
            return llmc_model_fail(m, st, "cannot allocate host memory to dequantize tensor %s", t->name);
        if (st != LLMC_OK) return llmc_model_dev_fail(m, st);
    }
    return LLMC_OK;
}

/*
 * quant_file.c — llmc's int8 model file: version 8 of the model .bin.
 *
 * Header: llm.c's {20240326, 8, maxT, V, L, NH, C, Vp}, then [8] the group size (0: one scale
 * per output channel), [9] the quantized tensors as a bit mask (bit i: tensor i of the table),
 * [10] the scale type (1: fp32). Body: every tensor in table order; a plain one as fp32, a
 * quantized one as its int8 values (row-major) followed by its scales (row-major, one per
 * group). llm.c, and llmc before this format, refuse version 8 by name rather than misread it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "file_io.h"
#include "quant.h"

enum { H_GROUP = 8, H_MASK = 9, H_SCALE_TYPE = 10, SCALE_FP32 = 1 };

static llmc_status corrupt(llmc_model *m, const char *path, const char *what, const char *tensor, size_t at) {
    return llmc_model_fail(m, LLMC_ERR_FORMAT, "int8 model file '%s' is corrupt: tensor %s %s at element %zu", path,
                           tensor, what, at);
}

/* Reads and checks the body into h: finite plain values, q in [-127, 127], finite scales >= 0. */
static llmc_status read_body(llmc_model *m, const char *path, FILE *f, const llmc_weights *w, llmc_qhost *h) {
    size_t qo = 0, so = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &w->t[i];
        if (!(h->mask >> i & 1u)) {
            float *v = h->plain + t->offset;
            if (fread(v, sizeof(float), t->numel, f) != t->numel)
                return llmc_model_fail(m, LLMC_ERR_IO, "read error in model file '%s'", path);
            for (size_t j = 0; j < t->numel; j++)
                if (!isfinite(v[j])) return corrupt(m, path, isnan(v[j]) ? "holds NaN" : "holds Inf", t->name, j);
            continue;
        }
        const size_t ns = llmc_quant_scale_count(t, h->q.group_size);
        int8_t *q = h->qdata + qo;
        float *s = h->scales + so;
        if (fread(q, 1, t->numel, f) != t->numel || fread(s, sizeof(float), ns, f) != ns)
            return llmc_model_fail(m, LLMC_ERR_IO, "read error in model file '%s'", path);
        for (size_t j = 0; j < t->numel; j++)
            if (q[j] == -128) return corrupt(m, path, "holds -128 (int8 weights lie in [-127, 127])", t->name, j);
        for (size_t j = 0; j < ns; j++)
            if (!(isfinite(s[j]) && s[j] >= 0.0f)) return corrupt(m, path, "has a scale that is negative or not finite",
                                                                  t->name, j);
        qo += t->numel;
        so += ns;
    }
    return LLMC_OK;
}

llmc_status llmc_quant_load(llmc_model *m, const llmc_model_options *o, const char *path, FILE *f,
                            const int32_t *hd, const llmc_config *cfg, long size) {
    if (hd[H_SCALE_TYPE] != SCALE_FP32)
        return llmc_model_fail(m, LLMC_ERR_FORMAT, "int8 model file '%s' has scale type %d; this llmc reads 1 (fp32)",
                               path, hd[H_SCALE_TYPE]);
    llmc_quant_options q = {hd[H_GROUP], 1};
    char why[LLMC_ERR_LEN];
    if (llmc_quant_check(&q, why, sizeof why) != LLMC_OK)
        return llmc_model_fail(m, LLMC_ERR_FORMAT, "int8 model file '%s' is corrupt: %s", path, why);
    const unsigned mask = (unsigned)hd[H_MASK];
    if (mask != llmc_quant_mask(&q)) {
        q.embeddings = 0;
        if (mask != llmc_quant_mask(&q))
            return llmc_model_fail(m, LLMC_ERR_FORMAT,
                                   "int8 model file '%s' quantizes the tensors of mask 0x%x; this llmc reads the four "
                                   "matmul weights of each layer (0x%x), with or without wte",
                                   path, mask, llmc_quant_mask(&q));
    }
    llmc_weights w;
    llmc_weights_layout(&w, cfg, LLMC_F32);
    llmc_qhost h;
    if (llmc_qhost_alloc(&h, &w, &q) != LLMC_OK)
        return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host memory to read '%s'", path);
    long expect = LLMC_HEADER_INTS * (long)sizeof(int32_t) + (long)h.qcount + (long)(h.scount * sizeof(float));
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        if (!(mask >> i & 1u)) expect += (long)(w.t[i].numel * sizeof(float));
    llmc_status st = LLMC_OK;
    if (size != expect)
        st = llmc_model_fail(m, LLMC_ERR_FORMAT,
                             "int8 model file '%s' is %s: its header (L=%d H=%d C=%d V=%d, group %d) needs %ld bytes "
                             "but the file has %ld", path, size < expect ? "truncated" : "corrupt (too long)",
                             cfg->num_layers, cfg->num_heads, cfg->channels, cfg->vocab_size, q.group_size, expect, size);
    if (st == LLMC_OK) st = read_body(m, path, f, &w, &h);
    if (st == LLMC_OK) st = llmc_model_install_quantized(m, o, cfg, &h);
    llmc_qhost_free(&h);
    return st;
}

/* One tensor's bytes as the file holds them, into buf (big enough for the largest tensor). */
static llmc_status tensor_bytes(llmc_model *m, const llmc_tensor *t, void *buf, size_t *bytes) {
    const llmc_backend_ops *ops = m->dev.ops;
    if (t->dtype != LLMC_I8) {
        MODEL_TRY(m, ops->download_f32(&m->dev, buf, t->data, t->dtype, t->numel));
        const float *v = buf;
        for (size_t j = 0; j < t->numel; j++)
            if (!isfinite(v[j]))
                return llmc_model_fail(m, LLMC_ERR_NUMERIC, "refusing to save non-finite weights: tensor %s element %zu",
                                       t->name, j);
        *bytes = t->numel * sizeof(float);
        return LLMC_OK;
    }
    const size_t ns = llmc_quant_scale_count(t, t->group_size);
    MODEL_TRY(m, ops->copy_d2h(&m->dev, buf, t->data, t->numel));
    MODEL_TRY(m, ops->copy_d2h(&m->dev, (char *)buf + t->numel, t->scales, ns * sizeof(float)));
    *bytes = t->numel + ns * sizeof(float);
    return LLMC_OK;
}

llmc_status llmc_quant_write(llmc_model *m, const char *path) {
    if (!m->quantized)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "model file version 8 (int8) needs a quantized model: quantize it first");
    size_t biggest = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &m->w.t[i];
        const size_t b = t->dtype == LLMC_I8 ? t->numel + llmc_quant_scale_count(t, t->group_size) * sizeof(float)
                                             : t->numel * sizeof(float);
        biggest = b > biggest ? b : biggest;
    }
    void *buf = malloc(biggest);
    if (!buf) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to save", biggest);
    int32_t h[LLMC_HEADER_INTS];
    llmc_model_file_header(&m->w.cfg, LLMC_MODEL_VERSION_INT8, h);
    h[H_GROUP] = m->quant.group_size;
    h[H_MASK] = (int32_t)llmc_quant_mask(&m->quant);
    h[H_SCALE_TYPE] = SCALE_FP32;
    llmc_atomic_file af;
    llmc_status st = llmc_atomic_open(&af, path, m->err, sizeof m->err);
    if (st == LLMC_OK) {
        st = llmc_atomic_write(&af, h, sizeof h, m->err, sizeof m->err);
        for (int i = 0; i < LLMC_NUM_PARAM_TENSORS && st == LLMC_OK; i++) {
            size_t bytes = 0;
            st = tensor_bytes(m, &m->w.t[i], buf, &bytes);
            if (st == LLMC_OK) st = llmc_atomic_write(&af, buf, bytes, m->err, sizeof m->err);
        }
        st = llmc_atomic_close(&af, st, m->err, sizeof m->err);
    }
    free(buf);
    return st;
}

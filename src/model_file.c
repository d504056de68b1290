/*
 * model_file.c — llm.c model files: load and save.
 *
 * 256 int32 of header {20240326, version, maxT, V, L, NH, C, Vp}, then every parameter in
 * the tensor table's order, fp32 (v3) or bf16 (v5). Loading checks the whole file (size,
 * shape, finite values) before anything of the model changes. Saving goes to a temp name
 * and is renamed, so a crash never leaves a half-written file under the real name. A directory
 * with config.json is a Hugging Face model (hf_model.c); version 8 is llmc's int8 (quant_file.c).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "file_io.h"
#include "quant.h"

enum { H_MAGIC = 0, H_VERSION = 1 };

/* Reads n elements of dtype from f into host fp32, in chunks. */
static int read_as_f32(FILE *f, float *dst, size_t n, llmc_dtype dtype) {
    if (dtype == LLMC_F32) return fread(dst, sizeof(float), n, f) == n;
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = malloc(CHUNK * sizeof(uint16_t));
    if (!buf) return 0;
    int ok = 1;
    for (size_t done = 0; done < n && ok;) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        ok = fread(buf, 2, k, f) == k;
        if (ok) llmc_bf16_to_f32_n(dst + done, buf, k);
        done += k;
    }
    free(buf);
    return ok;
}

llmc_status llmc_weights_check_finite(const llmc_weights *w, const float *host, const char *what, char *err,
                                      size_t errlen) {
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &w->t[i];
        for (size_t j = 0; j < t->numel; j++)
            if (!isfinite(host[t->offset + j])) {
                snprintf(err, errlen, "%s: tensor %s holds %s at element %zu", what, t->name,
                         isnan(host[t->offset + j]) ? "NaN" : "Inf", j);
                return LLMC_ERR_NUMERIC;
            }
    }
    return LLMC_OK;
}

llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path) {
    if (m->users > 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "cannot load '%s' while %d trainer(s) or session(s) use the model", path, m->users);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) { /* a Hugging Face directory, or a mistake */
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (llmc_file_exists(cfg)) return llmc_model_load_hf(m, o, path);
        return llmc_model_fail(m, LLMC_ERR_IO,
                               "'%s' is a directory without config.json; a model directory must be a Hugging Face "
                               "GPT-2 (config.json and model.safetensors)", path);
    }
    FILE *f = fopen(path, "rb");
    if (!f) return llmc_model_fail(m, LLMC_ERR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    int32_t h[LLMC_HEADER_INTS];
    llmc_status st = LLMC_OK;
    float *host = NULL;
    llmc_weights w;
    long size = llmc_file_size(f);
    if (size < 0) {
        st = llmc_model_fail(m, LLMC_ERR_IO, "'%s' is not a regular file (a directory must be a Hugging Face model "
                             "with config.json)", path);
        goto done;
    }
    if (size < (long)sizeof h || fread(h, sizeof h, 1, f) != 1) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT,
                             "model file '%s' is truncated: %ld bytes, shorter than its 1024-byte header", path, size);
        goto done;
    }
    if (h[H_MAGIC] != LLMC_MODEL_MAGIC) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "'%s' is not a model file: magic %d%s, expected %d", path, h[H_MAGIC],
                             llmc_magic_hint(h[H_MAGIC]), LLMC_MODEL_MAGIC);
        goto done;
    }
    if (h[H_VERSION] != 3 && h[H_VERSION] != 5 && h[H_VERSION] != LLMC_MODEL_VERSION_INT8) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT,
                             "model file '%s' has version %d; supported: 3 (fp32), 5 (bf16) and %d (llmc int8)", path,
                             h[H_VERSION], LLMC_MODEL_VERSION_INT8);
        goto done;
    }
    llmc_config cfg = {.max_seq_len = h[2],
                       .vocab_size = h[3],
                       .num_layers = h[4],
                       .num_heads = h[5],
                       .channels = h[6],
                       .padded_vocab_size = h[7]};
    char why[LLMC_ERR_LEN];
    if (cfg.padded_vocab_size == 0) cfg.padded_vocab_size = cfg.vocab_size; /* very old files had no Vp */
    if (llmc_config_validate(&cfg, why, sizeof why) != LLMC_OK) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "model file '%s' is corrupt: %s", path, why);
        goto done;
    }
    if (h[H_VERSION] == LLMC_MODEL_VERSION_INT8) {
        st = llmc_quant_load(m, o, path, f, h, &cfg, size);
        goto done;
    }
    llmc_dtype dtype = h[H_VERSION] == 3 ? LLMC_F32 : LLMC_BF16;
    llmc_weights_layout(&w, &cfg, dtype);
    long expect = (long)sizeof h + (long)(w.count * llmc_dtype_size(dtype));
    if (size != expect) {
        st = llmc_model_fail(
            m, LLMC_ERR_FORMAT,
            "model file '%s' is %s: its header (L=%d H=%d C=%d V=%d) needs %ld bytes but the file has %ld", path,
            size < expect ? "truncated" : "corrupt (too long)", cfg.num_layers, cfg.num_heads, cfg.channels,
            cfg.vocab_size, expect, size);
        goto done;
    }
    host = malloc(w.count * sizeof(float));
    if (!host) {
        st = llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to read '%s'",
                             w.count * sizeof(float), path);
        goto done;
    }
    if (!read_as_f32(f, host, w.count, dtype)) {
        st = llmc_model_fail(m, LLMC_ERR_IO, "read error in model file '%s'", path);
        goto done;
    }
    char what[4200];
    snprintf(what, sizeof what, "model file '%s' is corrupt", path);
    if (llmc_weights_check_finite(&w, host, what, m->err, sizeof m->err) != LLMC_OK) st = LLMC_ERR_FORMAT;
    if (st == LLMC_OK) {
        st = llmc_model_install(m, o, &cfg, host, 1);
        if (st == LLMC_OK) host = NULL; /* the model holds it now */
    }
done:
    free(host);
    fclose(f);
    return st;
}

void llmc_model_file_header(const llmc_config *c, int version, int32_t h[LLMC_HEADER_INTS]) {
    memset(h, 0, LLMC_HEADER_INTS * sizeof(int32_t));
    h[H_MAGIC] = LLMC_MODEL_MAGIC;
    h[H_VERSION] = version;
    h[2] = c->max_seq_len;
    h[3] = c->vocab_size;
    h[4] = c->num_layers;
    h[5] = c->num_heads;
    h[6] = c->channels;
    h[7] = c->padded_vocab_size;
}

/* The body of a model file of file_dtype into data (count elements of that dtype). */
static llmc_status file_body(llmc_model *m, llmc_dtype file_dtype, void *data, const float *src, size_t src_offset,
                             size_t src_count) {
    const llmc_backend_ops *ops = m->dev.ops;
    const size_t n = m->w.count;
    if (file_dtype == ops->act_dtype && !(file_dtype == LLMC_F32 && src) && !m->quantized) {
        /* the exact bits the model computes with (bf16 params stay bit-identical across save/load) */
        MODEL_TRY(m, ops->copy_d2h(&m->dev, data, m->params, n * llmc_dtype_size(file_dtype)));
        if (file_dtype == LLMC_F32)
            return llmc_weights_check_finite(&m->w, data, "refusing to save non-finite weights", m->err, sizeof m->err);
        for (size_t i = 0; i < n; i++) /* bf16: exponent all ones is Inf or NaN */
            if ((((const uint16_t *)data)[i] & 0x7F80u) == 0x7F80u) {
                float *f32 = malloc(n * sizeof(float));
                if (!f32) return llmc_model_fail(m, LLMC_ERR_NUMERIC, "refusing to save non-finite weights");
                llmc_bf16_to_f32_n(f32, data, n);
                llmc_status st = llmc_weights_check_finite(&m->w, f32, "refusing to save non-finite weights", m->err,
                                                           sizeof m->err);
                free(f32);
                return st;
            }
        return LLMC_OK;
    }
    float *f32 = file_dtype == LLMC_F32 ? data : malloc(n * sizeof(float));
    if (!f32) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to save", n * sizeof(float));
    llmc_status st = llmc_model_get_params(m, f32);
    if (st == LLMC_OK && src) { /* the higher-precision values where the caller has them */
        st = ops->copy_d2h(&m->dev, f32 + src_offset, src, src_count * sizeof(float));
        if (st != LLMC_OK) st = llmc_model_dev_fail(m, st);
    }
    if (st == LLMC_OK) /* never write a file that the loader refuses */
        st = llmc_weights_check_finite(&m->w, f32, "refusing to save non-finite weights", m->err, sizeof m->err);
    if (st == LLMC_OK && file_dtype == LLMC_BF16) llmc_f32_to_bf16_n(data, f32, n);
    if (f32 != data) free(f32);
    return st;
}

llmc_status llmc_model_write(llmc_model *m, const char *path, int version, const float *src, size_t src_offset,
                             size_t src_count) {
    llmc_status st = llmc_model_require_weights(m);
    if (st != LLMC_OK) return st;
    llmc_dtype act = m->dev.ops->act_dtype;
    if (version == 0) version = m->quantized ? LLMC_MODEL_VERSION_INT8 : act == LLMC_F32 ? 3 : 5; /* native */
    if (version == LLMC_MODEL_VERSION_INT8) return llmc_quant_write(m, path);
    if (version != 3 && version != 5) /* a quantized model may be written dequantized, as 3 or 5 */
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "model file version must be 3 (fp32), 5 (bf16) or %d (int8), not %d",
                               LLMC_MODEL_VERSION_INT8, version);
    llmc_dtype file_dtype = version == 3 ? LLMC_F32 : LLMC_BF16;
    const size_t bytes = m->w.count * llmc_dtype_size(file_dtype);
    void *data = malloc(bytes);
    if (!data) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to save", bytes);
    st = file_body(m, file_dtype, data, src, src_offset, src_count);
    if (st == LLMC_OK) {
        llmc_atomic_file af;
        st = llmc_atomic_open(&af, path, m->err, sizeof m->err);
        if (st == LLMC_OK) {
            int32_t h[LLMC_HEADER_INTS];
            llmc_model_file_header(&m->w.cfg, version, h);
            st = llmc_atomic_write(&af, h, sizeof h, m->err, sizeof m->err);
            if (st == LLMC_OK) st = llmc_atomic_write(&af, data, bytes, m->err, sizeof m->err);
            st = llmc_atomic_close(&af, st, m->err, sizeof m->err);
        }
    }
    free(data);
    return st;
}

llmc_status llmc_model_save(llmc_model *m, const char *path, int version) {
    return llmc_model_write(m, path, version, NULL, 0, 0);
}

/*
 * checkpoint.c — model files (llm.c format) and trainer state files.
 *
 * Model file: 256 int32 header {20240326, version, maxT, V, L, NH, C, Vp} then every
 * parameter in layout order, fp32 (v3) or bf16 (v5).
 * State file (ours): 256 int32 header {20240327, 2, nproc=1, rank=0, has_master, ...}
 * then AdamW m, v and the fp32 master weights. Every file is written to a temp name
 * and renamed, so a crash never leaves a half-written file under the real name.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "model_internal.h"

#define STATE_VERSION 2
enum { H_MAGIC = 0, H_VERSION = 1 };
/* state header slots */
enum { S_NPROC = 2, S_RANK = 3, S_HAS_MASTER = 4, S_OPT_STEP = 10, S_TRAIN_STEP = 11, S_RNG = 12,
       S_EPOCH = 14, S_SHARD = 16, S_SAMPLE = 18, S_NPARAMS = 20 };

/* ------------------------------------------------------------------ bf16 */

uint16_t llmc_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* keep NaN a NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                       /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float llmc_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void put_u64(int32_t *h, int slot, uint64_t v) {
    h[slot] = (int32_t)(uint32_t)(v & 0xffffffffu);
    h[slot + 1] = (int32_t)(uint32_t)(v >> 32);
}
static uint64_t get_u64(const int32_t *h, int slot) {
    return (uint64_t)(uint32_t)h[slot] | ((uint64_t)(uint32_t)h[slot + 1] << 32);
}

/* ------------------------------------------------------------------ atomic files */

typedef struct atomic_file {
    FILE *f;
    char tmp[4096];
    const char *path;
} atomic_file;

static llmc_status atomic_open(llmc_model *m, atomic_file *af, const char *path) {
    af->path = path;
    if (snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof af->tmp)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "path too long: %s", path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return llmc_model_fail(m, LLMC_ERR_IO, "cannot create '%s': %s", af->tmp, strerror(errno));
    return LLMC_OK;
}

static llmc_status atomic_write(llmc_model *m, atomic_file *af, const void *data, size_t bytes) {
    if (fwrite(data, 1, bytes, af->f) != bytes)
        return llmc_model_fail(m, LLMC_ERR_IO, "write to '%s' failed: %s", af->tmp, strerror(errno));
    return LLMC_OK;
}

/* Closes and renames on success; on failure removes the temp file and keeps the status. */
static llmc_status atomic_close(llmc_model *m, atomic_file *af, llmc_status st) {
    if (st == LLMC_OK && (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0))
        st = llmc_model_fail(m, LLMC_ERR_IO, "cannot flush '%s': %s", af->tmp, strerror(errno));
    if (fclose(af->f) != 0 && st == LLMC_OK)
        st = llmc_model_fail(m, LLMC_ERR_IO, "cannot close '%s': %s", af->tmp, strerror(errno));
    if (st == LLMC_OK && rename(af->tmp, af->path) != 0)
        st = llmc_model_fail(m, LLMC_ERR_IO, "cannot rename '%s' to '%s': %s", af->tmp, af->path, strerror(errno));
    if (st != LLMC_OK) remove(af->tmp);
    return st;
}

/* ------------------------------------------------------------------ reading helpers */

/* Size in bytes, or -1 for something that is not a regular file (a directory, a pipe). */
static long file_size(FILE *f) {
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    if (fseek(f, 0, SEEK_END) != 0) return -1;
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    return n;
}

static const char *magic_hint(int magic) {
    switch (magic) {
    case LLMC_MODEL_MAGIC: return " (a model file)";
    case LLMC_STATE_MAGIC: return " (a trainer state file)";
    case LLMC_TOKENIZER_MAGIC: return " (a tokenizer file)";
    case LLMC_SHARD_MAGIC: return " (a token shard)";
    default: return "";
    }
}

/* Reads n elements of dtype from f into host fp32, in chunks. */
static int read_as_f32(FILE *f, float *dst, size_t n, llmc_dtype dtype) {
    if (dtype == LLMC_F32) return fread(dst, sizeof(float), n, f) == n;
    enum { CHUNK = 1 << 16 };
    uint16_t buf[CHUNK];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (fread(buf, 2, k, f) != k) return 0;
        for (size_t i = 0; i < k; i++) dst[done + i] = llmc_bf16_to_f32(buf[i]);
        done += k;
    }
    return 1;
}

/* ------------------------------------------------------------------ model files */

llmc_status llmc_model_load(llmc_model *m, const llmc_model_options *o, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return llmc_model_fail(m, LLMC_ERR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    int32_t h[LLMC_HEADER_INTS];
    llmc_status st = LLMC_OK;
    float *host = NULL;
    long size = file_size(f);
    if (size < 0) {
        st = llmc_model_fail(m, LLMC_ERR_IO, "'%s' is not a regular file (a directory?)", path);
        goto done;
    }
    if (size < (long)sizeof h || fread(h, sizeof h, 1, f) != 1) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "model file '%s' is truncated: %ld bytes, shorter than its 1024-byte header",
                             path, size);
        goto done;
    }
    if (h[H_MAGIC] != LLMC_MODEL_MAGIC) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "'%s' is not a model file: magic %d%s, expected %d", path, h[H_MAGIC],
                             magic_hint(h[H_MAGIC]), LLMC_MODEL_MAGIC);
        goto done;
    }
    if (h[H_VERSION] != 3 && h[H_VERSION] != 5) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "model file '%s' has version %d; supported: 3 (fp32) and 5 (bf16)",
                             path, h[H_VERSION]);
        goto done;
    }
    llmc_config cfg = {.max_seq_len = h[2], .vocab_size = h[3], .num_layers = h[4], .num_heads = h[5],
                       .channels = h[6], .padded_vocab_size = h[7]};
    char why[LLMC_ERR_LEN];
    if (cfg.padded_vocab_size == 0) cfg.padded_vocab_size = cfg.vocab_size; /* very old files had no Vp */
    if (llmc_config_validate(&cfg, why, sizeof why) != LLMC_OK) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "model file '%s' is corrupt: %s", path, why);
        goto done;
    }
    llmc_dtype dtype = h[H_VERSION] == 3 ? LLMC_F32 : LLMC_BF16;
    size_t n = llmc_param_count(&cfg);
    long expect = (long)sizeof h + (long)(n * llmc_dtype_size(dtype));
    if (size != expect) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT,
                             "model file '%s' is %s: its header (L=%d H=%d C=%d V=%d) needs %ld bytes but the file has %ld",
                             path, size < expect ? "truncated" : "corrupt (too long)", cfg.num_layers, cfg.num_heads,
                             cfg.channels, cfg.vocab_size, expect, size);
        goto done;
    }
    host = malloc(n * sizeof(float));
    if (!host) {
        st = llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to read '%s'", n * sizeof(float), path);
        goto done;
    }
    if (!read_as_f32(f, host, n, dtype)) {
        st = llmc_model_fail(m, LLMC_ERR_IO, "read error in model file '%s'", path);
        goto done;
    }
    llmc_tensor_info layout[LLMC_NUM_PARAM_TENSORS];
    llmc_param_layout(&cfg, layout);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS && st == LLMC_OK; i++)
        for (size_t j = 0; j < layout[i].numel; j++)
            if (!isfinite(host[layout[i].offset + j])) {
                st = llmc_model_fail(m, LLMC_ERR_FORMAT, "model file '%s' is corrupt: tensor %s holds %s at element %zu",
                                     path, layout[i].name, isnan(host[layout[i].offset + j]) ? "NaN" : "Inf", j);
                break;
            }
    if (st == LLMC_OK) st = llmc_model_setup(m, o, &cfg);
    if (st == LLMC_OK) st = llmc_model_upload_params(m, host);
done:
    free(host);
    fclose(f);
    return st;
}

static void model_header(const llmc_model *m, int version, int32_t h[LLMC_HEADER_INTS]) {
    memset(h, 0, LLMC_HEADER_INTS * sizeof(int32_t));
    h[H_MAGIC] = LLMC_MODEL_MAGIC;
    h[H_VERSION] = version;
    h[2] = m->cfg.max_seq_len;
    h[3] = m->cfg.vocab_size;
    h[4] = m->cfg.num_layers;
    h[5] = m->cfg.num_heads;
    h[6] = m->cfg.channels;
    h[7] = m->cfg.padded_vocab_size;
}

llmc_status llmc_model_save(llmc_model *m, const char *path, int version) {
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters to save");
    llmc_dtype act = m->dev.ops->act_dtype;
    if (version == 0) version = act == LLMC_F32 ? 3 : 5; /* native: no rounding */
    if (version != 3 && version != 5)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model file version must be 3 (fp32) or 5 (bf16), not %d", version);
    llmc_dtype file_dtype = version == 3 ? LLMC_F32 : LLMC_BF16;
    size_t n = m->num_params, esz = llmc_dtype_size(file_dtype);
    void *data = malloc(n * (file_dtype == act ? esz : sizeof(float)));
    if (!data) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to save", n * sizeof(float));
    llmc_status st = LLMC_OK;
    if (file_dtype == act && !(file_dtype == LLMC_F32 && m->master)) {
        /* the exact bits the model computes with (bf16 params stay bit-identical across save/load) */
        st = m->dev.ops->copy_d2h(&m->dev, data, m->params, n * esz);
        if (st != LLMC_OK) st = llmc_model_dev_fail(m, st);
    } else {
        st = llmc_model_get_params(m, data);
        if (st == LLMC_OK && file_dtype == LLMC_BF16) { /* narrow in place, front to back */
            float *src = data;
            uint16_t *dst = data;
            for (size_t i = 0; i < n; i++) dst[i] = llmc_f32_to_bf16(src[i]);
        }
    }
    if (st == LLMC_OK) {
        atomic_file af;
        st = atomic_open(m, &af, path);
        if (st == LLMC_OK) {
            int32_t h[LLMC_HEADER_INTS];
            model_header(m, version, h);
            st = atomic_write(m, &af, h, sizeof h);
            if (st == LLMC_OK) st = atomic_write(m, &af, data, n * esz);
            st = atomic_close(m, &af, st);
        }
    }
    free(data);
    return st;
}

/* ------------------------------------------------------------------ trainer checkpoints */

static void checkpoint_paths(const char *dir, int step, char *model, char *state, size_t len) {
    snprintf(model, len, "%s/model_%08d.bin", dir, step);
    snprintf(state, len, "%s/state_%08d.bin", dir, step);
}

llmc_status llmc_checkpoint_save(llmc_model *m, const char *dir, const llmc_train_state *ts) {
    char model_path[4096], state_path[4096];
    checkpoint_paths(dir, ts->step, model_path, state_path, sizeof model_path);
    if (!m->params) return llmc_model_fail(m, LLMC_ERR_INVALID_ARG, "model has no parameters to save");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return llmc_model_fail(m, LLMC_ERR_IO, "cannot create directory '%s': %s", dir, strerror(errno));
    llmc_status st = llmc_model_save(m, model_path, 0);
    if (st != LLMC_OK) return st;
    st = llmc_model_ensure_optimizer(m);
    if (st != LLMC_OK) return st;

    size_t n = m->num_params;
    float *buf = malloc(n * sizeof(float));
    if (!buf) return llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the state", n * 4);
    int32_t h[LLMC_HEADER_INTS] = {0};
    h[H_MAGIC] = LLMC_STATE_MAGIC;
    h[H_VERSION] = STATE_VERSION;
    h[S_NPROC] = 1;
    h[S_RANK] = 0;
    h[S_HAS_MASTER] = m->master != NULL;
    h[S_OPT_STEP] = m->step;
    h[S_TRAIN_STEP] = ts->step;
    put_u64(h, S_RNG, ts->rng);
    put_u64(h, S_EPOCH, ts->data.epoch);
    put_u64(h, S_SHARD, ts->data.shard);
    put_u64(h, S_SAMPLE, ts->data.sample);
    put_u64(h, S_NPARAMS, n);

    atomic_file af;
    st = atomic_open(m, &af, state_path);
    if (st != LLMC_OK) {
        free(buf);
        return st;
    }
    st = atomic_write(m, &af, h, sizeof h);
    float *parts[] = {m->adam_m, m->adam_v, m->master};
    for (int i = 0; i < 3 && st == LLMC_OK; i++) {
        if (!parts[i]) continue;
        st = m->dev.ops->copy_d2h(&m->dev, buf, parts[i], n * sizeof(float));
        if (st != LLMC_OK) st = llmc_model_dev_fail(m, st);
        else st = atomic_write(m, &af, buf, n * sizeof(float));
    }
    free(buf);
    return atomic_close(m, &af, st);
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int llmc_checkpoint_latest(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int best = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int step;
        char tail;
        if (sscanf(e->d_name, "state_%d.bi%c", &step, &tail) == 2 && tail == 'n' && strlen(e->d_name) == 18 &&
            step > best) {
            char mp[4096], sp[4096];
            checkpoint_paths(dir, step, mp, sp, sizeof mp);
            if (file_exists(mp)) best = step;
        }
    }
    closedir(d);
    return best;
}

llmc_status llmc_checkpoint_load(llmc_model *m, const llmc_model_options *o, const char *dir, int step,
                                 llmc_train_state *ts) {
    if (step < 0) step = llmc_checkpoint_latest(dir);
    if (step < 0) return llmc_model_fail(m, LLMC_ERR_IO, "no complete checkpoint (model_*.bin + state_*.bin) in '%s'", dir);
    char model_path[4096], state_path[4096];
    checkpoint_paths(dir, step, model_path, state_path, sizeof model_path);

    FILE *f = fopen(state_path, "rb");
    if (!f) return llmc_model_fail(m, LLMC_ERR_IO, "cannot open state file '%s': %s", state_path, strerror(errno));
    int32_t h[LLMC_HEADER_INTS];
    llmc_status st = LLMC_OK;
    float *buf = NULL;
    long size = file_size(f);
    if (size < (long)sizeof h || fread(h, sizeof h, 1, f) != 1) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "state file '%s' is truncated (%ld bytes)", state_path, size);
        goto done;
    }
    if (h[H_MAGIC] != LLMC_STATE_MAGIC || h[H_VERSION] != STATE_VERSION) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "'%s' is not an llmc state file: magic %d%s version %d (want %d v%d)",
                             state_path, h[H_MAGIC], magic_hint(h[H_MAGIC]), h[H_VERSION], LLMC_STATE_MAGIC, STATE_VERSION);
        goto done;
    }
    st = llmc_model_load(m, o, model_path);
    if (st != LLMC_OK) goto done;
    size_t n = m->num_params;
    int has_master = h[S_HAS_MASTER] != 0;
    long expect = (long)sizeof h + (long)((2 + has_master) * n * sizeof(float));
    if (get_u64(h, S_NPARAMS) != n || size != expect) {
        st = llmc_model_fail(m, LLMC_ERR_FORMAT, "state file '%s' does not match its model: %llu params, %ld bytes (want %zu, %ld)",
                             state_path, (unsigned long long)get_u64(h, S_NPARAMS), size, n, expect);
        goto done;
    }
    st = llmc_model_ensure_optimizer(m);
    if (st != LLMC_OK) goto done;
    buf = malloc(n * sizeof(float));
    if (!buf) {
        st = llmc_model_fail(m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the state", n * 4);
        goto done;
    }
    float *parts[] = {m->adam_m, m->adam_v, has_master ? m->master : NULL};
    for (int i = 0; i < 3 && st == LLMC_OK; i++) {
        if (i == 2 && !has_master) break;
        if (fread(buf, sizeof(float), n, f) != n) {
            st = llmc_model_fail(m, LLMC_ERR_IO, "read error in state file '%s'", state_path);
            break;
        }
        if (!parts[i]) continue; /* saved with master weights, resumed without: the bf16 params are exact */
        st = m->dev.ops->copy_h2d(&m->dev, parts[i], buf, n * sizeof(float));
        if (st != LLMC_OK) st = llmc_model_dev_fail(m, st);
    }
    if (st != LLMC_OK) goto done;
    m->step = h[S_OPT_STEP];
    ts->step = h[S_TRAIN_STEP];
    ts->rng = get_u64(h, S_RNG);
    ts->data.epoch = get_u64(h, S_EPOCH);
    ts->data.shard = get_u64(h, S_SHARD);
    ts->data.sample = get_u64(h, S_SAMPLE);
done:
    free(buf);
    fclose(f);
    return st;
}

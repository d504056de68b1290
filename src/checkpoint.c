/*
 * checkpoint.c — trainer checkpoints: a model file and a state file per step.
 *
 * State file (ours): 256 int32 header {20240327, 2, nproc=1, rank=0, has_master, ...} then
 * AdamW m, v and the fp32 master weights of the trainer's shard of the parameters. Both files
 * are written atomically; a step counts as complete once both exist.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "file_io.h"
#include "train_internal.h"

#define STATE_VERSION 2
enum { H_MAGIC = 0, H_VERSION = 1 };
/* state header slots; the shard slots are 0 in files that cover every parameter */
enum {
    S_NPROC = 2,
    S_RANK = 3,
    S_HAS_MASTER = 4,
    S_OPT_STEP = 10,
    S_TRAIN_STEP = 11,
    S_RNG = 12,
    S_EPOCH = 14,
    S_SHARD = 16,
    S_SAMPLE = 18,
    S_NPARAMS = 20,
    S_SHARD_OFFSET = 22,
    S_SHARD_COUNT = 24
};

static void checkpoint_paths(const char *dir, int step, char *model, char *state, size_t len) {
    snprintf(model, len, "%s/model_%08d.bin", dir, step);
    snprintf(state, len, "%s/state_%08d.bin", dir, step);
}

llmc_status llmc_checkpoint_save(llmc_train *t, const char *dir, const llmc_checkpoint_info *info) {
    char model_path[4096], state_path[4096];
    checkpoint_paths(dir, info->step, model_path, state_path, sizeof model_path);
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return llmc_train_fail(t, LLMC_ERR_IO, "cannot create directory '%s': %s", dir, strerror(errno));
    st = llmc_train_ensure_optimizer(t);
    if (st == LLMC_OK) st = llmc_train_save_model(t, model_path, 0);
    if (st != LLMC_OK) return st;
    llmc_model *m = t->m;

    const size_t n = t->shard_count;
    float *buf = malloc(n * sizeof(float));
    if (!buf) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the state", n * 4);
    int32_t h[LLMC_HEADER_INTS] = {0};
    h[H_MAGIC] = LLMC_STATE_MAGIC;
    h[H_VERSION] = STATE_VERSION;
    h[S_NPROC] = 1;
    h[S_RANK] = 0;
    h[S_HAS_MASTER] = t->master != NULL;
    h[S_OPT_STEP] = t->step;
    h[S_TRAIN_STEP] = info->step;
    llmc_put_u64(h, S_RNG, info->rng);
    llmc_put_u64(h, S_EPOCH, info->data.epoch);
    llmc_put_u64(h, S_SHARD, info->data.shard);
    llmc_put_u64(h, S_SAMPLE, info->data.sample);
    llmc_put_u64(h, S_NPARAMS, m->w.count);
    if (n != m->w.count) {
        llmc_put_u64(h, S_SHARD_OFFSET, t->shard_offset);
        llmc_put_u64(h, S_SHARD_COUNT, n);
    }

    llmc_atomic_file af;
    st = llmc_atomic_open(&af, state_path, t->err, sizeof t->err);
    if (st != LLMC_OK) {
        free(buf);
        return st;
    }
    st = llmc_atomic_write(&af, h, sizeof h, t->err, sizeof t->err);
    float *parts[] = {t->adam_m, t->adam_v, t->master};
    for (int i = 0; i < 3 && st == LLMC_OK; i++) {
        if (!parts[i]) continue;
        st = m->dev.ops->copy_d2h(&m->dev, buf, parts[i], n * sizeof(float));
        if (st != LLMC_OK)
            st = llmc_train_dev_fail(t, st);
        else
            st = llmc_atomic_write(&af, buf, n * sizeof(float), t->err, sizeof t->err);
    }
    free(buf);
    return llmc_atomic_close(&af, st, t->err, sizeof t->err);
}

llmc_status llmc_checkpoint_latest(const char *dir, int *step) {
    *step = -1;
    DIR *d = opendir(dir);
    if (!d) return LLMC_OK; /* no directory: no checkpoint yet */
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int s;
        char tail;
        if (sscanf(e->d_name, "state_%d.bi%c", &s, &tail) == 2 && tail == 'n' && strlen(e->d_name) == 18 && s > *step) {
            char mp[4096], sp[4096];
            checkpoint_paths(dir, s, mp, sp, sizeof mp);
            if (llmc_file_exists(mp)) *step = s;
        }
    }
    closedir(d);
    return LLMC_OK;
}

/* Reads the state file's body into the trainer's optimizer state (already sized for the shard). */
static llmc_status read_state_body(llmc_train *t, FILE *f, const char *path, int has_master) {
    llmc_model *m = t->m;
    const size_t n = t->shard_count;
    float *buf = malloc(n * sizeof(float));
    if (!buf) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the state", n * 4);
    float *parts[] = {t->adam_m, t->adam_v, has_master ? t->master : NULL};
    llmc_status st = LLMC_OK;
    for (int i = 0; i < 2 + has_master && st == LLMC_OK; i++) {
        if (fread(buf, sizeof(float), n, f) != n) {
            st = llmc_train_fail(t, LLMC_ERR_IO, "read error in state file '%s'", path);
            break;
        }
        if (!parts[i]) continue; /* saved with master weights, resumed without: the bf16 params are exact */
        st = m->dev.ops->copy_h2d(&m->dev, parts[i], buf, n * sizeof(float));
        if (st == LLMC_OK) st = m->dev.ops->synchronize(&m->dev);
        if (st != LLMC_OK) st = llmc_train_dev_fail(t, st);
    }
    free(buf);
    return st;
}

llmc_status llmc_checkpoint_load(llmc_train *t, const char *dir, int step, llmc_checkpoint_info *info) {
    llmc_model *m = t->m;
    if (!m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer is not attached to a model");
    if (step < 0) llmc_checkpoint_latest(dir, &step);
    if (step < 0)
        return llmc_train_fail(t, LLMC_ERR_IO, "no complete checkpoint (model_*.bin + state_*.bin) in '%s'", dir);
    char model_path[4096], state_path[4096];
    checkpoint_paths(dir, step, model_path, state_path, sizeof model_path);

    FILE *f = fopen(state_path, "rb");
    if (!f) return llmc_train_fail(t, LLMC_ERR_IO, "cannot open state file '%s': %s", state_path, strerror(errno));
    int32_t h[LLMC_HEADER_INTS];
    llmc_status st = LLMC_OK;
    long size = llmc_file_size(f);
    if (size < (long)sizeof h || fread(h, sizeof h, 1, f) != 1) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT, "state file '%s' is truncated (%ld bytes)", state_path, size);
        goto done;
    }
    if (h[H_MAGIC] != LLMC_STATE_MAGIC || h[H_VERSION] != STATE_VERSION) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT, "'%s' is not an llmc state file: magic %d%s version %d (want %d v%d)",
                             state_path, h[H_MAGIC], llmc_magic_hint(h[H_MAGIC]), h[H_VERSION], LLMC_STATE_MAGIC,
                             STATE_VERSION);
        goto done;
    }
    /* the model file replaces the weights: detach for the load, then attach again */
    m->users--;
    st = llmc_model_load(m, NULL, model_path);
    m->users++;
    if (st != LLMC_OK) {
        st = llmc_train_from_model(t, st);
        goto done;
    }
    llmc_train_release(t);
    if (t->opts.shard_count == 0) {
        const uint64_t off = llmc_get_u64(h, S_SHARD_OFFSET), cnt = llmc_get_u64(h, S_SHARD_COUNT);
        if (cnt != 0 && (off != 0 || cnt != m->w.count)) {
            st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                                 "state file '%s' holds the optimizer shard [%llu, +%llu) of %zu parameters; this "
                                 "trainer covers all of them",
                                 state_path, (unsigned long long)off, (unsigned long long)cnt, m->w.count);
            goto done;
        }
    }
    st = llmc_train_ensure_optimizer(t); /* sized for the shard; master weights filled from the model */
    if (st != LLMC_OK) goto done;
    const size_t n = t->shard_count;
    const int has_master = h[S_HAS_MASTER] != 0;
    const long expect = (long)sizeof h + (long)((2 + has_master) * n * sizeof(float));
    if (llmc_get_u64(h, S_NPARAMS) != m->w.count || size != expect) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                             "state file '%s' does not match its model: %llu params, %ld bytes (want %zu, %ld)",
                             state_path, (unsigned long long)llmc_get_u64(h, S_NPARAMS), size, m->w.count, expect);
        goto done;
    }
    st = read_state_body(t, f, state_path, has_master);
    if (st != LLMC_OK) goto done;
    t->master_version = m->version;
    t->step = h[S_OPT_STEP];
    info->step = h[S_TRAIN_STEP];
    info->rng = llmc_get_u64(h, S_RNG);
    info->data.epoch = llmc_get_u64(h, S_EPOCH);
    info->data.shard = llmc_get_u64(h, S_SHARD);
    info->data.sample = llmc_get_u64(h, S_SAMPLE);
done:
    fclose(f);
    return st;
}

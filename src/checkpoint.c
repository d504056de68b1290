/*
 * checkpoint.c — trainer checkpoints: a model file and a state file per step.
 *
 * State file (ours): 256 int32 header {20240327, 2, nproc, rank=0, has_master, ...} then AdamW
 * m, v and the fp32 master weights of the trainer's shard of the parameters (all of them, unless
 * a caller set a shard by hand). Both files are written atomically; a step counts as complete
 * once both exist.
 *
 * A data-parallel run writes the same two files, from rank 0: with ZeRO 1 the ranks' shards of
 * the state are gathered into it in rank order, so the file does not depend on how many ranks
 * wrote it (nproc says, for the record). The data position is the one every rank shares. Any
 * number of ranks resumes from it: each reads its own shard.
 */
#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "file_io.h"
#include "train_internal.h"

enum { CHUNK = 1 << 20 }; /* floats per read or write */

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
    S_SHARD_COUNT = 24,
    S_RUN = 26 /* llmc_run_settings: 6 ints, then lr and final_lr_frac as float bits */
};

static void put_run(int32_t *h, const llmc_run_settings *r) {
    const int v[6] = {r->batch_size, r->seq_len, r->total_batch, r->max_steps, r->warmup, r->schedule};
    memcpy(h + S_RUN, v, sizeof v);
    memcpy(h + S_RUN + 6, &r->lr, sizeof(float));
    memcpy(h + S_RUN + 7, &r->final_lr_frac, sizeof(float));
}

static void get_run(const int32_t *h, llmc_run_settings *r) {
    int v[6];
    memcpy(v, h + S_RUN, sizeof v);
    *r = (llmc_run_settings){v[0], v[1], v[2], v[3], v[4], v[5], 0.0f, 0.0f};
    memcpy(&r->lr, h + S_RUN + 6, sizeof(float));
    memcpy(&r->final_lr_frac, h + S_RUN + 7, sizeof(float));
}

static void checkpoint_paths(const char *dir, int step, char *model, char *state, size_t len) {
    snprintf(model, len, "%s/model_%08d.bin", dir, step);
    snprintf(state, len, "%s/state_%08d.bin", dir, step);
}

/* The empty DONE_%08d marker: written last, so it says both files are complete. */
static llmc_status write_done(llmc_train *t, const char *dir, int step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/DONE_%08d", dir, step);
    llmc_atomic_file af;
    llmc_status st = llmc_atomic_open(&af, path, t->err, sizeof t->err);
    return st == LLMC_OK ? llmc_atomic_close(&af, LLMC_OK, t->err, sizeof t->err) : st;
}

llmc_status llmc_checkpoint_mark_done(llmc_train *t, const char *dir, int step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/DONE_%08d", dir, step);
    return llmc_file_exists(path) ? LLMC_OK : write_done(t, dir, step);
}

void llmc_checkpoint_remove(const char *dir, int step) {
    char model[4096], state[4096], done[4096];
    checkpoint_paths(dir, step, model, state, sizeof model);
    snprintf(done, sizeof done, "%s/DONE_%08d", dir, step);
    remove(done); /* first: a half-removed checkpoint is never taken for a complete one */
    remove(state);
    remove(model);
}

typedef struct state_writer {
    llmc_train *t;
    llmc_atomic_file *af;
} state_writer;

static llmc_status write_floats(void *ctx, const float *x, size_t n) {
    state_writer *w = ctx;
    return llmc_atomic_write(w->af, x, n * sizeof(float), w->t->err, sizeof w->t->err);
}

/* ZeRO-1 with master weights: every rank's shard of them into rank 0's device buffer, in order. */
typedef struct master_copy {
    llmc_train *t;
    float *full; /* NULL: it could not be allocated, the pieces are only passed on */
    size_t at;
} master_copy;

static llmc_status copy_up(void *ctx, const float *x, size_t n) {
    master_copy *c = ctx;
    llmc_device *d = &c->t->m->dev;
    if (!c->full) return LLMC_ERR_OUT_OF_MEMORY;
    llmc_status st = d->ops->copy_h2d(d, c->full + c->at, x, n * sizeof(float));
    c->at += n;
    return st == LLMC_OK ? st : llmc_train_dev_fail(c->t, st);
}

/* The model file from every master weight (GPU ZeRO-1: rank 0 holds only its shard of them), so
 * that it holds the fp32 values a single process would write. Every rank calls it. */
static llmc_status write_model_gathered(llmc_train *t, const char *path, float *staging, float *host) {
    llmc_model *m = t->m;
    const int lead = llmc_train_rank(t) == 0;
    master_copy c = {t, NULL, 0};
    if (lead && m->dev.ops->alloc(&m->dev, (void **)&c.full, m->w.count * sizeof(float)) != LLMC_OK) c.full = NULL;
    llmc_status st = llmc_train_gather_part(t, t->master, staging, host, CHUNK, copy_up, &c);
    if (lead && st == LLMC_ERR_OUT_OF_MEMORY && !c.full)
        llmc_train_fail(t, st, "no device memory to gather the master weights for the model file");
    if (lead && st == LLMC_OK) {
        const int fresh = t->master_version == m->version;
        st = llmc_model_write(m, path, 0, fresh ? c.full : NULL, 0, fresh ? m->w.count : 0);
        if (st != LLMC_OK) st = llmc_train_from_model(t, st);
    }
    if (c.full) m->dev.ops->free(&m->dev, c.full);
    return st;
}

/* The state file's body: m, v, master, each over all the ranks' shards; before it, with model_path,
 * the model file from the gathered master weights. Every rank calls it. */
static llmc_status write_body(llmc_train *t, llmc_atomic_file *af, llmc_status st, const char *model_path) {
    llmc_model *m = t->m;
    float *host = malloc(CHUNK * sizeof(float)), *staging = NULL;
    if (!host) st = llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a buffer for the state");
    if (llmc_train_zero1(t)) {
        llmc_status a = m->dev.ops->alloc(&m->dev, (void **)&staging, CHUNK * sizeof(float));
        if (a != LLMC_OK) st = llmc_train_dev_fail(t, a);
    }
    st = llmc_train_agree(t, st, NULL); /* from here on every rank takes each turn */
    llmc_status wst = LLMC_OK;
    if (st == LLMC_OK && model_path) wst = write_model_gathered(t, model_path, staging, host);
    float *parts[] = {t->adam_m, t->adam_v, t->master};
    state_writer w = {t, af};
    for (int i = 0; i < 3 && st == LLMC_OK; i++) {
        if (!parts[i]) continue;
        /* a failed write on rank 0 goes on through every part: the others are still sending */
        const llmc_status part = llmc_train_gather_part(t, parts[i], staging, host, CHUNK, write_floats, &w);
        if (part != LLMC_OK && wst == LLMC_OK) wst = part;
    }
    if (st == LLMC_OK) st = wst;
    if (staging) m->dev.ops->free(&m->dev, staging);
    free(host);
    return st;
}

llmc_status llmc_checkpoint_save(llmc_train *t, const char *dir, const llmc_checkpoint_info *info) {
    char model_path[4096], state_path[4096];
    checkpoint_paths(dir, info->step, model_path, state_path, sizeof model_path);
    llmc_status st = llmc_train_require(t);
    if (st != LLMC_OK) return st;
    const int lead = llmc_train_rank(t) == 0; /* rank 0 writes; the others send their shards */
    if (lead && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = llmc_train_fail(t, LLMC_ERR_IO, "cannot create directory '%s': %s", dir, strerror(errno));
    if (st == LLMC_OK) st = llmc_train_ensure_optimizer(t);
    const int gather_master = llmc_train_zero1(t) && t->master; /* the model file needs every rank */
    if (st == LLMC_OK && lead && !gather_master) st = llmc_train_save_model(t, model_path, 0);
    llmc_model *m = t->m;

    const size_t n = llmc_train_zero1(t) ? m->w.count : t->shard_count;
    int32_t h[LLMC_HEADER_INTS] = {0};
    h[H_MAGIC] = LLMC_STATE_MAGIC;
    h[H_VERSION] = STATE_VERSION;
    h[S_NPROC] = llmc_train_world(t);
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
    put_run(h, &info->run);

    llmc_atomic_file af = {0};
    if (st == LLMC_OK && lead) st = llmc_atomic_open(&af, state_path, t->err, sizeof t->err);
    if (st == LLMC_OK && lead) st = llmc_atomic_write(&af, h, sizeof h, t->err, sizeof t->err);
    st = write_body(t, &af, st, gather_master ? model_path : NULL);
    if (!lead) return st;
    if (af.f) st = llmc_atomic_close(&af, st, t->err, sizeof t->err);
    return st == LLMC_OK ? write_done(t, dir, info->step) : st;
}

/* A step from a checkpoint file name: exactly what checkpoint_paths writes for it (eight digits
 * or more), kind "model" or "state"; -1 for any other name. */
static int name_step(const char *name, const char *kind) {
    char want[64], fmt[32];
    int s;
    snprintf(fmt, sizeof fmt, "%s_%%d.bin", kind);
    if (sscanf(name, fmt, &s) != 1 || s < 0) return -1;
    snprintf(want, sizeof want, "%s_%08d.bin", kind, s);
    return strcmp(want, name) == 0 ? s : -1;
}

llmc_status llmc_checkpoint_find(const char *dir, int below, int *step, int *files) {
    *step = -1;
    if (files) *files = 0;
    DIR *d = opendir(dir);
    if (!d) return LLMC_OK; /* no directory: no checkpoint yet */
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const int ms = name_step(e->d_name, "model"), s = name_step(e->d_name, "state");
        if (files && (ms >= 0 || s >= 0 || strncmp(e->d_name, "DONE_", 5) == 0)) (*files)++;
        if (s < 0 || s >= below || s <= *step) continue;
        char mp[4096], sp[4096];
        checkpoint_paths(dir, s, mp, sp, sizeof mp);
        if (llmc_file_exists(mp) && llmc_file_exists(sp)) *step = s;
    }
    closedir(d);
    return LLMC_OK;
}

llmc_status llmc_checkpoint_latest(const char *dir, int *step) { return llmc_checkpoint_find(dir, INT_MAX, step, NULL); }

/* The step of a model_, state_ or DONE_ file name, or -1. */
static int any_step(const char *name) {
    int s = name_step(name, "model");
    if (s < 0) s = name_step(name, "state");
    if (s < 0 && sscanf(name, "DONE_%d", &s) == 1) {
        char want[64];
        snprintf(want, sizeof want, "DONE_%08d", s);
        if (s < 0 || strcmp(want, name) != 0) s = -1;
    } else if (s < 0) s = -1;
    return s;
}

int llmc_checkpoint_steps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int first = -1, n = 0;
    while ((e = readdir(d)) != NULL && n < 2) {
        const int s = any_step(e->d_name);
        if (s >= 0 && s != first) first = s, n++;
    }
    closedir(d);
    return n;
}

void llmc_checkpoint_remove_partial(const char *dir, int below) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    int steps[64], n = 0; /* a batch at a time: removing while reading a directory is unspecified */
    do {
        n = 0;
        rewinddir(d);
        while (n < 64 && (e = readdir(d)) != NULL) {
            const int s = any_step(e->d_name);
            if (s < 0 || s >= below) continue;
            char mp[4096], sp[4096];
            checkpoint_paths(dir, s, mp, sp, sizeof mp);
            if (llmc_file_exists(mp) && llmc_file_exists(sp)) continue; /* complete */
            int dup = 0;
            for (int i = 0; i < n; i++) dup |= steps[i] == s;
            if (!dup) steps[n++] = s;
        }
        for (int i = 0; i < n; i++) llmc_checkpoint_remove(dir, steps[i]);
    } while (n == 64);
    closedir(d);
}

/* The header fields that must make sense before anything is read or replaced. */
static llmc_status check_header(llmc_train *t, const char *path, const int32_t *h) {
    if (h[S_NPROC] < 1 || h[S_RANK] != 0) /* rank 0 writes for every rank */
        return llmc_train_fail(t, LLMC_ERR_FORMAT,
                               "state file '%s' claims to be rank %d's of %d processes: llmc's state files cover "
                               "every rank (rank 0 of nproc >= 1)",
                               path, h[S_RANK], h[S_NPROC]);
    if (h[S_HAS_MASTER] != 0 && h[S_HAS_MASTER] != 1)
        return llmc_train_fail(t, LLMC_ERR_FORMAT, "state file '%s' is corrupt: has-master flag %d (0 or 1)", path,
                               h[S_HAS_MASTER]);
    if (h[S_OPT_STEP] < 0 || h[S_TRAIN_STEP] < 0 || h[S_OPT_STEP] == INT32_MAX || h[S_TRAIN_STEP] == INT32_MAX)
        return llmc_train_fail(t, LLMC_ERR_FORMAT, "state file '%s' is corrupt: step %d, optimizer step %d", path,
                               h[S_TRAIN_STEP], h[S_OPT_STEP]);
    return LLMC_OK;
}


/* AdamW's moments are averages of g and g^2 over the same steps, so m^2 stays within a multiple
 * of v: (1-b1)^2 / ((1-b2)(1-b1^2/b2)), 1.4 at betas (0.9, 0.95), 53 at (0.9, 0.999), 5e5 at
 * (0.9, 1-1e-7). The state does not store the betas, so the bound is generous: it only has to
 * keep an update m/sqrt(v) finite (below 1e4), which a finite but absurd m would not. Weights
 * beyond 1e30 overflow the first matmul. */
#define MOMENT_RATIO 1e8
#define MOMENT_FLOOR 1e-30
#define WEIGHT_LIMIT 1e30

static void describe(char *out, size_t len, float x) {
    if (isnan(x)) snprintf(out, len, "NaN");
    else if (isinf(x)) snprintf(out, len, "%sInf", x < 0 ? "-" : "");
    else snprintf(out, len, "%g", (double)x);
}

/* Reads n floats of part `part` (0 m, 1 v, 2 master) from offset `from` into buf. */
static int read_part(FILE *f, float *buf, size_t n, int part, size_t total, size_t from) {
    const long off = (long)(LLMC_HEADER_INTS * sizeof(int32_t) + ((size_t)part * total + from) * sizeof(float));
    return fseek(f, off, SEEK_SET) == 0 && fread(buf, sizeof(float), n, f) == n;
}

/* The checks before anything changes: every m, v and master weight finite, v >= 0, m^2 within
 * MOMENT_RATIO v, master weights within WEIGHT_LIMIT. Reads m and v side by side. */
static llmc_status check_body(llmc_train *t, FILE *f, const char *path, size_t n, int has_master) {
    float *m = malloc(2 * CHUNK * sizeof(float)), *v = m ? m + CHUNK : NULL;
    if (!m) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a buffer for the state");
    llmc_status st = LLMC_OK;
    char a[32], b[32];
    for (size_t done = 0; done < n && st == LLMC_OK; done += CHUNK) {
        const size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (!read_part(f, m, k, 0, n, done) || !read_part(f, v, k, 1, n, done)) {
            st = llmc_train_fail(t, LLMC_ERR_IO, "read error in state file '%s'", path);
            break;
        }
        for (size_t i = 0; i < k; i++) {
            const double mi = m[i], vi = v[i];
            if (isfinite(m[i]) && isfinite(v[i]) && vi >= 0 && mi * mi <= MOMENT_RATIO * vi + MOMENT_FLOOR) continue;
            describe(a, sizeof a, m[i]);
            describe(b, sizeof b, v[i]);
            st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                                 "state file '%s' is corrupt: AdamW moments at element %zu (m %s, v %s) are not "
                                 "finite, v negative, or m far beyond sqrt(v)",
                                 path, done + i, a, b);
            break;
        }
        if (st != LLMC_OK || !has_master) continue;
        if (!read_part(f, m, k, 2, n, done)) {
            st = llmc_train_fail(t, LLMC_ERR_IO, "read error in state file '%s'", path);
            break;
        }
        for (size_t i = 0; i < k; i++)
            if (!(fabsf(m[i]) <= WEIGHT_LIMIT)) {
                describe(a, sizeof a, m[i]);
                st = llmc_train_fail(t, LLMC_ERR_FORMAT, "state file '%s' is corrupt: master weight %zu is %s", path,
                                     done + i, a);
                break;
            }
    }
    free(m);
    return st;
}

/* Uploads the body's parts (m, v and, with has_master, master weights; total floats each) into the
 * trainer's optimizer state, in chunks: the n of them from element `from` on (a rank's shard of a
 * file that holds all the parameters, or all of it). */
static llmc_status upload_body(llmc_train *t, FILE *f, const char *path, size_t total, size_t from, size_t n,
                               int has_master) {
    float *buf = malloc(CHUNK * sizeof(float));
    if (!buf) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate a buffer for the state");
    llmc_status st = LLMC_OK;
    for (int part = 0; part < 2 + has_master && st == LLMC_OK; part++) {
        float *dst = part == 0 ? t->adam_m : part == 1 ? t->adam_v : t->master;
        if (!dst) continue; /* saved with master weights, resumed without: the bf16 params are exact */
        for (size_t done = 0; done < n && st == LLMC_OK; done += CHUNK) {
            const size_t k = n - done < CHUNK ? n - done : CHUNK;
            if (!read_part(f, buf, k, part, total, from + done)) {
                st = llmc_train_fail(t, LLMC_ERR_IO, "read error in state file '%s'", path);
                break;
            }
            st = t->m->dev.ops->copy_h2d(&t->m->dev, dst + done, buf, k * sizeof(float));
            if (st == LLMC_OK) st = t->m->dev.ops->synchronize(&t->m->dev);
            if (st != LLMC_OK) st = llmc_train_dev_fail(t, st);
        }
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
    const long size = llmc_file_size(f);
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
    st = check_header(t, state_path, h);
    if (st != LLMC_OK) goto done;
    /* the body's size from the header alone, then every value, before anything of the model changes */
    const uint64_t nparams = llmc_get_u64(h, S_NPARAMS), shard_off = llmc_get_u64(h, S_SHARD_OFFSET);
    const uint64_t n = llmc_get_u64(h, S_SHARD_COUNT) ? llmc_get_u64(h, S_SHARD_COUNT) : nparams;
    const int has_master = h[S_HAS_MASTER];
    const uint64_t parts = 2 + (uint64_t)has_master;
    if (n == 0 || n > nparams || shard_off > nparams - n || n > ((uint64_t)LONG_MAX - sizeof h) / (4 * parts) ||
        (uint64_t)size != sizeof h + parts * n * sizeof(float)) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                             "state file '%s' is corrupt: its header claims %llu of %llu parameters (%llu floats of "
                             "body) but the file has %ld bytes",
                             state_path, (unsigned long long)n, (unsigned long long)nparams,
                             (unsigned long long)(parts * n), size);
        goto done;
    }
    if (n != nparams && t->opts.shard_count == 0 && !llmc_train_zero1(t)) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                             "state file '%s' holds the optimizer shard [%llu, +%llu) of %llu parameters; this "
                             "trainer covers all of them",
                             state_path, (unsigned long long)shard_off, (unsigned long long)n,
                             (unsigned long long)nparams);
        goto done;
    }
    st = check_body(t, f, state_path, (size_t)n, has_master);
    if (st != LLMC_OK) goto done;
    /* the model file replaces the weights: detach for the load, then attach again */
    m->users--;
    st = llmc_model_load(m, NULL, model_path);
    m->users++;
    if (st != LLMC_OK) {
        st = llmc_train_from_model(t, st);
        goto done;
    }
    if (nparams != m->w.count) {
        st = llmc_train_fail(t, LLMC_ERR_FORMAT, "state file '%s' does not match its model: %llu params, want %zu",
                             state_path, (unsigned long long)nparams, m->w.count);
        goto done;
    }
    llmc_train_release(t);
    st = llmc_train_ensure_optimizer(t); /* sized for the shard; master weights filled from the model */
    /* a file of every parameter serves any shard (a run on another number of ranks); a shard's
     * file only that shard */
    const int whole = n == nparams;
    if (st == LLMC_OK && !whole && (t->shard_count != n || t->shard_offset != shard_off))
        st = llmc_train_fail(t, LLMC_ERR_FORMAT,
                             "state file '%s' covers parameters [%llu, +%llu), the trainer's shard is [%zu, +%zu)",
                             state_path, (unsigned long long)shard_off, (unsigned long long)n, t->shard_offset,
                             t->shard_count);
    if (st == LLMC_OK)
        st = upload_body(t, f, state_path, (size_t)n, whole ? t->shard_offset : 0, t->shard_count, has_master);
    if (st != LLMC_OK) {
        llmc_train_release(t); /* no half-loaded optimizer state */
        goto done;
    }
    t->master_version = m->version;
    t->step = h[S_OPT_STEP];
    info->step = h[S_TRAIN_STEP];
    info->rng = llmc_get_u64(h, S_RNG);
    info->data.epoch = llmc_get_u64(h, S_EPOCH);
    info->data.shard = llmc_get_u64(h, S_SHARD);
    info->data.sample = llmc_get_u64(h, S_SAMPLE);
    get_run(h, &info->run);
done:
    fclose(f);
    return st;
}

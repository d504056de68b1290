/* dataloader.c — batches of (inputs, targets) from llm.c token shards.
 *
 * A shard is 256 int32 of header (magic, version 1, token count) followed by
 * uint16 tokens, little-endian. Every shard is validated when the loader opens,
 * so a bad file fails at startup rather than hours into a run. Batches are read
 * with pread at an offset: memory stays at one batch no matter how big the shards.
 *
 * A shard may have a loss mask beside it (X.bin, X.mask: see llmc.h): targets whose mask byte
 * is 0 come out as LLMC_IGNORE_TARGET. llm.c and other readers see only X.bin, a plain shard.
 *
 * Position (epoch, shard, sample) names the *next* batch. With shuffling, the
 * shard order depends only on (seed, epoch) and a shard's sample order only on
 * (seed, epoch, file), so a saved position alone reproduces the stream.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmc.h"
#include "rng.h"

#define SHARD_VERSION 1
#define MASK_VERSION 1
#define HEADER_BYTES ((off_t)LLMC_HEADER_INTS * 4)

typedef struct shard {
    char *path;
    char *mask_path; /* NULL: no loss mask */
    size_t num_tokens;
    size_t num_batches; /* floor((num_tokens - 1) / (B*T)) */
} shard;

struct llmc_dataloader {
    int B, T;
    int shuffle;
    uint64_t seed;
    int ok; /* open succeeded */
    char err[LLMC_ERR_LEN];
    int has_err;

    shard *shards;
    int num_shards;
    size_t total_tokens, total_batches;

    llmc_data_position pos;

    /* the open files: one shard and its mask at a time, whatever the shard count */
    int fd, fd_file;
    int mask_fd, mask_fd_file;
    int masked; /* every shard has a mask */

    /* shuffled orders, cached for the epoch / shard they were built for */
    int *shard_order;
    uint64_t shard_order_epoch;
    int shard_order_valid;
    uint32_t *sample_order;
    size_t sample_order_cap;
    uint64_t sample_order_epoch;
    int sample_order_file;
    int sample_order_valid;

    uint16_t *buf; /* B*T+1 tokens */
    uint8_t *mbuf; /* and their mask bytes */
};

static llmc_status fail(llmc_dataloader *d, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    d->has_err = 1;
    return code;
}

/* Independent streams for the shard order of an epoch and the sample order of
 * (epoch, file): the tags keep the two kinds of stream apart. */
static uint64_t stream_state(uint64_t seed, uint64_t tag, uint64_t epoch, uint64_t file) {
    uint64_t s = llmc_rng_seed(seed ^ 0xD1B54A32D192ED03ull * (tag + 1));
    s = llmc_rng_seed(s ^ epoch);
    s = llmc_rng_seed(s ^ file);
    return s;
}

static void shuffle_u32(uint32_t *a, size_t n, uint64_t state) {
    for (size_t i = n; i > 1; i--) {
        size_t j = llmc_rng_below(&state, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static int file_at(llmc_dataloader *d, uint64_t epoch, uint64_t shard_index) {
    if (!d->shuffle) return (int)shard_index;
    if (!d->shard_order_valid || d->shard_order_epoch != epoch) {
        uint64_t st = stream_state(d->seed, 0, epoch, 0);
        for (int i = 0; i < d->num_shards; i++) d->shard_order[i] = i;
        for (int i = d->num_shards; i > 1; i--) {
            int j = (int)llmc_rng_below(&st, (uint32_t)i);
            int t = d->shard_order[i - 1];
            d->shard_order[i - 1] = d->shard_order[j];
            d->shard_order[j] = t;
        }
        d->shard_order_epoch = epoch;
        d->shard_order_valid = 1;
    }
    return d->shard_order[shard_index];
}

static llmc_status batch_at(llmc_dataloader *d, uint64_t epoch, int file, uint64_t sample, size_t *batch) {
    if (!d->shuffle) {
        *batch = (size_t)sample;
        return LLMC_OK;
    }
    if (!d->sample_order_valid || d->sample_order_epoch != epoch || d->sample_order_file != file) {
        size_t n = d->shards[file].num_batches;
        if (n > d->sample_order_cap) {
            uint32_t *p = realloc(d->sample_order, n * sizeof *p);
            if (!p) return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the sample order of %zu batches", n);
            d->sample_order = p;
            d->sample_order_cap = n;
        }
        for (size_t i = 0; i < n; i++) d->sample_order[i] = (uint32_t)i;
        shuffle_u32(d->sample_order, n, stream_state(d->seed, 1, epoch, (uint64_t)file));
        d->sample_order_epoch = epoch;
        d->sample_order_file = file;
        d->sample_order_valid = 1;
    }
    *batch = d->sample_order[sample];
    return LLMC_OK;
}

/* Reads exactly n bytes at off of `path` (kept open in *fd as file number `file`); fails on a
 * short read (a file cut after open). what: "shard" or "mask file". */
static llmc_status read_at(llmc_dataloader *d, const char *path, int *fd, int *fd_file, int file, void *dst, size_t n,
                           off_t off, const char *what) {
    if (*fd_file != file) {
        if (*fd >= 0) close(*fd);
        *fd_file = -1;
        *fd = open(path, O_RDONLY);
        if (*fd < 0) return fail(d, LLMC_ERR_IO, "cannot open %s %s: %s", what, path, strerror(errno));
        *fd_file = file;
    }
    char *p = dst;
    while (n > 0) {
        ssize_t r = pread(*fd, p, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail(d, LLMC_ERR_IO, "cannot read %s %s: %s", what, path, strerror(errno));
        if (r == 0) return fail(d, LLMC_ERR_FORMAT, "%s %s is shorter than when it was opened", what, path);
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return LLMC_OK;
}

/* Opens path as a regular file (O_NONBLOCK: a glob may match a FIFO, whose open() would wait
 * for a writer forever) and reads its header; *size gets the file's size. */
static llmc_status read_header(llmc_dataloader *d, const char *path, const char *what, int32_t h[LLMC_HEADER_INTS],
                               off_t *size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fail(d, LLMC_ERR_IO, "cannot open %s %s: %s", what, path, strerror(errno));
    struct stat sb;
    llmc_status st = LLMC_OK;
    if (fstat(fd, &sb) != 0) st = fail(d, LLMC_ERR_IO, "cannot stat %s %s: %s", what, path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = fail(d, LLMC_ERR_IO, "%s %s is not a regular file (a directory or a pipe?)", what, path);
    else if (sb.st_size < HEADER_BYTES)
        st = fail(d, LLMC_ERR_FORMAT, "truncated %s %s: %lld bytes, shorter than the %d-byte header", what, path,
                  (long long)sb.st_size, (int)HEADER_BYTES);
    for (size_t got = 0; st == LLMC_OK && got < LLMC_HEADER_INTS * 4;) {
        ssize_t r = pread(fd, (char *)h + got, LLMC_HEADER_INTS * 4 - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) st = fail(d, LLMC_ERR_IO, "cannot read the header of %s %s", what, path);
        else got += (size_t)r;
    }
    close(fd);
    *size = st == LLMC_OK ? sb.st_size : 0;
    return st;
}

/* Checks one shard's header and size; fills s->num_tokens.
 *
 * Nothing the loader allocates is sized by a header: the token count must match the file's
 * size exactly before it is believed, and the buffers that follow are bounded by what the
 * files hold (a batch needs B*T+1 tokens of one shard; the sample order of a shard has one
 * entry per batch of it). */
static llmc_status validate_shard(llmc_dataloader *d, shard *s, size_t bt) {
    int32_t h[LLMC_HEADER_INTS];
    off_t size;
    llmc_status st = read_header(d, s->path, "shard", h, &size);
    if (st != LLMC_OK) return st;
    if (h[0] == LLMC_MASK_MAGIC)
        return fail(d, LLMC_ERR_FORMAT,
                    "%s is a loss-mask file, not a token shard: give a pattern that matches only the .bin shards",
                    s->path);
    if (h[0] != LLMC_SHARD_MAGIC)
        return fail(d, LLMC_ERR_FORMAT, "shard %s has wrong magic %d (expected %d): not an llm.c token shard", s->path,
                    h[0], LLMC_SHARD_MAGIC);
    if (h[1] != SHARD_VERSION)
        return fail(d, LLMC_ERR_FORMAT, "shard %s has unsupported version %d (expected %d)", s->path, h[1],
                    SHARD_VERSION);
    if (h[2] < 0) return fail(d, LLMC_ERR_FORMAT, "shard %s has a negative token count %d", s->path, h[2]);
    long long want = (long long)HEADER_BYTES + 2LL * h[2];
    if ((long long)size != want) {
        long long held = ((long long)size - HEADER_BYTES) / 2;
        if ((long long)size < want)
            return fail(d, LLMC_ERR_FORMAT, "truncated shard %s: header says %d tokens but file holds %lld", s->path,
                        h[2], held);
        return fail(d, LLMC_ERR_FORMAT, "shard %s is longer than its header: header says %d tokens but file holds %lld%s",
                    s->path, h[2], held, ((long long)size - HEADER_BYTES) % 2 ? " and a stray byte" : "");
    }
    s->num_tokens = (size_t)h[2];
    if (s->num_tokens < bt + 1)
        return fail(d, LLMC_ERR_FORMAT, "shard %s has %zu tokens, fewer than B*T+1 = %zu needed for one batch", s->path,
                    s->num_tokens, bt + 1);
    s->num_batches = (s->num_tokens - 1) / bt;
    return LLMC_OK;
}

/* X.bin -> X.mask (any other name: name + ".mask"). */
static char *mask_path_of(const char *path) {
    size_t n = strlen(path);
    if (n >= 4 && !strcmp(path + n - 4, ".bin")) n -= 4;
    char *m = malloc(n + 6);
    if (m) {
        memcpy(m, path, n);
        memcpy(m + n, ".mask", 6);
    }
    return m;
}

/* The mask beside shard s, if there is one: its header must match the shard and this T. */
static llmc_status find_mask(llmc_dataloader *d, shard *s) {
    char *mp = mask_path_of(s->path);
    if (!mp) return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for a mask file name");
    struct stat sb;
    if (stat(mp, &sb) != 0) { /* no mask: a plain shard */
        free(mp);
        return LLMC_OK;
    }
    s->mask_path = mp;
    int32_t h[LLMC_HEADER_INTS];
    off_t size;
    llmc_status st = read_header(d, mp, "mask file", h, &size);
    if (st != LLMC_OK) return st;
    if (h[0] != LLMC_MASK_MAGIC)
        return fail(d, LLMC_ERR_FORMAT, "mask file %s has wrong magic %d (expected %d): not an llmc loss mask", mp, h[0],
                    LLMC_MASK_MAGIC);
    if (h[1] != MASK_VERSION)
        return fail(d, LLMC_ERR_FORMAT, "mask file %s has version %d; this llmc reads version %d", mp, h[1],
                    MASK_VERSION);
    if (h[2] < 0 || (size_t)h[2] != s->num_tokens)
        return fail(d, LLMC_ERR_FORMAT, "mask file %s is for %d tokens but its shard %s holds %zu", mp, h[2], s->path,
                    s->num_tokens);
    if ((long long)size != (long long)HEADER_BYTES + h[2])
        return fail(d, LLMC_ERR_FORMAT, "mask file %s holds %lld mask bytes, its header says %d", mp,
                    (long long)size - (long long)HEADER_BYTES, h[2]);
    if (h[3] != d->T)
        return fail(d, LLMC_ERR_INVALID_ARG,
                    "mask file %s was packed for rows of T=%d tokens; train with -t %d (or prepare the data again "
                    "with --seq-len %d)",
                    mp, h[3], h[3], d->T);
    return LLMC_OK;
}

static llmc_status open_impl(llmc_dataloader *d, const char *pattern) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1)
        return fail(d, LLMC_ERR_UNSUPPORTED, "token shards are little-endian; this host is big-endian");
    if (!pattern) return fail(d, LLMC_ERR_INVALID_ARG, "no file pattern given");
    if (d->B <= 0 || d->T <= 0)
        return fail(d, LLMC_ERR_INVALID_ARG, "B and T must be positive, got B=%d, T=%d", d->B, d->T);
    size_t bt = (size_t)d->B * (size_t)d->T;

    glob_t g;
    memset(&g, 0, sizeof g);
    int rc = glob(pattern, 0, NULL, &g); /* sorted unless GLOB_NOSORT */
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        globfree(&g);
        return fail(d, LLMC_ERR_IO, "no files match '%s'", pattern);
    }
    if (rc != 0) {
        globfree(&g);
        return fail(d, rc == GLOB_NOSPACE ? LLMC_ERR_OUT_OF_MEMORY : LLMC_ERR_IO, "cannot expand the pattern '%s'",
                    pattern);
    }
    if (g.gl_pathc > (size_t)INT32_MAX) {
        globfree(&g);
        return fail(d, LLMC_ERR_INVALID_ARG, "too many files match '%s'", pattern);
    }
    d->num_shards = (int)g.gl_pathc;
    d->shards = calloc((size_t)d->num_shards, sizeof *d->shards);
    if (!d->shards) {
        globfree(&g);
        d->num_shards = 0;
        return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for %zu shard entries", g.gl_pathc);
    }
    for (int i = 0; i < d->num_shards; i++) {
        d->shards[i].path = strdup(g.gl_pathv[i]);
        if (!d->shards[i].path) {
            globfree(&g);
            return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for shard names");
        }
    }
    globfree(&g);

    for (int i = 0; i < d->num_shards; i++) {
        llmc_status st = validate_shard(d, &d->shards[i], bt);
        if (st != LLMC_OK) return st;
        d->total_tokens += d->shards[i].num_tokens;
        d->total_batches += d->shards[i].num_batches;
        if ((st = find_mask(d, &d->shards[i])) != LLMC_OK) return st;
        d->masked += d->shards[i].mask_path != NULL;
    }
    if (d->masked && d->masked != d->num_shards) {
        int i = 0;
        while (d->shards[i].mask_path) i++;
        return fail(d, LLMC_ERR_FORMAT, "%d of %d shards have a loss mask but %s has none: do not mix masked and plain shards",
                    d->masked, d->num_shards, d->shards[i].path);
    }
    d->masked = d->masked > 0;
    if (d->masked && !(d->mbuf = malloc(bt + 1)))
        return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the masks of %zu tokens", bt + 1);

    d->buf = malloc((bt + 1) * sizeof *d->buf);
    if (!d->buf) return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for a batch of %zu tokens", bt + 1);
    if (d->shuffle) {
        d->shard_order = malloc((size_t)d->num_shards * sizeof *d->shard_order);
        if (!d->shard_order) return fail(d, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the shard order");
    }
    return LLMC_OK;
}

llmc_dataloader *llmc_dataloader_new(void) {
    llmc_dataloader *d = calloc(1, sizeof *d);
    if (d) d->fd = d->fd_file = d->mask_fd = d->mask_fd_file = -1;
    return d;
}

/* Back to the state of llmc_dataloader_new, keeping nothing of an earlier open. */
static void release(llmc_dataloader *d) {
    if (d->fd >= 0) close(d->fd);
    if (d->mask_fd >= 0) close(d->mask_fd);
    if (d->shards)
        for (int i = 0; i < d->num_shards; i++) free(d->shards[i].path), free(d->shards[i].mask_path);
    free(d->shards);
    free(d->shard_order);
    free(d->sample_order);
    free(d->buf);
    free(d->mbuf);
    memset(d, 0, sizeof *d);
    d->fd = d->fd_file = d->mask_fd = d->mask_fd_file = -1;
}

llmc_status llmc_dataloader_open(llmc_dataloader *d, const char *pattern, int B, int T, int shuffle, uint64_t seed) {
    release(d);
    d->B = B;
    d->T = T;
    d->shuffle = shuffle != 0;
    d->seed = seed;
    llmc_status st = open_impl(d, pattern);
    if (st == LLMC_OK) {
        d->ok = 1;
        d->has_err = 0;
    }
    return st;
}

/* The message of the last failure (open, next or seek), "" when there was none. */
const char *llmc_dataloader_error(const llmc_dataloader *d) {
    if (!d) return "out of memory";
    return d->has_err ? d->err : "";
}

void llmc_dataloader_free(llmc_dataloader *d) {
    if (!d) return;
    release(d);
    free(d);
}

/* The position after the batch at the current one (of file): next sample, else next shard, else
 * next epoch. */
static void advance(llmc_dataloader *d, int file) {
    if (++d->pos.sample >= d->shards[file].num_batches) {
        d->pos.sample = 0;
        if (++d->pos.shard >= (uint64_t)d->num_shards) {
            d->pos.shard = 0;
            d->pos.epoch++;
        }
    }
}

llmc_status llmc_dataloader_next(llmc_dataloader *d, int *inputs, int *targets) {
    if (!d) return LLMC_ERR_INVALID_ARG;
    if (!d->ok) /* keeps the open error in d->err */
        return d->has_err ? LLMC_ERR_INVALID_ARG : fail(d, LLMC_ERR_INVALID_ARG, "the data loader is not open");
    if (!inputs || !targets) return fail(d, LLMC_ERR_INVALID_ARG, "inputs and targets must not be NULL");
    size_t bt = (size_t)d->B * (size_t)d->T;
    int file = file_at(d, d->pos.epoch, d->pos.shard);
    size_t batch = 0;
    llmc_status st = batch_at(d, d->pos.epoch, file, d->pos.sample, &batch);
    if (st != LLMC_OK) return st;
    const shard *s = &d->shards[file];
    off_t off = HEADER_BYTES + (off_t)(batch * bt) * 2;
    st = read_at(d, s->path, &d->fd, &d->fd_file, file, d->buf, (bt + 1) * sizeof *d->buf, off, "shard");
    if (st == LLMC_OK && d->masked)
        st = read_at(d, s->mask_path, &d->mask_fd, &d->mask_fd_file, file, d->mbuf, bt + 1,
                     HEADER_BYTES + (off_t)(batch * bt), "mask file");
    if (st != LLMC_OK) return st;
    for (size_t i = 0; i < bt; i++) {
        inputs[i] = d->buf[i];
        targets[i] = d->buf[i + 1];
    }
    for (size_t i = 0; d->masked && i < bt; i++) {
        if (d->mbuf[i + 1] > 1)
            return fail(d, LLMC_ERR_FORMAT, "mask file %s holds byte %d for token %zu; mask bytes are 0 or 1",
                        s->mask_path, d->mbuf[i + 1], batch * bt + i + 1);
        if (!d->mbuf[i + 1]) targets[i] = LLMC_IGNORE_TARGET;
    }
    advance(d, file);
    d->has_err = 0;
    return LLMC_OK;
}

llmc_status llmc_dataloader_skip(llmc_dataloader *d, uint64_t n) {
    if (!d) return LLMC_ERR_INVALID_ARG;
    if (!d->ok) return d->has_err ? LLMC_ERR_INVALID_ARG : fail(d, LLMC_ERR_INVALID_ARG, "the data loader is not open");
    for (uint64_t i = 0; i < n; i++) advance(d, file_at(d, d->pos.epoch, d->pos.shard));
    return LLMC_OK;
}

void llmc_dataloader_reset(llmc_dataloader *d) {
    if (!d || !d->ok) return;
    memset(&d->pos, 0, sizeof d->pos);
    d->has_err = 0;
}

llmc_data_position llmc_dataloader_tell(const llmc_dataloader *d) {
    llmc_data_position p = {0, 0, 0};
    return d ? d->pos : p;
}

llmc_status llmc_dataloader_seek(llmc_dataloader *d, llmc_data_position p) {
    if (!d) return LLMC_ERR_INVALID_ARG;
    if (!d->ok) /* keeps the open error in d->err */
        return d->has_err ? LLMC_ERR_INVALID_ARG : fail(d, LLMC_ERR_INVALID_ARG, "the data loader is not open");
    if (p.shard >= (uint64_t)d->num_shards)
        return fail(d, LLMC_ERR_INVALID_ARG, "cannot seek to shard %llu: there are %d shards",
                    (unsigned long long)p.shard, d->num_shards);
    int file = file_at(d, p.epoch, p.shard);
    if (p.sample >= d->shards[file].num_batches)
        return fail(d, LLMC_ERR_INVALID_ARG, "cannot seek to sample %llu of shard %llu (%s): it has %zu batches",
                    (unsigned long long)p.sample, (unsigned long long)p.shard, d->shards[file].path,
                    d->shards[file].num_batches);
    d->pos = p;
    d->has_err = 0;
    return LLMC_OK;
}

size_t llmc_dataloader_num_tokens(const llmc_dataloader *d) { return d && d->ok ? d->total_tokens : 0; }
int llmc_dataloader_num_shards(const llmc_dataloader *d) { return d && d->ok ? d->num_shards : 0; }
size_t llmc_dataloader_num_batches(const llmc_dataloader *d) { return d && d->ok ? d->total_batches : 0; }
int llmc_dataloader_has_masks(const llmc_dataloader *d) { return d && d->ok ? d->masked : 0; }

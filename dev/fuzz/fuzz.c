/*
 * fuzz.c — a mutation fuzzer for every file format llmc reads.
 *
 *   fuzz FORMAT [-n N | -s SECONDS] [-j JOBS] [--seed S] [--keep DIR] [options]
 *   fuzz replay FORMAT PATH...      run saved inputs (a file; for state, a checkpoint dir)
 *   fuzz selftest                   check that crashes, hangs and blow-ups are told apart
 *
 * FORMAT: model, shard, tokenizer, state, safetensors (a Hugging Face directory), mask (a loss
 * mask X.mask beside its shard X.bin), eval (llm.c's multiple-choice eval file), or all. The fuzzer writes valid files of each format
 * itself (small shapes: 1 to 100 KB a file), mutates
 * them (truncation, bit flips, JSON numbers and strings in safetensors headers and configs,
 * header fields at extremes, size fields whose products overflow, garbage, NaN/Inf in bodies)
 * and feeds each input to the library's public API in a forked child under an address-space
 * limit and a wall-clock limit. The outcome of every input is one of
 *
 *   ok      the file loaded and was usable (a forward, a decode, a batch, a step)
 *   error   the API refused it with a status and a message: what a bad file must get
 *   crash   the child died of a signal (SIGSEGV, SIGABRT, a sanitizer report, ...)
 *   hang    the child ran past the time limit
 *   blowup  the library asked for more memory than a small file can justify: an allocation
 *           above --max-alloc, a failed one under the address-space limit, or
 *           LLMC_ERR_OUT_OF_MEMORY (a loader may report a failed malloc as a format error, so
 *           the allocations themselves are watched, through -Wl,--wrap)
 *   poison  (state) a state file loaded, and training from it failed or made the parameters
 *           non-finite: the loader let through a state it should have refused
 *   bad     the API broke its own contract: an error without a message, a loaded file that
 *           cannot be used, a decode that returns nonsense
 *
 * Every input is a pure function of (seed, format, index), so a finding printed by CI can be
 * regenerated with --only INDEX. Crashes, hangs, blow-ups, poisons and bads are written to
 * --keep DIR with a .txt that says what happened; `fuzz replay` runs them again.
 *
 * Adding a format (quantized models): a seed writer, a child that drives
 * the API, the header slots worth setting to extremes, and a row in FORMATS below.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "llmc.h"
#include "mc_eval.h" /* the eval file reader: internal to the library, but a reader of outside files */

#define HEADER_BYTES (LLMC_HEADER_INTS * 4)
#define STATE_STEP 7 /* the checkpoint step the state seeds are saved under */

enum { OK, ERROR, POISON, BAD, BLOWUP, HANG, CRASH, NOUT }; /* child verdicts rank by this order */
static const char *OUTCOME[NOUT] = {"ok", "error", "poison", "bad", "blowup", "hang", "crash"};

/* ------------------------------------------------------------------ what a child reports */

/* One shared page per worker: the child writes its verdict here, so that the parent learns
 * why even when the child dies (the allocation that preceded a crash, say). */
typedef struct report {
    int outcome;
    size_t biggest_alloc; /* the largest request the child made */
    size_t refused_alloc; /* a request above the limit, or one that failed; 0: none */
    int finished;         /* set by the harness just before the child exits: any other exit is the library's */
    char msg[1024];
} report;

static report *g_rep;          /* NULL outside a child: the parent's own allocations are not watched */
static size_t g_max_alloc = (size_t)256 << 20;

static void verdict(int o, const char *fmt, ...) {
    if (!g_rep || o < g_rep->outcome) return; /* keep the worst, with its message */
    if (o == g_rep->outcome && o != OK && g_rep->msg[0]) return; /* the first message of a kind explains it */
    g_rep->outcome = o;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_rep->msg, sizeof g_rep->msg, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ the allocation watch */

/* The build links with -Wl,--wrap=malloc,... so every allocation of the library (and of this
 * file) passes through here. In a child, a request above g_max_alloc is refused (NULL, as
 * malloc under a real memory limit would say) and recorded: no file of a few KB needs it. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);

static int watch_refuses(size_t n) {
    if (!g_rep) return 0;
    if (n > g_rep->biggest_alloc) g_rep->biggest_alloc = n;
    if (n <= g_max_alloc) return 0;
    g_rep->refused_alloc = n;
    return 1;
}
static void *watch_result(void *p, size_t n) {
    if (!p && n && g_rep && !g_rep->refused_alloc) g_rep->refused_alloc = n; /* failed under RLIMIT_AS */
    return p;
}
void *__wrap_malloc(size_t n) { return watch_refuses(n) ? NULL : watch_result(__real_malloc(n), n); }
void *__wrap_realloc(void *p, size_t n) { return watch_refuses(n) ? NULL : watch_result(__real_realloc(p, n), n); }
void *__wrap_aligned_alloc(size_t a, size_t n) {
    return watch_refuses(n) ? NULL : watch_result(__real_aligned_alloc(a, n), n);
}
void *__wrap_calloc(size_t k, size_t n) {
    if (n && k > SIZE_MAX / n) { /* the product overflows: that is a blow-up too */
        if (g_rep) g_rep->refused_alloc = SIZE_MAX;
        return NULL;
    }
    return watch_refuses(k * n) ? NULL : watch_result(__real_calloc(k, n), k * n);
}

/* ------------------------------------------------------------------ verdict helpers for children */

/* A call that failed where failing is allowed (loading a fuzzed file). */
static void refused(llmc_status st, const char *msg, const char *what) {
    if (st == LLMC_ERR_OUT_OF_MEMORY) verdict(BLOWUP, "%s: out of memory: %s", what, msg ? msg : "");
    else if (!msg || !msg[0]) verdict(BAD, "%s failed (%s) without a message", what, llmc_status_name(st));
    else verdict(ERROR, "%s: %s", what, msg);
}

/* A call that failed after the file was accepted: a loaded file must be usable. Non-finite
 * numbers from finite (but huge) weights are allowed to fail cleanly. */
static void failed_later(llmc_status st, const char *msg, const char *what) {
    if (st == LLMC_ERR_OUT_OF_MEMORY) verdict(BLOWUP, "%s: out of memory: %s", what, msg ? msg : "");
    else if (!msg || !msg[0]) verdict(BAD, "%s failed (%s) without a message", what, llmc_status_name(st));
    else if (st != LLMC_ERR_NUMERIC) verdict(BAD, "%s failed on an accepted file: %s: %s", what, llmc_status_name(st), msg);
}

static int all_finite(const float *p, size_t n, size_t *at) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            *at = i;
            return 0;
        }
    return 1;
}

/* Tokens for a forward: deterministic, inside the vocab. */
static int *tokens(int n, int V, int salt) {
    int *t = malloc((size_t)n * sizeof *t);
    for (int i = 0; t && i < n; i++) t[i] = (int)(((unsigned)i * 2654435761u + (unsigned)salt * 40503u) % (unsigned)V);
    return t;
}

/* ------------------------------------------------------------------ children: one per format */

/* A loaded model must be usable: finite parameters, a training forward, two decode steps. Frees m. */
static void exercise_model(llmc_model *m) {
    llmc_status st;
    const llmc_config c = *llmc_model_config(m);
    const size_t np = llmc_model_num_params(m);
    float *p = malloc(np * sizeof *p);
    size_t at;
    if (!p) verdict(BLOWUP, "no memory for a copy of %zu params", np);
    else if ((st = llmc_model_get_params(m, p)) != LLMC_OK) failed_later(st, llmc_model_error(m), "get_params");
    else if (!all_finite(p, np, &at)) verdict(BAD, "the loader accepted a non-finite parameter at %zu", at);
    free(p);

    /* one training forward on a few tokens */
    const int B = 2, T = c.max_seq_len < 5 ? c.max_seq_len : 5;
    int *in = tokens(B * T, c.vocab_size, 1), *tg = tokens(B * T, c.vocab_size, 2);
    llmc_train *t = llmc_train_new();
    if ((st = llmc_train_attach(t, m, NULL)) != LLMC_OK) failed_later(st, llmc_train_error(t), "train_attach");
    else if ((st = llmc_train_forward(t, in, tg, B, T)) != LLMC_OK) failed_later(st, llmc_train_error(t), "forward");
    llmc_train_free(t);

    /* and two decode steps of a generation session */
    if (c.max_seq_len > 1) {
        int len = c.max_seq_len - 1 < 3 ? c.max_seq_len - 1 : 3, out[1], alive = 0;
        llmc_gen_options go;
        llmc_gen_options_default(&go);
        go.max_new = 2;
        go.sampling.temperature = 0.0f;
        llmc_gen *g = llmc_gen_new();
        if ((st = llmc_gen_begin(g, m, in, &len, 1, &go)) != LLMC_OK) failed_later(st, llmc_gen_error(g), "gen_begin");
        for (int k = 0; st == LLMC_OK && k < 2; k++) {
            st = llmc_gen_next(g, out, 1, &alive);
            if (st != LLMC_OK) failed_later(st, llmc_gen_error(g), "gen_next");
            else if (out[0] < -1 || out[0] >= c.vocab_size) verdict(BAD, "decode produced token %d of V=%d", out[0], c.vocab_size);
        }
        llmc_gen_free(g);
    }
    free(in), free(tg);
    llmc_model_free(m);
}

static void child_model(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.bin", dir);
    llmc_model *m = llmc_model_new();
    llmc_status st = llmc_model_load(m, NULL, path);
    if (st != LLMC_OK) {
        refused(st, llmc_model_error(m), "model load");
        llmc_model_free(m);
        return;
    }
    verdict(OK, "loaded");
    exercise_model(m);
}

/* A Hugging Face directory (ck/config.json, ck/model.safetensors), through llmc_model_load's dispatch. */
static void child_safetensors(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/ck", dir);
    llmc_model *m = llmc_model_new();
    llmc_status st = llmc_model_load(m, NULL, path);
    if (st != LLMC_OK) {
        refused(st, llmc_model_error(m), "hf load");
        llmc_model_free(m);
        return;
    }
    verdict(OK, "loaded");
    exercise_model(m);
}

/* One shard opened with (B, T, shuffle): a few batches, then seeks in and out of range. */
static int shard_case(const char *pattern, int B, int T, int shuffle, int first) {
    llmc_dataloader *d = llmc_dataloader_new();
    llmc_status st = llmc_dataloader_open(d, pattern, B, T, shuffle, 42);
    if (st != LLMC_OK) {
        if (first) refused(st, llmc_dataloader_error(d), "dataloader open");
        else if (st == LLMC_ERR_OUT_OF_MEMORY || !llmc_dataloader_error(d)[0]) refused(st, llmc_dataloader_error(d), "dataloader open");
        llmc_dataloader_free(d);
        return 0;
    }
    const size_t bt = (size_t)B * T, nb = llmc_dataloader_num_batches(d);
    const int ns = llmc_dataloader_num_shards(d);
    if (nb < (size_t)ns || llmc_dataloader_num_tokens(d) < bt + 1)
        verdict(BAD, "open accepted %d shard(s) with %zu batches, %zu tokens for B*T=%zu", ns, nb,
                llmc_dataloader_num_tokens(d), bt);
    int *in = malloc(bt * sizeof *in), *tg = malloc(bt * sizeof *tg);
    for (size_t k = 0; in && tg && k < 6 && k <= nb; k++) { /* one past the end wraps to the next epoch */
        if ((st = llmc_dataloader_next(d, in, tg)) != LLMC_OK) {
            failed_later(st, llmc_dataloader_error(d), "dataloader next");
            break;
        }
        for (size_t i = 0; i + 1 < bt; i++)
            if (tg[i] != in[i + 1] || in[i] < 0 || in[i] > 65535) {
                verdict(BAD, "batch %zu: targets are not the inputs shifted by one at %zu", k, i);
                break;
            }
    }
    llmc_data_position p = llmc_dataloader_tell(d);
    if ((st = llmc_dataloader_seek(d, p)) != LLMC_OK) failed_later(st, llmc_dataloader_error(d), "seek to tell()");
    llmc_data_position outside[] = {{0, 0, (uint64_t)nb}, {0, (uint64_t)ns, 0}, {0, UINT64_MAX, UINT64_MAX}};
    for (int i = 0; i < 3; i++) {
        st = llmc_dataloader_seek(d, outside[i]);
        if (st == LLMC_OK) verdict(BAD, "seek to shard %llu sample %llu succeeded", (unsigned long long)outside[i].shard,
                                   (unsigned long long)outside[i].sample);
        else if (!llmc_dataloader_error(d)[0]) verdict(BAD, "seek failed without a message");
    }
    llmc_data_position later = {3, 0, 0};
    if ((st = llmc_dataloader_seek(d, later)) == LLMC_OK && in && tg && (st = llmc_dataloader_next(d, in, tg)) != LLMC_OK)
        failed_later(st, llmc_dataloader_error(d), "next after seek");
    llmc_dataloader_reset(d);
    free(in), free(tg);
    llmc_dataloader_free(d);
    return 1;
}

static void child_shard(const char *dir) {
    char one[4200], both[4200];
    snprintf(one, sizeof one, "%s/shard_0.bin", dir);  /* the input */
    snprintf(both, sizeof both, "%s/shard_*.bin", dir); /* the input and a valid shard_1.bin */
    if (shard_case(one, 1, 1, 0, 1)) verdict(OK, "opened");
    shard_case(one, 2, 4, 1, 0);
    shard_case(one, 3, 5, 0, 0);
    shard_case(one, 1, 64, 1, 0);
    shard_case(both, 2, 3, 1, 0);
    shard_case(both, 1, 7, 0, 0);
}

static void child_tokenizer(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
    llmc_tokenizer *t = llmc_tokenizer_new();
    llmc_status st = llmc_tokenizer_load(t, path);
    if (st != LLMC_OK) {
        refused(st, llmc_tokenizer_error(t), "tokenizer load");
        llmc_tokenizer_free(t);
        return;
    }
    verdict(OK, "loaded");
    const int V = llmc_tokenizer_vocab_size(t), eot = llmc_tokenizer_eot(t);
    if (V < 1 || eot < -1 || eot >= V) verdict(BAD, "loaded a vocab of %d with EOT %d", V, eot);
    unsigned sum = 0;
    for (int i = 0; i < V; i++) {
        int len = -1;
        const char *s = llmc_tokenizer_decode(t, i, &len);
        if (!s || len < 0 || len > 255) {
            verdict(BAD, "decode(%d) gave %p with length %d", i, (const void *)s, len);
            break;
        }
        for (int k = 0; k < len; k++) sum += (unsigned char)s[k]; /* touch every byte */
    }
    int len = 0;
    if (llmc_tokenizer_decode(t, -1, &len) || llmc_tokenizer_decode(t, V, &len) || llmc_tokenizer_decode(t, INT_MAX, &len))
        verdict(BAD, "decode of an id outside the vocab of %d returned bytes", V);
    /* a second load over the first, as a long-lived process would do */
    if ((st = llmc_tokenizer_load(t, path)) != LLMC_OK) failed_later(st, llmc_tokenizer_error(t), "second load");
    llmc_tokenizer_free(t);
    if (sum == 0xFFFFFFFFu) verdict(OK, "loaded"); /* keeps the loop from being optimised away */
}

static void child_state(const char *dir) {
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/ck", dir);
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_status st = llmc_model_open(m, NULL);
    if (st == LLMC_OK) st = llmc_train_attach(t, m, NULL);
    if (st != LLMC_OK) {
        verdict(BAD, "cannot open a model and attach a trainer: %s %s", llmc_model_error(m), llmc_train_error(t));
        goto out;
    }
    llmc_checkpoint_info info;
    memset(&info, 0, sizeof info);
    st = llmc_checkpoint_load(t, ck, -1, &info); /* -1: the latest step, which also exercises the directory scan */
    if (st != LLMC_OK) {
        refused(st, llmc_train_error(t), "checkpoint load");
        goto out;
    }
    verdict(OK, "loaded");
    /* Train from the loaded state: a few steps, then the parameters must still be finite. */
    const llmc_config c = *llmc_model_config(m);
    const int B = 2, T = c.max_seq_len < 4 ? c.max_seq_len : 4;
    int *in = tokens(B * T, c.vocab_size, 3), *tg = tokens(B * T, c.vocab_size, 4);
    llmc_adamw a;
    llmc_adamw_default(&a);
    for (int k = 0; k < 3 && in && tg; k++) {
        float loss = 0, norm = 0;
        /* A failure from the first update on comes from the state the loader accepted: a state
         * that cannot be trained from is poison too. The first step's forward, backward and
         * gradient norm see only the model file's weights, which may be finite and still
         * overflow: that is the model fuzzer's business, and a clean NUMERIC error. */
        if ((st = llmc_train_zero_grad(t)) != LLMC_OK ||
            (st = llmc_train_forward_backward(t, in, tg, B, T, 1.0f, &loss)) != LLMC_OK ||
            (st = llmc_train_step(t, &a, &norm)) != LLMC_OK) {
            /* A clean refusal of a legal but extreme state (the step count at its limit) is fine. */
            if (st == LLMC_ERR_INVALID_ARG && llmc_train_error(t)[0]) break;
            if (st == LLMC_ERR_OUT_OF_MEMORY || !llmc_train_error(t)[0] || (k == 0 && st == LLMC_ERR_NUMERIC))
                failed_later(st, llmc_train_error(t), "train");
            else verdict(POISON, "step %d after the load: %s: %s", k + 1, llmc_status_name(st), llmc_train_error(t));
            break;
        }
    }
    const size_t np = llmc_model_num_params(m);
    float *p = malloc(np * sizeof *p);
    size_t at;
    if (p && (st = llmc_train_get_params(t, p)) != LLMC_OK) failed_later(st, llmc_train_error(t), "get_params");
    else if (p && !all_finite(p, np, &at))
        verdict(POISON, "after 3 steps from the loaded state (opt step %d) parameter %zu is %g", llmc_train_step_count(t),
                at, p[at]);
    free(p), free(in), free(tg);

    /* The data position goes to a loader's seek on resume: in range or a clean refusal. */
    char shard[4300];
    snprintf(shard, sizeof shard, "%s/shard_1.bin", dir);
    llmc_dataloader *d = llmc_dataloader_new();
    int bi[4], bt[4];
    if ((st = llmc_dataloader_open(d, shard, 1, 4, info.data.epoch & 1, 42)) != LLMC_OK)
        verdict(BAD, "cannot open the companion shard: %s", llmc_dataloader_error(d));
    else if ((st = llmc_dataloader_seek(d, info.data)) != LLMC_OK) {
        if (!llmc_dataloader_error(d)[0]) verdict(BAD, "seek to the saved position failed without a message");
    } else if ((st = llmc_dataloader_next(d, bi, bt)) != LLMC_OK)
        failed_later(st, llmc_dataloader_error(d), "next after seeking to the saved position");
    llmc_dataloader_free(d);
out:
    llmc_train_free(t);
    llmc_model_free(m);
}

/* ------------------------------------------------------------------ byte buffers and the RNG */

typedef struct blob {
    unsigned char *p;
    size_t n, cap;
} blob;

static void blob_reserve(blob *b, size_t n) {
    if (n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "fuzz: out of memory for a %zu-byte input\n", n);
        exit(2);
    }
    b->p = p;
    b->cap = cap;
}
static void blob_set(blob *b, const void *src, size_t n) {
    blob_reserve(b, n);
    if (n) memcpy(b->p, src, n);
    b->n = n;
}
static void blob_append(blob *b, const void *src, size_t n) {
    blob_reserve(b, b->n + n);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t *s, uint64_t n) { return n ? splitmix(s) % n : 0; }

static int32_t get32(const blob *b, size_t off) {
    int32_t v = 0;
    if (off + 4 <= b->n) memcpy(&v, b->p + off, 4);
    return v;
}
static void put32(blob *b, size_t off, int32_t v) {
    if (off + 4 <= b->n) memcpy(b->p + off, &v, 4);
}
static uint64_t get64(const blob *b, int slot) {
    return (uint64_t)(uint32_t)get32(b, (size_t)slot * 4) | (uint64_t)(uint32_t)get32(b, (size_t)slot * 4 + 4) << 32;
}
static void put64(blob *b, int slot, uint64_t v) {
    put32(b, (size_t)slot * 4, (int32_t)(uint32_t)v);
    put32(b, (size_t)slot * 4 + 4, (int32_t)(uint32_t)(v >> 32));
}

static void remove_workdir(const char *dir);

/* ------------------------------------------------------------------ seeds: valid files of each format */

enum { MAX_MARKS = 48, MAX_SEEDS = 16 };

/* How to mutate one file of an input: which header slots matter, where the body's
 * structure changes (truncation points), and how its floats are stored. */
typedef struct part_kind {
    const int *slots;     /* int32 header slots worth setting to extremes */
    int nslots;
    const int *u64_slots; /* slot pairs holding a uint64 (low word first) */
    int nu64;
    int model_header;     /* header is a model's: size fields can be made to wrap */
} part_kind;

typedef struct part {
    blob b;
    const part_kind *kind;
    size_t marks[MAX_MARKS]; /* interesting offsets: header end, tensor / token / section starts */
    int nmarks;
    int float_bytes; /* 4: an fp32 body, 2: bf16, 0: not floats */
} part;

/* An input: one file, or for state the state file (part 0) and its model file (part 1). */
typedef struct input {
    part part[2];
    int nparts;
} input;

typedef struct format {
    const char *name;
    void (*make_seeds)(input *seeds, int *n, const char *tmp);
    void (*child)(const char *dir);
    void (*stage_extra)(const char *dir); /* files every input of the format needs beside it */
    const char *files[2];                  /* where the parts go, relative to the input's dir */
} format;

static const int MODEL_SLOTS[] = {0, 1, 2, 3, 4, 5, 6, 7};
static const int SHARD_SLOTS[] = {0, 1, 2};
static const int TOKENIZER_SLOTS[] = {0, 1, 2, 3};
/* state: magic, version, nproc, rank, has_master, the two steps, the words of the uint64 pairs
 * (RNG, data position, parameter count, shard offset and count: also set whole, STATE_U64), and
 * the run settings (26-33: B, T, total batch, max steps, warmup, schedule, lr and final lr
 * fraction as float bits) */
static const int STATE_SLOTS[] = {0,  1,  2,  3,  4,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                  22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33};
static const int STATE_U64[] = {12, 14, 16, 18, 20, 22, 24};
static const part_kind MODEL_KIND = {MODEL_SLOTS, 8, NULL, 0, 1};
static const part_kind SHARD_KIND = {SHARD_SLOTS, 3, NULL, 0, 0};
static const part_kind TOKENIZER_KIND = {TOKENIZER_SLOTS, 4, NULL, 0, 0};
static const part_kind STATE_KIND = {STATE_SLOTS, sizeof STATE_SLOTS / sizeof(int), STATE_U64, 7, 0};
/* safetensors: the u64 header length (its words, and whole), then JSON; config.json: JSON only */
static const int ST_SLOTS[] = {0, 1}, ST_U64[] = {0}, HF_CONFIG_SLOTS[] = {0, 1, 2, 3};
static const part_kind ST_KIND = {ST_SLOTS, 2, ST_U64, 1, 0};
static const part_kind HF_CONFIG_KIND = {HF_CONFIG_SLOTS, 4, NULL, 0, 0};
/* mask: magic, version, token count, row length T; its shard is a plain shard, told apart so
 * that mask-only mutations (and extremes) never touch the shard format's draws */
static const int MASK_SLOTS[] = {0, 1, 2, 3};
static const part_kind MASK_KIND = {MASK_SLOTS, 4, NULL, 0, 0};
static const part_kind MASK_SHARD_KIND = {SHARD_SLOTS, 3, NULL, 0, 0};
enum { MASK_T = 8 }; /* the row length the mask seeds are packed for */

static void mark(part *p, size_t off) {
    if (p->nmarks < MAX_MARKS) p->marks[p->nmarks++] = off;
}

static int read_file(const char *path, blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    b->n = 0;
    unsigned char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) blob_append(b, buf, k);
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* Marks for a model part: the header fields, the header's end and every tensor's start. */
static void model_marks(part *p, const llmc_config *c, int version) {
    llmc_weights w;
    llmc_weights_layout(&w, c, version == 3 ? LLMC_F32 : LLMC_BF16);
    const size_t esz = version == 3 ? 4 : 2;
    p->kind = &MODEL_KIND;
    p->float_bytes = (int)esz;
    for (int i = 0; i < 8; i++) mark(p, (size_t)i * 4);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) mark(p, HEADER_BYTES + w.t[i].offset * esz);
    mark(p, HEADER_BYTES + w.count * esz / 2);
}

static const llmc_config MODEL_CONFIGS[] = {
    /* T, V, Vp, L, NH, C: small, odd vocabularies, Vp == V, over-padded Vp, head size 1 */
    {8, 16, 0, 1, 1, 8},  {16, 100, 0, 2, 2, 16}, {8, 300, 0, 1, 2, 32},
    {12, 129, 0, 2, 1, 8}, {9, 100, 100, 1, 4, 4}, {10, 64, 256, 2, 2, 8},
};

static void model_seed_file(input *s, const llmc_config *cfg, int version, uint64_t seed, const char *tmp) {
    char path[4200];
    snprintf(path, sizeof path, "%s/seed.bin", tmp);
    llmc_model *m = llmc_model_new();
    llmc_status st = llmc_model_init_random(m, NULL, cfg, seed);
    if (st == LLMC_OK) st = llmc_model_save(m, path, version);
    if (st != LLMC_OK) die("cannot write a model seed: %s", llmc_model_error(m));
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    if (read_file(path, &s->part[0].b) != 0) die("cannot read back %s", path);
    model_marks(&s->part[0], llmc_model_config(m), version);
    llmc_model_free(m);
    unlink(path);
}

static void model_seeds(input *seeds, int *n, const char *tmp) {
    *n = 0;
    for (size_t i = 0; i < sizeof MODEL_CONFIGS / sizeof MODEL_CONFIGS[0]; i++)
        for (int v = 3; v <= 5; v += 2) model_seed_file(&seeds[(*n)++], &MODEL_CONFIGS[i], v, 100 + i, tmp);
}

static void shard_bytes(blob *b, int ntok, uint64_t *rng, int vocab) {
    int32_t h[LLMC_HEADER_INTS] = {LLMC_SHARD_MAGIC, 1, ntok};
    b->n = 0;
    blob_append(b, h, sizeof h);
    for (int i = 0; i < ntok; i++) {
        uint16_t t = (uint16_t)below(rng, (uint64_t)vocab);
        blob_append(b, &t, 2);
    }
}

static void shard_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const int NTOK[] = {2, 9, 17, 64, 200, 1000, 4097};
    uint64_t rng = 7;
    *n = 0;
    for (size_t i = 0; i < sizeof NTOK / sizeof NTOK[0]; i++) {
        input *s = &seeds[(*n)++];
        memset(s, 0, sizeof *s);
        s->nparts = 1;
        part *p = &s->part[0];
        shard_bytes(&p->b, NTOK[i], &rng, i % 2 ? 65536 : 64);
        p->kind = &SHARD_KIND;
        mark(p, 8);
        mark(p, HEADER_BYTES);
        mark(p, HEADER_BYTES + 2);
        mark(p, HEADER_BYTES + (size_t)NTOK[i]); /* mid-body */
        mark(p, p->b.n - 2);
    }
}

/* The companion of every shard input: a valid shard beside it, so globs see two files. */
static void shard_extra(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/shard_1.bin", dir);
    blob b = {0};
    uint64_t rng = 11;
    shard_bytes(&b, 100, &rng, 65536);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b.p, 1, b.n, f) != b.n || fclose(f) != 0) die("cannot write %s", path);
    free(b.p);
}

static void tokenizer_seed(input *s, int version, int vocab, int eot, int maxlen, uint64_t *rng) {
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    part *p = &s->part[0];
    int32_t h[LLMC_HEADER_INTS] = {LLMC_TOKENIZER_MAGIC, version, vocab, version == 2 ? eot : 0};
    blob_append(&p->b, h, sizeof h);
    p->kind = &TOKENIZER_KIND;
    for (int i = 0; i < 4; i++) mark(p, (size_t)i * 4);
    for (int i = 0; i < vocab; i++) {
        if (i < 24 || i == vocab / 2 || i == vocab - 1) mark(p, p->b.n); /* token record starts */
        unsigned char len = (unsigned char)(i == 3 ? 255 : below(rng, (uint64_t)maxlen + 1)), bytes[255];
        for (int k = 0; k < len; k++) bytes[k] = (unsigned char)below(rng, 256);
        blob_append(&p->b, &len, 1);
        blob_append(&p->b, bytes, len);
    }
}

static void tokenizer_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    uint64_t rng = 13;
    *n = 0;
    tokenizer_seed(&seeds[(*n)++], 2, 1, 0, 4, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 5, 4, 3, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 50, 7, 12, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 300, 299, 8, &rng);
    tokenizer_seed(&seeds[(*n)++], 1, 40, 0, 6, &rng);
    tokenizer_seed(&seeds[(*n)++], 1, 50257, 0, 1, &rng); /* v1 of GPT-2's size: EOT 50256 implied */
}

/* A trainer checkpoint of a small model: a few AdamW steps so the moments are not zero. */
static void state_seed(input *s, const llmc_config *cfg, int model_version, int add_master, const char *tmp) {
    char dir[4200], mp[4300], sp[4300];
    snprintf(dir, sizeof dir, "%s/seedck", tmp);
    snprintf(mp, sizeof mp, "%s/model_%08d.bin", dir, STATE_STEP);
    snprintf(sp, sizeof sp, "%s/state_%08d.bin", dir, STATE_STEP);
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_status st = llmc_model_init_random(m, NULL, cfg, 5);
    if (st == LLMC_OK) st = llmc_train_attach(t, m, NULL);
    const int B = 2, T = cfg->max_seq_len < 6 ? cfg->max_seq_len : 6;
    int *in = tokens(B * T, cfg->vocab_size, 5), *tg = tokens(B * T, cfg->vocab_size, 6);
    llmc_adamw a;
    llmc_adamw_default(&a);
    for (int k = 0; k < 3 && st == LLMC_OK; k++) {
        float loss, norm;
        st = llmc_train_zero_grad(t);
        if (st == LLMC_OK) st = llmc_train_forward_backward(t, in, tg, B, T, 1.0f, &loss);
        if (st == LLMC_OK) st = llmc_train_step(t, &a, &norm);
    }
    llmc_checkpoint_info info;
    memset(&info, 0, sizeof info); /* the struct grows with the format: zero what this does not set */
    info.step = STATE_STEP;
    info.rng = 0x123456789abcdefull;
    info.data = (llmc_data_position){1, 0, 2};
    info.run.batch_size = B, info.run.seq_len = T, info.run.max_steps = 100, info.run.lr = a.lr;
    if (st == LLMC_OK) st = llmc_checkpoint_save(t, dir, &info);
    if (st == LLMC_OK && model_version == 5) st = llmc_train_save_model(t, mp, 5);
    if (st != LLMC_OK) die("cannot write a state seed: %s", llmc_train_error(t));
    memset(s, 0, sizeof *s);
    s->nparts = 2;
    part *ps = &s->part[0], *pm = &s->part[1];
    if (read_file(sp, &ps->b) != 0 || read_file(mp, &pm->b) != 0) die("cannot read back the checkpoint in %s", dir);
    const size_t np = llmc_model_num_params(m);
    if (add_master) { /* as a bf16 trainer writes it: has_master, and fp32 master weights after m and v */
        float *p = malloc(np * sizeof *p);
        if (!p || llmc_train_get_params(t, p) != LLMC_OK) die("cannot read the seed's parameters");
        put32(&ps->b, 4 * 4, 1);
        blob_append(&ps->b, p, np * sizeof *p);
        free(p);
    }
    ps->kind = &STATE_KIND;
    ps->float_bytes = 4;
    for (int i = 0; i < 34; i++) mark(ps, (size_t)i * 4);
    for (int i = 0; i <= 2 + add_master; i++) mark(ps, HEADER_BYTES + (size_t)i * np * 4);
    mark(ps, HEADER_BYTES + np * 2); /* mid m */
    model_marks(pm, llmc_model_config(m), model_version);
    free(in), free(tg);
    llmc_train_free(t);
    llmc_model_free(m);
    remove_workdir(dir); /* the files, and whatever else a checkpoint writes beside them */
}

static void state_seeds(input *seeds, int *n, const char *tmp) {
    static const llmc_config A = {8, 16, 0, 1, 1, 8}, Bc = {16, 64, 0, 2, 2, 16};
    *n = 0;
    state_seed(&seeds[(*n)++], &A, 3, 0, tmp);
    state_seed(&seeds[(*n)++], &A, 3, 1, tmp);
    state_seed(&seeds[(*n)++], &Bc, 3, 0, tmp);
    state_seed(&seeds[(*n)++], &Bc, 5, 1, tmp);
}

/* Hugging Face seeds: a safetensors file of a small GPT-2 in F32, F16, BF16 or a mix, with or
 * without the "transformer." prefix, metadata and the attention-mask buffers, and its config.json. */
static uint16_t f32_to_f16(float f) { /* truncating; seeds hold small normal values, ones and zeros */
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = x >> 16 & 0x8000u;
    const int e = (int)(x >> 23 & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    if (e >= 31) return (uint16_t)(sign | 0x7bffu);
    return (uint16_t)(sign | (uint32_t)e << 10 | (x >> 13 & 0x3ffu));
}

static void appendf(blob *b, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    blob_append(b, buf, (size_t)k);
}

static void safetensors_seed(input *s, const llmc_config *cfg, int dtype_mode, int prefixed, int extras, uint64_t seed) {
    static const char *const DT[] = {"F32", "F16", "BF16"};
    llmc_model *m = llmc_model_new();
    if (llmc_model_init_random(m, NULL, cfg, seed) != LLMC_OK) die("cannot make a seed model: %s", llmc_model_error(m));
    const llmc_weights *w = llmc_model_weights(m);
    float *v = malloc(w->count * sizeof *v);
    if (!v || llmc_model_get_params(m, v) != LLMC_OK) die("cannot read a seed model");
    const int L = cfg->num_layers, C = cfg->channels, T = cfg->max_seq_len;
    blob hdr = {0}, data = {0};
    size_t starts[64];
    int nstarts = 0;
    appendf(&hdr, "{");
    if (extras) appendf(&hdr, "\"__metadata__\":{\"format\":\"pt\"},");
    for (int i = 0, k = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        for (int l = 0; l < (w->t[i].layer_stride ? L : 1); l++, k++) {
            const llmc_tensor t = llmc_weights_layer(w, i, l);
            const int tr = llmc_weights_hf_transposed(i), dt = dtype_mode < 3 ? dtype_mode : k % 3;
            const int rows = i == LLMC_WTE ? cfg->vocab_size : t.shape[0], cols = t.ndim > 1 ? t.shape[1] : 0;
            char name[128];
            llmc_weights_hf_name(i, l, name, sizeof name);
            appendf(&hdr, "%s\"%s%s\":{\"dtype\":\"%s\",\"shape\":[", k ? "," : "", prefixed ? LLMC_HF_PREFIX : "",
                    name, DT[dt]);
            if (!cols) appendf(&hdr, "%d]", rows);
            else appendf(&hdr, "%d,%d]", tr ? cols : rows, tr ? rows : cols);
            const size_t n = (size_t)rows * (size_t)(cols ? cols : 1), begin = data.n, esz = dt ? 2 : 4;
            appendf(&hdr, ",\"data_offsets\":[%zu,%zu]}", begin, begin + n * esz);
            if (nstarts < 64) starts[nstarts++] = begin;
            for (size_t j = 0; j < n; j++) { /* element j of the stored (in, out) is llmc's (j % out, j / out) */
                const size_t src = tr ? (j % (size_t)rows) * (size_t)cols + j / (size_t)rows : j;
                const float f = v[t.offset + src];
                uint16_t h = dt == 1 ? f32_to_f16(f) : llmc_f32_to_bf16(f);
                blob_append(&data, dt ? (const void *)&h : (const void *)&f, esz);
            }
        }
    if (extras) /* the mask buffer of a layer, as older GPT2LMHeadModel files hold it */
        for (int l = 0; l < L; l++) {
            appendf(&hdr, ",\"%sh.%d.attn.bias\":{\"dtype\":\"U8\",\"shape\":[1,1,%d,%d],\"data_offsets\":[%zu,%zu]}",
                    prefixed ? LLMC_HF_PREFIX : "", l, T, T, data.n, data.n + (size_t)T * T);
            for (int j = 0; j < T * T; j++) blob_append(&data, &(unsigned char){(unsigned char)(j % (T + 1) == 0)}, 1);
        }
    appendf(&hdr, "}");
    while (hdr.n % 8) appendf(&hdr, " ");
    memset(s, 0, sizeof *s);
    s->nparts = 2;
    part *p = &s->part[0], *pc = &s->part[1];
    const uint64_t hn = hdr.n;
    blob_append(&p->b, &hn, 8);
    blob_append(&p->b, hdr.p, hdr.n);
    blob_append(&p->b, data.p, data.n);
    p->kind = &ST_KIND;
    p->float_bytes = dtype_mode == 0 ? 4 : dtype_mode < 3 ? 2 : 0;
    mark(p, 0), mark(p, 8), mark(p, 8 + hdr.n / 2);
    for (int i = 0; i < nstarts; i++) mark(p, 8 + hdr.n + starts[i]);
    appendf(&pc->b, "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"activation_function\": "
                    "\"gelu_new\", \"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"n_positions\": %d, "
                    "\"vocab_size\": %d, \"n_inner\": null, \"layer_norm_epsilon\": 1e-05, "
                    "\"tie_word_embeddings\": true}\n",
            L, cfg->num_heads, C, T, cfg->vocab_size);
    pc->kind = &HF_CONFIG_KIND;
    mark(pc, 0), mark(pc, pc->b.n / 2), mark(pc, pc->b.n - 2);
    free(hdr.p), free(data.p), free(v);
    llmc_model_free(m);
}

static void safetensors_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const llmc_config A = {8, 16, 0, 1, 1, 8}, B = {16, 100, 0, 2, 2, 16}, Cc = {9, 130, 0, 1, 2, 8};
    *n = 0;
    safetensors_seed(&seeds[(*n)++], &A, 0, 1, 1, 1);
    safetensors_seed(&seeds[(*n)++], &A, 1, 0, 0, 2);
    safetensors_seed(&seeds[(*n)++], &A, 2, 1, 0, 3);
    safetensors_seed(&seeds[(*n)++], &B, 0, 0, 1, 4);
    safetensors_seed(&seeds[(*n)++], &B, 3, 1, 1, 5);
    safetensors_seed(&seeds[(*n)++], &B, 2, 0, 0, 6);
    safetensors_seed(&seeds[(*n)++], &Cc, 1, 1, 1, 7);
    safetensors_seed(&seeds[(*n)++], &Cc, 3, 0, 0, 8);
}

/* Mask seeds: a shard and the loss mask beside it (part 0 the mask, part 1 the shard), rows of
 * MASK_T tokens, masks of every kind a prepare step writes. */
static void mask_pair_bytes(blob *shard, blob *mask, int ntok, int vocab, int pattern, uint64_t *rng) {
    shard_bytes(shard, ntok, rng, vocab);
    int32_t h[LLMC_HEADER_INTS] = {LLMC_MASK_MAGIC, 1, ntok, MASK_T};
    mask->n = 0;
    blob_append(mask, h, sizeof h);
    for (int i = 0; i < ntok; i++) {
        unsigned char m;
        switch (pattern) {
        case 0: m = 1; break; /* every target counts */
        case 1: m = 0; break; /* none does */
        case 2: m = (unsigned char)(i & 1); break;
        case 3: m = i % MASK_T >= 1 + (i / MASK_T) % (MASK_T - 1); break; /* per row: a prompt, then its response */
        default: m = below(rng, 4) == 0; break;                           /* sparse */
        }
        blob_append(mask, &m, 1);
    }
}

static void mask_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const struct {
        int ntok, vocab, pattern;
    } S[] = {{9, 64, 2}, {17, 65536, 0}, {64, 64, 1}, {65, 65536, 3}, {200, 64, 4}, {333, 65536, 3}, {1000, 64, 4}};
    uint64_t rng = 17;
    *n = 0;
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        input *s = &seeds[(*n)++];
        memset(s, 0, sizeof *s);
        s->nparts = 2;
        part *pm = &s->part[0], *ps = &s->part[1];
        const size_t nt = (size_t)S[i].ntok;
        mask_pair_bytes(&ps->b, &pm->b, S[i].ntok, S[i].vocab, S[i].pattern, &rng);
        pm->kind = &MASK_KIND;
        for (int k = 0; k < 4; k++) mark(pm, (size_t)k * 4);
        /* token 0 (never a target), 1, a row's end and the next row's start, mid, last */
        mark(pm, HEADER_BYTES), mark(pm, HEADER_BYTES + 1), mark(pm, HEADER_BYTES + MASK_T);
        mark(pm, HEADER_BYTES + MASK_T + 1), mark(pm, HEADER_BYTES + nt / 2), mark(pm, pm->b.n - 1);
        ps->kind = &MASK_SHARD_KIND;
        mark(ps, 8), mark(ps, HEADER_BYTES), mark(ps, HEADER_BYTES + 2), mark(ps, HEADER_BYTES + 2 * MASK_T);
        mark(ps, HEADER_BYTES + nt), mark(ps, ps->b.n - 2);
    }
}

static void write_or_die(const char *dir, const char *name, const blob *b) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->n, f) != b->n || fclose(f) != 0) die("cannot write %s", path);
}

/* Beside every mask input: a valid masked shard_1 (globs see two pairs) and a plain_0.bin (a
 * glob that mixes masked and plain shards). */
static void mask_extra(const char *dir) {
    blob s = {0}, m = {0};
    uint64_t rng = 19;
    mask_pair_bytes(&s, &m, 100, 65536, 3, &rng);
    write_or_die(dir, "shard_1.bin", &s);
    write_or_die(dir, "shard_1.mask", &m);
    shard_bytes(&s, 100, &rng, 64);
    write_or_die(dir, "plain_0.bin", &s);
    free(s.p), free(m.p);
}

/* The child's own reading of a staged shard and its mask, to hold the loader's answers against. */
typedef struct pair_view {
    blob shard, mask;
    const uint16_t *tok; /* NULL: not a valid shard */
    const uint8_t *m;    /* NULL: no valid mask for this shard */
    size_t n;            /* tokens */
    int32_t T;           /* the mask's row length */
} pair_view;

static void view_pair(pair_view *v, const char *dir, const char *name) {
    char path[4300];
    memset(v, 0, sizeof *v);
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    if (read_file(path, &v->shard) == 0 && v->shard.n >= HEADER_BYTES) {
        const int32_t n = get32(&v->shard, 8);
        if (get32(&v->shard, 0) == LLMC_SHARD_MAGIC && get32(&v->shard, 4) == 1 && n >= 0 &&
            v->shard.n == HEADER_BYTES + 2 * (size_t)n)
            v->tok = (const uint16_t *)(v->shard.p + HEADER_BYTES), v->n = (size_t)n;
    }
    snprintf(path, sizeof path, "%s/%s.mask", dir, name);
    if (v->tok && read_file(path, &v->mask) == 0 && v->mask.n >= HEADER_BYTES && get32(&v->mask, 0) == LLMC_MASK_MAGIC &&
        get32(&v->mask, 4) == 1 && get32(&v->mask, 8) == (int64_t)v->n && v->mask.n == HEADER_BYTES + v->n)
        v->m = v->mask.p + HEADER_BYTES, v->T = get32(&v->mask, 12);
}

/* Is (in, tg) batch b of v: B*T shard tokens from b*B*T, each target the next token, or
 * LLMC_IGNORE_TARGET where the mask byte of that next token is 0? */
static int is_batch(const pair_view *v, size_t b, size_t bt, const int *in, const int *tg) {
    const size_t o = b * bt;
    for (size_t i = 0; i < bt; i++) {
        const uint8_t mb = v->m[o + i + 1];
        if (in[i] != v->tok[o + i] || mb > 1 || tg[i] != (mb ? (int)v->tok[o + i + 1] : LLMC_IGNORE_TARGET)) return 0;
    }
    return 1;
}

typedef struct mask_case {
    const char *pattern;
    int files[2], nfiles; /* which views the pattern matches (in glob order) */
    int B, T, shuffle;
    int never; /* the pattern matches a set the loader must refuse (a plain shard, a mask as a shard) */
} mask_case;

/* Counts of one case: batches per file and the tokens of all. */
typedef struct case_ref {
    size_t nb[2], total, ntok, bt;
} case_ref;

/* A refused batch is allowed only where a mask byte the epoch reads as a target is not 0 or 1. */
static int has_bad_byte(const pair_view *vw, const mask_case *c, const case_ref *r) {
    for (int f = 0; f < c->nfiles; f++)
        for (size_t i = 1; i <= r->nb[f] * r->bt; i++)
            if (vw[c->files[f]].m[i] > 1) return 1;
    return 0;
}

/* next() after an open; want_f/want_b: the batch it must be (-1: any of the case's files). */
static int mask_next(llmc_dataloader *d, const pair_view *vw, const mask_case *c, const case_ref *r, int first,
                     int *in, int *tg, int want_f, size_t want_b, const char *what) {
    llmc_status st = llmc_dataloader_next(d, in, tg);
    const char *msg = llmc_dataloader_error(d);
    if (st != LLMC_OK) {
        if (st == LLMC_ERR_FORMAT && msg[0] && has_bad_byte(vw, c, r)) {
            if (first) verdict(ERROR, "dataloader next: %s", msg);
        } else failed_later(st, msg, what);
        return 0;
    }
    int ok = 0;
    for (int f = 0; !ok && f < c->nfiles; f++)
        for (size_t b = 0; !ok && b < r->nb[f]; b++)
            if ((want_f < 0 || (f == want_f && b == want_b)) && is_batch(&vw[c->files[f]], b, r->bt, in, tg)) ok = 1;
    if (!ok)
        verdict(BAD, "%s (%s, B=%d, T=%d, shuffle %d): not %s of the shard with its mask (in[0] %d, tg[0] %d)", what,
                c->pattern, c->B, c->T, c->shuffle, want_f < 0 ? "a batch" : "the batch due", in[0], tg[0]);
    return ok;
}

/* One case: open, an epoch and a batch of the next, seeks in and out of range. d is reused:
 * each open releases what the last one held. */
static void mask_case_run(llmc_dataloader *d, const char *dir, const pair_view *vw, const mask_case *c, int first) {
    char pattern[4300];
    snprintf(pattern, sizeof pattern, "%s/%s", dir, c->pattern);
    case_ref r = {{0, 0}, 0, 0, (size_t)c->B * (size_t)c->T};
    int can = !c->never;
    for (int f = 0; f < c->nfiles; f++) {
        const pair_view *v = &vw[c->files[f]];
        if (!v->tok || !v->m || v->n < r.bt + 1 || v->T != c->T) can = 0;
        else r.nb[f] = (v->n - 1) / r.bt, r.total += r.nb[f], r.ntok += v->n;
    }
    llmc_status st = llmc_dataloader_open(d, pattern, c->B, c->T, c->shuffle, 42);
    const char *msg = llmc_dataloader_error(d);
    if (st != LLMC_OK) {
        if (can && st != LLMC_ERR_OUT_OF_MEMORY && msg[0])
            verdict(BAD, "open of %s (B=%d, T=%d) refused a valid pair: %s", c->pattern, c->B, c->T, msg);
        else if (first || st == LLMC_ERR_OUT_OF_MEMORY || !msg[0]) refused(st, msg, "dataloader open");
        return;
    }
    if (!can) {
        verdict(BAD, "open of %s (B=%d, T=%d) accepted files it must refuse", c->pattern, c->B, c->T);
        return;
    }
    if (first) verdict(OK, "opened");
    if (!llmc_dataloader_has_masks(d) || llmc_dataloader_num_shards(d) != c->nfiles ||
        llmc_dataloader_num_batches(d) != r.total || llmc_dataloader_num_tokens(d) != r.ntok) {
        verdict(BAD, "open of %s: masks %d, %d shards, %zu batches, %zu tokens; the files hold %d, %zu, %zu", c->pattern,
                llmc_dataloader_has_masks(d), llmc_dataloader_num_shards(d), llmc_dataloader_num_batches(d),
                llmc_dataloader_num_tokens(d), c->nfiles, r.total, r.ntok);
        return;
    }
    int *in = malloc(r.bt * sizeof *in), *tg = malloc(r.bt * sizeof *tg);
    unsigned char *seen = calloc(r.total, 1);
    for (size_t k = 0; in && tg && seen && k <= r.total; k++) { /* an epoch, and one batch into the next */
        const size_t e = k % r.total;
        if (e == 0) memset(seen, 0, r.total);
        const int f = e < r.nb[0] ? 0 : 1;
        if (!mask_next(d, vw, c, &r, first, in, tg, c->shuffle ? -1 : f, f ? e - r.nb[0] : e, "next")) break;
        if (c->shuffle) { /* every batch once an epoch: the first unseen one with these contents */
            int found = 0;
            for (int g = 0; !found && g < c->nfiles; g++)
                for (size_t b = 0; !found && b < r.nb[g]; b++) {
                    const size_t id = (g ? r.nb[0] : 0) + b;
                    if (!seen[id] && is_batch(&vw[c->files[g]], b, r.bt, in, tg)) seen[id] = found = 1;
                }
            if (!found) {
                verdict(BAD, "next %zu (%s, B=%d, T=%d): a batch twice in one epoch", k, c->pattern, c->B, c->T);
                break;
            }
        }
    }
    llmc_data_position p = llmc_dataloader_tell(d);
    if ((st = llmc_dataloader_seek(d, p)) != LLMC_OK) failed_later(st, llmc_dataloader_error(d), "seek to tell()");
    const size_t most = r.nb[0] > r.nb[1] ? r.nb[0] : r.nb[1], least = c->nfiles > 1 && r.nb[1] < r.nb[0] ? r.nb[1] : r.nb[0];
    llmc_data_position outside[] = {
        {0, 0, most}, {0, (uint64_t)c->nfiles, 0}, {0, UINT64_MAX, UINT64_MAX}, {5, 0, UINT64_MAX}};
    for (int i = 0; i < 4; i++) {
        st = llmc_dataloader_seek(d, outside[i]);
        if (st == LLMC_OK) verdict(BAD, "seek to shard %llu sample %llu succeeded", (unsigned long long)outside[i].shard,
                                   (unsigned long long)outside[i].sample);
        else if (!llmc_dataloader_error(d)[0]) verdict(BAD, "seek failed without a message");
    }
    /* the first batch of a later epoch, and the last sample of its last shard */
    llmc_data_position later[] = {{1, 0, 0}, {2, (uint64_t)c->nfiles - 1, least - 1}};
    for (int i = 0; in && tg && i < 2; i++) {
        if ((st = llmc_dataloader_seek(d, later[i])) != LLMC_OK) {
            failed_later(st, llmc_dataloader_error(d), "seek in range");
            break;
        }
        const int f = i ? c->nfiles - 1 : 0;
        if (!mask_next(d, vw, c, &r, first, in, tg, c->shuffle ? -1 : f, i ? least - 1 : 0, "next after seek")) break;
    }
    llmc_dataloader_reset(d);
    free(in), free(tg), free(seen);
}

static void child_mask(const char *dir) {
    pair_view vw[3];
    view_pair(&vw[0], dir, "shard_0"), view_pair(&vw[1], dir, "shard_1"), view_pair(&vw[2], dir, "plain_0");
    /* the header's own T, when it is not one a fixed case uses: rows the loader accepts after a mutation */
    const int32_t th = vw[0].mask.n >= 16 ? get32(&vw[0].mask, 12) : 0;
    const mask_case cases[] = {
        {"shard_0.bin", {0}, 1, 1, MASK_T, 0, 0},   /* decides ok: every batch of an epoch in order */
        {"shard_0.bin", {0}, 1, 2, MASK_T, 1, 0},   {"shard_0.bin", {0}, 1, 3, MASK_T, 0, 0},
        {"shard_0.bin", {0}, 1, 1, 4, 1, 0},        /* T other than the mask's: refused */
        {"shard_0.bin", {0}, 1, 1, th, 0, 0},       {"shard_*.bin", {0, 1}, 2, 2, MASK_T, 1, 0},
        {"shard_*.bin", {0, 1}, 2, 1, MASK_T, 0, 0}, {"*_0.bin", {2, 0}, 2, 1, MASK_T, 0, 1}, /* plain and masked */
        {"shard_0*", {0}, 1, 1, MASK_T, 0, 1},      /* the mask matched as a shard */
    };
    llmc_dataloader *d = llmc_dataloader_new();
    for (size_t i = 0; d && i < sizeof cases / sizeof cases[0]; i++) {
        if (i == 4 && (th < 1 || th > 64 || th == MASK_T || th == 4)) continue;
        mask_case_run(d, dir, vw, &cases[i], i == 0);
    }
    if (!d) verdict(BLOWUP, "no memory for a data loader");
    llmc_dataloader_free(d);
    for (int i = 0; i < 3; i++) free(vw[i].shard.p), free(vw[i].mask.p);
}

/* Eval seeds (llm.c's multiple-choice eval file, HellaSwag's): items with 1 to 4 choices, empty to
 * long contexts, over a 64-token vocabulary; a row of the scorer holds 32 tokens. */
enum { EVAL_VOCAB = 64, EVAL_T = 32 };
static const int EVAL_SLOTS[] = {0, 1, 2, 3};
static const part_kind EVAL_KIND = {EVAL_SLOTS, 4, NULL, 0, 0};

static void eval_seed(input *s, int nitems, uint64_t *rng) {
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    part *p = &s->part[0];
    int32_t h[LLMC_HEADER_INTS] = {LLMC_EVAL_MAGIC, 1, nitems, 0};
    blob_append(&p->b, h, sizeof h);
    p->kind = &EVAL_KIND;
    for (int k = 0; k < 4; k++) mark(p, (size_t)k * 4);
    int longest = 0;
    for (int i = 0; i < nitems; i++) {
        uint16_t w[2 + 4 + 40 + 4 * 13];
        int n = 0;
        const int nch = i % 5 == 4 ? 1 + (int)below(rng, 3) : 4, ctx = i % 7 == 3 ? 0 : (int)below(rng, 40);
        w[n++] = 65535, w[n++] = 0, w[n++] = (uint16_t)i, w[n++] = (uint16_t)below(rng, (uint64_t)nch);
        w[n++] = (uint16_t)nch, w[n++] = (uint16_t)ctx;
        for (int k = 0; k < ctx; k++) w[n++] = (uint16_t)below(rng, EVAL_VOCAB);
        for (int c = 0; c < nch; c++) {
            const int len = 1 + (int)below(rng, 12);
            w[n++] = (uint16_t)len;
            for (int k = 0; k < len; k++) w[n++] = (uint16_t)below(rng, EVAL_VOCAB);
        }
        w[1] = (uint16_t)(2 * n);
        if (2 * n > longest) longest = 2 * n;
        mark(p, p->b.n), mark(p, p->b.n + 2), mark(p, p->b.n + 10); /* an item's start, size, context length */
        blob_append(&p->b, w, 2 * (size_t)n);
    }
    memcpy(p->b.p + 12, &longest, 4);
    mark(p, p->b.n - 2);
}

static void eval_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const int ITEMS[] = {1, 2, 5, 9, 20, 60};
    uint64_t rng = 23;
    *n = 0;
    for (size_t i = 0; i < sizeof ITEMS / sizeof ITEMS[0]; i++) eval_seed(&seeds[(*n)++], ITEMS[i], &rng);
}

/* Load; an accepted file is then scored with a tiny model in rows of EVAL_T (B = 8 and 3: a batch
 * too small for 4 choices must be refused with a message, never scored wrong). */
static void child_eval(const char *dir) {
    char path[4200], err[512] = "";
    snprintf(path, sizeof path, "%s/eval.bin", dir);
    llmc_mc_eval *e = llmc_mc_eval_load(path, EVAL_VOCAB, err, sizeof err);
    if (!e) {
        if (!err[0]) verdict(BAD, "eval load failed without a message");
        else if (strstr(err, "out of memory")) verdict(BLOWUP, "eval load: %s", err);
        else verdict(ERROR, "eval load: %s", err);
        return;
    }
    verdict(OK, "loaded");
    const int items = llmc_mc_eval_items(e);
    const llmc_config cfg = {EVAL_T, EVAL_VOCAB, 0, 1, 2, 8};
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_status st = llmc_model_init_random(m, NULL, &cfg, 3);
    if (st == LLMC_OK) st = llmc_train_attach(t, m, NULL);
    if (st != LLMC_OK) die("cannot make the eval's model: %s", llmc_model_error(m));
    static const int BS[] = {8, 3};
    for (int k = 0; k < 2; k++) {
        const int B = BS[k];
        int *in = malloc((size_t)B * EVAL_T * sizeof *in), *tg = malloc((size_t)B * EVAL_T * sizeof *tg);
        llmc_mc_score s;
        err[0] = '\0';
        st = in && tg ? llmc_mc_eval_run(e, t, B, EVAL_T, k ? 3 : 0, 0, 1, in, tg, &s, err, sizeof err) : LLMC_ERR_OUT_OF_MEMORY;
        if (st != LLMC_OK) {
            if (st == LLMC_ERR_OUT_OF_MEMORY) verdict(BLOWUP, "eval run: %s", err);
            else if (!err[0]) verdict(BAD, "eval run failed without a message");
            else if (!strstr(err, "rows (-b)") && !strstr(err, "of a row (-t)"))
                verdict(BAD, "eval run failed on an accepted file: %s", err);
        } else if (s.n != (k ? (items < 3 ? items : 3) : items) || !(s.acc >= 0 && s.acc <= 1) ||
                   !(s.acc_norm >= 0 && s.acc_norm <= 1)) {
            verdict(BAD, "eval run: %d items scored of %d, acc %g, acc_norm %g", s.n, items, s.acc, s.acc_norm);
        }
        free(in), free(tg);
    }
    llmc_train_free(t);
    llmc_model_free(m);
    llmc_mc_eval_free(e);
}

static const format FORMATS[] = {
    {"model", model_seeds, child_model, NULL, {"model.bin", NULL}},
    {"shard", shard_seeds, child_shard, shard_extra, {"shard_0.bin", NULL}},
    {"tokenizer", tokenizer_seeds, child_tokenizer, NULL, {"tokenizer.bin", NULL}},
    {"state", state_seeds, child_state, shard_extra, {"ck/state_00000007.bin", "ck/model_00000007.bin"}},
    {"safetensors", safetensors_seeds, child_safetensors, NULL, {"ck/model.safetensors", "ck/config.json"}},
    {"mask", mask_seeds, child_mask, mask_extra, {"shard_0.mask", "shard_0.bin"}},
    {"eval", eval_seeds, child_eval, NULL, {"eval.bin", NULL}},
};
enum { NFORMATS = sizeof FORMATS / sizeof FORMATS[0] };

/* ------------------------------------------------------------------ mutations */

/* int32 values that break size arithmetic: signs, powers of two and their neighbours, square
 * roots of 2^31 and 2^32, GPT-2's own sizes, and the other formats' magics. */
static const int32_t EXTREMES[] = {
    0, 1, -1, 2, 3, 4, 5, 7, 8, 127, 128, 129, 255, 256, 1023, 1024, 1025, 46340, 46341, 65535, 65536, 65537,
    (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 24, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT_MAX, INT_MAX - 1,
    INT_MIN, INT_MIN + 1, -2, -128, -65536, 50256, 50257, 50304, 0x7fffff80, LLMC_MODEL_MAGIC, LLMC_STATE_MAGIC,
    LLMC_TOKENIZER_MAGIC, LLMC_SHARD_MAGIC, 6, 0x01010101, (int32_t)0x80808080u,
};
enum { NEXTREMES = sizeof EXTREMES / sizeof EXTREMES[0] };
/* mask inputs draw these too (a table of their own keeps the other formats' draws as they were):
 * the mask's magic, on the shard as well, and counts and row lengths near the seeds' */
static const int32_t MASK_EXTREMES[] = {LLMC_MASK_MAGIC, LLMC_MASK_MAGIC + 1, MASK_T, MASK_T - 1, MASK_T + 1,
                                        9, 16, 17, 64, 65, 200, 333, 1000, 1001};

/* Pairs whose product overflows 32 bits (or lands exactly on 2^31 / 2^32). */
static const int32_t OVERFLOW_PAIRS[][2] = {
    {65536, 65536}, {46341, 46341}, {65536, 32768}, {1 << 30, 4}, {INT_MAX, 2}, {INT_MAX, INT_MAX},
    {1 << 20, 4096}, {1 << 16, 1 << 15}, {1024, 1 << 21}, {3, 0x55555556}, {12, 0x15555556},
};

static const uint64_t U64_EXTREMES[] = {
    0, 1, 2, 0xffffffffull, 0x100000000ull, 0x100000001ull, 1ull << 62, 1ull << 63, UINT64_MAX, UINT64_MAX - 1,
    0x5555555555555556ull, /* * 3 wraps to 2 */ 0x4000000000000001ull, 0x7fffffffffffffffull,
};

/* fp32 and bf16 values no optimizer state or weight should hold, and some that are merely odd. */
static const uint32_t F32_SPECIAL[] = {0x7fc00000u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu,
                                       0x00000001u, 0x80000000u, 0xbf800000u, 0x7fa00000u};
static const uint16_t BF16_SPECIAL[] = {0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x7f7f, 0xff7f, 0x0001, 0x8000, 0x7fa0};

static size_t pick_offset(uint64_t *r, const part *p) {
    /* half the time near a structural point, otherwise anywhere */
    if (p->nmarks && below(r, 2)) {
        const size_t o = p->marks[below(r, (uint64_t)p->nmarks)], d = (size_t)below(r, 5); /* o-2 .. o+2 */
        return d >= 2 ? o + (d - 2) : o >= 2 - d ? o - (2 - d) : 0;
    }
    return (size_t)below(r, p->b.n + 1);
}

/* Sets a header field to a value just off the one it holds. */
static int32_t near_value(uint64_t *r, int32_t v) {
    switch (below(r, 8)) {
    case 0: return (int32_t)((uint32_t)v + 1);
    case 1: return (int32_t)((uint32_t)v - 1);
    case 2: return (int32_t)((uint32_t)v * 2);
    case 3: return v / 2;
    case 4: return (int32_t)(0u - (uint32_t)v);
    case 5: return (int32_t)((uint32_t)v + 128);
    case 6: return (int32_t)((uint32_t)v ^ (1u << below(r, 32)));
    default: return (int32_t)((uint32_t)v + (uint32_t)below(r, 33) - 16);
    }
}

/* A model header with one size field moved by (about) the amount that makes the file's byte
 * count wrap around 2^31, 2^32 or 2^33 back to the real one: a size check done in 32 bits, or
 * in a signed int, would pass it. */
static void model_wrap(uint64_t *r, blob *b) {
    const int32_t version = get32(b, 4), C = get32(b, 24), L = get32(b, 16);
    const uint64_t esz = version == 5 ? 2 : 4;
    if (C <= 0 || L <= 0) return;
    int slot;
    uint64_t unit;
    switch (below(r, 3)) {
    case 0: slot = 7, unit = (uint64_t)C * esz; break;                              /* Vp rows of wte */
    case 1: slot = 2, unit = (uint64_t)C * esz; break;                              /* maxT rows of wpe */
    default: slot = 4, unit = (12ull * C * C + 13ull * C) * esz; break;             /* whole layers */
    }
    const uint64_t wraps[] = {1ull << 32, 1ull << 31, 1ull << 33};
    const uint64_t add = wraps[below(r, 3)] / unit;
    put32(b, (size_t)slot * 4, (int32_t)(uint32_t)((uint64_t)(uint32_t)get32(b, (size_t)slot * 4) + add));
}

enum {
    M_TRUNC, M_TRUNC_MARK, M_FLIP, M_BYTES, M_SPECIAL_BYTE, M_FIELD_EXTREME, M_FIELD_NEAR, M_FIELD_PAIR, M_FIELD_ANY,
    M_U64, M_WRAP, M_APPEND, M_FLOATS, M_INSERT, M_DELETE, M_COPY, M_SPLICE, NMUT
};
/* drawn for JSON parts only (after the others, so that the other formats' inputs stay as they were) */
enum { M_JSON = NMUT, NMUT_JSON = NMUT + 4 };
/* and these for mask files only */
enum { M_MASK_BYTE = NMUT, M_MASK_SWAP, M_MASK_COUNT, M_MASK_ROW, NMUT_MASK };

/* Where the data of a safetensors file start, by its own header length (the end when that is off). */
static size_t st_body(const blob *b) {
    uint64_t n = 0;
    if (b->n >= 8) memcpy(&n, b->p, 8);
    return b->n >= 8 && n <= b->n - 8 ? (size_t)(8 + n) : b->n;
}

/* JSON-aware: a number or a string of the JSON replaced by one that tests a check, the safetensors
 * header length kept right so that the change reaches the checks behind the parser. */
static void mutate_json(uint64_t *r, part *p) {
    static const char *const NUMS[] = {"0", "1", "-1", "2", "3", "7", "64", "65", "129", "1024", "4294967295",
                                       "4294967296", "9223372036854775807", "9223372036854775808",
                                       "18446744073709551616", "4611686018427387904", "1e309", "-0", "2.5", "1e-5",
                                       "1E1", "00", "0.0", "100000000000000000000000000000000"};
    static const char *const WORDS[] = {"\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\"", "\"F64\"", "\"U8\"",
                                        "\"BOOL\"", "\"F8_E4M3\"", "\"X\"", "null", "true", "[]", "{}", "[0]",
                                        "[1,2,3]", "\"\"", "\"h.0.ln_1.weight\"", "\"wte.weight\"",
                                        "\"h.9.attn.bias\"", "\"lm_head.weight\"", "\"__metadata__\"",
                                        "\"gelu\"", "\"\\u0000\"", "\"\\ud800\"", "\"\xc3\x28\""};
    blob *b = &p->b;
    const int st = p->kind == &ST_KIND;
    const size_t lo = st ? 8 : 0, hi = st ? st_body(b) : b->n;
    if (hi <= lo + 1) return;
    size_t s = lo + (size_t)below(r, hi - lo), e;
    const int number = (int)below(r, 2);
    while (s < hi && (number ? !(b->p[s] >= '0' && b->p[s] <= '9') : b->p[s] != '"')) s++;
    if (s >= hi) return;
    if (number) {
        if (s > lo && b->p[s - 1] == '-') s--;
        for (e = s + 1; e < hi && strchr("0123456789.eE+-", b->p[e]); e++) {}
    } else {
        for (e = s + 1; e < hi && b->p[e] != '"'; e++) {}
        if (e++ >= hi) return;
    }
    const char *w = number ? NUMS[below(r, sizeof NUMS / sizeof *NUMS)] : WORDS[below(r, sizeof WORDS / sizeof *WORDS)];
    const size_t k = strlen(w), tail = b->n - e;
    blob_reserve(b, b->n - (e - s) + k);
    memmove(b->p + s + k, b->p + e, tail);
    memcpy(b->p + s, w, k);
    b->n = s + k + tail;
    if (st) put64(b, 0, (uint64_t)(hi - 8 - (e - s) + k));
}

/* Mask-aware: bytes other than 0 and 1 where batches start and end, 0s and 1s swapped (still
 * valid), the count or the body off by a little against the shard, other row lengths. */
static void mutate_mask(uint64_t *r, part *p, int op) {
    blob *b = &p->b;
    const size_t body = b->n > HEADER_BYTES ? b->n - HEADER_BYTES : 0;
    switch (op) {
    case M_MASK_BYTE: {
        static const unsigned char V[] = {2, 3, 0x7f, 0x80, 0xfe, 0xff, 0, 1};
        for (int i = 0, n = 1 + (int)below(r, 4); i < n && body; i++) {
            size_t t;
            switch (below(r, 4)) {
            case 0: t = (size_t)below(r, 2); break; /* token 0 is never a target, token 1 is */
            case 1: t = body - 1 - (size_t)below(r, 2); break;
            case 2: t = (size_t)below(r, body / MASK_T + 1) * MASK_T + (size_t)below(r, 2); break; /* batch edges */
            default: t = (size_t)below(r, body); break;
            }
            if (t < body) b->p[HEADER_BYTES + t] = V[below(r, sizeof V)];
        }
        break;
    }
    case M_MASK_SWAP:
        for (int i = 0, n = 1 + (int)below(r, 16); i < n && body; i++) {
            unsigned char *m = b->p + HEADER_BYTES + below(r, body);
            if (*m <= 1) *m ^= 1;
        }
        break;
    case M_MASK_COUNT: { /* the header's count, the body, or both (consistent, yet not the shard's) */
        static const int D[] = {-1, 1, -2, 2, -MASK_T, MASK_T, -MASK_T - 1, MASK_T + 1};
        const int d = D[below(r, sizeof D / sizeof D[0])], how = (int)below(r, 3);
        if (how != 1) put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (uint32_t)d));
        if (how != 0) {
            if (d < 0) b->n -= (size_t)-d <= body ? (size_t)-d : body;
            else
                for (int i = 0; i < d; i++) blob_append(b, &(unsigned char){(unsigned char)below(r, 2)}, 1);
        }
        break;
    }
    default: { /* the row length */
        static const int32_t TV[] = {MASK_T - 1, MASK_T + 1, 2 * MASK_T, MASK_T / 2, 1, 0, -MASK_T, 64, 65, INT_MAX};
        put32(b, 12, below(r, 2) ? TV[below(r, sizeof TV / sizeof TV[0])] : near_value(r, get32(b, 12)));
        break;
    }
    }
}

static void mutate_part(uint64_t *r, part *p, const part *other) {
    blob *b = &p->b;
    const part_kind *k = p->kind;
    const int json = k == &ST_KIND || k == &HF_CONFIG_KIND, mask = k == &MASK_KIND;
    int op = (int)below(r, json ? NMUT_JSON : mask ? NMUT_MASK : NMUT);
    if (mask && op >= NMUT) {
        mutate_mask(r, p, op);
        return;
    }
    switch (op > M_JSON ? M_JSON : op) {
    case M_JSON: mutate_json(r, p); break;
    case M_TRUNC: b->n = (size_t)below(r, b->n + 1); break;
    case M_TRUNC_MARK: {
        size_t o = pick_offset(r, p);
        if (o < b->n) b->n = o;
        break;
    }
    case M_FLIP: /* a few bits, half the time inside the header's first fields */
        for (int i = 0, n = 1 + (int)below(r, 8); i < n && b->n; i++) {
            size_t o = below(r, 2) ? below(r, b->n < 64 ? b->n : 64) : below(r, b->n);
            b->p[o] ^= (unsigned char)(1u << below(r, 8));
        }
        break;
    case M_BYTES:
        for (int i = 0, n = 1 + (int)below(r, 16); i < n && b->n; i++) b->p[below(r, b->n)] = (unsigned char)splitmix(r);
        break;
    case M_SPECIAL_BYTE: { /* a byte at a structural point: token lengths, field low bytes */
        static const unsigned char V[] = {0, 1, 0x7f, 0x80, 0xfe, 0xff};
        size_t o = pick_offset(r, p);
        if (o < b->n) b->p[o] = V[below(r, sizeof V)];
        break;
    }
    case M_FIELD_EXTREME:
        if (k == &MASK_KIND || k == &MASK_SHARD_KIND) {
            const size_t off = (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4;
            const int32_t v = below(r, 4) ? EXTREMES[below(r, NEXTREMES)]
                                          : MASK_EXTREMES[below(r, sizeof MASK_EXTREMES / sizeof MASK_EXTREMES[0])];
            put32(b, off, v);
        } else put32(b, (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4, EXTREMES[below(r, NEXTREMES)]);
        break;
    case M_FIELD_NEAR: {
        size_t off = (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4;
        put32(b, off, near_value(r, get32(b, off)));
        break;
    }
    case M_FIELD_PAIR: { /* two size fields whose product overflows */
        const int32_t *v = OVERFLOW_PAIRS[below(r, sizeof OVERFLOW_PAIRS / sizeof OVERFLOW_PAIRS[0])];
        int s1 = k->slots[below(r, (uint64_t)k->nslots)], s2 = k->slots[below(r, (uint64_t)k->nslots)];
        put32(b, (size_t)s1 * 4, v[0]);
        put32(b, (size_t)s2 * 4, v[1]);
        break;
    }
    case M_FIELD_ANY: /* a slot the format leaves unused: must be ignored */
        put32(b, (size_t)below(r, LLMC_HEADER_INTS) * 4, below(r, 2) ? EXTREMES[below(r, NEXTREMES)] : (int32_t)splitmix(r));
        break;
    case M_U64:
        if (k->nu64) {
            int slot = k->u64_slots[below(r, (uint64_t)k->nu64)];
            uint64_t v = get64(b, slot);
            switch (below(r, 3)) {
            case 0: v = U64_EXTREMES[below(r, sizeof U64_EXTREMES / sizeof U64_EXTREMES[0])]; break;
            case 1: v += (uint64_t)(int64_t)(below(r, 5) - 2); break;        /* just off */
            default: v += (uint64_t)1 << (30 + below(r, 34)); break;         /* off by a high bit: 4v wraps */
            }
            put64(b, slot, v);
        } else {
            put32(b, (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4, EXTREMES[below(r, NEXTREMES)]);
        }
        break;
    case M_WRAP: /* a count moved so that (count * record size) wraps to the real value */
        if (k->model_header) model_wrap(r, b);
        else if (k == &SHARD_KIND || k == &MASK_SHARD_KIND || k == &MASK_KIND) /* 2 bytes a token (mask: 1) */
            put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (1u << 31)));
        else if (k == &TOKENIZER_KIND) /* 8 bytes of offset, or 256 bytes at most, a token */
            put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (below(r, 2) ? 1u << 29 : 1u << 24)));
        else if (k == &ST_KIND) put64(b, 0, get64(b, 0) + (below(r, 2) ? 1ull << 32 : 1ull << 63)); /* header length */
        else if (k == &STATE_KIND) /* 4n, 12n */
            put64(b, 20, get64(b, 20) + (below(r, 2) ? 1ull << 62 : 0x5555555555555556ull));
        break;
    case M_APPEND: {
        size_t n = 1 + (size_t)below(r, below(r, 2) ? 8 : 4096);
        size_t at = b->n;
        blob_reserve(b, b->n + n);
        int zeros = (int)below(r, 2);
        for (size_t i = 0; i < n; i++) b->p[at + i] = zeros ? 0 : (unsigned char)splitmix(r);
        b->n += n;
        break;
    }
    case M_FLOATS: /* NaN, Inf, huge, negative, denormal values written into the body */
        if (p->float_bytes && b->n > (k == &ST_KIND ? st_body(b) : HEADER_BYTES) + 4) {
            const size_t start = k == &ST_KIND ? st_body(b) : HEADER_BYTES; /* where the floats start */
            const size_t fb = (size_t)p->float_bytes, count = (b->n - start) / fb;
            for (int i = 0, n = 1 + (int)below(r, 4); i < n; i++) {
                size_t o = start + below(r, count) * fb;
                if (fb == 4) memcpy(b->p + o, &F32_SPECIAL[below(r, sizeof F32_SPECIAL / 4)], 4);
                else memcpy(b->p + o, &BF16_SPECIAL[below(r, sizeof BF16_SPECIAL / 2)], 2);
            }
        } else if (b->n) {
            b->p[below(r, b->n)] = 0xff;
        }
        break;
    case M_INSERT: { /* shifts everything after it: misaligns records */
        size_t at = pick_offset(r, p), n = 1 + (size_t)below(r, 16);
        if (at > b->n) at = b->n;
        blob_reserve(b, b->n + n);
        memmove(b->p + at + n, b->p + at, b->n - at);
        for (size_t i = 0; i < n; i++) b->p[at + i] = (unsigned char)splitmix(r);
        b->n += n;
        break;
    }
    case M_DELETE: {
        size_t at = pick_offset(r, p), n = 1 + (size_t)below(r, 64);
        if (at >= b->n) break;
        if (n > b->n - at) n = b->n - at;
        memmove(b->p + at, b->p + at + n, b->n - at - n);
        b->n -= n;
        break;
    }
    case M_COPY: { /* a chunk of the file over another place of it */
        if (b->n < 2) break;
        size_t from = below(r, b->n), to = below(r, b->n), n = 1 + (size_t)below(r, 256);
        if (n > b->n - from) n = b->n - from;
        if (n > b->n - to) n = b->n - to;
        memmove(b->p + to, b->p + from, n);
        break;
    }
    case M_SPLICE: /* another seed's header on this body, or its body under this header */
        if (other && other->b.n >= HEADER_BYTES && b->n >= HEADER_BYTES) {
            if (below(r, 2)) memcpy(b->p, other->b.p, HEADER_BYTES);
            else {
                size_t n = other->b.n;
                unsigned char hdr[HEADER_BYTES];
                memcpy(hdr, b->p, HEADER_BYTES);
                blob_set(b, other->b.p, n);
                memcpy(b->p, hdr, HEADER_BYTES);
            }
        }
        break;
    }
}

/* Both files of a mask input changed together, so that they still agree: cut to fewer tokens (a
 * valid pair, perhaps too short for a batch), grown by a few (a partial last batch), or both
 * counts set to one wrong value. Then, half the time, one more mutation of the mask. */
static void mutate_mask_pair(uint64_t *r, input *in) {
    blob *m = &in->part[0].b, *s = &in->part[1].b;
    const int32_t n = get32(s, 8);
    if (m->n != HEADER_BYTES + (size_t)n || s->n != HEADER_BYTES + 2 * (size_t)n) return; /* a seed always agrees */
    switch (below(r, 3)) {
    case 0: {
        static const int32_t K[] = {0, 1, 2, MASK_T, MASK_T + 1, 2 * MASK_T, 2 * MASK_T + 1, 3 * MASK_T, 3 * MASK_T + 1};
        int32_t k = below(r, 2) ? K[below(r, sizeof K / sizeof K[0])] : (int32_t)below(r, (uint64_t)n + 1);
        if (k > n) k = n;
        put32(s, 8, k), put32(m, 8, k);
        s->n = HEADER_BYTES + 2 * (size_t)k, m->n = HEADER_BYTES + (size_t)k;
        break;
    }
    case 1: {
        const int k = 1 + (int)below(r, 64);
        for (int i = 0; i < k; i++) {
            const uint16_t t = (uint16_t)below(r, 65536);
            blob_append(s, &t, 2);
            blob_append(m, &(unsigned char){(unsigned char)below(r, 2)}, 1);
        }
        put32(s, 8, n + k), put32(m, 8, n + k);
        break;
    }
    default: {
        const int32_t v = below(r, 2) ? EXTREMES[below(r, NEXTREMES)] : near_value(r, n);
        put32(s, 8, v), put32(m, 8, v);
        break;
    }
    }
    if (below(r, 2)) mutate_part(r, &in->part[0], NULL);
}

/* Input index of a campaign: a pure function of (seed, format, index). */
static void make_input(const input *seeds, int nseeds, uint64_t seed, int fmt, uint64_t index, input *in) {
    uint64_t r = seed * 0x2545F4914F6CDD1Dull ^ ((uint64_t)fmt << 56) ^ index;
    splitmix(&r);
    const int k = (int)below(&r, (uint64_t)nseeds);
    const input *s = &seeds[k];
    in->nparts = s->nparts;
    for (int i = 0; i < s->nparts; i++) {
        part *p = &in->part[i];
        blob keep = p->b;
        *p = s->part[i];
        p->b = keep;
        blob_set(&p->b, s->part[i].b.p, s->part[i].b.n);
    }
    if (below(&r, 64) == 0) return; /* now and then the seed itself: the valid path stays exercised */
    if (in->part[0].kind == &MASK_KIND && below(&r, 8) == 0) {
        mutate_mask_pair(&r, in);
        return;
    }
    /* which files: the state (mask) file mostly, its model (shard) file sometimes, both now and then */
    const int which = in->nparts == 1 ? 1 : (int)(below(&r, 10) < 8 ? 1 : below(&r, 2) ? 2 : 3);
    for (int i = 0; i < in->nparts; i++) {
        if (!(which & (1 << i))) continue;
        int rounds = 1;
        while (rounds < 8 && below(&r, 2)) rounds++;
        const input *o = &seeds[below(&r, (uint64_t)nseeds)];
        for (int j = 0; j < rounds; j++) mutate_part(&r, &in->part[i], &o->part[i]);
    }
}

/* ------------------------------------------------------------------ running one input */

typedef struct options {
    int fmt;
    uint64_t n;       /* inputs (0: until the time is up) */
    double seconds;   /* time budget (0: none) */
    int jobs;
    uint64_t seed;
    const char *keep; /* where findings go (NULL: nowhere) */
    const char *work; /* scratch dir for the inputs */
    double timeout;   /* per input, seconds */
    size_t mem;       /* RLIMIT_AS of a child, bytes */
    int fail_on_poison;
    long long only;   /* run this one index (-1: all) */
    int keep_max;     /* per outcome and worker */
    double progress;  /* seconds between progress lines (0: none) */
    const char *log;  /* one line per input: index, outcome, message (NULL: none) */
} options;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int write_file(const char *path, const blob *b) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < b->n) {
        ssize_t w = write(fd, b->p + done, b->n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    return close(fd);
}

static void stage(const format *f, const input *in, const char *dir) {
    for (int i = 0; i < in->nparts; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, f->files[i]);
        if (write_file(path, &in->part[i].b) != 0) die("cannot write %s: %s", path, strerror(errno));
    }
}

/* Runs the staged input in a forked child under the limits; returns its outcome. The child's
 * own verdict arrives through rep; a signal or the clock overrides it. */
static int run_child(void (*child)(const char *), const char *dir, const options *o, report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->outcome = -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        struct rlimit as = {o->mem, o->mem}, core = {0, 0}, fsize = {64 << 20, 64 << 20};
        if (o->mem) setrlimit(RLIMIT_AS, &as); /* a blow-up fails malloc instead of taking the machine */
        setrlimit(RLIMIT_CORE, &core); /* crashes are counted, not dumped */
        setrlimit(RLIMIT_FSIZE, &fsize);
        alarm((unsigned)ceil(o->timeout)); /* SIGALRM's default action ends a hang */
        g_rep = rep;
        child(dir);
        if (rep->refused_alloc) {
            char said[sizeof rep->msg];
            snprintf(said, sizeof said, "%s", rep->msg);
            rep->msg[0] = '\0';
            verdict(BLOWUP, "an allocation of %zu bytes was refused (limit %zu)%s%s", rep->refused_alloc, g_max_alloc,
                    said[0] ? "; then: " : "", said);
        }
        rep->finished = 1;
        _exit(rep->outcome < 0 ? OK : rep->outcome);
    }
    /* wait, but not forever: a child that ignores its alarm is killed */
    const double deadline = now() + o->timeout + 2.0;
    int status = 0, killed = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) die("waitpid: %s", strerror(errno));
        double left = deadline - now();
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            killed = 1;
            break;
        }
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        struct timespec ts = {(time_t)left, (long)((left - (time_t)left) * 1e9)};
        sigtimedwait(&chld, NULL, &ts); /* SIGCHLD is blocked: this sleeps until the child ends */
    }
    if (killed || (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)) {
        snprintf(rep->msg, sizeof rep->msg, "no result after %.1f s", o->timeout);
        return rep->outcome = HANG;
    }
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        char tail[256] = "";
        if (rep->refused_alloc) snprintf(tail, sizeof tail, " after an allocation of %zu bytes was refused", rep->refused_alloc);
        char last[sizeof rep->msg];
        snprintf(last, sizeof last, "%s", rep->msg);
        snprintf(rep->msg, sizeof rep->msg, "killed by signal %d (%s)%s%s%s", sig, strsignal(sig), tail,
                 last[0] ? "; last verdict: " : "", last);
        /* SIGKILL that we did not send: the kernel's OOM killer */
        return rep->outcome = sig == SIGKILL ? BLOWUP : CRASH;
    }
    const int code = WEXITSTATUS(status);
    if (!rep->finished || code >= NOUT || code == HANG || code == CRASH) { /* the library must never exit */
        snprintf(rep->msg, sizeof rep->msg, "the child exited with status %d from inside the library", code);
        return rep->outcome = CRASH;
    }
    return rep->outcome = code;
}

/* What is kept: everything but ok and clean errors (poisons too, whether or not they fail the run). */
static int is_finding(int o) { return o != OK && o != ERROR; }

/* Copies the input to the keep dir with a note that says what happened. */
static void keep_input(const options *o, const format *f, const input *in, uint64_t index, const report *rep) {
    char base[4200], path[4400];
    snprintf(base, sizeof base, "%s/%s-%s-s%llu-i%llu", o->keep, f->name, OUTCOME[rep->outcome],
             (unsigned long long)o->seed, (unsigned long long)index);
    if (in->nparts == 1) {
        snprintf(path, sizeof path, "%s.bin", base);
        if (write_file(path, &in->part[0].b) != 0) fprintf(stderr, "fuzz: cannot keep %s\n", path);
    } else { /* a checkpoint directory, as the trainer writes it */
        snprintf(path, sizeof path, "%s", base);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/ck", base);
        mkdir(path, 0755);
        stage(f, in, base);
    }
    snprintf(path, sizeof path, "%s.txt", base);
    FILE *t = fopen(path, "w");
    if (t) {
        fprintf(t, "format %s, seed %llu, index %llu: %s\n%s\nlargest allocation: %zu bytes\n", f->name,
                (unsigned long long)o->seed, (unsigned long long)index, OUTCOME[rep->outcome], rep->msg,
                rep->biggest_alloc);
        fprintf(t, "replay: fuzz replay %s %s%s\n", f->name, base, in->nparts == 1 ? ".bin" : "");
        fclose(t);
    }
}

/* ------------------------------------------------------------------ campaigns */

typedef struct counters {
    uint64_t inputs;
    uint64_t out[NOUT];
} counters;

static void make_workdir(const options *o, int w, char *dir, size_t len) {
    snprintf(dir, len, "%s/llmc-fuzz-%ld-%d", o->work, (long)getpid(), w);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", dir, strerror(errno));
    char ck[4300];
    snprintf(ck, sizeof ck, "%s/ck", dir);
    mkdir(ck, 0755);
}

static void remove_workdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) remove_workdir(p);
    }
    closedir(d);
    rmdir(dir);
}

/* One worker: inputs w, w + jobs, w + 2 jobs, ... until the count or the time runs out. */
static void worker(const options *o, const input *seeds, int nseeds, int w, counters *c, double t0) {
    const format *f = &FORMATS[o->fmt];
    char dir[4200];
    make_workdir(o, w, dir, sizeof dir);
    if (f->stage_extra) f->stage_extra(dir);
    report *rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rep == MAP_FAILED) die("mmap: %s", strerror(errno));
    input in;
    memset(&in, 0, sizeof in);
    int kept[NOUT] = {0};
    FILE *log = NULL;
    if (o->log) {
        char path[4200];
        snprintf(path, sizeof path, "%s.%d", o->log, w);
        if (!(log = fopen(path, "w"))) die("cannot write %s", path);
    }
    for (uint64_t i = o->only >= 0 ? (uint64_t)o->only : (uint64_t)w;; i += (uint64_t)o->jobs) {
        if (o->only >= 0 && i != (uint64_t)o->only) break;
        if (o->n && i >= o->n && o->only < 0) break;
        if (o->seconds > 0 && now() - t0 >= o->seconds) break;
        make_input(seeds, nseeds, o->seed, o->fmt, i, &in);
        stage(f, &in, dir);
        const int out = run_child(f->child, dir, o, rep);
        c->out[out]++;
        c->inputs++;
        if (o->only >= 0) printf("input %llu: %s: %s\n", (unsigned long long)i, OUTCOME[out], rep->msg);
        if (log) fprintf(log, "%llu %s %s\n", (unsigned long long)i, OUTCOME[out], rep->msg);
        if (o->keep && ((is_finding(out) && kept[out] < o->keep_max) || o->only >= 0)) {
            kept[out]++;
            keep_input(o, f, &in, i, rep);
        }
    }
    for (int i = 0; i < in.nparts; i++) free(in.part[i].b.p);
    if (log) fclose(log);
    munmap(rep, sizeof *rep);
    remove_workdir(dir);
}

static void print_summary(const char *name, const counters *t, double secs, const options *o, FILE *to) {
    fprintf(to,
            "fuzz %s: inputs %llu  ok %llu  errors %llu  crash %llu  hang %llu  blowup %llu  poison %llu  bad %llu  "
            "(%.0f inputs/s, %.1f s, seed %llu, -j %d)\n",
            name, (unsigned long long)t->inputs, (unsigned long long)t->out[OK], (unsigned long long)t->out[ERROR],
            (unsigned long long)t->out[CRASH], (unsigned long long)t->out[HANG], (unsigned long long)t->out[BLOWUP],
            (unsigned long long)t->out[POISON], (unsigned long long)t->out[BAD], secs > 0 ? t->inputs / secs : 0.0,
            secs, (unsigned long long)o->seed, o->jobs);
    fflush(to);
}

static int campaign(options o) {
    const format *f = &FORMATS[o.fmt];
    static input seeds[MAX_SEEDS];
    int nseeds = 0;
    char tmp[4200];
    make_workdir(&o, 99, tmp, sizeof tmp);
    f->make_seeds(seeds, &nseeds, tmp);
    remove_workdir(tmp);
    if (o.keep) mkdir(o.keep, 0755);
    if (o.only >= 0) o.jobs = 1;

    counters *c = mmap(NULL, sizeof *c * (size_t)o.jobs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED) die("mmap: %s", strerror(errno));
    memset(c, 0, sizeof *c * (size_t)o.jobs);
    const double t0 = now();
    pid_t pids[256];
    for (int w = 0; w < o.jobs; w++) {
        fflush(NULL);
        pids[w] = fork();
        if (pids[w] < 0) die("fork: %s", strerror(errno));
        if (pids[w] == 0) {
            worker(&o, seeds, nseeds, w, &c[w], t0);
            _exit(0);
        }
    }
    int left = o.jobs;
    double next_progress = t0 + o.progress;
    counters total;
    while (left > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int w = 0; w < o.jobs; w++)
                if (pids[w] == p) {
                    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("worker %d failed (status %d)", w, status);
                    left--;
                }
            continue;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (o.progress > 0 && now() >= next_progress) {
            memset(&total, 0, sizeof total);
            for (int w = 0; w < o.jobs; w++) {
                total.inputs += c[w].inputs;
                for (int k = 0; k < NOUT; k++) total.out[k] += c[w].out[k];
            }
            fprintf(stderr, "... ");
            print_summary(f->name, &total, now() - t0, &o, stderr);
            next_progress += o.progress;
        }
    }
    const double secs = now() - t0;
    memset(&total, 0, sizeof total);
    for (int w = 0; w < o.jobs; w++) {
        total.inputs += c[w].inputs;
        for (int k = 0; k < NOUT; k++) total.out[k] += c[w].out[k];
    }
    munmap(c, sizeof *c * (size_t)o.jobs);
    for (int i = 0; i < nseeds; i++)
        for (int k = 0; k < seeds[i].nparts; k++) free(seeds[i].part[k].b.p);
    print_summary(f->name, &total, secs, &o, stdout);
    return total.out[CRASH] || total.out[HANG] || total.out[BLOWUP] || total.out[BAD] ||
           (o.fail_on_poison && total.out[POISON]);
}

/* ------------------------------------------------------------------ replay and selftest */

static int find_format(const char *name) {
    for (int i = 0; i < NFORMATS; i++)
        if (strcmp(FORMATS[i].name, name) == 0) return i;
    return -1;
}

/* A saved input back into memory: a file, or for state a checkpoint directory (as kept, with
 * ck/ inside, or the trainer's own with model_*.bin and state_*.bin). */
static int load_saved(const format *f, const char *path, input *in) {
    memset(in, 0, sizeof *in);
    if (!f->files[1]) {
        in->nparts = 1;
        return read_file(path, &in->part[0].b);
    }
    char dir[4200];
    if (strcmp(f->name, "state") != 0) { /* the parts where the format keeps them, under the kept dir */
        in->nparts = 2;
        for (int i = 0; i < 2; i++) {
            snprintf(dir, sizeof dir, "%s/%s", path, f->files[i]);
            if (read_file(dir, &in->part[i].b) != 0) return -1;
        }
        return 0;
    }
    snprintf(dir, sizeof dir, "%s/ck", path);
    struct stat sb;
    if (stat(dir, &sb) != 0) snprintf(dir, sizeof dir, "%s", path);
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int step = -1;
    while ((e = readdir(d)) != NULL) {
        int s;
        if (sscanf(e->d_name, "state_%d.bin", &s) == 1 && s > step) step = s;
    }
    closedir(d);
    if (step < 0) return -1;
    char sp[4400], mp[4400];
    snprintf(sp, sizeof sp, "%s/state_%08d.bin", dir, step);
    snprintf(mp, sizeof mp, "%s/model_%08d.bin", dir, step);
    in->nparts = 2;
    return read_file(sp, &in->part[0].b) || read_file(mp, &in->part[1].b) ? -1 : 0;
}

static int replay(options o, int argc, char **argv) {
    const format *f = &FORMATS[o.fmt];
    char dir[4200];
    make_workdir(&o, 0, dir, sizeof dir);
    if (f->stage_extra) f->stage_extra(dir);
    report *rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rep == MAP_FAILED) die("mmap: %s", strerror(errno));
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        input in;
        if (load_saved(f, argv[i], &in) != 0) {
            fprintf(stderr, "fuzz: cannot read %s\n", argv[i]);
            bad = 1;
            continue;
        }
        stage(f, &in, dir);
        const int out = run_child(f->child, dir, &o, rep);
        printf("%s %s: %s: %s (largest allocation %zu bytes)\n", f->name, argv[i], OUTCOME[out], rep->msg,
               rep->biggest_alloc);
        bad |= out == CRASH || out == HANG || out == BLOWUP || out == BAD || (o.fail_on_poison && out == POISON);
        for (int k = 0; k < in.nparts; k++) free(in.part[k].b.p);
    }
    munmap(rep, sizeof *rep);
    remove_workdir(dir);
    return bad;
}

/* Children that misbehave on purpose: the harness must classify each one right. */
static void self_crash(const char *d) { (void)d; raise(SIGSEGV); }
static void self_hang(const char *d) {
    (void)d;
    for (volatile unsigned long i = 0;; i++) {
    }
}
static void self_blowup(const char *d) { /* what a loader does that trusts its header */
    (void)d;
    void *p = malloc((size_t)8 << 30);
    verdict(p ? OK : ERROR, p ? "got it" : "out of memory reading the file");
    free(p);
}
static void self_big(const char *d) { /* under RLIMIT_AS, but far more than a small file needs */
    (void)d;
    void *p = malloc(g_max_alloc + 1);
    verdict(ERROR, "refused: %p", p); /* use p, or the compiler drops the malloc/free pair */
    free(p);
}
static void self_oom_status(const char *d) { (void)d; refused(LLMC_ERR_OUT_OF_MEMORY, "cannot allocate", "load"); }
static void self_error(const char *d) { (void)d; refused(LLMC_ERR_FORMAT, "bad magic", "load"); }
static void self_nomsg(const char *d) { (void)d; refused(LLMC_ERR_FORMAT, "", "load"); }
static void self_ok(const char *d) { (void)d; verdict(OK, "fine"); }
static void self_exit(const char *d) { (void)d; exit(1); } /* a library that calls exit() */

static int selftest(options o) {
    static const struct {
        void (*fn)(const char *);
        int want;
        const char *what;
    } cases[] = {
        {self_ok, OK, "ok"},           {self_error, ERROR, "clean error"}, {self_nomsg, BAD, "error without message"},
        {self_crash, CRASH, "SIGSEGV"}, {self_hang, HANG, "busy loop"},     {self_blowup, BLOWUP, "8 GiB malloc"},
        {self_big, BLOWUP, "malloc above --max-alloc"}, {self_oom_status, BLOWUP, "LLMC_ERR_OUT_OF_MEMORY"},
        {self_exit, CRASH, "exit(1) from inside"},
    };
    o.timeout = 1.0;
    report *rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rep == MAP_FAILED) die("mmap: %s", strerror(errno));
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int got = run_child(cases[i].fn, "/nonexistent", &o, rep);
        const int pass = got == cases[i].want;
        printf("selftest %-28s %-7s %s%s\n", cases[i].what, OUTCOME[got], pass ? "" : "WRONG, want ",
               pass ? "" : OUTCOME[cases[i].want]);
        bad |= !pass;
    }
    munmap(rep, sizeof *rep);
    printf("selftest: %s\n", bad ? "FAILED" : "all outcomes classified as expected");
    return bad;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: fuzz FORMAT [-n N | -s SECONDS] [-j JOBS] [--seed S] [--keep DIR] [options]\n"
            "       fuzz replay FORMAT PATH...\n"
            "       fuzz selftest\n"
            "FORMAT: model, shard, tokenizer, state, safetensors, mask, eval, all\n"
            "  -n N            inputs per format (default 10000 when -s is not given)\n"
            "  -s SECONDS      time budget per format\n"
            "  -j JOBS         worker processes (default 1)\n"
            "  --seed S        campaign seed (default 1); input i is a function of (S, format, i)\n"
            "  --keep DIR      keep crashes, hangs, blow-ups, poisons and bads there\n"
            "  --keep-max K    at most K kept inputs per outcome and worker (default 20)\n"
            "  --only I        run input I alone and keep it (with --keep) whatever its outcome\n"
            "  -t SECONDS      time limit per input (default 3)\n"
            "  --mem MIB       address-space limit of a child (default 1024; 0: none, for ASan builds)\n"
            "  --max-alloc MIB largest allocation a small file may cause (default 256)\n"
            "  --work DIR      scratch dir for inputs (default /dev/shm, else /tmp)\n"
            "  --progress SEC  progress line every SEC seconds on stderr (default 0: none)\n"
            "  --fail-on-poison  exit nonzero on poisoned state too\n"
            "  --log FILE      one line per input (index, outcome, message) in FILE.<worker>\n"
            "Exit status: 0 when no input crashed, hung, blew up or broke the API's contract.\n");
    exit(2);
}

static double num_arg(int *i, int argc, char **argv) {
    if (*i + 1 >= argc) usage();
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || v < 0) usage();
    return v;
}

int main(int argc, char **argv) {
#ifdef _OPENMP
    omp_set_num_threads(1); /* one core per worker; and no thread pool to lose across fork() */
#endif
    /* SIGCHLD stays blocked so that sigtimedwait can sleep until a child ends */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    options o = {.jobs = 1, .seed = 1, .timeout = 3.0, .mem = (size_t)1024 << 20, .only = -1, .keep_max = 20};
    struct stat sb;
    o.work = stat("/dev/shm", &sb) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    if (argc < 2) usage();
    int mode = 0; /* 0 campaign, 1 replay, 2 selftest */
    int i = 1;
    if (strcmp(argv[1], "replay") == 0) mode = 1, i = 2;
    else if (strcmp(argv[1], "selftest") == 0) mode = 2, i = 2;
    const char *fmt = NULL;
    if (mode != 2) {
        if (i >= argc) usage();
        fmt = argv[i++];
    }
    char **paths = malloc(sizeof *paths * (size_t)argc);
    int npaths = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-n")) o.n = (uint64_t)num_arg(&i, argc, argv);
        else if (!strcmp(a, "-s")) o.seconds = num_arg(&i, argc, argv);
        else if (!strcmp(a, "-j")) o.jobs = (int)num_arg(&i, argc, argv);
        else if (!strcmp(a, "--seed")) {
            if (i + 1 >= argc) usage();
            o.seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(a, "--keep")) {
            if (i + 1 >= argc) usage();
            o.keep = argv[++i];
        } else if (!strcmp(a, "--keep-max")) o.keep_max = (int)num_arg(&i, argc, argv);
        else if (!strcmp(a, "--only")) o.only = (long long)num_arg(&i, argc, argv);
        else if (!strcmp(a, "-t")) o.timeout = num_arg(&i, argc, argv);
        else if (!strcmp(a, "--mem")) o.mem = (size_t)num_arg(&i, argc, argv) << 20;
        else if (!strcmp(a, "--max-alloc")) g_max_alloc = (size_t)num_arg(&i, argc, argv) << 20;
        else if (!strcmp(a, "--work")) {
            if (i + 1 >= argc) usage();
            o.work = argv[++i];
        } else if (!strcmp(a, "--progress")) o.progress = num_arg(&i, argc, argv);
        else if (!strcmp(a, "--fail-on-poison")) o.fail_on_poison = 1;
        else if (!strcmp(a, "--log")) {
            if (i + 1 >= argc) usage();
            o.log = argv[++i];
        }
        else if (mode == 1 && a[0] != '-') paths[npaths++] = argv[i];
        else usage();
    }
    if (o.jobs < 1 || o.jobs > 256 || o.timeout <= 0) usage();
    if (mode == 2) return selftest(o);
    if (!o.n && o.seconds <= 0) o.n = 10000;

    if (mode == 1) {
        if ((o.fmt = find_format(fmt)) < 0 || npaths == 0) usage();
        return replay(o, npaths, paths);
    }
    int rc = 0;
    if (!strcmp(fmt, "all")) {
        for (int k = 0; k < NFORMATS; k++) {
            o.fmt = k;
            rc |= campaign(o);
        }
        return rc;
    }
    if ((o.fmt = find_format(fmt)) < 0) usage();
    return campaign(o);
}

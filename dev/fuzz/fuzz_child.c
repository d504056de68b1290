/* fuzz_child.c — the child's side of the fuzzer: its report page, the allocation watch, and
 * the drivers that feed one input to the library's API (see fuzz.c). */
#include "fuzz.h"

/* ------------------------------------------------------------------ what a child reports */

report *g_rep;                 /* NULL outside a child: the parent's own allocations are not watched */
size_t g_max_alloc = (size_t)256 << 20;

void verdict(int o, const char *fmt, ...) {
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
void refused(llmc_status st, const char *msg, const char *what) {
    if (st == LLMC_ERR_OUT_OF_MEMORY) verdict(BLOWUP, "%s: out of memory: %s", what, msg ? msg : "");
    else if (!msg || !msg[0]) verdict(BAD, "%s failed (%s) without a message", what, llmc_status_name(st));
    else verdict(ERROR, "%s: %s", what, msg);
}

/* A call that failed after the file was accepted: a loaded file must be usable. Non-finite
 * numbers from finite (but huge) weights are allowed to fail cleanly. */
void failed_later(llmc_status st, const char *msg, const char *what) {
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
int *tokens(int n, int V, int salt) {
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

/* dir/name through llmc_model_load (which tells the formats apart), then used. */
static void load_and_exercise(const char *dir, const char *name, const char *what) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    llmc_model *m = llmc_model_new();
    llmc_status st = llmc_model_load(m, NULL, path);
    if (st != LLMC_OK) {
        refused(st, llmc_model_error(m), what);
        llmc_model_free(m);
        return;
    }
    verdict(OK, "loaded");
    exercise_model(m);
}

void child_model(const char *dir) { load_and_exercise(dir, "model.bin", "model load"); }

/* A Hugging Face directory (ck/config.json, ck/model.safetensors). */
void child_safetensors(const char *dir) { load_and_exercise(dir, "ck", "hf load"); }

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

void child_shard(const char *dir) {
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

void child_tokenizer(const char *dir) {
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

void child_state(const char *dir) {
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


/*
 * train_loop.c — the training loop: the one behind ./train_gpt2, ./train_gpt2cu and GPT2.train.
 *
 * It owns the data loaders, the schedule, periodic validation, sampling and checkpoints, and
 * <out>/main.log (one JSON object per line). It prints nothing: every step, evaluation,
 * sample and checkpoint is an event for the caller's function, which prints (the CLIs), or
 * records and draws a progress bar (Python). Every 0 that could divide or take a modulo
 * means "off".
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "file_io.h"
#include "rng.h"
#include "train_internal.h"

void llmc_loop_options_default(llmc_loop_options *o, const char *backend) {
    const int gpu = backend && strcmp(backend, "cuda") == 0;
    *o = (llmc_loop_options){
        .train_data = "data/shakespeare/shakespeare_train_*.bin",
        .val_data = "data/shakespeare/shakespeare_val_*.bin",
        .out_dir = NULL,
        .schedule = "cosine",
        .batch_size = 4,
        .seq_len = gpu ? 1024 : 64,
        .total_batch = -1,
        .max_steps = -1,
        .lr = 3e-4f,
        .final_lr_frac = 1.0f,
        .weight_decay = 0.0f,
        .grad_clip = 1.0f,
        .warmup = 0,
        .val_every = 20,
        .val_batches = 20,
        .sample_every = 20,
        .gen_len = 64,
        .sample_eot = 50256,
        .ckpt_every = 0,
        .resume = 0,
        .shuffle = 0,
        .seed = 1337,
        .peak_tflops = gpu ? 989.0f : 0.0f,
    };
}

typedef struct loop {
    llmc_train *t;
    const llmc_loop_options *o;
    llmc_event_fn fn;
    void *user;
    llmc_dataloader *train, *val;
    FILE *log;
    int *inputs, *targets;
    int B, T, accum, total_batch, max_steps;
    uint64_t rng;
    double flops_per_token;
    llmc_schedule sched;
    int stop; /* the caller asked to stop: after this step's periodic work */
} loop;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Hands e to the caller; a nonzero answer stops the run once the current step's periodic work
 * (validation, sample, checkpoint) is done. */
static llmc_status emit(loop *L, llmc_event *e) {
    e->max_steps = L->max_steps;
    if (L->fn && L->fn(e, L->user) != 0) L->stop = 1;
    return LLMC_OK;
}

static llmc_status note(loop *L, int step, const char *fmt, ...) {
    char text[LLMC_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    llmc_event e = {.kind = LLMC_EVENT_NOTE, .step = step, .text = text};
    return emit(L, &e);
}

static llmc_status data_fail(loop *L, const char *what, llmc_dataloader *d) {
    return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "%s: %s", what,
                           d ? llmc_dataloader_error(d) : "out of memory opening the data loader");
}

/* ------------------------------------------------------------------ setup */

/* The batch shape and everything that follows from the options alone (not from the model). */
static llmc_status check_options(loop *L) {
    const llmc_loop_options *o = L->o;
    L->B = o->batch_size;
    L->T = o->seq_len;
    if (L->B <= 0 || L->T <= 0)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "batch size -b %d and sequence length -t %d must be >= 1",
                               L->B, L->T);
    const long long bt = (long long)L->B * L->T;
    if (bt > INT_MAX)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "-b %d x -t %d = %lld tokens per micro-batch is more than the %d one batch can hold",
                               L->B, L->T, bt, INT_MAX);
    L->total_batch = o->total_batch > 0 ? o->total_batch : (int)bt;
    if (L->total_batch % bt != 0)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "total batch -d %d tokens must be a multiple of B*T = %lld",
                               L->total_batch, bt);
    L->accum = (int)(L->total_batch / bt);
    L->sched = (llmc_schedule){.max_lr = o->lr, .warmup = o->warmup, .final_frac = o->final_lr_frac};
    if (llmc_schedule_parse(o->schedule ? o->schedule : "cosine", &L->sched.kind) != LLMC_OK)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "unknown schedule -k '%s': use cosine, linear, constant or wsd", o->schedule);
    if (o->resume && !o->out_dir)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "-y 1 (resume) needs an output directory (-o) holding checkpoints");
    return LLMC_OK;
}

/* What needs the model: it has weights, T fits its context; the FLOPs for the MFU figure. */
static llmc_status check_model(loop *L) {
    llmc_status st = llmc_train_require(L->t);
    if (st != LLMC_OK) return st;
    const llmc_config *c = &L->t->m->w.cfg;
    if (L->T > c->max_seq_len)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "-t %d is longer than the model's maximum context of %d tokens", L->T, c->max_seq_len);
    /* 6N per token for the matmuls, plus attention's 6*L*T*C (forward+backward, causal) */
    L->flops_per_token = 6.0 * (double)L->t->m->w.count + 6.0 * c->num_layers * (double)L->T * c->channels;
    return LLMC_OK;
}

static llmc_status open_data(loop *L) {
    const llmc_loop_options *o = L->o;
    if (!o->train_data) return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "no train data given");
    L->train = llmc_dataloader_new();
    if (!L->train || llmc_dataloader_open(L->train, o->train_data, L->B, L->T, o->shuffle, o->seed) != LLMC_OK)
        return data_fail(L, "train data", L->train);
    if (o->val_data && o->val_every > 0) {
        L->val = llmc_dataloader_new();
        if (!L->val || llmc_dataloader_open(L->val, o->val_data, L->B, L->T, 0, 0) != LLMC_OK)
            return data_fail(L, "val data", L->val);
    }
    L->max_steps = o->max_steps;
    if (L->max_steps < 0) { /* one epoch */
        const size_t per_epoch = llmc_dataloader_num_batches(L->train) / (size_t)L->accum;
        L->max_steps = per_epoch == 0 ? 1 : per_epoch > INT_MAX - 1 ? INT_MAX - 1 : (int)per_epoch;
    }
    L->sched.total = L->max_steps;
    const size_t n = (size_t)L->B * L->T;
    L->inputs = malloc(n * sizeof(int));
    L->targets = malloc(n * sizeof(int));
    if (!L->inputs || !L->targets)
        return llmc_train_fail(L->t, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate host buffers for %zu tokens", n);
    return LLMC_OK;
}

/* Loads the checkpoint of step and checks that its data position lies in this run's data. */
static llmc_status try_checkpoint(loop *L, int step, llmc_checkpoint_info *info) {
    llmc_status st = llmc_checkpoint_load(L->t, L->o->out_dir, step, info);
    if (st == LLMC_OK && llmc_dataloader_seek(L->train, info->data) != LLMC_OK)
        st = llmc_train_fail(L->t, LLMC_ERR_FORMAT, "its data position does not fit the train data: %s",
                             llmc_dataloader_error(L->train));
    return st;
}

/* With -y 1: the newest checkpoint that loads and fits, falling back to older ones and saying so.
 * Without, or when none is usable: refuses to start over in a directory that holds checkpoint
 * files, which the new run would overwrite. */
static llmc_status resume(loop *L, llmc_checkpoint_info *info) {
    const llmc_loop_options *o = L->o;
    memset(info, 0, sizeof *info);
    if (!o->out_dir) return LLMC_OK;
    int step = -1, files = 0, tried = 0;
    char why[LLMC_ERR_LEN + 32] = "";
    llmc_checkpoint_find(o->out_dir, INT_MAX, &step, &files);
    while (o->resume && step >= 0) {
        tried++;
        llmc_status st = try_checkpoint(L, step, info);
        if (st == LLMC_OK) {
            if (tried > 1)
                st = note(L, step, "fell back to the newest usable checkpoint, step %d (%s)", step, why);
            if (st == LLMC_OK) st = note(L, info->step, "resumed from %s at step %d", o->out_dir, info->step);
            return st;
        }
        snprintf(why, sizeof why, "step %d: %s", step, L->t->err);
        memset(info, 0, sizeof *info);
        llmc_checkpoint_find(o->out_dir, step, &step, NULL);
    }
    if (files == 0 || (o->ckpt_every <= 0 && !o->resume)) {
        if (o->resume) return note(L, 0, "no checkpoint in %s yet: starting from the model as given", o->out_dir);
        return LLMC_OK;
    }
    if (tried > 0)
        return llmc_train_fail(L->t, LLMC_ERR_FORMAT,
                               "no usable checkpoint in %s (%d tried; the last, %s); refusing to start over and "
                               "overwrite them",
                               o->out_dir, tried, why);
    return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                           "%s already holds %d checkpoint file(s) of another run%s: resume with -y 1, or write to "
                           "another -o",
                           o->out_dir, files, o->resume ? " but no complete pair (model_*.bin + state_*.bin)" : "");
}

/* After a resume from step, main.log keeps what the run had logged up to that step only: the
 * steps after it are done again. The rewrite is atomic. */
static llmc_status truncate_log(loop *L, const char *path, int step) {
    FILE *in = fopen(path, "r");
    if (!in) return LLMC_OK; /* no log yet */
    llmc_atomic_file af;
    llmc_status st = llmc_atomic_open(&af, path, L->t->err, sizeof L->t->err);
    char line[4096];
    while (st == LLMC_OK && fgets(line, sizeof line, in)) {
        int s;
        if (sscanf(line, "{\"step\": %d", &s) == 1 && s > step) continue;
        st = llmc_atomic_write(&af, line, strlen(line), L->t->err, sizeof L->t->err);
    }
    if (st == LLMC_OK && ferror(in)) st = llmc_train_fail(L->t, LLMC_ERR_IO, "cannot read '%s'", path);
    fclose(in);
    return af.f ? llmc_atomic_close(&af, st, L->t->err, sizeof L->t->err) : st;
}

static llmc_status open_log(loop *L, int resumed_at) {
    const char *dir = L->o->out_dir;
    if (!dir) return LLMC_OK;
    if (llmc_make_dirs(dir) != 0) return llmc_train_fail(L->t, LLMC_ERR_IO, "cannot create output directory '%s'", dir);
    llmc_remove_stale_temps(dir, NULL); /* half-written files of killed runs */
    char path[4096];
    snprintf(path, sizeof path, "%s/main.log", dir);
    if (resumed_at > 0) {
        llmc_status st = truncate_log(L, path, resumed_at);
        if (st != LLMC_OK) return st;
    }
    L->log = fopen(path, "a");
    if (!L->log) return llmc_train_fail(L->t, LLMC_ERR_IO, "cannot open '%s' for appending", path);
    return LLMC_OK;
}

static llmc_status log_line(loop *L, const char *fmt, ...) {
    if (!L->log) return LLMC_OK;
    va_list ap;
    va_start(ap, fmt);
    const int n = vfprintf(L->log, fmt, ap);
    va_end(ap);
    if (n < 0 || fflush(L->log) != 0)
        return llmc_train_fail(L->t, LLMC_ERR_IO, "cannot write to %s/main.log", L->o->out_dir);
    return LLMC_OK;
}

/* ------------------------------------------------------------------ periodic work */

static llmc_status eval_val(loop *L, int step) {
    const int batches = L->o->val_batches > 0 ? L->o->val_batches : (int)llmc_dataloader_num_batches(L->val);
    llmc_dataloader_reset(L->val);
    double sum = 0.0;
    for (int i = 0; i < batches; i++) {
        if (llmc_dataloader_next(L->val, L->inputs, L->targets) != LLMC_OK) return data_fail(L, "val data", L->val);
        llmc_status st = llmc_train_forward(L->t, L->inputs, L->targets, L->B, L->T);
        if (st != LLMC_OK) return st;
        sum += llmc_train_loss(L->t);
    }
    const float loss = (float)(sum / batches);
    llmc_status st = log_line(L, "{\"step\": %d, \"val_loss\": %.6f}\n", step, loss);
    llmc_event e = {.kind = LLMC_EVENT_VAL, .step = step, .val_loss = loss, .ntokens = batches};
    return st == LLMC_OK ? emit(L, &e) : st;
}

static llmc_status sample(loop *L, int step) {
    const int V = L->t->m->w.cfg.vocab_size, eot = L->o->sample_eot;
    int prompt = eot >= 0 && eot < V ? eot : 0, len = 1, alive = 1, n = 0;
    llmc_gen_options go;
    llmc_gen_options_default(&go);
    go.max_new = L->o->gen_len;
    go.eot = eot;
    go.sampling.seed = llmc_rng_u32(&L->rng);
    llmc_gen *g = llmc_gen_new();
    int *tokens = malloc((size_t)go.max_new * sizeof(int));
    if (!g || !tokens) {
        llmc_gen_free(g);
        free(tokens);
        return llmc_train_fail(L->t, LLMC_ERR_OUT_OF_MEMORY, "out of memory for a sample");
    }
    llmc_status st = llmc_gen_begin(g, L->t->m, &prompt, &len, 1, &go);
    while (st == LLMC_OK && alive > 0) {
        int tok;
        st = llmc_gen_next(g, &tok, 1, &alive);
        if (st == LLMC_OK && tok >= 0 && tok != eot && n < go.max_new) tokens[n++] = tok;
    }
    if (st != LLMC_OK) llmc_train_fail(L->t, st, "sampling: %s", llmc_gen_error(g));
    llmc_gen_free(g);
    if (st == LLMC_OK) {
        llmc_event e = {.kind = LLMC_EVENT_SAMPLE, .step = step, .tokens = tokens, .ntokens = n};
        st = emit(L, &e);
    }
    free(tokens);
    return st;
}

static llmc_status save_checkpoint(loop *L, int step) {
    llmc_checkpoint_info info = {.step = step, .rng = L->rng, .data = llmc_dataloader_tell(L->train)};
    llmc_status st = llmc_checkpoint_save(L->t, L->o->out_dir, &info);
    if (st != LLMC_OK) {
        char why[LLMC_ERR_LEN];
        snprintf(why, sizeof why, "%s", L->t->err);
        return llmc_train_fail(L->t, st, "checkpoint: %s", why);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model_%08d.bin", L->o->out_dir, step);
    st = log_line(L, "{\"step\": %d, \"checkpoint\": \"model_%08d.bin\"}\n", step, step);
    llmc_event e = {.kind = LLMC_EVENT_CHECKPOINT, .step = step, .text = path};
    return st == LLMC_OK ? emit(L, &e) : st;
}

static int due(int every, int step, int last) { return every > 0 && (step % every == 0 || last); }

/* ------------------------------------------------------------------ the loop */

static llmc_status train_step(loop *L, int step) {
    const double t0 = now_seconds();
    llmc_status st = llmc_train_zero_grad(L->t);
    double loss_sum = 0.0;
    for (int micro = 0; micro < L->accum && st == LLMC_OK; micro++) {
        if (llmc_dataloader_next(L->train, L->inputs, L->targets) != LLMC_OK)
            return data_fail(L, "train data", L->train);
        float loss;
        st = llmc_train_forward_backward(L->t, L->inputs, L->targets, L->B, L->T, 1.0f / L->accum, &loss);
        loss_sum += loss;
    }
    if (st != LLMC_OK) return st;
    const float loss = (float)(loss_sum / L->accum);
    if (!isfinite(loss))
        return llmc_train_fail(L->t, LLMC_ERR_NUMERIC, "the training loss is %f at step %d: stopping (try a lower -l)",
                               loss, step + 1);
    llmc_adamw opt;
    llmc_adamw_default(&opt);
    opt.lr = llmc_schedule_lr(&L->sched, step);
    opt.weight_decay = L->o->weight_decay;
    opt.grad_clip = L->o->grad_clip;
    float norm = 0.0f;
    st = llmc_train_step(L->t, &opt, &norm);
    if (st != LLMC_OK) return st;
    const double dt = now_seconds() - t0, tok_s = (double)L->total_batch / dt;
    const double mfu = L->o->peak_tflops > 0 ? 100.0 * tok_s * L->flops_per_token / (1e12 * L->o->peak_tflops) : 0.0;
    st = log_line(L,
                  "{\"step\": %d, \"train_loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"ms\": %.3f, "
                  "\"tok_s\": %.1f}\n",
                  step + 1, loss, opt.lr, norm, 1e3 * dt, tok_s);
    if (st != LLMC_OK) return st;
    llmc_event e = {.kind = LLMC_EVENT_STEP,
                    .step = step + 1,
                    .loss = loss,
                    .lr = opt.lr,
                    .grad_norm = norm,
                    .ms = 1e3 * dt,
                    .tok_s = tok_s,
                    .mfu = mfu};
    return emit(L, &e);
}

static llmc_status start(loop *L, int first_step) {
    const llmc_config *c = &L->t->m->w.cfg;
    char text[1024];
    snprintf(text, sizeof text,
             "model: L=%d H=%d C=%d T=%d V=%d (%zu params) on %s\n"
             "batch: B=%d T=%d, %d micro-steps for %d tokens per step, %d steps, %zu train tokens",
             c->num_layers, c->num_heads, c->channels, c->max_seq_len, c->vocab_size, L->t->m->w.count,
             llmc_model_backend(L->t->m), L->B, L->T, L->accum, L->total_batch, L->max_steps,
             llmc_dataloader_num_tokens(L->train));
    llmc_event e = {.kind = LLMC_EVENT_START, .step = first_step, .text = text};
    return emit(L, &e);
}

static llmc_status run(loop *L) {
    llmc_checkpoint_info info;
    llmc_status st = check_options(L);
    if (st == LLMC_OK) st = open_data(L);
    if (st == LLMC_OK) st = resume(L, &info);
    if (st == LLMC_OK) st = check_model(L);
    const int first = info.step;
    if (st == LLMC_OK) st = open_log(L, first);
    if (st != LLMC_OK) return st;
    if (first >= L->max_steps && first > 0)
        return note(L, first, "nothing to train: the checkpoint in %s is at step %d and -x is %d", L->o->out_dir,
                    first, L->max_steps);
    L->rng = first > 0 ? info.rng : llmc_rng_seed(L->o->seed ^ 0x5A5A5A5Aull);
    st = start(L, first);
    const llmc_loop_options *o = L->o;
    for (int step = first; st == LLMC_OK && step <= L->max_steps; step++) {
        const int last = step == L->max_steps, resumed_here = step == first && first > 0;
        if (!resumed_here) { /* the run we resume from already did this step's periodic work */
            if (L->val && due(o->val_every, step, last)) st = eval_val(L, step);
            if (st == LLMC_OK && step > 0 && o->gen_len > 0 && due(o->sample_every, step, last)) st = sample(L, step);
            if (st == LLMC_OK && o->out_dir && step > 0 && due(o->ckpt_every, step, last)) st = save_checkpoint(L, step);
        }
        if (st != LLMC_OK || last) break;
        if (L->stop) return llmc_train_fail(L->t, LLMC_ERR_STOPPED, "training stopped by the caller at step %d", step);
        st = train_step(L, step);
    }
    return st;
}

llmc_status llmc_train_run(llmc_train *t, const llmc_loop_options *o, llmc_event_fn fn, void *user) {
    if (!t->m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer is not attached to a model");
    llmc_loop_options defaults;
    llmc_loop_options_default(&defaults, llmc_model_backend(t->m));
    loop L = {.t = t, .o = o ? o : &defaults, .fn = fn, .user = user};
    t->err[0] = '\0';
    llmc_status st = run(&L);
    llmc_dataloader_free(L.train);
    llmc_dataloader_free(L.val);
    if (L.log) fclose(L.log);
    free(L.inputs);
    free(L.targets);
    return st;
}

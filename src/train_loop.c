/*
 * train_loop.c — the training loop: the one behind ./train_gpt2, ./train_gpt2cu and GPT2.train.
 *
 * It owns the data loaders, the schedule, periodic validation, sampling and checkpoints (with
 * llm.c's retention and DONE markers), and the run's logs (run_log.c). It prints nothing: every step, evaluation,
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
#include "mc_eval.h"
#include "outlier.h"
#include "rng.h"
#include "run_log.h"
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
        .overfit_batch = 0,
        .ckpt_keep = 0,
        .ckpt_major = 0,
        .skip_loss_z = 0.0f,
        .skip_norm_z = 0.0f,
        .log_device_every = 0,
        .expect_model = NULL,
        .stop_after = 0,
        .eval_file = NULL,
        .eval_limit = 0,
        .teacher = NULL,
        .distill_alpha = LLMC_DISTILL_UNSET,
        .distill_temperature = LLMC_DISTILL_UNSET,
    };
}

typedef struct loop {
    llmc_train *t;
    const llmc_loop_options *o;
    llmc_event_fn fn;
    void *user;
    llmc_dataloader *train, *val;
    llmc_model *teacher; /* loaded from o->teacher for the run */
    llmc_mc_eval *eval; /* eval_file, read once */
    llmc_run_log log;
    int *inputs, *targets;
    int *fixed_inputs, *fixed_targets; /* overfit_batch: the one batch, read once */
    llmc_outlier loss_window, norm_window;
    double started, step_seconds;      /* wall clock at the start; a running mean of step times */
    int steps_timed;
    int B, T, accum, total_batch, max_steps;
    int rank, world; /* of a data-parallel run: rank r takes micro-batches r, r + world, ... */
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
    if (L->rank != 0) return LLMC_OK; /* rank 0 alone prints and writes */
    e->max_steps = L->max_steps;
    e->elapsed_s = now_seconds() - L->started;
    llmc_status st = llmc_run_log_event(&L->log, e, L->t->err, sizeof L->t->err);
    if (L->fn && L->fn(e, L->user) != 0) L->stop = 1;
    return st;
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
    L->rank = llmc_train_rank(L->t), L->world = llmc_train_world(L->t);
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
    const long long step_bt = bt * L->world; /* one micro-batch on every rank */
    if (o->total_batch <= 0 && step_bt > INT_MAX)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "B*T*ranks = %lld tokens per step is more than %d", step_bt,
                               INT_MAX);
    L->total_batch = o->total_batch > 0 ? o->total_batch : (int)step_bt;
    if (L->total_batch % step_bt != 0)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               L->world > 1 ? "total batch -d %d tokens must be a multiple of B*T*ranks = %lld"
                                            : "total batch -d %d tokens must be a multiple of B*T = %lld",
                               L->total_batch, step_bt);
    L->accum = (int)(L->total_batch / step_bt);
    L->sched = (llmc_schedule){.max_lr = o->lr, .warmup = o->warmup, .final_frac = o->final_lr_frac};
    if (llmc_schedule_parse(o->schedule ? o->schedule : "cosine", &L->sched.kind) != LLMC_OK)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "unknown schedule -k '%s': use cosine, linear, constant or wsd", o->schedule);
    if (o->resume && !o->out_dir)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "-y 1 (resume) needs an output directory (-o) holding checkpoints");
    if (!o->teacher && (o->distill_alpha != LLMC_DISTILL_UNSET || o->distill_temperature != LLMC_DISTILL_UNSET))
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "--distill-alpha and --distill-temperature need a teacher (--teacher FILE)");
    if (o->teacher && L->t->teacher)
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "the trainer already has a teacher, and --teacher names another (%s)", o->teacher);
    return LLMC_OK;
}

/* --teacher: its model file on the student's device, for the run; -t must fit its context. */
static llmc_status open_teacher(loop *L, int first) {
    const llmc_loop_options *o = L->o;
    llmc_train *t = L->t;
    if (o->teacher) {
        L->teacher = llmc_model_new();
        if (!L->teacher) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the teacher model");
        if (llmc_model_load(L->teacher, &t->m->opts, o->teacher) != LLMC_OK)
            return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "teacher: %s", llmc_model_error(L->teacher));
        const float alpha = o->distill_alpha != LLMC_DISTILL_UNSET ? o->distill_alpha : 0.5f;
        const float tau = o->distill_temperature != LLMC_DISTILL_UNSET ? o->distill_temperature : 2.0f;
        llmc_status st = llmc_train_set_teacher(t, L->teacher, alpha, tau);
        if (st != LLMC_OK) return st;
    }
    if (!t->teacher) return LLMC_OK;
    const llmc_config *c = &t->teacher->m->w.cfg;
    if (L->T > c->max_seq_len)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "-t %d is longer than the teacher's maximum context of %d tokens",
                               L->T, c->max_seq_len);
    return note(L, first,
                "distillation: teacher L=%d H=%d C=%d%s%s, alpha %g, temperature %g; the train loss is "
                "alpha CE + (1 - alpha) tau^2 KL, the val loss plain CE",
                c->num_layers, c->num_heads, c->channels, o->teacher ? " from " : "", o->teacher ? o->teacher : "",
                (double)t->distill_alpha, (double)t->distill_tau);
}

/* What needs the model: it has weights, T fits its context; the FLOPs for the MFU figure. */
static llmc_status check_model(loop *L) {
    llmc_status st = llmc_train_require(L->t);
    if (st != LLMC_OK) return st;
    if (L->t->m->quantized) return llmc_train_refuse_quantized(L->t);
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
    if (o->eval_file && o->val_every > 0) {
        char err[LLMC_ERR_LEN];
        L->eval = llmc_mc_eval_load(o->eval_file, L->t->m->w.cfg.vocab_size, err, sizeof err);
        if (!L->eval) return llmc_train_fail(L->t, LLMC_ERR_FORMAT, "%s", err);
    }
    L->max_steps = o->max_steps;
    if (L->max_steps < 0) { /* one epoch */
        const size_t per_epoch = llmc_dataloader_num_batches(L->train) / ((size_t)L->accum * (size_t)L->world);
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

static llmc_run_settings run_settings(const loop *L) {
    return (llmc_run_settings){L->B, L->T, L->total_batch, L->max_steps, L->o->warmup, (int)L->sched.kind + 1,
                               L->o->lr, L->o->final_lr_frac};
}

/* What a resume into different settings means: a batch shape that is not the checkpoint's would
 * change the data order and the accumulation, so it stops; a different schedule or model request
 * is safe (the checkpoint carries the weights and the optimizer state) and is said in one line. */
static llmc_status compare_settings(loop *L, const llmc_checkpoint_info *info) {
    const llmc_run_settings was = info->run, now = run_settings(L);
    if (was.batch_size && (was.batch_size != now.batch_size || was.seq_len != now.seq_len ||
                           was.total_batch != now.total_batch))
        return llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG,
                               "resume: the checkpoint at step %d was trained with -b %d -t %d -d %d, this run asks "
                               "for -b %d -t %d -d %d: the data order and the accumulation would change; resume with "
                               "the same batch settings, or start a new run in another -o",
                               info->step, was.batch_size, was.seq_len, was.total_batch, now.batch_size, now.seq_len,
                               now.total_batch);
    llmc_status st = LLMC_OK;
    if (was.schedule && (was.schedule != now.schedule || was.max_steps != now.max_steps ||
                         was.warmup != now.warmup || was.lr != now.lr || was.final_lr_frac != now.final_lr_frac)) {
        llmc_schedule before = {(llmc_schedule_kind)(was.schedule - 1), was.lr, was.warmup, was.max_steps,
                                was.final_lr_frac, 0.0f};
        st = note(L, info->step,
                  "resume: the learning-rate schedule differs from the checkpoint's (-x %d -l %g -u %d -q %g, "
                  "then -x %d -l %g -u %d -q %g): the lr of step %d goes from %.3e to %.3e; the weights and "
                  "optimizer state carry over",
                  was.max_steps, was.lr, was.warmup, was.final_lr_frac, now.max_steps, now.lr, now.warmup,
                  now.final_lr_frac, info->step + 1, llmc_schedule_lr(&before, info->step),
                  llmc_schedule_lr(&L->sched, info->step));
    }
    const llmc_config *want = L->o->expect_model, *got = &L->t->m->w.cfg;
    if (st == LLMC_OK && want &&
        (want->num_layers != got->num_layers || want->num_heads != got->num_heads || want->channels != got->channels ||
         want->max_seq_len != got->max_seq_len || want->vocab_size != got->vocab_size))
        st = note(L, info->step,
                  "resume: the checkpoint's model (L=%d H=%d C=%d T=%d V=%d) continues; the model asked for "
                  "(L=%d H=%d C=%d T=%d V=%d) is not used",
                  got->num_layers, got->num_heads, got->channels, got->max_seq_len, got->vocab_size,
                  want->num_layers, want->num_heads, want->channels, want->max_seq_len, want->vocab_size);
    return st;
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
            return st == LLMC_OK ? compare_settings(L, info) : st;
        }
        snprintf(why, sizeof why, "step %d: %s", step, L->t->err);
        memset(info, 0, sizeof *info);
        llmc_checkpoint_find(o->out_dir, step, &step, NULL);
    }
    if (files == 0 || (o->ckpt_every <= 0 && !o->resume)) {
        if (o->resume) return note(L, 0, "no checkpoint in %s yet: starting from the model as given", o->out_dir);
        return LLMC_OK;
    }
    if (o->resume && tried == 0 && llmc_checkpoint_steps(o->out_dir) == 1) /* a first save that was killed */
        return note(L, 0, "no complete checkpoint in %s yet (%d file(s) of an interrupted save): starting from the "
                    "model as given", o->out_dir, files);
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

static llmc_status open_log(loop *L, int resumed_at) {
    const char *dir = L->o->out_dir;
    if (!dir || L->rank != 0) return LLMC_OK;
    if (llmc_make_dirs(dir) != 0) return llmc_train_fail(L->t, LLMC_ERR_IO, "cannot create output directory '%s'", dir);
    llmc_remove_stale_temps(dir, NULL); /* half-written files of killed runs */
    return llmc_run_log_open(&L->log, dir, resumed_at, L->t->err, sizeof L->t->err);
}

/* ------------------------------------------------------------------ periodic work */

/* The val batches are split over the ranks as the train batches are; their losses are summed
 * in batch order, as one rank sums them. */
static llmc_status eval_val(loop *L, int step) {
    const int batches = L->o->val_batches > 0 ? L->o->val_batches : (int)llmc_dataloader_num_batches(L->val);
    llmc_dataloader_reset(L->val);
    double *loss = calloc((size_t)batches, sizeof *loss), sum = 0.0;
    llmc_status st = loss ? LLMC_OK : llmc_train_fail(L->t, LLMC_ERR_OUT_OF_MEMORY, "out of memory for val losses");
    for (int i = 0; i < batches && st == LLMC_OK; i++) {
        if (i % L->world != L->rank) {
            llmc_dataloader_skip(L->val, 1);
            continue;
        }
        if (llmc_dataloader_next(L->val, L->inputs, L->targets) != LLMC_OK) st = data_fail(L, "val data", L->val);
        if (st == LLMC_OK) st = llmc_train_forward(L->t, L->inputs, L->targets, L->B, L->T);
        if (st == LLMC_OK) loss[i] = llmc_train_loss(L->t);
    }
    st = llmc_train_agree(L->t, st, NULL);
    if (st == LLMC_OK) st = llmc_train_sum_doubles(L->t, loss, batches);
    for (int i = 0; st == LLMC_OK && i < batches; i++) sum += loss[i];
    free(loss);
    if (st != LLMC_OK) return st;
    llmc_event e = {.kind = LLMC_EVENT_VAL, .step = step, .val_loss = (float)(sum / batches), .ntokens = batches};
    return emit(L, &e);
}

/* The eval file, scored with the trainer's forward in batches of the training shape, the batches
 * split over the ranks; the counts are summed. */
static llmc_status eval_mc(loop *L, int step) {
    llmc_mc_score s;
    char err[LLMC_ERR_LEN];
    llmc_status st = llmc_mc_eval_run(L->eval, L->t, L->B, L->T, L->o->eval_limit, L->rank, L->world, L->inputs,
                                      L->targets, &s, err, sizeof err);
    if (st != LLMC_OK) llmc_train_fail(L->t, LLMC_ERR_INVALID_ARG, "eval %s: %s", L->o->eval_file, err);
    st = llmc_train_agree(L->t, st, NULL);
    double counts[3] = {s.n, s.correct, s.correct_norm};
    if (st == LLMC_OK) st = llmc_train_sum_doubles(L->t, counts, 3);
    if (st != LLMC_OK) return st;
    llmc_event e = {.kind = LLMC_EVENT_EVAL, .step = step, .loss = (float)(counts[0] ? counts[1] / counts[0] : 0.0),
                    .val_loss = (float)(counts[0] ? counts[2] / counts[0] : 0.0), .ntokens = (int)counts[0]};
    return emit(L, &e);
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

/* llm.c's retention: only the ckpt_keep newest checkpoints stay, and those at multiples of
 * ckpt_major, which are never removed. With retention on, the leftovers of killed saves and
 * removals below the newest go too. */
static void prune_checkpoints(loop *L, int newest) {
    const int keep = L->o->ckpt_keep, major = L->o->ckpt_major;
    if (keep <= 0) return;
    llmc_checkpoint_remove_partial(L->o->out_dir, newest);
    int seen = 0, step = newest + 1;
    for (;;) {
        llmc_checkpoint_find(L->o->out_dir, step, &step, NULL);
        if (step < 0) break;
        if (++seen > keep && !(major > 0 && step % major == 0)) llmc_checkpoint_remove(L->o->out_dir, step);
    }
}

/* Every rank takes part (ZeRO 1 gathers the optimizer state); rank 0 writes. */
static llmc_status save_checkpoint(loop *L, int step) {
    llmc_checkpoint_info info = {.step = step, .rng = L->rng, .data = llmc_dataloader_tell(L->train),
                                 .run = run_settings(L)};
    llmc_status st = llmc_checkpoint_save(L->t, L->o->out_dir, &info);
    if (st != LLMC_OK) {
        char why[LLMC_ERR_LEN];
        snprintf(why, sizeof why, "%s", L->t->err);
        return llmc_train_fail(L->t, st, "checkpoint: %s", why);
    }
    if (L->rank == 0) prune_checkpoints(L, step);
    char path[4096];
    snprintf(path, sizeof path, "%s/model_%08d.bin", L->o->out_dir, step);
    llmc_event e = {.kind = LLMC_EVENT_CHECKPOINT, .step = step, .text = path};
    return emit(L, &e);
}

/* -lg: what the device's memory holds (llm.c logs its GPU's state the same way). */
static llmc_status log_device(loop *L, int step) {
    size_t free_b = 0, total_b = 0;
    llmc_device *d = &L->t->m->dev;
    if (d->ops->memory_info(d, &free_b, &total_b) != LLMC_OK || total_b == 0) return LLMC_OK;
    return note(L, step, "%s memory at step %d: %.0f of %.0f MiB in use (this run's weights and training state: %.0f MiB)",
                d->ops->act_dtype == LLMC_F32 ? "host" : "device", step, (total_b - free_b) / 1048576.0,
                total_b / 1048576.0, (llmc_model_memory(L->t->m) + llmc_train_memory(L->t)) / 1048576.0);
}

static int due(int every, int step, int last) { return every > 0 && (step % every == 0 || last); }

/* ------------------------------------------------------------------ the loop */

/* The next micro-batch: from the loader, or (overfit_batch) the first one again. */
static llmc_status next_batch(loop *L) {
    const size_t n = (size_t)L->B * L->T;
    if (L->fixed_inputs) {
        memcpy(L->inputs, L->fixed_inputs, n * sizeof(int));
        memcpy(L->targets, L->fixed_targets, n * sizeof(int));
        return LLMC_OK;
    }
    llmc_dataloader_skip(L->train, (uint64_t)L->rank); /* the batches of the ranks before this one */
    if (llmc_dataloader_next(L->train, L->inputs, L->targets) != LLMC_OK) return data_fail(L, "train data", L->train);
    llmc_dataloader_skip(L->train, (uint64_t)(L->world - 1 - L->rank)); /* and after */
    if (!L->o->overfit_batch) return LLMC_OK;
    L->fixed_inputs = malloc(n * sizeof(int));
    L->fixed_targets = malloc(n * sizeof(int));
    if (!L->fixed_inputs || !L->fixed_targets)
        return llmc_train_fail(L->t, LLMC_ERR_OUT_OF_MEMORY, "cannot keep the batch to overfit");
    memcpy(L->fixed_inputs, L->inputs, n * sizeof(int));
    memcpy(L->fixed_targets, L->targets, n * sizeof(int));
    return LLMC_OK;
}

/* -sl / -sg: whether this step's update is an outlier to skip; z gets the z-score that decided. */
static int is_outlier(loop *L, float loss, float norm, double *z) {
    int skip_loss = 0, skip_norm = 0;
    const double zl = llmc_outlier_check(&L->loss_window, loss, L->o->skip_loss_z, &skip_loss);
    const double zn = llmc_outlier_check(&L->norm_window, norm, L->o->skip_norm_z, &skip_norm);
    *z = skip_loss ? zl : zn;
    return skip_loss || skip_norm;
}

static llmc_status train_step(loop *L, int step) {
    const double t0 = now_seconds();
    llmc_status st = llmc_train_zero_grad(L->t);
    double loss_sum = 0.0;
    const int micro_steps = L->accum * L->world; /* over all ranks; the gradients are summed over them */
    for (int micro = 0; micro < L->accum && st == LLMC_OK; micro++) {
        st = next_batch(L);
        float loss;
        /* overlap: the last micro-step's backward sends the sums off layer by layer (an exact
         * accumulation adds that micro-step into the sum only after its backward). Its collectives
         * start inside the backward, so the ranks agree first that every one of them gets there. */
        L->t->reduce_in_backward = L->t->opts.overlap && micro == L->accum - 1 &&
                                   !(L->t->opts.exact_accum && L->accum > 1);
        if (L->t->reduce_in_backward && llmc_train_distributed(L->t)) {
            if (st == LLMC_OK) st = llmc_train_check_step(L->t, L->inputs, L->targets, L->B, L->T);
            st = llmc_train_agree(L->t, st, NULL);
        }
        if (st == LLMC_OK)
            st = llmc_train_forward_backward(L->t, L->inputs, L->targets, L->B, L->T, 1.0f / micro_steps, &loss);
        L->t->reduce_in_backward = 0;
        loss_sum += loss;
    }
    if (st == LLMC_ERR_NUMERIC)
        llmc_train_fail(L->t, st, "the training loss is not finite at step %d: stopping (try a lower -l)", step + 1);
    st = llmc_train_agree(L->t, st, NULL); /* a rank that failed stops every rank, named */
    if (st == LLMC_OK) st = llmc_train_sum_doubles(L->t, &loss_sum, 1);
    if (st != LLMC_OK) return st;
    const float loss = (float)(loss_sum / micro_steps);
    llmc_adamw opt;
    llmc_adamw_default(&opt);
    opt.lr = llmc_schedule_lr(&L->sched, step);
    opt.weight_decay = L->o->weight_decay;
    opt.grad_clip = L->o->grad_clip;
    float norm = 0.0f;
    double z = 0.0;
    int skipped = 0;
    if (L->o->skip_loss_z > 0 || L->o->skip_norm_z > 0) {
        st = llmc_train_grad_norm(L->t, &norm);
        if (st != LLMC_OK) return st;
        skipped = isfinite(norm) && is_outlier(L, loss, norm, &z);
    }
    if (!skipped) st = llmc_train_step(L->t, &opt, &norm);
    if (st != LLMC_OK) return st;
    const double dt = now_seconds() - t0, tok_s = (double)L->total_batch / dt;
    const double mfu = L->o->peak_tflops > 0 ? 100.0 * tok_s * L->flops_per_token / (1e12 * L->o->peak_tflops) : 0.0;
    /* ETA from the steps so far, the first one left out once there are others (it allocates) */
    if (++L->steps_timed <= 2) L->step_seconds = dt; /* the second replaces the first */
    else L->step_seconds += (dt - L->step_seconds) / (L->steps_timed - 1);
    llmc_event e = {.kind = LLMC_EVENT_STEP,
                    .step = step + 1,
                    .loss = loss,
                    .lr = opt.lr,
                    .grad_norm = norm,
                    .ms = 1e3 * dt,
                    .tok_s = tok_s,
                    .mfu = mfu,
                    .eta_s = L->step_seconds * (L->max_steps - step - 1),
                    .skipped = skipped,
                    .val_loss = (float)z};
    return emit(L, &e);
}

static llmc_status start(loop *L, int first_step) {
    const llmc_config *c = &L->t->m->w.cfg;
    char text[1024];
    snprintf(text, sizeof text,
             "model: L=%d H=%d C=%d T=%d V=%d (%zu params) on %s\n"
             "batch: B=%d T=%d, %d micro-steps for %d tokens per step, %d steps, %zu train tokens%s",
             c->num_layers, c->num_heads, c->channels, c->max_seq_len, c->vocab_size, L->t->m->w.count,
             llmc_model_backend(L->t->m), L->B, L->T, L->accum, L->total_batch, L->max_steps,
             llmc_dataloader_num_tokens(L->train),
             llmc_dataloader_has_masks(L->train) ? " (loss masks: only the masked-in targets count)" : "");
    if (L->world > 1 || llmc_train_distributed(L->t)) {
        const size_t len = strlen(text);
        snprintf(text + len, sizeof text - len, "\ndata parallel: %d ranks, ZeRO-%d, %d micro-step(s) per rank",
                 L->world, L->t->opts.zero_stage, L->accum);
    }
    llmc_event e = {.kind = LLMC_EVENT_START, .step = first_step, .text = text};
    return emit(L, &e);
}

/* After the first step, what the whole run will take at its speed (llm.c's default d12 run on a
 * small CPU is many hours: better said up front). */
static llmc_status estimate(loop *L, int step) {
    const double left = L->step_seconds * (L->max_steps - step);
    return note(L, step, "%d steps to go: about %.0f h %02.0f min at %.0f ms per step", L->max_steps - step,
                floor(left / 3600.0), floor(fmod(left, 3600.0) / 60.0), 1e3 * L->step_seconds);
}

/* Every rank must train the same run: what would make them differ, compared across ranks. */
static llmc_status same_settings(loop *L, int first) {
    const llmc_loop_options *o = L->o;
    static const char *const names[] = {"-b", "-t", "-d", "-x", "-u", "--seed", "-v", "-m", "-n", "--shuffle",
                                        "-z", "parameter count", "resume step", "-l", "-c", "--grad-clip", "-a"};
    int32_t lr, wd, clip;
    memcpy(&lr, &o->lr, 4), memcpy(&wd, &o->weight_decay, 4), memcpy(&clip, &o->grad_clip, 4);
    const int64_t mine[] = {L->B, L->T, L->total_batch, L->max_steps, o->warmup, (int64_t)o->seed, o->val_every,
                            o->val_batches, o->ckpt_every, o->shuffle, L->t->opts.zero_stage,
                            (int64_t)L->t->m->w.count, first, lr, wd, clip, o->overfit_batch};
    return llmc_train_check_same(L->t, mine, names, (int)(sizeof mine / sizeof mine[0]), 7u << 13);
}

static llmc_status run(loop *L) {
    llmc_checkpoint_info info = {0};
    llmc_status st = check_options(L);
    if (st == LLMC_OK) st = open_data(L);
    if (st == LLMC_OK) st = resume(L, &info);
    if (st == LLMC_OK) st = check_model(L);
    const int first = info.step;
    if (st == LLMC_OK) st = open_log(L, first);
    if (st == LLMC_OK) st = open_teacher(L, first);
    if (st == LLMC_OK && L->t->opts.keep_zeros)
        st = note(L, first, "keep_zeros: matmul weights that are exactly 0 now stay 0 (a mask of their zeros)");
    st = llmc_train_agree(L->t, st, NULL); /* a rank that cannot start stops them all, named */
    if (st == LLMC_OK) st = same_settings(L, first);
    if (st != LLMC_OK) return st;
    L->started = now_seconds();
    if (first > 0 && L->rank == 0) { /* a run killed after the state file: its marker, and its retention, now */
        st = llmc_checkpoint_mark_done(L->t, L->o->out_dir, first);
        if (st != LLMC_OK) return st;
        prune_checkpoints(L, first);
    }
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
            const int lead = L->rank == 0; /* samples and memory notes: rank 0's alone */
            if (st == LLMC_OK && L->eval && due(o->val_every, step, last)) st = eval_mc(L, step);
            if (st == LLMC_OK && lead && step > 0 && o->gen_len > 0 && due(o->sample_every, step, last))
                st = sample(L, step);
            st = llmc_train_agree(L->t, st, NULL);
            if (st == LLMC_OK && o->out_dir && step > 0 && due(o->ckpt_every, step, last)) st = save_checkpoint(L, step);
            if (st == LLMC_OK && lead && step > 0 && due(o->log_device_every, step, last)) st = log_device(L, step);
        }
        int stop = L->stop; /* what one rank's caller asks, every rank does */
        st = llmc_train_agree(L->t, st, &stop);
        L->stop = stop;
        if (st != LLMC_OK || last) break;
        if (o->stop_after > 0 && step >= o->stop_after && step > first)
            return note(L, step, "stopped after step %d of %d (--stop-after)", step, L->max_steps);
        if (L->stop) return llmc_train_fail(L->t, LLMC_ERR_STOPPED, "training stopped by the caller at step %d", step);
        st = train_step(L, step);
        if (st == LLMC_OK && step == first && L->max_steps - first > 10) st = estimate(L, step + 1);
    }
    return st;
}

llmc_status llmc_train_run(llmc_train *t, const llmc_loop_options *o, llmc_event_fn fn, void *user) {
    if (!t->m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer is not attached to a model");
    llmc_loop_options defaults;
    llmc_loop_options_default(&defaults, llmc_model_backend(t->m));
    loop L = {.t = t, .o = o ? o : &defaults, .fn = fn, .user = user};
    t->err[0] = '\0';
    t->failure_agreed = 0;
    llmc_status st = run(&L);
    if (L.teacher) { /* the run's teacher: unset before its model goes */
        llmc_train_set_teacher(t, NULL, 0.0f, 0.0f);
        llmc_model_free(L.teacher);
    }
    llmc_dataloader_free(L.train);
    llmc_dataloader_free(L.val);
    llmc_mc_eval_free(L.eval);
    llmc_run_log_close(&L.log);
    free(L.inputs);
    free(L.targets);
    free(L.fixed_inputs);
    free(L.fixed_targets);
    return st;
}

/*
 * trainer.c — the training loop behind ./train_gpt2 and ./train_gpt2cu.
 *
 * Flags follow llm.c's train_gpt2cu so scripts carry over. Every 0 that could
 * divide or take a modulo means "off". Progress goes to stdout; <out>/main.log
 * gets one JSON object per line (steps, val losses, checkpoints).
 */
#define _POSIX_C_SOURCE 200809L
#include "trainer.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "cli.h"
#include "llmc.h"
#include "rng.h"

typedef struct train_args {
    const char *train_pattern, *val_pattern, *init, *out_dir, *backend, *tokenizer, *schedule;
    int B, T, total_batch, max_steps;
    float lr, final_frac, weight_decay, grad_clip, peak_tflops;
    int warmup, val_every, val_batches, sample_every, gen_len, ckpt_every, resume;
    int recompute, master_weights, shuffle, device;
    uint64_t seed;
} train_args;

typedef struct trainer {
    train_args a;
    llmc_model *model;
    llmc_dataloader *train, *val;
    llmc_tokenizer *tok;
    FILE *log;
    int *inputs, *targets;
    int accum;
    uint64_t rng;
    double flops_per_token;
} trainer;

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ------------------------------------------------------------------ setup */

static int open_model(trainer *t, llmc_train_state *st) {
    llmc_model_options o;
    llmc_model_options_default(&o);
    o.backend = t->a.backend;
    o.device = t->a.device;
    o.recompute = t->a.recompute;
    o.master_weights = t->a.master_weights;
    t->model = llmc_model_new();
    if (!t->model) return fail("out of memory");
    memset(st, 0, sizeof *st);
    if (t->a.resume) {
        if (!t->a.out_dir) return fail("-y 1 (resume) needs an output directory (-o) holding checkpoints");
        int latest = llmc_checkpoint_latest(t->a.out_dir);
        if (latest >= 0) {
            if (llmc_checkpoint_load(t->model, &o, t->a.out_dir, latest, st) != LLMC_OK)
                return fail("resume: %s", llmc_model_error(t->model));
            printf("resumed from %s at step %d\n", t->a.out_dir, st->step);
            return 0;
        }
        printf("no checkpoint in %s yet: starting from -e %s\n", t->a.out_dir, t->a.init);
    }
    llmc_status s;
    if (file_exists(t->a.init)) {
        s = llmc_model_load(t->model, &o, t->a.init);
    } else {
        llmc_config cfg;
        char err[LLMC_ERR_LEN];
        if (llmc_config_from_descriptor(t->a.init, &cfg, err, sizeof err) != LLMC_OK)
            return fail("-e '%s' is neither an existing model file nor a model descriptor: %s", t->a.init, err);
        s = llmc_model_init_random(t->model, &o, &cfg, t->a.seed);
    }
    if (s != LLMC_OK) return fail("%s", llmc_model_error(t->model));
    st->rng = llmc_rng_seed(t->a.seed ^ 0x5A5A5A5Aull);
    return 0;
}

/* The tokenizer file sits next to the data (prepare.py writes it) unless given. */
static void open_tokenizer(trainer *t) {
    char path[4096], err[LLMC_ERR_LEN];
    if (t->a.tokenizer) {
        snprintf(path, sizeof path, "%s", t->a.tokenizer);
    } else {
        snprintf(path, sizeof path, "%s", t->a.train_pattern);
        char *slash = strrchr(path, '/');
        if (slash) snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "gpt2_tokenizer.bin");
        else snprintf(path, sizeof path, "gpt2_tokenizer.bin");
    }
    if (t->a.sample_every <= 0) return;
    t->tok = llmc_tokenizer_open(path, err, sizeof err);
    if (!t->tok) printf("note: no tokenizer (%s); samples print token ids\n", err);
}

static int check_args(trainer *t) {
    train_args *a = &t->a;
    const llmc_config *c = llmc_model_config(t->model);
    if (a->B <= 0 || a->T <= 0) return fail("batch size -b %d and sequence length -t %d must be >= 1", a->B, a->T);
    if (a->T > c->max_seq_len)
        return fail("-t %d is longer than the model's maximum context of %d tokens", a->T, c->max_seq_len);
    int bt = a->B * a->T;
    if (a->total_batch <= 0) a->total_batch = bt;
    if (a->total_batch % bt != 0)
        return fail("total batch -d %d tokens must be a multiple of B*T = %d", a->total_batch, bt);
    t->accum = a->total_batch / bt;
    /* 6N per token for the matmuls, plus attention's 6*L*T*C (forward+backward, causal) */
    t->flops_per_token = 6.0 * (double)llmc_model_num_params(t->model) + 6.0 * c->num_layers * (double)a->T * c->channels;
    return 0;
}

static int open_data(trainer *t) {
    t->train = llmc_dataloader_open(t->a.train_pattern, t->a.B, t->a.T, t->a.shuffle, t->a.seed);
    if (!t->train || llmc_dataloader_error(t->train))
        return fail("train data: %s", t->train ? llmc_dataloader_error(t->train) : "out of memory");
    if (t->a.val_pattern && t->a.val_every > 0) {
        t->val = llmc_dataloader_open(t->a.val_pattern, t->a.B, t->a.T, 0, 0);
        if (!t->val || llmc_dataloader_error(t->val))
            return fail("val data: %s", t->val ? llmc_dataloader_error(t->val) : "out of memory");
    }
    if (t->a.max_steps < 0) { /* one epoch */
        size_t per_epoch = llmc_dataloader_num_batches(t->train) / (size_t)t->accum;
        t->a.max_steps = per_epoch > 0 ? (int)per_epoch : 1;
    }
    size_t n = (size_t)t->a.B * t->a.T;
    t->inputs = malloc(n * sizeof(int));
    t->targets = malloc(n * sizeof(int));
    if (!t->inputs || !t->targets) return fail("out of memory");
    return 0;
}

/* mkdir -p: creates every missing parent of dir. */
static int make_dirs(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static int open_log(trainer *t) {
    if (!t->a.out_dir) return 0;
    if (make_dirs(t->a.out_dir) != 0)
        return fail("cannot create output directory '%s': %s", t->a.out_dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/main.log", t->a.out_dir);
    t->log = fopen(path, "a");
    if (!t->log) return fail("cannot open '%s': %s", path, strerror(errno));
    return 0;
}

/* ------------------------------------------------------------------ periodic work */

static int eval_val(trainer *t, int step) {
    int batches = t->a.val_batches > 0 ? t->a.val_batches : (int)llmc_dataloader_num_batches(t->val);
    llmc_dataloader_reset(t->val);
    double sum = 0.0;
    for (int i = 0; i < batches; i++) {
        if (llmc_dataloader_next(t->val, t->inputs, t->targets) != LLMC_OK)
            return fail("val data: %s", llmc_dataloader_error(t->val));
        if (llmc_model_forward(t->model, t->inputs, t->targets, t->a.B, t->a.T) != LLMC_OK)
            return fail("%s", llmc_model_error(t->model));
        sum += llmc_model_loss(t->model);
    }
    float loss = (float)(sum / batches);
    printf("val loss %.6f (step %d, %d batches)\n", loss, step, batches);
    if (t->log) fprintf(t->log, "{\"step\": %d, \"val_loss\": %.6f}\n", step, loss), fflush(t->log);
    return 0;
}

static void print_token(const trainer *t, int token) {
    int len = 0;
    const char *s = t->tok ? llmc_tokenizer_decode(t->tok, token, &len) : NULL;
    if (s) fwrite(s, 1, (size_t)len, stdout);
    else printf("[%d]", token);
}

static int sample(trainer *t) {
    const int eot = t->tok ? llmc_tokenizer_eot(t->tok) : 50256;
    int prompt = eot < llmc_model_config(t->model)->vocab_size ? eot : 0, len = 1, out, alive = 1;
    llmc_sampling s;
    llmc_sampling_default(&s);
    s.seed = llmc_rng_u32(&t->rng);
    if (llmc_gen_begin(t->model, &prompt, &len, 1, t->a.gen_len, &s, eot) != LLMC_OK)
        return fail("sampling: %s", llmc_model_error(t->model));
    printf("generating:\n---\n");
    while (alive > 0) {
        if (llmc_gen_next(t->model, &out, &alive) != LLMC_OK) return fail("sampling: %s", llmc_model_error(t->model));
        if (out >= 0 && out != eot) print_token(t, out);
        fflush(stdout);
    }
    printf("\n---\n");
    llmc_gen_end(t->model);
    return 0;
}

static int save_checkpoint(trainer *t, int step) {
    llmc_train_state st = {.step = step, .rng = t->rng, .data = llmc_dataloader_tell(t->train)};
    if (llmc_checkpoint_save(t->model, t->a.out_dir, &st) != LLMC_OK)
        return fail("checkpoint: %s", llmc_model_error(t->model));
    printf("saved checkpoint %s/model_%08d.bin\n", t->a.out_dir, step);
    if (t->log) fprintf(t->log, "{\"step\": %d, \"checkpoint\": \"model_%08d.bin\"}\n", step, step), fflush(t->log);
    return 0;
}

static int due(int every, int step, int last) { return every > 0 && (step % every == 0 || last); }

/* ------------------------------------------------------------------ the loop */

static int train_step(trainer *t, int step, const llmc_schedule *sched) {
    double t0 = now_seconds();
    if (llmc_model_zero_grad(t->model) != LLMC_OK) return fail("%s", llmc_model_error(t->model));
    double loss_sum = 0.0;
    for (int micro = 0; micro < t->accum; micro++) {
        if (llmc_dataloader_next(t->train, t->inputs, t->targets) != LLMC_OK)
            return fail("train data: %s", llmc_dataloader_error(t->train));
        float loss;
        if (llmc_model_forward_backward(t->model, t->inputs, t->targets, t->a.B, t->a.T, 1.0f / t->accum, &loss) !=
            LLMC_OK)
            return fail("%s", llmc_model_error(t->model));
        loss_sum += loss;
    }
    float loss = (float)(loss_sum / t->accum), norm = 0.0f;
    if (!isfinite(loss)) return fail("the training loss is %f at step %d: stopping (try a lower -l)", loss, step + 1);
    llmc_adamw opt;
    llmc_adamw_default(&opt);
    opt.lr = llmc_schedule_lr(sched, step);
    opt.weight_decay = t->a.weight_decay;
    opt.grad_clip = t->a.grad_clip;
    if (llmc_model_step(t->model, &opt, &norm) != LLMC_OK) return fail("%s", llmc_model_error(t->model));
    double dt = now_seconds() - t0, tok_s = (double)t->a.total_batch / dt;
    printf("step %5d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s", step + 1, t->a.max_steps, loss,
           opt.lr, norm, 1e3 * dt, tok_s);
    double mfu = t->a.peak_tflops > 0 ? 100.0 * tok_s * t->flops_per_token / (1e12 * t->a.peak_tflops) : 0.0;
    if (mfu > 0) printf(" | MFU %.1f%%", mfu);
    printf("\n");
    fflush(stdout);
    if (t->log)
        fprintf(t->log,
                "{\"step\": %d, \"train_loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"ms\": %.3f, \"tok_s\": %.1f}\n",
                step + 1, loss, opt.lr, norm, 1e3 * dt, tok_s),
            fflush(t->log);
    return 0;
}

static int run(trainer *t) {
    llmc_train_state st;
    if (open_model(t, &st) || check_args(t) || open_data(t) || open_log(t)) return 1;
    open_tokenizer(t);
    t->rng = st.rng;
    if (st.step > 0 && llmc_dataloader_seek(t->train, st.data) != LLMC_OK)
        return fail("resume: %s", llmc_dataloader_error(t->train));

    llmc_schedule sched = {.max_lr = t->a.lr, .warmup = t->a.warmup, .total = t->a.max_steps,
                           .final_frac = t->a.final_frac, .decay_frac = 0.0f};
    if (llmc_schedule_parse(t->a.schedule, &sched.kind) != LLMC_OK)
        return fail("unknown schedule -k '%s': use cosine, linear, constant or wsd", t->a.schedule);

    const llmc_config *c = llmc_model_config(t->model);
    printf("model: L=%d H=%d C=%d T=%d V=%d (%zu params) on %s\n", c->num_layers, c->num_heads, c->channels,
           c->max_seq_len, c->vocab_size, llmc_model_num_params(t->model), llmc_model_backend(t->model));
    printf("batch: B=%d T=%d, %d micro-steps for %d tokens per step, %d steps, %zu train tokens\n", t->a.B, t->a.T,
           t->accum, t->a.total_batch, t->a.max_steps, llmc_dataloader_num_tokens(t->train));

    for (int step = st.step; step <= t->a.max_steps; step++) {
        int last = step == t->a.max_steps, resumed_here = step == st.step && st.step > 0;
        if (!resumed_here) { /* the run we resume from already did this step's periodic work */
            if (t->val && due(t->a.val_every, step, last) && eval_val(t, step)) return 1;
            if (step > 0 && t->a.gen_len > 0 && due(t->a.sample_every, step, last) && sample(t)) return 1;
            if (t->a.out_dir && step > 0 && due(t->a.ckpt_every, step, last) && save_checkpoint(t, step)) return 1;
        }
        if (last) break;
        if (train_step(t, step, &sched)) return 1;
    }
    return 0;
}

static void trainer_free(trainer *t) {
    llmc_model_free(t->model);
    llmc_dataloader_free(t->train);
    llmc_dataloader_free(t->val);
    llmc_tokenizer_free(t->tok);
    if (t->log) fclose(t->log);
    free(t->inputs);
    free(t->targets);
}

int llmc_train_main(int argc, char **argv, const char *default_backend) {
    int gpu = strcmp(default_backend, "cuda") == 0;
    trainer t;
    memset(&t, 0, sizeof t);
    train_args *a = &t.a;
    *a = (train_args){
        .train_pattern = "data/shakespeare/shakespeare_train_*.bin",
        .val_pattern = "data/shakespeare/shakespeare_val_*.bin",
        .init = "d12", .backend = default_backend, .schedule = "cosine",
        .B = 4, .T = gpu ? 1024 : 64, .total_batch = -1, .max_steps = -1,
        .lr = 3e-4f, .final_frac = 1.0f, .weight_decay = 0.0f, .grad_clip = 1.0f, .peak_tflops = gpu ? 989.0f : 0.0f,
        .warmup = 0, .val_every = 20, .val_batches = 20, .sample_every = 20, .gen_len = 64,
        .ckpt_every = 0, .resume = 0, .recompute = 0, .master_weights = 1, .shuffle = 0, .seed = 1337,
    };
    const llmc_cli_option opts[] = {
        {'i', "train-data", LLMC_OPT_STRING, &a->train_pattern, "GLOB", "train token shards"},
        {'j', "val-data", LLMC_OPT_STRING, &a->val_pattern, "GLOB", "validation token shards"},
        {'e', "init", LLMC_OPT_STRING, &a->init, "FILE|DESC", "model file to start from, or d12/d24/d36/d48/L=..,H=..,C=.."},
        {'o', "out", LLMC_OPT_STRING, &a->out_dir, "DIR", "output dir for main.log and checkpoints"},
        {'b', "batch-size", LLMC_OPT_INT, &a->B, "N", "sequences per micro-batch"},
        {'t', "seq-len", LLMC_OPT_INT, &a->T, "N", "tokens per sequence"},
        {'d', "total-batch", LLMC_OPT_INT, &a->total_batch, "N", "tokens per optimizer step (<= 0: B*T); gradient accumulation"},
        {'x', "max-steps", LLMC_OPT_INT, &a->max_steps, "N", "optimizer steps (-1: one epoch)"},
        {'l', "lr", LLMC_OPT_FLOAT, &a->lr, "F", "peak learning rate"},
        {'u', "warmup", LLMC_OPT_INT, &a->warmup, "N", "linear warmup steps"},
        {'q', "final-lr-frac", LLMC_OPT_FLOAT, &a->final_frac, "F", "final lr as a fraction of the peak"},
        {'k', "schedule", LLMC_OPT_STRING, &a->schedule, "NAME", "lr schedule: cosine, linear, constant, wsd"},
        {'c', "weight-decay", LLMC_OPT_FLOAT, &a->weight_decay, "F", "AdamW weight decay (matrices only)"},
        {0, "grad-clip", LLMC_OPT_FLOAT, &a->grad_clip, "F", "clip the global grad norm (0: off)"},
        {'v', "val-every", LLMC_OPT_INT, &a->val_every, "N", "val loss every N steps (0: off)"},
        {'m', "val-batches", LLMC_OPT_INT, &a->val_batches, "N", "val batches per evaluation (0: whole val set)"},
        {'s', "sample-every", LLMC_OPT_INT, &a->sample_every, "N", "print a sample every N steps (0: off)"},
        {'g', "gen-len", LLMC_OPT_INT, &a->gen_len, "N", "tokens per sample"},
        {'n', "ckpt-every", LLMC_OPT_INT, &a->ckpt_every, "N", "checkpoint every N steps and at the end (0: off)"},
        {'y', "resume", LLMC_OPT_INT, &a->resume, "0|1", "resume from the latest checkpoint in -o"},
        {'r', "recompute", LLMC_OPT_INT, &a->recompute, "0|1|2", "recompute in backward: 1 GELU, 2 GELU+layernorm"},
        {'w', "master-weights", LLMC_OPT_INT, &a->master_weights, "0|1", "keep fp32 master weights (bf16 backends)"},
        {'z', "shuffle", LLMC_OPT_INT, &a->shuffle, "0|1", "shuffle shards and batches each epoch"},
        {0, "seed", LLMC_OPT_U64, &a->seed, "N", "seed for init, shuffling and sampling"},
        {0, "device", LLMC_OPT_STRING, &a->backend, "NAME", "backend: cpu or cuda"},
        {0, "gpu", LLMC_OPT_INT, &a->device, "N", "GPU index"},
        {0, "tokenizer", LLMC_OPT_STRING, &a->tokenizer, "FILE", "gpt2_tokenizer.bin for samples (default: next to -i)"},
        {0, "peak-tflops", LLMC_OPT_FLOAT, &a->peak_tflops, "F", "device peak for the MFU figure (0: off)"},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];
    char err[512];
    int rc = llmc_cli_parse(argc, argv, opts, nopts, stdout, err, sizeof err);
    if (rc == 1) {
        llmc_cli_usage(stdout, argv[0], gpu ? "Train GPT-2 on the GPU (bf16)." : "Train GPT-2 on the CPU (fp32).",
                       opts, nopts);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    rc = run(&t);
    trainer_free(&t);
    return rc;
}

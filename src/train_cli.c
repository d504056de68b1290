/*
 * train_cli.c — the command line of ./train_gpt2 and ./train_gpt2cu: flags in, events out.
 *
 * Every flag of llm.c's train_gpt2cu has its llm.c meaning, so its scripts carry over: knobs that
 * llmc makes unnecessary (-f, -ge) are accepted with a note, the multi-process flags refuse what
 * one process cannot do. The table below is both the parser and the help text. The training itself is llmc_train_run (train_loop.c), the same
 * loop Python's GPT2.train calls, with the same defaults (llmc_loop_options_default).
 */
#include "trainer.h"
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "cli.h"
#include "file_io.h"
#include "llmc.h"

typedef struct cli_args {
    llmc_loop_options loop;
    const char *init, *backend, *tokenizer;
    int recompute, master_weights, device, plot, prune_mask, fp8;
    llmc_config init_config; /* -e as a descriptor, for a resume to compare with */
    /* llm.c's flags that llmc takes for compatibility */
    int hellaswag, tf32, gelu_fusion, zero_stage;
    char eval_path[4200]; /* -h 1's default eval file in the cache */
    int num_processes, process_rank, gpus_per_node, engine_at_one, exact_accum, overlap;
    float comm_timeout;
    const char *init_method, *fs_path, *server_ip;
    char id_file[4200]; /* -pi fs: the NCCL id's file in -pf */
} cli_args;

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

/* The tokenizer file sits next to the data (prepare.py writes it) unless given. */
static llmc_tokenizer *open_tokenizer(const cli_args *a) {
    if (a->loop.sample_every <= 0 || a->loop.gen_len <= 0) return NULL;
    char path[4096];
    if (a->tokenizer) {
        snprintf(path, sizeof path, "%s", a->tokenizer);
    } else {
        snprintf(path, sizeof path, "%s", a->loop.train_data);
        char *slash = strrchr(path, '/');
        if (slash)
            snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "gpt2_tokenizer.bin");
        else
            snprintf(path, sizeof path, "gpt2_tokenizer.bin");
    }
    llmc_tokenizer *tok = llmc_tokenizer_new();
    if (tok && llmc_tokenizer_load(tok, path) == LLMC_OK) return tok;
    printf("note: no tokenizer (%s); samples print token ids\n", tok ? llmc_tokenizer_error(tok) : "out of memory");
    llmc_tokenizer_free(tok);
    return NULL;
}

/* -e names weights to load: a model file, or a directory (a Hugging Face model; llmc_model_load says
 * what a directory lacks). */
static int is_model_path(const char *p) {
    struct stat sb;
    return llmc_file_exists(p) || (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode));
}

/* Weights from -e (a model file, a Hugging Face directory or a descriptor), unless a resume will
 * load a checkpoint. */
static int init_model(llmc_model *m, cli_args *a) {
    llmc_model_options o;
    llmc_model_options_default(&o);
    o.backend = a->backend;
    o.device = a->device;
    int latest = -1;
    if (a->loop.resume && a->loop.out_dir) llmc_checkpoint_latest(a->loop.out_dir, &latest);
    llmc_status st;
    char err[LLMC_ERR_LEN];
    if (latest >= 0) { /* the checkpoint brings the model; -e only says what the caller expected */
        if (!is_model_path(a->init) && llmc_config_from_descriptor(a->init, &a->init_config, err, sizeof err) != LLMC_OK)
            memset(&a->init_config, 0, sizeof a->init_config);
        st = llmc_model_open(m, &o);
    } else if (is_model_path(a->init)) {
        st = llmc_model_load(m, &o, a->init);
    } else {
        if (llmc_config_from_descriptor(a->init, &a->init_config, err, sizeof err) != LLMC_OK)
            return fail("-e '%s' is neither an existing model file nor a model descriptor: %s", a->init, err);
        st = llmc_model_init_random(m, &o, &a->init_config, a->loop.seed);
    }
    return st == LLMC_OK ? 0 : fail("%s", llmc_model_error(m));
}

/* Who this process is in the run: -pn/-pr (llm.c's), else what mpirun, torchrun or slurm set;
 * how the ranks meet (-pi: mpi, tcp, fs). The GPU is the local rank's unless --gpu names one.
 * Ranks other than 0 print nothing on stdout: their errors still go to stderr. */
static int comm_options(cli_args *a, llmc_comm_options *co) {
    llmc_comm_options_default(co);
    if (a->num_processes < 1 || a->process_rank < 0 || a->process_rank >= a->num_processes || a->gpus_per_node < 1)
        return fail("-pn %d -pr %d -pg %d: the rank must lie in [0, -pn) and -pg be >= 1", a->num_processes,
                    a->process_rank, a->gpus_per_node);
    if (a->num_processes > 1)
        *co = (llmc_comm_options){.world = a->num_processes, .rank = a->process_rank,
                                  .local_rank = a->process_rank % a->gpus_per_node, .timeout_s = co->timeout_s};
    char err[LLMC_ERR_LEN];
    if (llmc_comm_options_from_env(co, err, sizeof err) != LLMC_OK) return fail("%s", err);
    co->engine_at_one = a->engine_at_one;
    if (!(a->comm_timeout > 0)) return fail("--comm-timeout %g: seconds, > 0", (double)a->comm_timeout);
    co->timeout_s = a->comm_timeout;
    if (a->init_method && strcmp(a->init_method, "fs") == 0) {
        if (!*a->fs_path) return fail("-pi fs needs a directory every rank sees: -pf DIR");
        snprintf(a->id_file, sizeof a->id_file, "%s/llmc_nccl_id.bin", a->fs_path);
        co->init = "file";
        co->file = a->id_file;
    } else if (a->init_method && strcmp(a->init_method, "mpi") != 0 && strcmp(a->init_method, "tcp") != 0) {
        return fail("-pi '%s': use mpi, tcp or fs", a->init_method);
    } else {
        co->init = a->init_method;
    }
    if (*a->server_ip) co->addr = a->server_ip;
    if (a->device < 0) a->device = co->world > 1 ? co->local_rank : 0;
    if (co->rank != 0 && !freopen("/dev/null", "w", stdout)) return fail("rank %d: cannot silence stdout", co->rank);
    return 0;
}

/* llm.c's flags that tune what llmc does by itself: one line each, and an error where this run
 * cannot do what was asked. */
static int check_llmc_compat_flags(cli_args *a, const llmc_comm_options *co) {
    if (a->zero_stage < 0 || a->zero_stage > 1)
        return fail("-z %d: llmc has ZeRO stages 0 and 1 only", a->zero_stage);
    if (a->zero_stage == 1 && co->world == 1)
        printf("note: -z 1 (ZeRO-1) with one process: the optimizer state is not sharded\n");
    if (a->tf32 != 1) printf("note: -f %d ignored: llmc's GPU matmuls are bf16, there is no tf32 to switch\n", a->tf32);
    if (a->gelu_fusion != -1)
        printf("note: -ge %d ignored: llmc always fuses GELU into the matmul epilogues\n", a->gelu_fusion);
    return 0;
}

/* -h 1: HellaSwag at every val step, from --eval-file, else llm.c's prepared file, else the one
 * python -m llmc.eval hellaswag --export writes to the cache. Without -h 1 nothing is scored; with
 * no file found (or -v 0) a note says so and training goes on, as llm.c's does. */
static int choose_eval_file(cli_args *a) {
    if (!a->hellaswag) {
        if (a->loop.eval_file) printf("note: --eval-file %s is scored only with -h 1\n", a->loop.eval_file);
        a->loop.eval_file = NULL;
        return 0;
    }
    if (a->loop.val_every <= 0) {
        printf("note: -h %d scores HellaSwag at every val step, and -v 0 has none: no HellaSwag\n", a->hellaswag);
        a->loop.eval_file = NULL;
        return 0;
    }
    if (a->loop.eval_file) return 0; /* named: it must be there (the loop says so if not) */
    static const char llmc_c_path[] = "dev/data/hellaswag/hellaswag_val.bin"; /* read-only */
    const char *cache = getenv("LLMC_CACHE"), *home = getenv("HOME");
    if (cache && *cache)
        snprintf(a->eval_path, sizeof a->eval_path, "%s/hellaswag_val.bin", cache);
    else
        snprintf(a->eval_path, sizeof a->eval_path, "%s/.cache/llmc/hellaswag_val.bin", home ? home : ".");
    if (llmc_file_exists(llmc_c_path)) {
        a->loop.eval_file = llmc_c_path;
    } else if (llmc_file_exists(a->eval_path)) {
        a->loop.eval_file = a->eval_path;
    } else { /* as llm.c does: say so and train without it, so its scripts run unchanged */
        printf("note: -h %d: no HellaSwag eval file at %s (llm.c's) or %s; training without HellaSwag. Make one "
               "with python -m llmc.eval hellaswag --export %s, or pass --eval-file FILE\n",
               a->hellaswag, llmc_c_path, a->eval_path, a->eval_path);
    }
    return 0;
}

/* What the event printer needs: the tokenizer for samples, and --plot's state. */
typedef struct cli_view {
    const llmc_tokenizer *tok;
    const char *plot_dir; /* -o, when --plot 1 */
    pid_t plotting;       /* the plot drawing now, or 0 */
    int plot_warned;
} cli_view;

/* Reaps the last plot and says once if it failed (wait: block for it); 0 while it still draws. */
static int plot_done(cli_view *v, int wait) {
    if (v->plotting <= 0) return 1;
    int status = 0;
    const pid_t r = waitpid(v->plotting, &status, wait ? 0 : WNOHANG);
    if (r == 0) return 0;
    if ((r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) && !v->plot_warned) {
        printf("note: --plot: python -m llmc.plot failed (needs the llmc package and matplotlib; $LLMC_PYTHON "
               "names the interpreter)\n");
        v->plot_warned = 1;
    }
    v->plotting = 0;
    return 1;
}

/* --plot 1: after each val loss, python -m llmc.plot redraws DIR/curves.png from DIR/main.log in
 * the background. Training does not wait for it; a plot still drawing is left to finish. */
static void refresh_plot(cli_view *v) {
    if (!plot_done(v, 0)) return;
    extern char **environ;
    char log[4200], png[4200];
    snprintf(log, sizeof log, "%s/main.log", v->plot_dir);
    snprintf(png, sizeof png, "%s/curves.png", v->plot_dir);
    const char *py = getenv("LLMC_PYTHON");
    if (!py || !*py) py = "python3";
    char *argv[] = {(char *)py, "-m", "llmc.plot", log, "-o", png, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0); /* its "wrote ..." line */
    pid_t pid;
    if (posix_spawnp(&pid, py, &fa, NULL, argv, environ) == 0) {
        v->plotting = pid;
    } else if (!v->plot_warned) {
        printf("note: --plot: cannot run %s ($LLMC_PYTHON names the interpreter)\n", py);
        v->plot_warned = 1;
    }
    posix_spawn_file_actions_destroy(&fa);
}

static int print_event(const llmc_event *e, void *user) {
    cli_view *view = user;
    const llmc_tokenizer *tok = view->tok;
    switch (e->kind) {
    case LLMC_EVENT_START:
    case LLMC_EVENT_NOTE: printf("%s\n", e->text); break;
    case LLMC_EVENT_STEP: {
        printf("step %5d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s", e->step, e->max_steps, e->loss,
               e->lr, e->grad_norm, e->ms, e->tok_s);
        if (e->mfu > 0) printf(" | MFU %.1f%%", e->mfu);
        const long el = (long)e->elapsed_s, eta = (long)(e->eta_s + 0.5);
        printf(" | %ld:%02ld elapsed, ETA %ld:%02ld:%02ld", el / 60, el % 60, eta / 3600, eta / 60 % 60, eta % 60);
        if (e->skipped) printf(" | update skipped (z-score %.1f)", e->val_loss);
        printf("\n");
        break;
    }
    case LLMC_EVENT_VAL:
        printf("val loss %.6f (step %d, %d batches)\n", e->val_loss, e->step, e->ntokens);
        if (view->plot_dir) refresh_plot(view);
        break;
    case LLMC_EVENT_EVAL:
        printf("HellaSwag: acc_norm %.4f, acc %.4f (step %d, %d items)\n", e->val_loss, e->loss, e->step, e->ntokens);
        if (view->plot_dir) refresh_plot(view);
        break;
    case LLMC_EVENT_SAMPLE:
        printf("generating:\n---\n");
        for (int i = 0; i < e->ntokens; i++) {
            int len = 0;
            const char *s = tok ? llmc_tokenizer_decode(tok, e->tokens[i], &len) : NULL;
            if (s)
                fwrite(s, 1, (size_t)len, stdout);
            else
                printf("[%d]", e->tokens[i]);
        }
        printf("\n---\n");
        break;
    case LLMC_EVENT_CHECKPOINT: printf("saved checkpoint %s\n", e->text); break;
    }
    fflush(stdout);
    return 0;
}

static int run(cli_args *a) {
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_tokenizer *tok = NULL;
    int rc = 1;
    if (!m || !t) {
        fail("out of memory");
        goto done;
    }
    if (a->loop.resume && !a->loop.out_dir) {
        fail("-y 1 (resume) needs an output directory (-o) holding checkpoints");
        goto done;
    }
    if (a->plot && !a->loop.out_dir) {
        fail("--plot 1 draws DIR/curves.png from DIR/main.log: it needs an output directory (-o)");
        goto done;
    }
    llmc_comm_options co;
    if (comm_options(a, &co) || check_llmc_compat_flags(a, &co) || choose_eval_file(a) || init_model(m, a)) goto done;
    if (a->init_config.num_layers) a->loop.expect_model = &a->init_config;
    llmc_train_options to;
    llmc_train_options_default(&to);
    to.recompute = a->recompute;
    to.master_weights = a->master_weights;
    to.keep_zeros = a->prune_mask;
    to.zero_stage = a->zero_stage;
    to.exact_accum = a->exact_accum;
    to.overlap = a->overlap;
    to.fp8 = a->fp8;
    if (llmc_train_attach(t, m, &to) != LLMC_OK || llmc_train_open_comm(t, &co) != LLMC_OK) {
        fail("%s", llmc_train_error(t));
        goto done;
    }
    tok = open_tokenizer(a);
    if (tok && llmc_tokenizer_eot(tok) >= 0) a->loop.sample_eot = llmc_tokenizer_eot(tok);
    cli_view view = {.tok = tok, .plot_dir = a->plot ? a->loop.out_dir : NULL};
    rc = llmc_train_run(t, &a->loop, print_event, &view) == LLMC_OK ? 0 : fail("%s", llmc_train_error(t));
    plot_done(&view, 1); /* the last curves.png is whole when the trainer exits */
done:
    llmc_tokenizer_free(tok);
    llmc_train_free(t); /* before the model it refers to */
    llmc_model_free(m);
    llmc_comm_finalize();
    return rc;
}

int llmc_train_main(int argc, char **argv, const char *default_backend) {
    llmc_cli_openmp_defaults(argv);
    const int gpu = strcmp(default_backend, "cuda") == 0;
    cli_args args = {.init = "d12", .backend = default_backend, .master_weights = 1, .tf32 = 1, .gelu_fusion = -1,
                     .num_processes = 1, .gpus_per_node = 8, .init_method = NULL, .fs_path = "", .server_ip = "",
                     .device = -1, .overlap = 1, .comm_timeout = 300.0f};
    llmc_loop_options *o = &args.loop;
    llmc_loop_options_default(o, default_backend);
    const llmc_cli_option opts[] = {
        {"i", "train-data", LLMC_OPT_STRING, &o->train_data, "GLOB", "train token shards"},
        {"j", "val-data", LLMC_OPT_STRING, &o->val_data, "GLOB", "validation token shards"},
        {"e", "init", LLMC_OPT_STRING, &args.init, "FILE|DIR|DESC",
         "model file or Hugging Face directory to start from, or d12/d24/d36/d48/L=..,H=..,C=.."},
        {"o", "out", LLMC_OPT_STRING, &o->out_dir, "DIR", "output dir for main.log, main.jsonl and checkpoints"},
        {"b", "batch-size", LLMC_OPT_INT, &o->batch_size, "N", "sequences per micro-batch"},
        {"t", "seq-len", LLMC_OPT_INT, &o->seq_len, "N", "tokens per sequence"},
        {"d", "total-batch", LLMC_OPT_INT, &o->total_batch, "N", "tokens per optimizer step (<= 0: B*T); gradient accumulation"},
        {"x", "max-steps", LLMC_OPT_INT, &o->max_steps, "N", "optimizer steps (-1: one epoch)"},
        {"l", "lr", LLMC_OPT_FLOAT, &o->lr, "F", "peak learning rate"},
        {"u", "warmup", LLMC_OPT_INT, &o->warmup, "N", "linear warmup steps"},
        {"q", "final-lr-frac", LLMC_OPT_FLOAT, &o->final_lr_frac, "F", "final lr as a fraction of the peak"},
        {"k", "schedule", LLMC_OPT_STRING, &o->schedule, "NAME", "lr schedule: cosine, linear, constant, wsd"},
        {"c", "weight-decay", LLMC_OPT_FLOAT, &o->weight_decay, "F", "AdamW weight decay (matrices only)"},
        {"sl", "skip-loss-z", LLMC_OPT_FLOAT, &o->skip_loss_z, "F", "skip an update whose loss z-score exceeds F (0: off)"},
        {"sg", "skip-norm-z", LLMC_OPT_FLOAT, &o->skip_norm_z, "F", "skip an update whose grad-norm z-score exceeds F (0: off)"},
        {NULL, "grad-clip", LLMC_OPT_FLOAT, &o->grad_clip, "F", "clip the global grad norm (0: off)"},
        {"v", "val-every", LLMC_OPT_INT, &o->val_every, "N", "val loss every N steps (0: off)"},
        {"m", "val-batches", LLMC_OPT_INT, &o->val_batches, "N", "val batches per evaluation (0: whole val set)"},
        {"s", "sample-every", LLMC_OPT_INT, &o->sample_every, "N", "print a sample every N steps (0: off)"},
        {"g", "gen-len", LLMC_OPT_INT, &o->gen_len, "N", "tokens per sample"},
        {"h", "hellaswag", LLMC_OPT_INT, &args.hellaswag, "0|1", "HellaSwag accuracy at every val step (-v)"},
        {NULL, "eval-file", LLMC_OPT_STRING, &o->eval_file, "FILE", "the eval -h scores (llm.c's format; default: llm.c's or the cache's hellaswag_val.bin)"},
        {NULL, "eval-limit", LLMC_OPT_INT, &o->eval_limit, "N", "score only the eval's first N items (0: all)"},
        {"n", "ckpt-every", LLMC_OPT_INT, &o->ckpt_every, "N", "checkpoint every N steps and at the end (0: off)"},
        {"nk", "ckpt-keep", LLMC_OPT_INT, &o->ckpt_keep, "N", "keep only the N newest checkpoints (0: all)"},
        {"nm", "ckpt-major", LLMC_OPT_INT, &o->ckpt_major, "N", "checkpoints at multiples of N are never removed"},
        {"y", "resume", LLMC_OPT_INT, &o->resume, "0|1", "resume from the latest checkpoint in -o"},
        {"a", "overfit-batch", LLMC_OPT_INT, &o->overfit_batch, "0|1", "train on the first batch only (debugging)"},
        {"r", "recompute", LLMC_OPT_INT, &args.recompute, "0|1|2", "recompute in backward: 1 GELU, 2 GELU+layernorm"},
        {NULL, "fp8", LLMC_OPT_INT, &args.fp8, "0|1|2", "matmuls in fp8, E4M3 forward, E5M2 gradients (GPU, sm_89+): 1 the layers', 2 also the LM head"},
        {"w", "master-weights", LLMC_OPT_INT, &args.master_weights, "0|1", "keep fp32 master weights (bf16 backends)"},
        {"f", "tf32", LLMC_OPT_INT, &args.tf32, "0|1", "llm.c's tf32 switch (no effect: llmc computes in bf16)"},
        {"ge", "gelu-fusion", LLMC_OPT_INT, &args.gelu_fusion, "N", "llm.c's GELU fusion (no effect: always fused)"},
        {"z", "zero-stage", LLMC_OPT_INT, &args.zero_stage, "0|1", "ZeRO stage (optimizer sharding across processes)"},
        {"lg", "log-device", LLMC_OPT_INT, &o->log_device_every, "N", "log device memory every N steps (0: off)"},
        {"pn", "num-processes", LLMC_OPT_INT, &args.num_processes, "N", "processes, when no launcher (mpirun, torchrun, slurm) says"},
        {"pr", "process-rank", LLMC_OPT_INT, &args.process_rank, "N", "this process's rank, with -pn"},
        {"pg", "gpus-per-node", LLMC_OPT_INT, &args.gpus_per_node, "N", "GPUs per node: -pr's local rank is -pr mod N"},
        {"pi", "init-method", LLMC_OPT_STRING, &args.init_method, "NAME", "how ranks meet: mpi, tcp, fs (default: mpi under mpirun, else tcp)"},
        {"pf", "fs-path", LLMC_OPT_STRING, &args.fs_path, "DIR", "shared directory for -pi fs"},
        {"ps", "server-ip", LLMC_OPT_STRING, &args.server_ip, "ADDR", "rank 0's address for -pi tcp (default: MASTER_ADDR, else 127.0.0.1)"},
        {NULL, "exact-accum", LLMC_OPT_INT, &args.exact_accum, "0|1", "sum micro-steps as ranks are summed: 1 process = N processes, bit for bit (CPU)"},
        {NULL, "overlap", LLMC_OPT_INT, &args.overlap, "0|1", "sum each layer's gradients across ranks while the backward goes on"},
        {NULL, "comm-timeout", LLMC_OPT_FLOAT, &args.comm_timeout, "S", "seconds a rank waits for the others before it gives up (GPU)"},
        {NULL, "engine-at-one", LLMC_OPT_INT, &args.engine_at_one, "0|1", "one process goes through MPI/NCCL too (checks the engine)"},
        {NULL, "shuffle", LLMC_OPT_INT, &o->shuffle, "0|1", "shuffle shards and batches each epoch"},
        {NULL, "stop-after", LLMC_OPT_INT, &o->stop_after, "N", "stop after step N; the schedule still spans -x (0: off)"},
        {NULL, "seed", LLMC_OPT_U64, &o->seed, "N", "seed for init, shuffling and sampling"},
        {NULL, "device", LLMC_OPT_STRING, &args.backend, "NAME", "backend: cpu or cuda"},
        {NULL, "gpu", LLMC_OPT_INT, &args.device, "N", "GPU index (default: the local rank)"},
        {NULL, "tokenizer", LLMC_OPT_STRING, &args.tokenizer, "FILE", "gpt2_tokenizer.bin or tiktoken ranks file for samples (default: next to -i)"},
        {NULL, "peak-tflops", LLMC_OPT_FLOAT, &o->peak_tflops, "F", "device peak for the MFU figure (0: off)"},
        {NULL, "plot", LLMC_OPT_INT, &args.plot, "0|1", "redraw -o's curves.png (python -m llmc.plot) at every val loss"},
        {NULL, "prune-mask", LLMC_OPT_INT, &args.prune_mask, "0|1", "matmul weights that are exactly 0 stay 0 (fine-tuning a pruned model)"},
        {NULL, "teacher", LLMC_OPT_STRING, &o->teacher, "FILE", "distill from this model file (same vocabulary, forward only)"},
        {NULL, "distill-alpha", LLMC_OPT_FLOAT, &o->distill_alpha, "F", "weight of the CE on the targets, in [0, 1] (-1: 0.5)"},
        {NULL, "distill-temperature", LLMC_OPT_FLOAT, &o->distill_temperature, "F", "distillation softmax temperature > 0 (-1: 2)"},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];
    char err[512];
    int rc = llmc_cli_parse(argc, argv, opts, nopts, stdout, err, sizeof err);
    if (rc == 1) {
        llmc_cli_usage(stdout, argv[0], gpu ? "Train GPT-2 on the GPU (bf16)." : "Train GPT-2 on the CPU (fp32).", opts,
                       nopts);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    return run(&args);
}

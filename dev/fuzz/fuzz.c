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
 * Adding a format (quantized models): a seed writer and the header slots worth setting to
 * extremes (fuzz_seed.c), a child that drives the API (fuzz_child.c, or beside its seeds), and a
 * row in FORMATS (fuzz_seed.c). fuzz.h lists the files.
 */
#include "fuzz.h"

const char *const OUTCOME[NOUT] = {"ok", "error", "poison", "bad", "blowup", "hang", "crash"};

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

double now(void) {
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

void remove_workdir(const char *dir) {
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


/*
 * comm.c — the communicator: who the ranks are, how they agree, and the sums they share.
 *
 * The engines (MPI, NCCL) only move bytes. What makes a distributed run trustworthy lives here,
 * once for both: every collective phase starts with an agreement, so that a rank that failed
 * (a bad shard, a NaN, out of memory) is named on every rank instead of leaving the others
 * waiting; and host values (losses, norms) are summed in rank order, so that every rank gets the
 * same bits and a run on N ranks adds its numbers in the order one rank would.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "comm.h"

LLMC_DEFINE_FAIL(, llmc_comm_fail, llmc_comm)

void llmc_comm_options_default(llmc_comm_options *o) {
    memset(o, 0, sizeof *o);
    o->timeout_s = 300.0;
}

int llmc_comm_under_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("MPI_LOCALNRANKS");
}

/* A non-negative int from the environment variable name: 1 with *v set, 0 when unset, -1 when
 * it is not a number. */
static int env_int(const char *name, int *v) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end || x < 0 || x > INT_MAX) return -1;
    *v = (int)x;
    return 1;
}

typedef struct launcher {
    const char *name, *world, *rank, *local;
} launcher;

llmc_status llmc_comm_options_from_env(llmc_comm_options *o, char *err, size_t errlen) {
    if (o->world > 0) {
        if (o->rank < 0 || o->rank >= o->world || o->local_rank < 0) {
            snprintf(err, errlen, "rank %d (local rank %d) does not fit a world of %d processes", o->rank,
                     o->local_rank, o->world);
            return LLMC_ERR_INVALID_ARG;
        }
        return LLMC_OK;
    }
    static const launcher launchers[] = {
        {"mpirun (OpenMPI)", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"mpirun (MPICH)", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"},
        {"torchrun", "WORLD_SIZE", "RANK", "LOCAL_RANK"},
        {"slurm", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"},
    };
    o->world = 1, o->rank = 0, o->local_rank = 0;
    for (size_t i = 0; i < sizeof launchers / sizeof launchers[0]; i++) {
        const launcher *l = &launchers[i];
        int world = 0, rank = -1, local = 0;
        const int w = env_int(l->world, &world), r = env_int(l->rank, &rank), lr = env_int(l->local, &local);
        if (w == 0) continue;
        if (w < 0 || r < 0 || lr < 0 || world < 1) {
            snprintf(err, errlen, "%s's variables %s=%s %s=%s %s=%s are not numbers", l->name, l->world,
                     getenv(l->world), l->rank, getenv(l->rank) ? getenv(l->rank) : "", l->local,
                     getenv(l->local) ? getenv(l->local) : "");
            return LLMC_ERR_INVALID_ARG;
        }
        if (r == 0 || rank >= world) {
            snprintf(err, errlen, "%s set %s=%d but %s=%s: the rank must lie in [0, %d)", l->name, l->world, world,
                     l->rank, r == 0 ? "(unset)" : getenv(l->rank), world);
            return LLMC_ERR_INVALID_ARG;
        }
        o->world = world, o->rank = rank, o->local_rank = local;
        break;
    }
    return LLMC_OK;
}

size_t llmc_comm_shard_size(size_t n, int world) {
    const size_t w = world > 0 ? (size_t)world : 1, s = (n + w - 1) / w;
    return (s + 63) & ~(size_t)63;
}

/* ------------------------------------------------------------------ lifecycle */

/* What the engine needs beyond the options: where rank 0 is, and how the ranks meet. */
static llmc_comm_options resolved(const llmc_comm_options *o) {
    llmc_comm_options r = *o;
    if (!r.init) r.init = llmc_comm_under_mpirun() ? "mpi" : "tcp";
    if (!r.addr) r.addr = getenv("MASTER_ADDR") && *getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1";
    if (r.port == 0) { /* torchrun's own store holds MASTER_PORT: the id travels one port up */
        int p = 0;
        r.port = env_int("MASTER_PORT", &p) == 1 && p < 65535 ? p + 1 : 29501;
    }
    if (!(r.timeout_s > 0)) r.timeout_s = 300.0;
    return r;
}

llmc_status llmc_comm_open(llmc_comm **out, llmc_device *dev, const char *backend, const llmc_comm_options *o,
                           char *err, size_t errlen) {
    *out = NULL;
    llmc_comm_options opts;
    if (o) opts = *o;
    else llmc_comm_options_default(&opts);
    llmc_status st = llmc_comm_options_from_env(&opts, err, errlen);
    if (st != LLMC_OK) return st;
    const int cpu = strcmp(backend, "cpu") == 0, talks = opts.world > 1 || opts.engine_at_one;
    if (cpu && talks && ((opts.init && strcmp(opts.init, "mpi") != 0) || (opts.world > 1 && !llmc_comm_under_mpirun()))) {
        snprintf(err, errlen, "rank %d of %d: the CPU backend's ranks talk over MPI: launch with mpirun (tcp and fs "
                 "are the GPU backend's ways to meet)", opts.rank, opts.world);
        return LLMC_ERR_INVALID_ARG;
    }
    if (cpu) opts.init = "mpi";
    opts = resolved(&opts);
    if (strcmp(opts.init, "mpi") != 0 && strcmp(opts.init, "tcp") != 0 && strcmp(opts.init, "file") != 0) {
        snprintf(err, errlen, "unknown init method '%s': use mpi, tcp or file", opts.init);
        return LLMC_ERR_INVALID_ARG;
    }
    if (strcmp(opts.init, "file") == 0 && (!opts.file || !*opts.file) && talks) {
        snprintf(err, errlen, "init method 'file' needs a path on a filesystem every rank sees");
        return LLMC_ERR_INVALID_ARG;
    }
    llmc_comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory for the communicator");
        return LLMC_ERR_OUT_OF_MEMORY;
    }
    c->world = opts.world, c->rank = opts.rank, c->local_rank = opts.local_rank;
    c->timeout_s = opts.timeout_s;
    c->dev = dev;
    if (talks) {
        const char *why = "";
        c->engine = llmc_comm_engine_for(backend, &why);
        if (!c->engine) {
            snprintf(err, errlen, "rank %d of %d: %s", c->rank, c->world, why);
            free(c);
            return LLMC_ERR_UNSUPPORTED;
        }
        st = c->engine->open(c, &opts);
        if (st != LLMC_OK) {
            snprintf(err, errlen, "%s", c->err);
            free(c);
            return st;
        }
    }
    *out = c;
    return LLMC_OK;
}

void llmc_comm_close(llmc_comm *c) {
    if (!c) return;
    if (c->engine) c->engine->close(c);
    free(c);
}

/* ------------------------------------------------------------------ collectives */

llmc_status llmc_comm_reduce_scatter(llmc_comm *c, void *buf, size_t shard, llmc_dtype dtype) {
    return c && c->engine ? c->engine->reduce_scatter(c, buf, shard, dtype) : LLMC_OK;
}

llmc_status llmc_comm_all_gather(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    return c && c->engine ? c->engine->all_gather(c, buf, n, shard, dtype) : LLMC_OK;
}

llmc_status llmc_comm_all_reduce(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    return c && c->engine ? c->engine->all_reduce(c, buf, n, shard, dtype) : LLMC_OK;
}

llmc_status llmc_comm_broadcast(llmc_comm *c, void *buf, size_t bytes, int root) {
    return c && c->engine ? c->engine->broadcast(c, buf, bytes, root) : LLMC_OK;
}

llmc_status llmc_comm_sync(llmc_comm *c) {
    return c && c->engine && c->engine->sync ? c->engine->sync(c) : LLMC_OK;
}

llmc_status llmc_comm_reduce_ranges(llmc_comm *c, void *buf, const llmc_comm_range *ranges, int n, llmc_dtype dtype) {
    return c && c->engine ? c->engine->reduce_ranges(c, buf, ranges, n, dtype) : LLMC_OK;
}

llmc_status llmc_comm_fork(llmc_comm *c) { return c && c->engine && c->engine->fork ? c->engine->fork(c) : LLMC_OK; }
llmc_status llmc_comm_join(llmc_comm *c) { return c && c->engine && c->engine->join ? c->engine->join(c) : LLMC_OK; }

/* What each rank brings to an agreement. */
typedef struct vote {
    int32_t status, stop;
    char message[LLMC_ERR_LEN];
} vote;

llmc_status llmc_comm_agree(llmc_comm *c, llmc_status mine, const char *message, int *stop) {
    if (!c || !c->engine) return mine;
    vote v = {.status = (int32_t)mine, .stop = stop ? *stop : 0};
    snprintf(v.message, sizeof v.message, "%s", mine != LLMC_OK && message ? message : "");
    vote *all = malloc((size_t)c->world * sizeof *all);
    if (!all) return llmc_comm_fail(c, LLMC_ERR_OUT_OF_MEMORY, "rank %d: out of memory for an agreement", c->rank);
    llmc_status st = c->engine->host_all_gather(c, &v, all, sizeof v);
    if (st == LLMC_OK) {
        int any_stop = 0;
        for (int r = c->world - 1; r >= 0; r--) {
            any_stop |= all[r].stop;
            if (all[r].status == LLMC_OK) continue;
            all[r].message[sizeof all[r].message - 1] = '\0';
            st = (llmc_status)all[r].status;
            snprintf(c->err, sizeof c->err, "rank %d: %.480s", r, all[r].message);
        }
        if (stop) *stop = any_stop;
    }
    free(all);
    return st;
}

llmc_status llmc_comm_sum_doubles(llmc_comm *c, double *v, int n) {
    if (!c || !c->engine || n <= 0) return LLMC_OK;
    double *all = malloc((size_t)c->world * (size_t)n * sizeof *all);
    if (!all) return llmc_comm_fail(c, LLMC_ERR_OUT_OF_MEMORY, "rank %d: out of memory for a sum", c->rank);
    llmc_status st = c->engine->host_all_gather(c, v, all, (size_t)n * sizeof *v);
    for (int i = 0; st == LLMC_OK && i < n; i++) {
        double s = all[i];
        for (int r = 1; r < c->world; r++) s += all[(size_t)r * n + i];
        v[i] = s;
    }
    free(all);
    return st;
}

llmc_status llmc_comm_gather_i64(llmc_comm *c, const int64_t *mine, int64_t *all, int n) {
    if (!c || !c->engine) {
        memcpy(all, mine, (size_t)n * sizeof *mine);
        return LLMC_OK;
    }
    return c->engine->host_all_gather(c, mine, all, (size_t)n * sizeof *mine);
}

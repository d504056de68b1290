/*
 * comm.h — the communicator of a data-parallel run, and the engines behind it.
 *
 * comm.c owns the object and the parts every engine shares (who fails, rank-ordered sums of host
 * values, shard arithmetic); an engine moves buffers between ranks: MPI for the CPU backend
 * (comm_mpi.c), NCCL for the CUDA one (cuda/comm_nccl.cu). A world of one has no engine and
 * every operation is a no-op, so a single-process run pays nothing.
 *
 * Buffers are the backend's memory (host for the CPU, device for CUDA) unless named host_.
 * Collectives are called by every rank in the same order with the same sizes.
 */
#ifndef LLMC_COMM_H
#define LLMC_COMM_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llmc_comm llmc_comm;

/* A range of a buffer and the rank its sum goes to. */
typedef struct llmc_comm_range {
    size_t offset, count; /* elements */
    int root;
} llmc_comm_range;

typedef struct llmc_comm_engine {
    const char *name;
    /* Joins the world of c->rank / c->world on c->dev; on failure a message in c->err. */
    llmc_status (*open)(llmc_comm *c, const llmc_comm_options *o);
    void (*close)(llmc_comm *c);
    /* buf holds world * shard elements: afterwards rank r's [r*shard, (r+1)*shard) is the sum over
     * ranks (the rest of buf is undefined). */
    llmc_status (*reduce_scatter)(llmc_comm *c, void *buf, size_t shard, llmc_dtype dtype);
    /* buf holds n elements; rank r's [r*shard, min(n, (r+1)*shard)) reaches every rank. */
    llmc_status (*all_gather)(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype);
    /* The sum over ranks of all n elements (buf has room for world * shard >= n). */
    llmc_status (*all_reduce)(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype);
    /* bytes of root's buf into every rank's buf. */
    llmc_status (*broadcast)(llmc_comm *c, void *buf, size_t bytes, int root);
    /* Host memory: every rank's `bytes` of mine, in rank order, into all (world * bytes) on every rank. */
    llmc_status (*host_all_gather)(llmc_comm *c, const void *mine, void *all, size_t bytes);
    /* Waits, at most c->timeout_s, for the collectives queued so far (NULL: they are done on return).
     * The host waits through this before anything else waits on their results, so that a rank
     * that died mid-collective ends the others with a message instead of a hang. */
    llmc_status (*sync)(llmc_comm *c);
    /* For each of n ranges of buf: the sum over ranks lands on the range's root (the other ranks'
     * copies are left as they were). Summed in rank order where the engine can. */
    llmc_status (*reduce_ranges)(llmc_comm *c, void *buf, const llmc_comm_range *ranges, int n, llmc_dtype dtype);
    /* Optional (NULL: collectives run where they are queued). fork: the collectives queued next run
     * on the engine's own stream, once the device's work so far is done, while the device goes on;
     * join: the device's later work waits for them, and collectives are queued in line again. */
    llmc_status (*fork)(llmc_comm *c);
    llmc_status (*join)(llmc_comm *c);
} llmc_comm_engine;
/* An engine's open cleans up after itself when it fails: close is called only after a successful open. */

struct llmc_comm {
    char err[LLMC_ERR_LEN];
    int world, rank, local_rank;
    double timeout_s;
    llmc_device *dev;
    const llmc_comm_engine *engine; /* NULL: a world of one */
    void *impl;                     /* the engine's state */
};

/* The engine for a backend ("cpu": MPI, "cuda": NCCL), NULL when this build has none; why names
 * what is missing. Defined by registry.c (NCCL) and comm_mpi.c (MPI). */
const llmc_comm_engine *llmc_comm_engine_for(const char *backend, const char **why);
const llmc_comm_engine *llmc_comm_mpi_engine(void);
#ifdef LLMC_WITH_NCCL
const llmc_comm_engine *llmc_comm_nccl_engine(void);
#endif
/* MPI as a meeting place for NCCL (-pi mpi): rank 0's bytes of blob to every rank. LLMC_ERR_UNSUPPORTED
 * in a build without MPI. Starts MPI when it is not running. */
llmc_status llmc_mpi_broadcast_blob(void *blob, size_t bytes, char *err, size_t errlen);
/* 1 when the process was started by an MPI launcher (its variables are set). */
int llmc_comm_under_mpirun(void);

/* Opens a communicator for dev (NULL on out of memory; check llmc_comm_error otherwise). */
llmc_status llmc_comm_open(llmc_comm **out, llmc_device *dev, const char *backend, const llmc_comm_options *o,
                           char *err, size_t errlen);
void llmc_comm_close(llmc_comm *c);
llmc_status llmc_comm_fail(llmc_comm *c, llmc_status code, const char *fmt, ...);

/* Elements per rank when n are split over the world: ceil(n / world) rounded up to 64, so that every
 * shard starts 256-byte aligned; the last shards may be short or empty. */
size_t llmc_comm_shard_size(size_t n, int world);

/* The agreement every rank reaches before a collective phase: each passes its own status (and its
 * message); when any failed, every rank returns the first failure's code with "rank R: message" in
 * err. stop: in, this rank's wish to stop; out, whether any rank wants to. */
llmc_status llmc_comm_agree(llmc_comm *c, llmc_status mine, const char *message, int *stop);
/* Sums of host doubles, each value summed over ranks in rank order (the same bits on every rank
 * and for every split of the same values): v[i] = sum_r v_r[i], n values. */
llmc_status llmc_comm_sum_doubles(llmc_comm *c, double *v, int n);
/* Every rank's int64s side by side: all[r * n + i]. Checks settings that must match. */
llmc_status llmc_comm_gather_i64(llmc_comm *c, const int64_t *mine, int64_t *all, int n);

/* The collectives above, no-ops in a world of one. */
llmc_status llmc_comm_reduce_scatter(llmc_comm *c, void *buf, size_t shard, llmc_dtype dtype);
llmc_status llmc_comm_all_gather(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype);
llmc_status llmc_comm_all_reduce(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype);
llmc_status llmc_comm_broadcast(llmc_comm *c, void *buf, size_t bytes, int root);
llmc_status llmc_comm_sync(llmc_comm *c);
llmc_status llmc_comm_reduce_ranges(llmc_comm *c, void *buf, const llmc_comm_range *ranges, int n, llmc_dtype dtype);
llmc_status llmc_comm_fork(llmc_comm *c);
llmc_status llmc_comm_join(llmc_comm *c);

#ifdef __cplusplus
}
#endif
#endif

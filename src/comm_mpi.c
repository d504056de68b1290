/*
 * comm_mpi.c — the MPI engine: the CPU backend's ranks, in host memory.
 *
 * MPI's own reductions may add the ranks' values in any order (it depends on the library, the
 * message size and the world), so the sums are ours: a reduce-scatter swaps shards pairwise and
 * each rank adds the world's contributions to its shard in rank order, r = 0, 1, ... That is
 * the order in which one rank accumulates micro-batches, so N ranks give the bits of one rank
 * with N accumulation steps. All-reduce is that reduce-scatter and an all-gather, which moves
 * the same bytes as a ring all-reduce: 2 (N-1)/N of the buffer per rank.
 *
 * Without MPI at build time (mpi.h not found) the engine is absent and a world of several CPU
 * ranks is refused with a message that says how to get it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "comm.h"

#ifdef LLMC_WITH_MPI
#include <mpi.h>

enum { CHUNK = 1 << 20 }; /* elements per message: counts stay far inside int */

typedef struct mpi_impl {
    MPI_Comm comm;
    float *recv; /* world * CHUNK floats: the other ranks' parts of a shard chunk */
} mpi_impl;

static mpi_impl *impl_of(llmc_comm *c) { return (mpi_impl *)c->impl; }

static llmc_status mpi_fail(llmc_comm *c, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: MPI %s failed: %s", c->rank, what, msg);
}

#define MPI_TRY(c, call, what)                          \
    do {                                                \
        int rc_ = (call);                               \
        if (rc_ != MPI_SUCCESS) return mpi_fail((c), rc_, (what)); \
    } while (0)

static llmc_status start_mpi(char *err, size_t errlen) {
    int started = 0, ended = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&ended);
    if (ended) {
        snprintf(err, errlen, "MPI was already finalized in this process: it cannot start again");
        return LLMC_ERR_INVALID_ARG;
    }
    if (!started && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed");
        return LLMC_ERR_DEVICE;
    }
    return LLMC_OK;
}

static llmc_status mpi_open(llmc_comm *c, const llmc_comm_options *o) {
    (void)o;
    llmc_status st = start_mpi(c->err, sizeof c->err);
    if (st != LLMC_OK) return st;
    int world = 0, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (world != c->world || rank != c->rank)
        return llmc_comm_fail(c, LLMC_ERR_INVALID_ARG,
                              "rank %d of %d asked for, but MPI says rank %d of %d: launch with mpirun -np %d", c->rank,
                              c->world, rank, world, c->world);
    mpi_impl *im = calloc(1, sizeof *im);
    if (im) im->recv = malloc((size_t)world * CHUNK * sizeof(float));
    if (!im || !im->recv) {
        if (im) free(im);
        return llmc_comm_fail(c, LLMC_ERR_OUT_OF_MEMORY, "rank %d: out of memory for MPI buffers", c->rank);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &im->comm);
    MPI_Comm_set_errhandler(im->comm, MPI_ERRORS_RETURN);
    c->impl = im;
    return LLMC_OK;
}

static void mpi_close(llmc_comm *c) {
    mpi_impl *im = impl_of(c);
    if (!im) return;
    int ended = 0;
    MPI_Finalized(&ended);
    if (!ended) MPI_Comm_free(&im->comm);
    free(im->recv);
    free(im);
    c->impl = NULL;
}

static llmc_status need_f32(llmc_comm *c, llmc_dtype dtype, const char *op) {
    if (dtype == LLMC_F32) return LLMC_OK;
    return llmc_comm_fail(c, LLMC_ERR_UNSUPPORTED, "rank %d: MPI %s sums fp32 only (got %s)", c->rank, op,
                          llmc_dtype_name(dtype));
}

static llmc_status mpi_reduce_scatter(llmc_comm *c, void *buf, size_t shard, llmc_dtype dtype) {
    llmc_status st = need_f32(c, dtype, "reduce-scatter");
    if (st != LLMC_OK) return st;
    mpi_impl *im = impl_of(c);
    float *x = buf, *mine = x + (size_t)c->rank * shard;
    const int W = c->world, R = c->rank;
    for (size_t at = 0; at < shard; at += CHUNK) {
        const int k = (int)(shard - at < CHUNK ? shard - at : CHUNK);
        for (int s = 1; s < W; s++) { /* pairwise: send rank to's part, receive rank from's part of mine */
            const int to = (R + s) % W, from = (R - s + W) % W;
            MPI_TRY(c,
                    MPI_Sendrecv(x + (size_t)to * shard + at, k, MPI_FLOAT, to, 0, im->recv + (size_t)from * CHUNK, k,
                                 MPI_FLOAT, from, 0, im->comm, MPI_STATUS_IGNORE),
                    "reduce-scatter");
        }
        memcpy(im->recv + (size_t)R * CHUNK, mine + at, (size_t)k * sizeof(float));
        for (int i = 0; i < k; i++) {
            float acc = im->recv[i];
            for (int r = 1; r < W; r++) acc += im->recv[(size_t)r * CHUNK + i];
            mine[at + (size_t)i] = acc;
        }
    }
    return LLMC_OK;
}

/* Rank r's piece of [0, n): [lo, hi). */
static void piece(size_t n, size_t shard, int r, size_t *lo, size_t *hi) {
    *lo = (size_t)r * shard < n ? (size_t)r * shard : n;
    *hi = *lo + shard < n ? *lo + shard : n;
}

static llmc_status mpi_all_gather(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    llmc_status st = need_f32(c, dtype, "all-gather");
    if (st != LLMC_OK) return st;
    mpi_impl *im = impl_of(c);
    float *x = buf;
    const int W = c->world, R = c->rank;
    for (int s = 1; s < W; s++) {
        const int to = (R + s) % W, from = (R - s + W) % W;
        size_t mlo, mhi, flo, fhi;
        piece(n, shard, R, &mlo, &mhi);
        piece(n, shard, from, &flo, &fhi);
        for (size_t at = 0; at < shard; at += CHUNK) { /* the same chunk count on both sides */
            const size_t k = shard - at < CHUNK ? shard - at : CHUNK;
            const int ks = mlo + at >= mhi ? 0 : (int)(mhi - mlo - at < k ? mhi - mlo - at : k);
            const int kr = flo + at >= fhi ? 0 : (int)(fhi - flo - at < k ? fhi - flo - at : k);
            MPI_TRY(c,
                    MPI_Sendrecv(x + mlo + at, ks, MPI_FLOAT, to, 1, x + flo + at, kr, MPI_FLOAT, from, 1, im->comm,
                                 MPI_STATUS_IGNORE),
                    "all-gather");
        }
    }
    return LLMC_OK;
}

static llmc_status mpi_all_reduce(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    /* the padding past n joins the sums: zero it, so that it never holds a NaN */
    if ((size_t)c->world * shard > n) memset((float *)buf + n, 0, ((size_t)c->world * shard - n) * sizeof(float));
    llmc_status st = mpi_reduce_scatter(c, buf, shard, dtype);
    return st == LLMC_OK ? mpi_all_gather(c, buf, n, shard, dtype) : st;
}

/* Each range's contributions gathered on its root, which adds them in rank order. */
static llmc_status mpi_reduce_ranges(llmc_comm *c, void *buf, const llmc_comm_range *ranges, int n, llmc_dtype dtype) {
    llmc_status st = need_f32(c, dtype, "reduce");
    if (st != LLMC_OK) return st;
    mpi_impl *im = impl_of(c);
    const int W = c->world;
    for (int j = 0; j < n; j++) {
        float *x = (float *)buf + ranges[j].offset;
        const int root = ranges[j].root;
        for (size_t at = 0; at < ranges[j].count; at += CHUNK) {
            const int k = (int)(ranges[j].count - at < CHUNK ? ranges[j].count - at : CHUNK);
            MPI_TRY(c, MPI_Gather(x + at, k, MPI_FLOAT, im->recv, k, MPI_FLOAT, root, im->comm), "reduce");
            if (c->rank != root) continue;
            for (int i = 0; i < k; i++) {
                float acc = im->recv[i];
                for (int r = 1; r < W; r++) acc += im->recv[(size_t)r * k + i];
                x[at + (size_t)i] = acc;
            }
        }
    }
    return LLMC_OK;
}

static llmc_status mpi_broadcast(llmc_comm *c, void *buf, size_t bytes, int root) {
    for (size_t at = 0; at < bytes; at += (size_t)1 << 30) {
        const size_t k = bytes - at < ((size_t)1 << 30) ? bytes - at : (size_t)1 << 30;
        MPI_TRY(c, MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, root, impl_of(c)->comm), "broadcast");
    }
    return LLMC_OK;
}

static llmc_status mpi_host_all_gather(llmc_comm *c, const void *mine, void *all, size_t bytes) {
    MPI_TRY(c, MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, impl_of(c)->comm), "all-gather");
    return LLMC_OK;
}

static const llmc_comm_engine mpi_engine = {
    .name = "mpi",
    .open = mpi_open,
    .close = mpi_close,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .all_reduce = mpi_all_reduce,
    .broadcast = mpi_broadcast,
    .host_all_gather = mpi_host_all_gather,
    .reduce_ranges = mpi_reduce_ranges,
};

const llmc_comm_engine *llmc_comm_mpi_engine(void) { return &mpi_engine; }

llmc_status llmc_mpi_broadcast_blob(void *blob, size_t bytes, char *err, size_t errlen) {
    llmc_status st = start_mpi(err, errlen);
    if (st != LLMC_OK) return st;
    if (MPI_Bcast(blob, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Bcast of the NCCL id failed");
        return LLMC_ERR_DEVICE;
    }
    return LLMC_OK;
}

void llmc_comm_finalize(void) {
    int started = 0, ended = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&ended);
    if (started && !ended) MPI_Finalize();
}

#else /* no MPI in this build */

const llmc_comm_engine *llmc_comm_mpi_engine(void) { return NULL; }

llmc_status llmc_mpi_broadcast_blob(void *blob, size_t bytes, char *err, size_t errlen) {
    (void)blob, (void)bytes;
    snprintf(err, errlen, "init method 'mpi' needs a build with MPI (install OpenMPI and rebuild); or use "
             "-pi tcp / -pi fs");
    return LLMC_ERR_UNSUPPORTED;
}

void llmc_comm_finalize(void) {}

#endif

/* comm_nccl.cu — the NCCL engine of the communicator (src/comm.h): collectives on the CUDA
 * device's stream, so they are ordered with the kernels around them; between fork and join on a
 * stream of their own (the gradient sums of the layers the backward has finished, while it goes
 * on with the earlier ones), tied to the device's stream by events.
 *
 * The communicator is non-blocking (ncclConfig_t.blocking = 0): a call that would wait on the
 * other ranks (init, a first collective's connection set-up, finalize) returns ncclInProgress and
 * we poll for it, so a rank that died or never came makes this one fail after c->timeout_s instead
 * of hanging. Collectives only queue work; the one host wait (host_all_gather) polls its event and
 * NCCL's async error with the same timeout. After a timeout or an error the communicator is
 * aborted and every later call fails at once. */
#ifdef LLMC_WITH_NCCL
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "comm.h"
#include "comm_bootstrap.h"
#include "common.cuh"

#define POLL_SPINS 2000      /* polls before the waits start to sleep: the common wait is short */
#define POLL_SLEEP_NS 50000L

typedef struct nccl_impl {
    ncclComm_t comm;   /* NULL once aborted */
    int device;
    cudaStream_t stream;
    void *stage;       /* host_all_gather: world * stage_bytes on the device, grow-only */
    void *pinned;      /* and the same in pinned host memory, so no copy blocks the host */
    size_t stage_bytes;
    cudaEvent_t done;  /* recorded after host_all_gather's copy back */
    cudaStream_t side; /* the collectives between fork and join */
    cudaEvent_t forked, joined;
    int on_side;
} nccl_impl;

static nccl_impl *impl_of(llmc_comm *c) { return (nccl_impl *)c->impl; }
/* The stream collectives go to now. */
static cudaStream_t queue_of(nccl_impl *im) { return im->on_side ? im->side : im->stream; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void poll_pause(long spins) {
    if (spins < POLL_SPINS) return;
    struct timespec ts = {0, POLL_SLEEP_NS};
    nanosleep(&ts, NULL);
}

static void abort_comm(nccl_impl *im) {
    if (im->comm) ncclCommAbort(im->comm);
    im->comm = NULL;
}

static llmc_status nccl_fail(llmc_comm *c, ncclResult_t r, const char *what) {
    nccl_impl *im = impl_of(c);
    const char *last = ncclGetLastError(im->comm);
    llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: NCCL %s failed: %s%s%s", c->rank, what, ncclGetErrorString(r),
                   last && *last ? ": " : "", last ? last : "");
    abort_comm(im);
    return LLMC_ERR_DEVICE;
}

static llmc_status timed_out(llmc_comm *c, const char *what) {
    abort_comm(impl_of(c));
    return llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: NCCL timed out after %g s waiting for the other ranks "
                          "(one may have failed or stopped) in %s", c->rank, c->timeout_s, what);
}

/* What an NCCL call returned, seen through: ncclInProgress is waited out (at most c->timeout_s),
 * and an error another rank caused shows here as the communicator's async error. */
static llmc_status nccl_check(llmc_comm *c, ncclResult_t r, const char *what) {
    nccl_impl *im = impl_of(c);
    const double deadline = now_s() + c->timeout_s;
    for (long spins = 0;; spins++) {
        if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(c, r, what);
        ncclResult_t async = ncclSuccess;
        const ncclResult_t q = ncclCommGetAsyncError(im->comm, &async);
        if (q != ncclSuccess) return nccl_fail(c, q, what);
        if (async != ncclSuccess && async != ncclInProgress) return nccl_fail(c, async, what);
        if (r == ncclSuccess && async == ncclSuccess) return LLMC_OK;
        r = async; /* in progress: the call's outcome is the communicator's state */
        if (now_s() >= deadline) return timed_out(c, what);
        poll_pause(spins);
    }
}

static llmc_status cuda_fail(llmc_comm *c, cudaError_t e, const char *what) {
    (void)cudaGetLastError();
    abort_comm(impl_of(c)); /* a failed copy leaves the ranks out of step: nothing after it is safe */
    return llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: CUDA error in %s: %s", c->rank, what, cudaGetErrorString(e));
}

/* Every op starts here: a communicator aborted earlier refuses, and the device is made current
 * (NCCL's calls act on the current device). */
static llmc_status enter(llmc_comm *c, const char *what) {
    nccl_impl *im = impl_of(c);
    if (!im || !im->comm)
        return llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: NCCL %s after the communicator was aborted by an "
                              "earlier error", c->rank, what);
    const cudaError_t e = cudaSetDevice(im->device);
    return e == cudaSuccess ? LLMC_OK : cuda_fail(c, e, what);
}

static llmc_status nccl_type(llmc_comm *c, llmc_dtype dtype, const char *what, ncclDataType_t *t) {
    if (dtype == LLMC_F32) *t = ncclFloat32;
    else if (dtype == LLMC_BF16) *t = ncclBfloat16;
    else
        return llmc_comm_fail(c, LLMC_ERR_UNSUPPORTED, "rank %d: NCCL %s of %s: only fp32 and bf16 are reduced or "
                              "gathered", c->rank, what, llmc_dtype_name(dtype));
    return LLMC_OK;
}

static void free_impl(nccl_impl *im) {
    if (im->stage) cudaFree(im->stage);
    if (im->pinned) cudaFreeHost(im->pinned);
    if (im->done) cudaEventDestroy(im->done);
    if (im->forked) cudaEventDestroy(im->forked);
    if (im->joined) cudaEventDestroy(im->joined);
    if (im->side) cudaStreamDestroy(im->side);
    free(im);
}

/* ---- open / close ---- */

/* Rank 0's unique id to every rank, by the options' meeting place. */
static llmc_status share_id(llmc_comm *c, const llmc_comm_options *o, ncclUniqueId *id) {
    const char *init = o->init ? o->init : "tcp";
    if (c->world == 1) return LLMC_OK;
    if (strcmp(init, "tcp") == 0)
        return llmc_bootstrap_tcp(o->addr, o->port, c->rank, c->world, id, sizeof *id, c->timeout_s, c->err,
                                  sizeof c->err);
    if (strcmp(init, "file") == 0)
        return llmc_bootstrap_file(o->file, c->rank, c->world, id, sizeof *id, c->timeout_s, c->err, sizeof c->err);
    if (strcmp(init, "mpi") == 0) {
        char why[LLMC_ERR_LEN];
        const llmc_status st = llmc_mpi_broadcast_blob(id, sizeof *id, why, sizeof why);
        if (st != LLMC_OK) llmc_comm_fail(c, st, "rank %d: NCCL's id over MPI: %s", c->rank, why);
        return st;
    }
    return llmc_comm_fail(c, LLMC_ERR_INVALID_ARG, "rank %d: unknown init method '%s': use mpi, tcp or file", c->rank,
                          init);
}

static llmc_status nccl_open(llmc_comm *c, const llmc_comm_options *o) {
    /* NVLink multicast (NVLS) can take a shared host's GPUs out of service and costs GPU memory:
     * off unless the user set NCCL_NVLS_ENABLE themselves */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    nccl_impl *im = (nccl_impl *)calloc(1, sizeof *im);
    if (!im) return llmc_comm_fail(c, LLMC_ERR_OUT_OF_MEMORY, "rank %d: out of memory for NCCL", c->rank);
    llmc_cuda_impl *dev = llmc_cuda_impl_of(c->dev);
    im->device = dev->device;
    im->stream = dev->stream;
    c->impl = im;
    llmc_status st = LLMC_OK;
    cudaError_t e = cudaSetDevice(im->device);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&im->done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&im->forked, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&im->joined, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&im->side, cudaStreamNonBlocking);
    if (e != cudaSuccess) st = cuda_fail(c, e, "opening NCCL");
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (st == LLMC_OK && c->rank == 0) {
        const ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            st = llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank 0: NCCL could not make its unique id: %s: %s",
                                ncclGetErrorString(r), ncclGetLastError(NULL));
    }
    if (st == LLMC_OK) st = share_id(c, o, &id);
    if (st == LLMC_OK) {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        const ncclResult_t r = ncclCommInitRankConfig(&im->comm, c->world, id, c->rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress && !im->comm)
            st = llmc_comm_fail(c, LLMC_ERR_DEVICE, "rank %d: NCCL init (world %d) failed: %s: %s", c->rank,
                                c->world, ncclGetErrorString(r), ncclGetLastError(NULL));
        else
            st = nccl_check(c, r, "init");
    }
    if (st != LLMC_OK) { /* the caller frees c without close */
        abort_comm(im);
        free_impl(im);
        c->impl = NULL;
    }
    return st;
}

static void nccl_close(llmc_comm *c) {
    nccl_impl *im = impl_of(c);
    if (!im) return;
    cudaSetDevice(im->device);
    if (im->comm) {
        /* finalize waits for the other ranks (bounded by the timeout); then destroy is local */
        if (nccl_check(c, ncclCommFinalize(im->comm), "finalize") == LLMC_OK) ncclCommDestroy(im->comm);
        im->comm = NULL;
    }
    free_impl(im);
    c->impl = NULL;
}

/* ---- collectives: queued on the stream, no host wait ---- */

static llmc_status nccl_reduce_scatter(llmc_comm *c, void *buf, size_t shard, llmc_dtype dtype) {
    ncclDataType_t t;
    llmc_status st = enter(c, "reduce_scatter");
    if (st == LLMC_OK) st = nccl_type(c, dtype, "reduce_scatter", &t);
    if (st != LLMC_OK) return st;
    nccl_impl *im = impl_of(c);
    /* in place: NCCL's rule is recvbuff = sendbuff + rank * recvcount */
    char *mine = (char *)buf + (size_t)c->rank * shard * llmc_dtype_size(dtype);
    return nccl_check(c, ncclReduceScatter(buf, mine, shard, t, ncclSum, im->comm, queue_of(im)), "reduce_scatter");
}

/* ncclAllGather needs equal counts and room for world * shard, which buf may not have when the
 * last shards are short or empty. Then each rank's piece is broadcast from it, in place, all in one
 * group: NCCL runs the group as one launch, and every element still crosses each link once. */
static llmc_status nccl_all_gather(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    ncclDataType_t t;
    llmc_status st = enter(c, "all_gather");
    if (st == LLMC_OK) st = nccl_type(c, dtype, "all_gather", &t);
    if (st != LLMC_OK) return st;
    if (shard == 0 && n > 0)
        return llmc_comm_fail(c, LLMC_ERR_INVALID_ARG, "rank %d: NCCL all_gather of %zu elements in shards of 0",
                              c->rank, n);
    nccl_impl *im = impl_of(c);
    const size_t esz = llmc_dtype_size(dtype);
    char *base = (char *)buf;
    if (n == shard * (size_t)c->world)
        return nccl_check(c, ncclAllGather(base + (size_t)c->rank * shard * esz, buf, shard, t, im->comm, queue_of(im)),
                          "all_gather");
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess) return nccl_check(c, r, "all_gather");
    for (int root = 0; root < c->world && r == ncclSuccess; root++) {
        const size_t first = (size_t)root * shard;
        const size_t count = first >= n ? 0 : n - first < shard ? n - first : shard;
        if (count == 0) break; /* shards after a short one are empty: every rank skips the same roots */
        char *p = base + first * esz;
        r = ncclBroadcast(p, p, count, t, root, im->comm, queue_of(im));
    }
    const ncclResult_t end = ncclGroupEnd(); /* always: a group left open would swallow later calls */
    return nccl_check(c, r != ncclSuccess ? r : end, "all_gather");
}

static llmc_status nccl_all_reduce(llmc_comm *c, void *buf, size_t n, size_t shard, llmc_dtype dtype) {
    (void)shard; /* NCCL sums n elements in place; the padding is for engines that go by shards */
    ncclDataType_t t;
    llmc_status st = enter(c, "all_reduce");
    if (st == LLMC_OK) st = nccl_type(c, dtype, "all_reduce", &t);
    if (st != LLMC_OK) return st;
    nccl_impl *im = impl_of(c);
    return nccl_check(c, ncclAllReduce(buf, buf, n, t, ncclSum, im->comm, queue_of(im)), "all_reduce");
}

static llmc_status nccl_broadcast(llmc_comm *c, void *buf, size_t bytes, int root) {
    llmc_status st = enter(c, "broadcast");
    if (st != LLMC_OK) return st;
    if (root < 0 || root >= c->world)
        return llmc_comm_fail(c, LLMC_ERR_INVALID_ARG, "rank %d: NCCL broadcast from rank %d of a world of %d",
                              c->rank, root, c->world);
    nccl_impl *im = impl_of(c);
    return nccl_check(c, ncclBroadcast(buf, buf, bytes, ncclUint8, root, im->comm, queue_of(im)), "broadcast");
}

/* Each range's sum to its root, all in one group. */
static llmc_status nccl_reduce_ranges(llmc_comm *c, void *buf, const llmc_comm_range *ranges, int n,
                                      llmc_dtype dtype) {
    ncclDataType_t t;
    llmc_status st = enter(c, "reduce");
    if (st == LLMC_OK) st = nccl_type(c, dtype, "reduce", &t);
    if (st != LLMC_OK || n == 0) return st;
    nccl_impl *im = impl_of(c);
    const size_t esz = llmc_dtype_size(dtype);
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess) return nccl_check(c, r, "reduce");
    for (int j = 0; j < n && r == ncclSuccess; j++) {
        char *p = (char *)buf + ranges[j].offset * esz;
        r = ncclReduce(p, p, ranges[j].count, t, ncclSum, ranges[j].root, im->comm, queue_of(im));
    }
    const ncclResult_t end = ncclGroupEnd();
    return nccl_check(c, r != ncclSuccess ? r : end, "reduce");
}

static llmc_status nccl_fork(llmc_comm *c) {
    llmc_status st = enter(c, "fork");
    if (st != LLMC_OK) return st;
    nccl_impl *im = impl_of(c);
    cudaError_t e = cudaEventRecord(im->forked, im->stream);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(im->side, im->forked, 0);
    if (e != cudaSuccess) return cuda_fail(c, e, "fork");
    im->on_side = 1;
    return LLMC_OK;
}

static llmc_status nccl_join(llmc_comm *c) {
    llmc_status st = enter(c, "join");
    if (st != LLMC_OK) return st;
    nccl_impl *im = impl_of(c);
    im->on_side = 0;
    cudaError_t e = cudaEventRecord(im->joined, im->side);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(im->stream, im->joined, 0);
    return e == cudaSuccess ? LLMC_OK : cuda_fail(c, e, "join");
}

/* ---- host_all_gather: the one op the host waits for ---- */

/* Waits for im->done, watching NCCL's async error, at most c->timeout_s. */
static llmc_status wait_done(llmc_comm *c, const char *what) {
    nccl_impl *im = impl_of(c);
    const double deadline = now_s() + c->timeout_s;
    for (long spins = 0;; spins++) {
        const cudaError_t e = cudaEventQuery(im->done);
        if (e == cudaSuccess) return LLMC_OK;
        if (e != cudaErrorNotReady) return cuda_fail(c, e, what);
        ncclResult_t async = ncclSuccess;
        const ncclResult_t q = ncclCommGetAsyncError(im->comm, &async);
        if (q != ncclSuccess) return nccl_fail(c, q, what);
        if (async != ncclSuccess && async != ncclInProgress) return nccl_fail(c, async, what);
        if (now_s() >= deadline) return timed_out(c, what);
        poll_pause(spins);
    }
}

static llmc_status grow_stage(llmc_comm *c, size_t bytes) {
    nccl_impl *im = impl_of(c);
    if (bytes <= im->stage_bytes) return LLMC_OK;
    /* the old buffers are idle: every host_all_gather waits for its own copy back */
    if (im->stage) cudaFree(im->stage);
    if (im->pinned) cudaFreeHost(im->pinned);
    im->stage = im->pinned = NULL;
    im->stage_bytes = 0;
    const size_t total = bytes * (size_t)c->world;
    cudaError_t e = cudaMalloc(&im->stage, total);
    if (e == cudaSuccess) e = cudaMallocHost(&im->pinned, total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (im->stage) cudaFree(im->stage);
        im->stage = NULL;
        return llmc_comm_fail(c, LLMC_ERR_OUT_OF_MEMORY, "rank %d: NCCL host_all_gather: %zu bytes of staging: %s",
                              c->rank, total, cudaGetErrorString(e));
    }
    im->stage_bytes = bytes;
    return LLMC_OK;
}

static llmc_status nccl_host_all_gather(llmc_comm *c, const void *mine, void *all, size_t bytes) {
    const char *what = "host_all_gather";
    llmc_status st = enter(c, what);
    if (st == LLMC_OK) st = grow_stage(c, bytes);
    if (st != LLMC_OK || bytes == 0) return st;
    nccl_impl *im = impl_of(c);
    const size_t at = (size_t)c->rank * bytes, total = (size_t)c->world * bytes;
    char *stage = (char *)im->stage, *pinned = (char *)im->pinned;
    memcpy(pinned + at, mine, bytes);
    cudaError_t e = cudaMemcpyAsync(stage + at, pinned + at, bytes, cudaMemcpyHostToDevice, im->stream);
    if (e != cudaSuccess) return cuda_fail(c, e, what);
    st = nccl_check(c, ncclAllGather(stage + at, stage, bytes, ncclUint8, im->comm, im->stream), what);
    if (st != LLMC_OK) return st;
    e = cudaMemcpyAsync(pinned, stage, total, cudaMemcpyDeviceToHost, im->stream);
    if (e == cudaSuccess) e = cudaEventRecord(im->done, im->stream);
    if (e != cudaSuccess) return cuda_fail(c, e, what);
    st = wait_done(c, what);
    if (st == LLMC_OK) memcpy(all, pinned, total);
    return st;
}

/* Waits for the collectives queued on the stream, watching NCCL's errors, within the timeout. */
static llmc_status nccl_sync(llmc_comm *c) {
    const char *what = "sync";
    llmc_status st = enter(c, what);
    if (st != LLMC_OK) return st;
    const cudaError_t e = cudaEventRecord(impl_of(c)->done, impl_of(c)->stream);
    return e == cudaSuccess ? wait_done(c, what) : cuda_fail(c, e, what);
}

static const llmc_comm_engine nccl_engine = {
    "nccl", nccl_open, nccl_close, nccl_reduce_scatter, nccl_all_gather, nccl_all_reduce, nccl_broadcast,
    nccl_host_all_gather, nccl_sync, nccl_reduce_ranges, nccl_fork, nccl_join,
};

const llmc_comm_engine *llmc_comm_nccl_engine(void) { return &nccl_engine; }

#endif /* LLMC_WITH_NCCL */

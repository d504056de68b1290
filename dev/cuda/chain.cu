/* dev/cuda/chain.cu — lab: what a kernel boundary costs on this GPU, against a grid barrier.
 *
 * A batch-1 decode step is a chain of ~100 dependent kernels of 2-6 us each (docs/PERF.md), and
 * the one-kernel step (cuda/decode_persistent.cu) pays 4-6 us a phase instead. This lab measures
 * the floor of both with nothing else in the way: K dependent "products", each streaming its own
 * `bytes` of weights across one block per SM (a slice per block, as the decode gemvs read theirs)
 * and scaling the sum by a value the previous product wrote (the activation dependency):
 *   plain       K kernels in a CUDA graph, ordinary launches;
 *   pdl         the same as programmatic dependents: each waits (griddepcontrol.wait) at its start;
 *   pdl-early   each issues its weight loads before the wait (weights never depend on the last
 *               product), as gemv.cu does;
 *   persistent  one kernel, K phases separated by a grid-wide barrier (a device counter, release
 *               add, acquire spin), each block's weight loads issued before the barrier.
 * Reported: microseconds per product (best of R replays of the whole chain) and the bytes' rate.
 * K x bytes beyond the L2 (~60 MB) streams from HBM on every replay; the small sizes stay in L2,
 * which gives the floor of a boundary without memory traffic.
 * Every variant computes the same chain; the last product's value is compared with a host sum.
 *
 *   dev/cuda/run_labs.sh chain          builds build/labs/chain and runs it (needs sm_90)
 *   build/labs/chain [K=96] [R=20]
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#include "../../cuda/launch.cuh"

#include "ck.cuh"

constexpr int kThreads = 256;
constexpr int kUnroll = 4; /* int4 loads in flight per thread before the sum */

/* This block's slice of product k's weights: n16 int4 per product, split evenly over the grid. */
struct Slice {
    const int4 *p;
    size_t n;
};
__device__ __forceinline__ Slice slice_of(const int4 *w, size_t n16, int k) {
    const size_t per = (n16 + gridDim.x - 1) / gridDim.x, lo = min(n16, per * blockIdx.x);
    return {w + (size_t)k * n16 + lo, min(n16, lo + per) - lo};
}

/* Sum of the slice's bytes as small ints, loads issued kUnroll at a time. */
__device__ __forceinline__ float slice_sum(Slice s) {
    float acc = 0.f;
    for (size_t i = threadIdx.x; i < s.n; i += (size_t)kThreads * kUnroll) {
        int4 v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            const size_t j = i + (size_t)u * kThreads;
            v[u] = j < s.n ? __ldcs(s.p + j) : make_int4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; u++) acc += (float)((v[u].x & 7) + (v[u].y & 7) + (v[u].z & 7) + (v[u].w & 7));
    }
    return acc;
}

__device__ __forceinline__ float block_sum(float v) {
    __shared__ float s[kThreads / 32];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) s[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = threadIdx.x < kThreads / 32 ? s[threadIdx.x] : 0.f;
    if (threadIdx.x < 32)
        for (int o = 16; o; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    __syncthreads();
    return t;
}

/* act[k + 1][block] = (sum of this block's slice of product k) * (1 + act[k][0] * 1e-30): the
 * factor is 1 in value but a true read of the previous product's output. */
template <bool EARLY>
__global__ void product_kernel(const int4 *w, size_t n16, float *act, int k) {
    llmc_pdl_launch_dependents();
    const Slice s = slice_of(w, n16, k);
    float part = 0.f;
    if (EARLY) part = slice_sum(s); /* the weights do not depend on the previous product */
    llmc_pdl_wait();
    if (!EARLY) part = slice_sum(s);
    const float prev = __ldcg(act + (size_t)k * gridDim.x);
    const float t = block_sum(part);
    if (threadIdx.x == 0) act[(size_t)(k + 1) * gridDim.x + blockIdx.x] = t * (1.f + prev * 1e-30f);
}

/* All K products in one kernel; a grid barrier between them. */
__global__ void persistent_kernel(const int4 *w, size_t n16, float *act, int K, unsigned *count) {
    for (int k = 0; k < K; k++) {
        const float part = slice_sum(slice_of(w, n16, k)); /* before the barrier: independent of it */
        if (k > 0) { /* wait for every block's product k - 1 */
            __syncthreads();
            if (threadIdx.x == 0) {
                const unsigned target = (unsigned)k * gridDim.x;
                unsigned seen;
                do {
                    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(count) : "memory");
                } while (seen < target);
            }
            __syncthreads();
        }
        const float prev = __ldcg(act + (size_t)k * gridDim.x);
        const float t = block_sum(part);
        if (threadIdx.x == 0) {
            act[(size_t)(k + 1) * gridDim.x + blockIdx.x] = t * (1.f + prev * 1e-30f);
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
        }
    }
}

enum Variant { PLAIN, PDL, PDL_EARLY, PERSISTENT, NVARIANTS };
static const char *kName[NVARIANTS] = {"plain", "pdl", "pdl-early", "persistent"};

/* One chain of K products as a graph (the persistent kernel: a graph of one kernel and a reset). */
static cudaGraphExec_t record(Variant v, cudaStream_t st, const int4 *w, size_t n16, float *act, int K, int grid,
                              unsigned *count) {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    if (v == PERSISTENT) {
        CK(cudaMemsetAsync(count, 0, sizeof(unsigned), st));
        cudaLaunchConfig_t lc;
        memset(&lc, 0, sizeof lc);
        lc.gridDim = dim3(grid);
        lc.blockDim = dim3(kThreads);
        lc.stream = st;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeCooperative; /* every block resident: the barrier needs it */
        attr[0].val.cooperative = 1;
        lc.attrs = attr;
        lc.numAttrs = 1;
        CK(cudaLaunchKernelEx(&lc, persistent_kernel, w, n16, act, K, count));
    } else {
        for (int k = 0; k < K; k++)
            CK(llmc_launch_pdl(v != PLAIN, v == PDL_EARLY ? product_kernel<true> : product_kernel<false>, dim3(grid),
                               dim3(kThreads), 0, st, w, n16, act, k));
    }
    CK(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t e;
    CK(cudaGraphInstantiate(&e, g, 0));
    CK(cudaGraphDestroy(g));
    return e;
}

int main(int argc, char **argv) {
    const int K = argc > 1 ? atoi(argv[1]) : 96, R = argc > 2 ? atoi(argv[2]) : 20;
    int dev = 0, sms = 0, coop = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, 0));
    if (per_sm < 1 || !coop) {
        fprintf(stderr, "the persistent kernel cannot keep one block on every SM\n");
        return 1;
    }
    const int grid = sms; /* one block per SM: every block is resident, so the barrier cannot hang */
    const size_t sizes[] = {0, 16 << 10, 256 << 10, 1 << 20, 3538944 /* d12 QKV, bf16 */, 4718592 /* FC */};
    const size_t max_bytes = sizes[sizeof sizes / sizeof sizes[0] - 1];
    int4 *w;
    float *act;
    unsigned *count;
    CK(cudaMalloc(&w, max_bytes * K + 16));
    CK(cudaMalloc(&act, sizeof(float) * (size_t)(K + 1) * grid));
    CK(cudaMalloc(&count, sizeof(unsigned)));
    std::vector<unsigned char> host(max_bytes * K);
    for (size_t i = 0; i < host.size(); i++) host[i] = (unsigned char)(i * 2654435761u >> 13);
    CK(cudaMemcpy(w, host.data(), host.size(), cudaMemcpyHostToDevice));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    printf("%d products a chain, one block of %d threads per SM (%d SMs), best of %d replays\n", K, kThreads, grid, R);
    printf("%12s |", "bytes/product");
    for (int v = 0; v < NVARIANTS; v++) printf(" %10s us %7s |", kName[v], "GB/s");
    printf(" check\n");
    int failures = 0;
    for (size_t bytes : sizes) {
        const size_t n16 = bytes / 16;
        /* the host's value of the last product's block 0 (the chain's factors are exactly 1 in fp32) */
        const size_t hi = std::min(n16, (n16 + grid - 1) / grid); /* block 0's slice */
        double want = 0;
        const int4 *hw = reinterpret_cast<const int4 *>(host.data()) + (size_t)(K - 1) * n16;
        for (size_t i = 0; i < hi; i++) want += (hw[i].x & 7) + (hw[i].y & 7) + (hw[i].z & 7) + (hw[i].w & 7);
        printf("%12zu |", bytes);
        bool ok = true;
        for (int v = 0; v < NVARIANTS; v++) {
            cudaGraphExec_t e = record((Variant)v, st, w, n16, act, K, grid, count);
            float best = 1e30f;
            for (int r = 0; r < R + 1; r++) {
                CK(cudaMemsetAsync(act, 0, sizeof(float) * grid, st));
                CK(cudaEventRecord(t0, st));
                CK(cudaGraphLaunch(e, st));
                CK(cudaEventRecord(t1, st));
                CK(cudaEventSynchronize(t1));
                float ms;
                CK(cudaEventElapsedTime(&ms, t0, t1));
                if (r > 0) best = std::min(best, ms); /* the first replay uploads the graph */
            }
            float got;
            CK(cudaMemcpy(&got, act + (size_t)K * grid, sizeof got, cudaMemcpyDeviceToHost));
            ok &= fabs(got - want) <= 1e-6 * want + 0.5;
            const double us = best * 1e3 / K;
            printf(" %13.2f %7.0f |", us, bytes ? bytes / (us * 1e3) : 0.0);
            CK(cudaGraphExecDestroy(e));
        }
        printf(" %s\n", ok ? "ok" : "FAIL");
        failures += !ok;
    }
    CK(cudaFree(w));
    CK(cudaFree(act));
    CK(cudaFree(count));
    if (failures) printf("%d FAILED\n", failures);
    return failures ? 1 : 0;
}

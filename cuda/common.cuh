/* common.cuh — shared pieces of the CUDA backend: the private device state, grid sizes per
 * device, bf16 vector load/store, warp/block reductions, GELU and stochastic rounding.
 * Included by every .cu file of the backend (attention.cu: launch.cuh only) and by the labs
 * in dev/cuda. */
#ifndef LLMC_CUDA_COMMON_CUH
#define LLMC_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <stdint.h>
#include <type_traits>
#include "cuda_ops.h"
#include "launch.cuh"

typedef __nv_bfloat16 bf16;

/* ------------------------------------------------------------------------------------------
 * Host side: the state behind dev->impl (one per opened device). Only the backend's own files
 * look inside; other code goes through llmc_cuda_stream() / llmc_cuda_scratch().
 * ---------------------------------------------------------------------------------------- */
#define LLMC_CUDA_ALGO_CACHE 64
#define LLMC_CUDA_ALGO_KEY 24

typedef struct llmc_cuda_algo_entry {
    int64_t key[LLMC_CUDA_ALGO_KEY];
    int state; /* 0 empty, 1 algo found, -1 no algorithm for this problem */
    cublasLtMatmulAlgo_t algo;
} llmc_cuda_algo_entry;

#define LLMC_CUDA_GEMV_KERNELS 13 /* instances of gemv.cu's kernel */

typedef struct llmc_cuda_span { /* a byte range [lo, hi) of device memory */
    uintptr_t lo, hi;
} llmc_cuda_span;

typedef struct llmc_cuda_impl {
    int device;
    int sm_count;
    int smem_optin; /* the most dynamic shared memory a block may opt in to */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    /* the NVTX domain through which matmul.cu tells compute-sanitizer's initcheck what cuBLASLt
     * wrote (it cannot see those writes); NVTX is compiled into matmul.cu alone */
    struct nvtxDomainRegistration_st *nvtx;
    void *lt_ws;
    size_t lt_ws_bytes;
    void *scratch; /* grow-only device scratch, see llmc_cuda_scratch */
    size_t scratch_bytes;
    void *pinned; /* grow-only pinned host staging buffer */
    size_t pinned_bytes;
    cudaEvent_t pinned_done; /* recorded after the last copy that reads pinned */
    void *readback;          /* pinned: readback_begin's copy lands here (its own, not pinned's) */
    size_t readback_bytes, readback_len;
    cudaEvent_t readback_done; /* recorded after that copy */
    int *host_counts;        /* encoder backward's per-token counts: grow-only, all zero between calls */
    size_t host_counts_len;
    int *host_distinct;      /* encoder backward's distinct tokens: grow-only */
    size_t host_distinct_len;
    int algo_next;           /* round-robin replacement in algo_cache */
    llmc_cuda_algo_entry algo_cache[LLMC_CUDA_ALGO_CACHE];
    /* gemv.cu: the dynamic shared memory each kernel instance is opted in to on this device */
    size_t gemv_smem_optin[LLMC_CUDA_GEMV_KERNELS];
    /* sample.cu: the dynamic shared memory its staged kernel is opted in to (set before a graph
     * records it: the first decode step of a shape runs eagerly) */
    size_t sample_smem_optin;
    /* gemv.cu: the outputs (out, pre_gelu) of the last matmul_forward on the stream */
    llmc_cuda_span gemv_last_out[2];
    /* gemv.cu: the last occupancy query of its fused-layernorm kernel (block threads and
     * dynamic shared memory -> blocks per SM; threads 0: none yet) */
    int ln_occ_threads, ln_occ_blocks;
    size_t ln_occ_smem;
    int cc; /* compute capability, major * 10 + minor */
    struct llmc_cuda_fp8 *fp8; /* fp8.cu: the delayed scales and fp8 workspaces (NULL: none yet) */
} llmc_cuda_impl;

static inline llmc_cuda_impl *llmc_cuda_impl_of(llmc_device *dev) { return (llmc_cuda_impl *)dev->impl; }

/* LLMC_ERR_OUT_OF_MEMORY naming what failed, its size and the device's free memory. */
llmc_status llmc_cuda_fail_alloc(llmc_device *dev, const char *what, size_t bytes, cudaError_t e);

/* matmul.cu: the NVTX domain of a device, opened with it and closed with it */
void llmc_cuda_nvtx_open(llmc_cuda_impl *im);
void llmc_cuda_nvtx_close(llmc_cuda_impl *im);

/* Blocks for work items, threads to a block, at most blocks_per_sm per SM: enough in flight
 * to saturate memory, and no more (grid-stride kernels loop over the rest). */
static inline int llmc_cuda_grid(llmc_device *dev, size_t work, int threads, int blocks_per_sm) {
    return llmc_grid_size(work, (size_t)threads, (size_t)llmc_cuda_impl_of(dev)->sm_count * blocks_per_sm);
}

/* Pinned host buffer of at least bytes; waits until the previous copy out of it has finished.
 * After enqueuing the copy that reads it, call llmc_cuda_pinned_release. */
llmc_status llmc_cuda_pinned_acquire(llmc_device *dev, size_t bytes, void **ptr);
llmc_status llmc_cuda_pinned_release(llmc_device *dev);

/* dinp (N*C... n elements) *= gelu_tanh'(pre), in place; the fallback when cuBLASLt's DGELU
 * epilogue cannot be used. Defined in gelu.cu. */
llmc_status llmc_cuda_gelu_backward_inplace(llmc_device *dev, void *dinp, const void *pre, size_t n);

static inline int llmc_is_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* An elementwise pass over n elements as up to two launches: 16-byte vectors over the body
 * when aligned (every pointer of the pass is 16-byte aligned), scalars for the rest.
 * launch(vec, first, count) enqueues the VEC = decltype(vec)::value kernel on elements from
 * first, count vectors (or elements) of them, and returns its status. */
template <class Launch>
static llmc_status llmc_cuda_vec8_split(size_t n, bool aligned, Launch launch) {
    size_t body = 0;
    if (aligned) {
        const size_t nvec = n / 8;
        body = nvec * 8;
        if (nvec) {
            const llmc_status st = launch(std::integral_constant<int, 8>(), (size_t)0, nvec);
            if (st != LLMC_OK) return st;
        }
    }
    if (body < n) return launch(std::integral_constant<int, 1>(), body, n - body);
    return LLMC_OK;
}

/* ------------------------------------------------------------------------------------------
 * Device side.
 * ---------------------------------------------------------------------------------------- */

/* 16 bytes of a weight matrix, read once: through L2 only, keeping them out of L1 (gemv.cu,
 * matmul_int8.cu). */
__device__ __forceinline__ int4 llmc_ld_stream16(const void *p) {
    int4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* Unpacks a raw 16-byte register of 8 bf16 (kept in registers between passes). */
__device__ __forceinline__ void unpack_bf16x8(float (&f)[8], int4 raw) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
/* Packs 8 floats into 8 bf16, rounding to nearest even. */
__device__ __forceinline__ int4 pack_bf16x8(const float (&f)[8]) {
    int4 raw;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return raw;
}

/* Loads VEC consecutive bf16 as floats. VEC == 8 is one 16-byte load (p must be 16-byte
 * aligned); VEC == 1 is the scalar path used when a row length is not a multiple of 8. */
template <int VEC>
__device__ __forceinline__ void ld_bf16(float (&f)[VEC], const bf16 *p) {
    if constexpr (VEC == 8) {
        unpack_bf16x8(f, *reinterpret_cast<const int4 *>(p));
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i++) f[i] = __bfloat162float(p[i]);
    }
}

/* Same, with a streaming (evict-first) hint on the vector path: for data read exactly once. */
template <int VEC>
__device__ __forceinline__ void ld_bf16_cs(float (&f)[VEC], const bf16 *p) {
    if constexpr (VEC == 8)
        unpack_bf16x8(f, __ldcs(reinterpret_cast<const int4 *>(p)));
    else
        ld_bf16<VEC>(f, p);
}

/* Stores VEC floats as bf16, rounding to nearest even. */
template <int VEC>
__device__ __forceinline__ void st_bf16(bf16 *p, const float (&f)[VEC]) {
    if constexpr (VEC == 8) {
        *reinterpret_cast<int4 *>(p) = pack_bf16x8(f);
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i++) p[i] = __float2bfloat16_rn(f[i]);
    }
}

/* Same, with a streaming hint on the vector path: for data not read again soon. */
template <int VEC>
__device__ __forceinline__ void st_bf16_cs(bf16 *p, const float (&f)[VEC]) {
    if constexpr (VEC == 8) {
        const int4 raw = pack_bf16x8(f);
        __stcs(reinterpret_cast<int4 *>(p), raw);
    } else {
        st_bf16<VEC>(p, f);
    }
}

/* Stores VEC values that are bf16 already (rounded by the caller). */
template <int VEC>
__device__ __forceinline__ void st_bf16(bf16 *p, const bf16 (&v)[VEC]) {
    if constexpr (VEC == 8) {
        int4 raw;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = __halves2bfloat162(v[2 * i], v[2 * i + 1]);
        *reinterpret_cast<int4 *>(p) = raw;
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i++) p[i] = v[i];
    }
}

/* Loads/stores VEC consecutive floats (VEC == 8: two 16-byte accesses, p 16-byte aligned). */
template <int VEC>
__device__ __forceinline__ void ld_f32(float (&f)[VEC], const float *p) {
    if constexpr (VEC == 8) {
        float4 a = *reinterpret_cast<const float4 *>(p);
        float4 b = *reinterpret_cast<const float4 *>(p + 4);
        f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
        f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i++) f[i] = p[i];
    }
}
template <int VEC>
__device__ __forceinline__ void st_f32(float *p, const float (&f)[VEC]) {
    if constexpr (VEC == 8) {
        *reinterpret_cast<float4 *>(p) = make_float4(f[0], f[1], f[2], f[3]);
        *reinterpret_cast<float4 *>(p + 4) = make_float4(f[4], f[5], f[6], f[7]);
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i++) p[i] = f[i];
    }
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* Sum over the block, returned to every thread. Fixed reduction tree (deterministic).
 * blockDim.x must be a multiple of 32; shared has 32 floats. Ends with a barrier, so the
 * same shared array may be reused by the next call. */
__device__ __forceinline__ float block_sum(float x, float *shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads(); /* shared may still be read by a previous call */
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < nwarps ? shared[lane] : 0.0f;
    return warp_sum(x);
}

/* One key of a lane group's online softmax in decode attention (decode.cu, decode_persistent.cu):
 * the TPK lanes of a group hold 8 dims each of q (pre-scaled: scores in log2 units) and of this
 * key's k and v. ok false: the group is past the last key; it still joins the shuffles. */
template <int TPK>
__device__ __forceinline__ void attn_online_step(const float (&q)[8], const float (&k)[8], const float (&v)[8],
                                                 bool ok, float &m, float &l, float (&acc)[8]) {
    float s = 0.f;
#pragma unroll
    for (int d = 0; d < 8; d++) s = fmaf(q[d], k[d], s);
#pragma unroll
    for (int o = TPK / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (ok) {
        const float mn = fmaxf(m, s);
        const float c = exp2f(m - mn), p = exp2f(s - mn);
        l = l * c + p;
#pragma unroll
        for (int d = 0; d < 8; d++) acc[d] = fmaf(p, v[d], acc[d] * c);
        m = mn;
    }
}

/* GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#define LLMC_GELU_S 0.7978845608028654f
__device__ __forceinline__ float gelu_tanh_f(float x) {
    float u = LLMC_GELU_S * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_tanh_grad_f(float x) {
    float u = LLMC_GELU_S * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float du = LLMC_GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

/* 32-bit mix (murmur3 finaliser). */
__host__ __device__ __forceinline__ uint32_t llmc_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}
/* Random bits for element idx of a stochastic-rounding pass seeded by seed. */
__host__ __device__ __forceinline__ uint32_t llmc_hash_index(uint32_t seed, uint64_t idx) {
    uint32_t h = llmc_mix32(seed * 0x9e3779b1u + (uint32_t)idx);
    return llmc_mix32(h ^ ((uint32_t)(idx >> 32) * 0x632be5abu + 0x7f4a7c15u));
}
/* Stochastic rounding to bf16: add 16 random bits below the kept mantissa, then truncate.
 * Works on the magnitude bits, so negatives round symmetrically. Inf/NaN round normally. */
__device__ __forceinline__ bf16 bf16_round_stochastic(float x, uint32_t rnd) {
    uint32_t b = __float_as_uint(x);
    if ((b & 0x7f800000u) == 0x7f800000u) return __float2bfloat16_rn(x);
    b = (b + (rnd & 0xffffu)) & 0xffff0000u;
    return __ushort_as_bfloat16((unsigned short)(b >> 16));
}

#endif

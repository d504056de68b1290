/* backend.cu — the CUDA backend: device lifecycle, memory, copies and the op table.
 * All work of a device runs in order on one non-blocking stream; nothing here is global. */
#include <stdlib.h>
#include <string.h>
#include "common.cuh"
#include "fp8.cuh"

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define CONVERT_CHUNK ((size_t)8 << 20) /* fp32 elements staged per upload/download chunk */

cudaStream_t llmc_cuda_stream(llmc_device *dev) { return llmc_cuda_impl_of(dev)->stream; }

llmc_status llmc_cuda_check(llmc_device *dev, cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return LLMC_OK;
    (void)cudaGetLastError(); /* clear a non-sticky error so later launch checks do not report it again */
    return llmc_device_fail(dev, LLMC_ERR_DEVICE, "CUDA error at %s:%d: %s: %s", file, line, what,
                            cudaGetErrorString(e));
}

llmc_status llmc_cuda_fail_alloc(llmc_device *dev, const char *what, size_t bytes, cudaError_t e) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    (void)cudaGetLastError();
    return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY,
                            "%s of %zu bytes (%.1f MiB) failed: %s (device has %.1f MiB free of %.1f MiB)", what,
                            bytes, bytes / 1048576.0, cudaGetErrorString(e), fr / 1048576.0, tot / 1048576.0);
}

llmc_status llmc_cuda_scratch(llmc_device *dev, size_t bytes, void **ptr) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (bytes <= im->scratch_bytes) {
        *ptr = im->scratch;
        return LLMC_OK;
    }
    /* Work already enqueued may still use the old buffer. */
    LLMC_CUDA_TRY(dev, cudaStreamSynchronize(im->stream));
    if (im->scratch) cudaFree(im->scratch);
    im->scratch = NULL;
    im->scratch_bytes = 0;
    size_t nb = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    cudaError_t e = cudaMalloc(&im->scratch, nb);
    if (e != cudaSuccess) {
        im->scratch = NULL;
        return llmc_cuda_fail_alloc(dev, "cudaMalloc of the op scratch buffer", nb, e);
    }
    im->scratch_bytes = nb;
    *ptr = im->scratch;
    return LLMC_OK;
}

llmc_status llmc_cuda_pinned_acquire(llmc_device *dev, size_t bytes, void **ptr) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    LLMC_CUDA_TRY(dev, cudaEventSynchronize(im->pinned_done));
    if (bytes > im->pinned_bytes) {
        if (im->pinned) cudaFreeHost(im->pinned);
        im->pinned = NULL;
        im->pinned_bytes = 0;
        size_t nb = (bytes + 65535) & ~(size_t)65535;
        cudaError_t e = cudaMallocHost(&im->pinned, nb);
        if (e != cudaSuccess) {
            im->pinned = NULL;
            return llmc_cuda_fail_alloc(dev, "cudaMallocHost of the pinned staging buffer", nb, e);
        }
        im->pinned_bytes = nb;
    }
    *ptr = im->pinned;
    return LLMC_OK;
}

llmc_status llmc_cuda_pinned_release(llmc_device *dev) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    LLMC_CUDA_TRY(dev, cudaEventRecord(im->pinned_done, im->stream));
    return LLMC_OK;
}

/* ---- lifecycle ---- */

static void cuda_destroy(llmc_device *dev) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (!im) return;
    cudaSetDevice(im->device);
    if (im->stream) cudaStreamSynchronize(im->stream);
    if (im->lt_ws) cudaFree(im->lt_ws);
    if (im->scratch) cudaFree(im->scratch);
    llmc_cuda_fp8_free(im);
    if (im->pinned) cudaFreeHost(im->pinned);
    if (im->pinned_done) cudaEventDestroy(im->pinned_done);
    if (im->readback) cudaFreeHost(im->readback);
    if (im->readback_done) cudaEventDestroy(im->readback_done);
    free(im->host_counts);
    free(im->host_distinct);
    if (im->lt) cublasLtDestroy(im->lt);
    llmc_cuda_nvtx_close(im);
    if (im->stream) cudaStreamDestroy(im->stream);
    (void)cudaGetLastError();
    free(im);
    dev->impl = NULL;
}

static llmc_status cuda_init(llmc_device *dev, int index) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return llmc_device_fail(dev, LLMC_ERR_DEVICE, "no CUDA device found (%s)",
                                e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    }
    if (index < 0 || index >= count)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "CUDA device index %d out of range: %d device(s)", index,
                                count);
    llmc_cuda_impl *im = (llmc_cuda_impl *)calloc(1, sizeof *im);
    if (!im) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "out of host memory for the CUDA device state");
    im->device = index;
    dev->impl = im;

    llmc_status st = LLMC_OK;
#define INIT_TRY(call)                                                          \
    do {                                                                        \
        cudaError_t e_ = (call);                                                \
        if (e_ != cudaSuccess) {                                                \
            st = llmc_cuda_check(dev, e_, #call, __FILE__, __LINE__);           \
            goto fail;                                                          \
        }                                                                       \
    } while (0)
    INIT_TRY(cudaSetDevice(index));
    INIT_TRY(cudaDeviceGetAttribute(&im->sm_count, cudaDevAttrMultiProcessorCount, index));
    INIT_TRY(cudaDeviceGetAttribute(&im->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index));
    {
        int major = 0, minor = 0;
        INIT_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index));
        INIT_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index));
        im->cc = major * 10 + minor;
    }
    INIT_TRY(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
    INIT_TRY(cudaEventCreateWithFlags(&im->pinned_done, cudaEventDisableTiming));
    INIT_TRY(cudaEventCreateWithFlags(&im->readback_done, cudaEventDisableTiming));
    {
        cublasStatus_t bs = cublasLtCreate(&im->lt);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            im->lt = NULL;
            st = llmc_device_fail(dev, LLMC_ERR_DEVICE, "cublasLtCreate failed: %s", cublasLtGetStatusString(bs));
            goto fail;
        }
    }
    llmc_cuda_nvtx_open(im);
    e = cudaMalloc(&im->lt_ws, LT_WORKSPACE_BYTES);
    if (e != cudaSuccess) {
        im->lt_ws = NULL;
        st = llmc_cuda_fail_alloc(dev, "cudaMalloc of the cuBLASLt workspace", LT_WORKSPACE_BYTES, e);
        goto fail;
    }
    im->lt_ws_bytes = LT_WORKSPACE_BYTES;
#undef INIT_TRY
    return LLMC_OK;
fail:
    cuda_destroy(dev);
    return st;
}

/* ---- memory and copies ---- */

static llmc_status cuda_alloc(llmc_device *dev, void **ptr, size_t bytes) {
    *ptr = NULL;
    if (bytes == 0) return LLMC_OK;
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        *ptr = NULL;
        return llmc_cuda_fail_alloc(dev, "cudaMalloc", bytes, e);
    }
    return LLMC_OK;
}

static void cuda_free(llmc_device *dev, void *ptr) {
    (void)dev;
    if (ptr) cudaFree(ptr); /* synchronises the device: no kernel still uses ptr */
}

static llmc_status cuda_zero(llmc_device *dev, void *ptr, size_t bytes) {
    if (bytes == 0) return LLMC_OK;
    LLMC_CUDA_TRY(dev, cudaMemsetAsync(ptr, 0, bytes, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

/* Host memory from the caller is pageable: the copy returns once src has been staged, so the
 * caller may reuse src at once. */
static llmc_status cuda_copy_h2d(llmc_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return LLMC_OK;
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

static llmc_status cuda_copy_d2h(llmc_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    LLMC_CUDA_TRY(dev, cudaStreamSynchronize(s));
    return LLMC_OK;
}

static llmc_status cuda_copy_d2d(llmc_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return LLMC_OK;
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

#define CONVERT_MAX_BLOCKS 4096
static llmc_status cuda_upload_f32(llmc_device *dev, void *dst, llmc_dtype dtype, const float *src, size_t n) {
    if (n == 0) return LLMC_OK;
    if (dtype == LLMC_F32) return cuda_copy_h2d(dev, dst, src, n * sizeof(float));
    if (dtype != LLMC_BF16) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "upload_f32: unknown dtype %d", (int)dtype);
    cudaStream_t s = llmc_cuda_stream(dev);
    size_t chunk = n < CONVERT_CHUNK ? n : CONVERT_CHUNK;
    void *tmp;
    llmc_status st = llmc_cuda_scratch(dev, chunk * sizeof(float), &tmp);
    if (st != LLMC_OK) return st;
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        /* Stream order keeps this copy behind the conversion of the previous chunk. */
        LLMC_CUDA_TRY(dev, cudaMemcpyAsync(tmp, src + off, m * sizeof(float), cudaMemcpyHostToDevice, s));
        f32_to_bf16_kernel<<<llmc_grid_size(m, 256, CONVERT_MAX_BLOCKS), 256, 0, s>>>((bf16 *)dst + off,
                                                                                    (const float *)tmp, m);
        LLMC_CUDA_LAUNCHED(dev);
    }
    return LLMC_OK;
}

static llmc_status cuda_download_f32(llmc_device *dev, float *dst, const void *src, llmc_dtype dtype, size_t n) {
    if (n == 0) return LLMC_OK;
    if (dtype == LLMC_F32) return cuda_copy_d2h(dev, dst, src, n * sizeof(float));
    if (dtype != LLMC_BF16)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "download_f32: unknown dtype %d", (int)dtype);
    cudaStream_t s = llmc_cuda_stream(dev);
    size_t chunk = n < CONVERT_CHUNK ? n : CONVERT_CHUNK;
    void *tmp;
    llmc_status st = llmc_cuda_scratch(dev, chunk * sizeof(float), &tmp);
    if (st != LLMC_OK) return st;
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        bf16_to_f32_kernel<<<llmc_grid_size(m, 256, CONVERT_MAX_BLOCKS), 256, 0, s>>>((float *)tmp,
                                                                                    (const bf16 *)src + off, m);
        LLMC_CUDA_LAUNCHED(dev);
        LLMC_CUDA_TRY(dev, cudaMemcpyAsync(dst + off, tmp, m * sizeof(float), cudaMemcpyDeviceToHost, s));
    }
    LLMC_CUDA_TRY(dev, cudaStreamSynchronize(s));
    return LLMC_OK;
}

static llmc_status cuda_synchronize(llmc_device *dev) {
    LLMC_CUDA_TRY(dev, cudaStreamSynchronize(llmc_cuda_stream(dev)));
    return LLMC_OK;
}

llmc_status llmc_cuda_readback_begin(llmc_device *dev, const void *src, size_t bytes) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (bytes > im->readback_bytes) { /* grow-only: a copy still in flight may target the old buffer */
        LLMC_CUDA_TRY(dev, cudaEventSynchronize(im->readback_done));
        if (im->readback) cudaFreeHost(im->readback);
        im->readback = NULL;
        im->readback_bytes = im->readback_len = 0;
        cudaError_t e = cudaMallocHost(&im->readback, bytes);
        if (e != cudaSuccess) {
            im->readback = NULL;
            return llmc_cuda_fail_alloc(dev, "cudaMallocHost of the readback buffer", bytes, e);
        }
        im->readback_bytes = bytes;
    }
    if (bytes) LLMC_CUDA_TRY(dev, cudaMemcpyAsync(im->readback, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    LLMC_CUDA_TRY(dev, cudaEventRecord(im->readback_done, im->stream));
    im->readback_len = bytes;
    return LLMC_OK;
}

llmc_status llmc_cuda_readback_end(llmc_device *dev, void *dst, size_t bytes) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (bytes > im->readback_len)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "readback_end of %zu bytes, but %zu were begun", bytes,
                                im->readback_len);
    LLMC_CUDA_TRY(dev, cudaEventSynchronize(im->readback_done));
    if (bytes) memcpy(dst, im->readback, bytes);
    return LLMC_OK;
}

/* ---- a decode loop one step ahead (backend.h): page-locked host memory, queued readbacks, events ---- */

static llmc_status cuda_host_alloc(llmc_device *dev, void **ptr, size_t bytes) {
    cudaError_t e = cudaMallocHost(ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *ptr = NULL;
        return llmc_cuda_fail_alloc(dev, "cudaMallocHost", bytes, e);
    }
    return LLMC_OK;
}

static void cuda_host_free(llmc_device *dev, void *ptr) {
    (void)dev;
    if (ptr) cudaFreeHost(ptr);
}

static llmc_status cuda_copy_d2h_async(llmc_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return LLMC_OK;
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

static llmc_status cuda_fence_new(llmc_device *dev, void **fence) {
    cudaEvent_t ev = NULL;
    LLMC_CUDA_TRY(dev, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    *fence = (void *)ev;
    return LLMC_OK;
}

static llmc_status cuda_fence_record(llmc_device *dev, void *fence) {
    LLMC_CUDA_TRY(dev, cudaEventRecord((cudaEvent_t)fence, llmc_cuda_stream(dev)));
    return LLMC_OK;
}

static llmc_status cuda_fence_wait(llmc_device *dev, void *fence) {
    LLMC_CUDA_TRY(dev, cudaEventSynchronize((cudaEvent_t)fence));
    return LLMC_OK;
}

static void cuda_fence_free(llmc_device *dev, void *fence) {
    (void)dev;
    if (fence) cudaEventDestroy((cudaEvent_t)fence);
}

static llmc_status cuda_memory_info(llmc_device *dev, size_t *free_bytes, size_t *total_bytes) {
    LLMC_CUDA_TRY(dev, cudaMemGetInfo(free_bytes, total_bytes));
    return LLMC_OK;
}

extern "C" const llmc_backend_ops llmc_cuda_backend_ops = {
    /* name */ "cuda",
    /* act_dtype */ LLMC_BF16,
    cuda_init,
    cuda_destroy,
    cuda_alloc,
    cuda_free,
    cuda_zero,
    cuda_copy_h2d,
    cuda_copy_d2h,
    cuda_copy_d2d,
    cuda_upload_f32,
    cuda_download_f32,
    cuda_synchronize,
    llmc_cuda_readback_begin,
    llmc_cuda_readback_end,
    cuda_memory_info,
    llmc_cuda_encoder_forward,
    llmc_cuda_encoder_backward,
    llmc_cuda_layernorm_forward,
    llmc_cuda_layernorm_backward,
    llmc_cuda_matmul_forward,
    llmc_cuda_matmul_backward,
    llmc_cuda_gelu_forward,
    llmc_cuda_attention_forward,
    llmc_cuda_attention_backward,
    llmc_cuda_classifier_forward,
    llmc_cuda_adamw_update,
    llmc_cuda_sum_squares,
    llmc_cuda_grad_norm_scale,
    llmc_cuda_encoder_forward_at,
    llmc_cuda_kv_append,
    llmc_cuda_attention_decode,
    llmc_cuda_argmax_rows,
    llmc_cuda_sample_rows,
    llmc_cuda_graph_begin,
    llmc_cuda_graph_end,
    llmc_cuda_graph_launch,
    llmc_cuda_graph_free,
    /* ---- compression (training side) ---- */
    llmc_cuda_classifier_distill_forward,
    llmc_cuda_zero_mask_build,
    llmc_cuda_zero_mask_apply,
    /* ---- decode as one kernel ---- */
    llmc_cuda_decode_layers,
    /* ---- a decode loop one step ahead ---- */
    cuda_host_alloc,
    cuda_host_free,
    cuda_copy_d2h_async,
    cuda_fence_new,
    cuda_fence_record,
    cuda_fence_wait,
    cuda_fence_free,
    llmc_cuda_feed_tokens,
    /* ---- layernorm fused into the matmul after it ---- */
    llmc_cuda_layernorm_matmul_forward,
    /* ---- fp8 training matmuls ---- */
    llmc_cuda_matmul_forward_fp8,
    llmc_cuda_matmul_backward_fp8,
};

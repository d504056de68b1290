/* backend.c — the CPU backend's op table, memory and conversions (fp32, OpenMP). */
#include <stdlib.h>
#include <string.h>
#include "cpu_internal.h"
#include "../file_io.h"

void *llmc_cpu_aligned_alloc(size_t bytes) {
    /* aligned_alloc wants a size that is a multiple of the alignment; never ask for 0 */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL; /* overflow */
    if (rounded == 0) rounded = 64;
    return aligned_alloc(64, rounded);
}

void llmc_cpu_aligned_free(void *p) { free(p); }

void *llmc_cpu_scratch(llmc_device *dev, size_t bytes, void **owned) {
    *owned = NULL;
    llmc_cpu_impl *impl = dev ? (llmc_cpu_impl *)dev->impl : NULL;
    if (!impl) {
        *owned = llmc_cpu_aligned_alloc(bytes);
        return *owned;
    }
    if (impl->ws_bytes < bytes) {
        llmc_cpu_aligned_free(impl->ws);
        impl->ws_bytes = 0;
        impl->ws = llmc_cpu_aligned_alloc(bytes);
        if (!impl->ws) return NULL;
        impl->ws_bytes = bytes;
    }
    return impl->ws;
}

void llmc_cpu_scratch_release(void *owned) { llmc_cpu_aligned_free(owned); }

static llmc_status cpu_init(llmc_device *dev, int index) {
    (void)index;
    llmc_cpu_impl *impl = calloc(1, sizeof *impl);
    if (!impl) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating the device context");
    dev->impl = impl;
    return LLMC_OK;
}

static void cpu_destroy(llmc_device *dev) {
    llmc_cpu_impl *impl = (llmc_cpu_impl *)dev->impl;
    if (impl) {
        llmc_cpu_aligned_free(impl->ws);
        free(impl->readback);
        free(impl);
    }
    dev->impl = NULL;
}

static llmc_status cpu_alloc(llmc_device *dev, void **ptr, size_t bytes) {
    *ptr = llmc_cpu_aligned_alloc(bytes);
    if (!*ptr) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating %zu bytes", bytes);
    return LLMC_OK;
}

static void cpu_free(llmc_device *dev, void *ptr) {
    (void)dev;
    llmc_cpu_aligned_free(ptr);
}

static llmc_status cpu_zero(llmc_device *dev, void *ptr, size_t bytes) {
    (void)dev;
    if (bytes) memset(ptr, 0, bytes);
    return LLMC_OK;
}

static llmc_status cpu_copy(llmc_device *dev, void *dst, const void *src, size_t bytes) {
    (void)dev;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return LLMC_OK;
}

static llmc_status cpu_upload_f32(llmc_device *dev, void *dst, llmc_dtype dtype, const float *src, size_t n) {
    if (dtype == LLMC_F32) return cpu_copy(dev, dst, src, n * sizeof(float));
    if (dtype != LLMC_BF16) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "cpu: unknown dtype %d", (int)dtype);
    llmc_f32_to_bf16_n((uint16_t *)dst, src, n);
    return LLMC_OK;
}

static llmc_status cpu_download_f32(llmc_device *dev, float *dst, const void *src, llmc_dtype dtype, size_t n) {
    if (dtype == LLMC_F32) return cpu_copy(dev, dst, src, n * sizeof(float));
    if (dtype != LLMC_BF16) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "cpu: unknown dtype %d", (int)dtype);
    llmc_bf16_to_f32_n(dst, (const uint16_t *)src, n);
    return LLMC_OK;
}

static llmc_status cpu_synchronize(llmc_device *dev) {
    (void)dev;
    return LLMC_OK;
}

llmc_status llmc_cpu_readback_begin(llmc_device *dev, const void *src, size_t bytes) {
    llmc_cpu_impl *impl = (llmc_cpu_impl *)dev->impl;
    if (bytes > impl->readback_bytes) {
        void *p = realloc(impl->readback, bytes);
        if (!p) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: no memory for a readback of %zu bytes", bytes);
        impl->readback = p;
        impl->readback_bytes = bytes;
    }
    if (bytes) memcpy(impl->readback, src, bytes);
    impl->readback_len = bytes;
    return LLMC_OK;
}

llmc_status llmc_cpu_readback_end(llmc_device *dev, void *dst, size_t bytes) {
    llmc_cpu_impl *impl = (llmc_cpu_impl *)dev->impl;
    if (bytes > impl->readback_len)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "readback_end of %zu bytes, but %zu were begun", bytes,
                                impl->readback_len);
    if (bytes) memcpy(dst, impl->readback, bytes);
    return LLMC_OK;
}

/* The CPU runs every op as it is called: its host memory is the device's, its copies are done
 * when they return and a fence has always been passed. */
static llmc_status cpu_host_alloc(llmc_device *dev, void **ptr, size_t bytes) {
    *ptr = malloc(bytes ? bytes : 1);
    return *ptr ? LLMC_OK : llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: no memory for %zu host bytes", bytes);
}
static void cpu_host_free(llmc_device *dev, void *ptr) {
    (void)dev;
    free(ptr);
}
static llmc_status cpu_fence_new(llmc_device *dev, void **fence) { return cpu_host_alloc(dev, fence, 1); }
static llmc_status cpu_fence_noop(llmc_device *dev, void *fence) {
    (void)dev, (void)fence;
    return LLMC_OK;
}

static llmc_status cpu_memory_info(llmc_device *dev, size_t *free_bytes, size_t *total_bytes) {
    (void)dev;
    llmc_host_memory(free_bytes, total_bytes); /* so the up-front memory checks hold on the CPU too */
    return LLMC_OK;
}

const llmc_backend_ops llmc_cpu_backend_ops = {
    .name = "cpu",
    .act_dtype = LLMC_F32,
    .init = cpu_init,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy_h2d = cpu_copy,
    .copy_d2h = cpu_copy,
    .copy_d2d = cpu_copy,
    .upload_f32 = cpu_upload_f32,
    .download_f32 = cpu_download_f32,
    .synchronize = cpu_synchronize,
    .readback_begin = llmc_cpu_readback_begin,
    .readback_end = llmc_cpu_readback_end,
    .memory_info = cpu_memory_info,
    .encoder_forward = llmc_cpu_encoder_forward,
    .encoder_backward = llmc_cpu_encoder_backward,
    .layernorm_forward = llmc_cpu_layernorm_forward,
    .layernorm_backward = llmc_cpu_layernorm_backward,
    .matmul_forward = llmc_cpu_matmul_forward,
    .matmul_backward = llmc_cpu_matmul_backward,
    .gelu_forward = llmc_cpu_gelu_forward,
    .attention_forward = llmc_cpu_attention_forward,
    .attention_backward = llmc_cpu_attention_backward,
    .classifier_forward = llmc_cpu_classifier_forward,
    .adamw_update = llmc_cpu_adamw_update,
    .sum_squares = llmc_cpu_sum_squares,
    .grad_norm_scale = llmc_cpu_grad_norm_scale,
    .encoder_forward_at = llmc_cpu_encoder_forward_at,
    .kv_append = llmc_cpu_kv_append,
    .attention_decode = llmc_cpu_attention_decode,
    .argmax_rows = llmc_cpu_argmax_rows,
    .sample_rows = llmc_cpu_sample_rows,
    .classifier_distill_forward = llmc_cpu_classifier_distill_forward,
    .zero_mask_build = llmc_cpu_zero_mask_build,
    .zero_mask_apply = llmc_cpu_zero_mask_apply,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .copy_d2h_async = cpu_copy,
    .fence_new = cpu_fence_new,
    .fence_record = cpu_fence_noop,
    .fence_wait = cpu_fence_noop,
    .fence_free = cpu_host_free,
    .feed_tokens = llmc_cpu_feed_tokens,
};

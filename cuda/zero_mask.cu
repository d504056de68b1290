/* zero_mask.cu — keep_zeros' bit masks (backend.h): build marks the weights that are exactly zero,
 * apply puts the marked weights, master weights and AdamW moments back to zero after an update.
 * build: one thread per 32-bit word, so words shared with a neighbouring range are read, changed
 * in the range's bits only and written back by one thread. apply: one thread per element, which
 * writes only where its bit is set. */
#include "common.cuh"

template <typename T>
__device__ __forceinline__ bool is_zero(const T *w, size_t i);
template <>
__device__ __forceinline__ bool is_zero<float>(const float *w, size_t i) {
    return w[i] == 0.0f;
}
template <>
__device__ __forceinline__ bool is_zero<bf16>(const bf16 *w, size_t i) {
    return (__bfloat16_as_ushort(w[i]) & 0x7FFFu) == 0;
}

template <typename T>
__global__ void zero_mask_build_kernel(uint32_t *mask, size_t bit0, const T *w, size_t n, size_t w0, size_t words) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < words; k += (size_t)gridDim.x * blockDim.x) {
        const size_t word = w0 + k, first = word * 32;
        const size_t lo = first > bit0 ? first : bit0, hi = first + 32 < bit0 + n ? first + 32 : bit0 + n;
        uint32_t bits = mask[word];
        for (size_t b = lo; b < hi; b++) {
            const uint32_t bit = 1u << (b & 31);
            bits = is_zero<T>(w, b - bit0) ? bits | bit : bits & ~bit;
        }
        mask[word] = bits;
    }
}

__global__ void zero_mask_apply_kernel(const uint32_t *mask, size_t bit0, bf16 *params, float *master, float *m,
                                       float *v, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t b = bit0 + i;
        if (!((mask[b >> 5] >> (b & 31)) & 1u)) continue;
        params[i] = __float2bfloat16_rn(0.0f);
        if (master) master[i] = 0.0f;
        m[i] = 0.0f;
        v[i] = 0.0f;
    }
}

llmc_status llmc_cuda_zero_mask_build(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w, llmc_dtype dtype,
                                      size_t n) {
    if (dtype != LLMC_F32 && dtype != LLMC_BF16)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "zero_mask_build: no kernel for dtype %d", (int)dtype);
    if (n == 0) return LLMC_OK;
    const size_t w0 = bit0 / 32, words = (bit0 + n - 1) / 32 - w0 + 1;
    cudaStream_t s = llmc_cuda_stream(dev);
    const int grid = llmc_cuda_grid(dev, words, 256, 8);
    if (dtype == LLMC_F32)
        zero_mask_build_kernel<float><<<grid, 256, 0, s>>>(mask, bit0, (const float *)w, n, w0, words);
    else
        zero_mask_build_kernel<bf16><<<grid, 256, 0, s>>>(mask, bit0, (const bf16 *)w, n, w0, words);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_zero_mask_apply(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params,
                                      float *master, float *m, float *v, size_t n) {
    if (n == 0) return LLMC_OK;
    zero_mask_apply_kernel<<<llmc_cuda_grid(dev, n, 256, 8), 256, 0, llmc_cuda_stream(dev)>>>(
        mask, bit0, (bf16 *)params, master, m, v, n);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

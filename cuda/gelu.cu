/* gelu.cu — elementwise GELU (tanh form) forward, and the in-place GELU backward used
 * when the matmul cannot fuse it into cuBLASLt's epilogue. Any n: 16-byte vectors over the
 * body when both pointers are 16-byte aligned, scalar elements for the tail. */
#include "common.cuh"

template <int VEC>
__global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t nvec) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nvec; i += (size_t)gridDim.x * blockDim.x) {
        float x[VEC];
        ld_bf16_cs<VEC>(x, inp + i * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] = gelu_tanh_f(x[k]);
        st_bf16<VEC>(out + i * VEC, x);
    }
}

template <int VEC>
__global__ void gelu_backward_inplace_kernel(bf16 *d, const bf16 *pre, size_t nvec) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nvec; i += (size_t)gridDim.x * blockDim.x) {
        float g[VEC], x[VEC];
        ld_bf16<VEC>(g, d + i * VEC);
        ld_bf16_cs<VEC>(x, pre + i * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) g[k] *= gelu_tanh_grad_f(x[k]);
        st_bf16<VEC>(d + i * VEC, g);
    }
}

llmc_status llmc_cuda_gelu_forward(llmc_device *dev, void *out, const void *inp, size_t n) {
    if (n == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    const int threads = 256;
    const bool aligned = llmc_is_aligned16(out) && llmc_is_aligned16(inp);
    return llmc_cuda_vec8_split(n, aligned, [&](auto vec, size_t first, size_t count) {
        gelu_forward_kernel<decltype(vec)::value><<<llmc_cuda_grid(dev, count, threads, 16), threads, 0, s>>>(
            (bf16 *)out + first, (const bf16 *)inp + first, count);
        LLMC_CUDA_LAUNCHED(dev);
        return LLMC_OK;
    });
}

llmc_status llmc_cuda_gelu_backward_inplace(llmc_device *dev, void *dinp, const void *pre, size_t n) {
    if (n == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    const int threads = 256;
    const bool aligned = llmc_is_aligned16(dinp) && llmc_is_aligned16(pre);
    return llmc_cuda_vec8_split(n, aligned, [&](auto vec, size_t first, size_t count) {
        gelu_backward_inplace_kernel<decltype(vec)::value><<<llmc_cuda_grid(dev, count, threads, 16), threads, 0, s>>>(
            (bf16 *)dinp + first, (const bf16 *)pre + first, count);
        LLMC_CUDA_LAUNCHED(dev);
        return LLMC_OK;
    });
}

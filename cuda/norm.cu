/* norm.cu — sum of squares of a bf16 tensor, deterministic: a grid whose size depends only on
 * n strides over the elements (fp32 per thread, fixed block tree), writes one partial per
 * block, and a single block adds the partials in fixed order in double. grad_norm_scale keeps
 * the result on the device, as the norm and AdamW's clip scale, so a training step never
 * waits for the host between its backward pass and its update. */
#include "common.cuh"

#define SS_THREADS 512
#define SS_MAX_BLOCKS 1024

template <int VEC>
__global__ void sum_squares_partial_kernel(float *partials, const bf16 *x, size_t nvec, size_t n) {
    __shared__ float red[32];
    const size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    float acc = 0.0f;
    for (size_t i = tid; i < nvec; i += stride) {
        float f[VEC];
        ld_bf16_cs<VEC>(f, x + i * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) acc += f[k] * f[k];
    }
    for (size_t i = nvec * VEC + tid; i < n; i += stride) { /* tail of the vector path */
        float f = __bfloat162float(x[i]);
        acc += f * f;
    }
    acc = block_sum(acc, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

/* *out = the sum; norm_scale (when not NULL) = {norm, clip scale} of it */
__global__ void sum_squares_final_kernel(double *out, float *norm_scale, const float *partials, int nparts,
                                         float grad_clip) {
    __shared__ double red[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += (double)partials[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) red[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < nwarps ? red[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) {
            *out = acc;
            if (norm_scale) {
                const float norm = (float)sqrt(acc);
                norm_scale[0] = norm;
                norm_scale[1] = llmc_clip_scale(norm, grad_clip);
            }
        }
    }
}

/* Queues the sum of squares of x into the scratch (a double at *dsum) and, with norm_scale, the
 * norm and clip scale there too. n == 0 sums nothing: 0. */
static llmc_status launch_sum_squares(llmc_device *dev, double **dsum_out, float *norm_scale, const void *x, size_t n,
                                      float grad_clip) {
    cudaStream_t s = llmc_cuda_stream(dev);
    const bool vec = llmc_is_aligned16(x);
    const size_t nvec = vec ? n / 8 : 0;
    const size_t units = vec ? nvec + (n - nvec * 8) : n;
    const int blocks = n ? llmc_grid_size(units, (size_t)SS_THREADS * 4, SS_MAX_BLOCKS) : 1;
    void *scratch;
    llmc_status st = llmc_cuda_scratch(dev, 256 + blocks * sizeof(float), &scratch);
    if (st != LLMC_OK) return st;
    double *dsum = (double *)scratch;
    float *partials = (float *)((char *)scratch + 256);
    if (n) {
        if (vec)
            sum_squares_partial_kernel<8><<<blocks, SS_THREADS, 0, s>>>(partials, (const bf16 *)x, nvec, n);
        else
            sum_squares_partial_kernel<1><<<blocks, SS_THREADS, 0, s>>>(partials, (const bf16 *)x, n, n);
        LLMC_CUDA_LAUNCHED(dev);
    }
    sum_squares_final_kernel<<<1, SS_THREADS, 0, s>>>(dsum, norm_scale, partials, n ? blocks : 0, grad_clip);
    LLMC_CUDA_LAUNCHED(dev);
    *dsum_out = dsum;
    return LLMC_OK;
}

llmc_status llmc_cuda_grad_norm_scale(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip) {
    double *dsum;
    return launch_sum_squares(dev, &dsum, out, grads, n, grad_clip);
}

llmc_status llmc_cuda_sum_squares(llmc_device *dev, double *out, const void *x, size_t n) {
    *out = 0.0;
    if (n == 0) return LLMC_OK;
    cudaStream_t s = llmc_cuda_stream(dev);
    double *dsum;
    llmc_status st = launch_sum_squares(dev, &dsum, NULL, x, n, 0.0f);
    if (st != LLMC_OK) return st;
    double h = 0.0;
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(&h, dsum, sizeof h, cudaMemcpyDeviceToHost, s));
    LLMC_CUDA_TRY(dev, cudaStreamSynchronize(s));
    *out = h;
    return LLMC_OK;
}

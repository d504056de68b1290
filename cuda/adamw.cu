/* adamw.cu — the AdamW update (backend.h gives the formula) over n elements: bf16 params and
 * grads, fp32 m, v and optional fp32 master weights. The new bf16 params are stochastically
 * rounded with bits hashed from (seed, index_base + element index), so a step is deterministic
 * given its seed and independent of how the elements are split over threads or launches. The
 * gradient scale is read from device memory (grad_norm_scale's), and a non-finite one makes
 * the kernel change nothing. Any n and any alignment:
 * 16-byte vectors over the body when every pointer allows it, scalars for the rest. */
#include "common.cuh"

typedef struct adamw_args {
    float lr, beta1, beta2, b1_correction, b2_correction, eps, weight_decay;
    const float *grad_scale; /* device: written by grad_norm_scale just before */
    uint32_t seed;
} adamw_args;

template <int VEC>
__global__ void adamw_kernel(bf16 *params, float *master, const bf16 *grads, float *m, float *v, size_t nvec,
                             size_t first, adamw_args a) {
    const float scale = *a.grad_scale;
    if (!isfinite(scale)) return; /* a non-finite gradient norm: the step changes nothing */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nvec; i += (size_t)gridDim.x * blockDim.x) {
        const size_t e = i * VEC; /* element offset inside this launch; first + e names it for the hash */
        float g[VEC], mm[VEC], vv[VEC], p[VEC];
        ld_bf16_cs<VEC>(g, grads + e);
        ld_f32<VEC>(mm, m + e);
        ld_f32<VEC>(vv, v + e);
        if (master)
            ld_f32<VEC>(p, master + e);
        else
            ld_bf16<VEC>(p, params + e);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float gk = g[k] * scale;
            mm[k] = a.beta1 * mm[k] + (1.0f - a.beta1) * gk;
            vv[k] = a.beta2 * vv[k] + (1.0f - a.beta2) * gk * gk;
            const float mhat = mm[k] / a.b1_correction;
            const float vhat = vv[k] / a.b2_correction;
            p[k] -= a.lr * (mhat / (sqrtf(vhat) + a.eps) + a.weight_decay * p[k]);
        }
        st_f32<VEC>(m + e, mm);
        st_f32<VEC>(v + e, vv);
        if (master) st_f32<VEC>(master + e, p);
        bf16 out[VEC];
#pragma unroll
        for (int k = 0; k < VEC; k++) out[k] = bf16_round_stochastic(p[k], llmc_hash_index(a.seed, first + e + k));
        st_bf16<VEC>(params + e, out);
    }
}

llmc_status llmc_cuda_adamw_update(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                   float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                   float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                   uint32_t seed, size_t index_base) {
    if (n == 0) return LLMC_OK;
    adamw_args a = {lr, beta1, beta2, b1_correction, b2_correction, eps, weight_decay, grad_scale, seed};
    cudaStream_t s = llmc_cuda_stream(dev);
    bf16 *p = (bf16 *)params;
    const bf16 *g = (const bf16 *)grads;
    const bool aligned = llmc_is_aligned16(p) && llmc_is_aligned16(g) && llmc_is_aligned16(m) &&
                         llmc_is_aligned16(v) && llmc_is_aligned16(master);
    return llmc_cuda_vec8_split(n, aligned, [&](auto vec, size_t first, size_t count) {
        adamw_kernel<decltype(vec)::value><<<llmc_cuda_grid(dev, count, 256, 8), 256, 0, s>>>(
            p + first, master ? master + first : NULL, g + first, m + first, v + first, count, index_base + first, a);
        LLMC_CUDA_LAUNCHED(dev);
        return LLMC_OK;
    });
}

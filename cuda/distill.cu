/* distill.cu — the distillation classifier over (N, Vp) bf16 logits and teacher logits
 * (backend.h gives the formula).
 *
 * One block per row, as classifier.cu. Pass 1 reads both rows once (16-byte loads) and keeps per
 * thread three online softmax accumulators: (max z; sum e^(z-m); sum e^((z-m)/tau)) for the student
 * at temperatures 1 and tau, and (max t; sum e^((t-mt)/tau); sum e^((t-mt)/tau) (t - z)) for the
 * teacher, whose last sum is KL's cross term. They are merged across the block; pass 2 re-reads
 * both rows from L2 and writes the dlogits over the student's row. Rows whose target is
 * LLMC_IGNORE_TARGET only write zeros. */
#include <math.h>
#include "common.cuh"

typedef struct distill_acc {
    float m, s, s_tau;   /* student: max, sum e^(z-m), sum e^((z-m)/tau) */
    float mt, st, wt;    /* teacher: max, sum e^((t-mt)/tau), sum e^((t-mt)/tau) (t - z) */
} distill_acc;

__device__ __forceinline__ distill_acc acc_empty() { return {-INFINITY, 0.0f, 0.0f, -INFINITY, 0.0f, 0.0f}; }

/* a (this thread's) absorbs b. */
__device__ __forceinline__ void acc_merge(distill_acc &a, const distill_acc &b, float inv_tau) {
    const float m = fmaxf(a.m, b.m);
    if (m != -INFINITY) {
        const float ra = __expf(a.m - m), rb = __expf(b.m - m);
        const float ra_t = __expf((a.m - m) * inv_tau), rb_t = __expf((b.m - m) * inv_tau);
        a.s = a.s * ra + b.s * rb;
        a.s_tau = a.s_tau * ra_t + b.s_tau * rb_t;
        a.m = m;
    }
    const float mt = fmaxf(a.mt, b.mt);
    if (mt != -INFINITY) {
        const float ra = __expf((a.mt - mt) * inv_tau), rb = __expf((b.mt - mt) * inv_tau);
        a.st = a.st * ra + b.st * rb;
        a.wt = a.wt * ra + b.wt * rb;
        a.mt = mt;
    }
}

__device__ __forceinline__ distill_acc acc_shfl(const distill_acc &a, int o) {
    distill_acc b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    b.s_tau = __shfl_xor_sync(0xffffffffu, a.s_tau, o);
    b.mt = __shfl_xor_sync(0xffffffffu, a.mt, o);
    b.st = __shfl_xor_sync(0xffffffffu, a.st, o);
    b.wt = __shfl_xor_sync(0xffffffffu, a.wt, o);
    return b;
}

/* Adds the valid elements (column < V) of one vector pair. */
template <int VEC>
__device__ __forceinline__ void acc_add(distill_acc &a, const float (&z)[VEC], const float (&t)[VEC], int col0, int V,
                                        float inv_tau) {
    float vm = -INFINITY, vmt = -INFINITY;
#pragma unroll
    for (int k = 0; k < VEC; k++)
        if (col0 + k < V) {
            vm = fmaxf(vm, z[k]);
            vmt = fmaxf(vmt, t[k]);
        }
    if (vm == -INFINITY && vmt == -INFINITY) return; /* no valid column (or all -inf) */
    if (vm > a.m) {
        a.s *= __expf(a.m - vm);
        a.s_tau *= __expf((a.m - vm) * inv_tau);
        a.m = vm;
    }
    if (vmt > a.mt) {
        const float r = __expf((a.mt - vmt) * inv_tau);
        a.st *= r;
        a.wt *= r;
        a.mt = vmt;
    }
#pragma unroll
    for (int k = 0; k < VEC; k++)
        if (col0 + k < V) {
            const float d = z[k] - a.m, e = __expf((t[k] - a.mt) * inv_tau);
            a.s += __expf(d);
            a.s_tau += __expf(d * inv_tau);
            a.st += e;
            a.wt += e * (t[k] - z[k]);
        }
}

typedef struct distill_args {
    int V, Vp;
    float dloss, alpha, tau, inv_tau;
} distill_args;

template <int VEC>
__device__ __forceinline__ void dlogits_vector(bf16 *dst, const float (&z)[VEC], const float (&t)[VEC], int col0,
                                               int target, float lse, float lse_tau, float lse_t,
                                               const distill_args &a) {
    float d[VEC];
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        const int c = col0 + k;
        const float p = __expf(z[k] - lse), p_tau = __expf(z[k] * a.inv_tau - lse_tau);
        const float q_tau = __expf(t[k] * a.inv_tau - lse_t);
        const float g = a.alpha * (p - (c == target ? 1.0f : 0.0f)) + (1.0f - a.alpha) * a.tau * (p_tau - q_tau);
        d[k] = c < a.V ? g * a.dloss : 0.0f;
    }
    st_bf16_cs<VEC>(dst, d);
}

/* VEC: 8 (Vp % 8 == 0, both rows aligned) or 1; THREADS: the block size it is launched with. */
template <int VEC, int THREADS>
__global__ void __launch_bounds__(THREADS)
    distill_kernel(float *losses, bf16 *logits, const bf16 *teacher, const int *targets, distill_args a) {
    __shared__ distill_acc red[32];
    __shared__ float lse_shared[3];
    const int tid = threadIdx.x;
    bf16 *x = logits + (size_t)blockIdx.x * a.Vp;
    const bf16 *tx = teacher + (size_t)blockIdx.x * a.Vp;
    const int nvec = a.Vp / VEC;
    const int target = targets[blockIdx.x];
    if (target == LLMC_IGNORE_TARGET) { /* no loss, no gradient (block-uniform exit) */
        if (tid == 0) losses[blockIdx.x] = 0.0f;
        if (a.dloss != 0.0f) {
            const float zero[VEC] = {};
            for (int i = tid; i < nvec; i += blockDim.x) st_bf16_cs<VEC>(x + (size_t)i * VEC, zero);
        }
        return;
    }
    float target_logit = 0.0f;
    if (tid == 0 && target >= 0 && target < a.V) target_logit = __bfloat162float(x[target]); /* before any write */

    distill_acc acc = acc_empty();
    for (int i = tid; i < nvec; i += blockDim.x) {
        float z[VEC], t[VEC];
        ld_bf16<VEC>(z, x + (size_t)i * VEC);
        ld_bf16<VEC>(t, tx + (size_t)i * VEC);
        acc_add<VEC>(acc, z, t, i * VEC, a.V, a.inv_tau);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc_merge(acc, acc_shfl(acc, o), a.inv_tau);
    const int lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) red[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < nwarps ? red[lane] : acc_empty();
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc_merge(acc, acc_shfl(acc, o), a.inv_tau);
        if (lane == 0) {
            const float lse = acc.m + logf(acc.s), lse_tau = acc.m * a.inv_tau + logf(acc.s_tau);
            const float lse_t = acc.mt * a.inv_tau + logf(acc.st);
            const float kl = acc.wt / acc.st * a.inv_tau - lse_t + lse_tau;
            lse_shared[0] = lse;
            lse_shared[1] = lse_tau;
            lse_shared[2] = lse_t;
            losses[blockIdx.x] = (target >= 0 && target < a.V)
                                     ? a.alpha * (lse - target_logit) + (1.0f - a.alpha) * a.tau * a.tau * kl
                                     : NAN;
        }
    }
    if (a.dloss == 0.0f) return;
    __syncthreads();
    const float lse = lse_shared[0], lse_tau = lse_shared[1], lse_t = lse_shared[2];
    for (int i = tid; i < nvec; i += blockDim.x) {
        float z[VEC], t[VEC];
        ld_bf16<VEC>(z, x + (size_t)i * VEC);
        ld_bf16<VEC>(t, tx + (size_t)i * VEC);
        dlogits_vector<VEC>(x + (size_t)i * VEC, z, t, i * VEC, target, lse, lse_tau, lse_t, a);
    }
}

llmc_status llmc_cuda_classifier_distill_forward(llmc_device *dev, float *losses, void *logits,
                                                 const void *teacher_logits, const int *targets, int N, int V, int Vp,
                                                 float dloss, float alpha, float tau) {
    if (N <= 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "classifier_distill_forward: bad shape N=%d V=%d Vp=%d", N,
                                V, Vp);
    if (!(alpha >= 0.0f && alpha <= 1.0f) || !(tau > 0.0f) || !isfinite(tau))
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                "classifier_distill_forward: alpha %g must lie in [0, 1] and tau %g be > 0",
                                (double)alpha, (double)tau);
    const distill_args a = {V, Vp, dloss, alpha, tau, 1.0f / tau}; /* host division: IEEE, 1/1 is exactly 1 */
    cudaStream_t s = llmc_cuda_stream(dev);
    if (Vp % 8 == 0 && llmc_is_aligned16(logits) && llmc_is_aligned16(teacher_logits))
        distill_kernel<8, 1024><<<N, 1024, 0, s>>>(losses, (bf16 *)logits, (const bf16 *)teacher_logits, targets, a);
    else
        distill_kernel<1, 256><<<N, 256, 0, s>>>(losses, (bf16 *)logits, (const bf16 *)teacher_logits, targets, a);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* layernorm.cu — residual add fused with layernorm, and its deterministic backward.
 *
 * One warp per row. Rows are read with 16-byte vectors when C is a multiple of 8 and every
 * pointer is 16-byte aligned (GPT-2's C = 768..1600 always are); any other C takes the same
 * kernels with scalar accesses. C is limited by shared memory: forward stages a row of bf16
 * per warp, backward keeps 2 fp32 accumulators per column per warp (C <= 29000 on H100). */
#include "layernorm_row.cuh"

/* ---- forward ----
 * A warp per row: layernorm_row.cuh (x = inp (+ inp2), rounded to bf16: the residual stream
 * the model keeps and the backward will see). */
template <int VEC>
__global__ void layernorm_forward_kernel(bf16 *residual_out, bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                         const bf16 *inp2, const bf16 *w, const bf16 *b, int N, int C) {
    extern __shared__ __align__(16) unsigned char ln_smem[];
    const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int row = blockIdx.x * warps + warp;
    /* Programmatic dependent launch (forward only, when llmc_cuda_pdl(dev)): wait before touching
     * any memory, then let the successor launch (after the wait, so a dependent's pre-wait reads
     * overlap at most this kernel). */
    llmc_pdl_wait();
    llmc_pdl_launch_dependents();
    if (row >= N) return; /* no block-wide barrier below */
    const size_t base = (size_t)row * C;
    layernorm_row<VEC>(out + base, reinterpret_cast<bf16 *>(ln_smem) + (size_t)warp * C,
                       residual_out ? residual_out + base : nullptr, inp + base, inp2 ? inp2 + base : nullptr, w, b,
                       C, mean ? mean + row : nullptr, rstd ? rstd + row : nullptr);
}

llmc_status llmc_cuda_layernorm_forward(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                        const void *inp, const void *inp2, const llmc_tensor *weight,
                                        const llmc_tensor *bias, int N, int C) {
    if (N <= 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_forward: bad shape N=%d C=%d", N, C);
    LLMC_CUDA_WEIGHTS("layernorm_forward", weight, bias);
    const void *w = weight->data, *b = llmc_tensor_data(bias);
    if (inp2 && !residual_out)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_forward: inp2 given without residual_out");
    const size_t row_bytes = (size_t)C * sizeof(bf16);
    const int optin = llmc_cuda_impl_of(dev)->smem_optin;
    if (row_bytes > (size_t)optin)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "layernorm_forward: C=%d too large (max %d)", C,
                                (int)(optin / sizeof(bf16)));
    int warps = (int)((48 * 1024) / row_bytes);
    if (warps > 8) warps = 8;
    if (warps < 1) warps = 1;
    const size_t smem = (size_t)warps * row_bytes;
    const bool vec = C % 8 == 0 && llmc_is_aligned16(out) && llmc_is_aligned16(inp) && llmc_is_aligned16(w) &&
                     llmc_is_aligned16(b) && llmc_is_aligned16(inp2) && llmc_is_aligned16(residual_out);
    auto kernel = vec ? layernorm_forward_kernel<8> : layernorm_forward_kernel<1>;
    if (smem > 48 * 1024)
        LLMC_CUDA_TRY(dev, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    LLMC_CUDA_TRY(dev, llmc_launch_pdl(llmc_cuda_pdl(dev), kernel, dim3((unsigned)LLMC_CEIL_DIV(N, warps)),
                                       dim3((unsigned)(warps * 32)), smem, llmc_cuda_stream(dev), (bf16 *)residual_out,
                                       (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)inp2,
                                       (const bf16 *)w, (const bf16 *)b, N, C));
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* ---- backward ----
 * dnorm = w * dout, xhat = (x - mean) * rstd
 * dinp += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
 * dw += sum_rows dout * xhat, db += sum_rows dout
 * A fixed grid of blocks strides over rows (one warp per row). Each warp accumulates dw/db for
 * its rows in its own shared-memory slice (lanes own disjoint columns: no atomics); at the end
 * the block adds its warps' slices in order into fp32 partials[block], and a second kernel adds
 * the partials in block order into the bf16 dw/db.
 * The row needs two passes (the row sums come first). With CACHE > 0 (16-byte path, C <= 2048)
 * each lane keeps its CACHE vectors of dout and x in registers between the passes; the
 * shared-memory accumulators leave little L1, so re-reading (CACHE = 0) goes to L2. */
template <int VEC, int CACHE>
__global__ void layernorm_backward_kernel(bf16 *dinp, float *part_dw, float *part_db, const bf16 *dout,
                                          const bf16 *inp, const bf16 *w, const float *mean, const float *rstd,
                                          int N, int C) {
    static_assert(VEC == 8 || CACHE == 0, "the register cache holds 16-byte vectors");
    extern __shared__ __align__(16) unsigned char ln_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float *acc_dw = reinterpret_cast<float *>(ln_smem) + (size_t)warp * 2 * C;
    float *acc_db = acc_dw + C;
    const int nvec = C / VEC;
    for (int i = lane; i < nvec; i += 32) {
        float z[VEC];
#pragma unroll
        for (int k = 0; k < VEC; k++) z[k] = 0.0f;
        st_f32<VEC>(acc_dw + i * VEC, z);
        st_f32<VEC>(acc_db + i * VEC, z);
    }

    for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
        const size_t base = (size_t)row * C;
        const float m = mean[row], s = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;
        if constexpr (CACHE > 0) {
            int4 gr[CACHE], xr[CACHE];
#pragma unroll
            for (int j = 0; j < CACHE; j++) {
                const int i = lane + 32 * j;
                if (i < nvec) {
                    gr[j] = *reinterpret_cast<const int4 *>(dout + base + i * 8);
                    xr[j] = *reinterpret_cast<const int4 *>(inp + base + i * 8);
                }
            }
#pragma unroll
            for (int j = 0; j < CACHE; j++) {
                const int i = lane + 32 * j;
                if (i < nvec) {
                    float g[8], x[8], wv[8];
                    unpack_bf16x8(g, gr[j]);
                    unpack_bf16x8(x, xr[j]);
                    ld_bf16<8>(wv, w + i * 8);
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        float dn = wv[k] * g[k];
                        s1 += dn;
                        s2 += dn * (x[k] - m) * s;
                    }
                }
            }
            s1 = warp_sum(s1) / (float)C;
            s2 = warp_sum(s2) / (float)C;
            int4 dr[CACHE];
#pragma unroll
            for (int j = 0; j < CACHE; j++) {
                const int i = lane + 32 * j;
                if (i < nvec) dr[j] = *reinterpret_cast<const int4 *>(dinp + base + i * 8);
            }
#pragma unroll
            for (int j = 0; j < CACHE; j++) {
                const int i = lane + 32 * j;
                if (i < nvec) {
                    float g[8], x[8], wv[8], di[8], adw[8], adb[8];
                    unpack_bf16x8(g, gr[j]);
                    unpack_bf16x8(x, xr[j]);
                    unpack_bf16x8(di, dr[j]);
                    ld_bf16<8>(wv, w + i * 8);
                    ld_f32<8>(adw, acc_dw + i * 8);
                    ld_f32<8>(adb, acc_db + i * 8);
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        float xh = (x[k] - m) * s;
                        di[k] += s * (wv[k] * g[k] - s1 - xh * s2);
                        adw[k] += g[k] * xh;
                        adb[k] += g[k];
                    }
                    st_bf16<8>(dinp + base + i * 8, di);
                    st_f32<8>(acc_dw + i * 8, adw);
                    st_f32<8>(acc_db + i * 8, adb);
                }
            }
        } else {
            for (int i = lane; i < nvec; i += 32) {
                float g[VEC], x[VEC], wv[VEC];
                ld_bf16<VEC>(g, dout + base + i * VEC);
                ld_bf16<VEC>(x, inp + base + i * VEC);
                ld_bf16<VEC>(wv, w + i * VEC);
#pragma unroll
                for (int k = 0; k < VEC; k++) {
                    float dn = wv[k] * g[k];
                    s1 += dn;
                    s2 += dn * (x[k] - m) * s;
                }
            }
            s1 = warp_sum(s1) / (float)C;
            s2 = warp_sum(s2) / (float)C;
            for (int i = lane; i < nvec; i += 32) {
                float g[VEC], x[VEC], wv[VEC], di[VEC], adw[VEC], adb[VEC];
                ld_bf16<VEC>(g, dout + base + i * VEC);
                ld_bf16<VEC>(x, inp + base + i * VEC);
                ld_bf16<VEC>(wv, w + i * VEC);
                ld_bf16<VEC>(di, dinp + base + i * VEC);
                ld_f32<VEC>(adw, acc_dw + i * VEC);
                ld_f32<VEC>(adb, acc_db + i * VEC);
#pragma unroll
                for (int k = 0; k < VEC; k++) {
                    float xh = (x[k] - m) * s;
                    di[k] += s * (wv[k] * g[k] - s1 - xh * s2);
                    adw[k] += g[k] * xh;
                    adb[k] += g[k];
                }
                st_bf16<VEC>(dinp + base + i * VEC, di);
                st_f32<VEC>(acc_dw + i * VEC, adw);
                st_f32<VEC>(acc_db + i * VEC, adb);
            }
        }
    }
    __syncthreads();
    const float *acc = reinterpret_cast<const float *>(ln_smem);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sw = 0.0f, sb = 0.0f;
        for (int k = 0; k < warps; k++) {
            sw += acc[(size_t)k * 2 * C + c];
            sb += acc[(size_t)k * 2 * C + C + c];
        }
        part_dw[(size_t)blockIdx.x * C + c] = sw;
        part_db[(size_t)blockIdx.x * C + c] = sb;
    }
}

/* dw/db[c] += sum over the partials in a fixed order: block (32 columns x PG_LANES lanes), lane y
 * sums partials y, y + PG_LANES, ...; the lanes are then added in order. */
#define PG_LANES 16
__global__ void layernorm_param_grad_kernel(bf16 *dw, bf16 *db, const float *part_dw, const float *part_db,
                                            int nparts, int C) {
    __shared__ float rw[PG_LANES][33], rb[PG_LANES][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sw = 0.0f, sb = 0.0f;
    if (c < C)
        for (int p = threadIdx.y; p < nparts; p += PG_LANES) {
            sw += part_dw[(size_t)p * C + c];
            sb += part_db[(size_t)p * C + c];
        }
    rw[threadIdx.y][threadIdx.x] = sw;
    rb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        sw = 0.0f;
        sb = 0.0f;
        for (int y = 0; y < PG_LANES; y++) {
            sw += rw[y][threadIdx.x];
            sb += rb[y][threadIdx.x];
        }
        dw[c] = __float2bfloat16_rn(__bfloat162float(dw[c]) + sw);
        db[c] = __float2bfloat16_rn(__bfloat162float(db[c]) + sb);
    }
}

template <int VEC, int CACHE>
static llmc_status layernorm_backward_launch(llmc_device *dev, bf16 *dinp, bf16 *dw, bf16 *db, const bf16 *dout,
                                             const bf16 *inp, const bf16 *w, const float *mean, const float *rstd,
                                             int N, int C) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    const size_t warp_bytes = (size_t)2 * C * sizeof(float);
    const int optin = im->smem_optin;
    if (warp_bytes > (size_t)optin)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "layernorm_backward: C=%d too large (max %d)", C,
                                (int)(optin / (2 * sizeof(float))));
    int warps = (int)((48 * 1024) / warp_bytes);
    if (warps > 4) warps = 4;
    if (warps < 1) warps = 1;
    const size_t smem = (size_t)warps * warp_bytes;
    if (smem > 48 * 1024)
        LLMC_CUDA_TRY(dev, cudaFuncSetAttribute(layernorm_backward_kernel<VEC, CACHE>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    LLMC_CUDA_TRY(dev, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, layernorm_backward_kernel<VEC, CACHE>,
                                                                     warps * 32, smem));
    if (per_sm < 1) per_sm = 1;
    const int grid = llmc_cuda_grid(dev, (size_t)N, warps, per_sm);
    float *part;
    llmc_status st = llmc_cuda_scratch(dev, (size_t)2 * grid * C * sizeof(float), (void **)&part);
    if (st != LLMC_OK) return st;
    float *part_dw = part, *part_db = part + (size_t)grid * C;
    layernorm_backward_kernel<VEC, CACHE><<<grid, warps * 32, smem, im->stream>>>(dinp, part_dw, part_db, dout, inp,
                                                                                  w, mean, rstd, N, C);
    LLMC_CUDA_LAUNCHED(dev);
    layernorm_param_grad_kernel<<<LLMC_CEIL_DIV(C, 32), dim3(32, PG_LANES), 0, im->stream>>>(dw, db, part_dw,
                                                                                            part_db, grid, C);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

llmc_status llmc_cuda_layernorm_backward(llmc_device *dev, void *dinp, const llmc_tensor *dweight,
                                         const llmc_tensor *dbias, const void *dout, const void *inp,
                                         const llmc_tensor *weight, const float *mean, const float *rstd, int N,
                                         int C) {
    if (N <= 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "layernorm_backward: bad shape N=%d C=%d", N, C);
    LLMC_CUDA_WEIGHTS("layernorm_backward", weight, dweight);
    LLMC_CUDA_WEIGHTS("layernorm_backward", dbias, NULL);
    const void *w = weight->data;
    void *dw = llmc_tensor_data(dweight), *db = llmc_tensor_data(dbias);
    const bool vec = C % 8 == 0 && llmc_is_aligned16(dinp) && llmc_is_aligned16(dout) && llmc_is_aligned16(inp) &&
                     llmc_is_aligned16(w);
    bf16 *di = (bf16 *)dinp, *gw = (bf16 *)dw, *gb = (bf16 *)db;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)inp, *wt = (const bf16 *)w;
    if (!vec) return layernorm_backward_launch<1, 0>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    switch (LLMC_CEIL_DIV(C / 8, 32)) { /* vectors per lane */
    case 1: return layernorm_backward_launch<8, 1>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    case 2: return layernorm_backward_launch<8, 2>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    case 3: return layernorm_backward_launch<8, 3>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    case 4: return layernorm_backward_launch<8, 4>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    case 5:
    case 6: return layernorm_backward_launch<8, 6>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    case 7:
    case 8: return layernorm_backward_launch<8, 8>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    default: return layernorm_backward_launch<8, 0>(dev, di, gw, gb, g, x, wt, mean, rstd, N, C);
    }
}

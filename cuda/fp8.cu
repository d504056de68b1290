/* fp8.cu — bf16 -> fp8 casts with delayed per-tensor scaling (fp8.cuh says how the scale is
 * chosen), plain and transposed, and the per-slot state they keep.
 *
 * A slot's device state is the inverse scale and FP8_RING amaxes. The cast with host count k
 * writes its amax into entry k % FP8_RING (atomicMax on the float bits: amaxes are >= 0, so the
 * order of the integers is that of the floats, and the result does not depend on the order of
 * the blocks), zeroes entry (k + 1) % FP8_RING for the next cast, and takes its scale from the
 * FP8_HISTORY other entries. No block reads an entry another block writes. */
#include <stdlib.h>
#include <string.h>
#include <cuda_fp8.h>
#include "fp8.cuh"
#include "matmul_lt.cuh"

#define FP8_RING (FP8_HISTORY + 2)
/* A slot: the inverse scale, then the ring from float 4; 128 bytes, so that the scale cuBLASLt
 * reads is 16-byte aligned (it refuses others). */
#define FP8_SLOT_FLOATS 32
#define FP8_RING_AT 4
#define FP8_TILE 64

template <int ENC> struct fp8_format;
template <> struct fp8_format<LT_E4M3> {
    static constexpr float max = 448.0f;
    static constexpr __nv_fp8_interpretation_t kind = __NV_E4M3;
};
template <> struct fp8_format<LT_E5M2> {
    static constexpr float max = 57344.0f;
    static constexpr __nv_fp8_interpretation_t kind = __NV_E5M2;
};

/* The power of two that maps the largest finite amax of the history (and, on a slot's first
 * cast, the measured one at pos) to at most fmax; 1 when there is none. A power of two, so that
 * scaling and unscaling are exact. */
__device__ __forceinline__ float fp8_scale(const float *ring, int pos, int first, float fmax) {
    const int zap = (pos + 1) % FP8_RING;
    float amax = 0.0f;
    for (int j = 0; j < FP8_RING; j++) {
        if (j == zap || (j == pos && !first)) continue;
        const float a = ring[j];
        if (a > amax && a <= 3.0e38f) amax = a;
    }
    if (!(amax > 0.0f)) return 1.0f;
    int e;
    frexpf(fmax / amax, &e); /* fmax / amax = f 2^e, f in [0.5, 1) */
    e -= 1;
    e = e < -120 ? -120 : e > 120 ? 120 : e;
    return ldexpf(1.0f, e);
}

/* Thread 0 of each block puts the scale in shared memory; block 0 also publishes its inverse
 * and clears the next cast's ring entry. */
__device__ __forceinline__ float fp8_block_scale(float *slot, int pos, int first, float fmax, float *shared) {
    if (threadIdx.x == 0) {
        float *ring = slot + FP8_RING_AT;
        const float s = fp8_scale(ring, pos, first, fmax);
        *shared = s;
        if (blockIdx.x == 0) {
            slot[0] = 1.0f / s;
            ring[(pos + 1) % FP8_RING] = 0.0f;
        }
    }
    __syncthreads();
    return *shared;
}

__device__ __forceinline__ void fp8_record_amax(float *slot, int pos, float amax) {
    amax = warp_max(amax);
    if ((threadIdx.x & 31) == 0) atomicMax((unsigned *)&slot[FP8_RING_AT + pos], __float_as_uint(amax));
}

/* 8 values scaled, amax updated, packed as 8 fp8 bytes (element 0 in the lowest byte). */
template <int ENC>
__device__ __forceinline__ uint2 fp8_pack8(const float (&x)[8], float scale, float &amax) {
    uint32_t w[2] = {0u, 0u};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        amax = fmaxf(amax, fmaxf(fabsf(x[2 * j]), fabsf(x[2 * j + 1])));
        const __nv_fp8x2_storage_t q =
            __nv_cvt_float2_to_fp8x2(make_float2(x[2 * j] * scale, x[2 * j + 1] * scale), __NV_SATFINITE,
                                     fp8_format<ENC>::kind);
        w[j >> 1] |= (uint32_t)q << (16 * (j & 1));
    }
    return make_uint2(w[0], w[1]);
}

/* The first cast of a slot: the tensor's amax into its ring entry pos before the cast reads it. */
__global__ void fp8_amax_kernel(float *slot, int pos, const bf16 *in, size_t nvec) {
    float amax = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += (size_t)gridDim.x * blockDim.x) {
        float x[8];
        ld_bf16<8>(x, in + i * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(x[j]));
    }
    fp8_record_amax(slot, pos, amax);
}

template <int ENC>
__global__ void fp8_cast_kernel(uint8_t *out, const bf16 *in, size_t nvec, float *slot, int pos, int first) {
    __shared__ float s_scale;
    const float scale = fp8_block_scale(slot, pos, first, fp8_format<ENC>::max, &s_scale);
    float amax = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += (size_t)gridDim.x * blockDim.x) {
        float x[8];
        ld_bf16<8>(x, in + i * 8);
        *(uint2 *)(out + i * 8) = fp8_pack8<ENC>(x, scale, amax);
    }
    fp8_record_amax(slot, pos, amax);
}

/* 64 x 64 tiles, 256 threads a block. Block (x, y) takes the column tile x and the row tiles
 * y, y + gridDim.y, ..., so that the scale is worked out once per block and the column sums of
 * its tiles (dbias, when colsums is given) add up in registers: colsums[y][col] (=) is the
 * sum of the block's rows in column col, in a fixed order. Rows are read as 8-column vectors,
 * cast, written to out (when given) and kept in shared memory, from which each thread writes 16
 * consecutive rows of one column to outT. */
template <int ENC>
__global__ void fp8_cast_transpose_kernel(uint8_t *out, uint8_t *outT, float *colsums, const bf16 *in, int rows,
                                          int cols, float *slot, int pos, int first) {
    __shared__ float s_scale;
    __shared__ __align__(16) uint8_t tile[FP8_TILE][FP8_TILE + 16];
    __shared__ float red[32][FP8_TILE + 1];
    const float scale = fp8_block_scale(slot, pos, first, fp8_format<ENC>::max, &s_scale);
    const int cg = threadIdx.x % 8, lc = threadIdx.x / 4, chunk = threadIdx.x % 4;
    const int c0 = blockIdx.x * FP8_TILE, c = c0 + cg * 8;
    float amax = 0.0f, sum[8];
#pragma unroll
    for (int k = 0; k < 8; k++) sum[k] = 0.0f;
    for (int r0 = blockIdx.y * FP8_TILE; r0 < rows; r0 += gridDim.y * FP8_TILE) {
        float x[2][8];
        bool ok[2];
#pragma unroll
        for (int it = 0; it < 2; it++) { /* both loads in flight before either is used */
            const int r = r0 + threadIdx.x / 8 + 32 * it;
            ok[it] = r < rows && c < cols;
            if (ok[it]) ld_bf16<8>(x[it], in + (size_t)r * cols + c);
        }
        __syncthreads(); /* the previous tile's reads of shared memory are done */
#pragma unroll
        for (int it = 0; it < 2; it++) {
            const int lr = threadIdx.x / 8 + 32 * it, r = r0 + lr;
            if (!ok[it]) continue;
#pragma unroll
            for (int k = 0; k < 8; k++) sum[k] += x[it][k];
            const uint2 q = fp8_pack8<ENC>(x[it], scale, amax);
            if (out) *(uint2 *)(out + (size_t)r * cols + c) = q;
            *(uint2 *)&tile[lr][cg * 8] = q;
        }
        __syncthreads();
        const int tc = c0 + lc, tr = r0 + chunk * 16;
        if (tc < cols && tr < rows) { /* rows % 16 == 0: the whole chunk is inside */
            uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int j = 0; j < 16; j++) w[j >> 2] |= (uint32_t)tile[chunk * 16 + j][lc] << (8 * (j & 3));
            *(uint4 *)(outT + (size_t)tc * rows + tr) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
    fp8_record_amax(slot, pos, amax);
    if (colsums) { /* the 32 threads of a column group, in order */
#pragma unroll
        for (int k = 0; k < 8; k++) red[threadIdx.x / 8][cg * 8 + k] = sum[k];
        __syncthreads();
        if (threadIdx.x < FP8_TILE && c0 + threadIdx.x < cols) {
            float t = 0.0f;
            for (int i = 0; i < 32; i++) t += red[i][threadIdx.x];
            colsums[(size_t)blockIdx.y * cols + c0 + threadIdx.x] = t;
        }
    }
}

/* ---- host side ---- */

static llmc_status fp8_state(llmc_device *dev, int sites, llmc_cuda_fp8 **out) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (!im->fp8) {
        im->fp8 = (llmc_cuda_fp8 *)calloc(1, sizeof *im->fp8);
        if (!im->fp8) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "out of host memory for the fp8 state");
    }
    llmc_cuda_fp8 *f = im->fp8;
    if (sites > f->sites) {
        int n = sites < 2 * f->sites ? 2 * f->sites : sites;
        if (n < 64) n = 64;
        const size_t old_floats = (size_t)f->sites * FP8_SLOTS * FP8_SLOT_FLOATS;
        const size_t floats = (size_t)n * FP8_SLOTS * FP8_SLOT_FLOATS;
        long long *casts = (long long *)calloc((size_t)n * FP8_SLOTS, sizeof *casts);
        llmc_cuda_fp8_kept *kept = (llmc_cuda_fp8_kept *)calloc((size_t)n, sizeof *kept);
        if (!casts || !kept) {
            free(casts);
            free(kept);
            return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "out of host memory for the fp8 state");
        }
        float *state = NULL;
        cudaError_t e = cudaMalloc(&state, floats * sizeof(float));
        if (e != cudaSuccess) {
            free(casts);
            free(kept);
            return llmc_cuda_fail_alloc(dev, "cudaMalloc of the fp8 scaling state", floats * sizeof(float), e);
        }
        LLMC_CUDA_TRY(dev, cudaMemsetAsync(state, 0, floats * sizeof(float), im->stream));
        if (f->state) {
            LLMC_CUDA_TRY(dev, cudaMemcpyAsync(state, f->state, old_floats * sizeof(float), cudaMemcpyDeviceToDevice,
                                               im->stream));
            LLMC_CUDA_TRY(dev, cudaStreamSynchronize(im->stream));
            cudaFree(f->state);
            memcpy(casts, f->casts, (size_t)f->sites * FP8_SLOTS * sizeof *casts);
            memcpy(kept, f->kept, (size_t)f->sites * sizeof *kept);
        }
        free(f->casts);
        free(f->kept);
        f->state = state;
        f->casts = casts;
        f->kept = kept;
        f->sites = n;
    }
    *out = f;
    return LLMC_OK;
}

llmc_status llmc_cuda_fp8_buffer(llmc_device *dev, int which, size_t bytes, uint8_t **ptr) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    llmc_cuda_fp8 *f;
    llmc_status st = fp8_state(dev, 1, &f);
    if (st != LLMC_OK) return st;
    if (bytes > f->buf_bytes[which]) {
        LLMC_CUDA_TRY(dev, cudaStreamSynchronize(im->stream)); /* queued work may still read it */
        cudaFree(f->buf[which]);
        f->buf[which] = NULL;
        f->buf_bytes[which] = 0;
        const size_t nb = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        cudaError_t e = cudaMalloc(&f->buf[which], nb);
        if (e != cudaSuccess) {
            f->buf[which] = NULL;
            return llmc_cuda_fail_alloc(dev, "cudaMalloc of an fp8 operand buffer", nb, e);
        }
        f->buf_bytes[which] = nb;
    }
    *ptr = f->buf[which];
    return LLMC_OK;
}

llmc_status llmc_cuda_fp8_keep(llmc_device *dev, int site, int rows, int cols, uint8_t **xt) {
    llmc_cuda_fp8 *f;
    llmc_status st = fp8_state(dev, site + 1, &f);
    if (st != LLMC_OK) return st;
    llmc_cuda_fp8_kept *k = &f->kept[site];
    const size_t bytes = (size_t)rows * cols;
    k->rows = k->cols = 0;
    if (bytes > k->bytes) {
        LLMC_CUDA_TRY(dev, cudaStreamSynchronize(llmc_cuda_impl_of(dev)->stream)); /* the backward may read it */
        cudaFree(k->xt);
        k->xt = NULL;
        k->bytes = 0;
        cudaError_t e = cudaMalloc(&k->xt, bytes);
        if (e != cudaSuccess) {
            k->xt = NULL;
            return llmc_cuda_fail_alloc(dev, "cudaMalloc of an fp8 matmul's kept input", bytes, e);
        }
        k->bytes = bytes;
    }
    k->rows = rows;
    k->cols = cols;
    *xt = k->xt;
    return LLMC_OK;
}

const uint8_t *llmc_cuda_fp8_kept_xt(llmc_device *dev, int site, int rows, int cols, const float **inv_scale) {
    llmc_cuda_fp8 *f = llmc_cuda_impl_of(dev)->fp8;
    if (!f || site < 0 || site >= f->sites || f->kept[site].rows != rows || f->kept[site].cols != cols) return NULL;
    *inv_scale = f->state + ((size_t)site * FP8_SLOTS + FP8_SLOT_X) * FP8_SLOT_FLOATS;
    return f->kept[site].xt;
}

void llmc_cuda_fp8_free(llmc_cuda_impl *im) {
    llmc_cuda_fp8 *f = im->fp8;
    if (!f) return;
    for (int i = 0; i < f->sites; i++)
        if (f->kept[i].xt) cudaFree(f->kept[i].xt);
    free(f->kept);
    for (int i = 0; i < FP8_BUFS; i++)
        if (f->buf[i]) cudaFree(f->buf[i]);
    if (f->state) cudaFree(f->state);
    free(f->casts);
    free(f);
    im->fp8 = NULL;
}

llmc_status llmc_cuda_fp8_cast(llmc_device *dev, int site, int slot, int enc, const bf16 *in, int rows, int cols,
                               uint8_t *out, uint8_t *outT, const float **inv_scale, float **colsum_out,
                               int *colsum_parts) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (site < 0 || slot < 0 || slot >= FP8_SLOTS || (enc != LT_E4M3 && enc != LT_E5M2))
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "fp8 cast: bad site %d, slot %d or format %d", site, slot,
                                enc);
    if (rows <= 0 || cols <= 0 || rows % 16 || cols % 8 || !llmc_is_aligned16(in))
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                "fp8 cast: a (%d, %d) tensor needs rows %% 16 == 0, cols %% 8 == 0, 16-byte alignment",
                                rows, cols);
    if (!out && !outT) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "fp8 cast: no output");
    if (colsum_parts && !outT) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "fp8 cast: column sums need outT");
    llmc_cuda_fp8 *f;
    llmc_status st = fp8_state(dev, site + 1, &f);
    if (st != LLMC_OK) return st;
    const size_t idx = (size_t)site * FP8_SLOTS + slot;
    float *s = f->state + idx * FP8_SLOT_FLOATS;
    const long long k = f->casts[idx]++;
    const int pos = (int)(k % FP8_RING), first = k == 0;
    const size_t nvec = (size_t)rows * cols / 8;
    if (first) {
        fp8_amax_kernel<<<llmc_cuda_grid(dev, nvec, 256, 8), 256, 0, im->stream>>>(s, pos, in, nvec);
        LLMC_CUDA_LAUNCHED(dev);
    }
    if (outT) {
        const int col_tiles = LLMC_CEIL_DIV(cols, FP8_TILE), row_tiles = LLMC_CEIL_DIV(rows, FP8_TILE);
        int gy = LLMC_CEIL_DIV(im->sm_count * 8, col_tiles);
        gy = gy < row_tiles ? gy : row_tiles;
        gy = gy < 65535 ? gy : 65535;
        float *colsums = NULL;
        if (colsum_parts) {
            st = llmc_cuda_scratch(dev, (size_t)gy * cols * sizeof(float), (void **)&colsums);
            if (st != LLMC_OK) return st;
            *colsum_parts = gy;
            *colsum_out = colsums;
        }
        dim3 grid(col_tiles, gy);
        if (enc == LT_E4M3)
            fp8_cast_transpose_kernel<LT_E4M3>
                <<<grid, 256, 0, im->stream>>>(out, outT, colsums, in, rows, cols, s, pos, first);
        else
            fp8_cast_transpose_kernel<LT_E5M2>
                <<<grid, 256, 0, im->stream>>>(out, outT, colsums, in, rows, cols, s, pos, first);
    } else {
        const int grid = llmc_cuda_grid(dev, nvec, 256, 8);
        if (enc == LT_E4M3)
            fp8_cast_kernel<LT_E4M3><<<grid, 256, 0, im->stream>>>(out, in, nvec, s, pos, first);
        else
            fp8_cast_kernel<LT_E5M2><<<grid, 256, 0, im->stream>>>(out, in, nvec, s, pos, first);
    }
    LLMC_CUDA_LAUNCHED(dev);
    *inv_scale = s;
    return LLMC_OK;
}

/* encoder.cu — token + position embedding, and its deterministic backward.
 *
 * Backward without float atomics: dwpe[t] sums dout[b,t] over b in order; for dwte the host
 * groups the rows (b,t) by token id (stable counting sort of the host token ids) and uploads
 * the groups; one block per group sums its rows in that order into dwte[token] (frequent tokens
 * are split into fixed segments whose partial sums are then added in segment order). */
#include <stdlib.h>
#include <string.h>
#include "common.cuh"

template <int VEC>
__global__ void encoder_forward_kernel(bf16 *out, const int *tokens, const bf16 *wte, const bf16 *wpe, int B, int T,
                                       int C) {
    const int nvec = C / VEC;
    const size_t total = (size_t)B * T * nvec;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / nvec;
        const int cv = (int)(i - row * nvec);
        const int t = (int)(row % T);
        const int tok = tokens[row];
        float a[VEC], p[VEC];
        ld_bf16<VEC>(a, wte + (size_t)tok * C + cv * VEC);
        ld_bf16<VEC>(p, wpe + (size_t)t * C + cv * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) a[k] += p[k];
        st_bf16<VEC>(out + row * C + cv * VEC, a);
    }
}

llmc_status llmc_cuda_encoder_forward(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte_t,
                                      const llmc_tensor *wpe_t, int B, int T, int C) {
    if (B <= 0 || T <= 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_forward: bad shape B=%d T=%d C=%d", B, T, C);
    if (llmc_cuda_is_int8(wte_t)) return llmc_cuda_embed_int8(dev, out, tokens, NULL, wte_t, wpe_t, B * T, T, C);
    LLMC_CUDA_WEIGHTS("encoder_forward", wte_t, wpe_t);
    const void *wte = wte_t->data, *wpe = wpe_t->data;
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    const bool vec = C % 8 == 0 && llmc_is_aligned16(out) && llmc_is_aligned16(wte) && llmc_is_aligned16(wpe);
    const int v = vec ? 8 : 1;
    const int grid = llmc_cuda_grid(dev, (size_t)B * T * (C / v), 256, 16);
    if (vec)
        encoder_forward_kernel<8><<<grid, 256, 0, im->stream>>>((bf16 *)out, tokens, (const bf16 *)wte,
                                                                     (const bf16 *)wpe, B, T, C);
    else
        encoder_forward_kernel<1><<<grid, 256, 0, im->stream>>>((bf16 *)out, tokens, (const bf16 *)wte,
                                                                     (const bf16 *)wpe, B, T, C);
    LLMC_CUDA_LAUNCHED(dev);
    return LLMC_OK;
}

/* dwpe[t, cols] += sum over b (in order) of dout[b, t, cols]; thread per (t, vector). */
template <int VEC>
__global__ void encoder_backward_wpe_kernel(bf16 *dwpe, const bf16 *dout, int B, int T, int C) {
    const int nvec = C / VEC;
    const size_t total = (size_t)T * nvec;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / nvec);
        const int cv = (int)(i - (size_t)t * nvec);
        float acc[VEC];
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
        for (int b = 0; b < B; b++) {
            float g[VEC];
            ld_bf16<VEC>(g, dout + ((size_t)b * T + t) * C + cv * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] += g[k];
        }
        float d[VEC];
        ld_bf16<VEC>(d, dwpe + (size_t)t * C + cv * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) d[k] += acc[k];
        st_bf16<VEC>(dwpe + (size_t)t * C + cv * VEC, d);
    }
}

/* Segments of one token's rows: segs[4g..4g+3] = {token, begin, end, slot}; rows[begin..end)
 * are (b*T + t) indices in increasing order. A token with more than ENC_SEG rows (frequent
 * tokens have thousands) is split into several segments, each writing an fp32 partial sum to
 * partials[slot]; a token with one segment (slot < 0) is added to dwte directly. threadIdx.x
 * walks the columns, threadIdx.y splits the segment's rows into interleaved lanes, combined in
 * lane order through shared memory. */
#define ENC_SEG 64
template <int VEC>
__global__ void encoder_backward_wte_kernel(bf16 *dwte, float *partials, const bf16 *dout, const int *segs,
                                            const int *rows, int C) {
    extern __shared__ float enc_red[]; /* [blockDim.y][blockDim.x * VEC] */
    const int tok = segs[4 * blockIdx.x], begin = segs[4 * blockIdx.x + 1], end = segs[4 * blockIdx.x + 2],
              slot = segs[4 * blockIdx.x + 3];
    const int nvec = C / VEC;
    const int width = blockDim.x * VEC;
    for (int c0 = 0; c0 < nvec; c0 += blockDim.x) {
        const int cv = c0 + threadIdx.x;
        float acc[VEC];
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
        if (cv < nvec) {
#pragma unroll 4
            for (int r = begin + threadIdx.y; r < end; r += blockDim.y) {
                float g[VEC];
                ld_bf16<VEC>(g, dout + (size_t)rows[r] * C + cv * VEC);
#pragma unroll
                for (int k = 0; k < VEC; k++) acc[k] += g[k];
            }
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) enc_red[threadIdx.y * width + threadIdx.x * VEC + k] = acc[k];
        __syncthreads();
        if (threadIdx.y == 0 && cv < nvec) {
            for (int y = 1; y < (int)blockDim.y; y++)
#pragma unroll
                for (int k = 0; k < VEC; k++) acc[k] += enc_red[y * width + threadIdx.x * VEC + k];
            if (slot < 0) {
                float d[VEC];
                bf16 *dst = dwte + (size_t)tok * C + cv * VEC;
                ld_bf16<VEC>(d, dst);
#pragma unroll
                for (int k = 0; k < VEC; k++) d[k] += acc[k];
                st_bf16<VEC>(dst, d);
            } else {
                st_f32<VEC>(partials + (size_t)slot * C + cv * VEC, acc);
            }
        }
        __syncthreads();
    }
}

/* One block per split token: jobs[3j..3j+2] = {token, first slot, slots}; adds its partials in
 * slot order into dwte[token]. */
__global__ void encoder_backward_wte_join_kernel(bf16 *dwte, const float *partials, const int *jobs, int C) {
    const int tok = jobs[3 * blockIdx.x], first = jobs[3 * blockIdx.x + 1], count = jobs[3 * blockIdx.x + 2];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < count; k++) acc += partials[(size_t)(first + k) * C + c];
        bf16 *dst = dwte + (size_t)tok * C + c;
        *dst = __float2bfloat16_rn(__bfloat162float(*dst) + acc);
    }
}

llmc_status llmc_cuda_encoder_backward(llmc_device *dev, const llmc_tensor *dwte_t, const llmc_tensor *dwpe_t,
                                       const void *dout, const int *tokens, const int *tokens_host, int B, int T,
                                       int C) {
    (void)tokens;
    if (B <= 0 || T <= 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_backward: bad shape B=%d T=%d C=%d", B, T, C);
    LLMC_CUDA_WEIGHTS("encoder_backward", dwte_t, dwpe_t);
    void *dwte = dwte_t->data, *dwpe = dwpe_t->data;
    if (!tokens_host)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_backward: the CUDA backend needs tokens_host");
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    const int n = B * T;
    int maxtok = 0;
    for (int i = 0; i < n; i++) {
        const int t = tokens_host[i];
        if (t < 0 || t >= (1 << 24))
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_backward: token id %d at %d out of range", t,
                                    i);
        if (t > maxtok) maxtok = t;
    }

    const bool vec = C % 8 == 0 && llmc_is_aligned16(dwte) && llmc_is_aligned16(dwpe) && llmc_is_aligned16(dout);

    /* dwpe */
    {
        const int v = vec ? 8 : 1;
        const size_t total = (size_t)T * (C / v);
        size_t grid = LLMC_CEIL_DIV(total, (size_t)128);
        if (vec)
            encoder_backward_wpe_kernel<8><<<(int)grid, 128, 0, im->stream>>>((bf16 *)dwpe, (const bf16 *)dout, B, T, C);
        else
            encoder_backward_wpe_kernel<1><<<(int)grid, 128, 0, im->stream>>>((bf16 *)dwpe, (const bf16 *)dout, B, T, C);
        LLMC_CUDA_LAUNCHED(dev);
    }

    /* dwte: group the rows by token on the host with a counting sort (stable: rows ascend within
     * a token), tokens in order of first appearance, frequent tokens split into segments. This
     * runs while the GPU is still busy with the earlier backward, so it must stay cheap: two
     * passes over the rows, two over the distinct tokens, no allocation in the steady state. */
    const size_t range = (size_t)maxtok + 1;
    if (range > im->host_counts_len) {
        free(im->host_counts);
        im->host_counts = (int *)calloc(range, sizeof(int));
        im->host_counts_len = im->host_counts ? range : 0;
    }
    if ((size_t)n > im->host_distinct_len) {
        free(im->host_distinct);
        im->host_distinct = (int *)malloc((size_t)n * sizeof(int));
        im->host_distinct_len = im->host_distinct ? (size_t)n : 0;
    }
    if (!im->host_counts || !im->host_distinct)
        return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "encoder_backward: out of host memory");
    int *count = im->host_counts, *distinct = im->host_distinct;
    int U = 0;
    for (int i = 0; i < n; i++)
        if (count[tokens_host[i]]++ == 0) distinct[U++] = tokens_host[i];
    int nseg = 0, njobs = 0, nslots = 0;
    for (int u = 0; u < U; u++) {
        const int segs = LLMC_CEIL_DIV(count[distinct[u]], ENC_SEG);
        nseg += segs;
        if (segs > 1) {
            njobs++;
            nslots += segs;
        }
    }
    /* staging layout (ints): rows[n], segs[4 * nseg], jobs[3 * njobs] */
    const size_t words = (size_t)n + 4 * (size_t)nseg + 3 * (size_t)njobs;
    int *host;
    llmc_status st = llmc_cuda_pinned_acquire(dev, words * sizeof(int), (void **)&host);
    if (st != LLMC_OK) {
        for (int u = 0; u < U; u++) count[distinct[u]] = 0;
        return st;
    }
    int *hrows = host, *hsegs = host + n, *hjobs = hsegs + 4 * (size_t)nseg;
    {
        /* count[t] becomes the next free row slot of token t */
        int g = 0, job = 0, slot = 0, start = 0;
        for (int u = 0; u < U; u++) {
            const int t = distinct[u], c = count[t];
            const int segs = LLMC_CEIL_DIV(c, ENC_SEG);
            if (segs > 1) {
                hjobs[3 * job] = t;
                hjobs[3 * job + 1] = slot;
                hjobs[3 * job + 2] = segs;
                job++;
            }
            for (int k = 0; k < segs; k++, g++) {
                hsegs[4 * g] = t;
                hsegs[4 * g + 1] = start + k * ENC_SEG;
                hsegs[4 * g + 2] = (k + 1) * ENC_SEG < c ? start + (k + 1) * ENC_SEG : start + c;
                hsegs[4 * g + 3] = segs > 1 ? slot++ : -1;
            }
            count[t] = start;
            start += c;
        }
        for (int i = 0; i < n; i++) hrows[count[tokens_host[i]]++] = i;
        for (int u = 0; u < U; u++) count[distinct[u]] = 0; /* keep the array zero for the next call */
    }

    const size_t ints_bytes = (words * sizeof(int) + 255) & ~(size_t)255;
    char *scratch;
    st = llmc_cuda_scratch(dev, ints_bytes + (size_t)nslots * C * sizeof(float), (void **)&scratch);
    if (st != LLMC_OK) return st;
    int *drows = (int *)scratch;
    float *partials = (float *)(scratch + ints_bytes);
    LLMC_CUDA_TRY(dev, cudaMemcpyAsync(drows, host, words * sizeof(int), cudaMemcpyHostToDevice, im->stream));
    st = llmc_cuda_pinned_release(dev); /* the staging buffer is reused only after this copy */
    if (st != LLMC_OK) return st;
    const int *dsegs = drows + n, *djobs = dsegs + 4 * (size_t)nseg;

    const int v = vec ? 8 : 1;
    int tx = LLMC_CEIL_DIV(C / v, 32) * 32;
    if (tx > 128) tx = 128;
    const int ty = 512 / tx < 8 ? 512 / tx : 8;
    const dim3 block(tx, ty);
    const size_t smem = (size_t)tx * ty * v * sizeof(float);
    if (vec)
        encoder_backward_wte_kernel<8><<<nseg, block, smem, im->stream>>>((bf16 *)dwte, partials, (const bf16 *)dout,
                                                                          dsegs, drows, C);
    else
        encoder_backward_wte_kernel<1><<<nseg, block, smem, im->stream>>>((bf16 *)dwte, partials, (const bf16 *)dout,
                                                                          dsegs, drows, C);
    LLMC_CUDA_LAUNCHED(dev);
    if (njobs > 0) {
        encoder_backward_wte_join_kernel<<<njobs, 256, 0, im->stream>>>((bf16 *)dwte, partials, djobs, C);
        LLMC_CUDA_LAUNCHED(dev);
    }
    return LLMC_OK;
}

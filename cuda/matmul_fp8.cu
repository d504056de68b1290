/* matmul_fp8.cu — the training matmuls with fp8 operands (backend ops matmul_forward_fp8 and
 * matmul_backward_fp8): activations and weights in E4M3, gradients in E5M2 (more range, less
 * precision), bf16 outputs, bias and GELU epilogues as in matmul.cu. The backward's products
 * accumulate in fp32; the forward's in cuBLASLt's fast fp8 mode, as Transformer Engine's recipe.
 *
 * cuBLASLt multiplies fp8 only as D = A^T B (column-major; "TN"), so each product needs its
 * operands with the reduction dimension contiguous:
 *   forward  out(OC,N)  = W^T X     : W (OC,C) and X (N,C) as they are;
 *   dinp     dinp(C,N)  = W dY      : W transposed (C,OC), dY (N,OC) as it is;
 *   dweight  dW(C,OC) += X^T dY     : X transposed (C,N), dY transposed (OC,N).
 * fp8.cu casts (and transposes) each operand into a workspace with its slot's delayed scale;
 * cuBLASLt takes the inverse scales. The forward casts X in both layouts and keeps X^T for the
 * backward (one read of X a step, not two); the cast of dY sums its columns for dbias on the way. */
#include <string.h>
#include "fp8.cuh"
#include "matmul_lt.cuh"

/* LLMC_OK when the device and the shapes suit fp8 products; LLMC_ERR_UNSUPPORTED (the caller
 * runs the bf16 op) for shapes that do not; a hard error on a GPU without fp8 tensor cores. */
static llmc_status fp8_takes(llmc_device *dev, const char *op, int site, int N, int C, int OC, const void *inp,
                             const void *w) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(dev);
    if (im->cc < 89)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                "%s: fp8 needs a GPU of compute capability 8.9 or newer (this one is %d.%d)", op,
                                im->cc / 10, im->cc % 10);
    if (site < 0) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "%s: bad fp8 site %d", op, site);
    llmc_status st = llmc_cuda_matmul_shape(dev, op, N, C, OC);
    if (st != LLMC_OK) return st;
    if (N % 16 || C % 16 || OC % 16 || !llmc_is_aligned16(inp) || !llmc_is_aligned16(w))
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED,
                                "%s: fp8 products need N, C, OC multiples of 16 (N=%d C=%d OC=%d)", op, N, C, OC);
    return LLMC_OK;
}

llmc_status llmc_cuda_matmul_forward_fp8(llmc_device *dev, int site, void *out, void *pre_gelu, const void *inp,
                                         const llmc_tensor *weight, const llmc_tensor *bias_t, int N, int C, int OC) {
    const char *const op = "matmul_forward_fp8";
    LLMC_CUDA_WEIGHTS(op, weight, bias_t);
    llmc_status st = fp8_takes(dev, op, site, N, C, OC, inp, weight->data);
    if (st != LLMC_OK) return st;
    uint8_t *xq, *xt, *wq;
    const float *xs, *ws;
    if ((st = llmc_cuda_fp8_buffer(dev, FP8_BUF_X, (size_t)N * C, &xq)) != LLMC_OK) return st;
    if ((st = llmc_cuda_fp8_buffer(dev, FP8_BUF_W, (size_t)OC * C, &wq)) != LLMC_OK) return st;
    if ((st = llmc_cuda_fp8_keep(dev, site, N, C, &xt)) != LLMC_OK) return st;
    /* X in both layouts: the backward's dW product takes the transposed one as it is */
    st = llmc_cuda_fp8_cast(dev, site, FP8_SLOT_X, LT_E4M3, (const bf16 *)inp, N, C, xq, xt, &xs, NULL, NULL);
    if (st == LLMC_OK)
        st = llmc_cuda_fp8_cast(dev, site, FP8_SLOT_W, LT_E4M3, (const bf16 *)weight->data, OC, C, wq, NULL, &ws,
                                NULL, NULL);
    if (st != LLMC_OK) return st;
    lt_problem p = lt_product(1, 0, OC, N, C, wq, C, xq, C, NULL, OC);
    lt_fp8(&p, LT_E4M3, ws, LT_E4M3, xs);
    p.fast_accum = 1; /* the forward's only: 1.6 ms of d12's B=64 T=1024 step (H200, docs/PERF.md) */
    return llmc_cuda_lt_forward(dev, &p, out, pre_gelu, llmc_tensor_data(bias_t), op, N, C, OC);
}

llmc_status llmc_cuda_matmul_backward_fp8(llmc_device *dev, int site, void *dinp, const llmc_tensor *dweight,
                                          const llmc_tensor *dbias_t, const void *dout, const void *inp,
                                          const llmc_tensor *weight, const void *pre_gelu, int N, int C, int OC) {
    const char *const op = "matmul_backward_fp8";
    LLMC_CUDA_WEIGHTS(op, weight, dweight);
    LLMC_CUDA_WEIGHTS(op, dbias_t, NULL);
    llmc_status st = fp8_takes(dev, op, site, N, C, OC, inp, weight->data);
    if (st != LLMC_OK) return st;
    if (!llmc_is_aligned16(dout))
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "%s: dout is not 16-byte aligned", op);
    uint8_t *xt = NULL, *wt = NULL, *dy = NULL, *dyt;
    const float *xs, *ws = NULL, *dys;
    const uint8_t *kept = llmc_cuda_fp8_kept_xt(dev, site, N, C, &xs);
    if (!kept && (st = llmc_cuda_fp8_buffer(dev, FP8_BUF_X, (size_t)N * C, &xt)) != LLMC_OK) return st;
    if ((st = llmc_cuda_fp8_buffer(dev, FP8_BUF_DYT, (size_t)N * OC, &dyt)) != LLMC_OK) return st;
    if (dinp) {
        if ((st = llmc_cuda_fp8_buffer(dev, FP8_BUF_W, (size_t)OC * C, &wt)) != LLMC_OK) return st;
        if ((st = llmc_cuda_fp8_buffer(dev, FP8_BUF_DY, (size_t)N * OC, &dy)) != LLMC_OK) return st;
    }
    /* dY once, in both layouts (one scale for both), with its column sums for dbias */
    float *parts = NULL;
    int nparts = 0;
    st = llmc_cuda_fp8_cast(dev, site, FP8_SLOT_DY, LT_E5M2, (const bf16 *)dout, N, OC, dy, dyt, &dys,
                            dbias_t ? &parts : NULL, dbias_t ? &nparts : NULL);
    if (st == LLMC_OK && dbias_t) st = llmc_cuda_dbias_add_partials(dev, (bf16 *)dbias_t->data, parts, nparts, OC);
    if (st == LLMC_OK && dinp)
        st = llmc_cuda_fp8_cast(dev, site, FP8_SLOT_WT, LT_E4M3, (const bf16 *)weight->data, OC, C, NULL, wt, &ws,
                                NULL, NULL);
    if (st == LLMC_OK && !kept) /* no forward of this shape before it: cast the input here */
        st = llmc_cuda_fp8_cast(dev, site, FP8_SLOT_XT, LT_E4M3, (const bf16 *)inp, N, C, NULL, xt, &xs, NULL, NULL);
    if (st != LLMC_OK) return st;
    if (kept) xt = (uint8_t *)kept;
    if (dinp) { /* column-major dinp(C,N) = (W^T stored (OC,C))^T dY(OC,N) */
        lt_problem p = lt_product(1, 0, C, N, OC, wt, OC, dy, OC, dinp, C);
        lt_fp8(&p, LT_E4M3, ws, LT_E5M2, dys);
        /* not DGELU: with fp8 operands cuBLASLt runs it as a kernel of its own, 15.1 ms a step for
         * d12 at B=64 T=1024 against 3.7 ms for gelu.cu's in-place pass (H200, docs/PERF.md) */
        st = llmc_cuda_lt_dinp(dev, &p, pre_gelu, 0, op, N, C, OC);
        if (st != LLMC_OK) return st;
    }
    /* column-major dW(C,OC) += (X^T stored (N,C))^T (dY^T stored (N,OC)) */
    lt_problem p = lt_product(1, 0, C, OC, N, xt, N, dyt, N, llmc_tensor_data(dweight), C);
    lt_fp8(&p, LT_E4M3, xs, LT_E5M2, dys);
    p.beta = 1.0f;
    return llmc_cuda_lt_run(dev, &p, op, N, C, OC);
}

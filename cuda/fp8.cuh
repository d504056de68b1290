/* fp8.cuh — bf16 tensors cast to fp8 with delayed per-tensor scaling (fp8.cu), for the fp8
 * matmuls of training (matmul_fp8.cu).
 *
 * Each cast belongs to a slot: one operand role (FP8_SLOT_*) of one call site (a layer's
 * matmul, numbered by the caller). A slot keeps the amax (largest magnitude) of its last
 * FP8_HISTORY casts on the device. A cast scales by the power of two that maps the largest
 * of them to at most the format's largest value, records its own amax as it goes, and leaves
 * the inverse scale on the device for cuBLASLt. The slot's first cast measures its tensor
 * first (one more pass), so that nothing is cast blind. Values above the range saturate. */
#ifndef LLMC_CUDA_FP8_CUH
#define LLMC_CUDA_FP8_CUH
#include "common.cuh"

enum { FP8_SLOT_X, FP8_SLOT_W, FP8_SLOT_DY, FP8_SLOT_WT, FP8_SLOT_XT, FP8_SLOTS };
/* The workspaces of one product's fp8 operands (grow-only, one device buffer each). */
enum { FP8_BUF_X, FP8_BUF_W, FP8_BUF_DY, FP8_BUF_DYT, FP8_BUFS };
#define FP8_HISTORY 16

/* A site's input as its forward cast it, transposed, kept for the backward's dW product. */
typedef struct llmc_cuda_fp8_kept {
    uint8_t *xt;
    size_t bytes;
    int rows, cols; /* of the input (0: nothing kept) */
} llmc_cuda_fp8_kept;

/* The fp8 state of a device (impl->fp8), made on first use. */
typedef struct llmc_cuda_fp8 {
    int sites;                 /* call sites the state has room for */
    float *state;              /* device: per (site, slot) the inverse scale, then a ring of amaxes */
    long long *casts;          /* host: casts so far per (site, slot) */
    llmc_cuda_fp8_kept *kept;  /* host: per site */
    uint8_t *buf[FP8_BUFS];
    size_t buf_bytes[FP8_BUFS];
} llmc_cuda_fp8;

/* enc: LT_E4M3 or LT_E5M2 (matmul_lt.cuh). in: (rows, cols) row-major bf16, rows % 16 == 0 and
 * cols % 8 == 0, 16-byte aligned. Writes out (rows, cols) and/or outT (cols, rows) (either may
 * be NULL) and sets *inv_scale to the device float that undoes the scaling. colsum_parts (NULL:
 * not wanted; needs outT): the column sums of in (dbias) come as *colsum_parts rows of cols fp32
 * partial sums at *colsum_out (the device scratch, valid until its next user), to be added in order. */
llmc_status llmc_cuda_fp8_cast(llmc_device *dev, int site, int slot, int enc, const bf16 *in, int rows, int cols,
                               uint8_t *out, uint8_t *outT, const float **inv_scale, float **colsum_out,
                               int *colsum_parts);
/* The buffer in which site's forward keeps its input transposed, (cols, rows) fp8. */
llmc_status llmc_cuda_fp8_keep(llmc_device *dev, int site, int rows, int cols, uint8_t **xt);
/* What site's last forward kept when its input had shape (rows, cols), with the inverse scale of
 * its cast (slot X); NULL when it kept nothing of that shape. */
const uint8_t *llmc_cuda_fp8_kept_xt(llmc_device *dev, int site, int rows, int cols, const float **inv_scale);
/* One of the device's fp8 workspaces (FP8_BUF_*) of at least bytes. */
llmc_status llmc_cuda_fp8_buffer(llmc_device *dev, int which, size_t bytes, uint8_t **ptr);
/* Frees the fp8 state (device close). */
void llmc_cuda_fp8_free(llmc_cuda_impl *im);

#endif

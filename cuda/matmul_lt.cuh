/* matmul_lt.cuh — one cuBLASLt product as matmul.cu runs it, shared by the bf16 layers
 * (matmul.cu) and the fp8 ones (matmul_fp8.cu). */
#ifndef LLMC_CUDA_MATMUL_LT_CUH
#define LLMC_CUDA_MATMUL_LT_CUH
#include <string.h>
#include "common.cuh"

/* Operand encodings of lt_problem: bf16, or fp8 in one of its two formats. */
enum { LT_BF16 = 0, LT_E4M3 = 1, LT_E5M2 = 2 };

static inline cudaDataType_t lt_type(int enc) {
    return enc == LT_E4M3 ? CUDA_R_8F_E4M3 : enc == LT_E5M2 ? CUDA_R_8F_E5M2 : CUDA_R_16BF;
}

typedef struct lt_problem {
    /* column-major D(m,n) = alpha op(A) op(B) + beta D, D (and C) bf16 */
    int transa, transb;
    int m, n, k;
    const void *A;
    int lda;
    const void *B;
    int ldb;
    void *D;
    int ldd;
    float beta;
    cublasLtEpilogue_t epi;
    const void *bias; /* with the BIAS / GELU_AUX_BIAS epilogues */
    cudaDataType_t bias_type;
    void *aux;
    int64_t aux_ld;
    /* fp8 operands (cuBLASLt takes them as A transposed, B not): their encodings (LT_*) and
     * device pointers to the float that undoes each one's scaling (NULL: 1) */
    int a_fp8, b_fp8;
    const float *a_scale, *b_scale;
    int fast_accum; /* fp8: cuBLASLt's faster, less precise accumulation */
} lt_problem;

/* Column-major D(m,n) = op(A) op(B), no epilogue, beta 0, bf16 operands: the caller sets the rest. */
static inline lt_problem lt_product(int transa, int transb, int m, int n, int k, const void *A, int lda, const void *B,
                                    int ldb, void *D, int ldd) {
    lt_problem p;
    memset(&p, 0, sizeof p);
    p.transa = transa;
    p.transb = transb;
    p.m = m;
    p.n = n;
    p.k = k;
    p.A = A;
    p.lda = lda;
    p.B = B;
    p.ldb = ldb;
    p.D = D;
    p.ldd = ldd;
    p.epi = CUBLASLT_EPILOGUE_DEFAULT;
    return p;
}

/* fp8 operands (transa 1, transb 0) with the floats that undo their scaling. */
static inline void lt_fp8(lt_problem *p, int a_enc, const float *a_scale, int b_enc, const float *b_scale) {
    p->a_fp8 = a_enc;
    p->a_scale = a_scale;
    p->b_fp8 = b_enc;
    p->b_scale = b_scale;
}

/* Runs one product. LLMC_ERR_UNSUPPORTED (with a message) when cuBLASLt has no algorithm,
 * so that the caller can fall back. op/N/C/OC only label error messages. */
llmc_status llmc_cuda_lt_run(llmc_device *dev, const lt_problem *p, const char *op, int N, int C, int OC);
/* The forward's product on p with its operands set (A, B, their types and lds, m, n, k, ldd):
 * out = p + bias, or with pre_gelu, pre_gelu = p + bias and out = gelu(pre_gelu), in cuBLASLt's
 * epilogue where it has one, else as a separate pass. */
llmc_status llmc_cuda_lt_forward(llmc_device *dev, lt_problem *p, void *out, void *pre_gelu, const void *bias,
                                 const char *op, int N, int C, int OC);
/* The backward's dinp product on p with its operands and D set: with pre_gelu, D *= gelu'(pre_gelu)
 * (the DGELU epilogue when fuse_dgelu and cuBLASLt has it, else a separate pass). */
llmc_status llmc_cuda_lt_dinp(llmc_device *dev, lt_problem *p, const void *pre_gelu, int fuse_dgelu, const char *op,
                              int N, int C, int OC);
/* LLMC_ERR_INVALID_ARG naming op unless N, C and OC are positive. */
llmc_status llmc_cuda_matmul_shape(llmc_device *dev, const char *op, int N, int C, int OC);
/* dbias (bf16, OC) += the column sums of dout (N, OC), deterministic (fixed order). */
llmc_status llmc_cuda_dbias_reduce(llmc_device *dev, bf16 *dbias, const bf16 *dout, int N, int OC);
/* dbias[c] += the sum over p < nparts, in order, of partials[p][c] (fp32, OC columns a row). */
llmc_status llmc_cuda_dbias_add_partials(llmc_device *dev, bf16 *dbias, const float *partials, int nparts, int OC);

#endif

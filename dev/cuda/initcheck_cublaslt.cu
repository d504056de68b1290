/* initcheck_cublaslt.cu — does compute-sanitizer's initcheck see what cuBLASLt writes?
 *
 * initcheck on ./train_gpt2cu reports the flash-attention forward's cp.async loads of qkv as
 * reads of uninitialized memory, though the matmul just before writes all of qkv and every GPU
 * test finds the values right. This lab tells a tool blind spot from a real bug without the
 * engine: a bf16 cuBLASLt matmul (with a bias epilogue, as the engine's qkv matmul) writes a
 * fresh cudaMalloc buffer, then two kernels read all of it, one with plain loads and one with
 * cp.async as attention does. The same buffer written by a plain kernel is the control.
 *
 *   nvcc -O2 -std=c++17 -arch=sm_90 dev/cuda/initcheck_cublaslt.cu -lcublasLt -o /tmp/initcheck_lab
 *   compute-sanitizer --tool initcheck /tmp/initcheck_lab lt      # the case in question
 *   compute-sanitizer --tool initcheck /tmp/initcheck_lab kernel  # control: must be clean
 *   compute-sanitizer --tool initcheck --nvtx true /tmp/initcheck_lab lt-marked
 *       # cuBLASLt, then D marked initialized through NVTX, as cuda/matmul.cu does: clean
 *
 * Without the sanitizer it checks the matmul against a host reference, so "lt" is known to
 * have written every element before anything reads it. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <nvtx3/nvToolsExtMemCudaRt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); return 1; } \
    } while (0)
#define LK(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s: status %d\n", #x, (int)s_); return 1; } \
    } while (0)

typedef __nv_bfloat16 bf16;

__global__ void fill(bf16 *d, size_t n) {
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16((float)(i % 7) - 3.0f);
}
__global__ void read_plain(const bf16 *d, size_t n, float *sum) {
    float s = 0;
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += __bfloat162float(d[i]);
    atomicAdd(sum, s);
}
/* 16 bytes per thread through shared memory, as the attention tiles load rows */
__global__ void read_cp_async(const bf16 *d, size_t n, float *sum) {
    __shared__ __align__(16) bf16 tile[256 * 8];
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    const bool ok = i + 8 <= n;
    const unsigned dst = (unsigned)__cvta_generic_to_shared(&tile[threadIdx.x * 8]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(d + (ok ? i : 0)), "r"(ok ? 16 : 0));
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    float s = 0;
    for (int k = 0; k < 8; k++) s += __bfloat162float(tile[threadIdx.x * 8 + k]);
    atomicAdd(sum, s);
}

int main(int argc, char **argv) {
    const int marked = argc > 1 && strcmp(argv[1], "lt-marked") == 0;
    const int lt = marked || (argc > 1 && strcmp(argv[1], "lt") == 0);
    const int N = 256, C = 256, OC = 768; /* rows (B*T), in, out: the engine's qkv matmul of a small model */
    const size_t nd = (size_t)N * OC;
    bf16 *A, *W, *bias, *D;
    float *sum;
    CK(cudaMalloc(&A, (size_t)N * C * 2));
    CK(cudaMalloc(&W, (size_t)OC * C * 2));
    CK(cudaMalloc(&bias, (size_t)OC * 2));
    CK(cudaMalloc(&D, nd * 2)); /* never memset: only the writer under test initializes it */
    CK(cudaMalloc(&sum, sizeof(float)));
    CK(cudaMemset(sum, 0, sizeof(float)));
    bf16 *hA = (bf16 *)malloc((size_t)N * C * 2), *hW = (bf16 *)malloc((size_t)OC * C * 2), *hb = (bf16 *)malloc(OC * 2);
    for (int i = 0; i < N * C; i++) hA[i] = __float2bfloat16((float)((i * 37) % 11) / 11.0f - 0.5f);
    for (int i = 0; i < OC * C; i++) hW[i] = __float2bfloat16((float)((i * 13) % 17) / 17.0f - 0.5f);
    for (int i = 0; i < OC; i++) hb[i] = __float2bfloat16((float)(i % 5) / 5.0f);
    CK(cudaMemcpy(A, hA, (size_t)N * C * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(W, hW, (size_t)OC * C * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bias, hb, OC * 2, cudaMemcpyHostToDevice));

    if (lt) { /* D (N x OC, row-major) = A (N x C) W^T (W: OC x C) + bias, as column-major D^T = W A^T */
        cublasLtHandle_t h;
        LK(cublasLtCreate(&h));
        cublasLtMatmulDesc_t desc;
        LK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
        const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        cublasLtMatrixLayout_t la, lb, ld;
        LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, C, OC, C));
        LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, C, N, C));
        LK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, OC, N, OC));
        void *ws;
        const size_t wsz = 32 << 20;
        CK(cudaMalloc(&ws, wsz));
        cublasLtMatmulPreference_t pref;
        LK(cublasLtMatmulPreferenceCreate(&pref));
        LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
        cublasLtMatmulHeuristicResult_t hit;
        int found = 0;
        LK(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 1, &hit, &found));
        if (!found) { fprintf(stderr, "no cuBLASLt algorithm\n"); return 1; }
        const float one = 1, zero = 0;
        LK(cublasLtMatmul(h, desc, &one, W, la, A, lb, &zero, D, ld, D, ld, &hit.algo, ws, wsz, 0));
        if (marked) {
            nvtxMemVirtualRangeDesc_t r = {nd * 2, D};
            nvtxMemMarkInitializedBatch_t b = {NVTX_EXT_COMPATID_MEM, sizeof b, NVTX_MEM_TYPE_VIRTUAL_ADDRESS, 1,
                                               sizeof r, &r};
            nvtxMemCudaMarkInitialized(nvtxDomainCreateA("initcheck_lab"), 0, 0, &b);
        }
    } else {
        fill<<<64, 256>>>(D, nd);
    }
    CK(cudaDeviceSynchronize());
    read_plain<<<64, 256>>>(D, nd, sum);
    read_cp_async<<<(unsigned)((nd / 8 + 255) / 256), 256>>>(D, nd, sum);
    CK(cudaDeviceSynchronize());

    /* every element of D against the host: the writer did write all of it */
    bf16 *hD = (bf16 *)malloc(nd * 2);
    CK(cudaMemcpy(hD, D, nd * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int r = 0; r < N; r++)
        for (int o = 0; o < OC; o++) {
            double want = 0;
            if (lt) {
                for (int k = 0; k < C; k++)
                    want += (double)__bfloat162float(hA[r * C + k]) * __bfloat162float(hW[o * C + k]);
                want += __bfloat162float(hb[o]);
            } else {
                want = (double)(((size_t)r * OC + o) % 7) - 3.0;
            }
            const double got = __bfloat162float(hD[(size_t)r * OC + o]), e = fabs(got - want) / (1 + fabs(want));
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    printf("%s wrote D (%d x %d); largest error against the host %.2e: %s\n", lt ? "cuBLASLt" : "a plain kernel",
           N, OC, worst, worst < 2e-2 ? "every element written" : "WRONG");
    return worst < 2e-2 ? 0 : 1;
}

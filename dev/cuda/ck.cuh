/* ck.cuh — the labs' CUDA call check: a lab is a program, so a failed call prints where and stops it. */
#ifndef LLMC_LAB_CK_CUH
#define LLMC_LAB_CK_CUH
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(call)                                                                                     \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));  \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

#endif

/* launch.cuh — how the CUDA backend launches kernels: grid sizes, and programmatic dependent
 * launch (PDL), whose device half a kernel calls and whose host half sets the launch attribute.
 * Needs no device state, so the standalone attention lab can include it too. */
#ifndef LLMC_CUDA_LAUNCH_CUH
#define LLMC_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <string.h>

#define LLMC_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* Blocks for work items, per_block of them to a block: at most cap, at least 1. */
static inline int llmc_grid_size(size_t work, size_t per_block, size_t cap) {
    size_t g = LLMC_CEIL_DIV(work, per_block);
    if (g > cap) g = cap;
    return (int)(g < 1 ? 1 : g);
}

/* ---- programmatic dependent launch ----
 * Launched with the attribute, a kernel may start while its predecessor on the stream still
 * runs: it must wait (llmc_pdl_wait) before touching memory the predecessor may write, and it
 * lets its own successor start early with llmc_pdl_launch_dependents. Both are no-ops in a
 * normal launch and before sm_90, so results never depend on whether PDL is on. */
__device__ __forceinline__ void llmc_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void llmc_pdl_launch_dependents(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* kernel<<<grid, block, smem, stream>>>(args), as a programmatic dependent when pdl != 0. */
template <typename... KArgs, typename... Args>
static cudaError_t llmc_launch_pdl(int pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                   cudaStream_t stream, Args... args) {
    cudaLaunchConfig_t lc;
    memset(&lc, 0, sizeof lc);
    lc.gridDim = grid;
    lc.blockDim = block;
    lc.dynamicSmemBytes = smem;
    lc.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = attr;
    lc.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&lc, kernel, ((KArgs)args)...);
}

#endif

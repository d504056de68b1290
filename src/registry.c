/* registry.c — which backends this binary links. Compiled once per binary
 * flavour: train_gpt2 without CUDA, train_gpt2cu and the Python module with it. */
#include <string.h>
#include "backend.h"

extern const llmc_backend_ops llmc_cpu_backend_ops;
#ifdef LLMC_WITH_CUDA
extern const llmc_backend_ops llmc_cuda_backend_ops;
#endif

const llmc_backend_ops *llmc_backend_lookup(const char *name) {
    if (name == NULL || strcmp(name, "cpu") == 0) return &llmc_cpu_backend_ops;
#ifdef LLMC_WITH_CUDA
    if (strcmp(name, "cuda") == 0) return &llmc_cuda_backend_ops;
#endif
    return NULL;
}

const char *llmc_backend_names(void) {
#ifdef LLMC_WITH_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

/* registry.c — which backends this binary links. Compiled once per binary
 * flavour: train_gpt2 without CUDA, train_gpt2cu and the Python module with it. */
#include <string.h>
#include "backend.h"
#include "comm.h"

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

const llmc_comm_engine *llmc_comm_engine_for(const char *backend, const char **why) {
    const llmc_comm_engine *e = NULL;
    const char *missing = "";
    if (backend && strcmp(backend, "cuda") == 0) {
#if defined(LLMC_WITH_CUDA) && defined(LLMC_WITH_NCCL)
        e = llmc_comm_nccl_engine();
#endif
        missing = "this build has no NCCL (multi-GPU needs NCCL at build time: see README)";
    } else if (!backend || strcmp(backend, "cpu") == 0) {
        e = llmc_comm_mpi_engine(); /* NULL in a build without MPI */
        missing = "this build has no MPI (install OpenMPI: apt-get install libopenmpi-dev openmpi-bin, and rebuild)";
    } else {
        missing = "no communicator for this backend";
    }
    if (why) *why = e ? "" : missing;
    return e;
}

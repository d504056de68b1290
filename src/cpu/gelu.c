/* gelu.c — elementwise tanh-GELU (the matmul fuses it; this serves recompute). */
#include "cpu_internal.h"

llmc_status llmc_cpu_gelu_forward(llmc_device *dev, void *out, const void *inp, size_t n) {
    (void)dev;
    /* no restrict: in place (out == inp) is allowed */
    float *o = (float *)out;
    const float *x = (const float *)inp;
    long len = (long)n;
#pragma omp parallel for simd schedule(static) if (len >= LLMC_CPU_PAR_MIN)
    for (long i = 0; i < len; i++) o[i] = llmc_gelu(x[i]);
    return LLMC_OK;
}

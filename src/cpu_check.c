/* cpu_check.c — does this CPU run the instructions the core was built for?
 *
 * A portable build (LLMC_NATIVE=OFF, the wheels) targets x86-64-v3. This file is compiled for
 * plain x86-64 so that it can run on any x86-64 CPU and say what is missing before the first
 * AVX2 instruction would kill the process. A native build has nothing to check. */
#include <stdio.h>
#include "llmc.h"

int llmc_cpu_supported(char *err, size_t errlen) {
#if defined(LLMC_BASELINE_X86_64_V3) && LLMC_BASELINE_X86_64_V3 && (defined(__x86_64__) || defined(_M_X64)) && \
    defined(__GNUC__)
    static const char *const need[] = {"avx2", "fma", "bmi2", "f16c"};
    const int have[] = {__builtin_cpu_supports("avx2"), __builtin_cpu_supports("fma"), __builtin_cpu_supports("bmi2"),
                        __builtin_cpu_supports("f16c")};
    for (int i = 0; i < 4; i++)
        if (!have[i]) {
            snprintf(err, errlen,
                     "this CPU lacks %s: llmc was built for x86-64-v3 (AVX2, FMA, BMI2, F16C; Intel Haswell or AMD "
                     "Zen and newer). Build it for this machine instead: pip install --no-binary llmc llmc, or "
                     "make in a checkout (-DLLMC_NATIVE=ON)",
                     need[i]);
            return 0;
        }
#endif
    (void)err, (void)errlen;
    return 1;
}

/* dtype.c — bf16 <-> fp32 on the host, written once (file I/O, host staging, the CPU backend). */
#include <string.h>
#include "llmc.h"

uint16_t llmc_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* keep NaN a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float llmc_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Widening is exact and memory-bound: worth all host cores for logits-sized rows. */
void llmc_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    const long nn = (long)n;
#pragma omp parallel for schedule(static) if (nn > 65536)
    for (long i = 0; i < nn; i++) dst[i] = llmc_bf16_to_f32(src[i]);
}

void llmc_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n) {
    const long nn = (long)n;
#pragma omp parallel for schedule(static) if (nn > 65536)
    for (long i = 0; i < nn; i++) dst[i] = llmc_f32_to_bf16(src[i]);
}

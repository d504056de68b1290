/* zero_mask.c — keep_zeros' bit masks: which weights were exactly zero, and putting them (and their
 * AdamW moments) back to zero after an update (backend.h). */
#include "cpu_internal.h"

static int is_zero(const void *w, llmc_dtype dtype, size_t i) {
    if (dtype == LLMC_BF16) return (((const uint16_t *)w)[i] & 0x7FFFu) == 0;
    return ((const float *)w)[i] == 0.0f;
}

llmc_status llmc_cpu_zero_mask_build(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w, llmc_dtype dtype,
                                     size_t n) {
    if (dtype != LLMC_F32 && dtype != LLMC_BF16)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "zero_mask_build: no kernel for dtype %d", (int)dtype);
    if (n == 0) return LLMC_OK;
    const size_t w0 = bit0 / 32, w1 = (bit0 + n - 1) / 32;
    /* one word per iteration: words at the range's ends keep their bits outside it */
#pragma omp parallel for schedule(static) if (n >= LLMC_CPU_PAR_MIN)
    for (size_t k = w0; k <= w1; k++) {
        const size_t lo = k * 32 > bit0 ? k * 32 : bit0, hi = k * 32 + 32 < bit0 + n ? k * 32 + 32 : bit0 + n;
        uint32_t word = mask[k];
        for (size_t b = lo; b < hi; b++) {
            const uint32_t bit = 1u << (b & 31);
            word = is_zero(w, dtype, b - bit0) ? word | bit : word & ~bit;
        }
        mask[k] = word;
    }
    return LLMC_OK;
}

llmc_status llmc_cpu_zero_mask_apply(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params,
                                     float *master, float *m, float *v, size_t n) {
    (void)dev;
    float *p = (float *)params;
#pragma omp parallel for schedule(static) if (n >= LLMC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const size_t b = bit0 + i;
        if (!((mask[b / 32] >> (b & 31)) & 1u)) continue;
        p[i] = 0.0f;
        if (master) master[i] = 0.0f;
        m[i] = 0.0f;
        v[i] = 0.0f;
    }
    return LLMC_OK;
}

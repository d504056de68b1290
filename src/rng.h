/* rng.h — tiny deterministic RNG shared by init, sampling and data shuffling.
 * xorshift64* (Vigna): 64-bit state, the top 32 bits of the scrambled output are used.
 * State must be nonzero; llmc_rng_seed maps any seed (0 included) to a valid state. */
#ifndef LLMC_RNG_H
#define LLMC_RNG_H

#include <math.h>
#include <stdint.h>

/* Mixes a seed through splitmix64 so that nearby seeds give unrelated streams. */
static inline uint64_t llmc_rng_seed(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 0x9E3779B97F4A7C15ull;
}

static inline uint32_t llmc_rng_u32(uint64_t *state) {
    uint64_t x = *state;
    if (x == 0) x = 0x9E3779B97F4A7C15ull; /* the all-zero state is a fixed point */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Uniform in [0, 1): 24 random bits, so the result is exact in float and never 1. */
static inline float llmc_rng_f32(uint64_t *state) {
    return (float)(llmc_rng_u32(state) >> 8) * (1.0f / 16777216.0f);
}

/* Standard normal via Box-Muller (one value per call; the second is dropped for simplicity). */
static inline float llmc_rng_normal(uint64_t *state) {
    float u1 = 1.0f - llmc_rng_f32(state); /* in (0, 1]: log never sees 0 */
    float u2 = llmc_rng_f32(state);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

/* Uniform integer in [0, n), n > 0; rejection keeps it unbiased. */
static inline uint32_t llmc_rng_below(uint64_t *state, uint32_t n) {
    uint32_t limit = (uint32_t)(-n) % n; /* 2^32 mod n: values below it would bias the result */
    for (;;) {
        uint32_t r = llmc_rng_u32(state);
        if (r >= limit) return r % n;
    }
}

#endif /* LLMC_RNG_H */

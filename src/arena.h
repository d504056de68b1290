/* arena.h — laying tensors out in one allocation. Plan once with base == NULL to measure
 * the bytes needed, allocate, then plan again with the real base to get the pointers. */
#ifndef LLMC_ARENA_H
#define LLMC_ARENA_H

#include <stddef.h>

#define LLMC_ARENA_ALIGN 256 /* every tensor starts on a 256-byte boundary (vector loads, cuBLASLt) */

typedef struct llmc_arena {
    size_t offset;
    char *base; /* NULL while only measuring */
} llmc_arena;

static inline void *llmc_arena_take(llmc_arena *a, size_t bytes) {
    void *p = a->base ? a->base + a->offset : NULL;
    a->offset += (bytes + LLMC_ARENA_ALIGN - 1) / LLMC_ARENA_ALIGN * LLMC_ARENA_ALIGN;
    return p;
}

#endif

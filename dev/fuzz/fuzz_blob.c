/* fuzz_blob.c — the fuzzer's byte buffers, its RNG, header words read and written in
 * place, whole files read, and the fatal exit (see fuzz.c). */
#include "fuzz.h"

void blob_reserve(blob *b, size_t n) {
    if (n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "fuzz: out of memory for a %zu-byte input\n", n);
        exit(2);
    }
    b->p = p;
    b->cap = cap;
}
void blob_set(blob *b, const void *src, size_t n) {
    blob_reserve(b, n);
    if (n) memcpy(b->p, src, n);
    b->n = n;
}
void blob_append(blob *b, const void *src, size_t n) {
    blob_reserve(b, b->n + n);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint64_t below(uint64_t *s, uint64_t n) { return n ? splitmix(s) % n : 0; }

int32_t get32(const blob *b, size_t off) {
    int32_t v = 0;
    if (off + 4 <= b->n) memcpy(&v, b->p + off, 4);
    return v;
}
void put32(blob *b, size_t off, int32_t v) {
    if (off + 4 <= b->n) memcpy(b->p + off, &v, 4);
}
uint64_t get64(const blob *b, int slot) {
    return (uint64_t)(uint32_t)get32(b, (size_t)slot * 4) | (uint64_t)(uint32_t)get32(b, (size_t)slot * 4 + 4) << 32;
}
void put64(blob *b, int slot, uint64_t v) {
    put32(b, (size_t)slot * 4, (int32_t)(uint32_t)v);
    put32(b, (size_t)slot * 4 + 4, (int32_t)(uint32_t)(v >> 32));
}

int read_file(const char *path, blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    b->n = 0;
    unsigned char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) blob_append(b, buf, k);
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

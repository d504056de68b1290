/* fuzz_mutate.c — the mutations, and the input a (seed, format, index) stands for (see fuzz.c). */
#include "fuzz.h"

/* ------------------------------------------------------------------ mutations */

/* int32 values that break size arithmetic: signs, powers of two and their neighbours, square
 * roots of 2^31 and 2^32, GPT-2's own sizes, and the other formats' magics. */
static const int32_t EXTREMES[] = {
    0, 1, -1, 2, 3, 4, 5, 7, 8, 127, 128, 129, 255, 256, 1023, 1024, 1025, 46340, 46341, 65535, 65536, 65537,
    (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 24, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT_MAX, INT_MAX - 1,
    INT_MIN, INT_MIN + 1, -2, -128, -65536, 50256, 50257, 50304, 0x7fffff80, LLMC_MODEL_MAGIC, LLMC_STATE_MAGIC,
    LLMC_TOKENIZER_MAGIC, LLMC_SHARD_MAGIC, 6, 0x01010101, (int32_t)0x80808080u,
};
enum { NEXTREMES = sizeof EXTREMES / sizeof EXTREMES[0] };
/* mask inputs draw these too (a table of their own keeps the other formats' draws as they were):
 * the mask's magic, on the shard as well, and counts and row lengths near the seeds' */
static const int32_t MASK_EXTREMES[] = {LLMC_MASK_MAGIC, LLMC_MASK_MAGIC + 1, MASK_T, MASK_T - 1, MASK_T + 1,
                                        9, 16, 17, 64, 65, 200, 333, 1000, 1001};

/* Pairs whose product overflows 32 bits (or lands exactly on 2^31 / 2^32). */
static const int32_t OVERFLOW_PAIRS[][2] = {
    {65536, 65536}, {46341, 46341}, {65536, 32768}, {1 << 30, 4}, {INT_MAX, 2}, {INT_MAX, INT_MAX},
    {1 << 20, 4096}, {1 << 16, 1 << 15}, {1024, 1 << 21}, {3, 0x55555556}, {12, 0x15555556},
};

static const uint64_t U64_EXTREMES[] = {
    0, 1, 2, 0xffffffffull, 0x100000000ull, 0x100000001ull, 1ull << 62, 1ull << 63, UINT64_MAX, UINT64_MAX - 1,
    0x5555555555555556ull, /* * 3 wraps to 2 */ 0x4000000000000001ull, 0x7fffffffffffffffull,
};

/* fp32 and bf16 values no optimizer state or weight should hold, and some that are merely odd. */
static const uint32_t F32_SPECIAL[] = {0x7fc00000u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu,
                                       0x00000001u, 0x80000000u, 0xbf800000u, 0x7fa00000u};
static const uint16_t BF16_SPECIAL[] = {0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x7f7f, 0xff7f, 0x0001, 0x8000, 0x7fa0};

static size_t pick_offset(uint64_t *r, const part *p) {
    /* half the time near a structural point, otherwise anywhere */
    if (p->nmarks && below(r, 2)) {
        const size_t o = p->marks[below(r, (uint64_t)p->nmarks)], d = (size_t)below(r, 5); /* o-2 .. o+2 */
        return d >= 2 ? o + (d - 2) : o >= 2 - d ? o - (2 - d) : 0;
    }
    return (size_t)below(r, p->b.n + 1);
}

/* Sets a header field to a value just off the one it holds. */
static int32_t near_value(uint64_t *r, int32_t v) {
    switch (below(r, 8)) {
    case 0: return (int32_t)((uint32_t)v + 1);
    case 1: return (int32_t)((uint32_t)v - 1);
    case 2: return (int32_t)((uint32_t)v * 2);
    case 3: return v / 2;
    case 4: return (int32_t)(0u - (uint32_t)v);
    case 5: return (int32_t)((uint32_t)v + 128);
    case 6: return (int32_t)((uint32_t)v ^ (1u << below(r, 32)));
    default: return (int32_t)((uint32_t)v + (uint32_t)below(r, 33) - 16);
    }
}

/* A model header with one size field moved by (about) the amount that makes the file's byte
 * count wrap around 2^31, 2^32 or 2^33 back to the real one: a size check done in 32 bits, or
 * in a signed int, would pass it. */
static void model_wrap(uint64_t *r, blob *b) {
    const int32_t version = get32(b, 4), C = get32(b, 24), L = get32(b, 16);
    const uint64_t esz = version == 5 ? 2 : 4;
    if (C <= 0 || L <= 0) return;
    int slot;
    uint64_t unit;
    switch (below(r, 3)) {
    case 0: slot = 7, unit = (uint64_t)C * esz; break;                              /* Vp rows of wte */
    case 1: slot = 2, unit = (uint64_t)C * esz; break;                              /* maxT rows of wpe */
    default: slot = 4, unit = (12ull * C * C + 13ull * C) * esz; break;             /* whole layers */
    }
    const uint64_t wraps[] = {1ull << 32, 1ull << 31, 1ull << 33};
    const uint64_t add = wraps[below(r, 3)] / unit;
    put32(b, (size_t)slot * 4, (int32_t)(uint32_t)((uint64_t)(uint32_t)get32(b, (size_t)slot * 4) + add));
}

enum {
    M_TRUNC, M_TRUNC_MARK, M_FLIP, M_BYTES, M_SPECIAL_BYTE, M_FIELD_EXTREME, M_FIELD_NEAR, M_FIELD_PAIR, M_FIELD_ANY,
    M_U64, M_WRAP, M_APPEND, M_FLOATS, M_INSERT, M_DELETE, M_COPY, M_SPLICE, NMUT
};
/* drawn for JSON parts only (after the others, so that the other formats' inputs stay as they were) */
enum { M_JSON = NMUT, NMUT_JSON = NMUT + 4 };
/* and these for mask files only */
enum { M_MASK_BYTE = NMUT, M_MASK_SWAP, M_MASK_COUNT, M_MASK_ROW, NMUT_MASK };

/* Where the data of a safetensors file start, by its own header length (the end when that is off). */
static size_t st_body(const blob *b) {
    uint64_t n = 0;
    if (b->n >= 8) memcpy(&n, b->p, 8);
    return b->n >= 8 && n <= b->n - 8 ? (size_t)(8 + n) : b->n;
}

/* JSON-aware: a number or a string of the JSON replaced by one that tests a check, the safetensors
 * header length kept right so that the change reaches the checks behind the parser. */
static void mutate_json(uint64_t *r, part *p) {
    static const char *const NUMS[] = {"0", "1", "-1", "2", "3", "7", "64", "65", "129", "1024", "4294967295",
                                       "4294967296", "9223372036854775807", "9223372036854775808",
                                       "18446744073709551616", "4611686018427387904", "1e309", "-0", "2.5", "1e-5",
                                       "1E1", "00", "0.0", "100000000000000000000000000000000"};
    static const char *const WORDS[] = {"\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\"", "\"F64\"", "\"U8\"",
                                        "\"BOOL\"", "\"F8_E4M3\"", "\"X\"", "null", "true", "[]", "{}", "[0]",
                                        "[1,2,3]", "\"\"", "\"h.0.ln_1.weight\"", "\"wte.weight\"",
                                        "\"h.9.attn.bias\"", "\"lm_head.weight\"", "\"__metadata__\"",
                                        "\"gelu\"", "\"\\u0000\"", "\"\\ud800\"", "\"\xc3\x28\""};
    blob *b = &p->b;
    const int st = p->kind == &ST_KIND;
    const size_t lo = st ? 8 : 0, hi = st ? st_body(b) : b->n;
    if (hi <= lo + 1) return;
    size_t s = lo + (size_t)below(r, hi - lo), e;
    const int number = (int)below(r, 2);
    while (s < hi && (number ? !(b->p[s] >= '0' && b->p[s] <= '9') : b->p[s] != '"')) s++;
    if (s >= hi) return;
    if (number) {
        if (s > lo && b->p[s - 1] == '-') s--;
        for (e = s + 1; e < hi && strchr("0123456789.eE+-", b->p[e]); e++) {}
    } else {
        for (e = s + 1; e < hi && b->p[e] != '"'; e++) {}
        if (e++ >= hi) return;
    }
    const char *w = number ? NUMS[below(r, sizeof NUMS / sizeof *NUMS)] : WORDS[below(r, sizeof WORDS / sizeof *WORDS)];
    const size_t k = strlen(w), tail = b->n - e;
    blob_reserve(b, b->n - (e - s) + k);
    memmove(b->p + s + k, b->p + e, tail);
    memcpy(b->p + s, w, k);
    b->n = s + k + tail;
    if (st) put64(b, 0, (uint64_t)(hi - 8 - (e - s) + k));
}

/* Mask-aware: bytes other than 0 and 1 where batches start and end, 0s and 1s swapped (still
 * valid), the count or the body off by a little against the shard, other row lengths. */
static void mutate_mask(uint64_t *r, part *p, int op) {
    blob *b = &p->b;
    const size_t body = b->n > HEADER_BYTES ? b->n - HEADER_BYTES : 0;
    switch (op) {
    case M_MASK_BYTE: {
        static const unsigned char V[] = {2, 3, 0x7f, 0x80, 0xfe, 0xff, 0, 1};
        for (int i = 0, n = 1 + (int)below(r, 4); i < n && body; i++) {
            size_t t;
            switch (below(r, 4)) {
            case 0: t = (size_t)below(r, 2); break; /* token 0 is never a target, token 1 is */
            case 1: t = body - 1 - (size_t)below(r, 2); break;
            case 2: t = (size_t)below(r, body / MASK_T + 1) * MASK_T + (size_t)below(r, 2); break; /* batch edges */
            default: t = (size_t)below(r, body); break;
            }
            if (t < body) b->p[HEADER_BYTES + t] = V[below(r, sizeof V)];
        }
        break;
    }
    case M_MASK_SWAP:
        for (int i = 0, n = 1 + (int)below(r, 16); i < n && body; i++) {
            unsigned char *m = b->p + HEADER_BYTES + below(r, body);
            if (*m <= 1) *m ^= 1;
        }
        break;
    case M_MASK_COUNT: { /* the header's count, the body, or both (consistent, yet not the shard's) */
        static const int D[] = {-1, 1, -2, 2, -MASK_T, MASK_T, -MASK_T - 1, MASK_T + 1};
        const int d = D[below(r, sizeof D / sizeof D[0])], how = (int)below(r, 3);
        if (how != 1) put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (uint32_t)d));
        if (how != 0) {
            if (d < 0) b->n -= (size_t)-d <= body ? (size_t)-d : body;
            else
                for (int i = 0; i < d; i++) blob_append(b, &(unsigned char){(unsigned char)below(r, 2)}, 1);
        }
        break;
    }
    default: { /* the row length */
        static const int32_t TV[] = {MASK_T - 1, MASK_T + 1, 2 * MASK_T, MASK_T / 2, 1, 0, -MASK_T, 64, 65, INT_MAX};
        put32(b, 12, below(r, 2) ? TV[below(r, sizeof TV / sizeof TV[0])] : near_value(r, get32(b, 12)));
        break;
    }
    }
}

static void mutate_part(uint64_t *r, part *p, const part *other) {
    blob *b = &p->b;
    const part_kind *k = p->kind;
    const int json = k == &ST_KIND || k == &HF_CONFIG_KIND, mask = k == &MASK_KIND;
    int op = (int)below(r, json ? NMUT_JSON : mask ? NMUT_MASK : NMUT);
    if (mask && op >= NMUT) {
        mutate_mask(r, p, op);
        return;
    }
    switch (op > M_JSON ? M_JSON : op) {
    case M_JSON: mutate_json(r, p); break;
    case M_TRUNC: b->n = (size_t)below(r, b->n + 1); break;
    case M_TRUNC_MARK: {
        size_t o = pick_offset(r, p);
        if (o < b->n) b->n = o;
        break;
    }
    case M_FLIP: /* a few bits, half the time inside the header's first fields */
        for (int i = 0, n = 1 + (int)below(r, 8); i < n && b->n; i++) {
            size_t o = below(r, 2) ? below(r, b->n < 64 ? b->n : 64) : below(r, b->n);
            b->p[o] ^= (unsigned char)(1u << below(r, 8));
        }
        break;
    case M_BYTES:
        for (int i = 0, n = 1 + (int)below(r, 16); i < n && b->n; i++) b->p[below(r, b->n)] = (unsigned char)splitmix(r);
        break;
    case M_SPECIAL_BYTE: { /* a byte at a structural point: token lengths, field low bytes */
        static const unsigned char V[] = {0, 1, 0x7f, 0x80, 0xfe, 0xff};
        size_t o = pick_offset(r, p);
        if (o < b->n) b->p[o] = V[below(r, sizeof V)];
        break;
    }
    case M_FIELD_EXTREME:
        if (k == &MASK_KIND || k == &MASK_SHARD_KIND) {
            const size_t off = (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4;
            const int32_t v = below(r, 4) ? EXTREMES[below(r, NEXTREMES)]
                                          : MASK_EXTREMES[below(r, sizeof MASK_EXTREMES / sizeof MASK_EXTREMES[0])];
            put32(b, off, v);
        } else put32(b, (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4, EXTREMES[below(r, NEXTREMES)]);
        break;
    case M_FIELD_NEAR: {
        size_t off = (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4;
        put32(b, off, near_value(r, get32(b, off)));
        break;
    }
    case M_FIELD_PAIR: { /* two size fields whose product overflows */
        const int32_t *v = OVERFLOW_PAIRS[below(r, sizeof OVERFLOW_PAIRS / sizeof OVERFLOW_PAIRS[0])];
        int s1 = k->slots[below(r, (uint64_t)k->nslots)], s2 = k->slots[below(r, (uint64_t)k->nslots)];
        put32(b, (size_t)s1 * 4, v[0]);
        put32(b, (size_t)s2 * 4, v[1]);
        break;
    }
    case M_FIELD_ANY: /* a slot the format leaves unused: must be ignored */
        put32(b, (size_t)below(r, LLMC_HEADER_INTS) * 4, below(r, 2) ? EXTREMES[below(r, NEXTREMES)] : (int32_t)splitmix(r));
        break;
    case M_U64:
        if (k->nu64) {
            int slot = k->u64_slots[below(r, (uint64_t)k->nu64)];
            uint64_t v = get64(b, slot);
            switch (below(r, 3)) {
            case 0: v = U64_EXTREMES[below(r, sizeof U64_EXTREMES / sizeof U64_EXTREMES[0])]; break;
            case 1: v += (uint64_t)(int64_t)(below(r, 5) - 2); break;        /* just off */
            default: v += (uint64_t)1 << (30 + below(r, 34)); break;         /* off by a high bit: 4v wraps */
            }
            put64(b, slot, v);
        } else {
            put32(b, (size_t)k->slots[below(r, (uint64_t)k->nslots)] * 4, EXTREMES[below(r, NEXTREMES)]);
        }
        break;
    case M_WRAP: /* a count moved so that (count * record size) wraps to the real value */
        if (k->model_header) model_wrap(r, b);
        else if (k == &SHARD_KIND || k == &MASK_SHARD_KIND || k == &MASK_KIND) /* 2 bytes a token (mask: 1) */
            put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (1u << 31)));
        else if (k == &TOKENIZER_KIND) /* 8 bytes of offset, or 256 bytes at most, a token */
            put32(b, 8, (int32_t)((uint32_t)get32(b, 8) + (below(r, 2) ? 1u << 29 : 1u << 24)));
        else if (k == &ST_KIND) put64(b, 0, get64(b, 0) + (below(r, 2) ? 1ull << 32 : 1ull << 63)); /* header length */
        else if (k == &STATE_KIND) /* 4n, 12n */
            put64(b, 20, get64(b, 20) + (below(r, 2) ? 1ull << 62 : 0x5555555555555556ull));
        break;
    case M_APPEND: {
        size_t n = 1 + (size_t)below(r, below(r, 2) ? 8 : 4096);
        size_t at = b->n;
        blob_reserve(b, b->n + n);
        int zeros = (int)below(r, 2);
        for (size_t i = 0; i < n; i++) b->p[at + i] = zeros ? 0 : (unsigned char)splitmix(r);
        b->n += n;
        break;
    }
    case M_FLOATS: /* NaN, Inf, huge, negative, denormal values written into the body */
        if (p->float_bytes && b->n > (k == &ST_KIND ? st_body(b) : HEADER_BYTES) + 4) {
            const size_t start = k == &ST_KIND ? st_body(b) : HEADER_BYTES; /* where the floats start */
            const size_t fb = (size_t)p->float_bytes, count = (b->n - start) / fb;
            for (int i = 0, n = 1 + (int)below(r, 4); i < n; i++) {
                size_t o = start + below(r, count) * fb;
                if (fb == 4) memcpy(b->p + o, &F32_SPECIAL[below(r, sizeof F32_SPECIAL / 4)], 4);
                else memcpy(b->p + o, &BF16_SPECIAL[below(r, sizeof BF16_SPECIAL / 2)], 2);
            }
        } else if (b->n) {
            b->p[below(r, b->n)] = 0xff;
        }
        break;
    case M_INSERT: { /* shifts everything after it: misaligns records */
        size_t at = pick_offset(r, p), n = 1 + (size_t)below(r, 16);
        if (at > b->n) at = b->n;
        blob_reserve(b, b->n + n);
        memmove(b->p + at + n, b->p + at, b->n - at);
        for (size_t i = 0; i < n; i++) b->p[at + i] = (unsigned char)splitmix(r);
        b->n += n;
        break;
    }
    case M_DELETE: {
        size_t at = pick_offset(r, p), n = 1 + (size_t)below(r, 64);
        if (at >= b->n) break;
        if (n > b->n - at) n = b->n - at;
        memmove(b->p + at, b->p + at + n, b->n - at - n);
        b->n -= n;
        break;
    }
    case M_COPY: { /* a chunk of the file over another place of it */
        if (b->n < 2) break;
        size_t from = below(r, b->n), to = below(r, b->n), n = 1 + (size_t)below(r, 256);
        if (n > b->n - from) n = b->n - from;
        if (n > b->n - to) n = b->n - to;
        memmove(b->p + to, b->p + from, n);
        break;
    }
    case M_SPLICE: /* another seed's header on this body, or its body under this header */
        if (other && other->b.n >= HEADER_BYTES && b->n >= HEADER_BYTES) {
            if (below(r, 2)) memcpy(b->p, other->b.p, HEADER_BYTES);
            else {
                size_t n = other->b.n;
                unsigned char hdr[HEADER_BYTES];
                memcpy(hdr, b->p, HEADER_BYTES);
                blob_set(b, other->b.p, n);
                memcpy(b->p, hdr, HEADER_BYTES);
            }
        }
        break;
    }
}

/* Both files of a mask input changed together, so that they still agree: cut to fewer tokens (a
 * valid pair, perhaps too short for a batch), grown by a few (a partial last batch), or both
 * counts set to one wrong value. Then, half the time, one more mutation of the mask. */
static void mutate_mask_pair(uint64_t *r, input *in) {
    blob *m = &in->part[0].b, *s = &in->part[1].b;
    const int32_t n = get32(s, 8);
    if (m->n != HEADER_BYTES + (size_t)n || s->n != HEADER_BYTES + 2 * (size_t)n) return; /* a seed always agrees */
    switch (below(r, 3)) {
    case 0: {
        static const int32_t K[] = {0, 1, 2, MASK_T, MASK_T + 1, 2 * MASK_T, 2 * MASK_T + 1, 3 * MASK_T, 3 * MASK_T + 1};
        int32_t k = below(r, 2) ? K[below(r, sizeof K / sizeof K[0])] : (int32_t)below(r, (uint64_t)n + 1);
        if (k > n) k = n;
        put32(s, 8, k), put32(m, 8, k);
        s->n = HEADER_BYTES + 2 * (size_t)k, m->n = HEADER_BYTES + (size_t)k;
        break;
    }
    case 1: {
        const int k = 1 + (int)below(r, 64);
        for (int i = 0; i < k; i++) {
            const uint16_t t = (uint16_t)below(r, 65536);
            blob_append(s, &t, 2);
            blob_append(m, &(unsigned char){(unsigned char)below(r, 2)}, 1);
        }
        put32(s, 8, n + k), put32(m, 8, n + k);
        break;
    }
    default: {
        const int32_t v = below(r, 2) ? EXTREMES[below(r, NEXTREMES)] : near_value(r, n);
        put32(s, 8, v), put32(m, 8, v);
        break;
    }
    }
    if (below(r, 2)) mutate_part(r, &in->part[0], NULL);
}

/* Input index of a campaign: a pure function of (seed, format, index). */
void make_input(const input *seeds, int nseeds, uint64_t seed, int fmt, uint64_t index, input *in) {
    uint64_t r = seed * 0x2545F4914F6CDD1Dull ^ ((uint64_t)fmt << 56) ^ index;
    splitmix(&r);
    const int k = (int)below(&r, (uint64_t)nseeds);
    const input *s = &seeds[k];
    in->nparts = s->nparts;
    for (int i = 0; i < s->nparts; i++) {
        part *p = &in->part[i];
        blob keep = p->b;
        *p = s->part[i];
        p->b = keep;
        blob_set(&p->b, s->part[i].b.p, s->part[i].b.n);
    }
    if (below(&r, 64) == 0) return; /* now and then the seed itself: the valid path stays exercised */
    if (in->part[0].kind == &MASK_KIND && below(&r, 8) == 0) {
        mutate_mask_pair(&r, in);
        return;
    }
    /* which files: the state (mask) file mostly, its model (shard) file sometimes, both now and then */
    const int which = in->nparts == 1 ? 1 : (int)(below(&r, 10) < 8 ? 1 : below(&r, 2) ? 2 : 3);
    for (int i = 0; i < in->nparts; i++) {
        if (!(which & (1 << i))) continue;
        int rounds = 1;
        while (rounds < 8 && below(&r, 2)) rounds++;
        const input *o = &seeds[below(&r, (uint64_t)nseeds)];
        for (int j = 0; j < rounds; j++) mutate_part(&r, &in->part[i], &o->part[i]);
    }
}


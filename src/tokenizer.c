/* tokenizer.c — decode-only reader for llm.c's tokenizer .bin.
 *
 * Layout: 256 int32 of header (magic, version 1 or 2, vocab size, and in
 * version 2 the EOT id), then per token a uint8 byte count and the bytes.
 * The whole file is read into one blob; offsets index it, so decode is O(1).
 */
#define _POSIX_C_SOURCE 200809L /* fileno, fstat */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "llmc.h"

#define GPT2_EOT 50256 /* version 1 files predate the EOT field; they are all GPT-2's */

struct llmc_tokenizer {
    char err[LLMC_ERR_LEN];
    int vocab_size;
    int eot;
    unsigned char *bytes; /* all token bytes back to back */
    size_t *offsets;      /* vocab_size + 1 entries: token i is bytes[offsets[i] .. offsets[i+1]) */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint32_t rd_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The rest of f, at most limit bytes (*too_long set when there is more), in a buffer sized by
 * what is read: the file's size where it has one, grown geometrically otherwise (a pipe). NULL
 * when malloc fails. Always one spare byte, so an empty body still gets a buffer. */
static unsigned char *read_body(FILE *f, size_t limit, size_t *n, int *too_long) {
    size_t cap = 1 << 16;
    struct stat sb;
    long here = ftell(f);
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && here >= 0 && sb.st_size >= here)
        cap = (size_t)(sb.st_size - here) + 1; /* exact, plus one byte to see EOF (or a file that grew) */
    if (cap > limit + 1) cap = limit + 1;
    unsigned char *buf = malloc(cap);
    *n = 0;
    *too_long = 0;
    while (buf) {
        *n += fread(buf + *n, 1, cap - *n, f);
        if (*n < cap) break; /* EOF or an error (the caller checks ferror) */
        if (*n > limit) {
            *too_long = 1;
            break;
        }
        size_t grown = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
        unsigned char *p = realloc(buf, grown);
        if (!p) {
            free(buf);
            return NULL;
        }
        buf = p;
        cap = grown;
    }
    return buf;
}

/* The tokenizer in path, or NULL with a message in err. */
static llmc_tokenizer *read_tokenizer(const char *path, char *err, size_t errlen, llmc_status *st) {
    if (err && errlen) err[0] = '\0';
    *st = LLMC_ERR_FORMAT; /* what most failures are; IO and out-of-memory say so below */
    if (!path) {
        *st = LLMC_ERR_INVALID_ARG;
        set_err(err, errlen, "no tokenizer path given");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        *st = LLMC_ERR_IO;
        set_err(err, errlen, "cannot open tokenizer %s", path);
        return NULL;
    }
    unsigned char hdr[LLMC_HEADER_INTS * 4];
    if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr) {
        fclose(f);
        set_err(err, errlen, "truncated tokenizer %s: shorter than the %d-byte header", path, (int)sizeof hdr);
        return NULL;
    }
    int32_t magic = (int32_t)rd_le32(hdr), version = (int32_t)rd_le32(hdr + 4);
    int32_t vocab = (int32_t)rd_le32(hdr + 8), eot = (int32_t)rd_le32(hdr + 12);
    if (magic != LLMC_TOKENIZER_MAGIC) {
        fclose(f);
        set_err(err, errlen, "tokenizer %s has wrong magic %d (expected %d)", path, magic, LLMC_TOKENIZER_MAGIC);
        return NULL;
    }
    if (version != 1 && version != 2) {
        fclose(f);
        set_err(err, errlen, "tokenizer %s has unsupported version %d (expected 1 or 2)", path, version);
        return NULL;
    }
    if (vocab <= 0) {
        fclose(f);
        set_err(err, errlen, "tokenizer %s has an invalid vocab size %d", path, vocab);
        return NULL;
    }
    if (version == 1) {
        eot = vocab > GPT2_EOT ? GPT2_EOT : -1; /* -1: no EOT token known */
    } else if (eot < 0 || eot >= vocab) {
        fclose(f);
        set_err(err, errlen, "tokenizer %s has EOT id %d outside the vocab of %d", path, eot, vocab);
        return NULL;
    }

    /* Every size below comes from what the file holds, never from what its header claims: a
     * 1,378-byte file whose header says 2^30 tokens once made this allocate 8 GiB of offsets
     * before it parsed a byte. A token takes at least its length byte and at most 256 bytes, so
     * the body bounds the vocab from above, and the vocab bounds the body. */
    const size_t most = (size_t)vocab * 256; /* the longest body of a vocab this size (< 2^39) */
    size_t n = 0;
    int too_long = 0;
    unsigned char *raw = read_body(f, most, &n, &too_long);
    int read_error = ferror(f);
    fclose(f);
    if (!raw || read_error) {
        free(raw);
        *st = read_error ? LLMC_ERR_IO : LLMC_ERR_OUT_OF_MEMORY;
        set_err(err, errlen, read_error ? "cannot read tokenizer %s" : "out of memory reading tokenizer %s", path);
        return NULL;
    }
    if (too_long) {
        free(raw);
        set_err(err, errlen, "tokenizer %s holds more than the %zu bytes that %d tokens can take: the header and the data disagree",
                path, most, vocab);
        return NULL;
    }
    if ((size_t)vocab > n) {
        free(raw);
        set_err(err, errlen, "truncated tokenizer %s: header says %d tokens but only %zu bytes follow it (at least one per token)",
                path, vocab, n);
        return NULL;
    }
    llmc_tokenizer *t = calloc(1, sizeof *t);
    size_t *offs = malloc(((size_t)vocab + 1) * sizeof *offs); /* <= 8 bytes per byte of the file */
    if (!t || !offs) {
        free(raw), free(t), free(offs);
        *st = LLMC_ERR_OUT_OF_MEMORY;
        set_err(err, errlen, "out of memory reading tokenizer %s", path);
        return NULL;
    }

    /* Compact in place: drop the length bytes, keep offsets. Zero-length tokens are allowed. */
    size_t in = 0, out = 0;
    for (int32_t i = 0; i < vocab; i++) {
        if (in >= n) {
            free(raw), free(t), free(offs);
            set_err(err, errlen, "truncated tokenizer %s: header says %d tokens but the file ends at token %d", path,
                    vocab, i);
            return NULL;
        }
        size_t len = raw[in++];
        if (in + len > n) {
            free(raw), free(t), free(offs);
            set_err(err, errlen, "truncated tokenizer %s: token %d needs %zu bytes, %zu remain", path, i, len, n - in);
            return NULL;
        }
        offs[i] = out;
        memmove(raw + out, raw + in, len);
        in += len;
        out += len;
    }
    offs[vocab] = out;
    if (in != n) {
        free(raw), free(t), free(offs);
        set_err(err, errlen, "tokenizer %s has %zu bytes after its %d tokens: the header and the data disagree", path,
                n - in, vocab);
        return NULL;
    }
    t->vocab_size = vocab;
    t->eot = eot;
    t->bytes = raw;
    t->offsets = offs;
    *st = LLMC_OK;
    return t;
}

llmc_tokenizer *llmc_tokenizer_new(void) {
    llmc_tokenizer *t = calloc(1, sizeof *t);
    if (t) t->eot = -1;
    return t;
}

void llmc_tokenizer_free(llmc_tokenizer *t) {
    if (!t) return;
    free(t->bytes);
    free(t->offsets);
    free(t);
}

const char *llmc_tokenizer_error(const llmc_tokenizer *t) { return t ? t->err : "out of memory"; }

llmc_status llmc_tokenizer_load(llmc_tokenizer *t, const char *path) {
    char err[LLMC_ERR_LEN];
    llmc_status st;
    llmc_tokenizer *loaded = read_tokenizer(path, err, sizeof err, &st);
    if (!loaded) {
        snprintf(t->err, sizeof t->err, "%s", err[0] ? err : "cannot read the tokenizer");
        return st; /* a failed load keeps what t held */
    }
    free(t->bytes);
    free(t->offsets);
    t->vocab_size = loaded->vocab_size;
    t->eot = loaded->eot;
    t->bytes = loaded->bytes;
    t->offsets = loaded->offsets;
    t->err[0] = '\0';
    free(loaded);
    return LLMC_OK;
}

const char *llmc_tokenizer_decode(const llmc_tokenizer *t, int token, int *len) {
    if (!t || token < 0 || token >= t->vocab_size) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = (int)(t->offsets[token + 1] - t->offsets[token]);
    return (const char *)t->bytes + t->offsets[token];
}

int llmc_tokenizer_eot(const llmc_tokenizer *t) { return t ? t->eot : -1; }
int llmc_tokenizer_vocab_size(const llmc_tokenizer *t) { return t ? t->vocab_size : 0; }

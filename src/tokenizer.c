/* tokenizer.c — decode-only reader for llm.c's tokenizer .bin.
 *
 * Layout: 256 int32 of header (magic, version 1 or 2, vocab size, and in
 * version 2 the EOT id), then per token a uint8 byte count and the bytes.
 * The whole file is read into one blob; offsets index it, so decode is O(1).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The tokenizer in path, or NULL with a message in err. */
static llmc_tokenizer *read_tokenizer(const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!path) {
        set_err(err, errlen, "no tokenizer path given");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
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

    /* The rest of the file is at most 256 bytes per token: read it in one go. */
    size_t cap = (size_t)vocab * 256 + 1, n = 0;
    long here = ftell(f);
    if (here >= 0 && fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        if (end >= here && (size_t)(end - here) < cap) cap = (size_t)(end - here) + 1;
        fseek(f, here, SEEK_SET);
    }
    unsigned char *raw = malloc(cap);
    llmc_tokenizer *t = calloc(1, sizeof *t);
    size_t *offs = malloc(((size_t)vocab + 1) * sizeof *offs);
    if (!raw || !t || !offs) {
        fclose(f);
        free(raw), free(t), free(offs);
        set_err(err, errlen, "out of memory reading tokenizer %s", path);
        return NULL;
    }
    n = fread(raw, 1, cap, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error) {
        free(raw), free(t), free(offs);
        set_err(err, errlen, "cannot read tokenizer %s", path);
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
    llmc_tokenizer *loaded = read_tokenizer(path, err, sizeof err);
    if (!loaded) {
        snprintf(t->err, sizeof t->err, "%s", err[0] ? err : "cannot read the tokenizer");
        /* a failed load keeps what t held */
        return strncmp(err, "cannot open", 11) == 0 ? LLMC_ERR_IO : LLMC_ERR_FORMAT;
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

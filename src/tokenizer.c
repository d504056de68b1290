/* tokenizer.c — decode-only reader for llm.c's tokenizer .bin, or a tiktoken ranks file.
 *
 * Layout: 256 int32 of header (magic, version 1 or 2, vocab size, and in
 * version 2 the EOT id), then per token a uint8 byte count and the bytes.
 * The whole file is read into one blob; offsets index it, so decode is O(1).
 * A ranks file (tiktoken's gpt2.tiktoken: a line "base64(bytes) rank" per token) is told apart
 * by content and read too: for byte-level BPE a token's id is its rank, and <|endoftext|>
 * follows the last rank, as in GPT-2.
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

#define RANKS_MAX_BYTES (64u << 20) /* GPT-2's ranks file is 0.8 MB */
#define RANKS_MAX_TOKEN 1024        /* bytes of one decoded token */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Whether the first line of head looks like "base64 rank": what a ranks file starts with. */
static int looks_like_ranks(const unsigned char *head, size_t n) {
    size_t i = 0;
    while (i < n && (b64_value(head[i]) >= 0 || head[i] == '=')) i++;
    if (i == 0 || i >= n || head[i++] != ' ' || i >= n || head[i] < '0' || head[i] > '9') return 0;
    while (i < n && head[i] >= '0' && head[i] <= '9') i++;
    return i == n || head[i] == '\n' || head[i] == '\r';
}

/* Decodes base64 s[0..len) into out (at least len*3/4 bytes); the byte count, or -1. */
static long b64_decode(const unsigned char *s, size_t len, unsigned char *out) {
    if (len % 4) return -1;
    long n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) v[k] = s[i + k] == '=' ? (i + 4 == len && k >= 2 ? 0 : -2) : b64_value(s[i + k]);
        if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0) return -1;
        if (s[i + 2] == '=' && s[i + 3] != '=') return -1;
        out[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (s[i + 2] != '=') out[n++] = (unsigned char)(v[1] << 4 | v[2] >> 2);
        if (s[i + 3] != '=') out[n++] = (unsigned char)(v[2] << 6 | v[3]);
    }
    return n;
}

/* A tiktoken ranks file: ranks 0..n-1, each once, then <|endoftext|> as token n. */
static llmc_tokenizer *read_ranks(const char *path, char *err, size_t errlen, llmc_status *st) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *st = LLMC_ERR_IO;
        set_err(err, errlen, "cannot open tokenizer %s", path);
        return NULL;
    }
    size_t n = 0;
    int too_long = 0;
    unsigned char *text = read_body(f, RANKS_MAX_BYTES, &n, &too_long);
    const int read_error = ferror(f);
    fclose(f);
    size_t lines = 0;
    for (size_t i = 0; text && i < n; i++) lines += text[i] == '\n';
    lines += n > 0 && text && text[n - 1] != '\n';
    static const char eot_text[] = "<|endoftext|>";
    const size_t eot_len = sizeof eot_text - 1;
    /* decoded bytes never exceed the text; offsets: one per line, the EOT and the end */
    unsigned char *bytes = text && !too_long ? malloc(n + eot_len + 1) : NULL;
    size_t *offs = bytes ? malloc((lines + 2) * sizeof *offs) : NULL;
    unsigned char **tok = offs ? calloc(lines + 1, sizeof *tok) : NULL; /* start of rank r in text */
    size_t *toklen = tok ? calloc(lines + 1, sizeof *toklen) : NULL;
    llmc_tokenizer *t = toklen ? calloc(1, sizeof *t) : NULL;
    *st = read_error ? LLMC_ERR_IO : too_long ? LLMC_ERR_FORMAT : LLMC_ERR_OUT_OF_MEMORY;
    if (!t) {
        set_err(err, errlen, read_error ? "cannot read tokenizer %s"
                             : too_long  ? "tokenizer %s is larger than the %u bytes a ranks file may take"
                                         : "out of memory reading tokenizer %s",
                path, RANKS_MAX_BYTES);
        goto fail;
    }
    *st = LLMC_ERR_FORMAT;
    size_t line = 0, count = 0;
    for (size_t i = 0; i < n; line++) {
        size_t end = i;
        while (end < n && text[end] != '\n') end++;
        size_t stop = end > i && text[end - 1] == '\r' ? end - 1 : end, sp = i;
        while (sp < stop && text[sp] != ' ') sp++;
        char *num_end = NULL;
        const unsigned long long rank = sp + 1 < stop ? strtoull((const char *)text + sp + 1, &num_end, 10) : 0;
        if (stop == i) { /* a blank line */
            i = end + 1;
            continue;
        }
        if (sp == i || sp + 1 >= stop || (unsigned char *)num_end != text + stop || rank >= lines) {
            set_err(err, errlen, "tokenizer %s: line %zu is not \"base64 rank\" with a rank below %zu", path, line + 1,
                    lines);
            goto fail;
        }
        if (tok[rank]) {
            set_err(err, errlen, "tokenizer %s: rank %llu appears twice (line %zu)", path, rank, line + 1);
            goto fail;
        }
        tok[rank] = text + i;
        toklen[rank] = sp - i;
        count++;
        i = end + 1;
    }
    size_t out = 0;
    for (size_t r = 0; r < count; r++) {
        if (!tok[r]) {
            set_err(err, errlen, "tokenizer %s: ranks must be 0..%zu, rank %zu is missing", path, count - 1, r);
            goto fail;
        }
        const long k = toklen[r] / 4 * 3 <= RANKS_MAX_TOKEN ? b64_decode(tok[r], toklen[r], bytes + out) : -1;
        if (k < 0) {
            set_err(err, errlen, "tokenizer %s: rank %zu is not valid base64 of at most %d bytes", path, r,
                    RANKS_MAX_TOKEN);
            goto fail;
        }
        offs[r] = out;
        out += (size_t)k;
    }
    if (count == 0 || count >= INT32_MAX) {
        set_err(err, errlen, "tokenizer %s holds no ranks", path);
        goto fail;
    }
    offs[count] = out;
    memcpy(bytes + out, eot_text, eot_len);
    offs[count + 1] = out + eot_len;
    t->vocab_size = (int)count + 1;
    t->eot = (int)count;
    t->bytes = bytes;
    t->offsets = offs;
    free(text), free(tok), free(toklen);
    *st = LLMC_OK;
    return t;
fail:
    free(text), free(bytes), free(offs), free(tok), free(toklen), free(t);
    return NULL;
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
    unsigned char hdr[LLMC_HEADER_INTS * 4] = {0};
    const size_t got = fread(hdr, 1, sizeof hdr, f);
    if (rd_le32(hdr) != LLMC_TOKENIZER_MAGIC && looks_like_ranks(hdr, got)) {
        fclose(f);
        return read_ranks(path, err, errlen, st);
    }
    if (got != sizeof hdr) {
        fclose(f);
        set_err(err, errlen, "truncated tokenizer %s: shorter than the %d-byte header", path, (int)sizeof hdr);
        return NULL;
    }
    int32_t magic = (int32_t)rd_le32(hdr), version = (int32_t)rd_le32(hdr + 4);
    int32_t vocab = (int32_t)rd_le32(hdr + 8), eot = (int32_t)rd_le32(hdr + 12);
    if (magic != LLMC_TOKENIZER_MAGIC) {
        fclose(f);
        set_err(err, errlen, "tokenizer %s has wrong magic %d (expected %d): neither a gpt2_tokenizer.bin nor a "
                "tiktoken ranks file", path, magic, LLMC_TOKENIZER_MAGIC);
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

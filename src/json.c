/* json.c — the strict JSON parser of json.h: recursive descent over a byte buffer (not
 * NUL-terminated), nodes and decoded strings bump-allocated from the document's arena. */
#include "json.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK_BYTES = 64 * 1024, MAX_NUMBER_CHARS = 512 };

struct json_block {
    struct json_block *next;
    size_t used, cap;
    max_align_t data[]; /* cap bytes */
};

typedef struct parser {
    const unsigned char *s;
    size_t n, pos;
    llmc_json_doc *doc;
    int depth;
    char *err;
    size_t errlen;
} parser;

static void *arena_alloc(llmc_json_doc *d, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct json_block *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        const size_t cap = n > BLOCK_BYTES ? n : BLOCK_BYTES;
        if (!(b = malloc(sizeof *b + cap))) return NULL;
        b->next = d->blocks;
        b->used = 0;
        b->cap = cap;
        d->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void llmc_json_free(llmc_json_doc *doc) {
    for (struct json_block *b = doc->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    doc->blocks = NULL;
    doc->root = NULL;
}

static int fail(parser *p, size_t at, const char *fmt, ...) {
    if (p->err[0]) return 0; /* keep the innermost (first) message */
    int k = snprintf(p->err, p->errlen, "JSON error at byte %zu: ", at);
    if (k < 0 || (size_t)k >= p->errlen) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return 0;
}

static void skip_ws(parser *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r'))
        p->pos++;
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        const unsigned c = s[i];
        const int d = c >= '0' && c <= '9' ? (int)(c - '0') : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                    : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10) : -1;
        if (d < 0) return 0;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Bytes of the well-formed UTF-8 sequence at s[0..n) (no overlongs, surrogates or > U+10FFFF), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    const unsigned c = s[0];
    size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!k || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return k;
}

/* The string starting at the quote at p->pos, decoded into the arena. */
static int parse_string(parser *p, const char **out, size_t *out_len) {
    const size_t start = ++p->pos;
    size_t end = start;
    while (end < p->n && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) return fail(p, start - 1, "unterminated string");
    char *o = arena_alloc(p->doc, end - start + 1), *w = o; /* decoding never grows a string */
    if (!o) return fail(p, start, "out of memory");
    for (size_t i = start; i < end;) {
        const unsigned c = p->s[i];
        if (c < 0x20) return fail(p, i, "control character 0x%02x in a string (escape it)", c);
        if (c >= 0x80) {
            const size_t k = utf8_len(p->s + i, end - i);
            if (!k) return fail(p, i, "invalid UTF-8 byte 0x%02x in a string", c);
            memcpy(w, p->s + i, k);
            w += k, i += k;
            continue;
        }
        if (c != '\\') {
            *w++ = (char)c, i++;
            continue;
        }
        const unsigned e = p->s[i + 1]; /* i + 1 < end: the scan above skipped it */
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t"; /* read-only */
        const char *simple = e ? strchr(from, (int)e) : NULL;
        if (simple) {
            *w++ = to[simple - from], i += 2;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || end - i < 6 || !hex4(p->s + i + 2, &cp)) return fail(p, i, "invalid escape in a string");
        i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, i - 6, "unpaired surrogate \\u%04x in a string", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - i < 6 || p->s[i] != '\\' || p->s[i + 1] != 'u' || !hex4(p->s + i + 2, &lo) || lo < 0xDC00 ||
                lo > 0xDFFF)
                return fail(p, i - 6, "unpaired surrogate \\u%04x in a string", cp);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        w += put_utf8(w, cp);
    }
    *w = '\0';
    *out = o;
    *out_len = (size_t)(w - o);
    p->pos = end + 1;
    return 1;
}

static int is_digit(parser *p) { return p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; }

static int parse_number(parser *p, llmc_json *v) {
    const size_t b = p->pos;
    int is_int = 1;
    if (p->s[p->pos] == '-') p->pos++;
    if (!is_digit(p)) return fail(p, b, "invalid number");
    if (p->s[p->pos] == '0') p->pos++;
    else
        while (is_digit(p)) p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++, is_int = 0;
        if (!is_digit(p)) return fail(p, b, "invalid number (no digit after '.')");
        while (is_digit(p)) p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++, is_int = 0;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!is_digit(p)) return fail(p, b, "invalid number (no digit in the exponent)");
        while (is_digit(p)) p->pos++;
    }
    char buf[MAX_NUMBER_CHARS + 1];
    const size_t k = p->pos - b;
    if (k > MAX_NUMBER_CHARS) return fail(p, b, "number of more than %d characters", MAX_NUMBER_CHARS);
    memcpy(buf, p->s + b, k);
    buf[k] = '\0';
    v->type = LLMC_JSON_NUMBER;
    v->number = strtod(buf, NULL);
    if (!isfinite(v->number)) return fail(p, b, "number %s is out of range", buf);
    if (is_int) { /* exactly, where double would round */
        const int neg = buf[0] == '-';
        uint64_t u = 0;
        for (const char *c = buf + neg; *c && is_int; c++) {
            const unsigned d = (unsigned)(*c - '0');
            if (u > (UINT64_MAX - d) / 10) is_int = 0;
            u = u * 10 + d;
        }
        if (u > (uint64_t)INT64_MAX + (uint64_t)neg) is_int = 0;
        v->is_int = is_int;
        v->integer = !is_int ? 0 : neg ? (int64_t)(0 - u) : (int64_t)u;
    }
    return 1;
}

static int key_cmp(const void *a, const void *b) {
    const llmc_json *x = *(llmc_json *const *)a, *y = *(llmc_json *const *)b;
    const size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    const int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Sorting the members finds a duplicate key in n log n (headers may hold thousands). */
static int check_duplicates(parser *p, const llmc_json *obj) {
    if (obj->len < 2) return 1;
    llmc_json **m = malloc(obj->len * sizeof *m);
    if (!m) return fail(p, obj->offset, "out of memory");
    size_t k = 0;
    for (llmc_json *c = obj->first; c; c = c->next) m[k++] = c;
    qsort(m, k, sizeof *m, key_cmp);
    const llmc_json *dup = NULL;
    for (size_t i = 1; i < k && !dup; i++)
        if (key_cmp(&m[i - 1], &m[i]) == 0) dup = m[i - 1]->offset > m[i]->offset ? m[i - 1] : m[i];
    free(m);
    return dup ? fail(p, dup->offset, "duplicate key \"%.200s\"", dup->key) : 1;
}

static llmc_json *parse_value(parser *p);

/* An array or an object (at its opening bracket) into v. */
static int parse_container(parser *p, llmc_json *v) {
    const int object = p->s[p->pos] == '{';
    const char close = object ? '}' : ']';
    if (++p->depth > LLMC_JSON_MAX_DEPTH) return fail(p, p->pos, "nested deeper than %d", LLMC_JSON_MAX_DEPTH);
    v->type = object ? LLMC_JSON_OBJECT : LLMC_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    llmc_json **tail = &v->first;
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++, p->depth--;
        return 1;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        if (object) {
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != '"') return fail(p, p->pos, "expected a string key");
            if (!parse_string(p, &key, &key_len)) return 0;
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') return fail(p, p->pos, "expected ':' after a key");
            p->pos++;
        }
        llmc_json *m = parse_value(p);
        if (!m) return 0;
        m->key = key, m->key_len = key_len;
        *tail = m, tail = &m->next;
        v->len++;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->n && p->s[p->pos] == close) break;
        return fail(p, p->pos, "expected ',' or '%c'", close);
    }
    p->pos++, p->depth--;
    return object ? check_duplicates(p, v) : 1;
}

static llmc_json *parse_value(parser *p) {
    skip_ws(p);
    if (p->pos >= p->n) return fail(p, p->pos, "unexpected end of input"), NULL;
    if (p->doc->max_nodes && ++p->doc->nodes > p->doc->max_nodes)
        return fail(p, p->pos, "more than %zu values", p->doc->max_nodes), NULL;
    llmc_json *v = arena_alloc(p->doc, sizeof *v);
    if (!v) return fail(p, p->pos, "out of memory"), NULL;
    memset(v, 0, sizeof *v);
    v->offset = p->pos;
    const unsigned c = p->s[p->pos];
    static const char *const words[] = {"null", "false", "true"}; /* read-only */
    int ok = 0;
    if (c == '{' || c == '[') ok = parse_container(p, v);
    else if (c == '"') {
        v->type = LLMC_JSON_STRING;
        ok = parse_string(p, &v->str, &v->len);
    } else if (c == '-' || (c >= '0' && c <= '9'))
        ok = parse_number(p, v);
    else
        for (int w = 0; w < 3 && !ok; w++) {
            const size_t k = strlen(words[w]);
            if (p->n - p->pos >= k && memcmp(p->s + p->pos, words[w], k) == 0) {
                v->type = w ? LLMC_JSON_BOOL : LLMC_JSON_NULL;
                v->boolean = w == 2;
                p->pos += k;
                ok = 1;
            }
        }
    if (!ok && !p->err[0])
        fail(p, p->pos, c >= 0x20 && c < 0x7F ? "unexpected character '%c'" : "unexpected byte 0x%02x", c);
    return ok ? v : NULL;
}

llmc_status llmc_json_parse(llmc_json_doc *doc, const char *text, size_t len, size_t max_nodes, char *err,
                            size_t errlen) {
    memset(doc, 0, sizeof *doc);
    doc->max_nodes = max_nodes;
    char scratch[8];
    parser p = {(const unsigned char *)text, len, 0, doc, 0, err && errlen ? err : scratch,
                err && errlen ? errlen : sizeof scratch};
    p.err[0] = '\0';
    doc->root = parse_value(&p);
    if (doc->root) {
        skip_ws(&p);
        if (p.pos != p.n) fail(&p, p.pos, "unexpected data after the JSON value");
    }
    if (!p.err[0]) return LLMC_OK;
    llmc_json_free(doc);
    return strstr(p.err, "out of memory") ? LLMC_ERR_OUT_OF_MEMORY : LLMC_ERR_FORMAT;
}

const llmc_json *llmc_json_get(const llmc_json *obj, const char *key) {
    if (!obj || obj->type != LLMC_JSON_OBJECT) return NULL;
    const size_t k = strlen(key);
    for (const llmc_json *m = obj->first; m; m = m->next)
        if (m->key_len == k && memcmp(m->key, key, k) == 0) return m;
    return NULL;
}

const char *llmc_json_type_name(llmc_json_type t) {
    static const char *const names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return (unsigned)t < 6 ? names[t] : "?";
}

const char *llmc_json_describe(const llmc_json *v, char *buf, size_t len) {
    if (!v) snprintf(buf, len, "missing");
    else if (v->type == LLMC_JSON_STRING) snprintf(buf, len, "\"%.60s\"%s", v->str, v->len > 60 ? "..." : "");
    else if (v->type == LLMC_JSON_NUMBER && v->is_int) snprintf(buf, len, "%lld", (long long)v->integer);
    else if (v->type == LLMC_JSON_NUMBER) snprintf(buf, len, "%.10g", v->number);
    else if (v->type == LLMC_JSON_BOOL) snprintf(buf, len, "%s", v->boolean ? "true" : "false");
    else snprintf(buf, len, "%s", llmc_json_type_name(v->type));
    return buf;
}

/*
 * hf_model.c — Hugging Face GPT-2 directories in C: config.json, then model.safetensors or
 * model.safetensors.index.json and its shards, read by hand and checked whole before m changes.
 *
 * A safetensors file: u64 little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
 * "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data, offsets counted from the
 * byte after the header; the tensors tile the data exactly (the safetensors package refuses
 * anything else too). Names map to the tensor table through its Hugging Face names (weights.c).
 * Two passes: every header is parsed and every entry checked against the file size and the config
 * (so nothing is allocated from a header's word alone), then the data are read in chunks.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "file_io.h"
#include "json.h"
#include "model_internal.h"

#define MAX_HEADER (100u << 20)   /* the safetensors format's own limit */
#define MAX_JSON_FILE (64u << 20) /* config.json, the index */
/* JSON values of a header or index: GPT-2 XL's header has ~6,000, this allows ~140,000 tensors
 * while keeping a hostile header's tree (~100 bytes a value) near 100 MB */
#define MAX_JSON_VALUES (1u << 20)
enum { MAX_SHARDS = 4096, CHUNK = 1 << 16, NAME_LEN = 160 };

/* dtypes of the safetensors format, and their bytes; the first three are read */
enum { ST_F32, ST_F16, ST_BF16 };
typedef struct st_dtype {
    const char *name;
    int bytes;
} st_dtype;
static const st_dtype DTYPES[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8}, {"U64", 8},
                                  {"I32", 4}, {"U32", 4}, {"I16", 2}, {"U16", 2}, {"I8", 1},  {"U8", 1},
                                  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
enum { NDTYPES = sizeof DTYPES / sizeof DTYPES[0] };

typedef struct hf_slot { /* one (tensor, layer) of the table: where it lives */
    int file;            /* index into files; -1: not seen */
    int dtype;
    uint64_t begin, end; /* absolute offsets in the file */
    char name[NAME_LEN]; /* as the file spells it */
} hf_slot;

typedef struct extent { /* one entry's data, for the tiling check */
    uint64_t begin, end;
    const char *name;
} extent;

typedef struct hf_reader {
    llmc_model *m;
    const char *dir;
    llmc_config cfg;
    llmc_weights w; /* fp32 layout of cfg */
    char **files;
    uint64_t *sizes; /* of each file when its header was read */
    int nfiles;
    hf_slot *slots;
    int base[LLMC_NUM_PARAM_TENSORS]; /* first slot of each tensor */
    int nslots, prefixed;
} hf_reader;

static int slot_count(const hf_reader *r, int i) { return r->w.t[i].layer_stride ? r->cfg.num_layers : 1; }

/* ------------------------------------------------------------------ small files */

/* The whole of a JSON file (at most max bytes), NUL-terminated, into *out. */
static llmc_status read_text(hf_reader *r, const char *path, size_t max, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return llmc_model_fail(r->m, LLMC_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    long size = llmc_file_size(f);
    llmc_status st = LLMC_OK;
    if (size < 0) st = llmc_model_fail(r->m, LLMC_ERR_IO, "'%s' is not a regular file", path);
    else if ((unsigned long)size > max)
        st = llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s' is %ld bytes, more than a JSON file here may be (%zu)",
                             path, size, max);
    else if (!(*out = malloc((size_t)size + 1)))
        st = llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %ld bytes to read '%s'", size, path);
    else if (fread(*out, 1, (size_t)size, f) != (size_t)size)
        st = llmc_model_fail(r->m, LLMC_ERR_IO, "read error in '%s'", path);
    else
        (*out)[size] = '\0';
    fclose(f);
    if (st != LLMC_OK) free(*out), *out = NULL;
    return st;
}

static char *join(const char *dir, const char *name) {
    const size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static llmc_status add_file(hf_reader *r, const char *name) {
    char **files = realloc(r->files, (size_t)(r->nfiles + 1) * sizeof *files);
    if (files) r->files = files;
    if (!files || !(r->files[r->nfiles] = join(r->dir, name)))
        return llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory listing '%s'", r->dir);
    r->nfiles++;
    return LLMC_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The shards an index names (each once), into r->files; the parsed index stays in idx. */
static llmc_status list_shards(hf_reader *r, const char *path, llmc_json_doc *idx, const llmc_json **map) {
    char *text, why[LLMC_ERR_LEN];
    llmc_status st = read_text(r, path, MAX_JSON_FILE, &text);
    if (st != LLMC_OK) return st;
    st = llmc_json_parse(idx, text, strlen(text), MAX_JSON_VALUES, why, sizeof why);
    free(text);
    if (st != LLMC_OK) return llmc_model_fail(r->m, st, "'%s' is not valid JSON (%s)", path, why);
    *map = llmc_json_get(idx->root, "weight_map");
    if (!*map || (*map)->type != LLMC_JSON_OBJECT || !(*map)->len)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s' is not a safetensors index: no \"weight_map\" object "
                               "of tensor names and shard files", path);
    const char **names = malloc((*map)->len * sizeof *names);
    if (!names) return llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory reading '%s'", path);
    size_t n = 0;
    for (const llmc_json *e = (*map)->first; e && st == LLMC_OK; e = e->next) {
        if (e->type != LLMC_JSON_STRING || !e->len || strlen(e->str) != e->len || strchr(e->str, '/') ||
            e->str[0] == '.')
            st = llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': weight_map gives tensor %.200s the shard %s; a shard "
                                 "is a file name in the same directory", path, e->key,
                                 llmc_json_describe(e, why, sizeof why));
        names[n++] = e->str;
    }
    if (st == LLMC_OK) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && st == LLMC_OK; i++) {
        if (i && strcmp(names[i], names[i - 1]) == 0) continue;
        st = r->nfiles < MAX_SHARDS ? add_file(r, names[i])
                                    : llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s' names more than %d shards", path,
                                                      MAX_SHARDS);
    }
    free(names);
    return st;
}

/* ------------------------------------------------------------------ headers */

/* A non-negative integer of a header, below 2^62 (keeps every sum of two in range). */
static int get_u64(const llmc_json *v, uint64_t *out) {
    if (!v || v->type != LLMC_JSON_NUMBER || !v->is_int || v->integer < 0 || v->integer >= (int64_t)1 << 62) return 0;
    *out = (uint64_t)v->integer;
    return 1;
}

static void shape_text(char *buf, size_t len, const uint64_t *d, int n) {
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < n && k < len; i++) k += (size_t)snprintf(buf + k, len - k, "%s%llu", i ? ", " : "",
                                                                  (unsigned long long)d[i]);
    if (k < len) snprintf(buf + k, len - k, "%s)", n == 1 ? "," : "");
}

/* One entry of a header: checked in itself, then, when it is one of the table's, against the config. */
static llmc_status header_entry(hf_reader *r, int fi, const llmc_json *e, uint64_t data_start, uint64_t data_len,
                                extent *ext) {
    const char *path = r->files[fi];
    char a[160], b[160];
    if (e->type != LLMC_JSON_OBJECT)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': the entry of tensor %.200s is %s, not an object",
                               path, e->key, llmc_json_type_name(e->type));
    const llmc_json *dt = llmc_json_get(e, "dtype"), *shape = llmc_json_get(e, "shape"),
                    *offs = llmc_json_get(e, "data_offsets");
    int dtype = -1;
    for (int i = 0; i < NDTYPES && dt && dt->type == LLMC_JSON_STRING; i++)
        if (strcmp(dt->str, DTYPES[i].name) == 0) dtype = i;
    if (dtype < 0 && !dt)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has no dtype", path, e->key);
    if (dtype < 0)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has dtype %s, which safetensors does not "
                               "define", path, e->key, llmc_json_describe(dt, a, sizeof a));
    uint64_t dims[8], numel = 1;
    int ndim = 0;
    if (!shape || shape->type != LLMC_JSON_ARRAY || shape->len > 8)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has %s; a shape is a list of at most 8 "
                               "sizes", path, e->key, !shape ? "no shape" : shape->type == LLMC_JSON_ARRAY
                                                                      ? "a shape of more than 8 sizes"
                                                                      : "a shape that is not a list");
    for (const llmc_json *d = shape->first; d; d = d->next, ndim++) {
        if (!get_u64(d, &dims[ndim]))
            return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has a size %s in its shape", path,
                                   e->key, llmc_json_describe(d, a, sizeof a));
        if (dims[ndim] && numel > (1ull << 62) / dims[ndim]) numel = 1ull << 62; /* more than any file holds */
        else numel *= dims[ndim];
    }
    uint64_t begin, end;
    if (!offs || offs->type != LLMC_JSON_ARRAY || offs->len != 2 || !get_u64(offs->first, &begin) ||
        !get_u64(offs->first->next, &end))
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has %s; they are [begin, end], two "
                               "byte offsets below 2^62", path, e->key,
                               offs ? "data_offsets of another form" : "no data_offsets");
    if (begin > end || end > data_len)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has data_offsets [%llu, %llu], outside "
                               "the %llu bytes of data after the header%s", path, e->key, (unsigned long long)begin,
                               (unsigned long long)end, (unsigned long long)data_len,
                               begin > end ? " (begin after end)" : " (a truncated file?)");
    shape_text(a, sizeof a, dims, ndim);
    if ((end - begin) / (uint64_t)DTYPES[dtype].bytes != numel || (end - begin) % (uint64_t)DTYPES[dtype].bytes)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has data_offsets [%llu, %llu] (%llu "
                               "bytes), but shape %s of %s needs %llu", path, e->key, (unsigned long long)begin,
                               (unsigned long long)end, (unsigned long long)(end - begin), a, DTYPES[dtype].name,
                               (unsigned long long)(numel * (uint64_t)DTYPES[dtype].bytes));
    *ext = (extent){begin, end, e->key};
    int layer = -1;
    const int t = strlen(e->key) == e->key_len ? llmc_weights_hf_lookup(e->key, &layer) : -1;
    if (t < 0 && llmc_weights_hf_ignored(e->key)) return LLMC_OK;
    if (t < 0)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s is not one GPT-2 has", path, e->key);
    if (layer >= r->cfg.num_layers)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s is of layer %d, but the config has "
                               "n_layer %d", path, e->key, layer, r->cfg.num_layers);
    llmc_tensor want = llmc_weights_layer(&r->w, t, 0);
    uint64_t need[2] = {(uint64_t)want.shape[0], want.ndim > 1 ? (uint64_t)want.shape[1] : 0};
    if (t == LLMC_WTE) need[0] = (uint64_t)r->cfg.vocab_size; /* padded to Vp on the way in */
    if (llmc_weights_hf_transposed(t)) need[0] = need[1], need[1] = (uint64_t)want.shape[0];
    if (ndim != want.ndim || dims[0] != need[0] || (ndim > 1 && dims[1] != need[1])) {
        shape_text(b, sizeof b, need, want.ndim);
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s has shape %s; the config needs %s",
                               path, e->key, a, b);
    }
    if (dtype > ST_BF16)
        return llmc_model_fail(r->m, LLMC_ERR_UNSUPPORTED, "'%s': tensor %.200s is %s; llmc reads F32, F16 and BF16 "
                               "weights", path, e->key, DTYPES[dtype].name);
    hf_slot *s = &r->slots[r->base[t] + (layer < 0 ? 0 : layer)];
    if (s->file >= 0)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s is there twice (also as %s in '%s')",
                               path, e->key, s->name, r->files[s->file]);
    *s = (hf_slot){fi, dtype, data_start + begin, data_start + end, ""};
    snprintf(s->name, sizeof s->name, "%s", e->key); /* names the table knows are short */
    r->prefixed |= strncmp(e->key, LLMC_HF_PREFIX, strlen(LLMC_HF_PREFIX)) == 0;
    return LLMC_OK;
}

static int cmp_extent(const void *a, const void *b) {
    const extent *x = a, *y = b;
    return x->begin != y->begin ? (x->begin > y->begin ? 1 : -1) : (x->end > y->end) - (x->end < y->end);
}

/* The entries must cover the data exactly, without gaps or overlaps, as safetensors writes them. */
static llmc_status check_tiling(hf_reader *r, const char *path, extent *ext, size_t n, uint64_t data_len) {
    qsort(ext, n, sizeof *ext, cmp_extent);
    for (int overlaps = 1; overlaps >= 0; overlaps--) /* overlaps first: they are the likelier mistake */
        for (size_t i = 0; i < n; i++) {
            const uint64_t at = i ? ext[i - 1].end : 0;
            if (overlaps ? ext[i].begin < at : ext[i].begin > at)
                return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %.200s starts at data offset %llu, but "
                                       "the tensor before it (%.200s) ends at %llu: %s", path, ext[i].name,
                                       (unsigned long long)ext[i].begin, i ? ext[i - 1].name : "none",
                                       (unsigned long long)at, overlaps ? "they overlap" : "a gap");
        }
    const uint64_t at = n ? ext[n - 1].end : 0;
    if (at != data_len)
        return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': the tensors end at data offset %llu, but %llu bytes "
                               "follow the header", path, (unsigned long long)at, (unsigned long long)data_len);
    return LLMC_OK;
}

/* Reads and checks the header of file fi, filling the slots of the tensors it holds. */
static llmc_status scan_file(hf_reader *r, int fi) {
    const char *path = r->files[fi];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return llmc_model_fail(r->m, LLMC_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    unsigned char len8[8];
    llmc_status st = LLMC_OK;
    char *text = NULL, why[LLMC_ERR_LEN];
    llmc_json_doc doc = {0};
    extent *ext = NULL;
    uint64_t n = 0, size = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = llmc_model_fail(r->m, LLMC_ERR_IO, "'%s' is not a regular file", path);
        goto done;
    }
    size = r->sizes[fi] = (uint64_t)sb.st_size;
    if (size < 8 || pread(fd, len8, 8, 0) != 8) {
        st = llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s' is truncated: %llu bytes, shorter than the 8-byte header "
                             "length of a safetensors file", path, (unsigned long long)size);
        goto done;
    }
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > size - 8 || n > MAX_HEADER || n < 2) {
        st = llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s' is not a safetensors file (or is truncated): its header "
                             "length %llu %s", path, (unsigned long long)n,
                             n < 2 ? "is too small" : n > size - 8 ? "goes beyond the end of the file"
                                                                   : "exceeds the format's 100 MB");
        goto done;
    }
    if (!(text = malloc(n))) {
        st = llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %llu bytes for the header of '%s'",
                             (unsigned long long)n, path);
        goto done;
    }
    if (pread(fd, text, n, 8) != (ssize_t)n) {
        st = llmc_model_fail(r->m, LLMC_ERR_IO, "read error in '%s'", path);
        goto done;
    }
    st = llmc_json_parse(&doc, text, n, MAX_JSON_VALUES, why, sizeof why);
    if (st != LLMC_OK || doc.root->type != LLMC_JSON_OBJECT) {
        st = llmc_model_fail(r->m, st == LLMC_ERR_OUT_OF_MEMORY ? st : LLMC_ERR_FORMAT, "'%s': the safetensors "
                             "header is %s%s", path, st != LLMC_OK ? "not valid JSON: " : "not a JSON object",
                             st != LLMC_OK ? why : "");
        goto done;
    }
    if (!(ext = malloc((doc.root->len + 1) * sizeof *ext))) {
        st = llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory reading '%s'", path);
        goto done;
    }
    size_t next = 0;
    for (const llmc_json *e = doc.root->first; e && st == LLMC_OK; e = e->next) {
        if (strcmp(e->key, "__metadata__") == 0) { /* free-form strings: read, not used */
            for (const llmc_json *v = e->first; v && e->type == LLMC_JSON_OBJECT; v = v->next)
                if (v->type != LLMC_JSON_STRING) st = LLMC_ERR_FORMAT;
            if (st != LLMC_OK || e->type != LLMC_JSON_OBJECT)
                st = llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': __metadata__ must map names to strings", path);
            continue;
        }
        st = header_entry(r, fi, e, 8 + n, size - 8 - n, &ext[next++]);
    }
    if (st == LLMC_OK) st = check_tiling(r, path, ext, next, size - 8 - n);
done:
    free(ext);
    llmc_json_free(&doc);
    free(text);
    close(fd);
    return st;
}

/* Every tensor of the table found, each where the index said. */
static llmc_status check_complete(hf_reader *r, const llmc_json *map) {
    char name[NAME_LEN];
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        for (int l = 0; l < slot_count(r, i); l++)
            if (r->slots[r->base[i] + l].file < 0) {
                llmc_weights_hf_name(i, l, name, sizeof name);
                return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %s%s is missing", r->dir,
                                       r->prefixed ? LLMC_HF_PREFIX : "", name);
            }
    for (const llmc_json *e = map ? map->first : NULL; e; e = e->next) {
        int layer = -1, t = llmc_weights_hf_lookup(e->key, &layer);
        if (t < 0 || layer >= r->cfg.num_layers) continue; /* the shards' own headers decide */
        const hf_slot *s = &r->slots[r->base[t] + (layer < 0 ? 0 : layer)];
        const char *f = strrchr(r->files[s->file], '/') + 1;
        if (strcmp(s->name, e->key) == 0 && strcmp(f, e->str) != 0)
            return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': the index puts tensor %s in %s, but it is in %s",
                                   r->dir, e->key, e->str, f);
    }
    return LLMC_OK;
}

/* ------------------------------------------------------------------ data */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = h >> 10 & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | man << 13;
    else if (exp) bits = sign | (exp + 112) << 23 | man << 13;
    else if (!man) bits = sign;
    else { /* subnormal: shift the mantissa up to its leading one */
        uint32_t e = 113;
        while (!(man & 0x400u)) man <<= 1, e--;
        bits = sign | e << 23 | (man & 0x3ffu) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* One slot's values into dst (llmc's layout: transposed from Conv1D's), checked to be finite. */
static llmc_status read_slot(hf_reader *r, int fd, const hf_slot *s, int t, float *dst, void *raw, float *vals) {
    const size_t esz = (size_t)DTYPES[s->dtype].bytes, n = (size_t)((s->end - s->begin) / esz);
    const llmc_tensor lt = llmc_weights_layer(&r->w, t, 0);
    const int transpose = llmc_weights_hf_transposed(t);
    const size_t rows = transpose ? (size_t)lt.shape[1] : 0, cols = transpose ? (size_t)lt.shape[0] : 0;
    for (size_t done = 0; done < n;) {
        const size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (pread(fd, raw, k * esz, (off_t)(s->begin + done * esz)) != (ssize_t)(k * esz))
            return llmc_model_fail(r->m, LLMC_ERR_IO, "'%s': read error in tensor %s (did the file change?)",
                                   r->files[s->file], s->name);
        if (s->dtype == ST_F32) memcpy(vals, raw, k * 4); /* safetensors is little-endian, as are our hosts */
        else if (s->dtype == ST_BF16) llmc_bf16_to_f32_n(vals, raw, k);
        else
            for (size_t j = 0; j < k; j++) vals[j] = f16_to_f32(((const uint16_t *)raw)[j]);
        for (size_t j = 0; j < k; j++)
            if (!isfinite(vals[j]))
                return llmc_model_fail(r->m, LLMC_ERR_FORMAT, "'%s': tensor %s holds %s at element %zu",
                                       r->files[s->file], s->name, isnan(vals[j]) ? "NaN" : "Inf", done + j);
        if (!transpose) memcpy(dst + done, vals, k * sizeof(float));
        else /* stored (rows = in, cols = out), llmc's is (out, in) */
            for (size_t j = 0, i = done / cols, o = done % cols; j < k; j++) {
                dst[o * rows + i] = vals[j];
                if (++o == cols) o = 0, i++;
            }
        done += k;
    }
    return LLMC_OK;
}

static llmc_status read_values(hf_reader *r, float *values) {
    void *raw = malloc(CHUNK * 4);
    float *vals = malloc(CHUNK * sizeof(float));
    llmc_status st = raw && vals ? LLMC_OK : llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory");
    for (int fi = 0; fi < r->nfiles && st == LLMC_OK; fi++) {
        int fd = open(r->files[fi], O_RDONLY);
        struct stat sb;
        if (fd < 0) st = llmc_model_fail(r->m, LLMC_ERR_IO, "cannot open '%s': %s", r->files[fi], strerror(errno));
        else if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != r->sizes[fi])
            st = llmc_model_fail(r->m, LLMC_ERR_IO, "'%s' changed while it was read", r->files[fi]);
        for (int i = 0; i < LLMC_NUM_PARAM_TENSORS && st == LLMC_OK; i++)
            for (int l = 0; l < slot_count(r, i) && st == LLMC_OK; l++) {
                const hf_slot *s = &r->slots[r->base[i] + l];
                const llmc_tensor lt = llmc_weights_layer(&r->w, i, l);
                if (s->file == fi) st = read_slot(r, fd, s, i, values + lt.offset, raw, vals);
            }
        if (fd >= 0) close(fd);
    }
    free(raw);
    free(vals);
    return st;
}

/* ------------------------------------------------------------------ the directory */

static llmc_status load_dir(hf_reader *r, const llmc_model_options *o) {
    char *path = join(r->dir, "config.json"), *text = NULL, why[LLMC_ERR_LEN];
    if (!path) return llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory");
    llmc_status st = read_text(r, path, MAX_JSON_FILE, &text);
    if (st == LLMC_OK && (st = llmc_hf_config(text, &r->cfg, why, sizeof why)) != LLMC_OK)
        llmc_model_fail(r->m, st, "'%s': %s", path, why);
    free(text);
    free(path);
    if (st != LLMC_OK) return st;
    llmc_weights_layout(&r->w, &r->cfg, LLMC_F32);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) r->base[i] = r->nslots, r->nslots += slot_count(r, i);
    if (!(r->slots = malloc((size_t)r->nslots * sizeof *r->slots)))
        return llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < r->nslots; i++) r->slots[i].file = -1;

    llmc_json_doc idx = {0};
    const llmc_json *map = NULL;
    char *single = join(r->dir, "model.safetensors"), *index = join(r->dir, "model.safetensors.index.json");
    if (!single || !index) st = llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory");
    else if (llmc_file_exists(single)) st = add_file(r, "model.safetensors");
    else if (llmc_file_exists(index)) st = list_shards(r, index, &idx, &map);
    else
        st = llmc_model_fail(r->m, LLMC_ERR_IO, "'%s' has neither model.safetensors nor model.safetensors.index.json "
                             "(pytorch_model.bin is not read: re-save it with safe_serialization=True)", r->dir);
    free(single);
    free(index);
    if (st == LLMC_OK && !(r->sizes = calloc((size_t)r->nfiles, sizeof *r->sizes)))
        st = llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "out of memory");
    for (int fi = 0; fi < r->nfiles && st == LLMC_OK; fi++) st = scan_file(r, fi);
    if (st == LLMC_OK) st = check_complete(r, map);
    llmc_json_free(&idx);
    if (st != LLMC_OK) return st;

    /* every value is now known to be in the files: this allocation is backed by their bytes */
    float *values = calloc(r->w.count, sizeof(float)); /* zero: wte's padding rows */
    if (!values)
        return llmc_model_fail(r->m, LLMC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the weights of '%s'",
                               r->w.count * sizeof(float), r->dir);
    st = read_values(r, values);
    if (st == LLMC_OK) st = llmc_model_install(r->m, o, &r->cfg, values, 1); /* it takes values */
    if (st != LLMC_OK) free(values);
    return st;
}

llmc_status llmc_model_load_hf(llmc_model *m, const llmc_model_options *o, const char *dir) {
    if (m->users > 0)
        return llmc_model_fail(m, LLMC_ERR_INVALID_ARG,
                               "cannot load '%s' while %d trainer(s) or session(s) use the model", dir, m->users);
    hf_reader r = {.m = m, .dir = dir};
    llmc_status st = load_dir(&r, o);
    for (int i = 0; i < r.nfiles; i++) free(r.files[i]);
    free(r.files);
    free(r.sizes);
    free(r.slots);
    return st;
}

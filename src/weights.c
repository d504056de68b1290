/*
 * weights.c — the parameter table: the one place that knows GPT-2's layout.
 *
 * llm.c's order, one flat buffer: wte (Vp,C), wpe (maxT,C), then twelve per-layer tensors each
 * stacked over L (ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw,
 * fcprojb), then lnfw, lnfb. Matrices are (out, in): y = x W^T. Everything that walks the
 * parameters (the graph, AdamW, checkpoints, numpy views, HF mapping) reads this table, and so
 * does the Hugging Face import and export in C (hf_model.c) and Python (llmc/hf.py).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "llmc.h"
#include "rng.h"

/* What a tensor's two trailing dimensions are, in units of C (0: no second dimension). */
enum { DIM_VP = -1, DIM_MAXT = -2 };
enum { INIT_NORMAL, INIT_RESIDUAL, INIT_ONES, INIT_ZEROS };
typedef struct tensor_rule {
    const char *name;
    int rows, cols; /* multiples of C, or DIM_VP / DIM_MAXT */
    int layered;
    int init;
    const char *hf; /* the Hugging Face name under the model, %d: the layer */
    int conv1d;     /* Hugging Face stores it (in, out): GPT-2's Conv1D */
} tensor_rule;

/* clang-format off */
static const tensor_rule RULES[LLMC_NUM_PARAM_TENSORS] = {
    {"wte",      DIM_VP,   1, 0, INIT_NORMAL,   "wte.weight",              0},
    {"wpe",      DIM_MAXT, 1, 0, INIT_NORMAL,   "wpe.weight",              0},
    {"ln1w",     1,        0, 1, INIT_ONES,     "h.%d.ln_1.weight",        0},
    {"ln1b",     1,        0, 1, INIT_ZEROS,    "h.%d.ln_1.bias",          0},
    {"qkvw",     3,        1, 1, INIT_NORMAL,   "h.%d.attn.c_attn.weight", 1},
    {"qkvb",     3,        0, 1, INIT_ZEROS,    "h.%d.attn.c_attn.bias",   0},
    {"attprojw", 1,        1, 1, INIT_RESIDUAL, "h.%d.attn.c_proj.weight", 1},
    {"attprojb", 1,        0, 1, INIT_ZEROS,    "h.%d.attn.c_proj.bias",   0},
    {"ln2w",     1,        0, 1, INIT_ONES,     "h.%d.ln_2.weight",        0},
    {"ln2b",     1,        0, 1, INIT_ZEROS,    "h.%d.ln_2.bias",          0},
    {"fcw",      4,        1, 1, INIT_NORMAL,   "h.%d.mlp.c_fc.weight",    1},
    {"fcb",      4,        0, 1, INIT_ZEROS,    "h.%d.mlp.c_fc.bias",      0},
    {"fcprojw",  1,        4, 1, INIT_RESIDUAL, "h.%d.mlp.c_proj.weight",  1},
    {"fcprojb",  1,        0, 1, INIT_ZEROS,    "h.%d.mlp.c_proj.bias",    0},
    {"lnfw",     1,        0, 0, INIT_ONES,     "ln_f.weight",             0},
    {"lnfb",     1,        0, 0, INIT_ZEROS,    "ln_f.bias",               0},
};
/* clang-format on */

static int dim_of(int rule, const llmc_config *c) {
    return rule == DIM_VP ? c->padded_vocab_size : rule == DIM_MAXT ? c->max_seq_len : rule * c->channels;
}

void llmc_weights_layout(llmc_weights *w, const llmc_config *cfg, llmc_dtype dtype) {
    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    w->dtype = dtype;
    size_t off = 0;
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const tensor_rule *r = &RULES[i];
        llmc_tensor *t = &w->t[i];
        t->name = r->name;
        t->dtype = dtype;
        t->offset = off;
        if (r->layered) t->shape[t->ndim++] = cfg->num_layers;
        t->shape[t->ndim++] = dim_of(r->rows, cfg);
        if (r->cols) t->shape[t->ndim++] = dim_of(r->cols, cfg);
        t->numel = 1;
        for (int d = 0; d < t->ndim; d++) t->numel *= (size_t)t->shape[d];
        t->layer_stride = r->layered ? t->numel / (size_t)cfg->num_layers : 0;
        t->weight_decay = r->cols != 0; /* matrices, wte and wpe included */
        off += t->numel;
    }
    w->count = off;
}

void llmc_weights_bind(llmc_weights *w, void *base) {
    w->data = base;
    const size_t esz = llmc_dtype_size(w->dtype);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) w->t[i].data = base ? (char *)base + w->t[i].offset * esz : NULL;
}

llmc_tensor llmc_weights_layer(const llmc_weights *w, int i, int layer) {
    llmc_tensor t = w->t[i];
    if (!t.layer_stride) return t;
    const size_t skip = (size_t)layer * t.layer_stride;
    if (t.data) t.data = (char *)t.data + skip * llmc_dtype_size(t.dtype);
    if (t.scales) { /* one scale per group of a row: the layer's rows times the groups of each */
        const size_t cols = (size_t)t.shape[t.ndim - 1], groups = (cols + (size_t)t.group_size - 1) / (size_t)t.group_size;
        t.scales = (const float *)t.scales + skip / cols * groups;
    }
    t.offset += skip;
    t.numel = t.layer_stride;
    t.ndim--;
    memmove(t.shape, t.shape + 1, sizeof(int) * (size_t)t.ndim);
    t.shape[t.ndim] = 0;
    t.layer_stride = 0;
    return t;
}

void llmc_weights_slices(const llmc_weights *w, int layer, llmc_tensor out[LLMC_NUM_PARAM_TENSORS]) {
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) out[i] = llmc_weights_layer(w, i, layer);
}

size_t llmc_param_count(const llmc_config *cfg) {
    llmc_weights w;
    llmc_weights_layout(&w, cfg, LLMC_F32);
    return w.count;
}

void llmc_weights_init_host(const llmc_weights *w, float *host, uint64_t seed) {
    uint64_t rng = llmc_rng_seed(seed);
    const float residual_scale = 1.0f / sqrtf(2.0f * (float)w->cfg.num_layers);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor *t = &w->t[i];
        float *p = host + t->offset;
        switch (RULES[i].init) {
        case INIT_ONES:
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
            break;
        case INIT_ZEROS: memset(p, 0, t->numel * sizeof(float)); break;
        default: {
            const float std = 0.02f * (RULES[i].init == INIT_RESIDUAL ? residual_scale : 1.0f);
            for (size_t j = 0; j < t->numel; j++) p[j] = std * llmc_rng_normal(&rng);
        }
        }
    }
    /* padding rows of wte never see a token; keep them zero so their logits are inert */
    const size_t C = (size_t)w->cfg.channels;
    memset(host + w->t[LLMC_WTE].offset + (size_t)w->cfg.vocab_size * C, 0,
           (size_t)(w->cfg.padded_vocab_size - w->cfg.vocab_size) * C * sizeof(float));
}

/* ------------------------------------------------------------------ Hugging Face names */

const char *llmc_weights_hf_name(int tensor, int layer, char *buf, size_t len) {
    if (tensor < 0 || tensor >= LLMC_NUM_PARAM_TENSORS || !buf || !len || (RULES[tensor].layered && layer < 0))
        return NULL;
    const int k = RULES[tensor].layered ? snprintf(buf, len, RULES[tensor].hf, layer)
                                        : snprintf(buf, len, "%s", RULES[tensor].hf);
    return k >= 0 && (size_t)k < len ? buf : NULL;
}

int llmc_weights_hf_transposed(int tensor) {
    return tensor >= 0 && tensor < LLMC_NUM_PARAM_TENSORS && RULES[tensor].conv1d;
}

/* s against a name pattern whose %d is a layer: decimal, no leading zero, below 2^20. */
static int hf_match(const char *pat, const char *s, int *layer) {
    while (*pat) {
        if (pat[0] == '%' && pat[1] == 'd') {
            const char *d = s;
            long v = 0;
            while (*s >= '0' && *s <= '9' && s - d < 7) v = v * 10 + (*s++ - '0');
            if (s == d || (*d == '0' && s - d > 1) || v >= 1L << 20) return 0;
            *layer = (int)v;
            pat += 2;
        } else if (*pat++ != *s++) {
            return 0;
        }
    }
    return *s == '\0';
}

static const char *hf_strip_prefix(const char *name) {
    const size_t k = strlen(LLMC_HF_PREFIX);
    return strncmp(name, LLMC_HF_PREFIX, k) == 0 ? name + k : name;
}

int llmc_weights_hf_lookup(const char *name, int *layer) {
    name = hf_strip_prefix(name);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        int l = -1;
        if (hf_match(RULES[i].hf, name, &l)) {
            if (layer) *layer = l;
            return i;
        }
    }
    return -1;
}

int llmc_weights_hf_ignored(const char *name) {
    name = hf_strip_prefix(name);
    static const char *const buffers[] = {".attn.bias", ".attn.masked_bias"}; /* read-only */
    const size_t n = strlen(name);
    for (int i = 0; i < 2; i++) {
        const size_t k = strlen(buffers[i]);
        if (n > k && strcmp(name + n - k, buffers[i]) == 0) return 1;
    }
    return strcmp(name, "lm_head.weight") == 0; /* tied to wte */
}

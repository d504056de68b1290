/*
 * weights.c — the parameter table: the one place that knows GPT-2's layout.
 *
 * llm.c's order, one flat buffer: wte (Vp,C), wpe (maxT,C), then twelve per-layer tensors each
 * stacked over L (ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw,
 * fcprojb), then lnfw, lnfb. Matrices are (out, in): y = x W^T. Everything that walks the
 * parameters (the graph, AdamW, checkpoints, numpy views, HF mapping) reads this table.
 */
#include <math.h>
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
} tensor_rule;

/* clang-format off */
static const tensor_rule RULES[LLMC_NUM_PARAM_TENSORS] = {
    {"wte",      DIM_VP,   1, 0, INIT_NORMAL},
    {"wpe",      DIM_MAXT, 1, 0, INIT_NORMAL},
    {"ln1w",     1,        0, 1, INIT_ONES},
    {"ln1b",     1,        0, 1, INIT_ZEROS},
    {"qkvw",     3,        1, 1, INIT_NORMAL},
    {"qkvb",     3,        0, 1, INIT_ZEROS},
    {"attprojw", 1,        1, 1, INIT_RESIDUAL},
    {"attprojb", 1,        0, 1, INIT_ZEROS},
    {"ln2w",     1,        0, 1, INIT_ONES},
    {"ln2b",     1,        0, 1, INIT_ZEROS},
    {"fcw",      4,        1, 1, INIT_NORMAL},
    {"fcb",      4,        0, 1, INIT_ZEROS},
    {"fcprojw",  1,        4, 1, INIT_RESIDUAL},
    {"fcprojb",  1,        0, 1, INIT_ZEROS},
    {"lnfw",     1,        0, 0, INIT_ONES},
    {"lnfb",     1,        0, 0, INIT_ZEROS},
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

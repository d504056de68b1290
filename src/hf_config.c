/* hf_config.c — a Hugging Face GPT-2 config.json into llmc_config: the one place that says which
 * configs llmc computes exactly (Python's llmc.hf asks it through _core.hf_config). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "json.h"

/* Fields that must hold these values when present: anything else is a different network. */
typedef struct required_field {
    const char *field;
    const char *str; /* a string value; NULL: a boolean */
    int boolean;
} required_field;
static const required_field REQUIRED[] = {
    {"model_type", "gpt2", 0},
    {"activation_function", "gelu_new", 0},
    {"scale_attn_weights", NULL, 1},
    {"scale_attn_by_inverse_layer_idx", NULL, 0},
    {"reorder_and_upcast_attn", NULL, 0},
    {"add_cross_attention", NULL, 0},
    {"tie_word_embeddings", NULL, 1},
};
static const char *const ARCHITECTURES[] = {"GPT2LMHeadModel", "GPT2Model"};

static llmc_status bad(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return LLMC_ERR_FORMAT;
}

/* A size field: a positive integer (2 and 2.0 alike) up to 2^30. */
static llmc_status size_field(const llmc_json *v, const char *field, int *out, char *err, size_t errlen) {
    char d[96];
    if (!v) return bad(err, errlen, "missing field %s", field);
    if (v->type != LLMC_JSON_NUMBER || v->number != floor(v->number) || v->number < 1 || v->number > 1 << 30)
        return bad(err, errlen, "%s is %s; it must be a positive integer (at most 2^30)", field,
                   llmc_json_describe(v, d, sizeof d));
    *out = (int)v->number;
    return LLMC_OK;
}

static llmc_status check_fields(const llmc_json *root, llmc_config *c, char *err, size_t errlen) {
    char d[96];
    const llmc_json *arch = llmc_json_get(root, "architectures");
    if (arch && arch->type != LLMC_JSON_NULL && arch->type != LLMC_JSON_ARRAY)
        return bad(err, errlen, "architectures is %s; it must be a list of names",
                   llmc_json_describe(arch, d, sizeof d));
    for (const llmc_json *a = arch ? arch->first : NULL; a; a = a->next) {
        int ok = 0;
        for (int i = 0; i < 2; i++) ok |= a->type == LLMC_JSON_STRING && strcmp(a->str, ARCHITECTURES[i]) == 0;
        if (!ok)
            return bad(err, errlen, "architectures names %s, which is not GPT-2 (GPT2LMHeadModel or GPT2Model)",
                       llmc_json_describe(a, d, sizeof d));
    }
    for (size_t i = 0; i < sizeof REQUIRED / sizeof REQUIRED[0]; i++) {
        const required_field *r = &REQUIRED[i];
        const llmc_json *v = llmc_json_get(root, r->field);
        if (!v) continue;
        const int ok = r->str ? v->type == LLMC_JSON_STRING && strcmp(v->str, r->str) == 0
                              : v->type == LLMC_JSON_BOOL && v->boolean == r->boolean;
        if (!ok)
            return bad(err, errlen, "%s is %s; llmc computes GPT-2 with %s = %s%s%s only", r->field,
                       llmc_json_describe(v, d, sizeof d), r->field, r->str ? "\"" : "",
                       r->str ? r->str : r->boolean ? "true" : "false", r->str ? "\"" : "");
    }
    const llmc_json *eps = llmc_json_get(root, "layer_norm_epsilon");
    if (eps && (eps->type != LLMC_JSON_NUMBER || fabs(eps->number - 1e-5) > 1e-12))
        return bad(err, errlen, "layer_norm_epsilon is %s; llmc's layernorm uses 1e-5",
                   llmc_json_describe(eps, d, sizeof d));
    const llmc_json *pos = llmc_json_get(root, "n_positions");
    const char *pos_field = pos ? "n_positions" : "n_ctx";
    if (!pos) pos = llmc_json_get(root, "n_ctx");
    llmc_status st = size_field(llmc_json_get(root, "n_layer"), "n_layer", &c->num_layers, err, errlen);
    if (st == LLMC_OK) st = size_field(llmc_json_get(root, "n_head"), "n_head", &c->num_heads, err, errlen);
    if (st == LLMC_OK) st = size_field(llmc_json_get(root, "n_embd"), "n_embd", &c->channels, err, errlen);
    if (st == LLMC_OK) st = size_field(llmc_json_get(root, "vocab_size"), "vocab_size", &c->vocab_size, err, errlen);
    if (st == LLMC_OK && pos) st = size_field(pos, pos_field, &c->max_seq_len, err, errlen);
    if (st != LLMC_OK) return st;
    const llmc_json *inner = llmc_json_get(root, "n_inner");
    if (inner && inner->type != LLMC_JSON_NULL &&
        (inner->type != LLMC_JSON_NUMBER || inner->number != 4.0 * c->channels))
        return bad(err, errlen, "n_inner is %s; GPT-2's MLP is 4 * n_embd = %d (or null)",
                   llmc_json_describe(inner, d, sizeof d), 4 * c->channels);
    if (c->channels % c->num_heads)
        return bad(err, errlen, "n_embd %d is not a multiple of n_head %d", c->channels, c->num_heads);
    return LLMC_OK;
}

llmc_status llmc_hf_config(const char *json_text, llmc_config *cfg, char *err, size_t errlen) {
    if (!json_text || !cfg) return bad(err, errlen, "llmc_hf_config: NULL argument"), LLMC_ERR_INVALID_ARG;
    llmc_json_doc doc;
    char why[LLMC_ERR_LEN];
    llmc_status st = llmc_json_parse(&doc, json_text, strlen(json_text), 1 << 16, why, sizeof why);
    if (st != LLMC_OK) {
        bad(err, errlen, st == LLMC_ERR_FORMAT ? "not valid JSON (%s)" : "%s", why);
        return st;
    }
    llmc_config c = {.max_seq_len = 1024};
    if (doc.root->type != LLMC_JSON_OBJECT)
        st = bad(err, errlen, "not a Hugging Face config: the JSON is %s, not an object",
                 llmc_json_type_name(doc.root->type));
    else
        st = check_fields(doc.root, &c, err, errlen);
    llmc_json_free(&doc);
    if (st == LLMC_OK && llmc_config_validate(&c, why, sizeof why) != LLMC_OK) st = bad(err, errlen, "%s", why);
    if (st == LLMC_OK) *cfg = c;
    return st;
}

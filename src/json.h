/* json.h — a small strict JSON parser (RFC 8259) into a tree, for the Hugging Face readers:
 * config.json, model.safetensors.index.json and safetensors headers. Internal to llmc.
 *
 * Strict: one value and whitespace only, UTF-8 checked, no trailing commas, comments, NaN or
 * leading zeros, duplicate object keys refused. Bounded: nesting depth, node count. Every node
 * and string lives in the document's arena, released at once by llmc_json_free. */
#ifndef LLMC_JSON_H
#define LLMC_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "llmc.h"

#define LLMC_JSON_MAX_DEPTH 64

typedef enum llmc_json_type {
    LLMC_JSON_NULL, LLMC_JSON_BOOL, LLMC_JSON_NUMBER, LLMC_JSON_STRING, LLMC_JSON_ARRAY, LLMC_JSON_OBJECT
} llmc_json_type;

typedef struct llmc_json llmc_json;
struct llmc_json {
    llmc_json_type type;
    int boolean;
    int is_int;            /* a number written without fraction or exponent that fits int64 */
    int64_t integer;       /* its value when is_int */
    double number;
    const char *str;       /* STRING: NUL-terminated; len bytes (may hold a NUL from \u0000) */
    size_t len;            /* STRING: bytes; ARRAY, OBJECT: members */
    const char *key;       /* a member of an object: its key (NUL-terminated, key_len bytes) */
    size_t key_len;
    llmc_json *first;      /* ARRAY, OBJECT: the first member */
    llmc_json *next;       /* the next member of the parent */
    size_t offset;         /* where the value starts in the text (for messages) */
};

typedef struct llmc_json_doc {
    llmc_json *root;
    struct json_block *blocks; /* the arena */
    size_t nodes, max_nodes;
} llmc_json_doc;

/* Parses text[0..len) into doc (doc->root); at most max_nodes values (0: no limit beyond the
 * text's own). On failure doc holds nothing, and err says what and at which byte offset. */
llmc_status llmc_json_parse(llmc_json_doc *doc, const char *text, size_t len, size_t max_nodes, char *err,
                            size_t errlen);
void llmc_json_free(llmc_json_doc *doc);
/* The member named key of an object, NULL when obj is not an object or has none. */
const llmc_json *llmc_json_get(const llmc_json *obj, const char *key);
/* "null", "a boolean", "a number", "a string", "an array", "an object". */
const char *llmc_json_type_name(llmc_json_type t);
/* v as text for a message ("\"relu\"", "1e-06", "true", "an array"): at most len bytes. */
const char *llmc_json_describe(const llmc_json *v, char *buf, size_t len);

#endif

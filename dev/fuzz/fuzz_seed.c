/* fuzz_seed.c — the valid seed files of every format the fuzzer mutates, with the table of
 * formats (see fuzz.c). */
#include "fuzz.h"

/* ------------------------------------------------------------------ seeds: valid files of each format */

static const int MODEL_SLOTS[] = {0, 1, 2, 3, 4, 5, 6, 7};
static const int SHARD_SLOTS[] = {0, 1, 2};
static const int TOKENIZER_SLOTS[] = {0, 1, 2, 3};
/* state: magic, version, nproc, rank, has_master, the two steps, the words of the uint64 pairs
 * (RNG, data position, parameter count, shard offset and count: also set whole, STATE_U64), and
 * the run settings (26-33: B, T, total batch, max steps, warmup, schedule, lr and final lr
 * fraction as float bits) */
static const int STATE_SLOTS[] = {0,  1,  2,  3,  4,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                  22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33};
static const int STATE_U64[] = {12, 14, 16, 18, 20, 22, 24};
static const part_kind MODEL_KIND = {MODEL_SLOTS, 8, NULL, 0, 1};
const part_kind SHARD_KIND = {SHARD_SLOTS, 3, NULL, 0, 0};
const part_kind TOKENIZER_KIND = {TOKENIZER_SLOTS, 4, NULL, 0, 0};
const part_kind STATE_KIND = {STATE_SLOTS, sizeof STATE_SLOTS / sizeof(int), STATE_U64, 7, 0};
/* safetensors: the u64 header length (its words, and whole), then JSON; config.json: JSON only */
static const int ST_SLOTS[] = {0, 1}, ST_U64[] = {0}, HF_CONFIG_SLOTS[] = {0, 1, 2, 3};
const part_kind ST_KIND = {ST_SLOTS, 2, ST_U64, 1, 0};
const part_kind HF_CONFIG_KIND = {HF_CONFIG_SLOTS, 4, NULL, 0, 0};
/* mask: magic, version, token count, row length T; its shard is a plain shard, told apart so
 * that mask-only mutations (and extremes) never touch the shard format's draws */
static const int MASK_SLOTS[] = {0, 1, 2, 3};
const part_kind MASK_KIND = {MASK_SLOTS, 4, NULL, 0, 0};
const part_kind MASK_SHARD_KIND = {SHARD_SLOTS, 3, NULL, 0, 0};

static void mark(part *p, size_t off) {
    if (p->nmarks < MAX_MARKS) p->marks[p->nmarks++] = off;
}

/* Marks for a model part: the header fields, the header's end and every tensor's start. */
static void model_marks(part *p, const llmc_config *c, int version) {
    llmc_weights w;
    llmc_weights_layout(&w, c, version == 3 ? LLMC_F32 : LLMC_BF16);
    const size_t esz = version == 3 ? 4 : 2;
    p->kind = &MODEL_KIND;
    p->float_bytes = (int)esz;
    for (int i = 0; i < 8; i++) mark(p, (size_t)i * 4);
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) mark(p, HEADER_BYTES + w.t[i].offset * esz);
    mark(p, HEADER_BYTES + w.count * esz / 2);
}

static const llmc_config MODEL_CONFIGS[] = {
    /* T, V, Vp, L, NH, C: small, odd vocabularies, Vp == V, over-padded Vp, head size 1 */
    {8, 16, 0, 1, 1, 8},  {16, 100, 0, 2, 2, 16}, {8, 300, 0, 1, 2, 32},
    {12, 129, 0, 2, 1, 8}, {9, 100, 100, 1, 4, 4}, {10, 64, 256, 2, 2, 8},
};

static void model_seed_file(input *s, const llmc_config *cfg, int version, uint64_t seed, const char *tmp) {
    char path[4200];
    snprintf(path, sizeof path, "%s/seed.bin", tmp);
    llmc_model *m = llmc_model_new();
    llmc_status st = llmc_model_init_random(m, NULL, cfg, seed);
    if (st == LLMC_OK) st = llmc_model_save(m, path, version);
    if (st != LLMC_OK) die("cannot write a model seed: %s", llmc_model_error(m));
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    if (read_file(path, &s->part[0].b) != 0) die("cannot read back %s", path);
    model_marks(&s->part[0], llmc_model_config(m), version);
    llmc_model_free(m);
    unlink(path);
}

static void model_seeds(input *seeds, int *n, const char *tmp) {
    *n = 0;
    for (size_t i = 0; i < sizeof MODEL_CONFIGS / sizeof MODEL_CONFIGS[0]; i++)
        for (int v = 3; v <= 5; v += 2) model_seed_file(&seeds[(*n)++], &MODEL_CONFIGS[i], v, 100 + i, tmp);
}

static void shard_bytes(blob *b, int ntok, uint64_t *rng, int vocab) {
    int32_t h[LLMC_HEADER_INTS] = {LLMC_SHARD_MAGIC, 1, ntok};
    b->n = 0;
    blob_append(b, h, sizeof h);
    for (int i = 0; i < ntok; i++) {
        uint16_t t = (uint16_t)below(rng, (uint64_t)vocab);
        blob_append(b, &t, 2);
    }
}

static void shard_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const int NTOK[] = {2, 9, 17, 64, 200, 1000, 4097};
    uint64_t rng = 7;
    *n = 0;
    for (size_t i = 0; i < sizeof NTOK / sizeof NTOK[0]; i++) {
        input *s = &seeds[(*n)++];
        memset(s, 0, sizeof *s);
        s->nparts = 1;
        part *p = &s->part[0];
        shard_bytes(&p->b, NTOK[i], &rng, i % 2 ? 65536 : 64);
        p->kind = &SHARD_KIND;
        mark(p, 8);
        mark(p, HEADER_BYTES);
        mark(p, HEADER_BYTES + 2);
        mark(p, HEADER_BYTES + (size_t)NTOK[i]); /* mid-body */
        mark(p, p->b.n - 2);
    }
}

/* The companion of every shard input: a valid shard beside it, so globs see two files. */
static void shard_extra(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/shard_1.bin", dir);
    blob b = {0};
    uint64_t rng = 11;
    shard_bytes(&b, 100, &rng, 65536);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b.p, 1, b.n, f) != b.n || fclose(f) != 0) die("cannot write %s", path);
    free(b.p);
}

static void tokenizer_seed(input *s, int version, int vocab, int eot, int maxlen, uint64_t *rng) {
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    part *p = &s->part[0];
    int32_t h[LLMC_HEADER_INTS] = {LLMC_TOKENIZER_MAGIC, version, vocab, version == 2 ? eot : 0};
    blob_append(&p->b, h, sizeof h);
    p->kind = &TOKENIZER_KIND;
    for (int i = 0; i < 4; i++) mark(p, (size_t)i * 4);
    for (int i = 0; i < vocab; i++) {
        if (i < 24 || i == vocab / 2 || i == vocab - 1) mark(p, p->b.n); /* token record starts */
        unsigned char len = (unsigned char)(i == 3 ? 255 : below(rng, (uint64_t)maxlen + 1)), bytes[255];
        for (int k = 0; k < len; k++) bytes[k] = (unsigned char)below(rng, 256);
        blob_append(&p->b, &len, 1);
        blob_append(&p->b, bytes, len);
    }
}

static void tokenizer_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    uint64_t rng = 13;
    *n = 0;
    tokenizer_seed(&seeds[(*n)++], 2, 1, 0, 4, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 5, 4, 3, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 50, 7, 12, &rng);
    tokenizer_seed(&seeds[(*n)++], 2, 300, 299, 8, &rng);
    tokenizer_seed(&seeds[(*n)++], 1, 40, 0, 6, &rng);
    tokenizer_seed(&seeds[(*n)++], 1, 50257, 0, 1, &rng); /* v1 of GPT-2's size: EOT 50256 implied */
}

/* A trainer checkpoint of a small model: a few AdamW steps so the moments are not zero. */
static void state_seed(input *s, const llmc_config *cfg, int model_version, int add_master, const char *tmp) {
    char dir[4200], mp[4300], sp[4300];
    snprintf(dir, sizeof dir, "%s/seedck", tmp);
    snprintf(mp, sizeof mp, "%s/model_%08d.bin", dir, STATE_STEP);
    snprintf(sp, sizeof sp, "%s/state_%08d.bin", dir, STATE_STEP);
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_status st = llmc_model_init_random(m, NULL, cfg, 5);
    if (st == LLMC_OK) st = llmc_train_attach(t, m, NULL);
    const int B = 2, T = cfg->max_seq_len < 6 ? cfg->max_seq_len : 6;
    int *in = tokens(B * T, cfg->vocab_size, 5), *tg = tokens(B * T, cfg->vocab_size, 6);
    llmc_adamw a;
    llmc_adamw_default(&a);
    for (int k = 0; k < 3 && st == LLMC_OK; k++) {
        float loss, norm;
        st = llmc_train_zero_grad(t);
        if (st == LLMC_OK) st = llmc_train_forward_backward(t, in, tg, B, T, 1.0f, &loss);
        if (st == LLMC_OK) st = llmc_train_step(t, &a, &norm);
    }
    llmc_checkpoint_info info;
    memset(&info, 0, sizeof info); /* the struct grows with the format: zero what this does not set */
    info.step = STATE_STEP;
    info.rng = 0x123456789abcdefull;
    info.data = (llmc_data_position){1, 0, 2};
    info.run.batch_size = B, info.run.seq_len = T, info.run.max_steps = 100, info.run.lr = a.lr;
    if (st == LLMC_OK) st = llmc_checkpoint_save(t, dir, &info);
    if (st == LLMC_OK && model_version == 5) st = llmc_train_save_model(t, mp, 5);
    if (st != LLMC_OK) die("cannot write a state seed: %s", llmc_train_error(t));
    memset(s, 0, sizeof *s);
    s->nparts = 2;
    part *ps = &s->part[0], *pm = &s->part[1];
    if (read_file(sp, &ps->b) != 0 || read_file(mp, &pm->b) != 0) die("cannot read back the checkpoint in %s", dir);
    const size_t np = llmc_model_num_params(m);
    if (add_master) { /* as a bf16 trainer writes it: has_master, and fp32 master weights after m and v */
        float *p = malloc(np * sizeof *p);
        if (!p || llmc_train_get_params(t, p) != LLMC_OK) die("cannot read the seed's parameters");
        put32(&ps->b, 4 * 4, 1);
        blob_append(&ps->b, p, np * sizeof *p);
        free(p);
    }
    ps->kind = &STATE_KIND;
    ps->float_bytes = 4;
    for (int i = 0; i < 34; i++) mark(ps, (size_t)i * 4);
    for (int i = 0; i <= 2 + add_master; i++) mark(ps, HEADER_BYTES + (size_t)i * np * 4);
    mark(ps, HEADER_BYTES + np * 2); /* mid m */
    model_marks(pm, llmc_model_config(m), model_version);
    free(in), free(tg);
    llmc_train_free(t);
    llmc_model_free(m);
    remove_workdir(dir); /* the files, and whatever else a checkpoint writes beside them */
}

static void state_seeds(input *seeds, int *n, const char *tmp) {
    static const llmc_config A = {8, 16, 0, 1, 1, 8}, Bc = {16, 64, 0, 2, 2, 16};
    *n = 0;
    state_seed(&seeds[(*n)++], &A, 3, 0, tmp);
    state_seed(&seeds[(*n)++], &A, 3, 1, tmp);
    state_seed(&seeds[(*n)++], &Bc, 3, 0, tmp);
    state_seed(&seeds[(*n)++], &Bc, 5, 1, tmp);
}

/* Hugging Face seeds: a safetensors file of a small GPT-2 in F32, F16, BF16 or a mix, with or
 * without the "transformer." prefix, metadata and the attention-mask buffers, and its config.json. */
static uint16_t f32_to_f16(float f) { /* truncating; seeds hold small normal values, ones and zeros */
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = x >> 16 & 0x8000u;
    const int e = (int)(x >> 23 & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    if (e >= 31) return (uint16_t)(sign | 0x7bffu);
    return (uint16_t)(sign | (uint32_t)e << 10 | (x >> 13 & 0x3ffu));
}

static void appendf(blob *b, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    blob_append(b, buf, (size_t)k);
}

static void safetensors_seed(input *s, const llmc_config *cfg, int dtype_mode, int prefixed, int extras, uint64_t seed) {
    static const char *const DT[] = {"F32", "F16", "BF16"};
    llmc_model *m = llmc_model_new();
    if (llmc_model_init_random(m, NULL, cfg, seed) != LLMC_OK) die("cannot make a seed model: %s", llmc_model_error(m));
    const llmc_weights *w = llmc_model_weights(m);
    float *v = malloc(w->count * sizeof *v);
    if (!v || llmc_model_get_params(m, v) != LLMC_OK) die("cannot read a seed model");
    const int L = cfg->num_layers, C = cfg->channels, T = cfg->max_seq_len;
    blob hdr = {0}, data = {0};
    size_t starts[64];
    int nstarts = 0;
    appendf(&hdr, "{");
    if (extras) appendf(&hdr, "\"__metadata__\":{\"format\":\"pt\"},");
    for (int i = 0, k = 0; i < LLMC_NUM_PARAM_TENSORS; i++)
        for (int l = 0; l < (w->t[i].layer_stride ? L : 1); l++, k++) {
            const llmc_tensor t = llmc_weights_layer(w, i, l);
            const int tr = llmc_weights_hf_transposed(i), dt = dtype_mode < 3 ? dtype_mode : k % 3;
            const int rows = i == LLMC_WTE ? cfg->vocab_size : t.shape[0], cols = t.ndim > 1 ? t.shape[1] : 0;
            char name[128];
            llmc_weights_hf_name(i, l, name, sizeof name);
            appendf(&hdr, "%s\"%s%s\":{\"dtype\":\"%s\",\"shape\":[", k ? "," : "", prefixed ? LLMC_HF_PREFIX : "",
                    name, DT[dt]);
            if (!cols) appendf(&hdr, "%d]", rows);
            else appendf(&hdr, "%d,%d]", tr ? cols : rows, tr ? rows : cols);
            const size_t n = (size_t)rows * (size_t)(cols ? cols : 1), begin = data.n, esz = dt ? 2 : 4;
            appendf(&hdr, ",\"data_offsets\":[%zu,%zu]}", begin, begin + n * esz);
            if (nstarts < 64) starts[nstarts++] = begin;
            for (size_t j = 0; j < n; j++) { /* element j of the stored (in, out) is llmc's (j % out, j / out) */
                const size_t src = tr ? (j % (size_t)rows) * (size_t)cols + j / (size_t)rows : j;
                const float f = v[t.offset + src];
                uint16_t h = dt == 1 ? f32_to_f16(f) : llmc_f32_to_bf16(f);
                blob_append(&data, dt ? (const void *)&h : (const void *)&f, esz);
            }
        }
    if (extras) /* the mask buffer of a layer, as older GPT2LMHeadModel files hold it */
        for (int l = 0; l < L; l++) {
            appendf(&hdr, ",\"%sh.%d.attn.bias\":{\"dtype\":\"U8\",\"shape\":[1,1,%d,%d],\"data_offsets\":[%zu,%zu]}",
                    prefixed ? LLMC_HF_PREFIX : "", l, T, T, data.n, data.n + (size_t)T * T);
            for (int j = 0; j < T * T; j++) blob_append(&data, &(unsigned char){(unsigned char)(j % (T + 1) == 0)}, 1);
        }
    appendf(&hdr, "}");
    while (hdr.n % 8) appendf(&hdr, " ");
    memset(s, 0, sizeof *s);
    s->nparts = 2;
    part *p = &s->part[0], *pc = &s->part[1];
    const uint64_t hn = hdr.n;
    blob_append(&p->b, &hn, 8);
    blob_append(&p->b, hdr.p, hdr.n);
    blob_append(&p->b, data.p, data.n);
    p->kind = &ST_KIND;
    p->float_bytes = dtype_mode == 0 ? 4 : dtype_mode < 3 ? 2 : 0;
    mark(p, 0), mark(p, 8), mark(p, 8 + hdr.n / 2);
    for (int i = 0; i < nstarts; i++) mark(p, 8 + hdr.n + starts[i]);
    appendf(&pc->b, "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"activation_function\": "
                    "\"gelu_new\", \"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"n_positions\": %d, "
                    "\"vocab_size\": %d, \"n_inner\": null, \"layer_norm_epsilon\": 1e-05, "
                    "\"tie_word_embeddings\": true}\n",
            L, cfg->num_heads, C, T, cfg->vocab_size);
    pc->kind = &HF_CONFIG_KIND;
    mark(pc, 0), mark(pc, pc->b.n / 2), mark(pc, pc->b.n - 2);
    free(hdr.p), free(data.p), free(v);
    llmc_model_free(m);
}

static void safetensors_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const llmc_config A = {8, 16, 0, 1, 1, 8}, B = {16, 100, 0, 2, 2, 16}, Cc = {9, 130, 0, 1, 2, 8};
    *n = 0;
    safetensors_seed(&seeds[(*n)++], &A, 0, 1, 1, 1);
    safetensors_seed(&seeds[(*n)++], &A, 1, 0, 0, 2);
    safetensors_seed(&seeds[(*n)++], &A, 2, 1, 0, 3);
    safetensors_seed(&seeds[(*n)++], &B, 0, 0, 1, 4);
    safetensors_seed(&seeds[(*n)++], &B, 3, 1, 1, 5);
    safetensors_seed(&seeds[(*n)++], &B, 2, 0, 0, 6);
    safetensors_seed(&seeds[(*n)++], &Cc, 1, 1, 1, 7);
    safetensors_seed(&seeds[(*n)++], &Cc, 3, 0, 0, 8);
}

/* Mask seeds: a shard and the loss mask beside it (part 0 the mask, part 1 the shard), rows of
 * MASK_T tokens, masks of every kind a prepare step writes. */
static void mask_pair_bytes(blob *shard, blob *mask, int ntok, int vocab, int pattern, uint64_t *rng) {
    shard_bytes(shard, ntok, rng, vocab);
    int32_t h[LLMC_HEADER_INTS] = {LLMC_MASK_MAGIC, 1, ntok, MASK_T};
    mask->n = 0;
    blob_append(mask, h, sizeof h);
    for (int i = 0; i < ntok; i++) {
        unsigned char m;
        switch (pattern) {
        case 0: m = 1; break; /* every target counts */
        case 1: m = 0; break; /* none does */
        case 2: m = (unsigned char)(i & 1); break;
        case 3: m = i % MASK_T >= 1 + (i / MASK_T) % (MASK_T - 1); break; /* per row: a prompt, then its response */
        default: m = below(rng, 4) == 0; break;                           /* sparse */
        }
        blob_append(mask, &m, 1);
    }
}

static void mask_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const struct {
        int ntok, vocab, pattern;
    } S[] = {{9, 64, 2}, {17, 65536, 0}, {64, 64, 1}, {65, 65536, 3}, {200, 64, 4}, {333, 65536, 3}, {1000, 64, 4}};
    uint64_t rng = 17;
    *n = 0;
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        input *s = &seeds[(*n)++];
        memset(s, 0, sizeof *s);
        s->nparts = 2;
        part *pm = &s->part[0], *ps = &s->part[1];
        const size_t nt = (size_t)S[i].ntok;
        mask_pair_bytes(&ps->b, &pm->b, S[i].ntok, S[i].vocab, S[i].pattern, &rng);
        pm->kind = &MASK_KIND;
        for (int k = 0; k < 4; k++) mark(pm, (size_t)k * 4);
        /* token 0 (never a target), 1, a row's end and the next row's start, mid, last */
        mark(pm, HEADER_BYTES), mark(pm, HEADER_BYTES + 1), mark(pm, HEADER_BYTES + MASK_T);
        mark(pm, HEADER_BYTES + MASK_T + 1), mark(pm, HEADER_BYTES + nt / 2), mark(pm, pm->b.n - 1);
        ps->kind = &MASK_SHARD_KIND;
        mark(ps, 8), mark(ps, HEADER_BYTES), mark(ps, HEADER_BYTES + 2), mark(ps, HEADER_BYTES + 2 * MASK_T);
        mark(ps, HEADER_BYTES + nt), mark(ps, ps->b.n - 2);
    }
}

static void write_or_die(const char *dir, const char *name, const blob *b) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->n, f) != b->n || fclose(f) != 0) die("cannot write %s", path);
}

/* Beside every mask input: a valid masked shard_1 (globs see two pairs) and a plain_0.bin (a
 * glob that mixes masked and plain shards). */
static void mask_extra(const char *dir) {
    blob s = {0}, m = {0};
    uint64_t rng = 19;
    mask_pair_bytes(&s, &m, 100, 65536, 3, &rng);
    write_or_die(dir, "shard_1.bin", &s);
    write_or_die(dir, "shard_1.mask", &m);
    shard_bytes(&s, 100, &rng, 64);
    write_or_die(dir, "plain_0.bin", &s);
    free(s.p), free(m.p);
}

/* The child's own reading of a staged shard and its mask, to hold the loader's answers against. */
typedef struct pair_view {
    blob shard, mask;
    const uint16_t *tok; /* NULL: not a valid shard */
    const uint8_t *m;    /* NULL: no valid mask for this shard */
    size_t n;            /* tokens */
    int32_t T;           /* the mask's row length */
} pair_view;

static void view_pair(pair_view *v, const char *dir, const char *name) {
    char path[4300];
    memset(v, 0, sizeof *v);
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    if (read_file(path, &v->shard) == 0 && v->shard.n >= HEADER_BYTES) {
        const int32_t n = get32(&v->shard, 8);
        if (get32(&v->shard, 0) == LLMC_SHARD_MAGIC && get32(&v->shard, 4) == 1 && n >= 0 &&
            v->shard.n == HEADER_BYTES + 2 * (size_t)n)
            v->tok = (const uint16_t *)(v->shard.p + HEADER_BYTES), v->n = (size_t)n;
    }
    snprintf(path, sizeof path, "%s/%s.mask", dir, name);
    if (v->tok && read_file(path, &v->mask) == 0 && v->mask.n >= HEADER_BYTES && get32(&v->mask, 0) == LLMC_MASK_MAGIC &&
        get32(&v->mask, 4) == 1 && get32(&v->mask, 8) == (int64_t)v->n && v->mask.n == HEADER_BYTES + v->n)
        v->m = v->mask.p + HEADER_BYTES, v->T = get32(&v->mask, 12);
}

/* Is (in, tg) batch b of v: B*T shard tokens from b*B*T, each target the next token, or
 * LLMC_IGNORE_TARGET where the mask byte of that next token is 0? */
static int is_batch(const pair_view *v, size_t b, size_t bt, const int *in, const int *tg) {
    const size_t o = b * bt;
    for (size_t i = 0; i < bt; i++) {
        const uint8_t mb = v->m[o + i + 1];
        if (in[i] != v->tok[o + i] || mb > 1 || tg[i] != (mb ? (int)v->tok[o + i + 1] : LLMC_IGNORE_TARGET)) return 0;
    }
    return 1;
}

typedef struct mask_case {
    const char *pattern;
    int files[2], nfiles; /* which views the pattern matches (in glob order) */
    int B, T, shuffle;
    int never; /* the pattern matches a set the loader must refuse (a plain shard, a mask as a shard) */
} mask_case;

/* Counts of one case: batches per file and the tokens of all. */
typedef struct case_ref {
    size_t nb[2], total, ntok, bt;
} case_ref;

/* A refused batch is allowed only where a mask byte the epoch reads as a target is not 0 or 1. */
static int has_bad_byte(const pair_view *vw, const mask_case *c, const case_ref *r) {
    for (int f = 0; f < c->nfiles; f++)
        for (size_t i = 1; i <= r->nb[f] * r->bt; i++)
            if (vw[c->files[f]].m[i] > 1) return 1;
    return 0;
}

/* next() after an open; want_f/want_b: the batch it must be (-1: any of the case's files). */
static int mask_next(llmc_dataloader *d, const pair_view *vw, const mask_case *c, const case_ref *r, int first,
                     int *in, int *tg, int want_f, size_t want_b, const char *what) {
    llmc_status st = llmc_dataloader_next(d, in, tg);
    const char *msg = llmc_dataloader_error(d);
    if (st != LLMC_OK) {
        if (st == LLMC_ERR_FORMAT && msg[0] && has_bad_byte(vw, c, r)) {
            if (first) verdict(ERROR, "dataloader next: %s", msg);
        } else failed_later(st, msg, what);
        return 0;
    }
    int ok = 0;
    for (int f = 0; !ok && f < c->nfiles; f++)
        for (size_t b = 0; !ok && b < r->nb[f]; b++)
            if ((want_f < 0 || (f == want_f && b == want_b)) && is_batch(&vw[c->files[f]], b, r->bt, in, tg)) ok = 1;
    if (!ok)
        verdict(BAD, "%s (%s, B=%d, T=%d, shuffle %d): not %s of the shard with its mask (in[0] %d, tg[0] %d)", what,
                c->pattern, c->B, c->T, c->shuffle, want_f < 0 ? "a batch" : "the batch due", in[0], tg[0]);
    return ok;
}

/* One case: open, an epoch and a batch of the next, seeks in and out of range. d is reused:
 * each open releases what the last one held. */
static void mask_case_run(llmc_dataloader *d, const char *dir, const pair_view *vw, const mask_case *c, int first) {
    char pattern[4300];
    snprintf(pattern, sizeof pattern, "%s/%s", dir, c->pattern);
    case_ref r = {{0, 0}, 0, 0, (size_t)c->B * (size_t)c->T};
    int can = !c->never;
    for (int f = 0; f < c->nfiles; f++) {
        const pair_view *v = &vw[c->files[f]];
        if (!v->tok || !v->m || v->n < r.bt + 1 || v->T != c->T) can = 0;
        else r.nb[f] = (v->n - 1) / r.bt, r.total += r.nb[f], r.ntok += v->n;
    }
    llmc_status st = llmc_dataloader_open(d, pattern, c->B, c->T, c->shuffle, 42);
    const char *msg = llmc_dataloader_error(d);
    if (st != LLMC_OK) {
        if (can && st != LLMC_ERR_OUT_OF_MEMORY && msg[0])
            verdict(BAD, "open of %s (B=%d, T=%d) refused a valid pair: %s", c->pattern, c->B, c->T, msg);
        else if (first || st == LLMC_ERR_OUT_OF_MEMORY || !msg[0]) refused(st, msg, "dataloader open");
        return;
    }
    if (!can) {
        verdict(BAD, "open of %s (B=%d, T=%d) accepted files it must refuse", c->pattern, c->B, c->T);
        return;
    }
    if (first) verdict(OK, "opened");
    if (!llmc_dataloader_has_masks(d) || llmc_dataloader_num_shards(d) != c->nfiles ||
        llmc_dataloader_num_batches(d) != r.total || llmc_dataloader_num_tokens(d) != r.ntok) {
        verdict(BAD, "open of %s: masks %d, %d shards, %zu batches, %zu tokens; the files hold %d, %zu, %zu", c->pattern,
                llmc_dataloader_has_masks(d), llmc_dataloader_num_shards(d), llmc_dataloader_num_batches(d),
                llmc_dataloader_num_tokens(d), c->nfiles, r.total, r.ntok);
        return;
    }
    int *in = malloc(r.bt * sizeof *in), *tg = malloc(r.bt * sizeof *tg);
    unsigned char *seen = calloc(r.total, 1);
    for (size_t k = 0; in && tg && seen && k <= r.total; k++) { /* an epoch, and one batch into the next */
        const size_t e = k % r.total;
        if (e == 0) memset(seen, 0, r.total);
        const int f = e < r.nb[0] ? 0 : 1;
        if (!mask_next(d, vw, c, &r, first, in, tg, c->shuffle ? -1 : f, f ? e - r.nb[0] : e, "next")) break;
        if (c->shuffle) { /* every batch once an epoch: the first unseen one with these contents */
            int found = 0;
            for (int g = 0; !found && g < c->nfiles; g++)
                for (size_t b = 0; !found && b < r.nb[g]; b++) {
                    const size_t id = (g ? r.nb[0] : 0) + b;
                    if (!seen[id] && is_batch(&vw[c->files[g]], b, r.bt, in, tg)) seen[id] = found = 1;
                }
            if (!found) {
                verdict(BAD, "next %zu (%s, B=%d, T=%d): a batch twice in one epoch", k, c->pattern, c->B, c->T);
                break;
            }
        }
    }
    llmc_data_position p = llmc_dataloader_tell(d);
    if ((st = llmc_dataloader_seek(d, p)) != LLMC_OK) failed_later(st, llmc_dataloader_error(d), "seek to tell()");
    const size_t most = r.nb[0] > r.nb[1] ? r.nb[0] : r.nb[1], least = c->nfiles > 1 && r.nb[1] < r.nb[0] ? r.nb[1] : r.nb[0];
    llmc_data_position outside[] = {
        {0, 0, most}, {0, (uint64_t)c->nfiles, 0}, {0, UINT64_MAX, UINT64_MAX}, {5, 0, UINT64_MAX}};
    for (int i = 0; i < 4; i++) {
        st = llmc_dataloader_seek(d, outside[i]);
        if (st == LLMC_OK) verdict(BAD, "seek to shard %llu sample %llu succeeded", (unsigned long long)outside[i].shard,
                                   (unsigned long long)outside[i].sample);
        else if (!llmc_dataloader_error(d)[0]) verdict(BAD, "seek failed without a message");
    }
    /* the first batch of a later epoch, and the last sample of its last shard */
    llmc_data_position later[] = {{1, 0, 0}, {2, (uint64_t)c->nfiles - 1, least - 1}};
    for (int i = 0; in && tg && i < 2; i++) {
        if ((st = llmc_dataloader_seek(d, later[i])) != LLMC_OK) {
            failed_later(st, llmc_dataloader_error(d), "seek in range");
            break;
        }
        const int f = i ? c->nfiles - 1 : 0;
        if (!mask_next(d, vw, c, &r, first, in, tg, c->shuffle ? -1 : f, i ? least - 1 : 0, "next after seek")) break;
    }
    llmc_dataloader_reset(d);
    free(in), free(tg), free(seen);
}

static void child_mask(const char *dir) {
    pair_view vw[3];
    view_pair(&vw[0], dir, "shard_0"), view_pair(&vw[1], dir, "shard_1"), view_pair(&vw[2], dir, "plain_0");
    /* the header's own T, when it is not one a fixed case uses: rows the loader accepts after a mutation */
    const int32_t th = vw[0].mask.n >= 16 ? get32(&vw[0].mask, 12) : 0;
    const mask_case cases[] = {
        {"shard_0.bin", {0}, 1, 1, MASK_T, 0, 0},   /* decides ok: every batch of an epoch in order */
        {"shard_0.bin", {0}, 1, 2, MASK_T, 1, 0},   {"shard_0.bin", {0}, 1, 3, MASK_T, 0, 0},
        {"shard_0.bin", {0}, 1, 1, 4, 1, 0},        /* T other than the mask's: refused */
        {"shard_0.bin", {0}, 1, 1, th, 0, 0},       {"shard_*.bin", {0, 1}, 2, 2, MASK_T, 1, 0},
        {"shard_*.bin", {0, 1}, 2, 1, MASK_T, 0, 0}, {"*_0.bin", {2, 0}, 2, 1, MASK_T, 0, 1}, /* plain and masked */
        {"shard_0*", {0}, 1, 1, MASK_T, 0, 1},      /* the mask matched as a shard */
    };
    llmc_dataloader *d = llmc_dataloader_new();
    for (size_t i = 0; d && i < sizeof cases / sizeof cases[0]; i++) {
        if (i == 4 && (th < 1 || th > 64 || th == MASK_T || th == 4)) continue;
        mask_case_run(d, dir, vw, &cases[i], i == 0);
    }
    if (!d) verdict(BLOWUP, "no memory for a data loader");
    llmc_dataloader_free(d);
    for (int i = 0; i < 3; i++) free(vw[i].shard.p), free(vw[i].mask.p);
}

/* Eval seeds (llm.c's multiple-choice eval file, HellaSwag's): items with 1 to 4 choices, empty to
 * long contexts, over a 64-token vocabulary; a row of the scorer holds 32 tokens. */
enum { EVAL_VOCAB = 64, EVAL_T = 32 };
static const int EVAL_SLOTS[] = {0, 1, 2, 3};
static const part_kind EVAL_KIND = {EVAL_SLOTS, 4, NULL, 0, 0};

static void eval_seed(input *s, int nitems, uint64_t *rng) {
    memset(s, 0, sizeof *s);
    s->nparts = 1;
    part *p = &s->part[0];
    int32_t h[LLMC_HEADER_INTS] = {LLMC_EVAL_MAGIC, 1, nitems, 0};
    blob_append(&p->b, h, sizeof h);
    p->kind = &EVAL_KIND;
    for (int k = 0; k < 4; k++) mark(p, (size_t)k * 4);
    int longest = 0;
    for (int i = 0; i < nitems; i++) {
        uint16_t w[2 + 4 + 40 + 4 * 13];
        int n = 0;
        const int nch = i % 5 == 4 ? 1 + (int)below(rng, 3) : 4, ctx = i % 7 == 3 ? 0 : (int)below(rng, 40);
        w[n++] = 65535, w[n++] = 0, w[n++] = (uint16_t)i, w[n++] = (uint16_t)below(rng, (uint64_t)nch);
        w[n++] = (uint16_t)nch, w[n++] = (uint16_t)ctx;
        for (int k = 0; k < ctx; k++) w[n++] = (uint16_t)below(rng, EVAL_VOCAB);
        for (int c = 0; c < nch; c++) {
            const int len = 1 + (int)below(rng, 12);
            w[n++] = (uint16_t)len;
            for (int k = 0; k < len; k++) w[n++] = (uint16_t)below(rng, EVAL_VOCAB);
        }
        w[1] = (uint16_t)(2 * n);
        if (2 * n > longest) longest = 2 * n;
        mark(p, p->b.n), mark(p, p->b.n + 2), mark(p, p->b.n + 10); /* an item's start, size, context length */
        blob_append(&p->b, w, 2 * (size_t)n);
    }
    memcpy(p->b.p + 12, &longest, 4);
    mark(p, p->b.n - 2);
}

static void eval_seeds(input *seeds, int *n, const char *tmp) {
    (void)tmp;
    static const int ITEMS[] = {1, 2, 5, 9, 20, 60};
    uint64_t rng = 23;
    *n = 0;
    for (size_t i = 0; i < sizeof ITEMS / sizeof ITEMS[0]; i++) eval_seed(&seeds[(*n)++], ITEMS[i], &rng);
}

/* Load; an accepted file is then scored with a tiny model in rows of EVAL_T (B = 8 and 3: a batch
 * too small for 4 choices must be refused with a message, never scored wrong). */
static void child_eval(const char *dir) {
    char path[4200], err[512] = "";
    snprintf(path, sizeof path, "%s/eval.bin", dir);
    llmc_mc_eval *e = llmc_mc_eval_load(path, EVAL_VOCAB, err, sizeof err);
    if (!e) {
        if (!err[0]) verdict(BAD, "eval load failed without a message");
        else if (strstr(err, "out of memory")) verdict(BLOWUP, "eval load: %s", err);
        else verdict(ERROR, "eval load: %s", err);
        return;
    }
    verdict(OK, "loaded");
    const int items = llmc_mc_eval_items(e);
    const llmc_config cfg = {EVAL_T, EVAL_VOCAB, 0, 1, 2, 8};
    llmc_model *m = llmc_model_new();
    llmc_train *t = llmc_train_new();
    llmc_status st = llmc_model_init_random(m, NULL, &cfg, 3);
    if (st == LLMC_OK) st = llmc_train_attach(t, m, NULL);
    if (st != LLMC_OK) die("cannot make the eval's model: %s", llmc_model_error(m));
    static const int BS[] = {8, 3};
    for (int k = 0; k < 2; k++) {
        const int B = BS[k];
        int *in = malloc((size_t)B * EVAL_T * sizeof *in), *tg = malloc((size_t)B * EVAL_T * sizeof *tg);
        llmc_mc_score s;
        err[0] = '\0';
        st = in && tg ? llmc_mc_eval_run(e, t, B, EVAL_T, k ? 3 : 0, 0, 1, in, tg, &s, err, sizeof err) : LLMC_ERR_OUT_OF_MEMORY;
        if (st != LLMC_OK) {
            if (st == LLMC_ERR_OUT_OF_MEMORY) verdict(BLOWUP, "eval run: %s", err);
            else if (!err[0]) verdict(BAD, "eval run failed without a message");
            else if (!strstr(err, "rows (-b)") && !strstr(err, "of a row (-t)"))
                verdict(BAD, "eval run failed on an accepted file: %s", err);
        } else if (s.n != (k ? (items < 3 ? items : 3) : items) || !(s.acc >= 0 && s.acc <= 1) ||
                   !(s.acc_norm >= 0 && s.acc_norm <= 1)) {
            verdict(BAD, "eval run: %d items scored of %d, acc %g, acc_norm %g", s.n, items, s.acc, s.acc_norm);
        }
        free(in), free(tg);
    }
    llmc_train_free(t);
    llmc_model_free(m);
    llmc_mc_eval_free(e);
}

const format FORMATS[] = {
    {"model", model_seeds, child_model, NULL, {"model.bin", NULL}},
    {"shard", shard_seeds, child_shard, shard_extra, {"shard_0.bin", NULL}},
    {"tokenizer", tokenizer_seeds, child_tokenizer, NULL, {"tokenizer.bin", NULL}},
    {"state", state_seeds, child_state, shard_extra, {"ck/state_00000007.bin", "ck/model_00000007.bin"}},
    {"safetensors", safetensors_seeds, child_safetensors, NULL, {"ck/model.safetensors", "ck/config.json"}},
    {"mask", mask_seeds, child_mask, mask_extra, {"shard_0.mask", "shard_0.bin"}},
    {"eval", eval_seeds, child_eval, NULL, {"eval.bin", NULL}},
};
const int NFORMATS = sizeof FORMATS / sizeof FORMATS[0];


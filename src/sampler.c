/* sampler.c — picking one token from a row of logits.
 *
 * temperature 0 is greedy (lowest index on ties). Otherwise the distribution is
 * softmax(logits / temperature), cut to the top_k most likely tokens (top_k > 0),
 * then — measured on that renormalised distribution — to the smallest set of most
 * likely tokens whose mass reaches top_p (top_p < 1), and sampled with exactly one
 * llmc_rng_f32 draw. "More likely" means larger logit, then smaller index, so the
 * cut is deterministic even with ties.
 *
 * Fails with LLMC_ERR_INVALID_ARG when V <= 0 or the temperature is negative or NaN or top_p
 * is NaN, with LLMC_ERR_NUMERIC when a logit is NaN or +Inf or every logit is -Inf.
 * -Inf logits are fine otherwise: they get probability 0.
 *
 * Speed matters (one call per sequence per generated token, V = 50257): every pass
 * over V is branch-free and vectorisable, top-p finds its cut with a histogram
 * instead of a sort, and plain sampling allocates nothing.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc.h"
#include "rng.h"
#include "sample_math.h"

llmc_status llmc_sampling_validate(const llmc_sampling *s, char *err, size_t errlen) {
    if (s->temperature >= 0.0f && isfinite(s->temperature) && s->top_k >= 0 && s->top_p > 0.0f && s->top_p <= 1.0f)
        return LLMC_OK;
    snprintf(err, errlen, "bad sampling settings: temperature %g (>= 0), top_k %d (>= 0), top_p %g (in (0, 1])",
             s->temperature, s->top_k, s->top_p);
    return LLMC_ERR_INVALID_ARG;
}

void llmc_sampling_default(llmc_sampling *s) {
    if (!s) return;
    s->temperature = 1.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->seed = 1337;
}

/* ---- candidate tokens ---- */
typedef struct cand {
    float v; /* logit */
    int i;   /* token */
    float w; /* weight */
    int b;   /* histogram bucket (nucleus search) */
} cand;

/* The order in which tokens are preferred: larger logit, then smaller index.
 * Bitwise operators: no branches, so loops over V stay vectorisable. */
static inline int better(float va, int ia, float vb, int ib) { return (va > vb) | ((va == vb) & (ia < ib)); }
#define BETTER(a, b) better((a).v, (a).i, (b).v, (b).i)

static int cmp_desc(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return BETTER(*a, *b) ? -1 : BETTER(*b, *a) ? 1 : 0;
}

/* Min-heap on "better": the root is the worst of the kept candidates. */
static void sift_down(cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && BETTER(h[w], h[l])) w = l;
        if (r < n && BETTER(h[w], h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The k best of V, sorted best first. A heap of k; runs of logits that cannot enter
 * it are skipped a vector at a time. */
static void select_top_k(const float *logits, int V, int k, cand *out) {
    for (int i = 0; i < k; i++) out[i] = (cand){logits[i], i, 0, 0};
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(out, k, i);
    float worst = out[0].v;
    for (int i = k; i < V;) {
        if (i + 64 <= V) {
            int any = 0;
            for (int j = 0; j < 64; j++) any |= logits[i + j] > worst;
            if (!any) {
                i += 64;
                continue;
            }
        }
        int end = i + 64 <= V ? i + 64 : V;
        for (; i < end; i++)
            /* i is larger than every kept index, so a tie with the worst kept loses */
            if (logits[i] > worst) {
                out[0] = (cand){logits[i], i, 0, 0};
                sift_down(out, k, 0);
                worst = out[0].v;
            }
    }
    qsort(out, (size_t)k, sizeof *out, cmp_desc);
}

/* ---- passes over all V logits ---- */

/* Max logit; sets *bad if any logit is NaN or +Inf. The max runs on integer keys that
 * order like the floats (negative patterns flipped), which vectorises where a float
 * max would not without -ffast-math. */
static float scan_max(const float *logits, int V, int *bad) {
    int32_t m = INT32_MIN;
    int b = 0;
    for (int i = 0; i < V; i++) {
        int32_t k;
        memcpy(&k, &logits[i], 4);
        b |= !(logits[i] < INFINITY); /* NaN or +Inf */
        k ^= (int32_t)((0u - ((uint32_t)k >> 31)) & 0x7FFFFFFFu);
        m = k > m ? k : m;
    }
    m ^= (int32_t)((0u - ((uint32_t)m >> 31)) & 0x7FFFFFFFu);
    float mx;
    memcpy(&mx, &m, 4);
    *bad = b;
    return mx;
}

/* Tokens at least as likely as (ev, ei) take part; ev = -INFINITY, ei = INT_MAX admits all. */
typedef struct edge {
    float v;
    int i;
} edge;

/* A row of logits, with its weights when they have been computed once already (w != NULL). */
typedef struct row {
    const float *l;
    const float *w;
    int V;
    float mx, temperature;
} row;

static inline float row_weight(const row *r, int i) { return r->w ? r->w[i] : sample_weight(r->l[i], r->mx, r->temperature); }

/* Sum of the weights of member tokens in [lo, hi), hi - lo <= SAMPLE_BLOCK, in a fixed order:
 * SAMPLE_LANES float partial sums (exact enough within a block), added in double. */
static double block_sum(const row *r, int lo, int hi, edge e) {
    float w[SAMPLE_BLOCK];
    int n = hi - lo;
    const float *l = r->l + lo, *wr = r->w ? r->w + lo : NULL;
    float mx = r->mx, t = r->temperature, ev = e.v;
    int ei = e.i - lo;
    /* member: at least as likely as the edge, i.e. not worse than it */
    if (wr)
        for (int j = 0; j < n; j++) w[j] = wr[j] * (float)((l[j] > ev) | ((l[j] == ev) & (j <= ei)));
    else
        for (int j = 0; j < n; j++) w[j] = sample_weight(l[j], mx, t) * (float)((l[j] > ev) | ((l[j] == ev) & (j <= ei)));
    float acc[SAMPLE_LANES] = {0};
    int j = 0;
    for (; j + SAMPLE_LANES <= n; j += SAMPLE_LANES)
        for (int q = 0; q < SAMPLE_LANES; q++) acc[q] += w[j + q];
    double s = 0;
    for (; j < n; j++) s += w[j];
    for (int q = 0; q < SAMPLE_LANES; q++) s += acc[q];
    return s;
}

static double total_weight(const row *r, edge e, double *sums) {
    double z = 0;
    for (int b = 0, lo = 0; lo < r->V; b++, lo += SAMPLE_BLOCK) {
        double s = block_sum(r, lo, lo + SAMPLE_BLOCK < r->V ? lo + SAMPLE_BLOCK : r->V, e);
        if (sums) sums[b] = s;
        z += s;
    }
    return z;
}

/* Samples the member tokens in token order. Block sums locate the block the draw falls
 * in, so only one block is scanned token by token. */
static int draw_blocks(const row *r, edge e, int fallback, float u) {
    int V = r->V, nb = (V + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    double stack_sums[1024];
    double *sums = nb <= 1024 ? stack_sums : malloc((size_t)nb * sizeof *sums);
    if (!sums) return -1;
    double z = total_weight(r, e, sums);
    double target = (double)u * z, cum = 0;
    int b = 0, last_b = -1;
    for (; b < nb; b++) {
        if (sums[b] <= 0) continue;
        last_b = b;
        if (cum + sums[b] > target) break;
        cum += sums[b];
    }
    if (b == nb) b = last_b; /* rounding left the target at the very top */
    if (sums != stack_sums) free(sums);
    if (b < 0) return fallback;
    int lo = b * SAMPLE_BLOCK, hi = lo + SAMPLE_BLOCK < V ? lo + SAMPLE_BLOCK : V, last = fallback;
    for (int i = lo; i < hi; i++) {
        if (better(e.v, e.i, r->l[i], i)) continue;
        double w = row_weight(r, i);
        if (w <= 0) continue;
        last = i;
        cum += w;
        if (cum > target) return i;
    }
    return last;
}

/* Samples among c[0..n) (best first, weights filled), cut to the shortest prefix whose
 * mass reaches need (INFINITY: no cut). */
static int draw_sorted(const cand *c, int n, double need, float u) {
    double mass = 0;
    int m = 0;
    do mass += c[m++].w;
    while (m < n && mass < need);
    double target = (double)u * mass, cum = 0;
    int last = c[0].i;
    for (int j = 0; j < m; j++) {
        if (c[j].w <= 0) continue;
        last = c[j].i;
        cum += c[j].w;
        if (cum > target) return c[j].i;
    }
    return last;
}

/* The least likely member of the nucleus among candidates c[0..n) (weights filled; every
 * token better than a candidate is one): the fewest best candidates whose mass reaches need.
 * A histogram over the logit range finds the bucket where the mass crosses need; only that
 * bucket is sorted. Buckets are monotone in the logit, so better tokens never land later. */
#define NBUCKETS 2048
static int nucleus_edge(cand *c, int n, float mx, float lowest, double need, edge *out) {
    double hist[NBUCKETS] = {0};
    float span = mx - lowest, scale = span > 0 && span < INFINITY ? (float)NBUCKETS / span : 0.0f;
    for (int j = 0; j < n; j++) {
        float f = (mx - c[j].v) * scale;
        c[j].b = f < (float)(NBUCKETS - 1) ? (int)f : NBUCKETS - 1; /* NaN and Inf go last too */
        hist[c[j].b] += c[j].w;
    }
    double acc = 0, before = 0; /* before: the mass of the buckets ahead of bb */
    int bb = -1;
    for (int b = 0; b < NBUCKETS; b++) {
        if (hist[b] <= 0) continue;
        bb = b;
        before = acc;
        acc += hist[b];
        if (acc >= need) break;
    }
    /* bb: the crossing bucket, or the last one with mass if rounding kept the total under need */
    if (bb < 0) return -1; /* no weight at all: cannot happen, the top token weighs 1 */
    acc = before;
    int m = 0;
    for (int j = 0; j < n; j++)
        if (c[j].b == bb) c[m++] = c[j]; /* c[] is scratch from here on */
    qsort(c, (size_t)m, sizeof *c, cmp_desc);
    int j = 0;
    acc += c[0].w;
    while (acc < need && j + 1 < m) acc += c[++j].w;
    out->v = c[j].v;
    out->i = c[j].i;
    return 0;
}

/* Top-p over the whole row (weights precomputed in r->w). Tokens lighter than (1-top_p)/(V-1)
 * of the total weigh less than 1-top_p together, so the nucleus lies among the heavier ones.
 * The cut is made on the logit, so the candidates are exactly a prefix of the preference order. */
static int nucleus_sample(const row *r, cand *c, float top_p, int arg, float u) {
    const float *l = r->l, *w = r->w;
    int V = r->V;
    const edge all = {-INFINITY, INT_MAX};
    double z = total_weight(r, all, NULL);
    double need = (double)top_p * z;
    if (need <= 0) return arg; /* top_p <= 0: the single most likely token */
    float cut = r->mx + (float)((double)r->temperature * log((1.0 - (double)top_p) / (V - 1) * z));
    const edge at_cut = {cut, INT_MAX};
    double heavy = total_weight(r, at_cut, NULL);
    int n = 0;
    if (heavy >= need) {
        for (int i = 0; i < V; i++) { /* branch-free compaction: write always, advance when kept */
            c[n].v = l[i];
            c[n].i = i;
            n += l[i] >= cut;
        }
    }
    if (n == 0) { /* the bound failed (tiny top_p, rounding): take every token */
        cut = r->mx;
        for (int i = 0; i < V; i++) {
            c[i].v = l[i];
            c[i].i = i;
            if (l[i] < cut && l[i] > -INFINITY) cut = l[i];
        }
        n = V;
    }
    for (int j = 0; j < n; j++) c[j].w = w[c[j].i];
    edge e;
    if (nucleus_edge(c, n, r->mx, cut, need, &e) != 0) return -1;
    return draw_blocks(r, e, arg, u);
}

/* The token for the uniform draw u in [0, 1), or -1 when the draw cannot be made (a malloc
 * failed, or bad values found late). */
static int sample(const float *logits, int V, const llmc_sampling *s, float u, float mx) {
    float temperature = s->temperature, top_p = s->top_p;
    int arg = 0;
    while (logits[arg] != mx) arg++; /* first maximum */
    if (temperature == 0.0f) return arg;

    int k = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    const edge all = {-INFINITY, INT_MAX};

    if (k < V) {
        cand *c = malloc((size_t)k * sizeof *c);
        if (!c) return -1;
        select_top_k(logits, V, k, c);
        double zk = 0;
        for (int j = 0; j < k; j++) zk += c[j].w = sample_weight(c[j].v, mx, temperature);
        int tok = draw_sorted(c, k, top_p < 1.0f ? (double)top_p * zk : INFINITY, u);
        free(c);
        return tok;
    }
    row r = {logits, NULL, V, mx, temperature};
    if (!(top_p < 1.0f) || V == 1) return draw_blocks(&r, all, arg, u);

    /* Nucleus without top-k: weights computed once serve four passes. One buffer of the
     * same size every call, so malloc recycles it instead of mapping fresh pages. */
    float *w = malloc((size_t)V * (sizeof *w + sizeof(cand)) + sizeof(cand));
    if (!w) return -1;
    for (int i = 0; i < V; i++) w[i] = sample_weight(logits[i], mx, temperature);
    r.w = w;
    int tok = nucleus_sample(&r, (cand *)(w + V), top_p, arg, u);
    free(w);
    return tok;
}

/* Both entry points: the checks, then the draw (from the stream when from_stream, its default
 * seeded from s->seed when rng is NULL; else u), then the pick. Nothing is drawn for a row that
 * fails the checks, nor for temperature 0. */
static llmc_status sample_entry(const float *logits, int V, const llmc_sampling *s, int from_stream, uint64_t *rng,
                                float u, int *token) {
    llmc_sampling def;
    if (!s) {
        llmc_sampling_default(&def);
        s = &def;
    }
    *token = -1;
    char why[160];
    if (!logits || V <= 0 || llmc_sampling_validate(s, why, sizeof why) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    int bad;
    float mx = scan_max(logits, V, &bad);
    if (bad || mx == -INFINITY) return LLMC_ERR_NUMERIC;
    if (from_stream) {
        uint64_t local = llmc_rng_seed(s->seed);
        u = s->temperature > 0.0f ? llmc_rng_f32(rng ? rng : &local) : 0.0f;
    }
    *token = sample(logits, V, s, u, mx);
    return *token >= 0 ? LLMC_OK : LLMC_ERR_OUT_OF_MEMORY;
}

llmc_status llmc_sample_token_at(const float *logits, int V, const llmc_sampling *s, float u, int *token) {
    if (!(u >= 0.0f && u < 1.0f)) {
        *token = -1;
        return LLMC_ERR_INVALID_ARG;
    }
    return sample_entry(logits, V, s, 0, NULL, u, token);
}

llmc_status llmc_sample_token(const float *logits, int V, const llmc_sampling *s, uint64_t *rng_state, int *token) {
    return sample_entry(logits, V, s, 1, rng_state, 0.0f, token);
}

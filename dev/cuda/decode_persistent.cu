/* Lab: a decode step's transformer blocks as one persistent kernel (cuda/decode_persistent.cu,
 * llmc_cuda_decode_layers) against the per-op path src/infer.c runs when it declines.
 *
 * test:  random bf16 weights (d12; L=2,H=2,C=128; L=1,H=25,C=1600) and a KV cache filled with
 *        random K/V; n = 1, 2, 3, 5, 8 rows at ragged positions (0 .. maxlen-1), each its own
 *        slot. The per-op sequence (encoder_forward_at, then infer.c's run_layers with the
 *        llmc_cuda_* ops) is the reference of every persistent variant (staged -1 / 0 x ahead
 *        default / 1), all on NaN-poisoned activations and new cache rows: final-layernorm rows
 *        and the appended K/V (normwise, < 1e-2), every other cache element bitwise untouched,
 *        the variants bitwise equal to each other (staging and prefetch change no sum). A float64
 *        CPU step (L=2,H=2,C=128, n=2) checks both paths (< 2e-2). n = 9 must give
 *        LLMC_ERR_UNSUPPORTED with dev->err untouched.
 * bench: d12 and d48 (when they fit), every row at position 128 and 512: us per step, each
 *        variant one CUDA graph replayed back to back: per-op n = 1..64 (layers; + LM head),
 *        persistent n = 1, 2, 4, 8 x staged -1/0 x ahead default/1/2/4/8 (+ LM head once);
 *        TB/s = layer weight bytes / time (+ wte with the head).
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh;  build/labs/decode_persistent [test|bench] */
#include "lab.cuh"

/* ---- device helpers: model-sized random tensors, and the cache rows a step writes ---- */

/* bf16 N(shift, scale^2) from a hash of (seed, index): no host work for 3 GB of weights. */
__global__ void lab_fill_normal(bf16 *p, size_t n, uint64_t seed, float scale, float shift) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        const float u = ((float)(z >> 40) + 0.5f) * (1.0f / 16777216.0f), v = (float)(z & 0xffffff) / 16777216.0f;
        p[i] = __float2bfloat16_rn(shift + scale * sqrtf(-2.0f * logf(u)) * cospif(2.0f * v));
    }
}
static void fill(void *p, size_t n, float scale, float shift = 0.0f) {
    lab_fill_normal<<<1024, 256, 0, lab_stream()>>>((bf16 *)p, n, rng_u64(), scale, shift);
    CK(cudaGetLastError());
}

/* Row r's K and V at (slot[r], pos[r]) of every layer and head: gathered into
 * out[((l * n + r) * 2 + kv) * C + h * HS + d], or poisoned (0xffff) when out is NULL. */
__global__ void lab_new_rows(bf16 *kc, bf16 *vc, bf16 *out, const int *slots, const int *pos, int n, int L, int NH,
                             int HS, size_t cache_layer, int maxlen) {
    const size_t total = (size_t)L * n * 2 * NH * HS;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t q = i / HS;
        const int d = (int)(i % HS), h = (int)(q % NH);
        q /= NH;
        const int kv = (int)(q % 2);
        q /= 2;
        const int r = (int)(q % n), l = (int)(q / n);
        bf16 *c = (kv ? vc : kc) + l * cache_layer + (((size_t)slots[r] * NH + h) * maxlen + pos[r]) * HS + d;
        if (out) out[i] = *c;
        else *c = __ushort_as_bfloat16(0xffff);
    }
}

/* Elements of a cache (L layers of (S, NH, maxlen, HS)) that differ from the pristine copy
 * outside the step's rows, added to *count. */
__global__ void lab_count_changed(const uint16_t *a, const uint16_t *b, size_t total, size_t cache_layer,
                                  const int *slots, const int *pos, int n, int NH, int HS, int maxlen,
                                  unsigned long long *count) {
    unsigned long long c = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        if (a[i] == b[i]) continue;
        const size_t j = i % cache_layer;
        const int t = (int)((j / HS) % maxlen), slot = (int)(j / ((size_t)HS * maxlen * NH));
        bool fresh = false;
        for (int r = 0; r < n; r++) fresh |= slots[r] == slot && pos[r] == t;
        c += !fresh;
    }
    if (c) atomicAdd(count, c);
}

/* ---- an engine: weights, caches and infer.c's scratch rows ---- */
struct Engine {
    const char *name;
    llmc_config cfg;
    llmc_weights w;
    int L, C, NH, HS, Vp, S, maxlen, n;
    size_t cache_layer, cache_elems; /* one layer of K (or V); all layers */
    bf16 *kc, *vc, *kc0, *vc0;       /* caches, and their pristine copies (test only) */
    bf16 *x, *res2, *ln, *qkv, *atty, *proj, *fch, *fchg, *logits, *fresh;
    float *mean, *rstd;
    int *ids; /* n tokens, slots, pos, lens (as infer.c's upload_ids) */
    unsigned *sync;
    unsigned long long *count;
    const int *tok() const { return ids; }
    const int *slots() const { return ids + n; }
    const int *pos() const { return ids + 2 * n; }
    const int *lens() const { return ids + 3 * n; }
};

static bool engine_open(Engine &e, const char *desc, int S, int maxlen, int R, int pristine) {
    char err[256];
    memset(&e, 0, sizeof e);
    e.name = desc;
    if (llmc_config_from_descriptor(desc, &e.cfg, err, sizeof err) != LLMC_OK) {
        fprintf(stderr, "%s: %s\n", desc, err);
        exit(1);
    }
    llmc_weights_layout(&e.w, &e.cfg, LLMC_BF16);
    e.L = e.cfg.num_layers, e.C = e.cfg.channels, e.NH = e.cfg.num_heads, e.HS = e.C / e.NH;
    e.Vp = e.cfg.padded_vocab_size, e.S = S, e.maxlen = std::min(maxlen, e.cfg.max_seq_len);
    e.cache_layer = (size_t)S * maxlen * e.C, e.cache_elems = e.L * e.cache_layer;
    const size_t C = e.C, bytes = 2 * (e.w.count + (pristine ? 4 : 2) * e.cache_elems + (size_t)R * (e.Vp + 20 * C));
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    if (bytes + (1ull << 30) > free_b) {
        printf("%s: needs %.1f GiB, %.1f GiB free: skipped\n", desc, bytes / 1073741824.0, free_b / 1073741824.0);
        return false;
    }
    llmc_weights_bind(&e.w, dmalloc(e.w.count * 2));
    /* activations stay O(1): LN weights ~1, products of 1/sqrt(K) (residual branches half that) */
    for (int i = 0; i < LLMC_NUM_PARAM_TENSORS; i++) {
        const llmc_tensor &t = e.w.t[i];
        const float K = (float)t.shape[t.ndim - 1];
        switch (i) {
        case LLMC_WTE: fill(t.data, t.numel, 0.3f); break;
        case LLMC_WPE: fill(t.data, t.numel, 0.1f); break;
        case LLMC_LN1W: case LLMC_LN2W: case LLMC_LNFW: fill(t.data, t.numel, 0.1f, 1.0f); break;
        case LLMC_QKVW: case LLMC_FCW: fill(t.data, t.numel, 1.0f / sqrtf(K)); break;
        case LLMC_ATTPROJW: case LLMC_FCPROJW: fill(t.data, t.numel, 0.5f / sqrtf(K)); break;
        default: fill(t.data, t.numel, 0.1f); /* biases */
        }
    }
    e.kc = (bf16 *)dmalloc(e.cache_elems * 2), e.vc = (bf16 *)dmalloc(e.cache_elems * 2);
    fill(e.kc, e.cache_elems, 1.0f), fill(e.vc, e.cache_elems, 1.0f); /* scores q.k/8 of about unit spread */
    if (pristine) {
        e.kc0 = (bf16 *)dmalloc(e.cache_elems * 2), e.vc0 = (bf16 *)dmalloc(e.cache_elems * 2);
        CK(cudaMemcpyAsync(e.kc0, e.kc, e.cache_elems * 2, cudaMemcpyDeviceToDevice, lab_stream()));
        CK(cudaMemcpyAsync(e.vc0, e.vc, e.cache_elems * 2, cudaMemcpyDeviceToDevice, lab_stream()));
    }
    bf16 **rows[] = {&e.x, &e.res2, &e.ln, &e.atty, &e.proj};
    for (bf16 **p : rows) *p = (bf16 *)dmalloc(R * C * 2);
    e.qkv = (bf16 *)dmalloc(R * 3 * C * 2), e.fch = (bf16 *)dmalloc(R * 4 * C * 2);
    e.fchg = (bf16 *)dmalloc(R * 4 * C * 2), e.logits = (bf16 *)dmalloc((size_t)R * e.Vp * 2);
    e.fresh = (bf16 *)dmalloc(e.L * (size_t)R * 2 * C * 2);
    e.mean = (float *)dmalloc(R * 4), e.rstd = (float *)dmalloc(R * 4);
    e.ids = (int *)dmalloc(4 * R * sizeof(int)), e.sync = (unsigned *)dmalloc(4);
    e.count = (unsigned long long *)dmalloc(8);
    lab_sync();
    return true;
}

static void engine_close(Engine &e) {
    void *ps[] = {e.w.data, e.kc, e.vc, e.kc0, e.vc0, e.x, e.res2, e.ln, e.qkv, e.atty, e.proj, e.fch, e.fchg,
                  e.logits, e.fresh, e.mean, e.rstd, e.ids, e.sync, e.count};
    for (void *p : ps)
        if (p) CK(cudaFree(p));
}

/* The step's rows: row r at pos[r] in slot 3r+1 mod S (distinct: S is not a multiple of 3). */
static std::vector<int> set_rows(Engine &e, const std::vector<int> &pos) {
    const int n = e.n = (int)pos.size();
    std::vector<int> h(4 * n);
    for (int r = 0; r < n; r++) {
        h[r] = (int)(rng_u64() % (uint64_t)e.cfg.vocab_size);
        h[n + r] = (3 * r + 1) % e.S;
        h[2 * n + r] = pos[r];
        h[3 * n + r] = pos[r] + 1;
    }
    up_i32(e.ids, h);
    return h;
}

/* ---- the two paths ---- */
static void lm_head(Engine &e) {
    OKS(llmc_cuda_matmul_forward(&g_dev, e.logits, NULL, e.ln, &e.w.t[LLMC_WTE], NULL, e.n, e.C, e.Vp));
}

/* infer.c's decode_ops without the persistent branch: encoder_forward_at + run_layers. */
static void run_per_op(Engine &e, int head) {
    llmc_device *d = &g_dev;
    const int n = e.n, C = e.C;
    OKS(llmc_cuda_encoder_forward_at(d, e.x, e.tok(), e.pos(), &e.w.t[LLMC_WTE], &e.w.t[LLMC_WPE], n, C));
    for (int l = 0; l < e.L; l++) {
        llmc_tensor P[LLMC_NUM_PARAM_TENSORS];
        llmc_weights_slices(&e.w, l, P);
        bf16 *kc = e.kc + l * e.cache_layer, *vc = e.vc + l * e.cache_layer;
        if (l == 0)
            OKS(llmc_cuda_layernorm_forward(d, NULL, e.ln, e.mean, e.rstd, e.x, NULL, &P[LLMC_LN1W], &P[LLMC_LN1B],
                                            n, C));
        else
            OKS(llmc_cuda_layernorm_forward(d, e.x, e.ln, e.mean, e.rstd, e.res2, e.proj, &P[LLMC_LN1W],
                                            &P[LLMC_LN1B], n, C));
        OKS(llmc_cuda_matmul_forward(d, e.qkv, NULL, e.ln, &P[LLMC_QKVW], &P[LLMC_QKVB], n, C, 3 * C));
        OKS(llmc_cuda_kv_append(d, kc, vc, e.qkv, e.slots(), e.pos(), n, 1, e.NH, e.HS, e.maxlen));
        OKS(llmc_cuda_attention_decode(d, e.atty, e.qkv, kc, vc, e.slots(), e.lens(), n, e.NH, e.HS, e.maxlen));
        OKS(llmc_cuda_matmul_forward(d, e.proj, NULL, e.atty, &P[LLMC_ATTPROJW], &P[LLMC_ATTPROJB], n, C, C));
        OKS(llmc_cuda_layernorm_forward(d, e.res2, e.ln, e.mean, e.rstd, e.x, e.proj, &P[LLMC_LN2W], &P[LLMC_LN2B],
                                        n, C));
        OKS(llmc_cuda_matmul_forward(d, e.fchg, e.fch, e.ln, &P[LLMC_FCW], &P[LLMC_FCB], n, C, 4 * C));
        OKS(llmc_cuda_matmul_forward(d, e.proj, NULL, e.fchg, &P[LLMC_FCPROJW], &P[LLMC_FCPROJB], n, 4 * C, C));
    }
    OKS(llmc_cuda_layernorm_forward(d, e.x, e.ln, e.mean, e.rstd, e.res2, e.proj, &e.w.t[LLMC_LNFW],
                                    &e.w.t[LLMC_LNFB], n, C));
    if (head) lm_head(e);
}

/* The persistent kernel, with infer.c's buffers (final layernorm into ln). */
static llmc_status run_persistent(Engine &e, int staged, int ahead, unsigned long long *trace = nullptr) {
    llmc_decode_step s;
    memset(&s, 0, sizeof s);
    s.w = &e.w, s.kcache = e.kc, s.vcache = e.vc, s.cache_layer = e.cache_layer, s.maxlen = e.maxlen;
    s.x = e.x, s.res2 = e.res2, s.qkv = e.qkv, s.atty = e.atty, s.fch = e.fch, s.out = e.ln;
    s.tokens = e.tok(), s.pos = e.pos(), s.slots = e.slots(), s.lens = e.lens(), s.sync = e.sync;
    s.n = e.n, s.ahead = ahead, s.staged = staged, s.trace = trace;
    return llmc_cuda_decode_layers(&g_dev, &s);
}

/* ---- test ---- */
struct Result {
    llmc_status st;
    std::vector<float> out, kv; /* final-LN rows; the new K/V (lab_new_rows order) */
    unsigned long long changed; /* cache elements changed outside the new rows */
};

/* One run on a pristine cache with poisoned activations and new rows. persistent < 0: per-op. */
static Result run_case(Engine &e, int persistent, int staged = -1, int ahead = 0) {
    const int n = e.n, C = e.C;
    cudaStream_t s = lab_stream();
    CK(cudaMemcpyAsync(e.kc, e.kc0, e.cache_elems * 2, cudaMemcpyDeviceToDevice, s));
    CK(cudaMemcpyAsync(e.vc, e.vc0, e.cache_elems * 2, cudaMemcpyDeviceToDevice, s));
    for (bf16 *p : {e.x, e.res2, e.ln, e.atty, e.proj}) poison(p, (size_t)n * C * 2);
    poison(e.qkv, (size_t)n * 3 * C * 2), poison(e.fch, (size_t)n * 4 * C * 2), poison(e.fchg, (size_t)n * 4 * C * 2);
    lab_new_rows<<<256, 256, 0, s>>>(e.kc, e.vc, NULL, e.slots(), e.pos(), n, e.L, e.NH, e.HS, e.cache_layer, e.maxlen);
    Result r;
    r.st = LLMC_OK;
    if (persistent < 0) run_per_op(e, 0);
    else r.st = run_persistent(e, staged, ahead);
    lab_sync();
    CK(cudaGetLastError());
    r.out = down_bf16(e.ln, (size_t)n * C);
    lab_new_rows<<<256, 256, 0, s>>>(e.kc, e.vc, e.fresh, e.slots(), e.pos(), n, e.L, e.NH, e.HS, e.cache_layer,
                                     e.maxlen);
    r.kv = down_bf16(e.fresh, (size_t)e.L * n * 2 * C);
    CK(cudaMemsetAsync(e.count, 0, 8, s));
    for (int kv = 0; kv < 2; kv++) {
        const uint16_t *now = (const uint16_t *)(kv ? e.vc : e.kc), *was = (const uint16_t *)(kv ? e.vc0 : e.kc0);
        lab_count_changed<<<1024, 256, 0, s>>>(now, was, e.cache_elems, e.cache_layer, e.slots(), e.pos(), n, e.NH,
                                               e.HS, e.maxlen, e.count);
    }
    r.changed = down_raw<unsigned long long>(e.count, 1)[0];
    return r;
}

static std::vector<double> f64(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }

/* float64 decode step of the rows h (set_rows' layout) over the device's bf16 weights and cache. */
static void cpu_step(const Engine &e, const std::vector<int> &h, std::vector<double> &out, std::vector<double> &kv) {
    const int n = e.n, C = e.C, HS = e.HS;
    const std::vector<float> W = down_bf16(e.w.data, e.w.count), K0 = down_bf16(e.kc0, e.cache_elems),
                             V0 = down_bf16(e.vc0, e.cache_elems);
    auto T = [&](int i, int l) { return &W[e.w.t[i].offset + (size_t)l * e.w.t[i].layer_stride]; };
    auto layernorm = [&](const std::vector<double> &x, const float *w, const float *b, double *o) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c] / C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m) / C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) / sqrt(v + 1e-5) * w[c] + b[c];
    };
    auto linear = [](std::vector<double> &o, const std::vector<double> &x, const float *w, const float *b, int K) {
        for (size_t j = 0; j < o.size(); j++) {
            double s = b[j];
            for (int k = 0; k < K; k++) s += x[k] * w[j * K + k];
            o[j] = s;
        }
    };
    out.assign((size_t)n * C, 0), kv.assign((size_t)e.L * n * 2 * C, 0);
    for (int r = 0; r < n; r++) {
        const int tok = h[r], slot = h[n + r], pos = h[2 * n + r];
        std::vector<double> x(C), ln(C), qkv(3 * C), att(C), proj(C), f(4 * C);
        for (int c = 0; c < C; c++)
            x[c] = (double)T(LLMC_WTE, 0)[(size_t)tok * C + c] + T(LLMC_WPE, 0)[(size_t)pos * C + c];
        for (int l = 0; l < e.L; l++) {
            layernorm(x, T(LLMC_LN1W, l), T(LLMC_LN1B, l), ln.data());
            linear(qkv, ln, T(LLMC_QKVW, l), T(LLMC_QKVB, l), C);
            for (int c = 0; c < 2 * C; c++) kv[((size_t)(l * n + r) * 2 + c / C) * C + c % C] = qkv[C + c];
            for (int hd = 0; hd < e.NH; hd++) {
                const size_t base = l * e.cache_layer + ((size_t)slot * e.NH + hd) * e.maxlen * HS;
                std::vector<double> sc(pos + 1);
                double mx = -1e300, sum = 0;
                for (int t = 0; t <= pos; t++) {
                    double s = 0; /* keys before pos from the cache, at pos the row's own */
                    for (int d = 0; d < HS; d++)
                        s += qkv[hd * HS + d] * (t < pos ? K0[base + (size_t)t * HS + d] : qkv[C + hd * HS + d]);
                    sc[t] = s / sqrt((double)HS);
                    mx = std::max(mx, sc[t]);
                }
                for (int t = 0; t <= pos; t++) sum += (sc[t] = exp(sc[t] - mx));
                for (int d = 0; d < HS; d++) {
                    double a = 0;
                    for (int t = 0; t <= pos; t++)
                        a += sc[t] * (t < pos ? (double)V0[base + (size_t)t * HS + d] : qkv[2 * C + hd * HS + d]);
                    att[hd * HS + d] = a / sum;
                }
            }
            linear(proj, att, T(LLMC_ATTPROJW, l), T(LLMC_ATTPROJB, l), C);
            for (int c = 0; c < C; c++) x[c] += proj[c];
            layernorm(x, T(LLMC_LN2W, l), T(LLMC_LN2B, l), ln.data());
            linear(f, ln, T(LLMC_FCW, l), T(LLMC_FCB, l), C);
            for (double &v : f) v = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            linear(proj, f, T(LLMC_FCPROJW, l), T(LLMC_FCPROJB, l), 4 * C);
            for (int c = 0; c < C; c++) x[c] += proj[c];
        }
        layernorm(x, T(LLMC_LNFW, 0), T(LLMC_LNFB, 0), &out[(size_t)r * C]);
    }
}

static void test_config(const char *desc, int cpu_ref) {
    Engine e;
    if (!engine_open(e, desc, 11, 1024, 9, 1)) return;
    const int M = e.maxlen;
    printf("== %s: L=%d NH=%d C=%d, cache %d slots x %d positions\n", desc, e.L, e.NH, e.C, e.S, M);
    const int all_pos[] = {37, 0, M - 1, 130, 64, 1, std::min(511, M - 2), 63};
    const int variants[][2] = {{-1, 0}, {-1, 1}, {0, 0}, {0, 1}}; /* staged, ahead */
    char what[160];
    for (int n : {1, 2, 3, 5, 8}) {
        const std::vector<int> h = set_rows(e, std::vector<int>(all_pos, all_pos + n));
        const Result ref = run_case(e, -1);
        snprintf(what, sizeof what, "n=%d per-op: cache outside the new rows untouched", n);
        check_true(what, ref.changed == 0);
        std::vector<Result> got;
        for (auto &v : variants) {
            got.push_back(run_case(e, 1, v[0], v[1]));
            const Result &r = got.back();
            const char *ah = v[1] ? "1" : "def";
            snprintf(what, sizeof what, "n=%d staged %2d ahead %-3s: runs (status %d)", n, v[0], ah, (int)r.st);
            if (r.st != LLMC_OK) {
                check_true(what, 0);
                printf("    %s\n", g_dev.err);
                continue;
            }
            snprintf(what, sizeof what, "n=%d staged %2d ahead %-3s: final-LN rows vs per-op", n, v[0], ah);
            check(what, rel_err(r.out, f64(ref.out)), 1e-2);
            snprintf(what, sizeof what, "n=%d staged %2d ahead %-3s: appended K/V vs per-op", n, v[0], ah);
            check(what, rel_err(r.kv, f64(ref.kv)), 1e-2);
            snprintf(what, sizeof what, "n=%d staged %2d ahead %-3s: rest of the cache untouched (%llu changed)", n,
                     v[0], ah, r.changed);
            check_true(what, r.changed == 0);
        }
        bool same = got.size() == 4;
        for (const Result &r : got) same = same && r.st == LLMC_OK && r.out == got[0].out && r.kv == got[0].kv;
        snprintf(what, sizeof what, "n=%d persistent variants bitwise equal", n);
        check_true(what, same);
        if (cpu_ref && n == 2) {
            std::vector<double> out, kv;
            cpu_step(e, h, out, kv);
            check("n=2 per-op final-LN rows vs float64", rel_err(ref.out, out), 2e-2);
            check("n=2 per-op appended K/V vs float64", rel_err(ref.kv, kv), 2e-2);
            if (got[0].st == LLMC_OK) {
                check("n=2 persistent final-LN rows vs float64", rel_err(got[0].out, out), 2e-2);
                check("n=2 persistent appended K/V vs float64", rel_err(got[0].kv, kv), 2e-2);
            }
        }
    }
    set_rows(e, {1, 2, 3, 4, 5, 6, 7, 8, 9}); /* more rows than the kernel takes */
    g_dev.err[0] = 0;
    const llmc_status st = run_persistent(e, -1, 0);
    snprintf(what, sizeof what, "n=9: LLMC_ERR_UNSUPPORTED (got %d), dev->err untouched", (int)st);
    check_true(what, st == LLMC_ERR_UNSUPPORTED && g_dev.err[0] == 0);
    engine_close(e);
}

/* ---- bench ---- */

/* us per replay of a graph recorded from f(), replayed back to back (~20 ms a sample, median of 5). */
template <class F>
static double graph_us(F f) {
    cudaStream_t s = lab_stream();
    const LabGraph lg = lab_graph(f);
    const float one = time_ms([&] { CK(cudaGraphLaunch(lg.ge, s)); }, 3, 2);
    const int iters = std::max(5, std::min(500, (int)(20.0f / std::max(one, 1e-3f))));
    const float ms = time_ms([&] { for (int i = 0; i < iters; i++) CK(cudaGraphLaunch(lg.ge, s)); }, 5, 1);
    lab_graph_free(lg);
    return ms * 1e3 / iters;
}

static void bench_config(const char *desc) {
    Engine e;
    if (!engine_open(e, desc, 64, 1024, 64, 0)) return;
    double layer_b = 0;
    for (int i = LLMC_LN1W; i <= LLMC_FCPROJB; i++) layer_b += 2.0 * e.w.t[i].numel;
    const double head_b = layer_b + 2.0 * e.w.t[LLMC_WTE].numel;
    printf("== bench %s: layer weights %.1f MB, + wte %.1f MB; TB/s = those bytes / time\n", desc, layer_b / 1e6,
           (head_b - layer_b) / 1e6);
    for (int P : {128, 512})
        for (int n : {1, 2, 4, 8, 16, 32, 64}) {
            set_rows(e, std::vector<int>(n, P));
            const double t0 = graph_us([&] { run_per_op(e, 0); }), t1 = graph_us([&] { run_per_op(e, 1); });
            printf("BENCH %s pos=%d n=%-2d per-op      layers %8.1f us %5.2f TB/s | + head %8.1f us %5.2f TB/s\n", desc,
                   P, n, t0, layer_b / t0 / 1e6, t1, head_b / t1 / 1e6);
            if (n > 8) continue;
            for (int staged : {-1, 0}) {
                char txt[512];
                int len = snprintf(txt, sizeof txt, "BENCH %s pos=%d n=%-2d persistent staged %2d, ahead:", desc, P, n,
                                   staged);
                for (int ahead : {0, -1, 1, 2, 4, 8}) {
                    const double t = graph_us([&] { OKS(run_persistent(e, staged, ahead)); });
                    char a[8];
                    snprintf(a, sizeof a, ahead > 0 ? "%d" : ahead ? "none" : "def", ahead);
                    len += snprintf(txt + len, sizeof txt - len, " %s %.1f us %.2f TB/s |", a, t, layer_b / t / 1e6);
                }
                if (staged < 0) {
                    const double t = graph_us([&] { OKS(run_persistent(e, -1, 0)); lm_head(e); });
                    len += snprintf(txt + len, sizeof txt - len, " + head %.1f us %.2f TB/s", t, head_b / t / 1e6);
                }
                printf("%s\n", txt);
            }
        }
    engine_close(e);
}

/* Where a persistent step's time goes, from the kernel's barrier stamps: per phase kind, the
 * work before the first block arrives, the spread of arrivals, and the release (last arrival
 * to the last block leaving). */
static void trace_config(const char *desc, int n, int P) {
    Engine e;
    if (!engine_open(e, desc, 8, 1024, 8, 0)) return;
    set_rows(e, std::vector<int>(n, P));
    const int L = e.w.cfg.num_layers, nb = 5 * L, G = llmc_cuda_impl_of(&g_dev)->sm_count;
    unsigned long long *d = (unsigned long long *)dmalloc((size_t)2 * G * nb * 8);
    for (int i = 0; i < 3; i++) OKS(run_persistent(e, -1, 0, d));
    lab_sync();
    std::vector<unsigned long long> h((size_t)2 * G * nb);
    CK(cudaMemcpy(h.data(), d, h.size() * 8, cudaMemcpyDeviceToHost));
    double work[5] = {0}, spread[5] = {0}, release[5] = {0};
    unsigned long long prev = 0;
    for (int k = 0; k < nb; k++) {
        unsigned long long a0 = ~0ull, a1 = 0, l1 = 0;
        for (int b = 0; b < G; b++) {
            a0 = std::min(a0, h[(size_t)b * nb + k]);
            a1 = std::max(a1, h[(size_t)b * nb + k]);
            l1 = std::max(l1, h[((size_t)G + b) * nb + k]);
        }
        if (k) work[k % 5] += (a0 - prev) / 1e3;
        spread[k % 5] += (a1 - a0) / 1e3;
        release[k % 5] += (l1 - a1) / 1e3;
        prev = l1;
    }
    const char *names[5] = {"A ln1+qkv", "B attention", "C attproj", "D ln2+fc", "E fcproj"};
    double tw = 0, ts = 0, tr = 0;
    printf("== trace %s n=%d pos=%d (us summed over %d layers; phase A of layer 0 not timed)\n", desc, n, P, L);
    for (int i = 0; i < 5; i++) {
        printf("TRACE %-12s work %7.1f  arrival spread %6.1f  release %6.1f\n", names[i], work[i], spread[i], release[i]);
        tw += work[i], ts += spread[i], tr += release[i];
    }
    printf("TRACE total        work %7.1f  arrival spread %6.1f  release %6.1f  = %.1f us\n", tw, ts, tr, tw + ts + tr);
    CK(cudaFree(d));
    engine_close(e);
}

int main(int argc, char **argv) {
    lab_open();
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "bench") != 0) {
        test_config("L=2,H=2,C=128", 1);
        test_config("d12", 0);
        test_config("L=1,H=25,C=1600", 0);
    }
    if (strcmp(mode, "trace") == 0) {
        trace_config("d12", 1, 128);
        trace_config("d12", 8, 128);
        return lab_finish("decode_persistent");
    }
    if (strcmp(mode, "test") != 0) {
        bench_config("d12");
        bench_config("d48");
    }
    return lab_finish("decode_persistent");
}

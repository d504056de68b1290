/* Lab: the device sampler (cuda/sample.cu) against the host function it must equal,
 * llmc_sample_token_at (src/sampler.c), row by row.
 *
 * test:  bf16 rows (NaN in the padding) of V = 1, 7, 255, 256, 257, 1000, 50257: normal, flat,
 *        peaked, ties at the max and at the k-th value, signed zeros, subnormals, NaN / +Inf /
 *        all -inf / half -inf; greedy, temperature, top-k, top-p and both; draws 0, 0.99999994
 *        and random; poisoned outputs with a guard zone. A -2 (left to the host) passes only
 *        where sample.cu documents it (top-k > 1024, ties beyond its buffer, > 4096 tokens above
 *        the nucleus bound); every other row must be the host's token (-1 for a bad row).
 * bench: us per call (CUDA events, 100 calls a sample) for N = 1, 8, 32, 64 rows of V=50257.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh;  build/labs/sample [test|bench] */
#include <functional>
#include "lab.cuh"
/* lab.cuh includes cuda/sample.cu with the rest of the backend */

static const int kGuard = 64;
static const int kPoison = 0x7f7f7f7f; /* no token, not -1 nor -2 */
static const float kUTop = 0x1.fffffep-1f; /* the largest draw below 1 */

struct Setting {
    const char *name;
    float temperature;
    int top_k;
    float top_p;
};
static const Setting kSettings[] = {
    {"greedy", 0.0f, 0, 1.0f},     {"T=1", 1.0f, 0, 1.0f},          {"T=0.7", 0.7f, 0, 1.0f},
    {"top_k 50", 1.0f, 50, 1.0f},  {"top_k 50 top_p .95", 1.0f, 50, 0.95f},
    {"top_p .9", 1.0f, 0, 0.9f},   {"T=.7 top_p .95", 0.7f, 0, 0.95f}, {"top_k 1", 1.0f, 1, 1.0f},
    {"top_k 3", 1.0f, 3, 1.0f},    {"top_k 1024", 1.0f, 1024, 1.0f}, {"top_k 1025", 1.0f, 1025, 1.0f},
};
static const Setting kBench[] = {{"greedy", 0.0f, 0, 1.0f}, {"T=1", 1.0f, 0, 1.0f}, {"top_k 50", 1.0f, 50, 1.0f},
                                 {"top_k 50 top_p .95", 1.0f, 50, 0.95f}, {"top_p .95", 1.0f, 0, 0.95f}};
static const int kSubnormal = 10; /* the row kind that only flush-to-zero would get wrong */
static const char *kKinds[] = {"normal*3", "flat*0.1", "peaked*8", "ties@max", "ties@k50", "signed0",
                               "NaN", "+Inf", "all-inf", "half-inf", "subnormal", "5000ties@k", "normal*3",
                               "normal*3", "normal*3", "normal*3"};
static const int kRows = 16;

static float from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Row r of kind kKinds[r] (bf16 values). */
static std::vector<float> make_row(int kind, int V) {
    static const double scale[] = {3, 0.1, 8};
    std::vector<float> x = rand_normal(V, kind < 3 ? scale[kind] : 3.0);
    auto pos = [&](int i) { return (int)((uint64_t)i * 7919 % V); }; /* distinct for i < V: 7919 is prime */
    switch (kind) {
    case 3: for (int i = 0; i < std::min(V, 300); i++) x[pos(i)] = 20.0f; break;
    case 4:
        for (auto &v : x) v = -fabsf(v);
        for (int i = 0; i < std::min(V, 230); i++) x[pos(i)] = i < 30 ? 10.0f + i : 5.0f;
        break;
    case 5:
        for (auto &v : x) v = -fabsf(v) - 0.5f;
        for (int i = 0; i < std::min(V, 6); i++) x[pos(i * 11 + 3)] = (i % 3 == 0) ? -0.0f : 0.0f;
        break;
    case 6: x[V / 2] = NAN; break;
    case 7: x[V - 1] = INFINITY; break;
    case 8: for (auto &v : x) v = -INFINITY; break;
    case 9: for (int i = 0; i < V; i += 2) x[i] = -INFINITY; break;
    case 10: /* bf16 subnormals around 0: float compares under flush-to-zero would call them 0 */
        for (int i = 0; i < V; i++) {
            const uint32_t m = (uint32_t)(rng_u64() % 4) << 20;
            x[i] = (rng_u64() & 1) ? -from_bits(m) : from_bits(m);
        }
        break;
    case 11:
        if (V > 6000) {
            for (auto &v : x) v = -fabsf(v);
            for (int i = 0; i < 5020; i++) x[pos(i)] = i < 20 ? 10.0f + i : 3.0f;
        }
        break;
    }
    round_bf16(x);
    return x;
}

/* Whether sample.cu documents leaving this row to the host (5% slack on the nucleus count:
 * the device sums in another order). Bad rows are never left. */
static int may_defer(const float *x, int V, const Setting &s) {
    if (s.temperature == 0.0f) return 0;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (!(x[i] < INFINITY)) return 0;
        mx = std::max(mx, x[i]);
    }
    if (mx == -INFINITY) return 0;
    if (s.top_k > 0 && s.top_k < V) {
        if (s.top_k > SAMPLE_TOP_K_MAX) return 1;
        std::vector<float> v(x, x + V);
        std::nth_element(v.begin(), v.begin() + (s.top_k - 1), v.end(), std::greater<float>());
        const float kth = v[s.top_k - 1];
        int n = 0;
        for (int i = 0; i < V; i++) n += x[i] >= kth;
        return n > SAMPLE_CAP;
    }
    if (s.top_p < 1.0f && V > 1) {
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((x[i] - (double)mx) / s.temperature);
        const float cut = mx + (float)(s.temperature * log((1.0 - (double)s.top_p) / (V - 1) * z));
        int n = 0;
        for (int i = 0; i < V; i++) n += x[i] >= cut;
        return n > 0.95 * SAMPLE_CAP;
    }
    return 0;
}

static std::vector<float> draws(int which, int N) {
    std::vector<float> u(N);
    for (auto &v : u) v = which == 0 ? 0.0f : which == 1 ? kUTop : (float)(rng_u64() >> 40) * 0x1p-24f;
    return u;
}

/* One shape: N rows (the kinds above, cycled), every setting and draw set. */
static void test_shape(int N, int V, int Vp) {
    printf("sample N=%d V=%d Vp=%d\n", N, V, Vp);
    std::vector<float> logits((size_t)N * Vp, NAN); /* padding: NaN, which must be ignored */
    for (int r = 0; r < N; r++) {
        std::vector<float> x = make_row(r % kRows, V);
        std::copy(x.begin(), x.end(), logits.begin() + (size_t)r * Vp);
    }
    bf16 *d_logits = (bf16 *)dmalloc(logits.size() * 2);
    int *d_out = (int *)dmalloc((N + kGuard) * 4);
    float *d_u = (float *)dmalloc(N * 4);
    up_bf16(d_logits, logits);
    int bad_sub = 0;
    for (const Setting &st : kSettings) {
        llmc_sampling s;
        llmc_sampling_default(&s);
        s.temperature = st.temperature, s.top_k = st.top_k, s.top_p = st.top_p;
        int bad = 0, deferred = 0, guard = 1, same = 1, shown = 0;
        for (int which = 0; which < 3; which++) {
            std::vector<float> u = draws(which, N);
            up_f32(d_u, u);
            std::vector<int> got, again;
            for (int rep = 0; rep < (which == 2 ? 2 : 1); rep++) {
                CK(cudaMemsetAsync(d_out, 0x7f, (N + kGuard) * 4, lab_stream()));
                OKS(llmc_cuda_sample_rows(&g_dev, d_out, d_logits, N, V, Vp, &s, d_u));
                lab_sync();
                CK(cudaGetLastError());
                std::vector<int> o = down_raw<int>(d_out, N + kGuard);
                for (int g = 0; g < kGuard; g++) guard &= o[N + g] == kPoison;
                o.resize(N);
                (rep ? again : got) = o;
            }
            if (which == 2) same = got == again;
            for (int r = 0; r < N; r++) {
                const float *x = &logits[(size_t)r * Vp];
                int want = -1;
                if (llmc_sample_token_at(x, V, &s, u[r], &want) != LLMC_OK) want = -1;
                if (got[r] == -2 && may_defer(x, V, st)) {
                    deferred++;
                } else if (got[r] != want && r % kRows == kSubnormal) {
                    if (bad_sub++ < 2)
                        printf("    subnormal row %d, %s, u=%a: device %d, host %d\n", r, st.name, u[r], got[r], want);
                } else if (got[r] != want) {
                    bad++;
                    if (shown++ < 4)
                        printf("    row %d (%s) u=%a: device %d, host %d\n", r, kKinds[r % kRows], u[r], got[r], want);
                }
            }
        }
        char what[160];
        snprintf(what, sizeof what, "N=%-3d V=%-5d %-20s %2d left to host, %d wrong", N, V, st.name, deferred, bad);
        check_true(what, bad == 0 && guard && same);
        if (!guard) printf("    wrote past row N\n");
        if (!same) printf("    not deterministic\n");
    }
    if (N > kSubnormal) check_true("subnormal rows, host order (fast-math flush-to-zero breaks it)", bad_sub == 0);
    CK(cudaFree(d_logits));
    CK(cudaFree(d_out));
    CK(cudaFree(d_u));
}

static void test_refusals(void) {
    const int V = SAMPLE_BLOCK * SAMPLE_MAX_BLOCKS + 1;
    void *d = dmalloc((size_t)V * 2 + 64);
    llmc_sampling s;
    llmc_sampling_default(&s);
    check_true("V above the block sums held: refused", llmc_cuda_sample_rows(&g_dev, (int *)d, d, 1, V, V, &s,
                                                                             (const float *)d) != LLMC_OK);
    s.top_p = 0.0f;
    check_true("bad settings: refused", llmc_cuda_sample_rows(&g_dev, (int *)d, d, 1, 8, 8, &s, (const float *)d) !=
                                            LLMC_OK);
    CK(cudaFree(d));
}

static void bench(void) {
    const int V = 50257, Vp = 50304, NMAX = 64, CALLS = 100;
    for (double scale : {3.0, 8.0}) {
        std::vector<float> logits = rand_normal((size_t)NMAX * Vp, scale);
        bf16 *d_logits = (bf16 *)dmalloc((size_t)NMAX * Vp * 2);
        int *d_out = (int *)dmalloc(NMAX * 4);
        float *d_u = (float *)dmalloc(NMAX * 4);
        up_bf16(d_logits, logits);
        up_f32(d_u, draws(2, NMAX));
        for (int N : {1, 8, 32, 64}) {
            float ms = time_ms([&] {
                for (int c = 0; c < CALLS; c++) OKS(llmc_cuda_argmax_rows(&g_dev, d_out, d_logits, N, V, Vp));
            });
            printf("BENCH sample logits normal*%g N=%-2d %-20s %7.1f us\n", scale, N, "argmax_rows", ms * 1e3 / CALLS);
            for (const Setting &st : kBench) {
                llmc_sampling s;
                llmc_sampling_default(&s);
                s.temperature = st.temperature, s.top_k = st.top_k, s.top_p = st.top_p;
                ms = time_ms([&] {
                    for (int c = 0; c < CALLS; c++) OKS(llmc_cuda_sample_rows(&g_dev, d_out, d_logits, N, V, Vp, &s, d_u));
                });
                std::vector<int> o = down_raw<int>(d_out, N);
                printf("BENCH sample logits normal*%g N=%-2d %-20s %7.1f us  (%d/%d rows left to the host)\n", scale,
                       N, st.name, ms * 1e3 / CALLS, (int)std::count(o.begin(), o.end(), -2), N);
            }
        }
        CK(cudaFree(d_logits));
        CK(cudaFree(d_out));
        CK(cudaFree(d_u));
    }
}

int main(int argc, char **argv) {
    lab_open();
    const int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        const int shapes[][3] = {{kRows, 1, 8},     {kRows, 7, 8},       {kRows, 255, 256}, {kRows, 256, 256},
                                 {kRows, 257, 264}, {kRows, 1000, 1024}, {kRows, 50257, 50304},
                                 {3, 10, 16},       {96, 50257, 50304}};
        for (auto &sh : shapes) test_shape(sh[0], sh[1], sh[2]);
        test_refusals();
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("sample");
    bench();
    return lab_finish("sample");
}

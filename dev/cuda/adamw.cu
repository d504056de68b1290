/* Lab: AdamW with stochastic rounding (cuda/adamw.cu) against a float64 CPU reference, with
 * and without master weights, on aligned and misaligned views, plus rounding-bias,
 * determinism and split-update (index_base) checks; then bandwidth at GPT-2 124M size.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

/* The two bf16 neighbours of x (equal when x is representable). */
static void bf16_bracket(float x, float *lo, float *hi) {
    uint32_t b;
    memcpy(&b, &x, 4);
    uint32_t t = b & 0xffff0000u; /* truncation: toward zero */
    float tz;
    memcpy(&tz, &t, 4);
    if (t == b) { *lo = *hi = tz; return; }
    uint32_t u = t + 0x10000u; /* away from zero */
    float az;
    memcpy(&az, &u, 4);
    *lo = std::min(tz, az);
    *hi = std::max(tz, az);
}

static void test_case(size_t n, int use_master, int misalign, uint32_t seed) {
    printf("adamw n=%zu master=%d misalign=%d\n", n, use_master, misalign);
    const int off = misalign ? 1 : 0;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    const int t = 3;
    const float b1c = 1.0f - powf(b1, t), b2c = 1.0f - powf(b2, t);
    std::vector<float> p = rand_normal(n, 0.02), g = rand_normal(n, 0.01), m = rand_normal(n, 1e-3), v(n), master(n);
    round_bf16(p);
    round_bf16(g);
    for (size_t i = 0; i < n; i++) {
        v[i] = (float)(1e-5 * rng_uniform());
        master[i] = p[i] + (float)(1e-4 * rng_normal()); /* master differs from the bf16 copy */
    }
    bf16 *d_p = (bf16 *)dmalloc(n * 2) + off, *d_g = (bf16 *)dmalloc(n * 2) + off;
    float *d_m = (float *)dmalloc(n * 4) + off, *d_v = (float *)dmalloc(n * 4) + off,
          *d_master = (float *)dmalloc(n * 4) + off;
    float *d_gs = (float *)dmalloc(sizeof gs); /* the gradient scale lives on the device, as the trainer's */
    CK(cudaMemcpy(d_gs, &gs, sizeof gs, cudaMemcpyHostToDevice));
    auto load = [&] {
        up_bf16(d_p, p); up_bf16(d_g, g); up_f32(d_m, m); up_f32(d_v, v); up_f32(d_master, master);
    };
    load();
    OKS(llmc_cuda_adamw_update(&g_dev, d_p, use_master ? d_master : NULL, d_g, d_m, d_v, n, lr, b1, b2, b1c, b2c, eps,
                               wd, d_gs, seed, 0));
    lab_sync();
    std::vector<double> rm(n), rv(n), rp(n);
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * gs;
        rm[i] = b1 * (double)m[i] + (1.0 - b1) * gi;
        rv[i] = b2 * (double)v[i] + (1.0 - b2) * gi * gi;
        double p0 = use_master ? master[i] : p[i];
        rp[i] = p0 - lr * ((rm[i] / b1c) / (sqrt(rv[i] / b2c) + eps) + wd * p0);
    }
    std::vector<float> gm = down_f32(d_m, n), gv = down_f32(d_v, n), gp = down_bf16(d_p, n);
    check("m", rel_err(gm, rm), 1e-5);
    check("v", rel_err(gv, rv), 1e-5);
    if (use_master) check("master (fp32)", rel_err(down_f32(d_master, n), rp), 1e-5);
    check("params (bf16, stochastic)", rel_err(gp, rp), 2e-2);
    /* every bf16 is one of the two neighbours of the fp32 result; the rounding is unbiased */
    std::vector<float> ref32 = use_master ? down_f32(d_master, n) : std::vector<float>(rp.begin(), rp.end());
    size_t bad = 0, up = 0, between = 0;
    double bias = 0.0;
    for (size_t i = 0; i < n; i++) {
        float lo, hi;
        bf16_bracket(ref32[i], &lo, &hi);
        if (!(gp[i] == lo || gp[i] == hi)) {
            /* without master the device's fp32 value is not visible: allow it 2 fp32 ulps away */
            int near = 0;
            float a = ref32[i], b = ref32[i];
            for (int k = 0; k < 2 && !use_master; k++) {
                float l2, h2;
                a = nextafterf(a, -INFINITY);
                b = nextafterf(b, INFINITY);
                bf16_bracket(a, &l2, &h2);
                near |= gp[i] == l2 || gp[i] == h2;
                bf16_bracket(b, &l2, &h2);
                near |= gp[i] == l2 || gp[i] == h2;
            }
            if (!near) bad++;
        }
        if (lo != hi) {
            between++;
            up += gp[i] == hi;
            bias += (gp[i] - (double)ref32[i]) / ((double)hi - lo);
        }
    }
    char what[128];
    snprintf(what, sizeof what, "params are bf16 neighbours of the fp32 value (%zu bad)", bad);
    check_true(what, bad == 0);
    if (between > 100000) {
        double mb = bias / between;
        snprintf(what, sizeof what, "rounding unbiased: mean error %.4f ulp, %.3f rounded up", mb, (double)up / between);
        check_true(what, fabs(mb) < 0.01);
    }
    /* determinism and seed dependence */
    std::vector<uint16_t> first = down_raw16(d_p, n);
    load();
    OKS(llmc_cuda_adamw_update(&g_dev, d_p, use_master ? d_master : NULL, d_g, d_m, d_v, n, lr, b1, b2, b1c, b2c, eps,
                               wd, d_gs, seed, 0));
    check_true("same seed: bitwise identical", first == down_raw16(d_p, n));
    if (n > 1000) {
        load();
        OKS(llmc_cuda_adamw_update(&g_dev, d_p, use_master ? d_master : NULL, d_g, d_m, d_v, n, lr, b1, b2, b1c, b2c,
                                   eps, wd, d_gs, seed + 1, 0));
        check_true("other seed: different rounding", first != down_raw16(d_p, n));
        /* two pieces with index_base (as ZeRO shards would run it) round exactly as the whole */
        const size_t k = n / 3;
        load();
        OKS(llmc_cuda_adamw_update(&g_dev, d_p, use_master ? d_master : NULL, d_g, d_m, d_v, k, lr, b1, b2, b1c, b2c,
                                   eps, wd, d_gs, seed, 0));
        OKS(llmc_cuda_adamw_update(&g_dev, d_p + k, use_master ? d_master + k : NULL, d_g + k, d_m + k, d_v + k, n - k,
                                   lr, b1, b2, b1c, b2c, eps, wd, d_gs, seed, k));
        check_true("split at n/3 with index_base: bitwise identical", first == down_raw16(d_p, n));
    }
    for (void *q : {(void *)(d_p - off), (void *)(d_g - off), (void *)(d_m - off), (void *)(d_v - off),
                    (void *)(d_master - off)})
        CK(cudaFree(q));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        const size_t sizes[] = {1, 7, 8, 1000, 4099, (1u << 20) + 5};
        for (size_t n : sizes)
            for (int master = 0; master < 2; master++) test_case(n, master, 0, 1234u + (uint32_t)n);
        test_case(4099, 1, 1, 77u);
        test_case((1u << 20) + 3, 0, 1, 78u);
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("adamw");
    double peak = copy_bandwidth_gbs();
    printf("BENCH device-to-device copy: %.0f GB/s\n", peak);
    const size_t n = 124475904; /* GPT-2 124M with Vp = 50304 */
    bf16 *p = (bf16 *)dmalloc(n * 2), *g = (bf16 *)dmalloc(n * 2);
    float *m = (float *)dmalloc(n * 4), *v = (float *)dmalloc(n * 4), *master = (float *)dmalloc(n * 4);
    OKS(g_dev.ops->upload_f32(&g_dev, g, LLMC_BF16, rand_normal(n, 0.01).data(), n));
    OKS(g_dev.ops->upload_f32(&g_dev, master, LLMC_F32, rand_normal(n, 0.02).data(), n));
    OKS(g_dev.ops->upload_f32(&g_dev, p, LLMC_BF16, rand_normal(n, 0.02).data(), n));
    OKS(g_dev.ops->upload_f32(&g_dev, m, LLMC_F32, rand_normal(n, 1e-3).data(), n));
    OKS(g_dev.ops->zero(&g_dev, v, n * 4));
    {
        /* upload/download round trip through the backend's converters */
        std::vector<float> h = rand_normal(1000003, 1.0), back(1000003);
        OKS(g_dev.ops->upload_f32(&g_dev, g, LLMC_BF16, h.data(), h.size()));
        OKS(g_dev.ops->download_f32(&g_dev, back.data(), g, LLMC_BF16, h.size()));
        size_t bad = 0;
        for (size_t i = 0; i < h.size(); i++) bad += back[i] != round_bf16(h[i]);
        check_true("upload_f32/download_f32 bf16 round to nearest even", bad == 0);
    }
    uint32_t seed = 1;
    const float unit = 1.0f;
    float *one = (float *)dmalloc(sizeof unit);
    CK(cudaMemcpy(one, &unit, sizeof unit, cudaMemcpyHostToDevice));
    float ms = time_ms([&] {
        OKS(llmc_cuda_adamw_update(&g_dev, p, master, g, m, v, n, 1e-4f, 0.9f, 0.95f, 0.5f, 0.5f, 1e-8f, 0.1f, one,
                                   seed++, 0));
    });
    double bytes = 28.0 * n;
    printf("BENCH adamw n=%zu master  %.3f ms  %.0f GB/s (%.0f%% of copy)\n", n, ms, bytes / ms / 1e6,
           100 * bytes / ms / 1e6 / peak);
    ms = time_ms([&] {
        OKS(llmc_cuda_adamw_update(&g_dev, p, NULL, g, m, v, n, 1e-4f, 0.9f, 0.95f, 0.5f, 0.5f, 1e-8f, 0.1f, one,
                                   seed++, 0));
    });
    bytes = 22.0 * n;
    printf("BENCH adamw n=%zu no master  %.3f ms  %.0f GB/s (%.0f%% of copy)\n", n, ms, bytes / ms / 1e6,
           100 * bytes / ms / 1e6 / peak);
    return lab_finish("adamw");
}

/* Lab: the fp8 casts of cuda/fp8.cu (delayed per-tensor scaling), plain and transposed, E4M3
 * and E5M2, against a host reference that rounds exactly (nearest, ties to even, saturating),
 * on awkward shapes; the scale from the history; the column sums (dbias); then bandwidth.
 *   version 1: one block per 64x64 tile, each block reading the scale history first (the
 *              first engine version; 1.26 TB/s for d12's dY in the training timeline)
 *   version 2: the engine's kernel: blocks stride over row tiles of one column tile
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

/* ---- host fp8: every code's value, and exact rounding by search over the codes ---- */
static float fp8_value(int enc, uint8_t code) {
    const int s = code >> 7, e = enc == LT_E4M3 ? (code >> 3) & 15 : (code >> 2) & 31;
    const int m = enc == LT_E4M3 ? code & 7 : code & 3, mbits = enc == LT_E4M3 ? 3 : 2;
    const int bias = enc == LT_E4M3 ? 7 : 15, emax = enc == LT_E4M3 ? 15 : 31;
    if (enc == LT_E4M3 && e == emax && m == 7) return NAN;
    if (enc == LT_E5M2 && e == emax) return m ? NAN : (s ? -INFINITY : INFINITY);
    const double v = e == 0 ? ldexp((double)m, 1 - bias - mbits) : ldexp((double)((1 << mbits) + m), e - bias - mbits);
    return (float)(s ? -v : v);
}
/* The nearest finite magnitude (ties: the even code), beyond the range the largest, with the
 * sign of x (-0 included): __NV_SATFINITE. */
static uint8_t fp8_round(int enc, float x) {
    const double a = fabs((double)x);
    int best = -1;
    double bd = 0;
    for (int c = 0; c < 128; c++) {
        const float v = fp8_value(enc, (uint8_t)c);
        if (!isfinite(v)) continue;
        const double d = fabs((double)v - a);
        if (best < 0 || d < bd || (d == bd && (c & 1) == 0)) best = c, bd = d;
    }
    return (uint8_t)(best | (signbit(x) ? 0x80 : 0));
}
static float fp8_max(int enc) { return enc == LT_E4M3 ? 448.0f : 57344.0f; }
static float pow2_scale(int enc, float amax) {
    if (!(amax > 0)) return 1.0f;
    int e;
    frexpf(fp8_max(enc) / amax, &e);
    return ldexpf(1.0f, e - 1);
}

/* ---- version 1, for the benchmark (the engine's helpers, one block per tile) ---- */
template <int ENC>
__global__ void cast_transpose_v1(uint8_t *out, uint8_t *outT, const bf16 *in, int rows, int cols, float *slot,
                                  int pos, int first) {
    __shared__ float s_scale;
    __shared__ __align__(16) uint8_t tile[FP8_TILE][FP8_TILE + 16];
    const float scale = fp8_block_scale(slot, pos, first, fp8_format<ENC>::max, &s_scale);
    const int r0 = blockIdx.x * FP8_TILE, c0 = blockIdx.y * FP8_TILE, cg = threadIdx.x % 8;
    float amax = 0.0f;
    for (int it = 0; it < 2; it++) {
        const int lr = threadIdx.x / 8 + 32 * it, r = r0 + lr, c = c0 + cg * 8;
        if (r < rows && c < cols) {
            float x[8];
            ld_bf16<8>(x, in + (size_t)r * cols + c);
            const uint2 q = fp8_pack8<ENC>(x, scale, amax);
            if (out) *(uint2 *)(out + (size_t)r * cols + c) = q;
            *(uint2 *)&tile[lr][cg * 8] = q;
        }
    }
    __syncthreads();
    const int lc = threadIdx.x / 4, chunk = threadIdx.x % 4, c = c0 + lc, r = r0 + chunk * 16;
    if (c < cols && r < rows) {
        uint32_t w[4] = {0u, 0u, 0u, 0u};
        for (int j = 0; j < 16; j++) w[j >> 2] |= (uint32_t)tile[chunk * 16 + j][lc] << (8 * (j & 3));
        *(uint4 *)(outT + (size_t)c * rows + r) = make_uint4(w[0], w[1], w[2], w[3]);
    }
    fp8_record_amax(slot, pos, amax);
}

static int g_site = 0; /* a fresh call site per case: a fresh history */

/* One cast of x (rows, cols) on a new site, then a second on the same site with 8x the values:
 * its scale comes from the first's amax, so the larger values saturate, as the reference says. */
static void test_case(int enc, int rows, int cols, int transpose, int sums) {
    printf("fp8 %s rows=%d cols=%d transpose=%d sums=%d\n", enc == LT_E4M3 ? "e4m3" : "e5m2", rows, cols, transpose,
           sums);
    const size_t n = (size_t)rows * cols;
    const int site = g_site++;
    std::vector<float> x = rand_normal(n, enc == LT_E4M3 ? 2.0 : 1e-3);
    round_bf16(x);
    bf16 *d_x = (bf16 *)dmalloc(n * 2);
    uint8_t *d_q = (uint8_t *)dmalloc(n), *d_t = (uint8_t *)dmalloc(n);
    float scale_used = 0;
    for (int round = 0; round < 2; round++) {
        std::vector<float> xr = x;
        if (round) for (auto &v : xr) v = round_bf16(8.0f * v);
        up_bf16(d_x, xr);
        poison(d_q, n);
        poison(d_t, n);
        const float *inv = NULL;
        float *parts = NULL;
        int nparts = 0;
        OKS(llmc_cuda_fp8_cast(&g_dev, site, FP8_SLOT_DY, enc, d_x, rows, cols, d_q, transpose ? d_t : NULL, &inv,
                               sums ? &parts : NULL, sums ? &nparts : NULL));
        lab_sync();
        double amax = 0;
        for (float v : x) amax = std::max(amax, (double)fabsf(v));
        const float scale = round ? scale_used : pow2_scale(enc, (float)amax);
        scale_used = scale;
        std::vector<uint8_t> q = down_raw<uint8_t>(d_q, n), t = transpose ? down_raw<uint8_t>(d_t, n) : q;
        size_t bad = 0, bad_t = 0, saturated = 0;
        for (size_t i = 0; i < n; i++) {
            const uint8_t want = fp8_round(enc, xr[i] * scale);
            bad += q[i] != want;
            saturated += fabsf(xr[i] * scale) > fp8_max(enc);
            if (transpose) bad_t += t[(i % cols) * rows + i / cols] != q[i];
        }
        char what[96];
        snprintf(what, sizeof what, "round %d: codes as the exact rounding (%zu saturated)", round, saturated);
        check_true(what, bad == 0);
        if (transpose) check_true("  transposed layout holds the same codes", bad_t == 0);
        check_true("  inverse scale", down_f32(inv, 1)[0] == 1.0f / scale);
        if (round) check_true("  the larger values saturate", saturated > 0);
        if (sums) {
            std::vector<float> p = down_f32(parts, (size_t)nparts * cols);
            std::vector<float> got(cols, 0.0f);
            std::vector<double> ref(cols, 0.0);
            for (int k = 0; k < nparts; k++)
                for (int c = 0; c < cols; c++) got[c] += p[(size_t)k * cols + c];
            for (size_t i = 0; i < n; i++) ref[i % cols] += xr[i];
            check("  column sums", rel_err(got, ref), 1e-5);
        }
    }
    for (void *p : {(void *)d_x, (void *)d_q, (void *)d_t}) CK(cudaFree(p));
}

static void bench(int rows, int cols, double peak) {
    const size_t n = (size_t)rows * cols;
    bf16 *x = (bf16 *)dmalloc(n * 2);
    uint8_t *q = (uint8_t *)dmalloc(n), *t = (uint8_t *)dmalloc(n);
    OKS(g_dev.ops->upload_f32(&g_dev, x, LLMC_BF16, rand_normal(n, 1e-3).data(), n));
    const float *inv;
    float *parts;
    int nparts;
    const int site = g_site++;
    auto report = [&](const char *what, float ms, double bytes) {
        printf("BENCH fp8 %-34s %dx%d  %.3f ms  %.0f GB/s (%.0f%% of copy %.0f)\n", what, rows, cols, ms,
               bytes / ms / 1e6, 100 * bytes / ms / 1e6 / peak, peak);
    };
    report("cast", time_ms([&] { OKS(llmc_cuda_fp8_cast(&g_dev, site, FP8_SLOT_X, LT_E4M3, x, rows, cols, q, NULL,
                                                        &inv, NULL, NULL)); }), 3.0 * n);
    report("v2 cast both layouts + sums", time_ms([&] {
               OKS(llmc_cuda_fp8_cast(&g_dev, site, FP8_SLOT_DY, LT_E5M2, x, rows, cols, q, t, &inv, &parts, &nparts));
           }), 4.0 * n);
    float *slot = llmc_cuda_impl_of(&g_dev)->fp8->state;
    dim3 grid(LLMC_CEIL_DIV(rows, FP8_TILE), LLMC_CEIL_DIV(cols, FP8_TILE));
    report("v1 cast both layouts (tile a block)", time_ms([&] {
               cast_transpose_v1<LT_E5M2><<<grid, 256, 0, lab_stream()>>>(q, t, x, rows, cols, slot, 1, 0);
           }), 4.0 * n);
    for (void *p : {(void *)x, (void *)q, (void *)t}) CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        /* rows % 16, cols % 8; partial 64 x 64 tiles at both edges */
        const int shapes[][2] = {{16, 8}, {48, 200}, {80, 64}, {144, 776}, {1024, 768}};
        for (auto &s : shapes)
            for (int enc : {LT_E4M3, LT_E5M2}) {
                test_case(enc, s[0], s[1], 0, 0);
                test_case(enc, s[0], s[1], 1, enc == LT_E5M2);
            }
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("fp8");
    const double peak = copy_bandwidth_gbs();
    bench(65536, 768, peak);  /* d12 B=64 T=1024: a layer's input, or dY of a projection */
    bench(65536, 3072, peak); /* the MLP's dY */
    return lab_finish("fp8");
}

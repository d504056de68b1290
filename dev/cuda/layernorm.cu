/* Lab: residual + layernorm forward and backward (cuda/layernorm.cu) against a float64 CPU
 * reference, on poisoned outputs and awkward shapes, then bandwidth at GPT-2 sizes.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

static void test_shape(int N, int C, int with_inp2, int misalign) {
    printf("layernorm N=%d C=%d inp2=%d misalign=%d\n", N, C, with_inp2, misalign);
    const size_t nc = (size_t)N * C;
    const int off = misalign ? 1 : 0; /* one element: breaks 16-byte alignment -> scalar path */
    std::vector<float> x1 = rand_normal(nc, 1.0, 0.3), x2 = rand_normal(nc, 0.5), w = rand_normal(C, 0.2, 1.0),
                       b = rand_normal(C, 0.2), dout = rand_normal(nc, 1.0);
    round_bf16(x1); round_bf16(x2); round_bf16(w); round_bf16(b); round_bf16(dout);
    bf16 *d_x1 = (bf16 *)dmalloc(nc * 2) + off, *d_x2 = (bf16 *)dmalloc(nc * 2) + off;
    bf16 *d_res = (bf16 *)dmalloc(nc * 2) + off, *d_out = (bf16 *)dmalloc(nc * 2) + off;
    bf16 *d_w = (bf16 *)dmalloc(C * 2) + off, *d_b = (bf16 *)dmalloc(C * 2) + off;
    float *d_mean = (float *)dmalloc(N * 4), *d_rstd = (float *)dmalloc(N * 4);
    up_bf16(d_x1, x1); up_bf16(d_x2, x2); up_bf16(d_w, w); up_bf16(d_b, b);
    poison(d_res, nc * 2); poison(d_out, nc * 2); poison(d_mean, N * 4); poison(d_rstd, N * 4);
    OKS(llmc_cuda_layernorm_forward(&g_dev, with_inp2 ? d_res : NULL, d_out, d_mean, d_rstd, d_x1,
                                    with_inp2 ? d_x2 : NULL, lab_tensor(d_w, C), lab_tensor(d_b, C), N, C));
    lab_sync();

    /* reference: x is the bf16-rounded sum (the residual the model keeps) */
    std::vector<float> x(nc);
    for (size_t i = 0; i < nc; i++) x[i] = with_inp2 ? round_bf16(x1[i] + x2[i]) : x1[i];
    std::vector<double> r_res(nc), r_out(nc), r_mean(N), r_rstd(N);
    for (int r = 0; r < N; r++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[(size_t)r * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[(size_t)r * C + c] - m) * (x[(size_t)r * C + c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + 1e-5);
        r_mean[r] = m;
        r_rstd[r] = s;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            r_res[i] = (double)x1[i] + (with_inp2 ? (double)x2[i] : 0.0);
            r_out[i] = (x[i] - m) * s * w[c] + b[c];
        }
    }
    if (with_inp2) check("residual_out", rel_err(down_bf16(d_res, nc), r_res), 1e-2);
    check("out", rel_err(down_bf16(d_out, nc), r_out), 2e-2);
    check("mean (fp32)", rel_err(down_f32(d_mean, N), r_mean), 1e-4);
    check("rstd (fp32)", rel_err(down_f32(d_rstd, N), r_rstd), 1e-4);

    /* backward on x (the residual), with the device's mean/rstd; += outputs pre-filled */
    std::vector<float> mean = down_f32(d_mean, N), rstd = down_f32(d_rstd, N);
    std::vector<double> ddin(nc), ddw(C, 0.0), ddb(C, 0.0);
    for (int r = 0; r < N; r++) {
        double s1 = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = (x[i] - mean[r]) * (double)rstd[r], dn = (double)w[c] * dout[i];
            s1 += dn;
            s2 += dn * xh;
        }
        s1 /= C;
        s2 /= C;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = (x[i] - mean[r]) * (double)rstd[r], dn = (double)w[c] * dout[i];
            ddin[i] = rstd[r] * (dn - s1 - xh * s2);
            ddw[c] += dout[i] * xh;
            ddb[c] += dout[i];
        }
    }
    auto rms = [](const std::vector<double> &v) {
        double s = 0;
        for (double a : v) s += a * a;
        return sqrt(s / v.size()) + 1e-30;
    };
    std::vector<float> pin = rand_normal(nc, rms(ddin)), pw = rand_normal(C, rms(ddw)), pb = rand_normal(C, rms(ddb));
    round_bf16(pin); round_bf16(pw); round_bf16(pb);
    bf16 *d_x = with_inp2 ? d_res : d_x1;
    bf16 *d_dout = (bf16 *)dmalloc(nc * 2) + off, *d_din = (bf16 *)dmalloc(nc * 2) + off;
    bf16 *d_dw = (bf16 *)dmalloc(C * 2) + off, *d_db = (bf16 *)dmalloc(C * 2) + off;
    up_bf16(d_dout, dout);
    std::vector<uint16_t> first_din, first_dw, first_db;
    for (int rep = 0; rep < 2; rep++) {
        up_bf16(d_din, pin); up_bf16(d_dw, pw); up_bf16(d_db, pb);
        OKS(llmc_cuda_layernorm_backward(&g_dev, d_din, lab_tensor(d_dw, C), lab_tensor(d_db, C), d_dout, d_x,
                                         lab_tensor(d_w, C), d_mean, d_rstd, N, C));
        lab_sync();
        if (rep == 0) {
            std::vector<double> rin(nc), rw(C), rb(C);
            for (size_t i = 0; i < nc; i++) rin[i] = pin[i] + ddin[i];
            for (int c = 0; c < C; c++) { rw[c] = pw[c] + ddw[c]; rb[c] = pb[c] + ddb[c]; }
            check("dinp (+=), err vs ||delta||", rel_err(down_bf16(d_din, nc), rin, &ddin), 2e-2);
            check("dw (+=), err vs ||delta||", rel_err(down_bf16(d_dw, C), rw, &ddw), 2e-2);
            check("db (+=), err vs ||delta||", rel_err(down_bf16(d_db, C), rb, &ddb), 2e-2);
            first_din = down_raw16(d_din, nc); first_dw = down_raw16(d_dw, C); first_db = down_raw16(d_db, C);
        } else {
            check_true("backward bitwise deterministic", first_din == down_raw16(d_din, nc) &&
                                                             first_dw == down_raw16(d_dw, C) &&
                                                             first_db == down_raw16(d_db, C));
        }
    }
    for (void *p : {(void *)(d_x1 - off), (void *)(d_x2 - off), (void *)(d_res - off), (void *)(d_out - off),
                    (void *)(d_w - off), (void *)(d_b - off), (void *)d_mean, (void *)d_rstd, (void *)(d_dout - off),
                    (void *)(d_din - off), (void *)(d_dw - off), (void *)(d_db - off)})
        CK(cudaFree(p));
}

static void bench(int N, int C, double peak) {
    const size_t nc = (size_t)N * C;
    bf16 *a = (bf16 *)dmalloc(nc * 2), *b2 = (bf16 *)dmalloc(nc * 2), *res = (bf16 *)dmalloc(nc * 2),
         *out = (bf16 *)dmalloc(nc * 2), *w = (bf16 *)dmalloc(C * 2), *b = (bf16 *)dmalloc(C * 2),
         *dw = (bf16 *)dmalloc(C * 2), *db = (bf16 *)dmalloc(C * 2);
    float *mean = (float *)dmalloc(N * 4), *rstd = (float *)dmalloc(N * 4);
    up_bf16(a, rand_normal(nc, 1.0)); up_bf16(b2, rand_normal(nc, 1.0));
    up_bf16(w, rand_normal(C, 0.1, 1.0)); up_bf16(b, rand_normal(C, 0.1));
    up_bf16(dw, rand_normal(C, 0.1)); up_bf16(db, rand_normal(C, 0.1));
    const lab_tensor tw(w, C), tb(b, C), tdw(dw, C), tdb(db, C);
    float fwd = time_ms([&] { OKS(llmc_cuda_layernorm_forward(&g_dev, res, out, mean, rstd, a, b2, tw, tb, N, C)); });
    /* backward: dout = a, x = res, dinp = b2 (grows, harmless) */
    float bwd = time_ms([&] { OKS(llmc_cuda_layernorm_backward(&g_dev, b2, tdw, tdb, a, res, tw, mean, rstd, N, C)); });
    float rr = time_ms([&] {
        OKS((layernorm_backward_launch<8, 0>(&g_dev, b2, dw, db, a, res, w, mean, rstd, N, C)));
    });
    double fb = 4.0 * nc * 2 + 8.0 * N, bb = 4.0 * nc * 2 + 8.0 * N;
    printf("BENCH layernorm N=%d C=%d  fwd %.3f ms %.0f GB/s (%.0f%%)  bwd %.3f ms %.0f GB/s (%.0f%%)  "
           "[bwd re-reading the row: %.3f ms %.0f%%]\n",
           N, C, fwd, fb / fwd / 1e6, 100 * fb / fwd / 1e6 / peak, bwd, bb / bwd / 1e6, 100 * bb / bwd / 1e6 / peak,
           rr, 100 * bb / rr / 1e6 / peak);
    for (void *p : {(void *)a, (void *)b2, (void *)res, (void *)out, (void *)w, (void *)b, (void *)dw, (void *)db,
                    (void *)mean, (void *)rstd})
        CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        const int shapes[][2] = {{1, 80},    {7, 768}, {37, 1600}, {130, 768}, {3, 8},    {5, 36},
                                 {4, 13},    {33, 1},  {1000, 1024}, {50, 2048}, {20, 2056}, {9, 520}};
        for (auto &s : shapes) test_shape(s[0], s[1], 1, 0);
        test_shape(9, 768, 0, 0);
        test_shape(17, 768, 1, 1);
        test_shape(2, 26000, 1, 0); /* forward and backward with the shared-memory opt-in */
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("layernorm");
    double peak = copy_bandwidth_gbs();
    printf("BENCH device-to-device copy: %.0f GB/s (ceiling used for %%)\n", peak);
    bench(64 * 1024, 768, peak);
    bench(64 * 1024, 1600, peak);
    bench(8 * 1024, 768, peak);
    return lab_finish("layernorm");
}

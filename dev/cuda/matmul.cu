/* Lab: cuBLASLt matmul forward/backward with bias and GELU epilogues (cuda/matmul.cu) against
 * a float64 CPU reference (OpenMP), including the fallbacks (shapes the GELU epilogues cannot
 * take) and the own deterministic dbias kernel; then throughput at GPT-2 sizes.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}
static double rms(const std::vector<double> &v) {
    double s = 0;
    for (double a : v) s += a * a;
    return sqrt(s / v.size()) + 1e-30;
}

static void report_epilogues(void) {
    llmc_cuda_impl *im = llmc_cuda_impl_of(&g_dev);
    for (int i = 0; i < LLMC_CUDA_ALGO_CACHE; i++) {
        llmc_cuda_algo_entry *e = &im->algo_cache[i];
        if (e->state == 0 || e->key[9] == CUBLASLT_EPILOGUE_DEFAULT || e->key[9] == CUBLASLT_EPILOGUE_BIAS) continue;
        printf("    epilogue %4d (bias type %2lld) m=%-6lld n=%-6lld k=%-6lld: %s\n", (int)e->key[9],
               (long long)e->key[11], (long long)e->key[2], (long long)e->key[3], (long long)e->key[4],
               e->state > 0 ? "cuBLASLt algorithm" : "NONE -> fallback");
    }
}

static void test_shape(int N, int C, int OC, int with_bias, int with_gelu, int with_dinp) {
    printf("matmul N=%d C=%d OC=%d bias=%d gelu=%d dinp=%d\n", N, C, OC, with_bias, with_gelu, with_dinp);
    /* forget cached algorithms so that the report below is about this shape only */
    memset(llmc_cuda_impl_of(&g_dev)->algo_cache, 0, sizeof llmc_cuda_impl_of(&g_dev)->algo_cache);
    std::vector<float> inp = rand_normal((size_t)N * C, 1.0), w = rand_normal((size_t)OC * C, 1.0 / sqrt(C)),
                       bias = rand_normal(OC, 0.5);
    round_bf16(inp); round_bf16(w); round_bf16(bias);
    bf16 *d_inp = (bf16 *)dmalloc((size_t)N * C * 2), *d_w = (bf16 *)dmalloc((size_t)OC * C * 2),
         *d_bias = (bf16 *)dmalloc(OC * 2), *d_out = (bf16 *)dmalloc((size_t)N * OC * 2),
         *d_pre = (bf16 *)dmalloc((size_t)N * OC * 2);
    up_bf16(d_inp, inp); up_bf16(d_w, w); up_bf16(d_bias, bias);
    poison(d_out, (size_t)N * OC * 2);
    poison(d_pre, (size_t)N * OC * 2);
    OKS(llmc_cuda_matmul_forward(&g_dev, d_out, with_gelu ? d_pre : NULL, d_inp, lab_tensor(d_w, OC, C),
                                 lab_tensor(with_bias ? d_bias : NULL, OC), N, C, OC));
    lab_sync();
    std::vector<double> rpre((size_t)N * OC), rout((size_t)N * OC);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        for (int o = 0; o < OC; o++) {
            double s = with_bias ? bias[o] : 0.0;
            for (int c = 0; c < C; c++) s += (double)inp[(size_t)r * C + c] * w[(size_t)o * C + c];
            rpre[(size_t)r * OC + o] = s;
            rout[(size_t)r * OC + o] = with_gelu ? gelu_d(s) : s;
        }
    check("forward out", rel_err(down_bf16(d_out, (size_t)N * OC), rout), 2e-2);
    if (with_gelu) check("forward pre_gelu", rel_err(down_bf16(d_pre, (size_t)N * OC), rpre), 2e-2);

    /* backward: this layer's input is gelu(pre) when with_gelu (pre has the input's shape N x C) */
    std::vector<float> pre = rand_normal((size_t)N * C, 1.0), dout = rand_normal((size_t)N * OC, 1.0);
    round_bf16(pre); round_bf16(dout);
    if (with_gelu)
        for (size_t i = 0; i < inp.size(); i++) inp[i] = round_bf16((float)gelu_d(pre[i]));
    up_bf16(d_inp, inp);
    bf16 *d_prein = (bf16 *)dmalloc((size_t)N * C * 2), *d_dout = (bf16 *)dmalloc((size_t)N * OC * 2),
         *d_dinp = (bf16 *)dmalloc((size_t)N * C * 2), *d_dw = (bf16 *)dmalloc((size_t)OC * C * 2),
         *d_db = (bf16 *)dmalloc(OC * 2);
    up_bf16(d_prein, pre); up_bf16(d_dout, dout);
    std::vector<double> rdin((size_t)N * C), ddw((size_t)OC * C), ddb(OC, 0.0);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        std::vector<double> acc(C, 0.0);
        for (int o = 0; o < OC; o++) {
            const double d = dout[(size_t)r * OC + o];
            for (int c = 0; c < C; c++) acc[c] += d * w[(size_t)o * C + c];
        }
        for (int c = 0; c < C; c++)
            rdin[(size_t)r * C + c] = with_gelu ? acc[c] * gelu_grad_d(pre[(size_t)r * C + c]) : acc[c];
    }
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        std::vector<double> acc(C, 0.0);
        double sb = 0;
        for (int r = 0; r < N; r++) {
            const double d = dout[(size_t)r * OC + o];
            sb += d;
            for (int c = 0; c < C; c++) acc[c] += d * inp[(size_t)r * C + c];
        }
        for (int c = 0; c < C; c++) ddw[(size_t)o * C + c] = acc[c];
        ddb[o] = sb;
    }
    std::vector<float> pw = rand_normal((size_t)OC * C, rms(ddw)), pb = rand_normal(OC, rms(ddb));
    round_bf16(pw); round_bf16(pb);
    std::vector<double> rw(pw.size()), rb(OC);
    for (size_t i = 0; i < pw.size(); i++) rw[i] = pw[i] + ddw[i];
    for (int o = 0; o < OC; o++) rb[o] = pb[o] + ddb[o];
    std::vector<uint16_t> f_din, f_dw, f_db;
    for (int rep = 0; rep < 2; rep++) {
        poison(d_dinp, (size_t)N * C * 2);
        up_bf16(d_dw, pw); up_bf16(d_db, pb);
        OKS(llmc_cuda_matmul_backward(&g_dev, with_dinp ? d_dinp : NULL, lab_tensor(d_dw, OC, C),
                                      lab_tensor(with_bias ? d_db : NULL, OC), d_dout, d_inp, lab_tensor(d_w, OC, C),
                                      with_gelu ? d_prein : NULL, N, C, OC));
        lab_sync();
        if (rep == 0) {
            if (with_dinp) check("backward dinp (=)", rel_err(down_bf16(d_dinp, (size_t)N * C), rdin), 2e-2);
            check("backward dW (+=), err vs ||delta||", rel_err(down_bf16(d_dw, pw.size()), rw, &ddw), 2e-2);
            if (with_bias) check("backward dbias (+=), err vs ||delta||", rel_err(down_bf16(d_db, OC), rb, &ddb), 2e-2);
            f_din = down_raw16(d_dinp, (size_t)N * C); f_dw = down_raw16(d_dw, pw.size()); f_db = down_raw16(d_db, OC);
        } else {
            int same = f_dw == down_raw16(d_dw, pw.size()) && f_db == down_raw16(d_db, OC);
            if (with_dinp) same &= f_din == down_raw16(d_dinp, (size_t)N * C);
            check_true("backward bitwise deterministic", same);
        }
    }
    if (with_bias) { /* the own reduction kernel (used when BGRADB is unavailable) */
        up_bf16(d_db, pb);
        OKS(dbias_reduce(&g_dev, d_db, d_dout, N, OC));
        check("own dbias kernel (+=), err vs ||delta||", rel_err(down_bf16(d_db, OC), rb, &ddb), 2e-2);
    }
    report_epilogues();
    for (void *p : {(void *)d_inp, (void *)d_w, (void *)d_bias, (void *)d_out, (void *)d_pre, (void *)d_prein,
                    (void *)d_dout, (void *)d_dinp, (void *)d_dw, (void *)d_db})
        CK(cudaFree(p));
}

static void bench(int N, int C, int OC, int gelu) {
    bf16 *inp = (bf16 *)dmalloc((size_t)N * C * 2), *w = (bf16 *)dmalloc((size_t)OC * C * 2),
         *bias = (bf16 *)dmalloc(OC * 2), *out = (bf16 *)dmalloc((size_t)N * OC * 2),
         *pre = (bf16 *)dmalloc((size_t)N * OC * 2), *dinp = (bf16 *)dmalloc((size_t)N * C * 2),
         *dw = (bf16 *)dmalloc((size_t)OC * C * 2), *db = (bf16 *)dmalloc(OC * 2),
         *prein = (bf16 *)dmalloc((size_t)N * C * 2), *faux = (bf16 *)dmalloc((size_t)N * OC * 2);
    up_bf16(inp, rand_normal((size_t)N * C, 1.0)); up_bf16(prein, rand_normal((size_t)N * C, 1.0));
    up_bf16(w, rand_normal((size_t)OC * C, 0.03)); up_bf16(bias, rand_normal(OC, 0.1));
    up_bf16(out, rand_normal((size_t)N * OC, 1.0)); /* used as dout in the backward */
    up_bf16(dw, rand_normal((size_t)OC * C, 0.01)); up_bf16(db, rand_normal(OC, 0.01));
    double flops = 2.0 * N * C * OC;
    const lab_tensor tw(w, OC, C), tbias(bias, OC), tdw(dw, OC, C), tdb(db, OC);
    float f =
        time_ms([&] { OKS(llmc_cuda_matmul_forward(&g_dev, pre, gelu ? faux : NULL, inp, tw, tbias, N, C, OC)); });
    float b = time_ms([&] {
        OKS(llmc_cuda_matmul_backward(&g_dev, dinp, tdw, tdb, out, inp, tw, gelu ? prein : NULL, N, C, OC));
    });
    float bn = time_ms([&] {
        OKS(llmc_cuda_matmul_backward(&g_dev, dinp, tdw, NULL, out, inp, tw, gelu ? prein : NULL, N, C, OC));
    });
    float own = time_ms([&] { OKS(dbias_reduce(&g_dev, db, out, N, OC)); });
    printf("BENCH matmul N=%d C=%d OC=%d gelu=%d  fwd %.3f ms %.0f TFLOP/s  bwd %.3f ms %.0f TFLOP/s  "
           "(bwd without dbias %.3f ms; own dbias kernel alone %.3f ms)\n",
           N, C, OC, gelu, f, flops / f / 1e9, b, 2 * flops / b / 1e9, bn, own);
    for (void *p : {(void *)inp, (void *)w, (void *)bias, (void *)out, (void *)pre, (void *)dinp, (void *)dw,
                    (void *)db, (void *)prein, (void *)faux})
        CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        test_shape(1, 80, 240, 1, 0, 1);
        test_shape(1, 80, 320, 1, 1, 1);
        test_shape(3, 8, 24, 1, 1, 1);
        test_shape(5, 20, 36, 1, 1, 1);   /* C, OC not multiples of 8: GELU fallbacks */
        test_shape(10, 16, 12, 0, 1, 1);  /* forward fallback, backward fused */
        test_shape(37, 768, 2304, 1, 0, 1);
        test_shape(64, 768, 3072, 1, 1, 1);
        test_shape(33, 3072, 768, 1, 1, 0);
        test_shape(128, 1600, 6400, 1, 1, 1);
        test_shape(64, 768, 50304, 0, 0, 1); /* LM head */
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("matmul");
    bench(16384, 768, 2304, 0);
    bench(16384, 768, 3072, 1);
    bench(16384, 3072, 768, 1);
    bench(16384, 768, 50304, 0);
    return lab_finish("matmul");
}

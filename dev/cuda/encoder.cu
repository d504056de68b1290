/* Lab: token + position embedding forward and the deterministic grouped backward
 * (cuda/encoder.cu) against a float64 CPU reference; then bandwidth at GPT-2 size with a
 * skewed token distribution (a few very frequent tokens, as in real text).
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include <chrono>
#include "lab.cuh"

static void test_shape(int B, int T, int C, int V, int misalign) {
    printf("encoder B=%d T=%d C=%d V=%d misalign=%d\n", B, T, C, V, misalign);
    const int off = misalign ? 1 : 0;
    const size_t n = (size_t)B * T;
    std::vector<int> tok(n);
    for (size_t i = 0; i < n; i++) tok[i] = (rng_u64() % 3 == 0) ? 7 % V : (int)(rng_u64() % V); /* repeats */
    std::vector<float> wte = rand_normal((size_t)V * C, 0.1), wpe = rand_normal((size_t)T * C, 0.1),
                       dout = rand_normal(n * C, 1.0);
    round_bf16(wte); round_bf16(wpe); round_bf16(dout);
    bf16 *d_wte = (bf16 *)dmalloc((size_t)V * C * 2) + off, *d_wpe = (bf16 *)dmalloc((size_t)T * C * 2) + off,
         *d_out = (bf16 *)dmalloc(n * C * 2) + off, *d_dout = (bf16 *)dmalloc(n * C * 2) + off;
    int *d_tok = (int *)dmalloc(n * 4);
    up_bf16(d_wte, wte); up_bf16(d_wpe, wpe); up_bf16(d_dout, dout); up_i32(d_tok, tok);
    poison(d_out, n * C * 2);
    OKS(llmc_cuda_encoder_forward(&g_dev, d_out, d_tok, lab_tensor(d_wte, V, C), lab_tensor(d_wpe, T, C), B, T, C));
    lab_sync();
    std::vector<double> rout(n * C);
    for (size_t r = 0; r < n; r++)
        for (int c = 0; c < C; c++)
            rout[r * C + c] = (double)wte[(size_t)tok[r] * C + c] + wpe[(size_t)(r % T) * C + c];
    check("forward out", rel_err(down_bf16(d_out, n * C), rout), 1e-2);

    std::vector<double> dwte((size_t)V * C, 0.0), dwpe((size_t)T * C, 0.0);
    for (size_t r = 0; r < n; r++)
        for (int c = 0; c < C; c++) {
            dwte[(size_t)tok[r] * C + c] += dout[r * C + c];
            dwpe[(size_t)(r % T) * C + c] += dout[r * C + c];
        }
    /* pre-filled gradients (only touched rows of dwte may change) */
    std::vector<float> pwte = rand_normal((size_t)V * C, 1.0), pwpe = rand_normal((size_t)T * C, 1.0);
    round_bf16(pwte); round_bf16(pwpe);
    std::vector<double> rwte(pwte.size()), rwpe(pwpe.size());
    for (size_t i = 0; i < pwte.size(); i++) rwte[i] = pwte[i] + dwte[i];
    for (size_t i = 0; i < pwpe.size(); i++) rwpe[i] = pwpe[i] + dwpe[i];
    std::vector<uint16_t> f_wte, f_wpe;
    for (int rep = 0; rep < 2; rep++) {
        up_bf16(d_wte, pwte); up_bf16(d_wpe, pwpe);
        OKS(llmc_cuda_encoder_backward(&g_dev, lab_tensor(d_wte, V, C), lab_tensor(d_wpe, T, C), d_dout, d_tok,
                                       tok.data(), B, T, C));
        lab_sync();
        if (rep == 0) {
            std::vector<float> gw = down_bf16(d_wte, pwte.size());
            check("dwte (+=), err vs ||delta||", rel_err(gw, rwte, &dwte), 2e-2);
            check("dwpe (+=), err vs ||delta||", rel_err(down_bf16(d_wpe, pwpe.size()), rwpe, &dwpe), 2e-2);
            std::vector<char> used(V, 0);
            for (int t : tok) used[t] = 1;
            int untouched_ok = 1;
            for (int v = 0; v < V; v++)
                if (!used[v])
                    for (int c = 0; c < C; c++) untouched_ok &= gw[(size_t)v * C + c] == pwte[(size_t)v * C + c];
            check_true("dwte rows of absent tokens unchanged", untouched_ok);
            f_wte = down_raw16(d_wte, pwte.size());
            f_wpe = down_raw16(d_wpe, pwpe.size());
        } else {
            check_true("backward bitwise deterministic",
                       f_wte == down_raw16(d_wte, pwte.size()) && f_wpe == down_raw16(d_wpe, pwpe.size()));
        }
    }
    for (void *p : {(void *)(d_wte - off), (void *)(d_wpe - off), (void *)(d_out - off), (void *)(d_dout - off),
                    (void *)d_tok})
        CK(cudaFree(p));
}

static void bench(int B, int T, int C, int V, double peak) {
    const size_t n = (size_t)B * T;
    std::vector<int> tok(n);
    for (size_t i = 0; i < n; i++) { /* Zipf-ish: token k with probability ~ 1/(k+1) */
        double u = rng_uniform();
        tok[i] = std::min(V - 1, (int)floor(exp(u * log((double)V)) - 1.0));
    }
    bf16 *wte = (bf16 *)dmalloc((size_t)V * C * 2), *wpe = (bf16 *)dmalloc((size_t)T * C * 2),
         *out = (bf16 *)dmalloc(n * C * 2);
    int *d_tok = (int *)dmalloc(n * 4);
    up_bf16(wte, rand_normal((size_t)V * C, 0.1)); up_bf16(wpe, rand_normal((size_t)T * C, 0.1));
    up_bf16(out, rand_normal(n * C, 1.0)); up_i32(d_tok, tok);
    const lab_tensor twte(wte, V, C), twpe(wpe, T, C); /* also the gradients in the backward */
    float f = time_ms([&] { OKS(llmc_cuda_encoder_forward(&g_dev, out, d_tok, twte, twpe, B, T, C)); });
    float b = time_ms([&] { OKS(llmc_cuda_encoder_backward(&g_dev, twte, twpe, out, d_tok, tok.data(), B, T, C)); });
    /* host side alone: the call returns after grouping and enqueuing (GPU kept busy meanwhile) */
    std::vector<double> hs;
    for (int i = 0; i < 20; i++) {
        lab_sync();
        auto t0 = std::chrono::steady_clock::now();
        OKS(llmc_cuda_encoder_backward(&g_dev, twte, twpe, out, d_tok, tok.data(), B, T, C));
        hs.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    lab_sync();
    std::sort(hs.begin(), hs.end());
    printf("BENCH encoder backward host time per call (median): %.3f ms\n", hs[hs.size() / 2]);
    /* GPU time alone: a spinning kernel hides the host work, as a long queue does in training */
    std::vector<float> gs;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 20; i++) {
        lab_spin_kernel<<<1, 1, 0, lab_stream()>>>(6000000ll); /* ~3 ms */
        CK(cudaEventRecord(e0, lab_stream()));
        OKS(llmc_cuda_encoder_backward(&g_dev, twte, twpe, out, d_tok, tok.data(), B, T, C));
        CK(cudaEventRecord(e1, lab_stream()));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        gs.push_back(ms);
    }
    std::sort(gs.begin(), gs.end());
    printf("BENCH encoder backward GPU time (host work hidden): %.3f ms  dout read %.0f GB/s\n", gs[gs.size() / 2],
           (double)n * C * 2 / gs[gs.size() / 2] / 1e6);
    int maxcount = 0;
    {
        std::vector<int> cnt(V, 0);
        for (int t : tok) maxcount = std::max(maxcount, ++cnt[t]);
    }
    double fb = 2.0 * n * C * 2, bb = 1.0 * n * C * 2;
    printf("BENCH encoder B=%d T=%d C=%d  fwd %.3f ms %.0f GB/s (%.0f%%)  bwd %.3f ms (dout read once: %.0f GB/s; "
           "host grouping included; most frequent token %d times)\n",
           B, T, C, f, fb / f / 1e6, 100 * fb / f / 1e6 / peak, b, bb / b / 1e6, maxcount);
    for (void *p : {(void *)wte, (void *)wpe, (void *)out, (void *)d_tok}) CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        test_shape(1, 1, 80, 50, 0);
        test_shape(2, 17, 80, 50, 0);
        test_shape(4, 64, 768, 300, 0);
        test_shape(3, 5, 12, 11, 0);  /* C not a multiple of 8 */
        test_shape(2, 8, 8, 11, 1);   /* misaligned views: scalar path */
        test_shape(2, 33, 1600, 70000, 0); /* large token ids */
        test_shape(16, 256, 768, 64, 0);   /* very frequent tokens: split into segments */
        test_shape(8, 64, 12, 5, 0);       /* split segments on the scalar path */
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("encoder");
    double peak = copy_bandwidth_gbs();
    printf("BENCH device-to-device copy: %.0f GB/s\n", peak);
    bench(64, 1024, 768, 50304, peak);
    return lab_finish("encoder");
}

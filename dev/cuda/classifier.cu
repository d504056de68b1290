/* Lab: fused softmax cross-entropy (cuda/classifier.cu) against a float64 CPU reference, on
 * poisoned outputs and awkward shapes, then bandwidth of the block/register-cache variants.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

static void test_shape(int N, int V, int Vp, float dloss) {
    printf("classifier N=%d V=%d Vp=%d dloss=%g\n", N, V, Vp, dloss);
    const size_t n = (size_t)N * Vp;
    std::vector<float> logits = rand_normal(n, 2.0);
    round_bf16(logits);
    for (int r = 0; r < N; r++) /* padding holds junk, it must be ignored */
        for (int j = V; j < Vp; j++) logits[(size_t)r * Vp + j] = 100.0f;
    std::vector<int> targets(N);
    for (int r = 0; r < N; r++) targets[r] = (int)(rng_u64() % V);
    if (N > 1) targets[1] = V - 1;
    bf16 *d_logits = (bf16 *)dmalloc(n * 2);
    float *d_losses = (float *)dmalloc(N * 4);
    int *d_targets = (int *)dmalloc(N * 4);
    up_bf16(d_logits, logits);
    up_i32(d_targets, targets);
    poison(d_losses, N * 4);
    OKS(llmc_cuda_classifier_forward(&g_dev, d_losses, d_logits, d_targets, N, V, Vp, dloss));
    lab_sync();

    std::vector<double> rloss(N), rd(n);
    for (int r = 0; r < N; r++) {
        const float *x = &logits[(size_t)r * Vp];
        double m = -1e300, s = 0;
        for (int j = 0; j < V; j++) m = std::max(m, (double)x[j]);
        for (int j = 0; j < V; j++) s += exp(x[j] - m);
        double lse = m + log(s);
        rloss[r] = lse - x[targets[r]];
        for (int j = 0; j < Vp; j++)
            rd[(size_t)r * Vp + j] = j < V ? (exp(x[j] - lse) - (j == targets[r])) * dloss : 0.0;
    }
    check("losses (fp32)", rel_err(down_f32(d_losses, N), rloss), 1e-5);
    if (dloss != 0.0f) {
        std::vector<float> got = down_bf16(d_logits, n);
        check("dlogits (in place)", rel_err(got, rd), 2e-2);
        int pad_ok = 1;
        for (int r = 0; r < N; r++)
            for (int j = V; j < Vp; j++) pad_ok &= got[(size_t)r * Vp + j] == 0.0f;
        check_true("padding columns are exactly 0", pad_ok);
        /* determinism: same inputs again */
        std::vector<uint16_t> first = down_raw16(d_logits, n);
        up_bf16(d_logits, logits);
        OKS(llmc_cuda_classifier_forward(&g_dev, d_losses, d_logits, d_targets, N, V, Vp, dloss));
        check_true("bitwise deterministic", first == down_raw16(d_logits, n));
    } else {
        std::vector<float> got = down_bf16(d_logits, n);
        check_true("logits untouched when dloss == 0", got == logits);
    }
    CK(cudaFree(d_logits));
    CK(cudaFree(d_losses));
    CK(cudaFree(d_targets));
}

/* fwd+bwd of one kernel variant, repeated in place: after the first run the row holds small
 * gradients (not zeros), which cost the same to process as logits. */
template <int CACHE, int THREADS, int UNR>
static void bench_variant(const char *name, int N, int V, int Vp, bf16 *logits, const bf16 *pristine, float *losses,
                          int *targets, double peak) {
    CK(cudaMemcpyAsync(logits, pristine, (size_t)N * Vp * 2, cudaMemcpyDeviceToDevice, lab_stream()));
    float ms = time_ms([&] {
        classifier_kernel<8, CACHE, THREADS, UNR><<<N, THREADS, 0, lab_stream()>>>(losses, logits, targets, V, Vp,
                                                                              1.0f / N);
    });
    CK(cudaGetLastError());
    double bytes = 2.0 * N * Vp * 2;
    printf("BENCH classifier %-24s N=%d Vp=%d  %.3f ms  %.0f GB/s (%.0f%% of copy)\n", name, N, Vp, ms,
           bytes / ms / 1e6, 100 * bytes / ms / 1e6 / peak);
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        test_shape(1, 50257, 50304, 1.0f);
        test_shape(5, 50257, 50304, 0.2f);
        test_shape(5, 50257, 50304, 0.0f);
        test_shape(64, 1000, 1024, 1.0f / 64);
        test_shape(3, 11, 16, 1.0f / 3);
        test_shape(7, 13, 13, 0.5f);       /* Vp not a multiple of 8: scalar path */
        test_shape(2, 70000, 70016, 1.0f); /* more vectors than threads x unroll: several batches */
        test_shape(4, 1, 8, 1.0f);
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("classifier");
    double peak = copy_bandwidth_gbs();
    printf("BENCH device-to-device copy: %.0f GB/s\n", peak);
    const int N = 8192, V = 50257, Vp = 50304;
    bf16 *logits = (bf16 *)dmalloc((size_t)N * Vp * 2), *pristine = (bf16 *)dmalloc((size_t)N * Vp * 2);
    float *losses = (float *)dmalloc(N * 4);
    int *targets = (int *)dmalloc(N * 4);
    up_bf16(pristine, rand_normal((size_t)N * Vp, 2.0));
    std::vector<int> t(N);
    for (int i = 0; i < N; i++) t[i] = (int)(rng_u64() % V);
    up_i32(targets, t);
    bench_variant<CLS_CACHE, CLS_THREADS, CLS_UNR>("engine (reread x1024 u1)", N, V, Vp, logits, pristine, losses,
                                                   targets, peak);
    bench_variant<0, 512, 1>("reread x512 u1", N, V, Vp, logits, pristine, losses, targets, peak);
    bench_variant<0, 1024, 2>("reread x1024 u2", N, V, Vp, logits, pristine, losses, targets, peak);
    bench_variant<0, 512, 4>("reread x512 u4", N, V, Vp, logits, pristine, losses, targets, peak);
    bench_variant<7, 1024, 1>("cache7 x1024", N, V, Vp, logits, pristine, losses, targets, peak);
    bench_variant<CLS_CACHE, CLS_THREADS, CLS_UNR>("engine again", N, V, Vp, logits, pristine, losses, targets, peak);
    CK(cudaMemcpyAsync(logits, pristine, (size_t)N * Vp * 2, cudaMemcpyDeviceToDevice, lab_stream()));
    float ms = time_ms([&] { OKS(llmc_cuda_classifier_forward(&g_dev, losses, logits, targets, N, V, Vp, 0.0f)); });
    printf("BENCH classifier forward only (dloss=0)   %.3f ms  %.0f GB/s read\n", ms, (double)N * Vp * 2 / ms / 1e6);
    return lab_finish("classifier");
}

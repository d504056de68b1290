/* Lab: GELU (tanh) forward and the in-place backward fallback (cuda/gelu.cu) against float64,
 * any n and misaligned views; then bandwidth.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}

static void test_case(size_t n, int misalign) {
    printf("gelu n=%zu misalign=%d\n", n, misalign);
    const int off = misalign ? 3 : 0;
    std::vector<float> x = rand_normal(n, 2.0), g = rand_normal(n, 1.0);
    round_bf16(x); round_bf16(g);
    bf16 *d_x = (bf16 *)dmalloc(n * 2) + off, *d_y = (bf16 *)dmalloc(n * 2) + off, *d_g = (bf16 *)dmalloc(n * 2) + off;
    up_bf16(d_x, x); up_bf16(d_g, g);
    poison(d_y, n * 2);
    OKS(llmc_cuda_gelu_forward(&g_dev, d_y, d_x, n));
    OKS(llmc_cuda_gelu_backward_inplace(&g_dev, d_g, d_x, n));
    lab_sync();
    std::vector<double> ry(n), rg(n);
    for (size_t i = 0; i < n; i++) { ry[i] = gelu_d(x[i]); rg[i] = g[i] * gelu_grad_d(x[i]); }
    check("gelu forward", rel_err(down_bf16(d_y, n), ry), 1e-2);
    check("gelu backward in place", rel_err(down_bf16(d_g, n), rg), 1e-2);
    for (void *p : {(void *)(d_x - off), (void *)(d_y - off), (void *)(d_g - off)}) CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        const size_t sizes[] = {1, 7, 8, 13, 1000, 1000003};
        for (size_t n : sizes) test_case(n, 0);
        test_case(1000003, 1);
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("gelu");
    double peak = copy_bandwidth_gbs();
    const size_t n = (size_t)64 * 1024 * 3072;
    bf16 *x = (bf16 *)dmalloc(n * 2), *y = (bf16 *)dmalloc(n * 2);
    OKS(g_dev.ops->upload_f32(&g_dev, x, LLMC_BF16, rand_normal(n, 1.0).data(), n));
    float ms = time_ms([&] { OKS(llmc_cuda_gelu_forward(&g_dev, y, x, n)); });
    printf("BENCH gelu n=%zu  %.3f ms  %.0f GB/s (%.0f%% of copy %.0f)\n", n, ms, 4.0 * n / ms / 1e6,
           100 * 4.0 * n / ms / 1e6 / peak, peak);
    return lab_finish("gelu");
}

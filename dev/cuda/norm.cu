/* Lab: deterministic sum of squares (cuda/norm.cu) against float64, any n, misaligned views,
 * bitwise repeatability; then bandwidth at GPT-2 124M size.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh. */
#include "lab.cuh"

static void test_case(size_t n, int misalign) {
    printf("sum_squares n=%zu misalign=%d\n", n, misalign);
    const int off = misalign ? 5 : 0;
    std::vector<float> x = rand_normal(n, 0.7, 0.1);
    round_bf16(x);
    bf16 *d = (bf16 *)dmalloc(n * 2) + off;
    up_bf16(d, x);
    double ref = 0;
    for (float v : x) ref += (double)v * v;
    double got = NAN, again = NAN;
    OKS(llmc_cuda_sum_squares(&g_dev, &got, d, n));
    OKS(llmc_cuda_sum_squares(&g_dev, &again, d, n));
    check("sum of squares", fabs(got - ref) / ref, 1e-5);
    check_true("bitwise repeatable", memcmp(&got, &again, sizeof got) == 0);
    CK(cudaFree(d - off));
}

int main(int argc, char **argv) {
    lab_open();
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0; /* "test": checks only */
    if (!bench_only) {
        const size_t sizes[] = {1, 7, 8, 1000, 4099, 10000003};
        for (size_t n : sizes) test_case(n, 0);
        test_case(10000003, 1);
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("norm");
    const size_t n = 124475904;
    bf16 *x = (bf16 *)dmalloc(n * 2);
    OKS(g_dev.ops->upload_f32(&g_dev, x, LLMC_BF16, rand_normal(n, 0.01).data(), n));
    double out;
    float ms = time_ms([&] { OKS(llmc_cuda_sum_squares(&g_dev, &out, x, n)); });
    printf("BENCH sum_squares n=%zu  %.3f ms (incl. the sync and 8-byte copy back)  %.0f GB/s\n", n, ms,
           2.0 * n / ms / 1e6);
    return lab_finish("norm");
}

/* Lab: the few-row matmul forward (cuda/gemv.cu) that matmul_forward routes N <= skinny_rows
 * (at most 32) to.
 *
 * test:  float64 CPU reference on NaN-poisoned outputs (with a guard zone after them) for
 *        N = 1, 2, 7, 16, 32 x (C, OC) = (768,2304) (768,768) (768,3072) (3072,768) (768,50304)
 *        (80,200) and awkward ones, with bias / no bias / GELU; bitwise determinism; a row's
 *        bits independent of N (batch invariance); fallbacks (C % 8, misaligned x).
 * bench: per call, in a CUDA graph of back-to-back calls over rotating weight copies (no L2
 *        reuse), gemv (with and without programmatic dependent launch) vs the cuBLASLt path;
 *        then a decode step's matmuls and layernorms (d12, 12 layers + LM head) as one graph;
 *        then int8 weights (per-row scales): the tensor-core kernel against the CUDA-core one
 *        (LLMC_INT8_MMA=0) and bf16 gemv, per call. Their errors are tests/test_quant.py's.
 * The modes switch the device's tuning (lab_tune); LLMC_PDL / LLMC_GEMV set it only at open.
 * Build/run: see dev/cuda/lab.cuh and dev/cuda/run_labs.sh;  build/labs/gemv [test|bench|int8] */
#include "lab.cuh"
#include "../../cuda/gemv.cu"

static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static const int kGuard = 64; /* poisoned elements after each output that must stay untouched */

/* 0 cuBLASLt, 1 gemv, 2 gemv + PDL (PDL also for the decode kernels and layernorm) */
static int g_lab_max_n = llmc_gemv::kMaxN; /* rows routed to the kernel in modes 1 and 2 */
static void set_mode(int m) { lab_tune(m == 2, m > 0 ? g_lab_max_n : 0); }

static int guard_intact(const void *d, size_t n) {
    std::vector<uint16_t> g = down_raw16((const bf16 *)d + n, kGuard);
    for (uint16_t v : g)
        if (v != 0xffff) return 0;
    return 1;
}

/* One shape: all variants, against one float64 reference of x @ W^T. */
static void test_shape(const std::vector<int> &Ns, int C, int OC, int xoff = 0) {
    const int NMAX = *std::max_element(Ns.begin(), Ns.end());
    std::vector<float> x = rand_normal((size_t)NMAX * C, 1.0), w = rand_normal((size_t)OC * C, 1.0 / sqrt(C)),
                       bias = rand_normal(OC, 0.5);
    round_bf16(x); round_bf16(w); round_bf16(bias);
    bf16 *d_x = (bf16 *)dmalloc(((size_t)NMAX * C + 8) * 2), *d_w = (bf16 *)dmalloc((size_t)OC * C * 2),
         *d_b = (bf16 *)dmalloc(OC * 2), *d_out = (bf16 *)dmalloc(((size_t)NMAX * OC + kGuard) * 2),
         *d_pre = (bf16 *)dmalloc(((size_t)NMAX * OC + kGuard) * 2);
    bf16 *xin = d_x + xoff; /* xoff != 0: misaligned rows, must fall back */
    up_bf16(xin, x); up_bf16(d_w, w); up_bf16(d_b, bias);
    std::vector<double> dot((size_t)NMAX * OC);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int r = 0; r < NMAX; r++) {
            double s = 0;
            const float *xr = &x[(size_t)r * C], *wr = &w[(size_t)o * C];
            for (int c = 0; c < C; c++) s += (double)xr[c] * wr[c];
            dot[(size_t)r * OC + o] = s;
        }
    std::vector<uint16_t> row_n1; /* row 0's output bits at the smallest N (bias, no GELU) */
    for (int N : Ns) {
        for (int variant = 0; variant < 4; variant++) { /* 0 bias, 1 no bias, 2 GELU + bias, 3 GELU no bias */
            const int wb = variant == 0 || variant == 2, gelu = variant >= 2;
            std::vector<double> rpre((size_t)N * OC), rout((size_t)N * OC);
            for (int r = 0; r < N; r++)
                for (int o = 0; o < OC; o++) {
                    double v = dot[(size_t)r * OC + o] + (wb ? bias[o] : 0.0);
                    rpre[(size_t)r * OC + o] = v;
                    rout[(size_t)r * OC + o] = gelu ? gelu_d(v) : v;
                }
            std::vector<uint16_t> first_out, first_pre;
            for (int rep = 0; rep < 2; rep++) {
                poison(d_out, ((size_t)N * OC + kGuard) * 2);
                poison(d_pre, ((size_t)N * OC + kGuard) * 2);
                OKS(llmc_cuda_matmul_forward(&g_dev, d_out, gelu ? d_pre : NULL, xin, lab_tensor(d_w, OC, C),
                                             lab_tensor(wb ? d_b : NULL, OC), N, C, OC));
                lab_sync();
                CK(cudaGetLastError());
                if (rep == 0) {
                    char what[160];
                    snprintf(what, sizeof what, "N=%-2d C=%-4d OC=%-5d %-14s out", N, C, OC,
                             variant == 0 ? "bias" : variant == 1 ? "no bias" : variant == 2 ? "gelu+bias" : "gelu");
                    check(what, rel_err(down_bf16(d_out, (size_t)N * OC), rout), 8e-3);
                    if (gelu) {
                        snprintf(what, sizeof what, "N=%-2d C=%-4d OC=%-5d %-14s pre_gelu", N, C, OC, "");
                        check(what, rel_err(down_bf16(d_pre, (size_t)N * OC), rpre), 8e-3);
                    }
                    first_out = down_raw16(d_out, (size_t)N * OC);
                    if (gelu) first_pre = down_raw16(d_pre, (size_t)N * OC);
                    int guards = guard_intact(d_out, (size_t)N * OC) && (!gelu || guard_intact(d_pre, (size_t)N * OC));
                    if (!guards) check_true("  guard zone after the output untouched", 0);
                    if (variant == 0 && xoff == 0 && C % 8 == 0 && llmc_gemv::max_rows(&g_dev) > 0) {
                        /* the register-load variant adds in the same order: the same bits */
                        llmc_gemv::config c = llmc_gemv::choose(&g_dev, N, C, OC);
                        c.stage = 0;
                        bf16 *alt = (bf16 *)dmalloc((size_t)N * OC * 2);
                        poison(alt, (size_t)N * OC * 2);
                        CK(llmc_gemv::launch(&g_dev, c, alt, NULL, xin, d_w, d_b, N, C, OC));
                        lab_sync();
                        if (down_raw16(alt, (size_t)N * OC) != first_out)
                            check_true("  register-load variant bitwise equal to the staged one", 0);
                        c.stage = 1, c.early = 0; /* W loaded after the wait: only the timing differs */
                        poison(alt, (size_t)N * OC * 2);
                        CK(llmc_gemv::launch(&g_dev, c, alt, NULL, xin, d_w, d_b, N, C, OC));
                        lab_sync();
                        if (down_raw16(alt, (size_t)N * OC) != first_out)
                            check_true("  late W loads bitwise equal to the early ones", 0);
                        CK(cudaFree(alt));
                    }
                    if (variant == 0 && xoff == 0 && C % 8 == 0) { /* the gemv path (cuBLASLt need not be) */
                        std::vector<uint16_t> r0(first_out.begin(), first_out.begin() + OC);
                        if (row_n1.empty()) row_n1 = r0;
                        else if (r0 != row_n1) check_true("  row 0 bitwise equal to the smallest N (batch invariance)", 0);
                    }
                } else {
                    int same = first_out == down_raw16(d_out, (size_t)N * OC);
                    if (gelu) same &= first_pre == down_raw16(d_pre, (size_t)N * OC);
                    if (!same) check_true("  bitwise deterministic", 0);
                }
            }
        }
    }
    g_checks++; /* the silent checks above (guards, determinism, invariance) count once per shape */
    for (void *p : {(void *)d_x, (void *)d_w, (void *)d_b, (void *)d_out, (void *)d_pre}) CK(cudaFree(p));
}

/* cuBLASLt's error on the same problem, for comparison (bias, N rows). */
static void lt_reference_error(int N, int C, int OC) {
    std::vector<float> x = rand_normal((size_t)N * C, 1.0), w = rand_normal((size_t)OC * C, 1.0 / sqrt(C)),
                       bias = rand_normal(OC, 0.5);
    round_bf16(x); round_bf16(w); round_bf16(bias);
    bf16 *d_x = (bf16 *)dmalloc((size_t)N * C * 2), *d_w = (bf16 *)dmalloc((size_t)OC * C * 2),
         *d_b = (bf16 *)dmalloc(OC * 2), *d_out = (bf16 *)dmalloc((size_t)N * OC * 2);
    up_bf16(d_x, x); up_bf16(d_w, w); up_bf16(d_b, bias);
    std::vector<double> ref((size_t)N * OC);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int r = 0; r < N; r++) {
            double s = bias[o];
            for (int c = 0; c < C; c++) s += (double)x[(size_t)r * C + c] * w[(size_t)o * C + c];
            ref[(size_t)r * OC + o] = s;
        }
    double e[2];
    for (int m = 0; m < 2; m++) {
        set_mode(m == 0 ? 0 : 2);
        poison(d_out, (size_t)N * OC * 2);
        OKS(llmc_cuda_matmul_forward(&g_dev, d_out, NULL, d_x, lab_tensor(d_w, OC, C), lab_tensor(d_b, OC), N, C, OC));
        lab_sync();
        e[m] = rel_err(down_bf16(d_out, (size_t)N * OC), ref);
    }
    printf("  error vs float64, N=%d C=%d OC=%d: cuBLASLt %.3e, gemv %.3e\n", N, C, OC, e[0], e[1]);
    for (void *p : {(void *)d_x, (void *)d_w, (void *)d_b, (void *)d_out}) CK(cudaFree(p));
}

/* ---- benchmark ---- */

/* Median time of one replay of a graph recorded from f(), in ms. */
template <class F>
static float graph_ms(F f, int reps = 20) {
    const LabGraph lg = lab_graph(f);
    const float ms = time_ms([&] { CK(cudaGraphLaunch(lg.ge, lab_stream())); }, reps, 3);
    lab_graph_free(lg);
    return ms;
}

static void bench_shape(const std::vector<int> &Ns, int C, int OC, double copy_gbs) {
    const size_t wbytes = (size_t)OC * C * 2;
    int copies = (int)((400ull << 20) / wbytes) + 1; /* rotating copies: 400 MB, far beyond L2 */
    if (copies < 4) copies = 4;
    std::vector<bf16 *> ws(copies);
    for (auto &p : ws) p = (bf16 *)dmalloc(wbytes);
    up_bf16(ws[0], rand_normal((size_t)OC * C, 0.03));
    for (int i = 1; i < copies; i++) CK(cudaMemcpy(ws[i], ws[0], wbytes, cudaMemcpyDeviceToDevice));
    std::vector<lab_tensor> tws;
    for (bf16 *p : ws) tws.emplace_back(p, OC, C);
    const int NMAX = 32;
    bf16 *x = (bf16 *)dmalloc((size_t)NMAX * C * 2), *b = (bf16 *)dmalloc(OC * 2),
         *out = (bf16 *)dmalloc((size_t)NMAX * OC * 2);
    up_bf16(x, rand_normal((size_t)NMAX * C, 1.0));
    up_bf16(b, rand_normal(OC, 0.1));
    const lab_tensor tb(b, OC);
    for (int N : Ns) {
        const double bytes = wbytes + (double)N * C * 2 + (double)N * OC * 2 + OC * 2;
        auto run_all = [&] {
            for (int i = 0; i < copies; i++) OKS(llmc_cuda_matmul_forward(&g_dev, out, NULL, x, tws[i], tb, N, C, OC));
        };
        float t[3];
        for (int m = 0; m < 3; m++) {
            set_mode(m);
            t[m] = graph_ms(run_all, 10) / copies;
        }
        /* alternative tile shapes of this kernel (same k split), with PDL */
        llmc_gemv::config base = llmc_gemv::choose(&g_dev, N, C, OC);
        const int alts[][3] = {{1, 1, 8}, {2, 1, 8}, {4, 1, 4}, {4, 2, 4}};
        const int mr_min = N <= 8 ? 1 : N <= 16 ? 2 : 4;
        char alt_txt[512] = "";
        for (auto &a : alts)
            for (int stage = 1; stage >= 0; stage--) {
                if (a[0] < mr_min || a[0] > (mr_min == 1 ? 2 : 4)) continue;
                llmc_gemv::config c = base;
                c.mr = a[0], c.nt = a[1], c.s = a[2], c.pdl = 1, c.stage = stage;
                if (llmc_gemv::smem_bytes(c) > llmc_gemv::kSmemLimit) continue;
                float ms = graph_ms([&] {
                               for (int i = 0; i < copies; i++)
                                   CK(llmc_gemv::launch(&g_dev, c, out, NULL, x, ws[i], b, N, C, OC));
                           }, 10) / copies;
                size_t l = strlen(alt_txt);
                snprintf(alt_txt + l, sizeof alt_txt - l, " %d/%d/%d/%s:%.2f", a[0], a[1], a[2], stage ? "cp" : "reg",
                         ms * 1e3);
            }
        /* a single call timed alone (launch latency included) */
        set_mode(2);
        int k = 0;
        float single =
            time_ms([&] { OKS(llmc_cuda_matmul_forward(&g_dev, out, NULL, x, tws[k++ % copies], tb, N, C, OC)); });
        printf("BENCH gemv N=%-2d C=%-4d OC=%-5d W %6.2f MB | per call in graph: cuBLASLt %7.2f us (%5.0f GB/s) | "
               "gemv %7.2f us (%5.0f GB/s, %3.0f%% of copy) | gemv+PDL %7.2f us (%5.0f GB/s) | alone %6.2f us | "
               "mr/nt/s/loads:us%s\n",
               N, C, OC, wbytes / 1e6, t[0] * 1e3, bytes / t[0] / 1e6, t[1] * 1e3, bytes / t[1] / 1e6,
               100.0 * bytes / t[1] / 1e6 / copy_gbs, t[2] * 1e3, bytes / t[2] / 1e6, single * 1e3, alt_txt);
    }
    for (auto p : ws) CK(cudaFree(p));
    for (void *p : {(void *)x, (void *)b, (void *)out}) CK(cudaFree(p));
}

/* int8 W with one scale per row, per call as bench_shape times it: the tensor-core kernel
 * (gemv.cu), the CUDA-core one (matmul_int8.cu) and bf16 gemv on the same shape. */
static void bench_int8(const std::vector<int> &Ns, int C, int OC) {
    const size_t n = (size_t)OC * C;
    int copies = (int)((400ull << 20) / n) + 1;
    if (copies < 4) copies = 4;
    std::vector<int8_t> q(n);
    for (size_t i = 0; i < n; i++) q[i] = (int8_t)((int)(rng_u64() % 255) - 127);
    std::vector<float> s(OC, 1.0f / 127);
    std::vector<void *> qs(copies), bs(copies);
    float *d_s = (float *)dmalloc(OC * 4);
    CK(cudaMemcpy(d_s, s.data(), OC * 4, cudaMemcpyHostToDevice));
    for (int i = 0; i < copies; i++) {
        qs[i] = dmalloc(n);
        CK(cudaMemcpy(qs[i], q.data(), n, cudaMemcpyHostToDevice));
        bs[i] = dmalloc(n * 2);
        up_bf16((bf16 *)bs[i], rand_normal(n, 0.03));
    }
    std::vector<lab_tensor> tq, tb;
    for (int i = 0; i < copies; i++) {
        tq.emplace_back(qs[i], OC, C);
        tq.back().t.dtype = LLMC_I8;
        tq.back().t.scales = d_s;
        tq.back().t.group_size = C;
        tb.emplace_back(bs[i], OC, C);
    }
    bf16 *x = (bf16 *)dmalloc((size_t)32 * C * 2), *out = (bf16 *)dmalloc((size_t)32 * OC * 2);
    up_bf16(x, rand_normal((size_t)32 * C, 1.0));
    set_mode(2);
    for (int N : Ns) {
        float t[3];
        for (int v = 0; v < 3; v++) {
            g_dev.tuning.int8_mma = v == 0;
            t[v] = graph_ms([&] {
                       for (int i = 0; i < copies; i++)
                           OKS(v < 2 ? llmc_cuda_matmul_forward_int8(&g_dev, out, NULL, x, tq[i], NULL, N, C, OC)
                                     : llmc_cuda_matmul_forward(&g_dev, out, NULL, x, tb[i], NULL, N, C, OC));
                   }, 10) / copies;
        }
        g_dev.tuning.int8_mma = 1;
        printf("BENCH int8 N=%-2d C=%-4d OC=%-5d | int8 tensor cores %7.2f us (%5.0f GB/s) | int8 CUDA cores %7.2f us "
               "| bf16 gemv %7.2f us | bf16/int8-tc %.2fx\n",
               N, C, OC, t[0] * 1e3, n / t[0] / 1e6, t[1] * 1e3, t[2] * 1e3, t[2] / t[0]);
    }
    for (int i = 0; i < copies; i++) {
        CK(cudaFree(qs[i]));
        CK(cudaFree(bs[i]));
    }
    for (void *p : {(void *)d_s, (void *)x, (void *)out}) CK(cudaFree(p));
}

/* ---- launch-latency experiments ---- */

__global__ void lab_empty_kernel(void) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
}

/* Residual add + layernorm (no mean/rstd outputs), one warp per row, C = 256 * V, launched as a
 * programmatic dependent: what layernorm_forward would cost in the decode chain with PDL. */
template <int V>
__global__ void lab_ln_pdl_kernel(bf16 *res_out, bf16 *out, const bf16 *a, const bf16 *b, const bf16 *w,
                                  const bf16 *bias, int N, int C) {
    llmc_pdl_launch_dependents();
    llmc_pdl_wait();
    const int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= N) return;
    float x[V][8];
    float sum = 0.f;
#pragma unroll
    for (int v = 0; v < V; v++) {
        const size_t at = (size_t)row * C + (v * 32 + lane) * 8;
        float y[8];
        ld_bf16<8>(x[v], a + at);
        ld_bf16<8>(y, b + at);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            x[v][k] += y[k];
            sum += x[v][k];
        }
        st_bf16<8>(res_out + at, x[v]);
    }
    const float mean = warp_sum(sum) / C;
    float sq = 0.f;
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int k = 0; k < 8; k++) sq += (x[v][k] - mean) * (x[v][k] - mean);
    const float rstd = rsqrtf(warp_sum(sq) / C + 1e-5f);
#pragma unroll
    for (int v = 0; v < V; v++) {
        const int c = (v * 32 + lane) * 8;
        float g[8], h[8], o[8];
        ld_bf16<8>(g, w + c);
        ld_bf16<8>(h, bias + c);
#pragma unroll
        for (int k = 0; k < 8; k++) o[k] = (x[v][k] - mean) * rstd * g[k] + h[k];
        st_bf16<8>(out + (size_t)row * C + c, o);
    }
}

static void lab_ln_pdl(bf16 *res_out, bf16 *out, const bf16 *a, const bf16 *b, const bf16 *w, const bf16 *bias, int N,
                       int C) {
    if (C != 768) { fprintf(stderr, "lab_ln_pdl: C=768 only\n"); exit(1); }
    CK(llmc_launch_pdl(1, lab_ln_pdl_kernel<3>, dim3((unsigned)LLMC_CEIL_DIV(N, 4)), dim3(128), 0, lab_stream(),
                       res_out, out, a, b, w, bias, N, C));
}

static void bench_latency(void) {
    /* empty kernels back to back in a graph */
    for (int pdl = 0; pdl < 2; pdl++) {
        float ms = graph_ms([&] {
            for (int i = 0; i < 100; i++)
                CK(llmc_launch_pdl(pdl, lab_empty_kernel, dim3(132), dim3(128), 0, lab_stream()));
        });
        printf("BENCH launch: empty kernel (132 x 128) in a graph, %s: %.2f us per kernel\n",
               pdl ? "PDL" : "plain", ms * 10.0);
    }
    /* one shape at N=1: weights hot in L2 (1 copy), in L2 (8 copies), cold (400 MB of copies) */
    for (int shape = 0; shape < 2; shape++) {
        const int N = 1, C = 768, OC = shape ? 2304 : 768;
        const size_t wbytes = (size_t)OC * C * 2;
        const int cold = (int)((400ull << 20) / wbytes) + 1;
        std::vector<bf16 *> ws(cold);
        for (auto &p : ws) p = (bf16 *)dmalloc(wbytes);
        up_bf16(ws[0], rand_normal((size_t)OC * C, 0.03));
        for (int i = 1; i < cold; i++) CK(cudaMemcpy(ws[i], ws[0], wbytes, cudaMemcpyDeviceToDevice));
        bf16 *x = (bf16 *)dmalloc((size_t)C * 2), *b = (bf16 *)dmalloc(OC * 2), *out = (bf16 *)dmalloc((size_t)OC * 2);
        up_bf16(x, rand_normal(C, 1.0));
        up_bf16(b, rand_normal(OC, 0.1));
        std::vector<lab_tensor> tws;
        for (bf16 *p : ws) tws.emplace_back(p, OC, C);
        const lab_tensor tb(b, OC);
        for (int copies : {1, 8, cold}) {
            const int calls = copies < 64 ? 64 : copies;
            char txt[512];
            int len = snprintf(txt, sizeof txt, "BENCH latency N=1 C=%d OC=%d, %3d weight copies:", C, OC, copies);
            for (int v = 0; v < 7; v++) { /* lt, gemv, gemv+PDL (auto prefetch), +PDL no prefetch, +PDL prefetch,
                                             +PDL register loads, +PDL W loaded after the wait */
                set_mode(v == 0 ? 0 : v == 1 ? 1 : 2);
                llmc_gemv::config c = llmc_gemv::choose(&g_dev, N, C, OC);
                if (v == 3) c.prefetch = 0;
                if (v == 4) c.prefetch = 1;
                if (v == 5) c.stage = 0;
                if (v == 6) c.early = 0;
                float ms = graph_ms([&] {
                               for (int i = 0; i < calls; i++) {
                                   if (v < 3)
                                       OKS(llmc_cuda_matmul_forward(&g_dev, out, NULL, x, tws[i % copies], tb, N, C,
                                                                    OC));
                                   else
                                       CK(llmc_gemv::launch(&g_dev, c, out, NULL, x, ws[i % copies], b, N, C, OC));
                               }
                           }, 10) / calls;
                static const char *nm[] = {"cuBLASLt", "gemv", "gemv+PDL", "PDL no-prefetch", "PDL prefetch",
                                           "PDL reg-loads", "PDL late-W"};
                len += snprintf(txt + len, sizeof txt - len, " %s %.2f us |", nm[v], ms * 1e3);
            }
            printf("%s\n", txt);
        }
        /* eager: a small copy, then the product (the prefill's last-logits pattern) */
        for (int v = 1; v <= 2; v++) {
            set_mode(v);
            float ms = time_ms([&] {
                CK(cudaMemcpyAsync(x, b, 256, cudaMemcpyDeviceToDevice, lab_stream()));
                OKS(llmc_cuda_matmul_forward(&g_dev, out, NULL, x, tws[0], tb, N, C, OC));
            });
            printf("BENCH eager d2d copy + gemv N=1 C=%d OC=%d %s: %.2f us\n", C, OC, v == 2 ? "PDL" : "plain", ms * 1e3);
        }
        for (auto p : ws) CK(cudaFree(p));
        for (void *p : {(void *)x, (void *)b, (void *)out}) CK(cudaFree(p));
    }
}

/* W written by the previous matmul (a product used as weights): the early W loads must be
 * turned off. In one graph, K rounds of: A = x1 @ W0[k]^T (16 x 768), then out[k] = x2 @ A^T
 * (W = A, 16 x 768): each out[k] must equal the same chain run with a sync between calls. */
static void test_chain(void) {
    const int K = 8, N1 = 16, C = 768, N2 = 1;
    bf16 *x1 = (bf16 *)dmalloc((size_t)N1 * C * 2), *x2 = (bf16 *)dmalloc((size_t)N2 * C * 2),
         *a = (bf16 *)dmalloc((size_t)N1 * C * 2), *outs = (bf16 *)dmalloc((size_t)K * N2 * N1 * 2);
    std::vector<bf16 *> w0(K);
    up_bf16(x1, rand_normal((size_t)N1 * C, 1.0));
    up_bf16(x2, rand_normal((size_t)N2 * C, 1.0));
    for (auto &p : w0) {
        p = (bf16 *)dmalloc((size_t)C * C * 2);
        up_bf16(p, rand_normal((size_t)C * C, 1.0 / sqrt(C)));
    }
    std::vector<uint16_t> want;
    for (int k = 0; k < K; k++) {
        OKS(llmc_cuda_matmul_forward(&g_dev, a, NULL, x1, lab_tensor(w0[k], C, C), NULL, N1, C, C));
        lab_sync();
        OKS(llmc_cuda_matmul_forward(&g_dev, outs + (size_t)k * N2 * N1, NULL, x2, lab_tensor(a, N1, C), NULL, N2, C,
                                     N1));
        lab_sync();
    }
    want = down_raw16(outs, (size_t)K * N2 * N1);
    poison(outs, (size_t)K * N2 * N1 * 2);
    graph_ms([&] {
        for (int k = 0; k < K; k++) {
            OKS(llmc_cuda_matmul_forward(&g_dev, a, NULL, x1, lab_tensor(w0[k], C, C), NULL, N1, C, C));
            OKS(llmc_cuda_matmul_forward(&g_dev, outs + (size_t)k * N2 * N1, NULL, x2, lab_tensor(a, N1, C), NULL, N2,
                                         C, N1));
        }
    }, 5);
    lab_sync();
    check_true("chain: W = the previous matmul's output, in one graph, bitwise equal to synced calls",
               down_raw16(outs, (size_t)K * N2 * N1) == want);
    for (auto p : w0) CK(cudaFree(p));
    for (void *p : {(void *)x1, (void *)x2, (void *)a, (void *)outs}) CK(cudaFree(p));
}

/* The matmuls and layernorms of one d12 decode step (attention left out) as one graph. */
static void bench_step(const std::vector<int> &Ns) {
    const int L = 12, C = 768, Vp = 50304, NM = 32;
    struct layer {
        bf16 *qkvw, *qkvb, *pw, *pb, *fw, *fb, *f2w, *f2b, *l1w, *l1b, *l2w, *l2b;
    };
    std::vector<layer> ls(L);
    auto param = [&](size_t n, double sc) {
        bf16 *p = (bf16 *)dmalloc(n * 2);
        std::vector<float> h = rand_normal(n < (1u << 20) ? n : (1u << 20), sc); /* tiled: cheap to draw */
        std::vector<float> full(n);
        for (size_t i = 0; i < n; i++) full[i] = h[i % h.size()];
        up_bf16(p, full);
        return p;
    };
    for (auto &l : ls) {
        l.qkvw = param((size_t)3 * C * C, 0.02); l.qkvb = param(3 * C, 0.01);
        l.pw = param((size_t)C * C, 0.02); l.pb = param(C, 0.01);
        l.fw = param((size_t)4 * C * C, 0.02); l.fb = param(4 * C, 0.01);
        l.f2w = param((size_t)4 * C * C, 0.02); l.f2b = param(C, 0.01);
        l.l1w = param(C, 0.1); l.l1b = param(C, 0.1); l.l2w = param(C, 0.1); l.l2b = param(C, 0.1);
    }
    bf16 *wte = param((size_t)Vp * C, 0.02), *lfw = param(C, 0.1), *lfb = param(C, 0.1);
    bf16 *x = param((size_t)NM * C, 1.0), *res = param((size_t)NM * C, 1.0), *ln = param((size_t)NM * C, 1.0),
         *qkv = param((size_t)NM * 3 * C, 1.0), *proj = param((size_t)NM * C, 0.1), *fch = param((size_t)NM * 4 * C, 1.0),
         *fg = param((size_t)NM * 4 * C, 1.0), *logits = param((size_t)NM * Vp, 1.0);
    float *mean = (float *)dmalloc(NM * 4), *rstd = (float *)dmalloc(NM * 4);
    for (int N : Ns) {
        int labln = 0; /* 1: the lab's PDL layernorm instead of the engine's */
        auto lnf = [&](bf16 *ro, bf16 *o, const bf16 *a, const bf16 *b2, const bf16 *w, const bf16 *bb) {
            if (labln) lab_ln_pdl(ro, o, a, b2, w, bb, N, C);
            else
                OKS(llmc_cuda_layernorm_forward(&g_dev, ro, o, mean, rstd, a, b2, lab_tensor(w, C), lab_tensor(bb, C),
                                                N, C));
        };
        auto mm = [&](bf16 *o, bf16 *pre, const bf16 *in, const bf16 *w, const bf16 *bias, int K, int OC) {
            OKS(llmc_cuda_matmul_forward(&g_dev, o, pre, in, lab_tensor(w, OC, K), lab_tensor(bias, OC), N, K, OC));
        };
        auto step = [&] {
            for (int l = 0; l < L; l++) {
                lnf(x, ln, res, proj, ls[l].l1w, ls[l].l1b);
                mm(qkv, NULL, ln, ls[l].qkvw, ls[l].qkvb, C, 3 * C);
                /* attention would read qkv here and write the C-wide input of the projection */
                mm(proj, NULL, qkv, ls[l].pw, ls[l].pb, C, C);
                lnf(res, ln, x, proj, ls[l].l2w, ls[l].l2b);
                mm(fg, fch, ln, ls[l].fw, ls[l].fb, C, 4 * C);
                mm(proj, NULL, fg, ls[l].f2w, ls[l].f2b, 4 * C, C);
            }
            lnf(x, ln, res, proj, lfw, lfb);
            mm(logits, NULL, ln, wte, NULL, C, Vp);
        };
        const double wbytes = 2.0 * (L * 12.0 * C * C + (double)Vp * C);
        float t[4];
        for (int m = 0; m < 4; m++) {
            set_mode(m < 3 ? m : 2);
            labln = m == 3;
            t[m] = graph_ms(step);
        }
        labln = 0;
        printf("BENCH step N=%-2d (12 x [ln, qkv, proj, ln, fc+gelu, fcproj] + ln + lm_head, %.0f MB of weights): "
               "cuBLASLt %7.1f us | gemv %7.1f us | gemv+PDL %7.1f us | gemv+PDL, PDL layernorm (lab) %7.1f us "
               "(%4.0f GB/s; weights alone at 3 TB/s: %.0f us)\n",
               N, wbytes / 1e6, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, t[3] * 1e3, wbytes / t[3] / 1e6,
               wbytes / 3e12 * 1e6);
    }
    for (auto &l : ls)
        for (void *p : {l.qkvw, l.qkvb, l.pw, l.pb, l.fw, l.fb, l.f2w, l.f2b, l.l1w, l.l1b, l.l2w, l.l2b})
            CK(cudaFree(p));
    for (void *p : {(void *)wte, (void *)lfw, (void *)lfb, (void *)x, (void *)res, (void *)ln, (void *)qkv,
                    (void *)proj, (void *)fch, (void *)fg, (void *)logits, (void *)mean, (void *)rstd})
        CK(cudaFree(p));
}

int main(int argc, char **argv) {
    lab_open();
    /* the kernel takes N <= 32 (tested and timed so); the engine routes N <= 16 by default */
    const int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    const int shapes[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50304}};
    if (argc > 1 && strcmp(argv[1], "int8") == 0) { /* the int8 benchmark alone */
        for (auto &s : shapes) bench_int8({1, 8, 32}, s[0], s[1]);
        return 0;
    }
    if (!bench_only) {
        const std::vector<int> Ns = {1, 2, 7, 16, 32};
        for (int pdl = 2; pdl >= 1; pdl--) {
            set_mode(pdl);
            printf("== mode %s\n", pdl == 2 ? "gemv + PDL" : "gemv, plain launch");
            if (pdl == 1) test_shape(Ns, 768, 50304); /* many waves: no prefetch; small grids below prefetch */
            test_shape(Ns, 80, 200);
            test_shape(Ns, 768, 768);
            if (pdl == 1) continue;
            test_shape(Ns, 768, 2304);
            test_shape(Ns, 768, 3072);
            test_shape(Ns, 3072, 768);
            test_shape(Ns, 768, 50304);
            test_shape({1, 3, 9, 31}, 8, 8);     /* tiny, k tail inside the first step */
            test_shape({1, 5, 17}, 24, 37);      /* odd OC: scalar stores */
            test_shape({2, 32}, 1600, 4800);     /* k split with an uneven last warp */
            test_shape({1, 4}, 6400, 96);        /* C beyond 12 warps x 256 */
            test_shape({1, 3}, 20, 36);          /* C % 8 != 0: cuBLASLt fallback */
            test_shape({2, 5}, 64, 40, 4);       /* misaligned x rows: fallback */
        }
        set_mode(2);
        test_chain();
        lt_reference_error(1, 768, 2304);
        lt_reference_error(32, 3072, 768);
    }
    if (argc > 1 && strcmp(argv[1], "test") == 0) return lab_finish("gemv");
    const double copy = copy_bandwidth_gbs();
    printf("device-to-device copy: %.0f GB/s (read + write)\n", copy);
    bench_latency();
    for (auto &s : shapes) bench_shape({1, 8, 16, 32}, s[0], s[1], copy);
    for (auto &s : shapes) bench_int8({1, 8, 32}, s[0], s[1]);
    bench_step({1, 8, 16, 32});
    llmc_model_options defaults;
    llmc_model_options_default(&defaults);
    g_lab_max_n = defaults.skinny_rows;
    bench_step({32}); /* as the engine runs it by default */
    set_mode(2);
    return lab_finish("gemv");
}

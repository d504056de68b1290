// bench_cpu_matmul.c — checks the CPU matmul ops against a double-precision loop and
// reports GFLOP/s for the GPT-2 d12 shapes (N = B*T = 256 rows by default).
//
//   make && OMP_NUM_THREADS=2 build/bench_cpu_matmul   # checks + timings (make builds it with the core)
//   build/bench_cpu_matmul check | perf [N]             # one part only
//   build/bench_cpu_matmul decode [N]                   # one d12 decode step's matmuls, fp32 vs int8
#include <math.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "cpu/cpu_internal.h"

static llmc_device dev;
static const llmc_backend_ops *ops;
static int failures;

/* The ops take weights as tensors that carry their dtype; the bench's buffers are fp32 arrays. */
static llmc_tensor f32(const float *p, int rows, int cols) {
    return (llmc_tensor){.name = "w", .dtype = LLMC_F32, .data = (void *)p, .ndim = rows > 1 ? 2 : 1,
                         .shape = {rows > 1 ? rows : cols, cols}, .numel = (size_t)rows * cols};
}
static llmc_status mm_fwd(float *out, float *pre_gelu, const float *inp, const float *w, const float *bias, int N,
                          int C, int OC) {
    llmc_tensor wt = f32(w, OC, C), bt = f32(bias, 1, OC);
    return ops->matmul_forward(&dev, out, pre_gelu, inp, &wt, bias ? &bt : NULL, N, C, OC);
}
static llmc_status mm_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                          const float *pre_gelu, int N, int C, int OC) {
    llmc_tensor wt = f32(w, OC, C), dwt = f32(dw, OC, C), dbt = f32(dbias, 1, OC);
    return ops->matmul_backward(&dev, dinp, dw ? &dwt : NULL, dbias ? &dbt : NULL, dout, inp, &wt, pre_gelu, N, C, OC);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(size_t n, float scale) {
    float *p = llmc_cpu_aligned_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
static float *nan_buf(size_t n) {
    float *p = llmc_cpu_aligned_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static float *copy_buf(const float *s, size_t n) {
    float *p = llmc_cpu_aligned_alloc(n * sizeof(float));
    memcpy(p, s, n * sizeof(float));
    return p;
}

static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
static double dgelu_d(double x) {
    double k = sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

/* ||got - ref|| / ||ref|| over n values (NaN anywhere gives NaN, which never passes) */
typedef struct { double num, den; } err_acc;
static void err_add(err_acc *e, double got, double ref) {
    e->num += (got - ref) * (got - ref);
    e->den += ref * ref;
}
static double err_rel(const err_acc *e) { return sqrt(e->num) / (e->den > 0 ? sqrt(e->den) : 1.0); }
static void check(const char *what, double rel, double tol) {
    int ok = rel <= tol; /* false for NaN */
    if (!ok) failures++;
    printf("  %-58s rel err %.2e %s\n", what, rel, ok ? "ok" : "FAIL");
}

/* ---- reference products on a subset of rows (rows = NULL: all) ---- */

static double ref_fwd(const float *inp, const float *w, const float *bias, int i, int o, int C) {
    double s = bias ? bias[o] : 0.0;
    for (int c = 0; c < C; c++) s += (double)inp[(size_t)i * C + c] * w[(size_t)o * C + c];
    return s;
}
static double ref_bwd_data(const float *dout, const float *w, int i, int c, int OC, int C) {
    double s = 0.0;
    for (int o = 0; o < OC; o++) s += (double)dout[(size_t)i * OC + o] * w[(size_t)o * C + c];
    return s;
}
static double ref_bwd_weight(const float *dout, const float *inp, int o, int c, int N, int C, int OC) {
    double s = 0.0;
    for (int i = 0; i < N; i++) s += (double)dout[(size_t)i * OC + o] * inp[(size_t)i * C + c];
    return s;
}

/* Full check of every op variant at one shape; stride > 1 samples rows for big shapes. */
static void check_shape(int N, int C, int OC, int stride) {
    char name[128];
    printf("N=%d C=%d OC=%d%s\n", N, C, OC, stride > 1 ? " (sampled rows)" : "");
    float *inp = rand_buf((size_t)N * C, 1.0f), *w = rand_buf((size_t)OC * C, 0.5f), *bias = rand_buf(OC, 1.0f);
    float *dout = rand_buf((size_t)N * OC, 1.0f), *pre = rand_buf((size_t)N * C, 2.0f);
    float *out = nan_buf((size_t)N * OC), *pg = nan_buf((size_t)N * OC);
    float *dinp = nan_buf((size_t)N * C);
    float *dw0 = rand_buf((size_t)OC * C, 1.0f), *db0 = rand_buf(OC, 1.0f);
    float *dw = copy_buf(dw0, (size_t)OC * C), *db = copy_buf(db0, OC);

    for (int variant = 0; variant < 3; variant++) { /* no bias, bias, bias + gelu */
        const float *b = variant ? bias : NULL;
        for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = pg[i] = NAN;
        llmc_status st = mm_fwd(out, variant == 2 ? pg : NULL, inp, w, b, N, C, OC);
        err_acc e1 = {0, 0}, e2 = {0, 0};
        for (int i = 0; i < N; i += stride)
            for (int o = 0; o < OC; o++) {
                double r = ref_fwd(inp, w, b, i, o, C);
                if (variant == 2) {
                    err_add(&e1, pg[(size_t)i * OC + o], r);
                    err_add(&e2, out[(size_t)i * OC + o], gelu_d(r));
                } else {
                    err_add(&e1, out[(size_t)i * OC + o], r);
                }
            }
        snprintf(name, sizeof name, "fwd %s", variant == 0 ? "" : variant == 1 ? "+bias" : "+bias, pre_gelu");
        check(name, st == LLMC_OK ? err_rel(&e1) : NAN, 1e-5);
        if (variant == 2) check("fwd +bias, gelu out", err_rel(&e2), 1e-5);
    }

    for (int variant = 0; variant < 2; variant++) { /* plain, times gelu'(pre) */
        for (size_t i = 0; i < (size_t)N * C; i++) dinp[i] = NAN;
        memcpy(dw, dw0, (size_t)OC * C * sizeof(float));
        memcpy(db, db0, (size_t)OC * sizeof(float));
        llmc_status st = mm_bwd(dinp, dw, db, dout, inp, w, variant ? pre : NULL, N, C, OC);
        err_acc ed = {0, 0}, ew = {0, 0}, eb = {0, 0};
        for (int i = 0; i < N; i += stride)
            for (int c = 0; c < C; c++) {
                double r = ref_bwd_data(dout, w, i, c, OC, C);
                if (variant) r *= dgelu_d(pre[(size_t)i * C + c]);
                err_add(&ed, dinp[(size_t)i * C + c], r);
            }
        for (int o = 0; o < OC; o += stride) {
            for (int c = 0; c < C; c++)
                err_add(&ew, dw[(size_t)o * C + c], dw0[(size_t)o * C + c] + ref_bwd_weight(dout, inp, o, c, N, C, OC));
        }
        for (int o = 0; o < OC; o++) {
            double s = db0[o];
            for (int i = 0; i < N; i++) s += dout[(size_t)i * OC + o];
            err_add(&eb, db[o], s);
        }
        check(variant ? "bwd dinp * gelu'(pre)" : "bwd dinp", st == LLMC_OK ? err_rel(&ed) : NAN, 1e-5);
        if (!variant) {
            check("bwd dw (+=)", err_rel(&ew), 1e-5);
            check("bwd dbias (+=)", err_rel(&eb), 1e-5);
        }
    }

    /* dinp == NULL and dbias == NULL leave the rest alone */
    memcpy(dw, dw0, (size_t)OC * C * sizeof(float));
    memcpy(db, db0, (size_t)OC * sizeof(float));
    mm_bwd(NULL, dw, NULL, dout, inp, w, NULL, N, C, OC);
    err_acc ew = {0, 0};
    for (int o = 0; o < OC; o += stride)
        for (int c = 0; c < C; c++)
            err_add(&ew, dw[(size_t)o * C + c], dw0[(size_t)o * C + c] + ref_bwd_weight(dout, inp, o, c, N, C, OC));
    check("bwd dw only (dinp, dbias NULL)", err_rel(&ew) + (memcmp(db, db0, OC * sizeof(float)) ? 1.0 : 0.0), 1e-5);

    /* determinism: the same bits twice, and with 1, 3 and all threads */
    {
        int nt = omp_get_max_threads(), counts[3] = {nt, 1, 3}, same = 1;
        float *o[3], *gl[3], *d[3], *wg[3], *bg[3];
        for (int r = 0; r < 3; r++) {
            o[r] = nan_buf((size_t)N * OC), gl[r] = nan_buf((size_t)N * OC), d[r] = nan_buf((size_t)N * C);
            wg[r] = copy_buf(dw0, (size_t)OC * C), bg[r] = copy_buf(db0, OC);
            omp_set_num_threads(counts[r]);
            mm_fwd(o[r], gl[r], inp, w, bias, N, C, OC);
            mm_bwd(d[r], wg[r], bg[r], dout, inp, w, pre, N, C, OC);
        }
        omp_set_num_threads(nt);
        for (int r = 1; r < 3; r++)
            same = same && !memcmp(o[0], o[r], (size_t)N * OC * 4) && !memcmp(gl[0], gl[r], (size_t)N * OC * 4) &&
                   !memcmp(d[0], d[r], (size_t)N * C * 4) && !memcmp(wg[0], wg[r], (size_t)OC * C * 4) &&
                   !memcmp(bg[0], bg[r], OC * 4);
        mm_fwd(o[1], gl[1], inp, w, bias, N, C, OC); /* and a plain repeat */
        same = same && !memcmp(o[0], o[1], (size_t)N * OC * 4) && !memcmp(gl[0], gl[1], (size_t)N * OC * 4);
        if (!same) failures++;
        printf("  %-58s %s\n", "bit-identical: repeat, and 1 / 3 / all threads", same ? "ok" : "FAIL");
        for (int r = 0; r < 3; r++) {
            llmc_cpu_aligned_free(o[r]), llmc_cpu_aligned_free(gl[r]), llmc_cpu_aligned_free(d[r]);
            llmc_cpu_aligned_free(wg[r]), llmc_cpu_aligned_free(bg[r]);
        }
    }

    float *bufs[] = {inp, w, bias, dout, pre, out, pg, dinp, dw0, db0, dw, db};
    for (int i = 0; i < 12; i++) llmc_cpu_aligned_free(bufs[i]);
}

/* Transpose-flag coverage of the raw sgemm (the ops use three of the four combinations),
 * plus a tall shape deep enough to need several passes over K. */
static void check_sgemm(int M, int N, int K, int ta, int tb, int accumulate) {
    float *A = rand_buf((size_t)M * K, 1.0f), *B = rand_buf((size_t)K * N, 1.0f);
    float *C = accumulate ? rand_buf((size_t)M * N, 1.0f) : nan_buf((size_t)M * N);
    float *C0 = copy_buf(C, (size_t)M * N);
    long lda = ta ? M : K, ldb = tb ? K : N;
    llmc_status st = llmc_cpu_sgemm(&dev, ta, tb, M, N, K, A, lda, B, ldb, C, N, accumulate, NULL);
    err_acc e = {0, 0};
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = accumulate ? C0[(size_t)i * N + j] : 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            err_add(&e, C[(size_t)i * N + j], s);
        }
    char name[96];
    snprintf(name, sizeof name, "sgemm %dx%dx%d transA=%d transB=%d%s", M, N, K, ta, tb, accumulate ? " C+=" : "");
    check(name, st == LLMC_OK ? err_rel(&e) : NAN, 1e-5);
    llmc_cpu_aligned_free(A), llmc_cpu_aligned_free(B), llmc_cpu_aligned_free(C), llmc_cpu_aligned_free(C0);
}

static void check_sgemm_flags(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) check_sgemm(37, 29, 300, ta, tb, ta ^ tb);
    check_sgemm(400, 300, 5000, 1, 1, 1);
    check_sgemm(300, 400, 5000, 0, 0, 0);
    check_sgemm(1, 1, 1, 0, 0, 0);
}

/* ---- timing ---- */

/* Wall time by default. -DBENCH_CPU_TIME uses process CPU time instead: with
 * OMP_NUM_THREADS=1 on a busy shared machine it is far less noisy for A/B tuning. */
#ifdef BENCH_CPU_TIME
#include <time.h>
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
#else
static double now(void) { return omp_get_wtime(); }
#endif

typedef enum { FWD, BWD_DATA, BWD_WEIGHT } kind;
static double time_op(kind k, int N, int C, int OC, int reps, float *inp, float *w, float *bias, float *out,
                      float *dout, float *dinp, float *dw) {
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        if (k == FWD) mm_fwd(out, NULL, inp, w, bias, N, C, OC);
        if (k == BWD_DATA) mm_bwd(dinp, NULL, NULL, dout, inp, w, NULL, N, C, OC);
        if (k == BWD_WEIGHT) mm_bwd(NULL, dw, NULL, dout, inp, w, NULL, N, C, OC);
        double t = now() - t0;
        if (r > 0 && t < best) best = t; /* first run warms caches and the workspace */
    }
    return best;
}

static void perf(int N) {
    struct { int C, OC, count; const char *what; } shapes[] = {
        {768, 2304, 12, "qkv"}, {768, 768, 12, "attproj"}, {768, 3072, 12, "fc"}, {3072, 768, 12, "fcproj"},
        {768, 50304, 1, "lm head"},
    };
    printf("\nGFLOP/s with %d threads, N=%d rows (best of several runs)\n", omp_get_max_threads(), N);
    printf("%-8s %5s %6s %10s %10s %10s\n", "layer", "C", "OC", "fwd", "bwd-data", "bwd-weight");
    double step_time = 0, step_flops = 0;
    for (int s = 0; s < 5; s++) {
        int C = shapes[s].C, OC = shapes[s].OC;
        float *inp = rand_buf((size_t)N * C, 1.0f), *w = rand_buf((size_t)OC * C, 0.1f), *bias = rand_buf(OC, 1.0f);
        float *out = nan_buf((size_t)N * OC), *dout = rand_buf((size_t)N * OC, 1.0f), *dinp = nan_buf((size_t)N * C);
        float *dw = rand_buf((size_t)OC * C, 1.0f);
        double flops = 2.0 * N * C * OC;
        int reps = OC > 10000 ? 3 : 10;
        double t[3];
        for (int k = 0; k < 3; k++) t[k] = time_op((kind)k, N, C, OC, reps, inp, w, shapes[s].OC == 50304 ? NULL : bias,
                                                   out, dout, dinp, dw);
        printf("%-8s %5d %6d %10.1f %10.1f %10.1f\n", shapes[s].what, C, OC, flops / t[0] / 1e9, flops / t[1] / 1e9,
               flops / t[2] / 1e9);
        step_time += shapes[s].count * (t[0] + t[1] + t[2]);
        step_flops += shapes[s].count * 3 * flops;
        float *bufs[] = {inp, w, bias, out, dout, dinp, dw};
        for (int i = 0; i < 7; i++) llmc_cpu_aligned_free(bufs[i]);
    }
    printf("d12 step, matmuls only: %.1f GFLOP in %.3f s = %.1f GFLOP/s\n", step_flops / 1e9, step_time,
           step_flops / step_time / 1e9);
}

/* One d12 decode step's 49 matmuls back to back, each layer's weights its own buffer, so that the
 * step streams every weight from memory as a real step does: fp32 against int8 (per output row,
 * the default scheme), best of several steps, N rows (1: batch-1 decode). */
static void decode(int N) {
    enum { L = 12, MATS = 4 * L + 1 };
    int C[MATS], OC[MATS];
    for (int l = 0; l < L; l++) {
        int c[4] = {768, 768, 768, 3072}, oc[4] = {2304, 768, 3072, 768};
        for (int m = 0; m < 4; m++) C[4 * l + m] = c[m], OC[4 * l + m] = oc[m];
    }
    C[MATS - 1] = 768, OC[MATS - 1] = 50304;
    float *wf[MATS], *ws[MATS];
    llmc_tensor wq[MATS];
    size_t bytes_f = 0, bytes_q = 0;
    for (int i = 0; i < MATS; i++) {
        size_t n = (size_t)OC[i] * C[i];
        wf[i] = rand_buf(n, 0.05f);
        ws[i] = llmc_cpu_aligned_alloc(OC[i] * sizeof(float));
        int8_t *q = llmc_cpu_aligned_alloc(n);
        llmc_quantize_int8(wf[i], (size_t)OC[i], C[i], 0, q, ws[i]); /* the engine's scheme, one scale a row */
        wq[i] = (llmc_tensor){.name = "w", .dtype = LLMC_I8, .data = q, .ndim = 2, .shape = {OC[i], C[i]}, .numel = n,
                              .scales = ws[i], .group_size = C[i]};
        bytes_f += n * 4, bytes_q += n + OC[i] * 4;
    }
    float *inp = rand_buf((size_t)N * 3072, 1.0f), *out = nan_buf((size_t)N * 50304);
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < 8; r++)
        for (int v = 0; v < 2; v++) { /* alternated, so that a busy machine slows both alike */
            double t0 = now();
            for (int i = 0; i < MATS; i++) {
                if (v == 0) mm_fwd(out, NULL, inp, wf[i], NULL, N, C[i], OC[i]);
                else ops->matmul_forward(&dev, out, NULL, inp, &wq[i], NULL, N, C[i], OC[i]);
            }
            double t = now() - t0;
            if (r > 0 && t < best[v]) best[v] = t;
        }
    printf("\nd12 decode-step matmuls, N=%d, %d threads (best of 7)\n", N, omp_get_max_threads());
    printf("fp32: %7.2f ms  %6.1f GB/s\nint8: %7.2f ms  %6.1f GB/s  (%.2fx fp32)\n", best[0] * 1e3,
           bytes_f / best[0] / 1e9, best[1] * 1e3, bytes_q / best[1] / 1e9, best[0] / best[1]);
    for (int i = 0; i < MATS; i++) {
        llmc_cpu_aligned_free(wf[i]);
        llmc_cpu_aligned_free(ws[i]);
        llmc_cpu_aligned_free(wq[i].data);
    }
    llmc_cpu_aligned_free(inp);
    llmc_cpu_aligned_free(out);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    if (llmc_device_open(&dev, "cpu", 0, &(llmc_device_tuning){0}) != LLMC_OK) {
        fprintf(stderr, "open: %s\n", dev.err);
        return 1;
    }
    ops = dev.ops;
    if (!strcmp(mode, "decode")) {
        decode(argc > 2 ? atoi(argv[2]) : 1);
        llmc_device_close(&dev);
        return 0;
    }
    if (strcmp(mode, "perf")) {
        printf("correctness vs double-precision loops (%d threads)\n", omp_get_max_threads());
        check_sgemm_flags();
        int awkward[][3] = {{1, 48, 5}, {7, 80, 17}, {37, 13, 50}, {64, 96, 33}, {100, 300, 129}, {256, 768, 2304},
                            {256, 3072, 768}, {5, 1000, 16}, {1600, 70, 1700}, {3100, 40, 3090}};
        for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++) check_shape(awkward[i][0], awkward[i][1], awkward[i][2], 1);
        check_shape(256, 768, 50304, 97); /* LM head: every 97th row / column of dW */
    }
    if (strcmp(mode, "check")) perf(argc > 2 ? atoi(argv[2]) : 256);
    llmc_device_close(&dev);
    if (failures) printf("\n%d FAILED\n", failures);
    return failures ? 1 : 0;
}

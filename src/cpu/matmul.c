/* matmul.c — fp32 GEMM (packed panels, register-tiled microkernel, OpenMP) and
 * the matmul forward/backward ops built on it.
 *
 * Blocking: K is cut into KC-deep slices. For each slice, op(A) and op(B) are
 * copied into panels (MR rows / NR columns interleaved per k) so that the
 * microkernel reads both with unit stride and keeps an MR x NR tile of C in
 * registers. The operand along the short side of C (A when C is wide, B when C
 * is tall) is packed once per slice by all threads together; the long side is cut
 * into work units that threads take dynamically, each packing its own piece.
 * Every C element adds up its K products in the same order whichever thread
 * computes it, so the bits do not depend on the thread count or scheduling. */
#include <stdlib.h>
#include <omp.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include "cpu_internal.h"

#define MR 6
#define NR 16
/* block sizes (overridable with -D for tuning) */
#ifndef KC
#define KC 256 /* a 16 x KC panel of B (16 KB) fits L1 */
#endif
#ifndef UNIT_N
#define UNIT_N 64 /* C columns per work unit when C is wide (multiple of NR); small units balance better */
#endif
#ifndef UNIT_M
#define UNIT_M 144 /* C rows per work unit when C is tall (multiple of MR) */
#endif
#ifndef SHARE_M
#define SHARE_M 1536 /* at most this many rows of A shared at once (multiple of MR) */
#endif
#ifndef SHARE_N
#define SHARE_N 3072 /* at most this many columns of B shared at once (multiple of NR) */
#endif
#ifndef SHARE_FLOATS
#define SHARE_FLOATS (1 << 20) /* ~4 MB of the shared operand packed per pass */
#endif
#ifndef WIDE_ROWS_OUTER
#define WIDE_ROWS_OUTER 0 /* 1: loop order with the A panel in L1 for wide C (measured slower) */
#endif

typedef struct gemm {
    int transA, transB, M, N, K, accumulate;
    const float *A, *B;
    long lda, ldb, ldc;
    float *C;
    const llmc_cpu_epilogue *epi;
} gemm;

/* ---------------- microkernel: C[MR x NR] (+)= sum_k a[k*MR + r] * b[k*NR + c] ---------------- */

#if defined(__GNUC__) && !defined(LLMC_PLAIN_C_GEMM)
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4))); /* unaligned access to C */
#if defined(__FMA__)
/* explicit FMA: -std=c11 (ISO mode) turns off gcc's automatic contraction of a*b+c */
#define MADD(acc, x, y) acc = (v8)_mm256_fmadd_ps((__m256)(x), (__m256)(y), (__m256)(acc))
#else
#define MADD(acc, x, y) acc += (x) * (y)
#endif

static void kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c, long ldc, int load) {
    /* C is added at the end (not loaded into the accumulators first) so that the
     * prefetch issued here has the whole k loop to bring the tile in from memory */
    for (int r = 0; r < MR; r++) {
        __builtin_prefetch(c + r * ldc, 1);
        __builtin_prefetch(c + r * ldc + NR - 1, 1);
    }
    v8 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = (v8){0};
    /* packed panels are 64-byte aligned and each k step of b is 64 bytes */
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        v8 b0 = *(const v8 *)(b), b1 = *(const v8 *)(b + 8);
        v8 a0;
#define STEP(r) a0 = (v8){a[r], a[r], a[r], a[r], a[r], a[r], a[r], a[r]}; MADD(c##r##0, a0, b0); MADD(c##r##1, a0, b1);
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
#undef STEP
        a += MR;
        b += NR;
    }
    if (load) {
#define ADD(r) c##r##0 += *(const v8u *)(c + r * ldc); c##r##1 += *(const v8u *)(c + r * ldc + 8);
        ADD(0) ADD(1) ADD(2) ADD(3) ADD(4) ADD(5)
#undef ADD
    }
#define ST(r) *(v8u *)(c + r * ldc) = c##r##0; *(v8u *)(c + r * ldc + 8) = c##r##1;
    ST(0) ST(1) ST(2) ST(3) ST(4) ST(5)
#undef ST
}
#else
static void kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c, long ldc, int load) {
    float acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++) {
            float ar = a[k * MR + r];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[r][j] += ar * b[k * NR + j];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r * ldc + j] = load ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}
#endif

/* ---------------- packing ---------------- */

/* rows [i0, i0+mc) x k [p0, p0+kc) of op(A) into MR-row panels: dst[panel][k][r], zero padded */
static void pack_a(const gemm *g, int i0, int mc, int p0, int kc, float *restrict dst) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = llmc_cpu_min(MR, mc - ir);
        float *restrict d = dst + (size_t)ir * kc;
        if (!g->transA) {
            for (int r = 0; r < mr; r++) {
                const float *restrict s = g->A + (size_t)(i0 + ir + r) * g->lda + p0;
                for (int k = 0; k < kc; k++) d[k * MR + r] = s[k];
            }
            for (int r = mr; r < MR; r++)
                for (int k = 0; k < kc; k++) d[k * MR + r] = 0.0f;
        } else {
            for (int k = 0; k < kc; k++) {
                const float *restrict s = g->A + (size_t)(p0 + k) * g->lda + i0 + ir;
                for (int r = 0; r < MR; r++) d[k * MR + r] = r < mr ? s[r] : 0.0f;
            }
        }
    }
}

#if defined(__AVX__)
/* d[k*NR + c] = s[c*lds + k] for an 8 x 8 block: transpose in registers */
static inline void transpose8x8(const float *s, long lds, float *d) {
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds), r2 = _mm256_loadu_ps(s + 2 * lds),
           r3 = _mm256_loadu_ps(s + 3 * lds), r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds),
           r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* k [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-column panels: dst[panel][k][c], zero padded */
static void pack_b(const gemm *g, int j0, int nc, int p0, int kc, float *restrict dst) {
    for (int jr = 0; jr < nc; jr += NR) {
        int nr = llmc_cpu_min(NR, nc - jr);
        float *restrict d = dst + (size_t)jr * kc;
        if (!g->transB) {
            for (int k = 0; k < kc; k++) {
                const float *restrict s = g->B + (size_t)(p0 + k) * g->ldb + j0 + jr;
                if (nr == NR) {
                    for (int c = 0; c < NR; c++) d[k * NR + c] = s[c];
                } else {
                    for (int c = 0; c < NR; c++) d[k * NR + c] = c < nr ? s[c] : 0.0f;
                }
            }
        } else {
            const float *s = g->B + (size_t)(j0 + jr) * g->ldb + p0;
            int k0 = 0;
#if defined(__AVX__)
            if (nr == NR) /* whole panel: 8 x 8 register transposes (d is 64-byte aligned) */
                for (; k0 + 8 <= kc; k0 += 8) {
                    transpose8x8(s + k0, g->ldb, d + (size_t)k0 * NR);
                    transpose8x8(s + 8 * g->ldb + k0, g->ldb, d + (size_t)k0 * NR + 8);
                }
#endif
            for (int c = 0; c < nr; c++)
                for (int k = k0; k < kc; k++) d[k * NR + c] = s[(size_t)c * g->ldb + k];
            for (int c = nr; c < NR; c++)
                for (int k = k0; k < kc; k++) d[k * NR + c] = 0.0f;
        }
    }
}

/* ---------------- epilogue on one finished tile ---------------- */

static void epilogue(const llmc_cpu_epilogue *e, float *c, long ldc, int mr, int nr, int i0, int j0) {
    for (int r = 0; r < mr; r++) {
        float *restrict row = c + r * ldc;
        if (e->bias) {
            const float *restrict bias = e->bias + j0;
#pragma omp simd
            for (int j = 0; j < nr; j++) row[j] += bias[j];
        }
        if (e->gelu_out) {
            float *restrict o = e->gelu_out + (size_t)(i0 + r) * e->ld + j0;
#pragma omp simd
            for (int j = 0; j < nr; j++) o[j] = llmc_gelu(row[j]);
        }
        if (e->dgelu_pre) {
            const float *restrict p = e->dgelu_pre + (size_t)(i0 + r) * e->ld + j0;
#pragma omp simd
            for (int j = 0; j < nr; j++) row[j] *= llmc_dgelu(p[j]);
        }
    }
}

/* ---------------- macro kernel: packed A rows [i0, i0+mc) x packed B columns [j0, j0+nc) ---------------- */

static inline void tile(const gemm *g, const float *apan, const float *bpan, int i, int j, int mr, int nr, int kc,
                        int load, int last) {
    float *c = g->C + (size_t)i * g->ldc + j;
    if (mr == MR && nr == NR) {
        kernel(kc, apan, bpan, c, g->ldc, load);
    } else {
        /* edge tile: same arithmetic through a full-size buffer */
        _Alignas(64) float tmp[MR * NR];
        if (load)
            for (int r = 0; r < mr; r++) memcpy(tmp + r * NR, c + r * g->ldc, nr * sizeof(float));
        kernel(kc, apan, bpan, tmp, NR, load);
        for (int r = 0; r < mr; r++) memcpy(c + r * g->ldc, tmp + r * NR, nr * sizeof(float));
    }
    if (last && g->epi) epilogue(g->epi, c, g->ldc, mr, nr, i, j);
}

/* rows_outer: one A panel stays in L1 while the B panels stream (B is the small private piece);
 * otherwise one B panel stays in L1 while the A panels stream. */
static void macro(const gemm *g, const float *ap, int i0, int mc, const float *bp, int j0, int nc, int kc, int load,
                  int last, int rows_outer) {
    if (rows_outer) {
        for (int ir = 0; ir < mc; ir += MR)
            for (int jr = 0; jr < nc; jr += NR)
                tile(g, ap + (size_t)ir * kc, bp + (size_t)jr * kc, i0 + ir, j0 + jr, llmc_cpu_min(MR, mc - ir),
                     llmc_cpu_min(NR, nc - jr), kc, load, last);
    } else {
        for (int jr = 0; jr < nc; jr += NR)
            for (int ir = 0; ir < mc; ir += MR)
                tile(g, ap + (size_t)ir * kc, bp + (size_t)jr * kc, i0 + ir, j0 + jr, llmc_cpu_min(MR, mc - ir),
                     llmc_cpu_min(NR, nc - jr), kc, load, last);
    }
}

/* ---------------- driver ---------------- */

/* K == 0: the product is empty; only clear (unless accumulating) and run the epilogue */
static void gemm_empty(const gemm *g) {
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + (size_t)i * g->ldc;
        if (!g->accumulate) memset(c, 0, (size_t)g->N * sizeof(float));
        if (g->epi) epilogue(g->epi, c, g->ldc, 1, g->N, i, 0);
    }
}

/* How the work is cut, from the shape alone (never from the thread count). */
typedef struct plan {
    int wide;          /* N >= M: A is shared and units are column blocks; else B is shared, units are row blocks */
    int sdim, pdim;    /* extent of the shared / the split side of C */
    int sstep, sgran;  /* shared side: rows or columns per pass, and its panel width (MR or NR) */
    int ustep;         /* split side: extent of one work unit */
    int kchunk;        /* K per pass over the shared operand (a multiple of KC) */
    size_t shared_floats, priv_floats;
} plan;

static plan make_plan(int M, int N, int K) {
    plan p;
    p.wide = N >= M;
    p.sdim = p.wide ? M : N;
    p.pdim = p.wide ? N : M;
    p.sstep = p.wide ? SHARE_M : SHARE_N;
    p.sgran = p.wide ? MR : NR;
    p.ustep = p.wide ? UNIT_N : UNIT_M;
    int sc = llmc_cpu_min(p.sstep, p.sdim);
    int sc_pad = (sc + p.sgran - 1) / p.sgran * p.sgran;
    /* pack up to ~SHARE_FLOATS of the shared operand per pass: fewer passes, fewer barriers */
    long slices = SHARE_FLOATS / ((long)sc_pad * KC);
    if (slices < 1) slices = 1;
    long kslices = (K + KC - 1) / KC;
    if (slices > kslices) slices = kslices;
    p.kchunk = (int)slices * KC;
    p.shared_floats = ((size_t)sc_pad * p.kchunk + 15) & ~(size_t)15;
    p.priv_floats = (size_t)KC * p.ustep;
    return p;
}

/* One pass = one block of the shared operand (sstep wide, kchunk deep), packed by all
 * threads into one of two buffers, then the work units. Two buffers let a thread move
 * on to packing the next pass while others still compute: one barrier per pass. */
static void gemm_run(const gemm *g, const plan *pl, float *shared0, float *shared1, float *priv_all, int nt) {
    const int K = g->K;
#pragma omp parallel num_threads(nt)
    {
        float *priv = priv_all + pl->priv_floats * omp_get_thread_num();
        int pass = 0;
        for (int s0 = 0; s0 < pl->sdim; s0 += pl->sstep) {
            int sc = llmc_cpu_min(pl->sstep, pl->sdim - s0);
            int npanels = (sc + pl->sgran - 1) / pl->sgran;
            size_t slice_floats = (size_t)npanels * pl->sgran * KC;
            for (int q0 = 0; q0 < K; q0 += pl->kchunk, pass++) {
                float *shared = (pass & 1) ? shared1 : shared0;
                int qn = llmc_cpu_min(pl->kchunk, K - q0);
                int nslices = (qn + KC - 1) / KC;
#pragma omp for schedule(static)
                for (int idx = 0; idx < nslices * npanels; idx++) {
                    int t = idx / npanels, p = idx % npanels;
                    int pc = q0 + t * KC, kc = llmc_cpu_min(KC, K - pc);
                    int off = p * pl->sgran, w = llmc_cpu_min(pl->sgran, sc - off);
                    float *dst = shared + t * slice_floats + (size_t)off * kc;
                    if (pl->wide) pack_a(g, s0 + off, w, pc, kc, dst);
                    else pack_b(g, s0 + off, w, pc, kc, dst);
                }
                /* (implicit barrier: this pass's shared panels are complete, and every thread
                 * has finished the previous pass, whose buffer the next pass overwrites) */
                int nunits = (pl->pdim + pl->ustep - 1) / pl->ustep;
#pragma omp for schedule(dynamic, 1) nowait
                for (int u = 0; u < nunits; u++) {
                    int p0 = u * pl->ustep, pw = llmc_cpu_min(pl->ustep, pl->pdim - p0);
                    for (int t = 0; t < nslices; t++) {
                        int pc = q0 + t * KC, kc = llmc_cpu_min(KC, K - pc);
                        int load = g->accumulate || pc > 0, last = pc + kc >= K;
                        const float *sh = shared + t * slice_floats;
                        if (pl->wide) {
                            pack_b(g, p0, pw, pc, kc, priv);
                            macro(g, sh, s0, sc, priv, p0, pw, kc, load, last, WIDE_ROWS_OUTER);
                        } else {
                            pack_a(g, p0, pw, pc, kc, priv);
                            macro(g, priv, p0, pw, sh, s0, sc, kc, load, last, 0);
                        }
                    }
                }
            }
        }
    }
}

llmc_status llmc_cpu_sgemm(llmc_device *dev, int transA, int transB, int M, int N, int K, const float *A, long lda,
                           const float *B, long ldb, float *C, long ldc, int accumulate,
                           const llmc_cpu_epilogue *epi) {
    if (M <= 0 || N <= 0) return LLMC_OK;
    gemm g = {transA, transB, M, N, K, accumulate, A, B, lda, ldb, ldc, C, epi};
    if (K <= 0) {
        gemm_empty(&g);
        return LLMC_OK;
    }
    int nt = omp_get_max_threads();
    if (2.0 * M * N * K < 4e6) nt = 1; /* not worth waking threads */
    plan pl = make_plan(M, N, K);
    int passes = ((pl.sdim + pl.sstep - 1) / pl.sstep) * ((K + pl.kchunk - 1) / pl.kchunk);
    size_t shared_total = pl.shared_floats * (passes > 1 ? 2 : 1);
    size_t bytes = (shared_total + pl.priv_floats * nt) * sizeof(float);
    void *owned;
    float *ws = (float *)llmc_cpu_scratch(dev, bytes, &owned);
    if (!ws) {
        if (dev)
            return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating %zu bytes of GEMM workspace",
                                    bytes);
        return LLMC_ERR_OUT_OF_MEMORY;
    }
    float *shared1 = passes > 1 ? ws + pl.shared_floats : ws;
    gemm_run(&g, &pl, ws, shared1, ws + shared_total, nt);
    llmc_cpu_scratch_release(owned);
    return LLMC_OK;
}

/* ---------------- the ops ---------------- */

/* A few rows (decode steps): one dot product per output streams W once. Packing W for
 * the GEMM would read and write it twice for the same one pass of arithmetic. */
#define MATVEC_MAX_ROWS 4

static void matvec_forward(float *restrict dst, float *restrict gelu_out, const float *restrict inp,
                           const float *restrict w, const float *restrict bias, int N, int C, int OC) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < OC; j++) {
        const float *restrict wj = w + (size_t)j * C;
        for (int i = 0; i < N; i++) {
            const float *restrict x = inp + (size_t)i * C;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int k = 0; k < C; k++) acc += x[k] * wj[k];
            if (bias) acc += bias[j];
            dst[(size_t)i * OC + j] = acc;
            if (gelu_out) gelu_out[(size_t)i * OC + j] = llmc_gelu(acc);
        }
    }
}

llmc_status llmc_cpu_matmul_forward(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                    const llmc_tensor *weight, const llmc_tensor *bias_t, int N, int C, int OC) {
    if (N < 0 || C < 0 || OC < 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "matmul_forward: bad shape N=%d C=%d OC=%d", N, C, OC);
    LLMC_CPU_WEIGHTS("matmul_forward", bias_t, NULL);
    const float *w = (const float *)weight->data, *bias = (const float *)llmc_tensor_data(bias_t);
    llmc_cpu_epilogue e = {bias, NULL, NULL, OC};
    float *dst = (float *)out;
    if (pre_gelu) {
        dst = (float *)pre_gelu;
        e.gelu_out = (float *)out;
    }
    if (weight->dtype == LLMC_I8) /* a quantized model's weight (matmul_int8.c) */
        return llmc_cpu_matmul_forward_int8(dev, dst, e.gelu_out, (const float *)inp, weight, bias, N, C, OC);
    LLMC_CPU_WEIGHTS("matmul_forward", weight, NULL);
    if (N <= MATVEC_MAX_ROWS) {
        matvec_forward(dst, e.gelu_out, (const float *)inp, w, bias, N, C, OC);
        return LLMC_OK;
    }
    return llmc_cpu_sgemm(dev, 0, 1, N, OC, C, (const float *)inp, C, w, C, dst, OC, 0,
                          (e.bias || e.gelu_out) ? &e : NULL);
}

/* dbias[j] += sum_i dout[i,j], columns split across threads, rows summed in order */
static void column_sums(float *restrict dbias, const float *restrict dout, int N, int OC) {
    enum { CHUNK = 256 };
    int nchunks = (OC + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if ((long)N * OC >= LLMC_CPU_PAR_MIN)
    for (int ch = 0; ch < nchunks; ch++) {
        int j0 = ch * CHUNK, nj = llmc_cpu_min(CHUNK, OC - j0);
        float acc[CHUNK];
        for (int j = 0; j < nj; j++) acc[j] = 0.0f;
        for (int i = 0; i < N; i++) {
            const float *restrict row = dout + (size_t)i * OC + j0;
#pragma omp simd
            for (int j = 0; j < nj; j++) acc[j] += row[j];
        }
        for (int j = 0; j < nj; j++) dbias[j0 + j] += acc[j];
    }
}

llmc_status llmc_cpu_matmul_backward(llmc_device *dev, void *dinp, const llmc_tensor *dweight,
                                     const llmc_tensor *dbias_t, const void *dout, const void *inp,
                                     const llmc_tensor *weight, const void *pre_gelu, int N, int C, int OC) {
    if (N < 0 || C < 0 || OC < 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "matmul_backward: bad shape N=%d C=%d OC=%d", N, C, OC);
    LLMC_CPU_WEIGHTS("matmul_backward", weight, dweight);
    LLMC_CPU_WEIGHTS("matmul_backward", dbias_t, NULL);
    const float *w = (const float *)weight->data;
    float *dw = (float *)llmc_tensor_data(dweight), *dbias = (float *)llmc_tensor_data(dbias_t);
    llmc_status st;
    if (dinp) {
        llmc_cpu_epilogue e = {NULL, NULL, (const float *)pre_gelu, C};
        st = llmc_cpu_sgemm(dev, 0, 0, N, C, OC, (const float *)dout, OC, w, C, (float *)dinp, C, 0,
                            pre_gelu ? &e : NULL);
        if (st != LLMC_OK) return st;
    }
    if (dw) {
        st = llmc_cpu_sgemm(dev, 1, 0, OC, C, N, (const float *)dout, OC, (const float *)inp, C, dw, C, 1, NULL);
        if (st != LLMC_OK) return st;
    }
    if (dbias) column_sums(dbias, (const float *)dout, N, OC);
    return LLMC_OK;
}

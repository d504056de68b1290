// bench_cpu_step.c — times every CPU op over one GPT-2 training step (forward, backward,
// AdamW) with the shapes and memory footprint of the real model, without the model code:
// tells where a step's time goes.
//
//   make && OMP_NUM_THREADS=2 build/bench_cpu_step [steps=4] [B=4] [T=64] [L=12]   (make builds it with the core)
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "cpu/cpu_internal.h"

/* The ops take weights as tensors that carry their dtype (only dtype and data are read here). */
#define W(p) (&(llmc_tensor){.name = #p, .dtype = LLMC_F32, .data = (p)})

enum { MM_FWD, MM_BWD, ATT_FWD, ATT_BWD, LN_FWD, LN_BWD, CLS, ENC, ADAMW, SUMSQ, ZERO, NKINDS };
static const char *kind_name[NKINDS] = {"matmul fwd",    "matmul bwd",    "attention fwd", "attention bwd",
                                        "layernorm fwd", "layernorm bwd", "classifier",    "encoder",
                                        "adamw",         "sum_squares",   "zero grads"};
static double spent[NKINDS];
#define TIMED(k, call)                                                                                                 \
    do {                                                                                                               \
        double t0_ = omp_get_wtime();                                                                                  \
        if ((call) != LLMC_OK) {                                                                                       \
            fprintf(stderr, "%s failed: %s\n", #call, dev.err);                                                        \
            exit(1);                                                                                                   \
        }                                                                                                              \
        spent[k] += omp_get_wtime() - t0_;                                                                             \
    } while (0)

static float *buf(size_t n) {
    float *p = llmc_cpu_aligned_alloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;
    return p;
}

typedef struct { float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb; } layer;

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 4;
    int B = argc > 2 ? atoi(argv[2]) : 4, T = argc > 3 ? atoi(argv[3]) : 64, L = argc > 4 ? atoi(argv[4]) : 12;
    const int C = 768, NH = 12, V = 50257, Vp = 50304, maxT = 1024, N = B * T;
    if (steps < 2 || B < 1 || T < 1 || T > maxT || L < 1) {
        fprintf(stderr, "usage: %s [steps>=2] [B] [T<=1024] [L]\n", argv[0]);
        return 1;
    }
    llmc_device dev;
    if (llmc_device_open(&dev, "cpu", 0, &(llmc_device_tuning){0}) != LLMC_OK) return 1;
    const llmc_backend_ops *o = dev.ops;

    /* parameters and gradients laid out like the model's flat buffers */
    size_t per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C;
    size_t np = (size_t)Vp * C + (size_t)maxT * C + L * per_layer + 2 * C;
    float *params = buf(np), *grads = buf(np), *m = buf(np), *v = buf(np);
    layer *P = malloc(L * sizeof(layer)), *G = malloc(L * sizeof(layer));
    for (int pass = 0; pass < 2; pass++) {
        float *base = pass ? grads : params;
        layer *ly = pass ? G : P;
        float *q = base + (size_t)Vp * C + (size_t)maxT * C;
        for (int l = 0; l < L; l++) {
            float **f[] = {&ly[l].ln1w, &ly[l].ln1b, &ly[l].qkvw, &ly[l].qkvb, &ly[l].projw, &ly[l].projb,
                           &ly[l].ln2w, &ly[l].ln2b, &ly[l].fcw,  &ly[l].fcb,  &ly[l].fcprojw, &ly[l].fcprojb};
            size_t sz[] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
            for (int i = 0; i < 12; i++) *f[i] = q, q += sz[i];
        }
    }
    float *wte = params, *wpe = params + (size_t)Vp * C, *dwte = grads, *dwpe = grads + (size_t)Vp * C;
    float *lnfw = params + np - 2 * C, *lnfb = lnfw + C, *dlnfw = grads + np - 2 * C, *dlnfb = dlnfw + C;

    /* activations kept for the backward, per layer */
    size_t NC = (size_t)N * C;
    float *res = buf((L + 1) * NC), *ln1 = buf(L * NC), *ln2 = buf(L * NC), *qkv = buf(L * 3 * NC);
    float *atty = buf(L * NC), *res2 = buf(L * NC), *fch = buf(L * 4 * NC), *fchg = buf(L * 4 * NC);
    float *lnf = buf(NC), *mean = buf((2 * L + 1) * N), *rstd = buf((2 * L + 1) * N), *lse = buf(L * N * NH);
    float *logits = buf((size_t)N * Vp), *losses = buf(N), *tmp = buf(NC);
    float *dres = buf(NC), *dln = buf(NC), *datt = buf(NC), *dqkv = buf(3 * NC), *dfch = buf(4 * NC);
    int *tok = malloc(N * sizeof(int)), *tgt = malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) tok[i] = (i * 7919) % V, tgt[i] = (i * 104729 + 1) % V;

    const float unit_scale = 1.0f; /* AdamW's gradient scale (no clipping) */
    double wall = 0;
    for (int s = 0; s < steps; s++) {
        if (s == 1) memset(spent, 0, sizeof spent), wall = 0; /* step 0 warms up */
        double w0 = omp_get_wtime();
        TIMED(ZERO, o->zero(&dev, grads, np * sizeof(float)));
        TIMED(ENC, o->encoder_forward(&dev, res, tok, W(wte), W(wpe), B, T, C));
        for (int l = 0; l < L; l++) {
            layer *p = &P[l];
            float *x = res + l * NC, *r2 = res2 + l * NC, *q = qkv + l * 3 * NC, *h = fch + l * 4 * NC;
            TIMED(LN_FWD, o->layernorm_forward(&dev, NULL, ln1 + l * NC, mean + 2 * l * N, rstd + 2 * l * N, x, NULL,
                                               W(p->ln1w), W(p->ln1b), N, C));
            TIMED(MM_FWD, o->matmul_forward(&dev, q, NULL, ln1 + l * NC, W(p->qkvw), W(p->qkvb), N, C, 3 * C));
            TIMED(ATT_FWD, o->attention_forward(&dev, atty + l * NC, lse + l * N * NH, q, B, T, NH, C / NH));
            TIMED(MM_FWD, o->matmul_forward(&dev, tmp, NULL, atty + l * NC, W(p->projw), W(p->projb), N, C, C));
            TIMED(LN_FWD, o->layernorm_forward(&dev, r2, ln2 + l * NC, mean + (2 * l + 1) * N, rstd + (2 * l + 1) * N,
                                               x, tmp, W(p->ln2w), W(p->ln2b), N, C));
            TIMED(MM_FWD, o->matmul_forward(&dev, fchg + l * 4 * NC, h, ln2 + l * NC, W(p->fcw), W(p->fcb), N, C, 4 * C));
            TIMED(MM_FWD, o->matmul_forward(&dev, tmp, NULL, fchg + l * 4 * NC, W(p->fcprojw), W(p->fcprojb), N, 4 * C, C));
            /* the next residual: res[l+1] = r2 + tmp (done inside the next layernorm in the model) */
            float *nx = res + (l + 1) * NC;
            for (size_t i = 0; i < NC; i++) nx[i] = r2[i] + tmp[i];
        }
        TIMED(LN_FWD, o->layernorm_forward(&dev, NULL, lnf, mean + 2 * L * N, rstd + 2 * L * N, res + L * NC, NULL,
                                           W(lnfw), W(lnfb), N, C));
        TIMED(MM_FWD, o->matmul_forward(&dev, logits, NULL, lnf, W(wte), NULL, N, C, Vp));
        TIMED(CLS, o->classifier_forward(&dev, losses, logits, tgt, N, V, Vp, 1.0f / N));

        TIMED(MM_BWD, o->matmul_backward(&dev, dln, W(dwte), NULL, logits, lnf, W(wte), NULL, N, C, Vp));
        memset(dres, 0, NC * sizeof(float));
        TIMED(LN_BWD, o->layernorm_backward(&dev, dres, W(dlnfw), W(dlnfb), dln, res + L * NC, W(lnfw), mean + 2 * L * N,
                                            rstd + 2 * L * N, N, C));
        for (int l = L - 1; l >= 0; l--) {
            layer *p = &P[l], *g = &G[l];
            float *x = res + l * NC, *r2 = res2 + l * NC, *q = qkv + l * 3 * NC, *h = fch + l * 4 * NC;
            TIMED(MM_BWD, o->matmul_backward(&dev, dfch, W(g->fcprojw), W(g->fcprojb), dres, fchg + l * 4 * NC, W(p->fcprojw),
                                             h, N, 4 * C, C));
            TIMED(MM_BWD, o->matmul_backward(&dev, dln, W(g->fcw), W(g->fcb), dfch, ln2 + l * NC, W(p->fcw), NULL, N, C, 4 * C));
            TIMED(LN_BWD, o->layernorm_backward(&dev, dres, W(g->ln2w), W(g->ln2b), dln, r2, W(p->ln2w), mean + (2 * l + 1) * N,
                                                rstd + (2 * l + 1) * N, N, C));
            TIMED(MM_BWD, o->matmul_backward(&dev, datt, W(g->projw), W(g->projb), dres, atty + l * NC, W(p->projw), NULL, N, C, C));
            TIMED(ATT_BWD, o->attention_backward(&dev, dqkv, datt, q, atty + l * NC, lse + l * N * NH, B, T, NH, C / NH));
            TIMED(MM_BWD, o->matmul_backward(&dev, dln, W(g->qkvw), W(g->qkvb), dqkv, ln1 + l * NC, W(p->qkvw), NULL, N, C, 3 * C));
            TIMED(LN_BWD, o->layernorm_backward(&dev, dres, W(g->ln1w), W(g->ln1b), dln, x, W(p->ln1w), mean + 2 * l * N,
                                                rstd + 2 * l * N, N, C));
        }
        TIMED(ENC, o->encoder_backward(&dev, W(dwte), W(dwpe), dres, tok, tok, B, T, C));
        double ss;
        TIMED(SUMSQ, o->sum_squares(&dev, &ss, grads, np));
        TIMED(ADAMW, o->adamw_update(&dev, params, NULL, grads, m, v, np, 1e-4f, 0.9f, 0.95f, 0.1f, 0.05f, 1e-8f, 0.0f,
                                     &unit_scale, 0, 0));
        wall += omp_get_wtime() - w0;
    }
    double total = 0;
    printf("B=%d T=%d L=%d, %d threads, %zu params; mean over %d steps\n", B, T, L, omp_get_max_threads(), np, steps - 1);
    for (int k = 0; k < NKINDS; k++) total += spent[k];
    for (int k = 0; k < NKINDS; k++)
        printf("  %-14s %8.1f ms  %5.1f%%\n", kind_name[k], spent[k] * 1e3 / (steps - 1), 100 * spent[k] / total);
    double flops = 3.0 * 2.0 * N * C * ((double)L * 12 * C + Vp);
    printf("  %-14s %8.1f ms  (matmuls %.1f GFLOP/s)\n", "step (wall)", wall * 1e3 / (steps - 1),
           flops / ((spent[MM_FWD] + spent[MM_BWD]) / (steps - 1)) / 1e9);
    llmc_device_close(&dev);
    return 0;
}

/* decode.c — the CPU ops of KV-cache inference: embedding at per-row positions,
 * appending K/V to the cache, and attention of one new query per row over its cache.
 *
 * Decode attention runs one (row, head) pair per OpenMP iteration: each pair reads
 * its own contiguous slice of the cache, so pairs never share writes and the bits do
 * not depend on the thread count. */
#include <math.h>
#include <omp.h>
#include "cpu_internal.h"

llmc_status llmc_cpu_encoder_forward_at(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                        const llmc_tensor *wte, const llmc_tensor *wpe, int N, int C) {
    if (N < 0 || C <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "encoder_forward_at: bad shape N=%d C=%d", N, C);
    llmc_status st = llmc_cpu_embedding_check(dev, "encoder_forward_at", wte, wpe);
    if (st != LLMC_OK) return st;
    float *o = (float *)out;
    const float *p = (const float *)wpe->data;
#pragma omp parallel for schedule(static) if ((long)N * C >= LLMC_CPU_PAR_MIN)
    for (int i = 0; i < N; i++) llmc_cpu_embed_row(o + (size_t)i * C, wte, tokens[i], p + (size_t)pos[i] * C, C);
    return LLMC_OK;
}

llmc_status llmc_cpu_kv_append(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                               const int *pos, int B, int T, int NH, int HS, int maxlen) {
    if (B < 0 || T < 0 || NH <= 0 || HS <= 0 || maxlen <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "kv_append: bad shape B=%d T=%d NH=%d HS=%d maxlen=%d", B,
                                T, NH, HS, maxlen);
    for (int b = 0; b < B; b++)
        if (pos[b] < 0 || pos[b] + T > maxlen)
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                    "kv_append: positions %d..%d of row %d do not fit a cache of %d", pos[b],
                                    pos[b] + T - 1, b, maxlen);
    const int C = NH * HS;
    const float *in = (const float *)qkv;
    float *kc = (float *)kcache, *vc = (float *)vcache;
    const long rows = (long)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= LLMC_CPU_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / T), t = (int)(r % T);
        const float *k = in + (size_t)r * 3 * C + C, *v = k + C;
        for (int h = 0; h < NH; h++) {
            size_t dst = (((size_t)slots[b] * NH + h) * maxlen + pos[b] + t) * HS;
            memcpy(kc + dst, k + (size_t)h * HS, (size_t)HS * sizeof(float));
            memcpy(vc + dst, v + (size_t)h * HS, (size_t)HS * sizeof(float));
        }
    }
    return LLMC_OK;
}

static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

llmc_status llmc_cpu_attention_decode(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                      const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                      int maxlen) {
    if (N < 0 || NH <= 0 || HS <= 0 || maxlen <= 0)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "attention_decode: bad shape N=%d NH=%d HS=%d maxlen=%d", N,
                                NH, HS, maxlen);
    for (int i = 0; i < N; i++)
        if (lens[i] < 1 || lens[i] > maxlen)
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG,
                                    "attention_decode: row %d attends to %d keys (must be 1..%d)", i, lens[i], maxlen);
    const int C = NH * HS, pairs = N * NH;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *in = (const float *)qkv, *kc = (const float *)kcache, *vc = (const float *)vcache;
    float *o = (float *)out;
    long work = 0; /* multiply-adds, to keep tiny steps off the thread pool */
    for (int i = 0; i < N; i++) work += (long)lens[i] * C * 2;
    int nt = work < LLMC_CPU_PAR_MIN ? 1 : omp_get_max_threads();
    if (nt > pairs) nt = pairs > 0 ? pairs : 1;
    size_t row = ((size_t)maxlen + 15) & ~(size_t)15;
    void *owned;
    float *ws = (float *)llmc_cpu_scratch(dev, row * nt * sizeof(float), &owned);
    if (!ws)
        return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating %zu bytes (attention_decode)",
                                row * nt * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
    for (int ih = 0; ih < pairs; ih++) {
        int i = ih / NH, h = ih % NH, n = lens[i];
        float *restrict s = ws + row * omp_get_thread_num();
        const float *restrict q = in + (size_t)i * 3 * C + (size_t)h * HS;
        size_t base = ((size_t)slots[i] * NH + h) * maxlen * HS;
        const float *K = kc + base, *V = vc + base;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            s[j] = dot(q, K + (size_t)j * HS, HS) * scale;
            mx = s[j] > mx ? s[j] : mx;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            s[j] = llmc_expf(s[j] - mx);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        float *restrict ot = o + (size_t)i * C + (size_t)h * HS;
        for (int d = 0; d < HS; d++) ot[d] = 0.0f;
        for (int j = 0; j < n; j++) {
            const float *restrict v = V + (size_t)j * HS;
            float p = s[j] * inv;
#pragma omp simd
            for (int d = 0; d < HS; d++) ot[d] += p * v[d];
        }
    }
    llmc_cpu_scratch_release(owned);
    return LLMC_OK;
}

llmc_status llmc_cpu_argmax_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "argmax_rows: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    const float *x = (const float *)logits;
#pragma omp parallel for schedule(static) if ((long)N * V >= LLMC_CPU_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *row = x + (size_t)i * Vp;
        float best = -INFINITY;
        int arg = -1, bad = 0;
        for (int j = 0; j < V; j++) {
            bad |= !(row[j] < INFINITY); /* NaN or +Inf */
            if (row[j] > best) {
                best = row[j];
                arg = j;
            }
        }
        out[i] = bad ? -1 : arg;
    }
    return LLMC_OK;
}

llmc_status llmc_cpu_feed_tokens(llmc_device *dev, int *dst, const int *src, int n) {
    if (n < 0) return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "feed_tokens: bad count %d", n);
    for (int i = 0; i < n; i++) dst[i] = src[i] >= 0 ? src[i] : 0;
    return LLMC_OK;
}

/* The host sampler itself, one row per thread: the reference the device samplers match. */
llmc_status llmc_cpu_sample_rows(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                                 const llmc_sampling *s, const float *u) {
    if (N < 0 || V <= 0 || Vp < V)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "sample_rows: bad shape N=%d V=%d Vp=%d", N, V, Vp);
    if (llmc_sampling_validate(s, dev->err, sizeof dev->err) != LLMC_OK) return LLMC_ERR_INVALID_ARG;
    for (int i = 0; i < N; i++)
        if (!(u[i] >= 0.0f && u[i] < 1.0f))
            return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "sample_rows: draw %d is %g, not in [0, 1)", i, u[i]);
    const float *x = (const float *)logits;
    int oom = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : oom) if (N > 1 && (long)N * V >= 65536)
    for (int i = 0; i < N; i++) {
        llmc_status st = llmc_sample_token_at(x + (size_t)i * Vp, V, s, u[i], &out[i]);
        oom |= st == LLMC_ERR_OUT_OF_MEMORY;
    }
    if (oom) return llmc_device_fail(dev, LLMC_ERR_OUT_OF_MEMORY, "sample_rows: out of host memory");
    return LLMC_OK;
}

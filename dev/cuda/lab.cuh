/* lab.cuh — shared harness of the CUDA labs in dev/cuda: compiles the engine's kernels into
 * the lab (one copy of each kernel: the lab includes the engine's .cu files), opens a device
 * through the real op table (tuning from LLMC_PDL / LLMC_GEMV, as the engine's defaults),
 * wraps device pointers as weight tensors, and provides random data, bf16 conversion,
 * poisoning, error norms and event timing.
 *
 * Build one lab (from the repo root; the C files give llmc_device_open and its defaults):
 *   nvcc -O3 --use_fast_math -std=c++17 -arch=sm_90 -Isrc -Icuda -Xcompiler -fopenmp \
 *        dev/cuda/layernorm.cu src/status.c src/model.c src/config.c src/weights.c src/dtype.c \
 *        src/model_file.c src/file_io.c src/hf_model.c src/hf_config.c src/json.c \
 *        -lcublasLt -lgomp -o build/labs/layernorm
 * dev/cuda/run_labs.sh builds and runs them all. */
#ifndef LLMC_LAB_CUH
#define LLMC_LAB_CUH

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#include "../../cuda/backend.cu"
#include "../../cuda/matmul.cu"
#include "../../cuda/layernorm.cu"
#include "../../cuda/encoder.cu"
#include "../../cuda/gelu.cu"
#include "../../cuda/classifier.cu"
#include "../../cuda/adamw.cu"
#include "../../cuda/norm.cu"
#include "../../cuda/decode.cu" /* KV-cache ops: not tested here, but the op table names them */
#include "../../cuda/gemv.cu"
/* the rest of the op table: not tested by these labs, but it names them */
#include "../../cuda/matmul_int8.cu"
#include "../../cuda/sample.cu"
#include "../../cuda/distill.cu"
#include "../../cuda/zero_mask.cu"
#include "../../cuda/decode_persistent.cu"
#include "../../cuda/fp8.cu"
#include "../../cuda/matmul_fp8.cu"

/* The labs do not link attention.cu (another file's business); the op table needs the names. */
llmc_status llmc_cuda_attention_forward(llmc_device *dev, void *, float *, const void *, int, int, int, int) {
    return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "attention is not part of this lab");
}
llmc_status llmc_cuda_attention_backward(llmc_device *dev, void *, const void *, const void *, const void *,
                                         const float *, int, int, int, int) {
    return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "attention is not part of this lab");
}

/* status.c's llmc_device_open needs a registry; the labs open the CUDA table directly. */
extern "C" const llmc_backend_ops *llmc_backend_lookup(const char *name) {
    return name && strcmp(name, "cuda") == 0 ? &llmc_cuda_backend_ops : NULL;
}
extern "C" const char *llmc_backend_names(void) { return "cuda"; }

#include "ck.cuh"
#define OKS(call)                                                                                    \
    do {                                                                                             \
        llmc_status s_ = (call);                                                                     \
        if (s_ != LLMC_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, (int)s_, g_dev.err); \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

static llmc_device g_dev;
static int g_fail = 0, g_checks = 0;

static void lab_open(void) {
    OKS(llmc_device_open(&g_dev, "cuda", 0, NULL));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs, %.1f GiB; pdl %d, skinny rows %d\n", p.name, p.multiProcessorCount,
           p.totalGlobalMem / 1073741824.0, g_dev.tuning.pdl, g_dev.tuning.skinny_rows);
}
/* The device's tuning knobs (what LLMC_PDL / LLMC_GEMV set at open), for labs that compare paths. */
static void lab_tune(int pdl, int skinny_rows) {
    g_dev.tuning.pdl = pdl;
    g_dev.tuning.skinny_rows = skinny_rows;
}
static cudaStream_t lab_stream(void) { return llmc_cuda_stream(&g_dev); }
static void lab_sync(void) { CK(cudaStreamSynchronize(lab_stream())); }

/* ---- random numbers (splitmix64; fresh values every call) ---- */
static uint64_t g_rng = 0x1234567887654321ull;
static uint64_t rng_u64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static std::vector<float> rand_normal(size_t n, double scale, double shift = 0.0) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(shift + scale * rng_normal());
    return v;
}

/* ---- bf16 on the host (src/dtype.c) ---- */
static float round_bf16(float x) { return llmc_bf16_to_f32(llmc_f32_to_bf16(x)); }
/* Rounds a host vector to bf16 values in place (so the reference sees what the device sees). */
static void round_bf16(std::vector<float> &v) {
    for (auto &x : v) x = round_bf16(x);
}

/* ---- device buffers ---- */
static void *dmalloc(size_t bytes) {
    void *p = NULL;
    CK(cudaMalloc(&p, bytes + 256));
    return p;
}
/* Host vector <-> device buffer of the same element type (synchronous). */
template <class T>
static void up_raw(void *d, const std::vector<T> &h) {
    CK(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, lab_stream()));
    lab_sync();
}
template <class T>
static std::vector<T> down_raw(const void *d, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpyAsync(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, lab_stream()));
    lab_sync();
    return h;
}
static void up_f32(void *d, const std::vector<float> &h) { up_raw(d, h); }
static void up_i32(void *d, const std::vector<int> &h) { up_raw(d, h); }
static std::vector<float> down_f32(const void *d, size_t n) { return down_raw<float>(d, n); }
static std::vector<uint16_t> down_raw16(const void *d, size_t n) { return down_raw<uint16_t>(d, n); }
/* fp32 on the host, bf16 on the device */
static void up_bf16(void *d, const std::vector<float> &h) {
    std::vector<uint16_t> t(h.size());
    llmc_f32_to_bf16_n(t.data(), h.data(), h.size());
    up_raw(d, t);
}
static std::vector<float> down_bf16(const void *d, size_t n) {
    std::vector<uint16_t> t = down_raw16(d, n);
    std::vector<float> h(n);
    llmc_bf16_to_f32_n(h.data(), t.data(), n);
    return h;
}
/* A device pointer as the bf16 tensor an op takes (shape d0, or d0 x d1). Converts to
 * const llmc_tensor * for the call it is made in; a NULL pointer gives NULL (no tensor). */
struct lab_tensor {
    llmc_tensor t;
    lab_tensor(const void *data, int d0, int d1 = 0) {
        memset(&t, 0, sizeof t);
        t.name = "lab";
        t.dtype = LLMC_BF16;
        t.data = (void *)data;
        t.ndim = d1 ? 2 : 1;
        t.shape[0] = d0;
        t.shape[1] = d1;
        t.numel = (size_t)d0 * (d1 ? d1 : 1);
    }
    operator const llmc_tensor *() const { return t.data ? &t : NULL; }
};

/* NaN everywhere: 0xffff is a bf16 NaN, 0xffffffff an fp32 NaN. */
static void poison(void *d, size_t bytes) {
    CK(cudaMemsetAsync(d, 0xff, bytes, lab_stream()));
    lab_sync();
}

/* ---- checks ---- */
/* ||out - ref|| / ||scale_ref|| (scale_ref = ref when NULL); any non-finite output gives +inf. */
static double rel_err(const std::vector<float> &out, const std::vector<double> &ref,
                      const std::vector<double> *scale_ref = NULL) {
    double num = 0, den = 0;
    const std::vector<double> &s = scale_ref ? *scale_ref : ref;
    for (size_t i = 0; i < out.size(); i++) {
        if (!isfinite(out[i])) return INFINITY;
        double d = out[i] - ref[i];
        num += d * d;
    }
    for (size_t i = 0; i < s.size(); i++) den += s[i] * s[i];
    return sqrt(num) / (sqrt(den) > 1e-300 ? sqrt(den) : 1e-300);
}
static void check(const char *what, double err, double tol) {
    g_checks++;
    int ok = err <= tol; /* NaN fails */
    if (!ok) g_fail++;
    printf("  %-58s err %.3e (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
}
static void check_true(const char *what, int cond) {
    g_checks++;
    if (!cond) g_fail++;
    printf("  %-58s %s\n", what, cond ? "ok" : "FAIL");
}
static int lab_finish(const char *name) {
    printf("SUMMARY %s: %d/%d checks passed%s\n", name, g_checks - g_fail, g_checks, g_fail ? "  <-- FAILURES" : "");
    llmc_device_close(&g_dev);
    return g_fail ? 1 : 0;
}

/* ---- timing: median over reps of event-timed runs, after warm-up ---- */
template <class F>
static float time_ms(F f, int reps = 20, int warmup = 3) {
    cudaStream_t s = lab_stream();
    for (int i = 0; i < warmup; i++) f();
    CK(cudaStreamSynchronize(s));
    std::vector<float> t(reps);
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(a, s));
        f();
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[reps / 2];
}

/* A graph recorded from f() after one eager run of it (workspaces, scratch, algorithm caches);
 * release with lab_graph_free. */
struct LabGraph {
    cudaGraph_t g;
    cudaGraphExec_t ge;
};
template <class F>
static LabGraph lab_graph(F f) {
    cudaStream_t s = lab_stream();
    f();
    lab_sync();
    LabGraph lg;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    f();
    CK(cudaStreamEndCapture(s, &lg.g));
    CK(cudaGraphInstantiate(&lg.ge, lg.g, 0));
    return lg;
}
static void lab_graph_free(LabGraph lg) {
    CK(cudaGraphExecDestroy(lg.ge));
    CK(cudaGraphDestroy(lg.g));
}

/* Keeps the GPU busy for a while: enqueued before an op whose host-side work should be hidden
 * (as it is in training, where the GPU runs far behind the host). */
__global__ void lab_spin_kernel(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

/* Device-to-device copy bandwidth (read + write bytes), the practical ceiling. */
static double copy_bandwidth_gbs(void) {
    size_t bytes = (size_t)1 << 30;
    void *a = dmalloc(bytes), *b = dmalloc(bytes);
    CK(cudaMemsetAsync(a, 1, bytes, lab_stream()));
    float ms = time_ms([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, lab_stream())); });
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

#endif

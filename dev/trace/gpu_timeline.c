/* gpu_timeline.c — a CUPTI injection library that writes the GPU's real timeline: every kernel,
 * memcpy and memset with its start and end on the device, and every CUDA runtime call with its
 * span on the host. The GPU machine has no Nsight Systems; this answers the question nsys would:
 * where the GPU sits idle during a training step, and what the host was doing then.
 * dev/trace/timeline.py reads the file.
 *
 *   gcc -O2 -shared -fPIC -I$CUDA/include dev/trace/gpu_timeline.c -L$CUDA/lib64 -lcupti \
 *       -o /tmp/libgpu_timeline.so        (CUDA: the toolkit, e.g. /usr/local/cuda)
 *   CUDA_INJECTION64_PATH=/tmp/libgpu_timeline.so LLMC_TIMELINE=/tmp/tl.csv ./train_gpt2cu ...
 *   python dev/trace/timeline.py /tmp/tl.csv --skip 5
 *
 * Lines: kind,start_ns,end_ns,name. kind is K (kernel), M (memcpy), S (memset) or R (runtime
 * call, host side). Device and host timestamps share CUPTI's clock. Unlike ncu, nothing is
 * serialized or replayed: the kernels overlap and queue as they do in a plain run.
 * A dev tool, not part of the library: CUPTI's callbacks leave it no choice but process state. */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_BYTES (8u << 20)

static FILE *out_file;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, BUF_BYTES);
    *size = *buffer ? BUF_BYTES : 0;
    *max_records = 0;
}

static void write_record(const CUpti_Activity *r) {
    switch (r->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
    case CUPTI_ACTIVITY_KIND_KERNEL: {
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
        fprintf(out_file, "K,%llu,%llu,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                k->name ? k->name : "?");
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)r;
        fprintf(out_file, "M,%llu,%llu,memcpy kind %d %llu B\n", (unsigned long long)m->start,
                (unsigned long long)m->end, (int)m->copyKind, (unsigned long long)m->bytes);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)r;
        fprintf(out_file, "S,%llu,%llu,memset %llu B\n", (unsigned long long)m->start, (unsigned long long)m->end,
                (unsigned long long)m->bytes);
        break;
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME: {
        const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)r;
        const char *name = NULL;
        if (cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) != CUPTI_SUCCESS || !name) name = "?";
        fprintf(out_file, "R,%llu,%llu,%s\n", (unsigned long long)a->start, (unsigned long long)a->end, name);
        break;
    }
    default: break;
    }
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (out_file && cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) write_record(r);
    free(buffer);
}

static void finish(void) {
    cuptiActivityFlushAll(1);
    if (out_file) fclose(out_file);
    out_file = NULL;
}

/* The entry point CUDA calls when CUDA_INJECTION64_PATH names this library. */
int InitializeInjection(void) {
    const char *path = getenv("LLMC_TIMELINE");
    out_file = fopen(path && *path ? path : "gpu_timeline.csv", "w");
    if (!out_file) {
        fprintf(stderr, "gpu_timeline: cannot open %s\n", path ? path : "gpu_timeline.csv");
        return 0;
    }
    static const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                               CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_RUNTIME};
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) return 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (cuptiActivityEnable(kinds[i]) != CUPTI_SUCCESS) fprintf(stderr, "gpu_timeline: kind %d not traced\n", kinds[i]);
    atexit(finish);
    return 1;
}

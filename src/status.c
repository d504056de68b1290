/* status.c — error codes, error messages, weight dtype checks and opening a backend device. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "backend.h"

const char *llmc_status_name(llmc_status s) {
    switch (s) {
    case LLMC_OK: return "ok";
    case LLMC_ERR_INVALID_ARG: return "invalid argument";
    case LLMC_ERR_IO: return "I/O error";
    case LLMC_ERR_FORMAT: return "bad file format";
    case LLMC_ERR_OUT_OF_MEMORY: return "out of memory";
    case LLMC_ERR_DEVICE: return "device error";
    case LLMC_ERR_UNSUPPORTED: return "unsupported";
    case LLMC_ERR_NUMERIC: return "numerical error";
    case LLMC_ERR_STOPPED: return "stopped";
    }
    return "unknown error";
}

size_t llmc_dtype_size(llmc_dtype t) { return t == LLMC_I8 ? 1 : t == LLMC_BF16 ? 2 : 4; }

const char *llmc_dtype_name(llmc_dtype t) {
    switch (t) {
    case LLMC_F32: return "fp32";
    case LLMC_BF16: return "bf16";
    case LLMC_I8: return "int8";
    }
    return "unknown dtype";
}

llmc_status llmc_device_fail(llmc_device *dev, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dev->err, sizeof dev->err, fmt, ap);
    va_end(ap);
    return code;
}

llmc_status llmc_weight_check(llmc_device *dev, const char *op, const llmc_tensor *t, llmc_dtype want) {
    if (!t || (t->dtype == want && !t->scales)) return LLMC_OK;
    const char *name = t->name ? t->name : "weight";
    if (t->scales)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "%s on %s: tensor '%s' is quantized, which this op does not take",
                                op, dev->ops ? dev->ops->name : "?", name);
    return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "%s on %s takes %s weights, but tensor '%s' is %s", op,
                            dev->ops ? dev->ops->name : "?", llmc_dtype_name(want), name, llmc_dtype_name(t->dtype));
}

llmc_status llmc_attention_shape(llmc_device *dev, const char *op, int B, int T, int NH, int HS, int positive) {
    const int lo = positive ? 1 : 0;
    if (B < lo || T < lo || NH < 1 || HS < 1)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "%s: bad shape B=%d T=%d NH=%d HS=%d", op, B, T, NH, HS);
    if ((long long)B * T > INT_MAX || (long long)B * NH > INT_MAX || 3LL * NH * HS > INT_MAX)
        return llmc_device_fail(dev, LLMC_ERR_INVALID_ARG, "%s: shape B=%d T=%d NH=%d HS=%d is too large", op, B, T,
                                NH, HS);
    return LLMC_OK;
}

llmc_status llmc_device_open(llmc_device *dev, const char *name, int index, const llmc_device_tuning *tuning) {
    memset(dev, 0, sizeof *dev);
    if (tuning) {
        dev->tuning = *tuning;
    } else {
        llmc_model_options o;
        llmc_model_options_default(&o);
        dev->tuning.pdl = o.pdl;
        dev->tuning.skinny_rows = o.skinny_rows;
        dev->tuning.int8_mma = o.int8_mma;
        dev->tuning.fuse_layernorm = o.fuse_layernorm;
    }
    const llmc_backend_ops *ops = llmc_backend_lookup(name);
    if (!ops)
        return llmc_device_fail(dev, LLMC_ERR_UNSUPPORTED, "unknown device '%s': this build has %s", name ? name : "",
                                llmc_backend_names());
    dev->ops = ops;
    llmc_status st = ops->init(dev, index);
    if (st != LLMC_OK) dev->ops = NULL;
    return st;
}

void llmc_device_close(llmc_device *dev) {
    if (dev->ops) dev->ops->destroy(dev);
    dev->ops = NULL;
    dev->impl = NULL;
}

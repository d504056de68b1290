/* status.c — error codes, error messages and opening a backend device. */
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
    }
    return "unknown error";
}

size_t llmc_dtype_size(llmc_dtype t) { return t == LLMC_BF16 ? 2 : 4; }

llmc_status llmc_device_fail(llmc_device *dev, llmc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dev->err, sizeof dev->err, fmt, ap);
    va_end(ap);
    return code;
}

llmc_status llmc_device_open(llmc_device *dev, const char *name, int index) {
    memset(dev, 0, sizeof *dev);
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

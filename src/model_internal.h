/* model_internal.h — the model object (a device and its weights), shared by the files that
 * work on it: model.c, model_file.c, train*.c, checkpoint.c, infer.c, generate.c. */
#ifndef LLMC_MODEL_INTERNAL_H
#define LLMC_MODEL_INTERNAL_H

#include "backend.h"

struct llmc_model {
    llmc_device dev;         /* opened when dev.ops != NULL */
    char err[LLMC_ERR_LEN];
    llmc_model_options opts;
    llmc_weights w;          /* the tensor table, bound to params */
    void *params;            /* one flat buffer of act dtype; NULL until init or load */
    size_t esz;              /* bytes per act-dtype element */
    /* The fp32 values the weights were rounded from (bf16 backends only; host memory): kept
     * until a trainer takes them as master weights, dropped when a session starts or the
     * weights change otherwise. */
    float *fp32_source;
    size_t param_bytes;      /* bytes of params */
    int quantized;           /* the weights are int8 (quant.c): params is its layout, not the flat one */
    llmc_quant_options quant;
    unsigned version;        /* bumped whenever the weights are replaced outside a trainer's step */
    int users;               /* trainers and sessions attached */
};

/* Records a formatted message in m->err and returns code. */
llmc_status llmc_model_fail(llmc_model *m, llmc_status code, const char *fmt, ...);
/* Copies the device's message into m->err and returns code. */
llmc_status llmc_model_dev_fail(llmc_model *m, llmc_status code);

#define MODEL_TRY(m, call) LLMC_TRY_WITH(llmc_model_dev_fail, m, call)

/* Fails unless the model has weights. */
llmc_status llmc_model_require_weights(llmc_model *m);
/* What every replacement of the weights starts with: refused while trainers or sessions use m,
 * then the device opened (o NULL: the options m was opened with). */
llmc_status llmc_model_begin_install(llmc_model *m, const llmc_model_options *o);
/* Replaces the weights with host fp32 values of shape cfg (validated by the caller): the one
 * path by which new weights arrive (init, load). On failure the old weights stay. */
llmc_status llmc_model_install(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg, float *host,
                               int keep_host);
/* LLMC_OK when every value of host (w->count fp32, laid out by w) is finite; else a message into err
 * naming what (a file, "set_params") and the tensor and element of the first that is not. */
llmc_status llmc_weights_check_finite(const llmc_weights *w, const float *host, const char *what, char *err,
                                      size_t errlen);
/* Frees the weights (params, fp32_source) and clears the table. */
void llmc_model_release_weights(llmc_model *m);
/* Drops fp32_source. */
void llmc_model_drop_source(llmc_model *m);
/* The 256-int header of a model file of cfg and version (the rest zero). */
void llmc_model_file_header(const llmc_config *c, int version, int32_t h[LLMC_HEADER_INTS]);
/* Writes a model file from the weights, or from the fp32 values in src (device memory of
 * count elements starting at parameter offset src_offset) where those cover them. */
llmc_status llmc_model_write(llmc_model *m, const char *path, int version, const float *src, size_t src_offset,
                             size_t src_count);

#endif

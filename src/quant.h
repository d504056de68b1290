/* quant.h — the int8 quantized layout and file (quant.c, quant_file.c), for the model's files. */
#ifndef LLMC_QUANT_H
#define LLMC_QUANT_H

#include <stdio.h>
#include "model_internal.h"

/* A quantized model in host memory: what a file holds and what install uploads. */
typedef struct llmc_qhost {
    llmc_quant_options q;
    unsigned mask;  /* bit i: tensor i is int8 */
    float *plain;   /* fp32 in the layout's order (count of them); the quantized tensors' slots unused */
    int8_t *qdata;  /* the int8 values of the quantized tensors, back to back in table order */
    float *scales;  /* their scales, likewise */
    size_t qcount, scount;
} llmc_qhost;

/* The tensors options q quantize (bit i: tensor i). */
unsigned llmc_quant_mask(const llmc_quant_options *q);
/* LLMC_ERR_INVALID_ARG and a message for options that are not valid. */
llmc_status llmc_quant_check(const llmc_quant_options *q, char *err, size_t errlen);
/* Scales of a tensor (its last dimension is a row) at group (0: the row). */
size_t llmc_quant_scale_count(const llmc_tensor *t, int group);
llmc_status llmc_qhost_alloc(llmc_qhost *h, const llmc_weights *w, const llmc_quant_options *q);
void llmc_qhost_free(llmc_qhost *h);
/* Replaces the model's weights with h (shape cfg, validated by the caller). */
llmc_status llmc_model_install_quantized(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg,
                                         const llmc_qhost *h);
/* llmc_model_get_params of a quantized model: the dequantized values. */
llmc_status llmc_quant_get_params(llmc_model *m, float *dst);

/* quant_file.c: version 8 of the model file. load: f is open past its header h, whose shape
 * cfg the caller has validated (size bytes in all). */
llmc_status llmc_quant_load(llmc_model *m, const llmc_model_options *o, const char *path, FILE *f,
                            const int32_t *h, const llmc_config *cfg, long size);
llmc_status llmc_quant_write(llmc_model *m, const char *path);

#endif

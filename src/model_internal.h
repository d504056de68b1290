/* model_internal.h — the model context, shared by model.c, optim.c, generate.c and checkpoint.c. */
#ifndef LLMC_MODEL_INTERNAL_H
#define LLMC_MODEL_INTERNAL_H

#include "backend.h"

/* Activations of one forward pass, carved out of one device allocation.
 * Per-layer tensors are L consecutive slices; with recompute some are a single slice. */
typedef struct llmc_acts {
    void *encoded;   /* (B,T,C) */
    void *ln1;       /* (L,B,T,C), one slice if recompute >= 2 */
    float *ln1_mean, *ln1_rstd; /* (L,B,T) */
    void *qkv;       /* (L,B,T,3C) */
    void *atty;      /* (L,B,T,C) */
    float *att_lse;  /* (L,B,NH,T) */
    void *residual2; /* (L,B,T,C) */
    void *ln2;       /* (L,B,T,C), one slice if recompute >= 2 */
    float *ln2_mean, *ln2_rstd;
    void *fch;       /* (L,B,T,4C) pre-GELU */
    void *fch_gelu;  /* (L,B,T,4C), one slice if recompute >= 1 */
    void *residual3; /* (L,B,T,C) */
    void *lnf;       /* (B,T,C) */
    float *lnf_mean, *lnf_rstd;
    void *scratch;   /* (B,T,C) output of the projections before the residual add */
    void *logits;    /* (B,T,Vp), dlogits in place after the fused classifier */
    float *losses;   /* (B,T) */
    int *inputs, *targets; /* (B,T) device copies */
} llmc_acts;

/* Gradients of activations, needed only by the backward. */
typedef struct llmc_grad_acts {
    void *dresidual; /* (B,T,C) */
    void *dbtc;      /* (B,T,C) */
    void *dqkv;      /* (B,T,3C) */
    void *dfch;      /* (B,T,4C) */
} llmc_grad_acts;

enum { LOGITS_NONE = 0, LOGITS_VALID, LOGITS_ARE_DLOGITS };

typedef struct llmc_gen_state llmc_gen_state;

struct llmc_model {
    llmc_device dev;
    char err[LLMC_ERR_LEN];
    llmc_model_options opts;
    llmc_config cfg;
    llmc_tensor_info layout[LLMC_NUM_PARAM_TENSORS];
    size_t num_params;
    size_t esz; /* bytes per act-dtype element */

    void *params;  /* act dtype, flat, llm.c order */
    void *grads;   /* same layout, allocated on first use */
    float *master; /* fp32 master weights (bf16 backends) or NULL */
    float *adam_m, *adam_v;
    int step;      /* AdamW steps done */

    /* activations: allocated for the largest B*T seen, laid out for the current B, T */
    void *act_mem;
    size_t act_capacity; /* bytes */
    void *grad_act_mem;
    size_t grad_act_capacity;
    llmc_acts a;
    llmc_grad_acts g;
    int B, T;
    int *host_inputs;   /* copy of the last inputs (encoder backward groups rows by token) */
    float *host_losses;
    size_t host_capacity; /* elements in host_inputs / host_losses */
    int has_targets;
    int logits_state;
    float loss;

    llmc_gen_state *gen;
};

/* Records a formatted message in m->err and returns code. */
llmc_status llmc_model_fail(llmc_model *m, llmc_status code, const char *fmt, ...);
/* Copies the device's message into m->err and returns code. */
llmc_status llmc_model_dev_fail(llmc_model *m, llmc_status code);

#define MODEL_TRY(m, call)                                                \
    do {                                                                  \
        llmc_status s_ = (call);                                          \
        if (s_ != LLMC_OK) return llmc_model_dev_fail((m), s_);           \
    } while (0)

/* Opens the backend and allocates params (+ master) for cfg; values are uploaded by the caller. */
llmc_status llmc_model_setup(llmc_model *m, const llmc_model_options *o, const llmc_config *cfg);
/* Uploads host fp32 parameters (and master weights when kept). */
llmc_status llmc_model_upload_params(llmc_model *m, const float *host);
/* Allocates grads and AdamW state (zeroed) if missing. */
llmc_status llmc_model_ensure_grads(llmc_model *m);
llmc_status llmc_model_ensure_optimizer(llmc_model *m);
/* Drops the generation session, if any. */
void llmc_gen_free(llmc_model *m);

/* bf16 <-> fp32 on the host (round to nearest even), for file I/O. */
uint16_t llmc_f32_to_bf16(float f);
float llmc_bf16_to_f32(uint16_t h);

#endif

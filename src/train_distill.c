/*
 * train_distill.c — knowledge distillation: a teacher model's logits in the training loss.
 *
 * The teacher gets a trainer of its own that only ever runs forward (without targets), on the
 * student's inputs, so its logits come from the same graph code (train_graph.c) and stay on the
 * device. It uses recompute 2: the activations it would keep only for a backward are one layer's.
 * The two models each own a device, so on a GPU each has its own stream: the teacher's forward is
 * queued before the student's (the two can overlap), the student's device waits for the teacher's
 * to finish before its classifier reads the teacher's logits, and a teacher forward waits for a
 * student classifier that may still read the logits it is about to overwrite.
 */
#include <math.h>
#include <string.h>
#include "train_internal.h"

void llmc_train_drop_teacher(llmc_train *t) {
    llmc_train_free(t->teacher);
    t->teacher = NULL;
    t->teacher_reading = 0;
}

llmc_model *llmc_train_teacher(const llmc_train *t) { return t->teacher ? t->teacher->m : NULL; }

static llmc_status check_teacher(llmc_train *t, llmc_model *teacher, float alpha, float tau) {
    if (!t->m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the trainer is not attached to a model");
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "distillation alpha %g must lie in [0, 1] (the weight of the cross-entropy on the targets)",
                               (double)alpha);
    if (!(tau > 0.0f) || !isfinite(tau))
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "distillation temperature %g must be > 0 and finite",
                               (double)tau);
    if (teacher == t->m) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the teacher is the student itself");
    if (!teacher->params) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the teacher model has no weights");
    if (!t->m->params) return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the student model has no weights yet");
    const char *tb = llmc_model_backend(teacher), *sb = llmc_model_backend(t->m);
    if (strcmp(tb, sb) != 0 || teacher->opts.device != t->m->opts.device)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "the teacher is on %s:%d and the student on %s:%d: their logits must be on one device",
                               tb, teacher->opts.device, sb, t->m->opts.device);
    const llmc_config *tc = &teacher->w.cfg, *sc = &t->m->w.cfg;
    if (tc->vocab_size != sc->vocab_size || tc->padded_vocab_size != sc->padded_vocab_size)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "the teacher has a vocabulary of %d tokens (padded %d), the student %d (padded %d): "
                               "distillation needs the same vocabulary",
                               tc->vocab_size, tc->padded_vocab_size, sc->vocab_size, sc->padded_vocab_size);
    return LLMC_OK;
}

llmc_status llmc_train_set_teacher(llmc_train *t, llmc_model *teacher, float alpha, float temperature) {
    if (!teacher) {
        llmc_train_drop_teacher(t);
        return LLMC_OK;
    }
    llmc_status st = check_teacher(t, teacher, alpha, temperature);
    if (st != LLMC_OK) return st;
    if (!t->teacher || t->teacher->m != teacher) {
        llmc_train *tt = llmc_train_new();
        if (!tt) return llmc_train_fail(t, LLMC_ERR_OUT_OF_MEMORY, "out of memory for the teacher's trainer");
        llmc_train_options o;
        llmc_train_options_default(&o);
        o.master_weights = 0; /* it never steps */
        o.recompute = 2;
        if (llmc_train_attach(tt, teacher, &o) != LLMC_OK) {
            st = llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "teacher: %s", llmc_train_error(tt));
            llmc_train_free(tt);
            return st;
        }
        llmc_train_drop_teacher(t);
        t->teacher = tt;
    }
    t->distill_alpha = alpha;
    t->distill_tau = temperature;
    return LLMC_OK;
}

llmc_status llmc_train_teacher_forward(llmc_train *t) {
    llmc_device *d = &t->m->dev;
    if (t->teacher_reading) { /* the last distillation classifier must be done with the teacher's logits */
        TRAIN_TRY(t, d->ops->synchronize(d));
        t->teacher_reading = 0;
    }
    const int T = t->T, maxT = t->teacher->m->w.cfg.max_seq_len;
    if (T > maxT)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG,
                               "sequence length T=%d exceeds the teacher's maximum context of %d tokens", T, maxT);
    const llmc_status st = llmc_train_forward(t->teacher, t->host_inputs, NULL, t->B, T);
    return st == LLMC_OK ? st : llmc_train_fail(t, st, "teacher: %s", llmc_train_error(t->teacher));
}

llmc_status llmc_train_distill_classify(llmc_train *t, float dloss) {
    llmc_train *tt = t->teacher;
    llmc_device *td = &tt->m->dev, *d = &t->m->dev;
    const llmc_config *c = &t->m->w.cfg, *tc = &tt->m->w.cfg;
    if (tt->B != t->B || tt->T != t->T || tt->logits_state != LOGITS_VALID)
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the teacher's logits are not those of this batch");
    if (tc->vocab_size != c->vocab_size || tc->padded_vocab_size != c->padded_vocab_size) /* a resume changed it */
        return llmc_train_fail(t, LLMC_ERR_INVALID_ARG, "the teacher's vocabulary (%d) is not the student's (%d)",
                               tc->vocab_size, c->vocab_size);
    /* the teacher's stream is not the student's: its logits must be complete before they are read */
    if (td->ops->synchronize(td) != LLMC_OK)
        return llmc_train_fail(t, LLMC_ERR_DEVICE, "teacher: %s", td->err);
    TRAIN_TRY(t, d->ops->classifier_distill_forward(d, t->a.losses, t->a.logits, tt->a.logits, t->a.targets,
                                                    t->B * t->T, c->vocab_size, c->padded_vocab_size, dloss,
                                                    t->distill_alpha, t->distill_tau));
    t->teacher_reading = 1;
    return LLMC_OK;
}

/* schedule.c — learning rate as a function of the step.
 *
 * Steps [0, warmup) ramp linearly up to max_lr, reaching it on the last warmup step.
 * Steps [warmup, total) follow the schedule; steps >= total keep its end value
 * (max_lr * final_frac, or max_lr for "constant"). The decay phase is only entered
 * when warmup <= step < total, so no denominator below can be zero.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "llmc.h"

#define WSD_DEFAULT_DECAY 0.2
#define PI 3.14159265358979323846 /* M_PI is not in C11 */

float llmc_schedule_lr(const llmc_schedule *s, int step) {
    if (!s) return 0.0f;
    double max_lr = s->max_lr;
    if (s->total <= 0) return (float)max_lr; /* no horizon: nothing to schedule */
    if (step < 0) step = 0;
    double min_lr = max_lr * s->final_frac;
    int warmup = s->warmup > 0 ? s->warmup : 0;

    if (step >= s->total) return (float)(s->kind == LLMC_SCHED_CONSTANT ? max_lr : min_lr);
    if (step < warmup) return (float)(max_lr * (step + 1) / warmup);

    /* warmup <= step < total, hence total - warmup >= 1 */
    double progress = (double)(step - warmup) / (double)(s->total - warmup); /* in [0, 1) */
    switch (s->kind) {
    case LLMC_SCHED_COSINE:
        return (float)(min_lr + 0.5 * (1.0 + cos(PI * progress)) * (max_lr - min_lr));
    case LLMC_SCHED_LINEAR:
        return (float)(max_lr + (min_lr - max_lr) * progress);
    case LLMC_SCHED_CONSTANT:
        return (float)max_lr;
    case LLMC_SCHED_WSD: {
        double frac = s->decay_frac > 0 ? s->decay_frac : WSD_DEFAULT_DECAY;
        if (frac > 1) frac = 1;
        /* the decay covers the last frac*total steps, rounded to whole steps (so 0.2f and
         * 0.2 agree), at least one, never reaching into the warmup */
        double steps = floor(frac * s->total + 0.5);
        double start = s->total - (steps < 1 ? 1 : steps);
        if (start < warmup) start = warmup;
        if (step < start) return (float)max_lr;
        /* start <= step < total, hence total - start > 0 */
        return (float)(max_lr + (min_lr - max_lr) * ((step - start) / (s->total - start)));
    }
    }
    return (float)max_lr;
}

llmc_status llmc_schedule_parse(const char *name, llmc_schedule_kind *kind) {
    static const struct {
        const char *name;
        llmc_schedule_kind kind;
    } table[] = {{"cosine", LLMC_SCHED_COSINE},
                 {"linear", LLMC_SCHED_LINEAR},
                 {"constant", LLMC_SCHED_CONSTANT},
                 {"wsd", LLMC_SCHED_WSD}};
    if (!name || !kind) return LLMC_ERR_INVALID_ARG;
    char low[16];
    size_t n = strlen(name);
    if (n >= sizeof low) return LLMC_ERR_INVALID_ARG;
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)name[i]);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(low, table[i].name) == 0) {
            *kind = table[i].kind;
            return LLMC_OK;
        }
    return LLMC_ERR_INVALID_ARG;
}

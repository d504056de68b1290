/* outlier.h — z-scores of a training signal (loss, grad norm) against its recent past, to skip
 * the update of an outlier step (llm.c's -sl / -sg). The window holds accepted values only, so a
 * run of outliers does not teach it that they are normal; the third outlier in a row is accepted
 * all the same, so that a real shift in the signal cannot stall training. */
#ifndef LLMC_OUTLIER_H
#define LLMC_OUTLIER_H

#include <math.h>

#define LLMC_OUTLIER_WINDOW 64

typedef struct llmc_outlier {
    double v[LLMC_OUTLIER_WINDOW];
    int n, next, rejected_in_a_row;
} llmc_outlier;

/* The z-score of x against the window (0 until the window is full), and whether x is an outlier
 * above threshold (> 0) that should be skipped. x joins the window unless it is skipped. */
static inline double llmc_outlier_check(llmc_outlier *o, double x, double threshold, int *skip) {
    double z = 0.0;
    *skip = 0;
    if (o->n == LLMC_OUTLIER_WINDOW) {
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < o->n; i++) mean += o->v[i];
        mean /= o->n;
        for (int i = 0; i < o->n; i++) var += (o->v[i] - mean) * (o->v[i] - mean);
        const double sd = sqrt(var / o->n);
        z = sd > 0.0 ? (x - mean) / sd : 0.0;
        if (threshold > 0.0 && z > threshold && ++o->rejected_in_a_row < 3) {
            *skip = 1;
            return z;
        }
    }
    o->rejected_in_a_row = 0;
    o->v[o->next] = x;
    o->next = (o->next + 1) % LLMC_OUTLIER_WINDOW;
    if (o->n < LLMC_OUTLIER_WINDOW) o->n++;
    return z;
}

#endif

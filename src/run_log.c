/* run_log.c — main.log (llm.c's format) and main.jsonl (every field) of a training run. */
#include "run_log.h"
#include <string.h>
#include "file_io.h"

/* The step a line of either log belongs to, in llmc's counting (optimizer steps done), or -1. */
static int line_step(const char *line) {
    int s;
    if (sscanf(line, "{\"step\": %d", &s) == 1) return s;
    /* llm.c numbers a train line by its 0-based loop index: "s:0 trl" is the first update */
    if (sscanf(line, "s:%d", &s) == 1) return strstr(line, " trl:") ? s + 1 : s;
    return -1;
}

/* Rewrites path keeping the lines of steps <= keep (all of them when keep < 0: none is dropped,
 * the file is only created), or no line when keep == 0. Atomic. *kept_ckpt: 1 if a kept line
 * records the checkpoint of step keep. */
static llmc_status rewrite(const char *path, int keep, int *kept_ckpt, char *err, size_t errlen) {
    llmc_atomic_file af;
    llmc_status st = llmc_atomic_open(&af, path, err, errlen);
    if (st != LLMC_OK) return st;
    FILE *in = keep > 0 ? fopen(path, "r") : NULL;
    char line[4096];
    while (st == LLMC_OK && in && fgets(line, sizeof line, in)) {
        const int s = line_step(line);
        if (s > keep) continue;
        if (s == keep && strstr(line, "\"checkpoint\": ")) *kept_ckpt = 1;
        st = llmc_atomic_write(&af, line, strlen(line), err, errlen);
    }
    if (in && st == LLMC_OK && ferror(in)) {
        snprintf(err, errlen, "cannot read '%s'", path);
        st = LLMC_ERR_IO;
    }
    if (in) fclose(in);
    return llmc_atomic_close(&af, st, err, errlen);
}

static llmc_status open_one(FILE **f, const char *dir, const char *name, int resumed_at, int *kept_ckpt, char *err,
                            size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    llmc_status st = rewrite(path, resumed_at, kept_ckpt, err, errlen);
    if (st != LLMC_OK) return st;
    *f = fopen(path, "a");
    if (*f) return LLMC_OK;
    snprintf(err, errlen, "cannot open '%s' for appending", path);
    return LLMC_ERR_IO;
}

llmc_status llmc_run_log_open(llmc_run_log *log, const char *dir, int resumed_at, char *err, size_t errlen) {
    memset(log, 0, sizeof *log);
    snprintf(log->dir, sizeof log->dir, "%s", dir);
    int ignored = 0, kept_ckpt = 0;
    llmc_status st = open_one(&log->text, dir, "main.log", resumed_at, &ignored, err, errlen);
    if (st == LLMC_OK) st = open_one(&log->json, dir, "main.jsonl", resumed_at, &kept_ckpt, err, errlen);
    /* a run killed between a checkpoint's files and its record: the record is written now */
    if (st == LLMC_OK && resumed_at > 0 && !kept_ckpt) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model_%08d.bin", dir, resumed_at);
        llmc_event e = {.kind = LLMC_EVENT_CHECKPOINT, .step = resumed_at, .text = path};
        st = llmc_run_log_event(log, &e, err, errlen);
    }
    if (st != LLMC_OK) llmc_run_log_close(log);
    return st;
}

void llmc_run_log_close(llmc_run_log *log) {
    if (log->text) fclose(log->text);
    if (log->json) fclose(log->json);
    log->text = log->json = NULL;
}

llmc_status llmc_run_log_event(llmc_run_log *log, const llmc_event *e, char *err, size_t errlen) {
    if (!log->text) return LLMC_OK;
    int a = 0, b = 0;
    switch (e->kind) {
    case LLMC_EVENT_STEP:
        a = fprintf(log->text, "s:%d trl:%.4f lr:%.6f norm:%.2f\n", e->step - 1, e->loss, e->lr, e->grad_norm);
        b = fprintf(log->json,
                    "{\"step\": %d, \"train_loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"ms\": %.3f, "
                    "\"tok_s\": %.1f%s}\n",
                    e->step, e->loss, e->lr, e->grad_norm, e->ms, e->tok_s, e->skipped ? ", \"skipped\": true" : "");
        break;
    case LLMC_EVENT_VAL:
        a = fprintf(log->text, "s:%d tel:%.4f\n", e->step, e->val_loss);
        b = fprintf(log->json, "{\"step\": %d, \"val_loss\": %.6f}\n", e->step, e->val_loss);
        break;
    case LLMC_EVENT_EVAL: /* llm.c logs HellaSwag's normalized accuracy as eval */
        a = fprintf(log->text, "s:%d eval:%.4f\n", e->step, e->val_loss);
        b = fprintf(log->json, "{\"step\": %d, \"eval_acc\": %.6f, \"eval_acc_norm\": %.6f, \"eval_items\": %d}\n",
                    e->step, e->loss, e->val_loss, e->ntokens);
        break;
    case LLMC_EVENT_CHECKPOINT: {
        const char *name = strrchr(e->text, '/');
        b = fprintf(log->json, "{\"step\": %d, \"checkpoint\": \"%s\"}\n", e->step, name ? name + 1 : e->text);
        break;
    }
    default: return LLMC_OK;
    }
    if (a < 0 || b < 0 || fflush(log->text) != 0 || fflush(log->json) != 0) {
        snprintf(err, errlen, "cannot write to the logs in %s", log->dir);
        return LLMC_ERR_IO;
    }
    return LLMC_OK;
}

/* run_log.h — a training run's logs in its output directory: main.log in llm.c's line format
 * ("s:%d trl:%f lr:%f norm:%f", "s:%d tel:%f"), which llm.c's tools read, and main.jsonl with one
 * JSON object per line and every field, for llmc's own. */
#ifndef LLMC_RUN_LOG_H
#define LLMC_RUN_LOG_H

#include <stdio.h>
#include "llmc.h"

typedef struct llmc_run_log {
    FILE *text, *json;
    char dir[4096];
} llmc_run_log;

/* Opens both logs in dir. A fresh run (resumed_at 0) starts them empty; a resume from a checkpoint
 * at resumed_at keeps only what was logged up to that step (the steps after it are done again),
 * and adds that checkpoint's record to main.jsonl if the killed run did not get to write it.
 * Both rewrites are atomic. On failure writes a message into err. */
llmc_status llmc_run_log_open(llmc_run_log *log, const char *dir, int resumed_at, char *err, size_t errlen);
void llmc_run_log_close(llmc_run_log *log);
/* One event: a step (its 1-based step number, as llmc_event), a validation, a checkpoint, or
 * device memory. Events the log has no line for are ignored. */
llmc_status llmc_run_log_event(llmc_run_log *log, const llmc_event *e, char *err, size_t errlen);

#endif

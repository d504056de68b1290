/* trainer.h — the training program shared by ./train_gpt2 and ./train_gpt2cu.
 * Both mains are one call to llmc_train_main(); they differ only in the default
 * backend and in which backends they link. */
#ifndef LLMC_TRAINER_H
#define LLMC_TRAINER_H

/* Parses argv, trains, and returns a process exit code (0 ok, 1 failure, 2 usage error). Sets the
 * OpenMP defaults first (llmc_cli_openmp_defaults). */
int llmc_train_main(int argc, char **argv, const char *default_backend);

#endif

/* cli.h — a table-driven command-line parser: the help text is generated from the
 * same table the parser reads, so the two cannot drift apart. */
#ifndef LLMC_CLI_H
#define LLMC_CLI_H

#include <stddef.h>
#include <stdio.h>

typedef enum llmc_opt_type { LLMC_OPT_INT, LLMC_OPT_FLOAT, LLMC_OPT_STRING, LLMC_OPT_U64 } llmc_opt_type;

typedef struct llmc_cli_option {
    const char *short_name; /* "b" for -b, "nk" for -nk (llm.c's two-letter flags), NULL for long-only */
    const char *long_name; /* "batch-size" for --batch-size */
    llmc_opt_type type;
    void *target;          /* int*, float*, const char**, or uint64_t* */
    const char *metavar;   /* "N", "PATH", ... */
    const char *help;
} llmc_cli_option;

/* Parses argv[1..]. Accepts "-b 4", "-nk 2", "--batch-size 4" and "--batch-size=4". "-h" and
 * "--help" ask for help, except that "-h <int>" sets the option whose short name is "h" (llm.c's
 * HellaSwag flag) when the table has one.
 * Returns 0 on success, 1 if help was asked for (usage printed to out), -1 on a bad
 * command line (message written to err, errlen bytes). */
int llmc_cli_parse(int argc, char **argv, const llmc_cli_option *opts, size_t nopts, FILE *out, char *err,
                   size_t errlen);
/* OpenMP's default of spinning idle threads collapses on a busy small machine (decode: 2 tok/s
 * instead of 22 on a loaded 2-core VM, docs/PERF.md), and libgomp reads its settings before main:
 * so a CLI that finds OMP_WAIT_POLICY unset sets it to PASSIVE and execs itself once. Returns only
 * when nothing was to be done or the exec failed. */
void llmc_cli_openmp_defaults(char **argv);
/* Prints usage with the current (default) values of every option. */
void llmc_cli_usage(FILE *out, const char *prog, const char *summary, const llmc_cli_option *opts, size_t nopts);

#endif

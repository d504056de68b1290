/* train_gpt2 — GPT-2 training on the CPU (fp32, OpenMP). Flags: ./train_gpt2 -h */
#include <stdio.h>
#include "llmc.h"
#include "trainer.h"

int main(int argc, char **argv) {
    char err[512];
    if (!llmc_cpu_supported(err, sizeof err)) { /* before any code built for newer CPUs runs */
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return llmc_train_main(argc, argv, "cpu");
}

/* train_gpt2cu — GPT-2 training on an NVIDIA GPU (bf16, cuBLASLt, flash attention). Flags: ./train_gpt2cu -h */
#include <stdio.h>
#include "llmc.h"
#include "trainer.h"

int main(int argc, char **argv) {
    char err[512];
    if (!llmc_cpu_supported(err, sizeof err)) { /* before any code built for newer CPUs runs */
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return llmc_train_main(argc, argv, "cuda");
}

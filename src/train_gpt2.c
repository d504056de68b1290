/* train_gpt2 — GPT-2 training on the CPU (fp32, OpenMP). Flags: ./train_gpt2 -h */
#include "trainer.h"

int main(int argc, char **argv) { return llmc_train_main(argc, argv, "cpu"); }

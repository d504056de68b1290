/* train_gpt2cu — GPT-2 training on an NVIDIA GPU (bf16, cuBLASLt, flash attention). Flags: ./train_gpt2cu -h */
#include "trainer.h"

int main(int argc, char **argv) { return llmc_train_main(argc, argv, "cuda"); }

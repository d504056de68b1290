#!/usr/bin/env bash
# The README's first command: set up, prepare Shakespeare, train a small GPT-2 on
# the CPU for a few minutes, then sample from it. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Offline machines: point tiktoken at a local copy of the GPT-2 ranks when one sits beside the repo.
if [[ -z "${LLMC_GPT2_TIKTOKEN:-}" && -f ../shared/data/gpt2.tiktoken ]]; then
  export LLMC_GPT2_TIKTOKEN="$PWD/../shared/data/gpt2.tiktoken"
fi

echo "== 1/4 installing Python dependencies and building"
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
make all python

echo "== 2/4 preparing Shakespeare"
python3 -m llmc.prepare --dataset shakespeare --out data/shakespeare

STEPS="${STEPS:-300}"
echo "== 3/4 training a small GPT-2 (4 layers, 256 channels) for ${STEPS} steps on the CPU"
./train_gpt2 -e "L=4,H=4,C=256,T=128" -b 8 -t 64 -x "$STEPS" -l 1e-3 -u 20 -q 0.1 \
  -v 100 -m 8 -s 0 -n "$STEPS" -o out/quickstart

echo "== 4/4 sampling from the trained model"
python3 -m llmc.generate --model "out/quickstart/model_$(printf %08d "$STEPS").bin" \
  --prompt "ROMEO:" -n 120 --temperature 0.8 --top-k 50 --seed 1

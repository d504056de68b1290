#!/usr/bin/env bash
# GPT-2 (124M) as llm.c's published run trains it: FineWeb 10B, d12, 524,288 tokens a step
# (B=64 x T=1024; fewer rows per micro-batch accumulate to the same), lr 6e-4 with 700 warmup
# steps and a cosine to 0, weight decay 0.1, 18,865 steps (10B tokens), val loss and HellaSwag
# every 250 steps, a sample every 20,000, checkpoints every 5,000, curves in $OUT/curves.png.
# Run it again after any stop: it resumes (llm.c's loop shape, ending at the DONE file).
#
#   scripts/gpt2_124M.sh                      # one GPU; B=32 if B=64 does not fit
#   GPUS=8 scripts/gpt2_124M.sh               # 8 GPUs of this node (torchrun starts one process per GPU), ZeRO-1
#   SMALL=1 scripts/gpt2_124M.sh              # the same recipe scaled down on Shakespeare
#
# LAUNCH names another launcher (LAUNCH="mpirun -np 4", LAUNCH="srun"); ZERO=0|1 the ZeRO stage
# (1 with several processes).
#
# Every setting below can be changed from the environment (B, T, STEPS, ...; TRAIN and VAL are
# shard globs; TRAINER=./train_gpt2 trains on the CPU; EVAL=0 leaves HellaSwag out).
set -euo pipefail
cd "$(dirname "$0")/.."

TRAINER=${TRAINER:-./train_gpt2cu}
user_data=${TRAIN:-} # shards given: nothing to prepare
if [[ "${SMALL:-0}" == 1 ]]; then # minutes, not hours: the recipe's shape on a small corpus
  DATA=${DATA:-data/shakespeare}
  TRAIN=${TRAIN:-$DATA/shakespeare_train_*.bin} VAL=${VAL:-$DATA/shakespeare_val_*.bin}
  MODEL=${MODEL:-d12} B=${B:-16} T=${T:-256} TOTAL=${TOTAL:-$((${B:-16} * ${T:-256}))}
  STEPS=${STEPS:-400} WARMUP=${WARMUP:-40} VAL_EVERY=${VAL_EVERY:-50} CKPT=${CKPT:-200}
  [[ -n "$user_data" || -f "$DATA/shakespeare_val_000000.bin" ]] ||
    python3 -m llmc.prepare --dataset shakespeare --out "$DATA"
else
  DATA=${DATA:-data/fineweb10B}
  TRAIN=${TRAIN:-$DATA/fineweb_train_*.bin} VAL=${VAL:-$DATA/fineweb_val_*.bin}
  MODEL=${MODEL:-d12} B=${B:-64} T=${T:-1024} TOTAL=${TOTAL:-524288}
  STEPS=${STEPS:-18865} WARMUP=${WARMUP:-700} VAL_EVERY=${VAL_EVERY:-250} CKPT=${CKPT:-5000}
  [[ -n "$user_data" ]] || python3 -m llmc.prepare --dataset fineweb10B --out "$DATA" # resumes; a no-op once done
fi
OUT=${OUT:-out/gpt2_124M$([[ "${SMALL:-0}" == 1 ]] && echo _small)}

EVAL=${EVAL:-1}
HS_FILE=${HS_FILE:-${LLMC_CACHE:-$HOME/.cache/llmc}/hellaswag_val.bin}
if [[ "$EVAL" == 1 && ! -f "$HS_FILE" ]] &&
  ! python3 -m llmc.eval hellaswag --export "$HS_FILE" ${HELLASWAG_JSONL:+--data "$HELLASWAG_JSONL"}; then
  echo "note: no HellaSwag file (offline? set HELLASWAG_JSONL to a local hellaswag_val.jsonl); training without it"
  EVAL=0
fi
launch=()
if [[ -n "${LAUNCH:-}" ]]; then
  read -ra launch <<< "$LAUNCH"
elif (( ${GPUS:-1} > 1 )); then
  launch=(torchrun --standalone --nproc-per-node "$GPUS" --no-python)
fi
ZERO=${ZERO:-$(( ${#launch[@]} > 0 ? 1 : 0 ))}
hs_flags=()
[[ "$EVAL" == 1 ]] && hs_flags=(-h 1 --eval-file "$HS_FILE" --eval-limit "${EVAL_LIMIT:-0}")

done_file="$OUT/DONE_$(printf %08d "$STEPS")"
while [[ ! -f "$done_file" ]]; do
  "${launch[@]}" "$TRAINER" -i "$TRAIN" -j "$VAL" -o "$OUT" -e "$MODEL" -b "$B" -t "$T" -d "$TOTAL" -x "$STEPS" \
    -z "$ZERO" -u "$WARMUP" -l 0.0006 -q 0.0 -k cosine -c 0.1 -v "$VAL_EVERY" -m "${VAL_BATCHES:-20}" \
    -s "${SAMPLE_EVERY:-20000}" -g 144 -n "$CKPT" -y 1 --plot "${PLOT:-1}" "${hs_flags[@]}" ${EXTRA:-} ||
    { rc=$?; [[ -f "$done_file" ]] || { echo "trainer exited with $rc; run again to resume"; exit $rc; }; }
done
echo "done: $done_file; curves in $OUT/curves.png"

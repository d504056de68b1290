# llm.c's scripts/run_gpt2_124M.sh, scaled down to a tiny CPU run for the test suite
# (tests/test_llmc_script.py). What changed: the data paths, -e, -b/-t/-d/-x/-n, the DONE step,
# and the launcher (llm.c runs `mpirun -np 8 ./train_gpt2cu`; this runs one ./train_gpt2). Every
# other flag is llm.c's own, with its values.
#   TRAIN: the trainer (default ./train_gpt2), DATA: the shards' dir, OUT: the output dir

train="${TRAIN:-./train_gpt2}"
out_dir="${OUT:-log_gpt2_tiny}"
done_file="$out_dir/DONE_00000012"

# in case the training stalls or crashes, loop to resume (-y 1)
while true; do

    # exit condition is that optimization has finished
    if [ -f "$done_file" ]; then
        echo "File $done_file exists. Exiting the loop."
        break
    fi

    "$train" \
                -i "$DATA/tiny_train_*.bin" \
                -j "$DATA/tiny_val_*.bin" \
                -o $out_dir \
                -v 250 -s 20000 -g 144 \
                -h 1 \
                -b 2 -t 16 \
                -d 1024 \
                -x 12 \
                -r 0 \
                -z 1 \
                -c 0.1 \
                -l 0.0006 \
                -q 0.0 \
                -u 3 \
                -n 4 \
                -y 1 \
                -e "L=4,H=4,C=128,T=32,V=64"

    sleep 1
done

"""Runs decode steps to be traced: a model at random init, one session of B rows and n tokens.

    CUDA_INJECTION64_PATH=/tmp/libgpu_timeline.so LLMC_TIMELINE=/tmp/tl.csv \\
        python dev/trace/decode_steps.py --model d12 --batch 1 -n 64 [--quantize int8] [--sample]
    python dev/trace/timeline.py /tmp/tl.csv --step-kernel "argmax|sample" --split-us 20 --sequence

A second, short session first warms up (graph capture, allocation); the timeline's --skip drops
the first steps of the traced one. Prints the decode rate, to check that tracing changed little.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_generate import MODES, VARIANTS, llmc, session  # noqa: E402  (one definition of modes and variants)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="d12")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--quantize", choices=("none", "int8"), default="none")
    ap.add_argument("--group", type=int, default=0, help="int8 group size along the input (0: per channel)")
    ap.add_argument("--sample", action="store_true", help="temperature 1, top-k 50, top-p 0.95 instead of greedy")
    ap.add_argument("--variant", default="default", choices=list(VARIANTS))
    args = ap.parse_args()
    model = llmc.GPT2.from_config(args.model, device=args.device, master_weights=False)
    if args.quantize == "int8":
        model._m.quantize(args.group)
    sampling = MODES["sample" if args.sample else "greedy"]
    rng = np.random.default_rng(0)
    for n in (8, args.n):
        prompts = [rng.integers(0, 50000, 16).astype(np.int32) for _ in range(args.batch)]
        s = session(model._m, prompts, n, sampling, VARIANTS[args.variant])
        t0, alive = time.perf_counter(), args.batch
        while alive:
            _, alive = s.next()
        dt = time.perf_counter() - t0
        s.end()
    print(f"{args.model} {args.quantize} B={args.batch} {'sample' if args.sample else 'greedy'} "
          f"{args.variant}: {args.batch * args.n / dt:.0f} tok/s")


if __name__ == "__main__":
    main()

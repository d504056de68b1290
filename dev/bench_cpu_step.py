"""Times whole training steps of GPT-2 d12 at B=4, T=64 on the CPU backend (the issue's target).

    OMP_NUM_THREADS=2 python3 dev/bench_cpu_step.py [--steps 5] [--model d12] [-b 4] [-t 64]
"""
import argparse
import time

import numpy as np

import llmc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="d12")
    ap.add_argument("-b", type=int, default=4)
    ap.add_argument("-t", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    model = llmc.GPT2.from_config(a.model, device="cpu", seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50257, (a.b, a.t)).astype(np.int32)
    y = rng.integers(0, 50257, (a.b, a.t)).astype(np.int32)
    times = []
    for i in range(a.steps + 1):  # the first step allocates grads, activations and AdamW state
        t0 = time.perf_counter()
        model.zero_grad()
        loss = model._trainer().forward_backward(x, y, 1.0)
        model.step(lr=3e-4)
        times.append(time.perf_counter() - t0)
        print(f"step {i}: loss {loss:.4f} {times[-1] * 1e3:.0f} ms", flush=True)
    steady = sorted(times[1:])
    print(f"{a.model} B={a.b} T={a.t}: median {steady[len(steady) // 2] * 1e3:.0f} ms/step, "
          f"best {steady[0] * 1e3:.0f} ms/step")


if __name__ == "__main__":
    main()

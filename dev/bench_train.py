"""Training speed of ./train_gpt2cu next to a PyTorch baseline, in one invocation.

    python dev/bench_train.py                                  # d12 B=64 T=1024, llmc vs compiled PyTorch
    python dev/bench_train.py --sizes d12:64,d48:16 --steps 30
    python dev/bench_train.py --sizes d48:16 --llmc-args "-r 1"   # recompute for the big ones
    python dev/bench_train.py --no-torch                       # llmc alone (also on a CPU: --trainer ./train_gpt2)
    python dev/bench_train.py --variants "bf16=;fp8=--fp8 1;fp8lm=--fp8 2"   # several llmc settings, one PyTorch

For each size (dN:B) the runs alternate llmc, PyTorch, llmc (--rounds changes how many llmc
runs there are), all on the same random tokens; with --variants each llmc turn runs every
variant in order. Each run is a fresh process. Reported per run:
the median ms/step over steps 4..N (steps 1-3 allocate, tune and compile), tok/s = B*T / that,
MFU against --peak-tflops (989: H200 dense bf16) with 6*params + 6*L*T*C FLOPs per token, and
the peak GPU memory that nvidia-smi saw (sampled every 0.2 s, the same for both sides). Then the
ratio of the llmc median to PyTorch's. The PyTorch side is dev/torch_gpt2_train.py.
torch.compile takes minutes on a cold machine: its first steps are left out of the median, but
the wall time of a run includes it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHAPES = {12: (12, 768), 24: (16, 1024), 36: (20, 1280), 48: (25, 1600)}  # depth: (heads, channels)
PADDED_VOCAB = 50304


def flops_per_token(depth: int, T: int) -> float:
    """6 * params + 6 * L * T * C, llmc's own MFU formula (src/train_loop.c)."""
    C = SHAPES[depth][1]
    params = PADDED_VOCAB * C + T * C + depth * (12 * C * C + 13 * C) + 2 * C
    return 6.0 * params + 6.0 * depth * T * C


class PeakMemory:
    """Largest nvidia-smi memory.used (MiB) while the block runs; 0 without nvidia-smi."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.peak = max([self.peak] + [int(v) for v in out.split() if v.isdigit()])
            except (OSError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_tokens(path: str, n: int):
    header = np.zeros(256, np.int32)
    header[:3] = [20240520, 1, n]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.random.default_rng(0).integers(0, 50257, n).astype(np.uint16).tobytes())


def run_llmc(args, depth, B, data, flags=""):
    cmd = [args.trainer, "-e", f"d{depth}", "-b", str(B), "-t", str(args.seq), "-x", str(args.steps),
           "-v", "0", "-s", "0", "-l", "6e-4", "-i", data, *shlex.split(args.llmc_args), *shlex.split(flags)]
    with PeakMemory() as mem:
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    ms = [float(m) for m in re.findall(r"\| ([\d.]+) ms \|", r.stdout)]
    losses = [float(m) for m in re.findall(r"\| loss ([\d.]+)", r.stdout)]
    return ms, losses, mem.peak


def run_torch(args, depth, B):
    cmd = [sys.executable, os.path.join(HERE, "torch_gpt2_train.py"), "--depth", str(depth), "--batch", str(B),
           "--seq", str(args.seq), "--steps", str(args.steps)] + ([] if args.no_compile else ["--compile"])
    with PeakMemory() as mem:
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["ms"], out["losses"], mem.peak


def report(name, depth, B, ms, losses, peak, args):
    med = statistics.median(ms[3:]) if len(ms) > 3 else statistics.median(ms)
    tok_s = B * args.seq / (med / 1e3)
    mfu = 100.0 * tok_s * flops_per_token(depth, args.seq) / (1e12 * args.peak_tflops)
    print(f"d{depth} B={B} T={args.seq} {name:6s} {med:8.2f} ms/step  {tok_s / 1e3:7.1f}K tok/s  MFU {mfu:5.1f}%  "
          f"peak {peak / 1024:5.1f} GiB  loss@{len(losses)} {losses[-1] if losses else float('nan'):.6f}", flush=True)
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="d12:64", help="comma-separated dDEPTH:B (default d12:64)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2, help="llmc runs per size; PyTorch runs between them")
    ap.add_argument("--trainer", default=os.path.join(REPO, "train_gpt2cu"))
    ap.add_argument("--llmc-args", default="", help="more trainer flags, e.g. \"-r 1\"")
    ap.add_argument("--variants", default="",
                    help='llmc settings to compare, "NAME=FLAGS" separated by ";" (FLAGS after --llmc-args), '
                         'e.g. "bf16=;fp8=--fp8 1" (default: one, named llmc)')
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="PyTorch eager (for a quick check)")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()

    variants = [("llmc", "")]
    if args.variants:
        variants = []
        for item in args.variants.split(";"):
            name, eq, flags = item.partition("=")
            if not eq or not name.strip():
                raise SystemExit(f"--variants: '{item}' is not NAME=FLAGS")
            variants.append((name.strip(), flags.strip()))
    sizes = []
    for item in args.sizes.split(","):
        m = re.fullmatch(r"d(\d+):(\d+)", item.strip())
        if not m or int(m.group(1)) not in SHAPES:
            raise SystemExit(f"--sizes: '{item}' is not dDEPTH:B with DEPTH one of 12, 24, 36, 48")
        sizes.append((int(m.group(1)), int(m.group(2))))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "bench_train_000000.bin")
        write_tokens(data, max(B for _, B in sizes) * (args.seq + 1) * (args.steps + 2) + 1)
        for depth, B in sizes:
            llmc_ms, torch_ms = {name: [] for name, _ in variants}, []
            for r in range(args.rounds):
                for name, flags in variants:
                    llmc_ms[name].append(report(name, depth, B, *run_llmc(args, depth, B, data, flags), args))
                if not args.no_torch and r < max(args.rounds - 1, 1):
                    torch_ms.append(report("torch", depth, B, *run_torch(args, depth, B), args))
            for name, _ in variants:
                if torch_ms:
                    print(f"d{depth} B={B}: {name} {statistics.median(llmc_ms[name]):.2f} ms, PyTorch "
                          f"{statistics.median(torch_ms):.2f} ms: {name} is "
                          f"{statistics.median(torch_ms) / statistics.median(llmc_ms[name]):.3f}x", flush=True)


if __name__ == "__main__":
    main()

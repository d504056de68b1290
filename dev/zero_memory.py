"""Optimizer memory per rank with ZeRO-0 and ZeRO-1, for d12 and d48 at 1, 2, 4 and 8 ranks.

    python3 dev/zero_memory.py                 # the table (measures d12 under mpirun, if there is one)
    python3 dev/zero_memory.py --measure-only  # just the measured rows

Measured: mpirun -np N starts N CPU ranks of a d12 model; each trains one tiny step with ZeRO-1 and
reports what its trainer allocated for AdamW's moments (Trainer.optimizer_memory). The table's
other rows come from llmc's own sizing function (_core.optimizer_bytes, the one the allocator
uses), which the measured rows check. On the GPU each parameter also has an fp32 master weight
(12 bytes per parameter instead of the CPU's 8).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from llmc import _core

CONFIGS = {"d12": "d12", "d48": "d48"}
WORLDS = (1, 2, 4, 8)


def rank_main(out_dir):
    """One rank of the measurement: a d12 on the CPU, one step with ZeRO-1."""
    m = _core.Model()
    m.init_random(_core.config_from_descriptor("d12"), backend="cpu", seed=1)
    t = _core.Trainer(m, zero_stage=1)
    t.open_comm()
    rng = np.random.default_rng(t.rank)
    tokens = rng.integers(0, 50257, (1, 8), dtype=np.int32)
    t.zero_grad()
    t.forward_backward(tokens, np.roll(tokens, -1, axis=1), 1.0 / t.world)
    t.step(1e-4)
    with open(os.path.join(out_dir, f"rank{t.rank}.json"), "w") as f:
        json.dump(dict(rank=t.rank, world=t.world, optimizer_bytes=t.optimizer_memory), f)


def measure(world):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
        subprocess.run([mpirun, "-np", str(world), sys.executable, __file__, "--rank-main", d], check=True, env=env)
        return max(json.load(open(os.path.join(d, f))).get("optimizer_bytes") for f in os.listdir(d))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rank-main", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--measure-only", action="store_true")
    a = ap.parse_args()
    if a.rank_main:
        return rank_main(a.rank_main)
    gib = 1024 ** 3
    params = {name: _core.param_count(_core.config_from_descriptor(d)) for name, d in CONFIGS.items()}
    print("| model | params | ranks | ZeRO-0 CPU / GPU (GiB per rank) | ZeRO-1 CPU / GPU (GiB per rank) | "
          "d12 ZeRO-1 CPU, measured |")
    print("|---|---|---|---|---|---|")
    for name, p in params.items():
        for w in WORLDS:
            z0 = [_core.optimizer_bytes(p, w, 0, mw) / gib for mw in (0, 1)]
            z1 = [_core.optimizer_bytes(p, w, 1, mw) / gib for mw in (0, 1)]
            measured = ""
            if name == "d12":
                got = measure(w)
                if got is not None:
                    assert got == _core.optimizer_bytes(p, w, 1, 0), (got, w)
                    measured = f"{got / gib:.3f} (= the sizing function)"
            if a.measure_only and not measured:
                continue
            print(f"| {name} | {p:,} | {w} | {z0[0]:.3f} / {z0[1]:.3f} | {z1[0]:.3f} / {z1[1]:.3f} | {measured} |")


if __name__ == "__main__":
    main()

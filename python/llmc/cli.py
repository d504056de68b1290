"""Console scripts for the C trainers that ship inside the package (llmc/bin/):

    llmc-train ...      the same program as ./train_gpt2 in a checkout (CPU by default, --device cuda)
    llmc-train-cu ...   the same program as ./train_gpt2cu (GPU by default; in CUDA builds only)

Every flag is the trainer's own (llmc-train -h). The other scripts are Python modules:
llmc-generate (python -m llmc.generate), llmc-prepare (python -m llmc.prepare) and
llmc-convert (python -m llmc.convert).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

BIN_DIR = Path(__file__).resolve().parent / "bin"


def _exec(name: str) -> int:
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        hint = ("this build has no CUDA backend (it was built without nvcc); llmc-train --device cuda "
                "needs one too" if name.endswith("cu") else "reinstall llmc")
        print(f"error: {path} is missing: {hint}", file=sys.stderr)
        return 1
    os.execv(str(path), [f"llmc-{'train-cu' if name.endswith('cu') else 'train'}", *sys.argv[1:]])
    return 1  # not reached


def train() -> int:
    return _exec("train_gpt2")


def train_cu() -> int:
    return _exec("train_gpt2cu")

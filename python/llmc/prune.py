"""Magnitude pruning of a model file's matmul weights (qkvw, attprojw, fcw, fcprojw of every layer).

    python -m llmc.prune model.bin --sparsity 0.5 --out pruned.bin                  # per tensor per layer
    python -m llmc.prune model.bin --sparsity 0.5 --scope global --out pruned.bin   # one threshold for all
    python -m llmc.prune model.bin --pattern 2:4 --out pruned.bin                   # 2 of every 4 along a row

The pruning is the C library's (llmc_model_prune); this tool parses, calls it and prints the sparsity
each tensor of each layer reached. The output is an ordinary model file (llm.c reads it), written
atomically, in the input's precision unless --format says otherwise. Fine-tune it with the zeros kept:
./train_gpt2 -e pruned.bin --prune-mask 1 ... (or GPT2.train(..., keep_zeros=True)).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np

MODEL_MAGIC = 20240326


def file_version(path: str) -> int:
    """3 (fp32) or 5 (bf16) from an llm.c model file's header; 0 when it is not one (a directory)."""
    try:
        header = np.fromfile(path, dtype=np.int32, count=2)
    except (OSError, ValueError):
        return 0
    return int(header[1]) if len(header) == 2 and header[0] == MODEL_MAGIC and header[1] in (3, 5) else 0


def summary(report: List[dict]) -> str:
    """The report as lines: one per tensor and layer, then the total over the pruned tensors."""
    lines = [f"{'tensor':<10} {'layer':>5} {'weights':>12} {'zeros':>12} {'sparsity':>9}"]
    for r in report:
        lines.append(f"{r['tensor']:<10} {r['layer']:>5} {r['numel']:>12} {r['zeros']:>12} "
                     f"{100.0 * r['zeros'] / r['numel']:>8.2f}%")
    total, zeros = sum(r["numel"] for r in report), sum(r["zeros"] for r in report)
    lines.append(f"{'all':<10} {'':>5} {total:>12} {zeros:>12} {100.0 * zeros / max(total, 1):>8.2f}%")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmc.prune", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model file (llm.c v3/v5) or Hugging Face GPT-2 directory")
    ap.add_argument("--sparsity", type=float, default=None,
                    help="fraction in [0, 1] of each group's weights to zero (2:4: implied, 0.5)")
    ap.add_argument("--pattern", default="unstructured", help="unstructured (default) or 2:4")
    ap.add_argument("--scope", default=None, help="unstructured: layer (default, per tensor per layer) or global")
    ap.add_argument("--out", required=True, help="the pruned model file to write")
    ap.add_argument("--format", type=int, default=None, choices=(3, 5),
                    help="3 (fp32) or 5 (bf16); default: the input's (3 for a directory)")
    ap.add_argument("--quiet", action="store_true", help="print the total only")
    args = ap.parse_args(argv)

    from . import _core
    from ._core import LlmcError
    try:
        m = _core.Model()
        m.load(args.model)  # on the CPU: the pruning is host code, the weights are fp32 there
        report = m.prune(args.sparsity, args.pattern, args.scope)
        version = args.format or file_version(args.model) or 3
        m.save(args.out, version)
    except LlmcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = summary(report)
    print(text.splitlines()[-1] if args.quiet else text)
    print(f"wrote {args.out} (v{version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

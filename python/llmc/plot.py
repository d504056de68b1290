"""python -m llmc.plot — loss curves from trainer logs.

    python -m llmc.plot out/a/main.log -o curves.png
    python -m llmc.plot out/a/main.log out/b/main.log --labels bf16,fp8 --logx -o cmp.png

Reads main.log in llm.c's line format, as ./train_gpt2, ./train_gpt2cu and llm.c write it:
`s:N trl:LOSS ...` (train loss), `s:N tel:LOSS` (val loss) and `s:N eval:ACC` (HellaSwag
accuracy). A train line's N counts from 0, so its update is step N + 1, as llmc prints it.
Train and val loss share the left panel, and HellaSwag gets a right panel when any run logged
it. Several runs are overlaid, each in its own color (solid: train, dashed with dots: val). A
resumed run's log repeats no steps: the trainer truncates it to its checkpoint. matplotlib is an
optional dependency (`pip install matplotlib`).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

LINE = re.compile(r"^s:(\d+) (trl|tel|eval):([-+0-9.eEinfa]+)")


class PlotError(Exception):
    """Bad input: printed as one line, exit status 1."""


def read_log(path) -> Dict[str, List[tuple]]:
    """{"train": [(step, loss)], "val": [...], "hellaswag": [(step, acc)]} of one main.log."""
    series = {"train": [], "val": [], "hellaswag": []}
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise PlotError(f"cannot read {path}: {e.strerror}") from None
    with f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            step, kind, value = int(m.group(1)), m.group(2), float(m.group(3))
            if kind == "trl":
                series["train"].append((step + 1, value))
            else:
                series["val" if kind == "tel" else "hellaswag"].append((step, value))
    if not any(series.values()):
        raise PlotError(f"{path} holds no llm.c-format log lines (s:N trl:..., s:N tel:...)")
    return series


def plot(logs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None, logx: bool = False,
         title: Optional[str] = None) -> List[tuple]:
    """Draws the runs into out (PNG, or any format matplotlib knows by the extension) atomically.
    Returns the series drawn: (panel, label, number of points)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install matplotlib") from None
    if labels is not None and len(labels) != len(logs):
        raise PlotError(f"{len(labels)} labels for {len(logs)} logs")
    runs = [read_log(p) for p in logs]
    names = list(labels) if labels else [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in logs]
    with_eval = any(r["hellaswag"] for r in runs)
    fig, axes = plt.subplots(1, 2 if with_eval else 1, figsize=(12 if with_eval else 7, 4.5), squeeze=False)
    loss_ax = axes[0][0]
    drawn = []
    for i, (run, name) in enumerate(zip(runs, names)):
        color = f"C{i % 10}"
        for key, style in (("train", dict(lw=1.0, alpha=0.8)), ("val", dict(ls="--", marker=".", lw=1.5))):
            if run[key]:
                xs, ys = zip(*run[key])
                loss_ax.plot(xs, ys, color=color, label=f"{name} {key}", **style)
                drawn.append(("loss", f"{name} {key}", len(xs)))
        if with_eval and run["hellaswag"]:
            xs, ys = zip(*run["hellaswag"])
            axes[0][1].plot(xs, ys, color=color, marker=".", label=name)
            drawn.append(("hellaswag", name, len(xs)))
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    if with_eval:
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("HellaSwag acc")
        axes[0][1].legend()
    for ax in axes[0]:
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    loss_ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        fig.savefig(tmp, format=os.path.splitext(out)[1][1:] or "png", dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return drawn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmc.plot", description="Loss curves from trainer logs (main.log).")
    p.add_argument("logs", nargs="+", help="main.log files (llm.c's line format)")
    p.add_argument("-o", "--out", default="curves.png", help="output image (default curves.png)")
    p.add_argument("--labels", help="comma-separated run names (default: each log's directory)")
    p.add_argument("--logx", action="store_true", help="logarithmic step axis")
    p.add_argument("--title")
    args = p.parse_args(argv)
    try:
        drawn = plot(args.logs, args.out, args.labels.split(",") if args.labels else None, args.logx, args.title)
    except PlotError as e:
        print(f"llmc.plot: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: " + ", ".join(f"{label} ({n} points)" for _, label, n in drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main())

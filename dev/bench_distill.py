"""Knowledge distillation against plain training: the same student, the same data, N steps each.

    python dev/bench_distill.py --teacher out/d12/model_00005000.bin --student "L=6,H=12,C=768" \\
        --device cuda --steps 1000 -b 16 -t 1024 --out out/bench_distill
    python dev/bench_distill.py --teacher tiny_teacher.bin --student "L=1,H=2,C=64,T=64" --device cpu \\
        --steps 20 -b 4 -t 64 --val-every 10 --val-batches 4 --out /tmp/bd

The student starts from the same random init (--seed) in both runs and reads the same batches; one run
trains on the cross-entropy, the other with --teacher (alpha --alpha, temperature --temperature).
Validation is plain cross-entropy in both. Writes OUT/distill.md (final val loss and time per step of
each), OUT/distill.png (val and train loss curves; matplotlib, when installed) and each run's main.log
under OUT/plain and OUT/distill (python -m llmc.plot draws them too).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import llmc
from llmc import _core


def run(args, teacher):
    student = llmc.GPT2.from_config(args.student, device=args.device, seed=args.seed)
    name = "distill" if teacher else "plain"
    extra = dict(teacher=teacher, distill_alpha=args.alpha, distill_temperature=args.temperature) if teacher else {}
    t0 = time.time()
    hist = student.train(args.train, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                         lr=args.lr, warmup=min(args.warmup, args.steps), schedule="cosine", final_lr_frac=0.1,
                         val_data=args.val, val_every=args.val_every, val_batches=args.val_batches,
                         sample_every=0, out_dir=os.path.join(args.out, name), progress=False, **extra)
    wall = time.time() - t0
    ms = sorted(h["ms"] for h in hist[1:] or hist)
    vals = [(h["step"], h["val_loss"]) for h in hist if "val_loss" in h]
    row = dict(name=name, val=vals[-1][1] if vals else float("nan"), vals=vals,
               train=[(h["step"], h["loss"]) for h in hist], ms=ms[len(ms) // 2], wall=wall)
    print(f"{name:>8}: final val loss {row['val']:.4f}, {row['ms']:.1f} ms/step (median), {wall:.1f} s", flush=True)
    return row


def table(rows, args, teacher_cfg) -> str:
    t = teacher_cfg
    lines = [f"Student `{args.student}` for {args.steps} steps (B={args.batch_size}, T={args.seq_len}, lr {args.lr:g}, "
             f"seed {args.seed}, device {args.device}), with and without distillation from `{args.teacher}` "
             f"(L={t['num_layers']} H={t['num_heads']} C={t['channels']}; alpha {args.alpha:g}, temperature "
             f"{args.temperature:g}). Val loss is plain cross-entropy over {args.val_batches} batches; the "
             "distillation run's train loss is its distillation loss.", "",
             "| run | final val loss | best val loss | ms/step (median) | wall s |", "|---|---|---|---|---|"]
    for r in rows:
        best = min(v for _, v in r["vals"]) if r["vals"] else float("nan")
        lines.append(f"| {r['name']} | {r['val']:.4f} | {best:.4f} | {r['ms']:.1f} | {r['wall']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        if r["vals"]:
            a.plot(*zip(*r["vals"]), "o-", label=r["name"])
        b.plot(*zip(*r["train"]), label=r["name"])
    a.set_title("val loss (cross-entropy)")
    b.set_title("train loss (the distillation loss for distill)")
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True, help="a trained model file (d12: gpt2_124M or a run's checkpoint)")
    ap.add_argument("--student", default="L=6,H=12,C=768", help="the student's descriptor")
    ap.add_argument("--train", default="data/shakespeare/shakespeare_train_*.bin")
    ap.add_argument("--val", default="data/shakespeare/shakespeare_val_*.bin")
    ap.add_argument("--device", default="cuda" if "cuda" in _core.backends() else "cpu")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("-b", "--batch-size", type=int, default=16)
    ap.add_argument("-t", "--seq-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--out", default="out/bench_distill")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    h = np.fromfile(args.teacher, dtype=np.int32, count=8)  # its shape, for the report (the run loads it)
    rows = [run(args, None), run(args, args.teacher)]
    text = table(rows, args, dict(num_layers=int(h[4]), num_heads=int(h[5]), channels=int(h[6])))
    with open(os.path.join(args.out, "distill.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    png = os.path.join(args.out, "distill.png")
    print(f"wrote {os.path.join(args.out, 'distill.md')}" + (f" and {png}" if plot(rows, png) else
                                                            " (no matplotlib: no plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Val loss against sparsity: a trained model pruned to each setting (llmc's magnitude pruning), before
and after a short recovery fine-tune with the zeros kept (keep_zeros).

    python dev/bench_prune.py --model out/d12/model_00005000.bin --device cuda --steps 200 --out out/bench_prune
    python dev/bench_prune.py --model tiny.bin --device cpu --steps 5 -b 4 -t 64 --val-batches 4 --out /tmp/bp

For each setting (default: unstructured 0, 25, 50, 75 % per tensor per layer, and 2:4) it loads the model,
prunes it, measures the val loss over --val-batches batches, fine-tunes --steps steps on the train shards
(same data, same schedule for every setting) with keep_zeros, checks that every pruned weight is still 0,
and measures the val loss again. Writes OUT/prune.md (a table) and OUT/prune.png (matplotlib, when
installed) and prints the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import llmc
from llmc import _core

PRUNED = ("qkvw", "attprojw", "fcw", "fcprojw")


def parse_settings(text: str):
    """'0,0.25,2:4' -> [(label, sparsity or None, pattern)]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if item == "2:4":
            out.append(("2:4", None, "2:4"))
        else:
            s = float(item)
            out.append((f"{100 * s:g}%", s, "unstructured"))
    return out


def zero_mask(model: "llmc.GPT2") -> np.ndarray:
    flat = model.get_params()
    mask = np.zeros(flat.size, bool)
    for name, off, shape, _ in _core.param_layout(model.config):
        if name in PRUNED:
            n = int(np.prod(shape))
            mask[off:off + n] = flat[off:off + n] == 0
    return mask


def val_loss(model: "llmc.GPT2", pattern: str, B: int, T: int, batches: int) -> float:
    return model.evaluate(_core.DataLoader(pattern, B, T), batches)


def run_setting(args, label, sparsity, pattern):
    model = llmc.GPT2.from_pretrained(args.model, device=args.device)
    report = model.prune(sparsity, pattern, args.scope if pattern == "unstructured" else "layer")
    achieved = sum(r["zeros"] for r in report) / sum(r["numel"] for r in report)
    mask = zero_mask(model)
    before = val_loss(model, args.val, args.batch_size, args.seq_len, args.val_batches)
    t0 = time.time()
    if args.steps > 0:
        model.train(args.train, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                    warmup=min(args.warmup, args.steps), schedule="cosine", final_lr_frac=0.1, sample_every=0,
                    keep_zeros=True, progress=False)
    ft_s = time.time() - t0
    after = val_loss(model, args.val, args.batch_size, args.seq_len, args.val_batches)
    still = bool(np.all(model.get_params()[mask] == 0))
    row = dict(label=label, pattern=pattern, sparsity=achieved, before=before, after=after, kept=still,
               ft_s=ft_s)
    print(f"{label:>6}: sparsity {100 * achieved:6.2f}%  val {before:.4f} -> {after:.4f}  "
          f"({args.steps} steps, {ft_s:.1f} s, zeros kept: {still})", flush=True)
    return row


def table(rows, args) -> str:
    lines = [f"Val loss of `{args.model}` pruned ({args.scope} scope for unstructured), before and after "
             f"{args.steps} recovery steps with the zeros kept (B={args.batch_size}, T={args.seq_len}, "
             f"lr {args.lr:g}, {args.val_batches} val batches, device {args.device}).", "",
             "| pruning | sparsity of the matmul weights | val loss pruned | val loss after fine-tune | "
             "zeros kept | fine-tune s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {100 * r['sparsity']:.2f}% | {r['before']:.4f} | {r['after']:.4f} | "
                     f"{'yes' if r['kept'] else 'NO'} | {r['ft_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    un = [r for r in rows if r["pattern"] == "unstructured"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if un:
        xs = [100 * r["sparsity"] for r in un]
        ax.plot(xs, [r["before"] for r in un], "o-", label="pruned")
        ax.plot(xs, [r["after"] for r in un], "o-", label="after recovery fine-tune")
    for r in rows:
        if r["pattern"] == "2:4":
            ax.plot([100 * r["sparsity"]], [r["before"]], "s", color="C0", label="2:4 pruned")
            ax.plot([100 * r["sparsity"]], [r["after"]], "s", color="C1", label="2:4 after fine-tune")
    ax.set_xlabel("sparsity of the matmul weights (%)")
    ax.set_ylabel("val loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a trained model file")
    ap.add_argument("--train", default="data/shakespeare/shakespeare_train_*.bin")
    ap.add_argument("--val", default="data/shakespeare/shakespeare_val_*.bin")
    ap.add_argument("--device", default="cuda" if "cuda" in _core.backends() else "cpu")
    ap.add_argument("--settings", default="0,0.25,0.5,0.75,2:4", help="sparsities and/or 2:4, comma-separated")
    ap.add_argument("--scope", default="layer", help="unstructured: layer or global")
    ap.add_argument("--steps", type=int, default=200, help="recovery fine-tune steps per setting")
    ap.add_argument("-b", "--batch-size", type=int, default=16)
    ap.add_argument("-t", "--seq-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--val-batches", type=int, default=20)
    ap.add_argument("--out", default="out/bench_prune")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = [run_setting(args, *s) for s in parse_settings(args.settings)]
    text = table(rows, args)
    with open(os.path.join(args.out, "prune.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    png = os.path.join(args.out, "prune.png")
    print(f"wrote {os.path.join(args.out, 'prune.md')}" + (f" and {png}" if plot(rows, png) else
                                                          " (no matplotlib: no plot)"))
    return 0 if all(r["kept"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

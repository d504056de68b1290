"""What int8 weight-only quantization costs and buys: val loss, greedy agreement, file size, and
batch-1 decode speed, float against int8 variants of one model, in one invocation.

    python dev/bench_quant.py --model out/d12/model_00001000.bin \
        --val "data/shakespeare/shakespeare_val_*.bin" --device cpu [--threads 16]

Variants: the float model (the backend's dtype), int8 per output channel with and without wte,
and int8 in groups of 128. For each: val loss (mean over --val-batches rows of the model's
context), the agreement of 32 greedy tokens after each of --prompts val prompts with the float
model's (tokens equal up to the first difference, and whole continuations equal), the model
file's size, and batch-1 greedy decode tok/s (16-token prompt, -n new tokens; median of --reps,
the variants interleaved so that a busy machine slows them alike).
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generate import llmc_decode, llmc_prefill  # noqa: E402

import llmc  # noqa: E402
from llmc import eval as ev  # noqa: E402

VARIANTS = [("float", None), ("int8 per-channel", dict(group_size=0, embeddings=True)),
            ("int8 per-channel, wte float", dict(group_size=0, embeddings=False)),
            ("int8 group 128", dict(group_size=128, embeddings=True))]


def load(path, device, q):
    model = llmc.GPT2.from_pretrained(path, device=device)
    if q:
        model.quantize(**q)
    return model


def val_loss(model, pattern, batches, T):
    losses = lambda x, y: model.forward(x, y, return_logits=False, reduction="none")[1]
    return ev.perplexity(losses, ev.shard_batches(pattern, 4, T, batches))["loss"]


def prompts_from(pattern, n, length, seed=0):
    tokens = np.concatenate([np.fromfile(f, np.uint16, offset=1024).astype(np.int32) for f in sorted(glob.glob(pattern))])
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length, n)
    return [tokens[s:s + length] for s in starts]


def agreement(ref, got):
    prefix = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) / len(r) for r, g in zip(ref, got)]
    return float(np.mean(prefix)), sum(np.array_equal(r, g) for r, g in zip(ref, got))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--val", required=True, help="val shards (glob)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--val-batches", type=int, default=16)
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("-n", type=int, default=128, help="new tokens per decode timing")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    models = [(name, load(a.model, a.device, q)) for name, q in VARIANTS]
    T = min(models[0][1].config["max_seq_len"], 1024)
    prompts = prompts_from(a.val, a.prompts, 32)
    rows, greedy, tmp = {}, {}, tempfile.mkdtemp()
    for name, model in models:
        path = os.path.join(tmp, "m.bin")
        model.save(path)
        greedy[name] = model.generate([list(x) for x in prompts], max_new_tokens=32, temperature=0.0, eot=-1)
        rows[name] = dict(loss=val_loss(model, a.val, a.val_batches, T), size=os.path.getsize(path),
                          memory=model.memory["weights"], agree=agreement(greedy["float"], greedy[name]))
        print(f"{name}: val loss {rows[name]['loss']:.4f}", file=sys.stderr, flush=True)
    speed = {name: [] for name, _ in models}
    rng = np.random.default_rng(1)
    for _ in range(a.reps):
        for name, model in models:
            speed[name].append(llmc_decode(model._m, 1, 16, a.n, rng, (0.0, 0))[0])
    base = rows["float"]
    fast = statistics.median(speed["float"])
    print(f"\n{a.model} on {a.device}: val loss over {a.val_batches} x 4 x {T} tokens, greedy agreement over "
          f"{a.prompts} prompts x 32 new tokens, batch-1 greedy decode ({a.n} new tokens, median of {a.reps})\n")
    print("| variant | val loss | vs float | greedy agreement (prefix / identical) | file MB | weights MB "
          "| decode tok/s | speedup | prefill 512 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model in models:
        r, tok_s = rows[name], statistics.median(speed[name])
        pre = llmc_prefill(model._m, min(512, T), 3, rng) * 1e3
        print(f"| {name} | {r['loss']:.4f} | {100 * (r['loss'] / base['loss'] - 1):+.2f}% | {100 * r['agree'][0]:.1f}% "
              f"/ {r['agree'][1]}/{a.prompts} | {r['size'] / 1e6:.1f} | {r['memory'] / 1e6:.1f} | {tok_s:,.0f} "
              f"| {tok_s / fast:.2f}x | {pre:.2f} |")


if __name__ == "__main__":
    main()

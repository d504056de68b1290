"""Reads a GPU timeline (dev/trace/gpu_timeline.c) and says where the GPU sat idle.

    python dev/trace/timeline.py /tmp/tl.csv                 # steps end with AdamW's kernels
    python dev/trace/timeline.py /tmp/tl.csv --skip 3 --gaps 15
    python dev/trace/timeline.py /tmp/tl.csv --step-kernel "argmax|sample" --split-us 20 --sequence

Steps: a step ends with its last kernel whose name matches --step-kernel (default "adamw"); a run
of such kernels with less than 1 ms between them is one update. For each step: the wall span
(from the end of the previous update to the end of this one), the time the GPU was busy (the
union of its kernels, copies and memsets) and the idle rest. Then, over all steps after --skip
of them: the median of each, the kernels by total time, and the longest gaps, each with the
kernel before and after it and the host's CUDA runtime calls during it (a cudaStreamSynchronize
there means the host made the GPU wait; a cudaLaunchKernel means the host was too slow to feed it).
--sequence also lists the median step's kernels in order, each with the idle time before it: the
view a decode step needs (about a hundred short kernels, where the gaps are the question).
"""
from __future__ import annotations

import argparse
import collections
import re
import statistics


def read(path):
    """(gpu, host): lists of (start_ns, end_ns, name); gpu sorted by start."""
    gpu, host = [], []
    with open(path) as f:
        for line in f:
            kind, start, end, name = line.rstrip("\n").split(",", 3)
            (host if kind == "R" else gpu).append((int(start), int(end), name))
    gpu.sort()
    host.sort()
    return gpu, host


def busy_intervals(gpu):
    """The union of the GPU's intervals, as sorted disjoint (start, end)."""
    merged = []
    for s, e, _ in gpu:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged


def step_ends(gpu, pattern, split_ns=1_000_000):
    """End times of the updates: runs of kernels matching pattern, split by > split_ns."""
    rx, ends, last = re.compile(pattern), [], None
    for s, e, name in gpu:
        if not rx.search(name):
            continue
        if last is not None and s - last > split_ns:
            ends.append(last)
        last = e if last is None else max(last, e)
    if last is not None:
        ends.append(last)
    return ends


def busy_between(busy, a, b):
    return sum(max(0, min(e, b) - max(s, a)) for s, e in busy)


def gaps_between(busy, a, b):
    """Idle gaps (start, end) of the GPU inside [a, b]."""
    out, t = [], a
    for s, e in busy:
        if e <= a or s >= b:
            continue
        if s > t:
            out.append((t, s))
        t = max(t, e)
    if t < b:
        out.append((t, b))
    return out


def analyse(gpu, host, pattern="adamw", skip=2, split_ns=1_000_000):
    """Per-step rows (span, busy, idle in ns, start, end) after skip steps, and the gaps of those steps."""
    busy, ends = busy_intervals(gpu), step_ends(gpu, pattern, split_ns)
    rows, gaps = [], []
    for a, b in list(zip(ends, ends[1:]))[skip:]:
        done = busy_between(busy, a, b)
        rows.append((b - a, done, b - a - done, a, b))
        gaps += gaps_between(busy, a, b)
    return rows, gaps


def print_sequence(gpu, a, b):
    """The kernels that start in (a, b], in order: idle before each, its duration, its name."""
    print(f"median step, {(b - a) / 1e3:.1f} us: idle before | duration | kernel")
    t = a
    for s, e, name in gpu:
        if a < s <= b:
            print(f"  {max(0, s - t) / 1e3:7.2f} {(e - s) / 1e3:7.2f}  {re.sub(r'[(<].*', '', name)[:60]}")
            t = max(t, e)


def describe_gap(gap, gpu, host):
    s, e = gap
    before = max((g for g in gpu if g[1] <= s), key=lambda g: g[1], default=(0, 0, "-"))[2]
    after = min((g for g in gpu if g[0] >= e), key=lambda g: g[0], default=(0, 0, "-"))[2]
    calls = collections.Counter()
    for hs, he, name in host:
        overlap = min(he, e) - max(hs, s)
        if overlap > 0:
            calls[name] += overlap
    top = ", ".join(f"{n} {t / 1e3:.0f} us" for n, t in calls.most_common(3)) or "no CUDA call"
    return f"{(e - s) / 1e3:8.1f} us  after {before[:50]}  before {after[:50]}  host: {top}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--step-kernel", default="adamw", help="regex of the kernels that end a step")
    ap.add_argument("--skip", type=int, default=2, help="steps left out at the start (allocation, tuning)")
    ap.add_argument("--gaps", type=int, default=10, help="longest gaps to list")
    ap.add_argument("--split-us", type=float, default=1000, help="step-kernel runs closer than this are one update")
    ap.add_argument("--sequence", action="store_true", help="list the median step's kernels in order")
    ap.add_argument("--top", type=int, default=15, help="kernels to list by GPU time")
    args = ap.parse_args()
    gpu, host = read(args.csv)
    rows, gaps = analyse(gpu, host, args.step_kernel, args.skip, int(args.split_us * 1000))
    if not rows:
        raise SystemExit(f"fewer than {args.skip + 2} steps ending in kernels matching '{args.step_kernel}'")
    med = [statistics.median(r[i] for r in rows) / 1e6 for i in range(3)]
    print(f"{len(rows)} steps: median span {med[0]:.2f} ms, GPU busy {med[1]:.2f} ms, idle {med[2]:.2f} ms "
          f"({100 * med[2] / med[0]:.1f}%)")
    small = sum(e - s for s, e in gaps if e - s < 10_000)
    print(f"gaps: {len(gaps)} in all, {sum(e - s for s, e in gaps) / 1e6 / len(rows):.2f} ms per step; "
          f"under 10 us each: {small / 1e6 / len(rows):.2f} ms per step")
    lo, hi = gaps[0][0] if gaps else 0, gaps[-1][1] if gaps else 0
    per, count = collections.Counter(), collections.Counter()
    for s, e, name in gpu:
        if lo <= s <= hi:
            key = re.sub(r"\(.*", "", name)[:70]
            per[key] += e - s
            count[key] += 1
    print("GPU time per step by kernel (ms, launches per step):")
    for name, t in per.most_common(args.top):
        print(f"  {t / 1e6 / len(rows):8.3f} {count[name] / len(rows):6.1f}  {name}")
    if args.sequence:
        mid = sorted(rows)[len(rows) // 2]
        print_sequence(gpu, mid[3], mid[4])
    print(f"longest {args.gaps} gaps:")
    for g in sorted(gaps, key=lambda g: g[0] - g[1])[:args.gaps]:
        print("  " + describe_gap(g, gpu, host))


if __name__ == "__main__":
    main()

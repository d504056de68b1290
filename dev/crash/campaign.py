#!/usr/bin/env python3
"""A long SIGKILL campaign against ./train_gpt2: tests/test_crash.py's CrashRig, many more kills.

    python3 dev/crash/campaign.py                       # 200 kills, repo ./train_gpt2
    python3 dev/crash/campaign.py --kills 1000 --seed 7 --bin build-asan/train_gpt2
    LLMC_BIN_DIR=build-asan python3 dev/crash/campaign.py --keep /tmp/crash

Each trial starts the checkpointed run of the test in a fresh directory, SIGKILLs it after a
random delay (and, in some trials, one or two of its resumes too), resumes with -y 1 until it is
done and checks everything test_crash.py checks. Failing trials keep their directory (under
--keep, or a temporary one that is printed); the summary groups failures by kind. Exit status 1
when any trial failed. Delays depend only on --seed and the trial index; where they land depends
on the machine's timing, so a failure prints the trial's directory and the kill that preceded it.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import test_crash  # noqa: E402  (after the path insert)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200, help="stop after this many SIGKILLs landed (default 200)")
    ap.add_argument("--max-trials", type=int, default=0, help="stop after this many trials (0: no limit)")
    ap.add_argument("--seed", type=int, default=test_crash.SEED)
    ap.add_argument("--bin", default=test_crash.BIN, help=f"the trainer (default {test_crash.BIN})")
    ap.add_argument("--max-kills", type=int, default=3, help="kills per trial at most (default 3)")
    ap.add_argument("--keep", help="directory for the runs (kept); default: a temporary one, removed if all pass")
    ap.add_argument("-q", "--quiet", action="store_true", help="no line per failure while running")
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin}: not an executable (run make, or pass --bin)")

    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="llmc_crash_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rig = test_crash.CrashRig(root, binary=a.bin, seed=a.seed, max_kills=a.max_kills)
    print(f"{a.bin}: reference run {rig.wall * 1e3:.0f} ms, {len(rig.ref_files)} checkpoint files; seed {a.seed}")
    kills = trials = 0
    failures = []
    kinds = Counter()
    while kills < a.kills and (a.max_trials <= 0 or trials < a.max_trials):
        i = trials
        trials += 1
        try:
            res = rig.trial(i)
            kills += res["kills"]
            shutil.rmtree(res["dir"])
        except AssertionError as e:
            kills += 1  # at least the one that failed
            msg = str(e).split("\n")[0]
            failures.append(msg)
            kind = re.sub(r"^trial \d+ \(seed \d+\)(, [^:]*)?: ", "", msg)
            kind = re.sub(r"\d+(\.\d+)?", "N", kind)[:120]
            kinds[kind] += 1
            if not a.quiet:
                print(f"FAIL {msg}\n     kept {root / f'trial_{i:04d}'}")
        if trials % 25 == 0:
            print(f"... {trials} trials, {kills} kills, {len(failures)} failed ({time.monotonic() - t0:.0f} s)")

    print(f"\n{trials} trials, {kills} kills, {len(failures)} failed trials in {time.monotonic() - t0:.0f} s")
    print("where the kills landed: " + ", ".join(f"{n} {w}" for w, n in sorted(rig.landed.items())))
    if rig.notes:
        print("tolerated: " + ", ".join(f"{n} x {w}" for w, n in sorted(rig.notes.items())))
    for kind, n in kinds.most_common():
        print(f"  {n:4d} x {kind}")
    if failures:
        print(f"failing trials kept under {root}")
        return 1
    if not a.keep:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

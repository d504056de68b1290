"""Crash testing: ./train_gpt2 killed with SIGKILL at random moments of a checkpointed run.

Two straight reference runs first (one with llm.c's checkpoint retention, one keeping every
checkpoint: the bytes each file must have); then trials that start the run in a fresh directory,
kill it after a random delay (so kills land during steps, validation, sampling, checkpoint writes
and removals), kill some of the resumes too, and resume with -y 1 until the run is done. After every
kill the directory must hold a loadable latest checkpoint: every checkpoint file in it is
byte-identical to the reference's file of that name (no torn write), a DONE_ marker has its pair,
the newest complete pair is no older than before the run nor than the last checkpoint the run
reported saved, and the next resume starts from it. After the last resume:

  * every step, val loss and sample a resumed run printed matches the reference, text for text;
  * the checkpoint files are exactly the reference's, byte for byte (model_*.bin, state_*.bin and
    the DONE_* markers llm.c's run scripts wait for);
  * no debris: no <file>.tmp.<pid> of a killed writer is left;
  * main.log (llm.c's lines) is the reference's, and main.jsonl holds what the reference's holds
    (timings aside): each step once.

Half the kills come at a random time of the run, half at a random moment of a random checkpoint's
window (from its step's progress line to its "saved checkpoint" line, as timed in the reference),
where the narrow windows between one file and the next are. LLMC_CRASH_TRIALS (default 30) and
LLMC_CRASH_SEED (default 20240611) set the campaign; the random choices follow the seed, where
the kills land depends on the machine's timing. dev/crash/campaign.py runs long
campaigns (hundreds of kills) with this file's CrashRig.
"""
import difflib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN_DIR
from helpers import TINY, write_tiny_shards

BIN = os.path.join(BIN_DIR, "train_gpt2")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
TRIALS = int(os.environ.get("LLMC_CRASH_TRIALS", "30"))
SEED = int(os.environ.get("LLMC_CRASH_SEED", "20240611"))

STEPS = 31  # odd: the final checkpoint comes from the "and at the end" rule, not from -n
# small shards so the run crosses epochs (with shuffling), accumulation, warmup + cosine, weight
# decay, validation and sampling (the sampler's RNG is part of the state); llm.c's retention keeps
# the 3 newest checkpoints and those at multiples of 8, so kills land in removals too
FLAGS = ["-e", TINY, "-b", 2, "-t", 16, "-d", 64, "-x", STEPS, "-n", 2, "-nk", 3, "-nm", 8, "-v", 4, "-m", 2,
         "-s", 6, "-g", 4, "--shuffle", 1, "-l", "0.01", "-u", 3, "-q", "0.1", "-c", "0.1", "--seed", 5]
KEEP_ALL = ["-nk", 0]  # the same run keeping every checkpoint: the bytes each step's files must have
STEP_FILES = list(range(2, STEPS, 2)) + [STEPS]  # the steps that checkpoint

STEP_RE = re.compile(r"^step\s+(\d+)/\d+ \| loss (\S+) \| lr (\S+) \| norm (\S+) \|")
VAL_RE = re.compile(r"^val loss (\S+) \(step (\d+), (\d+) batches\)$")
SAVED_RE = re.compile(r"^saved checkpoint .*model_(\d+)\.bin$")
RESUMED_RE = re.compile(r"^resumed from .* at step (\d+)$")
CKPT_RE = re.compile(r"^(?:(model|state)_(\d{8})\.bin|DONE_(\d{8}))$")
TIMING_KEYS = ("ms", "tok_s")


# ---------------------------------------------------------------- reading a run

def events(stdout, start_step=0):
    """{(kind, step): text} of what a run printed: ('step', n) -> 'loss lr norm' (the exact columns),
    ('val', n) -> the loss text, ('sample', n) -> the sample, ('saved', n) -> ''. Only complete
    lines count: a killed run's last line may be cut."""
    lines = stdout.split("\n")[:-1]  # the text after the last newline is incomplete
    out, step, i = {}, start_step, 0
    while i < len(lines):
        line = lines[i]
        m = RESUMED_RE.match(line)
        if m:
            step = int(m.group(1))
        m = STEP_RE.match(line)
        if m:
            step = int(m.group(1))
            out[("step", step)] = " ".join(m.groups()[1:])
        m = VAL_RE.match(line)
        if m:
            out[("val", int(m.group(2)))] = m.group(1)
        m = SAVED_RE.match(line)
        if m:
            out[("saved", int(m.group(1)))] = ""
        if line == "generating:" and i + 3 < len(lines) and lines[i + 1] == "---" and lines[i + 3] == "---":
            out[("sample", step)] = lines[i + 2]
            i += 3
        i += 1
    return out


def checkpoint_files(d):
    """{name: bytes} of the model_*, state_* and DONE_* files in d."""
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if CKPT_RE.match(p.name)}


def latest_pair(d):
    """The newest step with both model_ and state_ files (the trainer's own rule), or -1."""
    names = {p.name for p in Path(d).iterdir()} if Path(d).is_dir() else set()
    steps = [int(m.group(2)) for m in map(CKPT_RE.match, names) if m and m.group(1) == "state"]
    return max((s for s in steps if f"model_{s:08d}.bin" in names), default=-1)


def debris(d):
    return sorted(p.name for p in Path(d).iterdir() if ".tmp" in p.name) if Path(d).is_dir() else []


def log_text(d):
    path = Path(d) / "main.log"
    return path.read_text() if path.exists() else ""


def log_records(d):
    """main.jsonl without the timing fields, in order; each line must parse."""
    path = Path(d) / "main.jsonl"
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for k in TIMING_KEYS:
            rec.pop(k, None)
        recs.append(rec)
    return recs


# ---------------------------------------------------------------- the rig

class CrashRig:
    """One reference run in <root>/ref, then trial(i) runs kill-and-resume chains in <root>/trial_i."""

    def __init__(self, root, binary=BIN, env=ENV, seed=SEED, max_kills=3, timeout=300):
        self.root, self.bin, self.env, self.seed = Path(root), binary, env, seed
        self.max_kills, self.timeout = max_kills, timeout
        self.train, self.val = write_tiny_shards(self.root, n_train=800, n_val=300, prefix="crash")
        self.ref_dir = self.root / "ref"
        r, self.wall, self.save_time = self._timed_run(self.ref_dir)
        r_all, wall2, save2 = self._timed_run(self.root / "ref_all", extra=KEEP_ALL)
        self.wall = min(self.wall, wall2)  # the kills' range: the faster run (the first one may start cold)
        self.save_time = min(self.save_time, save2)
        assert r.returncode == 0, r.stdout + r.stderr
        self.ref_events = events(r.stdout)
        self.ref_files = checkpoint_files(self.ref_dir)
        self.ref_log = log_records(self.ref_dir)
        self.ref_text = log_text(self.ref_dir)
        assert self.ref_log and self.ref_text, "the reference run wrote no main.jsonl / main.log"
        assert len([k for k in self.ref_events if k[0] == "step"]) == STEPS
        assert sorted(s for k, s in self.ref_events if k == "saved") == STEP_FILES
        assert len(self.ref_files) < 3 * len(STEP_FILES), "retention removed no checkpoint"
        # the second straight run, every checkpoint kept: the bit-exact comparisons need a
        # deterministic trainer, and retention must not change what is written
        assert r_all.returncode == 0, r_all.stdout + r_all.stderr
        assert events(r_all.stdout) == self.ref_events, "two straight runs printed different results"
        self.all_files = checkpoint_files(self.root / "ref_all")
        assert sorted(self.all_files) == sorted(f"{k}{s:08d}{e}" for s in STEP_FILES
                                                for k, e in (("model_", ".bin"), ("state_", ".bin"), ("DONE_", "")))
        for name, data in self.ref_files.items():
            assert data == self.all_files[name], f"{name}: the two straight runs wrote different bytes"
        shutil.rmtree(self.root / "ref_all")
        self.landed = Counter()  # where the kills landed, for the summaries
        self.notes = Counter()  # tolerated oddities (see check_log)

    def _args(self, out, resume, extra=()):
        return [self.bin, "-i", self.train, "-j", self.val, *FLAGS, *extra, "-o", out, "-y", int(resume)]

    def _run(self, out, resume, extra=()):
        t0 = time.monotonic()
        r = subprocess.run(list(map(str, self._args(out, resume, extra))), capture_output=True, text=True,
                           env=self.env, timeout=self.timeout)
        return r, time.monotonic() - t0

    def _start(self, out, resume, extra=()):
        """Popen of a run, with a watchdog that kills it after self.timeout (a hang fails, not blocks)."""
        p = subprocess.Popen(list(map(str, self._args(out, resume, extra))), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        watchdog = threading.Timer(self.timeout, p.kill)
        watchdog.daemon = True
        watchdog.start()
        p.watchdog = watchdog
        return p

    def _timed_run(self, out, extra=()):
        """A straight run, timed: (result, wall seconds, median seconds from a checkpoint step's
        progress line to its "saved checkpoint" line: the window of its val, sample and save)."""
        t0 = time.monotonic()
        p = self._start(out, False, extra)
        lines, at = [], {}
        for line in iter(p.stdout.readline, ""):
            lines.append(line)
            m = STEP_RE.match(line) or SAVED_RE.match(line.rstrip("\n"))
            if m:
                at[("saved" if line.startswith("saved") else "step", int(m.group(1)))] = time.monotonic()
        stderr = p.communicate(timeout=self.timeout)[1]
        p.watchdog.cancel()
        wall = time.monotonic() - t0
        gaps = sorted(at[("saved", c)] - at[("step", c)] for c in STEP_FILES if ("saved", c) in at and ("step", c) in at)
        r = subprocess.CompletedProcess(p.args, p.returncode, "".join(lines), stderr)
        return r, wall, gaps[len(gaps) // 2] if gaps else wall / len(STEP_FILES)

    def _killed_run(self, out, resume, delay, trigger=None):
        """Starts the run and SIGKILLs it delay seconds after it starts or, with trigger, after it printed
        the progress line of step trigger; (returncode, stdout, stderr, killed)."""
        t0 = time.monotonic()
        p = self._start(out, resume)
        head = ""
        if trigger is None:
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
        else:
            for line in iter(p.stdout.readline, ""):
                head += line
                m = STEP_RE.match(line)
                if m and int(m.group(1)) == trigger:
                    time.sleep(delay)
                    p.send_signal(signal.SIGKILL)
                    break
        stdout, stderr = p.communicate(timeout=self.timeout)
        p.watchdog.cancel()
        stdout = head + stdout
        killed = p.returncode == -signal.SIGKILL
        if not killed and not resume and p.returncode == 0:  # a whole run, faster than the reference
            self.wall = min(self.wall, time.monotonic() - t0)
        return p.returncode, stdout, stderr, killed

    @staticmethod
    def _where(ev, out):
        """Where a kill landed, from what the run printed and left behind."""
        if debris(out):
            return "in a write (tmp file left)"
        if not ev:
            return "in startup or a resume"
        return "in training"

    def check_dir_after_kill(self, out, ev, before, what):
        """The kill left a loadable latest checkpoint: each checkpoint file equals the reference's (so it
        loads as the reference's does), and the newest complete pair is at least the newest one there
        was before the run and the newest one the run said it saved."""
        files = checkpoint_files(out) if out.is_dir() else {}
        for name, data in files.items():
            assert data == self.all_files.get(name), f"{what}: {name} differs from the reference's (torn write?)"
            if name.startswith("DONE_"):
                step = name[5:]
                assert f"model_{step}.bin" in files and f"state_{step}.bin" in files, f"{what}: {name} without its pair"
        saved = max((s for k, s in ev if k == "saved"), default=-1)
        latest = latest_pair(out)
        assert latest >= before, f"{what}: the newest complete pair went from step {before} to {latest}"
        assert latest >= saved, f"{what}: it reported checkpoint {saved} saved, the newest complete pair is {latest}"

    def check_run(self, rc, stdout, stderr, killed, resume, latest, what):
        """A run of the chain: exit 0 unless killed; a resume starts from the newest complete pair (or
        fresh when there is none); everything it printed is what the reference printed."""
        if not killed:
            last = (stderr.strip().splitlines() or ["(no stderr)"])[-1]
            assert rc == 0, f"{what}: rc {rc} (the newest complete pair was step {latest}): {last}"
        if resume:
            assert "fell back" not in stdout, f"{what}: the resume skipped a checkpoint\n{stdout}"
            m = re.search(RESUMED_RE.pattern, stdout, re.M)
            if m:
                assert int(m.group(1)) == latest, f"{what}: resumed at step {m.group(1)}, the newest pair is {latest}"
            elif "no checkpoint" in stdout or "no complete checkpoint" in stdout:
                assert latest < 0, f"{what}: started fresh although step {latest} was there"
            else:
                assert killed, f"{what}: neither resumed nor started fresh\n{stdout}{stderr}"
        ev = events(stdout)
        for key, text in ev.items():
            assert key in self.ref_events, f"{what}: printed {key} the reference did not"
            assert text == self.ref_events[key], f"{what}: {key}: {text!r} != reference {self.ref_events[key]!r}"
        return ev

    def trial(self, i):
        """Kill-and-resume chain i; returns a dict describing it. Raises AssertionError on a failure
        (the trial's directory is then kept)."""
        rng = random.Random(self.seed * 1000003 + i)
        out = self.root / f"trial_{i:04d}"
        kills = min(rng.choice([1, 1, 1, 2, 2, 3]), self.max_kills)  # some resumes are killed too
        landed, resume = [], False
        k, retries = 0, 0
        while k <= kills:
            final = k == kills
            latest = latest_pair(out)
            # half the kills at a random time of the run, half in the window of a random later
            # checkpoint (its val, sample, model, state, DONE marker, removals of old ones, log)
            later = [c for c in STEP_FILES if c > max(latest, 0)]
            trigger = rng.choice(later) if later and rng.random() < 0.5 else None
            delay = rng.uniform(0.0, 0.95 * self.wall if trigger is None else 1.2 * self.save_time)
            what = f"trial {i} (seed {self.seed}), " + (
                "the final resume" if final else
                f"run {k + 1} of {kills + 1}, killed {delay * 1e3:.1f} ms after " +
                ("its start" if trigger is None else f"step {trigger}'s line"))
            if final:
                r, _ = self._run(out, resume)
                rc, stdout, stderr, killed = r.returncode, r.stdout, r.stderr, False
            else:
                rc, stdout, stderr, killed = self._killed_run(out, resume, delay, trigger)
            ev = self.check_run(rc, stdout, stderr, killed, resume, latest, what)
            if not final and not killed and not resume and retries < 5:
                # the first run ended before its kill (the machine got faster): again, with a new delay
                self.check_finished(out, what)
                shutil.rmtree(out)
                retries += 1
                continue
            k += 1
            if final or not killed:
                if not final:
                    landed.append("after the end (not killed)")
                break
            where = self._where(ev, out)
            landed.append(where)
            self.landed[where] += 1
            self.check_dir_after_kill(out, ev, latest, what)
            resume = True
        self.check_finished(out, f"trial {i} (seed {self.seed})")
        return dict(trial=i, kills=sum(1 for w in landed if "not killed" not in w), landed=landed, dir=str(out))

    def check_finished(self, out, what):
        files = checkpoint_files(out)
        missing, extra = sorted(set(self.ref_files) - set(files)), sorted(set(files) - set(self.ref_files))
        assert not missing and not extra, f"{what}: checkpoint files: missing {missing}, not removed {extra}"
        for name in files:
            assert files[name] == self.ref_files[name], f"{what}: {name} differs from the reference's"
        left = debris(out)
        assert not left, f"{what}: debris left in {out}: {left}"
        self.check_log(out, what)

    def check_log(self, out, what):
        """main.log == the reference's, main.jsonl == the reference's: the resume cut what the killed run
        had logged past its checkpoint, and wrote the record of the checkpoint it resumed from when a
        kill between the checkpoint's files and its record lost it."""
        text = log_text(out)
        if text != self.ref_text:
            diff = list(difflib.unified_diff(self.ref_text.splitlines(), text.splitlines(), "reference", "main.log",
                                             n=0, lineterm=""))[2:8]
            raise AssertionError(f"{what}: main.log differs from the reference's: " + " | ".join(diff))
        got, ref = log_records(out), self.ref_log
        if got != ref:
            steps = Counter(r["step"] for r in got if "train_loss" in r)
            dup = sorted(s for s, n in steps.items() if n > 1)
            diff = list(difflib.unified_diff(list(map(json.dumps, ref)), list(map(json.dumps, got)), "reference",
                                             "main.jsonl", n=0, lineterm=""))[2:8]
            raise AssertionError(f"{what}: main.jsonl differs from the reference's ({len(got)} records, want "
                                 f"{len(ref)}; steps logged twice: {dup or 'none'}): " + " | ".join(diff))


# ---------------------------------------------------------------- the test

needs_cli = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")


@needs_cli
def test_sigkill_then_resume_is_exact(tmp_path):
    """>= 20 kill-and-resume chains; every one ends exactly where the straight run ends."""
    rig = CrashRig(tmp_path)
    failures, killed = [], 0
    for i in range(TRIALS):
        try:
            res = rig.trial(i)
            killed += res["kills"]
            shutil.rmtree(res["dir"])
        except AssertionError as e:
            failures.append(str(e).split("\n")[0])
    summary = ", ".join(f"{n} {w}" for w, n in sorted((rig.landed + rig.notes).items()))
    print(f"{TRIALS} trials, {killed} kills (reference run {rig.wall * 1e3:.0f} ms): {summary}")
    assert not failures, f"{len(failures)} of {TRIALS} trials failed:\n" + "\n".join(failures)
    assert killed >= TRIALS, f"only {killed} kills landed in {TRIALS} trials: the runs ended before the kill"

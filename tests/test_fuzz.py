"""CI's short fuzz campaign (dev/fuzz): every file format for about two minutes in all.

Builds dev/fuzz (fuzz.c and its parts) against the repo's build/ (skipped when build/libllmc_core.a, a C
compiler or make is missing), checks that the harness tells a crash, a hang and a blow-up
apart, runs each format for an equal share of LLMC_FUZZ_SECONDS (default 100 in all) from
the seed LLMC_FUZZ_SEED, and replays every input in dev/fuzz/regressions/. No input may crash,
hang, blow up or break the API's contract. Input i of a campaign depends only on (seed, format, i):
a failure names the index, and `fuzz FORMAT --seed S --only I --keep DIR` writes that input.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("LLMC_BUILD", REPO / "build"))
FUZZ_DIR = REPO / "dev" / "fuzz"
FORMATS = ["model", "shard", "tokenizer", "state", "safetensors", "mask", "eval"]
BUDGET = float(os.environ.get("LLMC_FUZZ_SECONDS", "100"))  # all formats together
SEED = int(os.environ.get("LLMC_FUZZ_SEED", "20240601"))
JOBS = int(os.environ.get("LLMC_FUZZ_JOBS", "1"))
SUMMARY = re.compile(r"fuzz (\w+): inputs (\d+)  ok (\d+)  errors (\d+)  crash (\d+)  hang (\d+)  "
                     r"blowup (\d+)  poison (\d+)  bad (\d+)")


def sanitizers():
    """The -fsanitize= list build/ was configured with, '' for none."""
    cache = BUILD / "CMakeCache.txt"
    if cache.is_file():
        m = re.search(r"^LLMC_SANITIZE:\w+=(.*)$", cache.read_text(errors="replace"), re.M)
        if m:
            return m.group(1).strip().replace(";", ",")
    return ""


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    if not (BUILD / "libllmc_core.a").is_file():
        pytest.skip(f"{BUILD}/libllmc_core.a missing: run `make` first")
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    if not shutil.which("make"):
        pytest.skip("no make")
    out = tmp_path_factory.mktemp("fuzz") / "fuzz"
    cmd = ["make", "-s", "-C", str(FUZZ_DIR), f"LLMC_BUILD={BUILD}", f"OUT={out}", f"CC={cc}"]
    san = sanitizers()
    if san:
        cmd.append(f"SANFLAGS=-fsanitize={san}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"building the fuzzer failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}"
    return out


def extra_args():
    # ASan reserves terabytes of shadow memory: no address-space limit, the allocation watch stays
    return ["--mem", "0"] if "address" in sanitizers() else []


def test_selftest(fuzz):
    r = subprocess.run([str(fuzz), "selftest"], capture_output=True, text=True, timeout=120)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr


def kept_notes(keep):
    notes = sorted(keep.glob("*.txt"))
    return "\n".join(p.read_text(errors="replace") for p in notes[:10]) or "(nothing kept)"


@pytest.mark.parametrize("fmt", FORMATS)
def test_campaign(fuzz, fmt, tmp_path):
    seconds = BUDGET / len(FORMATS)
    keep = tmp_path / "findings"
    cmd = [str(fuzz), fmt, "-s", f"{seconds:g}", "-j", str(JOBS), "--seed", str(SEED), "--keep", str(keep),
           *extra_args()]
    print("$", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    print(r.stdout, r.stderr)
    m = SUMMARY.search(r.stdout)
    assert m, f"no summary line from {' '.join(cmd)}:\n{r.stdout}{r.stderr}"
    inputs, ok, errors, crash, hang, blowup, poison, bad = map(int, m.groups()[1:])
    found = f"seed {SEED}: {m.group(0)}\nkept in {keep}:\n{kept_notes(keep)}"
    assert crash == 0 and hang == 0 and blowup == 0 and bad == 0 and poison == 0, found
    assert r.returncode == 0, found
    # the campaign did reach both sides: files that load and files that are refused
    assert inputs >= 100 and ok > 0 and errors > 0, found


def regression_inputs():
    d = FUZZ_DIR / "regressions"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.suffix != ".txt") if d.is_dir() else []


@pytest.mark.parametrize("path", regression_inputs(), ids=lambda p: p.name)
def test_regression(fuzz, path):
    fmt = path.name.split("-")[0]
    assert fmt in FORMATS, f"{path.name}: regression inputs are named FORMAT-..."
    r = subprocess.run([str(fuzz), "replay", fmt, str(path), *extra_args()], capture_output=True, text=True,
                       timeout=60)
    print(r.stdout, r.stderr)
    # a regression kept as a .txt was a finding; the loader must now refuse it
    want = "error" if path.with_name(path.name + ".txt").exists() else "ok|error"
    assert r.returncode == 0 and re.search(rf": ({want}): ", r.stdout), r.stdout + r.stderr

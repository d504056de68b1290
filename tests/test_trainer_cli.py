"""The ./train_gpt2 command line: help <-> parser agreement, errors, logs, exact resume, accumulation."""
import json
import os
import re
import string
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR
from helpers import TINY, random_tokens, write_model_file, write_shard, write_tiny_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(BIN_DIR, "train_gpt2")
pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")

# one thread: OpenMP spinning on a loaded 2-core box makes each tiny step take ~1 s instead of ~1 ms
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")

STEP_RE = re.compile(r"^step\s+(\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| norm (\S+) \| (\S+) ms \| (\S+) tok/s")
HELP_RE = re.compile(r"^\s+(?:-(\w+),\s+)?--([\w-]+)(?: (\S+))?\s")


def run(*args, cwd=None, timeout=120):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def data(tmp_path):
    train, val = write_tiny_shards(tmp_path)
    return dict(train=train, val=val, dir=tmp_path)


def base(d, *extra):
    """A valid tiny run: no val, no samples, 0 steps unless overridden (later flags win)."""
    return ["-i", d["train"], "-j", d["val"], "-e", TINY, "-b", 2, "-t", 16, "-x", 0, "-v", 0, "-s", 0, *extra]


def step_lines(stdout):
    return [m.groups() for m in map(STEP_RE.match, stdout.splitlines()) if m]


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- help and parser agree

def parse_help():
    r = run("-h")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")
    opts = []
    for line in r.stdout.splitlines():
        m = HELP_RE.match(line)
        if m and m.group(2) != "help":
            opts.append(m.groups())  # (short or None, long, metavar)
    return r.stdout, opts


def test_help_lists_every_flag():
    text, opts = parse_help()
    shorts = {s for s, _, _ in opts if s}
    longs = {name for _, name, _ in opts}
    # every flag of llm.c's train_gpt2cu, with its letters
    for flag in "i j e o lg n nk nm y b t d x k l u q c sl sg v m s g h a f w ge z r pn pr pg pi pf ps".split():
        assert flag in shorts, f"-{flag} missing from -h"
    assert "seed" in longs and "shuffle" in longs
    assert "-h,  --help" in text
    assert len(shorts) == len([s for s, _, _ in opts if s]), "a short flag is listed twice"
    assert len(longs) == len(opts), "a long flag is listed twice"
    assert run("--help").stdout == text


def valid_value(name, d, tmp_path):
    """A value each option accepts (a new option must be added here: the test then fails loudly)."""
    values = option_values(d, tmp_path)
    assert name in values, f"no test value for --{name}: add one to option_values()"
    return str(values[name])


def option_values(d, tmp_path):
    return {
        "train-data": d["train"], "val-data": d["val"], "init": TINY, "out": tmp_path / "o",
        "batch-size": 2, "seq-len": 16, "total-batch": 64, "max-steps": 0, "lr": "1e-3", "warmup": 2,
        "final-lr-frac": "0.5", "schedule": "linear", "weight-decay": "0.1", "grad-clip": "0.5",
        "val-every": 1, "val-batches": 2, "sample-every": 1, "gen-len": 4, "ckpt-every": 1, "resume": 0,
        "recompute": 1, "master-weights": 0, "shuffle": 1, "seed": 7, "device": "cpu", "gpu": 0,
        "tokenizer": tmp_path / "no_tokenizer.bin", "peak-tflops": "100",
        "skip-loss-z": "3", "skip-norm-z": "3", "hellaswag": 0, "ckpt-keep": 2, "ckpt-major": 4, "overfit-batch": 1,
        "tf32": 0, "gelu-fusion": 2, "zero-stage": 1, "log-device": 1, "num-processes": 1, "process-rank": 0,
        "gpus-per-node": 8, "init-method": "mpi", "fs-path": tmp_path, "server-ip": "127.0.0.1", "stop-after": 1,
        "plot": 0, "eval-file": tmp_path / "hellaswag_val.bin", "eval-limit": 5,
        "prune-mask": 1, "teacher": teacher_file(tmp_path), "distill-alpha": "0.25", "distill-temperature": "1.5",
        "overlap": 0, "exact-accum": 1, "comm-timeout": "60", "engine-at-one": 0, "fp8": 0,
    }


def teacher_file(tmp_path):
    """A model file of TINY's vocabulary, to distil from."""
    path = tmp_path / "teacher.bin"
    if not path.exists():
        write_model_file(path, L=1, NH=2, C=32, maxT=32, V=64)
    return path


def companions(name, tmp_path):
    """What an option needs beside it to be valid: the distillation settings need a teacher."""
    return ["--teacher", teacher_file(tmp_path)] if name.startswith("distill-") else []


def test_help_matches_known_options(data, tmp_path):
    """-h lists exactly the options this file knows the trainer takes (a flag dropped from the help, or a
    new one nobody tested, shows up here); test_every_long_option_in_help_is_accepted runs each one."""
    _, opts = parse_help()
    assert sorted(name for _, name, _ in opts) == sorted(option_values(data, tmp_path))


def test_every_long_option_in_help_is_accepted(data, tmp_path):
    _, opts = parse_help()
    assert len(opts) >= 20
    for short, name, _ in opts:
        v = valid_value(name, data, tmp_path)
        for form in ([f"--{name}", v], [f"--{name}={v}"]):
            r = run(*base(data, *form, *companions(name, tmp_path)))
            assert r.returncode == 0, f"{form}: rc {r.returncode}\n{r.stderr}"
            assert "model: L=2 H=2 C=32 T=32 V=64" in r.stdout, form


def test_short_flags_are_exactly_those_in_help(data, tmp_path):
    """Every letter/digit: accepted iff -h lists it (so help and parser cannot drift apart)."""
    _, opts = parse_help()
    by_short = {s: name for s, name, _ in opts if s}
    for c in string.ascii_letters + string.digits:
        if c == "h":
            continue
        if c in by_short:
            r = run(*base(data, f"-{c}", valid_value(by_short[c], data, tmp_path), *companions(by_short[c], tmp_path)))
            assert r.returncode == 0, f"-{c}: rc {r.returncode}\n{r.stderr}"
        else:
            r = run(*base(data, f"-{c}", "1"))
            assert r.returncode == 2, f"-{c} (not in help) was accepted"
            assert f"unknown option '-{c}'" in r.stderr


def test_values_reach_the_trainer(data):
    r = run(*base(data, "--batch-size=3", "-t", 8, "--total-batch", 48, "--max-steps", 2))
    assert r.returncode == 0, r.stderr
    assert "batch: B=3 T=8, 2 micro-steps for 48 tokens per step, 2 steps" in r.stdout
    assert [s[:2] for s in step_lines(r.stdout)] == [("1", "2"), ("2", "2")]
    r = run(*base(data, "-x", 1, "-l", "0.0125", "-k", "constant"))
    assert step_lines(r.stdout)[0][3] == "1.250e-02"


@pytest.mark.parametrize("args,words", [
    (["--bogus", "1"], ["unknown option '--bogus'"]),
    (["-Q", "1"], ["unknown option '-Q'"]),
    (["-bb", "1"], ["unknown option '-bb'"]),
    (["-b", "abc"], ["-b", "integer", "abc"]),
    (["-b", "1.5"], ["-b", "integer", "1.5"]),
    (["-b", ""], ["-b", "integer"]),
    (["-x", "99999999999"], ["-x", "99999999999"]),
    (["-l", "fast"], ["-l", "number", "fast"]),
    (["-l", "nan"], ["-l", "number", "nan"]),
    (["--seed", "-1"], ["--seed", "non-negative", "-1"]),
    (["--seed=x"], ["--seed", "x"]),
    (["-b"], ["-b", "needs a value"]),
])
def test_bad_command_line_exits_2(data, args, words):
    r = run(*base(data), *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ")
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert r.stdout == ""  # nothing ran


# ---------------------------------------------------------------- zeros mean "off"

@pytest.mark.parametrize("extra,steps", [
    (["-v", 0, "-s", 0, "-n", 0, "-m", 0, "-d", 0, "-u", 0, "-x", 3], 3),
    (["-v", 0, "-s", 0, "-n", 0, "-m", 0, "-d", 0, "-u", 0, "-x", 0, "-g", 0, "-q", 0, "-l", 0, "-c", 0,
      "--grad-clip", 0, "--peak-tflops", 0, "-r", 0, "-z", 0, "-y", 0, "--seed", 0], 0),
    (["-v", 1, "-m", 0, "-x", 2], 2),            # val every step over the whole val set
    (["-s", 1, "-g", 0, "-x", 2], 2),            # sampling on, zero tokens
    (["-s", 1, "-g", 3, "-x", 1, "-u", 5], 1),   # a sample with ids (no tokenizer), warmup past the end
    (["-n", 1, "-x", 2], 2),                     # checkpoints asked for but no -o: nowhere to write
])
def test_zero_values_run(data, extra, steps):
    r = run(*base(data, *extra))
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(step_lines(r.stdout)) == steps
    for s in step_lines(r.stdout):
        assert np.isfinite(float(s[2])) and np.isfinite(float(s[4]))


def test_whole_val_set_is_used(data):
    r = run(*base(data, "-v", 1, "-m", 0))
    n_val = (600 - 1) // 32  # write_tiny_shards: 600 val tokens, B*T = 32
    assert f"(step 0, {n_val} batches)" in r.stdout, r.stdout


def test_sample_prints_token_ids(data):
    r = run(*base(data, "-s", 1, "-g", 5, "-x", 1))
    assert r.returncode == 0, r.stderr
    assert "no tokenizer" in r.stdout
    sample = r.stdout.split("---\n")[1]
    ids = [int(t) for t in re.findall(r"\[(\d+)\]", sample)]
    assert 1 <= len(ids) <= 5 and all(0 <= t < 64 for t in ids)


# ---------------------------------------------------------------- progress lines and main.log

def test_step_lines_and_json_log(data, tmp_path):
    out = tmp_path / "run"
    r = run(*base(data, "-x", 4, "-v", 2, "-m", 3, "-n", 2, "-o", out, "-u", 2, "-k", "cosine", "-q", "0.1"))
    assert r.returncode == 0, r.stderr
    steps = step_lines(r.stdout)
    assert [int(s[0]) for s in steps] == [1, 2, 3, 4] and all(s[1] == "4" for s in steps)
    for s in steps:
        for v in s[2:]:
            assert np.isfinite(float(v)) and float(v) >= 0
    for line in r.stdout.splitlines():
        if line.startswith("step "):
            for w in ("loss", "lr", "norm", "ms", "tok/s"):
                assert f" {w} " in line + " ", (w, line)

    log = read_log(out / "main.jsonl")
    train = [e for e in log if "train_loss" in e]
    assert [e["step"] for e in train] == [1, 2, 3, 4]
    for e, s in zip(train, steps):
        assert set(e) == {"step", "train_loss", "lr", "grad_norm", "ms", "tok_s"}
        assert f"{e['train_loss']:.6f}" == s[2]
        assert e["lr"] == pytest.approx(float(s[3]), rel=6e-4)  # printed with 4 digits, logged with 7
        assert e["grad_norm"] == pytest.approx(float(s[4]), abs=6e-5)
        assert e["ms"] > 0 and e["tok_s"] > 0
    lrs = [e["lr"] for e in train]
    assert lrs[:2] == pytest.approx([1.5e-4, 3e-4], rel=1e-6)  # linear warmup over 2 steps
    assert lrs[2] > lrs[3] >= 3e-5  # then cosine towards 0.1 * peak
    vals = [e for e in log if "val_loss" in e]
    assert [e["step"] for e in vals] == [0, 2, 4]
    assert [e["step"] for e in log if "checkpoint" in e] == [2, 4]
    assert sorted(os.listdir(out)) == ["DONE_00000002", "DONE_00000004", "main.jsonl", "main.log",
                                       "model_00000002.bin", "model_00000004.bin", "state_00000002.bin",
                                       "state_00000004.bin"]
    # main.log is llm.c's: train lines by 0-based step, val lines by steps done (llm.c's tools read it)
    text = (out / "main.log").read_text().splitlines()
    assert text[0] == f"s:0 tel:{vals[0]['val_loss']:.4f}"
    assert text[1] == f"s:0 trl:{train[0]['train_loss']:.4f} lr:{train[0]['lr']:.6f} norm:{train[0]['grad_norm']:.2f}"
    assert [t.split()[1].split(":")[0] for t in text] == ["tel", "trl", "trl", "tel", "trl", "trl", "tel"]


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("shuffle,total", [(0, -1), (1, 64)])
def test_resume_matches_straight_run(tmp_path, shuffle, total):
    """10 straight steps vs 5 steps + resume to 10: the same losses, checkpoints and final state, exactly,
    under warmup + cosine decay (a resume that restarted the schedule would show). Small shards so the
    10 steps cross shards and an epoch boundary."""
    for i in range(3):
        write_shard(tmp_path / f"r_train_{i:03d}.bin", random_tokens(100 + 30 * i, seed=i))
    write_shard(tmp_path / "r_val_000.bin", random_tokens(200, seed=9))
    d = dict(train=tmp_path / "r_train_*.bin", val=tmp_path / "r_val_*.bin")
    common = ["-v", 5, "-m", 2, "-l", "0.01", "-c", "0.1", "--shuffle", shuffle, "-d", total, "-u", 3, "-q", "0.1"]
    dir1, dir2 = tmp_path / "a", tmp_path / "b"
    r1 = run(*base(d, *common, "-x", 10, "-n", 5, "-o", dir1))
    assert r1.returncode == 0, r1.stderr
    r2 = run(*base(d, *common, "-x", 10, "--stop-after", 5, "-n", 5, "-o", dir2))
    assert r2.returncode == 0, r2.stderr
    r3 = run(*base(d, *common, "-x", 10, "-n", 5, "-o", dir2, "-y", 1))
    assert r3.returncode == 0, r3.stderr
    assert "resumed from" in r3.stdout and "at step 5" in r3.stdout
    assert [int(s[0]) for s in step_lines(r3.stdout)] == [6, 7, 8, 9, 10]

    def printed(log):  # the exact strings main.log holds, per step
        with open(log) as f:
            return {json.loads(line)["step"]: re.search(r'"train_loss": (\S+), "lr": (\S+), "grad_norm": (\S+),', line)
                    .groups() for line in f if "train_loss" in line}

    a, b = printed(dir1 / "main.jsonl"), printed(dir2 / "main.jsonl")
    assert sorted(b) == list(range(1, 11)), "each step logged once"
    for step in range(1, 11):
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"
    assert len({a[s][0] for s in a}) > 5, "losses should move"
    # the same val loss at step 10 and bit-identical final checkpoints
    va = [e for e in read_log(dir1 / "main.jsonl") if "val_loss" in e]
    vb = [e for e in read_log(dir2 / "main.jsonl") if "val_loss" in e]
    assert va == vb
    for f in ("model_00000010.bin", "state_00000010.bin", "model_00000005.bin", "state_00000005.bin"):
        assert (dir1 / f).read_bytes() == (dir2 / f).read_bytes(), f


def test_resume_without_checkpoint_starts_fresh(data, tmp_path):
    r = run(*base(data, "-x", 1, "-o", tmp_path / "empty", "-y", 1))
    assert r.returncode == 0, r.stderr
    assert "no checkpoint" in r.stdout
    assert len(step_lines(r.stdout)) == 1


def test_resume_needs_out_dir(data):
    r = run(*base(data, "-x", 1, "-y", 1))
    assert r.returncode == 1
    assert "-o" in r.stderr


# ---------------------------------------------------------------- gradient accumulation

def test_accumulation_loss_is_mean_of_micro_batches(data):
    """Step 1 with -d 2*B*T reports the mean loss of the first two batches at init."""
    import llmc
    from llmc import _core
    m = llmc.GPT2.from_config(TINY, seed=1337)
    dl = _core.DataLoader(data["train"], 2, 16)
    losses = [m.forward(*dl.next(), return_logits=False)[1] for _ in range(2)]
    r1 = run(*base(data, "-x", 1, "-d", 32))
    r2 = run(*base(data, "-x", 1, "-d", 64))
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert "2 micro-steps for 64 tokens" in r2.stdout
    assert float(step_lines(r1.stdout)[0][2]) == pytest.approx(losses[0], abs=1.5e-6)
    assert float(step_lines(r2.stdout)[0][2]) == pytest.approx(np.mean(losses), abs=1.5e-6)
    assert losses[0] != pytest.approx(losses[1], abs=1e-5)  # the two batches differ, so the check is real


def test_accumulation_matches_bigger_batch(data):
    """B=2 x 2 micro-steps sees exactly the rows of one B=4 batch: same losses and grad norms."""
    a = step_lines(run(*base(data, "-x", 4, "-b", 2, "-d", 64, "-l", "0.01")).stdout)
    b = step_lines(run(*base(data, "-x", 4, "-b", 4, "-d", 64, "-l", "0.01")).stdout)
    assert len(a) == len(b) == 4
    for sa, sb in zip(a, b):
        assert float(sa[2]) == pytest.approx(float(sb[2]), abs=3e-6)  # loss
        assert float(sa[4]) == pytest.approx(float(sb[4]), rel=1e-3)  # grad norm: catches a missing 1/accum


@pytest.mark.parametrize("total", [48, 33, 16])
def test_total_batch_not_multiple(data, total):
    r = run(*base(data, "-d", total))
    assert r.returncode == 1
    assert f"-d {total}" in r.stderr and "multiple of B*T = 32" in r.stderr


# ---------------------------------------------------------------- bad model / shapes

@pytest.mark.parametrize("init,words", [
    ("L=2,H=3,C=32", ["L=2,H=3,C=32", "multiple"]),
    ("d13", ["d13"]),
    ("Q=1", ["Q=1"]),
])
def test_bad_descriptor(data, tmp_path, init, words):
    r = run(*base(data, "-e", init, "-o", tmp_path / "o"))
    assert r.returncode == 1
    for w in words:
        assert w in r.stderr
    assert not (tmp_path / "o").exists()


def test_missing_model_file(data, tmp_path):
    missing = tmp_path / "nowhere" / "gpt2_124M.bin"
    r = run(*base(data, "-e", missing))
    assert r.returncode == 1
    assert str(missing) in r.stderr and "neither an existing model file" in r.stderr


def test_corrupt_model_file(data, tmp_path):
    bad = tmp_path / "bad.bin"
    write_shard(bad, random_tokens(100))
    r = run(*base(data, "-e", bad))
    assert r.returncode == 1
    assert "not a model file" in r.stderr and "token shard" in r.stderr


def test_model_file_init(data, tmp_path):
    import llmc
    path = tmp_path / "m.bin"
    llmc.GPT2.from_config("L=1,H=2,C=16,T=16,V=64", seed=3).save(path)
    r = run(*base(data, "-e", path, "-x", 1))
    assert r.returncode == 0, r.stderr
    assert "model: L=1 H=2 C=16 T=16 V=64" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["-t", 33], ["-t 33", "maximum context of 32"]),
    (["-t", 0], ["-t 0"]),
    (["-b", 0], ["-b 0"]),
    (["-b", -2], ["-b -2"]),
])
def test_bad_shapes(data, args, words):
    r = run(*base(data, *args))
    assert r.returncode == 1
    for w in words:
        assert w in r.stderr


def test_bad_data(data, tmp_path):
    r = run(*base(data, "-i", tmp_path / "none_*.bin"))
    assert r.returncode == 1 and "train data" in r.stderr and "none_*.bin" in r.stderr
    r = run(*base(data, "-v", 1, "-j", tmp_path / "none_*.bin"))
    assert r.returncode == 1 and "val data" in r.stderr
    r = run(*base(data, "-k", "exponential"))
    assert r.returncode == 1 and "exponential" in r.stderr


# ---------------------------------------------------------------- a resume that tells the truth

def test_resume_into_other_settings(data, tmp_path):
    """A resume whose flags contradict the checkpoint: another batch shape stops with an error naming
    it; another schedule or model request goes on, saying what changed and why that is safe."""
    out = tmp_path / "run"
    assert run(*base(data, "-x", 6, "--stop-after", 2, "-n", 2, "-u", 2, "-o", out)).returncode == 0
    r = run(*base(data, "-x", 6, "-n", 2, "-u", 2, "-o", out, "-y", 1, "-b", 4))
    assert r.returncode == 1 and "-b 2 -t 16 -d 32" in r.stderr and "-b 4" in r.stderr, r.stderr
    r = run(*base(data, "-x", 8, "-n", 2, "-u", 2, "-o", out, "-y", 1, "-e", "L=1,H=2,C=32,T=32,V=64"))
    assert r.returncode == 0, r.stderr
    assert "learning-rate schedule differs" in r.stdout and "-x 6" in r.stdout and "-x 8" in r.stdout
    assert "the checkpoint's model (L=2 H=2 C=32 T=32 V=64) continues" in r.stdout
    assert [int(s[0]) for s in step_lines(r.stdout)] == [3, 4, 5, 6, 7, 8]


def test_fresh_run_starts_a_new_log(data, tmp_path):
    out = tmp_path / "run"
    assert run(*base(data, "-x", 3, "-o", out)).returncode == 0
    assert run(*base(data, "-x", 2, "-o", out)).returncode == 0  # no checkpoints there: a fresh run may start
    steps = [json.loads(line)["step"] for line in open(out / "main.jsonl") if "train_loss" in line]
    assert steps == [1, 2]  # not 1, 2, 3, 1, 2


def test_checkpoint_retention_keeps_newest_and_major(data, tmp_path):
    out = tmp_path / "run"
    r = run(*base(data, "-x", 12, "-n", 2, "-nk", 2, "-nm", 4, "-o", out))
    assert r.returncode == 0, r.stderr
    steps = sorted(int(p.name[6:14]) for p in out.glob("model_*.bin"))
    assert steps == [4, 8, 10, 12]  # the two newest, and the majors (multiples of 4)
    assert sorted(int(p.name[5:]) for p in out.glob("DONE_*")) == steps


def test_overfit_single_batch_drives_the_loss_down(data):
    r = run(*base(data, "-x", 30, "-a", 1, "-l", "3e-3"))
    losses = [float(s[2]) for s in step_lines(r.stdout)]
    assert r.returncode == 0 and losses[-1] < 0.5 * losses[0], losses


def test_outlier_updates_are_skipped(data, tmp_path):
    """-sg: once the window is full, a step whose grad norm is an outlier keeps the weights as they were."""
    r = run(*base(data, "-x", 70, "-sg", "1e-9", "-o", tmp_path / "o"))  # any norm above the mean is an outlier
    assert r.returncode == 0, r.stderr
    skipped = [line for line in r.stdout.splitlines() if "update skipped" in line]
    assert skipped and all(int(line.split()[1].split("/")[0]) > 64 for line in skipped)
    log = [json.loads(line) for line in open(tmp_path / "o" / "main.jsonl") if "train_loss" in line]
    assert sum(1 for e in log if e.get("skipped")) == len(skipped)


def test_llm_c_multiprocess_flags_say_what_they_need(data):
    r = run(*base(data, "-pn", 2))  # two processes, but not started by mpirun
    assert r.returncode == 1 and "the CPU backend's ranks talk over MPI: launch with mpirun" in r.stderr
    r = run(*base(data, "-pn", 2, "-pr", 2))
    assert r.returncode == 1 and "the rank must lie in [0, -pn)" in r.stderr
    r = run(*base(data, "-pi", "carrier-pigeon"))
    assert r.returncode == 1 and "use mpi, tcp or fs" in r.stderr
    r = run(*base(data, "-z", 2))
    assert r.returncode == 1 and "ZeRO" in r.stderr
    r = run(*base(data, "-f", 0, "-ge", 1, "-z", 1))
    assert r.returncode == 0 and r.stdout.count("note: ") >= 3
    assert run("-h").stdout.startswith("usage:") and run("-h").returncode == 0


def test_threads_do_not_change_the_bits(data, tmp_path):
    """The default wait policy and any thread count give the same losses, bit for bit."""
    runs = []
    for env in (dict(OMP_NUM_THREADS="1"), dict(OMP_NUM_THREADS="2"), dict(OMP_NUM_THREADS="3")):
        e = {k: v for k, v in ENV.items() if k != "OMP_WAIT_POLICY"}
        big = base(data, "-x", 3, "-b", 8, "-t", 64, "-e", "L=1,H=8,C=512,T=64,V=64")  # above the serial cut-off
        r = subprocess.run([BIN, *map(str, big)], capture_output=True, text=True,
                           env=dict(e, **env), timeout=120)
        assert r.returncode == 0, r.stderr
        runs.append([s[2:5] for s in step_lines(r.stdout)])
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 3

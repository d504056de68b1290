"""Regression tests for the defects of the reliability audit: each ends with a clear error or the
right behaviour. State files that would poison or hang a run, resumes that must not overwrite,
sizes that wrap, ids that a cast would change, NaN handled one way everywhere, leftovers."""
import json
import os
import subprocess

import numpy as np
import pytest

import llmc
from llmc import _core
from llmc._core import LlmcError
from conftest import BIN_DIR
from helpers import HEADER_BYTES, TINY, TINY_CFG, write_tiny_shards

BIN = os.path.join(BIN_DIR, "train_gpt2")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
needs_cli = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")
STATE_SLOTS = dict(nproc=2, rank=3, has_master=4, opt_step=10, train_step=11)


def cli(*args, check=True):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def data(tmp_path):
    train, val = write_tiny_shards(tmp_path, n_train=6000)
    return train


def run_args(train, out, steps, *extra):
    return ["-i", train, "-e", TINY, "-b", 2, "-t", 16, "-x", steps, "-v", 0, "-s", 0, "-n", 2, "-o", out, *extra]


def losses(stdout):
    return {int(line.split()[1].split("/")[0]): line.split("|")[1].split()[1]
            for line in stdout.splitlines() if line.startswith("step ")}


def poke(path, offset, data):
    b = bytearray(path.read_bytes())
    b[offset:offset + len(data)] = data
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------- 1. the session's output buffer

def test_next_takes_its_size_from_the_session():
    m = llmc.GPT2.from_config(TINY)
    s = _core.Session(m._m, [[1], [2], [3]], 4, temperature=0)
    out, alive = s.next()
    assert out.shape == (3,) and alive == 3
    with pytest.raises(LlmcError, match="holds 2 tokens but the session has 3 sequences"):
        s.next_into(np.empty(2, np.int32))
    assert s.next_into(np.empty(3, np.int32)) == 3


# ---------------------------------------------------------------- 2, 3. state files

def checkpoint(tmp_path, steps=(2, 4), master=False):
    """A trainer's checkpoints in tmp_path/ck at the given steps; returns the dir. master: the state
    files also hold master weights, as a bf16 backend's do (the CPU reads and checks, then skips them)."""
    t = _core.Trainer(_m())
    x = np.arange(16, dtype=np.int32).reshape(1, 16) % 64
    for step in range(1, max(steps) + 1):
        t.zero_grad()
        t.forward_backward(x, np.roll(x, -1))
        t.step(1e-2)
        if step in steps:
            t.checkpoint_save(tmp_path / "ck", step)
            if master:
                state = tmp_path / "ck" / f"state_{step:08d}.bin"
                poke(state, 4 * STATE_SLOTS["has_master"], np.int32(1).tobytes())
                with open(state, "ab") as f:
                    f.write(t.get_params().astype(np.float32).tobytes())
    return tmp_path / "ck"


def _m():
    m = _core.Model()
    m.init_random(dict(TINY_CFG))
    return m


def fresh_trainer():
    m = _core.Model()
    m.open("cpu")
    return _core.Trainer(m)


def test_state_from_extreme_betas_loads(tmp_path):
    """The moment check must not refuse a real history: with betas (0.5, 0.99999) m^2 reaches
    far more than v (the bound is 1.3e4 v), and gradients that keep their sign get there."""
    t = _core.Trainer(_m())
    x = np.arange(16, dtype=np.int32).reshape(1, 16) % 64
    for _ in range(30):
        t.zero_grad()
        t.forward_backward(x, np.roll(x, -1))
        t.step(1e-6, beta1=0.5, beta2=0.99999)
    t.checkpoint_save(tmp_path / "ck", 30)
    fresh_trainer().checkpoint_load(tmp_path / "ck")


@pytest.mark.parametrize("part,value,word", [(0, np.nan, "m NaN"), (1, np.inf, "v Inf"), (1, -1.0, "v -1"),
                                             (0, -3.4e38, "m -3.4e"), (2, 1e35, "master weight 17 is 1e"),
                                             (2, np.nan, "master weight 17 is NaN")])
def test_state_with_bad_moments_is_refused(tmp_path, part, value, word):
    """Moments must be finite, v >= 0, and m within a few sqrt(v): a huge finite m (found by the
    fuzzer) would send a weight to Inf on the first step. Master weights must be finite and sane."""
    ck = checkpoint(tmp_path, (2,), master=part == 2)
    state = ck / "state_00000002.bin"
    n = _core.param_layout(TINY_CFG)[-1][1] + TINY_CFG["channels"]
    poke(state, HEADER_BYTES + 4 * (part * n + 17), np.float32(value).tobytes())
    t = fresh_trainer()
    with pytest.raises(LlmcError, match=word if part == 2 else f"element 17 \\(.*{word}"):
        t.checkpoint_load(ck)
    with pytest.raises(LlmcError, match="no parameters"):  # nothing half-loaded
        t.forward(np.zeros((1, 2), np.int32))


@pytest.mark.parametrize("slot,value", [("train_step", -2**31), ("train_step", -3), ("opt_step", -1),
                                        ("nproc", 0), ("nproc", -1), ("rank", 1), ("has_master", 7)])
def test_state_header_out_of_range_is_refused(tmp_path, slot, value):
    ck = checkpoint(tmp_path, (2,))
    poke(ck / "state_00000002.bin", 4 * STATE_SLOTS[slot], np.int32(value).tobytes())
    with pytest.raises(LlmcError, match="state_00000002.bin"):
        fresh_trainer().checkpoint_load(ck)


@needs_cli
def test_resume_falls_back_to_the_newest_valid_pair(data, tmp_path):
    out = tmp_path / "run"
    straight = losses(cli(*run_args(data, tmp_path / "ref", 6)).stdout)
    cli(*run_args(data, out, 4))
    state = out / "state_00000004.bin"
    poke(state, HEADER_BYTES + 40, np.float32(np.nan).tobytes())  # NaN in m of the newest
    r = cli(*run_args(data, out, 6, "-y", 1))
    assert "fell back" in r.stdout and "step 2" in r.stdout and "NaN" in r.stdout
    assert losses(r.stdout) == {s: straight[s] for s in (3, 4, 5, 6)}  # resumed at step 2, bit-exactly
    (out / "state_00000006.bin").write_bytes((out / "state_00000006.bin").read_bytes()[:-4])  # truncated newest
    r = cli(*run_args(data, out, 8, "-y", 1))
    assert "fell back" in r.stdout and losses(r.stdout) and min(losses(r.stdout)) == 5


@needs_cli
def test_resume_past_the_end_says_so(data, tmp_path):
    out = tmp_path / "run"
    cli(*run_args(data, out, 4))
    r = cli(*run_args(data, out, 3, "-y", 1))
    assert "nothing to train" in r.stdout and "step 4" in r.stdout and not losses(r.stdout)


# ---------------------------------------------------------------- 4. never overwrite another run

@needs_cli
def test_resume_without_states_refuses_to_overwrite(data, tmp_path):
    out = tmp_path / "run"
    cli(*run_args(data, out, 4))
    for f in out.glob("state_*.bin"):
        f.unlink()
    before = (out / "model_00000004.bin").read_bytes()
    r = cli(*run_args(data, out, 4, "-y", 1), check=False)
    assert r.returncode == 1 and "no complete pair" in r.stderr and "-o" in r.stderr
    assert (out / "model_00000004.bin").read_bytes() == before
    r = cli(*run_args(data, tmp_path / "run2", 2))
    r = cli(*run_args(data, tmp_path / "run2", 2), check=False)  # a second fresh run into the same -o
    assert r.returncode == 1 and "already holds" in r.stderr and "-y 1" in r.stderr


# ---------------------------------------------------------------- 5. sizes that wrap

@needs_cli
@pytest.mark.parametrize("args,word", [(["-b", 1073741824, "-t", 4, "-d", 64], "tokens per micro-batch"),
                                       (["-b", 65536, "-t", 65536], "tokens per micro-batch")])
def test_sizes_do_not_wrap(data, args, word):
    r = cli("-i", data, "-e", TINY, "-x", 1, "-v", 0, "-s", 0, *args, check=False)
    assert r.returncode == 1 and word in r.stderr, (r.returncode, r.stderr)


@pytest.mark.parametrize("V,Vp", [(2**31 - 1, 0), (2**30 + 1, 0), (64, 2**31 - 1)])
def test_header_sizes_do_not_wrap(tmp_path, V, Vp):
    """V near INT_MAX used to wrap when rounded up to the padded vocabulary."""
    from helpers import model_header, write_model_file
    path = tmp_path / "m.bin"
    write_model_file(path, header=model_header(2, 2, 32, 32, V, Vp=Vp))  # Vp 0: derived from V
    with pytest.raises(LlmcError, match="too large"):
        llmc.GPT2.from_pretrained(path)


# ---------------------------------------------------------------- 6. ids a cast would change

@pytest.mark.parametrize("bad,word", [(np.array([[1, 2**32 + 5]]), "4294967301"),
                                      (np.array([[1.7, 2.0]]), "integer"),
                                      (np.array([[1 + 0j, 2]]), "integer"),
                                      (np.array([[True, False]]), "integer")])
def test_token_ids_are_checked_before_any_cast(bad, word):
    m = llmc.GPT2.from_config(TINY)
    with pytest.raises(LlmcError, match=word):
        m.forward(bad)
    with pytest.raises(LlmcError, match=word):
        m.forward(np.array([[1, 2]]), bad)
    with pytest.raises(LlmcError, match=word):
        m.generate(bad[0], max_new_tokens=1)


def test_targets_must_have_the_inputs_shape():
    m = llmc.GPT2.from_config(TINY)
    with pytest.raises(LlmcError, match="shape"):
        m.forward(np.zeros((2, 4), np.int32), np.zeros((4, 2), np.int32))


# ---------------------------------------------------------------- 7. memory asked for up front

def test_cpu_generation_refuses_what_cannot_fit():
    m = llmc.GPT2.from_config("L=2,H=4,C=256,T=1024,V=64")
    with pytest.raises(LlmcError, match="not enough host memory.*GiB"):
        m.generate([[1]] * 100000, max_new_tokens=1000, temperature=0)
    wide = llmc.GPT2.from_config("L=1,H=4,C=256,T=64")  # GPT-2's vocabulary: 50304 logits a row
    with pytest.raises(LlmcError, match="not enough host memory.*300000 sequence.*GiB"):
        wide.generate([[1]] * 300000, max_new_tokens=2)
    with pytest.raises(LlmcError, match="not enough host memory to sample 300000 sequences.*GiB"):
        # host sampling keeps every row's logits on the host
        _core.Session(wide._m, [[1]] * 300000, 2, 1.0, 0, 1.0, 1, -1, host_sampling=True)


def test_cpu_training_refuses_what_cannot_fit():
    m = llmc.GPT2.from_config("L=2,H=4,C=256,T=1024,V=64")
    with pytest.raises(LlmcError, match="not enough host memory for B=100000 T=1024.*-b"):
        m.forward(np.zeros((100000, 1024), np.int32), np.zeros((100000, 1024), np.int32))


# ---------------------------------------------------------------- 8. NaN, one way everywhere

def test_nan_weights_are_refused_everywhere(tmp_path):
    m = llmc.GPT2.from_config(TINY)
    good = m.get_params()
    bad = good.copy()
    bad[5] = np.nan
    with pytest.raises(LlmcError, match="set_params: tensor wte holds NaN at element 5"):
        m.set_params(bad)
    assert np.array_equal(m.get_params(), good)
    m.params["wte"][100, 3] = np.inf  # a padding row (V = 64, Vp = 128), through the live view
    with pytest.raises(LlmcError, match="refusing to save non-finite weights: tensor wte holds Inf"):
        m.save(tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()
    m.params["wte"][100, 3] = 0.0
    m.params["lnfw"][0] = np.nan
    with pytest.raises(LlmcError, match="loss is NaN"):
        m.forward(np.array([[1, 2]]), np.array([[2, 3]]))
    with pytest.raises(LlmcError, match="non-finite"):
        m._trainer().checkpoint_save(tmp_path / "ck", 1)
    assert not any((tmp_path / "ck").glob("*.bin")) if (tmp_path / "ck").exists() else True


# ---------------------------------------------------------------- 9. leftovers

@needs_cli
def test_stale_temp_files_of_dead_processes_are_removed(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run(["true"]).args and 2**22 + 12345  # above pid_max's default: no such process
    stale, alive = out / f"model_00000002.bin.tmp.{dead}", out / f"model_00000002.bin.tmp.{os.getpid()}"
    stale.write_bytes(b"x" * 100)
    alive.write_bytes(b"y")
    cli(*run_args(data, out, 2, "-y", 1))
    assert not stale.exists() and alive.exists()


@needs_cli
def test_resume_truncates_the_log_to_the_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    cli(*run_args(data, out, 5, "-n", 4))  # checkpoint at 4 and at the end (5)
    (out / "model_00000005.bin").unlink()  # step 5 gone: the resume goes back to 4
    (out / "state_00000005.bin").unlink()
    cli(*run_args(data, out, 6, "-n", 4, "-y", 1))
    steps = [json.loads(line)["step"] for line in open(out / "main.jsonl") if "train_loss" in line]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [line.split()[0] for line in open(out / "main.log") if "trl:" in line] == [f"s:{s}" for s in range(6)]


def test_checkpoint_steps_past_eight_digits(tmp_path):
    t = _core.Trainer(_m())
    x = np.arange(8, dtype=np.int32).reshape(1, 8)
    t.zero_grad()
    t.forward_backward(x, x)
    t.step(1e-3)
    t.checkpoint_save(tmp_path, 7)
    t.checkpoint_save(tmp_path, 123456789)
    assert sorted(p.name for p in tmp_path.glob("state_*")) == ["state_00000007.bin", "state_123456789.bin"]
    assert _core.checkpoint_latest(tmp_path) == 123456789
    assert fresh_trainer().checkpoint_load(tmp_path)["step"] == 123456789


# ---------------------------------------------------------------- 10. the op harness checks its input

def test_device_harness_checks_its_inputs():
    dev = _core.Device("cpu")
    wte, wpe = np.zeros((10, 8), np.float32), np.zeros((4, 8), np.float32)
    with pytest.raises(LlmcError, match=r"tokens must lie in \[0, 10\)"):
        dev.encoder_forward(np.array([[0, 10]]), wte, wpe)
    with pytest.raises(LlmcError, match="do not fit"):
        dev.encoder_forward(np.zeros((1, 5), np.int32), wte, wpe)  # T = 5 > 4 positions
    with pytest.raises(LlmcError, match="shape"):
        dev.matmul_forward(np.zeros((2, 8), np.float32), np.zeros((3, 7), np.float32))
    with pytest.raises(LlmcError, match="targets"):
        dev.classifier_forward(np.zeros((2, 16), np.float32), np.array([0, 12]), 10)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_norm_changes_nothing(bad):
    """The clip scale is computed where the gradients are and AdamW reads it there; a NaN or Inf norm
    must still leave the weights, the moments and the step count as they were, with an error that
    says the update was skipped, and the next finite step must work."""
    m = llmc.GPT2.from_config(dict(TINY_CFG), seed=4)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, TINY_CFG["vocab_size"], (2, 8)), rng.integers(0, TINY_CFG["vocab_size"], (2, 8))
    m.forward(x, y, return_logits=False)
    m.backward()
    m.step(lr=1e-2)  # moments exist now
    t = m._trainer()
    before, steps = m.get_params().copy(), t.step_count
    m.zero_grad()
    m.forward(x, y, return_logits=False)
    m.backward()
    m.grads["fcw"][0, 3, 5] = bad  # a live view on the CPU
    with pytest.raises(LlmcError, match="gradient norm is .* at step 2: the update was skipped"):
        m.step(lr=1e-2)
    assert np.array_equal(m.get_params(), before) and t.step_count == steps
    m.zero_grad()
    m.forward(x, y, return_logits=False)
    m.backward()
    assert np.isfinite(m.step(lr=1e-2, grad_clip=1e-3)) and t.step_count == steps + 1  # clipped hard, finite
    assert not np.array_equal(m.get_params(), before) and np.all(np.isfinite(m.get_params()))

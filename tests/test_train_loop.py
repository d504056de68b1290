"""GPT2.train runs the C training loop: the same defaults as ./train_gpt2, the same losses bit for
bit, and the same features (validation, checkpoints, resume, accumulation, schedules)."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

import llmc
from llmc import _core
from conftest import BIN_DIR
from helpers import TINY, write_tiny_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(BIN_DIR, "train_gpt2")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
STEP_RE = re.compile(r"^step\s+(\d+)/\d+ \| loss (\S+) \| lr (\S+) \| norm (\S+) ")
needs_cli = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")

# warmup + cosine decay to a floor, accumulation, weight decay: a schedule that can go wrong
SETTINGS = dict(batch_size=2, seq_len=16, total_batch=64, lr=3e-3, warmup=2, final_lr_frac=0.1,
                weight_decay=0.1, schedule="cosine", seed=7)
FLAGS = ["-b", 2, "-t", 16, "-d", 64, "-l", 3e-3, "-u", 2, "-q", 0.1, "-c", 0.1, "-k", "cosine", "--seed", 7]


@pytest.fixture
def data(tmp_path):
    train, val = write_tiny_shards(tmp_path, n_train=6000, n_val=700)
    return dict(train=train, val=val)


def cli(*args):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_defaults_are_the_clis():
    """One set of defaults: what -h prints is what Python's train starts from."""
    d = _core.loop_defaults("cpu")
    assert d["final_lr_frac"] == 1.0 and d["seq_len"] == 64 and d["val_every"] == 20
    assert _core.loop_defaults("cuda")["seq_len"] == 1024
    if not os.access(BIN, os.X_OK):
        pytest.skip("./train_gpt2 not built")
    text = subprocess.run([BIN, "-h"], capture_output=True, text=True).stdout
    shown = dict(re.findall(r"--([\w-]+) \S+\s.*\[([^\]]*)\]", text))
    for flag, key in (("batch-size", "batch_size"), ("seq-len", "seq_len"), ("lr", "lr"), ("warmup", "warmup"),
                      ("final-lr-frac", "final_lr_frac"), ("val-every", "val_every"),
                      ("val-batches", "val_batches"), ("sample-every", "sample_every"), ("gen-len", "gen_len"),
                      ("grad-clip", "grad_clip"), ("schedule", "schedule"), ("seed", "seed")):
        assert float(shown[flag]) == pytest.approx(float(d[key])) if key != "schedule" else shown[flag] == d[key]


@needs_cli
def test_python_train_is_the_cli_loop(data, tmp_path):
    """Same settings through GPT2.train and ./train_gpt2: identical losses, norms and lrs, bit for bit
    in the printed digits, and the same main.log."""
    out_py, out_cli = tmp_path / "py", tmp_path / "cli"
    model = llmc.GPT2.from_config(TINY, seed=7)
    hist = model.train(data["train"], 6, val_data=data["val"], val_every=3, val_batches=2, out_dir=str(out_py),
                       sample_every=0, progress=False, **SETTINGS)
    stdout = cli("-i", data["train"], "-j", data["val"], "-e", TINY, "-x", 6, "-v", 3, "-m", 2, "-s", 0,
                 "-o", out_cli, *FLAGS)
    lines = [m.groups() for m in map(STEP_RE.match, stdout.splitlines()) if m]
    assert [int(s) for s, *_ in lines] == [h["step"] for h in hist] == list(range(1, 7))
    for (_, loss, lr, norm), h in zip(lines, hist):
        assert f"{h['loss']:.6f}" == loss and f"{h['lr']:.3e}" == lr and f"{h['grad_norm']:.4f}" == norm
    assert hist[0]["lr"] < hist[1]["lr"] and hist[-1]["lr"] < hist[2]["lr"]  # warmup, then decay

    def log(d):
        return [{k: v for k, v in json.loads(line).items() if k not in ("ms", "tok_s")}
                for line in open(d / "main.jsonl")]
    assert log(out_py) == log(out_cli)
    assert (out_py / "main.log").read_text() == (out_cli / "main.log").read_text()  # llm.c's format: no timings
    assert [h.get("val_loss") is not None for h in hist] == [False, False, True, False, False, True]


def test_checkpoints_and_resume_from_python(data, tmp_path):
    """Python writes checkpoints and resumes from them through the C loop; the resumed run continues
    bit-exactly, and the checkpoint files equal a straight run's."""
    kw = dict(val_every=0, sample_every=0, progress=False, **SETTINGS)
    straight = llmc.GPT2.from_config(TINY, seed=7).train(data["train"], 8, out_dir=str(tmp_path / "a"),
                                                         ckpt_every=4, **kw)
    first = llmc.GPT2.from_config(TINY, seed=7)
    first.train(data["train"], 8, out_dir=str(tmp_path / "b"), ckpt_every=4, callback=lambda r: r["step"] == 4,
                **kw)  # stops after step 4 (its checkpoint is written first)
    assert _core.checkpoint_latest(tmp_path / "b") == 4
    again = llmc.GPT2.from_config(TINY, seed=99)  # other weights: the checkpoint replaces them
    resumed = again.train(data["train"], 8, out_dir=str(tmp_path / "b"), ckpt_every=4, resume=True, **kw)
    assert [h["step"] for h in resumed] == [5, 6, 7, 8]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight[4:]]
    for name in ("model_00000008.bin", "state_00000008.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert resumed[-1].get("checkpoint", "").endswith("model_00000008.bin")


def test_grad_accum_is_total_batch(data):
    kw = dict(batch_size=2, seq_len=16, lr=1e-2, val_every=0, sample_every=0, progress=False)
    a = llmc.GPT2.from_config(TINY, seed=1).train(data["train"], 3, grad_accum=2, **kw)
    b = llmc.GPT2.from_config(TINY, seed=1).train(data["train"], 3, total_batch=64, **kw)
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    with pytest.raises(llmc.LlmcError, match="disagree"):
        llmc.GPT2.from_config(TINY).train(data["train"], 1, grad_accum=2, total_batch=96, **kw)


def test_samples_and_errors_reach_python(data):
    m = llmc.GPT2.from_config(TINY, seed=1)
    hist = m.train(data["train"], 2, batch_size=2, seq_len=16, val_every=0, sample_every=1, gen_len=4,
                   sample_eot=-1, progress=False)
    assert all(len(h["sample"]) == 4 and all(0 <= t < 64 for t in h["sample"]) for h in hist)
    with pytest.raises(llmc.LlmcError, match="no files match"):
        m.train(str(data["train"]) + ".missing", 1, seq_len=16, progress=False)
    with pytest.raises(llmc.LlmcError, match="unknown training option"):
        m.train(data["train"], 1, seq_len=16, learning_rate=1e-3)
    with pytest.raises(ZeroDivisionError):  # the callback's own exception stops the loop and comes back
        m.train(data["train"], 3, batch_size=2, seq_len=16, sample_every=0, callback=lambda r: 1 / 0,
                progress=False)

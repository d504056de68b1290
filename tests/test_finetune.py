"""Masked fine-tuning end to end: shards with a loss mask, the C loader, the trainer CLI, resume.

A synthetic task in a 64-token vocabulary stands in for real prompt/response data (no tokenizer
needed): the prompt is  Q w1 w2 w3 A  with three random words, the answer  w1 w1. Only the
answer (and the end token after it) may enter the loss."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc import _core
from llmc import prepare_jsonl as J
from llmc import reference as ref

from conftest import BIN_DIR
from helpers import TINY

BIN = os.path.join(BIN_DIR, "train_gpt2")
pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
EOT, Q, A, T = 0, 1, 2, 32
PROMPT_LEN = 5


def examples(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = rng.integers(10, 64, 3)
        out.append((np.array([Q, *w, A, w[0], w[0]]), np.array([0] * PROMPT_LEN + [1, 1], bool)))
    return out


@pytest.fixture
def task(tmp_path):
    for split, n, seed in (("train", 600, 0), ("val", 60, 1)):
        t, m = J.pack_rows(examples(n, seed), T, eot=EOT)
        J.write_split(tmp_path, "syn", split, t, m, T, 10**6, eot=EOT)
    init = tmp_path / "init.bin"
    llmc.GPT2.from_config(TINY, seed=1).save(init)
    return dict(dir=tmp_path, train=str(tmp_path / "syn_train_*.bin"), val=str(tmp_path / "syn_val_*.bin"),
                init=str(init))


def train(task, *extra):
    args = [BIN, "-e", task["init"], "-i", task["train"], "-j", task["val"], "-b", 4, "-t", T, "-l", "3e-3",
            "-u", 10, "-q", "0.1", "-v", 50, "-m", 0, "-s", 0, *extra]
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def log(out_dir):
    with open(Path(out_dir) / "main.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_pack_rows_layout():
    ex = examples(5, 2)
    tokens, mask = J.pack_rows(ex, 20, eot=EOT)
    # 7 tokens + a start token each: two examples a row, then the end token and padding
    assert tokens.shape == (3, 20)
    row = tokens[0]
    assert row[0] == EOT and row[8] == EOT and row[16] == EOT and np.all(row[17:] == EOT)
    assert list(mask[0]) == [0] * 6 + [1, 1] + [1] + [0] * 5 + [1, 1] + [1] + [0] * 3
    one, _ = J.pack_rows(ex, 20, one_per_row=True, eot=EOT)
    assert one.shape == (5, 20) and np.all(one[:, 9:] == EOT)
    with pytest.raises(ValueError, match="does not fit"):
        J.pack_rows(ex, 8, eot=EOT)


def test_loader_gives_ignored_targets(task):
    d = _core.DataLoader(task["train"], 2, T)
    assert d.has_masks
    x, y = d.next()
    _, raw = J.read_mask(task["dir"] / "syn_train_000000.mask")
    tokens = np.fromfile(task["dir"] / "syn_train_000000.bin", np.uint16, offset=1024)[: 2 * T + 1]
    flat = y.reshape(-1)
    assert np.all((flat == ref.IGNORE_TARGET) == (raw[1:2 * T + 1] == 0))
    assert np.array_equal(x.reshape(-1), tokens[:-1])
    counted = flat != ref.IGNORE_TARGET
    assert 0 < counted.sum() < flat.size and np.array_equal(flat[counted], tokens[1:][counted])


def test_first_step_loss_is_the_masked_mean(task, tmp_path):
    """The loss the CLI reports at step 1 is the reference's mean over the counted targets only,
    not over all B*T."""
    r = train(task, "-x", 1, "-v", 0, "-o", tmp_path / "run")
    step1 = [e for e in log(tmp_path / "run") if e.get("step") == 1 and "train_loss" in e][0]["train_loss"]
    model = llmc.GPT2.from_pretrained(task["init"])
    x, y = _core.DataLoader(task["train"], 4, T).next()
    cfg = model.config
    rcfg = ref.Config(n_layer=cfg["num_layers"], n_head=cfg["num_heads"], n_embd=cfg["channels"],
                      max_t=cfg["max_seq_len"], vocab_size=cfg["vocab_size"], padded_vocab_size=cfg["padded_vocab_size"])
    params = ref.unflatten(model.get_params().astype(np.float64), rcfg)
    _, masked_loss, _ = ref.gpt2_forward(params, rcfg, x, y)
    raw = np.fromfile(task["dir"] / "syn_train_000000.bin", np.uint16, offset=1024)[1:4 * T + 1].reshape(4, T)
    _, full_loss, _ = ref.gpt2_forward(params, rcfg, x, raw.astype(np.int32))
    assert step1 == pytest.approx(masked_loss, rel=1e-5)
    assert abs(full_loss - masked_loss) > 1e-3, "the test needs a mask that changes the loss"
    assert "loss masks" in r.stdout


def per_position_loss(model_path, task):
    """Mean loss of the final model on val rows at the answer and at the prompt's A marker."""
    m = llmc.GPT2.from_pretrained(model_path)
    tokens = np.fromfile(task["dir"] / "syn_val_000000.bin", np.uint16, offset=1024).astype(np.int32)
    rows = (tokens.size - 1) // T
    x = tokens[: rows * T].reshape(rows, T)
    y = tokens[1: rows * T + 1].reshape(rows, T)
    m.forward(x, y)
    losses = m._trainer().losses(rows, T)
    answer = np.zeros_like(x, bool)
    marker = y == A
    _, mask = J.read_mask(task["dir"] / "syn_val_000000.mask")
    answer[:] = mask[1: rows * T + 1].reshape(rows, T) == 1
    return losses[answer].mean(), losses[marker].mean()


def test_masked_finetuning_learns_the_answer_only(task, tmp_path):
    """With masks the answer loss goes to ~0 while the prompt's marker, trivially learnable, is never
    learned; without masks (the same .bin shards read as plain llm.c shards) it is."""
    r = train(task, "-x", 300, "-n", 300, "-o", tmp_path / "masked")
    vals = [e["val_loss"] for e in log(tmp_path / "masked") if "val_loss" in e]
    assert vals[0] > 3.0 and vals[-1] < 0.1, vals
    answer, marker = per_position_loss(tmp_path / "masked" / "model_00000300.bin", task)
    assert answer < 0.1 and marker > 1.0, (answer, marker)

    plain = tmp_path / "plain"
    plain.mkdir()
    for f in task["dir"].glob("syn_*.bin"):
        shutil.copy(f, plain / f.name)
    plain_task = dict(task, train=str(plain / "syn_train_*.bin"), val=str(plain / "syn_val_*.bin"))
    r = train(plain_task, "-x", 300, "-n", 300, "-v", 0, "-o", tmp_path / "plainrun")
    assert "loss masks" not in r.stdout
    _, marker_plain = per_position_loss(tmp_path / "plainrun" / "model_00000300.bin", task)
    assert marker_plain < 0.5, marker_plain


def test_masked_resume_is_bit_exact(task, tmp_path):
    """20 straight steps vs 10 + resume, with shuffling, warmup and decay: identical checkpoints."""
    common = ["-x", 20, "-n", 10, "--shuffle", 1, "-v", 10, "-m", 2]
    train(task, *common, "-o", tmp_path / "a")
    train(task, *common, "--stop-after", 10, "-o", tmp_path / "b")
    r = train(task, *common, "-y", 1, "-o", tmp_path / "b")
    assert "resumed from" in r.stdout
    for f in ("model_00000020.bin", "state_00000020.bin"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    la = [(e["step"], e.get("train_loss"), e.get("val_loss")) for e in log(tmp_path / "a") if "step" in e]
    lb = [(e["step"], e.get("train_loss"), e.get("val_loss")) for e in log(tmp_path / "b") if "step" in e]
    assert sorted(set(la), key=str) == sorted(set(lb), key=str)


def test_python_train_finetunes_from_pretrained(task):
    m = llmc.GPT2.from_pretrained(task["init"])
    hist = m.train(task["train"], steps=120, batch_size=4, seq_len=T, lr=3e-3, warmup=10, progress=False,
                   val_data=task["val"], val_every=120, val_batches=0)
    assert hist[0]["loss"] > 3.0 and hist[-1]["val_loss"] < 1.0, (hist[0], hist[-1])


# ---------------------------------------------------------------- bad mask files

def corrupt(task, **kw):
    path = task["dir"] / "syn_train_000000.mask"
    data = bytearray(path.read_bytes())
    for slot, value in kw.get("header", {}).items():
        data[4 * slot: 4 * slot + 4] = np.int32(value).tobytes()
    if "byte" in kw:
        data[1024 + kw["byte"][0]] = kw["byte"][1]
    if "cut" in kw:
        data = data[: kw["cut"]]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,words", [
    (dict(header={0: 20240520}), "wrong magic"),
    (dict(header={1: 2}), "version 2"),
    (dict(header={2: 5}), "is for 5 tokens"),
    (dict(header={3: 16}), "packed for rows of T=16"),
    (dict(cut=2000), "holds 976 mask bytes"),
    (dict(cut=100), "truncated mask file"),
])
def test_bad_mask_file_is_refused_at_open(task, damage, words):
    corrupt(task, **damage)
    with pytest.raises(llmc.LlmcError, match=words):
        _core.DataLoader(task["train"], 2, T)


def test_bad_mask_byte_is_refused_when_read(task):
    corrupt(task, byte=(3, 7))
    d = _core.DataLoader(task["train"], 2, T)
    with pytest.raises(llmc.LlmcError, match="holds byte 7 for token 3"):
        d.next()


def test_masks_must_be_all_or_none(task, tmp_path):
    t, m = J.pack_rows(examples(40, 3), T, eot=EOT)
    J.write_split(task["dir"], "syn", "train", t, m, T, 10**6, eot=EOT)
    J.write_split(task["dir"], "syx", "train", t, m, T, 10**6, eot=EOT)
    os.unlink(task["dir"] / "syx_train_000000.mask")
    with pytest.raises(llmc.LlmcError, match="1 of 2 shards have a loss mask but .*syx_train_000000.bin has none"):
        _core.DataLoader(str(task["dir"] / "sy*_train_*.bin"), 2, T)
    with pytest.raises(llmc.LlmcError, match="is a loss-mask file, not a token shard"):
        _core.DataLoader(str(task["dir"] / "syn_train_*"), 2, T)


def test_trainer_names_a_seq_len_mismatch(task):
    r = subprocess.run([BIN, "-e", task["init"], "-i", task["train"], "-j", task["val"], "-t", "16", "-x", "1"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode != 0 and "packed for rows of T=32 tokens; train with -t 32" in r.stderr + r.stdout

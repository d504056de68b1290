"""llmc.eval: HellaSwag scored as llm.c scores it, item by item against the float64 reference, and
perplexity on shards and on text; per-token losses from GPT2.forward(reduction="none")."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import eval as ev
from llmc import reference as ref
from conftest import BACKENDS, BIN_DIR, REPO
from helpers import TINY_CFG, write_tiny_shards

V = TINY_CFG["vocab_size"]


def toy_encode(text):
    """A tokenizer for a 64-token vocabulary: one id per byte, so every word has a few tokens."""
    return [b % (V - 1) + 1 for b in text.encode()]


ITEMS = [{"ctx": "A man is sitting on a roof. he", "label": 3,
          "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                      "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
         {"ctx": "", "label": 0, "endings": ["a", "bb", "ccc", "dddd"]},  # no context at all
         {"ctx": "x" * 40, "label": 1, "endings": ["short", "a much longer ending than the others", "y", "z"]}]


@pytest.fixture
def model():
    return llmc.GPT2.from_config(dict(TINY_CFG, max_seq_len=64), seed=5)  # item 0 needs its context cut


def reference_losses(model, tokens, targets):
    """Per-token losses of the float64 reference with the model's weights."""
    c = model.config
    cfg = ref.Config(n_layer=c["num_layers"], n_head=c["num_heads"], n_embd=c["channels"], max_t=c["max_seq_len"],
                     vocab_size=c["vocab_size"], padded_vocab_size=c["padded_vocab_size"])
    params = ref.unflatten(model.get_params().astype(np.float64), cfg)
    logits, _, _ = ref.gpt2_forward(params, cfg, np.asarray(tokens))
    return ref.crossentropy_forward(logits, targets, cfg.vocab_size)


@pytest.mark.parametrize("device", BACKENDS)
def test_forward_reduction_none_matches_the_reference(device):
    channels = 128 if device == "cuda" else TINY_CFG["channels"]  # CUDA attention: head size 64
    model = llmc.GPT2.from_config(dict(TINY_CFG, max_seq_len=64, channels=channels), device=device, seed=5)
    tol = 1e-5 if device == "cpu" else 2e-2  # bf16 on the GPU
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (3, 17)), rng.integers(0, V, (3, 17))
    y[1, 4:9] = -1
    _, losses = model.forward(x, y, return_logits=False, reduction="none")
    want = reference_losses(model, x, y)
    assert losses.shape == (3, 17) and np.all(losses[1, 4:9] == 0)
    assert np.linalg.norm(losses - want) / np.linalg.norm(want) < tol
    _, mean = model.forward(x, y, return_logits=False)
    assert mean == pytest.approx(want.sum() / (y != -1).sum(), rel=tol)
    with pytest.raises(ValueError, match="reduction"):
        model.forward(x, y, reduction="sum")


def test_hellaswag_item_by_item_against_the_reference(model):
    T = model.config["max_seq_len"]
    out = ev.hellaswag(ev._losses_fn(model), ITEMS, toy_encode, T, eot=0, batch=2)
    for item, got in zip(ITEMS, out["items"]):
        sums, counts = [], []
        for tokens, n_ctx in ev.ending_rows(item, toy_encode, T):
            x, y = np.array([tokens[:-1]]), np.full((1, len(tokens) - 1), -1)
            start = max(n_ctx - 1, 0)
            y[0, start:] = tokens[start + 1:]
            sums.append(reference_losses(model, x, y).sum())
            counts.append(len(tokens) - 1 - start)
        assert got["count"] == counts
        np.testing.assert_allclose(got["sum"], sums, rtol=1e-5)
        assert got["pred"] == int(np.argmin(sums))
        assert got["pred_norm"] == int(np.argmin(np.array(sums) / np.array(counts)))
    want_acc = np.mean([g["pred"] == it["label"] for g, it in zip(out["items"], ITEMS)])
    assert out["acc"] == pytest.approx(want_acc) and out["n"] == 3


def test_hellaswag_long_context_is_cut_from_the_left():
    rows = ev.ending_rows({"ctx": "abcdefghij", "endings": ["xy", "z", "uvw", "q"], "label": 0}, list, 6)
    assert rows[0] == (list("ghij xy"), 4)  # 6 inputs, each predicting the next: 7 tokens
    for (tokens, n_ctx), end in zip(rows, [" xy", " z", " uvw", " q"]):
        assert len(tokens) <= 7 and tokens[n_ctx:] == list(end) and tokens[:n_ctx] == list("abcdefghij")[-n_ctx:]


@pytest.mark.parametrize("line,words", [
    ("not json", "not JSON"), ('{"ctx": 1, "endings": ["a","b","c","d"], "label": 0}', "'ctx'"),
    ('{"ctx": "c", "endings": ["a","b","c"], "label": 0}', "4 strings"),
    ('{"ctx": "c", "endings": ["a","b","c","d"], "label": 4}', "'label'"),
    ('{"ctx": "c", "endings": ["a","b","c","d"], "label": true}', "'label'")])
def test_hellaswag_file_errors_name_the_line(tmp_path, line, words):
    p = tmp_path / "h.jsonl"
    p.write_text(json.dumps(ITEMS[0]) + "\n" + line + "\n")
    with pytest.raises(ev.EvalError, match=f"h.jsonl:2: .*{words}"):
        ev.hellaswag_items(p)


def test_offline_download_says_to_pass_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ev.EvalError, match="offline, pass --data"):
        ev.hellaswag_file(None, url="http://127.0.0.1:9/hellaswag_val.jsonl")
    cached = tmp_path / "cache" / "hellaswag_val.jsonl"
    cached.parent.mkdir()
    cached.write_text(json.dumps(ITEMS[0]) + "\n")
    assert ev.hellaswag_file(None, url="http://127.0.0.1:9/x") == cached  # the cache needs no network


def test_perplexity_on_shards_and_text(model, tmp_path):
    train, _ = write_tiny_shards(tmp_path, n_train=700)
    got = ev.perplexity(ev._losses_fn(model), ev.shard_batches(train, 2, 16, None))
    total = count = 0
    for x, y in ev.shard_batches(train, 2, 16, None):
        total += reference_losses(model, x, y).sum()
        count += y.size
    assert got["tokens"] == count and got["loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    ids = list(np.random.default_rng(1).integers(0, V, 50))
    rows = list(ev.text_rows(ids, 16))
    assert len(rows) == 4 and sum((y != -1).sum() for _, y in rows) == 49  # every next token, once
    assert list(rows[-1][1][:1]) == [ids[49]] and (rows[-1][1][1:] == -1).all()


def test_cli(model, tmp_path, enc):
    path = tmp_path / "m.bin"
    big = llmc.GPT2.from_config(dict(TINY_CFG, max_seq_len=64, vocab_size=50257), seed=1)
    big.save(path)
    data = tmp_path / "h.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    r = subprocess.run([sys.executable, "-m", "llmc.eval", "hellaswag", "--model", str(path), "--data", str(data),
                        "--limit", "2", "--no-progress"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "hellaswag: acc" in r.stdout and "(2 items)" in r.stdout
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question. " * 5)
    r = subprocess.run([sys.executable, "-m", "llmc.eval", "perplexity", "--model", str(path), "--text", str(text),
                        "--seq", "16"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "perplexity:" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "llmc.eval", "perplexity", "--model", str(path), "--data",
                        str(tmp_path / "none_*.bin")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and "no token shards match" in r.stderr


# ---------------------------------------------------------------- -h 1: the trainers score HellaSwag

TRAIN_BIN = os.path.join(BIN_DIR, "train_gpt2")
needs_trainer = pytest.mark.skipif(not os.access(TRAIN_BIN, os.X_OK), reason="./train_gpt2 not built (run make)")


def run_trainer(tmp_path, *extra):
    train, val = write_tiny_shards(tmp_path)
    return subprocess.run([TRAIN_BIN, "-i", train, "-j", val, "-b", "8", "-t", "32", "-s", "0", *map(str, extra)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))


@needs_trainer
def test_trainer_scores_hellaswag_as_python_does(tmp_path):
    """-h 1 scores the eval file (written by write_eval_file, llm.c's format) at every val step with the
    trainer's forward; at step 0 (the loaded model) its acc and acc_norm are what llmc.eval gives."""
    model = llmc.GPT2.from_config(dict(TINY_CFG, max_seq_len=64), seed=3)  # item 0's contexts are cut
    model.save(tmp_path / "m.bin")
    items = ITEMS * 3  # 9 items; -b 8 holds 2 of them per forward
    ev.write_eval_file(tmp_path / "hs.bin", items, toy_encode)
    r = run_trainer(tmp_path, "-e", tmp_path / "m.bin", "-t", "64", "-x", "2", "-v", "2", "-h", "1", "--eval-file",
                    tmp_path / "hs.bin", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "HellaSwag: acc_norm" in r.stdout
    logged = [json.loads(line) for line in (tmp_path / "out" / "main.jsonl").read_text().splitlines()]
    evals = [e for e in logged if "eval_acc_norm" in e]
    assert [e["step"] for e in evals] == [0, 2] and all(e["eval_items"] == 9 for e in evals)
    want = ev.hellaswag(ev._losses_fn(model), items, toy_encode, 64, eot=0, batch=2)
    assert evals[0]["eval_acc"] == pytest.approx(want["acc"], abs=1e-6)
    assert evals[0]["eval_acc_norm"] == pytest.approx(want["acc_norm"], abs=1e-6)
    text = (tmp_path / "out" / "main.log").read_text()
    assert f"s:0 eval:{want['acc_norm']:.4f}" in text and "s:2 eval:" in text
    r = run_trainer(tmp_path, "-e", tmp_path / "m.bin", "-t", "64", "-x", "1", "-v", "1", "-h", "1", "--eval-file",
                    tmp_path / "hs.bin", "--eval-limit", "4", "-o", tmp_path / "out4")
    assert r.returncode == 0 and "(step 0, 4 items)" in r.stdout, r.stdout + r.stderr


@needs_trainer
@pytest.mark.parametrize("damage,words", [
    (lambda b: b[:1000], "too short for its header"),
    (lambda b: b[:-2], "truncated"),
    (lambda b: b + b"\0\0", "longer than its"),
    (lambda b: (20240520).to_bytes(4, "little") + b[4:], "not an eval file"),
    (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "version 2"),
    (lambda b: b[:1024] + b"\0\0" + b[1026:], "delimiter"),
    (lambda b: b[:1024 + 6] + (7).to_bytes(2, "little") + b[1024 + 8:], "label 7"),
    (lambda b: b[:1024 + 12] + (64).to_bytes(2, "little") + b[1024 + 14:], "outside the vocabulary of 64"),
])
def test_bad_eval_files_are_refused_by_name(tmp_path, damage, words):
    ev.write_eval_file(tmp_path / "hs.bin", ITEMS, toy_encode)
    (tmp_path / "bad.bin").write_bytes(damage((tmp_path / "hs.bin").read_bytes()))
    r = run_trainer(tmp_path, "-e", "L=2,H=2,C=32,T=32,V=64", "-x", "1", "-v", "1", "-h", "1", "--eval-file",
                    tmp_path / "bad.bin")
    assert r.returncode == 1 and words in r.stderr and "bad.bin" in r.stderr, r.stderr


@needs_trainer
def test_hellaswag_flags(tmp_path, monkeypatch):
    r = run_trainer(tmp_path, "-e", "L=2,H=2,C=32,T=32,V=64", "-x", "1", "-v", "0", "-h", "1")
    assert r.returncode == 0 and "-v 0 has none" in r.stdout and "HellaSwag:" not in r.stdout
    env_cache = tmp_path / "cache"
    monkeypatch.setenv("LLMC_CACHE", str(env_cache))
    r = run_trainer(tmp_path, "-e", "L=2,H=2,C=32,T=32,V=64", "-x", "1", "-v", "1", "-h", "1")  # as llm.c: a note
    assert r.returncode == 0 and "--export" in r.stdout and str(env_cache) in r.stdout, r.stdout + r.stderr
    assert "training without HellaSwag" in r.stdout and "HellaSwag:" not in r.stdout
    r = run_trainer(tmp_path, "-e", "L=2,H=2,C=32,T=32,V=64", "-x", "1", "-v", "1", "-b", "2", "-h", "1",
                    "--eval-file", tmp_path / "hs.bin")
    assert r.returncode == 1 and "cannot open eval file" in r.stderr
    ev.write_eval_file(tmp_path / "hs.bin", ITEMS, toy_encode)
    r = run_trainer(tmp_path, "-e", "L=2,H=2,C=32,T=32,V=64", "-x", "1", "-v", "1", "-b", "2", "-h", "1",
                    "--eval-file", tmp_path / "hs.bin")
    assert r.returncode == 1 and "4 choices" in r.stderr and "-b" in r.stderr


def test_export_round_trip(tmp_path):
    n = ev.write_eval_file(tmp_path / "hs.bin", ITEMS, toy_encode)
    raw = np.frombuffer((tmp_path / "hs.bin").read_bytes(), np.uint16)
    header = np.frombuffer((tmp_path / "hs.bin").read_bytes()[:1024], np.int32)
    assert n == 3 and list(header[:3]) == [20240522, 1, 3]
    s = raw[512:]
    assert s[0] == 65535 and s[2] == 0 and s[3] == ITEMS[0]["label"] and s[4] == 4
    assert list(s[6:6 + s[5]]) == toy_encode(ITEMS[0]["ctx"])
    assert header[3] == max(int(s[1]), header[3]) and int(s[1]) % 2 == 0

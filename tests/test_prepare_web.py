"""FineWeb's prepare (llmc/prepare_web.py) offline, on local jsonl/parquet files in FineWeb's schema:
llm.c's layout (val first, documents running over shards), the same bytes for any -j, and a resume
after an interruption that gives the bytes of an uninterrupted run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llmc import prepare_web as pw
from conftest import REPO

DOCS = [f"Document {i}: " + " ".join(f"word{(i * 7 + k) % 53}" for k in range(5 + (i * 13) % 40)) for i in range(60)]


def shard_tokens(path):
    raw = path.read_bytes()
    header = np.frombuffer(raw[:1024], np.int32)
    assert list(header[:2]) == [20240520, 1]
    tokens = np.frombuffer(raw[1024:], np.uint16)
    assert len(tokens) == header[2]
    return tokens


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d, "id": str(i)}) + "\n" for i, d in enumerate(docs)))


def all_tokens(out, prefix="fineweb"):
    names = sorted((p.name for p in out.glob(f"{prefix}_*.bin")), key=lambda n: int(n[-10:-4]))
    assert names[0] == f"{prefix}_val_000000.bin" and all("_train_" in n for n in names[1:])
    return [shard_tokens(out / n) for n in names]


def test_layout_and_tokens(tmp_path, enc):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    r = pw.prepare_web(tmp_path / "out", "fineweb10B", [str(src)], shard_size=500, workers=1)
    shards = all_tokens(tmp_path / "out")
    want = np.concatenate([[enc.eot_token] + enc.encode_ordinary(d) for d in DOCS]).astype(np.uint16)
    assert np.array_equal(np.concatenate(shards), want)
    assert all(len(s) == 500 for s in shards[:-1]) and 0 < len(shards[-1]) <= 500
    assert r == {"shards": len(shards), "tokens": len(want), "documents": 60, "resumed_at": 0}
    assert (tmp_path / "out" / "gpt2_tokenizer.bin").exists()
    again = pw.prepare_web(tmp_path / "out", "fineweb10B", [str(src)], shard_size=500)  # complete: nothing to do
    assert again["shards"] == len(shards)


def test_workers_give_the_same_bytes(tmp_path, enc):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    pw.prepare_web(tmp_path / "one", "fineweb10B", [str(src)], shard_size=700, workers=1)
    pw.prepare_web(tmp_path / "two", "fineweb10B", [str(src)], shard_size=700, workers=2)
    for a, b in zip(sorted((tmp_path / "one").glob("*.bin")), sorted((tmp_path / "two").glob("*.bin"))):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_resume_after_an_interruption(tmp_path, enc, monkeypatch):
    """Stop the writer after its third shard (as a kill would, between shards), run again: the shards are
    those of an uninterrupted run, byte for byte."""
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    pw.prepare_web(tmp_path / "ref", "fineweb10B", [str(src)], shard_size=333)
    real, calls = pw._write_shard, []

    def dying_write(path, tokens):
        real(path, tokens)
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(pw, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        pw.prepare_web(tmp_path / "out", "fineweb10B", [str(src)], shard_size=333)
    monkeypatch.setattr(pw, "_write_shard", real)
    state = json.loads((tmp_path / "out" / pw.STATE_FILE).read_text())
    assert state["next_shard"] == 2 and not state["finished"]  # the third shard's state was not saved
    r = pw.prepare_web(tmp_path / "out", "fineweb10B", [str(src)], shard_size=333)
    assert r["resumed_at"] == 2
    ref = sorted(p.name for p in (tmp_path / "ref").glob("fineweb_*.bin"))
    assert ref == sorted(p.name for p in (tmp_path / "out").glob("fineweb_*.bin"))
    for name in ref:
        assert (tmp_path / "ref" / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name
    with pytest.raises(pw.WebPrepareError, match="other settings"):
        pw.prepare_web(tmp_path / "out", "fineweb10B", [str(src)], shard_size=334)


def test_max_tokens_and_errors(tmp_path, enc):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    r = pw.prepare_web(tmp_path / "small", "fineweb_edu10B", [str(src)], shard_size=400, max_tokens=1000)
    shards = all_tokens(tmp_path / "small", "edufineweb")
    assert r["tokens"] == 1000 and [len(s) for s in shards] == [400, 400, 200]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(pw.WebPrepareError, match="bad.jsonl:2"):
        pw.prepare_web(tmp_path / "b", "fineweb10B", [str(bad)], shard_size=10)
    with pytest.raises(pw.WebPrepareError, match="no file"):
        pw.prepare_web(tmp_path / "c", "fineweb10B", [str(tmp_path / "none.jsonl")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(pw.WebPrepareError, match="no documents"):
        pw.prepare_web(tmp_path / "d", "fineweb10B", [str(empty)])


def test_parquet_reads_as_jsonl_does(tmp_path, enc):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"text": DOCS, "id": [str(i) for i in range(60)]}), tmp_path / "a.parquet")
    pw.prepare_web(tmp_path / "pq", "fineweb10B", [str(tmp_path / "a.parquet")], shard_size=500)
    pw.prepare_web(tmp_path / "js", "fineweb10B", [str(src)], shard_size=500)
    for a, b in zip(all_tokens(tmp_path / "pq"), all_tokens(tmp_path / "js")):  # parquet reads as jsonl does
        assert np.array_equal(a, b)


def test_cli(tmp_path, enc):
    src = tmp_path / "a.jsonl"
    write_jsonl(src, DOCS)
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "llmc.prepare", "--dataset", "fineweb10B", "--data-files", str(src),
                        "--out", str(tmp_path / "o"), "--shard-size", "600", "-q"], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "fineweb_val_000000.bin").exists()
    r = subprocess.run([sys.executable, "-m", "llmc.prepare", "--dataset", "fineweb10B", "--out", str(tmp_path / "p"),
                        "--name", "x"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2 and "do not apply" in r.stderr
    r = subprocess.run([sys.executable, "-m", "llmc.prepare", "--dataset", "shakespeare", "--out", str(tmp_path / "q"),
                        "--max-tokens", "5"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2 and "apply to --dataset fineweb10B" in r.stderr

"""python -m llmc.prepare --format jsonl: prompt/response examples into masked shards."""
import json
import subprocess
import sys

import numpy as np
import pytest

from llmc import _core
from llmc import prepare as P
from llmc import prepare_jsonl as J
from llmc import tokenizer as tok

from conftest import RANKS  # noqa: F401  (the enc fixture lives in conftest)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")
    return path


def prep(*args):
    return subprocess.run([sys.executable, "-m", "llmc.prepare", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def rows_of(out, split="train", name="ft", T=None):
    _, tokens = P.read_shard(out / f"{name}_{split}_000000.bin")
    header, mask = J.read_mask(out / f"{name}_{split}_000000.mask")
    T = T or int(header[3])
    n = (tokens.size - 1) // T
    return tokens[: n * T].reshape(n, T), mask[: n * T].reshape(n, T)


def test_prompt_completion(tmp_path, enc):
    data = [{"prompt": "Translate: cat\n", "completion": " chat"}, {"prompt": "Translate: dog\n", "completion": " chien"}]
    src = write_jsonl(tmp_path / "a.jsonl", data)
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "o", "--seq-len", 64, "--val-fraction", 0)
    assert r.returncode == 0, r.stderr
    assert "2 examples in 1 rows" in r.stdout
    tokens, mask = rows_of(tmp_path / "o")
    want, counted = [], []
    for d in data:
        p, c = enc.encode_ordinary(d["prompt"]), enc.encode_ordinary(d["completion"])
        counted += [len(want) > 0] + [0] * len(p) + [1] * len(c)  # a start token ends the previous example
        want += [tok.EOT] + p + c
    n = len(want)
    assert list(tokens[0, :n]) == want and np.all(tokens[0, n:] == tok.EOT)
    assert list(mask[0, :n]) == counted and mask[0, n] == 1 and not mask[0, n + 1:].any()
    d = _core.DataLoader(str(tmp_path / "o" / "ft_train_*.bin"), 1, 64)
    x, y = d.next()
    assert d.has_masks and np.array_equal(x[0], tokens[0])
    decoded = enc.decode([int(t) for t in y[0] if t >= 0 and t != tok.EOT])
    assert decoded == " chat chien"


def test_fields_chat_and_val_split(tmp_path, enc):
    rows = [{"q": f"question {i}", "a": f" answer {i}"} for i in range(10)]
    src = write_jsonl(tmp_path / "a.jsonl", rows)
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "o", "--seq-len", 16, "--prompt-field", "q",
             "--response-field", "a", "--one-per-row", "--val-fraction", 0.2, "--name", "qa")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "qa_val_000000.mask").is_file()
    vt, _ = rows_of(tmp_path / "o", "val", "qa")
    tt, tm = rows_of(tmp_path / "o", "train", "qa")
    assert vt.shape == (2, 16) and tt.shape == (8, 16)
    assert enc.decode([int(t) for t in tt[0][tm[0] == 1] if t != tok.EOT]) == " answer 2"

    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                          {"role": "assistant", "content": "Bye."}]}]
    src = write_jsonl(tmp_path / "c.jsonl", chat)
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "c", "--seq-len", 64, "--val-fraction", 0)
    assert r.returncode == 0, r.stderr
    tokens, mask = rows_of(tmp_path / "c")
    n = int(np.flatnonzero(tokens[0] == tok.EOT)[1])
    text = enc.decode([int(t) for t in tokens[0, 1:n]])
    assert text == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant: Bye."
    assert enc.decode([int(t) for t in tokens[0, 1:n][mask[0, 1:n] == 1]]) == " Hello. Bye."


@pytest.mark.parametrize("line,words", [
    ("{not json", "line 2: not valid JSON"),
    ('{"prompt": "x"}', "line 2: no 'completion' field"),
    ('{"prompt": "x", "completion": 3}', "line 2: field 'completion' must be a string"),
    ('[1, 2]', "line 2: expected a JSON object"),
    ('{"prompt": "' + "word " * 40 + '", "completion": "x"}', "line 2: the example is 42 tokens; with --seq-len 32"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: the last message must be the assistant's"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "line 2: message 0 must be"),
])
def test_bad_lines_name_their_number(tmp_path, enc, line, words):
    good = json.dumps({"prompt": "a", "completion": " b"})
    src = write_jsonl(tmp_path / "a.jsonl", [good, line, "", good])
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "o", "--seq-len", 32, "--val-fraction", 0)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert not (tmp_path / "o").exists(), "nothing is written when the input is rejected"
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "o", "--seq-len", 32, "--val-fraction", 0,
             "--skip-bad")
    assert r.returncode == 0, r.stderr
    assert "2 examples" in r.stdout and "skipped 1 bad line(s), the first: " + words in r.stdout


def test_flags_that_contradict(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "a", "completion": "b"}])
    for args, words in ((["--input", src, "--seq-len", 64], "--seq-len need --format jsonl"),
                        (["--input", src, "--skip-bad"], "--skip-bad need --format jsonl"),
                        (["--format", "jsonl", "--input", src, src], "reads one --input FILE"),
                        (["--format", "jsonl", "--dataset", "shakespeare"], "reads one --input FILE")):
        r = prep(*args, "--out", tmp_path / "o")
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)


def test_no_usable_examples(tmp_path, enc):
    src = write_jsonl(tmp_path / "a.jsonl", ["nope", "{}"])
    r = prep("--format", "jsonl", "--input", src, "--out", tmp_path / "o", "--skip-bad")
    assert r.returncode == 2 and "no usable examples (2 bad lines skipped)" in r.stderr


def test_rerun_removes_stale_shards(tmp_path, enc):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(40)])
    out = tmp_path / "o"
    assert prep("--format", "jsonl", "--input", src, "--out", out, "--seq-len", 8, "--shard-size", 40,
                "--val-fraction", 0).returncode == 0
    many = sorted(p.name for p in out.glob("ft_train_*"))
    assert len(many) > 2
    assert prep("--format", "jsonl", "--input", src, "--out", out, "--seq-len", 8, "--val-fraction", 0).returncode == 0
    assert sorted(p.name for p in out.glob("ft_train_*")) == ["ft_train_000000.bin", "ft_train_000000.mask"]

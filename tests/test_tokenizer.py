"""GPT-2 tokenizer: round trips, known ids, the tiktoken route, errors, the .bin file."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from llmc import tokenizer as tok

from conftest import RANKS, SHAKESPEARE, SHARED  # noqa: F401  (the enc fixture lives there too)



TEXTS = [
    "",
    "Hello world",
    "  leading and trailing spaces   ",
    "tabs\tand\t\ttabs\n\n\nand\r\nCRLF\r\n\n \n  \n",
    "\n\n\n\n",
    "     ",
    "they're we'll I'd it's you've THEY'RE",
    "numbers 1234567890 3.14159 -42 1e10 0x1F",
    "naïve café — “quotes” … ß ẞ Ωmega Привет мир",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 🙂🚀👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "combining e\u0301 a\u0308 and zero\u200bwidth and nbsp\u00a0here\u3000ideographic",
    "right-to-left: שלום עולם مرحبا بالعالم",
    "<|endoftext|> is plain text here",
    "code:\n    def f(x):\n        return x ** 2  # comment\n",
    "\x00\x01\x7f control \x1c\x1d\x1e\x1f chars \u2028\u2029",
]


@pytest.mark.parametrize("text", TEXTS)
def test_roundtrip(enc, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.EOT for i in ids)  # special tokens never come from text
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids, dtype=np.uint16)) == text


def test_roundtrip_shakespeare_100k(enc):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} missing")
    text = SHAKESPEARE.read_bytes()[:100_000].decode("ascii")
    ids = tok.encode(text)
    assert 25_000 < len(ids) < 40_000
    assert tok.decode(ids) == text


def test_known_ids(enc):
    assert tok.EOT == 50256 and enc.eot_token == 50256 and enc.n_vocab == 50257
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("\n") == [198] and tok.encode("\n\n") == [628]
    assert tok.encode(" the") == [262]
    assert enc.decode_single_token_bytes(50256) == b"<|endoftext|>"
    assert tok.get_encoding() is tok.get_encoding()  # cached


def _data_gym_files(ranks):
    """GPT-2's original vocab.bpe and encoder.json, rebuilt from the ranks.

    The original files spell bytes as printable characters; a merge for a token of rank r
    is recovered by running BPE on its bytes with the ranks below r until two parts remain.
    """
    to_char, extra = {}, 0
    for b in range(256):
        if chr(b).isprintable() and chr(b) != " ":
            to_char[b] = chr(b)
    for b in range(256):
        if b not in to_char:
            to_char[b] = chr(256 + extra)
            extra += 1

    def spell(t):
        return "".join(to_char[b] for b in t)

    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = []
    for t, r in by_rank:
        if len(t) == 1:
            continue
        parts = [t[i : i + 1] for i in range(len(t))]
        while len(parts) > 2:
            best = min((ranks.get(parts[i] + parts[i + 1], r), i) for i in range(len(parts) - 1))
            assert best[0] < r
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append(spell(parts[0]) + " " + spell(parts[1]))
    encoder = {spell(t): r for t, r in by_rank}
    encoder["<|endoftext|>"] = tok.EOT
    return ("#version: 0.2\n" + "\n".join(merges) + "\n").encode(), json.dumps(encoder).encode()


GPT2_URLS = {
    "vocab.bpe": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                  "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    "encoder.json": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                     "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
}


def test_tiktoken_gpt2_route_matches_ranks_file(tmp_path, monkeypatch):
    """tiktoken.get_encoding('gpt2') and the ranks-file route give the same ids.

    Offline: GPT-2's original vocab.bpe/encoder.json are rebuilt from the ranks file and put
    in a tiktoken cache. tiktoken checks their sha256 against the hashes it pins for GPT-2,
    so a match also proves the ranks file is exactly GPT-2's vocabulary.
    """
    if not RANKS.is_file():
        pytest.skip(f"{RANKS} missing")
    from tiktoken.load import load_tiktoken_bpe
    vocab_bpe, encoder_json = _data_gym_files(load_tiktoken_bpe(str(RANKS)))
    assert hashlib.sha256(vocab_bpe).hexdigest() == GPT2_URLS["vocab.bpe"][1]
    assert hashlib.sha256(encoder_json).hexdigest() == GPT2_URLS["encoder.json"][1]
    for name, data in (("vocab.bpe", vocab_bpe), ("encoder.json", encoder_json)):
        key = hashlib.sha1(GPT2_URLS[name][0].encode()).hexdigest()
        (tmp_path / key).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    try:
        ref = tiktoken.get_encoding("gpt2")
    except Exception as e:  # a tiktoken whose cache layout changed
        pytest.skip(f"tiktoken did not take the offline cache: {e}")
    ours = tok.encoding_from_ranks_file(RANKS)
    text = "".join(TEXTS)
    if SHAKESPEARE.is_file():
        text += SHAKESPEARE.read_bytes()[:200_000].decode("ascii")
    assert ours.encode_ordinary(text) == ref.encode_ordinary(text)
    assert ours.n_vocab == ref.n_vocab == 50257
    assert ours.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_missing_tokenizer_message(monkeypatch, tmp_path):
    monkeypatch.delenv(tok.ENV_VAR, raising=False)
    monkeypatch.setattr(tok, "find_shared_file", lambda name: None)
    monkeypatch.setattr(tok, "_cache", {})

    def offline(name):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(RuntimeError) as ei:
        tok.get_encoding()
    msg = str(ei.value)
    for needle in ("LLMC_GPT2_TIKTOKEN", "--tokenizer", "gpt2.tiktoken", "network is unreachable"):
        assert needle in msg

    # A named file that is missing or is not GPT-2's ranks also fails clearly.
    with pytest.raises(RuntimeError, match="not found.*nope.tiktoken"):
        tok.get_encoding(tmp_path / "nope.tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("SGVsbG8= 0\nd29ybGQ= 1\n")
    with pytest.raises(RuntimeError, match="not GPT-2's"):
        tok.get_encoding(bad)


def test_tokenizer_bin_layout(enc, tmp_path):
    path = tmp_path / "gpt2_tokenizer.bin"
    tok.write_tokenizer_bin(path, enc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2_tokenizer.bin"]  # no temp left
    data = path.read_bytes()
    header = np.frombuffer(data[:1024], dtype="<i4")
    assert header[:4].tolist() == [20240328, 2, 50257, 50256]
    assert not header[4:].any()
    # First records by hand: uint8 length, then the bytes.
    assert data[1024:1026] == b"\x01!" and data[1026:1028] == b'\x01"'
    _, toks = tok.read_tokenizer_bin(path)
    assert len(toks) == 50257
    assert toks[198] == b"\n" and toks[15496] == b"Hello" and toks[995] == b" world"
    assert toks[50256] == b"<|endoftext|>"
    ids = tok.encode("Shall I compare thee to a summer's day? ünïcödé")
    assert b"".join(toks[i] for i in ids).decode() == tok.decode(ids)
    assert len(data) == 1024 + 50257 + sum(len(t) for t in toks)
    assert all(toks[i] == enc.decode_single_token_bytes(i) for i in range(0, 50257, 97))


# ---------------------------------------------------------------- the C reader takes a ranks file too

def test_c_reader_takes_a_ranks_file(enc, tmp_path):
    """./train_gpt2 --tokenizer and llmc._core.Tokenizer read gpt2.tiktoken as well as the .bin,
    told apart by content, and decode every id the same."""
    import base64
    from llmc import _core
    bin_path = tok.write_tokenizer_bin(tmp_path / "gpt2_tokenizer.bin", enc)
    ranks = tmp_path / "gpt2.tiktoken"
    ranks.write_bytes(b"".join(base64.b64encode(enc.decode_single_token_bytes(i)) + b" %d\n" % i
                               for i in range(tok.EOT)))
    a, b = _core.Tokenizer(str(ranks)), _core.Tokenizer(str(bin_path))
    assert (a.vocab_size, a.eot) == (b.vocab_size, b.eot) == (50257, 50256)
    assert all(a.decode(i) == b.decode(i) for i in range(a.vocab_size))


@pytest.mark.parametrize("text,words", [
    (b"YQ== 0\nYg== 0\n", "rank 0 appears twice"),
    (b"YQ== 0\n\nYg== 2\n", "rank 1 is missing"),
    (b"YQ== 0\nY!== 1\n", "rank 1 is not valid base64"),
    (b"YQ== 0\nYQ 1\n", "rank 1 is not valid base64"),
    (b"YQ== 0\nYg== x\n", "line 2 is not"),
])
def test_c_reader_refuses_bad_ranks(tmp_path, text, words):
    from llmc import _core
    p = tmp_path / "bad.tiktoken"
    p.write_bytes(text)
    with pytest.raises(_core.LlmcError, match=words):
        _core.Tokenizer(str(p))


def test_c_reader_small_ranks_file(tmp_path):
    from llmc import _core
    p = tmp_path / "tiny.tiktoken"
    p.write_bytes(b"YQ== 0\r\n\r\nYmM= 1\n")  # CRLF and a blank line
    t = _core.Tokenizer(str(p))
    assert (t.vocab_size, t.eot) == (3, 2)
    assert [t.decode(i) for i in range(3)] == [b"a", b"bc", b"<|endoftext|>"]
    with pytest.raises(_core.LlmcError, match="neither a gpt2_tokenizer.bin nor a tiktoken ranks file"):
        q = tmp_path / "junk.bin"
        q.write_bytes(b"\x00" * 2000)
        _core.Tokenizer(str(q))

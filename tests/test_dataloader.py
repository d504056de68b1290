"""Data loader over llm.c token shards, and the tokenizer .bin reader."""

import struct

import numpy as np
import pytest

from llmc import _core

SHARD_MAGIC = 20240520
TOK_MAGIC = 20240328


def write_shard(path, tokens, magic=SHARD_MAGIC, version=1, num_tokens=None, extra=b""):
    tokens = np.asarray(tokens, dtype=np.uint16)
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1] = magic, version
    header[2] = len(tokens) if num_tokens is None else num_tokens
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.tobytes())
        f.write(extra)
    return tokens


def make_shards(tmp_path, sizes, seed=0, prefix="shard"):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        # the full uint16 range: catches sign errors when widening to int32
        toks = rng.integers(0, 65536, size=n, dtype=np.uint16)
        write_shard(tmp_path / f"{prefix}_{i:03d}.bin", toks)
        out.append(toks)
    return out


def reference_batches(shards, B, T):
    """Every batch of one unshuffled epoch, by numpy slicing."""
    bt = B * T
    res = []
    for toks in shards:
        toks = toks.astype(np.int32)
        for i in range((len(toks) - 1) // bt):
            chunk = toks[i * bt: i * bt + bt + 1]
            res.append((chunk[:-1].reshape(B, T), chunk[1:].reshape(B, T)))
    return res


def take(dl, n):
    return [dl.next() for _ in range(n)]


def same_batches(a, b):
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


# ---------------------------------------------------------------- plain order

@pytest.mark.parametrize("B,T", [(1, 1), (1, 7), (2, 16), (3, 5)])
def test_batches_match_numpy_reference(tmp_path, B, T):
    bt = B * T
    sizes = [bt + 1, 2 * bt, 2 * bt + 1, 5 * bt + 3, 11 * bt - 1]
    shards = make_shards(tmp_path, sizes, seed=B * 100 + T)
    ref = reference_batches(shards, B, T)
    dl = _core.DataLoader(str(tmp_path / "shard_*.bin"), B, T)
    assert dl.num_shards == len(sizes)
    assert dl.num_tokens == sum(sizes)
    assert dl.num_batches == len(ref) == sum((n - 1) // bt for n in sizes)
    got = take(dl, len(ref))
    for (x, y), (rx, ry) in zip(got, ref):
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.shape == (B, T) and y.shape == (B, T)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    assert dl.tell() == (1, 0, 0)


def test_wraps_across_shards_and_epochs(tmp_path):
    B, T = 2, 4
    shards = make_shards(tmp_path, [17, 30, 9])
    ref = reference_batches(shards, B, T)
    dl = _core.DataLoader(str(tmp_path / "*.bin"), B, T)
    n = len(ref)
    got = take(dl, 3 * n + 2)
    for e in range(3):
        assert same_batches(got[e * n:(e + 1) * n], ref)
    assert same_batches(got[3 * n:], ref[:2])
    assert dl.tell() == (3, 1, 0)  # shard 0 holds exactly 2 batches


def test_tell_counts_positions(tmp_path):
    B, T = 1, 4
    make_shards(tmp_path, [9, 13])  # 2 batches, then 3 batches
    dl = _core.DataLoader(str(tmp_path / "*.bin"), B, T)
    seen = []
    for _ in range(6):
        seen.append(dl.tell())
        dl.next()
    assert seen == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 0, 0)]


def test_glob_is_sorted_and_literal_path_works(tmp_path):
    B, T = 1, 3
    # "s_10" sorts before "s_2": the loader must follow glob's sorted order
    a = write_shard(tmp_path / "s_2.bin", np.arange(4))
    b = write_shard(tmp_path / "s_10.bin", np.arange(100, 104))
    dl = _core.DataLoader(str(tmp_path / "s_*.bin"), B, T)
    np.testing.assert_array_equal(dl.next()[0].ravel(), b[:3])
    np.testing.assert_array_equal(dl.next()[0].ravel(), a[:3])
    one = _core.DataLoader(str(tmp_path / "s_2.bin"), B, T)
    assert one.num_shards == 1
    np.testing.assert_array_equal(one.next()[1].ravel(), a[1:4])


def test_reset(tmp_path):
    make_shards(tmp_path, [50, 40])
    for shuffle in (False, True):
        dl = _core.DataLoader(str(tmp_path / "*.bin"), 2, 3, shuffle=shuffle, seed=5)
        first = take(dl, 20)
        dl.reset()
        assert dl.tell() == (0, 0, 0)
        assert same_batches(take(dl, 20), first)


# ---------------------------------------------------------------- shuffling

def epoch_keys(batches):
    return [x.tobytes() + y.tobytes() for x, y in batches]


def test_shuffle_is_a_permutation_that_changes_per_epoch(tmp_path):
    B, T = 2, 3
    shards = make_shards(tmp_path, [61, 43, 100, 25, 7 * 6 + 1])
    ref = reference_batches(shards, B, T)
    n = len(ref)
    dl = _core.DataLoader(str(tmp_path / "*.bin"), B, T, shuffle=True, seed=1234)
    epochs = [epoch_keys(take(dl, n)) for _ in range(3)]
    ref_keys = epoch_keys(ref)
    for keys in epochs:
        assert sorted(keys) == sorted(ref_keys)  # every batch exactly once per epoch
        assert keys != ref_keys                 # and not in file order
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert dl.tell() == (3, 0, 0)


def test_shuffle_batch_order_changes_per_epoch_within_a_shard(tmp_path):
    # a single shard: only the batch order can change between epochs
    shards = make_shards(tmp_path, [4 * 40 + 1])
    ref = epoch_keys(reference_batches(shards, 2, 2))
    dl = _core.DataLoader(str(tmp_path / "*.bin"), 2, 2, shuffle=True, seed=7)
    epochs = [epoch_keys(take(dl, 40)) for _ in range(3)]
    for keys in epochs:
        assert sorted(keys) == sorted(ref) and keys != ref
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_shuffle_permutes_shard_order(tmp_path):
    # one batch per shard: the stream order is the shard order
    B, T = 1, 4
    shards = make_shards(tmp_path, [5] * 8)
    first = {s[:4].tobytes(): i for i, s in enumerate(shards)}
    dl = _core.DataLoader(str(tmp_path / "*.bin"), B, T, shuffle=True, seed=3)
    orders = []
    for _ in range(4):
        orders.append([first[dl.next()[0].astype(np.uint16).tobytes()] for _ in range(8)])
    for o in orders:
        assert sorted(o) == list(range(8))
    assert len({tuple(o) for o in orders}) > 1
    assert any(o != list(range(8)) for o in orders)


def test_shuffle_reproducible_with_seed(tmp_path):
    make_shards(tmp_path, [200, 150, 90])
    pat = str(tmp_path / "*.bin")
    a = take(_core.DataLoader(pat, 2, 5, shuffle=True, seed=42), 60)
    b = take(_core.DataLoader(pat, 2, 5, shuffle=True, seed=42), 60)
    c = take(_core.DataLoader(pat, 2, 5, shuffle=True, seed=43), 60)
    assert same_batches(a, b)
    assert not same_batches(a, c)


@pytest.mark.parametrize("shuffle", [False, True])
def test_tell_seek_resumes_identical_stream(tmp_path, shuffle):
    # small data so that 7 + 5 batches cross shard and epoch boundaries
    make_shards(tmp_path, [13, 9, 21])  # B*T = 4: 3 + 2 + 5 = 10 batches per epoch
    pat = str(tmp_path / "*.bin")
    for skip in (0, 7, 9, 10, 23):
        dl = _core.DataLoader(pat, 1, 4, shuffle=shuffle, seed=99)
        take(dl, skip)
        pos = dl.tell()
        after = take(dl, 5)
        dl.seek(pos)
        assert dl.tell() == pos
        assert same_batches(take(dl, 5), after)
        # a fresh loader at the saved position yields the same batches: position is the whole state
        fresh = _core.DataLoader(pat, 1, 4, shuffle=shuffle, seed=99)
        fresh.seek(pos)
        assert same_batches(take(fresh, 5), after)


# ---------------------------------------------------------------- bad input

def raises_with(match, fn, *args, **kw):
    with pytest.raises(_core.LlmcError, match=match):
        fn(*args, **kw)


def test_no_match(tmp_path):
    raises_with(r"no files match '.*nothing_\*\.bin'", _core.DataLoader, str(tmp_path / "nothing_*.bin"), 1, 4)


@pytest.mark.parametrize("B,T", [(0, 4), (4, 0), (-1, 4), (2, -3)])
def test_bad_batch_shape(tmp_path, B, T):
    make_shards(tmp_path, [100])
    raises_with(r"B and T must be positive", _core.DataLoader, str(tmp_path / "*.bin"), B, T)


def test_wrong_magic(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100), magic=12345)
    raises_with(r"a\.bin has wrong magic 12345 \(expected 20240520\)", _core.DataLoader, str(tmp_path / "*.bin"), 1, 4)


def test_wrong_version(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100), version=2)
    raises_with(r"a\.bin has unsupported version 2", _core.DataLoader, str(tmp_path / "*.bin"), 1, 4)


def test_truncated(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100))
    write_shard(tmp_path / "b.bin", np.arange(100), num_tokens=150)
    raises_with(r"truncated shard .*b\.bin: header says 150 tokens but file holds 100",
                _core.DataLoader, str(tmp_path / "*.bin"), 1, 4)


def test_truncated_header(tmp_path):
    (tmp_path / "a.bin").write_bytes(struct.pack("<3i", SHARD_MAGIC, 1, 10))
    raises_with(r"truncated shard .*a\.bin", _core.DataLoader, str(tmp_path / "*.bin"), 1, 4)


def test_longer_than_header(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100), num_tokens=90)
    raises_with(r"a\.bin is longer than its header: header says 90 tokens but file holds 100",
                _core.DataLoader, str(tmp_path / "*.bin"), 1, 4)


def test_shard_too_small(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100))
    write_shard(tmp_path / "b.bin", np.arange(32))
    raises_with(r"b\.bin has 32 tokens, fewer than B\*T\+1 = 33 needed for one batch",
                _core.DataLoader, str(tmp_path / "*.bin"), 4, 8)
    dl = _core.DataLoader(str(tmp_path / "*.bin"), 1, 31)  # 32 = B*T+1 is enough
    assert dl.num_batches == 3 + 1


def test_bad_seek(tmp_path):
    make_shards(tmp_path, [13, 9])  # B*T = 4: 3 and 2 batches
    dl = _core.DataLoader(str(tmp_path / "*.bin"), 1, 4)
    raises_with(r"cannot seek to shard 2: there are 2 shards", dl.seek, (0, 2, 0))
    raises_with(r"cannot seek to sample 2 of shard 1 .*it has 2 batches", dl.seek, (0, 1, 2))
    raises_with(r"must be non-negative", dl.seek, (0, -1, 0))
    raises_with(r"tuple \(epoch, shard, sample\)", dl.seek, (0, 1))
    raises_with(r"tuple \(epoch, shard, sample\)", dl.seek, 5)
    # a failed seek leaves the position alone
    dl.next()
    pos = dl.tell()
    with pytest.raises(_core.LlmcError):
        dl.seek((0, 0, 3))
    assert dl.tell() == pos
    dl.seek((5, 1, 1))  # any epoch is fine
    assert dl.tell() == (5, 1, 1)


def test_shard_cut_after_open(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(100))
    dl = _core.DataLoader(str(tmp_path / "a.bin"), 1, 4)
    dl.next()
    write_shard(tmp_path / "a.bin", np.arange(10))
    dl.seek((0, 0, 20))
    raises_with(r"a\.bin is shorter than when it was opened", dl.next)


# ---------------------------------------------------------------- tokenizer .bin

def write_tokenizer(path, tokens, version=2, eot=None, vocab=None, magic=TOK_MAGIC, extra=b""):
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1] = magic, version
    header[2] = len(tokens) if vocab is None else vocab
    if version == 2:
        header[3] = len(tokens) - 1 if eot is None else eot
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for t in tokens:
            f.write(struct.pack("B", len(t)))
            f.write(t)
        f.write(extra)


def sample_vocab(n=300, seed=0):
    rng = np.random.default_rng(seed)
    toks = [bytes([i]) for i in range(256)]  # every single byte, NUL included
    toks.append(b"")                         # zero-length token: allowed
    toks.append(bytes(rng.integers(0, 256, 255, dtype=np.uint8)))  # the longest a token can be
    while len(toks) < n:
        toks.append(bytes(rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8)))
    return toks


def test_tokenizer_round_trip(tmp_path):
    toks = sample_vocab()
    write_tokenizer(tmp_path / "tok.bin", toks, eot=7)
    t = _core.Tokenizer(str(tmp_path / "tok.bin"))
    assert t.vocab_size == len(toks)
    assert t.eot == 7
    for i, b in enumerate(toks):
        assert t.decode(i) == b
    ids = np.random.default_rng(1).integers(0, len(toks), 500)
    assert t.decode(ids) == b"".join(toks[i] for i in ids)
    assert t.decode([]) == b""
    for bad in (-1, len(toks)):
        raises_with(r"out of range", t.decode, bad)


def test_tokenizer_version1_eot(tmp_path):
    toks = [bytes([i % 256]) * (1 + i % 3) for i in range(50257)]
    write_tokenizer(tmp_path / "v1.bin", toks, version=1)
    t = _core.Tokenizer(tmp_path / "v1.bin")  # a Path works too
    assert t.eot == 50256 and t.vocab_size == 50257
    assert t.decode(50256) == toks[50256]
    write_tokenizer(tmp_path / "small.bin", toks[:10], version=1)
    assert _core.Tokenizer(tmp_path / "small.bin").eot == -1  # no id 50256 in a vocab of 10


def test_tokenizer_errors(tmp_path):
    toks = sample_vocab()[:50]
    p = tmp_path / "t.bin"
    write_tokenizer(p, toks, magic=1)
    raises_with(r"wrong magic 1", _core.Tokenizer, p)
    write_tokenizer(p, toks, version=3)
    raises_with(r"unsupported version 3", _core.Tokenizer, p)
    write_tokenizer(p, toks, vocab=len(toks) + 1)
    raises_with(r"truncated tokenizer .*t\.bin", _core.Tokenizer, p)
    write_tokenizer(p, toks, vocab=0)
    raises_with(r"invalid vocab size 0", _core.Tokenizer, p)
    write_tokenizer(p, toks, eot=len(toks))
    raises_with(r"EOT id 50 outside the vocab of 50", _core.Tokenizer, p)
    write_tokenizer(p, toks, extra=b"xyz")
    raises_with(r"3 bytes after its 50 tokens", _core.Tokenizer, p)
    data = p.read_bytes()
    write_tokenizer(p, toks)
    p.write_bytes(p.read_bytes()[:-1])  # cut inside the last token
    raises_with(r"truncated tokenizer .*token 49 needs", _core.Tokenizer, p)
    p.write_bytes(data[:100])
    raises_with(r"shorter than the 1024-byte header", _core.Tokenizer, p)
    raises_with(r"cannot open tokenizer", _core.Tokenizer, tmp_path / "missing.bin")


def test_tokenizer_matches_gpt2(tmp_path):
    """The .bin that llmc.tokenizer writes decodes like tiktoken, token by token."""
    tk = pytest.importorskip("llmc.tokenizer")
    try:
        enc = tk.get_encoding()
    except Exception as e:  # no ranks file and no network
        pytest.skip(f"no GPT-2 ranks: {e}")
    path = tk.write_tokenizer_bin(tmp_path / "gpt2_tokenizer.bin", enc)
    t = _core.Tokenizer(path)
    assert t.vocab_size == 50257 and t.eot == 50256
    for i in range(50257):
        assert t.decode(i) == enc.decode_single_token_bytes(i)

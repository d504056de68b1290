"""Bad files and bad arguments: each one raises LlmcError naming the problem, no crash, nothing left behind."""
import os

import numpy as np
import pytest

import llmc
from llmc import _core
from helpers import (HEADER_BYTES, SHARD_MAGIC, TINY, TOKENIZER_MAGIC, model_header, random_tokens,
                     write_model_file, write_shard)

LlmcError = llmc.LlmcError


@pytest.fixture(scope="module")
def model():
    return llmc.GPT2.from_config(TINY)


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.bin"
    write_model_file(path)  # L=2 NH=2 C=32 T=32 V=64 (Vp=128)
    return path


def load_fails(path, *patterns):
    """Loading path raises LlmcError whose message matches every pattern; the directory gains nothing."""
    before = sorted(os.listdir(os.path.dirname(path)))
    with pytest.raises(LlmcError) as e:
        llmc.GPT2.from_pretrained(path)
    msg = str(e.value)
    for p in patterns:
        assert p.lower() in msg.lower(), f"{p!r} not in {msg!r}"
    assert sorted(os.listdir(os.path.dirname(path))) == before
    return msg


# ---------------------------------------------------------------- model files

@pytest.mark.parametrize("keep", [0, 3, 28, 1000, 1023])
def test_truncated_inside_header(tmp_path, good_file, keep):
    bad = tmp_path / "cut.bin"
    bad.write_bytes(good_file.read_bytes()[:keep])
    msg = load_fails(bad, "truncated", "header")
    assert f"{keep} bytes" in msg


@pytest.mark.parametrize("keep", [HEADER_BYTES, HEADER_BYTES + 2, HEADER_BYTES + 4096, -4, -1])
def test_truncated_inside_params(tmp_path, good_file, keep):
    data = good_file.read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:keep])
    msg = load_fails(bad, "truncated", str(len(data)))  # says how many bytes the header promises
    assert str(os.path.getsize(bad)) in msg


def test_trailing_garbage(tmp_path, good_file):
    bad = tmp_path / "long.bin"
    bad.write_bytes(good_file.read_bytes() + b"\0" * 8)
    load_fails(bad, "too long")


def test_wrong_magic(tmp_path, good_file):
    bad = tmp_path / "magic.bin"
    data = bytearray(good_file.read_bytes())
    data[0:4] = np.int32(123456).tobytes()
    bad.write_bytes(bytes(data))
    load_fails(bad, "not a model file", "123456")


def test_token_shard_passed_as_model(tmp_path):
    shard = tmp_path / "tiny_train_000.bin"
    write_shard(shard, random_tokens(5000))
    load_fails(shard, "not a model file", "token shard")


def test_tokenizer_passed_as_model(tmp_path):
    tok = tmp_path / "gpt2_tokenizer.bin"
    h = np.zeros(256, np.int32)
    h[:3] = [TOKENIZER_MAGIC, 2, 3]
    body = b"".join(bytes([len(s)]) + s for s in (b"a", b"bc", b"<|endoftext|>"))
    tok.write_bytes(h.tobytes() + body)
    load_fails(tok, "not a model file", "tokenizer")


def test_state_file_passed_as_model(tmp_path):
    m = llmc.GPT2.from_config(TINY)
    m._trainer().checkpoint_save(tmp_path / "ck", 1)
    load_fails(tmp_path / "ck" / "state_00000001.bin", "not a model file", "state file")


@pytest.mark.parametrize("version", [1, 2, 4, 6, -3])
def test_unsupported_version(tmp_path, version):
    bad = tmp_path / "v.bin"
    write_model_file(bad, header=model_header(2, 2, 32, 32, 64, version=version))
    load_fails(bad, f"version {version}", "3", "5")


@pytest.mark.parametrize("field,value,words", [
    (6, 33, ["multiple", "C=33", "H=2"]),       # C not divisible by NH
    (4, -1, ["L=-1"]),                           # negative L
    (5, 0, ["H=0"]),                             # no heads
    (2, 0, ["T=0"]),                             # no positions
    (3, -64, ["V=-64"]),                         # negative vocab
    (7, 32, ["padded vocab 32", "vocab 64"]),    # Vp < V
    (4, 1 << 30, ["too large"]),                 # absurd L: refused before any allocation
])
def test_impossible_header_sizes(tmp_path, good_file, field, value, words):
    data = bytearray(good_file.read_bytes())
    h = np.frombuffer(bytes(data[:HEADER_BYTES]), np.int32).copy()
    h[field] = value
    data[:HEADER_BYTES] = h.tobytes()
    bad = tmp_path / "size.bin"
    bad.write_bytes(bytes(data))
    load_fails(bad, "corrupt", *words)


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("where,name", [(5, "wte"), (-1, "lnfb")])
def test_non_finite_params(tmp_path, good_file, value, word, where, name):
    data = good_file.read_bytes()
    p = np.frombuffer(data[HEADER_BYTES:], np.float32).copy()
    p[where] = value
    bad = tmp_path / "nan.bin"
    bad.write_bytes(data[:HEADER_BYTES] + p.tobytes())
    load_fails(bad, word, f"tensor {name}")


def test_nan_in_v5_params(tmp_path):
    bad = tmp_path / "nan5.bin"
    write_model_file(bad, version=5)
    data = bytearray(bad.read_bytes())
    data[HEADER_BYTES + 2 * 40:HEADER_BYTES + 2 * 41] = np.uint16(0x7FC0).tobytes()  # bf16 NaN in wte
    bad.write_bytes(bytes(data))
    load_fails(bad, "NaN", "wte")


def test_missing_model_file(tmp_path):
    load_fails(tmp_path / "nowhere.bin", "cannot open", "nowhere.bin")


def test_directory_passed_as_model(tmp_path):
    (tmp_path / "d").mkdir()
    msg = load_fails(tmp_path / "d")
    assert "9223372036854775807" not in msg
    assert "directory" in msg or "regular file" in msg


def test_failed_load_keeps_model_usable(tmp_path, good_file):
    """A failed load into a loaded context leaves the old model intact; into a fresh one, every later
    call raises a clean error instead of touching missing buffers."""
    bad = tmp_path / "nan.bin"
    data = good_file.read_bytes()
    bad.write_bytes(data[:HEADER_BYTES] + b"\xff" * (len(data) - HEADER_BYTES))  # all NaN
    core = _core.Model()
    core.load(good_file)
    before = core.get_params()
    with pytest.raises(LlmcError, match="NaN"):
        core.load(bad)
    assert np.array_equal(core.get_params(), before)
    assert np.isfinite(_core.Trainer(core).forward(np.zeros((1, 4), np.int32), np.ones((1, 4), np.int32)))

    empty = _core.Model()
    with pytest.raises(LlmcError, match="NaN"):
        empty.load(bad)
    empty.open("cpu")
    for call in (lambda: _core.Trainer(empty).forward(np.zeros((1, 4), np.int32)), empty.get_params,
                 lambda: empty.save(tmp_path / "x.bin"), lambda: _core.Trainer(empty).step(1e-3),
                 lambda: _core.Session(empty, [[1]], 2)):
        with pytest.raises(LlmcError):
            call()
    assert not (tmp_path / "x.bin").exists()


# ---------------------------------------------------------------- token shards

def dl_fails(pattern, B, T, *patterns):
    with pytest.raises(LlmcError) as e:
        _core.DataLoader(str(pattern), B, T)
    for p in patterns:
        assert p.lower() in str(e.value).lower(), f"{p!r} not in {str(e.value)!r}"


def test_shard_wrong_magic(tmp_path):
    write_shard(tmp_path / "s.bin", random_tokens(100), magic=20240326)
    dl_fails(tmp_path / "s.bin", 2, 8, "magic 20240326", str(SHARD_MAGIC))


def test_shard_wrong_version(tmp_path):
    write_shard(tmp_path / "s.bin", random_tokens(100), version=7)
    dl_fails(tmp_path / "s.bin", 2, 8, "version 7")


@pytest.mark.parametrize("cut", [0, 100, HEADER_BYTES - 1])
def test_shard_truncated_header(tmp_path, cut):
    write_shard(tmp_path / "s.bin", random_tokens(100), cut=cut)
    dl_fails(tmp_path / "s.bin", 2, 8, "truncated", "header")


def test_shard_truncated_tokens(tmp_path):
    write_shard(tmp_path / "s.bin", random_tokens(100), cut=HEADER_BYTES + 2 * 60)
    dl_fails(tmp_path / "s.bin", 2, 8, "truncated", "100 tokens", "60")


def test_shard_header_count_lies(tmp_path):
    write_shard(tmp_path / "s.bin", random_tokens(100), num_tokens=50)
    dl_fails(tmp_path / "s.bin", 2, 8, "50", "100")
    write_shard(tmp_path / "s.bin", random_tokens(100), num_tokens=-5)
    dl_fails(tmp_path / "s.bin", 2, 8, "-5")


def test_shard_too_small_for_one_batch(tmp_path):
    write_shard(tmp_path / "s.bin", random_tokens(16))
    dl_fails(tmp_path / "s.bin", 2, 8, "16 tokens", "17")
    write_shard(tmp_path / "s.bin", random_tokens(17))  # exactly B*T+1 is enough
    x, y = _core.DataLoader(str(tmp_path / "s.bin"), 2, 8).next()
    assert x.shape == (2, 8)


def test_one_bad_shard_among_good(tmp_path):
    write_shard(tmp_path / "s_000.bin", random_tokens(100))
    write_shard(tmp_path / "s_001.bin", random_tokens(100), cut=HEADER_BYTES + 10)
    dl_fails(tmp_path / "s_*.bin", 2, 8, "s_001.bin", "truncated")


def test_no_shards_match(tmp_path):
    dl_fails(tmp_path / "none_*.bin", 2, 8, "no files match", "none_*.bin")


@pytest.mark.parametrize("B,T", [(0, 8), (2, 0), (-1, 8), (2, -3)])
def test_loader_bad_batch_shape(tmp_path, B, T):
    write_shard(tmp_path / "s.bin", random_tokens(100))
    dl_fails(tmp_path / "s.bin", B, T, f"B={B}", f"T={T}")


# ---------------------------------------------------------------- forward inputs

@pytest.mark.parametrize("which", ["input", "target"])
@pytest.mark.parametrize("bad", [64, 65535, -1, -2, -(2 ** 31)])
def test_token_out_of_vocab(model, which, bad):
    if which == "target" and bad == -1:
        pytest.skip("a target of -1 is left out of the loss (tests/test_model.py)")
    x = np.random.default_rng(0).integers(0, 64, size=(2, 8)).astype(np.int32)
    y = x.copy()
    (x if which == "input" else y)[1, 3] = bad
    with pytest.raises(LlmcError) as e:
        model.forward(x, y)
    msg = str(e.value)
    assert which in msg and str(bad) in msg and "64" in msg and "position 11" in msg


@pytest.mark.parametrize("shape,words", [((0, 8), ["B=0"]), ((2, 0), ["T=0"]), ((1, 33), ["T=33", "32"])])
def test_forward_bad_shape(model, shape, words):
    with pytest.raises(LlmcError) as e:
        model.forward(np.zeros(shape, np.int32))
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("shape,words", [
    ((0, 8), ["B=0"]), ((0, 0), ["B=0"]),
    ((2, 0), ["T=0"]), ((1, 33), ["T=33", "32"])])
def test_forward_bad_shape_with_targets(model, shape, words):
    with pytest.raises(LlmcError) as e:
        model.forward(np.zeros(shape, np.int32), np.zeros(shape, np.int32))
    for w in words:
        assert w in str(e.value)


def test_forward_at_max_t_works(model):
    logits, loss = model.forward(np.ones((1, 32), np.int32), np.ones((1, 32), np.int32))
    assert logits.shape == (1, 32, 64) and np.isfinite(loss)


def test_targets_wrong_shape(model):
    with pytest.raises(LlmcError, match="targets"):
        model.forward(np.zeros((2, 8), np.int32), np.zeros((2, 7), np.int32))


def test_backward_without_targets(model):
    model.forward(np.zeros((1, 4), np.int32))
    with pytest.raises(LlmcError, match="target"):
        model.backward()


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("bad", [64, 1000, -1])
def test_prompt_token_out_of_vocab(model, bad):
    with pytest.raises(LlmcError) as e:
        model.generate([1, 2, bad], max_new_tokens=4, eot=63)
    msg = str(e.value)
    assert str(bad) in msg and "position 2" in msg and "64" in msg


def test_prompt_longer_than_context(model):
    with pytest.raises(LlmcError, match="33 tokens.*32"):
        model.generate(np.ones(33, np.int32), max_new_tokens=1, eot=63)
    out = model.generate(np.ones(32, np.int32), max_new_tokens=3, eot=-1)  # exactly max T: allowed, no room left
    assert len(out) == 0


def test_empty_prompt(model):
    for empty in ([], np.zeros(0, np.int32)):
        with pytest.raises(LlmcError, match="empty"):
            model.generate(empty, max_new_tokens=4, eot=63)


def test_empty_prompt_in_batch(model):
    with pytest.raises(LlmcError, match="prompt 1 is empty"):
        _core.Session(model._m, [[1, 2], []], 4, eot=63)
    with pytest.raises(LlmcError, match="no prompts"):
        _core.Session(model._m, [], 4, eot=63)


@pytest.mark.parametrize("n", [0, -1, -(2 ** 31)])
def test_max_new_tokens_not_positive(model, n):
    with pytest.raises(LlmcError, match=f"got {n}"):
        model.generate([1, 2], max_new_tokens=n, eot=63)


def test_generation_still_works_after_errors(model):
    with pytest.raises(LlmcError):
        model.generate([99], max_new_tokens=2, eot=63)
    out = model.generate([1, 2], max_new_tokens=3, temperature=0, eot=-1)
    assert len(out) == 3 and np.all((out >= 0) & (out < 64))


# ---------------------------------------------------------------- construction and parameters

def test_unknown_device_names_available():
    with pytest.raises(LlmcError) as e:
        llmc.GPT2.from_config(TINY, device="tpu")
    msg = str(e.value)
    assert "tpu" in msg
    for name in _core.backends():
        assert name in msg


def test_unknown_device_on_load(good_file):
    with pytest.raises(LlmcError, match="tpu"):
        llmc.GPT2.from_pretrained(good_file, device="tpu")


@pytest.mark.parametrize("desc", ["L=2,H=3,C=32", "L=0,H=2,C=32", "d13", "X=1", "", "L=2,H=2"])
def test_bad_descriptor(desc):
    with pytest.raises(LlmcError):
        llmc.GPT2.from_config(desc)


@pytest.mark.parametrize("delta", [-1, 1, -30592])
def test_set_params_wrong_length(delta):
    m = llmc.GPT2.from_config(TINY)
    before = m.get_params()
    with pytest.raises(LlmcError) as e:
        m.set_params(np.zeros(m.num_params + delta, np.float32))
    assert str(m.num_params) in str(e.value) and str(m.num_params + delta) in str(e.value)
    assert np.array_equal(m.get_params(), before)  # nothing was written


def test_set_params_right_length_2d():
    m = llmc.GPT2.from_config(TINY)
    v = np.arange(m.num_params, dtype=np.float32).reshape(2, -1) * 1e-5
    m.set_params(v)
    assert np.array_equal(m.get_params(), v.reshape(-1))

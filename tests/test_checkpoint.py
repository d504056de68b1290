"""Model files (llm.c v3 / v5) and trainer checkpoints: exact round trips, layouts, atomic writes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import _core
from helpers import (HEADER_BYTES, MODEL_MAGIC, STATE_MAGIC, TINY, TINY_CFG, bf16_round, leftovers, llmc_layout,
                     model_header, read_model_header, write_model_file, write_tiny_shards)

B, T = 2, 16


def tiny(seed=1337, desc=TINY):
    return llmc.GPT2.from_config(desc, seed=seed)


def tokens(B=B, T=T, V=64, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=(B, T)).astype(np.int32)


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


# ---------------------------------------------------------------- model files

@pytest.mark.parametrize("desc", [TINY, "L=1,H=3,C=48,T=20,V=100"])  # the second has Vp != V and odd T
def test_v3_round_trip_is_bit_exact(tmp_path, desc):
    a = tiny(seed=7, desc=desc)
    # perturb every value so a loader that re-initialises (instead of reading) cannot pass
    a.set_params(a.get_params() + np.random.default_rng(1).standard_normal(a.num_params).astype(np.float32) * 1e-3)
    path = tmp_path / "m.bin"
    a.save(path, version=3)
    b = llmc.GPT2.from_pretrained(path)
    assert b.config == a.config
    assert np.array_equal(bits(b.get_params()), bits(a.get_params()))
    x, y = tokens(V=a.config["vocab_size"], T=min(T, a.config["max_seq_len"]))
    la, loss_a = a.forward(x, y)
    lb, loss_b = b.forward(x, y)
    assert np.array_equal(bits(la), bits(lb))
    assert loss_a == loss_b
    assert np.all(np.isfinite(la))


def test_default_version_on_cpu_is_v3(tmp_path):
    a = tiny()
    a.save(tmp_path / "m.bin")
    assert read_model_header(tmp_path / "m.bin")[1] == 3


@pytest.mark.parametrize("L,NH,C,maxT,V", [(1, 1, 8, 4, 10), (3, 2, 40, 24, 130), (12, 12, 768, 1024, 50257)])
def test_param_table_is_llm_c_layout(L, NH, C, maxT, V):
    """The engine's one tensor table (weights.c) against llm.c's layout written out by hand."""
    table = _core.param_layout(dict(num_layers=L, num_heads=NH, channels=C, max_seq_len=maxT, vocab_size=V))
    off = 0
    for (name, offset, shape, decayed), (want_name, want_shape) in zip(table, llmc_layout(L, NH, C, maxT, V)):
        assert (name, offset, shape) == (want_name, off, want_shape)
        assert decayed == (len(want_shape) - (name not in ("wte", "wpe")) == 2)  # matrices only
        off += int(np.prod(shape))
    assert len(table) == 16


def test_v3_header_and_layout_match_llmc(tmp_path):
    desc = "L=3,H=2,C=40,T=24,V=130"  # Vp = 256: padding rows are stored too
    m = tiny(desc=desc)
    path = tmp_path / "m.bin"
    m.save(path, version=3)
    cfg = m.config
    L, NH, C, maxT, V = 3, 2, 40, 24, 130
    h = read_model_header(path)
    np.testing.assert_array_equal(h[:8], [MODEL_MAGIC, 3, maxT, V, L, NH, C, 256])
    assert not np.any(h[8:]), "unused header slots must be zero"
    assert cfg["padded_vocab_size"] == 256
    layout = llmc_layout(L, NH, C, maxT, V)
    n = sum(int(np.prod(s)) for _, s in layout)
    assert m.num_params == n
    assert os.path.getsize(path) == HEADER_BYTES + 4 * n
    flat = np.fromfile(path, dtype=np.float32, offset=HEADER_BYTES)
    assert np.array_equal(bits(flat), bits(m.get_params()))
    # and each named tensor sits where llm.c puts it
    off = 0
    for name, shape in layout:
        k = int(np.prod(shape))
        assert m.params[name].shape == shape, name
        assert np.array_equal(bits(flat[off:off + k].reshape(shape)), bits(m.params[name])), name
        off += k
    # GPT-2 init: LN weights 1, biases 0 -- shows the params really are in this order
    assert np.all(m.params["ln1w"] == 1) and np.all(m.params["lnfw"] == 1) and np.all(m.params["qkvb"] == 0)


def test_v5_stores_bf16_round_to_nearest_even(tmp_path):
    m = tiny()
    n = m.num_params
    p = m.get_params().copy()
    # plant exact ties (low 16 bits 0x8000) with even and odd kept halves, and near-ties either side
    u = p.view(np.uint32)
    u[0:40:4] = (u[0:40:4] & 0xFFFE0000) | 0x8000          # tie, even: rounds down
    u[1:40:4] = (u[1:40:4] & 0xFFFE0000) | 0x10000 | 0x8000  # tie, odd: rounds up
    u[2:40:4] = (u[2:40:4] & 0xFFFF0000) | 0x7FFF            # just below half: down
    u[3:40:4] = (u[3:40:4] & 0xFFFF0000) | 0x8001            # just above half: up
    p[40] = -p[41]  # negative values too
    m.set_params(p)
    path = tmp_path / "m5.bin"
    m.save(path, version=5)
    h = read_model_header(path)
    assert h[0] == MODEL_MAGIC and h[1] == 5
    assert os.path.getsize(path) == HEADER_BYTES + 2 * n
    want = bf16_round(p)
    stored = (np.fromfile(path, dtype=np.uint16, offset=HEADER_BYTES).astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(bits(stored), bits(want))
    loaded = llmc.GPT2.from_pretrained(path).get_params()
    assert np.array_equal(bits(loaded), bits(want))
    assert not np.array_equal(bits(loaded), bits(p))  # the rounding really happened


def test_handwritten_llmc_file_loads(tmp_path):
    path = tmp_path / "hand.bin"
    L, NH, C, maxT, V = 2, 4, 32, 16, 100
    ref = write_model_file(path, L=L, NH=NH, C=C, maxT=maxT, V=V, seed=3)
    m = llmc.GPT2.from_pretrained(path)
    assert m.config == dict(num_layers=L, num_heads=NH, channels=C, max_seq_len=maxT, vocab_size=V,
                            padded_vocab_size=128)
    assert set(m.params) == set(ref)
    for name, want in ref.items():
        assert np.array_equal(bits(m.params[name]), bits(want)), name
    # the file's own embedding drives the forward: logits at t=0 depend on wte[tok] + wpe[0]
    x = np.array([[5, 7, 9]], np.int32)
    logits, _ = m.forward(x)
    assert logits.shape == (1, 3, V) and np.all(np.isfinite(logits))


def test_handwritten_v5_file_loads(tmp_path):
    path = tmp_path / "hand5.bin"
    ref = write_model_file(path, seed=4, version=5)
    m = llmc.GPT2.from_pretrained(path)
    for name, want in ref.items():
        assert np.array_equal(bits(m.params[name]), bits(want)), name


def test_old_file_without_padded_vocab(tmp_path):
    """Very old llm.c files have Vp = 0 in the header: wte then has V rows."""
    path = tmp_path / "old.bin"
    h = model_header(2, 2, 32, 32, 64, Vp=0)
    ref = write_model_file(path, V=64, Vp=64, header=h, seed=5)
    m = llmc.GPT2.from_pretrained(path)
    assert m.config["padded_vocab_size"] == 64
    assert np.array_equal(bits(m.params["wte"]), bits(ref["wte"]))
    assert np.array_equal(bits(m.params["lnfb"]), bits(ref["lnfb"]))


# ---------------------------------------------------------------- atomic saves

def test_save_leaves_no_temp_and_replaces(tmp_path):
    a, b = tiny(seed=1), tiny(seed=2)
    path = tmp_path / "m.bin"
    a.save(path)
    assert leftovers(tmp_path) == []
    first = path.read_bytes()
    b.save(path)  # over the existing file
    assert leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]
    assert path.read_bytes() != first
    assert np.array_equal(bits(llmc.GPT2.from_pretrained(path).get_params()), bits(b.get_params()))
    b.save(path, version=5)  # a smaller file over a bigger one: no stale tail
    assert os.path.getsize(path) == HEADER_BYTES + 2 * b.num_params


def test_save_into_missing_directory_fails_cleanly(tmp_path):
    m = tiny()
    target = tmp_path / "nope" / "m.bin"
    with pytest.raises(llmc.LlmcError, match="nope"):
        m.save(target)
    assert os.listdir(tmp_path) == []


def test_save_bad_version_fails_cleanly(tmp_path):
    m = tiny()
    with pytest.raises(llmc.LlmcError, match="version"):
        m.save(tmp_path / "m.bin", version=4)
    assert os.listdir(tmp_path) == []


_FAILING_WRITE = r"""
import resource, signal, sys
import llmc
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
m = llmc.GPT2.from_config(sys.argv[2], seed=99)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
try:
    m.save(sys.argv[1])
except llmc.LlmcError as e:
    print("LlmcError:", e)
    sys.exit(3)
"""


def test_failed_write_keeps_the_old_file(tmp_path):
    """A save that fails half way (disk full) must leave the previous file untouched and no temp file."""
    path = tmp_path / "m.bin"
    tiny(seed=1).save(path)
    before = path.read_bytes()
    r = subprocess.run([sys.executable, "-c", _FAILING_WRITE, str(path), TINY], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "LlmcError" in r.stdout
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- trainer checkpoints

def train_steps(core, loader, n, step0=0):
    """n AdamW steps with a varying lr, weight decay and clipping; returns the losses and norms."""
    losses, norms = [], []
    for i in range(n):
        x, y = loader.next()
        core.zero_grad()
        losses.append(core.forward_backward(x, y))
        norms.append(core.step(1e-2 * (1 + 0.1 * (step0 + i)), weight_decay=0.1, grad_clip=1.0))
    return np.array(losses, np.float32), np.array(norms, np.float32)


@pytest.fixture
def shards(tmp_path):
    return write_tiny_shards(tmp_path, n_train=B * T * 12 + 1)[0]


def new_core(seed=1337):
    """A trainer over a freshly initialised tiny model."""
    c = _core.Model()
    c.init_random(dict(TINY_CFG), seed=seed)
    return _core.Trainer(c)


def empty_core():
    """A trainer over a model with a device but no weights: what a checkpoint load fills."""
    c = _core.Model()
    c.open("cpu")
    return _core.Trainer(c)


def test_checkpoint_state_round_trip(tmp_path, shards):
    dl = _core.DataLoader(shards, B, T)
    m = new_core()
    train_steps(m, dl, 5)
    pos = dl.tell()
    assert pos != (0, 0, 0)
    ck = tmp_path / "ck"  # created by checkpoint_save
    rng = 0xDEADBEEF12345678  # a full 64-bit value: both halves must survive
    m.checkpoint_save(ck, 5, rng=rng, data_position=pos)
    assert sorted(os.listdir(ck)) == ["DONE_00000005", "model_00000005.bin", "state_00000005.bin"]
    assert read_model_header(ck / "state_00000005.bin")[0] == STATE_MAGIC
    assert _core.checkpoint_latest(ck) == 5

    r = empty_core()
    st = r.checkpoint_load(ck)  # step -1: the latest
    assert st == dict(step=5, rng=rng, data_position=pos)
    assert r.step_count == m.step_count == 5
    assert np.array_equal(bits(r.get_params()), bits(m.get_params()))
    st3 = empty_core().checkpoint_load(ck, step=5)
    assert st3["data_position"] == pos


def test_checkpoint_restores_adamw_state(tmp_path, shards):
    """Same 5 batches after the checkpoint: the live model and a reloaded one give identical losses."""
    dl = _core.DataLoader(shards, B, T)
    m = new_core()
    train_steps(m, dl, 5)
    pos = dl.tell()
    m.checkpoint_save(tmp_path, 5, rng=1, data_position=pos)
    live_loss, live_norm = train_steps(m, dl, 5, step0=5)

    r = empty_core()
    st = r.checkpoint_load(tmp_path, 5)
    dl2 = _core.DataLoader(shards, B, T)
    dl2.seek(st["data_position"])
    got_loss, got_norm = train_steps(r, dl2, 5, step0=5)
    assert np.array_equal(bits(got_loss), bits(live_loss))
    assert np.array_equal(bits(got_norm), bits(live_norm))
    assert np.array_equal(bits(r.get_params()), bits(m.get_params()))
    assert r.step_count == m.step_count == 10

    # control: the weights alone (fresh AdamW moments, step 0) do not reproduce the run,
    # so the equality above really depends on the restored optimizer state
    wm = _core.Model()
    wm.load(tmp_path / "model_00000005.bin")
    w = _core.Trainer(wm)
    dl2.seek(pos)
    cold_loss, _ = train_steps(w, dl2, 5, step0=5)
    assert cold_loss[0] == live_loss[0]  # same weights, same batch
    assert not np.array_equal(cold_loss[1:], live_loss[1:])


def test_resume_equals_straight_run(tmp_path, shards):
    """5 steps, save, reload in a new model and loader, 5 more == 10 uninterrupted steps, bit for bit."""
    dl = _core.DataLoader(shards, B, T)
    straight = new_core()
    s_loss, s_norm = train_steps(straight, dl, 10)

    dl1 = _core.DataLoader(shards, B, T)
    first = new_core()
    l1, n1 = train_steps(first, dl1, 5)
    first.checkpoint_save(tmp_path / "ck", 5, data_position=dl1.tell())
    del first, dl1

    second = empty_core()
    st = second.checkpoint_load(tmp_path / "ck")
    dl2 = _core.DataLoader(shards, B, T)
    dl2.seek(st["data_position"])
    l2, n2 = train_steps(second, dl2, 5, step0=st["step"])
    assert np.array_equal(bits(np.concatenate([l1, l2])), bits(s_loss))
    assert np.array_equal(bits(np.concatenate([n1, n2])), bits(s_norm))
    assert np.array_equal(bits(second.get_params()), bits(straight.get_params()))


def test_checkpoint_latest(tmp_path):
    assert _core.checkpoint_latest(tmp_path / "missing") == -1
    assert _core.checkpoint_latest(tmp_path) == -1
    m = new_core()
    for step in (3, 20, 7):
        m.checkpoint_save(tmp_path, step)
    assert _core.checkpoint_latest(tmp_path) == 20
    # an incomplete later checkpoint (model without state, or state without model) is ignored
    (tmp_path / "model_00000030.bin").write_bytes((tmp_path / "model_00000020.bin").read_bytes())
    (tmp_path / "state_00000040.bin").write_bytes((tmp_path / "state_00000020.bin").read_bytes())
    (tmp_path / "state_00000050.bin.tmp.123").write_bytes(b"x")
    assert _core.checkpoint_latest(tmp_path) == 20
    assert empty_core().checkpoint_load(tmp_path)["step"] == 20
    assert leftovers(tmp_path) == ["state_00000050.bin.tmp.123"]


def test_checkpoint_load_errors(tmp_path):
    with pytest.raises(llmc.LlmcError, match="no complete checkpoint"):
        empty_core().checkpoint_load(tmp_path)
    m = new_core()
    m.checkpoint_save(tmp_path, 4)
    with pytest.raises(llmc.LlmcError, match="state_00000009"):
        empty_core().checkpoint_load(tmp_path, step=9)
    state = tmp_path / "state_00000004.bin"
    data = state.read_bytes()
    state.write_bytes(data[:-4])  # truncated optimizer state
    with pytest.raises(llmc.LlmcError, match="state file"):
        empty_core().checkpoint_load(tmp_path, step=4)
    state.write_bytes((tmp_path / "model_00000004.bin").read_bytes())  # a model file where the state belongs
    with pytest.raises(llmc.LlmcError, match="a model file"):
        empty_core().checkpoint_load(tmp_path, step=4)

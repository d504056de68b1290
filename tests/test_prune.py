"""Magnitude pruning and mask-keeping fine-tuning: the C pruning against a numpy reference (exact
counts, the right weights, ties, 2:4 group by group, layer vs global scope), python -m llmc.prune,
the zero-mask ops on every backend, keep_zeros through AdamW steps (shards, checkpoint and resume,
the CLI, both backends), and bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import _core
from conftest import BACKENDS, BIN_DIR, HAVE_CUDA
from helpers import (HEADER_INTS, TINY, TINY_CFG, bf16_round, leftovers, read_model_header, write_model_file,
                     write_tiny_shards)

rng = np.random.default_rng()
PRUNED = ("qkvw", "attprojw", "fcw", "fcprojw")
CFG = dict(TINY_CFG, channels=128)  # head size 64: the GPU's attention takes it
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")


def slices(cfg):
    """[(name, layer, offset, numel, row length)] of the pruned tensors, in the parameter buffer's order."""
    out = []
    for name, off, shape, _ in _core.param_layout(cfg):
        if name in PRUNED:
            n = int(np.prod(shape[1:]))
            out += [(name, l, off + l * n, n, shape[2]) for l in range(shape[0])]
    return out


def random_flat(cfg, seed=None, ties=False):
    r = np.random.default_rng(seed)
    n = _core.param_layout(cfg)[-1][1] + cfg["channels"]
    flat = r.standard_normal(n).astype(np.float32)
    for name, _, off, numel, _ in slices(cfg):
        scale = 0.2 if name == "fcprojw" else 1.0  # another magnitude: global and layer scope differ
        flat[off:off + numel] *= scale
    if ties:  # few distinct magnitudes, both signs, and zeros that are there already
        flat = np.round(flat * 4) / 4
        flat[r.random(n) < 0.05] = -0.0
    return flat


def count(s, n):
    return int(np.floor(s * n + 0.5))


def ref_prune(flat, cfg, sparsity=None, pattern="unstructured", scope="layer"):
    """What pruning must give: the first weights in (|w|, position) order of each group become 0."""
    out = flat.copy()
    sl = slices(cfg)
    if pattern == "2:4":
        for _, _, off, n, _ in sl:
            g = out[off:off + n].reshape(-1, 4)
            drop = np.argsort(np.abs(g), axis=1, kind="stable")[:, :2]
            np.put_along_axis(g, drop, 0.0, axis=1)
        return out
    groups = [[s] for s in sl] if scope == "layer" else [sl]
    for g in groups:
        idx = np.concatenate([np.arange(off, off + n) for _, _, off, n, _ in g])
        vals = out[idx]
        order = np.lexsort((np.arange(len(vals)), np.abs(vals)))
        out[idx[order[:count(sparsity, len(vals))]]] = 0.0
    return out


def untouched(a, b, cfg):
    """Everything but the pruned tensors is bit for bit the same."""
    keep = np.ones(a.size, bool)
    for _, _, off, n, _ in slices(cfg):
        keep[off:off + n] = False
    np.testing.assert_array_equal(a[keep].view(np.uint32), b[keep].view(np.uint32))


# ---------------------------------------------------------------- the pruning itself
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.73, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_unstructured_layer_scope(sparsity, ties):
    cfg = dict(TINY_CFG, num_layers=3, channels=40)  # rows of 40 and 160, tensors of non-powers of two
    flat = random_flat(cfg, ties=ties)
    pruned, report = _core.prune_values(cfg, flat.copy(), sparsity)
    want = ref_prune(flat, cfg, sparsity)
    np.testing.assert_array_equal(pruned == 0, want == 0)
    np.testing.assert_array_equal(pruned, want)
    untouched(pruned, flat, cfg)
    assert [(r["tensor"], r["layer"]) for r in report] == [(s[0], s[1]) for s in slices(cfg)]
    for r, (_, _, off, n, _) in zip(report, slices(cfg)):
        zeros = int(np.sum(pruned[off:off + n] == 0))
        assert r["numel"] == n and r["zeros"] == zeros
        before = int(np.sum(flat[off:off + n] == 0))
        assert zeros == max(count(sparsity, n), before)  # exactly the count asked for (zeros there count)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("ties", [False, True])
def test_global_scope(sparsity, ties):
    cfg = dict(TINY_CFG, num_layers=3, channels=40)
    flat = random_flat(cfg, ties=ties)
    pruned, report = _core.prune_values(cfg, flat.copy(), sparsity, scope="global")
    np.testing.assert_array_equal(pruned, ref_prune(flat, cfg, sparsity, scope="global"))
    untouched(pruned, flat, cfg)
    total = sum(r["numel"] for r in report)
    before = sum(int(np.sum(flat[off:off + n] == 0)) for _, _, off, n, _ in slices(cfg))
    assert sum(r["zeros"] for r in report) == max(count(sparsity, total), before)
    layer, _ = _core.prune_values(cfg, flat.copy(), sparsity, scope="layer")
    assert not np.array_equal(layer == 0, pruned == 0), "one threshold over all differs from one per tensor"
    by = {(r["tensor"], r["layer"]): r["zeros"] / r["numel"] for r in report}
    assert by[("fcprojw", 0)] > sparsity > by[("fcw", 0)]  # the smaller tensor loses more


@pytest.mark.parametrize("ties", [False, True])
def test_2_4_pattern_group_by_group(ties):
    cfg = dict(TINY_CFG, channels=36, num_heads=3)  # rows of 36 and 144: 9 and 36 groups
    flat = random_flat(cfg, ties=ties)
    pruned, report = _core.prune_values(cfg, flat.copy(), pattern="2:4")
    np.testing.assert_array_equal(pruned, ref_prune(flat, cfg, pattern="2:4"))
    untouched(pruned, flat, cfg)
    for _, _, off, n, cols in slices(cfg):
        before = flat[off:off + n].reshape(-1, cols // 4, 4)
        after = pruned[off:off + n].reshape(-1, cols // 4, 4)
        for g0, g1 in zip(before.reshape(-1, 4), after.reshape(-1, 4)):
            zero = g1 == 0
            assert zero.sum() >= 2
            kept = np.flatnonzero(g1 != 0)
            np.testing.assert_array_equal(g1[kept], g0[kept])  # the kept ones are unchanged
            drop = sorted(range(4), key=lambda j: (abs(float(g0[j])), j))[:2]
            assert np.all(g1[drop] == 0)
            for j in set(range(4)) - set(drop):
                assert g1[j] == g0[j]
    for r in report:
        assert r["zeros"] >= r["numel"] // 2
    with_half, _ = _core.prune_values(cfg, flat.copy(), 0.5, "2:4", "layer")
    np.testing.assert_array_equal(with_half, pruned)  # an explicit 0.5 is the same


def test_model_prune_and_gpt2_prune_agree():
    flat = random_flat(CFG, seed=3)
    m = _core.Model()
    m.init_values(CFG, flat)
    report = m.prune(0.4)
    np.testing.assert_array_equal(m.get_params(), ref_prune(flat, CFG, 0.4))
    g = llmc.GPT2(m, "cpu")
    g.set_params(flat)
    assert g.prune(0.4) == report
    np.testing.assert_array_equal(g.get_params(), ref_prune(flat, CFG, 0.4))


@pytest.mark.parametrize("kwargs,words", [
    (dict(sparsity=-0.5), "bad sparsity -0.5"),
    (dict(sparsity=1.5), "bad sparsity 1.5"),
    (dict(sparsity=float("nan")), "bad sparsity nan"),
    (dict(sparsity=0.5, pattern="3:4"), "unknown pruning pattern '3:4'"),
    (dict(sparsity=0.5, scope="everything"), "unknown pruning scope 'everything'"),
    (dict(sparsity=0.3, pattern="2:4"), "sparsity 0.3 contradicts"),
    (dict(pattern="2:4", scope="global"), "scope 'global' does not apply"),
    (dict(), "needs a sparsity"),
])
def test_bad_options(kwargs, words):
    flat = random_flat(CFG)
    before = flat.copy()
    with pytest.raises(llmc.LlmcError, match=words):
        _core.prune_values(CFG, flat, **kwargs)
    np.testing.assert_array_equal(flat, before)


def test_2_4_needs_rows_of_multiples_of_4():
    cfg = dict(TINY_CFG, channels=6, num_heads=2)
    with pytest.raises(llmc.LlmcError, match="multiple of 4 weights: qkvw has rows of 6"):
        _core.prune_values(cfg, random_flat(cfg), pattern="2:4")


# ---------------------------------------------------------------- python -m llmc.prune
def prune_cli(*args):
    return subprocess.run([sys.executable, "-m", "llmc.prune", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=120)


def read_flat(path):
    h = read_model_header(path)
    body = np.fromfile(path, dtype=np.uint8, offset=4 * HEADER_INTS)
    if h[1] == 3:
        return h, body.view(np.float32)
    return h, (body.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("version", [3, 5])
@pytest.mark.parametrize("args", [["--sparsity", "0.5"], ["--sparsity", "0.3", "--scope", "global"],
                                  ["--pattern", "2:4"]])
def test_prune_tool(tmp_path, version, args):
    src, out = tmp_path / "model.bin", tmp_path / "pruned.bin"
    write_model_file(src, L=2, NH=2, C=32, maxT=32, V=64, version=version, seed=1)
    h0, flat = read_flat(src)
    r = prune_cli(src, *args, "--out", out)
    assert r.returncode == 0, r.stderr
    h1, got = read_flat(out)
    np.testing.assert_array_equal(h1, h0)  # an ordinary file of the input's format
    opts = dict(zip([a.lstrip("-") for a in args[::2]], args[1::2]))
    want = ref_prune(flat, TINY_CFG, float(opts.get("sparsity", 0.5)), opts.get("pattern", "unstructured"),
                     opts.get("scope", "layer"))
    np.testing.assert_array_equal(got, want)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["tensor", "layer", "weights", "zeros", "sparsity"]
    assert lines[1].split()[:2] == ["qkvw", "0"] and lines[-2].split()[0] == "all"
    assert f"wrote {out} (v{version})" in lines[-1]
    assert leftovers(tmp_path) == []
    m = _core.Model()
    m.load(out)  # and llmc reads it back
    np.testing.assert_array_equal(m.get_params(), want)


def test_prune_tool_format_and_quiet(tmp_path):
    src = tmp_path / "model.bin"
    write_model_file(src, version=3)
    r = prune_cli(src, "--sparsity", "0.5", "--out", tmp_path / "p5.bin", "--format", 5, "--quiet")
    assert r.returncode == 0, r.stderr
    assert read_model_header(tmp_path / "p5.bin")[1] == 5
    assert r.stdout.splitlines()[0].split()[0] == "all" and "50.00%" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["--sparsity", "1.2"], "bad sparsity 1.2"),
    (["--sparsity", "0.5", "--pattern", "1:2"], "unknown pruning pattern '1:2'"),
    (["--pattern", "2:4", "--sparsity", "0.6"], "contradicts"),
    (["--pattern", "2:4", "--scope", "global"], "does not apply"),
    ([], "needs a sparsity"),
])
def test_prune_tool_bad_input(tmp_path, args, words):
    src, out = tmp_path / "model.bin", tmp_path / "pruned.bin"
    write_model_file(src)
    r = prune_cli(src, *args, "--out", out)
    assert r.returncode == 1 and words in r.stderr, (r.returncode, r.stderr)
    assert not out.exists() and leftovers(tmp_path) == []


def test_prune_tool_missing_model(tmp_path):
    r = prune_cli(tmp_path / "none.bin", "--sparsity", "0.5", "--out", tmp_path / "p.bin")
    assert r.returncode == 1 and "cannot open model file" in r.stderr


# ---------------------------------------------------------------- the zero-mask ops
@pytest.mark.parametrize("n,bit0", [(1, 0), (1, 31), (7, 30), (64, 0), (100, 5), (1000, 33), (100003, 17)])
@pytest.mark.parametrize("master", [False, True])
def test_zero_mask_build(device, n, bit0, master):
    w = rng.standard_normal(n).astype(np.float32)
    w[rng.random(n) < 0.4] = 0.0
    w[rng.random(n) < 0.1] = -0.0
    w[rng.random(n) < 0.05] = 1e-30  # tiny: not zero in fp32 (bf16 rounds it to a nonzero too)
    words = (bit0 + n + 31) // 32 + 1
    start = rng.integers(0, 2 ** 32, words, dtype=np.uint64).astype(np.uint32)  # garbage outside the range
    got = device.zero_mask_build(w, start, bit0, master)
    stored = w if master else device.roundtrip(w)
    bits = np.unpackbits(start.view(np.uint8), bitorder="little").copy()
    bits[bit0:bit0 + n] = stored == 0
    np.testing.assert_array_equal(got, np.packbits(bits, bitorder="little").view(np.uint32))


@pytest.mark.parametrize("n,bit0", [(1, 0), (9, 31), (1000, 33), (100003, 5)])
@pytest.mark.parametrize("master", [False, True])
def test_zero_mask_apply(device, n, bit0, master):
    words = (bit0 + n + 31) // 32
    mask = rng.integers(0, 2 ** 32, words, dtype=np.uint64).astype(np.uint32)
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[bit0:bit0 + n].astype(bool)
    p, m, v, ms = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    m[::7] = np.nan  # a masked NaN becomes 0, an unmasked one stays
    p_out, m_out, v_out, ms_out = device.zero_mask_apply(mask, bit0, p, m, v, ms if master else None)
    for name, got, was, roundtrip in (("params", p_out, p, True), ("m", m_out, m, False), ("v", v_out, v, False),
                                      ("master", ms_out, ms if master else None, False)):
        if was is None:
            assert got is None
            continue
        want = device.roundtrip(was) if roundtrip else was.copy()
        want[bits] = 0.0
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=name)


# ---------------------------------------------------------------- keep_zeros through training
def trainer_on(device, flat, keep_zeros, **kw):
    m = _core.Model()
    m.init_values(CFG, flat, backend=device)
    return _core.Trainer(m, keep_zeros=int(keep_zeros), **kw)


def masked_positions(flat):
    zero = np.zeros(flat.size, bool)
    for _, _, off, n, _ in slices(CFG):
        zero[off:off + n] = flat[off:off + n] == 0
    return zero


def train_steps(t, loader, steps, lr=1e-2):
    for _ in range(steps):
        x, y = loader.next()
        t.zero_grad()
        t.forward_backward(x, y)
        t.step(lr, weight_decay=0.1)


def state_moments(path, n):
    """AdamW m and v of a state file (the whole shard)."""
    body = np.fromfile(path, dtype=np.float32, offset=4 * HEADER_INTS)
    return body[:n], body[n:2 * n]


@pytest.mark.parametrize("device", BACKENDS)
def test_keep_zeros_keeps_pruned_weights_at_zero(device, tmp_path):
    train, _ = write_tiny_shards(tmp_path, n_train=3000)
    loader = _core.DataLoader(train, 2, 16)
    flat, _ = _core.prune_values(CFG, random_flat(CFG, seed=2) * 0.05, 0.5)
    zero = masked_positions(flat)
    assert zero.sum() == sum(count(0.5, n) for _, _, _, n, _ in slices(CFG))
    kept, free = trainer_on(device, flat, True), trainer_on(device, flat, False)
    assert kept.keep_zeros and not free.keep_zeros
    for t in (kept, free):
        loader.reset()
        train_steps(t, loader, 5)
    p_kept, p_free = kept.get_params(), free.get_params()  # the master weights where kept
    w_kept = kept.model.get_params()  # the weights the forward uses (bf16 on the GPU)
    assert np.all(p_kept[zero] == 0) and np.all(w_kept[zero] == 0)
    assert np.mean(p_free[zero] != 0) > 0.99, "without keep_zeros the pruned weights move"
    moved = ~zero & (flat != 0)
    assert np.mean(p_kept[moved] != flat[moved]) > 0.9, "the other weights train"
    n = flat.size
    kept.checkpoint_save(tmp_path / "ck", 5)
    m_, v_ = state_moments(tmp_path / "ck" / "state_00000005.bin", n)
    assert np.all(m_[zero] == 0) and np.all(v_[zero] == 0), "their AdamW moments stay 0 too"
    assert np.mean(v_[~zero & (flat != 0)] != 0) > 0.9
    assert kept.memory > free.memory  # the mask: one bit per parameter


@pytest.mark.parametrize("device", BACKENDS)
def test_keep_zeros_respects_optimizer_shards(device, tmp_path):
    """Two trainers over the halves of the parameters (cut inside qkvw), each with its mask of its
    half, update their halves as one trainer over all of them does."""
    train, _ = write_tiny_shards(tmp_path, n_train=2000)
    loader = _core.DataLoader(train, 2, 16)
    flat, _ = _core.prune_values(CFG, random_flat(CFG, seed=4) * 0.05, 0.5)
    n = flat.size
    cut = [off for name, _, off, _, _ in slices(CFG) if name == "qkvw"][0] + 1001
    whole = trainer_on(device, flat, True)
    lo, hi = trainer_on(device, flat, True, shard_offset=0, shard_count=cut), \
        trainer_on(device, flat, True, shard_offset=cut, shard_count=n - cut)
    x, y = loader.next()
    for t in (whole, lo, hi):
        t.zero_grad()
        t.forward_backward(x, y)
        t.step(1e-2)
    ref, a, b = whole.get_params(), lo.get_params(), hi.get_params()
    np.testing.assert_array_equal(a[:cut], ref[:cut])
    np.testing.assert_array_equal(b[cut:], ref[cut:])
    zero = masked_positions(flat)
    assert np.all(ref[zero] == 0)


def test_keep_zeros_survives_checkpoint_and_resume(tmp_path):
    """GPT2.train with keep_zeros, stopped and resumed from its checkpoint: the mask is made again
    from the checkpoint's zeros, and the run equals a straight one bit for bit."""
    train, _ = write_tiny_shards(tmp_path, n_train=4000)
    flat, _ = _core.prune_values(CFG, random_flat(CFG, seed=5) * 0.05, 0.6)
    zero = masked_positions(flat)

    def model():
        m = _core.Model()
        m.init_values(CFG, flat)
        return llmc.GPT2(m, "cpu")

    opts = dict(batch_size=2, seq_len=16, lr=1e-2, ckpt_every=2, sample_every=0, progress=False, keep_zeros=True)
    straight = model()
    straight.train(train, steps=6, out_dir=str(tmp_path / "a"), **opts)
    cut = model()
    cut.train(train, steps=6, out_dir=str(tmp_path / "b"), stop_after=4, **opts)
    resumed = model()  # a new process would start from the pruned file; the checkpoint brings the rest
    resumed.train(train, steps=6, out_dir=str(tmp_path / "b"), resume=True, **opts)
    got = resumed.get_params()
    assert np.all(got[zero] == 0)
    np.testing.assert_array_equal(got, straight.get_params())
    free = model()
    free.train(train, steps=2, **dict(opts, keep_zeros=False, ckpt_every=0))
    assert np.mean(free.get_params()[zero] != 0) > 0.99


def test_keep_zeros_can_be_switched():
    m = _core.Model()
    flat, _ = _core.prune_values(CFG, random_flat(CFG, seed=6) * 0.05, 0.5)
    m.init_values(CFG, flat)
    g = llmc.GPT2(m, "cpu")
    x = rng.integers(0, 64, (2, 16))
    g.keep_zeros = True
    for _ in range(2):
        g.zero_grad()
        g.forward(x, np.roll(x, -1, 1))
        g.backward()
        g.step(lr=1e-2)
    zero = masked_positions(flat)
    assert np.all(g.get_params()[zero] == 0)
    g.keep_zeros = False
    g.zero_grad()
    g.forward(x, np.roll(x, -1, 1))
    g.backward()
    g.step(lr=1e-2)
    assert np.mean(g.get_params()[zero] != 0) > 0.99


# ---------------------------------------------------------------- the trainer CLI
TRAIN = os.path.join(BIN_DIR, "train_gpt2")
TRAIN_CU = os.path.join(BIN_DIR, "train_gpt2cu")


@pytest.mark.parametrize("binary", [TRAIN, pytest.param(TRAIN_CU, marks=[pytest.mark.cuda, pytest.mark.skipif(
    not HAVE_CUDA, reason="no CUDA GPU")])], ids=["cpu", "cuda"])
@pytest.mark.parametrize("mask", [0, 1])
def test_prune_then_finetune_through_the_cli(tmp_path, binary, mask):
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built")
    train, val = write_tiny_shards(tmp_path, n_train=3000)
    src, pruned = tmp_path / "model.bin", tmp_path / "pruned.bin"
    m = _core.Model()
    m.init_random(CFG, seed=7)
    m.save(src, 3)
    r = prune_cli(src, "--sparsity", "0.5", "--out", pruned)
    assert r.returncode == 0, r.stderr
    _, flat = read_flat(pruned)
    zero = masked_positions(flat)
    out = tmp_path / "out"
    args = [binary, "-i", train, "-j", val, "-e", pruned, "-b", 2, "-t", 16, "-x", 4, "-v", 2, "-s", 0, "-n", 4,
            "-o", out, "-l", "1e-2", "--prune-mask", mask]
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert ("keep_zeros: matmul weights that are exactly 0 now stay 0" in r.stdout) == bool(mask)
    _, after = read_flat(out / "model_00000004.bin")
    if mask:
        assert np.all(after[zero] == 0)
    else:
        assert np.mean(after[zero] != 0) > 0.99

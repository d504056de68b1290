"""Learning-rate schedules: warmup, cosine, linear, constant, warmup-stable-decay."""

import math

import numpy as np
import pytest

from llmc import _core

KINDS = ["cosine", "linear", "constant", "wsd"]


def ref_lr(kind, max_lr, warmup, total, final_frac=0.0, step=0, decay_frac=0.0):
    """float64 reference, written from the spec."""
    if total <= 0:
        return max_lr
    step = max(step, 0)
    warmup = max(warmup, 0)
    min_lr = max_lr * final_frac
    if step >= total:
        return max_lr if kind == "constant" else min_lr
    if step < warmup:
        return max_lr * (step + 1) / warmup
    prog = (step - warmup) / (total - warmup)
    if kind == "cosine":
        return min_lr + 0.5 * (1 + math.cos(math.pi * prog)) * (max_lr - min_lr)
    if kind == "linear":
        return max_lr + (min_lr - max_lr) * prog
    if kind == "constant":
        return max_lr
    frac = decay_frac if decay_frac > 0 else 0.2
    frac = min(frac, 1.0)
    start = max(total - max(math.floor(frac * total + 0.5), 1), warmup)
    if step < start:
        return max_lr
    return max_lr + (min_lr - max_lr) * (step - start) / (total - start)


def lrs(kind, max_lr, warmup, total, final_frac=0.0, decay_frac=0.0, steps=None):
    steps = range(total + 5) if steps is None else steps
    return np.array([_core.schedule_lr(kind, max_lr, warmup, total, final_frac, s, decay_frac) for s in steps])


def close(a, b):
    return abs(a - b) <= 1e-6 * max(abs(b), 1e-30)


def test_key_values():
    m = 6e-4
    # warmup 10, total 110: decay over steps 10..110
    for kind in KINDS:
        assert close(_core.schedule_lr(kind, m, 10, 110, 0.1, step=0), m / 10)
        assert close(_core.schedule_lr(kind, m, 10, 110, 0.1, step=4), m * 5 / 10)
        assert close(_core.schedule_lr(kind, m, 10, 110, 0.1, step=9), m)  # last warmup step reaches max
        assert close(_core.schedule_lr(kind, m, 10, 110, 0.1, step=10), m)  # decay starts at max
    # halfway through the decay
    assert close(_core.schedule_lr("cosine", m, 10, 110, 0.1, step=60), 0.1 * m + 0.5 * 0.9 * m)
    assert close(_core.schedule_lr("linear", m, 10, 110, 0.1, step=60), m - 0.9 * m * 0.5)
    assert close(_core.schedule_lr("linear", m, 10, 110, 0.1, step=35), m - 0.9 * m * 0.25)
    assert close(_core.schedule_lr("cosine", m, 10, 110, 0.1, step=35),
                 0.1 * m + 0.5 * (1 + math.cos(math.pi / 4)) * 0.9 * m)
    assert close(_core.schedule_lr("constant", m, 10, 110, 0.1, step=60), m)
    # wsd, total 100, decay_frac 0.2: stable until step 80, then linear down to the end
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=79, decay_frac=0.2), m)
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=80, decay_frac=0.2), m)
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=90, decay_frac=0.2), m - 0.9 * m * 0.5)
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=95, decay_frac=0.2), m - 0.9 * m * 0.75)
    # decay_frac 0 means the default 0.2
    for s in range(0, 110):
        assert _core.schedule_lr("wsd", m, 10, 100, 0.1, step=s) == _core.schedule_lr("wsd", m, 10, 100, 0.1,
                                                                                      step=s, decay_frac=0.2)
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=50, decay_frac=0.5), m)
    assert close(_core.schedule_lr("wsd", m, 10, 100, 0.1, step=75, decay_frac=0.5), m - 0.9 * m * 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_end_value_is_kept(kind):
    m = 1e-3
    end = m if kind == "constant" else 0.1 * m
    for s in (100, 101, 500, 2**31 - 1):
        assert close(_core.schedule_lr(kind, m, 10, 100, 0.1, step=s), end)
    # the last step before the end is near the final value, and above it
    if kind != "constant":
        last = _core.schedule_lr(kind, m, 10, 100, 0.1, step=99)
        assert end < last < end + 0.05 * m


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("warmup,total,final_frac,decay_frac", [
    (10, 110, 0.1, 0.0), (0, 50, 0.0, 0.3), (7, 33, 0.5, 0.0), (1, 2, 0.0, 0.0), (3, 1000, 0.01, 0.05),
    (100, 50, 0.1, 0.0), (5, 5, 0.1, 0.0), (0, 1, 0.2, 0.0), (20, 25, 0.0, 1.0), (2, 40, 0.0, 3.0)])
def test_matches_reference_everywhere(kind, warmup, total, final_frac, decay_frac):
    m = 3e-4
    got = lrs(kind, m, warmup, total, final_frac, decay_frac)
    ref = np.array([ref_lr(kind, m, warmup, total, final_frac, s, decay_frac) for s in range(total + 5)])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_monotone(kind):
    m = 1e-3
    got = lrs(kind, m, 20, 300, 0.05)
    assert np.all(np.diff(got[:20]) > 0)          # warmup rises
    assert np.all(np.diff(got[19:]) <= 1e-12)     # then never rises
    assert got.max() <= m * (1 + 1e-6)
    assert got.min() >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_degenerate_inputs_do_not_crash(kind):
    m = 1e-3
    # no horizon: max_lr everywhere
    assert close(_core.schedule_lr(kind, m, 0, 0, 0.0, step=0), m)
    assert close(_core.schedule_lr(kind, m, 10, 0, 0.0, step=5), m)
    assert close(_core.schedule_lr(kind, m, 10, -5, 0.0, step=5), m)
    # no warmup: the schedule starts at max_lr
    assert close(_core.schedule_lr(kind, m, 0, 100, 0.0, step=0), m)
    # total shorter than warmup: the run ends inside the warmup ramp
    assert close(_core.schedule_lr(kind, m, 10, 5, 0.0, step=4), m * 5 / 10)
    assert close(_core.schedule_lr(kind, m, 10, 5, 0.0, step=5), m if kind == "constant" else 0.0)
    # negative warmup and step are treated as 0
    assert close(_core.schedule_lr(kind, m, -3, 100, 0.0, step=-7), _core.schedule_lr(kind, m, 0, 100, 0.0, step=0))
    # zero learning rate stays zero
    assert _core.schedule_lr(kind, 0.0, 10, 100, 0.1, step=50) == 0.0
    for s in range(0, 12):
        assert math.isfinite(_core.schedule_lr(kind, m, 0, 1, 0.0, step=s))
        assert math.isfinite(_core.schedule_lr(kind, m, 1, 1, 0.0, step=s))


def test_parse():
    for k in KINDS + ["Cosine", "WSD"]:
        _core.schedule_lr(k, 1.0, 0, 10, step=3)
    for bad in ["cos", "", "exponential", "cosine ", "x" * 40]:
        with pytest.raises(_core.LlmcError, match="unknown schedule"):
            _core.schedule_lr(bad, 1.0, 0, 10, step=3)
    with pytest.raises(TypeError):
        _core.schedule_lr("cosine", 1.0, 0, 10)  # step is required

"""Knowledge distillation: the classifier op against the float64 reference on every backend, the
reference against finite differences, training against a teacher through the trainer, GPT2.train
and ./train_gpt2, and its bad input."""
import json
import os
import subprocess

import numpy as np
import pytest

import llmc
from llmc import _core
from llmc import reference as ref
from conftest import BACKENDS, BIN_DIR, TOL, assert_close, rel_err
from helpers import TINY, TINY_CFG, write_tiny_shards

rng = np.random.default_rng()


def rnd(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def tol(dev):
    return TOL[dev.act_dtype]


# ---------------------------------------------------------------- the reference itself
@pytest.mark.parametrize("alpha,tau", [(0.0, 1.0), (0.3, 2.0), (1.0, 0.5)])
def test_reference_gradient_by_finite_differences(alpha, tau):
    N, V, Vp = 3, 7, 9
    z, t = rng.standard_normal((N, Vp)) * 2, rng.standard_normal((N, Vp)) * 2
    y = np.array([1, ref.IGNORE_TARGET, 6])
    g = ref.distill_backward(z, t, y, alpha, tau, 1.0, V)
    num = np.zeros_like(z)
    h = 1e-6
    for i in range(N):
        for j in range(Vp):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += h
            zm[i, j] -= h
            num[i, j] = (ref.distill_forward(zp, t, y, alpha, tau, V)[i] - ref.distill_forward(zm, t, y, alpha, tau, V)[i]) / (2 * h)
    np.testing.assert_allclose(g, num, atol=1e-7)
    assert np.all(g[1] == 0) and np.all(g[:, V:] == 0)
    # KL of a distribution to itself is 0: alpha 0 and the teacher's logits give loss 0
    assert np.allclose(ref.distill_forward(t, t, [0, 0, 0], 0.0, tau, V), 0.0, atol=1e-12)


# ---------------------------------------------------------------- the op on every backend
SHAPES = [(1, 10, 16), (5, 50, 64), (7, 50, 50), (33, 1000, 1024), (3, 1001, 1037), (4, 50257, 50304)]


@pytest.mark.parametrize("N,V,Vp", SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("dloss", [0.0, 0.125])
def test_classifier_distill(device, N, V, Vp, alpha, tau, dloss):
    logits, teacher = rnd(N, Vp, scale=3.0), rnd(N, Vp, scale=3.0)
    logits[:, V:], teacher[:, V:] = 1e4, -1e4  # padding columns must never count
    targets = rng.integers(0, V, N).astype(np.int32)
    losses, out, teacher_after = device.classifier_distill_forward(logits, teacher, targets, V, dloss, alpha, tau)
    l64, t64 = (device.roundtrip(a).astype(np.float64) for a in (logits, teacher))
    np.testing.assert_array_equal(teacher_after, device.roundtrip(teacher))  # only read
    assert_close(losses, ref.distill_forward(l64, t64, targets, alpha, tau, V), tol(device), "losses")
    if dloss == 0.0:
        np.testing.assert_array_equal(out, device.roundtrip(logits))  # logits untouched
    else:
        assert_close(out, ref.distill_backward(l64, t64, targets, alpha, tau, dloss, V), tol(device), "dlogits")
        assert np.all(out[:, V:] == 0), "padded columns must get zero gradient"


@pytest.mark.parametrize("N,V,Vp", [(1, 10, 16), (33, 1000, 1024), (4, 50257, 50304)])
@pytest.mark.parametrize("dloss", [0.0, 0.25])
def test_alpha_one_is_the_plain_classifier(device, N, V, Vp, dloss):
    logits, teacher = rnd(N, Vp, scale=3.0), rnd(N, Vp, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    targets[0] = ref.IGNORE_TARGET
    lp, op = device.classifier_forward(logits, targets, V, dloss)
    ld, od, _ = device.classifier_distill_forward(logits, teacher, targets, V, dloss, 1.0, 2.0)
    assert rel_err(ld, lp) <= (1e-6 if device.act_dtype == "f32" else 1e-3)
    assert rel_err(od, op) <= (1e-6 if device.act_dtype == "f32" else 1e-2)


@pytest.mark.parametrize("N,V,Vp", [(1, 10, 16), (7, 50, 64), (33, 1000, 1024), (6, 50257, 50304)])
@pytest.mark.parametrize("masked", ["some", "all"])
@pytest.mark.parametrize("dloss", [0.0, 0.25])
def test_classifier_distill_ignored_targets(device, N, V, Vp, masked, dloss):
    """Rows whose target is -1 contribute nothing: loss 0 and a zero dlogits row, teacher or not."""
    logits, teacher = rnd(N, Vp, scale=3.0), rnd(N, Vp, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    ignored = rng.random(N) < 0.5 if masked == "some" else np.ones(N, bool)
    ignored[0] = True
    if masked == "some" and N > 1:
        ignored[-1] = False
    targets[ignored] = ref.IGNORE_TARGET
    losses, out, _ = device.classifier_distill_forward(logits, teacher, targets, V, dloss, 0.5, 2.0)
    assert np.all(losses[ignored] == 0)
    l64, t64 = (device.roundtrip(a).astype(np.float64) for a in (logits, teacher))
    if masked == "some":
        assert_close(losses, ref.distill_forward(l64, t64, targets, 0.5, 2.0, V), tol(device), "losses")
    if dloss:
        assert np.all(out[ignored] == 0)
        if masked == "some":
            assert_close(out, ref.distill_backward(l64, t64, targets, 0.5, 2.0, dloss, V), tol(device), "dlogits")


@pytest.mark.parametrize("alpha,tau", [(-0.1, 1.0), (1.5, 1.0), (np.nan, 1.0), (0.5, 0.0), (0.5, -1.0),
                                       (0.5, np.inf)])
def test_classifier_distill_refuses_bad_settings(device, alpha, tau):
    x = rnd(2, 16)
    with pytest.raises(llmc.LlmcError, match="alpha .* tau"):
        device.classifier_distill_forward(x, x, [1, 2], 10, 0.1, alpha, tau)


def test_classifier_distill_is_deterministic(device):
    logits, teacher = rnd(5, 50304, scale=3.0), rnd(5, 50304, scale=3.0)
    targets = rng.integers(0, 50257, 5).astype(np.int32)
    a = device.classifier_distill_forward(logits, teacher, targets, 50257, 0.5, 0.3, 2.0)
    b = device.classifier_distill_forward(logits, teacher, targets, 50257, 0.5, 0.3, 2.0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)

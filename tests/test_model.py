"""Whole-model checks: logits, loss and all 16 gradient tensors against the float64
reference, then a 10-step AdamW trajectory, on every backend."""
import numpy as np
import pytest

import llmc
from conftest import BACKENDS, HAVE_CUDA, assert_close, rel_err
from llmc import reference as ref

# head size 64 so the GPU's attention kernels apply; V not a multiple of 128 so padding is exercised
SMALL = dict(num_layers=2, num_heads=2, channels=128, max_seq_len=64, vocab_size=300)
# per-backend tolerances (normwise relative) for whole-model quantities
LOGIT_TOL = {"cpu": 1e-5, "cuda": 2e-2}
GRAD_TOL = {"cpu": 1e-4, "cuda": 5e-2}


def ref_config(cfg):
    return ref.Config(n_layer=cfg["num_layers"], n_head=cfg["num_heads"], n_embd=cfg["channels"],
                      max_t=cfg["max_seq_len"], vocab_size=cfg["vocab_size"],
                      padded_vocab_size=cfg["padded_vocab_size"])


def make_model(device, seed=5, cfg=SMALL, **kw):
    model = llmc.GPT2.from_config(dict(cfg), device=device, seed=seed, **kw)
    # move off the init point (LN weights 1, biases 0) so every path carries signal
    rng = np.random.default_rng(seed)
    p = model.get_params()
    p += rng.standard_normal(p.shape).astype(np.float32) * 0.02
    C, V = model.config["channels"], model.config["vocab_size"]
    p[V * C:model.config["padded_vocab_size"] * C] = 0.0  # padding rows of wte stay zero
    model.set_params(p)
    return model


def batch(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    y = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    return x, y


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("B,T", [(2, 37), (1, 64)])
def test_forward_backward_matches_reference(device, B, T):
    model = make_model(device)
    cfg = model.config
    x, y = batch(cfg, B, T)
    logits, loss = model.forward(x, y)
    model.zero_grad()
    model.backward()

    rcfg = ref_config(cfg)
    params = ref.unflatten(model.get_params().astype(np.float64), rcfg)
    rlogits, rloss, cache = ref.gpt2_forward(params, rcfg, x, y)
    rgrads = ref.gpt2_backward(params, rcfg, cache)

    assert_close(logits, rlogits, LOGIT_TOL[device], "logits")
    assert abs(loss - rloss) / rloss < LOGIT_TOL[device], f"loss {loss} vs {rloss}"
    grads = model.grads
    assert len(grads) == 16
    for name in ref.PARAM_NAMES:
        assert_close(grads[name], rgrads[name], GRAD_TOL[device], f"grad {name}")


def masked(y, seed=0, frac=0.6):
    """y with about frac of its targets ignored (-1), in runs like a prompt's, one row fully."""
    rng = np.random.default_rng(seed)
    y = y.copy()
    for b in range(y.shape[0]):
        y[b, : rng.integers(1, y.shape[1])] = ref.IGNORE_TARGET  # a prompt: masked up to a point
    y[rng.random(y.shape) < frac / 2] = ref.IGNORE_TARGET
    y[0] = ref.IGNORE_TARGET
    return y


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("fused", [False, True])
def test_masked_targets_match_reference(device, fused):
    """Ignored targets add neither loss nor gradient; the mean is over the counted ones."""
    model = make_model(device)
    cfg = model.config
    x, y = batch(cfg, 3, 29)
    y = masked(y)
    assert 0 < np.count_nonzero(y >= 0) < y.size
    model.zero_grad()
    if fused:
        loss = model._trainer().forward_backward(x, y, 1.0)
    else:
        _, loss = model.forward(x, y)
        model.backward()
    rcfg = ref_config(cfg)
    params = ref.unflatten(model.get_params().astype(np.float64), rcfg)
    _, rloss, cache = ref.gpt2_forward(params, rcfg, x, y)
    rgrads = ref.gpt2_backward(params, rcfg, cache)
    assert abs(loss - rloss) / rloss < LOGIT_TOL[device], f"loss {loss} vs {rloss}"
    for name in ref.PARAM_NAMES:
        assert_close(model.grads[name], rgrads[name], GRAD_TOL[device], f"grad {name}")
    # and the reference's own view: masking equals dropping those positions from the mean
    full = ref.crossentropy_forward(cache["logits_full"], np.where(y < 0, 0, y), cfg["vocab_size"])
    assert rloss == pytest.approx(full[y >= 0].mean(), rel=1e-12)


@pytest.mark.parametrize("device", BACKENDS)
def test_all_targets_masked_gives_zero_loss_and_gradients(device):
    model = make_model(device)
    x, _ = batch(model.config, 2, 17)
    y = np.full_like(x, ref.IGNORE_TARGET)
    model.zero_grad()
    loss = model._trainer().forward_backward(x, y, 1.0)
    assert loss == 0.0
    g = model._trainer().get_grads()
    assert np.all(g == 0), "no gradient may come from a batch without counted targets"
    _, loss = model.forward(x, y)
    model.backward()
    assert loss == 0.0 and np.all(model._trainer().get_grads() == 0)
    for bad in (0.0, float("nan")):
        with pytest.raises(llmc.LlmcError, match="loss_scale"):
            model._trainer().forward_backward(x, y, bad)


@pytest.mark.parametrize("device", BACKENDS)
def test_fused_training_step_equals_forward_then_backward(device):
    """forward_backward (classifier writes dlogits in the same pass) == forward + backward."""
    a, b = make_model(device), make_model(device)
    x, y = batch(a.config, 2, 33)
    a.zero_grad()
    la = a._trainer().forward_backward(x, y, 0.5)
    b.zero_grad()
    _, lb = b.forward(x, y)
    b.backward(0.5)
    assert la == pytest.approx(lb, rel=1e-6)
    np.testing.assert_array_equal(a._trainer().get_grads(), b._trainer().get_grads())


@pytest.mark.parametrize("device", BACKENDS)
def test_training_trajectory_tracks_reference(device):
    """10 AdamW steps (with clipping and weight decay) follow the reference's losses."""
    model = make_model(device, seed=11)
    cfg = model.config
    rcfg = ref_config(cfg)
    rmodel = ref.ReferenceGPT2(rcfg, ref.unflatten(model.get_params().astype(np.float64), rcfg))
    x, y = batch(cfg, 2, 32, seed=3)
    opt = dict(lr=1e-3, weight_decay=0.1, grad_clip=1.0)
    ours, theirs = [], []
    for _ in range(10):
        model.zero_grad()
        ours.append(model.forward(x, y, return_logits=False)[1])
        model.backward()
        model.step(**opt)
        _, rloss = rmodel.forward(x, y)
        theirs.append(rloss)
        rmodel.backward()
        rmodel.step(**opt)
    ours, theirs = np.array(ours), np.array(theirs)
    assert theirs[-1] < theirs[0] - 0.1, "the reference should learn this batch"
    tol = 1e-4 if device == "cpu" else 2e-2
    assert rel_err(ours, theirs) < tol, f"losses {ours} vs reference {theirs}"
    assert_close(model.get_params(), rmodel.flat_params(), 10 * tol, "params after 10 steps")


@pytest.mark.parametrize("device", BACKENDS)
def test_same_seed_same_losses(device):
    """Deterministic mode is the only mode: two runs with one seed give identical losses."""
    def run():
        model = llmc.GPT2.from_config(dict(SMALL), device=device, seed=3)
        x, y = batch(model.config, 2, 40, seed=1)
        losses = []
        for _ in range(4):
            model.zero_grad()
            losses.append(model._trainer().forward_backward(x, y, 1.0))
            model.step(lr=1e-3)
        return losses
    assert run() == run()


@pytest.mark.parametrize("recompute", [1, 2])
@pytest.mark.parametrize("device", BACKENDS)
def test_recompute_gives_same_gradients(device, recompute):
    a = make_model(device)
    b = make_model(device, recompute=recompute)
    x, y = batch(a.config, 2, 24)
    for m in (a, b):
        m.zero_grad()
        m._trainer().forward_backward(x, y, 1.0)
    tol = 0.0 if device == "cpu" else 1e-2
    err = rel_err(b._trainer().get_grads(), a._trainer().get_grads())
    assert err <= tol, f"recompute={recompute} changed the gradients by {err}"


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")
def test_d12_on_gpu_matches_reference():
    """GPT-2 124M (d12) at B=4, T=64 on the GPU against the float64 reference."""
    model = llmc.GPT2.from_config("d12", device="cuda", seed=1)
    cfg = model.config
    x, y = batch(cfg, 4, 64, seed=2)
    logits, loss = model.forward(x, y)
    model.zero_grad()
    model.backward()
    rcfg = ref_config(cfg)
    params = ref.unflatten(model.get_params().astype(np.float64), rcfg)
    rlogits, rloss, cache = ref.gpt2_forward(params, rcfg, x, y)
    rgrads = ref.gpt2_backward(params, rcfg, cache)
    assert_close(logits, rlogits, 2e-2, "d12 logits")
    assert abs(loss - rloss) / rloss < 1e-2
    grads = model.grads
    for name in ref.PARAM_NAMES:
        assert_close(grads[name], rgrads[name], 5e-2, f"d12 grad {name}")

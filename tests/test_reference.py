"""Checks of the float64 numpy GPT-2 reference (python/llmc/reference.py).

Every backward is compared against central finite differences in float64, on
parameters pushed away from the GPT-2 init (random LN weights, nonzero biases)
so that every path carries a real gradient. Run with
    PYTHONPATH=python python -m pytest -q tests/test_reference.py
"""

import math
import os
import sys

import numpy as np
import pytest

try:
    from llmc import reference as ref
except ImportError:  # not installed and no conftest yet: import from the tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from llmc import reference as ref


CFG = ref.Config(n_layer=2, n_head=2, n_embd=8, max_t=8, vocab_size=11, padded_vocab_size=16)
B, T = 2, 5
H = 1e-5  # central-difference step: truncation ~H^2, roundoff ~1e-16/H, both far below 1e-6


def fd_grad(f, x, idx_list):
    """Central differences of the scalar f() w.r.t. x at the flat indices idx_list (x is perturbed in place)."""
    flat = x.reshape(-1)
    out = np.empty(len(idx_list))
    for k, i in enumerate(idx_list):
        old = flat[i]
        flat[i] = old + H
        fp = f()
        flat[i] = old - H
        fm = f()
        flat[i] = old
        out[k] = (fp - fm) / (2 * H)
    return out


def rel_err(a, b):
    """Normwise relative error ||a-b|| / ||b||, with b the finite-difference value."""
    nb = np.linalg.norm(b)
    return np.linalg.norm(a - b) / max(nb, 1e-30)


def check_all(f, x, analytic, tol=1e-6):
    """FD over every coordinate of x (small tensors only)."""
    idx = list(range(x.size))
    fd = fd_grad(f, x, idx)
    an = analytic.reshape(-1)
    assert np.all(np.isfinite(an))
    assert np.linalg.norm(fd) > 1e-8, "degenerate test: gradient is ~0"
    err = rel_err(an, fd)
    assert err < tol, f"relative error {err:.3e}"
    return err


def perturbed_params(rng, cfg=CFG):
    """Init params plus noise everywhere (except the padding rows of wte, which stay 0)."""
    p = ref.init_params(cfg, rng)
    for n in ref.PARAM_NAMES:
        p[n] = p[n] + rng.normal(0.0, 0.3 if n in ref.DECAYED else 0.2, size=p[n].shape)
    p["wte"][cfg.vocab_size:] = 0.0
    return p


# ---------------------------------------------------------------------------
# per-layer finite-difference checks
# ---------------------------------------------------------------------------

def test_encoder_backward():
    rng = np.random.default_rng(1)
    Vp, maxT, C = 7, 6, 3
    tokens = np.array([[1, 3, 3, 0], [3, 5, 1, 1]])  # repeats on purpose
    wte, wpe = rng.normal(size=(Vp, C)), rng.normal(size=(maxT, C))
    G = rng.normal(size=(2, 4, C))
    out = ref.encoder_forward(tokens, wte, wpe)
    assert np.allclose(out[1, 2], wte[1] + wpe[2])
    dwte, dwpe = ref.encoder_backward(G, tokens, Vp, maxT)
    f = lambda: np.sum(ref.encoder_forward(tokens, wte, wpe) * G)
    check_all(f, wte, dwte, 1e-9)
    check_all(f, wpe, dwpe, 1e-9)
    assert np.all(dwte[[2, 4, 6]] == 0) and np.all(dwpe[4:] == 0)


@pytest.mark.parametrize("shape", [(2, 5, 8), (1, 3, 7), (4, 6)])
def test_layernorm(shape):
    rng = np.random.default_rng(2)
    C = shape[-1]
    x = rng.normal(1.0, 2.0, size=shape)
    w, b = rng.normal(size=C), rng.normal(size=C)
    out, mean, rstd = ref.layernorm_forward(x, w, b)
    assert mean.shape == shape[:-1] and rstd.shape == shape[:-1]
    # forward against a direct reading of the formula (biased variance)
    var = ((x - x.mean(-1, keepdims=True)) ** 2).sum(-1, keepdims=True) / C
    assert np.allclose(out, (x - x.mean(-1, keepdims=True)) / np.sqrt(var + 1e-5) * w + b, rtol=1e-13, atol=1e-13)
    G = rng.normal(size=shape)
    dx, dw, db = ref.layernorm_backward(G, x, w, mean, rstd)
    f = lambda: np.sum(ref.layernorm_forward(x, w, b)[0] * G)
    check_all(f, x, dx)
    check_all(f, w, dw)
    check_all(f, b, db)


@pytest.mark.parametrize("has_bias", [True, False])
def test_matmul(has_bias):
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, 3, 5)), rng.normal(size=(7, 5))
    b = rng.normal(size=7) if has_bias else None
    out = ref.matmul_forward(x, w, b)
    assert np.allclose(out[1, 2, 4], x[1, 2] @ w[4] + (b[4] if has_bias else 0.0))
    G = rng.normal(size=(2, 3, 7))
    dx, dw, db = ref.matmul_backward(G, x, w, has_bias)
    f = lambda: np.sum(ref.matmul_forward(x, w, b) * G)
    check_all(f, x, dx, 1e-9)
    check_all(f, w, dw, 1e-9)
    if has_bias:
        check_all(f, b, db, 1e-9)
    else:
        assert db is None


def test_gelu():
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 2.0, size=(3, 17))
    assert np.allclose(ref.gelu_forward(np.array([0.0, 1.0, -1.0])),
                       [0.0, 0.8411919906082768, -0.15880800939172324], rtol=1e-14)
    G = rng.normal(size=x.shape)
    f = lambda: np.sum(ref.gelu_forward(x) * G)
    check_all(f, x, ref.gelu_backward(G, x))


def naive_attention(qkv, NH):
    """Loop-per-query attention, written independently of the vectorised one."""
    Bn, Tn, C3 = qkv.shape
    C = C3 // 3
    HS = C // NH
    out = np.zeros((Bn, Tn, C))
    lse = np.zeros((Bn, NH, Tn))
    for b in range(Bn):
        for h in range(NH):
            sl = slice(h * HS, (h + 1) * HS)
            q, k, v = qkv[b, :, sl], qkv[b, :, C:][:, sl], qkv[b, :, 2 * C:][:, sl]
            for i in range(Tn):
                s = np.array([q[i] @ k[j] / math.sqrt(HS) for j in range(i + 1)])
                lse[b, h, i] = math.log(sum(math.exp(z) for z in s))
                pr = np.exp(s - lse[b, h, i])
                out[b, i, sl] = pr @ v[: i + 1]
    return out, lse


@pytest.mark.parametrize("Bn,Tn,NH,HS", [(2, 5, 2, 4), (1, 7, 3, 3), (1, 1, 1, 5)])
def test_attention(Bn, Tn, NH, HS):
    rng = np.random.default_rng(5)
    C = NH * HS
    qkv = rng.normal(0.0, 1.5, size=(Bn, Tn, 3 * C))
    out, lse = ref.attention_forward(qkv, NH)
    assert out.shape == (Bn, Tn, C) and lse.shape == (Bn, NH, Tn)
    nout, nlse = naive_attention(qkv, NH)
    assert rel_err(out, nout) < 1e-13 and rel_err(lse, nlse) < 1e-13
    # lse normalises each query row over its allowed keys
    q = qkv[..., :C].reshape(Bn, Tn, NH, HS)
    k = qkv[..., C:2 * C].reshape(Bn, Tn, NH, HS)
    scores = np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(HS)
    mask = np.tril(np.ones((Tn, Tn), dtype=bool))
    probs = np.where(mask, np.exp(scores - lse[..., None]), 0.0)
    assert np.allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-13)
    # causality: changing a future token leaves earlier outputs untouched
    if Tn > 1:
        qkv2 = qkv.copy()
        qkv2[:, -1] += 1.0
        assert np.array_equal(ref.attention_forward(qkv2, NH)[0][:, :-1], out[:, :-1])
    G = rng.normal(size=out.shape)
    dqkv = ref.attention_backward(G, qkv, NH)
    assert dqkv.shape == qkv.shape
    f = lambda: np.sum(ref.attention_forward(qkv, NH)[0] * G)
    if Tn == 1:  # one key: out = v, so q and k get no gradient at all
        assert np.all(dqkv[..., : 2 * C] == 0)
    check_all(f, qkv, dqkv)


def test_crossentropy():
    rng = np.random.default_rng(6)
    V, Vp = 11, 16
    logits = rng.normal(0.0, 3.0, size=(2, 5, Vp))
    targets = rng.integers(0, V, size=(2, 5))
    losses = ref.crossentropy_forward(logits, targets, V)
    i, j = 1, 3
    z = logits[i, j, :V]
    assert np.isclose(losses[i, j], math.log(np.exp(z).sum()) - z[targets[i, j]], rtol=1e-14)
    # padding columns do not take part in the loss ...
    big = logits.copy()
    big[..., V:] = 1e3
    assert np.array_equal(ref.crossentropy_forward(big, targets, V), losses)
    # ... and receive exactly zero gradient
    dloss = rng.normal(size=(2, 5))
    dlogits = ref.crossentropy_backward(logits, targets, dloss, V)
    assert dlogits.shape == logits.shape and np.all(dlogits[..., V:] == 0)
    # without padding, each row's gradient sums to zero (softmax minus one-hot)
    assert np.allclose(dlogits.sum(-1), 0.0, atol=1e-14)
    f = lambda: np.sum(ref.crossentropy_forward(logits, targets, V) * dloss)
    check_all(f, logits, dlogits)
    # V=None uses every column; scalar dloss broadcasts
    d_all = ref.crossentropy_backward(logits, targets, 0.5)
    f = lambda: 0.5 * np.sum(ref.crossentropy_forward(logits, targets))
    check_all(f, logits, d_all)


# ---------------------------------------------------------------------------
# parameters and layout
# ---------------------------------------------------------------------------

def test_param_count_gpt2_124m():
    cfg = ref.Config(n_layer=12, n_head=12, n_embd=768, max_t=1024, vocab_size=50257, padded_vocab_size=50304)
    shapes = ref.param_shapes(cfg)
    assert list(shapes) == ref.PARAM_NAMES
    assert sum(int(np.prod(s)) for s in shapes.values()) == 124475904  # llm.c's padded GPT-2 124M


def test_init_and_flatten():
    cfg = ref.Config(n_layer=4, n_head=4, n_embd=32, max_t=16, vocab_size=100, padded_vocab_size=128)
    p = ref.init_params(cfg, np.random.default_rng(7))
    for n, s in ref.param_shapes(cfg).items():
        assert p[n].shape == s and p[n].dtype == np.float64
    assert np.all(p["wte"][100:] == 0)
    assert abs(p["wte"][:100].std() - 0.02) < 0.002 and abs(p["fcw"].std() - 0.02) < 0.001
    assert abs(p["fcprojw"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert abs(p["attprojw"].std() - 0.02 / math.sqrt(8)) < 0.0005
    for n in ("ln1w", "ln2w", "lnfw"):
        assert np.all(p[n] == 1)
    for n in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcprojb"):
        assert np.all(p[n] == 0)
    flat = ref.flatten(p, cfg)
    assert flat[0] == p["wte"][0, 0] and flat[-1] == p["lnfb"][-1]
    off = sum(p[n].size for n in ref.PARAM_NAMES[:4])  # start of qkvw
    assert flat[off] == p["qkvw"][0, 0, 0]
    views = ref.unflatten(flat, cfg)
    for n in ref.PARAM_NAMES:
        assert np.array_equal(views[n], p[n])
    views["lnfw"][0] = 42.0  # views write through
    assert flat[flat.size - 2 * 32] == 42.0
    with pytest.raises(ValueError):
        ref.unflatten(flat[:-1], cfg)


# ---------------------------------------------------------------------------
# whole model
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_case():
    rng = np.random.default_rng(8)
    params = perturbed_params(rng)
    tokens = rng.integers(0, CFG.vocab_size, size=(B, T))
    targets = rng.integers(0, CFG.vocab_size, size=(B, T))
    logits, loss, cache = ref.gpt2_forward(params, CFG, tokens, targets)
    grads = ref.gpt2_backward(params, CFG, cache)
    return params, tokens, targets, logits, loss, grads


def test_forward_shapes_and_loss(model_case):
    params, tokens, targets, logits, loss, _ = model_case
    assert logits.shape == (B, T, CFG.vocab_size)
    assert math.isclose(loss, ref.crossentropy_forward(logits, targets).mean(), rel_tol=1e-14)
    l2, none_loss, _ = ref.gpt2_forward(params, CFG, tokens)
    assert none_loss is None and np.array_equal(l2, logits)
    # causal model: the logits at t do not depend on later tokens
    tok2 = tokens.copy()
    tok2[:, -1] = (tok2[:, -1] + 1) % CFG.vocab_size
    l3 = ref.gpt2_forward(params, CFG, tok2)[0]
    assert np.allclose(l3[:, :-1], logits[:, :-1], rtol=0, atol=1e-13)
    with pytest.raises(ValueError):
        ref.gpt2_backward(params, CFG, ref.gpt2_forward(params, CFG, tokens)[2])


@pytest.mark.parametrize("name", ref.PARAM_NAMES)
def test_model_gradients(model_case, name):
    params, tokens, targets, _, _, grads = model_case
    p = {n: a.copy() for n, a in params.items()}
    x = p[name]
    assert grads[name].shape == x.shape
    rng = np.random.default_rng(100 + ref.PARAM_NAMES.index(name))
    if name == "wte":  # make sure rows of tokens actually used are sampled
        rows = np.unique(tokens)[:4]
        idx = [int(r) * CFG.n_embd + int(c) for r, c in zip(rows, rng.integers(0, CFG.n_embd, len(rows)))]
        idx += list(rng.choice(CFG.vocab_size * CFG.n_embd, 4, replace=False))
    elif name == "wpe":  # positions < T carry gradient
        idx = list(rng.choice(T * CFG.n_embd, 8, replace=False))
    else:
        idx = list(rng.choice(x.size, min(8, x.size), replace=False))
    f = lambda: ref.gpt2_forward(p, CFG, tokens, targets)[1]
    fd = fd_grad(f, x, idx)
    an = grads[name].reshape(-1)[idx]
    assert np.linalg.norm(fd) > 1e-6, "degenerate sample"
    err = rel_err(an, fd)
    assert err < 1e-6, f"{name}: relative error {err:.3e}"
    # and each coordinate on its own, against the tensor's gradient scale
    assert np.max(np.abs(an - fd)) < 1e-7 * max(np.abs(fd).max(), 1e-3)


def test_model_gradient_zero_where_expected(model_case):
    params, tokens, targets, _, _, grads = model_case
    # padding rows of wte: no logit column, never a token
    assert np.all(grads["wte"][CFG.vocab_size:] == 0)
    # positions beyond T are never used
    assert np.all(grads["wpe"][T:] == 0)
    # a padding row's FD is zero too
    p = {n: a.copy() for n, a in params.items()}
    f = lambda: ref.gpt2_forward(p, CFG, tokens, targets)[1]
    fd = fd_grad(f, p["wte"], [CFG.vocab_size * CFG.n_embd + 3, (CFG.padded_vocab_size - 1) * CFG.n_embd])
    assert np.all(np.abs(fd) < 1e-10)


# ---------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------

def test_adamw_hand_example():
    # "wte" is decayed, "ln1w" is not. Grad norm = sqrt(3^2 + 4^2) = 5 > clip 1,
    # so g becomes (0.6, 0), (0.8).
    params = {"wte": np.array([1.0, -2.0]), "ln1w": np.array([0.5])}
    grads = {"wte": np.array([3.0, 0.0]), "ln1w": np.array([4.0])}
    m = {n: np.zeros_like(a) for n, a in params.items()}
    v = {n: np.zeros_like(a) for n, a in params.items()}
    lr, wd, eps = 0.1, 0.5, 1e-8
    gn = ref.adamw_step(params, grads, m, v, 1, lr, 0.9, 0.95, eps, wd, 1.0)
    assert gn == 5.0
    assert np.array_equal(grads["wte"], [3.0, 0.0])  # grads are not modified
    # m = 0.1 g, v = 0.05 g^2; bias-corrected: mhat = g, vhat = g^2
    assert np.allclose(m["wte"], [0.06, 0.0], rtol=1e-14) and np.allclose(m["ln1w"], [0.08], rtol=1e-14)
    assert np.allclose(v["wte"], [0.018, 0.0], rtol=1e-14) and np.allclose(v["ln1w"], [0.032], rtol=1e-14)
    # update = mhat/(sqrt(vhat)+eps) + wd*p on wte; no decay on ln1w
    #   wte[0]: 1   - 0.1*(0.6/(0.6+eps) + 0.5*1)    ~ 0.85
    #   wte[1]: -2  - 0.1*(0            + 0.5*(-2))  = -1.9   (pure decay)
    #   ln1w:   0.5 - 0.1*(0.8/(0.8+eps))            ~ 0.4
    assert np.allclose(params["wte"], [1 - 0.1 * (0.6 / (0.6 + eps) + 0.5), -1.9], rtol=1e-14)
    assert np.allclose(params["ln1w"], [0.5 - 0.1 * (0.8 / (0.8 + eps))], rtol=1e-14)
    assert abs(params["wte"][0] - 0.85) < 1e-8 and abs(params["ln1w"][0] - 0.4) < 1e-8

    # step 2: small grads (norm 0.3 < clip), exercises the t=2 bias corrections
    grads = {"wte": np.array([0.1, 0.2]), "ln1w": np.array([0.2])}
    p_before = {n: a.copy() for n, a in params.items()}
    gn = ref.adamw_step(params, grads, m, v, 2, lr, 0.9, 0.95, eps, wd, 1.0)
    assert math.isclose(gn, 0.3, rel_tol=1e-14)
    # m = 0.9 m + 0.1 g ; v = 0.95 v + 0.05 g^2 ; corrections 1-0.9^2 = 0.19, 1-0.95^2 = 0.0975
    m_wte, m_ln = np.array([0.064, 0.02]), np.array([0.092])
    v_wte, v_ln = np.array([0.0176, 0.002]), np.array([0.0324])
    assert np.allclose(m["wte"], m_wte, rtol=1e-14) and np.allclose(m["ln1w"], m_ln, rtol=1e-14)
    assert np.allclose(v["wte"], v_wte, rtol=1e-14) and np.allclose(v["ln1w"], v_ln, rtol=1e-14)
    upd_wte = (m_wte / 0.19) / (np.sqrt(v_wte / 0.0975) + eps) + wd * p_before["wte"]
    upd_ln = (m_ln / 0.19) / (np.sqrt(v_ln / 0.0975) + eps)
    assert np.allclose(params["wte"], p_before["wte"] - lr * upd_wte, rtol=1e-13)
    assert np.allclose(params["ln1w"], p_before["ln1w"] - lr * upd_ln, rtol=1e-13)


def test_adamw_no_clip_when_disabled():
    params = {"fcb": np.array([0.0])}
    m, v = {"fcb": np.zeros(1)}, {"fcb": np.zeros(1)}
    gn = ref.adamw_step(params, {"fcb": np.array([10.0])}, m, v, 1, 1.0, grad_clip=0.0)
    assert gn == 10.0 and np.allclose(m["fcb"], [1.0], rtol=1e-14)  # unclipped: 0.1 * 10


def test_reference_model_trains():
    """Overfitting one tiny batch drives the loss down (forward/backward/step wired together)."""
    model = ref.ReferenceGPT2(CFG, seed=9)
    rng = np.random.default_rng(10)
    tokens = rng.integers(0, CFG.vocab_size, size=(B, T))
    targets = rng.integers(0, CFG.vocab_size, size=(B, T))
    _, loss0 = model.forward(tokens, targets)
    assert abs(loss0 - math.log(CFG.vocab_size)) < 0.05  # near-uniform at init
    for _ in range(30):
        model.forward(tokens, targets)
        model.backward()
        gn = model.step(3e-2, weight_decay=0.1)
        assert np.isfinite(gn)
    _, loss1 = model.forward(tokens, targets)
    assert model.t == 30 and loss1 < 0.5 * loss0
    assert np.all(model.params["wte"][CFG.vocab_size:] == 0)  # no grad, and decay of 0 stays 0
    assert model.flat_params().size == model.flat_grads().size

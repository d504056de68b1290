"""Every backend op, forward and backward, against the float64 reference.

Runs on each backend (cpu always, cuda when a GPU is present) through llmc._core.Device,
which calls the same op table the model uses. Inputs are fresh random numbers; "="
outputs are poisoned with NaN by the wrapper, so an unwritten element fails. For bf16
backends the reference sees the same bf16-rounded inputs the kernel sees.
"""
import numpy as np
import pytest

from conftest import TOL, assert_close
from llmc import reference as ref

rng = np.random.default_rng()


def rnd(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def rounded(dev, *arrays):
    """The inputs as the device stores them, in float64."""
    return [dev.roundtrip(a).astype(np.float64) for a in arrays]


def tol(dev):
    return TOL[dev.act_dtype]


# ---------------------------------------------------------------- encoder
@pytest.mark.parametrize("B,T,C,V", [(1, 1, 8, 16), (2, 7, 24, 50), (3, 65, 80, 128)])
def test_encoder(device, B, T, C, V):
    Vp, maxT = V + 5, T + 3
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    tokens[0, : min(T, 3)] = tokens[0, 0]  # repeated ids: rows of wte get several contributions
    wte, wpe = rnd(Vp, C), rnd(maxT, C)
    out = device.encoder_forward(tokens, wte, wpe)
    wte64, wpe64 = rounded(device, wte, wpe)
    assert_close(out, ref.encoder_forward(tokens, wte64, wpe64), tol(device), "encoder forward")

    dwte0, dwpe0, dout = rnd(Vp, C), rnd(maxT, C), rnd(B, T, C)
    dwte, dwpe = device.encoder_backward(dwte0, dwpe0, dout, tokens)
    g0w, g0p, d64 = rounded(device, dwte0, dwpe0, dout)
    rw, rp = ref.encoder_backward(d64, tokens, Vp, maxT)
    assert_close(dwte, g0w + rw, tol(device), "encoder dwte")
    assert_close(dwpe, g0p + rp, tol(device), "encoder dwpe")


# ---------------------------------------------------------------- layernorm
@pytest.mark.parametrize("N,C", [(1, 8), (7, 24), (65, 80), (130, 768)])
@pytest.mark.parametrize("fused", [False, True])
def test_layernorm(device, N, C, fused):
    x, x2, w, b = rnd(N, C), rnd(N, C), rnd(C), rnd(C)
    out, mean, rstd, res = device.layernorm_forward(x, w, b, inp2=x2 if fused else None)
    x64, x264, w64, b64 = rounded(device, x, x2, w, b)
    xin = x64 + x264 if fused else x64
    if fused:
        assert_close(res, xin, tol(device), "residual")
        xin = device.roundtrip(xin.astype(np.float32)).astype(np.float64)  # stored residual is what gets normalised
    ro, rm, rr = ref.layernorm_forward(xin, w64, b64)
    assert_close(out, ro, tol(device), "layernorm out")
    assert_close(mean, rm, tol(device), "layernorm mean")
    assert_close(rstd, rr, tol(device), "layernorm rstd")

    dinp0, dw0, db0, dout = rnd(N, C), rnd(C), rnd(C), rnd(N, C)
    dinp, dw, db = device.layernorm_backward(dinp0, dw0, db0, dout, x, w, rm.astype(np.float32),
                                             rr.astype(np.float32))
    gi0, gw0, gb0, do64 = rounded(device, dinp0, dw0, db0, dout)
    rdx, rdw, rdb = ref.layernorm_backward(do64, x64, w64, rm, rr)
    assert_close(dinp, gi0 + rdx, tol(device), "layernorm dinp")
    assert_close(dw, gw0 + rdw, tol(device), "layernorm dw")
    assert_close(db, gb0 + rdb, tol(device), "layernorm db")


# ---------------------------------------------------------------- matmul
SHAPES = [(1, 8, 8), (7, 24, 40), (65, 80, 96), (128, 64, 200), (33, 768, 2304)]


@pytest.mark.parametrize("N,C,OC", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_forward(device, N, C, OC, bias):
    x, w, b = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(OC)
    out = device.matmul_forward(x, w, b if bias else None)
    x64, w64, b64 = rounded(device, x, w, b)
    assert_close(out, ref.matmul_forward(x64, w64, b64 if bias else None), tol(device), "matmul forward")


@pytest.mark.parametrize("N,C,OC", SHAPES)
def test_matmul_forward_gelu(device, N, C, OC):
    x, w, b = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(OC)
    out, pre = device.matmul_forward(x, w, b, gelu=True)
    x64, w64, b64 = rounded(device, x, w, b)
    rpre = ref.matmul_forward(x64, w64, b64)
    assert_close(pre, rpre, tol(device), "matmul pre-gelu")
    assert_close(out, ref.gelu_forward(rpre), tol(device), "matmul gelu out")


@pytest.mark.parametrize("N,C,OC", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "gelu", "no_dinp", "no_bias"])
def test_matmul_backward(device, N, C, OC, variant):
    x, w, dout = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(N, OC)
    dw0, db0, pre = rnd(OC, C), rnd(OC), rnd(N, C)
    dinp, dw, db = device.matmul_backward(dw0, None if variant == "no_bias" else db0, dout, x, w,
                                          pre_gelu=pre if variant == "gelu" else None,
                                          want_dinp=variant != "no_dinp")
    x64, w64, do64, gw0, gb0, pre64 = rounded(device, x, w, dout, dw0, db0, pre)
    rdx, rdw, rdb = ref.matmul_backward(do64, x64, w64)
    if variant == "gelu":
        rdx = ref.gelu_backward(rdx, pre64)
    if variant == "no_dinp":
        assert dinp is None
    else:
        assert_close(dinp, rdx, tol(device), "matmul dinp")
    assert_close(dw, gw0 + rdw, tol(device), "matmul dw")
    if variant == "no_bias":
        assert db is None
    else:
        assert_close(db, gb0 + rdb, tol(device), "matmul dbias")


def test_gelu(device):
    x = rnd(3, 1000, scale=3.0)
    assert_close(device.gelu_forward(x), ref.gelu_forward(*rounded(device, x)), tol(device), "gelu")


# ---------------------------------------------------------------- attention
ATT_SHAPES = [(1, 1, 1, 64), (2, 17, 2, 64), (1, 100, 3, 64), (1, 130, 2, 128), (2, 64, 1, 64)]


@pytest.mark.parametrize("B,T,NH,HS", ATT_SHAPES)
def test_attention(device, B, T, NH, HS):
    C = NH * HS
    qkv = rnd(B, T, 3 * C)
    out, lse = device.attention_forward(qkv, NH)
    (q64,) = rounded(device, qkv)
    rout, rlse = ref.attention_forward(q64, NH)
    assert_close(out, rout, tol(device), "attention out")
    assert_close(lse, rlse, tol(device), "attention lse")

    dout = rnd(B, T, C)
    dqkv = device.attention_backward(dout, qkv, out, lse, NH)
    (do64,) = rounded(device, dout)
    assert_close(dqkv, ref.attention_backward(do64, q64, NH), tol(device), "attention dqkv")


@pytest.mark.parametrize("HS", [8, 40])
def test_attention_small_heads_cpu(HS):
    """The CPU backend takes any head size; the GPU kernels are built for 64 and 128."""
    from llmc import _core
    dev = _core.Device("cpu")
    qkv = rnd(2, 9, 3 * 2 * HS)
    out, lse = dev.attention_forward(qkv, 2)
    assert_close(out, ref.attention_forward(qkv.astype(np.float64), 2)[0], TOL["f32"], "attention out")


# ---------------------------------------------------------------- classifier
@pytest.mark.parametrize("N,V,Vp", [(1, 10, 16), (5, 50, 64), (33, 1000, 1024), (4, 50257, 50304)])
@pytest.mark.parametrize("dloss", [0.0, 0.125])
def test_classifier(device, N, V, Vp, dloss):
    logits = rnd(N, Vp, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    losses, out = device.classifier_forward(logits, targets, V, dloss)
    (l64,) = rounded(device, logits)
    assert_close(losses, ref.crossentropy_forward(l64, targets, V), tol(device), "losses")
    if dloss == 0.0:
        np.testing.assert_array_equal(out, device.roundtrip(logits))  # logits untouched
    else:
        rd = ref.crossentropy_backward(l64, targets, dloss, V)
        assert_close(out, rd, tol(device), "dlogits")
        assert np.all(out[:, V:] == 0), "padded columns must get zero gradient"


# ---------------------------------------------------------------- optimizer
def adamw_ref(p, g, m, v, lr, b1, b2, t, eps, wd, scale):
    g = g * scale
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * (mh / (np.sqrt(vh) + eps) + wd * p), m, v


@pytest.mark.parametrize("n", [1, 1000, 100003])
@pytest.mark.parametrize("master", [False, True])
def test_adamw(device, n, master):
    p, g = rnd(n), rnd(n)
    m, v = rnd(n, scale=0.1), np.abs(rnd(n, scale=0.01))
    args = dict(lr=1e-2, beta1=0.9, beta2=0.95, t=3, eps=1e-8, weight_decay=0.1, grad_scale=0.5)
    p_out, m_out, v_out, master_out = device.adamw_update(p, g, m, v, seed=7, master=p.copy() if master else None,
                                                          **args)
    p64, g64 = rounded(device, p, g)
    rp, rm, rv = adamw_ref(p.astype(np.float64) if master else p64, g64, m.astype(np.float64),
                           v.astype(np.float64), args["lr"], args["beta1"], args["beta2"], args["t"], args["eps"],
                           args["weight_decay"], args["grad_scale"])
    assert_close(m_out, rm, 1e-5, "adam m")
    assert_close(v_out, rv, 1e-5, "adam v")
    assert_close(p_out, rp, tol(device), "params")
    if master:
        assert_close(master_out, rp, 1e-5, "master weights")


def test_sum_squares(device):
    x = rnd(123457)
    (x64,) = rounded(device, x)
    got = device.sum_squares(x)
    assert abs(got - np.sum(x64 ** 2)) / np.sum(x64 ** 2) < 1e-5


# ---------------------------------------------------------------- determinism
def test_backward_ops_are_deterministic(device):
    """Same inputs, bit-identical outputs: needed for reproducible training runs."""
    B, T, NH, HS = 2, 37, 2, 64
    C = NH * HS
    qkv, dout = rnd(B, T, 3 * C), rnd(B, T, C)
    out, lse = device.attention_forward(qkv, NH)
    a = device.attention_backward(dout, qkv, out, lse, NH)
    b = device.attention_backward(dout, qkv, out, lse, NH)
    np.testing.assert_array_equal(a, b)

    x, w, d = rnd(B * T, C), rnd(3 * C, C), rnd(B * T, 3 * C)
    r1 = device.matmul_backward(np.zeros((3 * C, C), np.float32) + 1, np.ones(3 * C, np.float32), d, x, w)
    r2 = device.matmul_backward(np.zeros((3 * C, C), np.float32) + 1, np.ones(3 * C, np.float32), d, x, w)
    for u, v in zip(r1, r2):
        np.testing.assert_array_equal(u, v)

    tokens = rng.integers(0, 5, (B, T)).astype(np.int32)
    e1 = device.encoder_backward(rnd(5, C) * 0 + 1, rnd(T, C) * 0 + 1, dout, tokens)
    e2 = device.encoder_backward(rnd(5, C) * 0 + 1, rnd(T, C) * 0 + 1, dout, tokens)
    for u, v in zip(e1, e2):
        np.testing.assert_array_equal(u, v)
    assert device.sum_squares(d) == device.sum_squares(d)

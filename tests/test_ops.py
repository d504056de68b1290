"""Every backend op, forward and backward, against the float64 reference.

Runs on each backend (cpu always, cuda when a GPU is present) through llmc._core.Device,
which calls the same op table the model uses. Inputs are fresh random numbers; "="
outputs are poisoned with NaN by the wrapper, so an unwritten element fails. For bf16
backends the reference sees the same bf16-rounded inputs the kernel sees.
"""
import numpy as np
import pytest

from conftest import TOL, assert_close, matmul_floor
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
    assert_close(out, ref.matmul_forward(x64, w64, b64 if bias else None), tol(device), "matmul forward",
                 floor=matmul_floor(x64, w64))


@pytest.mark.parametrize("N,C,OC", SHAPES)
def test_matmul_forward_gelu(device, N, C, OC):
    x, w, b = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(OC)
    out, pre = device.matmul_forward(x, w, b, gelu=True)
    x64, w64, b64 = rounded(device, x, w, b)
    rpre = ref.matmul_forward(x64, w64, b64)
    assert_close(pre, rpre, tol(device), "matmul pre-gelu", floor=matmul_floor(x64, w64))
    assert_close(out, ref.gelu_forward(rpre), tol(device), "matmul gelu out", floor=matmul_floor(x64, w64))


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
        assert_close(dinp, rdx, tol(device), "matmul dinp", floor=matmul_floor(do64, w64.T))
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
def assert_dlogits_close(out, want, dev, dloss, what="dlogits"):
    """Normwise, plus the floor the math sets: a target whose probability is near 1 gets
    dloss * (p - 1), a cancellation that fp32 cannot do better than dloss * eps per row (random
    logits sometimes make such a row, and then the whole gradient is that small)."""
    assert np.all(np.isfinite(out)), f"{what}: not finite"
    err = np.linalg.norm(out.astype(np.float64) - want)
    floor = 8 * np.finfo(np.float32).eps * abs(dloss) * np.sqrt(len(out))
    assert err <= tol(dev) * np.linalg.norm(want) + floor, f"{what}: error {err:.3e} (norm {np.linalg.norm(want):.3e})"


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
        assert_dlogits_close(out, rd, device, dloss)
        assert np.all(out[:, V:] == 0), "padded columns must get zero gradient"


@pytest.mark.parametrize("N,V,Vp", [(1, 10, 16), (7, 50, 64), (33, 1000, 1024), (6, 50257, 50304)])
@pytest.mark.parametrize("masked", ["some", "all"])
@pytest.mark.parametrize("dloss", [0.0, 0.25])
def test_classifier_ignored_targets(device, N, V, Vp, masked, dloss):
    """Targets of -1 give loss 0 and a zero dlogits row; the other rows are as without a mask."""
    logits = rnd(N, Vp, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    ignored = rng.random(N) < 0.5 if masked == "some" else np.ones(N, bool)
    ignored[0] = True
    if masked == "some" and N > 1:
        ignored[-1] = False
    targets[ignored] = ref.IGNORE_TARGET
    losses, out = device.classifier_forward(logits, targets, V, dloss)
    (l64,) = rounded(device, logits)
    want = ref.crossentropy_forward(l64, targets, V)
    assert np.all(losses[ignored] == 0), "an ignored target must give loss exactly 0"
    if masked == "some":
        assert_close(losses, want, tol(device), "losses")
    if dloss == 0.0:
        np.testing.assert_array_equal(out, device.roundtrip(logits))  # logits untouched
    else:
        assert np.all(out[ignored] == 0), "an ignored target must give a zero gradient row"
        if masked == "some":
            assert_dlogits_close(out, ref.crossentropy_backward(l64, targets, dloss, V), device, dloss)


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
    # n = 1 may cancel: b1 m + (1 - b1) g, or p minus its update; measured against their terms then
    gs = g64 * args["grad_scale"]
    m_terms = args["beta1"] * np.abs(m) + (1 - args["beta1"]) * np.abs(gs)
    p_terms = np.abs(rp) + np.abs(rp - (p.astype(np.float64) if master else p64))
    assert_close(m_out, rm, 1e-5, "adam m", floor=m_terms)
    assert_close(v_out, rv, 1e-5, "adam v")
    assert_close(p_out, rp, tol(device), "params", floor=p_terms)
    if master:
        assert_close(master_out, rp, 1e-5, "master weights", floor=p_terms)


def test_sum_squares(device):
    x = rnd(123457)
    (x64,) = rounded(device, x)
    got = device.sum_squares(x)
    assert abs(got - np.sum(x64 ** 2)) / np.sum(x64 ** 2) < 1e-5


@pytest.mark.parametrize("n", [0, 1, 1000, 123457])
@pytest.mark.parametrize("clip", [0.0, 1.0, 1e6])
def test_grad_norm_scale(device, n, clip):
    """The norm and AdamW's clip scale, computed where the gradients are (no host round trip):
    the norm is the reference's, and the scale is bit for bit the host formula applied to it."""
    x = rnd(n, scale=0.05)
    (x64,) = rounded(device, x)
    norm, scale = device.grad_norm_scale(x, clip)
    want = np.sqrt(np.sum(x64 ** 2))
    assert abs(norm - want) <= 1e-5 * max(want, 1e-30)
    host = np.float32(clip) / np.float32(norm) if clip > 0 and norm > clip else np.float32(1.0)
    assert np.float32(scale) == host, (scale, host)
    assert norm == device.grad_norm_scale(x, clip)[0]  # deterministic


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_norm_gives_nan_scale_and_no_update(device, bad):
    x = rnd(1000)
    x[17] = bad
    norm, scale = device.grad_norm_scale(x, 1.0)
    assert not np.isfinite(norm) and np.isnan(scale)
    p, g, m, v = rnd(1000), rnd(1000), rnd(1000, scale=0.1), np.abs(rnd(1000, scale=0.01))
    (p_r,) = rounded(device, p)
    p_out, m_out, v_out, master_out = device.adamw_update(p, g, m, v, lr=1e-2, beta1=0.9, beta2=0.95, t=3,
                                                          eps=1e-8, weight_decay=0.1, grad_scale=scale,
                                                          master=p.copy())
    np.testing.assert_array_equal(p_out, p_r)
    np.testing.assert_array_equal(m_out, m)
    np.testing.assert_array_equal(v_out, v)
    np.testing.assert_array_equal(master_out, p)


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


# ================================================================ decode ops (KV-cache inference)
def _tuned(dev, **tuning):
    """Another Device of the same backend with the given tuning knobs (pdl, skinny_rows)."""
    return type(dev)(dev.name, **tuning)


# ---------------------------------------------------------------- encoder at positions
@pytest.mark.parametrize("N,C,V,maxT", [(1, 8, 16, 4), (7, 24, 50, 300), (5, 20, 30, 40), (40, 768, 1000, 1024)])
def test_encoder_forward_at(device, N, C, V, maxT):
    Vp = V + 3
    tokens = rng.integers(0, V, N).astype(np.int32)
    tokens[: min(N, 3)] = tokens[0]  # repeated ids
    pos = rng.integers(0, maxT, N).astype(np.int32)  # arbitrary, not 0..N-1
    pos[0] = maxT - 1  # the last row of wpe
    if N > 2:
        pos[2] = pos[1]  # a repeated position
    wte, wpe = rnd(Vp, C), rnd(maxT, C)
    out = device.encoder_forward_at(tokens, pos, wte, wpe)
    wte64, wpe64 = rounded(device, wte, wpe)
    assert_close(out, ref.encoder_forward_at(tokens, pos, wte64, wpe64), tol(device), "encoder_forward_at")


# ---------------------------------------------------------------- kv_append
# (S, NH, maxlen, HS, B, T): slot count, cache shape, rows appended and tokens per row
KV_SHAPES = [(6, 2, 40, 64, 4, 1), (3, 1, 1, 8, 2, 1), (5, 3, 50, 16, 3, 7), (4, 1, 9, 5, 2, 9),
             (8, 12, 130, 64, 5, 17), (3, 2, 600, 128, 2, 33), (7, 4, 64, 12, 6, 1)]


@pytest.mark.parametrize("S,NH,maxlen,HS,B,T", KV_SHAPES)
@pytest.mark.parametrize("fill", ["random", "nan"])
def test_kv_append(device, S, NH, maxlen, HS, B, T, fill):
    C = NH * HS
    shape = (S, NH, maxlen, HS)
    if fill == "nan":
        k0, v0 = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    else:
        k0, v0 = rnd(*shape), rnd(*shape)
    qkv = rnd(B, T, 3 * C)
    slots = rng.permutation(S)[:B].astype(np.int32)  # permuted, not all used (B < S)
    pos = rng.integers(0, maxlen - T + 1, B).astype(np.int32)
    pos[0] = maxlen - T  # ends at the last position of the cache
    if B > 1 and maxlen - T >= 1:
        pos[1] = 1
    k1, v1 = device.kv_append(k0, v0, qkv, slots, pos, NH)
    k0r, v0r, qr = rounded(device, k0, v0, qkv)
    rk, rv = ref.kv_append(k0r, v0r, qr, slots, pos, NH)

    written = np.zeros(shape, bool)
    for b in range(B):
        written[slots[b], :, pos[b]:pos[b] + T, :] = True
    for name, got, want, start in (("kcache", k1, rk, k0r), ("vcache", v1, rv, v0r)):
        # a copy: the appended rows are the k / v parts of qkv bit for bit, on every backend
        np.testing.assert_array_equal(got[written], want[written], err_msg=f"{name}: appended rows")
        # everything else keeps its exact starting value (NaN stays NaN)
        np.testing.assert_array_equal(got[~written], start[~written], err_msg=f"{name}: untouched rows")
        np.testing.assert_array_equal(got, want, err_msg=name)


# ---------------------------------------------------------------- attention_decode
# (N, NH, HS, S, maxlen); the CUDA kernels take HS in {8, 16, 32, 64, 128, 256}
DEC_SHAPES = [(1, 1, 64, 1, 1), (1, 2, 64, 3, 600), (3, 1, 128, 4, 600), (5, 2, 128, 7, 600),
              (40, 2, 64, 45, 600), (17, 3, 32, 20, 600), (9, 4, 16, 12, 300), (3, 8, 8, 4, 600),
              (2, 1, 256, 3, 600), (12, 12, 64, 16, 130)]
DEC_SHAPES_CPU = [(4, 2, 40, 5, 70), (3, 3, 12, 4, 33), (2, 2, 1, 3, 17)]


def _decode_inputs(N, NH, HS, S, maxlen, poison_tail=False):
    C = NH * HS
    qkv = rnd(N, 3 * C)
    kc, vc = rnd(S, NH, maxlen, HS), rnd(S, NH, maxlen, HS)
    slots = rng.permutation(S)[:N].astype(np.int32)  # permuted, distinct
    lens = rng.integers(1, maxlen + 1, N).astype(np.int32)
    lens[0] = maxlen if N == 1 else 1  # ragged: 1, maxlen and in between
    if N > 1:
        lens[-1] = maxlen
    if N > 2:
        lens[1] = max(1, maxlen // 2 + 1)
    if poison_tail:  # cache entries at or past lens[i], and unused slots, must never be read
        used = np.zeros(S, bool)
        for i in range(N):
            s, n = slots[i], lens[i]
            kc[s, :, n::2] = np.nan
            kc[s, :, n + 1::2] = 1e30
            vc[s, :, n::2] = -1e30
            vc[s, :, n + 1::2] = np.nan
            used[s] = True
        kc[~used], vc[~used] = np.nan, np.inf
    return qkv, kc, vc, slots, lens


def _check_decode(device, N, NH, HS, S, maxlen, poison_tail):
    qkv, kc, vc, slots, lens = _decode_inputs(N, NH, HS, S, maxlen, poison_tail)
    out = device.attention_decode(qkv, kc, vc, slots, lens, NH)
    q64, k64, v64 = rounded(device, qkv, kc, vc)
    assert_close(out, ref.attention_decode(q64, k64, v64, slots, lens, NH), tol(device), "attention_decode")


@pytest.mark.parametrize("N,NH,HS,S,maxlen", DEC_SHAPES)
@pytest.mark.parametrize("poison_tail", [False, True])
def test_attention_decode(device, N, NH, HS, S, maxlen, poison_tail):
    _check_decode(device, N, NH, HS, S, maxlen, poison_tail)


@pytest.mark.parametrize("N,NH,HS,S,maxlen", DEC_SHAPES_CPU)
def test_attention_decode_any_head_size_cpu(N, NH, HS, S, maxlen):
    """The CPU backend takes any head size; CUDA refuses the ones it has no kernel for."""
    from llmc import _core
    _check_decode(_core.Device("cpu"), N, NH, HS, S, maxlen, poison_tail=True)


def test_attention_decode_refuses_head_size_cuda(device):
    if device.name != "cuda":
        pytest.skip("CUDA refuses head sizes it has no kernel for; the CPU takes any")
    from llmc import _core
    qkv, kc, vc, slots, lens = _decode_inputs(2, 2, 40, 3, 17)
    with pytest.raises(_core.LlmcError, match="head size"):
        device.attention_decode(qkv, kc, vc, slots, lens, 2)


def test_attention_decode_shared_slot(device):
    """Several rows may read one slot, each with its own length."""
    N, NH, HS, S, maxlen = 6, 2, 64, 3, 200
    qkv, kc, vc, _, _ = _decode_inputs(N, NH, HS, S, maxlen)
    slots = np.array([2, 2, 0, 2, 0, 1], np.int32)
    lens = np.array([1, 200, 7, 100, 199, 64], np.int32)
    out = device.attention_decode(qkv, kc, vc, slots, lens, NH)
    q64, k64, v64 = rounded(device, qkv, kc, vc)
    assert_close(out, ref.attention_decode(q64, k64, v64, slots, lens, NH), tol(device), "attention_decode")


def test_attention_decode_is_deterministic(device):
    """Several chunks of keys per (row, head) on CUDA, merged in a fixed order: the same bits every time."""
    qkv, kc, vc, slots, lens = _decode_inputs(7, 2, 64, 9, 600)
    a = device.attention_decode(qkv, kc, vc, slots, lens, 2)
    for _ in range(3):
        np.testing.assert_array_equal(device.attention_decode(qkv, kc, vc, slots, lens, 2), a)


def test_kv_append_then_decode(device):
    """A prefill appended with kv_append, then one decode step: matches causal attention_forward's last row."""
    B, T, NH, HS, S, maxlen = 3, 21, 2, 64, 5, 64
    C = NH * HS
    qkv = rnd(B, T, 3 * C)
    slots = np.array([4, 0, 2], np.int32)
    k0 = np.full((S, NH, maxlen, HS), np.nan, np.float32)
    kc, vc = device.kv_append(k0, k0, qkv, slots, np.zeros(B, np.int32), NH)
    out = device.attention_decode(qkv[:, -1, :], kc, vc, slots, np.full(B, T, np.int32), NH)
    (q64,) = rounded(device, qkv)
    full, _ = ref.attention_forward(q64, NH)
    assert_close(out, full[:, -1, :], tol(device), "decode after kv_append")


# ---------------------------------------------------------------- feed_tokens (run_ahead)
@pytest.mark.parametrize("n", [0, 1, 7, 257, 70001])
def test_feed_tokens(device, n):
    """The picks of a step as the tokens of the next: a failed pick (-1, -2) becomes token 0."""
    picks = rng.integers(-3, 50257, n).astype(np.int32)
    picks[: min(n, 3)] = [-1, -2, 50256][: min(n, 3)]
    np.testing.assert_array_equal(device.feed_tokens(picks), np.where(picks >= 0, picks, 0))


# ---------------------------------------------------------------- argmax_rows
@pytest.mark.parametrize("N,V,Vp", [(1, 10, 16), (6, 50, 64), (3, 7, 7), (33, 1000, 1024), (4, 50257, 50304),
                                    (2, 4099, 4100), (1, 50257, 50257)])
def test_argmax_rows(device, N, V, Vp):
    logits = rnd(N, Vp, scale=3.0)
    logits[:, V:] = 100.0  # larger than anything real: padding columns must be ignored
    got = device.argmax_rows(logits, V)
    assert got.dtype == np.int32 and got.shape == (N,)
    (l64,) = rounded(device, logits)  # bf16 rounding can make ties the reference must see too
    want = ref.argmax_rows(l64, V)
    assert np.all(want >= 0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("V,Vp", [(50, 64), (50257, 50304)])
def test_argmax_rows_special(device, V, Vp):
    inf, nan = np.inf, np.nan
    rows, expect = [], []

    def row(want, setup):
        x = np.clip(rnd(Vp), -4.0, 4.0)
        x[V:] = 50.0
        setup(x)
        rows.append(x)
        expect.append(want)

    hi = 8.0  # exact in bf16
    far = min(V - 1, 3 * 512 + 5)  # another thread and warp of a 512-thread CUDA block
    row(far, lambda x: x.__setitem__(far, hi))
    row(0, lambda x: x.__setitem__(0, hi))
    row(V - 1, lambda x: x.__setitem__(V - 1, hi))
    # ties: the lowest index wins, wherever the copies sit
    row(min(3, far), lambda x: x.__setitem__([V - 1, far, 3], hi))
    row(min(2, V // 2 + 1), lambda x: x.__setitem__([V // 2 + 1, 2, V - 1], hi))
    row(0, lambda x: x.__setitem__(slice(0, V), 1.5))  # a row of equal values
    row(0, lambda x: x.__setitem__(slice(0, V), -1e30))
    # bad rows
    row(-1, lambda x: x.__setitem__(V // 3, nan))
    row(-1, lambda x: x.__setitem__(V - 1, np.copysign(nan, -1.0)))
    row(-1, lambda x: x.__setitem__(V // 2, inf))
    row(-1, lambda x: (x.__setitem__(1, hi), x.__setitem__(V - 2, inf)))
    row(-1, lambda x: x.__setitem__(slice(0, V), -inf))  # all -Inf
    # -Inf among normal values is fine
    row(far, lambda x: (x.__setitem__(slice(0, V, 3), -inf), x.__setitem__(far, hi)))
    row(V - 1, lambda x: (x.__setitem__(slice(0, V - 1), -inf), x.__setitem__(V - 1, -1e30)))
    # NaN, +Inf and large values in the padding columns are ignored
    row(4, lambda x: (x.__setitem__(4, hi), x.__setitem__(V, nan), x.__setitem__(Vp - 1, inf)))

    logits = np.stack(rows).astype(np.float32)
    got = device.argmax_rows(logits, V)
    np.testing.assert_array_equal(got, np.array(expect, np.int32))
    (l64,) = rounded(device, logits)
    np.testing.assert_array_equal(ref.argmax_rows(l64, V), np.array(expect, np.int32))


# ---------------------------------------------------------------- skinny matmul (decode)
# On CUDA, matmul_forward with N <= skinny_rows (16 by default) runs cuda/gemv.cu (C a multiple
# of 8); more rows, or skinny_rows=0, go to cuBLASLt. Each path is checked against the reference.
SKINNY_N = [1, 2, 7, 8, 9, 15, 16]
SKINNY_CO = [(8, 33), (40, 50), (768, 2304), (64, 1)]
EPILOGUES = ["none", "bias", "gelu", "gelu_nobias"]


def _check_matmul(dev, N, C, OC, epilogue, what):
    x, w, b = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(OC)
    bias = b if epilogue in ("bias", "gelu") else None
    x64, w64, b64 = rounded(dev, x, w, b)
    rpre = ref.matmul_forward(x64, w64, b64 if bias is not None else None)
    if epilogue.startswith("gelu"):
        out, pre = dev.matmul_forward(x, w, bias, gelu=True)
        assert_close(pre, rpre, tol(dev), f"{what} pre-gelu", floor=matmul_floor(x64, w64))
        assert_close(out, ref.gelu_forward(rpre), tol(dev), f"{what} gelu out", floor=matmul_floor(x64, w64))
    else:
        assert_close(dev.matmul_forward(x, w, bias), rpre, tol(dev), what, floor=matmul_floor(x64, w64))


@pytest.mark.parametrize("N", SKINNY_N)
@pytest.mark.parametrize("C,OC", SKINNY_CO)
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("path", ["default", "cublaslt"])
def test_matmul_forward_skinny(device, N, C, OC, epilogue, path):
    dev = device if path == "default" else _tuned(device, skinny_rows=0)
    _check_matmul(dev, N, C, OC, epilogue, f"matmul {path}")


@pytest.mark.parametrize("N", [1, 7, 16])
@pytest.mark.parametrize("path", ["default", "cublaslt"])
def test_matmul_forward_lm_head(device, N, path):
    """The LM head of a decode step: (N, 768) @ wte(50257, 768)^T, no bias, odd OC."""
    dev = device if path == "default" else _tuned(device, skinny_rows=0)
    _check_matmul(dev, N, 768, 50257, "none", f"lm head {path}")


@pytest.mark.parametrize("N", range(17, 33))
@pytest.mark.parametrize("C,OC", [(40, 50), (768, 2304)])
def test_matmul_forward_skinny32(device, N, C, OC):
    dev = _tuned(device, skinny_rows=32)  # the gemv kernel's widest tiles
    _check_matmul(dev, N, C, OC, "bias", "matmul skinny32")
    _check_matmul(dev, N, C, OC, "gelu", "matmul skinny32")


@pytest.mark.parametrize("C,OC", [(40, 50), (768, 2304), (768, 33)])
@pytest.mark.parametrize("skinny_rows", [16, 32])
def test_matmul_forward_skinny_rows_independent(device, C, OC, skinny_rows):
    """The gemv kernel promises that a row's result does not depend on how many rows come with
    it: row i of an N-row call has the same bits at every N <= skinny_rows."""
    if device.name != "cuda":
        pytest.skip("a promise of the CUDA gemv kernel (the CPU switches kernels at a few rows)")
    dev = _tuned(device, skinny_rows=skinny_rows)
    n = skinny_rows
    x, w, b = rnd(n, C), rnd(OC, C, scale=C ** -0.5), rnd(OC)
    full_out, full_pre = dev.matmul_forward(x, w, b, gelu=True)
    full_plain = dev.matmul_forward(x, w)
    for N in sorted({1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32} & set(range(1, n + 1))):
        out, pre = dev.matmul_forward(x[:N], w, b, gelu=True)
        np.testing.assert_array_equal(out, full_out[:N], err_msg=f"gelu out, N={N}")
        np.testing.assert_array_equal(pre, full_pre[:N], err_msg=f"pre-gelu, N={N}")
        np.testing.assert_array_equal(dev.matmul_forward(x[:N], w), full_plain[:N], err_msg=f"plain, N={N}")
    for i in (0, n // 2, n - 1):  # one row alone, as an N=1 call
        np.testing.assert_array_equal(dev.matmul_forward(x[i:i + 1], w), full_plain[i:i + 1], err_msg=f"row {i}")


# ---------------------------------------------------------------- layernorm fused into the matmul (decode)
# On CUDA, layernorm_matmul_forward takes up to 8 rows (C a multiple of 8) in gemv.cu's kernel,
# each block normalizing the rows itself; the CPU has no such op (its model runs the two ops).
LN_MM_CO = [(8, 33), (40, 50), (768, 2304), (768, 3072), (1600, 6400)]


def _ln_matmul_inputs(N, C, OC):
    return rnd(N, C), rnd(N, C), rnd(C), rnd(C), rnd(OC, C, scale=C ** -0.5), rnd(OC)


@pytest.mark.parametrize("N", [1, 2, 5, 8])
@pytest.mark.parametrize("C,OC", LN_MM_CO)
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("epilogue", ["bias", "gelu", "none"])
def test_layernorm_matmul_forward(device, N, C, OC, residual, epilogue):
    device = _tuned(device, fuse_layernorm=2)  # every call the kernel can take, not only where it pays
    x, x2, lw, lb, w, b = _ln_matmul_inputs(N, C, OC)
    bias = None if epilogue == "none" else b
    got = device.layernorm_matmul_forward(x, lw, lb, w, bias, inp2=x2 if residual else None,
                                          gelu=epilogue == "gelu")
    if got is None:
        pytest.skip(f"the {device.name} backend has no fused layernorm + matmul")
    out, pre, res = got
    # against float64: the stored residual (bf16) is normalized, the normalized rows are rounded
    # to bf16 as the matmul reads them
    x64, x264, lw64, lb64, w64, b64 = rounded(device, x, x2, lw, lb, w, b)
    xin = x64 + x264 if residual else x64
    if residual:
        assert_close(res, xin, tol(device), "residual")
        xin = device.roundtrip(xin.astype(np.float32)).astype(np.float64)
    ln64 = device.roundtrip(ref.layernorm_forward(xin, lw64, lb64)[0].astype(np.float32)).astype(np.float64)
    rpre = ref.matmul_forward(ln64, w64, b64 if bias is not None else None)
    floor = matmul_floor(ln64, w64)
    assert_close(pre if epilogue == "gelu" else out, rpre, tol(device), "ln+matmul pre", floor=floor)
    if epilogue == "gelu":
        assert_close(out, ref.gelu_forward(rpre), tol(device), "ln+matmul gelu out", floor=floor)
    # the same bits as layernorm_forward then matmul_forward on this device
    ln, _, _, res2 = device.layernorm_forward(x, lw, lb, inp2=x2 if residual else None)
    two = device.matmul_forward(ln, w, bias, gelu=epilogue == "gelu")
    np.testing.assert_array_equal(out, two[0] if epilogue == "gelu" else two, err_msg="out vs two ops")
    if epilogue == "gelu":
        np.testing.assert_array_equal(pre, two[1], err_msg="pre-gelu vs two ops")
    if residual:
        np.testing.assert_array_equal(res, res2, err_msg="residual vs two ops")


@pytest.mark.parametrize("case", ["rows", "odd_c", "tuning", "skinny_off", "rows_per_warp", "waves"])
def test_layernorm_matmul_forward_declines(device, case):
    """Calls the fused kernel does not take come back as None (LLMC_ERR_UNSUPPORTED, no error set):
    more than 8 rows, C not a multiple of 8, fuse_layernorm=0, the skinny path off, and by default
    where it does not pay: more rows than warps (d12 at 8 rows), a grid of more than one wave (d48)."""
    N, C, OC = {"rows": (9, 64, 40), "odd_c": (3, 20, 40), "rows_per_warp": (8, 768, 2304),
                "waves": (1, 1600, 6400)}.get(case, (3, 64, 40))
    dev = {"tuning": lambda: _tuned(device, fuse_layernorm=0),
           "skinny_off": lambda: _tuned(device, skinny_rows=0)}.get(case, lambda: device)()
    x, x2, lw, lb, w, b = _ln_matmul_inputs(N, C, OC)
    assert dev.layernorm_matmul_forward(x, lw, lb, w, b, inp2=x2) is None
    dev.matmul_forward(x, w, b)  # the device is still usable


def test_layernorm_matmul_forward_takes_d12_decode(device):
    """By default the fused kernel takes d12's batch-1 decode layernorms (QKV and FC)."""
    if device.name != "cuda":
        pytest.skip("the CPU has no fused layernorm + matmul")
    for OC in (2304, 3072):
        x, x2, lw, lb, w, b = _ln_matmul_inputs(1, 768, OC)
        assert device.layernorm_matmul_forward(x, lw, lb, w, b, inp2=x2) is not None


def test_decode_ops_without_pdl(device):
    """pdl=0 launches the decode kernels plainly: the same results, bit for bit, as the default."""
    plain = _tuned(device, pdl=0)
    x, w, b = rnd(9, 768), rnd(2304, 768, scale=768 ** -0.5), rnd(2304)
    out, pre = plain.matmul_forward(x, w, b, gelu=True)
    x64, w64, b64 = rounded(plain, x, w, b)
    rpre = ref.matmul_forward(x64, w64, b64)
    assert_close(pre, rpre, tol(plain), "pdl=0 pre-gelu")
    assert_close(out, ref.gelu_forward(rpre), tol(plain), "pdl=0 gelu out")
    o2, p2 = device.matmul_forward(x, w, b, gelu=True)
    np.testing.assert_array_equal(out, o2)
    np.testing.assert_array_equal(pre, p2)

    qkv, kc, vc, slots, lens = _decode_inputs(5, 2, 64, 6, 600, poison_tail=True)
    att = plain.attention_decode(qkv, kc, vc, slots, lens, 2)
    q64, k64, v64 = rounded(plain, qkv, kc, vc)
    assert_close(att, ref.attention_decode(q64, k64, v64, slots, lens, 2), tol(plain), "pdl=0 attention_decode")
    np.testing.assert_array_equal(att, device.attention_decode(qkv, kc, vc, slots, lens, 2))

    q3 = rnd(2, 3, 3 * 128)
    sl, ps = np.array([5, 1], np.int32), np.array([0, 597], np.int32)
    k1, v1 = plain.kv_append(kc, vc, q3, sl, ps, 2)
    k2, v2 = device.kv_append(kc, vc, q3, sl, ps, 2)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(v1, v2)
    q64, k64, v64 = rounded(plain, q3, kc, vc)
    rk, rv = ref.kv_append(k64, v64, q64, sl, ps, 2)
    np.testing.assert_array_equal(k1, rk)
    np.testing.assert_array_equal(v1, rv)

    tokens, pos, wte, wpe = np.array([3, 3, 0], np.int32), np.array([9, 2, 5], np.int32), rnd(7, 40), rnd(10, 40)
    e = plain.encoder_forward_at(tokens, pos, wte, wpe)
    wte64, wpe64 = rounded(plain, wte, wpe)
    assert_close(e, ref.encoder_forward_at(tokens, pos, wte64, wpe64), tol(plain), "pdl=0 encoder_forward_at")

    logits = rnd(3, 1000)
    logits[1, 10] = np.nan
    got = plain.argmax_rows(logits, 999)
    np.testing.assert_array_equal(got, ref.argmax_rows(*rounded(plain, logits), 999))
    np.testing.assert_array_equal(got, device.argmax_rows(logits, 999))

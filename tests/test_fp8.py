"""fp8 training matmuls (CUDA, compute capability 8.9+): the ops against the float64 reference,
the delayed scaling, and training against bf16; the refusals run everywhere.

Tolerances (normwise relative error), from the formats' rounding: E4M3 keeps 3 mantissa bits,
so a value rounds by at most 2^-4 of itself (r.m.s. 2^-4/sqrt(3) = 0.036 for uniform rounding);
E5M2 keeps 2 (r.m.s. 0.072). A product of two rounded operands with independent errors is off
by about sqrt(e_a^2 + e_b^2): 0.051 for the forward (E4M3 x E4M3) and 0.081 for the gradients
(E4M3 x E5M2). The limits are 1.6x that: 0.08 and 0.13. Each test also checks the error is
above 0.01, ten times what bf16 operands give, so a silent bf16 fallback fails it too."""
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR, HAVE_CUDA, assert_close, matmul_floor, rel_err
from llmc import reference as ref

FWD_TOL, BWD_TOL, FP8_MIN_ERR = 0.08, 0.13, 0.01
rng = np.random.default_rng()


def rnd(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def cuda_fp8_device():
    from llmc import _core
    dev = _core.Device("cuda")
    x, w = rnd(16, 16), rnd(16, 16)
    try:
        dev.matmul_forward(x, w, fp8_site=0)
    except Exception as e:  # a GPU older than sm_89
        pytest.skip(f"no fp8 matmul on this GPU: {e}")
    return _core.Device("cuda")


def gpu(test):
    return pytest.mark.cuda(pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")(test))


@pytest.fixture
def dev():
    return cuda_fp8_device()


def rounded(dev, *arrays):
    return [dev.roundtrip(a).astype(np.float64) for a in arrays]


def check_fp8(out, want, tol, what, floor=None):
    assert_close(out, want, tol, what, floor=floor)
    assert rel_err(out, want) > FP8_MIN_ERR, f"{what}: as exact as bf16, so not fp8"


# N, C, OC multiples of 16; 48, 80 and 208 leave the 64 x 64 transpose tiles partly empty
SHAPES = [(16, 16, 16), (48, 80, 96), (128, 64, 208), (256, 768, 2304), (80, 3072, 768)]


@gpu
@pytest.mark.parametrize("N,C,OC", SHAPES)
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_forward_fp8(dev, N, C, OC, gelu, bias):
    x, w, b = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(OC, scale=0.1)
    got = dev.matmul_forward(x, w, b if bias else None, gelu=gelu, fp8_site=3)
    x64, w64, b64 = rounded(dev, x, w, b)
    pre = ref.matmul_forward(x64, w64, b64 if bias else None)
    floor = matmul_floor(x64, w64)
    if gelu:
        out, pre_got = got
        check_fp8(pre_got, pre, FWD_TOL, "fp8 pre-gelu", floor)
        assert_close(out, ref.gelu_forward(pre), FWD_TOL, "fp8 gelu out", floor)
    else:
        check_fp8(got, pre, FWD_TOL, "fp8 forward", floor)


@gpu
@pytest.mark.parametrize("N,C,OC", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "gelu", "no_dinp", "no_bias"])
@pytest.mark.parametrize("after_forward", [False, True])
def test_matmul_backward_fp8(dev, N, C, OC, variant, after_forward):
    """after_forward: the backward takes the transposed input its forward kept; else it casts it."""
    x, w, dout = rnd(N, C), rnd(OC, C, scale=C ** -0.5), rnd(N, OC, scale=1e-3)  # gradients are small
    dw0, db0, pre = rnd(OC, C, scale=1e-3), rnd(OC, scale=1e-3), rnd(N, C)
    if after_forward:
        dev.matmul_forward(x, w, fp8_site=5)
    dinp, dw, db = dev.matmul_backward(dw0, None if variant == "no_bias" else db0, dout, x, w,
                                       pre_gelu=pre if variant == "gelu" else None,
                                       want_dinp=variant != "no_dinp", fp8_site=5)
    x64, w64, do64, gw0, gb0, pre64 = rounded(dev, x, w, dout, dw0, db0, pre)
    rdx, rdw, rdb = ref.matmul_backward(do64, x64, w64)
    if variant == "gelu":
        rdx = ref.gelu_backward(rdx, pre64)
    if variant == "no_dinp":
        assert dinp is None
    else:
        check_fp8(dinp, rdx, BWD_TOL, "fp8 dinp", matmul_floor(do64, w64.T))
    check_fp8(dw - gw0, rdw, BWD_TOL, "fp8 dw (the added part)")
    assert_close(dw, gw0 + rdw, BWD_TOL, "fp8 dw (+=)")
    if variant == "no_bias":
        assert db is None
    else:  # summed from the bf16 dout, not from fp8
        assert_close(db, gb0 + rdb, 2e-2, "fp8 dbias")


@gpu
def test_shapes_without_fp8_products_are_declined(dev):
    """N, C or OC not a multiple of 16: the op declines (the trainer then runs the bf16 one)."""
    for N, C, OC in [(7, 16, 16), (16, 24, 16), (16, 16, 40)]:
        x, w = rnd(N, C), rnd(OC, C)
        assert dev.matmul_forward(x, w, fp8_site=0) is None
        assert dev.matmul_backward(rnd(OC, C), None, rnd(N, OC), x, w, fp8_site=0) is None


@gpu
def test_scale_comes_from_the_history(dev):
    """A cast scales by the amaxes of the site's earlier casts: right after a jump in size the
    values saturate (large error), one call later the history has caught up."""
    N, C, OC = 64, 128, 64
    w = rnd(OC, C, scale=C ** -0.5)

    def err(scale):
        x = rnd(N, C, scale=scale)
        out = dev.matmul_forward(x, w, fp8_site=9)
        x64, w64 = rounded(dev, x, w)
        return rel_err(out, ref.matmul_forward(x64, w64, None))

    assert err(1.0) < FWD_TOL
    assert err(1.0) < FWD_TOL
    assert err(1000.0) > 0.5  # scaled for amax ~4, these reach ~4000: clipped at 448 / scale
    assert err(1000.0) < FWD_TOL


@gpu
def test_same_calls_same_bits():
    """Deterministic: the same sequence of calls on two devices gives the same bits."""
    a, b = cuda_fp8_device(), cuda_fp8_device()
    x, w, dout = rnd(96, 256), rnd(192, 256, scale=1 / 16), rnd(96, 192)
    for _ in range(3):
        assert np.array_equal(a.matmul_forward(x, w, fp8_site=1), b.matmul_forward(x, w, fp8_site=1))
        ga = a.matmul_backward(np.zeros((192, 256), np.float32), None, dout, x, w, fp8_site=1)
        gb = b.matmul_backward(np.zeros((192, 256), np.float32), None, dout, x, w, fp8_site=1)
        assert np.array_equal(ga[0], gb[0]) and np.array_equal(ga[1], gb[1])


def small_model(device, fp8, seed=7):
    from llmc import GPT2
    return GPT2.from_config("L=2,H=2,C=128,T=64", device=device, seed=seed, fp8=fp8)


def train_losses(model, steps=30):
    data = np.random.default_rng(3).integers(0, 512, (8, 65))  # a small vocabulary: learnable fast
    losses = []
    for _ in range(steps):
        model.zero_grad()
        _, loss = model.forward(data[:, :-1], data[:, 1:], return_logits=False)
        model.backward()
        model.step(lr=1e-3)
        losses.append(loss)
    return np.array(losses)


@gpu
@pytest.mark.parametrize("mode", [1, 2])
def test_fp8_training_follows_bf16(mode):
    """mode 1: the layers' matmuls in fp8; 2: the LM head's too."""
    cuda_fp8_device()
    bf16 = train_losses(small_model("cuda", False))
    fp8 = train_losses(small_model("cuda", mode))
    assert np.all(np.isfinite(fp8))
    assert not np.array_equal(bf16, fp8), "fp8 gave bf16's bits: it did not run"
    assert fp8[-1] < 0.8 * fp8[0], fp8  # it learns
    assert np.max(np.abs(fp8 - bf16) / bf16) < 0.03, (bf16, fp8)


def test_fp8_needs_cuda_on_cpu():
    from llmc import LlmcError
    model = small_model("cpu", True)
    with pytest.raises(LlmcError, match="fp8 training needs the CUDA backend"):
        model.forward(np.zeros((1, 16), np.int64), np.zeros((1, 16), np.int64))


def test_cli_refuses_fp8(tmp_path):
    """The CPU trainer names the problem; a value other than 0 or 1 is refused too."""
    exe = os.path.join(BIN_DIR, "train_gpt2")
    if not os.path.exists(exe):
        pytest.skip("no ./train_gpt2")
    header = np.zeros(256, np.int32)
    header[:3] = [20240520, 1, 4096]
    shard = tmp_path / "s_train_000000.bin"
    shard.write_bytes(header.tobytes() + np.zeros(4096, np.uint16).tobytes())
    base = [exe, "-i", str(shard), "-e", "L=1,H=2,C=32,T=16", "-b", "1", "-t", "16", "-x", "1", "-v", "0", "-s", "0"]
    for value, message in (("1", "fp8 training needs the CUDA backend"), ("3", "fp8 must be 0, 1 or 2")):
        r = subprocess.run(base + ["--fp8", value], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and message in r.stderr, r.stdout + r.stderr

"""int8 weight-only quantization (src/quant.c, src/cpu/matmul_int8.c, cuda/matmul_int8.cu):
the scheme's round-trip bound, the int8 kernels against the float64 reference on the dequantized
weights (both backends, awkward shapes, every path), a quantized model against the float model
holding the dequantized weights, cached int8 decode against a full int8 recompute, the version-8
file (round trip, and every kind of bad file), and the tools: llmc.quantize, generate and eval
--quantize, and training refusing a quantized model."""
import os
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import _core
from llmc import reference as ref
from conftest import BIN_DIR, BACKENDS, TOL, assert_close, matmul_floor, rel_err
from test_generate import LOGIT_TOL, SMALL, make_model, run_checked

rng = np.random.default_rng()
MATMULS = ("qkvw", "attprojw", "fcw", "fcprojw")


def rnd(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- the scheme
@pytest.mark.parametrize("rows,cols,group", [(1, 16, 0), (7, 40, 16), (33, 768, 128), (5, 100, 32), (3, 8, 16)])
def test_round_trip_error_is_at_most_half_a_step(rows, cols, group):
    w = rnd(rows, cols) * rng.uniform(0.01, 3.0, (rows, 1)).astype(np.float32)
    w[0, : min(cols, 5)] = 0.0
    q, s = _core.quantize_int8(w, group)
    g = group if 0 < group < cols else cols
    assert q.dtype == np.int8 and s.shape == (rows, -(-cols // g))
    assert q.min() >= -127 and q.max() <= 127
    step = np.repeat(s, g, axis=1)[:, :cols].astype(np.float64)  # each element's scale
    deq = _core.dequantize_int8(q, s, group)
    slack = 4 * np.finfo(np.float32).eps * np.abs(w)  # w / s and q * s each round once in fp32
    assert np.all(np.abs(deq.astype(np.float64) - w) <= step / 2 + slack + 1e-30)
    blocks = [w[:, j * g:(j + 1) * g] for j in range(s.shape[1])]
    amax = np.stack([np.abs(b).max(axis=1) for b in blocks], axis=1)
    np.testing.assert_allclose(s, amax / 127, rtol=1e-6)  # the largest |w| of a group maps to +-127
    assert np.all(np.abs(q).max(axis=1) == np.where(np.abs(w).max(axis=1) > 0, 127, 0))


def test_all_zero_group_has_scale_zero():
    q, s = _core.quantize_int8(np.zeros((2, 32), np.float32), 16)
    assert not q.any() and not s.any()
    assert not _core.dequantize_int8(q, s, 16).any()


# ---------------------------------------------------------------- kernels vs float64
def quantized_weight(OC, C, group):
    q, s = _core.quantize_int8(rnd(OC, C, scale=C ** -0.5), group)
    return q, s, _core.dequantize_int8(q, s, group).astype(np.float64)


# N: 1..4 the CPU's matvec, 5+ its GEMM; up to 32 the GPU's weight stream, beyond its bf16 widening.
# The GPU's stream: gemv.cu's tensor-core kernel for one scale per row and C % 64 == 0 (its tile
# shapes change at N 8, 16), the CUDA-core kernel for the rest and with LLMC_INT8_MMA=0.
INT8_SHAPES = [(1, 16, 1, 0), (3, 40, 33, 0), (4, 64, 130, 16), (5, 96, 70, 32), (17, 768, 256, 128),
               (32, 128, 50, 0), (33, 48, 257, 16), (64, 768, 2304, 0), (2, 3072, 96, 128), (3, 4160, 40, 64),
               (1, 4160, 20, 0), (1, 40, 9, 0), (1, 768, 2304, 0), (8, 64, 3, 0), (9, 3072, 130, 0),
               (16, 192, 77, 0), (17, 1600, 41, 0), (31, 768, 129, 0)]


CUDA_MARKS = BACKENDS[1].marks
INT8_DEVICES = [pytest.param("cpu", None, id="cpu"), pytest.param("cuda", 1, marks=CUDA_MARKS, id="cuda-mma"),
                pytest.param("cuda", 0, marks=CUDA_MARKS, id="cuda-cores")]


@pytest.mark.parametrize("N,C,OC,group", INT8_SHAPES)
@pytest.mark.parametrize("epilogue", ["plain", "bias", "gelu"])
@pytest.mark.parametrize("backend,mma", INT8_DEVICES)
def test_matmul_forward_int8(backend, mma, N, C, OC, group, epilogue):
    device = _core.Device(backend, int8_mma=mma)
    x, b = rnd(N, C), rnd(OC)
    q, s, w64 = quantized_weight(OC, C, group)
    bias = None if epilogue == "plain" else b
    got = device.matmul_forward_int8(x, q, s, group, bias=bias, gelu=epilogue == "gelu")
    x64 = device.roundtrip(x).astype(np.float64)
    b64 = device.roundtrip(b).astype(np.float64) if bias is not None else None
    pre = ref.matmul_forward(x64, w64, b64)
    t, floor = TOL[device.act_dtype], matmul_floor(x64, w64)
    if epilogue == "gelu":
        out, got_pre = got
        assert_close(got_pre, pre, t, "int8 matmul pre-gelu", floor=floor)
        assert_close(out, ref.gelu_forward(pre), t, "int8 matmul gelu", floor=floor)
    else:
        assert_close(got, pre, t, "int8 matmul", floor=floor)


@pytest.mark.parametrize("B,T,C,V,group", [(1, 1, 16, 20, 0), (2, 7, 40, 50, 16), (3, 33, 128, 300, 32)])
def test_encoder_int8(device, B, T, C, V, group):
    q, s, wte64 = quantized_weight(V + 3, C, group)
    wpe = rnd(T + 2, C)
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    wpe64 = device.roundtrip(wpe).astype(np.float64)
    t = TOL[device.act_dtype]
    assert_close(device.encoder_forward_int8(tokens, q, s, wpe, group), ref.encoder_forward(tokens, wte64, wpe64),
                 t, "int8 encoder")
    pos = rng.integers(0, T + 2, (B, T)).astype(np.int32)
    assert_close(device.encoder_forward_int8(tokens, q, s, wpe, group, pos=pos), wte64[tokens] + wpe64[pos], t,
                 "int8 encoder_forward_at")


# ---------------------------------------------------------------- whole model
def dequantized_twin(model):
    """A float model holding exactly the weights a quantized model computes with."""
    m = _core.Model()
    m.init_values(model.config, model.get_params(), backend=model.device)
    return llmc.GPT2(m, model.device)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("group,embeddings", [(0, True), (16, False), (64, True)])
def test_quantized_model_equals_its_dequantized_twin(device, group, embeddings):
    model = make_model(device)
    before = model.get_params()
    if device == "cuda":  # the plain tensors keep the backend's bf16
        before = _core.round_bf16(before)
    model.quantize(group_size=group, embeddings=embeddings)
    assert model.quantized == dict(group_size=group, embeddings=embeddings)
    after = model.get_params()
    off = {name: (o, int(np.prod(shape))) for name, o, shape, _ in model._layout}
    for name, (o, n) in off.items():
        changed = not np.array_equal(before[o:o + n], after[o:o + n])
        assert changed == (name in MATMULS or (name == "wte" and embeddings)), name
    twin = dequantized_twin(model)
    tok = rng.integers(0, SMALL["vocab_size"], (3, 29)).astype(np.int32)
    logits, loss = model.forward(tok, tok)
    tlogits, tloss = twin.forward(tok, tok)
    assert rel_err(logits, tlogits) <= LOGIT_TOL[device]
    assert abs(loss - tloss) <= 1e-5 * abs(tloss) if device == "cpu" else 2e-2 * abs(tloss)
    weights = model.memory["weights"]
    assert weights < twin.memory["weights"] * (0.5 if device == "cpu" else 0.75)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("group", [32, 0])  # CUDA: the CUDA-core kernel, then the tensor-core one
def test_cached_int8_decode_equals_full_int8_recompute(device, group):
    model = make_model(device)
    model.quantize(group_size=group)
    prompts = [[5, 17, 42, 7, 1], list(range(3, 40, 3)), [9]]
    seqs, _ = run_checked(model, prompts, 12, LOGIT_TOL[device], temperature=0.0)
    assert all(len(s) - len(p) == 12 for s, p in zip(seqs, prompts))


def test_quantize_refusals():
    model = make_model("cpu")
    model.forward(np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32))
    for bad in (-16, 10, 24):
        with pytest.raises(llmc.LlmcError, match="multiple of 16"):
            model._m.quantize(group_size=bad)
    with pytest.raises(llmc.LlmcError, match="scheme"):
        model.quantize("int4")
    model.quantize()
    with pytest.raises(llmc.LlmcError, match="already"):
        model.quantize()
    model.forward(np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32))  # evaluation works
    with pytest.raises(llmc.LlmcError, match="does not train"):
        model.backward()
    with pytest.raises(llmc.LlmcError, match="cannot be set"):
        model.set_params(model.get_params())
    assert model.params["qkvw"].shape[0] == SMALL["num_layers"]  # a dequantized copy, not a view


# ---------------------------------------------------------------- the file
@pytest.fixture
def int8_file(tmp_path):
    model = make_model("cpu")
    model.save(tmp_path / "float.bin", 3)
    model.quantize(group_size=32)
    path = tmp_path / "int8.bin"
    model.save(path)
    return path, model


def test_file_round_trip_and_size(int8_file, tmp_path):
    path, model = int8_file
    back = llmc.GPT2.from_pretrained(path)
    assert back.quantized == dict(group_size=32, embeddings=True)
    assert np.array_equal(back.get_params(), model.get_params())
    h = np.fromfile(path, np.int32, 256)
    assert list(h[:2]) == [20240326, 8] and h[8] == 32
    c = model.config
    L, C, Vp, T = c["num_layers"], c["channels"], c["padded_vocab_size"], c["max_seq_len"]
    qn = Vp * C + L * 12 * C * C
    plain = T * C + L * (4 * C + 3 * C + C + 4 * C + C) + 2 * C
    scales = Vp * (C // 32) + L * (3 * C * C // 32 + C * C // 32 + 4 * C * C // 32 + C * (4 * C // 32))
    assert os.path.getsize(path) == 1024 + qn + 4 * (plain + scales)
    assert os.path.getsize(path) < os.path.getsize(tmp_path / "float.bin") / 3
    back.save(tmp_path / "deq.bin", 3)  # a quantized model may be written dequantized, for llm.c
    assert np.array_equal(llmc.GPT2.from_pretrained(tmp_path / "deq.bin").get_params(), model.get_params())


def corrupted(path, tmp_path, edit):
    data = bytearray(path.read_bytes())
    data = edit(data) or data
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    return bad


def put_int(data, slot, value):
    data[4 * slot:4 * slot + 4] = np.int32(value).tobytes()


@pytest.mark.parametrize("edit,pattern", [
    (lambda d: d[:-7], "truncated"),
    (lambda d: d + b"\0" * 4, "too long"),
    (lambda d: put_int(d, 8, 64), "needs .* bytes"),   # another group size: another count of scales
    (lambda d: put_int(d, 8, 24), "multiple of 16"),
    (lambda d: put_int(d, 9, 1), "mask 0x1"),
    (lambda d: put_int(d, 10, 2), "scale type 2"),
    (lambda d: put_int(d, 1, 9), "version 9; supported: 3 .*5 .*8"),
])
def test_bad_int8_files_are_refused_by_name(int8_file, tmp_path, edit, pattern):
    path, _ = int8_file
    with pytest.raises(llmc.LlmcError, match=pattern):
        llmc.GPT2.from_pretrained(corrupted(path, tmp_path, edit))


def test_bad_int8_values_are_refused(int8_file, tmp_path):
    path, model = int8_file
    C = model.config["channels"]
    first_q = 1024  # wte is quantized and comes first: its int8 values, then its scales
    wte_n = model.config["padded_vocab_size"] * C

    def set_q(d):
        d[first_q + 3] = 0x80  # -128
    with pytest.raises(llmc.LlmcError, match="-128"):
        llmc.GPT2.from_pretrained(corrupted(path, tmp_path, set_q))

    def nan_scale(d):
        d[first_q + wte_n + 8:first_q + wte_n + 12] = np.float32(np.nan).tobytes()
    with pytest.raises(llmc.LlmcError, match="scale"):
        llmc.GPT2.from_pretrained(corrupted(path, tmp_path, nan_scale))


TRAIN_BIN = os.path.join(BIN_DIR, "train_gpt2")


@pytest.mark.skipif(not os.access(TRAIN_BIN, os.X_OK), reason="./train_gpt2 not built")
def test_trainer_refuses_an_int8_model(int8_file, tmp_path):
    path, _ = int8_file
    from helpers import write_tiny_shards
    train, _val = write_tiny_shards(tmp_path, n_train=4000, vocab=SMALL["vocab_size"])
    r = subprocess.run([TRAIN_BIN, "-e", str(path), "-i", train, "-b", "2", "-t", "16", "-x", "2", "-v", "0",
                        "-s", "0", "-o", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "quantized (int8)" in r.stdout + r.stderr


# ---------------------------------------------------------------- the tools
def test_quantize_cli(int8_file, tmp_path):
    float_path = tmp_path / "float.bin"
    out = tmp_path / "cli.bin"
    r = subprocess.run([sys.executable, "-m", "llmc.quantize", str(float_path), "--out", str(out),
                        "--group-size", "32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "smaller" in r.stdout and out.read_bytes() == int8_file[0].read_bytes()
    r = subprocess.run([sys.executable, "-m", "llmc.quantize", str(float_path), "--out", str(out),
                        "--group-size", "20"], capture_output=True, text=True)
    assert r.returncode == 1 and "multiple of 16" in r.stderr


def test_generate_and_eval_quantize_flags(int8_file, tmp_path):
    float_path = tmp_path / "float.bin"
    gen = [sys.executable, "-m", "llmc.generate", "--model", str(float_path), "--tokens", "1,2,3", "-n", "6",
           "--temperature", "0", "--ids"]
    a = subprocess.run(gen + ["--quantize", "int8", "--group-size", "32"], capture_output=True, text=True)
    b = subprocess.run(gen[:4] + [str(int8_file[0])] + gen[5:], capture_output=True, text=True)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout  # quantizing on load is the same as loading the int8 file
    c = subprocess.run(gen + ["--group-size", "32"], capture_output=True, text=True)
    assert c.returncode != 0 and "--group-size needs --quantize" in c.stderr
    from helpers import write_tiny_shards
    _train, val = write_tiny_shards(tmp_path, n_train=4000, vocab=SMALL["vocab_size"])
    ev = [sys.executable, "-m", "llmc.eval", "perplexity", "--model", str(float_path), "--data", val, "--seq", "32",
          "--no-progress"]
    f = subprocess.run(ev, capture_output=True, text=True)
    q = subprocess.run(ev + ["--quantize", "int8"], capture_output=True, text=True)
    assert f.returncode == 0 and q.returncode == 0, f.stderr + q.stderr
    assert "loss" in q.stdout and f.stdout != q.stdout

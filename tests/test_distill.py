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
from conftest import BACKENDS, BIN_DIR, HAVE_CUDA, TOL, assert_close, rel_err
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


def distill_terms(l64, t64, targets, alpha, tau, dloss, V):
    """The size of dlogits' terms, |dloss| (alpha (p + onehot) + (1 - alpha) tau (q + r)): a row whose
    terms cancel (a student close to its teacher) is measured against them (conftest.assert_close)."""
    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    z, t = l64[:, :V], t64[:, :V]
    counted = np.asarray(targets) != ref.IGNORE_TARGET
    onehot = np.zeros_like(z)
    onehot[np.arange(len(targets))[counted], np.asarray(targets)[counted]] = 1.0
    terms = alpha * (softmax(z) + onehot) + (1 - alpha) * tau * (softmax(z / tau) + softmax(t / tau))
    return abs(dloss) * terms * counted[:, None]


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
        assert_close(out, ref.distill_backward(l64, t64, targets, alpha, tau, dloss, V), tol(device), "dlogits",
                     floor=distill_terms(l64, t64, targets, alpha, tau, dloss, V))
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
            assert_close(out, ref.distill_backward(l64, t64, targets, 0.5, 2.0, dloss, V), tol(device), "dlogits",
                         floor=distill_terms(l64, t64, targets, 0.5, 2.0, dloss, V))


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


# ---------------------------------------------------------------- training against a teacher
# the student of test_model.py; a teacher of another depth, width and head count (head size 64)
STUDENT = dict(num_layers=2, num_heads=2, channels=128, max_seq_len=64, vocab_size=300)
TEACHER = dict(num_layers=1, num_heads=4, channels=256, max_seq_len=64, vocab_size=300)
LOGIT_TOL = {"cpu": 1e-5, "cuda": 2e-2}
GRAD_TOL = {"cpu": 1e-4, "cuda": 5e-2}
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")


def ref_config(cfg):
    return ref.Config(n_layer=cfg["num_layers"], n_head=cfg["num_heads"], n_embd=cfg["channels"],
                      max_t=cfg["max_seq_len"], vocab_size=cfg["vocab_size"],
                      padded_vocab_size=cfg["padded_vocab_size"])


def make_model(device, cfg, seed):
    """A model moved off its init point (as test_model.py's), padding rows of wte kept at 0."""
    m = llmc.GPT2.from_config(dict(cfg), device=device, seed=seed)
    r = np.random.default_rng(seed)
    p = m.get_params()
    p += r.standard_normal(p.shape).astype(np.float32) * 0.02
    C, V = m.config["channels"], m.config["vocab_size"]
    p[V * C:m.config["padded_vocab_size"] * C] = 0.0
    m.set_params(p)
    return m


def reference_distill(student, teacher, x, y, alpha, tau):
    """(mean distillation loss, its gradients, mean CE) from the float64 reference."""
    sc, tc = ref_config(student.config), ref_config(teacher.config)
    sp = ref.unflatten(student.get_params().astype(np.float64), sc)
    tp = ref.unflatten(teacher.get_params().astype(np.float64), tc)
    _, _, tcache = ref.gpt2_forward(tp, tc, x)
    _, ce, cache = ref.gpt2_forward(sp, sc, x, y)
    counted = max(int(np.sum(y != ref.IGNORE_TARGET)), 1)
    z, t = cache["logits_full"], tcache["logits_full"]
    loss = ref.distill_forward(z, t, y, alpha, tau, sc.vocab_size).sum() / counted
    dlogits = ref.distill_backward(z, t, y, alpha, tau, 1.0 / counted, sc.vocab_size)
    return loss, ref.gpt2_backward(sp, sc, cache, dlogits), ce


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("alpha,tau", [(0.3, 2.0), (0.0, 1.0)])
def test_training_against_a_teacher_matches_reference(device, fused, alpha, tau):
    student, teacher = make_model(device, STUDENT, 5), make_model(device, TEACHER, 9)
    r = np.random.default_rng(1)
    x = r.integers(0, 300, (2, 37)).astype(np.int32)
    y = r.integers(0, 300, (2, 37)).astype(np.int32)
    y[0, :5] = y[1, 30:] = ref.IGNORE_TARGET
    t = student._trainer()
    t.set_teacher(teacher._m, alpha, tau)
    assert t.teacher is teacher._m
    t.zero_grad()
    if fused:
        loss = t.forward_backward(x, y)
    else:
        ce_loss = t.forward(x, y)  # a forward alone is plain CE (what validation sees)
        t.backward()
    want, rgrads, ce = reference_distill(student, teacher, x, y, alpha, tau)
    if fused:
        assert abs(loss - want) / want < LOGIT_TOL[device], (loss, want)
    else:
        assert abs(ce_loss - ce) / ce < LOGIT_TOL[device], (ce_loss, ce)
    grads = student.grads
    for name in ref.PARAM_NAMES:
        assert_close(grads[name], rgrads[name], GRAD_TOL[device], f"grad {name}")
    # unset: plain CE again
    t.set_teacher(None)
    assert t.teacher is None
    t.zero_grad()
    assert abs(t.forward_backward(x, y) - ce) / ce < LOGIT_TOL[device]


@pytest.mark.parametrize("device", BACKENDS)
def test_distillation_is_deterministic(device):
    """Two streams on a GPU (the teacher's and the student's): the same gradients every time."""
    student, teacher = make_model(device, STUDENT, 5), make_model(device, TEACHER, 9)
    t = student._trainer()
    t.set_teacher(teacher._m, 0.5, 2.0)
    r = np.random.default_rng(2)
    grads = []
    for _ in range(3):
        t.zero_grad()
        for seed in range(3):  # accumulation: three micro-batches, three teacher forwards
            x = np.random.default_rng(seed).integers(0, 300, (4, 64))
            t.forward_backward(x, np.roll(x, -1, 1), 1.0 / 3)
        grads.append(t.get_grads())
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])


def test_set_teacher_refuses_bad_input():
    student, teacher = make_model("cpu", STUDENT, 5), make_model("cpu", TEACHER, 9)
    t = student._trainer()
    for alpha, tau, words in ((1.5, 2.0, "alpha 1.5 must lie in \\[0, 1\\]"), (-0.1, 2.0, "alpha -0.1"),
                              (0.5, 0.0, "temperature 0 must be > 0"), (0.5, -2.0, "temperature -2"),
                              (0.5, float("inf"), "temperature inf")):
        with pytest.raises(llmc.LlmcError, match=words):
            t.set_teacher(teacher._m, alpha, tau)
    other = make_model("cpu", dict(TEACHER, vocab_size=301), 3)
    with pytest.raises(llmc.LlmcError, match="vocabulary of 301 tokens .* the student 300"):
        t.set_teacher(other._m)
    with pytest.raises(llmc.LlmcError, match="the student itself"):
        t.set_teacher(student._m)
    short = make_model("cpu", dict(TEACHER, max_seq_len=16), 3)
    t.set_teacher(short._m)
    with pytest.raises(llmc.LlmcError, match="teacher's maximum context of 16"):
        t.forward_backward(np.zeros((1, 17), np.int32), np.zeros((1, 17), np.int32))
    assert t.teacher is short._m  # a failed set leaves the last good one


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")
def test_teacher_on_another_device_is_refused():
    student, teacher = make_model("cuda", STUDENT, 5), make_model("cpu", TEACHER, 9)
    with pytest.raises(llmc.LlmcError, match="teacher is on cpu:0 and the student on cuda:0"):
        student._trainer().set_teacher(teacher._m)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("as_file", [True, False])
def test_gpt2_train_logs_the_distillation_loss(device, tmp_path, as_file):
    """The train loss of the log is the distillation loss of the step's batch; the val loss is CE."""
    train, val = write_tiny_shards(tmp_path, n_train=4000, vocab=300)
    student, teacher = make_model(device, STUDENT, 5), make_model(device, TEACHER, 9)
    tfile = tmp_path / "teacher.bin"
    teacher.save(tfile, 3)
    x, y = _core.DataLoader(train, 2, 32).next()
    want, _, _ = reference_distill(student, teacher, x, y, 0.25, 1.5)
    out = tmp_path / "out"
    hist = student.train(train, steps=2, batch_size=2, seq_len=32, lr=1e-3, val_data=val, val_every=1,
                         val_batches=2, sample_every=0, out_dir=str(out), progress=False,
                         teacher=str(tfile) if as_file else teacher, distill_alpha=0.25, distill_temperature=1.5)
    assert abs(hist[0]["loss"] - want) / want < LOGIT_TOL[device], (hist[0]["loss"], want)
    log = read_jsonl(out / "main.jsonl")
    steps = [e for e in log if "train_loss" in e]
    vals = [e for e in log if "val_loss" in e]
    assert [e["train_loss"] for e in steps] == pytest.approx([h["loss"] for h in hist], rel=1e-6)
    assert len(vals) == 3 and student._trainer().teacher is None  # the run's teacher is gone with the run


@pytest.mark.parametrize("device", BACKENDS)
def test_gpt2_train_val_loss_is_plain_ce(device, tmp_path):
    train, val = write_tiny_shards(tmp_path, n_train=4000, vocab=300)
    teacher = make_model(device, TEACHER, 9)
    runs = []
    for with_teacher in (False, True):
        s = make_model(device, STUDENT, 5)
        out = tmp_path / f"o{int(with_teacher)}"
        s.train(train, steps=1, batch_size=2, seq_len=32, val_data=val, val_every=1, val_batches=2,
                sample_every=0, out_dir=str(out), progress=False, teacher=teacher if with_teacher else None)
        runs.append(read_jsonl(out / "main.jsonl"))
    v0 = [[e["val_loss"] for e in r if "val_loss" in e] for r in runs]
    t0 = [[e["train_loss"] for e in r if "train_loss" in e] for r in runs]
    assert v0[0][0] == v0[1][0]  # before the first update: the same weights, the same CE
    assert t0[0][0] != t0[1][0]  # the train loss is another loss


# ---------------------------------------------------------------- ./train_gpt2 --teacher
TRAIN = os.path.join(BIN_DIR, "train_gpt2")
TRAIN_CU = os.path.join(BIN_DIR, "train_gpt2cu")


def trainer_cli(binary, *args):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture
def cli_data(tmp_path):
    train, val = write_tiny_shards(tmp_path, n_train=4000, vocab=64)
    m = _core.Model()
    m.init_random(dict(TINY_CFG, num_layers=1, channels=64, num_heads=1), seed=3)
    m.save(tmp_path / "teacher.bin", 3)
    return dict(train=train, val=val, dir=tmp_path, teacher=tmp_path / "teacher.bin")


def cli_base(d, out, *extra):
    return ["-i", d["train"], "-j", d["val"], "-e", TINY, "-b", 2, "-t", 16, "-x", 3, "-v", 3, "-m", 2, "-s", 0,
            "-o", out, *extra]


@pytest.mark.parametrize("binary", [TRAIN, pytest.param(TRAIN_CU, marks=[pytest.mark.cuda, pytest.mark.skipif(
    not HAVE_CUDA, reason="no CUDA GPU")])], ids=["cpu", "cuda"])
def test_trainer_cli_distils(cli_data, binary):
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built")
    d = cli_data
    if binary == TRAIN_CU:  # the GPU's attention needs head size 64 or 128
        m = _core.Model()
        m.init_random(dict(TINY_CFG, num_layers=1, channels=128, num_heads=2), seed=3)
        m.save(d["teacher"], 5)
    e = "L=2,H=2,C=128,T=32,V=64" if binary == TRAIN_CU else TINY
    plain = trainer_cli(binary, *cli_base(d, d["dir"] / "plain"), "-e", e)
    kd = trainer_cli(binary, *cli_base(d, d["dir"] / "kd"), "-e", e, "--teacher", d["teacher"],
                     "--distill-alpha", "0.4", "--distill-temperature", "3")
    assert plain.returncode == 0 and kd.returncode == 0, (plain.stderr, kd.stderr)
    assert "distillation: teacher L=1" in kd.stdout and "alpha 0.4, temperature 3" in kd.stdout
    logs = [read_jsonl(d["dir"] / name / "main.jsonl") for name in ("plain", "kd")]
    val = [[e["val_loss"] for e in log if "val_loss" in e] for log in logs]
    train = [[e["train_loss"] for e in log if "train_loss" in e] for log in logs]
    assert val[0][0] == val[1][0]  # step 0: the same weights, plain CE
    assert train[0][0] != train[1][0]
    steps = [line for line in (d["dir"] / "kd" / "main.log").read_text().splitlines() if " trl:" in line]
    assert steps[0].startswith(f"s:0 trl:{train[1][0]:.4f} ")  # llm.c's log: the distillation loss


@pytest.mark.parametrize("extra,words", [
    (["--distill-alpha", "0.5"], "need a teacher (--teacher FILE)"),
    (["--distill-temperature", "2"], "need a teacher"),
    (["--teacher", "{teacher}", "--distill-alpha", "1.5"], "alpha 1.5 must lie in [0, 1]"),
    (["--teacher", "{teacher}", "--distill-alpha", "-0.5"], "alpha -0.5 must lie in [0, 1]"),
    (["--teacher", "{teacher}", "--distill-temperature", "0"], "temperature 0 must be > 0"),
    (["--teacher", "{teacher}", "--distill-temperature", "-3"], "temperature -3 must be > 0"),
    (["--teacher", "{dir}/none.bin"], "teacher: cannot open model file"),
    (["--teacher", "{wide}"], "the teacher has a vocabulary of 65 tokens"),
    (["--teacher", "{short}"], "-t 16 is longer than the teacher's maximum context of 8 tokens"),
])
def test_trainer_cli_distillation_bad_input(cli_data, extra, words):
    if not os.access(TRAIN, os.X_OK):
        pytest.skip("./train_gpt2 not built")
    d = cli_data
    for name, cfg in (("wide", dict(TINY_CFG, vocab_size=65, num_layers=1)),
                      ("short", dict(TINY_CFG, max_seq_len=8, num_layers=1))):
        m = _core.Model()
        m.init_random(cfg)
        m.save(d["dir"] / f"{name}.bin", 3)
    extra = [a.format(teacher=d["teacher"], dir=d["dir"], wide=d["dir"] / "wide.bin", short=d["dir"] / "short.bin")
             for a in extra]
    r = trainer_cli(TRAIN, *cli_base(d, d["dir"] / "o"), *extra)
    assert r.returncode == 1 and words in r.stderr, (r.returncode, r.stderr)

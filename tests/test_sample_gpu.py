"""The CUDA sampler (cuda/sample.cu) against the host function it computes (llmc_sample_token_at):
row by row on the bf16 logits the device holds, ties and bad rows, chi-square of its draws, and
sessions sampling on the device against sessions sampling on the host. Skipped without a GPU."""
import numpy as np
import pytest

from llmc import _core
from conftest import HAVE_CUDA
from test_generate import SMALL, make_model, session_steps
from test_sampler import assert_matches, expected_probs

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")]

U_TOP = float(np.nextafter(np.float32(1), np.float32(0)))  # 0.99999994: the largest draw
CAP, TOP_K_MAX = 4096, 1024  # cuda/sample.cu's SAMPLE_CAP and SAMPLE_TOP_K_MAX
SHAPES = [(3, 10, 16), (8, 1000, 1024), (16, 50257, 50304), (2, 120001, 120008)]  # the last: too big to stage
SETTINGS = [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.7), dict(top_k=50),
            dict(top_k=50, top_p=0.95), dict(top_p=0.9), dict(top_k=1), dict(top_k=1024)]


@pytest.fixture(scope="module")
def dev():
    return _core.Device("cuda")


def bad(row):
    return not np.all(row < np.inf) or np.all(row == -np.inf)  # NaN, +Inf, or nothing finite


def may_defer(row, temperature=1.0, top_k=0, top_p=1.0):
    """Whether cuda/sample.cu documents leaving this row to the host (-2)."""
    V = len(row)
    if temperature == 0 or bad(row):
        return False
    if 0 < top_k < V:  # top-k above its buffer, or more ties at the k-th value than it holds
        return top_k > TOP_K_MAX or np.count_nonzero(row >= np.sort(row)[V - top_k]) > CAP
    if top_p < 1 and V > 1:  # tokens above sampler.c's nucleus bound (5% slack: other sum order)
        lg = row.astype(np.float64)
        z = np.exp((lg - lg.max()) / temperature).sum()
        cut = lg.max() + temperature * np.log((1 - float(np.float32(top_p))) / (V - 1) * z)
        return np.count_nonzero(row >= np.float32(cut)) > 0.95 * CAP
    return False


def padded(rows, Vp):
    """(N, Vp) float32 with NaN in the padding columns: a kernel that reads them sees a bad row."""
    out = np.full((rows.shape[0], Vp), np.nan, np.float32)
    out[:, :rows.shape[1]] = rows
    return out


def draw_sets(N, rng):
    return [np.zeros(N, np.float32), np.full(N, U_TOP, np.float32), rng.random(N, dtype=np.float32)]


def check_rows(dev, logits, V, u, **kw):
    """The device's picks for logits (N, Vp) and draws u: each must be the host's pick from the
    bf16 values the device holds (-1 for a bad row), or -2 where may_defer. Returns the picks."""
    got = dev.sample_rows(logits, V, u, **kw)
    seen = dev.roundtrip(logits)[:, :V]
    for i, row in enumerate(seen):
        if got[i] == -2 and may_defer(row, **kw):
            continue
        want = -1 if bad(row) else _core.sample_token_at(row, float(u[i]), **kw)
        assert got[i] == want, f"row {i}/{len(u)} V={V} {kw} u={u[i]!r}: device {got[i]}, host {want}"
    return got


@pytest.mark.parametrize("kw", SETTINGS, ids=str)
@pytest.mark.parametrize("N,V,Vp", SHAPES)
def test_rows_match_host(dev, N, V, Vp, kw):
    rng = np.random.default_rng(V + 7 * N)
    logits = padded(rng.normal(size=(N, V)) * 3, Vp)
    for u in draw_sets(N, rng):
        check_rows(dev, logits, V, u, **kw)


@pytest.mark.parametrize("V,Vp,scale,deferred", [(1000, 1024, 3.0, False), (50257, 50304, 8.0, False),
                                                  (1000, 1024, 0.1, False), (50257, 50304, 0.1, True)])
def test_top_p_rows_left_to_host(dev, V, Vp, scale, deferred):
    """Top-p alone: the device holds peaked rows (and flat ones of V=1000, under its buffer) itself;
    only flat rows of 50257 (every token above the bound) go to the host. Peaked here means few
    tokens above the bound: normal*3 at V=50257 has ~10,000 and goes to the host too."""
    rng = np.random.default_rng(int(scale * 10) + V)
    N = 16
    logits = padded(rng.normal(size=(N, V)) * scale, Vp)
    for kw in (dict(top_p=0.9), dict(top_p=0.95, temperature=0.7)):
        for u in draw_sets(N, rng):
            got = check_rows(dev, logits, V, u, **kw)
            assert np.all(got == -2) if deferred else np.all(got >= 0), (kw, got)


def tie_rows(V, rng):
    """Rows of ties and bad values; the normal rows between them must come out right too."""
    r = rng.normal(size=(9, V)) * 3
    r[0, rng.choice(V, 300, replace=False)] = 20.0  # 300 equal at the max
    r[1] = -np.abs(r[1])  # 30 distinct on top, then 200 equal at the k-th value of top-k 50
    pos = rng.choice(V, 230, replace=False)
    r[1, pos[:30]] = 10.0 + np.arange(30)
    r[1, pos[30:]] = 5.0
    r[2] = -np.abs(r[2]) - 0.5  # signed zeros share the max: -0.0 first
    zeros = np.sort(rng.choice(V, 6, replace=False))
    r[2, zeros] = [-0.0, 0.0, -0.0, 0.0, 0.0, -0.0]
    r[3, V // 2] = np.nan
    r[4, V - 1] = np.inf
    r[5] = -np.inf
    r[6, rng.random(V) < 0.5] = -np.inf  # -inf is fine where something is finite
    if V > 6000:  # 5000 equal at the k-th value: more than the device holds
        r[8] = -np.abs(r[8])
        pos = rng.choice(V, 5020, replace=False)
        r[8, pos[:20]] = 10.0 + np.arange(20)
        r[8, pos[20:]] = 3.0
    return r


@pytest.mark.parametrize("kw", SETTINGS + [dict(top_k=3), dict(top_k=250, top_p=0.5)], ids=str)
@pytest.mark.parametrize("V,Vp", [(1000, 1024), (50257, 50304)])
def test_ties_and_bad_rows(dev, V, Vp, kw):
    rng = np.random.default_rng(V)
    logits = padded(tie_rows(V, rng), Vp)
    for u in draw_sets(len(logits), rng):
        got = check_rows(dev, logits, V, u, **kw)
        assert list(got[3:6]) == [-1, -1, -1]
    assert np.signbit(dev.roundtrip(logits)[2, :V]).sum() == V - 3  # the -0.0 survived the upload


def test_subnormal_logits(dev):
    """bf16 holds subnormals and the host orders them above 0; the engine's CUDA code is built with
    --use_fast_math, whose flush-to-zero would make them equal to 0 in float compares."""
    tiny = np.array([1 << 20], np.uint32).view(np.float32)[0]  # 2^-129, exact in bf16
    row = np.array([0.0, -tiny, tiny, 0.0, 2 * tiny, -1.0, 3 * tiny, -0.0, tiny, -2.0], np.float32)
    logits = padded(np.tile(row, (4, 1)), 16)
    assert np.array_equal(dev.roundtrip(logits)[0, :10], row)
    for kw in (dict(temperature=0.0), dict(top_k=1), dict(top_k=2), dict(top_k=3, top_p=0.5), dict(top_p=0.3)):
        check_rows(dev, logits, 10, np.array([0.0, 0.3, 0.7, U_TOP], np.float32), **kw)


@pytest.mark.parametrize("V,Vp,kw", [(8, 16, dict()), (8, 16, dict(temperature=0.8, top_k=3)),
                                     (8, 16, dict(temperature=0.8, top_p=0.6)),
                                     (8, 16, dict(temperature=0.8, top_k=4, top_p=0.7)),
                                     (1000, 1024, dict(top_p=0.5)), (1000, 1024, dict(temperature=1.3, top_k=20))],
                         ids=str)
def test_draws_follow_distribution(dev, V, Vp, kw):
    base = np.array([1.0, -0.5, 0.3, 2.0, 0.0, -2.0, 1.5, 0.9], np.float32)
    if V != 8:
        base = (np.random.default_rng(5).normal(size=V) * 2).astype(np.float32)
    seen = dev.roundtrip(base[None])[0]
    probs = expected_probs(seen, **kw)
    rng = np.random.default_rng(V * 100 + kw.get("top_k", 0))
    counts = np.zeros(V, np.int64)
    for _ in range(4):  # 20000 draws in chunks
        n = 5000
        got = dev.sample_rows(padded(np.tile(base, (n, 1)), Vp), V, rng.random(n, dtype=np.float32), **kw)
        assert np.all((got >= 0) & (got < V)), np.unique(got)
        counts += np.bincount(got, minlength=V)
    assert_matches(counts, probs)


@pytest.fixture(scope="module")
def models():
    return {V: make_model("cuda", cfg=dict(SMALL, vocab_size=V), spread=1.0) for V in (300, 50257)}


@pytest.mark.parametrize("kw", [dict(temperature=1.0, top_k=50, top_p=0.95), dict(temperature=0.8, top_k=0, top_p=0.9),
                                dict(temperature=1.0, top_k=0, top_p=1.0)], ids=str)
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("V", [300, 50257])
def test_session_device_sampling_is_host_sampling(models, V, batch, kw):
    """Also with run_ahead, where a row the device leaves to the host (V = 50257 without top-k has
    flat rows) makes the pending step run again for its logits."""
    prompts = [[1, 2, 3], [7], [5, 17, 42, 8], [1, 2, 3]][:batch]
    host = session_steps(models[V], prompts, 24, True, seed=11, **kw)
    assert host.shape == (24, batch) and np.all(host >= 0)
    for ahead in (False, True):
        device = session_steps(models[V], prompts, 24, False, seed=11, run_ahead=ahead, **kw)
        np.testing.assert_array_equal(device, host, err_msg=f"run_ahead={ahead}")
    assert len(np.unique(host)) > 3  # really sampled, not a fixed point

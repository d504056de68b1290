"""llmc_sample_token: greedy, temperature, top-k, top-p, determinism, bad logits."""

import numpy as np
import pytest

from llmc import _core

V_GPT2 = 50257


def softmax64(logits, temperature):
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


def expected_probs(logits, temperature=1.0, top_k=0, top_p=1.0):
    """float64 reference: top-k, then the top-p nucleus of the renormalised rest (ties: lower index first)."""
    logits = np.asarray(logits, dtype=np.float32)
    V = len(logits)
    order = np.lexsort((np.arange(V), -logits.astype(np.float64)))  # logit desc, index asc
    keep = order[:top_k] if 0 < top_k < V else order
    p = softmax64(logits[keep], temperature)
    if top_p < 1.0:
        cum = np.cumsum(p)
        n = int(np.searchsorted(cum, top_p * cum[-1], side="left")) + 1
        keep, p = keep[:n], p[:n]
    out = np.zeros(V)
    out[keep] = p / p.sum()
    return out


def draw_many(logits, n, seed=1, **kw):
    counts = np.zeros(len(logits), dtype=np.int64)
    state = seed
    for _ in range(n):
        tok, state = _core.sample_token(logits, rng_state=state, **kw)
        counts[tok] += 1
    return counts


def chi2(counts, probs):
    n = counts.sum()
    assert np.all(counts[probs == 0] == 0), "drew a token of probability 0"
    m = probs > 0
    e = n * probs[m]
    return float(((counts[m] - e) ** 2 / e).sum()), int(m.sum()) - 1


def assert_matches(counts, probs):
    stat, dof = chi2(counts, probs)
    # mean dof, sd sqrt(2 dof): 6 sd plus slack is a ~1e-9 false alarm rate, and a
    # wrong distribution at these sample sizes lands far beyond it
    assert stat < dof + 6 * np.sqrt(2 * dof) + 10, (stat, dof, counts, probs)


def test_default_sampling():
    # llmc_sampling_default: temperature 1, no top-k / top-p, seed 1337 when no state is given
    logits = np.random.default_rng(0).normal(size=100).astype(np.float32)
    a = _core.sample_token(logits)
    b = _core.sample_token(logits, temperature=1.0, top_k=0, top_p=1.0, rng_state=1337)
    assert a == b


@pytest.mark.parametrize("V", [1, 2, 7, 1000, V_GPT2])
def test_greedy_is_argmax(V):
    rng = np.random.default_rng(V)
    for _ in range(5):
        logits = rng.normal(size=V).astype(np.float32) * 3
        tok, state = _core.sample_token(logits, temperature=0.0, rng_state=77)
        assert tok == int(np.argmax(logits))
        assert state == 77  # greedy draws nothing
        tok1, _ = _core.sample_token(logits, temperature=1.0, top_k=1, rng_state=5)
        assert tok1 == tok
        tok2, _ = _core.sample_token(logits, temperature=1e-30, rng_state=5)
        assert tok2 == tok


def test_greedy_ties_lowest_index():
    logits = np.array([0.0, 3.0, -1.0, 3.0, 3.0], dtype=np.float32)
    assert _core.sample_token(logits, temperature=0.0)[0] == 1
    assert _core.sample_token(logits, top_k=1)[0] == 1
    # top_k=2 keeps indices 1 and 3 (ties broken by index), never 4
    counts = draw_many(logits, 2000, top_k=2)
    assert counts[4] == 0 and counts[1] > 0 and counts[3] > 0


def test_same_seed_same_sequence():
    logits = np.random.default_rng(3).normal(size=V_GPT2).astype(np.float32)
    for kw in ({}, {"top_k": 40}, {"top_p": 0.9}, {"top_k": 200, "top_p": 0.8, "temperature": 0.7}):
        seqs = []
        for seed in (11, 11, 12):
            s, out = seed, []
            for _ in range(50):
                t, s = _core.sample_token(logits, rng_state=s, **kw)
                out.append(t)
            seqs.append(out)
        assert seqs[0] == seqs[1], kw
        assert seqs[0] != seqs[2], kw


@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.5])
def test_distribution_matches_softmax(temperature):
    logits = np.array([1.0, -0.5, 0.3, 2.0, 0.0, -2.0], dtype=np.float32)
    counts = draw_many(logits, 60000, seed=temperature * 1000, temperature=temperature)
    assert_matches(counts, expected_probs(logits, temperature))


@pytest.mark.parametrize("top_k,top_p", [(3, 1.0), (0, 0.6), (0, 0.95), (4, 0.7), (1, 0.5), (0, 1e-6)])
def test_distribution_with_top_k_top_p(top_k, top_p):
    logits = np.array([1.0, -0.5, 0.3, 2.0, 0.0, -2.0, 1.5, 0.9], dtype=np.float32)
    probs = expected_probs(logits, 0.8, top_k, top_p)
    counts = draw_many(logits, 40000, seed=top_k * 31 + int(top_p * 100), temperature=0.8, top_k=top_k, top_p=top_p)
    assert_matches(counts, probs)


def test_distribution_large_vocab_top_p():
    # a peaked 50257-way distribution: the nucleus path must not lose mass or pick outside it
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=V_GPT2) * 2.5).astype(np.float32)
    probs = expected_probs(logits, 1.0, 0, 0.3)
    assert 1 < np.count_nonzero(probs) < 200
    counts = draw_many(logits, 8000, seed=9, top_p=0.3)
    assert_matches(counts, probs)


def test_top_k_top_p_never_pick_excluded():
    rng = np.random.default_rng(8)
    logits = (rng.normal(size=V_GPT2) * 2).astype(np.float32)
    order = np.argsort(-logits, kind="stable")
    top50 = set(order[:50].tolist())
    nucleus = set(np.flatnonzero(expected_probs(logits, 1.0, 0, 0.5)).tolist())
    both = set(np.flatnonzero(expected_probs(logits, 1.3, 100, 0.5)).tolist())
    s = 1
    for _ in range(1500):
        t, s = _core.sample_token(logits, top_k=50, rng_state=s)
        assert t in top50
        t, s = _core.sample_token(logits, top_p=0.5, rng_state=s)
        assert t in nucleus
        t, s = _core.sample_token(logits, temperature=1.3, top_k=100, top_p=0.5, rng_state=s)
        assert t in both


def test_minus_inf_logits_never_drawn():
    logits = np.full(1000, -np.inf, dtype=np.float32)
    logits[[3, 500, 999]] = [0.0, 1.0, 0.5]
    for kw in ({}, {"top_k": 10}, {"top_p": 0.99}, {"temperature": 5.0}):
        counts = draw_many(logits, 3000, **kw)
        assert counts.sum() == counts[[3, 500, 999]].sum(), kw


@pytest.mark.parametrize("bad", ["nan", "inf", "allneg"])
def test_bad_logits_raise(bad):
    logits = np.random.default_rng(0).normal(size=64).astype(np.float32)
    if bad == "nan":
        logits[17] = np.nan
    elif bad == "inf":
        logits[17] = np.inf
    else:
        logits[:] = -np.inf
    for kw in ({"temperature": 0.0}, {}, {"top_k": 5}, {"top_p": 0.9}):
        with pytest.raises(_core.LlmcError, match="NaN or \\+Inf"):
            _core.sample_token(logits, **kw)


def test_bad_arguments_raise():
    logits = np.zeros(10, dtype=np.float32)
    with pytest.raises(_core.LlmcError):
        _core.sample_token(logits, temperature=-1.0)
    with pytest.raises(_core.LlmcError):
        _core.sample_token(logits, temperature=float("nan"))
    with pytest.raises(_core.LlmcError, match="1-D"):
        _core.sample_token(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(_core.LlmcError, match="1-D"):
        _core.sample_token(np.zeros(0, dtype=np.float32))


@pytest.mark.parametrize("kw", [dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.1), dict(top_k=-3),
                                dict(temperature=float("inf"))])
def test_one_rule_for_sampling_settings(kw):
    """sample_token refuses exactly what generation refuses."""
    import llmc
    with pytest.raises(_core.LlmcError, match="bad sampling settings"):
        _core.sample_token(np.zeros(10, dtype=np.float32), **kw)
    model = llmc.GPT2.from_config("L=1,H=1,C=8,T=8,V=10")
    with pytest.raises(_core.LlmcError, match="bad sampling settings"):
        model.generate([1, 2], max_new_tokens=2, **kw)


def test_rng_state_round_trip():
    logits = np.random.default_rng(2).normal(size=300).astype(np.float32)
    t1, s1 = _core.sample_token(logits, rng_state=2**64 - 1)
    assert 0 <= s1 < 2**64 and s1 != 2**64 - 1
    t2, s2 = _core.sample_token(logits, rng_state=s1)
    t2b, s2b = _core.sample_token(logits, rng_state=s1)
    assert (t2, s2) == (t2b, s2b)


def test_top_p_ties_cut_by_index():
    # four equal logits; the nucleus needs three of them: the three lowest indices
    logits = np.array([0.0, 2.0, 2.0, 2.0, 2.0, 1.0], dtype=np.float32)
    probs = expected_probs(logits, 1.0, 0, 0.5)
    assert np.count_nonzero(probs) == 3 and probs[4] == 0
    counts = draw_many(logits, 6000, seed=4, top_p=0.5)
    assert counts[4] == 0
    assert_matches(counts, probs)
    # the same cut inside a large vocabulary (the candidate prefilter and histogram path)
    big = np.full(V_GPT2, -5.0, dtype=np.float32)
    big[[10, 20000, 30000, 50000]] = 3.0
    probs = expected_probs(big, 1.0, 0, 0.3)
    counts = draw_many(big, 3000, seed=6, top_p=0.3)
    assert_matches(counts, probs)
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(probs))


@pytest.mark.parametrize("kw", [dict(), dict(top_k=50), dict(top_k=50, top_p=0.95), dict(top_p=0.3), dict(temperature=0.7)])
def test_sample_token_at_is_the_stream_draw(kw):
    # sample_token takes exactly one uniform draw; sample_token_at with that draw picks the same token
    logits = (np.random.default_rng(3).normal(size=V_GPT2) * 2.5).astype(np.float32)
    state = 77
    for _ in range(20):
        u, _ = _core.rng_uniform(state)
        tok, state = _core.sample_token(logits, rng_state=state, **kw)
        assert _core.sample_token_at(logits, u, **kw) == tok


def test_cpu_sample_rows_is_the_host_sampler():
    dev = _core.Device("cpu")
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=(6, 1024)) * 3).astype(np.float32)
    u = rng.random(6).astype(np.float32)
    got = dev.sample_rows(logits, 1000, u, temperature=0.9, top_k=40, top_p=0.9)
    want = [_core.sample_token_at(logits[i, :1000], float(u[i]), temperature=0.9, top_k=40, top_p=0.9) for i in range(6)]
    np.testing.assert_array_equal(got, want)

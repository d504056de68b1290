"""Generation with the KV-cache engine: cached logits against a full recompute at every step,
greedy continuations against the float64 reference, context limits, seeds, bad input, and the
`python -m llmc.generate` command line."""
import os
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import _core
from llmc import reference as ref
from conftest import BACKENDS, RANKS as _RANKS, rel_err

LlmcError = llmc.LlmcError

# HS = 64 so the GPU's attention kernels apply; V not a multiple of 128 so padding is exercised
SMALL = dict(num_layers=2, num_heads=2, channels=128, max_seq_len=64, vocab_size=300)
# C not a power of two, HS = 16, 3 layers: the CPU engine has no shape restrictions
ODD = dict(num_layers=3, num_heads=3, channels=48, max_seq_len=40, vocab_size=77)
LOGIT_TOL = {"cpu": 1e-5, "cuda": 2e-2}


def make_model(device, cfg=SMALL, seed=3, spread=4.0):
    """A model off its init point (LN weights and biases random) whose logits spread enough
    that greedy choices are not near-ties."""
    model = llmc.GPT2.from_config(dict(cfg), device=device, seed=seed)
    rng = np.random.default_rng(seed)
    p = model.get_params()
    p += rng.standard_normal(p.shape).astype(np.float32) * 0.05
    C, V, Vp = model.config["channels"], model.config["vocab_size"], model.config["padded_vocab_size"]
    p[V * C:Vp * C] = 0.0  # padding rows of wte stay zero
    off = {name: (o, int(np.prod(shape))) for name, o, shape, _ in model._layout}
    o, n = off["lnfw"]
    p[o:o + n] *= spread  # larger logits, same embeddings
    model.set_params(p)
    return model


def ref_config(cfg):
    return ref.Config(n_layer=cfg["num_layers"], n_head=cfg["num_heads"], n_embd=cfg["channels"],
                      max_t=cfg["max_seq_len"], vocab_size=cfg["vocab_size"],
                      padded_vocab_size=cfg["padded_vocab_size"])


def recompute_logits(trainer, seq):
    trainer.forward(np.asarray(seq, np.int32)[None, :])
    return trainer.logits_at(0, len(seq) - 1)


def run_checked(model, prompts, max_new, tol, temperature=1.0, top_k=0, top_p=1.0, seed=7, eot=-1):
    """Runs a session; before every gen_next compares each live sequence's cached logits with a
    full forward over its prefix (on the same model context: the session must not mind).
    Returns the sequences (prompt + new tokens) and the worst relative error seen."""
    trainer = model._trainer()
    B = len(prompts)
    seqs = [list(map(int, p)) for p in prompts]
    live = [len(p) < model.config["max_seq_len"] for p in prompts]
    session = _core.Session(model._m, prompts, max_new, temperature, top_k, top_p, seed, eot)
    worst, checks = 0.0, 0
    try:
        while any(live):
            for b in range(B):
                if not live[b]:
                    with pytest.raises(LlmcError, match="stopped"):
                        session.logits(b)
                    continue
                err = rel_err(session.logits(b), recompute_logits(trainer, seqs[b]))
                assert err <= tol, f"sequence {b} at length {len(seqs[b])}: relative error {err:.3e} > {tol:.1e}"
                worst, checks = max(worst, err), checks + 1
            out, alive = session.next()
            for b in range(B):
                if live[b]:
                    assert out[b] >= 0
                    seqs[b].append(int(out[b]))
                    gen = len(seqs[b]) - len(prompts[b])
                    live[b] = not (out[b] == eot or gen >= max_new or len(seqs[b]) >= model.config["max_seq_len"])
                else:
                    assert out[b] == -1
            assert alive == sum(live)
        out, alive = session.next()  # a finished session keeps answering "nothing alive"
        assert alive == 0 and np.all(out == -1)
    finally:
        session.end()
    assert checks > 0
    return seqs, worst


# ---------------------------------------------------------------- cached path == full recompute

@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_cached_logits_match_recompute_batch1(device, temperature):
    """temperature 0 takes the greedy path: the argmax is taken where the logits are."""
    model = make_model(device)
    seqs, worst = run_checked(model, [[5, 17, 42, 7, 1]], 24, LOGIT_TOL[device], temperature=temperature)
    assert len(seqs[0]) == 5 + 24


@pytest.mark.parametrize("device", BACKENDS)
def test_cached_logits_match_recompute_ragged(device):
    """Different prompt lengths (two share a length so prefill batches them), one stopping early."""
    model = make_model(device)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 300, n).tolist() for n in (1, 9, 9, 23, 2)]
    seqs, _ = run_checked(model, prompts, 17, LOGIT_TOL[device], temperature=0.9, top_k=40, seed=11)
    assert [len(s) - len(p) for s, p in zip(seqs, prompts)] == [17] * 5


def test_cached_logits_odd_shapes():
    """HS = 16, C = 48, three layers, with EOT stopping some sequences early."""
    model = make_model("cpu", cfg=ODD, seed=4)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 77, n).tolist() for n in (3, 1, 12)]
    run_checked(model, prompts, 20, LOGIT_TOL["cpu"], temperature=1.5, seed=5, eot=3)


@pytest.mark.parametrize("device", BACKENDS)
def test_prompt_near_context_limit(device):
    """Prompts ending 3, 1 and 0 positions short of max T: the decode reaches position T-1 and stops there."""
    model = make_model(device)
    T = model.config["max_seq_len"]
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 300, n).tolist() for n in (T - 3, T - 1, T, 5)]
    seqs, _ = run_checked(model, prompts, 100, LOGIT_TOL[device], temperature=0.8, seed=2)
    assert [len(s) for s in seqs] == [T, T, T, T]


@pytest.mark.parametrize("device", BACKENDS)
def test_long_context_ragged(device):
    """Long caches (the GPU splits the keys of a row across blocks) next to short ones."""
    model = make_model(device, cfg=dict(SMALL, max_seq_len=1024))
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, 300, n).tolist() for n in (700, 3, 1000, 129)]
    seqs, _ = run_checked(model, prompts, 12, LOGIT_TOL[device], temperature=0.9, seed=8)
    assert [len(s) for s in seqs] == [712, 15, 1012, 141]


# ---------------------------------------------------------------- greedy == float64 reference

@pytest.mark.parametrize("device", BACKENDS)
def test_greedy_matches_reference(device):
    """Token for token against reference.gpt2_forward on the full prefix. On bf16 a step may only
    differ where the reference's top two logits are within bf16 noise (then the engine's choice is
    kept as the prefix, as in teacher forcing)."""
    model = make_model(device)
    cfg = model.config
    rcfg = ref_config(cfg)
    params = ref.unflatten(model.get_params().astype(np.float64), rcfg)
    prompt = [11, 250, 3, 99]
    new = model.generate(prompt, max_new_tokens=30, temperature=0, eot=-1)
    assert len(new) == 30
    seq = list(prompt)
    for tok in new:
        logits = ref.gpt2_forward(params, rcfg, np.array([seq]))[0][0, -1]
        best = int(np.argmax(logits))
        if device == "cpu":
            assert tok == best, f"at length {len(seq)}: {tok} != reference {best}"
        else:
            margin = logits[best] - logits[tok]
            assert margin <= 0.02 * np.abs(logits).max(), f"at length {len(seq)}: {tok} vs {best}, margin {margin}"
        seq.append(int(tok))
    if device == "cpu":
        return
    # on the GPU most steps must still agree exactly
    agree = 0
    seq = list(prompt)
    for tok in new:
        agree += int(np.argmax(ref.gpt2_forward(params, rcfg, np.array([seq]))[0][0, -1])) == tok
        seq.append(int(tok))
    assert agree >= 0.8 * len(new)


def test_greedy_batch_equals_single():
    """A sequence's tokens do not depend on the other sequences of its batch."""
    model = make_model("cpu")
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    batch = model.generate(prompts, max_new_tokens=12, temperature=0, eot=-1)
    for p, got in zip(prompts, batch):
        np.testing.assert_array_equal(got, model.generate(p, max_new_tokens=12, temperature=0, eot=-1))


# ---------------------------------------------------------------- seeds

@pytest.mark.parametrize("device", BACKENDS)
def test_same_seed_same_tokens(device):
    model = make_model(device, spread=1.0)
    kw = dict(max_new_tokens=25, temperature=1.0, top_k=50, top_p=0.95, eot=-1)
    a = model.generate([[1, 2, 3], [7]], seed=123, **kw)
    b = model.generate([[1, 2, 3], [7]], seed=123, **kw)
    c = model.generate([[1, 2, 3], [7]], seed=124, **kw)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    # sequence 0 of a batch uses the same stream as a single sequence with that seed
    np.testing.assert_array_equal(model.generate([1, 2, 3], seed=123, **kw), a[0])
    # two copies of one prompt in a batch get different streams
    d = model.generate([[1, 2, 3], [1, 2, 3]], seed=123, **kw)
    assert not np.array_equal(d[0], d[1])


def test_stream_yields_what_generate_returns():
    model = make_model("cpu")
    toks = list(model.stream([4, 8, 15], max_new_tokens=10, temperature=0.7, seed=9, eot=-1))
    np.testing.assert_array_equal(toks, model.generate([4, 8, 15], max_new_tokens=10, temperature=0.7, seed=9,
                                                       eot=-1))


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_interleaved_streams_equal_each_alone(device, temperature):
    """Two streams on one model, advanced in turn, each give exactly the tokens they give alone: each
    is its own session (KV cache, batch, sampler state, device graphs)."""
    model = make_model(device)
    kw = dict(temperature=temperature, top_k=40, eot=-1)
    alone_a = list(model.stream([5, 17, 42], max_new_tokens=30, seed=1, **kw))
    alone_b = list(model.stream([9, 2], max_new_tokens=21, seed=2, **kw))
    a = model.stream([5, 17, 42], max_new_tokens=30, seed=1, **kw)
    b = model.stream([9, 2], max_new_tokens=21, seed=2, **kw)
    got_a, got_b = [], []
    for step in range(40):  # b joins late and finishes first; a third, batched session runs alongside
        if step == 3:
            batch = _core.Session(model._m, [[1, 2, 3], [4]], 5, temperature, 40, 1.0, 3, -1)
        if step < 30:
            got_a.append(next(a))
        if 2 <= step < 23:
            got_b.append(next(b))
        if step == 10:
            out, alive = batch.next()
            assert alive == 2 and np.all(out >= 0)
    assert got_a == alone_a and got_b == alone_b
    assert len(alone_a) == 30 and len(alone_b) == 21


def test_model_refuses_new_weights_under_a_session(tmp_path):
    model = make_model("cpu")
    model.save(tmp_path / "m.bin")
    session = _core.Session(model._m, [[1, 2]], 4)
    with pytest.raises(LlmcError, match="session"):
        model._m.load(tmp_path / "m.bin")
    session.end()
    model._m.load(tmp_path / "m.bin")  # fine once the session is over


def test_generation_allocates_no_training_state(tmp_path):
    """A model that only generates has weights and a session, and no gradients or optimizer state."""
    model = make_model("cpu")
    model.save(tmp_path / "m.bin")
    fresh = llmc.GPT2.from_pretrained(tmp_path / "m.bin")
    fresh.generate([1, 2, 3], max_new_tokens=4)
    assert fresh._t is None and fresh.memory == dict(weights=4 * fresh.num_params, training=0)
    session = _core.Session(fresh._m, [[1, 2, 3]], 8)
    assert session.memory > 0
    fresh.forward(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
    assert fresh.memory["training"] > 0  # activations, from the first forward


def test_eot_stops_and_session_survives_training_state():
    """EOT ends a sequence (not returned by generate); a session does not disturb the model's own
    forward state and vice versa."""
    model = make_model("cpu")
    x = np.arange(10, dtype=np.int32)[None]
    logits_before, _ = model.forward(x)
    first = model.generate([1, 2], max_new_tokens=12, temperature=1.0, seed=3, eot=-1)
    k = next(i for i in range(1, 12) if first[i] not in first[:i])  # a token not seen before
    out = model.generate([1, 2], max_new_tokens=12, temperature=1.0, seed=3, eot=int(first[k]))
    np.testing.assert_array_equal(out, first[:k])
    np.testing.assert_array_equal(model._trainer().logits(*x.shape), logits_before)


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def tiny():
    return make_model("cpu", cfg=dict(num_layers=2, num_heads=2, channels=32, max_seq_len=32, vocab_size=64))


def ended(model):
    """A session that has ended."""
    s = _core.Session(model._m, [[1, 2]], 3)
    s.end()
    return s


def test_bad_input_raises(tiny):
    cases = [
        (lambda: tiny.generate([], max_new_tokens=4), "empty"),
        (lambda: tiny.generate([1, 64], max_new_tokens=4), "token id 64 at position 1"),
        (lambda: tiny.generate([1, -5], max_new_tokens=4), "token id -5"),
        (lambda: tiny.generate([1], max_new_tokens=0), "got 0"),
        (lambda: tiny.generate([1], max_new_tokens=-3), "got -3"),
        (lambda: tiny.generate([1] * 33, max_new_tokens=1), "33 tokens.*32"),
        (lambda: tiny.generate([1], max_new_tokens=2, temperature=-1), "temperature"),
        (lambda: tiny.generate([1], max_new_tokens=2, top_p=0), "top_p"),
        (lambda: ended(tiny).logits(0), "no generation session"),
        (lambda: ended(tiny).next(), "no generation session"),
    ]
    for call, pattern in cases:
        with pytest.raises(LlmcError, match=pattern):
            call()
    # still usable afterwards
    assert len(tiny.generate([1, 2], max_new_tokens=3, temperature=0, eot=-1)) == 3


def test_gen_logits_index_checked(tiny):
    s = _core.Session(tiny._m, [[1, 2]], 3)
    try:
        with pytest.raises(LlmcError, match="outside"):
            s.logits(1)
        assert s.logits(0).shape == (64,)
    finally:
        s.end()


def test_bad_model_file_and_device(tmp_path):
    with pytest.raises(LlmcError):
        llmc.GPT2.from_pretrained(tmp_path / "missing.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x01\x02\x03" * 100)
    with pytest.raises(LlmcError):
        llmc.GPT2.from_pretrained(bad)
    with pytest.raises(LlmcError, match="tpu"):
        llmc.GPT2.from_config(dict(num_layers=1, num_heads=1, channels=8, max_seq_len=8, vocab_size=16),
                              device="tpu")


# ---------------------------------------------------------------- the command line

def cli(*args, env=None, timeout=120):
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(llmc.__file__)))
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmc.generate", *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=timeout)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    model = make_model("cpu", cfg=dict(num_layers=2, num_heads=2, channels=32, max_seq_len=32, vocab_size=64))
    v3, v5 = d / "tiny_v3.bin", d / "tiny_v5.bin"
    model.save(v3, 3)
    model.save(v5, 5)
    return dict(model=model, v3=v3, v5=v5, dir=d)


def ids_of(stdout):
    return [int(t) for t in stdout.split()]


@pytest.mark.parametrize("version", ["v3", "v5"])
def test_cli_tokens_greedy(model_files, version):
    r = cli("--model", model_files[version], "--tokens", "1, 2 3", "-n", 8, "--temperature", 0, "--ids",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    got = ids_of(r.stdout)
    want = llmc.GPT2.from_pretrained(model_files[version]).generate([1, 2, 3], max_new_tokens=8, temperature=0)
    assert got == want.tolist() and len(got) == 8
    assert "tok/s" in r.stderr


@pytest.mark.parametrize("version", [3, 5])
def test_cli_reads_llmc_c_files(tmp_path, version):
    """A model file written by hand in llm.c's layout (helpers.write_model_file)."""
    from helpers import write_model_file

    path = tmp_path / f"llmc_c_v{version}.bin"
    write_model_file(path, version=version, seed=version)
    r = cli("--model", path, "--tokens", "7 8 9", "-n", 5, "--temperature", 0, "--ids")
    assert r.returncode == 0, r.stderr
    want = llmc.GPT2.from_pretrained(path).generate([7, 8, 9], max_new_tokens=5, temperature=0)
    assert ids_of(r.stdout) == want.tolist()


def test_cli_seed_and_batch(model_files):
    args = ["--model", model_files["v3"], "--tokens", "5,6", "-n", 10, "--ids", "--seed", 4, "--top-k", 20,
            "--top-p", 0.9, "--temperature", 1.2]
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    c = cli(*args, "--batch", 3)
    assert c.returncode == 0, c.stderr
    rows = [ln for ln in c.stdout.splitlines() if ln and not ln.startswith("===")]
    assert len(rows) == 3 and ids_of(rows[0]) == ids_of(a.stdout)


def test_cli_context_warning(model_files):
    r = cli("--model", model_files["v3"], "--tokens", " ".join(["1"] * 28), "-n", 10, "--ids",
            "--temperature", 0)
    assert r.returncode == 0, r.stderr
    assert len(ids_of(r.stdout)) == 4
    assert "warning" in r.stderr and "32" in r.stderr


@pytest.mark.parametrize("args,pattern", [
    (["--tokens", ""], "empty"),
    (["--tokens", "1,64"], "64"),
    (["--tokens", "1,x"], "x"),
    (["--tokens", "1", "-n", "0"], "-n"),
    (["--tokens", "1", "-n", "-4"], "-n"),
    (["--tokens", " ".join(["1"] * 33)], "33"),
    (["--tokens", "1", "--device", "tpu"], "tpu"),
    (["--tokens", "1", "--prompt", "hi"], "one of"),
    (["--tokens", "1", "--batch", "0"], "batch"),
    (["--tokens", "1", "--temperature", "-1"], "temperature"),
])
def test_cli_errors(model_files, args, pattern):
    r = cli("--model", model_files["v3"], *args)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert pattern in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_bad_model_files(model_files, tmp_path):
    for path, pattern in [(tmp_path / "nope.bin", "nope.bin"), (model_files["dir"], "")]:
        r = cli("--model", path, "--tokens", "1")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and pattern in r.stderr, r.stderr
    bad = tmp_path / "corrupt.bin"
    bad.write_bytes(model_files["v3"].read_bytes()[:5000])
    r = cli("--model", bad, "--tokens", "1")
    assert r.returncode == 1 and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("--tokens", "1")
    assert r.returncode == 1 and "--model" in r.stderr


RANKS = str(_RANKS)


@pytest.mark.skipif(not os.path.isfile(RANKS), reason="no local GPT-2 ranks file")
def test_cli_text_prompt(model_files, tmp_path):
    env = {"LLMC_GPT2_TIKTOKEN": RANKS}
    r = cli("--model", model_files["v3"], "--prompt", "A=B", "-n", 6, "--temperature", 0, env=env)
    assert r.returncode == 0, r.stderr
    from llmc.tokenizer import decode, encode, get_encoding
    enc = get_encoding(RANKS)
    ids = encode("A=B", enc)
    assert max(ids) < 64
    want = model_files["model"].generate(ids, max_new_tokens=6, temperature=0, eot=-1)
    assert r.stdout == decode(want, enc) + "\n"
    # the same prompt from a file, and with an explicit --tokenizer
    f = tmp_path / "p.txt"
    f.write_text("A=B")
    r2 = cli("--model", model_files["v3"], "--prompt-file", f, "-n", 6, "--temperature", 0, "--tokenizer", RANKS)
    assert r2.returncode == 0 and r2.stdout == r.stdout
    # empty prompt text
    r3 = cli("--model", model_files["v3"], "--prompt", "", env=env)
    assert r3.returncode == 1 and "empty" in r3.stderr


def test_stream_utf8_is_whole_characters():
    """The CLI's incremental printer never splits a UTF-8 character across tokens."""
    from llmc.generate import Utf8Printer

    chunks = []
    p = Utf8Printer(chunks.append)
    data = "héllo 世界 🙂".encode()
    for i in range(len(data)):  # one byte per "token"
        p.feed(data[i:i + 1])
    p.close()
    for c in chunks:
        c.encode("utf-8")  # each piece is valid text on its own
    assert "".join(chunks) == "héllo 世界 🙂"
    chunks.clear()
    p = Utf8Printer(chunks.append)
    p.feed(b"ok\xe4\xb8")  # cut in the middle of a character at the end
    p.close()
    assert "".join(chunks) == "ok\ufffd"


def test_cli_start_eot(tmp_path, enc):
    """--start-eot puts <|endoftext|> before a text prompt, as the fine-tuning examples have it."""
    path = tmp_path / "gpt2vocab.bin"
    llmc.GPT2.from_config("L=1,H=2,C=32,T=32", seed=3).save(path)
    prompt = "Words: stone\nFirst:"
    ids = enc.encode_ordinary(prompt)
    m = llmc.GPT2.from_pretrained(path)
    got = []
    for flag, start in (([], []), (["--start-eot"], [50256])):
        r = cli("--model", path, "--prompt", prompt, *flag, "-n", 6, "--seed", 2, "--ids", "--eot", -1)
        assert r.returncode == 0, r.stderr
        got.append(ids_of(r.stdout))
        assert got[-1] == m.generate(start + ids, max_new_tokens=6, seed=2, eot=-1).tolist(), flag
    assert got[0] != got[1]
    r = cli("--model", path, "--tokens", "1 2", "--start-eot")
    assert r.returncode == 1 and "--start-eot applies to a text prompt" in r.stderr


def session_steps(model, prompts, n, host, temperature, top_k, top_p, seed, eot=-1, logits=False, counters=False,
                  **options):
    """Every step's tokens of one session, (steps, batch); host: sample on the host (None: the
    default). logits: also every live sequence's next-token logits before each step; counters:
    also the session's run_ahead counters. options: more Session options."""
    s = _core.Session(model._m, prompts, n, temperature, top_k, top_p, seed, eot, host_sampling=host, **options)
    steps, seen = [], []
    try:
        while True:
            if logits:
                seen.append({b: l for b in range(len(prompts)) if (l := _next_logits(s, b)) is not None})
            out, alive = s.next()
            steps.append(out.copy())
            if alive == 0:
                got = (np.array(steps),) + ((seen,) if logits else ()) + ((s.run_ahead,) if counters else ())
                return got if len(got) > 1 else got[0]
    finally:
        s.end()


def _next_logits(session, b):
    """Sequence b's next-token logits, None once it has stopped."""
    try:
        return session.logits(b)
    except LlmcError:
        return None


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("kw", [dict(temperature=1.0, top_k=50, top_p=0.95), dict(temperature=0.8, top_k=0, top_p=0.9)],
                         ids=str)
def test_sampling_in_the_step_is_host_sampling(device, kw):
    """The backend's sampler runs inside each decode step (its draws uploaded with the ids; the
    prefill's logits are sampled apart): the same seed gives the host sampler's tokens, step by
    step, with sequences that stop at different steps (max_new 1 and 9 as well as 24)."""
    model = make_model(device, spread=1.0)
    for n in (1, 9, 24):
        prompts = [[1, 2, 3], [7], [5, 17, 42, 8]]
        host = session_steps(model, prompts, n, True, seed=5, **kw)
        inside = session_steps(model, prompts, n, False, seed=5, **kw)
        assert host.shape == (n, 3) and np.all(host >= 0)
        np.testing.assert_array_equal(inside, host)
    assert len(np.unique(host)) > 3  # really sampled


# ---------------------------------------------------------------- run_ahead

AHEAD_CASES = [  # (prompt lengths, max_new, eot picked from the plain run at (step, sequence) or None)
    ((3, 7, 1, 5), 20, None),    # nobody stops early: every speculative step is kept
    ((3, 7, 1, 5), 20, (4, 1)),  # an EOT mid-run: a speculative step discarded, the batch shrinks
    ((2,), 1, None),             # one new token: nothing to run ahead of
    ((4, 4, 2), 9, (0, 2)),      # EOT as the very first token of a sequence
    ((61, 3, 40), 30, None),     # near the context limit (64): that sequence stops on its own
]


AHEAD_MODES = {"greedy": (0.0, 0, 1.0), "sampled": (1.0, 50, 0.95)}


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("mode", AHEAD_MODES)
@pytest.mark.parametrize("lens,max_new,eot_at", AHEAD_CASES, ids=str)
def test_run_ahead_gives_the_same_tokens(device, mode, lens, max_new, eot_at):
    """run_ahead queues each step on the device's picks of the step before (greedy, or sampled with
    the draws taken ahead): the tokens are those of a session that waits for every step (sampled:
    on the host), with sequences that stop for EOT, max_new and the context limit; speculative
    steps are kept as the next step except where an EOT makes them moot."""
    model = make_model(device, spread=4.0 if mode == "greedy" else 1.0)
    rng = np.random.default_rng(sum(lens) + max_new)
    prompts = [rng.integers(0, 300, n).tolist() for n in lens]
    kw = dict(zip(("temperature", "top_k", "top_p"), AHEAD_MODES[mode]), seed=3)
    host = True if mode == "sampled" else None
    plain = session_steps(model, prompts, max_new, host, run_ahead=False, **kw)
    eot = -1 if eot_at is None else int(plain[eot_at])
    if eot >= 0:
        plain = session_steps(model, prompts, max_new, host, eot=eot, run_ahead=False, **kw)
        assert (plain == eot).any()  # someone stops at the EOT
    ahead, (on, kept, discarded) = session_steps(model, prompts, max_new, False if host else None, eot=eot,
                                                 counters=True, run_ahead=True, **kw)
    np.testing.assert_array_equal(ahead, plain)
    assert on
    if max_new > 2:
        assert kept >= len(plain) - 4 if eot < 0 else kept > 0
    if eot >= 0 and eot_at[0] > 0:
        assert discarded > 0


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("mode", AHEAD_MODES)
def test_run_ahead_logits_are_the_next_tokens(device, mode):
    """Session.logits under run_ahead (the speculative step has overwritten them: the pending step
    runs again, sampled with the draws it had) equal the logits of a session that waits, bit for
    bit, at every step, and the tokens stay the same."""
    model = make_model(device, spread=4.0 if mode == "greedy" else 1.0)
    prompts = [[5, 6, 7], [9], [1, 2, 3, 4, 5, 6]]
    kw = dict(zip(("temperature", "top_k", "top_p"), AHEAD_MODES[mode]), seed=4)
    host = False if mode == "sampled" else None
    a, la = session_steps(model, prompts, 8, host, logits=True, run_ahead=False, **kw)
    b, lb, (on, kept, discarded) = session_steps(model, prompts, 8, host, logits=True, counters=True,
                                                 run_ahead=True, **kw)
    np.testing.assert_array_equal(b, a)
    assert on and discarded > 0
    assert [sorted(d) for d in la] == [sorted(d) for d in lb]
    for step, (da, db) in enumerate(zip(la, lb)):
        for seq in da:
            np.testing.assert_array_equal(db[seq], da[seq], err_msg=f"step {step}, sequence {seq}")


def test_run_ahead_not_with_host_sampling_and_off_by_default():
    model = make_model("cpu")
    s = _core.Session(model._m, [[1, 2]], 4, 1.0, 0, 1.0, 1, -1, host_sampling=True, run_ahead=True)
    assert s.run_ahead == (False, 0, 0)  # the host samples each step from its logits
    s.end()
    s = _core.Session(model._m, [[1, 2]], 4, 0.0, 0, 1.0, 1, -1)
    assert s.run_ahead[0] == ("LLMC_RUN_AHEAD" in os.environ)
    s.end()


@pytest.mark.parametrize("device", BACKENDS)
def test_fused_layernorm_gives_the_same_bits(device, monkeypatch):
    """Decode with each layernorm inside the matmul after it (CUDA, up to 8 rows) gives the same
    logits, bit for bit, and the same tokens as the two kernels (LLMC_FUSE_LN=0), prefill of 11
    rows (never fused) included."""
    prompts = [[5, 6, 7], [9], list(range(1, 12))]
    kw = dict(temperature=0.0, top_k=0, top_p=1.0, seed=4)
    got = {}
    for fuse in ("2", "0"):  # 2: wherever the kernel can (every decode step here), not only where it pays
        monkeypatch.setenv("LLMC_FUSE_LN", fuse)  # read when the model opens its device
        got[fuse] = session_steps(make_model(device), prompts, 6, None, logits=True, **kw)
    np.testing.assert_array_equal(got["2"][0], got["0"][0])
    for step, (da, db) in enumerate(zip(got["2"][1], got["0"][1])):
        assert sorted(da) == sorted(db)
        for seq in da:
            np.testing.assert_array_equal(da[seq], db[seq], err_msg=f"step {step}, sequence {seq}")

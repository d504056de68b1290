"""The one-kernel decode step (cuda/decode_persistent.cu) against the per-op decode path.

Both run the same session step by step on the same model: the logits of every live row must
agree within bf16 tolerance and the greedy tokens must be the same (where a step's top two
logits are within bf16 noise a different pick is allowed, and that sequence is compared no
further). The recompute tests of test_generate.py run the one-kernel path too (it is the
default); these add shapes it splits differently and batches it hands back to the per-op path."""
import numpy as np
import pytest

from llmc import _core
from conftest import BACKENDS, rel_err
from test_generate import make_model

pytestmark = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs a CUDA device")

SHAPES = {
    "small": dict(num_layers=2, num_heads=2, channels=128, max_seq_len=96, vocab_size=300),
    "d12-wide": dict(num_layers=2, num_heads=12, channels=768, max_seq_len=96, vocab_size=500),
    "d48-wide": dict(num_layers=1, num_heads=25, channels=1600, max_seq_len=96, vocab_size=333),
}


def step_both(model, prompts, max_new, **kw):
    """Runs persistent and per-op sessions side by side; returns the worst logit error, the rows
    compared, the steps each session ran as one kernel, and which rows kept the same tokens."""
    B = len(prompts)
    one = _core.Session(model._m, prompts, max_new, 0.0, 0, 1.0, 5, -1, persistent=True, **kw)
    ops = _core.Session(model._m, prompts, max_new, 0.0, 0, 1.0, 5, -1, persistent=False, **kw)
    same = [True] * B
    worst, compared = 0.0, 0
    try:
        for _ in range(max_new):
            for b in range(B):
                if same[b]:
                    a, r = one.logits(b), ops.logits(b)
                    err = rel_err(a, r)
                    assert err <= 2e-2, f"row {b}: relative error {err:.3e}"
                    worst, compared = max(worst, err), compared + 1
            t1, _ = one.next()
            t2, _ = ops.next()
            for b in range(B):
                if same[b] and t1[b] != t2[b]:
                    same[b] = False  # a near tie went the other way: the rows differ from here on
        return worst, compared, one.persistent_steps, ops.persistent_steps, same
    finally:
        one.end()
        ops.end()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("B", [1, 3, 8])
def test_persistent_matches_per_op(shape, B):
    model = make_model("cuda", cfg=dict(SHAPES[shape]))
    rng = np.random.default_rng(B)
    V = SHAPES[shape]["vocab_size"]
    prompts = [rng.integers(0, V, n).tolist() for n in rng.integers(1, 20, B)]
    worst, compared, steps, ops_steps, same = step_both(model, prompts, 24)
    assert steps == 24 and ops_steps == 0
    assert compared >= 20 * B
    assert sum(same) >= B - 1, f"greedy tokens diverged in {B - sum(same)} of {B} rows"
    assert worst < 1e-2


def test_batch_beyond_the_kernel_falls_back():
    """Nine rows are more than the kernel takes: the per-op path runs, with the same results."""
    model = make_model("cuda", cfg=dict(SHAPES["small"]))
    rng = np.random.default_rng(9)
    prompts = [rng.integers(0, 300, 5).tolist() for _ in range(9)]
    worst, _, steps, _, same = step_both(model, prompts, 6)
    assert steps == 0 and worst == 0.0 and all(same)


def test_persistent_without_graphs_and_long_cache():
    """Eager launches (no device graph) and caches of several hundred keys per row."""
    cfg = dict(SHAPES["small"], max_seq_len=1024)
    model = make_model("cuda", cfg=cfg)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 300, n).tolist() for n in (700, 4, 1000)]
    worst, _, steps, _, same = step_both(model, prompts, 8, graphs=False)
    assert steps == 8 and worst < 1e-2 and sum(same) >= 2

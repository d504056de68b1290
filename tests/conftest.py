"""Shared test fixtures: backends to parametrize over, and the normwise error check."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# where the CLIs (train_gpt2, ...) are: the repo root (`make` copies them there) unless
# LLMC_BIN_DIR names another build's dir (`make asan` points it at build-asan/)
BIN_DIR = os.path.abspath(os.environ.get("LLMC_BIN_DIR") or REPO)
try:  # the installed package, or the source tree's pure-Python modules
    import llmc  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(REPO, "python"))

SHARED = Path(REPO).parent / "shared" / "data"
RANKS = SHARED / "gpt2.tiktoken"
SHAKESPEARE = SHARED / "shakespeare.txt"


@pytest.fixture
def enc(monkeypatch):
    """GPT-2's encoding from the shared ranks file, else tiktoken's own, else skip."""
    from llmc import tokenizer as tok
    if RANKS.is_file():
        monkeypatch.setenv(tok.ENV_VAR, str(RANKS))
    try:
        return tok.get_encoding()
    except RuntimeError:
        pytest.skip(f"no GPT-2 ranks: {RANKS} is missing and tiktoken cannot download them")


def cuda_available() -> bool:
    try:
        from llmc import _core
        if "cuda" not in _core.backends():
            return False
        _core.Device("cuda")
        return True
    except Exception:
        return False


HAVE_CUDA = cuda_available()
BACKENDS = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                               pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")])]

# normwise relative tolerances per activation dtype
TOL = {"f32": 1e-5, "bf16": 2e-2}


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf so it never passes."""
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape}"
    if not np.all(np.isfinite(out)):
        return float("inf")
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0))


def matmul_floor(x64, w64):
    """The size matmul outputs have without cancellation, ||(|x| |w|^T)|| / sqrt(C): for random signs
    below ||ref||, so only a cancelling case (a few outputs, N = OC = 1) is measured against it."""
    return np.linalg.norm(np.abs(x64) @ np.abs(w64).T) / np.sqrt(x64.shape[1])


def assert_close(out, ref, tol, what="", floor=None):
    """Normwise relative error at most tol. floor (an array or a norm): the size the result has
    without cancellation, for results that can sum to far less than their terms (one output of a
    dot product, b1 m + (1 - b1) g); the error is then measured against the larger of the two."""
    err = rel_err(out, ref)
    if floor is not None:
        ref_norm = np.linalg.norm(np.asarray(ref, np.float64))
        denom = max(ref_norm, float(np.linalg.norm(np.asarray(floor, np.float64))))
        err = err * (ref_norm or 1.0) / (denom or 1.0)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


@pytest.fixture(params=BACKENDS)
def device(request):
    from llmc import _core
    return _core.Device(request.param)

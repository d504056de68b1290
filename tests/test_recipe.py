"""scripts/gpt2_124M.sh, the GPT-2 124M recipe, scaled down to a tiny CPU run (SMALL=1, ./train_gpt2):
it runs to its DONE file with the recipe's schedule (warmup, cosine to 0), logs val loss and
HellaSwag, draws curves.png, and a second call resumes instead of starting over."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import BIN_DIR, REPO
from helpers import write_tiny_shards
from test_eval import ITEMS, toy_encode
from llmc import eval as ev

TRAIN_BIN = os.path.join(BIN_DIR, "train_gpt2")
pytestmark = pytest.mark.skipif(not os.access(TRAIN_BIN, os.X_OK), reason="./train_gpt2 not built (run make)")


def recipe_env(tmp_path, **extra):
    train, val = write_tiny_shards(tmp_path, n_train=6000)
    ev.write_eval_file(tmp_path / "hs.bin", ITEMS, toy_encode)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(ev.__file__)))
    env = dict(os.environ, SMALL="1", TRAINER=TRAIN_BIN, TRAIN=train, VAL=val, MODEL="L=2,H=2,C=32,T=64,V=64",
               B="4", T="64", STEPS="8", WARMUP="2", VAL_EVERY="4", CKPT="4", VAL_BATCHES="2",
               HS_FILE=str(tmp_path / "hs.bin"), OUT=str(tmp_path / "run"), OMP_NUM_THREADS="1",
               LLMC_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p]))
    env.update(extra)
    return env


SCRIPT = os.path.join(REPO, "scripts", "gpt2_124M.sh")


def test_recipe_small(tmp_path):
    pytest.importorskip("matplotlib")
    env = recipe_env(tmp_path)
    script = SCRIPT
    r = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "run"
    assert (out / "DONE_00000008").exists() and (out / "curves.png").exists()
    log = [json.loads(line) for line in (out / "main.jsonl").read_text().splitlines()]
    lrs = [e["lr"] for e in log if "lr" in e]
    assert lrs[0] == pytest.approx(3e-4) and lrs[1] == pytest.approx(6e-4)  # 2 warmup steps
    assert lrs[-1] < lrs[2] and lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)  # then decay
    assert [e["step"] for e in log if "val_loss" in e] == [0, 4, 8]
    assert [e["step"] for e in log if "eval_acc_norm" in e] == [0, 4, 8]
    r = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "done:" in r.stdout and "step " not in r.stdout  # already done: nothing trains


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_recipe_on_two_ranks(tmp_path):
    """LAUNCH="mpirun -np 2": the recipe on two processes, ZeRO-1, the same total batch, to its DONE file."""
    pytest.importorskip("matplotlib")
    env = recipe_env(tmp_path, LAUNCH="mpirun -np 2", B="4", T="64", TOTAL="512", OMPI_ALLOW_RUN_AS_ROOT="1",
                     OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    r = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "data parallel: 2 ranks, ZeRO-1, 1 micro-step(s) per rank" in r.stdout
    assert r.stdout.count("step     8/8") == 1  # rank 0 alone prints
    assert (tmp_path / "run" / "DONE_00000008").exists() and (tmp_path / "run" / "curves.png").exists()

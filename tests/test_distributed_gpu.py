"""Data parallelism on GPUs over NCCL: ./train_gpt2cu through the engine on one GPU, and (with two
GPUs) two ranks launched as torchrun would, against one process at the same total batch."""
import os
import re
import shutil
import socket
import subprocess

import numpy as np
import pytest

from conftest import HAVE_CUDA, REPO
from helpers import write_shard

BIN = os.path.join(REPO, "train_gpt2cu")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not HAVE_CUDA or not os.path.exists(BIN), reason="needs a GPU and ./train_gpt2cu")]


def gpu_count():
    if not HAVE_CUDA or not shutil.which("nvidia-smi"):
        return 0
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len(r.stdout.splitlines()) if r.returncode == 0 else 0


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu_dp")
    rng = np.random.default_rng(0)
    write_shard(str(d / "t_train_000000.bin"), rng.integers(0, 50257, 40_000))
    write_shard(str(d / "t_val_000000.bin"), rng.integers(0, 50257, 10_000))
    return d


def argv(shards, out, *extra):
    return [BIN, "-i", str(shards / "t_train_*.bin"), "-j", str(shards / "t_val_*.bin"), "-e", "L=2,H=4,C=256,T=128",
            "-b", "4", "-t", "128", "-l", "1e-3", "-u", "2", "-q", "0.1", "-x", "8", "-v", "4", "-m", "4", "-s", "0",
            "-n", "4", "-o", str(out), *map(str, extra)]


def losses(text):
    return [float(m.group(1)) for m in re.finditer(r"step\s+\d+/\d+ \| loss (\S+)", text)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.parametrize("zero", [0, 1])
def test_nccl_world_of_one_matches_the_plain_run(shards, tmp_path, zero):
    plain = run(argv(shards, tmp_path / "plain"))
    nccl = run(argv(shards, tmp_path / "nccl", "--engine-at-one", 1, "-z", zero, "-pi", "tcp"))
    assert f"data parallel: 1 ranks, ZeRO-{zero}" in nccl.stdout
    a, b = losses(plain.stdout), losses(nccl.stdout)
    assert len(a) == 8 and a == pytest.approx(b, rel=1e-4)


@pytest.mark.skipif(gpu_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("zero", [0, 1])
def test_two_gpus_match_one(shards, tmp_path, zero):
    one = run(argv(shards, tmp_path / "one", "-d", 1024))
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen(argv(shards, tmp_path / "two", "-d", 1024, "-z", zero), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    a, b = losses(one.stdout), losses(outs[0][0])
    assert len(a) == 8 and a == pytest.approx(b, rel=2e-3)  # bf16 sums in another order

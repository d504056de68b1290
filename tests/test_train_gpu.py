"""./train_gpt2cu end to end on a GPU: bit-exact resume and run-to-run determinism."""
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import HAVE_CUDA, REPO

BIN = os.path.join(REPO, "train_gpt2cu")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not HAVE_CUDA or not os.path.exists(BIN), reason="needs a GPU and ./train_gpt2cu")]


def write_shard(path, tokens):
    header = np.zeros(256, np.int32)
    header[:3] = [20240520, 1, len(tokens)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, np.uint16).tobytes())


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu_data")
    rng = np.random.default_rng(0)
    write_shard(d / "t_train_000000.bin", rng.integers(0, 50257, 40_000))
    write_shard(d / "t_val_000000.bin", rng.integers(0, 50257, 10_000))
    return d


def train(shards, out, *extra):
    cmd = [BIN, "-i", str(shards / "t_train_*.bin"), "-j", str(shards / "t_val_*.bin"),
           "-e", "L=2,H=4,C=256,T=128", "-b", "4", "-t", "128", "-l", "1e-3", "-v", "0", "-s", "0",
           "-o", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"step\s+(\d+)/\d+ \| loss (\S+)", r.stdout)}


def test_resume_is_bit_exact(shards, tmp_path):
    straight = train(shards, tmp_path / "a", "-x", "20")
    train(shards, tmp_path / "b", "-x", "10", "-n", "10")
    resumed = train(shards, tmp_path / "b", "-x", "20", "-y", "1")
    assert sorted(resumed) == list(range(11, 21))
    assert all(resumed[s] == straight[s] for s in resumed), (straight, resumed)


def test_same_seed_same_losses(shards, tmp_path):
    a = train(shards, tmp_path / "a", "-x", "8")
    b = train(shards, tmp_path / "b", "-x", "8")
    assert a == b and len(a) == 8


def test_recompute_trains(shards, tmp_path):
    base = train(shards, tmp_path / "a", "-x", "5")
    rec = train(shards, tmp_path / "b", "-x", "5", "-r", "2")
    for s in base:
        assert abs(float(base[s]) - float(rec[s])) < 0.05 * abs(float(base[s]))


def test_out_of_memory_is_reported_up_front(shards, tmp_path):
    """A batch that cannot fit fails before training, with the numbers and what to change."""
    write_shard(tmp_path / "big_train_000000.bin", np.zeros(512 * 1024 + 1, np.int64))
    cmd = [BIN, "-i", str(tmp_path / "big_train_*.bin"), "-e", "d12", "-b", "512", "-t", "1024",
           "-x", "1", "-v", "0", "-s", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not enough device memory" in r.stderr and "GiB" in r.stderr and "-b" in r.stderr, r.stderr

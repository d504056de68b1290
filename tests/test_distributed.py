"""Data parallelism on the CPU over MPI: mpirun -np N ./train_gpt2 against one process.

Every comparison is bit for bit (checkpoint bytes): the ranks' gradients and losses are summed in
rank order, which is the order in which one process with --exact-accum 1 sums its micro-steps.
Settings are not trivial: warmup then cosine decay to a floor, weight decay, clipping, val losses,
three ranks (uneven shards: the association of a sum matters from three on)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import BIN_DIR
from helpers import random_tokens, write_shard, write_tiny_shards

BIN = os.path.join(BIN_DIR, "train_gpt2")
MPIRUN = shutil.which("mpirun")
pytestmark = [
    pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)"),
    pytest.mark.skipif(MPIRUN is None, reason="no mpirun (apt-get install openmpi-bin libopenmpi-dev)"),
]
MODEL = "L=2,H=2,C=32,T=32,V=64"
# OpenMPI refuses root without these, and wants slots for more ranks than cores
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpdata")
    train, val = write_tiny_shards(str(d))
    return dict(train=train, val=val, dir=d)


def args(data, out, *extra):
    return ["-i", data["train"], "-j", data["val"], "-e", MODEL, "-b", "2", "-t", "16", "-x", "6", "-u", "2",
            "-q", "0.1", "-l", "1e-2", "-c", "0.1", "-v", "3", "-m", "5", "-s", "0", "-n", "3", "-o", str(out),
            *map(str, extra)]


def run(n, argv, timeout=120):
    cmd = [BIN, *argv] if n == 0 else [MPIRUN, "-np", str(n), BIN, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def losses(r):
    return [line.split("|")[1].strip() for line in r.stdout.splitlines() if line.startswith("step ")]


def vals(r):
    return [line.split()[2] for line in r.stdout.splitlines() if line.startswith("val loss")]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def state_body(path):
    return read(path)[1024:]  # the header says how many processes wrote it; the rest is the same


def test_ranks_reproduce_one_process_bit_for_bit(data, tmp_path):
    one = ok(run(0, args(data, tmp_path / "one", "-d", 96, "--exact-accum", 1)))
    three = ok(run(3, args(data, tmp_path / "three", "-d", 96)))
    assert "data parallel: 3 ranks, ZeRO-0, 1 micro-step(s) per rank" in three.stdout
    assert losses(one) == losses(three) and len(losses(one)) == 6
    assert vals(one) == vals(three) and len(vals(one)) == 3
    for name in ("model_00000006.bin", "model_00000003.bin"):
        assert read(tmp_path / "one" / name) == read(tmp_path / "three" / name)
    assert state_body(tmp_path / "one" / "state_00000006.bin") == state_body(tmp_path / "three" / "state_00000006.bin")
    # only rank 0 writes and prints
    assert three.stdout.count("step     1/6") == 1
    assert sorted(os.listdir(tmp_path / "three")) == sorted(os.listdir(tmp_path / "one"))


@pytest.mark.parametrize("zero", [0, 1])
def test_overlap_sends_the_same_sums(data, tmp_path, zero):
    """--overlap 1 (the default) sends each layer's gradients to their owners as the backward finishes
    it; the sums are the same bits as one reduction after the backward."""
    on = ok(run(3, args(data, tmp_path / "on", "-d", 192, "-z", zero)))
    off = ok(run(3, args(data, tmp_path / "off", "-d", 192, "-z", zero, "--overlap", 0)))
    assert losses(on) == losses(off)
    for name in ("model_00000006.bin", "state_00000006.bin"):
        assert read(tmp_path / "on" / name) == read(tmp_path / "off" / name)


def test_accumulation_on_every_rank(data, tmp_path):
    """2 ranks x 2 micro-steps: the same batches as one process with 4, summed in another order."""
    one = ok(run(0, args(data, tmp_path / "one", "-d", 128)))
    two = ok(run(2, args(data, tmp_path / "two", "-d", 128)))
    assert "data parallel: 2 ranks, ZeRO-0, 2 micro-step(s) per rank" in two.stdout
    a = [float(x.split()[1]) for x in losses(one)]
    b = [float(x.split()[1]) for x in losses(two)]
    assert a == pytest.approx(b, rel=1e-5)


def test_zero1_equals_zero0(data, tmp_path):
    z0 = ok(run(3, args(data, tmp_path / "z0", "-d", 96, "-z", 0)))
    z1 = ok(run(3, args(data, tmp_path / "z1", "-d", 96, "-z", 1)))
    assert "ZeRO-1" in z1.stdout
    assert losses(z0) == losses(z1)
    for name in ("model_00000006.bin", "state_00000006.bin"):
        assert read(tmp_path / "z0" / name) == read(tmp_path / "z1" / name)


@pytest.mark.parametrize("ranks,d", [(1, 64), (2, 64), (2, 128), (1, 128), (4, 128)])
def test_two_rank_checkpoint_resumes_on_any_world(data, tmp_path, ranks, d):
    """Saved by 2 ranks with ZeRO-1 at step 3, resumed on 1, 2 or 4. Bit for bit where the sums keep
    their order (each rank one micro-step, or the same world); else within fp32 rounding."""
    full = ok(run(2, args(data, tmp_path / "full", "-d", d, "-z", 1)))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("model_00000003.bin", "state_00000003.bin", "DONE_00000003"):
        shutil.copy(tmp_path / "full" / name, resumed / name)
    extra = ["-y", 1, "-d", d, "-z", 1] + (["--exact-accum", 1] if ranks == 1 else [])
    r = ok(run(0 if ranks == 1 else ranks, args(data, resumed, *extra)))
    assert "resumed from" in r.stdout and len(losses(r)) == 3
    if d == 64 or ranks == 2:
        assert losses(r) == losses(full)[3:]
        assert read(resumed / "model_00000006.bin") == read(tmp_path / "full" / "model_00000006.bin")
        assert state_body(resumed / "state_00000006.bin") == state_body(tmp_path / "full" / "state_00000006.bin")
    else:
        a = [float(x.split()[1]) for x in losses(r)]
        b = [float(x.split()[1]) for x in losses(full)[3:]]
        assert a == pytest.approx(b, rel=1e-5) and a != [a[0]] * 3


def mpmd(data, out, *rank1_extra, common=()):
    """Rank 0 with good settings, rank 1 with rank1_extra appended (mpirun's colon syntax)."""
    base = args(data, out, "-d", 64, *common)
    cmd = [MPIRUN, "-np", "1", BIN, *base, ":", "-np", "1", BIN, *base, *map(str, rank1_extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def test_a_rank_that_cannot_start_stops_both(data, tmp_path):
    r = mpmd(data, tmp_path / "o", "-i", str(tmp_path / "missing_*.bin"))
    assert r.returncode != 0
    assert r.stderr.count("rank 1: train data: no files match") >= 2, r.stderr  # both ranks say it


def test_a_rank_that_fails_mid_run_stops_both(data, tmp_path):
    tokens = random_tokens(4000, 64, 0)
    tokens[33 * 3 + 5] = 100  # out of the vocabulary, in rank 1's second batch
    bad = tmp_path / "bad_train_000.bin"
    write_shard(str(bad), tokens)
    r = mpmd(data, tmp_path / "o", "-i", str(bad))
    assert r.returncode != 0
    assert "step     1/6" in r.stdout  # the first step trained
    assert r.stderr.count("rank 1: input token id 100") >= 2, r.stderr


def test_ranks_with_different_settings_refuse(data, tmp_path):
    r = mpmd(data, tmp_path / "o", "-l", "1e-3")
    assert r.returncode != 0
    assert "rank 1's -l is 0.001, rank 0's is 0.01: every rank must train with the same settings" in r.stderr


def test_cpu_ranks_need_mpirun(data, tmp_path):
    env = dict(ENV, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    r = subprocess.run([BIN, *args(data, tmp_path / "o")], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "the CPU backend's ranks talk over MPI: launch with mpirun" in r.stderr


def test_launcher_environment(tmp_path):
    from llmc import _core
    code = "from llmc import _core; print(_core.comm_env())"

    def env_of(**kv):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI", "SLURM_"))}
        env.update(kv)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)

    assert env_of().stdout.strip() == "(1, 0, 0)"
    assert env_of(WORLD_SIZE="4", RANK="3", LOCAL_RANK="1").stdout.strip() == "(4, 3, 1)"
    assert env_of(SLURM_NTASKS="8", SLURM_PROCID="5", SLURM_LOCALID="1").stdout.strip() == "(8, 5, 1)"
    bad = env_of(WORLD_SIZE="2", RANK="2")
    assert bad.returncode != 0 and "the rank must lie in [0, 2)" in bad.stderr
    assert _core.optimizer_bytes(124_475_904, 4, 1) == 12 * ((124_475_904 + 3) // 4 + 63 & ~63)


def test_python_train_under_mpirun(data, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import json, sys, llmc\n"
        f"m = llmc.GPT2.from_config({MODEL!r}, seed=1)\n"
        f"h = m.train({data['train']!r}, steps=4, batch_size=2, seq_len=16, total_batch=64, lr=1e-2, warmup=2,\n"
        "            progress=False, zero_stage=int(sys.argv[1]), out_dir=sys.argv[2], ckpt_every=4,\n"
        "            exact_accum=sys.argv[1] == '0')\n"
        "with open(f'{sys.argv[2]}.{m.rank}.json', 'w') as f:\n"
        "    json.dump([m.rank, m.world, [r['loss'] for r in h]], f)\n")
    for n, zero, out in ((0, 0, "one"), (2, 1, "two")):
        cmd = [sys.executable, str(script), str(zero), str(tmp_path / out)]
        r = subprocess.run([MPIRUN, "-np", str(n), *cmd] if n else cmd, capture_output=True, text=True, env=ENV,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    one = json.loads((tmp_path / "one.0.json").read_text())
    rank0 = json.loads((tmp_path / "two.0.json").read_text())
    rank1 = json.loads((tmp_path / "two.1.json").read_text())
    assert one[:2] == [0, 1] and rank0[:2] == [0, 2] and rank1 == [1, 2, []]  # rank 0 alone reports
    assert one[2] == rank0[2] and len(one[2]) == 4  # exact_accum=True: bit for bit
    assert os.listdir(tmp_path / "two")  # rank 0 wrote the checkpoint


def test_one_rank_through_the_engine(data, tmp_path):
    """--engine-at-one 1: one process goes through MPI's sums and the ranks' norm, with the same bits."""
    plain = ok(run(0, args(data, tmp_path / "plain")))
    engine = ok(run(1, args(data, tmp_path / "engine", "--engine-at-one", 1, "-z", 1)))
    assert "data parallel: 1 ranks, ZeRO-1" in engine.stdout
    assert losses(plain) == losses(engine)
    assert read(tmp_path / "plain" / "model_00000006.bin") == read(tmp_path / "engine" / "model_00000006.bin")


def test_eval_file_split_over_ranks(data, tmp_path):
    """-h 1: the eval's batches are split over the ranks and their counts summed: one process's scores."""
    from test_eval import ITEMS, toy_encode
    from llmc import eval as ev
    ev.write_eval_file(tmp_path / "hs.bin", ITEMS, toy_encode)
    extra = ["-e", "L=2,H=2,C=32,T=64,V=64", "-b", 4, "-t", 64, "-h", 1, "--eval-file", tmp_path / "hs.bin"]
    one = ok(run(0, args(data, tmp_path / "one", *extra, "-d", 768, "--exact-accum", 1)))
    three = ok(run(3, args(data, tmp_path / "three", *extra, "-d", 768)))
    scores = [[line for line in r.stdout.splitlines() if line.startswith("HellaSwag")] for r in (one, three)]
    assert len(scores[0]) == 3 and scores[0] == scores[1], scores
    assert f"{len(ITEMS)} items" in scores[0][0]

"""How the ranks of a multi-GPU run meet without MPI (src/comm_bootstrap.c): rank 0's blob (NCCL's
unique id) reaches every rank over TCP or through a shared file, whichever rank starts first, and
every failure (a mismatched world, a missing rank 0, a previous run's file) is a clear message
within the timeout instead of a hang. Runs on any machine: no GPU, no NCCL."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from llmc import _core

# One rank in its own process: prints "ready" once imported, then a JSON line with its blob or error.
CHILD = r"""
import json, sys
from llmc import _core
a = json.loads(sys.argv[1])
print("ready", flush=True)
try:
    out = _core.bootstrap_blob(a["method"], a["rank"], a["world"], bytes.fromhex(a["blob"]), addr="127.0.0.1",
                               port=a.get("port", 0), path=a.get("path", ""), timeout=a["timeout"])
    print(json.dumps({"blob": out.hex()}), flush=True)
except RuntimeError as e:
    print(json.dumps({"err": str(e)}), flush=True)
"""

BLOB_BYTES = 128  # sizeof(ncclUniqueId)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def child_env():
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(_core.__file__)))
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Rank:
    """A rank in a child process."""

    def __init__(self, method, rank, world, blob, timeout=10.0, **where):
        args = dict(method=method, rank=rank, world=world, blob=blob.hex(), timeout=timeout, **where)
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=child_env())

    def wait_ready(self):
        line = self.p.stdout.readline()
        assert line.strip() == "ready", f"child did not start: {line!r} {self.p.stderr.read()}"

    def result(self, timeout=20):
        out, err = self.p.communicate(timeout=timeout)
        assert self.p.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def run_world(method, world, rank0_last=True, timeout=10.0, **where):
    """world ranks in processes, rank 0 started once the others wait for it; each one's result."""
    blob = os.urandom(BLOB_BYTES)
    peers = [Rank(method, r, world, bytes(BLOB_BYTES), timeout, **where) for r in range(1, world)]
    if rank0_last:
        for p in peers:
            p.wait_ready()
        time.sleep(0.3)  # the peers are now retrying against a rank 0 that does not exist yet
    root = Rank(method, 0, world, blob, timeout, **where)
    return blob, [root.result()] + [p.result() for p in peers]


def threads(calls):
    """Runs bootstrap_blob calls at once in threads (the C call drops the GIL): results or errors."""
    results = [None] * len(calls)

    def one(i, kw):
        try:
            results[i] = {"blob": _core.bootstrap_blob(**kw)}
        except RuntimeError as e:
            results[i] = {"err": str(e)}

    ts = [threading.Thread(target=one, args=(i, kw)) for i, kw in enumerate(calls)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return results


def test_tcp_every_rank_gets_rank0_blob():
    blob, res = run_world("tcp", 3, port=free_port())
    assert [r.get("blob") for r in res] == [blob.hex()] * 3, res


def test_file_every_rank_gets_rank0_blob_and_leaves_nothing(tmp_path):
    path = tmp_path / "nccl_id"
    blob, res = run_world("file", 3, path=str(path))
    assert [r.get("blob") for r in res] == [blob.hex()] * 3, res
    assert os.listdir(tmp_path) == []  # no record, acks or temp files: the next run starts clean


def test_tcp_rank0_first_works_too():
    blob, res = run_world("tcp", 2, rank0_last=False, port=free_port())
    assert [r.get("blob") for r in res] == [blob.hex()] * 2, res


@pytest.mark.parametrize("method", ["tcp", "file"])
def test_mismatched_world_fails_on_both_sides(method, tmp_path):
    where = dict(port=free_port()) if method == "tcp" else dict(path=str(tmp_path / "id"))
    t0 = time.monotonic()
    peer = Rank(method, 1, 2, bytes(BLOB_BYTES), 10.0, **where)
    root = Rank(method, 0, 3, os.urandom(BLOB_BYTES), 10.0, **where)
    r0, r1 = root.result(), peer.result()
    assert time.monotonic() - t0 < 8  # refused at once, not after the timeout
    assert r0.get("err", "").startswith("rank 0:") and "world of 2" in r0["err"] and "world of 3" in r0["err"], r0
    assert r1.get("err", "").startswith("rank 1:") and "world of 2" in r1["err"] and "world of 3" in r1["err"], r1
    if method == "file":
        assert os.listdir(tmp_path) == []


def test_tcp_no_rank0_times_out_naming_the_address():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"rank 1: no rank 0 listening at 127\.0\.0\.1:{port} after 1 s"):
        _core.bootstrap_blob("tcp", 1, 2, bytes(BLOB_BYTES), port=port, timeout=1.0)
    assert 0.9 < time.monotonic() - t0 < 3


def test_file_no_rank0_times_out_naming_the_path(tmp_path):
    path = tmp_path / "id"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"rank 2: no rank 0 wrote {path} within 1 s"):
        _core.bootstrap_blob("file", 2, 3, bytes(BLOB_BYTES), path=str(path), timeout=1.0)
    assert 0.9 < time.monotonic() - t0 < 3
    assert os.listdir(tmp_path) == []


def test_tcp_rank0_times_out_naming_the_missing_ranks():
    port = free_port()
    r0, r1 = threads([dict(method="tcp", rank=0, world=3, blob=os.urandom(16), port=port, timeout=1.5),
                      dict(method="tcp", rank=1, world=3, blob=bytes(16), port=port, timeout=1.5)])
    assert "1 of 2 arrived (missing: 2)" in r0.get("err", ""), r0
    assert "blob" in r1  # it got the id: the NCCL init after it is what fails


def test_file_rank0_gives_up_and_the_waiting_rank_hears_it(tmp_path):
    path = str(tmp_path / "id")
    r0, r1 = threads([dict(method="file", rank=0, world=3, blob=os.urandom(16), path=path, timeout=1.5),
                      dict(method="file", rank=1, world=3, blob=bytes(16), path=path, timeout=10.0)])
    assert "1 of 2 arrived (missing: 2)" in r0.get("err", ""), r0
    assert "rank 1: rank 0 gave up" in r1.get("err", ""), r1  # at once, not after its own 10 s
    assert os.listdir(tmp_path) == []


def test_file_existing_is_refused_and_kept(tmp_path):
    path = tmp_path / "id"
    path.write_bytes(b"a previous run's")
    with pytest.raises(RuntimeError, match=r"rank 0: .*id exists: a previous run's\? remove it"):
        _core.bootstrap_blob("file", 0, 2, os.urandom(16), path=str(path), timeout=5.0)
    assert path.read_bytes() == b"a previous run's"


def test_tcp_two_processes_with_the_same_rank_are_refused():
    port = free_port()
    res = threads([dict(method="tcp", rank=0, world=3, blob=b"x" * 16, port=port, timeout=5.0)] +
                  [dict(method="tcp", rank=1, world=3, blob=bytes(16), port=port, timeout=5.0)] * 2)
    assert "rank 1 connected twice" in res[0].get("err", ""), res
    assert sorted("blob" in r for r in res[1:]) == [False, True], res
    assert any("two processes were given the same rank" in r.get("err", "") for r in res[1:]), res


def test_world_of_one_and_bad_arguments():
    assert _core.bootstrap_blob("tcp", 0, 1, b"abc") == b"abc"  # nobody to meet
    with pytest.raises(RuntimeError, match="rank 3: not a rank of a world of 2"):
        _core.bootstrap_blob("tcp", 3, 2, b"abc", port=29500)
    with pytest.raises(RuntimeError, match="port must be 1..65535"):
        _core.bootstrap_blob("tcp", 1, 2, b"abc", port=0)
    with pytest.raises(RuntimeError, match="timeout must be > 0"):
        _core.bootstrap_blob("file", 1, 2, b"abc", path="/nonexistent/x", timeout=0)
    with pytest.raises(RuntimeError, match="needs a path"):
        _core.bootstrap_blob("file", 1, 2, b"abc")
    with pytest.raises(RuntimeError, match="unknown bootstrap method"):
        _core.bootstrap_blob("mpi", 0, 2, b"abc")

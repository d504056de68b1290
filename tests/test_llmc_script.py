"""llm.c's own run script carries over: its loop of `-y 1` runs ends when the DONE file of the
last step appears, a kill in the middle resumes, and the losses match a straight run."""
import json
import os
import signal
import subprocess

import pytest

from conftest import BIN_DIR, REPO
from helpers import write_tiny_shards

SCRIPT = os.path.join(REPO, "tests", "scripts", "run_gpt2_124M_tiny.sh")
BIN = os.path.join(BIN_DIR, "train_gpt2")
pytestmark = pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="./train_gpt2 not built (run make)")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive", TRAIN=BIN)


def run_script(data, out, timeout=120):
    env = dict(ENV, DATA=str(data), OUT=str(out))
    return subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=timeout)


def train_losses(out):
    return {e["step"]: e["train_loss"] for e in map(json.loads, open(out / "main.jsonl")) if "train_loss" in e}


@pytest.fixture
def data(tmp_path):
    write_tiny_shards(tmp_path, n_train=20000, n_val=700)
    return tmp_path


def test_script_runs_to_its_done_file(data, tmp_path):
    out = tmp_path / "straight"
    r = run_script(data, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DONE_00000012 exists. Exiting the loop." in r.stdout
    assert sorted(p.name for p in out.glob("DONE_*")) == ["DONE_00000004", "DONE_00000008", "DONE_00000012"]
    assert sorted(train_losses(out)) == list(range(1, 13))
    for note in ("-h 1", "-z 1"):  # llm.c flags llmc takes with a note
        assert note in r.stdout
    lines = (out / "main.log").read_text().splitlines()  # llm.c's log format, for llm.c's tools
    assert lines[0].startswith("s:0 tel:") and lines[1].startswith("s:0 trl:") and "norm:" in lines[1]


def test_script_resumes_after_a_kill(data, tmp_path):
    straight = tmp_path / "straight"
    assert run_script(data, straight).returncode == 0
    out = tmp_path / "killed"
    env = dict(ENV, DATA=str(data), OUT=str(out))
    script = subprocess.Popen(["bash", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    killed, lines = False, []
    for line in script.stdout:  # kill the trainer right after its first checkpoint, mid-run
        lines.append(line)
        if not killed and "saved checkpoint" in line and "model_00000004.bin" in line:
            trainer = subprocess.run(["pgrep", "-P", str(script.pid), "-f", "train_gpt2"], capture_output=True,
                                     text=True).stdout.split()
            for pid in trainer:
                os.kill(int(pid), signal.SIGKILL)
                killed = True
    script.wait(timeout=120)
    stdout = "".join(lines)
    assert script.returncode == 0, stdout
    assert killed, "the trainer finished before it could be killed"
    assert "resumed from" in stdout and "Exiting the loop." in stdout
    assert train_losses(out) == train_losses(straight)
    for name in ("model_00000012.bin", "state_00000012.bin"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name

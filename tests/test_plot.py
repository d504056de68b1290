"""llmc.plot: curves from a real main.log (train, val; HellaSwag when logged), several runs overlaid,
its errors; ./train_gpt2 --plot 1 redraws curves.png at every val loss."""
import os
import subprocess
import sys

import pytest

from conftest import BIN_DIR
from helpers import write_tiny_shards

pytest.importorskip("matplotlib")
from llmc import plot  # noqa: E402

TRAIN_BIN = os.path.join(BIN_DIR, "train_gpt2")
needs_trainer = pytest.mark.skipif(not os.access(TRAIN_BIN, os.X_OK), reason="./train_gpt2 not built (run make)")


def train(tmp_path, out, *extra):
    train_glob, val_glob = write_tiny_shards(tmp_path)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(plot.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", LLMC_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([TRAIN_BIN, "-e", "L=2,H=2,C=32,T=32,V=64", "-i", train_glob, "-j", val_glob, "-b", "2",
                        "-t", "16", "-x", "6", "-v", "2", "-m", "2", "-s", "0", "-o", str(out), *extra],
                       capture_output=True, text=True, env=env, timeout=120)
    return r


@needs_trainer
def test_curves_from_a_real_log_and_the_trainer_flag(tmp_path):
    out = tmp_path / "run"
    r = train(tmp_path, out, "--plot", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "--plot" not in r.stdout  # drawn, no failure note
    series = plot.read_log(out / "main.log")
    assert [s for s, _ in series["train"]] == [1, 2, 3, 4, 5, 6]  # llm.c's s:0 trl is step 1
    assert [s for s, _ in series["val"]] == [0, 2, 4, 6] and series["hellaswag"] == []
    drawn = plot.plot([out / "main.log", out / "main.log"], str(tmp_path / "two.png"), labels=["a", "b"])
    assert drawn == [("loss", "a train", 6), ("loss", "a val", 4), ("loss", "b train", 6), ("loss", "b val", 4)]


def test_hellaswag_gets_its_own_panel(tmp_path):
    log = tmp_path / "main.log"
    log.write_text("s:0 tel:4.0\ns:0 trl:4.1 lr:0.1 norm:1.0\ns:1 trl:3.9 lr:0.1 norm:1.0\ns:2 tel:3.8\n"
                   "s:2 eval:0.25\ngarbage line\n")
    drawn = plot.plot([log], str(tmp_path / "c.png"), logx=True, title="t")
    name = tmp_path.name  # a run is named by its directory
    assert drawn == [("loss", f"{name} train", 2), ("loss", f"{name} val", 2), ("hellaswag", name, 1)]
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_errors(tmp_path):
    empty = tmp_path / "main.log"
    empty.write_text("nothing here\n")
    with pytest.raises(plot.PlotError, match="no llm.c-format log lines"):
        plot.read_log(empty)
    with pytest.raises(plot.PlotError, match="cannot read"):
        plot.read_log(tmp_path / "missing.log")
    good = tmp_path / "good.log"
    good.write_text("s:0 trl:4.0 lr:0.1 norm:1.0\n")
    with pytest.raises(plot.PlotError, match="2 labels for 1 logs"):
        plot.plot([good], str(tmp_path / "x.png"), labels=["a", "b"])
    r = subprocess.run([sys.executable, "-m", "llmc.plot", str(empty), "-o", str(tmp_path / "y.png")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("llmc.plot: ") and len(r.stderr.strip().splitlines()) == 1


@needs_trainer
def test_plot_needs_an_output_dir(tmp_path):
    train_glob, _ = write_tiny_shards(tmp_path)
    r = subprocess.run([TRAIN_BIN, "-e", "L=2,H=2,C=32,T=32,V=64", "-i", train_glob, "-x", "1", "--plot", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--plot 1" in r.stderr and "-o" in r.stderr

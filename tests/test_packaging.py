"""The package as pip installs it: metadata, console scripts, typing, the portable baseline,
and that a CPU-only build needs no CUDA library."""
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import llmc
from llmc import _core

REPO = Path(__file__).resolve().parents[1]
PKG = Path(llmc.__file__).resolve().parent
SCRIPTS = {"llmc-train": "llmc.cli:train", "llmc-train-cu": "llmc.cli:train_cu", "llmc-generate": "llmc.generate:main",
           "llmc-prepare": "llmc.prepare:main", "llmc-convert": "llmc.convert:main",
           "llmc-eval": "llmc.eval:main", "llmc-plot": "llmc.plot:main", "llmc-prune": "llmc.prune:main",
           "llmc-quantize": "llmc.quantize:main"}


def pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_license_and_metadata():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    p = pyproject()
    assert p["license"] == {"text": "MIT"} and p["authors"] and p["urls"] and p["requires-python"]
    assert "License :: OSI Approved :: MIT License" in p["classifiers"]
    assert p["scripts"] == SCRIPTS
    assert {"safetensors", "huggingface_hub"} <= {re.split("[<>=]", d)[0] for d in p["optional-dependencies"]["hf"]}
    md = metadata.metadata("llmc")  # what the installed wheel says
    assert md["License"] == "MIT" or "MIT" in (md.get("License-Expression") or "")
    assert md["Requires-Python"]


def test_console_scripts_are_installed():
    eps = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name.startswith("llmc-")}
    assert eps == SCRIPTS


def script(name, *args):
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


def test_llmc_train_is_the_trainer():
    r = script("llmc-train", "-h")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: llmc-train [options]\nTrain GPT-2")
    local = REPO / "train_gpt2"
    if local.exists():  # the wheel's binary and the checkout's are the same program
        here = subprocess.run([str(local), "-h"], capture_output=True, text=True).stdout
        assert r.stdout.replace("llmc-train", "X", 1) == here.replace(here.split()[1], "X", 1)
    cu = script("llmc-train-cu", "-h")
    if "cuda" in _core.backends():
        assert cu.returncode == 0 and "usage: llmc-train-cu" in cu.stdout
    else:
        assert cu.returncode == 1 and "no CUDA backend" in cu.stderr


@pytest.mark.parametrize("name", ["llmc-generate", "llmc-prepare", "llmc-convert", "llmc-eval", "llmc-plot",
                                  "llmc-prune", "llmc-quantize"])
def test_python_scripts_run(name):
    r = script(name, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


def test_typed_package():
    assert (PKG / "py.typed").exists()
    stub = (PKG / "_core.pyi").read_text()
    public = {n for n in dir(_core) if not n.startswith("_") and n != "np"}
    declared = {a or b for a, b in re.findall(r"^(?:class|def) (\w+)|^(\w+)\s*:", stub, re.M)}
    assert public <= declared, f"not in _core.pyi: {sorted(public - declared)}"
    for cls in ("Model", "Trainer", "Session", "DataLoader", "Tokenizer", "Device"):
        methods = {m for m in vars(getattr(_core, cls)) if not m.startswith("_")}
        body = stub.split(f"class {cls}", 1)[1].split("\nclass ", 1)[0]
        missing = {m for m in methods if not re.search(rf"(def {m}\(|^\s+{m}\s*:)", body, re.M)}
        assert not missing, f"_core.pyi: {cls} lacks {sorted(missing)}"


def test_missing_cuda_library_is_named():
    e = ImportError("libcublasLt.so.13: cannot open shared object file: No such file or directory")
    msg = llmc.missing_library_message(e)
    assert "needs libcublasLt.so.13" in msg and "LLMC_CUDA=OFF" in msg and "LD_LIBRARY_PATH" in msg
    msg = llmc.missing_library_message(ImportError("libnccl.so.2: cannot open shared object file: No such file"))
    assert "needs libnccl.so.2" in msg and "nvidia-nccl-cu12" in msg


@pytest.mark.skipif(not shutil.which("ldd"), reason="needs ldd")
def test_cpu_only_build_needs_no_cuda_library():
    """A build without the CUDA backend (make asan's, or LLMC_CUDA=OFF) links no CUDA library, so it
    imports on a machine without any. A CUDA build finds cuBLAS through its RUNPATH."""
    so = _core.__file__
    deps = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    if "cuda" not in _core.backends():
        assert not re.search(r"libcu|libnv", deps), deps
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        r = subprocess.run([sys.executable, "-c", "import llmc; print(llmc.backends())"], capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0 and "cpu" in r.stdout, r.stderr
    else:
        dyn = subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout
        assert "RUNPATH" in dyn and "nvidia/cublas/lib" in dyn, dyn


def test_portable_build_targets_a_documented_baseline(tmp_path):
    """LLMC_NATIVE=OFF (the wheels' default) compiles the core for x86-64-v3 and the CPU check for
    plain x86-64, so that an older CPU gets a message, not an illegal instruction."""
    if not shutil.which("cmake"):
        pytest.skip("needs cmake")
    r = subprocess.run(["cmake", "-S", str(REPO), "-B", str(tmp_path), "-DLLMC_NATIVE=OFF", "-DLLMC_CUDA=OFF",
                        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json
    cmds = json.loads((tmp_path / "compile_commands.json").read_text())
    for c in cmds:
        flags = re.findall(r"-march=(\S+)", c["command"])
        if c["file"].endswith("src/cpu_check.c"):
            assert flags[-1] == "x86-64", c["command"]
        elif "/src/" in c["file"] and "/src/train_gpt2.c" not in c["file"] and "registry.c" not in c["file"]:
            assert flags == ["x86-64-v3"], c["command"]
        assert "native" not in flags

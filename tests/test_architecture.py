"""The engine's structure, checked: no mutable file-scope state in the libraries, optimizer state
that covers a shard of the parameters (the ZeRO-1 hook), one error style on every handle."""
import os
import re
import shutil
import sys
import subprocess

import numpy as np
import pytest

import llmc
from llmc import _core
from conftest import BACKENDS, REPO
from helpers import TINY_CFG, write_tiny_shards

LIBS = [os.path.join(REPO, "build", name) for name in ("libllmc_core.a", "libllmc_cuda.a")]
# what compilers and the CUDA runtime put in writable sections of every object, and NVIDIA's
# header-only NVTX (cuda/matmul.cu's marks for compute-sanitizer): its hook table is process-wide
# by design, filled once when a tool attaches, and holds no llmc state
GENERATED = re.compile(r"__cudaFatCubinHandle|__fatDeviceText|__device_stub__|__nv_|__cuda|DW\.ref\.|"
                       r"__gxx_personality|^\.(data|bss)$|^_ZL\d+__cuda|^nvtx\w*_v3|^_ZL\d+nvtx|^InitializeInjectionNvtx")


def writable_symbols(lib):
    """Symbols of lib that live in writable data (.data, .bss, TLS), .data.rel.ro excluded."""
    out = subprocess.run(["objdump", "-t", lib], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        sections = [p for p in parts if p.startswith(".")]
        if not sections or "O" not in parts[1:4] and not any(s in (".bss", ".data") for s in sections):
            continue
        section, name = sections[0], parts[-1]
        if re.match(r"^\.(data|bss|tdata|tbss)(\.|$)", section) and not section.startswith(".data.rel.ro") \
                and not GENERATED.search(name):
            found.append(f"{name} ({section})")
    return found


@pytest.mark.skipif(not shutil.which("objdump"), reason="needs objdump")
@pytest.mark.parametrize("lib", LIBS, ids=os.path.basename)
def test_no_mutable_file_scope_state(lib):
    if not os.path.exists(lib):
        pytest.skip(f"{lib} not built")
    assert writable_symbols(lib) == []


@pytest.mark.parametrize("device", BACKENDS)
def test_optimizer_shards_reproduce_the_whole_update(device, tmp_path):
    """Two trainers whose AdamW state covers the two halves of the parameters (cut inside a tensor)
    update their halves exactly as one trainer over all of them: the ZeRO-1 hook, bit for bit,
    stochastic rounding to bf16 included (its bits depend on the element, not on the cut). Between
    steps the halves are gathered, as ZeRO-1's all-gather will; on bf16 backends one step is
    checked, since gathering through fp32 set_params would round differently."""
    cfg = dict(TINY_CFG, channels=128)  # head size 64, which the GPU's attention takes
    train, _ = write_tiny_shards(tmp_path, n_train=2000)
    loader = _core.DataLoader(train, 2, 16)
    layout = _core.param_layout(cfg)
    n = layout[-1][1] + cfg["channels"]
    cut = layout[4][1] + 1000  # inside qkvw

    def trainer(offset=0, count=0):
        m = _core.Model()
        m.init_random(cfg, backend=device, seed=5)
        return _core.Trainer(m, shard_offset=offset, shard_count=count)

    whole, lo, hi = trainer(), trainer(0, cut), trainer(cut, n - cut)
    steps = 3 if device == "cpu" else 1
    for i in range(steps):
        x, y = loader.next()
        for t in (whole, lo, hi):
            t.zero_grad()
            t.forward_backward(x, y)
            t.step(1e-2 * (i + 1), weight_decay=0.1)
        ref, a, b = whole.get_params(), lo.get_params(), hi.get_params()
        np.testing.assert_array_equal(a[:cut], ref[:cut])
        np.testing.assert_array_equal(b[cut:], ref[cut:])
        assert not np.array_equal(a[cut:], ref[cut:])  # each trainer left the other half alone
        weights = [t.model.get_params() for t in (whole, lo, hi)]  # the weights the next forward uses
        np.testing.assert_array_equal(weights[1][:cut], weights[0][:cut])
        np.testing.assert_array_equal(weights[2][cut:], weights[0][cut:])
        gathered = np.concatenate([a[:cut], b[cut:]])
        lo.set_params(gathered)
        hi.set_params(gathered)
    with pytest.raises(llmc.LlmcError, match="outside"):
        _core.Trainer(lo.model, shard_offset=n, shard_count=1)


def test_every_handle_reports_its_own_error(tmp_path):
    """Model, trainer, session, data loader and tokenizer each carry the message of their failure."""
    m = _core.Model()
    with pytest.raises(llmc.LlmcError, match="cannot open model file"):
        m.load(tmp_path / "none.bin")
    m.init_random(dict(TINY_CFG))
    t = _core.Trainer(m)
    with pytest.raises(llmc.LlmcError, match="out of range"):
        t.forward(np.array([[64]]))
    with pytest.raises(llmc.LlmcError, match="empty"):
        _core.Session(m, [[]], 2)
    with pytest.raises(llmc.LlmcError, match="no files match"):
        _core.DataLoader(str(tmp_path / "x_*.bin"), 1, 4)
    with pytest.raises(llmc.LlmcError, match="cannot open tokenizer"):
        _core.Tokenizer(tmp_path / "tok.bin")
    assert np.isfinite(t.forward(np.array([[1, 2]]), np.array([[2, 3]])))  # the failures left t usable


def test_cycle_collection_frees_trainer_and_session_before_their_model():
    """A trainer or session caught in a reference cycle (an exception's traceback is enough) is freed
    by the cycle collector while its model is still alive: they refer to the model's C object."""
    code = """if True:
        import gc
        from llmc import _core
        m = _core.Model()
        m.init_random(dict(num_layers=1, num_heads=1, channels=8, max_seq_len=8, vocab_size=16))
        t, s = _core.Trainer(m), _core.Session(m, [[1, 2]], 2)
        class Holder: pass
        h = Holder(); h.parts = (t, s); h.me = h
        del m, t, s, h
        gc.collect()
        print("ok")"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])

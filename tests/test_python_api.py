"""The llmc.GPT2 Python API: numpy views, the train loop with callbacks, text generation."""
import numpy as np
import pytest

import llmc
from helpers import write_shard

CFG = "L=2,H=2,C=32,T=32,V=64"


def test_param_and_grad_views_are_live_on_cpu():
    m = llmc.GPT2.from_config(CFG, seed=1)
    params = m.params
    assert set(params) == {"wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
                           "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"}
    assert params["qkvw"].shape == (2, 96, 32) and params["wte"].shape == (128, 32)
    x = np.arange(16, dtype=np.int32).reshape(1, 16)
    before, _ = m.forward(x)
    params["lnfw"][:] = 0.0  # writes through to the C buffer: logits collapse to the bias path
    after, _ = m.forward(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, after[:, :1, :].repeat(16, axis=1), atol=1e-6)
    m.zero_grad()
    m.forward(x, np.roll(x, -1))
    m.backward()
    g = m.grads
    assert np.abs(g["lnfw"]).sum() > 0 and g["lnfw"].base is not None  # a view, not a copy


def test_train_loop_reports_each_step(tmp_path):
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "d_train_000000.bin", rng.integers(0, 64, 5000))
    write_shard(tmp_path / "d_val_000000.bin", rng.integers(0, 64, 2000))
    m = llmc.GPT2.from_config(CFG, seed=1)
    seen = []
    hist = m.train(str(tmp_path / "d_train_*.bin"), steps=6, batch_size=2, seq_len=16, lr=3e-3, warmup=2,
                   grad_accum=2, val_data=str(tmp_path / "d_val_*.bin"), val_every=3, val_batches=2,
                   callback=seen.append, progress=False)
    assert hist == seen and [h["step"] for h in hist] == list(range(1, 7))
    assert {"loss", "lr", "grad_norm", "ms", "tok_s"} <= set(hist[0])
    assert "val_loss" in hist[2] and "val_loss" in hist[5] and "val_loss" not in hist[0]
    assert hist[0]["lr"] < hist[1]["lr"]  # warmup
    assert all(np.isfinite(h["loss"]) for h in hist)


def test_generate_text_and_stream(enc):
    m = llmc.GPT2.from_config("L=2,H=2,C=32,T=64", seed=1)
    text = m.generate("Hello", max_new_tokens=5, temperature=0.0, tokenizer=enc)
    assert isinstance(text, str)
    ids = m.generate(enc.encode("Hello"), max_new_tokens=5, temperature=0.0)
    assert enc.decode(list(ids)) == text
    streamed = list(m.stream(enc.encode("Hello"), max_new_tokens=5, temperature=0.0))
    assert streamed == list(ids)
    batch = m.generate(["Hello", "A much longer prompt"], max_new_tokens=3, seed=2, tokenizer=enc)
    assert len(batch) == 2 and all(isinstance(t, str) for t in batch)


def test_errors_are_llmc_errors():
    m = llmc.GPT2.from_config(CFG)
    with pytest.raises(llmc.LlmcError, match="out of range"):
        m.forward(np.array([[64]]))
    with pytest.raises(llmc.LlmcError, match="backward needs a forward"):
        m.backward()

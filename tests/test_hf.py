"""Hugging Face GPT-2 in and out. On the CPU (CI): directories written here with the safetensors
package and GPT-2's Conv1D layout spelled out independently of llmc's mapping; import, export,
the bit-exact fp32 round trip, sharded files, and every refusal. Where transformers is installed
(the GPU machine): logits, export and greedy generation against GPT2LMHeadModel."""
import json
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import reference as ref
from conftest import BACKENDS, assert_close

safetensors_numpy = pytest.importorskip("safetensors.numpy")
CFG = dict(n_layer=2, n_head=2, n_embd=64, n_positions=32, vocab_size=300)


def hf_config(**over):
    c = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
         "layer_norm_epsilon": 1e-5, "n_inner": None, **CFG}
    c.update(over)
    return c


def hf_tensors(seed=0, prefix="transformer.", cfg=CFG):
    """A GPT-2 state dict as Hugging Face stores it: Conv1D weights (in, out), per-layer names."""
    rng = np.random.default_rng(seed)
    L, C, T, V = cfg["n_layer"], cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]
    r = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    t = {"wte.weight": r(V, C), "wpe.weight": r(T, C), "ln_f.weight": 1 + r(C), "ln_f.bias": r(C)}
    for i in range(L):
        h = f"h.{i}."
        t.update({h + "ln_1.weight": 1 + r(C), h + "ln_1.bias": r(C),
                  h + "attn.c_attn.weight": r(C, 3 * C), h + "attn.c_attn.bias": r(3 * C),
                  h + "attn.c_proj.weight": r(C, C), h + "attn.c_proj.bias": r(C),
                  h + "ln_2.weight": 1 + r(C), h + "ln_2.bias": r(C),
                  h + "mlp.c_fc.weight": r(C, 4 * C), h + "mlp.c_fc.bias": r(4 * C),
                  h + "mlp.c_proj.weight": r(4 * C, C), h + "mlp.c_proj.bias": r(C),
                  h + "attn.bias": np.tril(np.ones((1, 1, T, T), np.float32))})  # the mask buffer, dropped
    return {prefix + k: v for k, v in t.items()}


def write_hf(d, tensors=None, config=None, shards=0):
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or hf_config()))
    tensors = hf_tensors() if tensors is None else tensors
    if not shards:
        safetensors_numpy.save_file(tensors, str(d / "model.safetensors"))
        return d
    names, weight_map = sorted(tensors), {}
    for k in range(shards):
        part = {n: tensors[n] for n in names[k::shards]}
        f = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_numpy.save_file(part, str(d / f))
        weight_map.update({n: f for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return d


def reference_logits(tensors, tokens, prefix="transformer."):
    """The float64 reference GPT-2 run on the Hugging Face tensors, mapped by hand (transposes)."""
    L, C, T, V = CFG["n_layer"], CFG["n_embd"], CFG["n_positions"], CFG["vocab_size"]
    Vp = (V + 127) // 128 * 128
    g = lambda n: tensors[prefix + n].astype(np.float64)  # noqa: E731
    stack = lambda n, tr=False: np.stack([g(f"h.{i}.{n}").T if tr else g(f"h.{i}.{n}") for i in range(L)])  # noqa
    wte = np.zeros((Vp, C))
    wte[:V] = g("wte.weight")
    params = {"wte": wte, "wpe": g("wpe.weight"), "ln1w": stack("ln_1.weight"), "ln1b": stack("ln_1.bias"),
              "qkvw": stack("attn.c_attn.weight", True), "qkvb": stack("attn.c_attn.bias"),
              "attprojw": stack("attn.c_proj.weight", True), "attprojb": stack("attn.c_proj.bias"),
              "ln2w": stack("ln_2.weight"), "ln2b": stack("ln_2.bias"), "fcw": stack("mlp.c_fc.weight", True),
              "fcb": stack("mlp.c_fc.bias"), "fcprojw": stack("mlp.c_proj.weight", True),
              "fcprojb": stack("mlp.c_proj.bias"), "lnfw": g("ln_f.weight"), "lnfb": g("ln_f.bias")}
    cfg = ref.Config(n_layer=L, n_head=CFG["n_head"], n_embd=C, max_t=T, vocab_size=V, padded_vocab_size=Vp)
    return ref.gpt2_forward(params, cfg, tokens)[0]


@pytest.mark.parametrize("prefix", ["transformer.", ""])  # GPT2LMHeadModel's keys, and GPT2Model's
def test_import_matches_the_reference(tmp_path, prefix):
    tensors = hf_tensors(prefix=prefix)
    m = llmc.GPT2.from_hf(write_hf(tmp_path / "m", tensors))
    assert m.config["padded_vocab_size"] == 384 and m.config["vocab_size"] == 300
    x = np.random.default_rng(1).integers(0, 300, (2, 17))
    logits, _ = m.forward(x)
    assert_close(logits, reference_logits(tensors, x, prefix), 1e-5, "logits")


def test_round_trip_is_bit_exact(tmp_path):
    tensors = hf_tensors(seed=3)
    m = llmc.GPT2.from_hf(write_hf(tmp_path / "a", tensors))
    m.save_hf(tmp_path / "b")
    back = safetensors_numpy.load_file(str(tmp_path / "b" / "model.safetensors"))
    want = {k: v for k, v in tensors.items() if not k.endswith(".attn.bias")}
    assert sorted(back) == sorted(want)
    for k in want:
        assert back[k].dtype == np.float32 and np.array_equal(back[k], want[k]), k
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["vocab_size"] == 300 and cfg["n_embd"] == 64
    again = llmc.GPT2.from_hf(tmp_path / "b")
    assert np.array_equal(again.get_params(), m.get_params())


def test_sharded_and_bin_conversion(tmp_path):
    tensors = hf_tensors(seed=4)
    one = llmc.GPT2.from_hf(write_hf(tmp_path / "one", tensors))
    many = llmc.GPT2.from_hf(write_hf(tmp_path / "many", tensors, shards=3))
    assert np.array_equal(one.get_params(), many.get_params())
    run = lambda *a: subprocess.run([sys.executable, "-m", "llmc.convert", *map(str, a)], capture_output=True,  # noqa
                                    text=True)
    r = run("--from-hf", tmp_path / "many", "--out", tmp_path / "m.bin")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(llmc.GPT2.from_pretrained(tmp_path / "m.bin").get_params(), one.get_params())
    r = run("--to-hf", tmp_path / "m.bin", "--out", tmp_path / "back")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(llmc.GPT2.from_hf(tmp_path / "back").get_params(), one.get_params())
    r = run("--from-hf", tmp_path / "many", "--out", tmp_path / "m5.bin", "--dtype", "bf16")
    assert r.returncode == 0 and np.fromfile(tmp_path / "m5.bin", np.int32, 2)[1] == 5


@pytest.mark.parametrize("over,word", [
    (dict(architectures=["LlamaForCausalLM"]), "architectures"),
    (dict(model_type="gpt_neox"), "model_type"),
    (dict(activation_function="relu"), "activation_function"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(reorder_and_upcast_attn=True), "reorder_and_upcast_attn"),
    (dict(n_inner=100), "n_inner"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
])
def test_refuses_what_is_not_gpt2(tmp_path, over, word):
    with pytest.raises(llmc.LlmcError, match=word):
        llmc.GPT2.from_hf(write_hf(tmp_path / "m", config=hf_config(**over)))


def test_refuses_broken_directories(tmp_path):
    t = hf_tensors()
    missing = dict(t)
    del missing["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(llmc.LlmcError, match="h.1.mlp.c_fc.bias is missing"):
        llmc.GPT2.from_hf(write_hf(tmp_path / "a", missing))
    wrong = dict(t, **{"transformer.h.0.attn.c_attn.weight": np.zeros((64, 100), np.float32)})
    with pytest.raises(llmc.LlmcError, match=r"c_attn.weight has shape \(64, 100\).*\(64, 192\)"):
        llmc.GPT2.from_hf(write_hf(tmp_path / "b", wrong))
    extra = dict(t, **{"transformer.h.0.attn.q_proj.weight": np.zeros((4,), np.float32)})
    with pytest.raises(llmc.LlmcError, match="q_proj"):
        llmc.GPT2.from_hf(write_hf(tmp_path / "c", extra))
    d = write_hf(tmp_path / "d")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(llmc.LlmcError, match="not a readable safetensors file"):
        llmc.GPT2.from_hf(d)
    (tmp_path / "e").mkdir()
    with pytest.raises(llmc.LlmcError, match="config.json"):
        llmc.GPT2.from_hf(tmp_path / "e")
    with pytest.raises(llmc.LlmcError, match="local directory"):
        llmc.GPT2.from_hf(tmp_path / "no-such-model-here")


# ---------------------------------------------------------------- against transformers itself

@pytest.fixture
def hf_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=128, n_positions=64, vocab_size=300)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf", torch


@pytest.mark.parametrize("device", BACKENDS)
def test_logits_match_transformers(hf_model, device):
    model, path, torch = hf_model
    m = llmc.GPT2.from_hf(path, device=device)
    x = np.random.default_rng(2).integers(0, 300, (2, 40))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).logits.double().numpy()
    got, _ = m.forward(x)
    assert_close(got, want, 1e-5 if device == "cpu" else 2e-2, "logits vs transformers")


def test_export_loads_in_transformers_and_greedy_agrees(hf_model, tmp_path):
    model, path, torch = hf_model
    import transformers
    m = llmc.GPT2.from_hf(path)
    m.save_hf(tmp_path / "out")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    x = np.random.default_rng(3).integers(0, 300, (1, 20))
    with torch.no_grad():
        a = model(torch.from_numpy(x)).logits.numpy()
        b = back(torch.from_numpy(x)).logits.numpy()
        ids = back.generate(torch.from_numpy(x[:, :5]), max_new_tokens=32, do_sample=False, pad_token_id=0,
                            eos_token_id=None)[0, 5:].numpy()
    assert np.array_equal(a, b)
    ours = m.generate(x[0, :5], max_new_tokens=32, temperature=0, eot=-1)
    assert list(ours) == list(ids)

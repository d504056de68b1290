"""Hugging Face GPT-2 in and out. On the CPU (CI): directories written here with the safetensors
package (or by hand, for bf16 and broken files) and GPT-2's Conv1D layout spelled out independently
of llmc's mapping; the Python import and export, the C reader (src/hf_model.c: bit-identical to the
Python import for F32, F16 and BF16 files, sharded or not, and every refusal), the config rules and
JSON parser behind both, and ./train_gpt2 -e <dir>. Where transformers is installed (the GPU
machine): logits, export and greedy generation against GPT2LMHeadModel."""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import llmc
from llmc import reference as ref
from conftest import BACKENDS, HAVE_CUDA, assert_close

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


# ---------------------------------------------------------------- the C reader (src/hf_model.c)

from llmc import _core  # noqa: E402
from conftest import BIN_DIR  # noqa: E402
from helpers import TINY_CFG, write_tiny_shards  # noqa: E402

F32 = np.float32


def to_bf16(a):
    """bf16 bits of float32 values (truncated: the tests pick values bf16 holds exactly)."""
    return (np.ascontiguousarray(a, F32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_round(a):
    return (to_bf16(a).astype(np.uint32) << 16).view(F32).reshape(np.shape(a))


def write_raw(path, header, data, header_len=None):
    """A safetensors file by hand: u64 header length, the JSON header (padded to 8), the data."""
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h) if header_len is None else header_len) + h + data)


def read_raw(path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def write_entries(path, entries, metadata=None):
    """entries: [(name, dtype, shape, raw bytes)], laid out one after the other."""
    header, data = ({"__metadata__": metadata} if metadata else {}), b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    write_raw(path, header, data)


def c_load(d):
    m = _core.Model()
    m.load_hf(d)
    return m.get_params()


def py_load(d):
    return llmc.GPT2.from_hf(d).get_params()


def test_name_table_is_gpt2s():
    """The C table's Hugging Face names are exactly GPT-2's (as hf_tensors spells them), and the
    Conv1D weights are the transposed ones."""
    names = _core.hf_tensor_names(dict(num_layers=2, num_heads=2, channels=64, max_seq_len=32, vocab_size=300))
    want = {k for k in hf_tensors(prefix="") if not k.endswith(".attn.bias")}
    assert [n[2] for n in names if n[2] in want] == [n[2] for n in names] and {n[2] for n in names} == want
    conv1d = {f"h.{i}.{n}" for i in range(2) for n in ("attn.c_attn.weight", "attn.c_proj.weight",
                                                          "mlp.c_fc.weight", "mlp.c_proj.weight")}
    assert {n[2] for n in names if n[3]} == conv1d
    assert [(n[0], n[1]) for n in names[:4]] == [("wte", None), ("wpe", None), ("ln1w", 0), ("ln1w", 1)]
    assert _core.HF_PREFIX == "transformer."
    for ignored in ("transformer.h.3.attn.bias", "h.0.attn.masked_bias", "lm_head.weight"):
        assert _core.hf_ignored(ignored)
    assert not _core.hf_ignored("transformer.h.0.attn.c_attn.bias") and not _core.hf_ignored("wte.weight")


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_c_reader_matches_python_import(tmp_path, prefix):
    d = write_hf(tmp_path / "m", hf_tensors(seed=5, prefix=prefix))
    want = py_load(d)
    assert np.array_equal(c_load(d), want)
    m = llmc.GPT2.from_pretrained(d)  # llmc_model_load takes a directory too
    assert np.array_equal(m.get_params(), want) and m.config["padded_vocab_size"] == 384
    assert np.array_equal(want[300 * 64:384 * 64], np.zeros(84 * 64, F32))  # wte's padding rows


def test_c_reader_f16_and_bf16(tmp_path):
    """F16 (written by the package: subnormals, -0 and the largest half included) reads as the Python
    import reads it; BF16 (by hand, mixed with F32 tensors in one file) as the same values in F32."""
    t = hf_tensors(seed=6)
    half = {k: v.astype(np.float16) for k, v in t.items()}
    half["transformer.ln_f.bias"][:5] = [6e-8, -3e-5, -0.0, 65504, 1e-4]
    d16 = write_hf(tmp_path / "f16", half)
    assert np.array_equal(c_load(d16), py_load(d16))

    names = sorted(t)
    is_bf16 = {k: i % 3 != 0 for i, k in enumerate(names)}  # two thirds BF16, the rest F32
    rounded = {k: bf16_round(v) if is_bf16[k] else v for k, v in t.items()}
    ref_dir = write_hf(tmp_path / "f32", rounded)
    dbf = tmp_path / "bf16"
    dbf.mkdir()
    (dbf / "config.json").write_text(json.dumps(hf_config()))
    write_entries(dbf / "model.safetensors", [(k, "BF16" if is_bf16[k] else "F32", t[k].shape,
                                               to_bf16(t[k]).tobytes() if is_bf16[k] else t[k].tobytes())
                                              for k in names], metadata={"format": "pt"})
    assert np.array_equal(c_load(dbf), py_load(ref_dir))


def test_c_reader_sharded(tmp_path):
    t = hf_tensors(seed=7)
    one = c_load(write_hf(tmp_path / "one", t))
    many = write_hf(tmp_path / "many", t, shards=3)
    assert np.array_equal(c_load(many), one) and np.array_equal(py_load(many), one)
    index = json.loads((many / "model.safetensors.index.json").read_text())
    wm = index["weight_map"]
    key = "transformer.h.0.ln_1.weight"
    wrong = dict(wm, **{key: next(f for f in set(wm.values()) if f != wm[key])})
    (many / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wrong}))
    with pytest.raises(llmc.LlmcError, match=f"the index puts tensor {key} in"):
        c_load(many)
    (many / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict(wm, x="gone.safetensors")}))
    with pytest.raises(llmc.LlmcError, match="cannot open .*gone.safetensors"):
        c_load(many)
    (many / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict(wm, x="../x.safetensors")}))
    with pytest.raises(llmc.LlmcError, match="file name in the same directory"):
        c_load(many)
    (many / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(llmc.LlmcError, match="weight_map"):
        c_load(many)


def _tensor_edit(edit):
    """A case that changes the tensors before the package writes them."""
    def make(d):
        t = hf_tensors()
        edit(t)
        write_hf(d, t)
    return make


def _header_edit(edit, header_len=None):
    """A case that edits a good file's header and data (edit returns them)."""
    def make(d):
        write_hf(d)
        f = d / "model.safetensors"
        header, data = edit(*read_raw(f))
        write_raw(f, header, data, header_len)
    return make


def _bytes_edit(edit):
    def make(d):
        write_hf(d)
        f = d / "model.safetensors"
        f.write_bytes(edit(f.read_bytes()))
    return make


def _set(header, name, **kv):
    header["transformer." + name].update(kv)
    return header


def _nan(t):
    t["transformer.h.1.ln_2.weight"][3] = np.nan


def _inf(t):
    t["transformer.wpe.weight"][2, 1] = -np.inf


def _dtype_i64(d):
    t = hf_tensors()
    entries = [(k, "F32", v.shape, v.tobytes()) for k, v in sorted(t.items())]
    entries = [(k, "I64", s, np.arange(64, dtype=np.int64).tobytes()) if k == "transformer.ln_f.bias" else
               (k, dt, s, r) for k, dt, s, r in entries]
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config()))
    write_entries(d / "model.safetensors", entries)


def _shift_offsets(header, data):  # one tensor onto its neighbour: same sizes, so only the tiling shows it
    a, b = header["transformer.h.0.ln_1.bias"], header["transformer.h.1.ln_1.bias"]
    a["data_offsets"] = list(b["data_offsets"])
    return header, data


BROKEN = {
    "architecture": (lambda d: write_hf(d, config=hf_config(architectures=["LlamaForCausalLM"])),
                     r"config.json': architectures names \"LlamaForCausalLM\""),
    "activation": (lambda d: write_hf(d, config=hf_config(activation_function="relu")),
                   r'activation_function is "relu"; .* "gelu_new"'),
    "config-json": (lambda d: (write_hf(d), (d / "config.json").write_text('{"n_layer": 2,}')),
                    "config.json': not valid JSON .*byte 14"),
    "missing": (_tensor_edit(lambda t: t.pop("transformer.h.1.mlp.c_fc.bias")),
                "tensor transformer.h.1.mlp.c_fc.bias is missing"),
    "shape": (_tensor_edit(lambda t: t.update({"transformer.h.0.attn.c_attn.weight": np.zeros((64, 100), F32)})),
              r"c_attn.weight has shape \(64, 100\); the config needs \(64, 192\)"),
    "shape-1d": (_tensor_edit(lambda t: t.update({"transformer.ln_f.bias": np.zeros((1, 64), F32)})),
                 r"ln_f.bias has shape \(1, 64\); the config needs \(64,\)"),
    "wte-rows": (_tensor_edit(lambda t: t.update({"transformer.wte.weight": np.zeros((384, 64), F32)})),
                 r"wte.weight has shape \(384, 64\); the config needs \(300, 64\)"),
    "unknown": (_tensor_edit(lambda t: t.update({"transformer.h.0.attn.q_proj.weight": np.zeros(4, F32)})),
                "q_proj.weight is not one GPT-2 has"),
    "layer": (_tensor_edit(lambda t: t.update({"transformer.h.2.ln_1.weight": np.zeros(64, F32)})),
              "h.2.ln_1.weight is of layer 2, but the config has n_layer 2"),
    "twice": (_tensor_edit(lambda t: t.update({"wte.weight": t["transformer.wte.weight"]})),
              "wte.weight is there twice"),
    "nan": (_tensor_edit(_nan), "tensor transformer.h.1.ln_2.weight holds NaN at element 3"),
    "inf": (_tensor_edit(_inf), "tensor transformer.wpe.weight holds Inf at element 129"),
    "i64": (_dtype_i64, "tensor transformer.ln_f.bias is I64; llmc reads F32, F16 and BF16"),
    "dtype-name": (_header_edit(lambda h, b: (_set(h, "ln_f.bias", dtype="F33"), b)),
                   'ln_f.bias has dtype "F33", which safetensors does not define'),
    "truncated": (_bytes_edit(lambda b: b[:len(b) // 2]), r"outside the \d+ bytes of data .*truncated"),
    "tiny": (_bytes_edit(lambda b: b[:5]), "truncated: 5 bytes"),
    "cut-header": (_bytes_edit(lambda b: b[:100]), "header length \\d+ goes beyond the end of the file"),
    "header-len": (_header_edit(lambda h, b: (h, b), header_len=1 << 62), "goes beyond the end of the file"),
    "offsets-range": (_header_edit(lambda h, b: (_set(h, "ln_f.bias", data_offsets=[len(b) - 256, len(b) + 4]), b)),
                      r"ln_f.bias has data_offsets \[\d+, \d+\], outside"),
    "offsets-size": (_header_edit(lambda h, b: (_set(h, "ln_f.bias", data_offsets=[
        h["transformer.ln_f.bias"]["data_offsets"][0], h["transformer.ln_f.bias"]["data_offsets"][1] - 4]), b)),
        r"ln_f.bias has data_offsets .* \(252 bytes\), but shape \(64,\) of F32 needs 256"),
    "offsets-reversed": (_header_edit(lambda h, b: (_set(h, "ln_f.bias", data_offsets=[8, 4]), b)), "outside"),
    "offsets-type": (_header_edit(lambda h, b: (_set(h, "ln_f.bias", data_offsets=[0.5, 4]), b)),
                     r"data_offsets of another form; they are \[begin, end\]"),
    "overlap": (_header_edit(_shift_offsets), "overlap"),
    "gap": (_header_edit(lambda h, b: (h, b + b"\0" * 8)), r"the tensors end at data offset \d+, but \d+ bytes"),
    "header-json": (_header_edit(lambda h, b: (b'{"a": [1, 2,]}', b)), "header is not valid JSON: JSON error at byte 12"),
    "header-dup": (_header_edit(lambda h, b: (json.dumps(h)[:-1].encode() + b', "__metadata__": {}, '
                                              b'"__metadata__": {}}', b)), 'duplicate key "__metadata__"'),
    "metadata": (_header_edit(lambda h, b: (dict(h, __metadata__={"format": 1}), b)), "__metadata__ must map"),
    "no-weights": (lambda d: (write_hf(d), (d / "model.safetensors").unlink()),
                   "neither model.safetensors nor model.safetensors.index.json"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_c_reader_refuses_broken_directories(tmp_path, case):
    """Every refusal names the file and what is wrong, and a failed load leaves the model as it was."""
    make, pattern = BROKEN[case]
    d = tmp_path / "m"
    make(d)
    m = _core.Model()
    m.init_random(dict(TINY_CFG), seed=2)
    before = m.get_params()
    with pytest.raises(llmc.LlmcError, match=pattern) as e:
        m.load(d)
    assert str(d) in str(e.value)
    assert m.config["vocab_size"] == 64 and np.array_equal(m.get_params(), before)


def test_directory_without_config(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(llmc.LlmcError, match="directory without config.json.*Hugging Face"):
        _core.Model().load(tmp_path / "d")


# ---------------------------------------------------------------- config rules and the JSON parser

def test_hf_config_reads_gpt2():
    want = dict(num_layers=2, num_heads=2, channels=64, max_seq_len=32, vocab_size=300, padded_vocab_size=384)
    assert _core.hf_config(json.dumps(hf_config())) == want
    base = {k: v for k, v in hf_config().items() if k != "n_positions"}
    assert _core.hf_config(json.dumps(dict(base, n_ctx=48)))["max_seq_len"] == 48
    assert _core.hf_config(json.dumps(base))["max_seq_len"] == 1024
    assert _core.hf_config(json.dumps(hf_config(architectures=None, n_inner=256, n_layer=2.0)))["num_layers"] == 2
    # strings with escapes, unicode, nesting and unknown fields are fine where llmc does not look
    extra = '{"name": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\n", "task_specific_params": {"a": [1, -2.5e-3, true, null]},'
    assert _core.hf_config(extra + json.dumps(hf_config())[1:]) == want


@pytest.mark.parametrize("over,words", [
    (dict(architectures=["LlamaForCausalLM"]), ['architectures names "LlamaForCausalLM"', "GPT-2"]),
    (dict(architectures="GPT2LMHeadModel"), ["architectures is \"GPT2LMHeadModel\"", "list"]),
    (dict(model_type="gpt_neox"), ['model_type is "gpt_neox"', '"gpt2"']),
    (dict(activation_function="relu"), ['activation_function is "relu"', '"gelu_new"']),
    (dict(scale_attn_weights=False), ["scale_attn_weights is false", "= true"]),
    (dict(scale_attn_by_inverse_layer_idx=True), ["scale_attn_by_inverse_layer_idx is true"]),
    (dict(reorder_and_upcast_attn=True), ["reorder_and_upcast_attn is true"]),
    (dict(add_cross_attention=True), ["add_cross_attention is true"]),
    (dict(tie_word_embeddings=False), ["tie_word_embeddings is false"]),
    (dict(tie_word_embeddings=1), ["tie_word_embeddings is 1"]),
    (dict(layer_norm_epsilon=1e-6), ["layer_norm_epsilon is 1e-06", "1e-5"]),
    (dict(n_inner=100), ["n_inner is 100", "4 * n_embd = 256"]),
    (dict(n_layer=None), ["n_layer is null", "positive integer"]),
    (dict(n_head=0), ["n_head is 0"]),
    (dict(n_embd="64"), ['n_embd is "64"']),
    (dict(n_embd=65), ["n_embd 65 is not a multiple of n_head 2"]),
    (dict(n_positions=2.5), ["n_positions is 2.5"]),
    (dict(vocab_size=1 << 31), ["vocab_size is 2147483648"]),
    (dict(n_layer=5000), ["model too large"]),
])
def test_hf_config_refusals_name_the_field(over, words):
    with pytest.raises(llmc.LlmcError) as e:
        _core.hf_config(json.dumps(hf_config(**over)))
    for w in words:
        assert w in str(e.value)
    with pytest.raises(llmc.HFError if hasattr(llmc, "HFError") else llmc.LlmcError, match=words[0].split()[0]):
        from llmc import hf
        hf.config_from_hf(hf_config(**over))


def test_hf_config_missing_field():
    with pytest.raises(llmc.LlmcError, match="missing field vocab_size"):
        _core.hf_config(json.dumps({k: v for k, v in hf_config().items() if k != "vocab_size"}))


@pytest.mark.parametrize("text,words", [
    ('{"n_layer": 2,}', "byte 14: expected a string key"),
    ('{"a": 1, "a": 2}', 'byte 14: duplicate key "a"'),
    ('[' * 100 + ']' * 100, "nested deeper than 64"),
    ('{"x": NaN}', "byte 6: unexpected character 'N'"),
    ('{"x": 01}', "byte 7: expected ','"),
    ('{"x": 1.}', "no digit after '.'"),
    ('{"x": 1e999}', "out of range"),
    ('{"x": "\\ud800"}', "unpaired surrogate"),
    ('{"x": "\\q"}', "invalid escape"),
    ('{"x": "a\tb"}', "control character 0x09"),
    ('{"x": "abc', "unterminated string"),
    ('{"x": tru}', "unexpected character 't'"),
    ('{} {}', "byte 3: unexpected data after the JSON value"),
    ('', "byte 0: unexpected end of input"),
    ('[1, 2]', "the JSON is an array, not an object"),
])
def test_json_parser_is_strict(text, words):
    with pytest.raises(llmc.LlmcError) as e:
        _core.hf_config(text)
    assert words in str(e.value)


def test_json_parser_refuses_bad_utf8(tmp_path):
    d = write_hf(tmp_path / "m")
    (d / "config.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(llmc.LlmcError, match="invalid UTF-8 byte 0xff"):
        _core.Model().load(d)


# ---------------------------------------------------------------- ./train_gpt2 -e <Hugging Face dir>

TRAINERS = [
    pytest.param("train_gpt2", 1.5e-6, TINY_CFG, id="cpu",
                 marks=pytest.mark.skipif(not os.access(os.path.join(BIN_DIR, "train_gpt2"), os.X_OK),
                                          reason="./train_gpt2 not built (run make)")),
    pytest.param("train_gpt2cu", 2e-2, dict(TINY_CFG, channels=128), id="cuda",  # CUDA attention: head size 64
                 marks=[pytest.mark.cuda, pytest.mark.skipif(
                     not HAVE_CUDA or not os.access(os.path.join(BIN_DIR, "train_gpt2cu"), os.X_OK),
                     reason="needs a GPU and ./train_gpt2cu")]),
]


@pytest.mark.parametrize("trainer,tol,tiny", TRAINERS)
def test_trainer_cli_takes_a_hf_directory(tmp_path, trainer, tol, tiny):
    """./train_gpt2[cu] -e <dir> trains from a Hugging Face directory; its first loss is the loss of the
    same model imported through GPT2.from_hf on the same batch (bf16 on the GPU: relative 2e-2)."""
    binary = os.path.join(BIN_DIR, trainer)
    L, H, C, T, V = (tiny[k] for k in ("num_layers", "num_heads", "channels", "max_seq_len", "vocab_size"))
    cfg = dict(n_layer=L, n_head=H, n_embd=C, n_positions=T, vocab_size=V)
    d = write_hf(tmp_path / "hf", hf_tensors(seed=8, cfg=cfg), config=hf_config(**cfg), shards=2)
    train, val = write_tiny_shards(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    r = subprocess.run([binary, "-e", str(d), "-i", train, "-j", val, "-b", "2", "-t", "16", "-x", "2",
                        "-v", "0", "-s", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"model: L={L} H={H} C={C} T={T} V={V}" in r.stdout
    losses = [float(m.group(1)) for m in (re.match(r"^step\s+\d+/\d+ \| loss (\S+)", s)
                                          for s in r.stdout.splitlines()) if m]
    x, y = _core.DataLoader(train, 2, 16).next()
    _, want = llmc.GPT2.from_hf(d).forward(x, y, return_logits=False)
    assert len(losses) == 2 and np.isfinite(losses[0]) and losses[0] == pytest.approx(want, rel=tol, abs=1.5e-6)
    bad = write_hf(tmp_path / "bad", hf_tensors(cfg=cfg), config=hf_config(**dict(cfg, activation_function="relu")))
    r = subprocess.run([binary, "-e", str(bad), "-i", train, "-x", "1"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 1 and "activation_function" in r.stderr and str(bad) in r.stderr


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

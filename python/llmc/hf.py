"""Hugging Face GPT-2 in and out: config.json + model.safetensors <-> llmc's tensor table.

The mapping, written once: each of llmc's 16 tensors (names and shapes from the C table,
llmc._core.param_layout) is a Hugging Face tensor per layer, transposed where GPT-2 uses Conv1D
(stored (in, out); llmc stores (out, in)). The LM head is tied to wte; the attention-mask buffers
(attn.bias, attn.masked_bias) are dropped; the vocabulary is padded to a multiple of 128 on import
and cut back on export. safetensors is read and written with the safetensors package's numpy API.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ._core import LlmcError, param_layout

# llmc name -> (Hugging Face name under the model, per layer?, Conv1D: transpose?)
HF_NAMES = {
    "wte": ("wte.weight", False, False),
    "wpe": ("wpe.weight", False, False),
    "ln1w": ("h.{}.ln_1.weight", True, False),
    "ln1b": ("h.{}.ln_1.bias", True, False),
    "qkvw": ("h.{}.attn.c_attn.weight", True, True),
    "qkvb": ("h.{}.attn.c_attn.bias", True, False),
    "attprojw": ("h.{}.attn.c_proj.weight", True, True),
    "attprojb": ("h.{}.attn.c_proj.bias", True, False),
    "ln2w": ("h.{}.ln_2.weight", True, False),
    "ln2b": ("h.{}.ln_2.bias", True, False),
    "fcw": ("h.{}.mlp.c_fc.weight", True, True),
    "fcb": ("h.{}.mlp.c_fc.bias", True, False),
    "fcprojw": ("h.{}.mlp.c_proj.weight", True, True),
    "fcprojb": ("h.{}.mlp.c_proj.bias", True, False),
    "lnfw": ("ln_f.weight", False, False),
    "lnfb": ("ln_f.bias", False, False),
}
PREFIX = "transformer."  # GPT2LMHeadModel's; GPT2Model checkpoints (the hub's "gpt2") have none
DROPPED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # buffers, and the tied head
HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")

# config.json fields that must hold these values: llmc computes GPT-2 exactly, nothing else
REQUIRED = {
    "model_type": "gpt2",
    "activation_function": "gelu_new",
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}


class HFError(LlmcError):
    """A Hugging Face directory llmc cannot read: the message names the file or field."""


def _safetensors():
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError as e:
        raise HFError("Hugging Face import and export need the safetensors package: pip install 'llmc[hf]' "
                      "(or pip install safetensors)") from e
    return load_file, save_file


# ---------------------------------------------------------------- config

def config_from_hf(hf: dict, where: str = "config.json") -> dict:
    """llmc's config dict from a Hugging Face GPT-2 config, refusing what is not GPT-2."""
    archs = hf.get("architectures") or ["GPT2LMHeadModel"]
    if not all(a in ("GPT2LMHeadModel", "GPT2Model") for a in archs):
        raise HFError(f"{where}: architectures {archs} is not GPT-2 (GPT2LMHeadModel)")
    for field, want in REQUIRED.items():
        got = hf.get(field, want)
        if got != want:
            raise HFError(f"{where}: {field} is {got!r}; llmc computes GPT-2 with {field} = {want!r} only")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise HFError(f"{where}: layer_norm_epsilon is {eps}; llmc's layernorm uses 1e-5")
    try:
        L, NH, C = int(hf["n_layer"]), int(hf["n_head"]), int(hf["n_embd"])
        T, V = int(hf.get("n_positions", hf.get("n_ctx", 1024))), int(hf["vocab_size"])
    except KeyError as e:
        raise HFError(f"{where}: missing field {e.args[0]}") from e
    inner = hf.get("n_inner")
    if inner is not None and int(inner) != 4 * C:
        raise HFError(f"{where}: n_inner is {inner}; GPT-2's MLP is 4 * n_embd = {4 * C}")
    if C % NH:
        raise HFError(f"{where}: n_embd {C} is not a multiple of n_head {NH}")
    return dict(num_layers=L, num_heads=NH, channels=C, max_seq_len=T, vocab_size=V)


def config_to_hf(cfg: dict) -> dict:
    C = cfg["channels"]
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "n_layer": cfg["num_layers"], "n_head": cfg["num_heads"], "n_embd": C, "n_positions": cfg["max_seq_len"],
        "n_ctx": cfg["max_seq_len"], "vocab_size": cfg["vocab_size"], "n_inner": None,
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "tie_word_embeddings": True,
        "bos_token_id": 50256, "eos_token_id": 50256, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "use_cache": True, "torch_dtype": "float32",
    }


# ---------------------------------------------------------------- tensors

def _read_tensors(d: Path) -> Dict[str, np.ndarray]:
    """Every tensor of a directory's model.safetensors, or of the shards its index names."""
    load_file, _ = _safetensors()
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    files = []
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise HFError(f"{index}: not a safetensors index ({e})") from e
        files = [d / f for f in sorted(set(weight_map.values()))]
    else:
        raise HFError(f"{d} has neither model.safetensors nor model.safetensors.index.json (pytorch_model.bin "
                      "is not read: re-save it with safe_serialization=True)")
    tensors = {}
    for f in files:
        if not f.is_file():
            raise HFError(f"{f} is named by the index but missing")
        try:
            tensors.update(load_file(str(f)))
        except TypeError as e:  # numpy has no bfloat16
            raise HFError(f"{f} stores bfloat16 tensors, which safetensors' numpy API cannot read; save the "
                          f"model in float32 or float16 (model.float().save_pretrained(dir))") from e
        except Exception as e:  # truncated or corrupt: the package's message, with the file
            raise HFError(f"{f} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    return tensors


def _as_f32(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype in (np.float32, np.float16, np.float64):
        return a.astype(np.float32)
    raise HFError(f"tensor {name} has dtype {a.dtype}; llmc reads float weights")


def flat_from_hf(tensors: Dict[str, np.ndarray], cfg: dict, where: str) -> np.ndarray:
    """The flat float32 parameters in llmc's order from Hugging Face tensors."""
    prefix = PREFIX if any(k.startswith(PREFIX) for k in tensors) else ""
    used, parts = set(), []
    layout = param_layout(cfg)
    for name, _, shape, _ in layout:
        hf_name, layered, conv1d = HF_NAMES[name]
        layers = range(cfg["num_layers"]) if layered else [None]
        for layer in layers:
            key = prefix + (hf_name.format(layer) if layered else hf_name)
            if key not in tensors:
                raise HFError(f"{where}: tensor {key} is missing")
            a = _as_f32(tensors[key], key)
            want = shape[1:] if layered else shape
            if conv1d:
                a = a.T
            if name == "wte":  # padded to Vp rows on import
                if a.shape != (cfg["vocab_size"], want[1]):
                    raise HFError(f"{where}: {key} has shape {a.shape}, the config needs "
                                  f"{(cfg['vocab_size'], want[1])}")
                a = np.concatenate([a, np.zeros((want[0] - a.shape[0], want[1]), np.float32)])
            if a.shape != tuple(want):
                stored = a.T.shape if conv1d else a.shape
                raise HFError(f"{where}: {key} has shape {stored}, the config needs "
                              f"{tuple(reversed(want)) if conv1d else tuple(want)}")
            parts.append(np.ascontiguousarray(a).reshape(-1))
            used.add(key)
    unknown = [k for k in tensors if k not in used and not k.endswith(DROPPED)]
    if unknown:
        raise HFError(f"{where}: tensors GPT-2 does not have: {', '.join(sorted(unknown)[:5])}")
    return np.concatenate(parts)


def tensors_to_hf(flat: np.ndarray, cfg: dict) -> Dict[str, np.ndarray]:
    out = {}
    for name, off, shape, _ in param_layout(cfg):
        a = flat[off:off + int(np.prod(shape))].reshape(shape)
        hf_name, layered, conv1d = HF_NAMES[name]
        if name == "wte":
            a = a[:cfg["vocab_size"]]
        for layer in range(cfg["num_layers"]) if layered else [None]:
            t = a[layer] if layered else a
            out[PREFIX + (hf_name.format(layer) if layered else hf_name)] = np.ascontiguousarray(t.T if conv1d else t)
    return out


# ---------------------------------------------------------------- directories and the hub

def resolve(path_or_name) -> Path:
    """A local directory, or a hub name downloaded through huggingface_hub (when installed and online)."""
    p = Path(os.path.expanduser(str(path_or_name)))
    if p.is_dir():
        return p
    if p.exists():
        raise HFError(f"{p} is a file; a Hugging Face model is a directory with config.json and model.safetensors")
    name = str(path_or_name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HFError(f"'{name}' is not a local directory, and downloading it needs huggingface_hub: "
                      f"pip install 'llmc[hf]', or pass a local directory holding config.json and "
                      f"model.safetensors") from None
    try:
        return Path(snapshot_download(name, allow_patterns=["config.json", "*.safetensors",
                                                            "model.safetensors.index.json"]))
    except Exception as e:
        raise HFError(f"cannot download '{name}' from the Hugging Face hub ({type(e).__name__}: {e}). Offline, "
                      f"pass a local directory holding config.json and model.safetensors (for instance one "
                      f"downloaded elsewhere with huggingface-cli download {name})") from e


def load(path_or_name) -> Tuple[dict, np.ndarray]:
    """(llmc config, flat float32 parameters) of a Hugging Face GPT-2 directory or hub name."""
    d = resolve(path_or_name)
    cfg_path = d / "config.json"
    try:
        hf_cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise HFError(f"{d} has no config.json") from None
    except ValueError as e:
        raise HFError(f"{cfg_path} is not valid JSON ({e})") from e
    cfg = config_from_hf(hf_cfg, str(cfg_path))
    return cfg, flat_from_hf(_read_tensors(d), cfg, str(d))


def save(directory, cfg: dict, flat: np.ndarray) -> Path:
    """Writes config.json and model.safetensors that transformers.GPT2LMHeadModel.from_pretrained loads.
    Both are written to temporary names first, so an interrupted export leaves no half file."""
    _, save_file = _safetensors()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp_st, tmp_cfg = d / ".model.safetensors.tmp", d / ".config.json.tmp"
    save_file(tensors_to_hf(np.asarray(flat, np.float32), cfg), str(tmp_st), metadata={"format": "pt"})
    tmp_cfg.write_text(json.dumps(config_to_hf(cfg), indent=2) + "\n")
    os.replace(tmp_st, d / "model.safetensors")
    os.replace(tmp_cfg, d / "config.json")
    return d

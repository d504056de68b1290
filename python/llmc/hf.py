"""Hugging Face GPT-2 in and out: config.json + model.safetensors <-> llmc's tensor table.

The mapping and the config rules are C's, written once beside the tensor table (src/weights.c,
src/hf_config.c) and read here through _core: hf_tensor_names gives each of llmc's tensors as a
Hugging Face tensor per layer, transposed where GPT-2 uses Conv1D (stored (in, out); llmc stores
(out, in)); hf_config refuses configs that are not exactly GPT-2. The LM head is tied to wte; the
attention-mask buffers (attn.bias, attn.masked_bias) are dropped (hf_ignored); the vocabulary is
padded to a multiple of 128 on import and cut back on export. Here safetensors is read and written
with the safetensors package's numpy API; the C trainers read it by hand (src/hf_model.c).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from ._core import HF_PREFIX, LlmcError, hf_config, hf_ignored, hf_tensor_names, param_layout

PREFIX = HF_PREFIX  # GPT2LMHeadModel's; GPT2Model checkpoints (the hub's "gpt2") have none
HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")


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

def config_from_hf(hf: Union[dict, str], where: str = "config.json") -> dict:
    """llmc's config dict from a Hugging Face GPT-2 config (a dict, or config.json's text), refusing
    what is not GPT-2 by C's rules (llmc_hf_config)."""
    try:
        return hf_config(hf if isinstance(hf, (str, bytes)) else json.dumps(hf))
    except LlmcError as e:
        raise HFError(f"{where}: {e}") from None


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
    shapes = {name: shape for name, _, shape, _ in param_layout(cfg)}
    used, parts = set(), []
    for name, layer, hf_name, conv1d in hf_tensor_names(cfg):  # the table's order: concatenation is the layout
        key = prefix + hf_name
        if key not in tensors:
            raise HFError(f"{where}: tensor {key} is missing")
        a = _as_f32(tensors[key], key)
        want = shapes[name][1:] if layer is not None else shapes[name]
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
    unknown = [k for k in tensors if k not in used and not hf_ignored(k)]
    if unknown:
        raise HFError(f"{where}: tensors GPT-2 does not have: {', '.join(sorted(unknown)[:5])}")
    return np.concatenate(parts)


def tensors_to_hf(flat: np.ndarray, cfg: dict) -> Dict[str, np.ndarray]:
    layout = {name: (off, shape) for name, off, shape, _ in param_layout(cfg)}
    out = {}
    for name, layer, hf_name, conv1d in hf_tensor_names(cfg):
        off, shape = layout[name]
        a = flat[off:off + int(np.prod(shape))].reshape(shape)
        t = a[layer] if layer is not None else a
        if name == "wte":
            t = t[:cfg["vocab_size"]]
        out[PREFIX + hf_name] = np.ascontiguousarray(t.T if conv1d else t)
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
        text = cfg_path.read_bytes()
    except FileNotFoundError:
        raise HFError(f"{d} has no config.json") from None
    cfg = config_from_hf(text, str(cfg_path))
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

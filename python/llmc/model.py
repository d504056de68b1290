"""llmc.GPT2 — the Python face of the C engine.

Every method is a thin call into llmc._core; errors from C arrive as llmc.LlmcError
with the C message. Arrays are numpy: tokens int32 of shape (B, T), values float32.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import LlmcError

Tokens = Union[Sequence[int], np.ndarray]


class GPT2:
    """A GPT-2 model on one backend ("cpu" or "cuda"), with its gradients and AdamW state."""

    def __init__(self, core: "_core.Model", device: str):
        self._m = core
        self.device = device
        self._layout = _core.param_layout(core.config)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path, device: str = "cpu", *, gpu: int = 0, master_weights: bool = True,
                        recompute: int = 0) -> "GPT2":
        """Loads an llm.c/llmc model file (v3 fp32 or v5 bf16)."""
        m = _core.Model()
        m.load(path, backend=device, device=gpu, master_weights=int(master_weights), recompute=recompute)
        return cls(m, device)

    @classmethod
    def from_config(cls, config: Union[str, dict, None] = None, device: str = "cpu", *, seed: int = 1337,
                    gpu: int = 0, master_weights: bool = True, recompute: int = 0, **shape) -> "GPT2":
        """A freshly initialised model. config is a descriptor ("d12", "L=2,H=4,C=64"), a dict with
        num_layers, num_heads, channels[, max_seq_len, vocab_size], or given as keyword arguments."""
        if isinstance(config, str):
            cfg = _core.config_from_descriptor(config)
        else:
            cfg = dict(config or {}, **shape)
        m = _core.Model()
        m.init_random(cfg, backend=device, seed=seed, device=gpu, master_weights=int(master_weights),
                      recompute=recompute)
        return cls(m, device)

    def save(self, path, version: Optional[int] = None) -> None:
        """Writes a model file atomically: version 3 (fp32) or 5 (bf16); default: the backend's own precision."""
        self._m.save(path, version or 0)

    # ------------------------------------------------------------------ shape and parameters
    @property
    def config(self) -> dict:
        return self._m.config

    @property
    def num_params(self) -> int:
        return self._m.num_params

    def _split(self, flat: np.ndarray) -> dict:
        return {name: flat[off:off + int(np.prod(shape))].reshape(shape) for name, off, shape, _ in self._layout}

    @property
    def params(self) -> dict:
        """name -> array. On the CPU these are live views of the C buffers; on the GPU, copies."""
        flat = self._m.params_view()
        return self._split(flat if flat is not None else self._m.get_params())

    @property
    def grads(self) -> dict:
        flat = self._m.grads_view()
        return self._split(flat if flat is not None else self._m.get_grads())

    def get_params(self) -> np.ndarray:
        """All parameters as one flat float32 copy (llm.c order)."""
        return self._m.get_params()

    def set_params(self, values) -> None:
        self._m.set_params(values)

    # ------------------------------------------------------------------ training
    def forward(self, tokens, targets=None, return_logits: bool = True):
        """Returns (logits (B,T,V) or None, mean loss or None)."""
        loss = self._m.forward(tokens, targets)
        logits = self._m.logits() if return_logits else None
        return logits, (None if targets is None else float(loss))

    def backward(self, loss_scale: float = 1.0) -> None:
        """Accumulates gradients of loss_scale * the mean loss of the last forward."""
        self._m.backward(loss_scale)

    def zero_grad(self) -> None:
        self._m.zero_grad()

    def step(self, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
             weight_decay: float = 0.0, grad_clip: float = 1.0) -> float:
        """One AdamW step; returns the gradient norm before clipping."""
        return self._m.step(lr, beta1, beta2, eps, weight_decay, grad_clip)

    def train(self, data: str, steps: int, batch_size: int = 4, seq_len: int = 64, *, lr: float = 3e-4,
              schedule: str = "cosine", warmup: int = 0, final_lr_frac: float = 0.0, weight_decay: float = 0.0,
              grad_clip: float = 1.0, grad_accum: int = 1, shuffle: bool = False, seed: int = 1337,
              val_data: Optional[str] = None, val_every: int = 0, val_batches: int = 10,
              callback: Optional[Callable[[dict], None]] = None, progress: bool = True) -> list:
        """Trains on token shards matching the glob `data`; returns one dict per step
        (step, loss, lr, grad_norm, ms, tok_s, and val_loss where evaluated). callback gets each dict."""
        loader = _core.DataLoader(data, batch_size, seq_len, shuffle=shuffle, seed=seed)
        val = _core.DataLoader(val_data, batch_size, seq_len) if val_data and val_every > 0 else None
        bar = _progress(steps, progress)
        history = []
        for step in range(steps):
            t0 = time.perf_counter()
            self.zero_grad()
            loss = 0.0
            for _ in range(grad_accum):
                x, y = loader.next()
                loss += self._m.forward_backward(x, y, 1.0 / grad_accum) / grad_accum
            step_lr = _core.schedule_lr(schedule, lr, warmup, steps, final_lr_frac, step)
            norm = self.step(step_lr, weight_decay=weight_decay, grad_clip=grad_clip)
            dt = time.perf_counter() - t0
            rec = dict(step=step + 1, loss=loss, lr=step_lr, grad_norm=norm, ms=1e3 * dt,
                       tok_s=grad_accum * batch_size * seq_len / dt)
            if val is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
                rec["val_loss"] = self.evaluate(val, val_batches)
            history.append(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{step_lr:.2e}")
                bar.update(1)
            if callback is not None:
                callback(rec)
        if bar is not None:
            bar.close()
        return history

    def evaluate(self, loader: "_core.DataLoader", batches: int) -> float:
        """Mean loss over the first `batches` batches of a loader (rewound first)."""
        loader.reset()
        total = 0.0
        for _ in range(batches):
            x, y = loader.next()
            total += self._m.forward(x, y)
        return total / batches

    # ------------------------------------------------------------------ generation
    def stream(self, prompt, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, seed: int = 1337, eot: int = 50256, tokenizer=None) -> Iterator[int]:
        """Yields new token ids of one sequence as they are sampled (prompt: text or token ids)."""
        ids = self._encode(prompt, tokenizer)
        self._m.gen_begin([ids], max_new_tokens, temperature, top_k, top_p, seed, eot)
        try:
            alive = 1
            while alive:
                out, alive = self._m.gen_next(1)
                if out[0] >= 0:
                    yield int(out[0])
        finally:
            self._m.gen_end()

    def generate(self, prompt, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 1337, eot: int = 50256, tokenizer=None):
        """Samples a continuation. prompt: a string (returns the generated text), token ids (returns an
        int32 array of new ids), or a list of either for a batch (returns a list). Stops at EOT,
        max_new_tokens or the context limit; temperature 0 is greedy."""
        batch = isinstance(prompt, list) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
        prompts = prompt if batch else [prompt]
        ids = [self._encode(p, tokenizer) for p in prompts]
        self._m.gen_begin(ids, max_new_tokens, temperature, top_k, top_p, seed, eot)
        new = [[] for _ in ids]
        try:
            alive = len(ids)
            while alive:
                out, alive = self._m.gen_next(len(ids))
                for b, tok in enumerate(out):
                    if tok >= 0 and tok != eot:
                        new[b].append(int(tok))
        finally:
            self._m.gen_end()
        results = [self._decode(n, tokenizer) if isinstance(p, str) else np.array(n, np.int32)
                   for p, n in zip(prompts, new)]
        return results if batch else results[0]

    def _encode(self, prompt, tokenizer) -> np.ndarray:
        if isinstance(prompt, str):
            from .tokenizer import encode
            return np.array(encode(prompt, tokenizer), np.int32)
        return np.ascontiguousarray(prompt, dtype=np.int32).reshape(-1)

    @staticmethod
    def _decode(ids, tokenizer) -> str:
        from .tokenizer import decode
        return decode(ids, tokenizer)

    def __repr__(self) -> str:
        c = self.config
        return (f"GPT2(L={c['num_layers']}, H={c['num_heads']}, C={c['channels']}, T={c['max_seq_len']}, "
                f"V={c['vocab_size']}, params={self.num_params:,}, device={self.device!r})")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True)

"""llmc.GPT2 — the Python face of the C engine.

Every method is a thin call into llmc._core; errors from C arrive as llmc.LlmcError
with the C message. Arrays are numpy: tokens int32 of shape (B, T), values float32.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import LlmcError

Tokens = Union[Sequence[int], np.ndarray]


class GPT2:
    """A GPT-2 model on one backend ("cpu" or "cuda").

    The weights live in a C model object; training state (gradients, activations, AdamW moments,
    master weights) in a C trainer that is made on first use, so a model that only generates
    never allocates it. Generation runs in C sessions, several of which may be alive at once."""

    def __init__(self, core: "_core.Model", device: str, *, master_weights: bool = True, recompute: int = 0,
                 keep_zeros: bool = False, fp8: Union[bool, int] = False):
        """fp8=True (or 1) trains the layers' matmuls on fp8 tensor cores (CUDA, compute capability 8.9+);
        fp8=2 the LM head's too."""
        self._m = core
        self.device = device
        self._train_options = dict(master_weights=int(master_weights), recompute=recompute,
                                   keep_zeros=int(bool(keep_zeros)), fp8=int(fp8))
        self._t: Optional["_core.Trainer"] = None
        self._comm_open = False
        self._layout = _core.param_layout(core.config)
        self._last_shape = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path, device: str = "cpu", *, gpu: int = 0, master_weights: bool = True,
                        recompute: int = 0, quantize: Optional[str] = None, group_size: int = 0,
                        quantize_embeddings: bool = True, fp8: Union[bool, int] = False) -> "GPT2":
        """Loads an llm.c/llmc model file (v3 fp32, v5 bf16, v8 llmc int8) or a Hugging Face
        directory. quantize="int8" quantizes it on load (see quantize())."""
        m = _core.Model()
        m.load(path, backend=device, device=gpu)
        model = cls(m, device, master_weights=master_weights, recompute=recompute, fp8=fp8)
        if quantize is not None:
            model.quantize(quantize, group_size=group_size, embeddings=quantize_embeddings)
        return model

    def quantize(self, scheme: str = "int8", *, group_size: int = 0, embeddings: bool = True) -> None:
        """int8 weight-only quantization in place: symmetric int8 with an fp32 scale per output channel
        (group_size 0) or per group_size inputs (a multiple of 16); embeddings=True quantizes wte (the
        LM head) too. The model then evaluates and generates, but no longer trains."""
        if scheme != "int8":
            raise LlmcError(f"quantize: the scheme must be 'int8', not {scheme!r}")
        if self._t is not None:  # scales from the fp32 master weights where a trainer keeps them
            values = self._t.get_params()
            self._t = None  # its buffers belong to the float weights
            self._m.set_params(values)
        self._m.quantize(group_size=group_size, embeddings=embeddings)

    @property
    def quantized(self) -> Optional[dict]:
        """None for float weights, else dict(group_size=..., embeddings=...)."""
        return self._m.quantized

    @classmethod
    def from_config(cls, config: Union[str, dict, None] = None, device: str = "cpu", *, seed: int = 1337,
                    gpu: int = 0, master_weights: bool = True, recompute: int = 0, fp8: Union[bool, int] = False,
                    **shape) -> "GPT2":
        """A freshly initialised model. config is a descriptor ("d12", "L=2,H=4,C=64"), a dict with
        num_layers, num_heads, channels[, max_seq_len, vocab_size], or given as keyword arguments."""
        if isinstance(config, str):
            cfg = _core.config_from_descriptor(config)
        else:
            cfg = dict(config or {}, **shape)
        m = _core.Model()
        m.init_random(cfg, backend=device, seed=seed, device=gpu)
        return cls(m, device, master_weights=master_weights, recompute=recompute, fp8=fp8)

    @classmethod
    def from_hf(cls, path_or_name, device: str = "cpu", *, dtype: Optional[str] = None, gpu: int = 0,
                master_weights: bool = True, recompute: int = 0, fp8: Union[bool, int] = False) -> "GPT2":
        """A Hugging Face GPT-2: a local directory (config.json + model.safetensors, or the sharded
        model.safetensors.index.json) or a hub name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
        "distilgpt2", any GPT-2-architecture repo; needs huggingface_hub and the network). dtype
        "bfloat16" rounds the weights to bf16 first, as a v5 file holds them; default: as stored."""
        from . import hf
        cfg, flat = hf.load(path_or_name)
        if dtype in ("bfloat16", "bf16"):
            flat = _core.round_bf16(flat)
        elif dtype not in (None, "float32", "fp32"):
            raise LlmcError(f"dtype must be float32 or bfloat16, not {dtype!r}")
        m = _core.Model()
        m.init_values(cfg, flat, backend=device, device=gpu)
        return cls(m, device, master_weights=master_weights, recompute=recompute, fp8=fp8)

    def save_hf(self, directory) -> None:
        """Writes a Hugging Face directory (config.json, model.safetensors in float32) that
        transformers.GPT2LMHeadModel.from_pretrained(directory) loads unchanged."""
        from . import hf
        hf.save(directory, self.config, self.get_params())

    def _join(self, trainer_options: dict, comm: Optional[dict]) -> None:
        """Trainer options that must be set before the trainer exists (zero_stage, overlap,
        exact_accum), then its communicator, opened once from the launcher's environment."""
        for key, value in trainer_options.items():
            if value is None or int(value) == self._train_options.get(key, 1 if key == "overlap" else 0):
                continue
            if self._t is not None:
                raise LlmcError(f"{key} is fixed once the model has a trainer: make a new model to change it")
            self._train_options[key] = int(value)
        if self._comm_open:
            return
        self._trainer().open_comm(**(comm or {}))  # which has MPI end at exit, if it started it
        self._comm_open = True

    @property
    def rank(self) -> int:
        """This process's rank in a data-parallel run (0 alone)."""
        return self._t.rank if self._t is not None else 0

    @property
    def world(self) -> int:
        """Processes in the run (1 alone)."""
        return self._t.world if self._t is not None else 1

    def _trainer(self) -> "_core.Trainer":
        if self._t is None:
            self._t = _core.Trainer(self._m, **self._train_options)
        return self._t

    def save(self, path, version: Optional[int] = None) -> None:
        """Writes a model file atomically: version 3 (fp32), 5 (bf16) or 8 (int8, a quantized model);
        default: the model's own precision. After training on the GPU, v3 holds the fp32 master weights."""
        (self._t.save_model if self._t is not None else self._m.save)(path, version or 0)

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
        """name -> array. On the CPU these are live views of the C buffers; on the GPU (or quantized:
        the dequantized values), copies."""
        flat = self._m.params_view()
        return self._split(flat if flat is not None else self.get_params())

    @property
    def grads(self) -> dict:
        flat = self._trainer().grads_view()
        return self._split(flat if flat is not None else self._trainer().get_grads())

    def get_params(self) -> np.ndarray:
        """All parameters as one flat float32 copy (llm.c order); the fp32 master weights where kept."""
        return (self._t or self._m).get_params()

    def set_params(self, values) -> None:
        (self._t or self._m).set_params(values)

    def prune(self, sparsity: Optional[float] = None, pattern: str = "unstructured", scope: str = "layer") -> list:
        """Magnitude pruning of the matmul weights (qkvw, attprojw, fcw, fcprojw of every layer), in C
        (llmc_prune_values) on the weights training uses (the master weights where kept). pattern
        "unstructured" zeroes the round(sparsity * n) smallest |w| of each tensor of each layer (scope
        "layer") or of all of them at once ("global"); "2:4" the 2 smallest of every 4 consecutive weights
        of a row (sparsity then 0.5 or None). Ties go by position. Returns one dict per tensor and layer:
        tensor, layer, numel, zeros. Fine-tune with keep_zeros=True to keep the zeros."""
        flat, report = _core.prune_values(self.config, self.get_params(), sparsity, pattern, scope)
        self.set_params(flat)
        return report

    @property
    def keep_zeros(self) -> bool:
        """True: matmul weights that are exactly 0 stay 0 through training steps (fine-tuning a pruned
        model); the mask is made from the zeros the weights have at the next step."""
        return bool(self._train_options["keep_zeros"])

    @keep_zeros.setter
    def keep_zeros(self, on: bool) -> None:
        self._train_options["keep_zeros"] = int(bool(on))
        if self._t is not None:
            self._t.keep_zeros = bool(on)

    @property
    def memory(self) -> dict:
        """Device memory in bytes: the weights, and the training state once there is one."""
        return dict(weights=self._m.memory, training=self._t.memory if self._t is not None else 0)

    # ------------------------------------------------------------------ training
    def forward(self, tokens, targets=None, return_logits: bool = True, reduction: str = "mean"):
        """Returns (logits (B,T,V) or None, loss or None). reduction "mean": the mean loss over the
        counted targets (targets of -1 are left out); "none": the (B,T) per-token losses, 0 where
        the target is -1 (what the evals in llmc.eval score with)."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")
        t = self._trainer()
        loss = t.forward(tokens, targets)
        shape = np.shape(np.atleast_2d(tokens))
        logits = t.logits(*shape) if return_logits else None
        if targets is None:
            return logits, None
        return logits, (t.losses(*shape) if reduction == "none" else float(loss))

    def backward(self, loss_scale: float = 1.0) -> None:
        """Accumulates gradients of loss_scale * the mean loss of the last forward."""
        self._trainer().backward(loss_scale)

    def zero_grad(self) -> None:
        self._trainer().zero_grad()

    def step(self, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
             weight_decay: float = 0.0, grad_clip: float = 1.0) -> float:
        """One AdamW step; returns the gradient norm before clipping."""
        return self._trainer().step(lr, beta1, beta2, eps, weight_decay, grad_clip)

    def train(self, data: str, steps: Optional[int] = None, batch_size: Optional[int] = None,
              seq_len: Optional[int] = None, *, grad_accum: Optional[int] = None,
              callback: Optional[Callable[[dict], Optional[bool]]] = None, progress: bool = True,
              keep_zeros: Optional[bool] = None, teacher=None, distill_alpha: Optional[float] = None,
              distill_temperature: Optional[float] = None, zero_stage: Optional[int] = None,
              comm: Optional[dict] = None, **options) -> list:
        """Trains on token shards matching the glob `data` with the C training loop (the one behind
        ./train_gpt2), so every option and default is the CLI's; see the README's table. Options, by
        their long CLI names with '_': steps (-x), batch_size (-b), seq_len (-t), total_batch (-d) or
        grad_accum (micro-batches per step), lr, warmup, final_lr_frac, schedule, weight_decay, grad_clip,
        val_data, val_every, val_batches, sample_every, gen_len, ckpt_every, out_dir, resume, shuffle, seed,
        eval_file and eval_limit (a HellaSwag file in llm.c's format, scored at every val step).

        Compression: keep_zeros=True (--prune-mask 1) keeps exactly-zero matmul weights at 0 from now on
        (it sets self.keep_zeros). teacher (--teacher), a model file or a GPT2 on the same device with the
        same vocabulary, makes the train loss alpha * CE + (1 - alpha) * tau^2 * KL(teacher || student)
        with distill_alpha (default 0.5) and distill_temperature (tau, default 2); val loss stays CE.

        Data parallel: under mpirun (CPU) or torchrun/slurm (CUDA, one GPU per process: make the model
        with gpu=llmc.local_rank()) every process calls train with the same arguments; the batches are
        split over the ranks, gradients, losses and norms summed, and rank 0 alone shows progress and
        writes (the others return an empty history). zero_stage=1 splits AdamW's state over the ranks
        (overlap=False and exact_accum=True as the CLI's --overlap 0 and --exact-accum 1);
        comm takes Trainer.open_comm's options (init="tcp"|"file"|"mpi", addr, port, file, timeout).

        Returns one dict per optimizer step: step, loss, lr, grad_norm, ms, tok_s, mfu, plus val_loss,
        eval_acc and eval_acc_norm, sample (token ids) and checkpoint where they happened at that step. callback(record) runs as
        each step finishes (a validation, sample or checkpoint of that step is added to the same dict
        right after); a true return value stops training once that step's validation, sample and
        checkpoint are done."""
        options = dict(options)
        self._join(dict(zero_stage=zero_stage, overlap=options.pop("overlap", None),
                        exact_accum=options.pop("exact_accum", None)), comm)
        opts = dict(options, train_data=data)
        if keep_zeros is not None:
            self.keep_zeros = keep_zeros
        teacher_model = teacher if isinstance(teacher, GPT2) else None
        if teacher is not None and teacher_model is None:
            opts["teacher"] = str(teacher)
        if teacher_model is None:  # the loop loads a file teacher; without one these are refused there
            for key, value in (("distill_alpha", distill_alpha), ("distill_temperature", distill_temperature)):
                if value is not None:
                    opts[key] = value
        for key, value in (("max_steps", steps), ("batch_size", batch_size), ("seq_len", seq_len)):
            if value is not None:
                opts[key] = value
        if "steps" in opts:
            opts["max_steps"] = opts.pop("steps")
        opts.setdefault("val_data", None)  # Python validates only when given val_data
        if "val_data" in opts and opts["val_data"] is None:
            opts["val_every"] = 0
        if grad_accum is not None:
            defaults = _core.loop_defaults(self.device)
            bt = opts.get("batch_size", defaults["batch_size"]) * opts.get("seq_len", defaults["seq_len"])
            if opts.get("total_batch", grad_accum * bt) != grad_accum * bt:
                raise LlmcError(f"grad_accum={grad_accum} and total_batch={opts['total_batch']} disagree "
                                f"(B*T = {bt})")
            opts["total_batch"] = grad_accum * bt
        history: list = []
        bar = [None]

        def on_event(e: dict):
            kind = e.pop("event")
            if kind == "step":
                rec = e
                rec.pop("max_steps", None)
                history.append(rec)
                if progress and bar[0] is None and self._t.rank == 0:
                    bar[0] = _progress(e.get("max_steps") or opts.get("max_steps", 0), True)
                if bar[0] is not None:
                    bar[0].set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
                    bar[0].update(1)
                return callback(rec) if callback is not None else None
            if kind in ("val", "sample", "checkpoint") and history and history[-1]["step"] == e["step"]:
                key = {"val": "val_loss", "sample": "tokens", "checkpoint": "text"}[kind]
                history[-1][{"val": "val_loss", "sample": "sample", "checkpoint": "checkpoint"}[kind]] = e[key]
            if kind == "eval" and history and history[-1]["step"] == e["step"]:
                history[-1].update(eval_acc=e["acc"], eval_acc_norm=e["acc_norm"])
            return None

        if teacher_model is not None:
            self._trainer().set_teacher(teacher_model._m, 0.5 if distill_alpha is None else distill_alpha,
                                        2.0 if distill_temperature is None else distill_temperature)
        try:
            self._trainer().run(opts, on_event)
        finally:
            if teacher_model is not None:
                self._trainer().set_teacher(None)
            if bar[0] is not None:
                bar[0].close()
            self._layout = _core.param_layout(self._m.config)  # a resume may have loaded another shape
        return history

    def evaluate(self, loader: "_core.DataLoader", batches: int) -> float:
        """Mean loss over the first `batches` batches of a loader (rewound first)."""
        loader.reset()
        t = self._trainer()
        total = 0.0
        for _ in range(batches):
            x, y = loader.next()
            total += t.forward(x, y)
        return total / batches

    # ------------------------------------------------------------------ generation
    def stream(self, prompt, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, seed: int = 1337, eot: int = 50256, tokenizer=None) -> Iterator[int]:
        """Yields new token ids of one sequence as they are sampled (prompt: text or token ids). Each
        stream is its own session: several may run interleaved on one model."""
        ids = self._encode(prompt, tokenizer)
        session = _core.Session(self._m, [ids], max_new_tokens, temperature, top_k, top_p, seed, eot)
        try:
            alive = 1
            while alive:
                out, alive = session.next()
                if out[0] >= 0:
                    yield int(out[0])
        finally:
            session.end()

    def generate(self, prompt, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 1337, eot: int = 50256, tokenizer=None):
        """Samples a continuation. prompt: a string (returns the generated text), token ids (returns an
        int32 array of new ids), or a list of either for a batch (returns a list). Stops at EOT,
        max_new_tokens or the context limit; temperature 0 is greedy."""
        batch = isinstance(prompt, list) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
        prompts = prompt if batch else [prompt]
        ids = [self._encode(p, tokenizer) for p in prompts]
        session = _core.Session(self._m, ids, max_new_tokens, temperature, top_k, top_p, seed, eot)
        new = [[] for _ in ids]
        try:
            alive = len(ids)
            while alive:
                out, alive = session.next()
                for b, tok in enumerate(out):
                    if tok >= 0 and tok != eot:
                        new[b].append(int(tok))
        finally:
            session.end()
        results = [self._decode(n, tokenizer) if isinstance(p, str) else np.array(n, np.int32)
                   for p, n in zip(prompts, new)]
        return results if batch else results[0]

    def _encode(self, prompt, tokenizer) -> np.ndarray:
        if isinstance(prompt, str):
            from .tokenizer import encode
            return np.array(encode(prompt, tokenizer), np.int32)
        ids = _core.token_array(prompt, "prompt")
        if ids.ndim > 1:
            raise LlmcError(f"a prompt is a 1-D sequence of token ids, got shape {ids.shape}")
        return ids.reshape(-1)

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

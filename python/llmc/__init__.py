"""llmc — GPT-2 training and sampling in C/CUDA, driven from Python.

    import llmc
    model = llmc.GPT2.from_config("d12")            # or GPT2.from_pretrained("gpt2_124M.bin", device="cuda")
    logits, loss = model.forward(tokens, targets)
    model.backward(); model.step(lr=3e-4)
    print(model.generate("To be, or not to be", max_new_tokens=32))

The compiled extension is imported on first use, so the pure-Python tools
(llmc.prepare, llmc.tokenizer) work before it is built.
"""
import os as _os

# OpenMP's default of spinning idle threads collapses on a busy small machine (decode 2 tok/s instead
# of 22 on a loaded 2-core VM; docs/PERF.md). libgomp reads this when the extension loads, so it is
# set here, before that, unless the user chose otherwise.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["GPT2", "LlmcError", "backends", "local_rank"]
__version__ = "0.1.0"


def missing_library_message(error: ImportError) -> str:
    """What to do when the extension cannot load a shared library (the CUDA build's cuBLAS)."""
    text = str(error)
    if "cannot open shared object file" not in text:
        return text
    lib = text.split(":")[0].strip()
    wheel = "nvidia-nccl-cu12" if "nccl" in lib else "nvidia-cublas"  # NCCL: the multi-GPU engine
    return (f"llmc's compiled core needs {lib}, which the dynamic loader cannot find. It comes with the CUDA "
            f"toolkit the package was built with, or from pip ({wheel}); put its directory on "
            f"LD_LIBRARY_PATH, or install a CPU-only build: LLMC_CUDA=OFF pip install --no-binary llmc llmc "
            f"(in a checkout: make LLMC_CUDA=OFF python). ({text})")


def local_rank() -> int:
    """This process's rank on its node, as mpirun, torchrun or slurm set it (0 alone): the GPU to take."""
    from . import _core
    return _core.comm_env()[2]


def __getattr__(name):
    try:
        if name in ("LlmcError", "backends"):
            from . import _core
            return getattr(_core, name)
        if name == "GPT2":
            from .model import GPT2
            return GPT2
    except ImportError as e:
        raise ImportError(missing_library_message(e)) from e
    raise AttributeError(f"module 'llmc' has no attribute {name!r}")

"""Small shared helpers for tests: tiny token shards, llm.c model files, bf16 rounding.

Everything here is plain numpy so tests can build inputs without going through the
library they check. Import as `from helpers import ...` (pytest puts tests/ on sys.path).
"""
import os

import numpy as np

SHARD_MAGIC = 20240520
MODEL_MAGIC = 20240326
STATE_MAGIC = 20240327
TOKENIZER_MAGIC = 20240328
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS

TINY = "L=2,H=2,C=32,T=32,V=64"  # 30,592 parameters, V and T small enough for fast tests
TINY_CFG = dict(num_layers=2, num_heads=2, channels=32, max_seq_len=32, vocab_size=64)


def write_shard(path, tokens, magic=SHARD_MAGIC, version=1, num_tokens=None, cut=None):
    """An llm.c token shard: 256 int32 header [magic, version, ntok] + uint16 tokens.
    num_tokens overrides the header count; cut truncates the file to that many bytes."""
    tokens = np.asarray(tokens, dtype=np.uint16)
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1] = magic, version
    header[2] = len(tokens) if num_tokens is None else num_tokens
    data = header.tobytes() + tokens.tobytes()
    if cut is not None:
        data = data[:cut]
    with open(path, "wb") as f:
        f.write(data)
    return tokens


def random_tokens(n, vocab=64, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.uint16)


def write_tiny_shards(directory, n_train=4000, n_val=600, vocab=64, seed=0, prefix="tiny"):
    """<dir>/<prefix>_train_000.bin and <prefix>_val_000.bin with ids < vocab; returns the two globs."""
    directory = str(directory)
    write_shard(os.path.join(directory, f"{prefix}_train_000.bin"), random_tokens(n_train, vocab, seed))
    write_shard(os.path.join(directory, f"{prefix}_val_000.bin"), random_tokens(n_val, vocab, seed + 1))
    return (os.path.join(directory, f"{prefix}_train_*.bin"), os.path.join(directory, f"{prefix}_val_*.bin"))


def padded_vocab(V, multiple=128):
    return (V + multiple - 1) // multiple * multiple


def llmc_layout(L, NH, C, maxT, V, Vp=None):
    """[(name, shape)] of llm.c's flat parameter buffer, written out independently of the library."""
    Vp = padded_vocab(V) if Vp is None else Vp
    return [
        ("wte", (Vp, C)), ("wpe", (maxT, C)),
        ("ln1w", (L, C)), ("ln1b", (L, C)),
        ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)),
        ("attprojw", (L, C, C)), ("attprojb", (L, C)),
        ("ln2w", (L, C)), ("ln2b", (L, C)),
        ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
        ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
        ("lnfw", (C,)), ("lnfb", (C,)),
    ]


def model_header(L, NH, C, maxT, V, Vp=None, version=3, magic=MODEL_MAGIC):
    h = np.zeros(HEADER_INTS, dtype=np.int32)
    h[:8] = [magic, version, maxT, V, L, NH, C, padded_vocab(V) if Vp is None else Vp]
    return h


def write_model_file(path, L=2, NH=2, C=32, maxT=32, V=64, Vp=None, seed=0, version=3, header=None):
    """An llm.c model file written by hand; returns {name: float32 array} of what it holds
    (for v5, the values after bf16 rounding)."""
    Vp = padded_vocab(V) if Vp is None else Vp
    rng = np.random.default_rng(seed)
    tensors = {name: (rng.standard_normal(shape) * 0.05).astype(np.float32)
               for name, shape in llmc_layout(L, NH, C, maxT, V, Vp)}
    flat = np.concatenate([t.reshape(-1) for t in tensors.values()])
    h = model_header(L, NH, C, maxT, V, Vp, version) if header is None else header
    with open(path, "wb") as f:
        f.write(h.tobytes())
        f.write(flat.tobytes() if version == 3 else bf16_bits(flat).tobytes())
    if version == 5:
        tensors = {k: bf16_round(v) for k, v in tensors.items()}
    return tensors


def bf16_bits(x):
    """uint16 bf16 bits of float32 x, round to nearest even (finite values)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def bf16_round(x):
    """float32 x rounded to bf16 (nearest even) and widened back to float32."""
    x = np.asarray(x, dtype=np.float32)
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32).reshape(x.shape)


def read_model_header(path):
    return np.fromfile(path, dtype=np.int32, count=HEADER_INTS)


def leftovers(directory):
    """Temp files an atomic writer may have left behind."""
    return sorted(n for n in os.listdir(directory) if ".tmp" in n)

"""GPT-2 tokenization through tiktoken, plus the tokenizer .bin the C side reads.

Where the BPE ranks come from, first match wins:

1. an explicit ``path`` (the CLIs' ``--tokenizer PATH``: a ranks file or a gpt2_tokenizer.bin);
2. the environment variable ``LLMC_GPT2_TIKTOKEN``;
3. ``shared/data/gpt2.tiktoken`` next to a source checkout (``<repo>/../shared/data``,
   or ``../shared/data`` from the current directory);
4. ``tiktoken.get_encoding("gpt2")``, which needs the network or a filled tiktoken cache.

Local files come first so that a machine without network never waits on a download.
A ranks file is tiktoken's format (one ``base64(token) rank`` per line). GPT-2's ranks
are the same as tiktoken's ``r50k_base`` ranks, so ``r50k_base.tiktoken`` works too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

EOT = 50256
VOCAB_SIZE = 50257
ENV_VAR = "LLMC_GPT2_TIKTOKEN"
RANKS_FILE_NAME = "gpt2.tiktoken"
TOKENIZER_BIN_NAME = "gpt2_tokenizer.bin"
TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2  # version 2 stores the EOT id in the header
HEADER_INTS = 256

# GPT-2's pre-tokenizer: contractions, letter runs, digit runs and symbol runs (each may
# carry one leading space), then whitespace. BPE merges never cross these pieces.
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# sha256 over the parsed ranks (see _ranks_digest), so a ranks file is recognised by its
# content whatever its line endings. The raw file tiktoken ships has sha256 306cd27f...d930.
GPT2_RANKS_DIGEST = "3688d51d64f4f960692ec9745abe1ddb9699fb637fe608cceaf8917b0653b79b"

class TokenizerError(RuntimeError):
    """No usable GPT-2 ranks: the message says how to supply them."""


_cache: dict = {}
_lock = threading.Lock()


def _missing_message(tried: Sequence[str]) -> str:
    lines = [
        "No GPT-2 tokenizer available: tiktoken.get_encoding('gpt2') could not fetch its "
        "files (no network and no tiktoken cache) and no local ranks file was found.",
        f"Supply the GPT-2 BPE ranks file '{RANKS_FILE_NAME}' (tiktoken format, 50,256 lines; "
        "identical to tiktoken's r50k_base.tiktoken, sha256 306cd27f03c1a714eca7108e03d66b7d"
        "c042abe8c258b44c199a7ed9838dd930) in one of these ways:",
        f"  - set the environment variable {ENV_VAR}=/path/to/{RANKS_FILE_NAME}",
        f"  - pass --tokenizer /path/to/{RANKS_FILE_NAME} to the command",
        f"  - put it at shared/data/{RANKS_FILE_NAME} beside the repository checkout",
        "It ships, for instance, as whisper/assets/gpt2.tiktoken inside the openai-whisper "
        "package on PyPI.",
    ]
    if tried:
        lines.append("Tried: " + "; ".join(tried))
    return "\n".join(lines)


def _repo_root() -> Path:
    # python/llmc/tokenizer.py -> the checkout root is two levels above python/llmc.
    return Path(__file__).resolve().parents[2]


def shared_data_dirs() -> list:
    """Candidate shared/data directories: beside the checkout, then relative to the cwd."""
    out = []
    for d in (_repo_root().parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        d = d.resolve()
        if d not in out:
            out.append(d)
    return out


def find_shared_file(name: str) -> Optional[Path]:
    for d in shared_data_dirs():
        p = d / name
        if p.is_file():
            return p
    return None


def _ranks_digest(ranks: dict) -> str:
    h = hashlib.sha256()
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little"))
        h.update(len(tok).to_bytes(2, "little"))
        h.update(tok)
    return h.hexdigest()


def is_tokenizer_bin(path) -> bool:
    """Whether path is llm.c's gpt2_tokenizer.bin (by its magic number), not a tiktoken ranks file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and int.from_bytes(head, "little") == TOKENIZER_MAGIC


def _ranks_from_tokenizer_bin(path: Path) -> dict:
    """GPT-2's ranks from a gpt2_tokenizer.bin: for byte-level BPE a token's rank is its id, and the
    file holds every token's bytes in id order (the last one is <|endoftext|>)."""
    try:
        header, toks = read_tokenizer_bin(path)
    except (ValueError, IndexError) as e:
        raise TokenizerError(f"{path} is not a valid gpt2_tokenizer.bin ({e})") from e
    return {tok: i for i, tok in enumerate(toks[:EOT])}


def encoding_from_ranks_file(path) -> tiktoken.Encoding:
    """Builds GPT-2's encoding from a local file, checking it really is GPT-2's: a tiktoken ranks
    file, or llm.c's gpt2_tokenizer.bin (told apart by content, so --tokenizer takes either)."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(
            f"GPT-2 ranks file not found: {path}\n" + _missing_message([])
        )
    if is_tokenizer_bin(path):
        ranks = _ranks_from_tokenizer_bin(path)
    else:
        try:
            ranks = load_tiktoken_bpe(str(path))
        except Exception as e:  # a wrong file shows up as a base64/parse error; keep the message short
            raise TokenizerError(f"{path} is neither a tiktoken ranks file nor a gpt2_tokenizer.bin "
                                 f"({type(e).__name__}: {str(e)[:200]})") from e
    if len(ranks) != EOT or _ranks_digest(ranks) != GPT2_RANKS_DIGEST:
        raise TokenizerError(
            f"{path} holds {len(ranks)} ranks but not GPT-2's (expected the 50,256 ranks of "
            f"{RANKS_FILE_NAME} / r50k_base.tiktoken)"
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT},
        explicit_n_vocab=VOCAB_SIZE,
    )


def resolve_ranks_path(path=None) -> Optional[Path]:
    """The local ranks file that get_encoding(path) would use, or None for tiktoken's own."""
    if path:
        return Path(path).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return find_shared_file(RANKS_FILE_NAME)


def get_encoding(path=None) -> tiktoken.Encoding:
    """GPT-2's tiktoken encoding; see the module docstring for where the ranks come from.

    Raises RuntimeError, naming LLMC_GPT2_TIKTOKEN and --tokenizer, when none is found.
    """
    local = resolve_ranks_path(path)
    key = str(local) if local is not None else "tiktoken:gpt2"
    with _lock:
        enc = _cache.get(key)
        if enc is not None:
            return enc
        if local is not None:
            enc = encoding_from_ranks_file(local)
        else:
            try:
                enc = tiktoken.get_encoding("gpt2")
            except Exception as e:
                raise TokenizerError(
                    _missing_message([f"tiktoken.get_encoding('gpt2'): {type(e).__name__}: {e}"])
                ) from e
        _cache[key] = enc
        return enc


def encode(text: str, enc: Optional[tiktoken.Encoding] = None) -> list:
    """Token ids of text. Special-token strings such as '<|endoftext|>' are plain text here."""
    return (enc or get_encoding()).encode_ordinary(text)


def decode(tokens: Iterable[int], enc: Optional[tiktoken.Encoding] = None) -> str:
    """Text of token ids (bytes that are not valid UTF-8 become U+FFFD)."""
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    return (enc or get_encoding()).decode([int(t) for t in tokens])


def tokenizer_bin_bytes(enc: tiktoken.Encoding) -> bytes:
    """llm.c's tokenizer file: 256 int32 header, then per id a uint8 length and the bytes."""
    n = enc.n_vocab
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:4] = (TOKENIZER_MAGIC, TOKENIZER_VERSION, n, enc.eot_token)
    parts = [header.tobytes()]
    for i in range(n):
        b = enc.decode_single_token_bytes(i)
        if not 0 < len(b) < 256:
            raise ValueError(f"token {i} is {len(b)} bytes long; the format stores 1..255")
        parts.append(bytes((len(b),)))
        parts.append(b)
    return b"".join(parts)


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes a file so that a crash leaves either the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_tokenizer_bin(path, enc: Optional[tiktoken.Encoding] = None) -> Path:
    """Writes the tokenizer .bin (for the C trainers' sample printing) atomically."""
    atomic_write_bytes(path, tokenizer_bin_bytes(enc or get_encoding()))
    return Path(path)


def read_tokenizer_bin(path) -> tuple:
    """(header int32 array, list of token byte strings) of a tokenizer .bin."""
    data = Path(path).read_bytes()
    header = np.frombuffer(data, dtype="<i4", count=HEADER_INTS)
    if header[0] != TOKENIZER_MAGIC:
        raise ValueError(f"{path}: bad magic {header[0]}")
    pos, toks = HEADER_INTS * 4, []
    for _ in range(int(header[2])):
        n = data[pos]
        toks.append(data[pos + 1 : pos + 1 + n])
        pos += 1 + n
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes")
    return header, toks

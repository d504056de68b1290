"""Tokenize text into llm.c-style token shards for the trainers.

    python -m llmc.prepare --input a.txt b.txt --out data/mine
    python -m llmc.prepare --dataset shakespeare --out data/shakespeare
    python -m llmc.prepare --format jsonl --input train.jsonl --out data/ft --seq-len 256

(--format jsonl: prompt/response examples with a loss mask, see llmc/prepare_jsonl.py.)

Writes into DIR:
  <name>_val_000000.bin, <name>_train_000000.bin, <name>_train_000001.bin, ...
      each: 256 int32 header [20240520, 1, num_tokens, 0, ...] then num_tokens uint16 ids;
  gpt2_tokenizer.bin
      the vocabulary in llm.c's format, so the C trainers can print samples.

Every document starts with the end-of-text token 50256. Each input file is one document
unless --doc-sep cuts it into several. The first ceil(F * N) tokens of the whole stream
form the val split and the rest the train split (F = --val-fraction, N = all tokens).

Parallel tokenization and where text may be cut
------------------------------------------------
GPT-2 first cuts text into pieces with a regex and runs BPE inside each piece, so cutting
a document into chunks gives the same ids as encoding it whole exactly when every cut falls
on a piece boundary whose two sides the regex also reads the same way alone. Cutting at
blank lines ("\\n\\n") is NOT such a place: "a\\n\\nb" encodes as [a, \\n, \\n, b] but "a\\n\\n"
alone ends with the single token "\\n\\n". A safe place is just before a "\\n" or " " that
follows a non-whitespace character: no regex piece holds a non-space character followed by
whitespace, the left side then ends in a non-space character (so the one look-ahead in the
regex, "whitespace not followed by non-space", sees the same thing), and the right side
starts a piece. Chunks are cut only there, so the output is identical for any --workers
(tests/test_prepare.py checks this on random text). A document with no such place is
encoded whole.

Every output file is written to a temporary name in DIR and renamed into place, so a crash
never leaves a partial file under a final name; nothing is written at all when the input
is rejected.
"""

from __future__ import annotations

import argparse
import codecs
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import tokenizer as tok

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
DEFAULT_SHARD_SIZE = 100_000_000
MAX_SHARD_SIZE = 2**31 - 1  # num_tokens is an int32 in the header
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_CHUNK_CHARS = 1 << 20  # text per work item sent to a worker
READ_BLOCK = 4 << 20
MIN_SPLIT_TOKENS = 2  # one input and one target
CONTEXT_TOKENS = 1025  # one GPT-2 sequence of 1024 plus its last target

Segment = Tuple[bool, str]  # (starts a document, text)


class PrepareError(Exception):
    """Bad input or options; the message says what to change."""


@dataclass
class ShardInfo:
    path: Path
    split: str
    num_tokens: int


@dataclass
class PrepareResult:
    out_dir: Path
    source: str
    num_documents: int
    num_tokens: int
    val_tokens: int
    train_tokens: int
    shards: List[ShardInfo]
    tokenizer_bin: Path
    removed: List[Path] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    def summary(self) -> str:
        lines = [
            f"source: {self.source}",
            f"{self.num_documents:,} documents, {self.num_tokens:,} tokens "
            f"(val {self.val_tokens:,}, train {self.train_tokens:,}) "
            f"in {self.seconds:.1f} s with {self.workers} worker(s)",
            f"wrote to {self.out_dir}:",
        ]
        for s in self.shards:
            lines.append(f"  {s.path.name:<32} {s.split:<5} {s.num_tokens:>13,} tokens")
        lines.append(f"  {self.tokenizer_bin.name:<32} tokenizer")
        for p in self.removed:
            lines.append(f"removed stale shard {p.name}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


# ---------------------------------------------------------------- shard files

def shard_header(num_tokens: int) -> np.ndarray:
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[:3] = (SHARD_MAGIC, SHARD_VERSION, num_tokens)
    return h


def read_shard(path) -> Tuple[np.ndarray, np.ndarray]:
    """(header, tokens) of a shard, checking magic, version and size."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < HEADER_INTS * 4:
        raise ValueError(f"{path}: shorter than the header")
    header = data[: HEADER_INTS * 4].view("<i4")
    if header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path}: bad magic/version {header[0]}/{header[1]}")
    tokens = data[HEADER_INTS * 4 :].view("<u2")
    if tokens.size != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, file holds {tokens.size}")
    return header, tokens


def _write_shard(path: Path, tokens: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(shard_header(tokens.size).tobytes())
            step = 1 << 24
            for i in range(0, tokens.size, step):
                f.write(np.ascontiguousarray(tokens[i : i + step], dtype="<u2").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


# ---------------------------------------------------------------- cutting text

_SAFE_BEFORE = ("\n", " ")


def find_cut(text: str, target: int, limit: int) -> int:
    """A safe cut position p (0 < p < limit <= len(text)), near target; -1 if none.

    Safe: text[p] is "\\n" or " " and text[p-1] is not whitespace (see the module doc).
    Prefers the last such newline at or before target, then the first one after it, then
    the same for a space.
    """
    limit = min(limit, len(text))
    target = max(1, min(target, limit - 1))
    for ch in _SAFE_BEFORE:
        p = text.rfind(ch, 1, target + 1)
        while p > 0 and text[p - 1].isspace():
            p = text.rfind(ch, 1, p)
        if p > 0:
            return p
        p = text.find(ch, target + 1, limit)
        while p > 0 and text[p - 1].isspace():
            p = text.find(ch, p + 1, limit)
        if p > 0:
            return p
    return -1


def cut_text(text: str, chunk_chars: int) -> List[str]:
    """text in safe pieces of about chunk_chars (all of it, in order)."""
    out = []
    while len(text) > chunk_chars:
        p = find_cut(text, chunk_chars, len(text))
        if p < 0:
            break
        out.append(text[:p])
        text = text[p:]
    if text:
        out.append(text)
    return out


def unescape_sep(s: str) -> str:
    r"""Reads \n, \r, \t, \0 and \\ in a --doc-sep value typed on a shell."""
    table = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), m.group(0)), s)


class _Doc:
    """Tracks whether the next piece of text is the first of its document."""

    def __init__(self) -> None:
        self.fresh = True
        self.count = 0

    def emit(self, text: str) -> Iterator[Segment]:
        if text:
            if self.fresh:
                self.count += 1
            yield self.fresh, text
            self.fresh = False

    def new(self) -> None:
        self.fresh = True


def _decode_blocks(path: Path) -> Iterator[str]:
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(READ_BLOCK)
            try:
                yield dec.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise PrepareError(
                    f"{path} is not UTF-8 text (bad byte near offset {offset + max(e.start, 0)})"
                ) from None
            if not block:
                return
            offset += len(block)


def file_segments(paths: Sequence[Path], doc_sep: Optional[str], chunk_chars: int,
                  docs: _Doc) -> Iterator[Segment]:
    """Segments of the input files, streamed: a file (or a --doc-sep piece) per document."""
    keep = len(doc_sep) - 1 if doc_sep else 0  # a separator may straddle two blocks
    for path in paths:
        docs.new()
        buf = ""
        for block in _decode_blocks(path):
            buf += block
            if doc_sep:
                parts = buf.split(doc_sep)
                for part in parts[:-1]:
                    for piece in cut_text(part, chunk_chars):
                        yield from docs.emit(piece)
                    docs.new()
                buf = parts[-1]
            while len(buf) - keep > chunk_chars:
                p = find_cut(buf, chunk_chars, len(buf) - keep)
                if p < 0:
                    break  # no safe place yet: read more
                yield from docs.emit(buf[:p])
                buf = buf[p:]
        for piece in cut_text(buf, chunk_chars):
            yield from docs.emit(piece)


def doc_segments(documents: Iterable[str], chunk_chars: int, docs: _Doc) -> Iterator[Segment]:
    for d in documents:
        docs.new()
        for piece in cut_text(d, chunk_chars):
            yield from docs.emit(piece)


def batch_segments(segs: Iterable[Segment], chunk_chars: int) -> Iterator[Tuple[list, int]]:
    """Groups segments into work items of about chunk_chars; yields (item, utf-8 bytes)."""
    item, chars, nbytes = [], 0, 0
    for s in segs:
        item.append(s)
        chars += len(s[1])
        nbytes += len(s[1].encode("utf-8", "surrogatepass"))
        if chars >= chunk_chars:
            yield item, nbytes
            item, chars, nbytes = [], 0, 0
    if item:
        yield item, nbytes


# ---------------------------------------------------------------- tokenizing

_worker_enc = None


def _init_worker(ranks_path) -> None:
    global _worker_enc
    _worker_enc = tok.get_encoding(ranks_path)


def encode_segments(item: Sequence[Segment], enc=None) -> np.ndarray:
    enc = enc or _worker_enc
    ids: List[int] = []
    for starts_doc, text in item:
        if starts_doc:
            ids.append(tok.EOT)
        ids.extend(enc.encode_ordinary(text))
    return np.asarray(ids, dtype="<u2")


def encode_documents(texts: Sequence[str], enc=None) -> List[np.ndarray]:
    """Each text as its own document: the end-of-text token, then its ids."""
    enc = enc or _worker_enc
    return [np.asarray([tok.EOT] + enc.encode_ordinary(t), dtype="<u2") for t in texts]


def _encode_counted(item: Tuple[list, int], enc=None) -> Tuple[np.ndarray, int]:
    segs, nbytes = item
    return encode_segments(segs, enc), nbytes


def ordered_map(fn, items: Iterable, enc, ranks_path, workers: int) -> Iterator:
    """fn(item, enc) for each item, in input order: here when workers <= 1, else in a pool whose
    workers hold their own encoding (fn(item) with enc None). A bounded window of items in flight
    keeps memory flat on huge inputs (Pool.imap would read the whole input ahead of the workers)."""
    if workers <= 1:
        for item in items:
            yield fn(item, enc)
        return
    with multiprocessing.get_context().Pool(workers, _init_worker, (ranks_path,)) as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.apply_async(fn, (item,)))
            if len(window) >= 2 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


def _progress(total: int, quiet: bool):
    disable = quiet or not sys.stderr.isatty()
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety only
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=disable,
                file=sys.stderr)


def _tokenize_to_spool(items: Iterator[Tuple[list, int]], spool, enc, ranks_path, workers: int,
                       bar) -> int:
    n = 0
    for arr, nbytes in ordered_map(_encode_counted, items, enc, ranks_path, workers):
        arr.tofile(spool)
        n += arr.size
        if bar is not None:
            bar.update(nbytes)
    return n


# ---------------------------------------------------------------- driver

def split_sizes(num_tokens: int, val_fraction: float) -> Tuple[int, int]:
    """(val, train) token counts: val is ceil(F * N), computed exactly for decimal F."""
    nval = math.ceil(Fraction(repr(float(val_fraction))) * num_tokens)
    return nval, num_tokens - nval


def _check_name(name: str) -> str:
    if not name or "/" in name or os.sep in name or name.startswith(".") or "\0" in name:
        raise PrepareError(f"--name {name!r} must be a plain file-name prefix like 'mydata'")
    return name


def prepare(out, inputs: Optional[Sequence] = None, dataset: Optional[str] = None,
            documents: Optional[Sequence[str]] = None, name: Optional[str] = None,
            val_fraction: float = DEFAULT_VAL_FRACTION, shard_size: int = DEFAULT_SHARD_SIZE,
            doc_sep: Optional[str] = None, workers: int = 0, tokenizer=None,
            quiet: bool = True, chunk_chars: int = DEFAULT_CHUNK_CHARS,
            log: Optional[Callable[[str], None]] = None) -> PrepareResult:
    """Tokenizes exactly one of inputs (file paths), dataset (a name) or documents (strings)
    into shards in out. Raises PrepareError (bad input/options) or tok.TokenizerError, a RuntimeError
    (no tokenizer).
    """
    t0 = time.time()
    if sum(x is not None for x in (inputs, dataset, documents)) != 1:
        raise PrepareError("give exactly one of --input FILE... or --dataset NAME")
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise PrepareError(f"--val-fraction must be in [0, 1), got {val_fraction!r}")
    if not (isinstance(shard_size, int) and 1 <= shard_size <= MAX_SHARD_SIZE):
        raise PrepareError(f"--shard-size must be between 1 and {MAX_SHARD_SIZE}, got {shard_size!r}")
    if doc_sep is not None and doc_sep == "":
        raise PrepareError("--doc-sep must not be empty")
    if doc_sep is not None and inputs is None:
        raise PrepareError("--doc-sep applies to --input files only")
    if chunk_chars < 1:
        raise PrepareError("chunk_chars must be positive")

    # Everything about the input is checked before anything is written.
    docs = _Doc()
    if inputs is not None:
        paths = [Path(p) for p in inputs]
        if not paths:
            raise PrepareError("--input needs at least one file")
        for p in paths:
            if not p.exists():
                raise PrepareError(f"input file not found: {p}")
            if not p.is_file():
                raise PrepareError(f"input is not a regular file: {p}")
            if not os.access(p, os.R_OK):
                raise PrepareError(f"input file is not readable: {p}")
        total_bytes = sum(p.stat().st_size for p in paths)
        source = ", ".join(str(p) for p in paths) if len(paths) <= 3 else f"{len(paths)} files"
        segs = file_segments(paths, doc_sep, chunk_chars, docs)
        default_name = "data"
    else:
        if dataset is not None:
            from .datasets import DATASETS, DatasetError
            if dataset not in DATASETS:
                raise PrepareError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
            try:
                documents, source = DATASETS[dataset](log)
            except DatasetError as e:
                raise PrepareError(str(e)) from e
            default_name = dataset
        else:
            documents, source, default_name = list(documents), "documents", "data"
        total_bytes = sum(len(d.encode("utf-8", "surrogatepass")) for d in documents)
        segs = doc_segments(documents, chunk_chars, docs)
    prefix = _check_name(name if name is not None else default_name)

    ranks_path = tok.resolve_ranks_path(tokenizer)
    enc = tok.get_encoding(tokenizer)

    if workers <= 0:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, math.ceil(total_bytes / chunk_chars)))

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)

    fd, spool_path = tempfile.mkstemp(prefix=".llmc-prepare-", suffix=".tokens.tmp", dir=out)
    written: List[ShardInfo] = []
    try:
        bar = _progress(total_bytes, quiet)
        try:
            with os.fdopen(fd, "wb") as spool:
                n = _tokenize_to_spool(batch_segments(segs, chunk_chars), spool, enc,
                                       ranks_path, workers, bar)
        finally:
            if bar is not None:
                bar.close()

        nval, ntrain = split_sizes(n, val_fraction)
        if n == 0:
            raise PrepareError(f"no text in the input ({source}): every document is empty")
        if nval and nval < MIN_SPLIT_TOKENS:
            raise PrepareError(
                f"the val split would hold {nval} token(s) of {n}: give more text, raise "
                "--val-fraction, or use --val-fraction 0 for no val split")
        if ntrain < MIN_SPLIT_TOKENS:
            raise PrepareError(
                f"the train split would hold {ntrain} token(s) of {n}: give more text or "
                "lower --val-fraction")
        warnings = []
        for split, k in (("val", nval), ("train", ntrain)):
            if 0 < k < CONTEXT_TOKENS:
                warnings.append(f"the {split} split has only {k} tokens, less than one "
                                f"1024-token sequence (+1)")

        tokens = np.memmap(spool_path, dtype="<u2", mode="r") if n else np.zeros(0, "<u2")
        for split, lo, hi in (("val", 0, nval), ("train", nval, n)):
            for i, a in enumerate(range(lo, hi, shard_size)):
                b = min(a + shard_size, hi)
                path = out / f"{prefix}_{split}_{i:06d}.bin"
                _write_shard(path, tokens[a:b])
                written.append(ShardInfo(path, split, b - a))
        del tokens
        tok_bin = tok.write_tokenizer_bin(out / tok.TOKENIZER_BIN_NAME, enc)
    except BaseException:
        _unlink(spool_path)
        if created:
            try:
                out.rmdir()  # only when we made it and it is still empty
            except OSError:
                pass
        raise
    _unlink(spool_path)

    # Shards of an earlier run with the same prefix would be globbed in by the trainers.
    keep = {s.path.name for s in written}
    pat = re.compile(re.escape(prefix) + r"_(train|val)_\d{6}\.bin")
    removed = []
    for p in sorted(out.iterdir()):
        if pat.fullmatch(p.name) and p.name not in keep:
            _unlink(p)
            removed.append(p)

    return PrepareResult(out_dir=out, source=source, num_documents=docs.count, num_tokens=n,
                         val_tokens=nval, train_tokens=ntrain, shards=written,
                         tokenizer_bin=tok_bin, removed=removed, warnings=warnings,
                         seconds=time.time() - t0, workers=workers)


def _fraction(s: str) -> float:
    try:
        f = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}")
    if not 0 <= f < 1:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return f


def _shard_size(s: str) -> int:
    try:
        v = int(s.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}")
    if not 1 <= v <= MAX_SHARD_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SHARD_SIZE}, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m llmc.prepare",
        description="Tokenize text with GPT-2's BPE into llm.c-style uint16 token shards.",
        epilog="Example: python -m llmc.prepare --dataset shakespeare --out data/shakespeare",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="FILE",
                     help="UTF-8 text files; each is one document (see --doc-sep)")
    src.add_argument("--dataset", choices=["shakespeare", "tinyshakespeare", "fineweb10B", "fineweb_edu10B"],
                     help="a named dataset: shakespeare = the complete works (42 plays, one document each, "
                          "1.57M tokens); tinyshakespeare = llm.c's 1.1 MB excerpt (needs the network once, "
                          "or $LLMC_TINYSHAKESPEARE_TXT); fineweb10B / fineweb_edu10B = FineWeb's 10B-token "
                          "samples, streamed from the hub and resumable (see llmc/prepare_web.py)")
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    ap.add_argument("--name", help="shard file prefix (default: the dataset name, or 'data')")
    ap.add_argument("--val-fraction", type=_fraction, default=DEFAULT_VAL_FRACTION, metavar="F",
                    help="the first ceil(F*N) tokens form the val split; 0 = no val split "
                         "(default %(default)s)")
    ap.add_argument("--shard-size", type=_shard_size, default=DEFAULT_SHARD_SIZE, metavar="N",
                    help="tokens per shard (default %(default)s); a trainer needs at least "
                         "B*T+1 tokens in every shard")
    ap.add_argument("--doc-sep", metavar="STR",
                    help=r"also cut each input file into documents at STR (\n, \t, \r, \\ "
                         r"are read as escapes, e.g. --doc-sep '\n\n\n')")
    ap.add_argument("-j", "--workers", type=int, default=0, metavar="N",
                    help="tokenizer processes (default: one per CPU; small inputs use fewer)")
    ap.add_argument("--tokenizer", metavar="PATH",
                    help="GPT-2 ranks file gpt2.tiktoken (else $LLMC_GPT2_TIKTOKEN, "
                         "shared/data/gpt2.tiktoken, or tiktoken's download)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    web = ap.add_argument_group("FineWeb (--dataset fineweb10B / fineweb_edu10B; see llmc/prepare_web.py)")
    web.add_argument("--data-files", nargs="+", metavar="FILE",
                     help="local jsonl/parquet files in FineWeb's schema instead of the hub (offline)")
    web.add_argument("--max-tokens", type=int, metavar="N", help="stop after N tokens (a smaller sample)")
    ft = ap.add_argument_group("prompt/response data (--format jsonl; see llmc/prepare_jsonl.py)")
    ft.add_argument("--format", choices=["text", "jsonl"], default="text",
                    help="text: plain documents (default); jsonl: one example a line, trained on the "
                         "responses only (a .mask beside each shard)")
    ft.add_argument("--seq-len", type=int, default=None, metavar="T",
                    help="jsonl: the rows' length, the trainers' -t (default 1024)")
    ft.add_argument("--prompt-field", default="prompt", help="jsonl: the prompt's field (default %(default)s)")
    ft.add_argument("--response-field", default="completion",
                    help="jsonl: the response's field (default %(default)s); lines with 'messages' use the chat "
                         "template")
    ft.add_argument("--skip-bad", action="store_true", help="jsonl: skip and count bad lines instead of stopping")
    ft.add_argument("--one-per-row", action="store_true",
                    help="jsonl: one example a row, so no example attends to another (more padding)")
    return ap


def _run_or_exit(ap, work: Callable, interrupted: str):
    """work(), its errors as one line and exit status 2 (130 for Ctrl-C, saying what was kept)."""
    from .prepare_web import WebPrepareError
    try:
        return work()
    except (PrepareError, WebPrepareError, tok.TokenizerError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    except KeyboardInterrupt:
        ap.exit(130, f"{ap.prog}: interrupted; {interrupted}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    jsonl_only = [f for f, v in (("--seq-len", a.seq_len is not None), ("--skip-bad", a.skip_bad),
                                 ("--one-per-row", a.one_per_row), ("--prompt-field", a.prompt_field != "prompt"),
                                 ("--response-field", a.response_field != "completion")) if v]
    if a.format == "text" and jsonl_only:
        ap.error(f"{', '.join(jsonl_only)} need --format jsonl")
    from .prepare_web import WEB_DATASETS, prepare_web
    if (a.data_files or a.max_tokens is not None) and a.dataset not in WEB_DATASETS:
        ap.error("--data-files and --max-tokens apply to --dataset fineweb10B / fineweb_edu10B")
    if a.dataset in WEB_DATASETS:
        if a.format != "text" or a.doc_sep is not None or a.name or a.val_fraction != DEFAULT_VAL_FRACTION:
            ap.error(f"--dataset {a.dataset} writes llm.c's layout (the first shard is val): --format, --doc-sep, "
                     "--name and --val-fraction do not apply")
        if a.max_tokens is not None and a.max_tokens < 1:
            ap.error(f"--max-tokens must be at least 1, not {a.max_tokens}")
        r = _run_or_exit(ap, lambda: prepare_web(a.out, a.dataset, a.data_files, shard_size=a.shard_size,
                                                 workers=a.workers, tokenizer=a.tokenizer, max_tokens=a.max_tokens,
                                                 quiet=a.quiet, log=log),
                         "the next run resumes after the last whole shard")
        if not a.quiet:
            print(f"{r['shards']} shards, {r['tokens']:,} tokens, {r['documents']:,} documents in {a.out}")
        return 0
    if a.format == "jsonl":
        if a.dataset or not a.input or len(a.input) != 1:
            ap.error("--format jsonl reads one --input FILE")
        if a.doc_sep is not None:
            ap.error("--doc-sep applies to text, not --format jsonl")
        from .prepare_jsonl import DEFAULT_SEQ_LEN, prepare_jsonl
        try:
            r = prepare_jsonl(a.out, a.input[0], seq_len=a.seq_len or DEFAULT_SEQ_LEN, name=a.name or "ft",
                              val_fraction=a.val_fraction, prompt_field=a.prompt_field,
                              response_field=a.response_field, skip_bad=a.skip_bad, one_per_row=a.one_per_row,
                              shard_size=a.shard_size, tokenizer=a.tokenizer, log=log)
        except (PrepareError, tok.TokenizerError) as e:
            ap.exit(2, f"{ap.prog}: error: {e}\n")
        if not a.quiet:
            print(r.summary())
        return 0
    r = _run_or_exit(ap, lambda: prepare(a.out, inputs=a.input, dataset=a.dataset, name=a.name,
                                         val_fraction=a.val_fraction, shard_size=a.shard_size,
                                         doc_sep=unescape_sep(a.doc_sep) if a.doc_sep is not None else None,
                                         workers=a.workers, tokenizer=a.tokenizer, quiet=a.quiet, log=log),
                     "no partial shard was left")
    if not a.quiet:
        print(r.summary())
    return 0


if __name__ == "__main__":
    # run main() of the imported module, so that its PrepareError is the one llmc.prepare_jsonl raises
    from llmc.prepare import main as _main
    sys.exit(_main())

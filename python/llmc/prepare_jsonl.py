"""Prompt/response data (JSON lines) into token shards with a loss mask beside each.

    python -m llmc.prepare --format jsonl --input train.jsonl --out data/ft --seq-len 256

Each line is one example, either
  {"prompt": "...", "completion": "..."}          (field names: --prompt-field, --response-field)
  {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
Chat messages are rendered with a plain template, messages joined by a blank line:
  System: {content}\n\nUser: {content}\n\nAssistant: {content}\n\nUser: ...
The last message must be the assistant's. Only the assistant contents (with the space before
them) are trained on; the other messages, role names and separators are not. A prompt is
encoded apart from its response, so the mask never splits a token.

Layout. The shards hold rows of exactly T (= --seq-len) tokens, the rows the trainers read with
-t T. An example is <|endoftext|> prompt response, and the <|endoftext|> after its response
(the next example's, or padding) is the end it learns to produce. Examples never cross a row:
each row holds whole examples, packed greedily in input order, and is padded with
<|endoftext|>. Within a row a later example can attend to the earlier ones, as GPT-2's own
pretraining packed documents; <|endoftext|> tells the model a new text begins. With
--one-per-row each example has a row to itself and sees nothing else, at the cost of padding.

Masks. Beside X.bin lies X.mask: 256 int32 of header [20241201, 1, num_tokens, T, 0...], then
one byte per token, 1 when that token counts as a target (a response token, or the
<|endoftext|> right after a response), 0 otherwise. The trainers read it and leave the other
targets out of the loss. llm.c, or any reader of plain shards, sees only X.bin and trains on
every token. Each shard holds whole rows plus one padding token (the last row's last target).

Bad lines (not JSON, not an object, a missing or non-string field, an example longer than
T - 2 tokens) stop the run with their line number, or are skipped and counted with --skip-bad.
Blank lines are ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import prepare as P
from . import tokenizer as tok

MASK_MAGIC = 20241201
MASK_VERSION = 1
DEFAULT_SEQ_LEN = 1024
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass
class JsonlResult:
    out_dir: Path
    source: str
    num_examples: int
    skipped: List[str]
    rows: Tuple[int, int]  # val, train
    counted_tokens: int
    shards: List[P.ShardInfo]
    tokenizer_bin: Path
    seq_len: int
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)

    def summary(self) -> str:
        val, train = self.rows
        lines = [f"source: {self.source}",
                 f"{self.num_examples:,} examples in {val + train:,} rows of {self.seq_len} tokens "
                 f"(val {val:,}, train {train:,}); {self.counted_tokens:,} tokens count in the loss; "
                 f"{self.seconds:.1f} s",
                 f"wrote to {self.out_dir}:"]
        for s in self.shards:
            lines.append(f"  {s.path.name:<32} {s.split:<5} {s.num_tokens:>13,} tokens (+ {s.path.stem}.mask)")
        lines.append(f"  {self.tokenizer_bin.name:<32} tokenizer")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad line(s), the first: {self.skipped[0]}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def mask_header(num_tokens: int, seq_len: int) -> np.ndarray:
    h = np.zeros(P.HEADER_INTS, dtype="<i4")
    h[:4] = (MASK_MAGIC, MASK_VERSION, num_tokens, seq_len)
    return h


def read_mask(path) -> Tuple[np.ndarray, np.ndarray]:
    """(header, mask bytes) of a mask file, checking magic, version and size."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < P.HEADER_INTS * 4:
        raise ValueError(f"{path}: shorter than the header")
    header = data[: P.HEADER_INTS * 4].view("<i4")
    if header[0] != MASK_MAGIC or header[1] != MASK_VERSION:
        raise ValueError(f"{path}: bad magic/version {header[0]}/{header[1]}")
    mask = data[P.HEADER_INTS * 4:]
    if mask.size != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, file holds {mask.size}")
    return header, mask


def render_messages(messages) -> List[Tuple[str, bool]]:
    """[(text, trained)] pieces of a chat example in the template of the module doc."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    pieces = []

    def add(text, trained):  # neighbours of one kind are encoded together, as one text
        if pieces and pieces[-1][1] == trained:
            pieces[-1] = (pieces[-1][0] + text, trained)
        else:
            pieces.append((text, trained))

    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLE_NAMES:
            raise ValueError(f"message {i} must be {{'role': one of {sorted(ROLE_NAMES)}, 'content': a string}}")
        if i:
            add("\n\n", False)
        if m["role"] == "assistant":
            add("Assistant:", False)
            add(" " + m["content"], True)
        else:
            add(f"{ROLE_NAMES[m['role']]}: {m['content']}", False)
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's: it is what the model learns to answer")
    return pieces


def example_pieces(obj, prompt_field: str, response_field: str) -> List[Tuple[str, bool]]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj and prompt_field not in obj:
        return render_messages(obj["messages"])
    for f in (prompt_field, response_field):
        if f not in obj:
            raise ValueError(f"no {f!r} field (it has: {', '.join(map(repr, obj)) or 'nothing'}); "
                             f"name the fields with --prompt-field / --response-field, or give 'messages'")
        if not isinstance(obj[f], str):
            raise ValueError(f"field {f!r} must be a string, got {type(obj[f]).__name__}")
    return [(obj[prompt_field], False), (obj[response_field], True)]


def encode_example(pieces, enc) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens, counted) of the pieces; counted marks the trained pieces' tokens."""
    ids, counted = [], []
    for text, trained in pieces:
        t = enc.encode_ordinary(text)
        ids += t
        counted += [trained] * len(t)
    return np.asarray(ids, np.int64), np.asarray(counted, bool)


def read_examples(path: Path, seq_len: int, enc, prompt_field: str, response_field: str, skip_bad: bool):
    """[(tokens, counted)] of every good line, and the messages of the skipped ones."""
    examples, skipped = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                err = f"line {lineno}: not UTF-8 ({e.reason} at byte {e.start})"
            else:
                if not line.strip():
                    continue
                try:
                    ids, counted = encode_example(
                        example_pieces(json.loads(line), prompt_field, response_field), enc)
                except json.JSONDecodeError as e:
                    err = f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
                except ValueError as e:
                    err = f"line {lineno}: {e}"
                else:
                    if ids.size + 2 <= seq_len:  # + the start and end tokens, in one row
                        examples.append((ids, counted))
                        continue
                    err = (f"line {lineno}: the example is {ids.size} tokens; with --seq-len {seq_len} "
                           f"at most {seq_len - 2} fit (a row also holds its start and end tokens)")
            if not skip_bad:
                raise P.PrepareError(f"{path}: {err} (--skip-bad skips such lines)")
            skipped.append(err)
    return examples, skipped


def pack_rows(examples, seq_len: int, one_per_row: bool = False, eot: int = tok.EOT) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) of shape (rows, seq_len) for examples [(ids, counted)], each at most seq_len - 2
    tokens: whole examples per row, each after an eot, the row padded with eot. A token's mask is 1
    when it is a trained target: a counted token, or the eot right after an example."""
    rows_t, rows_m = [], []
    cur_t, cur_m = [], []

    def flush():
        t = np.full(seq_len, eot, np.int64)
        m = np.zeros(seq_len, np.uint8)
        n = len(cur_t)
        t[:n], m[:n] = cur_t, cur_m
        m[n] = 1  # the end token of the row's last example (there is room: see read_examples)
        rows_t.append(t)
        rows_m.append(m)
        cur_t.clear()
        cur_m.clear()

    for ids, counted in examples:
        if len(ids) + 2 > seq_len:
            raise ValueError(f"an example of {len(ids)} tokens does not fit a row of {seq_len} with its start and end")
        if cur_t and (one_per_row or len(cur_t) + len(ids) + 2 > seq_len):
            flush()
        cur_m.append(1 if cur_t else 0)  # this start token ends the previous example, if any
        cur_t.append(eot)
        cur_t.extend(np.asarray(ids).tolist())
        cur_m.extend(np.asarray(counted, np.uint8).tolist())
    if cur_t:
        flush()
    return np.stack(rows_t), np.stack(rows_m)


def write_split(out: Path, prefix: str, split: str, tokens, mask, seq_len: int, rows_per_shard: int,
                eot: int = tok.EOT) -> List[P.ShardInfo]:
    """Shards <prefix>_<split>_NNNNNN.bin and .mask of the packed rows."""
    infos = []
    for i, a in enumerate(range(0, tokens.shape[0], rows_per_shard)):
        t = np.append(tokens[a:a + rows_per_shard].reshape(-1), eot)  # + the last row's last target
        m = np.append(mask[a:a + rows_per_shard].reshape(-1), 0).astype(np.uint8)
        path = out / f"{prefix}_{split}_{i:06d}.bin"
        P._write_shard(path, t.astype("<u2"))
        tok.atomic_write_bytes(path.with_suffix(".mask"), mask_header(m.size, seq_len).tobytes() + m.tobytes())
        infos.append(P.ShardInfo(path, split, int(t.size)))
    return infos


def prepare_jsonl(out, input, seq_len: int = DEFAULT_SEQ_LEN, name: str = "ft", val_fraction: float = 0.1,
                  prompt_field: str = "prompt", response_field: str = "completion", skip_bad: bool = False,
                  one_per_row: bool = False, shard_size: int = P.DEFAULT_SHARD_SIZE, tokenizer=None,
                  log: Optional[Callable[[str], None]] = None) -> JsonlResult:
    t0 = time.time()
    path = Path(input)
    if not path.is_file():
        raise P.PrepareError(f"input file not found: {path}")
    if not 3 <= seq_len <= 2**20:
        raise P.PrepareError(f"--seq-len must be between 3 and {2**20}, got {seq_len}")
    if not 0 <= val_fraction < 1:
        raise P.PrepareError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if shard_size < seq_len + 1:
        raise P.PrepareError(f"--shard-size {shard_size} holds no row of {seq_len} tokens (+1)")
    prefix = P._check_name(name)
    enc = tok.get_encoding(tokenizer)
    examples, skipped = read_examples(path, seq_len, enc, prompt_field, response_field, skip_bad)
    if not examples:
        raise P.PrepareError(f"{path}: no usable examples" + (f" ({len(skipped)} bad lines skipped)" if skipped else ""))
    tokens, mask = pack_rows(examples, seq_len, one_per_row)
    rows = tokens.shape[0]
    nval = math.ceil(val_fraction * rows) if val_fraction > 0 else 0
    if nval >= rows:
        raise P.PrepareError(f"{rows} row(s) of {seq_len} tokens leave nothing to train on after the val split: "
                             "give more examples, or --val-fraction 0")
    warnings = []
    if 0 < nval < 2 or rows - nval < 2:
        warnings.append(f"only {nval} val and {rows - nval} train rows: a trainer needs -b at most that")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise P.PrepareError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    per_shard = max(1, (shard_size - 1) // seq_len)
    shards = write_split(out, prefix, "val", tokens[:nval], mask[:nval], seq_len, per_shard) if nval else []
    shards += write_split(out, prefix, "train", tokens[nval:], mask[nval:], seq_len, per_shard)
    tok_bin = tok.write_tokenizer_bin(out / tok.TOKENIZER_BIN_NAME, enc)
    keep = {s.path.stem for s in shards}
    stale = re.compile(re.escape(prefix) + r"_(train|val)_\d{6}\.(bin|mask)")
    for p in sorted(out.iterdir()):
        if stale.fullmatch(p.name) and p.stem not in keep:
            os.unlink(p)
    return JsonlResult(out_dir=out, source=str(path), num_examples=len(examples), skipped=skipped,
                       rows=(nval, rows - nval), counted_tokens=int(mask.sum()), shards=shards,
                       tokenizer_bin=tok_bin, seq_len=seq_len, seconds=time.time() - t0, warnings=warnings)

"""FineWeb into llm.c's shards, streamed and resumable: ``python -m llmc.prepare --dataset fineweb10B``.

    python -m llmc.prepare --dataset fineweb10B --out data/fineweb10B            # from the hub
    python -m llmc.prepare --dataset fineweb_edu10B --out data/edu10B -j 16
    python -m llmc.prepare --dataset fineweb10B --data-files local/*.parquet --out data/fw   # offline

Online, the documents stream from the Hugging Face hub with the ``datasets`` package (an optional
dependency: ``pip install datasets``): HuggingFaceFW/fineweb or fineweb-edu, subset sample-10BT.
With ``--data-files`` they come from local jsonl or parquet files with FineWeb's schema (a
"text" field), which needs nothing from the network. Parquet files need pyarrow.

As llm.c's fineweb.py: every document starts with the end-of-text token, shards hold --shard-size
tokens (default 100M) with documents running over from one shard into the next, and the first
shard is the val split (``fineweb_val_000000.bin``), the rest train (``fineweb_train_000001.bin``,
...). Workers tokenize documents in order, so the bytes do not depend on -j.

Resuming: after each shard the position in the stream is saved atomically in
``DIR/.prepare_state.json``: documents done, and how many tokens of the document that runs over
are already in a shard. Run the same command again after an interruption and it goes on from the
next shard (the tokens are identical to an uninterrupted run). A different dataset, file list or
shard size in the same DIR is refused.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np

from . import tokenizer as tok
from .prepare import _write_shard, encode_documents, ordered_map

WEB_DATASETS = {  # name: (hub repository, subset, shard prefix)
    "fineweb10B": ("HuggingFaceFW/fineweb", "sample-10BT", "fineweb"),
    "fineweb_edu10B": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "edufineweb"),
}
STATE_FILE = ".prepare_state.json"


class WebPrepareError(Exception):
    """Bad input, options or state: the message says what to change."""


def local_documents(files: Sequence[str], skip: int) -> Iterator[str]:
    """The "text" of each record of local jsonl / parquet files, in order, the first skip left out."""
    n = 0
    for path in files:
        if path.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise WebPrepareError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
            texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        else:
            texts = []
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        texts.append(json.loads(line)["text"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise WebPrepareError(f"{path}:{lineno}: not a JSON object with a 'text' field") from None
        for text in texts:
            if not isinstance(text, str):
                raise WebPrepareError(f"{path}: record {n} has a 'text' that is not a string")
            if n >= skip:
                yield text
            n += 1


def hub_documents(dataset: str, skip: int) -> Iterator[str]:
    repo, subset, _ = WEB_DATASETS[dataset]
    try:
        import datasets
    except ImportError:
        raise WebPrepareError(f"--dataset {dataset} streams from the Hugging Face hub with the datasets package: "
                              f"pip install datasets (offline: --data-files FILE... with local jsonl/parquet)") from None
    try:
        ds = datasets.load_dataset(repo, name=subset, split="train", streaming=True)
    except Exception as e:  # offline, no such repository
        raise WebPrepareError(f"cannot stream {repo} ({subset}) from the hub: {e}; offline, pass --data-files "
                              f"with local jsonl/parquet files in FineWeb's schema") from None
    for record in ds.skip(skip):
        yield record["text"]


def _batches(docs: Iterator[str], n: int) -> Iterator[List[str]]:
    """n documents a work item: a worker's round trip is paid per item, the position per document."""
    batch = []
    for d in docs:
        batch.append(d)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _save_state(out: Path, state: dict) -> None:
    tok.atomic_write_bytes(out / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode())


def prepare_web(out, dataset: str, data_files: Optional[Sequence[str]] = None, shard_size: int = 100_000_000,
                workers: int = 0, tokenizer=None, max_tokens: Optional[int] = None, quiet: bool = True,
                log: Callable[[str], None] = lambda s: None) -> dict:
    """Writes the shards of dataset into out, resuming where a run with the same settings stopped.
    Returns {"shards": [...], "tokens": n, "documents": d, "resumed_at": shard}."""
    if dataset not in WEB_DATASETS:
        raise WebPrepareError(f"unknown web dataset {dataset!r}; known: {', '.join(WEB_DATASETS)}")
    if not 1 <= shard_size < 2 ** 31:
        raise WebPrepareError(f"--shard-size must be in [1, 2^31), not {shard_size}")
    files = None
    if data_files:
        files = sorted({p for pattern in data_files for p in (glob.glob(pattern) or [pattern])})
        for p in files:
            if not os.path.isfile(p):
                raise WebPrepareError(f"--data-files: no file {p}")
    prefix = WEB_DATASETS[dataset][2]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": dataset, "data_files": files, "shard_size": shard_size, "max_tokens": max_tokens}
    state = {"settings": settings, "next_shard": 0, "docs_done": 0, "tokens_into_doc": 0, "tokens": 0,
             "finished": False}
    if (out / STATE_FILE).exists():
        old = json.loads((out / STATE_FILE).read_text())
        if old.get("settings") != settings:
            raise WebPrepareError(f"{out} holds a prepare with other settings ({old.get('settings')}): use another "
                                  f"--out, or remove {out / STATE_FILE} and its shards")
        state = old
    if state["finished"]:
        log(f"{out}: already complete ({state['next_shard']} shards, {state['tokens']:,} tokens)")
        return {"shards": state["next_shard"], "tokens": state["tokens"], "documents": state["docs_done"],
                "resumed_at": state["next_shard"]}
    resumed_at = state["next_shard"]
    if resumed_at:
        log(f"resuming at shard {resumed_at}: {state['docs_done']:,} documents done")
    ranks = tok.resolve_ranks_path(tokenizer)
    enc = tok.get_encoding(tokenizer)  # fails here, before any work, when there is no tokenizer
    docs = local_documents(files, state["docs_done"]) if files else hub_documents(dataset, state["docs_done"])
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    buf = np.empty(shard_size, np.uint16)
    fill, skip_first = 0, state["tokens_into_doc"]
    docs_done, doc_tokens_used = state["docs_done"], 0
    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(total=shard_size, unit="tok", desc=f"shard {state['next_shard']}", file=sys.stderr)
    t0 = time.time()

    def flush(final: bool, docs: int, used: int):
        """Writes the shard and where the stream stands after it: docs whole documents done, and used
        tokens of the next one already in shards."""
        nonlocal fill
        i = state["next_shard"]
        split = "val" if i == 0 else "train"
        _write_shard(out / f"{prefix}_{split}_{i:06d}.bin", buf[:fill])
        state.update(next_shard=i + 1, tokens=state["tokens"] + fill, finished=final, docs_done=docs,
                     tokens_into_doc=used)
        _save_state(out, state)
        fill = 0
        if bar is not None:
            bar.reset()
            bar.set_description(f"shard {i + 1}")

    limit = max_tokens
    batches = ordered_map(encode_documents, _batches(docs, 16), enc, ranks, workers)
    for ids in (ids for batch in batches for ids in batch):
        ids = ids[skip_first:]
        doc_tokens_used = skip_first
        skip_first = 0
        while len(ids):
            room = shard_size - fill
            if limit is not None:
                room = min(room, limit - state["tokens"] - fill)
                if room <= 0:
                    break
            take = ids[:room]
            buf[fill:fill + len(take)] = take
            fill += len(take)
            doc_tokens_used += len(take)
            ids = ids[len(take):]
            if bar is not None:
                bar.update(len(take))
            if fill == shard_size and len(ids) == 0:  # the document ends with the shard
                flush(False, docs_done + 1, 0)
            elif fill == shard_size:  # it runs over into the next one
                flush(False, docs_done, doc_tokens_used)
        else:
            docs_done, doc_tokens_used = docs_done + 1, 0
            continue
        break  # max_tokens reached
    batches.close()  # the workers stop here, also when max_tokens left documents unread
    if state["tokens"] + fill == 0:
        raise WebPrepareError("no documents: the input holds no text")
    if fill:
        flush(True, docs_done, doc_tokens_used)
    else:
        state["finished"] = True
        _save_state(out, state)
    if bar is not None:
        bar.close()
    tok.write_tokenizer_bin(out / tok.TOKENIZER_BIN_NAME, enc)
    log(f"{out}: {state['next_shard']} shards, {state['tokens']:,} tokens, {docs_done:,} documents "
        f"({time.time() - t0:.1f} s)")
    return {"shards": state["next_shard"], "tokens": state["tokens"], "documents": docs_done,
            "resumed_at": resumed_at}

"""python -m llmc.eval — evaluate a GPT-2 model: HellaSwag accuracy, perplexity.

    python -m llmc.eval hellaswag --model gpt2_124M.bin [--data hellaswag_val.jsonl] [--limit N]
    python -m llmc.eval perplexity --model M --data "data/shakespeare/shakespeare_val_*.bin"
    python -m llmc.eval perplexity --model M --text notes.txt

HellaSwag is scored as llm.c scores it, so the numbers compare with its published ones. Each of
the four endings follows its context as " " + ending. The summed loss of the ending's tokens picks
`acc`'s answer, and the mean loss per ending token picks `acc_norm`'s. Without --data, the
official validation file (10,042 items) is downloaded once into ~/.cache/llmc. Offline, pass
--data. Both evals use the model's per-token losses (GPT2.forward(..., reduction="none")): the
same forward as training.
Every error is one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
IGNORE = -1  # a target left out of the loss


class EvalError(Exception):
    """Bad input or a failed download: printed as one line, exit status 1."""


def cache_dir() -> Path:
    return Path(os.environ.get("LLMC_CACHE", Path.home() / ".cache" / "llmc"))


# ---------------------------------------------------------------- HellaSwag

def hellaswag_file(path: Optional[str], url: str = HELLASWAG_URL) -> Path:
    """path, or the official validation file (downloaded once into the cache)."""
    if path:
        if not os.path.isfile(path):
            raise EvalError(f"no HellaSwag file at {path}")
        return Path(path)
    cached = cache_dir() / "hellaswag_val.jsonl"
    if cached.is_file():
        return cached
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except Exception as e:  # offline, a proxy, a 404: all end the same way
        raise EvalError(f"cannot download HellaSwag from {url} ({e}); offline, pass --data PATH to a local "
                        f"hellaswag_val.jsonl (the HellaSwag repository's format: ctx, endings, label)") from None
    from .tokenizer import atomic_write_bytes
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cached, data)
    return cached


def hellaswag_items(path, limit: Optional[int] = None) -> List[dict]:
    """The items of a HellaSwag jsonl: ctx (str), endings (4 str), label (0..3). Errors name the line."""
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            ctx, endings, label = item.get("ctx"), item.get("endings"), item.get("label")
            if not isinstance(ctx, str):
                raise EvalError(f"{path}:{lineno}: 'ctx' must be a string")
            if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
                raise EvalError(f"{path}:{lineno}: 'endings' must be a list of 4 strings")
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 4:
                raise EvalError(f"{path}:{lineno}: 'label' must be 0, 1, 2 or 3, not {label!r}")
            items.append({"ctx": ctx, "endings": endings, "label": label})
    if not items:
        raise EvalError(f"{path}: no HellaSwag items")
    return items


def ending_rows(item: dict, encode: Callable[[str], List[int]], max_len: int):
    """Four (tokens, n_ctx) rows: context then " " + ending, at most max_len + 1 tokens (max_len inputs,
    each predicting the next). The context is cut from the left to fit; the ending is what gets scored,
    so it is kept whole. The C scorer (src/mc_eval.c, -h 1 in the trainers) cuts the same way."""
    ctx = encode(item["ctx"])
    rows = []
    for ending in item["endings"]:
        end = encode(" " + ending)
        if not end:
            raise EvalError("an ending encodes to no tokens")
        if len(end) > max_len:
            raise EvalError(f"an ending of {len(end)} tokens does not fit the model's {max_len} positions")
        keep = ctx[max(0, len(ctx) + len(end) - (max_len + 1)):]
        rows.append((keep + end, len(keep)))
    return rows


def ending_losses(losses_fn, rows, eot: int):
    """(sum, count) of each row's ending-token losses. losses_fn(tokens (R,T), targets (R,T)) gives the
    per-token losses; rows are padded with eot, and every target outside an ending is ignored."""
    T = max(len(tok) for tok, _ in rows) - 1
    tokens = np.full((len(rows), T), eot, np.int32)
    targets = np.full((len(rows), T), IGNORE, np.int32)
    for r, (tok, n_ctx) in enumerate(rows):
        tokens[r, :len(tok) - 1] = tok[:-1]
        # position i predicts token i + 1: the ending's tokens tok[n_ctx:] are predicted from n_ctx - 1 on
        start = max(n_ctx - 1, 0)
        targets[r, start:len(tok) - 1] = tok[start + 1:]
    losses = np.asarray(losses_fn(tokens, targets), np.float64)
    counts = (targets != IGNORE).sum(axis=1)
    return losses.sum(axis=1), counts


def hellaswag(losses_fn, items: Sequence[dict], encode, max_len: int, eot: int, batch: int = 8,
              progress: Optional[Callable[[int], None]] = None) -> dict:
    """acc, acc_norm and n over items, batch items (4 rows each) per forward; per-item detail too."""
    correct = correct_norm = 0
    detail = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        rows = [row for item in chunk for row in ending_rows(item, encode, max_len)]
        sums, counts = ending_losses(losses_fn, rows, eot)
        for k, item in enumerate(chunk):
            s, c = sums[4 * k:4 * k + 4], counts[4 * k:4 * k + 4]
            pred, pred_norm = int(np.argmin(s)), int(np.argmin(s / c))
            correct += pred == item["label"]
            correct_norm += pred_norm == item["label"]
            detail.append({"sum": s.tolist(), "count": c.tolist(), "pred": pred, "pred_norm": pred_norm})
        if progress:
            progress(len(chunk))
    n = len(items)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": n, "items": detail}


EVAL_MAGIC = 20240522  # llm.c's eval files (its dev/data/hellaswag.py writes them; src/mc_eval.c reads them)


def write_eval_file(path, items: Sequence[dict], encode: Callable[[str], List[int]]) -> int:
    """Writes items in llm.c's eval file format, which the trainers score with -h 1: a header of 256
    int32 (magic, version 1, items, the longest item in bytes), then per item a uint16 stream:
    65535, the item's bytes, its index, the label, the number of choices, the context length and
    tokens, and each choice's length and tokens (" " + ending, as scored above). Returns the items."""
    if len(items) >= 1 << 16:
        raise EvalError(f"{len(items)} items: the format numbers them in 16 bits")
    streams = []
    for idx, item in enumerate(items):
        ctx = encode(item["ctx"])
        ends = [encode(" " + e) for e in item["endings"]]
        s = [65535, 0, idx, item["label"], len(ends), len(ctx), *ctx]
        for end in ends:
            s += [len(end), *end]
        if any(t >= 65535 for t in ctx + [t for e in ends for t in e]):
            raise EvalError(f"item {idx}: a token id does not fit the format's 16 bits")
        s[1] = 2 * len(s)
        if s[1] >= 1 << 16:
            raise EvalError(f"item {idx} is {s[1]} bytes: the format allows less than 65536")
        streams.append(np.array(s, np.uint16))
    header = np.zeros(256, np.int32)
    header[:4] = [EVAL_MAGIC, 1, len(items), max(len(s) * 2 for s in streams)]
    from .tokenizer import atomic_write_bytes
    atomic_write_bytes(path, header.tobytes() + b"".join(s.tobytes() for s in streams))
    return len(items)


# ---------------------------------------------------------------- perplexity

def text_rows(tokens: Sequence[int], T: int) -> Iterator[tuple]:
    """Non-overlapping windows of T predictions: (inputs (T,), targets (T,)), the last one padded."""
    tokens = np.asarray(tokens, np.int32)
    for s in range(0, len(tokens) - 1, T):
        inp = tokens[s:s + T]
        tgt = tokens[s + 1:s + T + 1]
        x = np.zeros(T, np.int32)
        y = np.full(T, IGNORE, np.int32)
        x[:len(inp)] = inp
        y[:len(tgt)] = tgt
        yield x, y


def perplexity(losses_fn, batches: Iterable[tuple]) -> dict:
    """Mean loss over every counted target of the (inputs, targets) batches, and exp of it."""
    total, count = 0.0, 0
    for x, y in batches:
        losses = np.asarray(losses_fn(x, y), np.float64)
        total += float(losses.sum())
        count += int((np.asarray(y) != IGNORE).sum())
    if count == 0:
        raise EvalError("nothing to evaluate: no targets")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}


def _batched(rows: Iterable[tuple], B: int) -> Iterator[tuple]:
    xs, ys = [], []
    for x, y in rows:
        xs.append(x)
        ys.append(y)
        if len(xs) == B:
            yield np.stack(xs), np.stack(ys)
            xs, ys = [], []
    if xs:
        yield np.stack(xs), np.stack(ys)


def shard_batches(pattern: str, B: int, T: int, max_batches: Optional[int]) -> Iterator[tuple]:
    """One pass over the token shards (llm.c format, loss masks honoured) in (B, T) batches."""
    from . import _core
    if not glob.glob(pattern):
        raise EvalError(f"no token shards match {pattern}")
    loader = _core.DataLoader(pattern, B, T)
    n = loader.num_batches if max_batches is None else min(max_batches, loader.num_batches)
    for _ in range(n):
        yield loader.next()


# ---------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise EvalError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m llmc.eval", description="Evaluate a GPT-2 model.")
    sub = p.add_subparsers(dest="eval", required=True, parser_class=_Parser)
    for name, text in (("hellaswag", "HellaSwag accuracy (acc, acc_norm), scored as llm.c scores it"),
                       ("perplexity", "mean loss and perplexity on token shards or a text file")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--model", "-m", required=name == "perplexity",
                       help="model file (.bin) or Hugging Face GPT-2 directory")
        s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        s.add_argument("--gpu", type=int, default=0, help="GPU index for --device cuda")
        s.add_argument("--batch", type=int, default=8 if name == "hellaswag" else 4,
                       help="items (4 rows each) per forward" if name == "hellaswag" else "rows per forward")
        s.add_argument("--tokenizer", help="GPT-2 ranks file for tiktoken; default: $LLMC_GPT2_TIKTOKEN or shared/data")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
        s.add_argument("--quantize", choices=["int8"], help="quantize the weights on load (int8 weight-only)")
    hs = sub.choices["hellaswag"]
    hs.add_argument("--data", help="HellaSwag jsonl (default: the official validation file, downloaded once)")
    hs.add_argument("--limit", type=int, help="only the first N items")
    hs.add_argument("--export", metavar="FILE", help="write the items in llm.c's eval file format instead (for "
                                                     "the trainers' -h 1; no model needed)")
    pp = sub.choices["perplexity"]
    src = pp.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="token shards (glob, llm.c format)")
    src.add_argument("--text", help="a UTF-8 text file, tokenized with GPT-2's tokenizer")
    pp.add_argument("--seq", type=int, help="positions per row (default: the model's maximum)")
    pp.add_argument("--max-batches", type=int, help="stop after N batches")
    return p


def _losses_fn(model):
    return lambda x, y: model.forward(x, y, return_logits=False, reduction="none")[1]


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise EvalError(f"--batch must be at least 1, not {args.batch}")
    from . import GPT2, LlmcError
    from . import tokenizer as tok
    if args.eval == "hellaswag" and args.export:
        items = hellaswag_items(hellaswag_file(args.data), args.limit)
        n = write_eval_file(args.export, items, tok.get_encoding(args.tokenizer).encode_ordinary)
        print(f"hellaswag: wrote {n} items to {args.export} (llm.c's eval file format)")
        return {"n": n}
    if not args.model:
        raise EvalError("--model is needed to evaluate (or --export to write the eval file)")
    try:
        model = GPT2.from_pretrained(args.model, device=args.device, gpu=args.gpu, quantize=args.quantize)
    except (LlmcError, OSError) as e:
        raise EvalError(str(e)) from None
    T = model.config["max_seq_len"]
    bar = None
    if args.eval == "hellaswag":
        items = hellaswag_items(hellaswag_file(args.data), args.limit)
        enc = tok.get_encoding(args.tokenizer)
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=len(items), unit="item", desc="hellaswag", file=sys.stderr)
        out = hellaswag(_losses_fn(model), items, enc.encode_ordinary, T, enc.eot_token, args.batch,
                        bar.update if bar else None)
        print(f"hellaswag: acc {out['acc']:.4f}  acc_norm {out['acc_norm']:.4f}  ({out['n']} items)")
    else:
        seq = args.seq or T
        if not 1 <= seq <= T:
            raise EvalError(f"--seq must be in [1, {T}] (the model's positions), not {seq}")
        if args.data:
            batches = shard_batches(args.data, args.batch, seq, args.max_batches)
        else:
            text = Path(args.text).read_text(encoding="utf-8")
            enc = tok.get_encoding(args.tokenizer)
            ids = [enc.eot_token] + enc.encode_ordinary(text)
            rows = list(_batched(text_rows(ids, seq), args.batch))
            batches = rows[:args.max_batches] if args.max_batches else rows
        out = perplexity(_losses_fn(model), batches)
        print(f"perplexity: loss {out['loss']:.4f}  perplexity {out['perplexity']:.3f}  ({out['tokens']} tokens)")
    if bar:
        bar.close()
    return out


def main(argv=None) -> int:
    try:
        run(argv)
    except (EvalError, OSError, UnicodeDecodeError) as e:
        print(f"llmc.eval: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the library's own errors carry their message
        from . import LlmcError
        if isinstance(e, LlmcError):
            print(f"llmc.eval: {e}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m llmc.generate — sample from a GPT-2 model file with llmc's KV-cache engine.

    python -m llmc.generate --model gpt2_124M.bin --prompt "Hello" -n 200 \\
        --temperature 0.8 --top-k 50 --top-p 0.95 --seed 1 --device cpu

Reads llmc's and llm.c's model files (v3 fp32, v5 bf16). The prompt is text (--prompt,
--prompt-file; GPT-2's tokenizer, see --tokenizer) or raw token ids (--tokens "1,2 3").
With one sequence, text is printed as it is generated (only whole UTF-8 characters);
with --batch N, the N samples are printed when all are done. Speed goes to stderr.
Every error is one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import codecs
import os
import sys
import time
from typing import Callable, List, Optional


class UsageError(Exception):
    """A bad command line or input: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m llmc.generate", description="Sample text from a GPT-2 model file.")
    p.add_argument("--model", "-m", help="model file (.bin, llm.c v3 fp32, v5 bf16, llmc v8 int8) or a Hugging Face GPT-2 "
                                         "directory")
    src = p.add_argument_group("prompt (at most one; default: start from <|endoftext|>)")
    src.add_argument("--prompt", "-p", help="prompt text")
    src.add_argument("--prompt-file", help="read the prompt text from this file")
    src.add_argument("--tokens", help="prompt as token ids, comma or space separated")
    p.add_argument("-n", "--max-new-tokens", type=int, default=128, dest="n", help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=1337, help="sampling seed; the same seed gives the same text")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--gpu", type=int, default=0, help="GPU index for --device cuda")
    p.add_argument("--batch", type=int, default=1, help="independent samples of the prompt (default 1)")
    p.add_argument("--eot", type=int, default=None, help="token that ends a sample (default 50256 when in the vocabulary)")
    p.add_argument("--tokenizer", help="GPT-2 ranks file for tiktoken (gpt2.tiktoken); default: "
                                       "$LLMC_GPT2_TIKTOKEN or shared/data")
    p.add_argument("--ids", action="store_true", help="print token ids instead of text")
    p.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    p.add_argument("--quantize", choices=["int8"], help="quantize the weights on load (int8 weight-only; see "
                   "python -m llmc.quantize, which writes such a model once)")
    p.add_argument("--group-size", type=int, default=0,
                   help="with --quantize: inputs per scale, a multiple of 16 (default 0: per output channel)")
    p.add_argument("--start-eot", action="store_true",
                   help="begin a text prompt with <|endoftext|>, as llmc.prepare begins every document and "
                        "fine-tuning example")
    return p


class Utf8Printer:
    """Turns a stream of token bytes into text pieces, holding back an incomplete character
    until its remaining bytes arrive; invalid bytes become U+FFFD."""

    def __init__(self, write: Callable[[str], None]):
        self._write = write
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> None:
        text = self._dec.decode(data)
        if text:
            self._write(text)

    def close(self) -> None:
        text = self._dec.decode(b"", final=True)
        if text:
            self._write(text)


def _parse_tokens(s: str) -> List[int]:
    out = []
    for piece in s.replace(",", " ").split():
        try:
            out.append(int(piece))
        except ValueError:
            raise UsageError(f"--tokens: {piece!r} is not a token id (give integers separated by commas or spaces)")
    return out


def _stdout_write(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg or type(e).__name__


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model:
        raise UsageError("--model PATH is required (an llm.c / llmc model .bin file)")
    if args.n <= 0:
        raise UsageError(f"-n must be >= 1 (got {args.n})")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1 (got {args.batch})")
    if args.group_size and not args.quantize:
        raise UsageError("--group-size needs --quantize int8")
    if not args.temperature >= 0:
        raise UsageError(f"--temperature must be >= 0 (got {args.temperature})")
    if args.top_k < 0:
        raise UsageError(f"--top-k must be >= 0 (got {args.top_k})")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {args.top_p})")
    given = [o for o, v in (("--prompt", args.prompt), ("--prompt-file", args.prompt_file), ("--tokens", args.tokens))
             if v is not None]
    if len(given) > 1:
        raise UsageError(f"give only one of --prompt, --prompt-file, --tokens (got {' and '.join(given)})")
    if args.start_eot and args.tokens is not None:
        raise UsageError("--start-eot applies to a text prompt; with --tokens write the id 50256 first")

    from . import _core
    from .tokenizer import TokenizerError, get_encoding, resolve_ranks_path

    if args.device not in _core.backends():
        raise UsageError(f"unknown device {args.device!r}: this build has {', '.join(_core.backends())}")
    if not os.path.exists(args.model):
        raise UsageError(f"model file not found: {args.model}")
    if os.path.isdir(args.model) and not os.path.isfile(os.path.join(args.model, "config.json")):
        raise UsageError(f"--model {args.model} is a directory without config.json: neither a model file nor "
                         "a Hugging Face model")
    # text needs the tokenizer; raw ids need it only to print text
    text_in = args.prompt is not None or args.prompt_file is not None
    enc = None
    note = None  # printed once the input is known to be good: an error comes alone
    if not text_in and not args.ids and resolve_ranks_path(args.tokenizer) is None:
        # raw ids in and no local ranks file: print ids rather than wait on a download
        note = "note: no local GPT-2 tokenizer (see --tokenizer), printing token ids"
        args.ids = True
    if text_in or not args.ids:
        try:
            enc = get_encoding(args.tokenizer)
        except TokenizerError:
            if text_in or args.tokenizer:
                raise
            note = "note: no GPT-2 tokenizer found, printing token ids (see --tokenizer)"
            args.ids = True
    if args.prompt_file is not None:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                args.prompt = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --prompt-file {args.prompt_file}: {e}")

    core = _core.Model()
    core.load(args.model, backend=args.device, device=args.gpu)
    if args.quantize:
        core.quantize(group_size=args.group_size)
    cfg = core.config
    V, T = cfg["vocab_size"], cfg["max_seq_len"]
    eot = args.eot if args.eot is not None else (50256 if V > 50256 else -1)

    if args.tokens is not None:
        ids = _parse_tokens(args.tokens)
    elif args.prompt is not None:
        ids = ([enc.eot_token] if args.start_eot else []) + enc.encode_ordinary(args.prompt)
    else:
        ids = [eot if 0 <= eot < V else 0]
    if not ids:
        raise UsageError("the prompt is empty: give at least one token")
    bad = [t for t in ids if not 0 <= t < V]
    if bad:
        raise UsageError(f"token id {bad[0]} is out of range: the model's vocabulary has {V} tokens (ids 0..{V - 1})")
    if len(ids) > T:
        raise UsageError(f"the prompt has {len(ids)} tokens, more than the model's context of {T} tokens")
    if note:
        print(note, file=sys.stderr)
    if len(ids) + args.n > T:
        print(f"warning: prompt ({len(ids)} tokens) + -n {args.n} exceeds the model's context of {T} tokens; "
              f"generation stops at the context limit after {T - len(ids)} new token(s)", file=sys.stderr)

    def piece(tok: int) -> bytes:
        if enc is not None and tok < enc.n_vocab:
            try:
                return enc.decode_single_token_bytes(tok)
            except KeyError:
                pass
        return f"[{tok}]".encode()

    B = args.batch
    if args.echo:
        _stdout_write(args.prompt if args.prompt is not None else
                      (" ".join(map(str, ids)) + " " if args.ids else
                       b"".join(piece(t) for t in ids).decode("utf-8", "replace")))
    t0 = time.perf_counter()
    session = _core.Session(core, [ids] * B, args.n, args.temperature, args.top_k, args.top_p, args.seed, eot)
    t1 = time.perf_counter()
    outs: List[List[int]] = [[] for _ in range(B)]
    printer = Utf8Printer(_stdout_write)
    count = 0
    try:
        alive = B
        while alive:
            toks, alive = session.next()
            for b in range(B):
                t = int(toks[b])
                if t < 0:
                    continue
                count += 1
                if t == eot:
                    continue
                outs[b].append(t)
                if B == 1:
                    if args.ids:
                        _stdout_write(f"{t} ")
                    else:
                        printer.feed(piece(t))
    finally:
        session.end()
    t2 = time.perf_counter()
    if B == 1:
        printer.close()
        _stdout_write("\n")
    else:
        for b in range(B):
            body = " ".join(map(str, outs[b])) if args.ids else \
                b"".join(piece(t) for t in outs[b]).decode("utf-8", "replace")
            _stdout_write(f"=== sample {b} ===\n{body}\n")
    dt = t2 - t1
    print(f"{count} tokens ({B} x up to {args.n}) in {dt:.3f} s: {count / dt if dt > 0 else float('inf'):.1f} tok/s; "
          f"prefill of {len(ids)} prompt tokens x {B}: {1e3 * (t1 - t0):.1f} ms ({args.device})", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # LlmcError, TokenizerError, UsageError, OSError: one clear line
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

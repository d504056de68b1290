"""python -m llmc.quantize — int8 weight-only quantization of a model file.

    python -m llmc.quantize model.bin --out model_int8.bin [--group-size 128] [--no-embeddings]

Symmetric int8 with fp32 scales, one per output channel (default) or per --group-size inputs (a
multiple of 16), for the four matmul weights of every layer and, unless --no-embeddings, wte (the
token embedding and the LM head). The output is llmc's model file version 8, which
`GPT2.from_pretrained`, `python -m llmc.generate` and `python -m llmc.eval` load; llm.c and
training refuse it. Errors are one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmc.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (.bin v3/v5) or Hugging Face GPT-2 directory")
    p.add_argument("--out", "-o", required=True, help="the int8 model file to write")
    p.add_argument("--group-size", type=int, default=0,
                   help="inputs per scale, a multiple of 16 (default 0: one scale per output channel)")
    p.add_argument("--no-embeddings", action="store_true", help="keep wte (embedding and LM head) in float")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        from . import _core
        m = _core.Model()
        m.load(a.model)
        m.quantize(group_size=a.group_size, embeddings=not a.no_embeddings)
        m.save(a.out)
    except Exception as e:  # LlmcError, OSError: one clear line
        print(f"llmc.quantize: error: {e}", file=sys.stderr)
        return 1
    before = os.path.getsize(a.model) if os.path.isfile(a.model) else None
    after = os.path.getsize(a.out)
    ratio = f" ({before / after:.2f}x smaller than {before:,} bytes)" if before else ""
    print(f"wrote {a.out}: {after:,} bytes{ratio}; int8 group size "
          f"{a.group_size or 'per channel'}, embeddings {'float' if a.no_embeddings else 'int8'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

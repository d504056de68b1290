"""python -m llmc.convert — model files between llm.c's .bin and Hugging Face's format.

    python -m llmc.convert --from-hf gpt2 --out gpt2_124M.bin [--dtype fp32|bf16]
    python -m llmc.convert --from-hf path/to/hf_dir --out model.bin
    python -m llmc.convert --to-hf model.bin --out path/to/hf_dir

--from-hf takes a local directory (config.json + model.safetensors, or a sharded index) or a hub
name (needs huggingface_hub and the network). The .bin is llm.c's v3 (fp32) or v5 (bf16).
Errors are one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmc.convert", description=__doc__.split("\n\n")[0])
    way = ap.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", metavar="DIR_OR_NAME", help="a Hugging Face GPT-2 directory or hub name")
    way.add_argument("--to-hf", metavar="MODEL_BIN", help="an llm.c/llmc model file")
    ap.add_argument("--out", required=True, help="the model file (--from-hf) or directory (--to-hf) to write")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the .bin's precision (--from-hf)")
    a = ap.parse_args(argv)
    try:
        from . import _core, hf
        if a.from_hf:
            cfg, flat = hf.load(a.from_hf)
            m = _core.Model()
            m.init_values(cfg, flat)
            m.save(a.out, 3 if a.dtype == "fp32" else 5)
            print(f"wrote {a.out}: L={cfg['num_layers']} H={cfg['num_heads']} C={cfg['channels']} "
                  f"T={cfg['max_seq_len']} V={cfg['vocab_size']} ({a.dtype})")
        else:
            m = _core.Model()
            m.load(a.to_hf)
            hf.save(a.out, m.config, m.get_params())
            print(f"wrote {a.out}/config.json and {a.out}/model.safetensors")
    except Exception as e:  # LlmcError, HFError, OSError: one clear line
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

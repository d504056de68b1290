"""Device memory of a model loaded for generation: what nvidia-smi says this process holds after
GPT2.from_pretrained(path, device="cuda") and one generation, as a user runs it (default options).

    python dev/bench_memory.py --model d12 [--tokens 16]

Writes a d12 model file first (in a child process, so its memory does not count). Works with older
builds too (their GPT2 API is the same), so one device session can measure before and after.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def used_mib():
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, mib = (x.strip() for x in line.split(","))
        if int(pid) == os.getpid():
            return int(mib)
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="d12")
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "model.bin")
    subprocess.run([sys.executable, "-c", f"import llmc; llmc.GPT2.from_config({a.model!r}).save({path!r}, 5)"],
                   check=True)
    import llmc
    from llmc import _core
    _core.Device("cuda")  # the CUDA context alone
    context = used_mib()
    model = llmc.GPT2.from_pretrained(path, device="cuda")
    loaded = used_mib()
    model.generate(np.arange(16, dtype=np.int32), max_new_tokens=a.tokens, temperature=0)
    generated = used_mib()
    print(f"{a.model} ({model.num_params / 1e6:.1f}M params): context {context} MiB; after load {loaded} MiB "
          f"(+{loaded - context}); after generating {a.tokens} tokens {generated} MiB (+{generated - context})")


if __name__ == "__main__":
    main()

"""Generation speed of llmc's KV-cache engine, optionally next to a PyTorch baseline.

    python dev/bench_generate.py --device cuda --batch 1,32 --torch
    python dev/bench_generate.py --device cpu --batch 1 -n 32

For each batch size: a 16-token random prompt, then -n new tokens (greedy, EOT off, so every
sequence runs the full length); decode tok/s = batch * n / (time of the gen_next loop after the
prefill). Prefill: time of gen_begin on one --prefill-len prompt (cache allocation, prefill and
the first logits). The model is GPT-2 124M (d12) at random init unless --model says otherwise.

--torch runs the same weights in PyTorch in the same process: a static KV cache (B, NH, maxlen, HS)
per layer, scaled_dot_product_attention with a position mask, greedy argmax on the device, and
the decode step captured in a CUDA graph (bf16 on cuda, fp32 on cpu without a graph).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

try:
    import llmc
except ImportError:  # not installed: the source tree (its _core must have been built in place)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import llmc
from llmc import _core


class _OldSession:
    """The generation API before sessions were handles (llmc_gen_* on the model): lets this bench
    time an older build in the same device session (PYTHONPATH=<its install> python dev/bench_generate.py)."""

    def __init__(self, core, prompts, n, temperature, top_k, top_p, seed, eot):
        self.core, self.B = core, len(prompts)
        core.gen_begin(prompts, n, temperature, top_k, top_p, seed, eot)

    def next(self):
        return self.core.gen_next(self.B)

    def end(self):
        self.core.gen_end()


def session(core, prompts, n, temperature, top_k):
    kind = getattr(_core, "Session", None) or _OldSession
    return kind(core, prompts, n, temperature, top_k, 1.0, 1, -1)


def llmc_decode(core, B, P, n, rng, sampling):
    prompts = [rng.integers(0, 50000, P).astype(np.int32) for _ in range(B)]
    temperature, top_k = sampling
    s = session(core, prompts, n, temperature, top_k)
    t0 = time.perf_counter()
    count, alive = 0, B
    first = []
    while alive:
        out, alive = s.next()
        count += int((out >= 0).sum())
        first.append(int(out[0]))
    dt = time.perf_counter() - t0
    s.end()
    return count / dt, [int(t) for t in prompts[0]], first


def llmc_prefill(core, length, reps, rng):
    times = []
    for _ in range(reps + 1):  # the first one warms up
        prompt = rng.integers(0, 50000, length).astype(np.int32)
        t0 = time.perf_counter()
        s = session(core, [prompt], 1, 0.0, 0)
        times.append(time.perf_counter() - t0)
        s.end()
    return statistics.median(times[1:])


# ---------------------------------------------------------------- PyTorch baseline

class TorchGPT2:
    def __init__(self, flat, cfg, device, dtype):
        import torch

        self.torch = torch
        self.cfg = cfg
        self.device = device
        t = torch.from_numpy(flat)
        self.p = {}
        for name, off, shape, _ in _core.param_layout(cfg):
            n = int(np.prod(shape))
            self.p[name] = t[off:off + n].view(*shape).to(device=device, dtype=dtype).contiguous()
        self.dtype = dtype

    def alloc(self, B, maxlen):
        torch, c = self.torch, self.cfg
        L, NH, C = c["num_layers"], c["num_heads"], c["channels"]
        self.B, self.maxlen = B, maxlen
        self.kc = torch.zeros(L, B, NH, maxlen, C // NH, device=self.device, dtype=self.dtype)
        self.vc = torch.zeros_like(self.kc)

    def _blocks(self, x, write_kv, attend):
        F = self.torch.nn.functional
        p, c = self.p, self.cfg
        C, NH = c["channels"], c["num_heads"]
        B, T, _ = x.shape
        for l in range(c["num_layers"]):
            h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], 1e-5)
            qkv = F.linear(h, p["qkvw"][l], p["qkvb"][l])
            q, k, v = (a.view(B, T, NH, C // NH).transpose(1, 2) for a in qkv.split(C, dim=2))
            write_kv(l, k, v)
            y = attend(l, q, k, v).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, p["attprojw"][l], p["attprojb"][l])
            h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], 1e-5)
            h = F.gelu(F.linear(h, p["fcw"][l], p["fcb"][l]), approximate="tanh")
            x = x + F.linear(h, p["fcprojw"][l], p["fcprojb"][l])
        return F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], 1e-5)

    def prefill(self, tokens):
        torch = self.torch
        F = torch.nn.functional
        B, T = tokens.shape
        x = self.p["wte"][tokens] + self.p["wpe"][:T]

        def write(l, k, v):
            self.kc[l, :B, :, :T] = k
            self.vc[l, :B, :, :T] = v

        def attend(l, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        h = self._blocks(x, write, attend)[:, -1]
        logits = F.linear(h, self.p["wte"])[:, :self.cfg["vocab_size"]]
        return logits.argmax(-1)

    def decode(self, tok, pos, sdpa=True):
        """tok (B,) long, pos () long tensor: the position of tok (same for every row).
        Written without host synchronisation (no tensor-to-int conversions) so it can be captured."""
        torch = self.torch
        F = torch.nn.functional
        p1 = pos.view(1)
        x = (F.embedding(tok, self.p["wte"]) + F.embedding(p1, self.p["wpe"])).unsqueeze(1)
        mask = (torch.arange(self.maxlen, device=self.device) <= pos).view(1, 1, 1, -1)
        scale = 1.0 / math.sqrt(self.cfg["channels"] // self.cfg["num_heads"])

        def write(l, k, v):
            self.kc[l].index_copy_(2, p1, k)
            self.vc[l].index_copy_(2, p1, v)

        def attend(l, q, k, v):
            if sdpa:
                return F.scaled_dot_product_attention(q, self.kc[l], self.vc[l], attn_mask=mask)
            s = (q @ self.kc[l].transpose(-1, -2)).float() * scale
            s = s.masked_fill(~mask, float("-inf")).softmax(-1)
            return s.to(q.dtype) @ self.vc[l]

        h = self._blocks(x, write, attend)[:, 0]
        logits = F.linear(h, self.p["wte"])[:, :self.cfg["vocab_size"]]
        return logits.argmax(-1)


def torch_decode(tm, B, P, n, rng, first_prompt=None):
    torch = tm.torch
    prompts = rng.integers(0, 50000, (B, P))
    if first_prompt is not None:
        prompts[0] = first_prompt
    tm.alloc(B, P + n)
    cuda = tm.device == "cuda"
    toks = torch.from_numpy(prompts).to(tm.device)
    with torch.inference_mode():
        nxt = tm.prefill(toks)
        tok_in = nxt.clone()
        pos_in = torch.tensor(P, device=tm.device)
        first = [int(nxt[0])]
        if cuda:
            graph, out = None, None
            for sdpa in (True, False):  # SDPA with a mask first; plain matmul-softmax if it cannot be captured
                try:
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(3):  # warm up outside the graph (cuBLAS handles, workspaces)
                            tm.decode(tok_in, pos_in, sdpa)
                    torch.cuda.current_stream().wait_stream(s)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        out = tm.decode(tok_in, pos_in, sdpa)
                    break
                except Exception as e:
                    print(f"  (torch: capture with sdpa={sdpa} failed: {type(e).__name__}: {str(e).splitlines()[0]})")
                    graph = None
                    torch.cuda.synchronize()
            if graph is None:
                raise RuntimeError("the torch decode step could not be captured")
            # the warm-up wrote position P of the caches; the timed loop rewrites it
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs = []
            for _ in range(n - 1):
                graph.replay()
                tok_in.copy_(out)
                pos_in += 1
                if len(outs) < 64:
                    outs.append(out.clone())
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            first += [int(o[0]) for o in outs]
        else:
            t0 = time.perf_counter()
            for _ in range(n - 1):
                out = tm.decode(tok_in, pos_in)
                tok_in = out
                pos_in = pos_in + 1
                if len(first) < 64:
                    first.append(int(out[0]))
            dt = time.perf_counter() - t0
    # count n tokens per row like llmc (the prefill's token included), time of the n-1 decode steps
    return B * n / dt * (n - 1) / n, first


def torch_prefill(tm, length, reps, rng):
    torch = tm.torch
    tm.alloc(1, length + 1)
    times = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            toks = torch.from_numpy(rng.integers(0, 50000, (1, length))).to(tm.device)
            if tm.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            int(tm.prefill(toks)[0])
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="d12", help="descriptor (d12, 'L=..,H=..,C=..') or a model .bin file")
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("-n", type=int, default=256, help="new tokens per sequence")
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3, help="timed prefill repetitions (median)")
    ap.add_argument("--sample", action="store_true", help="llmc samples with temperature 1, top-k 50 (else greedy)")
    ap.add_argument("--torch", action="store_true", help="also run the PyTorch baseline")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    if os.path.isfile(args.model):
        model = llmc.GPT2.from_pretrained(args.model, device=args.device, master_weights=False)
    else:
        model = llmc.GPT2.from_config(args.model, device=args.device, master_weights=False)
    core = model._m
    cfg = model.config
    print(f"model {args.model}: {model.num_params / 1e6:.1f}M params, L={cfg['num_layers']} C={cfg['channels']} "
          f"T={cfg['max_seq_len']}; device {args.device}; threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    sampling = (1.0, 50) if args.sample else (0.0, 0)
    batches = [int(b) for b in args.batch.split(",")]
    tm = None
    if args.torch:
        import torch
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        tm = TorchGPT2(model.get_params(), cfg, args.device, dtype)
        print(f"torch {torch.__version__} ({dtype})")

    rows = []
    for B in batches:
        llmc_decode(core, B, args.prompt_len, min(8, args.n), rng, sampling)  # warm up
        tps, prompt0, first = llmc_decode(core, B, args.prompt_len, args.n, rng, sampling)
        line = f"decode B={B:<3d} prompt {args.prompt_len} + {args.n} new: llmc {tps:10.1f} tok/s"
        if tm is not None:
            try:
                torch_decode(tm, B, args.prompt_len, min(8, args.n), rng)  # warm up
                ttps, tfirst = torch_decode(tm, B, args.prompt_len, args.n, rng, first_prompt=prompt0)
                k = min(len(first), len(tfirst), 32)
                agree = sum(a == b for a, b in zip(first[:k], tfirst[:k]))
                line += f" | torch {ttps:10.1f} tok/s | llmc/torch {tps / ttps:5.2f}"
                if not args.sample:
                    line += f" | greedy agreement {agree}/{k}"
            except Exception as e:
                line += f" | torch failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(line, flush=True)
        rows.append(line)

    pf = llmc_prefill(core, args.prefill_len, args.reps, rng)
    line = f"prefill {args.prefill_len} tokens (B=1): llmc {1e3 * pf:8.2f} ms"
    if tm is not None:
        try:
            tpf = torch_prefill(tm, args.prefill_len, args.reps, rng)
            line += f" | torch {1e3 * tpf:8.2f} ms | llmc/torch time {pf / tpf:5.2f}"
        except Exception as e:
            line += f" | torch failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    print(line, flush=True)


if __name__ == "__main__":
    main()

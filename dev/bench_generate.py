"""Generation speed of llmc's KV-cache engine, optionally next to a PyTorch baseline.

    python dev/bench_generate.py --device cuda --batch 1,32 --torch
    python dev/bench_generate.py --device cuda --model d12,d48 --batch 1,8,32,64 --modes greedy,sample \\
        --torch -n 128 --json bench.json
    python dev/bench_generate.py --device cpu --batch 1 -n 32

For each model, mode and batch size: a 16-token random prompt, then -n new tokens (EOT off, so every
sequence runs the full length); decode tok/s = batch * n / (time of the next() loop after the
prefill); each llmc column's /torch is its tok/s over torch's. Modes: greedy, and sample =
temperature 1, top-k 50, top-p 0.95 (the smallest prefix of the 50 likeliest tokens reaching 0.95).
Prefill, once per model: time of a session start on one --prefill-len prompt (cache allocation,
prefill, first logits). Models: descriptors at random init (d12 = 124M, d48 = 1.5B; init is drawn
on the host, ~1 min for d48) or .bin files, a comma list (';' between several 'L=..,H=..,C=..').

--llmc-variants times llmc several ways, each a set of Session options: default (none), host
(host_sampling=True), device (host_sampling=False), ops (persistent=False), persistent
(persistent=True), nographs (graphs=False), ahead (run_ahead=True), step (run_ahead=False). One
this build's Session does not take (TypeError) is reported and skipped. host and device only
change sampling: greedy rows leave them out (and time default if nothing is left).

--torch runs the same weights in PyTorch in the same process: a static KV cache (B, NH, maxlen, HS)
per layer, scaled_dot_product_attention with a position mask, and the decode step captured in a
CUDA graph with the token choice (bf16 on cuda; fp32 on cpu, no graph). Greedy: argmax. Sample:
topk(50) sorted, softmax, cumsum mask (preceding mass < 0.95), renormalised, inverse-CDF pick
(searchsorted) of a uniform drawn before the timed loop (a row per position, indexed in the graph
by the device position counter). By default the torch loop keeps the tokens on the device (no
host sync per step: an upper bound for torch); --torch-ids host copies each step's B ids to the
host and waits, as a loop that streams tokens or checks EOT must, and as llmc's next() does.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import statistics
import sys
import time

import numpy as np

if "--torch" in sys.argv:  # before llmc: both link a libnccl.so.2 and the first loaded serves both (torch's
    import torch  # noqa: F401  may need symbols that the NCCL llmc was built against lacks)

try:
    import llmc
except ImportError:  # not installed: the source tree (its _core must have been built in place)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import llmc
from llmc import _core

MODES = {"greedy": (0.0, 0, 1.0), "sample": (1.0, 50, 0.95)}  # temperature, top_k, top_p
VARIANTS = {"default": {}, "host": {"host_sampling": True}, "device": {"host_sampling": False},
            "ops": {"persistent": False}, "persistent": {"persistent": True}, "nographs": {"graphs": False},
            "ahead": {"run_ahead": True}, "step": {"run_ahead": False}}
SAMPLING_ONLY = {"host", "device"}


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


def session(core, prompts, n, sampling, kw):
    kind = getattr(_core, "Session", None) or _OldSession
    temperature, top_k, top_p = sampling
    return kind(core, prompts, n, temperature, top_k, top_p, 1, -1, **kw)


def supported(core, name):
    """Whether this build's Session takes the variant's options (and starts with them); says why not."""
    try:
        session(core, [np.arange(4, dtype=np.int32)], 2, MODES["sample"], VARIANTS[name]).end()
        return True
    except TypeError as e:
        why = f"unsupported by this build ({e})"
    except Exception as e:
        why = f"failed: {type(e).__name__}: {e}"
    print(f"  llmc variant {name} {why}: skipped")
    return False


def llmc_decode(core, B, P, n, rng, sampling, kw):
    prompts = [rng.integers(0, 50000, P).astype(np.int32) for _ in range(B)]
    s = session(core, prompts, n, sampling, kw)
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
        s = session(core, [prompt], 1, MODES["greedy"], {})
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
        self.dtype = dtype
        self.sampling = MODES["greedy"]
        t = torch.from_numpy(flat)  # a view of the host copy: each tensor goes to the device on its own
        self.p = {}
        for name, off, shape, _ in _core.param_layout(cfg):
            n = int(np.prod(shape))
            self.p[name] = t[off:off + n].view(*shape).to(device=device, dtype=dtype).contiguous()

    def alloc(self, B, maxlen, seed=0):
        torch, c = self.torch, self.cfg
        L, NH, C = c["num_layers"], c["num_heads"], c["channels"]
        self.B, self.maxlen = B, maxlen
        self.kc = torch.zeros(L, B, NH, maxlen, C // NH, device=self.device, dtype=self.dtype)
        self.vc = torch.zeros_like(self.kc)
        torch.manual_seed(seed)  # the sampler's uniform numbers: a row per position
        self.u = torch.rand(maxlen, B, device=self.device)

    def pick(self, logits, p1):
        """The next token of each row from (B, V) logits; p1 (1,) is the position whose uniforms to use."""
        temperature, top_k, top_p = self.sampling
        if temperature == 0:
            return logits.argmax(-1)
        torch = self.torch
        v, i = (logits.float() / temperature).topk(top_k, dim=-1)  # sorted, largest first
        probs = v.softmax(-1)
        cum = probs.cumsum(-1)
        probs = probs * ((cum - probs) < top_p)  # the first token always stays
        cdf = probs.cumsum(-1)
        u = self.u.index_select(0, p1).view(-1, 1) * cdf[:, -1:]  # renormalised: scale the draw instead
        j = torch.searchsorted(cdf, u).clamp_(max=top_k - 1)
        return i.gather(-1, j).view(-1)

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
        return self.pick(logits, torch.tensor([T - 1], device=self.device))

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
        return self.pick(logits, p1)


def capture(tm, tok_in, pos_in):
    """The decode step (and its token choice) as a CUDA graph: (graph, its output tensor)."""
    torch = tm.torch
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
            return graph, out
        except Exception as e:
            print(f"  (torch: capture with sdpa={sdpa} failed: {type(e).__name__}: {str(e).splitlines()[0]})")
            torch.cuda.synchronize()
    raise RuntimeError("the torch decode step could not be captured")


def torch_decode(tm, B, P, n, rng, sampling, host_ids, first_prompt=None):
    torch = tm.torch
    prompts = rng.integers(0, 50000, (B, P))
    if first_prompt is not None:
        prompts[0] = first_prompt
    tm.sampling = sampling
    tm.alloc(B, P + n)
    toks = torch.from_numpy(prompts).to(tm.device)
    with torch.inference_mode():
        nxt = tm.prefill(toks)
        tok_in = nxt.clone()
        pos_in = torch.tensor(P, device=tm.device)
        first = [int(nxt[0])]
        if tm.device == "cuda":
            graph, out = capture(tm, tok_in, pos_in)
            # the warm-up wrote position P of the caches; the timed loop rewrites it
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs = []
            for _ in range(n - 1):
                graph.replay()
                tok_in.copy_(out)
                pos_in += 1
                if host_ids:
                    ids = out.cpu()  # waits for the step, as a loop that looks at its tokens must
                    if len(first) < 64:
                        first.append(int(ids[0]))
                elif len(outs) < 64:
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
    tm.sampling = MODES["greedy"]
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


# ---------------------------------------------------------------- the table

def split_models(arg):
    """'d12,d48' -> [d12, d48]; a descriptor's own 'K=v' parts stay together ('d12,L=2,H=4,C=64')."""
    if ";" in arg:
        return [m.strip() for m in arg.split(";") if m.strip()]
    out = []
    for part in arg.split(","):
        if out and "=" in part and "=" in out[-1] and not os.path.isfile(out[-1]):
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def device_name(device):
    try:
        if device == "cuda":
            import torch
            return torch.cuda.get_device_name()
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except Exception:
        return device


def short(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def bench_model(spec, args, modes, variants, batches, tdtype, common):
    rng = np.random.default_rng(0)
    load = llmc.GPT2.from_pretrained if os.path.isfile(spec) else llmc.GPT2.from_config
    model = load(spec, device=args.device, master_weights=False)
    core, cfg = model._m, model.config
    print(f"\nmodel {spec}: {model.num_params / 1e6:.1f}M params, L={cfg['num_layers']} C={cfg['channels']} "
          f"T={cfg['max_seq_len']}; device {args.device}; threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    ok = [v for v in variants if supported(core, v)]
    tm = None
    if tdtype is not None:
        try:
            flat = model.get_params()  # fp32 on the host (6 GB for d48); the device gets tdtype only
            tm = TorchGPT2(flat, cfg, args.device, tdtype)
            del flat
        except Exception as e:
            print(f"  torch: the model could not be built: {short(e)}")

    results = []
    for mode in modes:
        sampling = MODES[mode]
        vs = ok if mode != "greedy" else [v for v in ok if v not in SAMPLING_ONLY] or ["default"]
        w = max(8, len(spec))
        head = f"{'model':<{w}} {'mode':<6} {'B':>3} |" + "".join(f" {v + ' tok/s':>18} {'/torch':>6} |" for v in vs)
        print(f"\n{head} {'torch tok/s':>12}" + (" | agree" if mode == "greedy" and tm else ""))
        for B in batches:
            line = f"{spec:<{w}} {mode:<6} {B:>3} |"
            row = {v: None for v in vs}
            prompt0 = first = None
            for v in vs:
                try:
                    llmc_decode(core, B, args.prompt_len, min(8, args.n), rng, sampling, VARIANTS[v])  # warm up
                    tps, p0, f0 = llmc_decode(core, B, args.prompt_len, args.n, rng, sampling, VARIANTS[v])
                    row[v] = tps
                    if prompt0 is None:
                        prompt0, first = p0, f0
                except Exception as e:
                    print(f"  llmc {v} B={B} failed: {short(e)}")
            ttps, agree = None, ""
            if tm is not None:
                try:
                    torch_decode(tm, B, args.prompt_len, min(8, args.n), rng, sampling, args.torch_ids == "host")
                    ttps, tfirst = torch_decode(tm, B, args.prompt_len, args.n, rng, sampling,
                                                args.torch_ids == "host", first_prompt=prompt0)
                    if mode == "greedy" and first is not None:
                        k = min(len(first), len(tfirst), 32)
                        agree = f" | {sum(a == b for a, b in zip(first[:k], tfirst[:k]))}/{k}"
                except Exception as e:
                    print(f"  torch B={B} failed: {short(e)}")
            for v in vs:
                tps = row[v]
                ratio = tps / ttps if tps and ttps else None
                line += f" {tps:18.1f}" if tps else f" {'-':>18}"
                line += f" {ratio:6.2f} |" if ratio else f" {'-':>6} |"
                results.append(dict(common, model=spec, mode=mode, batch=B, variant=v, tok_s=tps,
                                    torch_tok_s=ttps, ratio=ratio))
            print(line + (f" {ttps:12.1f}" if ttps else f" {'-':>12}") + agree, flush=True)

    pf = llmc_prefill(core, args.prefill_len, args.reps, rng)
    line = f"\nprefill {args.prefill_len} tokens (B=1): llmc {1e3 * pf:8.2f} ms"
    tpf = None
    if tm is not None:
        try:
            tpf = torch_prefill(tm, args.prefill_len, args.reps, rng)
            line += f" | torch {1e3 * tpf:8.2f} ms | llmc/torch time {pf / tpf:5.2f}"
        except Exception as e:
            line += f" | torch failed: {short(e)}"
    print(line, flush=True)
    results.append(dict(common, model=spec, mode="prefill", batch=1, variant="default", prefill_len=args.prefill_len,
                        ms=1e3 * pf, torch_ms=1e3 * tpf if tpf else None, ratio=pf / tpf if tpf else None))
    del tm, core, model  # before the next model: its weights, the torch copy and their caches
    gc.collect()
    if tdtype is not None and args.device == "cuda":
        import torch
        torch.cuda.empty_cache()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="d12", help="comma list of descriptors (d12, d48, 'L=..,H=..,C=..') "
                    "or model .bin files")
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--modes", default="greedy", help="comma list of greedy, sample")
    ap.add_argument("--sample", action="store_true", help="the same as --modes sample")
    ap.add_argument("--llmc-variants", default="default", help="comma list of " + ", ".join(VARIANTS))
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("-n", type=int, default=256, help="new tokens per sequence")
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3, help="timed prefill repetitions (median)")
    ap.add_argument("--torch", action="store_true", help="also run the PyTorch baseline")
    ap.add_argument("--torch-ids", choices=("device", "host"), default="device",
                    help="torch loop: keep the tokens on the device, or bring each step's ids to the host")
    ap.add_argument("--json", metavar="PATH", help="also write every figure to PATH as a JSON list")
    args = ap.parse_args()

    modes = ["sample"] if args.sample else [m.strip() for m in args.modes.split(",") if m.strip()]
    variants = [v.strip() for v in args.llmc_variants.split(",") if v.strip()]
    for name, given, known in (("mode", modes, MODES), ("llmc variant", variants, VARIANTS)):
        bad = [g for g in given if g not in known]
        if bad:
            ap.error(f"unknown {name} {', '.join(bad)}: use {', '.join(known)}")
    batches = [int(b) for b in args.batch.split(",")]
    tdtype = None
    if args.torch:
        import torch
        tdtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        ids = "each step's ids to the host" if args.torch_ids == "host" else "tokens kept on the device"
        print(f"torch {torch.__version__} ({tdtype}, {ids})")
    common = dict(device=device_name(args.device), backend=args.device,
                  date=datetime.datetime.now().isoformat(timespec="seconds"), n=args.n, prompt_len=args.prompt_len,
                  torch_ids=args.torch_ids if args.torch else None)
    print(f"{common['device']}; sample = temperature 1, top-k 50, top-p 0.95")

    results = []
    for spec in split_models(args.model):
        results += bench_model(spec, args, modes, variants, batches, tdtype, common)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {len(results)} figures to {args.json}")


if __name__ == "__main__":
    main()

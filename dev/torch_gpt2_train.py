"""The PyTorch baseline of dev/bench_train.py: a plain GPT-2 trained the way PyTorch users do.

    python dev/torch_gpt2_train.py --depth 12 --batch 64 --seq 1024 --steps 40 --compile

The same model and init as llmc's ./train_gpt2cu: GPT-2 with the vocab padded to 50304, tied LM
head, tanh GELU, N(0, 0.02) weights with the residual projections scaled by 1/sqrt(2L), zero
biases, unit layernorm gains. Training as llmc's defaults: AdamW (fused) lr 6e-4, betas (0.9,
0.95), eps 1e-8, no weight decay, grad-norm clip 1.0. bf16 autocast over fp32 parameters,
scaled_dot_product_attention restricted to the flash backend, torch.compile with --compile.
Tokens are random (a fixed seed), as the llmc side of the benchmark uses.

Prints one JSON line: the per-step milliseconds (CUDA-event timed, each step synchronized),
the losses, and torch.cuda.max_memory_reserved.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS = {12: 12, 24: 16, 36: 20, 48: 25}  # GPT-2's: 124M, 350M, 774M, 1558M
PADDED_VOCAB = 50304


class Block(nn.Module):
    def __init__(self, C: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, depth: int, max_seq: int):
        super().__init__()
        C = 64 * depth
        self.wte, self.wpe = nn.Embedding(PADDED_VOCAB, C), nn.Embedding(max_seq, C)
        self.blocks = nn.ModuleList(Block(C, HEADS[depth]) for _ in range(depth))
        self.ln_f = nn.LayerNorm(C)
        residual = 0.02 / math.sqrt(2 * depth)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # layernorm gains
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, residual if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=12, choices=sorted(HEADS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = GPT2(args.depth, args.seq).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                            fused=dev.type == "cuda")
    step_fn = torch.compile(model) if args.compile else model
    gen = torch.Generator(device="cpu").manual_seed(1)
    data = torch.randint(0, 50257, (args.steps, args.batch, args.seq + 1), generator=gen)
    use_flash = dev.type == "cuda"
    ms, losses = [], []
    for s in range(args.steps):
        batch = data[s].to(dev, non_blocking=True)
        x, y = batch[:, :-1], batch[:, 1:]
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            if use_flash:
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                    loss = step_fn(x, y)
            else:
                loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms.append(1e3 * (time.perf_counter() - t0))
        losses.append(loss.item())
    peak = torch.cuda.max_memory_reserved() if dev.type == "cuda" else 0
    print(json.dumps({"ms": ms, "losses": losses, "peak_bytes": peak,
                      "params": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()

"""Float64 numpy reference implementation of GPT-2: forward, backward and AdamW.

This module is the ground truth every other llmc test compares against. It is
written to be read, not to be fast: one small function per layer, plain numpy,
float64 everywhere, and comments that state the math. It follows the same
conventions as the C engine (see src/backend.h):

  * row-major activations of shape (B, T, C);
  * weight matrices stored as (OC, C), so a linear layer is ``x @ W.T + b``;
  * the vocabulary is padded from V to Vp rows in ``wte``; only the first V
    logit columns are real, the padding columns never take part in the loss;
  * the flat parameter buffer lists the 16 tensors in llm.c's order
    (``PARAM_NAMES``), each tensor stacked over layers where it is per-layer. That
    layout is read from the engine's own table (llmc._core.param_layout) so that it is
    written down once; tests/helpers.py restates it independently to check the table.

The math depends on numpy alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "encoder_forward", "encoder_backward",
    "layernorm_forward", "layernorm_backward",
    "matmul_forward", "matmul_backward",
    "gelu_forward", "gelu_backward",
    "attention_forward", "attention_backward",
    "crossentropy_forward", "crossentropy_backward", "distill_forward", "distill_backward",
    "Config", "PARAM_NAMES", "DECAYED", "param_shapes", "init_params",
    "flatten", "unflatten", "gpt2_forward", "gpt2_backward", "adamw_step",
    "ReferenceGPT2",
]


# ---------------------------------------------------------------------------
# Encoder: token embedding + position embedding
# ---------------------------------------------------------------------------

def encoder_forward(tokens, wte, wpe):
    """out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]."""
    tokens = np.asarray(tokens)
    T = tokens.shape[1]
    return wte[tokens] + wpe[np.arange(T)][None, :, :]


def encoder_backward(dout, tokens, vocab_rows, max_t):
    """Gradients of the encoder.

    Each token row of wte receives the sum of dout over every (b, t) that used
    it; each position row of wpe receives the sum of dout over the batch.
    Rows that were never used (including positions >= T) get zero.
    """
    tokens = np.asarray(tokens)
    B, T, C = dout.shape
    dwte = np.zeros((vocab_rows, C), dtype=np.float64)
    # np.add.at accumulates correctly when the same token appears several times.
    np.add.at(dwte, tokens.reshape(-1), dout.reshape(-1, C))
    dwpe = np.zeros((max_t, C), dtype=np.float64)
    dwpe[:T] = dout.sum(axis=0)
    return dwte, dwpe


# ---------------------------------------------------------------------------
# LayerNorm over the last axis
# ---------------------------------------------------------------------------

def layernorm_forward(x, w, b, eps=1e-5):
    """y = (x - mean) * rstd * w + b, with rstd = 1/sqrt(var + eps).

    var is the biased variance (divide by C). Returns (y, mean, rstd) where
    mean and rstd have shape x.shape[:-1] (they are saved for the backward).
    """
    mean = x.mean(axis=-1)
    xc = x - mean[..., None]
    var = (xc * xc).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd[..., None]
    return xhat * w + b, mean, rstd


def layernorm_backward(dout, x, w, mean, rstd):
    """Gradients of layernorm given its input x and the saved mean/rstd.

    With xhat = (x - mean) * rstd and g = dout * w (the gradient w.r.t. xhat):
        dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
    which is the chain rule through the mean and the variance collapsed into
    two row reductions. dw and db are sums over every leading axis.
    """
    xhat = (x - mean[..., None]) * rstd[..., None]
    C = x.shape[-1]
    lead = tuple(range(x.ndim - 1))
    db = dout.sum(axis=lead)
    dw = (dout * xhat).sum(axis=lead)
    g = dout * w
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    dx = rstd[..., None] * (g - g_mean - xhat * gx_mean)
    assert dx.shape[-1] == C
    return dx, dw, db


# ---------------------------------------------------------------------------
# Linear layer: out = x @ W^T (+ b), W stored as (OC, C)
# ---------------------------------------------------------------------------

def matmul_forward(x, w, b=None):
    """out[..., o] = sum_c x[..., c] * w[o, c] + b[o]."""
    out = x @ w.T
    if b is not None:
        out = out + b
    return out


def matmul_backward(dout, x, w, has_bias=True):
    """Returns (dx, dw, db):  dx = dout @ W,  dw = dout^T @ x,  db = sum of dout rows.

    Leading axes of x/dout are flattened into rows for dw and db.
    """
    C = x.shape[-1]
    OC = w.shape[0]
    dx = dout @ w
    d2 = dout.reshape(-1, OC)
    x2 = x.reshape(-1, C)
    dw = d2.T @ x2
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------------------
# GELU, tanh approximation
# ---------------------------------------------------------------------------

_GELU_K = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    """gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)."""
    return 0.5 * x * (1.0 + np.tanh(_GELU_K * (x + 0.044715 * x ** 3)))


def gelu_backward(dout, x):
    """d gelu/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,
    with u = k (x + 0.044715 x^3) and du/dx = k (1 + 3 * 0.044715 x^2)."""
    u = _GELU_K * (x + 0.044715 * x ** 3)
    th = np.tanh(u)
    du = _GELU_K * (1.0 + 3.0 * 0.044715 * x ** 2)
    local = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du
    return dout * local


# ---------------------------------------------------------------------------
# Causal multi-head self-attention
# ---------------------------------------------------------------------------

def _split_qkv(qkv, n_head):
    """(B,T,3C) -> q, k, v each (B,NH,T,HS). The last axis holds q | k | v,
    each block of C split into NH heads of HS consecutive channels."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // n_head
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]

    def heads(a):  # (B,T,C) -> (B,T,NH,HS) -> (B,NH,T,HS)
        return a.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)

    return heads(q), heads(k), heads(v), HS


def _causal_mask(T):
    """mask[i, j] is True where query i may look at key j (j <= i)."""
    return np.tril(np.ones((T, T), dtype=bool))


def _attention_probs(q, k, HS):
    """Scaled causal scores, their row logsumexp and the softmax probabilities."""
    T = q.shape[2]
    scores = np.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(HS)
    scores = np.where(_causal_mask(T), scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)  # finite: the diagonal is always allowed
    lse = row_max[..., 0] + np.log(np.exp(scores - row_max).sum(axis=-1))
    probs = np.exp(scores - lse[..., None])  # exp(-inf) = 0 on masked keys
    return scores, lse, probs


def attention_forward(qkv, n_head):
    """out = softmax(q k^T / sqrt(HS) + causal mask) v, heads concatenated.

    Returns out (B,T,C) and lse (B,NH,T): the natural-log logsumexp of the
    scaled scores over the keys each query may see (j <= i).
    """
    B, T, _ = qkv.shape
    q, k, v, HS = _split_qkv(qkv, n_head)
    _, lse, probs = _attention_probs(q, k, HS)
    y = np.einsum("bhij,bhjd->bhid", probs, v)          # (B,NH,T,HS)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, n_head * HS)
    return out, lse


def attention_backward(dout, qkv, n_head):
    """Gradient of attention_forward w.r.t. qkv (B,T,3C).

    With P = softmax(S), S = q k^T / sqrt(HS), y = P v:
        dv = P^T dy
        dP = dy v^T
        dS = P * (dP - rowsum(dP * P))       (softmax backward; masked P are 0)
        dq = dS k / sqrt(HS),   dk = dS^T q / sqrt(HS)
    """
    B, T, C = dout.shape
    q, k, v, HS = _split_qkv(qkv, n_head)
    _, _, probs = _attention_probs(q, k, HS)
    dy = dout.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)  # (B,NH,T,HS)

    dv = np.einsum("bhij,bhid->bhjd", probs, dy)
    dprobs = np.einsum("bhid,bhjd->bhij", dy, v)
    dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
    scale = 1.0 / math.sqrt(HS)
    dq = np.einsum("bhij,bhjd->bhid", dscores, k) * scale
    dk = np.einsum("bhij,bhid->bhjd", dscores, q) * scale

    def unheads(a):  # (B,NH,T,HS) -> (B,T,C)
        return a.transpose(0, 2, 1, 3).reshape(B, T, C)

    return np.concatenate([unheads(dq), unheads(dk), unheads(dv)], axis=-1)


# ---------------------------------------------------------------------------
# Softmax cross-entropy over the first V of Vp columns
# ---------------------------------------------------------------------------

IGNORE_TARGET = -1  # a target left out of the loss: no loss, no gradient


def crossentropy_forward(logits, targets, V=None):
    """losses[...] = logsumexp(logits[..., :V]) - logits[..., target]; 0 where target is ignored."""
    if V is None:
        V = logits.shape[-1]
    z = logits[..., :V]
    zmax = z.max(axis=-1, keepdims=True)
    lse = zmax[..., 0] + np.log(np.exp(z - zmax).sum(axis=-1))
    targets = np.asarray(targets)
    counted = targets != IGNORE_TARGET
    picked = np.take_along_axis(z, np.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
    return np.where(counted, lse - picked, 0.0)


def mean_loss(losses, targets):
    """The mean over the counted targets (0 when every target is ignored)."""
    n = int(np.count_nonzero(np.asarray(targets) != IGNORE_TARGET))
    return float(losses.sum() / n) if n else 0.0


def crossentropy_backward(logits, targets, dloss, V=None):
    """dlogits = (softmax(logits[..., :V]) - onehot(target)) * dloss on the
    first V columns and exactly 0 on the padding columns V..Vp-1 and on ignored rows.

    dloss is a scalar or an array broadcastable to targets' shape.
    """
    if V is None:
        V = logits.shape[-1]
    z = logits[..., :V]
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    targets = np.asarray(targets)
    counted = targets != IGNORE_TARGET
    idx = np.where(counted, targets, 0)[..., None]
    np.put_along_axis(p, idx, np.take_along_axis(p, idx, axis=-1) - 1.0, axis=-1)
    dlogits = np.zeros_like(logits, dtype=np.float64)
    dlogits[..., :V] = p * (np.asarray(dloss, dtype=np.float64) * counted)[..., None]
    return dlogits


def _log_softmax(z):
    zmax = z.max(axis=-1, keepdims=True)
    return z - zmax - np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True))


def distill_forward(logits, teacher, targets, alpha, tau, V=None):
    """Knowledge distillation per row: alpha * CE(logits, target) + (1 - alpha) * tau^2 *
    KL(softmax(teacher / tau) || softmax(logits / tau)), over the first V columns; 0 where the
    target is ignored (the teacher adds nothing there either)."""
    if V is None:
        V = logits.shape[-1]
    z, t = logits[..., :V], teacher[..., :V]
    log_q, log_p = _log_softmax(t / tau), _log_softmax(z / tau)
    kl = (np.exp(log_q) * (log_q - log_p)).sum(axis=-1)
    counted = np.asarray(targets) != IGNORE_TARGET
    ce = crossentropy_forward(logits, targets, V)
    return np.where(counted, alpha * ce + (1.0 - alpha) * tau * tau * kl, 0.0)


def distill_backward(logits, teacher, targets, alpha, tau, dloss, V=None):
    """d distill_forward / d logits times dloss: alpha (softmax(z) - onehot) + (1 - alpha) tau
    (softmax(z / tau) - softmax(t / tau)); 0 on the padding columns and on ignored rows."""
    if V is None:
        V = logits.shape[-1]
    z, t = logits[..., :V], teacher[..., :V]
    counted = np.asarray(targets) != IGNORE_TARGET
    soft = np.exp(_log_softmax(z / tau)) - np.exp(_log_softmax(t / tau))
    dlogits = alpha * crossentropy_backward(logits, targets, 1.0, V)
    dlogits[..., :V] += (1.0 - alpha) * tau * soft * counted[..., None]
    return dlogits * np.asarray(dloss, dtype=np.float64)


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

@dataclass
class Config:
    n_layer: int
    n_head: int
    n_embd: int
    max_t: int
    vocab_size: int
    padded_vocab_size: int


def _table(cfg):
    """The C library's parameter table for cfg: [(name, offset, shape, decayed)]. The layout is the
    engine's one piece of knowledge the reference takes from it rather than restating."""
    from . import _core
    return _core.param_layout(dict(num_layers=cfg.n_layer, num_heads=cfg.n_head, channels=cfg.n_embd,
                                   max_seq_len=cfg.max_t, vocab_size=cfg.vocab_size,
                                   padded_vocab_size=cfg.padded_vocab_size))


_ANY = Config(n_layer=1, n_head=1, n_embd=1, max_t=1, vocab_size=1, padded_vocab_size=1)
PARAM_NAMES = [name for name, _, _, _ in _table(_ANY)]
# Weight decay applies to the matrices (and embeddings) only, never to biases or norms.
DECAYED = {name for name, _, _, decayed in _table(_ANY) if decayed}


def param_shapes(cfg):
    """Shape of each of the 16 tensors; per-layer tensors have a leading L axis."""
    return {name: shape for name, _, shape, _ in _table(cfg)}


def init_params(cfg, rng):
    """GPT-2 initialisation.

    Matrices and embeddings ~ N(0, 0.02); the two projections that write into
    the residual stream (attprojw, fcprojw) are scaled by 1/sqrt(2L) so the
    residual's variance does not grow with depth. Biases 0, LN weights 1.
    The padding rows of wte (>= V) are zero. Draws happen in PARAM_NAMES order.
    """
    shapes = param_shapes(cfg)
    resid_scale = 1.0 / math.sqrt(2.0 * cfg.n_layer)
    params = {}
    for name in PARAM_NAMES:
        shape = shapes[name]
        if name in DECAYED:
            std = 0.02 * (resid_scale if name in ("attprojw", "fcprojw") else 1.0)
            p = rng.normal(0.0, std, size=shape)
        elif name in ("ln1w", "ln2w", "lnfw"):
            p = np.ones(shape)
        else:
            p = np.zeros(shape)
        params[name] = p.astype(np.float64)
    params["wte"][cfg.vocab_size:] = 0.0
    return params


def flatten(params, cfg):
    """All tensors concatenated in PARAM_NAMES order (llm.c's flat layout)."""
    shapes = param_shapes(cfg)
    parts = []
    for n in PARAM_NAMES:
        a = np.asarray(params[n], dtype=np.float64)
        if a.shape != tuple(shapes[n]):
            raise ValueError(f"{n} has shape {a.shape}, config needs {shapes[n]}")
        parts.append(a.reshape(-1))
    return np.concatenate(parts)


def unflatten(flat, cfg):
    """Dict of reshaped views into flat (writes through to flat)."""
    shapes = param_shapes(cfg)
    out, off = {}, 0
    for n in PARAM_NAMES:
        size = int(np.prod(shapes[n]))
        out[n] = flat[off:off + size].reshape(shapes[n])
        off += size
    if off != flat.size:
        raise ValueError(f"flat has {flat.size} elements, config needs {off}")
    return out


# ---------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------

def gpt2_forward(params, cfg, tokens, targets=None):
    """Runs GPT-2 on tokens (B,T).

    Returns (logits (B,T,V), mean loss or None, cache). The cache holds every
    activation the backward needs.
    """
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    L, NH, V = cfg.n_layer, cfg.n_head, cfg.vocab_size
    if T > cfg.max_t:
        raise ValueError("T exceeds max_t")
    p = params
    res = encoder_forward(tokens, p["wte"], p["wpe"])
    layers = []
    for l in range(L):
        a = {"res": res}
        # attention block: res2 = res + proj(attn(ln1(res)))
        a["ln1"], a["ln1_mean"], a["ln1_rstd"] = layernorm_forward(res, p["ln1w"][l], p["ln1b"][l])
        a["qkv"] = matmul_forward(a["ln1"], p["qkvw"][l], p["qkvb"][l])
        a["atty"], a["lse"] = attention_forward(a["qkv"], NH)
        res2 = res + matmul_forward(a["atty"], p["attprojw"][l], p["attprojb"][l])
        a["res2"] = res2
        # MLP block: res3 = res2 + fcproj(gelu(fc(ln2(res2))))
        a["ln2"], a["ln2_mean"], a["ln2_rstd"] = layernorm_forward(res2, p["ln2w"][l], p["ln2b"][l])
        a["fch"] = matmul_forward(a["ln2"], p["fcw"][l], p["fcb"][l])
        a["h"] = gelu_forward(a["fch"])
        res = res2 + matmul_forward(a["h"], p["fcprojw"][l], p["fcprojb"][l])
        layers.append(a)
    lnf, lnf_mean, lnf_rstd = layernorm_forward(res, p["lnfw"], p["lnfb"])
    # tied LM head: logits over all Vp rows of wte; only the first V are real
    logits_full = matmul_forward(lnf, p["wte"])
    cache = {"tokens": tokens, "targets": None, "layers": layers, "res_final": res,
             "lnf": lnf, "lnf_mean": lnf_mean, "lnf_rstd": lnf_rstd, "logits_full": logits_full}
    loss = None
    if targets is not None:
        targets = np.asarray(targets)
        cache["targets"] = targets
        loss = mean_loss(crossentropy_forward(logits_full, targets, V), targets)
    return logits_full[..., :V], loss, cache


def gpt2_backward(params, cfg, cache, dlogits=None):
    """Gradient of the mean loss of the cached forward w.r.t. every parameter; dlogits (B,T,Vp), when
    given, is the gradient of another loss w.r.t. the logits (a distillation loss's) to take instead."""
    if cache["targets"] is None:
        raise ValueError("gpt2_backward needs a forward with targets")
    p = params
    tokens, targets = cache["tokens"], cache["targets"]
    B, T = tokens.shape
    grads = {n: np.zeros(s) for n, s in param_shapes(cfg).items()}

    # mean over the counted positions: each enters with weight 1/count (ignored ones with 0)
    counted = max(int(np.count_nonzero(targets != IGNORE_TARGET)), 1)
    if dlogits is None:
        dlogits = crossentropy_backward(cache["logits_full"], targets, 1.0 / counted, cfg.vocab_size)
    dlnf, dwte_head, _ = matmul_backward(dlogits, cache["lnf"], p["wte"], has_bias=False)
    grads["wte"] += dwte_head
    dres, grads["lnfw"], grads["lnfb"] = layernorm_backward(
        dlnf, cache["res_final"], p["lnfw"], cache["lnf_mean"], cache["lnf_rstd"])

    for l in reversed(range(cfg.n_layer)):
        a = cache["layers"][l]
        # MLP block; dres is the gradient w.r.t. this layer's output res3,
        # which flows unchanged into res2 through the residual connection.
        dh, grads["fcprojw"][l], grads["fcprojb"][l] = matmul_backward(dres, a["h"], p["fcprojw"][l])
        dfch = gelu_backward(dh, a["fch"])
        dln2, grads["fcw"][l], grads["fcb"][l] = matmul_backward(dfch, a["ln2"], p["fcw"][l])
        dx, grads["ln2w"][l], grads["ln2b"][l] = layernorm_backward(
            dln2, a["res2"], p["ln2w"][l], a["ln2_mean"], a["ln2_rstd"])
        dres2 = dres + dx
        # attention block
        datty, grads["attprojw"][l], grads["attprojb"][l] = matmul_backward(dres2, a["atty"], p["attprojw"][l])
        dqkv = attention_backward(datty, a["qkv"], cfg.n_head)
        dln1, grads["qkvw"][l], grads["qkvb"][l] = matmul_backward(dqkv, a["ln1"], p["qkvw"][l])
        dx, grads["ln1w"][l], grads["ln1b"][l] = layernorm_backward(
            dln1, a["res"], p["ln1w"][l], a["ln1_mean"], a["ln1_rstd"])
        dres = dres2 + dx

    dwte_enc, dwpe = encoder_backward(dres, tokens, cfg.padded_vocab_size, cfg.max_t)
    grads["wte"] += dwte_enc
    grads["wpe"] += dwpe
    return grads


# ---------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------

def adamw_step(params, grads, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8,
               weight_decay=0.0, grad_clip=1.0):
    """One AdamW step, in place on the dicts params, m and v (grads untouched).

    t is the 1-based step number (for the bias corrections). The gradient is
    first clipped by its global L2 norm when grad_clip > 0. Weight decay is
    decoupled (added to the update, scaled by lr) and applies to DECAYED only.
    Returns the global gradient norm before clipping.
    """
    grad_norm = math.sqrt(sum(float(np.sum(np.square(grads[n]))) for n in grads))
    scale = grad_clip / grad_norm if (grad_clip > 0 and grad_norm > grad_clip) else 1.0
    b1c = 1.0 - beta1 ** t
    b2c = 1.0 - beta2 ** t
    for n in params:
        g = grads[n] * scale
        m[n][...] = beta1 * m[n] + (1.0 - beta1) * g
        v[n][...] = beta2 * v[n] + (1.0 - beta2) * g * g
        mhat = m[n] / b1c
        vhat = v[n] / b2c
        wd = weight_decay if n in DECAYED else 0.0
        params[n][...] -= lr * (mhat / (np.sqrt(vhat) + eps) + wd * params[n])
    return grad_norm


class ReferenceGPT2:
    """Holds a config, float64 parameters and AdamW state; mirrors the C model's
    forward / backward / step cycle."""

    def __init__(self, cfg, params=None, seed=0):
        self.cfg = cfg
        self.params = params if params is not None else init_params(cfg, np.random.default_rng(seed))
        self.m = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.t = 0
        self.grads = None
        self._cache = None

    def forward(self, tokens, targets=None):
        """Returns (logits (B,T,V), mean loss or None)."""
        logits, loss, self._cache = gpt2_forward(self.params, self.cfg, tokens, targets)
        return logits, loss

    def backward(self):
        """Gradients of the last forward's mean loss (overwrites self.grads)."""
        if self._cache is None:
            raise RuntimeError("backward() before forward()")
        self.grads = gpt2_backward(self.params, self.cfg, self._cache)
        return self.grads

    def step(self, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0):
        """One AdamW step on self.grads; returns the grad norm before clipping."""
        if self.grads is None:
            raise RuntimeError("step() before backward()")
        self.t += 1
        return adamw_step(self.params, self.grads, self.m, self.v, self.t, lr,
                          beta1, beta2, eps, weight_decay, grad_clip)

    def flat_params(self):
        return flatten(self.params, self.cfg)

    def flat_grads(self):
        return flatten(self.grads, self.cfg)


# ---------------------------------------------------------------------------
# Inference with a KV cache (the decode ops of src/backend.h)
#
# A cache holds K or V of one layer for S sequence slots: (S, NH, maxlen, HS).
# ---------------------------------------------------------------------------

__all__ += ["encoder_forward_at", "kv_append", "attention_decode", "argmax_rows"]


def encoder_forward_at(tokens, pos, wte, wpe):
    """out[i,:] = wte[tokens[i],:] + wpe[pos[i],:]: every row has its own position."""
    tokens = np.asarray(tokens).reshape(-1)
    pos = np.asarray(pos).reshape(-1)
    return np.asarray(wte, np.float64)[tokens] + np.asarray(wpe, np.float64)[pos]


def kv_append(kcache, vcache, qkv, slots, pos, n_head):
    """New caches: kcache[slots[b], h, pos[b] + t, :] = k[b,t,h,:] (v likewise) for every
    b < B, t < T of qkv (B,T,3C); every other element keeps its value."""
    B, T, _ = qkv.shape
    _, k, v, _ = _split_qkv(np.asarray(qkv, np.float64), n_head)  # (B,NH,T,HS)
    kc = np.array(kcache, np.float64)
    vc = np.array(vcache, np.float64)
    maxlen = kc.shape[2]
    for b in range(B):
        s, p = int(slots[b]), int(pos[b])
        if not 0 <= p <= maxlen - T:
            raise ValueError(f"row {b}: positions {p}..{p + T - 1} do not fit a cache of {maxlen}")
        kc[s, :, p:p + T, :] = k[b]
        vc[s, :, p:p + T, :] = v[b]
    return kc, vc


def attention_decode(qkv, kcache, vcache, slots, lens, n_head):
    """One query per row against its cached keys.

    q[i,h,:] is the first C of row i of qkv (N,3C). With K = kcache[slots[i], h, :lens[i]]
    and V likewise, out[i,h,:] = softmax(K q / sqrt(HS)) V. Entries at or past lens[i]
    are never looked at. Returns out (N, C).
    """
    qkv = np.asarray(qkv, np.float64)
    N, C3 = qkv.shape
    C = C3 // 3
    HS = C // n_head
    q = qkv[:, :C].reshape(N, n_head, HS)
    out = np.empty((N, n_head, HS), np.float64)
    for i in range(N):
        n = int(lens[i])
        if not 1 <= n <= kcache.shape[2]:
            raise ValueError(f"row {i} attends to {n} keys")
        K = np.asarray(kcache[int(slots[i]), :, :n, :], np.float64)  # (NH, n, HS)
        V = np.asarray(vcache[int(slots[i]), :, :n, :], np.float64)
        s = np.einsum("hd,hjd->hj", q[i], K) / math.sqrt(HS)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        out[i] = np.einsum("hj,hjd->hd", p, V)
    return out.reshape(N, C)


def argmax_rows(logits, V):
    """int32 (N,): the index of the largest of logits[i, :V] (the lowest on ties); -1 for a
    row that holds a NaN or +Inf, or is all -Inf. Columns V.. (the padding) are ignored."""
    z = np.asarray(logits, np.float64)[:, :V]
    out = np.argmax(np.where(np.isnan(z), -np.inf, z), axis=-1).astype(np.int32)  # first maximum
    bad = np.isnan(z).any(axis=-1) | np.isposinf(z).any(axis=-1) | np.all(z == -np.inf, axis=-1)
    out[bad] = -1
    return out

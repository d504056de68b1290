# cython: language_level=3, boundscheck=False, wraparound=False
"""_core — the Cython bindings of llmc's C library.

Thin by design: every method calls one C function and turns a non-OK status into
LlmcError carrying the message of the handle it was called on. Python decides, C computes.
One class per C object: Model (device + weights), Trainer (gradients, activations, AdamW
state over a model), Session (a generation session over a model).
"""
cimport cython
cimport numpy as cnp
import os as _os
import numpy as np
from cpython.ref cimport Py_INCREF
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint64_t, uint32_t
from libc.string cimport memset

cnp.import_array()

include "_capi.pxi"


def _require_cpu():
    """A portable build (x86-64-v3) on an older CPU: a message instead of an illegal instruction.
    This module's own code is built for plain x86-64, so it gets this far on any x86-64 CPU."""
    cdef char err[512]
    if not llmc_cpu_supported(err, sizeof(err)):
        raise ImportError(err.decode("utf-8", "replace"))


_require_cpu()


class LlmcError(RuntimeError):
    """An error reported by the C library; the message names the problem."""


cdef inline int _check(llmc_status st, const char *msg) except -1:
    if st != LLMC_OK:
        raise LlmcError(msg.decode("utf-8", "replace"))
    return 0


def backends():
    """Names of the backends linked into this build, e.g. ['cpu', 'cuda']."""
    return [s.strip() for s in llmc_backend_names().decode().split(",")]


cdef dict _config_dict(const llmc_config *c):
    return dict(num_layers=c.num_layers, num_heads=c.num_heads, channels=c.channels,
                max_seq_len=c.max_seq_len, vocab_size=c.vocab_size, padded_vocab_size=c.padded_vocab_size)


cdef llmc_config _config_struct(dict d) except *:
    cdef llmc_config c
    cdef char err[512]
    c.num_layers = d["num_layers"]
    c.num_heads = d["num_heads"]
    c.channels = d["channels"]
    c.max_seq_len = d.get("max_seq_len", 1024)
    c.vocab_size = d.get("vocab_size", 50257)
    c.padded_vocab_size = d.get("padded_vocab_size", 0)
    if llmc_config_validate(&c, err, sizeof(err)) != LLMC_OK:
        raise LlmcError(err.decode())
    return c


def round_bf16(values):
    """float32 values rounded to bf16 (nearest even) and widened back: the C library's conversion."""
    cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    cdef cnp.ndarray[cnp.uint16_t, ndim=1] h = np.empty(a.shape[0], np.uint16)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(a.shape[0], np.float32)
    cdef size_t n = a.shape[0]
    with nogil:
        llmc_f32_to_bf16_n(<uint16_t *>h.data, <float *>a.data, n)
        llmc_bf16_to_f32_n(<float *>out.data, <uint16_t *>h.data, n)
    return out.reshape(np.shape(values))


def config_from_descriptor(str desc):
    """'d12' or 'L=2,H=4,C=128[,T=..,V=..]' -> config dict."""
    cdef llmc_config c
    cdef char err[512]
    if llmc_config_from_descriptor(desc.encode(), &c, err, sizeof(err)) != LLMC_OK:
        raise LlmcError(err.decode())
    return _config_dict(&c)


def param_layout(dict config):
    """[(name, offset, shape, weight_decay)] of the flat parameter buffer, from the C tensor table."""
    cdef llmc_config c = _config_struct(config)
    cdef llmc_weights w
    llmc_weights_layout(&w, &c, LLMC_F32)
    return [(w.t[i].name.decode(), w.t[i].offset, tuple(w.t[i].shape[d] for d in range(w.t[i].ndim)),
             bool(w.t[i].weight_decay)) for i in range(LLMC_NUM_PARAM_TENSORS)]


def param_count(dict config):
    """Parameters of a model of config (llmc_param_count)."""
    cdef llmc_config c = _config_struct(config)
    return llmc_param_count(&c)


HF_PREFIX = LLMC_HF_PREFIX.decode()  # of GPT2LMHeadModel's tensor names; GPT2Model's have none


def hf_config(json_text):
    """llmc's config dict from the text of a Hugging Face config.json (C's llmc_hf_config): GPT-2
    only; the message of a refusal names the field and its value."""
    b = json_text.encode() if isinstance(json_text, str) else bytes(json_text)
    if b"\0" in b:
        raise LlmcError("not valid JSON (a NUL byte)")
    cdef llmc_config c
    cdef char err[512]
    if llmc_hf_config(b, &c, err, sizeof(err)) != LLMC_OK:
        raise LlmcError(err.decode("utf-8", "replace"))
    return _config_dict(&c)


def hf_tensor_names(dict config):
    """[(llmc name, layer or None, Hugging Face name under the model, transposed)] from the C tensor
    table, in its order (tensor by tensor, layers ascending): the Hugging Face mapping, written once."""
    cdef llmc_config c = _config_struct(config)
    cdef llmc_weights w
    cdef char buf[256]
    llmc_weights_layout(&w, &c, LLMC_F32)
    out = []
    for i in range(LLMC_NUM_PARAM_TENSORS):
        for layer in (range(c.num_layers) if w.t[i].layer_stride else [None]):
            if llmc_weights_hf_name(i, 0 if layer is None else layer, buf, sizeof(buf)) == NULL:
                raise LlmcError(f"no Hugging Face name for tensor {i}")
            out.append((w.t[i].name.decode(), layer, buf.decode(), bool(llmc_weights_hf_transposed(i))))
    return out


def hf_ignored(str name):
    """True for a Hugging Face tensor that an import drops: the attention-mask buffers and the tied LM head."""
    return bool(llmc_weights_hf_ignored(name.encode()))


cdef llmc_prune_options _prune_options(sparsity, pattern, scope, dict keep) except *:
    """The C options; keep holds the bytes the char pointers point into."""
    cdef llmc_prune_options o
    llmc_prune_options_default(&o)
    if sparsity is not None:
        o.sparsity = float(sparsity)
    if pattern is not None:
        keep["pattern"] = str(pattern).encode()
        o.pattern = keep["pattern"]
    if scope is not None:
        keep["scope"] = str(scope).encode()
        o.scope = keep["scope"]
    return o


cdef list _prune_report(llmc_prune_stat *stats, size_t n):
    cdef llmc_config c
    memset(&c, 0, sizeof(c))
    c.num_layers = c.num_heads = c.channels = c.max_seq_len = c.vocab_size = c.padded_vocab_size = 1
    cdef llmc_weights w
    llmc_weights_layout(&w, &c, LLMC_F32)  # for the tensor names only
    names = [w.t[i].name.decode() for i in range(LLMC_NUM_PARAM_TENSORS)]
    return [dict(tensor=names[stats[i].tensor], layer=stats[i].layer, numel=stats[i].numel, zeros=stats[i].zeros)
            for i in range(n)]


def prune_values(dict config, values, sparsity=None, pattern=None, scope=None):
    """Magnitude pruning (llmc_prune_values) of a flat float32 parameter array, in place when it is a
    contiguous float32 array (else of a copy); returns (values, report). report: one dict per matmul
    weight and layer, {tensor, layer, numel, zeros}. sparsity None: unset (2:4 implies 0.5)."""
    cdef llmc_config c = _config_struct(config)
    cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if a.shape[0] != llmc_param_count(&c):
        raise LlmcError(f"prune_values needs {llmc_param_count(&c)} values for this config, got {a.shape[0]}")
    keep = {}
    cdef llmc_prune_options o = _prune_options(sparsity, pattern, scope, keep)
    cdef size_t cap = LLMC_PRUNE_TENSORS * c.num_layers, n = 0
    stats = np.zeros(cap * sizeof(llmc_prune_stat), np.uint8)
    cdef unsigned char[:] raw = stats
    cdef char err[512]
    with nogil:
        st = llmc_prune_values(&c, <float *>a.data, &o, <llmc_prune_stat *>&raw[0], cap, &n, err, sizeof(err))
    _check(st, err)
    return a, _prune_report(<llmc_prune_stat *>&raw[0], n)


cdef object _host_view(float *ptr, size_t n, object owner):
    """A 1-D float32 numpy array over C memory that keeps owner alive."""
    cdef cnp.npy_intp dims[1]
    dims[0] = <cnp.npy_intp>n
    arr = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_FLOAT32, <void *>ptr)
    Py_INCREF(owner)
    cnp.PyArray_SetBaseObject(arr, owner)
    return arr


def token_array(ids, str what="tokens"):
    """ids as a contiguous int32 array, refusing what a cast would change: non-integer values
    (floats, complex, bools, strings) and ids outside int32 (the C library checks the vocabulary)."""
    a = np.asarray(ids)
    if a.size == 0:
        return np.ascontiguousarray(a, dtype=np.int32)
    if a.dtype.kind not in "iu":
        raise LlmcError(f"{what} must be integer token ids, got an array of {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < -2**31 or hi > 2**31 - 1:  # what int32 holds goes on to C, which knows the vocabulary
        bad = lo if lo < -2**31 else hi
        pos = int(np.flatnonzero(a.reshape(-1) == bad)[0])
        raise LlmcError(f"{what}: token id {bad} at position {pos} is out of range")
    return np.ascontiguousarray(a, dtype=np.int32)


cdef tuple _tokens(inputs, targets):
    """(B, T) int32 inputs and targets (or None): integer ids, targets of exactly the inputs' shape."""
    x = token_array(inputs, "input")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise LlmcError(f"tokens must have shape (B, T), got {x.shape}")
    y = None
    if targets is not None:
        y = token_array(targets, "target")
        if y.ndim == 1 and np.ndim(inputs) == 1:
            y = y[None, :]
        if y.shape != x.shape:
            raise LlmcError(f"targets must have the shape of inputs {x.shape}, got {y.shape}")
    return x, y


cdef class Model:
    """A device and the weights on it (llmc_model). Use llmc.GPT2 for the friendly API."""
    cdef llmc_model *m

    def __cinit__(self):
        self.m = llmc_model_new()
        if self.m == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.m != NULL:
            llmc_model_free(self.m)

    cdef int _ok(self, llmc_status st) except -1:
        return _check(st, llmc_model_error(self.m))

    cdef llmc_model_options _options(self, bytes backend, int device, pdl, skinny_rows):
        cdef llmc_model_options o
        llmc_model_options_default(&o)
        o.backend = backend  # the caller keeps the bytes alive for the call
        o.device = device
        if pdl is not None:
            o.pdl = int(pdl)
        if skinny_rows is not None:
            o.skinny_rows = int(skinny_rows)
        return o

    def init_random(self, dict config, str backend="cpu", uint64_t seed=1337, int device=0, pdl=None,
                    skinny_rows=None):
        cdef llmc_config c = _config_struct(config)
        b = backend.encode()
        cdef llmc_model_options o = self._options(b, device, pdl, skinny_rows)
        with nogil:
            st = llmc_model_init_random(self.m, &o, &c, seed)
        self._ok(st)

    def init_values(self, dict config, values, str backend="cpu", int device=0, pdl=None, skinny_rows=None):
        """Weights from a flat float32 array in the tensor table's order (param_layout)."""
        cdef llmc_config c = _config_struct(config)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        n = llmc_param_count(&c)
        if a.shape[0] != n:
            raise LlmcError(f"init_values needs {n} values for this config, got {a.shape[0]}")
        b = backend.encode()
        cdef llmc_model_options o = self._options(b, device, pdl, skinny_rows)
        with nogil:
            st = llmc_model_init_values(self.m, &o, &c, <float *>a.data)
        self._ok(st)

    def load(self, path, str backend="cpu", int device=0, pdl=None, skinny_rows=None):
        b = backend.encode()
        cdef llmc_model_options o = self._options(b, device, pdl, skinny_rows)
        p = str(path).encode()
        cdef const char *cp = p
        with nogil:
            st = llmc_model_load(self.m, &o, cp)
        self._ok(st)

    def load_hf(self, path, str backend="cpu", int device=0, pdl=None, skinny_rows=None):
        """A Hugging Face directory, read by the C reader: load() with a directory (llmc_model_load
        hands a directory with config.json to llmc_model_load_hf)."""
        if not _os.path.isdir(path):
            raise LlmcError(f"{path} is not a directory: a Hugging Face model is config.json + model.safetensors")
        self.load(path, backend, device, pdl, skinny_rows)

    def open(self, str backend="cpu", int device=0, pdl=None, skinny_rows=None):
        """Opens the device only (for a checkpoint load that brings the weights)."""
        b = backend.encode()
        cdef llmc_model_options o = self._options(b, device, pdl, skinny_rows)
        with nogil:
            st = llmc_model_open(self.m, &o)
        self._ok(st)

    def save(self, path, int version=0):
        p = str(path).encode()
        cdef const char *cp = p
        with nogil:
            st = llmc_model_save(self.m, cp, version)
        self._ok(st)

    @property
    def config(self):
        return _config_dict(llmc_model_config(self.m))

    @property
    def backend(self):
        return llmc_model_backend(self.m).decode()

    @property
    def num_params(self):
        return llmc_model_num_params(self.m)

    @property
    def memory(self):
        """Bytes of device memory the weights take."""
        return llmc_model_memory(self.m)

    def params_view(self):
        """Zero-copy float32 view of the flat parameters (CPU backend), else None."""
        cdef float *p = llmc_model_params_host(self.m)
        return None if p == NULL else _host_view(p, llmc_model_num_params(self.m), self)

    def get_params(self):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_num_params(self.m), np.float32)
        self._ok(llmc_model_get_params(self.m, <float *>out.data))
        return out

    def set_params(self, values):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        if a.shape[0] != llmc_model_num_params(self.m):
            raise LlmcError(f"set_params needs {llmc_model_num_params(self.m)} values, got {a.shape[0]}")
        self._ok(llmc_model_set_params(self.m, <float *>a.data))

    def prune(self, sparsity=None, pattern=None, scope=None):
        """Magnitude pruning of the model's weights (llmc_model_prune); returns the report of
        prune_values."""
        if llmc_model_weights(self.m) == NULL:
            raise LlmcError("model has no parameters yet")
        keep = {}
        cdef llmc_prune_options o = _prune_options(sparsity, pattern, scope, keep)
        cdef size_t cap = LLMC_PRUNE_TENSORS * llmc_model_config(self.m).num_layers, n = 0
        stats = np.zeros(cap * sizeof(llmc_prune_stat), np.uint8)
        cdef unsigned char[:] raw = stats
        with nogil:
            st = llmc_model_prune(self.m, &o, <llmc_prune_stat *>&raw[0], cap, &n)
        self._ok(st)
        return _prune_report(<llmc_prune_stat *>&raw[0], n)

    def quantize(self, int group_size=0, bint embeddings=True):
        """int8 weight-only quantization in place (llmc_model_quantize)."""
        cdef llmc_quant_options q
        q.group_size = group_size
        q.embeddings = embeddings
        with nogil:
            st = llmc_model_quantize(self.m, &q)
        self._ok(st)

    @property
    def quantized(self):
        """None for float weights; else dict(group_size=..., embeddings=...)."""
        cdef llmc_quant_options q
        if not llmc_model_quantized(self.m, &q):
            return None
        return dict(group_size=q.group_size, embeddings=bool(q.embeddings))


def quantize_int8(w, int group=0):
    """(q int8, scales float32) of a 2-D float array, by llmc's int8 scheme (llmc_quantize_int8)."""
    cdef cnp.ndarray[cnp.float32_t, ndim=2] a = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = a.shape[0], a.shape[1]
    g = group if 0 < group < cols else cols
    cdef cnp.ndarray[cnp.int8_t, ndim=2] q = np.empty((rows, cols), np.int8)
    cdef cnp.ndarray[cnp.float32_t, ndim=2] s = np.empty((rows, (cols + g - 1) // g), np.float32)
    llmc_quantize_int8(<float *>a.data, rows, cols, group, <int8_t *>q.data, <float *>s.data)
    return q, s


def dequantize_int8(q, scales, int group=0):
    """The float32 weights that (q, scales) stand for (llmc_dequantize_int8)."""
    cdef cnp.ndarray[cnp.int8_t, ndim=2] qa = np.ascontiguousarray(q, dtype=np.int8)
    cdef cnp.ndarray[cnp.float32_t, ndim=2] sa = np.ascontiguousarray(scales, dtype=np.float32)
    rows, cols = qa.shape[0], qa.shape[1]
    g = group if 0 < group < cols else cols
    if sa.shape[0] != rows or sa.shape[1] != (cols + g - 1) // g:
        raise LlmcError(f"scales must have shape {(rows, (cols + g - 1) // g)}, got {(sa.shape[0], sa.shape[1])}")
    cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.empty((rows, cols), np.float32)
    llmc_dequantize_int8(<int8_t *>qa.data, <float *>sa.data, rows, cols, group, <float *>out.data)
    return out


include "_train.pxi"
include "_session.pxi"
include "_ops.pxi"
include "_data.pxi"
include "_comm.pxi"

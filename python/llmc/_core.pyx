# cython: language_level=3, boundscheck=False, wraparound=False
"""_core — the Cython bindings of llmc's C library.

Thin by design: every method calls one C function and turns a non-OK status into
LlmcError carrying the C message. Python decides, C computes.
"""
cimport numpy as cnp
import numpy as np
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint64_t, uint32_t
from libc.stdlib cimport malloc, free

cnp.import_array()

include "_capi.pxi"

cdef extern from "llmc.h":
    llmc_status llmc_gen_logits(llmc_model *m, int b, float *dst) nogil


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


def config_from_descriptor(str desc):
    """'d12' or 'L=2,H=4,C=128[,T=..,V=..]' -> config dict."""
    cdef llmc_config c
    cdef char err[512]
    if llmc_config_from_descriptor(desc.encode(), &c, err, sizeof(err)) != LLMC_OK:
        raise LlmcError(err.decode())
    return _config_dict(&c)


def param_layout(dict config):
    """[(name, offset, shape, weight_decay)] of the flat parameter buffer, in llm.c order."""
    cdef llmc_config c = _config_struct(config)
    cdef llmc_tensor_info t[32]
    llmc_param_layout(&c, t)
    return [(t[i].name.decode(), t[i].offset, tuple(t[i].shape[d] for d in range(t[i].ndim)), bool(t[i].weight_decay))
            for i in range(LLMC_NUM_PARAM_TENSORS)]


cdef object _host_view(float *ptr, size_t n, object owner):
    """A 1-D float32 numpy array over C memory that keeps owner alive."""
    cdef cnp.npy_intp dims[1]
    dims[0] = <cnp.npy_intp>n
    arr = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_FLOAT32, <void *>ptr)
    Py_INCREF(owner)
    cnp.PyArray_SetBaseObject(arr, owner)
    return arr


cdef class Model:
    """One llmc model context (see llmc.h). Use llmc.GPT2 for the friendly API."""
    cdef llmc_model *m
    cdef public object _last_shape

    def __cinit__(self):
        self.m = llmc_model_new()
        if self.m == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.m != NULL:
            llmc_model_free(self.m)

    cdef int _ok(self, llmc_status st) except -1:
        return _check(st, llmc_model_error(self.m))

    cdef llmc_model_options _options(self, int device, int master_weights, int recompute):
        """Options without the backend name: callers set o.backend from bytes they keep alive."""
        cdef llmc_model_options o
        llmc_model_options_default(&o)
        o.device = device
        o.master_weights = master_weights
        o.recompute = recompute
        return o

    def init_random(self, dict config, str backend="cpu", uint64_t seed=1337, int device=0,
                    int master_weights=1, int recompute=0):
        cdef llmc_config c = _config_struct(config)
        cdef llmc_model_options o = self._options(device, master_weights, recompute)
        b = backend.encode()
        o.backend = b
        with nogil:
            st = llmc_model_init_random(self.m, &o, &c, seed)
        self._ok(st)

    def load(self, path, str backend="cpu", int device=0, int master_weights=1, int recompute=0):
        cdef llmc_model_options o = self._options(device, master_weights, recompute)
        b = backend.encode()
        o.backend = b
        p = str(path).encode()
        cdef const char *cp = p
        with nogil:
            st = llmc_model_load(self.m, &o, cp)
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
    def step_count(self):
        return llmc_model_step_count(self.m)

    @property
    def loss(self):
        return llmc_model_loss(self.m)

    # ---- parameters and gradients
    def params_view(self):
        """Zero-copy float32 view of the flat parameters (CPU backend), else None."""
        cdef float *p = llmc_model_params_host(self.m)
        return None if p == NULL else _host_view(p, llmc_model_num_params(self.m), self)

    def grads_view(self):
        cdef float *p = llmc_model_grads_host(self.m)
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

    def get_grads(self):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_num_params(self.m), np.float32)
        self._ok(llmc_model_get_grads(self.m, <float *>out.data))
        return out

    # ---- compute
    cdef tuple _tokens(self, inputs, targets):
        x = np.ascontiguousarray(inputs, dtype=np.int32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise LlmcError(f"tokens must have shape (B, T), got {x.shape}")
        y = None
        if targets is not None:
            y = np.ascontiguousarray(targets, dtype=np.int32).reshape(x.shape) if np.size(targets) == x.size \
                else None
            if y is None:
                raise LlmcError(f"targets must have the shape of inputs {x.shape}, got {np.shape(targets)}")
        return x, y

    def forward(self, inputs, targets=None):
        """Runs the model; returns the mean loss (NaN without targets)."""
        x, y = self._tokens(inputs, targets)
        cdef cnp.ndarray[cnp.int32_t, ndim=2] xi = x
        cdef cnp.ndarray[cnp.int32_t, ndim=2] yi
        cdef int *yp = NULL
        if y is not None:
            yi = y
            yp = <int *>yi.data
        cdef int B = x.shape[0], T = x.shape[1]
        with nogil:
            st = llmc_model_forward(self.m, <int *>xi.data, yp, B, T)
        self._ok(st)
        self._last_shape = (B, T)
        return llmc_model_loss(self.m)

    def logits(self):
        """(B, T, V) float32 logits of the last forward."""
        if self._last_shape is None:
            raise LlmcError("no logits: run forward first")
        B, T = self._last_shape
        V = llmc_model_config(self.m).vocab_size
        cdef cnp.ndarray[cnp.float32_t, ndim=3] out = np.empty((B, T, V), np.float32)
        with nogil:
            st = llmc_model_get_logits(self.m, <float *>out.data)
        self._ok(st)
        return out

    def logits_at(self, int b, int t):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_config(self.m).vocab_size, np.float32)
        self._ok(llmc_model_get_logits_at(self.m, b, t, <float *>out.data))
        return out

    def zero_grad(self):
        self._ok(llmc_model_zero_grad(self.m))

    def backward(self, float loss_scale=1.0):
        with nogil:
            st = llmc_model_backward(self.m, loss_scale)
        self._ok(st)

    def forward_backward(self, inputs, targets, float loss_scale=1.0):
        x, y = self._tokens(inputs, targets)
        if y is None:
            raise LlmcError("training needs targets")
        cdef cnp.ndarray[cnp.int32_t, ndim=2] xi = x
        cdef cnp.ndarray[cnp.int32_t, ndim=2] yi = y
        cdef int B = x.shape[0], T = x.shape[1]
        cdef float loss = 0
        with nogil:
            st = llmc_model_forward_backward(self.m, <int *>xi.data, <int *>yi.data, B, T, loss_scale, &loss)
        self._ok(st)
        self._last_shape = None
        return loss

    def step(self, float lr, float beta1=0.9, float beta2=0.95, float eps=1e-8, float weight_decay=0.0,
             float grad_clip=1.0):
        """One AdamW step; returns the global gradient norm (before clipping)."""
        cdef llmc_adamw a
        a.lr = lr
        a.beta1 = beta1
        a.beta2 = beta2
        a.eps = eps
        a.weight_decay = weight_decay
        a.grad_clip = grad_clip
        cdef float norm = 0
        with nogil:
            st = llmc_model_step(self.m, &a, &norm)
        self._ok(st)
        return norm

    # ---- generation
    def gen_begin(self, prompts, int max_new, float temperature=1.0, int top_k=0, float top_p=1.0,
                  uint64_t seed=1337, int eot=50256):
        seqs = [np.ascontiguousarray(p, dtype=np.int32).reshape(-1) for p in prompts]
        if not seqs:
            raise LlmcError("no prompts given")
        cdef cnp.ndarray[cnp.int32_t, ndim=1] lens = np.array([len(q) for q in seqs], np.int32)
        cdef cnp.ndarray[cnp.int32_t, ndim=1] flat = np.concatenate(seqs) if lens.sum() else np.zeros(0, np.int32)
        cdef llmc_sampling s
        s.temperature = temperature
        s.top_k = top_k
        s.top_p = top_p
        s.seed = seed
        cdef int dummy = 0
        cdef int *fp = <int *>flat.data if flat.shape[0] else &dummy
        self._ok(llmc_gen_begin(self.m, fp, <int *>lens.data, len(seqs), max_new, &s, eot))

    def gen_next(self, int batch):
        """Next token of each sequence (-1 once a sequence has stopped) and how many are still going."""
        cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(batch, np.int32)
        cdef int alive = 0
        with nogil:
            st = llmc_gen_next(self.m, <int *>out.data, &alive)
        self._ok(st)
        return out, alive

    def gen_end(self):
        llmc_gen_end(self.m)

    def gen_logits(self, int b):
        """float32 (V,) logits the next gen_next samples sequence b from (its last token's output)."""
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_config(self.m).vocab_size, np.float32)
        self._ok(llmc_gen_logits(self.m, b, <float *>out.data))
        return out

    # ---- trainer checkpoints
    def checkpoint_save(self, directory, int step, uint64_t rng=0, data_position=(0, 0, 0)):
        cdef llmc_train_state ts
        ts.step = step
        ts.rng = rng
        ts.data.epoch = data_position[0]
        ts.data.shard = data_position[1]
        ts.data.sample = data_position[2]
        d = str(directory).encode()
        cdef const char *dp = d
        with nogil:
            st = llmc_checkpoint_save(self.m, dp, &ts)
        self._ok(st)

    def checkpoint_load(self, directory, int step=-1, str backend="cpu", int device=0, int master_weights=1,
                        int recompute=0):
        cdef llmc_model_options o = self._options(device, master_weights, recompute)
        b = backend.encode()
        o.backend = b
        cdef llmc_train_state ts
        d = str(directory).encode()
        cdef const char *dp = d
        with nogil:
            st = llmc_checkpoint_load(self.m, &o, dp, step, &ts)
        self._ok(st)
        return dict(step=ts.step, rng=ts.rng, data_position=(ts.data.epoch, ts.data.shard, ts.data.sample))


def checkpoint_latest(directory):
    return llmc_checkpoint_latest(str(directory).encode())


include "_ops.pxi"
include "_data.pxi"

# _data.pxi — data loader, tokenizer .bin, sampler and LR schedules.
# Included by _core.pyx (which provides cnp/np, uint64_t/uint32_t and LlmcError).
# Every C name is bound under a "_dl_" alias so these declarations can never clash
# with the same types declared elsewhere in _core.pyx / _core.pxd.

import os as _dl_os

cdef extern from "llmc.h":
    ctypedef struct _dl_llmc_dataloader "llmc_dataloader":
        pass
    ctypedef struct _dl_position "llmc_data_position":
        uint64_t epoch
        uint64_t shard
        uint64_t sample
    _dl_llmc_dataloader *_dl_new "llmc_dataloader_new"() nogil
    int _dl_open "llmc_dataloader_open"(_dl_llmc_dataloader *d, const char *pattern, int B, int T, int shuffle,
                                        uint64_t seed) nogil
    const char *_dl_error "llmc_dataloader_error"(const _dl_llmc_dataloader *d) nogil
    void _dl_free "llmc_dataloader_free"(_dl_llmc_dataloader *d) nogil
    int _dl_next "llmc_dataloader_next"(_dl_llmc_dataloader *d, int *inputs, int *targets) nogil
    void _dl_reset "llmc_dataloader_reset"(_dl_llmc_dataloader *d) nogil
    _dl_position _dl_tell "llmc_dataloader_tell"(const _dl_llmc_dataloader *d) nogil
    int _dl_seek "llmc_dataloader_seek"(_dl_llmc_dataloader *d, _dl_position p) nogil
    size_t _dl_num_tokens "llmc_dataloader_num_tokens"(const _dl_llmc_dataloader *d) nogil
    int _dl_num_shards "llmc_dataloader_num_shards"(const _dl_llmc_dataloader *d) nogil
    size_t _dl_num_batches "llmc_dataloader_num_batches"(const _dl_llmc_dataloader *d) nogil
    int _dl_has_masks "llmc_dataloader_has_masks"(const _dl_llmc_dataloader *d) nogil

    ctypedef struct _dl_llmc_tokenizer "llmc_tokenizer":
        pass
    _dl_llmc_tokenizer *_dl_tok_new "llmc_tokenizer_new"() nogil
    int _dl_tok_load "llmc_tokenizer_load"(_dl_llmc_tokenizer *t, const char *path) nogil
    const char *_dl_tok_error "llmc_tokenizer_error"(const _dl_llmc_tokenizer *t) nogil
    void _dl_tok_free "llmc_tokenizer_free"(_dl_llmc_tokenizer *t) nogil
    const char *_dl_tok_decode "llmc_tokenizer_decode"(const _dl_llmc_tokenizer *t, int token, int *length) nogil
    int _dl_tok_eot "llmc_tokenizer_eot"(const _dl_llmc_tokenizer *t) nogil
    int _dl_tok_vocab "llmc_tokenizer_vocab_size"(const _dl_llmc_tokenizer *t) nogil

    ctypedef struct _dl_sampling "llmc_sampling":
        float temperature
        int top_k
        float top_p
        uint64_t seed
    void _dl_sampling_default "llmc_sampling_default"(_dl_sampling *s) nogil
    int _dl_sampling_validate "llmc_sampling_validate"(const _dl_sampling *s, char *err, size_t errlen) nogil
    int _dl_sample_token "llmc_sample_token"(const float *logits, int V, const _dl_sampling *s,
                                             uint64_t *rng_state, int *token) nogil
    int _dl_sample_token_at "llmc_sample_token_at"(const float *logits, int V, const _dl_sampling *s, float u,
                                                   int *token) nogil

    ctypedef int _dl_sched_kind "llmc_schedule_kind"
    ctypedef struct _dl_schedule "llmc_schedule":
        _dl_sched_kind kind
        float max_lr
        int warmup
        int total
        float final_frac
        float decay_frac
    float _dl_schedule_lr "llmc_schedule_lr"(const _dl_schedule *s, int step) nogil
    int _dl_schedule_parse "llmc_schedule_parse"(const char *name, _dl_sched_kind *kind) nogil


cdef class DataLoader:
    """Batches of (inputs, targets), int32 arrays of shape (B, T), from llm.c token shards.

    pattern is a glob; every matching shard is checked when the loader opens.
    With shuffle, shard order and batch order are permuted per epoch from seed;
    tell()/seek() save and restore the position (epoch, shard, sample) exactly.
    """
    cdef _dl_llmc_dataloader *_d
    cdef readonly int B
    cdef readonly int T

    def __cinit__(self, pattern, int B, int T, shuffle=False, uint64_t seed=0):
        self._d = NULL
        cdef bytes p = _dl_os.fsencode(pattern)
        cdef const char *cp = p
        cdef int sh = 1 if shuffle else 0
        cdef int st
        self._d = _dl_new()
        if self._d == NULL:
            raise MemoryError("out of memory opening the data loader")
        with nogil:
            st = _dl_open(self._d, cp, B, T, sh, seed)
        if st != 0:
            self._raise()
        self.B = B
        self.T = T

    def __dealloc__(self):
        if self._d != NULL:
            _dl_free(self._d)
            self._d = NULL

    cdef _raise(self):
        raise LlmcError(_dl_error(self._d).decode("utf-8", "replace") or "data loader error")

    def next(self):
        """The next batch as (inputs, targets), each int32 of shape (B, T); with loss masks a target
        left out of the loss is -1."""
        cdef cnp.ndarray inputs = np.empty((self.B, self.T), dtype=np.int32)
        cdef cnp.ndarray targets = np.empty((self.B, self.T), dtype=np.int32)
        cdef int *pi = <int *>cnp.PyArray_DATA(inputs)
        cdef int *pt = <int *>cnp.PyArray_DATA(targets)
        cdef int st
        with nogil:
            st = _dl_next(self._d, pi, pt)
        if st != 0:
            self._raise()
        return inputs, targets

    def tell(self):
        """The position of the next batch: (epoch, shard, sample)."""
        cdef _dl_position p = _dl_tell(self._d)
        return (p.epoch, p.shard, p.sample)

    def seek(self, position):
        """Continue from a position returned by tell()."""
        try:
            e, s, i = position
            e, s, i = int(e), int(s), int(i)
        except (TypeError, ValueError):
            raise LlmcError(f"a data position is a tuple (epoch, shard, sample), got {position!r}")
        if e < 0 or s < 0 or i < 0 or e >= 2**64 or s >= 2**64 or i >= 2**64:
            raise LlmcError(f"cannot seek to {(e, s, i)}: epoch, shard and sample must be non-negative")
        cdef _dl_position p
        p.epoch = e
        p.shard = s
        p.sample = i
        if _dl_seek(self._d, p) != 0:
            self._raise()

    def reset(self):
        """Back to the first batch of epoch 0."""
        _dl_reset(self._d)

    @property
    def num_tokens(self):
        return _dl_num_tokens(self._d)

    @property
    def num_shards(self):
        return _dl_num_shards(self._d)

    @property
    def num_batches(self):
        """Batches per epoch."""
        return _dl_num_batches(self._d)

    @property
    def has_masks(self):
        """Whether the shards have loss masks (then next() gives -1 for targets left out of the loss)."""
        return _dl_has_masks(self._d) != 0


cdef class Tokenizer:
    """Decode-only view of an llm.c tokenizer .bin."""
    cdef _dl_llmc_tokenizer *_t

    def __cinit__(self, path):
        self._t = NULL
        cdef bytes p = _dl_os.fsencode(path)
        cdef const char *cp = p
        cdef int st
        self._t = _dl_tok_new()
        if self._t == NULL:
            raise MemoryError("out of memory opening the tokenizer")
        with nogil:
            st = _dl_tok_load(self._t, cp)
        if st != 0:
            raise LlmcError(_dl_tok_error(self._t).decode("utf-8", "replace") or "cannot open tokenizer")

    def __dealloc__(self):
        if self._t != NULL:
            _dl_tok_free(self._t)
            self._t = NULL

    @property
    def eot(self):
        """The end-of-text id (-1 for a version-1 file whose vocab has no id 50256)."""
        return _dl_tok_eot(self._t)

    @property
    def vocab_size(self):
        return _dl_tok_vocab(self._t)

    def decode(self, ids):
        """Bytes of one id or of a sequence of ids, concatenated."""
        cdef int n
        cdef const char *p
        if isinstance(ids, (int, np.integer)):
            ids = (ids,)
        parts = []
        for tok in np.asarray(ids).reshape(-1).tolist():
            if not isinstance(tok, int) or tok < 0 or tok >= _dl_tok_vocab(self._t):
                raise LlmcError(f"token id {tok!r} out of range [0, {_dl_tok_vocab(self._t)})")
            p = _dl_tok_decode(self._t, tok, &n)
            parts.append(p[:n] if n > 0 else b"")
        return b"".join(parts)


cdef _dl_sampling _checked_sampling(float temperature, int top_k, float top_p) except *:
    """Sampling settings as generation takes them, or LlmcError with the rule they break."""
    cdef _dl_sampling s
    _dl_sampling_default(&s)
    s.temperature, s.top_k, s.top_p = temperature, top_k, top_p
    cdef char err[256]
    if _dl_sampling_validate(&s, err, sizeof(err)) != 0:
        raise LlmcError(err.decode())
    return s


def _logits_row(logits):
    arr = np.ascontiguousarray(logits, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise LlmcError(f"logits must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.shape[0] > 2**31 - 1:
        raise LlmcError("too many logits")
    return arr


def sample_token(logits, float temperature=1.0, int top_k=0, float top_p=1.0, rng_state=None):
    """Samples one token from 1-D logits; returns (token, new_rng_state).

    temperature 0 is greedy. rng_state defaults to the default sampling seed (1337).
    Raises LlmcError for NaN/+Inf logits, all -Inf logits, or settings that generation refuses too
    (temperature < 0, top_k < 0, top_p outside (0, 1]).
    """
    arr = _logits_row(logits)
    cdef _dl_sampling s = _checked_sampling(temperature, top_k, top_p)
    cdef uint64_t state = s.seed if rng_state is None else (int(rng_state) & 0xFFFFFFFFFFFFFFFF)
    cdef int V = <int>arr.shape[0]
    cdef const float *p = <const float *>cnp.PyArray_DATA(<cnp.ndarray>arr)
    cdef int tok = -1, st
    with nogil:
        st = _dl_sample_token(p, V, &s, &state, &tok)
    if st != 0:
        raise LlmcError("cannot sample: the logits contain NaN or +Inf, or are all -Inf")
    return tok, state


cdef extern from "rng.h":
    float _dl_rng_f32 "llmc_rng_f32"(uint64_t *state) nogil


def sample_token_at(logits, float u, float temperature=1.0, int top_k=0, float top_p=1.0):
    """The token sample_token picks from 1-D logits when its uniform draw is u in [0, 1)
    (the function the device samplers compute). Raises LlmcError as sample_token does."""
    arr = _logits_row(logits)
    if not 0.0 <= u < 1.0:
        raise LlmcError(f"the draw must be in [0, 1), got {u}")
    cdef _dl_sampling s = _checked_sampling(temperature, top_k, top_p)
    cdef int V = <int>arr.shape[0], tok = -1, st
    cdef const float *p = <const float *>cnp.PyArray_DATA(<cnp.ndarray>arr)
    with nogil:
        st = _dl_sample_token_at(p, V, &s, u, &tok)
    if st != 0:
        raise LlmcError("cannot sample: the logits contain NaN or +Inf, or are all -Inf")
    return tok


def rng_uniform(rng_state):
    """(u, new_state): the uniform draw in [0, 1) that sample_token takes from rng_state."""
    cdef uint64_t state = int(rng_state) & 0xFFFFFFFFFFFFFFFF
    cdef float u = _dl_rng_f32(&state)
    return u, state


def schedule_lr(kind, max_lr, warmup, total, final_frac=0.0, step=None, decay_frac=0.0):
    """Learning rate at a 0-based step for kind "cosine", "linear", "constant" or "wsd"."""
    if step is None:
        raise TypeError("schedule_lr() needs step")
    cdef _dl_schedule s
    cdef bytes k = str(kind).encode()
    if _dl_schedule_parse(k, &s.kind) != 0:
        raise LlmcError(f"unknown schedule {kind!r}: expected cosine, linear, constant or wsd")
    s.max_lr = max_lr
    s.warmup = warmup
    s.total = total
    s.final_frac = final_frac
    s.decay_frac = decay_frac
    return _dl_schedule_lr(&s, step)

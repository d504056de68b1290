# _session.pxi — generation sessions (llmc_gen). Included by _core.pyx.

@cython.no_gc_clear  # as Trainer: the model must outlive the session's __dealloc__
cdef class Session:
    """A generation session over a Model: its own KV cache, batch and sampler state.
    Several may be alive on one model; each keeps its model alive."""
    cdef llmc_gen *g
    cdef readonly Model model
    cdef readonly int batch

    def __cinit__(self, Model model, prompts, int max_new, float temperature=1.0, int top_k=0, float top_p=1.0,
                  uint64_t seed=1337, int eot=50256, graphs=None, host_sampling=None,
                  persistent=None, run_ahead=None):
        self.g = llmc_gen_new()
        if self.g == NULL:
            raise MemoryError()
        self.model = model
        seqs = []
        for i, p in enumerate(prompts):
            q = token_array(p, f"prompt {i}")
            if q.ndim > 1:
                raise LlmcError(f"prompt {i} must be a 1-D sequence of token ids, got shape {q.shape}")
            seqs.append(q.reshape(-1))
        if not seqs:
            raise LlmcError("no prompts given")
        cdef cnp.ndarray[cnp.int32_t, ndim=1] lens = np.array([len(q) for q in seqs], np.int32)
        cdef cnp.ndarray[cnp.int32_t, ndim=1] flat = np.concatenate(seqs) if lens.sum() else np.zeros(1, np.int32)
        cdef llmc_gen_options o
        llmc_gen_options_default(&o)
        o.max_new = max_new
        o.sampling.temperature = temperature
        o.sampling.top_k = top_k
        o.sampling.top_p = top_p
        o.sampling.seed = seed
        o.eot = eot
        if graphs is not None:
            o.graphs = 1 if graphs else 0
        if host_sampling is not None:
            o.host_sampling = 1 if host_sampling else 0
        if persistent is not None:
            o.persistent = 1 if persistent else 0
        if run_ahead is not None:
            o.run_ahead = 1 if run_ahead else 0
        cdef int n = len(seqs)
        with nogil:
            st = llmc_gen_begin(self.g, model.m, <int *>flat.data, <int *>lens.data, n, &o)
        self._ok(st)
        self.batch = n

    def __dealloc__(self):
        if self.g != NULL:
            llmc_gen_free(self.g)

    cdef int _ok(self, llmc_status st) except -1:
        return _check(st, llmc_gen_error(self.g))

    def next(self):
        """The next token of each sequence (-1 once a sequence has stopped) and how many go on."""
        cdef int B = llmc_gen_batch(self.g)
        cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(max(B, 1), np.int32)
        cdef int alive = 0
        with nogil:
            st = llmc_gen_next(self.g, <int *>out.data, B, &alive)
        self._ok(st)
        return out[:B], alive

    def next_into(self, cnp.ndarray[cnp.int32_t, ndim=1] out not None):
        """next(), writing into a caller's int32 array, which must hold a token per sequence; returns alive."""
        cdef int alive = 0
        cdef int n = out.shape[0]
        if not out.flags.c_contiguous:
            raise LlmcError("next_into needs a contiguous int32 array")
        with nogil:
            st = llmc_gen_next(self.g, <int *>out.data, n, &alive)
        self._ok(st)
        return alive

    def logits(self, int b):
        """float32 (V,) logits the next call samples sequence b from (its last token's output)."""
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_config(self.model.m).vocab_size, np.float32)
        self._ok(llmc_gen_logits(self.g, b, <float *>out.data))
        return out

    def end(self):
        """Releases the cache now (the session cannot go on)."""
        llmc_gen_end(self.g)

    @property
    def memory(self):
        """Bytes of device memory the session holds (KV cache and scratch)."""
        return llmc_gen_memory(self.g)

    @property
    def persistent_steps(self):
        """Decode steps that ran as the backend's one kernel (persistent=True)."""
        return llmc_gen_persistent_steps(self.g)

    @property
    def run_ahead(self):
        """(on, kept, discarded): whether decode steps are queued ahead (run_ahead=True: greedy or
        device sampling), and how many speculative steps became the next step or were discarded."""
        cdef long long kept = 0, discarded = 0
        on = llmc_gen_run_ahead(self.g, &kept, &discarded)
        return bool(on), kept, discarded

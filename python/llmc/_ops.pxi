# _ops.pxi — one backend op at a time on numpy arrays, for the kernel tests.
#
# Device(name) opens a backend through the same op table the model uses. Each method
# uploads float32 inputs (converted to the backend's activation dtype), fills "="
# outputs with NaN so unwritten elements show, runs the op and downloads float32 results.
# "+=" outputs take their starting values as arguments.

cdef class _Buf:
    """A device allocation freed with its Device."""
    cdef void *ptr
    cdef Device dev

    def __dealloc__(self):
        if self.ptr != NULL and self.dev is not None and self.dev.open:
            self.dev.d.ops.free(&self.dev.d, self.ptr)


cdef class Device:
    cdef llmc_device d
    cdef public bint open

    def __cinit__(self, str name="cpu", int index=0):
        self.open = False
        st = llmc_device_open(&self.d, name.encode(), index)
        if st != LLMC_OK:
            raise LlmcError(self.d.err.decode())
        self.open = True

    def __dealloc__(self):
        if self.open:
            llmc_device_close(&self.d)
            self.open = False

    @property
    def name(self):
        return self.d.ops.name.decode()

    @property
    def act_dtype(self):
        return "bf16" if self.d.ops.act_dtype == LLMC_BF16 else "f32"

    cdef int _ok(self, llmc_status st) except -1:
        return _check(st, self.d.err)

    cdef _Buf _alloc(self, size_t bytes):
        cdef _Buf b = _Buf()
        b.dev = self
        self._ok(self.d.ops.alloc(&self.d, &b.ptr, max(bytes, 1)))
        return b

    cdef _Buf _put(self, arr, bint act=True):
        """Uploads float data as act dtype (or fp32 when act is False)."""
        cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        cdef llmc_dtype t = self.d.ops.act_dtype if act else LLMC_F32
        cdef _Buf b = self._alloc(a.shape[0] * llmc_dtype_size(t))
        self._ok(self.d.ops.upload_f32(&self.d, b.ptr, t, <float *>a.data, a.shape[0]))
        return b

    cdef _Buf _poisoned(self, shape, bint act=True):
        return self._put(np.full(shape, np.nan, np.float32), act)

    cdef _Buf _put_int(self, arr):
        cdef cnp.ndarray[cnp.int32_t, ndim=1] a = np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)
        cdef _Buf b = self._alloc(a.shape[0] * 4)
        self._ok(self.d.ops.copy_h2d(&self.d, b.ptr, <void *>a.data, a.shape[0] * 4))
        return b

    cdef _get(self, _Buf b, shape, bint act=True):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(int(np.prod(shape)), np.float32)
        cdef llmc_dtype t = self.d.ops.act_dtype if act else LLMC_F32
        self._ok(self.d.ops.download_f32(&self.d, <float *>out.data, b.ptr, t, out.shape[0]))
        return out.reshape(shape)

    def roundtrip(self, x):
        """Upload and download: shows the rounding of the act dtype."""
        x = np.asarray(x, np.float32)
        return self._get(self._put(x), x.shape)

    # ---- layers
    def encoder_forward(self, tokens, wte, wpe):
        tokens = np.asarray(tokens, np.int32)
        B, T = tokens.shape
        C = wte.shape[1]
        out = self._poisoned((B, T, C))
        tk, we, pe = self._put_int(tokens), self._put(wte), self._put(wpe)
        self._ok(self.d.ops.encoder_forward(&self.d, out.ptr, <int *>tk.ptr, we.ptr, pe.ptr, B, T, C))
        return self._get(out, (B, T, C))

    def encoder_backward(self, dwte, dwpe, dout, tokens):
        cdef cnp.ndarray[cnp.int32_t, ndim=2] tok = np.ascontiguousarray(tokens, np.int32)
        B, T, C = dout.shape
        gw, gp, do, tk = self._put(dwte), self._put(dwpe), self._put(dout), self._put_int(tok)
        self._ok(self.d.ops.encoder_backward(&self.d, gw.ptr, gp.ptr, do.ptr, <int *>tk.ptr, <int *>tok.data, B, T, C))
        return self._get(gw, dwte.shape), self._get(gp, dwpe.shape)

    def layernorm_forward(self, inp, w, b, inp2=None):
        N, C = inp.shape
        out, mean, rstd = self._poisoned((N, C)), self._poisoned(N, False), self._poisoned(N, False)
        x, wb, bb = self._put(inp), self._put(w), self._put(b)
        cdef _Buf x2 = self._put(inp2) if inp2 is not None else None
        cdef _Buf res = self._poisoned((N, C)) if inp2 is not None else None
        self._ok(self.d.ops.layernorm_forward(&self.d, res.ptr if res is not None else NULL, out.ptr,
                                              <float *>mean.ptr, <float *>rstd.ptr, x.ptr,
                                              x2.ptr if x2 is not None else NULL, wb.ptr, bb.ptr, N, C))
        return (self._get(out, (N, C)), self._get(mean, (N,), False), self._get(rstd, (N,), False),
                self._get(res, (N, C)) if res is not None else None)

    def layernorm_backward(self, dinp, dw, db, dout, inp, w, mean, rstd):
        N, C = inp.shape
        gi, gw, gb = self._put(dinp), self._put(dw), self._put(db)
        do, x, wb = self._put(dout), self._put(inp), self._put(w)
        mb, rb = self._put(mean, False), self._put(rstd, False)
        self._ok(self.d.ops.layernorm_backward(&self.d, gi.ptr, gw.ptr, gb.ptr, do.ptr, x.ptr, wb.ptr,
                                               <float *>mb.ptr, <float *>rb.ptr, N, C))
        return self._get(gi, (N, C)), self._get(gw, (C,)), self._get(gb, (C,))

    def matmul_forward(self, inp, w, bias=None, gelu=False):
        """out = inp @ w.T + bias; with gelu=True returns (gelu(pre), pre)."""
        N, C = inp.shape
        OC = w.shape[0]
        out = self._poisoned((N, OC))
        cdef _Buf pre = self._poisoned((N, OC)) if gelu else None
        x, wb = self._put(inp), self._put(w)
        cdef _Buf bb = self._put(bias) if bias is not None else None
        self._ok(self.d.ops.matmul_forward(&self.d, out.ptr, pre.ptr if pre is not None else NULL, x.ptr, wb.ptr,
                                           bb.ptr if bb is not None else NULL, N, C, OC))
        if gelu:
            return self._get(out, (N, OC)), self._get(pre, (N, OC))
        return self._get(out, (N, OC))

    def matmul_backward(self, dw, dbias, dout, inp, w, pre_gelu=None, want_dinp=True):
        """Returns (dinp or None, dw + dout.T @ inp, dbias + colsum(dout) or None)."""
        N, C = inp.shape
        OC = w.shape[0]
        cdef _Buf gi = self._poisoned((N, C)) if want_dinp else None
        gw = self._put(dw)
        cdef _Buf gb = self._put(dbias) if dbias is not None else None
        cdef _Buf pg = self._put(pre_gelu) if pre_gelu is not None else None
        do, x, wb = self._put(dout), self._put(inp), self._put(w)
        self._ok(self.d.ops.matmul_backward(&self.d, gi.ptr if gi is not None else NULL, gw.ptr,
                                            gb.ptr if gb is not None else NULL, do.ptr, x.ptr, wb.ptr,
                                            pg.ptr if pg is not None else NULL, N, C, OC))
        return (self._get(gi, (N, C)) if gi is not None else None, self._get(gw, (OC, C)),
                self._get(gb, (OC,)) if gb is not None else None)

    def gelu_forward(self, x):
        x = np.asarray(x, np.float32)
        out, xb = self._poisoned(x.shape), self._put(x)
        self._ok(self.d.ops.gelu_forward(&self.d, out.ptr, xb.ptr, x.size))
        return self._get(out, x.shape)

    def attention_forward(self, qkv, int n_head):
        B, T, C3 = qkv.shape
        C = C3 // 3
        out, lse, q = self._poisoned((B, T, C)), self._poisoned((B, n_head, T), False), self._put(qkv)
        self._ok(self.d.ops.attention_forward(&self.d, out.ptr, <float *>lse.ptr, q.ptr, B, T, n_head, C // n_head))
        return self._get(out, (B, T, C)), self._get(lse, (B, n_head, T), False)

    def attention_backward(self, dout, qkv, out, lse, int n_head):
        B, T, C3 = qkv.shape
        C = C3 // 3
        dq = self._poisoned((B, T, C3))
        do, q, o, l = self._put(dout), self._put(qkv), self._put(out), self._put(lse, False)
        self._ok(self.d.ops.attention_backward(&self.d, dq.ptr, do.ptr, q.ptr, o.ptr, <float *>l.ptr, B, T, n_head,
                                               C // n_head))
        return self._get(dq, (B, T, C3))

    def classifier_forward(self, logits, targets, int V, float dloss=0.0):
        """Returns (losses, logits-or-dlogits) for logits of shape (N, Vp)."""
        N, Vp = logits.shape
        losses, lg, tg = self._poisoned(N, False), self._put(logits), self._put_int(targets)
        self._ok(self.d.ops.classifier_forward(&self.d, <float *>losses.ptr, lg.ptr, <int *>tg.ptr, N, V, Vp, dloss))
        return self._get(losses, (N,), False), self._get(lg, (N, Vp))

    # ---- optimizer
    def adamw_update(self, params, grads, m, v, float lr, float beta1, float beta2, int t, float eps,
                     float weight_decay, float grad_scale, uint32_t seed=0, master=None):
        """Returns (params, m, v, master or None) after one update at step t (1-based)."""
        n = params.size
        p, g, mb, vb = self._put(params), self._put(grads), self._put(m, False), self._put(v, False)
        cdef _Buf ms = self._put(master, False) if master is not None else None
        b1c, b2c = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        self._ok(self.d.ops.adamw_update(&self.d, p.ptr, <float *>ms.ptr if ms is not None else NULL, g.ptr,
                                         <float *>mb.ptr, <float *>vb.ptr, n, lr, beta1, beta2, b1c, b2c, eps,
                                         weight_decay, grad_scale, seed))
        return (self._get(p, params.shape), self._get(mb, params.shape, False), self._get(vb, params.shape, False),
                self._get(ms, params.shape, False) if ms is not None else None)

    def sum_squares(self, x):
        cdef double out = 0
        xb = self._put(x)
        self._ok(self.d.ops.sum_squares(&self.d, &out, xb.ptr, np.size(x)))
        return out

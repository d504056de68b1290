# _ops.pxi — one backend op at a time on numpy arrays, for the kernel tests.
#
# Device(name) opens a backend through the same op table the model uses. Each method
# uploads float32 inputs (converted to the backend's activation dtype), fills "="
# outputs with NaN so unwritten elements show, runs the op and downloads float32 results.
# "+=" outputs take their starting values as arguments. Weights go to the ops as typed
# tensors (llmc_tensor), as the model's table hands them over.

cdef extern from "backend.h":
    ctypedef struct llmc_device_tuning:
        int pdl, skinny_rows, int8_mma, fuse_layernorm
    ctypedef struct llmc_backend_ops:
        const char *name
        llmc_dtype act_dtype
        llmc_status (*alloc)(llmc_device *dev, void **ptr, size_t bytes)
        void (*free)(llmc_device *dev, void *ptr)
        llmc_status (*copy_h2d)(llmc_device *dev, void *dst, const void *src, size_t bytes)
        llmc_status (*copy_d2h)(llmc_device *dev, void *dst, const void *src, size_t bytes)
        llmc_status (*upload_f32)(llmc_device *dev, void *dst, llmc_dtype dtype, const float *src, size_t n)
        llmc_status (*download_f32)(llmc_device *dev, float *dst, const void *src, llmc_dtype dtype, size_t n)
        llmc_status (*synchronize)(llmc_device *dev)
        llmc_status (*readback_begin)(llmc_device *dev, const void *src, size_t bytes)
        llmc_status (*readback_end)(llmc_device *dev, void *dst, size_t bytes)
        llmc_status (*encoder_forward)(llmc_device *dev, void *out, const int *tokens, const llmc_tensor *wte,
                                       const llmc_tensor *wpe, int B, int T, int C)
        llmc_status (*encoder_backward)(llmc_device *dev, const llmc_tensor *dwte, const llmc_tensor *dwpe,
                                        const void *dout, const int *tokens, const int *tokens_host, int B, int T,
                                        int C)
        llmc_status (*layernorm_forward)(llmc_device *dev, void *residual_out, void *out, float *mean, float *rstd,
                                         const void *inp, const void *inp2, const llmc_tensor *w,
                                         const llmc_tensor *b, int N, int C)
        llmc_status (*layernorm_backward)(llmc_device *dev, void *dinp, const llmc_tensor *dw, const llmc_tensor *db,
                                          const void *dout, const void *inp, const llmc_tensor *w, const float *mean,
                                          const float *rstd, int N, int C)
        llmc_status (*matmul_forward)(llmc_device *dev, void *out, void *pre_gelu, const void *inp,
                                      const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC)
        llmc_status (*matmul_backward)(llmc_device *dev, void *dinp, const llmc_tensor *dw,
                                       const llmc_tensor *dbias, const void *dout, const void *inp,
                                       const llmc_tensor *w, const void *pre_gelu, int N, int C, int OC)
        llmc_status (*gelu_forward)(llmc_device *dev, void *out, const void *inp, size_t n)
        llmc_status (*attention_forward)(llmc_device *dev, void *out, float *lse, const void *qkv, int B, int T,
                                         int NH, int HS)
        llmc_status (*attention_backward)(llmc_device *dev, void *dqkv, const void *dout, const void *qkv,
                                          const void *out, const float *lse, int B, int T, int NH, int HS)
        llmc_status (*classifier_forward)(llmc_device *dev, float *losses, void *logits, const int *targets, int N,
                                          int V, int Vp, float dloss)
        llmc_status (*adamw_update)(llmc_device *dev, void *params, float *master, const void *grads, float *m,
                                    float *v, size_t n, float lr, float beta1, float beta2, float b1_correction,
                                    float b2_correction, float eps, float weight_decay, const float *grad_scale,
                                    uint32_t seed, size_t index_base)
        llmc_status (*sum_squares)(llmc_device *dev, double *out, const void *x, size_t n)
        llmc_status (*grad_norm_scale)(llmc_device *dev, float *out, const void *grads, size_t n, float grad_clip)
        llmc_status (*encoder_forward_at)(llmc_device *dev, void *out, const int *tokens, const int *pos,
                                          const llmc_tensor *wte, const llmc_tensor *wpe, int N, int C)
        llmc_status (*kv_append)(llmc_device *dev, void *kcache, void *vcache, const void *qkv, const int *slots,
                                 const int *pos, int B, int T, int NH, int HS, int maxlen)
        llmc_status (*attention_decode)(llmc_device *dev, void *out, const void *qkv, const void *kcache,
                                        const void *vcache, const int *slots, const int *lens, int N, int NH, int HS,
                                        int maxlen)
        llmc_status (*argmax_rows)(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp)
        llmc_status (*sample_rows)(llmc_device *dev, int *out, const void *logits, int N, int V, int Vp,
                                   const llmc_sampling *s, const float *u)
        llmc_status (*classifier_distill_forward)(llmc_device *dev, float *losses, void *logits,
                                                  const void *teacher_logits, const int *targets, int N, int V,
                                                  int Vp, float dloss, float alpha, float tau)
        llmc_status (*zero_mask_build)(llmc_device *dev, uint32_t *mask, size_t bit0, const void *w,
                                       llmc_dtype dtype, size_t n)
        llmc_status (*zero_mask_apply)(llmc_device *dev, const uint32_t *mask, size_t bit0, void *params,
                                       float *master, float *m, float *v, size_t n)
        llmc_status (*feed_tokens)(llmc_device *dev, int *dst, const int *src, int n)
        llmc_status (*layernorm_matmul_forward)(llmc_device *dev, void *residual_out, void *out, void *pre_gelu,
                                                const void *inp, const void *inp2, const llmc_tensor *ln_w,
                                                const llmc_tensor *ln_b, const llmc_tensor *w,
                                                const llmc_tensor *bias, int N, int C, int OC)
        llmc_status (*matmul_forward_fp8)(llmc_device *dev, int site, void *out, void *pre_gelu, const void *inp,
                                          const llmc_tensor *w, const llmc_tensor *bias, int N, int C, int OC)
        llmc_status (*matmul_backward_fp8)(llmc_device *dev, int site, void *dinp, const llmc_tensor *dw,
                                           const llmc_tensor *dbias, const void *dout, const void *inp,
                                           const llmc_tensor *w, const void *pre_gelu, int N, int C, int OC)
    ctypedef struct llmc_device:
        const llmc_backend_ops *ops
        llmc_device_tuning tuning
        char *err
    llmc_status llmc_device_open(llmc_device *dev, const char *name, int index, const llmc_device_tuning *tuning)
    void llmc_device_close(llmc_device *dev)
    const char *llmc_backend_names()


@cython.no_gc_clear  # its __dealloc__ frees through self.dev
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

    def __cinit__(self, str name="cpu", int index=0, pdl=None, skinny_rows=None, int8_mma=None, fuse_layernorm=None):
        """pdl / skinny_rows / int8_mma / fuse_layernorm: the backend's tuning knobs (None: the defaults of
        llmc_model_options)."""
        self.open = False
        cdef llmc_model_options mo
        llmc_model_options_default(&mo)
        cdef llmc_device_tuning tune
        tune.pdl = mo.pdl if pdl is None else int(pdl)
        tune.skinny_rows = mo.skinny_rows if skinny_rows is None else int(skinny_rows)
        tune.int8_mma = mo.int8_mma if int8_mma is None else int(int8_mma)
        tune.fuse_layernorm = mo.fuse_layernorm if fuse_layernorm is None else int(fuse_layernorm)
        st = llmc_device_open(&self.d, name.encode(), index, &tune)
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

    cdef llmc_tensor _tensor(self, _Buf b, shape, name=b"w"):
        """The typed tensor of act dtype that b holds (as the model's weight table describes one)."""
        cdef llmc_tensor t
        memset(&t, 0, sizeof(t))
        t.name = name
        t.dtype = self.d.ops.act_dtype
        t.data = b.ptr
        shape = tuple(int(x) for x in np.atleast_1d(np.asarray(shape)))
        t.ndim = len(shape)
        t.numel = 1
        for i, n in enumerate(shape):
            t.shape[i] = n
            t.numel *= n
        return t

    cdef _get(self, _Buf b, shape, bint act=True):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(int(np.prod(shape)), np.float32)
        cdef llmc_dtype t = self.d.ops.act_dtype if act else LLMC_F32
        self._ok(self.d.ops.download_f32(&self.d, <float *>out.data, b.ptr, t, out.shape[0]))
        return out.reshape(shape)

    # ---- argument checks: the harness is importable, so it refuses what would make an op read or
    # write outside its buffers, as the engine's own callers never ask it to
    @staticmethod
    def _shape(a, shape, what):
        got = tuple(np.shape(a))
        if got != tuple(shape):
            raise LlmcError(f"{what} must have shape {tuple(shape)}, got {got}")

    @staticmethod
    def _ids(a, lo, hi, what, shape=None):
        """Integer ids in [lo, hi), as int32."""
        ids = token_array(a, what)
        if shape is not None and ids.shape != tuple(shape):
            raise LlmcError(f"{what} must have shape {tuple(shape)}, got {ids.shape}")
        if ids.size and (ids.min() < lo or ids.max() >= hi):
            raise LlmcError(f"{what} must lie in [{lo}, {hi}), got values in [{ids.min()}, {ids.max()}]")
        return ids

    def roundtrip(self, x):
        """Upload and download: shows the rounding of the act dtype."""
        x = np.asarray(x, np.float32)
        return self._get(self._put(x), x.shape)

    # ---- layers
    def encoder_forward(self, tokens, wte, wpe):
        Vp, C = np.shape(wte)
        tokens = self._ids(tokens, 0, Vp, "tokens")
        if tokens.ndim != 2 or np.ndim(wpe) != 2 or np.shape(wpe)[1] != C or np.shape(wpe)[0] < tokens.shape[1]:
            raise LlmcError(f"encoder_forward: tokens {tokens.shape}, wte {np.shape(wte)}, wpe {np.shape(wpe)} do not fit")
        B, T = tokens.shape
        out = self._poisoned((B, T, C))
        tk, we, pe = self._put_int(tokens), self._put(wte), self._put(wpe)
        cdef llmc_tensor twe = self._tensor(we, wte.shape), tpe = self._tensor(pe, wpe.shape)
        self._ok(self.d.ops.encoder_forward(&self.d, out.ptr, <int *>tk.ptr, &twe, &tpe, B, T, C))
        return self._get(out, (B, T, C))

    def encoder_backward(self, dwte, dwpe, dout, tokens):
        B, T, C = np.shape(dout)
        cdef cnp.ndarray[cnp.int32_t, ndim=2] tok = self._ids(tokens, 0, np.shape(dwte)[0], "tokens", (B, T))
        if np.shape(dwte)[1:] != (C,) or np.ndim(dwpe) != 2 or np.shape(dwpe)[1] != C or np.shape(dwpe)[0] < T:
            raise LlmcError(f"encoder_backward: dwte {np.shape(dwte)}, dwpe {np.shape(dwpe)} do not fit dout {(B, T, C)}")
        gw, gp, do, tk = self._put(dwte), self._put(dwpe), self._put(dout), self._put_int(tok)
        cdef llmc_tensor tgw = self._tensor(gw, dwte.shape), tgp = self._tensor(gp, dwpe.shape)
        self._ok(self.d.ops.encoder_backward(&self.d, &tgw, &tgp, do.ptr, <int *>tk.ptr, <int *>tok.data, B, T, C))
        return self._get(gw, dwte.shape), self._get(gp, dwpe.shape)

    def layernorm_forward(self, inp, w, b, inp2=None):
        N, C = inp.shape
        self._shape(w, (C,), "w")
        self._shape(b, (C,), "b")
        if inp2 is not None:
            self._shape(inp2, (N, C), "inp2")
        out, mean, rstd = self._poisoned((N, C)), self._poisoned(N, False), self._poisoned(N, False)
        x, wb, bb = self._put(inp), self._put(w), self._put(b)
        cdef _Buf x2 = self._put(inp2) if inp2 is not None else None
        cdef _Buf res = self._poisoned((N, C)) if inp2 is not None else None
        cdef llmc_tensor tw = self._tensor(wb, (C,)), tb = self._tensor(bb, (C,))
        self._ok(self.d.ops.layernorm_forward(&self.d, res.ptr if res is not None else NULL, out.ptr,
                                              <float *>mean.ptr, <float *>rstd.ptr, x.ptr,
                                              x2.ptr if x2 is not None else NULL, &tw, &tb, N, C))
        return (self._get(out, (N, C)), self._get(mean, (N,), False), self._get(rstd, (N,), False),
                self._get(res, (N, C)) if res is not None else None)

    def layernorm_backward(self, dinp, dw, db, dout, inp, w, mean, rstd):
        N, C = inp.shape
        for a, shape, what in ((dinp, (N, C), "dinp"), (dout, (N, C), "dout"), (dw, (C,), "dw"), (db, (C,), "db"),
                               (w, (C,), "w"), (mean, (N,), "mean"), (rstd, (N,), "rstd")):
            self._shape(a, shape, what)
        gi, gw, gb = self._put(dinp), self._put(dw), self._put(db)
        do, x, wb = self._put(dout), self._put(inp), self._put(w)
        mb, rb = self._put(mean, False), self._put(rstd, False)
        cdef llmc_tensor tgw = self._tensor(gw, (C,)), tgb = self._tensor(gb, (C,)), tw = self._tensor(wb, (C,))
        self._ok(self.d.ops.layernorm_backward(&self.d, gi.ptr, &tgw, &tgb, do.ptr, x.ptr, &tw,
                                               <float *>mb.ptr, <float *>rb.ptr, N, C))
        return self._get(gi, (N, C)), self._get(gw, (C,)), self._get(gb, (C,))

    def matmul_forward(self, inp, w, bias=None, gelu=False, fp8_site=None):
        """out = inp @ w.T + bias; with gelu=True returns (gelu(pre), pre). fp8_site: matmul_forward_fp8 at
        that call site (None when the backend has no fp8 op or declines the shape)."""
        N, C = inp.shape
        OC = w.shape[0]
        self._shape(w, (OC, C), "w")
        if bias is not None:
            self._shape(bias, (OC,), "bias")
        out = self._poisoned((N, OC))
        cdef _Buf pre = self._poisoned((N, OC)) if gelu else None
        x, wb = self._put(inp), self._put(w)
        cdef _Buf bb = self._put(bias) if bias is not None else None
        cdef llmc_tensor tw = self._tensor(wb, (OC, C))
        cdef llmc_tensor tb
        if bb is not None:
            tb = self._tensor(bb, (OC,))
        if fp8_site is not None:
            if self.d.ops.matmul_forward_fp8 == NULL:
                return None
            st = self.d.ops.matmul_forward_fp8(&self.d, int(fp8_site), out.ptr, pre.ptr if pre is not None else NULL,
                                               x.ptr, &tw, &tb if bb is not None else NULL, N, C, OC)
            if st == LLMC_ERR_UNSUPPORTED:
                return None
            self._ok(st)
        else:
            self._ok(self.d.ops.matmul_forward(&self.d, out.ptr, pre.ptr if pre is not None else NULL, x.ptr, &tw,
                                               &tb if bb is not None else NULL, N, C, OC))
        if gelu:
            return self._get(out, (N, OC)), self._get(pre, (N, OC))
        return self._get(out, (N, OC))

    def layernorm_matmul_forward(self, inp, ln_w, ln_b, w, bias=None, inp2=None, gelu=False):
        """The fused layernorm + matmul: (out, pre or None, residual or None), residual = inp + inp2 when
        inp2 is given; None when the backend does not take the call (no such op, or not these shapes)."""
        if self.d.ops.layernorm_matmul_forward == NULL:
            return None
        N, C = inp.shape
        OC = w.shape[0]
        for a, shape, what in ((ln_w, (C,), "ln_w"), (ln_b, (C,), "ln_b"), (w, (OC, C), "w")):
            self._shape(a, shape, what)
        if bias is not None:
            self._shape(bias, (OC,), "bias")
        if inp2 is not None:
            self._shape(inp2, (N, C), "inp2")
        out = self._poisoned((N, OC))
        cdef _Buf pre = self._poisoned((N, OC)) if gelu else None
        cdef _Buf res = self._poisoned((N, C)) if inp2 is not None else None
        x, lw, lb, wb = self._put(inp), self._put(ln_w), self._put(ln_b), self._put(w)
        cdef _Buf x2 = self._put(inp2) if inp2 is not None else None
        cdef _Buf bb = self._put(bias) if bias is not None else None
        cdef llmc_tensor tlw = self._tensor(lw, (C,)), tlb = self._tensor(lb, (C,)), tw = self._tensor(wb, (OC, C))
        cdef llmc_tensor tb
        if bb is not None:
            tb = self._tensor(bb, (OC,))
        st = self.d.ops.layernorm_matmul_forward(&self.d, res.ptr if res is not None else NULL, out.ptr,
                                                 pre.ptr if pre is not None else NULL, x.ptr,
                                                 x2.ptr if x2 is not None else NULL, &tlw, &tlb, &tw,
                                                 &tb if bb is not None else NULL, N, C, OC)
        if st == LLMC_ERR_UNSUPPORTED:
            return None
        self._ok(st)
        return (self._get(out, (N, OC)), self._get(pre, (N, OC)) if pre is not None else None,
                self._get(res, (N, C)) if res is not None else None)

    cdef llmc_tensor _qtensor(self, _Buf qb, _Buf sb, shape, int group, name=b"w"):
        """An int8 tensor (quant.c's scheme) whose values qb and fp32 scales sb hold."""
        cdef llmc_tensor t = self._tensor(qb, shape, name)
        t.dtype = LLMC_I8
        t.scales = sb.ptr
        cols = shape[len(shape) - 1]  # (the module is compiled with wraparound off: no [-1])
        t.group_size = group if 0 < group < cols else cols
        return t

    cdef tuple _put_quantized(self, q, scales):
        cdef cnp.ndarray[cnp.int8_t, ndim=1] qa = np.ascontiguousarray(q, dtype=np.int8).reshape(-1)
        cdef _Buf qb = self._alloc(qa.shape[0])
        self._ok(self.d.ops.copy_h2d(&self.d, qb.ptr, <void *>qa.data, qa.shape[0]))
        return qb, self._put(scales, False)

    def matmul_forward_int8(self, inp, q, scales, int group=0, bias=None, gelu=False):
        """matmul_forward with int8 weights q (OC, C) and fp32 scales (OC, ceil(C / group)):
        out = inp @ (q * scales).T + bias; with gelu=True returns (gelu(pre), pre)."""
        N, C = inp.shape
        OC = q.shape[0]
        self._shape(q, (OC, C), "q")
        g = group if 0 < group < C else C
        self._shape(scales, (OC, (C + g - 1) // g), "scales")
        if bias is not None:
            self._shape(bias, (OC,), "bias")
        out = self._poisoned((N, OC))
        cdef _Buf pre = self._poisoned((N, OC)) if gelu else None
        x = self._put(inp)
        qb, sb = self._put_quantized(q, scales)
        cdef _Buf bb = self._put(bias) if bias is not None else None
        cdef llmc_tensor tw = self._qtensor(qb, sb, (OC, C), group)
        cdef llmc_tensor tb
        if bb is not None:
            tb = self._tensor(bb, (OC,))
        self._ok(self.d.ops.matmul_forward(&self.d, out.ptr, pre.ptr if pre is not None else NULL, x.ptr, &tw,
                                           &tb if bb is not None else NULL, N, C, OC))
        if gelu:
            return self._get(out, (N, OC)), self._get(pre, (N, OC))
        return self._get(out, (N, OC))

    def encoder_forward_int8(self, tokens, q, scales, wpe, int group=0, pos=None):
        """encoder_forward (pos None) or encoder_forward_at (pos: one position per token) with an int8 wte."""
        Vp, C = q.shape
        tokens = self._ids(tokens, 0, Vp, "tokens")
        g = group if 0 < group < C else C
        self._shape(scales, (Vp, (C + g - 1) // g), "scales")
        if tokens.ndim != 2 or np.ndim(wpe) != 2 or np.shape(wpe)[1] != C:
            raise LlmcError(f"encoder_forward_int8: tokens {tokens.shape}, q {q.shape}, wpe {np.shape(wpe)} do not fit")
        B, T = tokens.shape
        if pos is None and np.shape(wpe)[0] < T:
            raise LlmcError("encoder_forward_int8: wpe has fewer rows than T")
        out = self._poisoned((B, T, C))
        tk, pe = self._put_int(tokens), self._put(wpe)
        qb, sb = self._put_quantized(q, scales)
        cdef llmc_tensor twe = self._qtensor(qb, sb, (Vp, C), group, b"wte"), tpe = self._tensor(pe, wpe.shape)
        cdef _Buf pb
        if pos is None:
            self._ok(self.d.ops.encoder_forward(&self.d, out.ptr, <int *>tk.ptr, &twe, &tpe, B, T, C))
        else:
            pb = self._put_int(self._ids(pos, 0, np.shape(wpe)[0], "pos", (B, T)))
            self._ok(self.d.ops.encoder_forward_at(&self.d, out.ptr, <int *>tk.ptr, <int *>pb.ptr, &twe, &tpe,
                                                   B * T, C))
        return self._get(out, (B, T, C))

    def matmul_backward(self, dw, dbias, dout, inp, w, pre_gelu=None, want_dinp=True, fp8_site=None):
        """Returns (dinp or None, dw + dout.T @ inp, dbias + colsum(dout) or None). fp8_site: as in
        matmul_forward (None when not taken)."""
        N, C = inp.shape
        OC = w.shape[0]
        for a, shape, what in ((w, (OC, C), "w"), (dw, (OC, C), "dw"), (dout, (N, OC), "dout")):
            self._shape(a, shape, what)
        if dbias is not None:
            self._shape(dbias, (OC,), "dbias")
        if pre_gelu is not None:
            self._shape(pre_gelu, (N, C), "pre_gelu")
        cdef _Buf gi = self._poisoned((N, C)) if want_dinp else None
        gw = self._put(dw)
        cdef _Buf gb = self._put(dbias) if dbias is not None else None
        cdef _Buf pg = self._put(pre_gelu) if pre_gelu is not None else None
        do, x, wb = self._put(dout), self._put(inp), self._put(w)
        cdef llmc_tensor tgw = self._tensor(gw, (OC, C)), tw = self._tensor(wb, (OC, C))
        cdef llmc_tensor tgb
        if gb is not None:
            tgb = self._tensor(gb, (OC,))
        if fp8_site is not None:
            if self.d.ops.matmul_backward_fp8 == NULL:
                return None
            st = self.d.ops.matmul_backward_fp8(&self.d, int(fp8_site), gi.ptr if gi is not None else NULL, &tgw,
                                                &tgb if gb is not None else NULL, do.ptr, x.ptr, &tw,
                                                pg.ptr if pg is not None else NULL, N, C, OC)
            if st == LLMC_ERR_UNSUPPORTED:
                return None
            self._ok(st)
        else:
            self._ok(self.d.ops.matmul_backward(&self.d, gi.ptr if gi is not None else NULL, &tgw,
                                                &tgb if gb is not None else NULL, do.ptr, x.ptr, &tw,
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
        if n_head < 1 or C3 % 3 or C % n_head:
            raise LlmcError(f"attention_forward: qkv {qkv.shape} does not split into 3 x {n_head} heads")
        out, lse, q = self._poisoned((B, T, C)), self._poisoned((B, n_head, T), False), self._put(qkv)
        self._ok(self.d.ops.attention_forward(&self.d, out.ptr, <float *>lse.ptr, q.ptr, B, T, n_head, C // n_head))
        return self._get(out, (B, T, C)), self._get(lse, (B, n_head, T), False)

    def attention_backward(self, dout, qkv, out, lse, int n_head):
        B, T, C3 = qkv.shape
        C = C3 // 3
        if n_head < 1 or C3 % 3 or C % n_head:
            raise LlmcError(f"attention_backward: qkv {qkv.shape} does not split into 3 x {n_head} heads")
        for a, shape, what in ((dout, (B, T, C), "dout"), (out, (B, T, C), "out"), (lse, (B, n_head, T), "lse")):
            self._shape(a, shape, what)
        dq = self._poisoned((B, T, C3))
        do, q, o, l = self._put(dout), self._put(qkv), self._put(out), self._put(lse, False)
        self._ok(self.d.ops.attention_backward(&self.d, dq.ptr, do.ptr, q.ptr, o.ptr, <float *>l.ptr, B, T, n_head,
                                               C // n_head))
        return self._get(dq, (B, T, C3))

    def classifier_forward(self, logits, targets, int V, float dloss=0.0):
        """Returns (losses, logits-or-dlogits) for logits of shape (N, Vp)."""
        N, Vp = logits.shape
        if not 0 < V <= Vp:
            raise LlmcError(f"classifier_forward: V={V} must be in [1, {Vp}]")
        targets = self._ids(targets, -1, V, "targets", (N,))  # -1: ignored
        losses, lg, tg = self._poisoned(N, False), self._put(logits), self._put_int(targets)
        self._ok(self.d.ops.classifier_forward(&self.d, <float *>losses.ptr, lg.ptr, <int *>tg.ptr, N, V, Vp, dloss))
        return self._get(losses, (N,), False), self._get(lg, (N, Vp))

    # ---- optimizer
    def adamw_update(self, params, grads, m, v, float lr, float beta1, float beta2, int t, float eps,
                     float weight_decay, float grad_scale, uint32_t seed=0, master=None, size_t index_base=0):
        """Returns (params, m, v, master or None) after one update at step t (1-based); element i rounds
        with the bits of (seed, index_base + i)."""
        n = params.size
        for a, what in ((grads, "grads"), (m, "m"), (v, "v"), (master, "master")):
            if a is not None and np.size(a) != n:
                raise LlmcError(f"adamw_update: {what} has {np.size(a)} elements, params {n}")
        p, g, mb, vb = self._put(params), self._put(grads), self._put(m, False), self._put(v, False)
        cdef _Buf ms = self._put(master, False) if master is not None else None
        cdef _Buf sc = self._put(np.float32(grad_scale), False)
        b1c, b2c = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        self._ok(self.d.ops.adamw_update(&self.d, p.ptr, <float *>ms.ptr if ms is not None else NULL, g.ptr,
                                         <float *>mb.ptr, <float *>vb.ptr, n, lr, beta1, beta2, b1c, b2c, eps,
                                         weight_decay, <const float *>sc.ptr, seed, index_base))
        return (self._get(p, params.shape), self._get(mb, params.shape, False), self._get(vb, params.shape, False),
                self._get(ms, params.shape, False) if ms is not None else None)

    def sum_squares(self, x):
        cdef double out = 0
        xb = self._put(x)
        self._ok(self.d.ops.sum_squares(&self.d, &out, xb.ptr, np.size(x)))
        return out

    def grad_norm_scale(self, x, float grad_clip):
        """(norm, clip scale) of x, as the trainer's step computes them on the device; they come
        back through readback_begin/end."""
        cdef float got[2]
        xb, out = self._put(x), self._poisoned(2, False)
        self._ok(self.d.ops.grad_norm_scale(&self.d, <float *>out.ptr, xb.ptr, np.size(x), grad_clip))
        self._ok(self.d.ops.readback_begin(&self.d, out.ptr, 2 * sizeof(float)))
        self._ok(self.d.ops.readback_end(&self.d, got, 2 * sizeof(float)))
        return got[0], got[1]

    # ---- inference with a KV cache
    def encoder_forward_at(self, tokens, pos, wte, wpe):
        """out[i] = wte[tokens[i]] + wpe[pos[i]] for N rows, each at its own position."""
        tokens = self._ids(tokens, 0, np.shape(wte)[0], "tokens").reshape(-1)
        pos = self._ids(pos, 0, np.shape(wpe)[0], "pos").reshape(-1)
        if np.ndim(wte) != 2 or np.shape(wpe)[1:] != np.shape(wte)[1:]:
            raise LlmcError(f"encoder_forward_at: wte {np.shape(wte)} and wpe {np.shape(wpe)} do not fit")
        if pos.shape[0] != tokens.shape[0]:
            raise ValueError(f"encoder_forward_at: {tokens.shape[0]} tokens but {pos.shape[0]} positions")
        N = tokens.shape[0]
        C = wte.shape[1]
        out = self._poisoned((N, C))
        tk, ps, we, pe = self._put_int(tokens), self._put_int(pos), self._put(wte), self._put(wpe)
        cdef llmc_tensor twe = self._tensor(we, wte.shape), tpe = self._tensor(pe, wpe.shape)
        self._ok(self.d.ops.encoder_forward_at(&self.d, out.ptr, <int *>tk.ptr, <int *>ps.ptr, &twe, &tpe, N, C))
        return self._get(out, (N, C))

    def kv_append(self, kcache, vcache, qkv, slots, pos, int n_head):
        """Writes the k and v parts of qkv (B,T,3C) into the caches (S, NH, maxlen, HS) at
        [slots[b], :, pos[b] + t]; returns both caches after the op (they start as given)."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        HS = C // n_head
        S, NH, maxlen, HS2 = kcache.shape
        if NH != n_head or HS2 != HS or tuple(vcache.shape) != tuple(kcache.shape) or NH * HS * 3 != C3:
            raise ValueError(f"kv_append: caches {kcache.shape}/{vcache.shape} do not fit qkv {qkv.shape} "
                             f"with {n_head} heads")
        slots = self._ids(slots, 0, S, "slots").reshape(-1)
        pos = self._ids(pos, 0, maxlen - T + 1, "pos").reshape(-1)
        if slots.shape[0] != B or pos.shape[0] != B:
            raise ValueError(f"kv_append: {B} rows need {B} slots and positions")
        kc, vc, q = self._put(kcache), self._put(vcache), self._put(qkv)
        sl, ps = self._put_int(slots), self._put_int(pos)
        self._ok(self.d.ops.kv_append(&self.d, kc.ptr, vc.ptr, q.ptr, <int *>sl.ptr, <int *>ps.ptr, B, T, n_head,
                                      HS, maxlen))
        return self._get(kc, kcache.shape), self._get(vc, vcache.shape)

    def attention_decode(self, qkv, kcache, vcache, slots, lens, int n_head):
        """One query per row of qkv (N,3C) against the first lens[i] keys of cache slot slots[i]; out (N,C)."""
        N, C3 = qkv.shape
        C = C3 // 3
        HS = C // n_head
        S, NH, maxlen, HS2 = kcache.shape
        if NH != n_head or HS2 != HS or tuple(vcache.shape) != tuple(kcache.shape) or NH * HS * 3 != C3:
            raise ValueError(f"attention_decode: caches {kcache.shape}/{vcache.shape} do not fit qkv {qkv.shape} "
                             f"with {n_head} heads")
        slots = self._ids(slots, 0, S, "slots").reshape(-1)
        lens = self._ids(lens, 1, maxlen + 1, "lens").reshape(-1)
        if slots.shape[0] != N or lens.shape[0] != N:
            raise ValueError(f"attention_decode: {N} rows need {N} slots and lengths")
        out = self._poisoned((N, C))
        q, kc, vc = self._put(qkv), self._put(kcache), self._put(vcache)
        sl, ln = self._put_int(slots), self._put_int(lens)
        self._ok(self.d.ops.attention_decode(&self.d, out.ptr, q.ptr, kc.ptr, vc.ptr, <int *>sl.ptr, <int *>ln.ptr,
                                             N, n_head, HS, maxlen))
        return self._get(out, (N, C))

    def argmax_rows(self, logits, int V):
        """int32 (N,): the index of the largest of logits[i, :V] (logits of shape (N, Vp)), -1 for a bad row."""
        N, Vp = logits.shape
        if not 0 < V <= Vp:
            raise LlmcError(f"argmax_rows: V={V} must be in [1, {Vp}]")
        lg = self._put(logits)
        ob = self._put_int(np.full(N, -2, np.int32))  # poison: neither an index nor -1
        self._ok(self.d.ops.argmax_rows(&self.d, <int *>ob.ptr, lg.ptr, N, V, Vp))
        cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(N, np.int32)
        self._ok(self.d.ops.copy_d2h(&self.d, <void *>out.data, ob.ptr, N * 4))
        return out

    def feed_tokens(self, picks):
        """int32 (n,): picks as the next step's tokens (run_ahead): each pick, 0 where it is negative."""
        src = np.ascontiguousarray(picks, dtype=np.int32).reshape(-1)
        cdef int n = src.shape[0]
        sb = self._put_int(src)
        ob = self._put_int(np.full(max(n, 1), -7, np.int32))  # poison: no token and no placeholder
        self._ok(self.d.ops.feed_tokens(&self.d, <int *>ob.ptr, <const int *>sb.ptr, n))
        cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(max(n, 1), np.int32)
        self._ok(self.d.ops.copy_d2h(&self.d, <void *>out.data, ob.ptr, max(n, 1) * 4))
        return out[:n]

    def sample_rows(self, logits, int V, draws, float temperature=1.0, int top_k=0, float top_p=1.0):
        """int32 (N,): the token llmc_sample_token_at picks from logits[i, :V] for draw u = draws[i]
        (logits of shape (N, Vp)); -1 for a bad row, -2 for a row the backend leaves to the host."""
        N, Vp = logits.shape
        if not 0 < V <= Vp:
            raise LlmcError(f"sample_rows: V={V} must be in [1, {Vp}]")
        if self.d.ops.sample_rows == NULL:
            raise LlmcError(f"sample_rows: the {self.name} backend has no device sampler")
        u = np.ascontiguousarray(draws, dtype=np.float32).reshape(-1)
        if u.shape[0] != N or not np.all((u >= 0) & (u < 1)):
            raise LlmcError(f"sample_rows: {N} rows need {N} draws in [0, 1)")
        cdef llmc_sampling s
        llmc_sampling_default(&s)
        s.temperature, s.top_k, s.top_p = temperature, top_k, top_p
        lg = self._put(logits)
        ub = self._put(u, False)
        ob = self._put_int(np.full(N, -3, np.int32))  # poison: neither a token, -1 nor -2
        self._ok(self.d.ops.sample_rows(&self.d, <int *>ob.ptr, lg.ptr, N, V, Vp, &s, <float *>ub.ptr))
        cdef cnp.ndarray[cnp.int32_t, ndim=1] out = np.empty(N, np.int32)
        self._ok(self.d.ops.copy_d2h(&self.d, <void *>out.data, ob.ptr, N * 4))
        return out

    # ---- compression (training side)
    def classifier_distill_forward(self, logits, teacher, targets, int V, float dloss=0.0, float alpha=0.5,
                                   float tau=1.0):
        """Returns (losses, logits-or-dlogits, teacher after the op) for logits and teacher logits of
        shape (N, Vp)."""
        N, Vp = logits.shape
        if not 0 < V <= Vp:
            raise LlmcError(f"classifier_distill_forward: V={V} must be in [1, {Vp}]")
        self._shape(teacher, (N, Vp), "teacher")
        targets = self._ids(targets, -1, V, "targets", (N,))  # -1: ignored
        losses, lg, tl, tg = self._poisoned(N, False), self._put(logits), self._put(teacher), self._put_int(targets)
        self._ok(self.d.ops.classifier_distill_forward(&self.d, <float *>losses.ptr, lg.ptr, tl.ptr, <int *>tg.ptr,
                                                       N, V, Vp, dloss, alpha, tau))
        return self._get(losses, (N,), False), self._get(lg, (N, Vp)), self._get(tl, (N, Vp))

    def zero_mask_build(self, w, mask, size_t bit0=0, bint master=False):
        """The uint32 words of mask after marking where w is 0 at bits [bit0, bit0 + w.size); w goes up
        as fp32 (master weights) when master, else in the act dtype (weights)."""
        cdef cnp.ndarray[cnp.uint32_t, ndim=1] words = np.ascontiguousarray(mask, dtype=np.uint32).reshape(-1).copy()
        cdef size_t n = np.size(w)
        if bit0 + n > 32 * <size_t>words.shape[0]:
            raise LlmcError(f"zero_mask_build: bits [{bit0}, {bit0 + n}) do not fit {words.shape[0]} words")
        mb = self._alloc(words.shape[0] * 4)
        self._ok(self.d.ops.copy_h2d(&self.d, mb.ptr, <void *>words.data, words.shape[0] * 4))
        wb = self._put(w, not master)
        self._ok(self.d.ops.zero_mask_build(&self.d, <uint32_t *>mb.ptr, bit0, wb.ptr,
                                            LLMC_F32 if master else self.d.ops.act_dtype, n))
        self._ok(self.d.ops.copy_d2h(&self.d, <void *>words.data, mb.ptr, words.shape[0] * 4))
        return words

    def zero_mask_apply(self, mask, size_t bit0, params, m, v, master=None):
        """Returns (params, m, v, master or None) after zeroing the elements whose bit is set."""
        cdef cnp.ndarray[cnp.uint32_t, ndim=1] words = np.ascontiguousarray(mask, dtype=np.uint32).reshape(-1)
        cdef size_t n = np.size(params)
        for a, what in ((m, "m"), (v, "v"), (master, "master")):
            if a is not None and np.size(a) != n:
                raise LlmcError(f"zero_mask_apply: {what} has {np.size(a)} elements, params {n}")
        if bit0 + n > 32 * <size_t>words.shape[0]:
            raise LlmcError(f"zero_mask_apply: bits [{bit0}, {bit0 + n}) do not fit {words.shape[0]} words")
        mb = self._alloc(words.shape[0] * 4)
        self._ok(self.d.ops.copy_h2d(&self.d, mb.ptr, <void *>words.data, words.shape[0] * 4))
        p, mm, vv = self._put(params), self._put(m, False), self._put(v, False)
        cdef _Buf ms = self._put(master, False) if master is not None else None
        self._ok(self.d.ops.zero_mask_apply(&self.d, <const uint32_t *>mb.ptr, bit0, p.ptr,
                                            <float *>ms.ptr if ms is not None else NULL, <float *>mm.ptr,
                                            <float *>vv.ptr, n))
        shape = np.shape(params)
        return (self._get(p, shape), self._get(mm, shape, False), self._get(vv, shape, False),
                self._get(ms, shape, False) if ms is not None else None)

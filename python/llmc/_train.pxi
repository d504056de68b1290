# _train.pxi — the trainer (llmc_train), checkpoints and the C training loop.
# Included by _core.pyx.

cdef object _str_or_none(const char *p):
    return None if p == NULL else p.decode("utf-8", "replace")


cdef dict _loop_dict(const llmc_loop_options *o):
    """The options as Python sees them: llmc_loop_options' fields by name (expect_model aside)."""
    return dict(train_data=_str_or_none(o.train_data), val_data=_str_or_none(o.val_data),
                out_dir=_str_or_none(o.out_dir), schedule=_str_or_none(o.schedule), batch_size=o.batch_size,
                seq_len=o.seq_len, total_batch=o.total_batch, max_steps=o.max_steps, lr=o.lr,
                final_lr_frac=o.final_lr_frac, weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup=o.warmup,
                val_every=o.val_every, val_batches=o.val_batches, sample_every=o.sample_every, gen_len=o.gen_len,
                sample_eot=o.sample_eot, ckpt_every=o.ckpt_every, resume=o.resume, shuffle=o.shuffle, seed=o.seed,
                peak_tflops=o.peak_tflops, overfit_batch=o.overfit_batch, ckpt_keep=o.ckpt_keep,
                ckpt_major=o.ckpt_major, skip_loss_z=o.skip_loss_z, skip_norm_z=o.skip_norm_z,
                log_device_every=o.log_device_every, stop_after=o.stop_after,
                eval_file=_str_or_none(o.eval_file), eval_limit=o.eval_limit, teacher=_str_or_none(o.teacher),
                distill_alpha=o.distill_alpha, distill_temperature=o.distill_temperature)


cdef const char *_str_field(dict keep, str name, value):
    """A char * for value that lives as long as keep does (NULL for None)."""
    if value is None:
        return NULL
    keep[name] = str(value).encode()
    return <const char *>keep[name]


cdef void _set_loop(llmc_loop_options *o, dict d, dict keep):
    o.train_data = _str_field(keep, "train_data", d["train_data"])
    o.val_data = _str_field(keep, "val_data", d["val_data"])
    o.out_dir = _str_field(keep, "out_dir", d["out_dir"])
    o.schedule = _str_field(keep, "schedule", d["schedule"])
    o.batch_size, o.seq_len, o.total_batch, o.max_steps = d["batch_size"], d["seq_len"], d["total_batch"], d["max_steps"]
    o.lr, o.final_lr_frac, o.weight_decay, o.grad_clip = d["lr"], d["final_lr_frac"], d["weight_decay"], d["grad_clip"]
    o.warmup, o.val_every, o.val_batches = d["warmup"], d["val_every"], d["val_batches"]
    o.sample_every, o.gen_len, o.sample_eot = d["sample_every"], d["gen_len"], d["sample_eot"]
    o.ckpt_every, o.resume, o.shuffle, o.seed, o.peak_tflops = (d["ckpt_every"], d["resume"], d["shuffle"], d["seed"],
                                                                d["peak_tflops"])
    o.overfit_batch, o.ckpt_keep, o.ckpt_major = d["overfit_batch"], d["ckpt_keep"], d["ckpt_major"]
    o.skip_loss_z, o.skip_norm_z = d["skip_loss_z"], d["skip_norm_z"]
    o.log_device_every, o.stop_after = d["log_device_every"], d["stop_after"]
    o.eval_file = _str_field(keep, "eval_file", d["eval_file"])
    o.eval_limit = d["eval_limit"]
    o.teacher = _str_field(keep, "teacher", d["teacher"])
    o.distill_alpha, o.distill_temperature = d["distill_alpha"], d["distill_temperature"]
    o.expect_model = NULL


def loop_defaults(str backend="cpu"):
    """The training loop's defaults (llmc_loop_options_default): the same ones the CLIs use."""
    cdef llmc_loop_options o
    llmc_loop_options_default(&o, backend.encode())
    return _loop_dict(&o)


cdef dict _event_dict(const llmc_event *e):
    kind = e.kind
    if kind == LLMC_EVENT_STEP:
        d = dict(event="step", step=e.step, loss=e.loss, lr=e.lr, grad_norm=e.grad_norm, ms=e.ms,
                 tok_s=e.tok_s, mfu=e.mfu, elapsed_s=e.elapsed_s, eta_s=e.eta_s)
        if e.skipped:
            d["skipped"] = True
        return d
    if kind == LLMC_EVENT_VAL:
        return dict(event="val", step=e.step, val_loss=e.val_loss, batches=e.ntokens)
    if kind == LLMC_EVENT_EVAL:
        return dict(event="eval", step=e.step, acc=e.loss, acc_norm=e.val_loss, items=e.ntokens)
    if kind == LLMC_EVENT_SAMPLE:
        return dict(event="sample", step=e.step, tokens=[e.tokens[i] for i in range(e.ntokens)])
    names = {LLMC_EVENT_START: "start", LLMC_EVENT_CHECKPOINT: "checkpoint", LLMC_EVENT_NOTE: "note"}
    return dict(event=names.get(kind, "note"), step=e.step, text=e.text.decode("utf-8", "replace"))


cdef int _on_event(const llmc_event *e, void *user) noexcept with gil:
    """Calls the Python callback; an exception (Ctrl-C included) stops the loop and is re-raised."""
    run = <object>user
    try:
        PyErr_CheckSignals()
        d = _event_dict(e)
        d["max_steps"] = e.max_steps
        return 1 if run.callback(d) else 0
    except BaseException as exc:
        run.error = exc
        return 1


class _Run:
    def __init__(self, callback):
        self.callback = callback
        self.error = None


# no_gc_clear: the cycle collector must not drop self.model before __dealloc__ frees the trainer,
# which still refers to the model's C object
@cython.no_gc_clear
cdef class Trainer:
    """Gradients, activations, AdamW state and master weights over a Model (llmc_train)."""
    cdef llmc_train *t
    cdef readonly Model model  # keeps the model alive as long as the trainer
    cdef Model _teacher        # and the teacher, while one is set

    def __cinit__(self, Model model, int master_weights=1, int recompute=0, size_t shard_offset=0,
                  size_t shard_count=0, int keep_zeros=0, int zero_stage=0, int exact_accum=0, int overlap=1,
                  int fp8=0):
        """shard_offset/shard_count: the parameters AdamW state covers (count 0: all), set by hand.
        keep_zeros: matmul weights that are exactly 0 stay 0 through steps (fine-tuning a pruned model).
        zero_stage: 1 splits the optimizer state over the ranks of open_comm. exact_accum: micro-steps
        are summed as ranks are (CPU), so one process reproduces N bit for bit. overlap: each layer's
        gradient sums go to the other ranks as the backward finishes it. fp8: the layers' matmuls on fp8
        tensor cores (CUDA, compute capability 8.9+)."""
        self.t = llmc_train_new()
        if self.t == NULL:
            raise MemoryError()
        self.model = model
        cdef llmc_train_options o
        llmc_train_options_default(&o)
        o.master_weights = master_weights
        o.recompute = recompute
        o.shard_offset = shard_offset
        o.shard_count = shard_count
        o.keep_zeros = keep_zeros
        o.zero_stage = zero_stage
        o.exact_accum = exact_accum
        o.overlap = overlap
        o.fp8 = fp8
        self._ok(llmc_train_attach(self.t, model.m, &o))

    def open_comm(self, int world=0, int rank=0, int local_rank=0, init=None, addr=None, int port=0,
                  file=None, double timeout=300.0, int engine_at_one=0):
        """llmc_train_open_comm: joins a data-parallel run. world 0 reads the launcher's environment
        (mpirun, torchrun, slurm); a world of one costs nothing."""
        cdef llmc_comm_options o
        llmc_comm_options_default(&o)
        o.world, o.rank, o.local_rank, o.port, o.timeout_s = world, rank, local_rank, port, timeout
        o.engine_at_one = engine_at_one
        cdef bytes b_init = None if init is None else str(init).encode()
        cdef bytes b_addr = None if addr is None else str(addr).encode()
        cdef bytes b_file = None if file is None else str(file).encode()
        if b_init is not None:
            o.init = b_init
        if b_addr is not None:
            o.addr = b_addr
        if b_file is not None:
            o.file = b_file
        with nogil:
            st = llmc_train_open_comm(self.t, &o)
        self._ok(st)
        import atexit
        atexit.register(comm_finalize)  # MPI, if llmc started it, ends at exit (once: it checks)

    @property
    def rank(self):
        return llmc_train_rank(self.t)

    @property
    def world(self):
        return llmc_train_world(self.t)

    def __dealloc__(self):
        if self.t != NULL:
            llmc_train_free(self.t)  # before the models: Cython clears self.model and the teacher afterwards

    cdef int _ok(self, llmc_status st) except -1:
        return _check(st, llmc_train_error(self.t))

    @property
    def keep_zeros(self):
        """Whether exactly-zero matmul weights are kept at zero through the steps to come."""
        return bool(llmc_train_keep_zeros(self.t))

    @keep_zeros.setter
    def keep_zeros(self, bint on):
        self._ok(llmc_train_set_keep_zeros(self.t, on))

    @property
    def teacher(self):
        """The teacher Model set with set_teacher, or None."""
        return self._teacher

    def set_teacher(self, Model teacher=None, float alpha=0.5, float temperature=2.0):
        """Distil from teacher (same device, same vocabulary): training minimises alpha * CE +
        (1 - alpha) * temperature^2 * KL(teacher || student). None: back to plain CE."""
        self._ok(llmc_train_set_teacher(self.t, teacher.m if teacher is not None else NULL, alpha, temperature))
        self._teacher = teacher

    @property
    def step_count(self):
        return llmc_train_step_count(self.t)

    @property
    def loss(self):
        return llmc_train_loss(self.t)

    @property
    def memory(self):
        """Bytes of device memory the training state takes (activations, gradients, optimizer)."""
        return llmc_train_memory(self.t)

    @property
    def optimizer_memory(self):
        """Bytes of it that are AdamW's moments and master weights (this rank's shard with ZeRO-1)."""
        return llmc_train_optimizer_memory(self.t)

    # ---- compute
    def forward(self, inputs, targets=None):
        """Runs the model, keeping what a backward needs; returns the mean loss (NaN without targets)."""
        x, y = _tokens(inputs, targets)
        cdef cnp.ndarray[cnp.int32_t, ndim=2] xi = x
        cdef cnp.ndarray[cnp.int32_t, ndim=2] yi
        cdef int *yp = NULL
        if y is not None:
            yi = y
            yp = <int *>yi.data
        cdef int B = x.shape[0], T = x.shape[1]
        with nogil:
            st = llmc_train_forward(self.t, <int *>xi.data, yp, B, T)
        self._ok(st)
        return llmc_train_loss(self.t)

    def logits(self, int B, int T):
        """(B, T, V) float32 logits of the last forward."""
        V = llmc_model_config(self.model.m).vocab_size
        cdef cnp.ndarray[cnp.float32_t, ndim=3] out = np.empty((B, T, V), np.float32)
        with nogil:
            st = llmc_train_get_logits(self.t, <float *>out.data)
        self._ok(st)
        return out

    def logits_at(self, int b, int t):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_config(self.model.m).vocab_size, np.float32)
        self._ok(llmc_train_get_logits_at(self.t, b, t, <float *>out.data))
        return out

    def losses(self, int B, int T):
        """(B, T) float32 per-position losses of the last forward with targets."""
        cdef cnp.ndarray[cnp.float32_t, ndim=2] out = np.empty((B, T), np.float32)
        self._ok(llmc_train_get_losses(self.t, <float *>out.data))
        return out

    def zero_grad(self):
        self._ok(llmc_train_zero_grad(self.t))

    def backward(self, float loss_scale=1.0):
        with nogil:
            st = llmc_train_backward(self.t, loss_scale)
        self._ok(st)

    def forward_backward(self, inputs, targets, float loss_scale=1.0):
        x, y = _tokens(inputs, targets)
        if y is None:
            raise LlmcError("training needs targets")
        cdef cnp.ndarray[cnp.int32_t, ndim=2] xi = x
        cdef cnp.ndarray[cnp.int32_t, ndim=2] yi = y
        cdef int B = x.shape[0], T = x.shape[1]
        cdef float loss = 0
        with nogil:
            st = llmc_train_forward_backward(self.t, <int *>xi.data, <int *>yi.data, B, T, loss_scale, &loss)
        self._ok(st)
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
            st = llmc_train_step(self.t, &a, &norm)
        self._ok(st)
        return norm

    # ---- parameters and gradients (the master weights where they are kept)
    def get_params(self):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_num_params(self.model.m), np.float32)
        self._ok(llmc_train_get_params(self.t, <float *>out.data))
        return out

    def set_params(self, values):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] a = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        n = llmc_model_num_params(self.model.m)
        if a.shape[0] != n:
            raise LlmcError(f"set_params needs {n} values, got {a.shape[0]}")
        self._ok(llmc_train_set_params(self.t, <float *>a.data))

    def get_grads(self):
        cdef cnp.ndarray[cnp.float32_t, ndim=1] out = np.empty(llmc_model_num_params(self.model.m), np.float32)
        self._ok(llmc_train_get_grads(self.t, <float *>out.data))
        return out

    def grads_view(self):
        cdef float *p = llmc_train_grads_host(self.t)
        return None if p == NULL else _host_view(p, llmc_model_num_params(self.model.m), self)

    def save_model(self, path, int version=0):
        p = str(path).encode()
        cdef const char *cp = p
        with nogil:
            st = llmc_train_save_model(self.t, cp, version)
        self._ok(st)

    # ---- checkpoints
    def checkpoint_save(self, directory, int step, uint64_t rng=0, data_position=(0, 0, 0)):
        cdef llmc_checkpoint_info info
        memset(&info, 0, sizeof(info))
        info.step = step
        info.rng = rng
        info.data.epoch = data_position[0]
        info.data.shard = data_position[1]
        info.data.sample = data_position[2]
        d = str(directory).encode()
        cdef const char *dp = d
        with nogil:
            st = llmc_checkpoint_save(self.t, dp, &info)
        self._ok(st)

    def checkpoint_load(self, directory, int step=-1):
        """Loads a checkpoint into this trainer and its model; returns step, rng and data position."""
        cdef llmc_checkpoint_info info
        memset(&info, 0, sizeof(info))
        d = str(directory).encode()
        cdef const char *dp = d
        with nogil:
            st = llmc_checkpoint_load(self.t, dp, step, &info)
        self._ok(st)
        return dict(step=info.step, rng=info.rng, data_position=(info.data.epoch, info.data.shard, info.data.sample))

    # ---- the training loop
    def run(self, dict options, callback=None):
        """llmc_train_run with options (keys of loop_defaults(); missing keys take the defaults).
        callback(event dict) may return True to stop after the current step's periodic work. Exceptions
        in it stop the loop the same way and propagate."""
        cdef llmc_loop_options o
        llmc_loop_options_default(&o, llmc_model_backend(self.model.m))
        d = _loop_dict(&o)
        unknown = set(options) - set(d)
        if unknown:
            raise LlmcError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        d.update(options)
        keep = {}
        _set_loop(&o, d, keep)
        run = _Run(callback if callback is not None else (lambda e: None))
        with nogil:
            st = llmc_train_run(self.t, &o, _on_event, <void *>run)
        if run.error is not None:
            raise run.error
        if st != LLMC_ERR_STOPPED:  # a stop the callback asked for is not an error
            self._ok(st)


def comm_env():
    """(world, rank, local_rank) that mpirun, torchrun or slurm set for this process ((1, 0, 0) alone)."""
    cdef llmc_comm_options o
    cdef char err[LLMC_ERR_LEN]
    llmc_comm_options_default(&o)
    _check(llmc_comm_options_from_env(&o, err, LLMC_ERR_LEN), err)
    return o.world, o.rank, o.local_rank


def comm_finalize():
    """Ends MPI for the process if llmc started it (Trainer.open_comm registers it with atexit)."""
    llmc_comm_finalize()



def optimizer_bytes(size_t params, int world, int zero_stage, int master_weights=1):
    """Optimizer bytes per rank: what a trainer allocates for AdamW (and master weights)."""
    return llmc_optimizer_bytes(params, world, zero_stage, master_weights)


def checkpoint_latest(directory):
    """The latest step with a complete checkpoint in directory, or -1."""
    cdef int step = -1
    llmc_checkpoint_latest(str(directory).encode(), &step)
    return step

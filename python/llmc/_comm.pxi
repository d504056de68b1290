# _comm.pxi — the communicator's meeting places (src/comm_bootstrap.h), for the tests.

cdef extern from "comm_bootstrap.h":
    llmc_status llmc_bootstrap_tcp(const char *addr, int port, int rank, int world, void *blob, size_t bytes,
                                   double timeout_s, char *err, size_t errlen) nogil
    llmc_status llmc_bootstrap_file(const char *path, int rank, int world, void *blob, size_t bytes,
                                    double timeout_s, char *err, size_t errlen) nogil


def bootstrap_blob(method, int rank, int world, bytes blob, addr="127.0.0.1", int port=0, path="",
                   double timeout=10.0):
    """Rank 0's blob on every rank, as the NCCL engine shares its id: method "tcp" (addr:port) or
    "file" (path). Rank 0 passes its blob and gets it back; the others pass len(blob) bytes of
    anything and get rank 0's. Raises LlmcError with the C message on failure or timeout."""
    if method not in ("tcp", "file"):
        raise LlmcError(f"unknown bootstrap method {method!r}: use tcp or file")
    cdef bytearray buf = bytearray(blob)
    cdef size_t n = len(buf)
    cdef bytes where = (addr if method == "tcp" else path).encode()
    cdef const char *w = where
    cdef char *p = NULL
    cdef char err[LLMC_ERR_LEN]
    cdef llmc_status st
    cdef bint tcp = method == "tcp"
    err[0] = 0
    if n:
        p = buf
    with nogil:
        if tcp:
            st = llmc_bootstrap_tcp(w, port, rank, world, p, n, timeout, err, LLMC_ERR_LEN)
        else:
            st = llmc_bootstrap_file(w, rank, world, p, n, timeout, err, LLMC_ERR_LEN)
    if st != LLMC_OK:
        raise LlmcError(err.decode("utf-8", "replace"))
    return bytes(buf)

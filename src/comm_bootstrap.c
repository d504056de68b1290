/* comm_bootstrap.c — rank 0's blob to every rank over TCP or a shared file (comm_bootstrap.h).
 *
 * Every message starts with the same header: magic, kind, world, rank, bytes. A peer says who it
 * is (HELLO / ACK) and rank 0 answers with the blob (BLOB / RECORD) or a refusal naming its own
 * world and size, so both sides of a mismatch can say what the other expected. */
#define _POSIX_C_SOURCE 200809L
#include "comm_bootstrap.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "file_io.h"

#define BOOT_MAGIC 0x636d6c6cu /* "llmc" in memory on little-endian hosts */
#define HDR_BYTES 24
#define MAX_PENDING 64         /* connections rank 0 reads a HELLO from at once */
#define FILE_POLL_S 0.01
#define CONNECT_RETRY_S 0.1
#define CONNECT_TRY_S 5.0      /* one connect() before the next address is tried */

enum { BOOT_HELLO = 1, BOOT_BLOB = 2, BOOT_REFUSE = 3, BOOT_RECORD = 4, BOOT_ACK = 5 };
enum { REFUSE_SIZES = 1, REFUSE_TWICE = 2 }; /* a refusal's reason travels in its rank field */
enum { IO_OK = 0, IO_TIMEOUT, IO_CLOSED, IO_ERROR };

typedef struct boot_hdr {
    uint32_t magic, kind, world, rank;
    uint64_t bytes;
} boot_hdr;

/* ---- shared: header, time, argument checks ---- */

static void hdr_pack(unsigned char *out, uint32_t kind, int world, int rank, size_t bytes) {
    const boot_hdr h = {BOOT_MAGIC, kind, (uint32_t)world, (uint32_t)rank, (uint64_t)bytes};
    memcpy(out, &h.magic, 4);
    memcpy(out + 4, &h.kind, 4);
    memcpy(out + 8, &h.world, 4);
    memcpy(out + 12, &h.rank, 4);
    memcpy(out + 16, &h.bytes, 8);
}

/* 1 when in starts with llmc's magic. */
static int hdr_unpack(const unsigned char *in, boot_hdr *h) {
    memcpy(&h->magic, in, 4);
    memcpy(&h->kind, in + 4, 4);
    memcpy(&h->world, in + 8, 4);
    memcpy(&h->rank, in + 12, 4);
    memcpy(&h->bytes, in + 16, 8);
    return h->magic == BOOT_MAGIC;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds to deadline for poll(): 0 once it has passed. */
static int ms_left(double deadline) {
    const double left = (deadline - now_s()) * 1000.0;
    if (left <= 0) return 0;
    return left >= INT_MAX ? INT_MAX : (int)ceil(left);
}

static void sleep_until_or(double seconds, double deadline) {
    const double left = deadline - now_s();
    if (left < seconds) seconds = left > 0 ? left : 0;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static llmc_status check_args(const char *how, int rank, int world, const void *blob, size_t bytes,
                              double timeout_s, char *err, size_t errlen) {
    if (world < 1 || rank < 0 || rank >= world) {
        snprintf(err, errlen, "rank %d: not a rank of a world of %d (%s bootstrap)", rank, world, how);
        return LLMC_ERR_INVALID_ARG;
    }
    if (!blob || bytes == 0 || bytes > ((size_t)1 << 30)) {
        snprintf(err, errlen, "rank %d: %s bootstrap needs a blob of 1 byte to 1 GiB (got %zu bytes%s)", rank,
                 how, bytes, blob ? "" : ", no buffer");
        return LLMC_ERR_INVALID_ARG;
    }
    if (!(timeout_s > 0) || !isfinite(timeout_s)) {
        snprintf(err, errlen, "rank %d: %s bootstrap timeout must be > 0 seconds (got %g)", rank, how, timeout_s);
        return LLMC_ERR_INVALID_ARG;
    }
    return LLMC_OK;
}

/* ---- TCP: non-blocking sockets, every wait bounded by poll() ---- */

/* 1: fd is ready (or has an error the next call reports), 0: deadline passed, -1: poll failed. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        struct pollfd p = {fd, events, 0};
        const int r = poll(&p, 1, ms_left(deadline));
        if (r < 0 && errno == EINTR) continue;
        return r > 0 ? 1 : r;
    }
}

static int set_nonblocking(int fd) {
    const int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int send_all(int fd, const void *p, size_t n, double deadline) {
    const unsigned char *c = (const unsigned char *)p;
    while (n > 0) {
        const ssize_t w = send(fd, c, n, MSG_NOSIGNAL); /* a peer gone: EPIPE, not a SIGPIPE */
        if (w > 0) {
            c += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return IO_ERROR;
        const int r = wait_fd(fd, POLLOUT, deadline);
        if (r <= 0) return r == 0 ? IO_TIMEOUT : IO_ERROR;
    }
    return IO_OK;
}

static int recv_all(int fd, void *p, size_t n, double deadline) {
    unsigned char *c = (unsigned char *)p;
    while (n > 0) {
        const ssize_t r = recv(fd, c, n, 0);
        if (r > 0) {
            c += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) return IO_CLOSED;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return IO_ERROR;
        const int w = wait_fd(fd, POLLIN, deadline);
        if (w <= 0) return w == 0 ? IO_TIMEOUT : IO_ERROR;
    }
    return IO_OK;
}

/* One connect() to each address in turn: the connected socket, or -1 with *why = the last errno. */
static int connect_any(const struct addrinfo *list, double deadline, int *why) {
    for (const struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            *why = errno;
            continue;
        }
        if (set_nonblocking(fd) != 0) {
            *why = errno;
            close(fd);
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
        if (errno == EINPROGRESS) {
            /* an address that drops SYNs must not use up the whole wait */
            const double try_until = now_s() + CONNECT_TRY_S < deadline ? now_s() + CONNECT_TRY_S : deadline;
            const int r = wait_fd(fd, POLLOUT, try_until);
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) return fd;
            *why = r == 1 ? soerr : r == 0 ? ETIMEDOUT : errno;
        } else {
            *why = errno;
        }
        close(fd);
    }
    return -1;
}

/* A rank other than 0: connect (retrying until rank 0 listens), say who it is, read the blob. */
static llmc_status tcp_peer(const char *addr, int port, int rank, int world, void *blob, size_t bytes,
                            double timeout_s, char *err, size_t errlen) {
    const double deadline = now_s() + timeout_s;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int fd = -1, why = ECONNREFUSED, gai = 0;
    for (;;) {
        struct addrinfo *list = NULL;
        gai = getaddrinfo(addr, service, &hints, &list); /* again each time: a name may appear later */
        if (gai == 0) {
            fd = connect_any(list, deadline, &why);
            freeaddrinfo(list);
        } else if (gai == EAI_SYSTEM) {
            why = errno;
        }
        if (fd >= 0 || now_s() >= deadline) break;
        sleep_until_or(CONNECT_RETRY_S, deadline);
    }
    if (fd < 0) {
        if (gai != 0)
            snprintf(err, errlen, "rank %d: cannot resolve %s (for %s:%d) within %g s: %s", rank, addr, addr, port,
                     timeout_s, gai == EAI_SYSTEM ? strerror(why) : gai_strerror(gai));
        else if (why == ECONNREFUSED)
            snprintf(err, errlen, "rank %d: no rank 0 listening at %s:%d after %g s", rank, addr, port, timeout_s);
        else
            snprintf(err, errlen, "rank %d: cannot reach rank 0 at %s:%d within %g s: %s", rank, addr, port,
                     timeout_s, strerror(why));
        return LLMC_ERR_IO;
    }
    unsigned char h[HDR_BYTES];
    hdr_pack(h, BOOT_HELLO, world, rank, bytes);
    int io = send_all(fd, h, HDR_BYTES, deadline);
    boot_hdr got = {0};
    if (io == IO_OK) io = recv_all(fd, h, HDR_BYTES, deadline);
    llmc_status st = LLMC_ERR_IO;
    if (io == IO_TIMEOUT)
        snprintf(err, errlen, "rank %d: rank 0 at %s:%d took the connection but sent no id within %g s", rank, addr,
                 port, timeout_s);
    else if (io == IO_CLOSED)
        snprintf(err, errlen, "rank %d: rank 0 at %s:%d closed the connection without sending the id (did it fail? see its message)",
                 rank, addr, port);
    else if (io == IO_ERROR)
        snprintf(err, errlen, "rank %d: lost the connection to rank 0 at %s:%d: %s", rank, addr, port, strerror(errno));
    else if (!hdr_unpack(h, &got) || (got.kind != BOOT_BLOB && got.kind != BOOT_REFUSE))
        snprintf(err, errlen, "rank %d: what listens at %s:%d is not an llmc rank 0 (unexpected reply)", rank, addr, port);
    else if (got.kind == BOOT_REFUSE && got.rank == REFUSE_TWICE)
        snprintf(err, errlen, "rank %d: rank 0 at %s:%d already has a rank %d: two processes were given the same rank",
                 rank, addr, port, rank);
    else if (got.kind == BOOT_REFUSE || got.world != (uint32_t)world || got.bytes != bytes) {
        snprintf(err, errlen, "rank %d: rank 0 at %s:%d runs a world of %u with %llu-byte ids; this rank has a world "
                 "of %d with %zu-byte ids (every rank must be started with the same world)",
                 rank, addr, port, got.world, (unsigned long long)got.bytes, world, bytes);
        st = LLMC_ERR_INVALID_ARG;
    } else if ((io = recv_all(fd, blob, bytes, deadline)) != IO_OK)
        snprintf(err, errlen, "rank %d: rank 0 at %s:%d stopped in the middle of the id (%s)", rank, addr, port,
                 io == IO_TIMEOUT ? "timed out" : io == IO_CLOSED ? "connection closed" : strerror(errno));
    else
        st = LLMC_OK;
    close(fd);
    return st;
}

/* Rank 0's listening socket on every interface (IPv6 with IPv4 mapped, else IPv4), or -1. */
static int listen_any(int port, int backlog, int *why) {
    const int families[2] = {AF_INET6, AF_INET};
    for (int i = 0; i < 2; i++) {
        const int fd = socket(families[i], SOCK_STREAM, 0);
        if (fd < 0) {
            *why = errno;
            continue;
        }
        const int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* a previous run's TIME_WAIT */
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        socklen_t len;
        if (families[i] == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_any;
            a->sin6_port = htons((uint16_t)port);
            len = sizeof *a;
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_ANY);
            a->sin_port = htons((uint16_t)port);
            len = sizeof *a;
        }
        if (bind(fd, (struct sockaddr *)&ss, len) == 0 && listen(fd, backlog) == 0 && set_nonblocking(fd) == 0)
            return fd;
        *why = errno;
        close(fd);
        if (*why == EADDRINUSE || *why == EACCES) return -1; /* IPv4 would fail the same way */
    }
    return -1;
}

typedef struct boot_conn {
    int fd;
    size_t got;
    unsigned char buf[HDR_BYTES];
} boot_conn;

typedef struct boot_root {
    const char *addr;
    int port, world, served;
    const void *blob;
    size_t bytes;
    double deadline;
    unsigned char *seen; /* world flags: which ranks got the blob */
    char *err;
    size_t errlen;
} boot_root;

static void drop(boot_conn *c) {
    close(c->fd);
    c->fd = -1;
    c->got = 0;
}

static void refuse(boot_root *r, boot_conn *c, uint32_t reason) {
    unsigned char h[HDR_BYTES];
    hdr_pack(h, BOOT_REFUSE, r->world, (int)reason, r->bytes);
    const double soon = now_s() + 1.0; /* best effort: this rank fails either way */
    send_all(c->fd, h, HDR_BYTES, soon < r->deadline ? soon : r->deadline);
}

/* Reads what a pending connection sent; once its HELLO is whole, answers it. Connections that are
 * not llmc's (a port probe) are dropped quietly; a peer of another world fails the run. */
static llmc_status serve(boot_root *r, boot_conn *c) {
    const ssize_t n = recv(c->fd, c->buf + c->got, HDR_BYTES - c->got, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return LLMC_OK;
    if (n <= 0) {
        drop(c);
        return LLMC_OK;
    }
    c->got += (size_t)n;
    if (c->got < HDR_BYTES) return LLMC_OK;
    boot_hdr h;
    if (!hdr_unpack(c->buf, &h) || h.kind != BOOT_HELLO) {
        drop(c);
        return LLMC_OK;
    }
    llmc_status st = LLMC_OK;
    if (h.world != (uint32_t)r->world || h.bytes != r->bytes) {
        refuse(r, c, REFUSE_SIZES);
        snprintf(r->err, r->errlen, "rank 0: rank %u has a world of %u with %llu-byte ids; this run has a world of %d "
                 "with %zu-byte ids (every rank must be started with the same world; port %d)",
                 h.rank, h.world, (unsigned long long)h.bytes, r->world, r->bytes, r->port);
        st = LLMC_ERR_INVALID_ARG;
    } else if (h.rank < 1 || h.rank >= (uint32_t)r->world) {
        snprintf(r->err, r->errlen, "rank 0: a peer at port %d says it is rank %u of a world of %d", r->port, h.rank,
                 r->world);
        st = LLMC_ERR_INVALID_ARG;
    } else if (r->seen[h.rank]) {
        refuse(r, c, REFUSE_TWICE);
        snprintf(r->err, r->errlen, "rank 0: rank %u connected twice to port %d: two processes were given the same rank",
                 h.rank, r->port);
        st = LLMC_ERR_INVALID_ARG;
    } else {
        unsigned char out[HDR_BYTES];
        hdr_pack(out, BOOT_BLOB, r->world, (int)h.rank, r->bytes);
        int io = send_all(c->fd, out, HDR_BYTES, r->deadline);
        if (io == IO_OK) io = send_all(c->fd, r->blob, r->bytes, r->deadline);
        if (io != IO_OK) {
            snprintf(r->err, r->errlen, "rank 0: sending the id to rank %u (port %d) failed: %s", h.rank, r->port,
                     io == IO_TIMEOUT ? "timed out" : strerror(errno));
            st = LLMC_ERR_IO;
        } else {
            r->seen[h.rank] = 1;
            r->served++;
        }
    }
    drop(c);
    return st;
}

/* "1, 2, 5" for the ranks not yet seen (at most 16 named). */
static void missing_ranks(const unsigned char *seen, int world, char *out, size_t outlen) {
    size_t at = 0;
    int named = 0, more = 0;
    out[0] = '\0';
    for (int i = 1; i < world; i++) {
        if (seen[i]) continue;
        if (named == 16) {
            more++;
            continue;
        }
        const int w = snprintf(out + at, outlen - at, "%s%d", named ? ", " : "", i);
        if (w < 0 || (size_t)w >= outlen - at) break;
        at += (size_t)w;
        named++;
    }
    if (more) snprintf(out + at, outlen - at, " and %d more", more);
}

static llmc_status tcp_root(const char *addr, int port, int world, const void *blob, size_t bytes, double timeout_s,
                            char *err, size_t errlen) {
    boot_root r = {addr, port, world, 0, blob, bytes, now_s() + timeout_s, NULL, err, errlen};
    r.seen = (unsigned char *)calloc((size_t)world, 1);
    if (!r.seen) {
        snprintf(err, errlen, "rank 0: out of memory for a world of %d", world);
        return LLMC_ERR_OUT_OF_MEMORY;
    }
    int why = 0;
    const int backlog = world - 1 < 16 ? 16 : world - 1 < SOMAXCONN ? world - 1 : SOMAXCONN;
    const int lfd = listen_any(port, backlog, &why);
    if (lfd < 0) {
        snprintf(err, errlen, "rank 0: cannot listen on port %d (for %s:%d): %s%s", port, addr, port, strerror(why),
                 why == EADDRINUSE ? " (another run's rank 0? pick another port)" : "");
        free(r.seen);
        return LLMC_ERR_IO;
    }
    boot_conn conns[MAX_PENDING];
    for (int i = 0; i < MAX_PENDING; i++) {
        conns[i].fd = -1;
        conns[i].got = 0;
    }
    llmc_status st = LLMC_OK;
    while (st == LLMC_OK && r.served < world - 1) {
        struct pollfd pf[MAX_PENDING + 1];
        int slot[MAX_PENDING + 1], np = 0, free_slot = -1;
        for (int i = 0; i < MAX_PENDING; i++) {
            if (conns[i].fd < 0) {
                if (free_slot < 0) free_slot = i;
                continue;
            }
            pf[np] = (struct pollfd){conns[i].fd, POLLIN, 0};
            slot[np++] = i;
        }
        if (free_slot >= 0) { /* a full table leaves new connections in the backlog */
            pf[np] = (struct pollfd){lfd, POLLIN, 0};
            slot[np++] = -1;
        }
        const int ms = ms_left(r.deadline);
        const int ready = ms > 0 ? poll(pf, (nfds_t)np, ms) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) {
            snprintf(err, errlen, "rank 0: poll on port %d failed: %s", port, strerror(errno));
            st = LLMC_ERR_IO;
            break;
        }
        if (ready == 0) {
            char miss[160];
            missing_ranks(r.seen, world, miss, sizeof miss);
            snprintf(err, errlen, "rank 0: waited %g s on port %d (%s:%d) for the other ranks: %d of %d arrived "
                     "(missing: %s)", timeout_s, port, addr, port, r.served, world - 1, miss);
            st = LLMC_ERR_IO;
            break;
        }
        for (int k = 0; k < np && st == LLMC_OK; k++) {
            if (!pf[k].revents) continue;
            if (slot[k] >= 0) {
                st = serve(&r, &conns[slot[k]]);
                continue;
            }
            const int fd = accept(lfd, NULL, NULL);
            if (fd < 0) continue; /* EAGAIN, or a connection that was reset before we took it */
            if (set_nonblocking(fd) != 0) {
                close(fd);
                continue;
            }
            conns[free_slot].fd = fd;
            conns[free_slot].got = 0;
        }
    }
    for (int i = 0; i < MAX_PENDING; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    close(lfd);
    free(r.seen);
    return st;
}

llmc_status llmc_bootstrap_tcp(const char *addr, int port, int rank, int world, void *blob, size_t bytes,
                               double timeout_s, char *err, size_t errlen) {
    llmc_status st = check_args("tcp", rank, world, blob, bytes, timeout_s, err, errlen);
    if (st != LLMC_OK || world == 1) return st;
    if (!addr || !*addr) addr = "127.0.0.1";
    if (port < 1 || port > 65535) {
        snprintf(err, errlen, "rank %d: tcp bootstrap port must be 1..65535 (got %d)", rank, port);
        return LLMC_ERR_INVALID_ARG;
    }
    return rank == 0 ? tcp_root(addr, port, world, blob, bytes, timeout_s, err, errlen)
                     : tcp_peer(addr, port, rank, world, blob, bytes, timeout_s, err, errlen);
}

/* ---- a shared file: path (rank 0's record), path.ack.<rank> (each peer's answer) ---- */

enum { READ_NONE = 0, READ_PARTIAL, READ_OK, READ_FAILED };

/* Reads a header (and, with blob, the blob that follows when its size matches) from path: READ_OK
 * only for a whole record of the wanted kind; READ_NONE when path does not exist; READ_FAILED
 * (errno) when it cannot be read. An ack's header names its writer's size but carries no blob. */
static int read_record(const char *path, uint32_t kind, boot_hdr *h, void *blob, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? READ_NONE : READ_FAILED;
    unsigned char buf[HDR_BYTES];
    int res = READ_PARTIAL;
    const long size = llmc_file_size(f);
    if (size >= HDR_BYTES && fread(buf, 1, HDR_BYTES, f) == HDR_BYTES && hdr_unpack(buf, h) && h->kind == kind &&
        (uint64_t)size == HDR_BYTES + (blob ? h->bytes : 0))
        res = !blob || h->bytes != bytes || fread(blob, 1, bytes, f) == bytes ? READ_OK : READ_PARTIAL;
    fclose(f);
    return res;
}

static llmc_status write_record(const char *path, int rank, uint32_t kind, int world, const void *blob,
                                size_t bytes, char *err, size_t errlen) {
    unsigned char h[HDR_BYTES];
    hdr_pack(h, kind, world, rank, bytes);
    char why[LLMC_ERR_LEN];
    llmc_atomic_file af;
    llmc_status st = llmc_atomic_open(&af, path, why, sizeof why);
    if (st == LLMC_OK) {
        st = llmc_atomic_write(&af, h, HDR_BYTES, why, sizeof why);
        if (st == LLMC_OK && blob) st = llmc_atomic_write(&af, blob, bytes, why, sizeof why);
        st = llmc_atomic_close(&af, st, why, sizeof why);
    }
    if (st != LLMC_OK) snprintf(err, errlen, "rank %d: %s", rank, why);
    return st;
}

static int ack_path(char *out, size_t outlen, const char *path, int rank) {
    return snprintf(out, outlen, "%s.ack.%d", path, rank) < (int)outlen;
}

static int gone(const char *path) {
    struct stat sb;
    return stat(path, &sb) != 0 && errno == ENOENT;
}

static void remove_acks(const char *path, int world) {
    char ack[4096];
    for (int i = 1; i < world; i++)
        if (ack_path(ack, sizeof ack, path, i)) unlink(ack);
}

static llmc_status file_root(const char *path, int world, const void *blob, size_t bytes, double timeout_s,
                             char *err, size_t errlen) {
    const double deadline = now_s() + timeout_s;
    char ack[4096];
    if (!ack_path(ack, sizeof ack, path, world)) {
        snprintf(err, errlen, "rank 0: bootstrap path too long: %s", path);
        return LLMC_ERR_INVALID_ARG;
    }
    if (!gone(path)) {
        snprintf(err, errlen, "rank 0: %s exists: a previous run's? remove it", path);
        return LLMC_ERR_IO;
    }
    unsigned char *seen = (unsigned char *)calloc((size_t)world, 1);
    if (!seen) {
        snprintf(err, errlen, "rank 0: out of memory for a world of %d", world);
        return LLMC_ERR_OUT_OF_MEMORY;
    }
    remove_acks(path, world); /* a crashed run's acks would count as this run's */
    llmc_status st = write_record(path, 0, BOOT_RECORD, world, blob, bytes, err, errlen);
    int acked = 0;
    while (st == LLMC_OK && acked < world - 1) {
        for (int i = 1; i < world && st == LLMC_OK; i++) {
            if (seen[i]) continue;
            ack_path(ack, sizeof ack, path, i);
            boot_hdr h;
            const int res = read_record(ack, BOOT_ACK, &h, NULL, 0);
            if (res == READ_FAILED) {
                snprintf(err, errlen, "rank 0: cannot read %s: %s", ack, strerror(errno));
                st = LLMC_ERR_IO;
            } else if (res == READ_OK && (h.world != (uint32_t)world || h.bytes != bytes)) {
                unlink(ack); /* its writer has given up: nobody else removes it */
                snprintf(err, errlen, "rank 0: rank %d has a world of %u with %llu-byte ids; this run has a world of "
                         "%d with %zu-byte ids (every rank must be started with the same world; %s)",
                         i, h.world, (unsigned long long)h.bytes, world, bytes, ack);
                st = LLMC_ERR_INVALID_ARG;
            } else if (res == READ_OK) {
                seen[i] = 1;
                acked++;
            }
        }
        if (st != LLMC_OK || acked == world - 1) break;
        if (now_s() >= deadline) {
            char miss[160];
            missing_ranks(seen, world, miss, sizeof miss);
            snprintf(err, errlen, "rank 0: waited %g s for the other ranks to read %s: %d of %d arrived (missing: %s)",
                     timeout_s, path, acked, world - 1, miss);
            st = LLMC_ERR_IO;
            break;
        }
        sleep_until_or(FILE_POLL_S, deadline);
    }
    /* Success: the acks go first, which tells each waiting rank all is well. Failure: path goes
     * while the acks stay, which tells them rank 0 gave up; each removes its own. */
    if (st == LLMC_OK) remove_acks(path, world);
    unlink(path);
    free(seen);
    return st;
}

static llmc_status file_peer(const char *path, int rank, int world, void *blob, size_t bytes, double timeout_s,
                             char *err, size_t errlen) {
    const double deadline = now_s() + timeout_s;
    char ack[4096];
    if (!ack_path(ack, sizeof ack, path, rank)) {
        snprintf(err, errlen, "rank %d: bootstrap path too long: %s", rank, path);
        return LLMC_ERR_INVALID_ARG;
    }
    boot_hdr h;
    int res = READ_NONE;
    while ((res = read_record(path, BOOT_RECORD, &h, blob, bytes)) != READ_OK) {
        if (res == READ_FAILED) {
            snprintf(err, errlen, "rank %d: cannot read %s: %s", rank, path, strerror(errno));
            return LLMC_ERR_IO;
        }
        if (now_s() >= deadline) {
            if (res == READ_NONE)
                snprintf(err, errlen, "rank %d: no rank 0 wrote %s within %g s", rank, path, timeout_s);
            else
                snprintf(err, errlen, "rank %d: %s held no whole llmc record within %g s (not written by an llmc "
                         "rank 0?)", rank, path, timeout_s);
            return LLMC_ERR_IO;
        }
        sleep_until_or(FILE_POLL_S, deadline);
    }
    if (h.world != (uint32_t)world || h.bytes != bytes) {
        /* the ack tells rank 0 why, unless this rank is not one rank 0 waits for */
        if ((uint32_t)rank < h.world) write_record(ack, rank, BOOT_ACK, world, NULL, bytes, err, errlen);
        snprintf(err, errlen, "rank %d: %s was written by a rank 0 with a world of %u and %llu-byte ids; this rank has "
                 "a world of %d with %zu-byte ids (every rank must be started with the same world)",
                 rank, path, h.world, (unsigned long long)h.bytes, world, bytes);
        return LLMC_ERR_INVALID_ARG;
    }
    llmc_status st = write_record(ack, rank, BOOT_ACK, world, NULL, bytes, err, errlen);
    if (st != LLMC_OK) return st;
    for (;;) {
        const int path_gone = gone(path); /* path before ack: rank 0 removes the acks, then path */
        if (gone(ack)) return LLMC_OK;
        if (path_gone) {
            snprintf(err, errlen, "rank %d: rank 0 gave up before every rank had read %s (see its message)", rank,
                     path);
            break;
        }
        if (now_s() >= deadline) {
            snprintf(err, errlen, "rank %d: read %s but rank 0 did not collect %s within %g s (it may have stopped; "
                     "if %s is a previous run's, remove it)", rank, path, ack, timeout_s, path);
            break;
        }
        sleep_until_or(FILE_POLL_S, deadline);
    }
    unlink(ack);
    return LLMC_ERR_IO;
}

llmc_status llmc_bootstrap_file(const char *path, int rank, int world, void *blob, size_t bytes, double timeout_s,
                                char *err, size_t errlen) {
    llmc_status st = check_args("file", rank, world, blob, bytes, timeout_s, err, errlen);
    if (st != LLMC_OK || world == 1) return st;
    if (!path || !*path) {
        snprintf(err, errlen, "rank %d: file bootstrap needs a path every rank can see", rank);
        return LLMC_ERR_INVALID_ARG;
    }
    return rank == 0 ? file_root(path, world, blob, bytes, timeout_s, err, errlen)
                     : file_peer(path, rank, world, blob, bytes, timeout_s, err, errlen);
}

/*
 * comm_bootstrap.h — how the ranks of a run meet without MPI: rank 0's blob (NCCL's unique id)
 * reaches every other rank, over TCP or through a file on a filesystem every rank sees.
 *
 * Rank 0 passes its blob; every other rank passes a buffer of the same `bytes` and gets rank 0's.
 * Every rank must pass the same world and bytes: a peer that does not is refused on both sides,
 * with a message naming both. Nothing waits longer than timeout_s (> 0), whichever rank starts
 * first. A world of one returns at once. Failures write "rank R: ..." into err.
 */
#ifndef LLMC_COMM_BOOTSTRAP_H
#define LLMC_COMM_BOOTSTRAP_H

#include <stddef.h>
#include "llmc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rank 0 listens on port (every interface: a host name often resolves to a loopback alias
 * locally, so binding addr would hide rank 0 from the other hosts) and hands the blob to each of
 * the world - 1 ranks that connect; the others connect to addr:port, retrying until rank 0 is up. */
llmc_status llmc_bootstrap_tcp(const char *addr, int port, int rank, int world, void *blob, size_t bytes,
                               double timeout_s, char *err, size_t errlen);

/* Rank 0 writes path (refusing one that exists: a previous run's), each other rank reads it and
 * answers with path.ack.<rank>; rank 0 removes the acks and then path, and a rank returns once its
 * ack is gone, so it knows rank 0 is alive (not a stale path) and the next run starts clean. */
llmc_status llmc_bootstrap_file(const char *path, int rank, int world, void *blob, size_t bytes,
                                double timeout_s, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif

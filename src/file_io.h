/* file_io.h — file helpers shared by the readers and writers of model, state and log files:
 * atomic writes (temp file, fsync, rename) and checked reads. Errors go to a caller's buffer
 * so that each object can keep them on its own handle. */
#ifndef LLMC_FILE_IO_H
#define LLMC_FILE_IO_H

#include <stdio.h>
#include "llmc.h"

typedef struct llmc_atomic_file {
    FILE *f;
    char tmp[4096];
    const char *path;
} llmc_atomic_file;

/* Opens <path>.tmp.<pid> for writing. */
llmc_status llmc_atomic_open(llmc_atomic_file *af, const char *path, char *err, size_t errlen);
llmc_status llmc_atomic_write(llmc_atomic_file *af, const void *data, size_t bytes, char *err, size_t errlen);
/* Flushes, closes and renames when st is LLMC_OK; otherwise removes the temp file. Returns the
 * final status (st, or the first failure of closing). */
llmc_status llmc_atomic_close(llmc_atomic_file *af, llmc_status st, char *err, size_t errlen);

/* Size of a regular file in bytes, or -1 for something that is not one (a directory, a pipe). */
long llmc_file_size(FILE *f);
int llmc_file_exists(const char *path);
/* " (a model file)" etc. for a magic number one of llmc's files starts with, else "". */
const char *llmc_magic_hint(int magic);
/* Removes <dir>/<name>.tmp.<pid> files left by processes that no longer exist (prefix: only
 * those whose <name> is prefix; NULL: any). Returns how many were removed. */
int llmc_remove_stale_temps(const char *dir, const char *prefix);
/* Host memory the kernel would give this process now (MemAvailable) and in all, from /proc/meminfo;
 * both 0 where that cannot be read ("unknown": malloc decides). */
void llmc_host_memory(size_t *avail, size_t *total);
/* mkdir -p */
int llmc_make_dirs(const char *dir);

/* Two int32 header slots holding a uint64, low word first. */
static inline void llmc_put_u64(int32_t *h, int slot, uint64_t v) {
    h[slot] = (int32_t)(uint32_t)(v & 0xffffffffu);
    h[slot + 1] = (int32_t)(uint32_t)(v >> 32);
}
static inline uint64_t llmc_get_u64(const int32_t *h, int slot) {
    return (uint64_t)(uint32_t)h[slot] | ((uint64_t)(uint32_t)h[slot + 1] << 32);
}

#endif

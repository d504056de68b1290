/* file_io.c — atomic writes and small file helpers (see file_io.h). */
#define _POSIX_C_SOURCE 200809L
#include "file_io.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

llmc_status llmc_atomic_open(llmc_atomic_file *af, const char *path, char *err, size_t errlen) {
    af->path = path;
    af->f = NULL;
    if (snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof af->tmp) {
        snprintf(err, errlen, "path too long: %s", path);
        return LLMC_ERR_INVALID_ARG;
    }
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        snprintf(err, errlen, "cannot create '%s': %s", af->tmp, strerror(errno));
        return LLMC_ERR_IO;
    }
    return LLMC_OK;
}

llmc_status llmc_atomic_write(llmc_atomic_file *af, const void *data, size_t bytes, char *err, size_t errlen) {
    if (fwrite(data, 1, bytes, af->f) == bytes) return LLMC_OK;
    snprintf(err, errlen, "write to '%s' failed: %s", af->tmp, strerror(errno));
    return LLMC_ERR_IO;
}

llmc_status llmc_atomic_close(llmc_atomic_file *af, llmc_status st, char *err, size_t errlen) {
    if (st == LLMC_OK && (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0)) {
        snprintf(err, errlen, "cannot flush '%s': %s", af->tmp, strerror(errno));
        st = LLMC_ERR_IO;
    }
    if (fclose(af->f) != 0 && st == LLMC_OK) {
        snprintf(err, errlen, "cannot close '%s': %s", af->tmp, strerror(errno));
        st = LLMC_ERR_IO;
    }
    if (st == LLMC_OK && rename(af->tmp, af->path) != 0) {
        snprintf(err, errlen, "cannot rename '%s' to '%s': %s", af->tmp, af->path, strerror(errno));
        st = LLMC_ERR_IO;
    }
    if (st != LLMC_OK) remove(af->tmp);
    af->f = NULL;
    return st;
}

long llmc_file_size(FILE *f) {
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    if (fseek(f, 0, SEEK_END) != 0) return -1;
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    return n;
}

int llmc_file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *llmc_magic_hint(int magic) {
    switch (magic) {
    case LLMC_MODEL_MAGIC: return " (a model file)";
    case LLMC_STATE_MAGIC: return " (a trainer state file)";
    case LLMC_TOKENIZER_MAGIC: return " (a tokenizer file)";
    case LLMC_SHARD_MAGIC: return " (a token shard)";
    default: return "";
    }
}

int llmc_make_dirs(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

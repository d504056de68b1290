/* file_io.c — atomic writes and small file helpers (see file_io.h). */
#define _POSIX_C_SOURCE 200809L
#include "file_io.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fsync of the directory holding path: makes a rename durable, not only the file's bytes. */
static int sync_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

llmc_status llmc_atomic_open(llmc_atomic_file *af, const char *path, char *err, size_t errlen) {
    af->path = path;
    af->f = NULL;
    { /* the debris of an earlier writer of this path that was killed mid-write */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? path + (slash - dir) + 1 : path;
        if (slash) *slash = '\0';
        llmc_remove_stale_temps(!slash ? "." : dir[0] ? dir : "/", base);
    }
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
    if (st == LLMC_OK && sync_parent_dir(af->path) != 0) {
        snprintf(err, errlen, "cannot sync the directory of '%s': %s", af->path, strerror(errno));
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
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) return -1;
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

/* A process that no longer exists (one that is alive, or not ours to signal, is kept). */
static int is_dead(long pid) { return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH; }

int llmc_remove_stale_temps(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    const size_t plen = prefix ? strlen(prefix) : 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *tag = strstr(e->d_name, ".tmp.");
        if (!tag || (prefix && (strncmp(e->d_name, prefix, plen) != 0 || e->d_name + plen != tag))) continue;
        char *end;
        long pid = strtol(tag + 5, &end, 10);
        if (*end != '\0' || end == tag + 5 || !is_dead(pid)) continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path && remove(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

void llmc_host_memory(size_t *avail, size_t *total) {
    unsigned long long a = 0, t = 0, kb;
    char line[256];
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) t = kb * 1024;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) a = kb * 1024;
    }
    if (f) fclose(f);
    if (!a) t = 0;
    if (avail) *avail = (size_t)a;
    if (total) *total = (size_t)t;
}

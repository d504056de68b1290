/* cli.c — the table-driven parser behind every llmc command-line program. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const llmc_cli_option *find_short(const llmc_cli_option *o, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (o[i].short_name && strcmp(o[i].short_name, name) == 0) return &o[i];
    return NULL;
}

/* "-h 3": an integer follows, so it is a value, not a request for help. */
static int is_int(const char *s) {
    char *end;
    if (!s || !*s) return 0;
    errno = 0;
    strtol(s, &end, 10);
    return *end == '\0' && errno == 0;
}

static const llmc_cli_option *find_long(const llmc_cli_option *o, size_t n, const char *name, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (o[i].long_name && strlen(o[i].long_name) == len && strncmp(o[i].long_name, name, len) == 0) return &o[i];
    return NULL;
}

static int set_value(const llmc_cli_option *o, const char *flag, const char *v, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case LLMC_OPT_STRING: *(const char **)o->target = v; return 0;
    case LLMC_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno || x < -2147483647L || x > 2147483647L) break;
        *(int *)o->target = (int)x;
        return 0;
    }
    case LLMC_OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno || *v == '-') break;
        *(uint64_t *)o->target = (uint64_t)x;
        return 0;
    }
    case LLMC_OPT_FLOAT: {
        float x = strtof(v, &end);
        if (*v == '\0' || *end != '\0' || errno || !isfinite(x)) break;
        *(float *)o->target = x;
        return 0;
    }
    }
    snprintf(err, errlen, "%s expects %s, got '%s'", flag,
             o->type == LLMC_OPT_FLOAT ? "a number" : o->type == LLMC_OPT_U64 ? "a non-negative integer" : "an integer",
             v);
    return -1;
}

int llmc_cli_parse(int argc, char **argv, const llmc_cli_option *opts, size_t nopts, FILE *out, char *err,
                   size_t errlen) {
    (void)out;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) return 1;
        if (strcmp(a, "-h") == 0 && !(find_short(opts, nopts, "h") && i + 1 < argc && is_int(argv[i + 1]))) return 1;
        const llmc_cli_option *o = NULL;
        const char *inline_value = NULL;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            o = find_long(opts, nopts, a + 2, len);
            if (eq) inline_value = eq + 1;
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            o = find_short(opts, nopts, a + 1);
        }
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", a);
            return -1;
        }
        const char *v = inline_value;
        if (!v) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option '%s' needs a value", a);
                return -1;
            }
            v = argv[++i];
        }
        if (set_value(o, a, v, err, errlen) != 0) return -1;
    }
    return 0;
}

void llmc_cli_usage(FILE *out, const char *prog, const char *summary, const llmc_cli_option *opts, size_t nopts) {
    fprintf(out, "usage: %s [options]\n%s\n\noptions:\n", prog, summary);
    for (size_t i = 0; i < nopts; i++) {
        const llmc_cli_option *o = &opts[i];
        char flags[64], def[128] = "";
        if (o->short_name)
            snprintf(flags, sizeof flags, "-%s,%s --%s %s", o->short_name, strlen(o->short_name) > 1 ? "" : " ",
                     o->long_name, o->metavar);
        else
            snprintf(flags, sizeof flags, "     --%s %s", o->long_name, o->metavar);
        switch (o->type) {
        case LLMC_OPT_INT: snprintf(def, sizeof def, "%d", *(int *)o->target); break;
        case LLMC_OPT_U64: snprintf(def, sizeof def, "%" PRIu64, *(uint64_t *)o->target); break;
        case LLMC_OPT_FLOAT: snprintf(def, sizeof def, "%g", *(float *)o->target); break;
        case LLMC_OPT_STRING: {
            const char *s = *(const char **)o->target;
            snprintf(def, sizeof def, "%s", s ? s : "(none)");
            break;
        }
        }
        fprintf(out, "  %-31s %s [%s]\n", flags, o->help, def);
    }
    fprintf(out, "  %-31s %s\n", "-h,  --help", "show this help and exit");
}

void llmc_cli_openmp_defaults(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return; /* the user's choice stands */
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv); /* libgomp reads it at load time: start again with it set */
}

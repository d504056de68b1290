/* fuzz.h — what the fuzzer's files share; dev/fuzz/fuzz.c says what the fuzzer does.
 *   fuzz.c         the options, running one input in a child, campaigns, replay, selftest, main
 *   fuzz_child.c   the child's side: its report, the allocation watch, the API drivers
 *   fuzz_blob.c    byte buffers, the RNG, header words in place, file reads, die()
 *   fuzz_seed.c    valid seed files of every format (FORMATS)
 *   fuzz_mutate.c  the mutations, and the input of (seed, format, index) */
#ifndef LLMC_FUZZ_H
#define LLMC_FUZZ_H
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "llmc.h"
#include "mc_eval.h" /* the eval file reader: internal to the library, but a reader of outside files */

#define HEADER_BYTES (LLMC_HEADER_INTS * 4)
#define STATE_STEP 7 /* the checkpoint step the state seeds are saved under */


enum { OK, ERROR, POISON, BAD, BLOWUP, HANG, CRASH, NOUT }; /* child verdicts rank by this order */
extern const char *const OUTCOME[NOUT];

/* One shared page per worker: the child writes its verdict here, so that the parent learns
 * why even when the child dies (the allocation that preceded a crash, say). */
typedef struct report {
    int outcome;
    size_t biggest_alloc; /* the largest request the child made */
    size_t refused_alloc; /* a request above the limit, or one that failed; 0: none */
    int finished;         /* set by the harness just before the child exits: any other exit is the library's */
    char msg[1024];
} report;

extern report *g_rep;        /* NULL outside a child: the parent's own allocations are not watched */
extern size_t g_max_alloc;

typedef struct blob {
    unsigned char *p;
    size_t n, cap;
} blob;

enum { MAX_MARKS = 48, MAX_SEEDS = 16 };

/* How to mutate one file of an input: which header slots matter, where the body's
 * structure changes (truncation points), and how its floats are stored. */
typedef struct part_kind {
    const int *slots;     /* int32 header slots worth setting to extremes */
    int nslots;
    const int *u64_slots; /* slot pairs holding a uint64 (low word first) */
    int nu64;
    int model_header;     /* header is a model's: size fields can be made to wrap */
} part_kind;

typedef struct part {
    blob b;
    const part_kind *kind;
    size_t marks[MAX_MARKS]; /* interesting offsets: header end, tensor / token / section starts */
    int nmarks;
    int float_bytes; /* 4: an fp32 body, 2: bf16, 0: not floats */
} part;

/* An input: one file, or for state the state file (part 0) and its model file (part 1). */
typedef struct input {
    part part[2];
    int nparts;
} input;

typedef struct format {
    const char *name;
    void (*make_seeds)(input *seeds, int *n, const char *tmp);
    void (*child)(const char *dir);
    void (*stage_extra)(const char *dir); /* files every input of the format needs beside it */
    const char *files[2];                  /* where the parts go, relative to the input's dir */
} format;

enum { MASK_T = 8 }; /* the row length the mask seeds are packed for */

/* fuzz_child.c */
void verdict(int o, const char *fmt, ...);
void refused(llmc_status st, const char *msg, const char *what);
void failed_later(llmc_status st, const char *msg, const char *what);
int *tokens(int n, int V, int salt);
void child_model(const char *dir);
void child_safetensors(const char *dir);
void child_shard(const char *dir);
void child_tokenizer(const char *dir);
void child_state(const char *dir);

/* fuzz_blob.c, fuzz_seed.c */
void blob_reserve(blob *b, size_t n);
void blob_set(blob *b, const void *src, size_t n);
void blob_append(blob *b, const void *src, size_t n);
uint64_t splitmix(uint64_t *s);
uint64_t below(uint64_t *s, uint64_t n);
int32_t get32(const blob *b, size_t off);
void put32(blob *b, size_t off, int32_t v);
uint64_t get64(const blob *b, int slot);
void put64(blob *b, int slot, uint64_t v);
int read_file(const char *path, blob *b);
void die(const char *fmt, ...);
extern const part_kind SHARD_KIND, TOKENIZER_KIND, STATE_KIND, ST_KIND, HF_CONFIG_KIND, MASK_KIND, MASK_SHARD_KIND;
extern const format FORMATS[];
extern const int NFORMATS;

/* fuzz_mutate.c */
void make_input(const input *seeds, int nseeds, uint64_t seed, int fmt, uint64_t index, input *in);

/* fuzz.c */
void remove_workdir(const char *dir);
double now(void);

#endif

/* config.c — model shapes: descriptors ("d12") and validation. The parameter layout is weights.c's. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llmc.h"

#define GPT2_VOCAB 50257
#define GPT2_MAX_T 1024

/* x rounded up to a multiple of m, in 64 bits (the callers check the result's range). */
static long long round_up(long long x, long long m) { return (x + m - 1) / m * m; }

llmc_status llmc_config_validate(llmc_config *c, char *err, size_t errlen) {
    if (c->num_layers < 1 || c->num_heads < 1 || c->channels < 1 || c->max_seq_len < 1 || c->vocab_size < 1) {
        snprintf(err, errlen, "impossible model size: L=%d H=%d C=%d T=%d V=%d (all must be >= 1)", c->num_layers,
                 c->num_heads, c->channels, c->max_seq_len, c->vocab_size);
        return LLMC_ERR_INVALID_ARG;
    }
    if (c->channels % c->num_heads != 0) {
        snprintf(err, errlen, "channels C=%d must be a multiple of the number of heads H=%d", c->channels,
                 c->num_heads);
        return LLMC_ERR_INVALID_ARG;
    }
    if (c->vocab_size > (1 << 30) || c->padded_vocab_size > (1 << 30) || c->padded_vocab_size < 0) {
        snprintf(err, errlen, "vocabulary too large: V=%d, padded %d (at most 2^30)", c->vocab_size,
                 c->padded_vocab_size);
        return LLMC_ERR_INVALID_ARG;
    }
    if (c->padded_vocab_size == 0) c->padded_vocab_size = (int)round_up(c->vocab_size, 128);
    if (c->padded_vocab_size < c->vocab_size) {
        snprintf(err, errlen, "padded vocab %d is smaller than vocab %d", c->padded_vocab_size, c->vocab_size);
        return LLMC_ERR_INVALID_ARG;
    }
    /* keep every element offset well inside size_t and every dimension inside int */
    double C = c->channels, n = (double)c->num_layers * 12.0 * C * C + ((double)c->padded_vocab_size + c->max_seq_len) * C;
    if (c->channels > (1 << 16) || c->num_layers > 1024 || c->max_seq_len > (1 << 20) || n > 1e11) {
        snprintf(err, errlen, "model too large: L=%d C=%d T=%d V=%d gives %.3g parameters", c->num_layers,
                 c->channels, c->max_seq_len, c->vocab_size, n);
        return LLMC_ERR_INVALID_ARG;
    }
    return LLMC_OK;
}

llmc_status llmc_config_from_descriptor(const char *desc, llmc_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->vocab_size = GPT2_VOCAB;
    c->max_seq_len = GPT2_MAX_T;
    if (desc == NULL || *desc == '\0') {
        snprintf(err, errlen, "empty model descriptor");
        return LLMC_ERR_INVALID_ARG;
    }
    /* GPT-2 family: depth d, channels 64*d, heads d (124M, 350M, 774M, 1558M) */
    if (desc[0] == 'd' && isdigit((unsigned char)desc[1])) {
        char *end;
        long d = strtol(desc + 1, &end, 10);
        if (*end == '\0' && (d == 12 || d == 24 || d == 36 || d == 48)) {
            static const int heads[] = {12, 16, 20, 25}, chans[] = {768, 1024, 1280, 1600}; /* read-only */
            int i = (int)(d / 12 - 1);
            c->num_layers = (int)d;
            c->num_heads = heads[i];
            c->channels = chans[i];
            return llmc_config_validate(c, err, errlen);
        }
        snprintf(err, errlen, "unknown model descriptor '%s': use d12, d24, d36, d48 or L=..,H=..,C=..[,T=..,V=..]",
                 desc);
        return LLMC_ERR_INVALID_ARG;
    }
    /* explicit "L=2,H=4,C=128,T=256,V=50257" */
    const char *p = desc;
    while (*p) {
        char key = (char)toupper((unsigned char)*p);
        if (p[1] != '=') goto bad;
        char *end;
        long v = strtol(p + 2, &end, 10);
        if (end == p + 2 || v <= 0 || v > 1L << 30) goto bad;
        switch (key) {
        case 'L': c->num_layers = (int)v; break;
        case 'H': c->num_heads = (int)v; break;
        case 'C': c->channels = (int)v; break;
        case 'T': c->max_seq_len = (int)v; break;
        case 'V': c->vocab_size = (int)v; break;
        default: goto bad;
        }
        p = end;
        if (*p == ',') p++;
        else if (*p != '\0') goto bad;
    }
    if (c->num_layers && c->num_heads && c->channels) return llmc_config_validate(c, err, errlen);
bad:
    snprintf(err, errlen,
             "cannot parse model descriptor '%s': use d12, d24, d36, d48 or L=..,H=..,C=..[,T=..,V=..] "
             "(positive integers)",
             desc);
    return LLMC_ERR_INVALID_ARG;
}

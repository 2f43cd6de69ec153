/* pg_zlib_decompress of png.h: a zlib stream (RFC 1950) around deflate blocks
 * (RFC 1951), read bit by bit with canonical Huffman decoding.
 *
 * Every read is checked against the input's end and every write against
 * max_out; every malformed stream (bad header, bad block type, stored length
 * check, bad code lengths, over-subscribed or incomplete codes, distances past
 * the output's start, truncation, a wrong Adler-32, bytes after the stream)
 * ends in -1 and a message "pg_zlib_decompress: <what> at input byte N". */
#include "png.h"
#include "zlib_impl.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the constants of RFC 1951 section 3.2.5 and 3.2.7 ---------------------------------- */

const uint16_t pg_zlib_len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                       31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
const uint8_t pg_zlib_len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                       2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
const uint16_t pg_zlib_dist_base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                        193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
const uint8_t pg_zlib_dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                        6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
const uint8_t pg_zlib_clen_order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* ---- reading bits (section 3.1.1: least significant bit first) --------------------------- */

typedef struct inflater {
    const uint8_t *in;
    size_t n, pos;  /* input and the next unread byte */
    uint32_t bits;  /* bits read from the input, not yet used; always fewer than 8 between calls */
    int nbits;
    uint8_t *out;   /* output so far: len bytes of cap, never more than max */
    size_t len, cap, max;
} inflater;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(const inflater *s, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pg_set_error("pg_zlib_decompress: %s at input byte %zu of %zu", msg, s->pos, s->n);
    return -1;
}

/* The next k <= 16 bits as a number (first bit least significant); -1 at the end. */
static int getbits(inflater *s, int k, uint32_t *v)
{
    *v = 0;
    while (s->nbits < k) {
        if (s->pos >= s->n)
            return fail(s, "truncated input (the stream ends inside a block)");
        s->bits |= (uint32_t)s->in[s->pos++] << s->nbits;
        s->nbits += 8;
    }
    *v = s->bits & ((1u << k) - 1);
    s->bits >>= k;
    s->nbits -= k;
    return 0;
}

/* ---- output -------------------------------------------------------------------------------- */

static int grow(inflater *s)
{
    if (s->cap >= s->max)
        return fail(s, "output past max_out (%zu bytes)", s->max);
    size_t cap = s->cap < s->max / 2 ? 2 * s->cap : s->max;
    if (cap < 64)
        cap = s->max < 64 ? s->max : 64;
    uint8_t *p = realloc(s->out, cap);
    if (!p)
        return fail(s, "out of memory for %zu output bytes", cap);
    s->out = p;
    s->cap = cap;
    return 0;
}

static int put(inflater *s, uint8_t b)
{
    if (s->len == s->cap && grow(s))
        return -1;
    s->out[s->len++] = b;
    return 0;
}

/* ---- canonical Huffman codes (section 3.2.2) -------------------------------------------- */

typedef struct huff {
    uint16_t count[PG_ZLIB_MAX_BITS + 1]; /* codes of each length */
    uint16_t sym[288];                    /* symbols ordered by code */
    int ncodes;
} huff;

/* Builds h from the code lengths of symbols 0..num-1 (0: unused). Returns the
 * Kraft deficit in units of 2^-15: 0 for a complete code, > 0 incomplete,
 * < 0 over-subscribed. */
static int32_t huff_build(huff *h, const uint8_t *lengths, int num)
{
    uint16_t offs[PG_ZLIB_MAX_BITS + 2];
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < num; i++)
        h->count[lengths[i]]++;
    h->ncodes = num - h->count[0];
    int32_t left = 1;
    for (int len = 1; len <= PG_ZLIB_MAX_BITS; len++) {
        left = 2 * left - h->count[len];
        if (left < 0)
            return left;
    }
    offs[1] = 0;
    for (int len = 1; len <= PG_ZLIB_MAX_BITS; len++)
        offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (int i = 0; i < num; i++)
        if (lengths[i])
            h->sym[offs[lengths[i]]++] = (uint16_t)i;
    return left;
}

/* One symbol: codes are sent most significant bit first, so the code grows a
 * bit at a time until it falls among the `count` codes of its length. */
static int decode(inflater *s, const huff *h, int *sym)
{
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= PG_ZLIB_MAX_BITS; len++) {
        uint32_t bit;
        if (getbits(s, 1, &bit))
            return -1;
        code |= (int)bit;
        int count = h->count[len];
        if (code - first < count) {
            *sym = h->sym[index + code - first];
            return 0;
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return fail(s, "a bit pattern that is no code of an incomplete Huffman code");
}

/* ---- blocks ---------------------------------------------------------------------------------- */

/* Stored block (section 3.2.4): to a byte boundary, LEN, NLEN = ~LEN, LEN bytes. */
static int stored_block(inflater *s)
{
    s->bits = 0;
    s->nbits = 0; /* the rest of the current byte */
    if (s->n - s->pos < 4)
        return fail(s, "truncated input (stored block header)");
    const uint8_t *p = s->in + s->pos;
    unsigned len = p[0] | (unsigned)p[1] << 8, nlen = p[2] | (unsigned)p[3] << 8;
    if (len != (~nlen & 0xFFFFu))
        return fail(s, "stored block length %u does not match its complement %u", len, nlen);
    s->pos += 4;
    if (len == 0)
        return 0; /* an empty block (a flush point): nothing to copy, maybe no buffer yet */
    if (s->n - s->pos < len)
        return fail(s, "truncated input (stored block of %u bytes, %zu left)", len, s->n - s->pos);
    while (s->cap - s->len < len)
        if (grow(s))
            return -1;
    memcpy(s->out + s->len, s->in + s->pos, len);
    s->len += len;
    s->pos += len;
    return 0;
}

/* Copies len bytes from dist back (they may overlap what is being written). */
static int copy_match(inflater *s, unsigned len, unsigned dist)
{
    if (dist > s->len)
        return fail(s, "distance %u past the start of the output (%zu bytes so far)", dist, s->len);
    while (s->cap - s->len < len)
        if (grow(s))
            return -1;
    uint8_t *dst = s->out + s->len;
    for (unsigned i = 0; i < len; i++)
        dst[i] = dst[(ptrdiff_t)i - (ptrdiff_t)dist];
    s->len += len;
    return 0;
}

/* The symbols of a Huffman-coded block up to end-of-block (256), section 3.2.5. */
static int codes(inflater *s, const huff *lit, const huff *dist)
{
    for (;;) {
        int sym;
        uint32_t extra;
        if (decode(s, lit, &sym))
            return -1;
        if (sym < 256) {
            if (put(s, (uint8_t)sym))
                return -1;
            continue;
        }
        if (sym == 256)
            return 0;
        sym -= 257;
        if (sym >= 29)
            return fail(s, "invalid length symbol %d", sym + 257);
        if (getbits(s, pg_zlib_len_extra[sym], &extra))
            return -1;
        unsigned len = pg_zlib_len_base[sym] + extra;
        int dsym;
        if (decode(s, dist, &dsym))
            return -1;
        if (dsym >= 30)
            return fail(s, "invalid distance symbol %d", dsym);
        if (getbits(s, pg_zlib_dist_extra[dsym], &extra))
            return -1;
        if (copy_match(s, len, pg_zlib_dist_base[dsym] + extra))
            return -1;
    }
}

/* Fixed codes (section 3.2.6). */
static int fixed_block(inflater *s)
{
    uint8_t l[288 + 32];
    huff lit, dist;
    for (int i = 0; i < 288; i++)
        l[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    for (int i = 0; i < 32; i++) /* 30 and 31 are codes, never valid symbols */
        l[288 + i] = 5;
    huff_build(&lit, l, 288);
    huff_build(&dist, l + 288, 32);
    return codes(s, &lit, &dist);
}

/* The HLIT + HDIST code lengths, run-length coded with the code-length code
 * (section 3.2.7: 0..15 a length, 16 repeat the previous 3..6 times, 17 and 18
 * zeros 3..10 and 11..138 times). */
static int read_lengths(inflater *s, const huff *clen, uint8_t *l, int total)
{
    for (int i = 0; i < total;) {
        int sym;
        uint32_t rep;
        if (decode(s, clen, &sym))
            return -1;
        if (sym < 16) {
            l[i++] = (uint8_t)sym;
            continue;
        }
        uint8_t v = 0;
        if (sym == 16) {
            if (i == 0)
                return fail(s, "code length repeat (16) with no previous length");
            v = l[i - 1];
            if (getbits(s, 2, &rep))
                return -1;
            rep += 3;
        } else if (getbits(s, sym == 17 ? 3 : 7, &rep)) {
            return -1;
        } else {
            rep += sym == 17 ? 3 : 11;
        }
        if (i + (int)rep > total)
            return fail(s, "code length repeat past the %d lengths", total);
        memset(l + i, v, rep);
        i += (int)rep;
    }
    return 0;
}

/* Checks the two codes of a dynamic block: lit/len complete with an
 * end-of-block code; distance complete, or (RFC 1951 section 3.2.7) no code
 * at all or a single one-bit code. */
static int check_codes(inflater *s, const uint8_t *l, int32_t lit_left, const huff *dist, int32_t dist_left)
{
    if (l[256] == 0)
        return fail(s, "dynamic block without an end-of-block code");
    if (lit_left < 0 || dist_left < 0)
        return fail(s, "over-subscribed %s code lengths", lit_left < 0 ? "literal/length" : "distance");
    if (lit_left > 0)
        return fail(s, "incomplete literal/length code lengths");
    if (dist_left > 0 && !(dist->ncodes == 0 || (dist->ncodes == 1 && dist->count[1] == 1)))
        return fail(s, "incomplete distance code lengths (%d codes)", dist->ncodes);
    return 0;
}

static int dynamic_block(inflater *s)
{
    uint32_t hlit, hdist, hclen, v;
    if (getbits(s, 5, &hlit) || getbits(s, 5, &hdist) || getbits(s, 4, &hclen))
        return -1;
    hlit += 257;
    hdist += 1;
    hclen += 4;
    if (hlit > 286 || hdist > 30)
        return fail(s, "too many codes (HLIT %u > 286 or HDIST %u > 30)", hlit, hdist);
    uint8_t l[286 + 30] = {0};
    for (uint32_t i = 0; i < hclen; i++) {
        if (getbits(s, 3, &v))
            return -1;
        l[pg_zlib_clen_order[i]] = (uint8_t)v;
    }
    huff clen, lit, dist;
    int32_t left = huff_build(&clen, l, 19);
    if (left != 0)
        return fail(s, "%s code-length code", left < 0 ? "over-subscribed" : "incomplete");
    memset(l, 0, 19);
    if (read_lengths(s, &clen, l, (int)(hlit + hdist)))
        return -1;
    int32_t lit_left = huff_build(&lit, l, (int)hlit);
    int32_t dist_left = huff_build(&dist, l + hlit, (int)hdist);
    if (check_codes(s, l, lit_left, &dist, dist_left))
        return -1;
    return codes(s, &lit, &dist);
}

/* ---- the zlib wrapper (RFC 1950) --------------------------------------------------------------- */

static int header(inflater *s)
{
    if (s->n < 2)
        return fail(s, "truncated input (%zu bytes, no zlib header)", s->n);
    unsigned cmf = s->in[0], flg = s->in[1];
    if ((cmf & 15) != 8)
        return fail(s, "compression method %u in the zlib header, not 8 (deflate)", cmf & 15);
    if ((cmf >> 4) > 7)
        return fail(s, "window size 2^%u in the zlib header, more than 32 KiB", (cmf >> 4) + 8);
    if ((cmf * 256 + flg) % 31 != 0)
        return fail(s, "zlib header check bits (FCHECK): 0x%02X%02X is not a multiple of 31", cmf, flg);
    if (flg & 0x20)
        return fail(s, "the zlib header asks for a preset dictionary (FDICT), not supported");
    s->pos = 2;
    return 0;
}

static int blocks(inflater *s)
{
    uint32_t final = 0, type;
    while (!final) {
        if (getbits(s, 1, &final) || getbits(s, 2, &type))
            return -1;
        int rc = type == 0 ? stored_block(s) : type == 1 ? fixed_block(s) : type == 2 ? dynamic_block(s)
                                                                          : fail(s, "block type 3 (reserved)");
        if (rc)
            return -1;
    }
    s->bits = 0;
    s->nbits = 0;
    if (s->n - s->pos < 4)
        return fail(s, "truncated input (the Adler-32 is missing)");
    const uint8_t *p = s->in + s->pos;
    uint32_t want = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    uint32_t got = pg_adler32(1, s->out, s->len);
    if (want != got)
        return fail(s, "Adler-32 of the output is 0x%08X, the stream says 0x%08X", got, want);
    s->pos += 4;
    if (s->pos != s->n)
        return fail(s, "%zu bytes after the end of the zlib stream", s->n - s->pos);
    return 0;
}

int pg_zlib_decompress(uint8_t **out, size_t *out_len, const uint8_t *in, size_t n, size_t max_out)
{
    if (!out || !out_len || (!in && n)) {
        pg_set_error("pg_zlib_decompress: %s is NULL", !out ? "out" : !out_len ? "out_len" : "in");
        return -1;
    }
    *out = NULL;
    *out_len = 0;
    inflater s = {in, n, 0, 0, 0, NULL, 0, 0, max_out};
    if (header(&s) || blocks(&s)) {
        free(s.out);
        return -1;
    }
    if (!s.out && !(s.out = malloc(1))) {
        pg_set_error("pg_zlib_decompress: out of memory");
        return -1;
    }
    *out = s.out;
    *out_len = s.len;
    return 0;
}

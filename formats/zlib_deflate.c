/* pg_zlib_compress of png.h: a zlib stream (RFC 1950) of deflate blocks
 * (RFC 1951).
 *
 * LZ77 (section 4): three-byte prefixes are hashed; each hash keeps a chain
 * of earlier positions within the 32 KiB window, searched at most MAX_CHAIN
 * deep for the longest match (3..258 bytes). Matching is lazy: a match is
 * kept back one byte in case the next position starts a longer one. The
 * symbols (literals and length/distance pairs) are gathered BLOCK_SYMS at a
 * time; each block is written as whichever of fixed Huffman codes, dynamic
 * codes (lengths limited to 15 bits, the code-length code to 7) and stored
 * bytes takes the fewest bits. */
#include "png.h"
#include "zlib_huff.h"
#include "zlib_impl.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define HASH_BITS 15
#define WMASK (PG_ZLIB_WINDOW - 1)
#define MIN_MATCH 3
#define MAX_MATCH 258
#define MAX_CHAIN 64   /* candidates tried per position */
#define GOOD_MATCH 32  /* a match this long cuts the search to a quarter */
#define LAZY_MAX 32    /* matches this long are taken at once, no lazy look */
#define TOO_FAR 4096   /* a 3-byte match further back than this costs more than its literals */
#define BLOCK_SYMS 32768
#define STORED_MAX 65535u

typedef struct sym {
    uint16_t len;  /* literal byte (dist 0) or match length 3..258 */
    uint16_t dist; /* 0 for a literal, else the match's distance 1..32768 */
} sym;

typedef struct deflater {
    const uint8_t *in;
    size_t n;
    int64_t *head;              /* [1 << HASH_BITS] latest position of each hash, -1 none */
    int64_t *prev;              /* [WINDOW] the position before p with p's hash, at p & WMASK */
    sym *syms;                  /* [BLOCK_SYMS] the current block */
    size_t nsyms, block_start, done; /* block's first input byte; input bytes covered by symbols */
    uint8_t *out;               /* output: len bytes of cap, then acc's nacc bits */
    size_t len, cap;
    uint64_t acc;
    int nacc;
    bool oom;
} deflater;

/* ---- bits out (section 3.1.1: least significant bit first) ------------------------------- */

/* Room for at least more bytes; sets oom and returns false when out of memory. */
static bool reserve(deflater *d, size_t more)
{
    if (d->oom)
        return false;
    if (d->cap - d->len >= more + 8)
        return true;
    size_t cap = d->cap + d->cap / 2 + more + 64;
    uint8_t *p = realloc(d->out, cap);
    if (!p) {
        d->oom = true;
        return false;
    }
    d->out = p;
    d->cap = cap;
    return true;
}

/* k <= 32 bits; the room was reserved */
static void put_bits(deflater *d, uint32_t v, int k)
{
    d->acc |= (uint64_t)v << d->nacc;
    d->nacc += k;
    while (d->nacc >= 8) {
        d->out[d->len++] = (uint8_t)d->acc;
        d->acc >>= 8;
        d->nacc -= 8;
    }
}

static void align_byte(deflater *d)
{
    if (d->nacc > 0)
        put_bits(d, 0, 8 - d->nacc);
}

/* ---- symbols and their codes (section 3.2.5) ------------------------------------------- */

static int len_code(unsigned len)
{
    int c = 28;
    while (pg_zlib_len_base[c] > len)
        c--;
    return c;
}

static int dist_code(unsigned dist)
{
    int c = 29;
    while (pg_zlib_dist_base[c] > dist)
        c--;
    return c;
}

typedef struct block_stats {
    uint32_t lit[286], dist[30];
    uint64_t extra_bits; /* the extra bits of lengths and distances */
} block_stats;

static void count_syms(const deflater *d, block_stats *st)
{
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < d->nsyms; i++) {
        sym s = d->syms[i];
        if (!s.dist) {
            st->lit[s.len]++;
            continue;
        }
        int lc = len_code(s.len), dc = dist_code(s.dist);
        st->lit[257 + lc]++;
        st->dist[dc]++;
        st->extra_bits += pg_zlib_len_extra[lc] + pg_zlib_dist_extra[dc];
    }
    st->lit[256] = 1; /* end of block */
}

static uint64_t data_bits(const block_stats *st, const uint8_t *ll, const uint8_t *dl)
{
    uint64_t bits = st->extra_bits;
    for (int s = 0; s < 286; s++)
        bits += (uint64_t)st->lit[s] * ll[s];
    for (int s = 0; s < 30; s++)
        bits += (uint64_t)st->dist[s] * dl[s];
    return bits;
}

static void write_syms(deflater *d, const uint8_t *ll, const uint8_t *dl)
{
    uint16_t lcode[288], dcode[30];
    pg_huff_codes(ll, 288, lcode);
    pg_huff_codes(dl, 30, dcode);
    for (size_t i = 0; i < d->nsyms; i++) {
        sym s = d->syms[i];
        if (!s.dist) {
            put_bits(d, lcode[s.len], ll[s.len]);
            continue;
        }
        int lc = len_code(s.len), dc = dist_code(s.dist);
        put_bits(d, lcode[257 + lc], ll[257 + lc]);
        put_bits(d, s.len - pg_zlib_len_base[lc], pg_zlib_len_extra[lc]);
        put_bits(d, dcode[dc], dl[dc]);
        put_bits(d, s.dist - pg_zlib_dist_base[dc], pg_zlib_dist_extra[dc]);
    }
    put_bits(d, lcode[256], ll[256]);
}

/* ---- the dynamic block header (section 3.2.7) -------------------------------------------- */

typedef struct dyn_header {
    uint8_t ll[288], dl[30];     /* the codes' lengths */
    int hlit, hdist, hclen;
    uint8_t op[286 + 30], arg[286 + 30]; /* run-length coded lengths: symbol 0..18, its extra bits */
    int nops;
    uint8_t cl[19];              /* the code-length code */
    uint64_t bits;               /* the header's size */
} dyn_header;

static void add_op(dyn_header *h, int op, int arg)
{
    h->op[h->nops] = (uint8_t)op;
    h->arg[h->nops++] = (uint8_t)arg;
}

/* A run of `run` copies of length v: 16 repeats the previous length 3..6
 * times, 17 and 18 give 3..10 and 11..138 zeros. */
static void add_run(dyn_header *h, int v, int run)
{
    if (v == 0) {
        for (; run >= 11; run -= run < 138 ? run : 138)
            add_op(h, 18, (run < 138 ? run : 138) - 11);
        if (run >= 3) {
            add_op(h, 17, run - 3);
            run = 0;
        }
    } else {
        add_op(h, v, 0);
        for (run--; run >= 3; run -= run < 6 ? run : 6)
            add_op(h, 16, (run < 6 ? run : 6) - 3);
    }
    for (; run > 0; run--)
        add_op(h, v, 0);
}

static void dyn_build(dyn_header *h, const block_stats *st)
{
    memset(h->ll, 0, sizeof h->ll);
    pg_huff_lengths(st->lit, 286, PG_ZLIB_MAX_BITS, h->ll);
    pg_huff_lengths(st->dist, 30, PG_ZLIB_MAX_BITS, h->dl);
    for (h->hlit = 286; h->ll[h->hlit - 1] == 0; h->hlit--) {}
    for (h->hdist = 30; h->hdist > 1 && h->dl[h->hdist - 1] == 0; h->hdist--) {}
    uint8_t all[286 + 30];
    memcpy(all, h->ll, (size_t)h->hlit);
    memcpy(all + h->hlit, h->dl, (size_t)h->hdist);
    int total = h->hlit + h->hdist;
    h->nops = 0;
    for (int i = 0; i < total;) {
        int run = 1;
        while (i + run < total && all[i + run] == all[i])
            run++;
        add_run(h, all[i], run);
        i += run;
    }
    uint32_t freq[19] = {0};
    for (int i = 0; i < h->nops; i++)
        freq[h->op[i]]++;
    pg_huff_lengths(freq, 19, 7, h->cl);
    for (h->hclen = 19; h->hclen > 4 && h->cl[pg_zlib_clen_order[h->hclen - 1]] == 0; h->hclen--) {}
    h->bits = 5 + 5 + 4 + 3 * (uint64_t)h->hclen;
    for (int s = 0; s < 19; s++)
        h->bits += (uint64_t)freq[s] * h->cl[s];
    h->bits += 2 * (uint64_t)freq[16] + 3 * (uint64_t)freq[17] + 7 * (uint64_t)freq[18];
}

static void dyn_write(deflater *d, const dyn_header *h)
{
    static const int EXTRA[19] = {[16] = 2, [17] = 3, [18] = 7};
    uint16_t code[19];
    pg_huff_codes(h->cl, 19, code);
    put_bits(d, (uint32_t)(h->hlit - 257), 5);
    put_bits(d, (uint32_t)(h->hdist - 1), 5);
    put_bits(d, (uint32_t)(h->hclen - 4), 4);
    for (int i = 0; i < h->hclen; i++)
        put_bits(d, h->cl[pg_zlib_clen_order[i]], 3);
    for (int i = 0; i < h->nops; i++) {
        put_bits(d, code[h->op[i]], h->cl[h->op[i]]);
        put_bits(d, h->arg[i], EXTRA[h->op[i]]);
    }
}

/* ---- blocks -------------------------------------------------------------------------------- */

static void fixed_lengths(uint8_t *ll, uint8_t *dl)
{
    for (int i = 0; i < 288; i++)
        ll[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    memset(dl, 5, 30);
}

/* Bits of the input bytes [block_start, done) as stored blocks (section
 * 3.2.4): 3 header bits, padding to a byte, LEN and NLEN, the bytes; one such
 * block per 65535 bytes. */
static uint64_t stored_bits(const deflater *d)
{
    size_t n = d->done - d->block_start;
    size_t chunks = n == 0 ? 1 : (n + STORED_MAX - 1) / STORED_MAX;
    int pad = (8 - (d->nacc + 3) % 8) % 8;
    return 3 + (uint64_t)pad + 32 + 8 * (uint64_t)n + (uint64_t)(chunks - 1) * 40;
}

static void write_stored(deflater *d, bool final)
{
    size_t at = d->block_start, end = d->done;
    do {
        size_t len = end - at < STORED_MAX ? end - at : STORED_MAX;
        put_bits(d, final && at + len == end, 1);
        put_bits(d, 0, 2);
        align_byte(d);
        put_bits(d, (uint32_t)len | (uint32_t)(~len & 0xFFFFu) << 16, 32);
        memcpy(d->out + d->len, d->in + at, len);
        d->len += len;
        at += len;
    } while (at < end);
}

/* Writes the gathered symbols as the smallest of the three block types. */
static void flush_block(deflater *d, bool final)
{
    block_stats st;
    count_syms(d, &st);
    dyn_header h;
    uint8_t fl[288], fd[30];
    fixed_lengths(fl, fd);
    dyn_build(&h, &st);
    uint64_t fixed = 3 + data_bits(&st, fl, fd);
    uint64_t dyn = 3 + h.bits + data_bits(&st, h.ll, h.dl);
    uint64_t stored = stored_bits(d);
    uint64_t best = fixed < dyn ? fixed : dyn;
    if (reserve(d, (size_t)((best < stored ? best : stored) / 8) + 16)) {
        if (stored <= best) {
            write_stored(d, final);
        } else if (fixed <= dyn) {
            put_bits(d, final | 1u << 1, 3); /* BTYPE 01 */
            write_syms(d, fl, fd);
        } else {
            put_bits(d, final | 2u << 1, 3); /* BTYPE 10 */
            dyn_write(d, &h);
            write_syms(d, h.ll, h.dl);
        }
    }
    d->nsyms = 0;
    d->block_start = d->done;
}

/* ---- LZ77 ---------------------------------------------------------------------------------- */

static void emit(deflater *d, unsigned len, unsigned dist)
{
    d->syms[d->nsyms++] = (sym){(uint16_t)len, (uint16_t)dist};
    d->done += dist ? len : 1;
    if (d->nsyms == BLOCK_SYMS)
        flush_block(d, false);
}

/* Hash of the three bytes at p (multiplicative, top HASH_BITS bits). */
static uint32_t hash3(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    return (v * 2654435761u) >> (32 - HASH_BITS);
}

/* Records position i in its hash chain; returns the chain's previous head
 * (the latest earlier position with the same hash), or -1. */
static int64_t insert(deflater *d, size_t i)
{
    if (i + MIN_MATCH > d->n)
        return -1;
    uint32_t h = hash3(d->in + i);
    int64_t before = d->head[h];
    d->prev[i & WMASK] = before;
    d->head[h] = (int64_t)i;
    return before;
}

/* Longest match for position i along the chain from cand: its length (0 when
 * under MIN_MATCH, or a 3-byte match too far back) and *dist. */
static unsigned longest_match(const deflater *d, size_t i, int64_t cand, unsigned *dist)
{
    size_t left = d->n - i;
    unsigned maxlen = left < MAX_MATCH ? (unsigned)left : MAX_MATCH, best = MIN_MATCH - 1;
    const uint8_t *q = d->in + i;
    int chain = MAX_CHAIN;
    while (cand >= 0 && i - (size_t)cand <= PG_ZLIB_WINDOW && chain-- > 0) {
        const uint8_t *p = d->in + cand;
        if (p[best] == q[best] && p[0] == q[0] && p[1] == q[1]) {
            unsigned l = 2;
            while (l < maxlen && p[l] == q[l])
                l++;
            if (l > best) {
                best = l;
                *dist = (unsigned)(i - (size_t)cand);
                if (l == maxlen)
                    break;
                if (l >= GOOD_MATCH && chain > MAX_CHAIN / 4)
                    chain = MAX_CHAIN / 4;
            }
        }
        int64_t next = d->prev[cand & WMASK];
        if (next >= cand)
            break; /* the slot was reused by a later position: the chain ends */
        cand = next;
    }
    if (best < MIN_MATCH || (best == MIN_MATCH && *dist > TOO_FAR))
        return 0;
    return best;
}

/* Emits the match (len, dist) found at position at and hashes the positions
 * it covers from `from` on (those before are hashed); returns its end. */
static size_t take_match(deflater *d, size_t at, unsigned len, unsigned dist, size_t from)
{
    emit(d, len, dist);
    for (size_t k = from; k < at + len; k++)
        insert(d, k);
    return at + len;
}

static void lz77(deflater *d)
{
    size_t i = 0;
    unsigned plen = 0, pdist = 0; /* a match held back at i - 1 (lazy matching) */
    while (i < d->n) {
        unsigned dist = 0, len = 0;
        int64_t cand = insert(d, i);
        if (i + MIN_MATCH <= d->n)
            len = longest_match(d, i, cand, &dist);
        if (plen) {
            if (len > plen) { /* the byte before goes as a literal, the new match is held */
                emit(d, d->in[i - 1], 0);
                plen = len;
                pdist = dist;
                i++;
            } else {
                i = take_match(d, i - 1, plen, pdist, i + 1);
                plen = 0;
            }
        } else if (len >= LAZY_MAX) {
            i = take_match(d, i, len, dist, i + 1);
        } else if (len) {
            plen = len;
            pdist = dist;
            i++;
        } else {
            emit(d, d->in[i], 0);
            i++;
        }
    }
    if (plen)
        emit(d, plen, pdist);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int pg_zlib_compress(uint8_t **out, size_t *out_len, const uint8_t *in, size_t n)
{
    if (!out || !out_len || (!in && n)) {
        pg_set_error("pg_zlib_compress: %s is NULL", !out ? "out" : !out_len ? "out_len" : "in");
        return -1;
    }
    *out = NULL;
    *out_len = 0;
    deflater d = {.in = in, .n = n};
    d.head = malloc(sizeof(int64_t) << HASH_BITS);
    d.prev = malloc(sizeof(int64_t) * PG_ZLIB_WINDOW);
    d.syms = malloc(sizeof(sym) * BLOCK_SYMS);
    if (d.head && d.prev && d.syms && reserve(&d, n / 8 + 64)) {
        memset(d.head, 0xFF, sizeof(int64_t) << HASH_BITS); /* every head -1 */
        d.out[d.len++] = 0x78; /* CMF: CM 8 (deflate), CINFO 7 (32 KiB window) */
        d.out[d.len++] = 0x9C; /* FLG: FLEVEL 2 (default), no dictionary; 0x789C % 31 == 0 */
        lz77(&d);
        flush_block(&d, true);
        if (reserve(&d, 4)) {
            align_byte(&d);
            put_be32(d.out + d.len, pg_adler32(1, in, n));
            d.len += 4;
        }
    } else {
        d.oom = true;
    }
    free(d.head);
    free(d.prev);
    free(d.syms);
    if (d.oom) {
        free(d.out);
        pg_set_error("pg_zlib_compress: out of memory compressing %zu bytes", n);
        return -1;
    }
    *out = d.out;
    *out_len = d.len;
    return 0;
}

/* pg_zlib_compress and pg_zlib_decompress (formats/png.h): round trips,
 * streams made by Python's zlib decoded byte for byte (tests/zlib_streams.h),
 * and hand-made malformed streams, each refused with a message naming what
 * was wrong. The malformed streams are written here bit by bit (RFC 1951
 * section 3.1.1: least significant bit first, Huffman codes from their top bit). */
#include "testutil.h"
#include "zlib_streams.h"
#include "../formats/png.h"
#include "../formats/zlib_huff.h"

/* ---- data --------------------------------------------------------------------------------- */

/* The text of the Python streams: n lines "the quick brown fox %d jumps over the lazy dog %d\n". */
static uint8_t *ztext(int n, size_t *len)
{
    size_t cap = (size_t)n * 64 + 1, k = 0;
    char *s = malloc(cap);
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "the quick brown fox %d jumps over the lazy dog %d\n", i, i * i % 97);
    *len = k;
    return (uint8_t *)s;
}

/* n bytes of a 64-bit LCG (Knuth's MMIX constants), top byte of each state */
static uint8_t *random_bytes(size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (uint8_t)(seed >> 56);
    }
    return b;
}

/* Compresses, checks the size against max_size, decompresses, compares; returns the size. */
static size_t roundtrip(const uint8_t *in, size_t n, size_t max_size)
{
    uint8_t *z, *back;
    size_t zn, bn;
    cr_assert_eq(pg_zlib_compress(&z, &zn, in, n), 0, "%s", pg_last_error());
    cr_assert_leq(zn, max_size, "%zu bytes compress to %zu, expected at most %zu", n, zn, max_size);
    cr_assert_eq(pg_zlib_decompress(&back, &bn, z, zn, n), 0, "%s", pg_last_error());
    cr_assert_eq(bn, n);
    if (n)
        cr_assert_arr_eq(back, in, n);
    free(z);
    free(back);
    return zn;
}

/* ---- round trips ------------------------------------------------------------------------ */

Test(zlib, roundtrip_empty_one_byte_random)
{
    uint8_t one = 0xA5;
    roundtrip(NULL, 0, 8);   /* 2 header bytes, an empty fixed block (10 bits), Adler-32 */
    roundtrip(&one, 1, 11);
    /* random bytes do not compress: stored blocks, 5 bytes each per at most 64 KiB */
    size_t n = 200000;
    uint8_t *r = random_bytes(n, 1);
    roundtrip(r, n, n + 5 * (n / 32768 + 2) + 6);
    free(r);
}

Test(zlib, roundtrip_repetitive_and_long)
{
    size_t n = 300000; /* > 64 KiB: several blocks */
    uint8_t *a = malloc(n), *b = malloc(n);
    for (size_t i = 0; i < n; i++) {
        a[i] = (uint8_t)"abc"[i % 3];
        b[i] = (uint8_t)(i / 1000 + (i % 7 == 0)); /* runs of slowly changing bytes */
    }
    roundtrip(a, n, n / 200); /* matches of 258 at distance 3: about 4 bytes per 258 */
    roundtrip(b, n, n / 20);
    size_t tn;
    uint8_t *t = ztext(2000, &tn);
    size_t zn = roundtrip(t, tn, tn / 3);
    cr_assert_gt(zn, 0u);
    free(a);
    free(b);
    free(t);
}

Test(zlib, window_distances)
{
    /* a random block then the same block again 20000 bytes on: found (distance < 32 KiB) */
    size_t half = 20000;
    uint8_t *near = random_bytes(2 * half, 7);
    memcpy(near + half, near, half);
    roundtrip(near, 2 * half, half + half / 50);
    /* 40000 bytes on: beyond the window, so stored, and still exact */
    size_t far = 40000;
    uint8_t *fr = random_bytes(2 * far, 9);
    memcpy(fr + far, fr, far);
    size_t zn = roundtrip(fr, 2 * far, 2 * far + 64);
    cr_assert_gt(zn, 2 * far, "no match can reach 40000 bytes back");
    /* a repeat at exactly 32768 bytes, the longest distance deflate can code */
    uint8_t *edge = random_bytes(32768 + 1000, 11);
    memcpy(edge + 32768, edge, 1000);
    roundtrip(edge, 32768 + 1000, 32768 + 200);
    free(near);
    free(fr);
    free(edge);
}

/* ---- length-limited codes ------------------------------------------------------------ */

/* Kraft sum of the lengths, in units of 2^-limit: 2^limit for a complete code. */
static uint64_t kraft(const uint8_t *len, int num, int limit)
{
    uint64_t k = 0;
    for (int s = 0; s < num; s++)
        if (len[s])
            k += 1ull << (limit - len[s]);
    return k;
}

Test(zlib, huffman_lengths_limited_and_complete)
{
    /* Fibonacci counts make the deepest Huffman tree: depth num - 1 unlimited */
    uint32_t fib[30];
    fib[0] = fib[1] = 1;
    for (int i = 2; i < 30; i++)
        fib[i] = fib[i - 1] + fib[i - 2];
    uint8_t len[30];
    pg_huff_lengths(fib, 30, 15, len);
    for (int s = 0; s < 30; s++) {
        cr_assert(len[s] >= 1 && len[s] <= 15, "symbol %d: length %d", s, len[s]);
        if (s > 0)
            cr_assert_leq(len[s], len[s - 1], "a more frequent symbol has a longer code");
    }
    cr_assert_eq(kraft(len, 30, 15), 1ull << 15, "complete code");
    pg_huff_lengths(fib, 19, 7, len); /* the code-length code's limit */
    for (int s = 0; s < 19; s++)
        cr_assert(len[s] >= 1 && len[s] <= 7, "symbol %d: length %d", s, len[s]);
    cr_assert_eq(kraft(len, 19, 7), 1ull << 7);
    /* one used symbol still gets a complete two-code code */
    uint32_t one[5] = {0, 0, 9, 0, 0};
    pg_huff_lengths(one, 5, 15, len);
    cr_assert(len[2] == 1 && kraft(len, 5, 15) == 1ull << 15);
    /* and end to end: 25 byte values with Fibonacci counts, shuffled */
    size_t n = 0;
    for (int i = 0; i < 25; i++)
        n += fib[i];
    uint8_t *data = malloc(n), *r = random_bytes(4 * n, 3);
    for (size_t i = 0, k = 0; i < 25; i++)
        for (uint32_t c = 0; c < fib[i]; c++)
            data[k++] = (uint8_t)(i * 10);
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (r[4 * i] | (size_t)r[4 * i + 1] << 8 | (size_t)r[4 * i + 2] << 16) % (i + 1);
        uint8_t t = data[i];
        data[i] = data[j];
        data[j] = t;
    }
    roundtrip(data, n, n / 2); /* about 2 bits a byte, far below 8 */
    free(data);
    free(r);
}

/* ---- streams from Python's zlib ------------------------------------------------------- */

Test(zlib, python_streams_decode_exactly)
{
    int n = (int)(sizeof ZSTREAMS / sizeof ZSTREAMS[0]);
    for (int i = 0; i < n; i++) {
        const zstream *s = &ZSTREAMS[i];
        size_t tn, on;
        uint8_t *text = ztext(s->lines, &tn), *out;
        int rc = pg_zlib_decompress(&out, &on, (const uint8_t *)s->bytes, s->len, tn);
        cr_assert_eq(rc, 0, "%s: %s", s->name, pg_last_error());
        cr_assert_eq(on, tn, "%s: %zu bytes, expected %zu", s->name, on, tn);
        cr_assert_arr_eq(out, text, tn, "%s", s->name);
        free(out);
        free(text);
    }
}

Test(zlib, compresses_like_zlib)
{
    /* Python's zlib level 9 makes 896 bytes of ZTEXT(200); within 10 % of it */
    size_t tn;
    uint8_t *t = ztext(200, &tn);
    size_t zn = roundtrip(t, tn, 896 + 90);
    cr_assert_gt(zn, 400u);
    free(t);
}

/* ---- malformed streams ------------------------------------------------------------------- */

typedef struct bits {
    uint8_t b[512];
    size_t n; /* bits written */
} bits;

static void put(bits *w, uint32_t v, int k)
{
    for (int i = 0; i < k; i++, w->n++)
        if ((v >> i) & 1)
            w->b[w->n / 8] |= (uint8_t)(1u << (w->n % 8));
}

/* a Huffman code of len bits, top bit first */
static void put_code(bits *w, uint32_t code, int len)
{
    for (int i = len - 1; i >= 0; i--)
        put(w, (code >> i) & 1, 1);
}

static bits zstart(void)
{
    bits w;
    memset(&w, 0, sizeof w);
    w.b[0] = 0x78;
    w.b[1] = 0x01;
    w.n = 16;
    return w;
}

/* Pads to a byte and appends the Adler-32 of out; returns the stream's length. */
static size_t zend(bits *w, const uint8_t *out, size_t n)
{
    size_t k = (w->n + 7) / 8;
    uint32_t a = pg_adler32(1, out, n);
    for (int i = 0; i < 4; i++)
        w->b[k + i] = (uint8_t)(a >> (24 - 8 * i));
    return k + 4;
}

/* Decompresses and expects -1 with a message holding both "pg_zlib_decompress" and what. */
static void refused(const uint8_t *z, size_t n, size_t max_out, const char *what)
{
    uint8_t *out = (uint8_t *)"untouched";
    size_t on = 7;
    cr_assert_eq(pg_zlib_decompress(&out, &on, z, n, max_out), -1, "accepted a stream with %s", what);
    cr_assert_null(out);
    cr_assert_eq(on, 0u);
    cr_assert(strstr(pg_last_error(), "pg_zlib_decompress: "), "%s", pg_last_error());
    cr_assert(strstr(pg_last_error(), what), "expected '%s' in: %s", what, pg_last_error());
}

static void accepted(const uint8_t *z, size_t n, const uint8_t *want, size_t wn)
{
    uint8_t *out;
    size_t on;
    cr_assert_eq(pg_zlib_decompress(&out, &on, z, n, 1000), 0, "%s", pg_last_error());
    cr_assert_eq(on, wn);
    if (wn)
        cr_assert_arr_eq(out, want, wn);
    free(out);
}

Test(zlib, bad_header_and_wrapper)
{
    const uint8_t *ok = (const uint8_t *)ZSTREAMS[1].bytes;
    size_t n = ZSTREAMS[1].len;
    uint8_t z[128];
    memcpy(z, ok, n);
    z[0] = 0x79; /* CM 9 */
    refused(z, n, 1000, "compression method 9");
    z[0] = 0x88; /* CINFO 8: a 64 KiB window */
    z[1] = 0x1C; /* 0x881C % 31 == 0 */
    refused(z, n, 1000, "window size 2^16");
    z[0] = 0x78;
    z[1] = 0x02;
    refused(z, n, 1000, "header check bits (FCHECK)");
    z[1] = 0xBB; /* FDICT set, 0x78BB % 31 == 0 */
    refused(z, n, 1000, "preset dictionary (FDICT)");
    z[1] = ok[1];
    z[n - 1] ^= 1;
    refused(z, n, 1000, "Adler-32 of the output");
    z[n - 1] ^= 1;
    z[n] = 0;
    refused(z, n + 1, 1000, "1 bytes after the end");
    /* every shorter prefix is truncated */
    for (size_t k = 0; k < n; k++)
        refused(z, k, 1000, "truncated");
    size_t tn;
    uint8_t *t = ztext(ZSTREAMS[1].lines, &tn);
    refused(z, n, tn - 1, "output past max_out");
    free(t);
}

Test(zlib, bad_blocks)
{
    static const uint8_t reserved[] = {0x78, 0x01, 0x07, 0, 0, 0, 1};
    refused(reserved, sizeof reserved, 100, "block type 3 (reserved)");
    static const uint8_t stored[] = {0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFE, 'h', 'i', 0x01, 0x3B, 0x00, 0xD2};
    refused(stored, sizeof stored, 100, "stored block length 2 does not match its complement");
    /* two empty stored blocks (what a zlib flush writes): valid, nothing out (found by make fuzz-png) */
    static const uint8_t empty[] = {0x78, 0x01, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0, 0, 0, 1};
    accepted(empty, sizeof empty, NULL, 0);
    static const uint8_t stored_short[] = {0x78, 0x01, 0x01, 0x05, 0x00, 0xFA, 0xFF, 'h', 'i'};
    refused(stored_short, sizeof stored_short, 100, "stored block of 5 bytes, 2 left");

    /* fixed codes (section 3.2.6): 256..279 7 bits from 0, 280..287 8 bits from 0xC0, distances 5 bits */
    bits w = zstart();
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_code(&w, 1, 7); /* 257: length 3 */
    put_code(&w, 0, 5); /* distance 1, with nothing written yet */
    refused(w.b, zend(&w, NULL, 0), 100, "distance 1 past the start of the output (0 bytes so far)");
    w = zstart();
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_code(&w, 0xC6, 8); /* 286 */
    refused(w.b, zend(&w, NULL, 0), 100, "invalid length symbol 286");
    w = zstart();
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_code(&w, 0x30 + 'a', 8); /* literal 'a' */
    put_code(&w, 1, 7);
    put_code(&w, 30, 5); /* distance symbol 30 */
    refused(w.b, zend(&w, NULL, 0), 100, "invalid distance symbol 30");
}

/* A dynamic block (section 3.2.7) with lit/len lengths ll[0..256] and distance
 * lengths dl[0..nd-1], each length 0, 1 or 2, sent with the code-length code
 * {0, 1, 2, 18} of 2 bits each (codes 00, 01, 10, 11 in symbol order); zeros
 * in runs of 11 or more as 18. Then `data` bits (a code string of '0'/'1'). */
static size_t dynamic(bits *w, const uint8_t *ll, const uint8_t *dl, int nd, const char *data, const uint8_t *out,
                      size_t on)
{
    *w = zstart();
    put(w, 1, 1);
    put(w, 2, 2);
    put(w, 0, 5);            /* HLIT 257 */
    put(w, (uint32_t)nd - 1, 5);
    put(w, 15, 4);           /* HCLEN 19: order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1 15 */
    static const int ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    for (int i = 0; i < 19; i++)
        put(w, ORDER[i] <= 2 || ORDER[i] == 18 ? 2 : 0, 3);
    uint8_t all[300];
    memcpy(all, ll, 257);
    memcpy(all + 257, dl, (size_t)nd);
    for (int i = 0; i < 257 + nd;) {
        int run = 0;
        while (i + run < 257 + nd && all[i + run] == 0 && run < 138)
            run++;
        if (run >= 11) {
            put_code(w, 3, 2);
            put(w, (uint32_t)run - 11, 7);
            i += run;
        } else {
            put_code(w, all[i], 2);
            i++;
        }
    }
    for (const char *c = data; *c; c++)
        put(w, *c == '1', 1);
    return zend(w, out, on);
}

Test(zlib, bad_dynamic_codes)
{
    bits w;
    uint8_t ll[257] = {0}, dl[3] = {1, 0, 0};
    static const uint8_t zero[1] = {0};
    /* literal 0 and end-of-block, one bit each; one one-bit distance code: allowed (RFC 1951 3.2.7) */
    ll[0] = ll[256] = 1;
    accepted(w.b, dynamic(&w, ll, dl, 1, "01", zero, 1), zero, 1);
    dl[0] = 0; /* no distance codes at all: allowed, data all literals */
    accepted(w.b, dynamic(&w, ll, dl, 1, "01", zero, 1), zero, 1);
    dl[0] = dl[1] = 2; /* two 2-bit distance codes: incomplete */
    refused(w.b, dynamic(&w, ll, dl, 2, "01", zero, 1), 100, "incomplete distance code lengths (2 codes)");
    dl[0] = dl[1] = dl[2] = 1;
    refused(w.b, dynamic(&w, ll, dl, 3, "01", zero, 1), 100, "over-subscribed distance code lengths");
    dl[0] = 1;
    dl[1] = dl[2] = 0;
    ll[1] = 1; /* three one-bit lit/len codes */
    refused(w.b, dynamic(&w, ll, dl, 1, "01", zero, 1), 100, "over-subscribed literal/length code lengths");
    ll[1] = 0;
    ll[256] = 2;
    refused(w.b, dynamic(&w, ll, dl, 1, "01", zero, 1), 100, "incomplete literal/length code lengths");
    ll[1] = 1;
    ll[256] = 0;
    refused(w.b, dynamic(&w, ll, dl, 1, "01", zero, 1), 100, "without an end-of-block code");
    /* canonical codes (section 3.2.2): lengths 1, 2, 2 for 0, 255, 256 give 0, 10, 11 */
    static const uint8_t two[2] = {0, 255};
    ll[1] = 0;
    ll[255] = ll[256] = 2;
    accepted(w.b, dynamic(&w, ll, dl, 1, "01011", two, 2), two, 2);
    /* HDIST 31 codes, more than the 30 there are */
    w = zstart();
    put(&w, 1, 1);
    put(&w, 2, 2);
    put(&w, 0, 5);
    put(&w, 30, 5);
    put(&w, 0, 4);
    refused(w.b, zend(&w, NULL, 0), 100, "too many codes");
}

/* A dynamic block whose code-length code is clen (19 lengths in symbol order), then `data` bits. */
static size_t clen_block(bits *w, const uint8_t *clen, const char *data)
{
    static const int ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    *w = zstart();
    put(w, 1, 1);
    put(w, 2, 2);
    put(w, 0, 5);
    put(w, 0, 5);
    put(w, 15, 4);
    for (int i = 0; i < 19; i++)
        put(w, clen[ORDER[i]], 3);
    for (const char *c = data; *c; c++)
        put(w, *c == '1', 1);
    return zend(w, NULL, 0);
}

Test(zlib, bad_code_length_codes)
{
    bits w;
    uint8_t clen[19] = {0};
    clen[0] = 1;
    refused(w.b, clen_block(&w, clen, ""), 100, "incomplete code-length code");
    clen[1] = clen[2] = 1;
    refused(w.b, clen_block(&w, clen, ""), 100, "over-subscribed code-length code");
    memset(clen, 0, sizeof clen);
    clen[0] = clen[16] = 1; /* 0 -> '0', 16 -> '1' */
    refused(w.b, clen_block(&w, clen, "100"), 100, "code length repeat (16) with no previous length");
    memset(clen, 0, sizeof clen);
    clen[0] = clen[18] = 1; /* 18 -> '1' + 7 bits: 138 zeros, twice, of 258 lengths */
    refused(w.b, clen_block(&w, clen, "11111111" "11111111"), 100, "code length repeat past the 258 lengths");
}

/* ---- bad arguments --------------------------------------------------------------------- */

Test(zlib, null_args)
{
    uint8_t *out;
    size_t n;
    cr_assert_eq(pg_zlib_compress(NULL, &n, (const uint8_t *)"a", 1), -1);
    cr_assert(strstr(pg_last_error(), "pg_zlib_compress: out is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_zlib_compress(&out, &n, NULL, 1), -1);
    cr_assert(strstr(pg_last_error(), "pg_zlib_compress: in is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_zlib_decompress(&out, NULL, (const uint8_t *)"a", 1, 10), -1);
    cr_assert(strstr(pg_last_error(), "pg_zlib_decompress: out_len is NULL"), "%s", pg_last_error());
    cr_assert_eq(pg_zlib_decompress(&out, &n, NULL, 3, 10), -1);
    cr_assert(strstr(pg_last_error(), "pg_zlib_decompress: in is NULL"), "%s", pg_last_error());
}

/* Length-limited Huffman code lengths and canonical codes for the deflate
 * compressor (zlib_deflate.c), RFC 1951 section 3.2.2. */
#include "zlib_huff.h"

#include <stdlib.h>
#include <string.h>

typedef struct leaf {
    uint32_t freq;
    uint16_t sym;
} leaf;

static int by_freq(const void *a, const void *b)
{
    const leaf *x = a, *y = b;
    if (x->freq != y->freq)
        return x->freq < y->freq ? -1 : 1;
    return x->sym < y->sym ? -1 : x->sym > y->sym;
}

/* Depth of each of the m >= 2 leaves (sorted by rising freq) in a Huffman
 * tree, built with two queues: the leaves, and the internal nodes in the order
 * they are made (their weights never fall). bl[d] counts leaves of depth d. */
static void tree_depths(const leaf *lv, int m, uint32_t *bl, int maxd)
{
    uint64_t w[2 * PG_HUFF_MAX_SYMS];
    int parent[2 * PG_HUFF_MAX_SYMS], depth[2 * PG_HUFF_MAX_SYMS];
    for (int i = 0; i < m; i++)
        w[i] = lv[i].freq;
    int li = 0, ni = m; /* next leaf, next internal node to take */
    for (int next = m; next < 2 * m - 1; next++) {
        int pick[2];
        for (int k = 0; k < 2; k++)
            pick[k] = (li < m && (ni >= next || w[li] <= w[ni])) ? li++ : ni++;
        w[next] = w[pick[0]] + w[pick[1]];
        parent[pick[0]] = parent[pick[1]] = next;
    }
    depth[2 * m - 2] = 0; /* the root; parents come after their children */
    for (int i = 2 * m - 3; i >= 0; i--)
        depth[i] = depth[parent[i]] + 1;
    memset(bl, 0, sizeof(uint32_t) * (size_t)(maxd + 1));
    for (int i = 0; i < m; i++)
        bl[depth[i] < maxd ? depth[i] : maxd]++;
}

/* Moves every code longer than limit up to it, keeping the Kraft sum (the
 * adjustment of the JPEG standard, Annex K.3): two leaves at depth i are
 * siblings; one joins depth i - 1 in their parent's place, the other becomes,
 * with a leaf from the deepest level j < i - 1 that has one, a pair of
 * children at j + 1 where that leaf was. */
static void limit_depths(uint32_t *bl, int maxd, int limit)
{
    for (int i = maxd; i > limit; i--)
        while (bl[i] > 0) {
            int j = i - 2;
            while (bl[j] == 0)
                j--;
            bl[i] -= 2;
            bl[i - 1] += 1;
            bl[j + 1] += 2;
            bl[j] -= 1;
        }
}

void pg_huff_lengths(const uint32_t *freq, int num, int limit, uint8_t *len)
{
    leaf lv[PG_HUFF_MAX_SYMS];
    int m = 0;
    memset(len, 0, (size_t)num);
    for (int s = 0; s < num; s++)
        if (freq[s])
            lv[m++] = (leaf){freq[s], (uint16_t)s};
    /* at least two codes, so the code is complete (a lone code would be 1 bit
     * of an incomplete code, which some decoders refuse) */
    for (int s = 0; m < 2; s++)
        if (!freq[s])
            lv[m++] = (leaf){0, (uint16_t)s};
    qsort(lv, (size_t)m, sizeof lv[0], by_freq);
    enum { MAXD = PG_HUFF_MAX_SYMS };
    uint32_t bl[MAXD + 1];
    tree_depths(lv, m, bl, MAXD);
    limit_depths(bl, MAXD, limit);
    /* the most frequent symbols (end of lv) take the shortest lengths */
    int k = m - 1;
    for (int d = 1; d <= limit; d++)
        for (uint32_t c = 0; c < bl[d]; c++)
            len[lv[k--].sym] = (uint8_t)d;
}

void pg_huff_codes(const uint8_t *len, int num, uint16_t *code)
{
    uint16_t count[16] = {0}, next[16];
    for (int s = 0; s < num; s++)
        count[len[s]]++;
    count[0] = 0;
    unsigned c = 0;
    for (int b = 1; b < 16; b++) {
        c = (c + count[b - 1]) << 1;
        next[b] = (uint16_t)c;
    }
    for (int s = 0; s < num; s++) {
        int l = len[s];
        if (!l) {
            code[s] = 0;
            continue;
        }
        unsigned v = next[l]++, r = 0;
        for (int b = 0; b < l; b++) /* reversed: deflate writes codes from their top bit */
            r |= ((v >> b) & 1u) << (l - 1 - b);
        code[s] = (uint16_t)r;
    }
}

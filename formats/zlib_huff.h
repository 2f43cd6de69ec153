/* Private (not installed): Huffman codes for the deflate compressor. */
#ifndef PG_FORMATS_ZLIB_HUFF_H
#define PG_FORMATS_ZLIB_HUFF_H

#include <stdint.h>

#define PG_HUFF_MAX_SYMS 288

/* Code lengths (0 for unused symbols) of a Huffman code for freq[0..num-1],
 * num <= PG_HUFF_MAX_SYMS, no code longer than limit (2^limit >= num); always
 * at least two codes, so the code is complete. */
void pg_huff_lengths(const uint32_t *freq, int num, int limit, uint8_t *len);

/* The canonical codes of RFC 1951 section 3.2.2 for these lengths, bit-reversed
 * so they can be written least significant bit first. */
void pg_huff_codes(const uint8_t *len, int num, uint16_t *code);

#endif

/* posgrad pictures: a dependency-free PNG writer and reader, the zlib
 * compression under them, a perceptual colormap and tensor heatmaps.
 *
 * The PNG is 8-bit, non-interlaced, one IHDR, one IDAT and an IEND chunk.
 * Each row gets the filter (PNG spec section 9: None, Sub, Up, Average,
 * Paeth) whose output has the smallest sum of |byte|; the IDAT holds the rows
 * as a zlib stream of pg_zlib_compress (LZ77 + Huffman, docs/png.md). Chunks
 * carry their CRC-32 and the zlib stream its Adler-32. Files are written
 * atomically: to "path.tmp.PID" then renamed over path, so a reader never sees
 * half a file. The reader takes any 8-bit gray, gray + alpha, RGB or RGBA PNG
 * that is not interlaced. Errors never abort: -1 and pg_set_error with a
 * message naming the function. */
#ifndef PG_PNG_H
#define PG_PNG_H

#include <stdint.h>

#include "../tensor/tensor.h"

/* Largest width or height accepted (the PNG limit is 2^31 - 1; this keeps a
 * row and the whole image well inside size_t and memory). */
#define PG_PNG_MAX_SIDE 16384

/* rows top to bottom; channels 1 (gray), 3 (RGB) or 4 (RGBA), 8 bits each.
 * pixels holds height * width * channels bytes, row-major, interleaved.
 * 0, or -1 + pg_set_error */
int pg_png_write(const char *path, int64_t width, int64_t height, int channels,
                 const uint8_t *pixels);

/* perceptual colormap (viridis-like, monotonic lightness), t in [0, 1]
 * clamped; NaN -> a gray (PG_PNG_NAN_GRAY). t is quantised to
 * PG_COLORMAP_LEVELS evenly spaced colours, each strictly lighter (CIE L*)
 * than the one before: 0 is dark violet, 1 light yellow. rgb NULL: an error. */
#define PG_COLORMAP_LEVELS 128
void pg_colormap(double t, uint8_t rgb[3]);

/* The gray used for NaN and infinite values, in every channel. */
#define PG_PNG_NAN_GRAY 128

/* a 2-D f32/f64 tensor (rows, cols) as a heatmap, each cell cell_px x cell_px
 * pixels; vmin == vmax means the tensor's own finite min/max (a constant
 * tensor maps to the colormap's middle); -inf/+inf/NaN cells drawn in a fixed
 * gray (PG_PNG_NAN_GRAY). Values of magnitude >= PG_PNG_HUGE count as
 * infinite: posgrad masks some logits with the finite -DBL_MAX (asymmetric
 * ALiBi), which would otherwise squash every other value into one colour.
 * Values outside [vmin, vmax] are clamped. Row 0 of the tensor is the top row
 * of the image. 0 or -1. */
#define PG_PNG_HUGE 1e300
int pg_png_heatmap(const char *path, const pg_tensor *t, int64_t cell_px, double vmin,
                   double vmax);

/* Checksums used by the writer, exposed for tests and other file formats.
 * crc: the PNG/zlib CRC-32 (polynomial 0xEDB88320, reflected, init and final
 * xor 0xFFFFFFFF) of n bytes; pass the previous result to continue a running
 * CRC, 0 to start. adler: Adler-32 of n bytes; continue with the previous
 * result, start with 1. buf NULL with n > 0: an error, and the running value
 * comes back unchanged. */
uint32_t pg_crc32(uint32_t crc, const uint8_t *buf, size_t n);
uint32_t pg_adler32(uint32_t adler, const uint8_t *buf, size_t n);

/* ---- in memory, and reading back ------------------------------------------------------- */

/* The PNG file of pg_png_write as bytes: *out malloc'd (the caller frees it),
 * *len its size. 0, or -1 + pg_set_error (nothing allocated). */
int pg_png_encode(uint8_t **out, size_t *len, int64_t width, int64_t height, int channels,
                  const uint8_t *pixels);

/* Decodes a PNG (8-bit gray, gray+alpha, RGB or RGBA; every filter type; not
 * interlaced; chunks' CRCs and the zlib Adler-32 checked) to *pixels
 * (malloc'd, height * width * channels bytes, rows top first). A corrupt or
 * unsupported file: -1 and a message naming what was wrong; nothing allocated. */
int pg_png_decode(const uint8_t *data, size_t len, int64_t *width, int64_t *height, int *channels,
                  uint8_t **pixels);
int pg_png_read(const char *path, int64_t *width, int64_t *height, int *channels, uint8_t **pixels);

/* zlib streams (RFC 1950 around RFC 1951 deflate). compress: LZ77 over a
 * 32 KiB window with Huffman codes (fixed or dynamic per block, whichever is
 * smaller, stored when neither helps). decompress: any valid stream (stored,
 * fixed and dynamic blocks), refusing output past max_out bytes. *out
 * malloc'd; 0, or -1 + pg_set_error. */
int pg_zlib_compress(uint8_t **out, size_t *out_len, const uint8_t *in, size_t n);
int pg_zlib_decompress(uint8_t **out, size_t *out_len, const uint8_t *in, size_t n, size_t max_out);

#endif

/* Rotary embedding's rotation of channel pairs, row by row: the one definition that
 * pg_rotate_pairs (autograd/op_rotate.c) and the fused attention's in-kernel rotation
 * (autograd/flash_kernels.h) both run, so the two give the same bits.
 *
 * n rows of Dh channels; C, S (n, R) hold each row's cos and sin (row stride R).
 * Pair i of R is (a, b) = (i, R + i) (half-split) or (2i, 2i + 1) (interleaved):
 *   forward   y_a = x_a C - x_b S,    y_b = x_b C + x_a S,    channels 2R .. Dh - 1 copied;
 *   backward  dx_a = dy_a C + dy_b S,  dx_b = dy_b C - dy_a S,  the rest dx = dy.
 * Each product rounds on its own (no contraction: -ffp-contract=off, and gcc 12's SLP
 * vectoriser, which fuses the interleaved pairs' alternating - and + into vfmaddsub even
 * then, is off for these functions: NO_SLP).
 *
 * Internal, included by autograd/op_rotate.c and autograd/op_flash.c. */
#ifndef PG_ROTATE_ROWS_H
#define PG_ROTATE_ROWS_H

#include <stdbool.h>
#include <stdint.h>

#include "../tensor/prefetch.h"

#if defined(__GNUC__) && !defined(__clang__)
#define NO_SLP __attribute__((optimize("no-tree-slp-vectorize")))
#else
#define NO_SLP
#endif

/* channel offsets of pair i */
#define ROT_PAIR_A(i) (interleaved ? 2 * (i) : (i))
#define ROT_PAIR_B(i) (interleaved ? 2 * (i) + 1 : R + (i))

/* The fused attention's queries and keys are rows of the projection's output, 3 H D apart (1.5
 * KiB in the toy model): x's row ROT_AHEAD rows on is asked for while this one is rotated
 * (the rotation had waited on those loads: 4.7% of a 1-thread rotary step on the Zen 3; a
 * rotary step 2-4% faster with the prefetch, 1 and 2 threads, in one process alternating) */
#define ROT_AHEAD 8

#define DEFINE_ROTATE_ROWS(T, sfx)                                                                             \
    /* y (n, Dh; row stride ldy) = x (row stride ldx) rotated */                                               \
    NO_SLP static void rot_rows_##sfx(T *restrict y, int64_t ldy, const T *restrict x, int64_t ldx,            \
                                      const T *restrict C, const T *restrict S, int64_t n, int64_t R,          \
                                      int64_t Dh, bool interleaved)                                            \
    {                                                                                                          \
        for (int64_t l = 0; l < n; l++, x += ldx, y += ldy, C += R, S += R) {                                  \
            if (l + ROT_AHEAD < n)                                                                             \
                pg_prefetch_row(x + ROT_AHEAD * ldx, Dh * (int64_t)sizeof(T));                                 \
            for (int64_t i = 0; i < R; i++) {                                                                  \
                const T xa = x[ROT_PAIR_A(i)], xb = x[ROT_PAIR_B(i)];                                          \
                y[ROT_PAIR_A(i)] = xa * C[i] - xb * S[i];                                                      \
                y[ROT_PAIR_B(i)] = xb * C[i] + xa * S[i];                                                      \
            }                                                                                                  \
            for (int64_t e = 2 * R; e < Dh; e++)                                                               \
                y[e] = x[e];                                                                                   \
        }                                                                                                      \
    }                                                                                                          \
    /* gx (n, Dh; row stride ldx) += the rotation's backward of gy (row stride ldy), or = when assign */       \
    NO_SLP static void rot_rows_back_##sfx(T *restrict gx, int64_t ldx, const T *restrict gy, int64_t ldy,     \
                                           const T *restrict C, const T *restrict S, int64_t n, int64_t R,     \
                                           int64_t Dh, bool interleaved, bool assign)                          \
    {                                                                                                          \
        for (int64_t l = 0; l < n; l++, gx += ldx, gy += ldy, C += R, S += R) {                                \
            if (l + ROT_AHEAD < n) /* gx's rows are the projection's gradient's, as far apart */               \
                pg_prefetch_row_for_write(gx + ROT_AHEAD * ldx, Dh * (int64_t)sizeof(T));                      \
            if (assign) {                                                                                      \
                for (int64_t i = 0; i < R; i++) {                                                              \
                    const T ga = gy[ROT_PAIR_A(i)], gb = gy[ROT_PAIR_B(i)];                                    \
                    gx[ROT_PAIR_A(i)] = ga * C[i] + gb * S[i];                                                 \
                    gx[ROT_PAIR_B(i)] = gb * C[i] - ga * S[i];                                                 \
                }                                                                                              \
                for (int64_t e = 2 * R; e < Dh; e++)                                                           \
                    gx[e] = gy[e];                                                                             \
                continue;                                                                                      \
            }                                                                                                  \
            for (int64_t i = 0; i < R; i++) {                                                                  \
                const T ga = gy[ROT_PAIR_A(i)], gb = gy[ROT_PAIR_B(i)];                                        \
                gx[ROT_PAIR_A(i)] += ga * C[i] + gb * S[i];                                                    \
                gx[ROT_PAIR_B(i)] += gb * C[i] - ga * S[i];                                                    \
            }                                                                                                  \
            for (int64_t e = 2 * R; e < Dh; e++)                                                               \
                gx[e] += gy[e];                                                                                \
        }                                                                                                      \
    }
DEFINE_ROTATE_ROWS(float, f32)
DEFINE_ROTATE_ROWS(double, f64)
#undef DEFINE_ROTATE_ROWS

#endif

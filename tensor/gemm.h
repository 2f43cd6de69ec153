/* posgrad GEMM kernels (no autograd): C = alpha * op(A) * op(B) + beta * C on
 * row-major matrices, op(X) = X or X^T.
 *
 *   op(A) is M x K: A is stored M x K (trans_a false) or K x M (trans_a true),
 *   op(B) is K x N: B is stored K x N (trans_b false) or N x K (trans_b true),
 *   C is M x N. lda, ldb, ldc are the row strides (elements) of A, B, C as
 *   stored, at least their number of columns.
 *
 * beta == 0 does not read C (it may hold NaN or garbage); alpha == 0 or K == 0
 * does not read A or B. C must not overlap A or B. M, N or K of 0 is allowed.
 * A NULL C (when M, N > 0), or a NULL A or B that would be read, records an
 * error naming the function (pg_last_error) and leaves C untouched.
 *
 * The implementation packs panels of op(A) and op(B) into contiguous blocks
 * (cache blocking MC x KC x NC) and runs a register-tiled MR x NR micro-kernel
 * over them, or reads an operand in place when its layout already suits the
 * micro-kernel. Products of 2^22 flops (2 M N K) or more are split over the thread
 * pool (tensor/threadpool.h) by blocks of C rows or columns. Results are
 * deterministic and identical for any thread count: each element of C is
 * summed over K in an order that depends only on the shapes. If the packing
 * buffers cannot be allocated it falls back to a plain loop (slower, same
 * contract). Safe to call from several threads at once (per-thread buffers). */
#ifndef PG_GEMM_H
#define PG_GEMM_H

#include <stdbool.h>
#include <stdint.h>

void pg_gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void pg_gemm_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                 int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* C = alpha op(A) op(B) + bias, bias (N) added to every row (a linear layer's forward):
 * the bias joins each tile of C as the first K block writes it, instead of a pass that
 * fills C with it first (the same bits as that fill and pg_gemm with beta 1). bias NULL:
 * an error (pg_last_error), C untouched. */
void pg_gemm_bias_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, const float *bias, float *C, int64_t ldc);
void pg_gemm_bias_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                      int64_t lda, const double *B, int64_t ldb, const double *bias, double *C, int64_t ldc);

#endif

/* ttforge integer inference in C99: the golden executor (ttforge.ir.executor.execute),
 * bit for bit, for a CPU.
 *
 * A network is a chain of layers; a layer is its schedule steps in order. Step t of a
 * layer views each sample's intermediate as (A, K, Q) and computes
 *     acc[a, p, q] = sum_k C[p, k] * x[a, k, q]      (C: the step's P x K core matrix)
 * then, on the last step, adds the bias to the first out_features elements, shifts with
 * FLOOR_PLUS_HALF rounding (right by `shift`, or left by -shift) and saturates to
 * `out_bits` (two's complement, full range). After the last step the output is cut to
 * out_features and, with relu, clamped at 0. The input of a layer is zero-padded from
 * in_features to in_size. Activations are int32 (every width is at most 32 bits);
 * accumulators are int32 where no sum of the step can need more than 32 bits
 * (IntLayer.acc_bits_needed, from the widths and the reduction length) and int64 otherwise (the loader bounds acc_bits to 48). No
 * floating point.
 *
 * The core matrices are what IntLayer.core_matrix(t) returns (the Python side arranges
 * them once: ttforge.firmware.infer_c). Tested equal to the golden executor
 * (tests/firmware/test_infer_c.py).
 */
#ifndef TTFORGE_INFER_H
#define TTFORGE_INFER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t A, K, Q, P;
    int32_t shift;             /* right shift (negative: left) */
    int32_t out_bits;          /* saturation width of the step's output (at most 32) */
    int32_t acc32;             /* 1: every sum of the step fits 32 bits (IntLayer.acc_bits_needed) */
    const int32_t *C;          /* P x K, row-major */
    const int32_t *Ct;         /* the same, transposed: K x P, row-major */
} ttfi_step;

typedef struct {
    int32_t d;                 /* steps */
    int32_t in_features, out_features, in_size, relu;
    const ttfi_step *steps;    /* d, in schedule order */
    const int64_t *bias;       /* out_features, at the last step's accumulator exponent, or NULL */
} ttfi_layer;

/* Run `batch` samples: x is batch x in_features of the first layer (row-major), y gets
 * batch x out_features of the last. Returns 0, or -1 if a buffer cannot be allocated. */
int ttfi_execute(int32_t n_layers, const ttfi_layer *layers, int32_t batch, const int64_t *x, int64_t *y);

#ifdef __cplusplus
}
#endif

#endif

/* ttforge all-integer training step in C99 (docs/arithmetic.md, "Training").
 *
 * One mini-batch step of a chain of TT (and dense, one-core) layers, bit-identical to
 * the golden trainer ttforge.ir.train.train_step: forward through the schedule steps,
 * base-2 softmax cross-entropy through the exponent table, backward through the same
 * steps with transposed cores, each core updated by a stochastic (xorshift32) or
 * round-to-nearest shift as soon as its gradient exists, delayed max scaling of every
 * exponent. No floating point anywhere. Buffers are allocated per call (malloc).
 *
 * Tested equal to the golden trainer (tests/firmware/test_train_c.py, ctypes binding in
 * ttforge.firmware.train_c).
 */
#ifndef TTFORGE_TRAIN_H
#define TTFORGE_TRAIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One schedule step: the core it applies, the (A, K, Q, P) view of the intermediate and
 * core_axes (the permutation of the core's axes r, m, n, r' whose reshape is the P x K
 * matrix of the step). */
typedef struct {
    int32_t core, A, K, Q, P;
    int32_t axes[4];
} ttft_step;

typedef struct {
    int32_t d;                 /* cores (= steps) */
    int32_t in_features, out_features, in_size, out_size;
    int32_t relu, has_bias;
    const int32_t *core_shape; /* d x 4: r, m, n, r' */
    const ttft_step *steps;    /* d, in schedule order */
    int64_t **masters;         /* d pointers, row-major r x m x n x r' (updated) */
    const int32_t *master_exps;/* d */
    int64_t *bias;             /* out_features (updated), or NULL */
    int32_t bias_exp;
    int32_t *step_exps;        /* d (updated: delayed scaling) */
    int32_t *grad_exps;        /* d (updated: delayed scaling) */
} ttft_layer;

typedef struct {
    int32_t w_bits, master_bits, act_bits, inter_bits, acc_bits, grad_bits;
    int32_t prob_bits, table_bits, table_frac_bits, bias_bits, stochastic;
    int32_t in_exp, lr_shift;
    uint32_t rng;              /* xorshift32 state (updated) */
    uint64_t words, step;      /* words drawn, steps taken (updated) */
    const int64_t *table;      /* 2^table_frac_bits entries */
} ttft_train;

/* One step on `batch` samples: x is batch x in_features (row-major), y batch labels.
 * Returns 0, or -1 if a buffer cannot be allocated (the state is then unchanged). */
int ttft_step_batch(ttft_train *t, int32_t n_layers, ttft_layer *layers, int32_t batch,
                    const int64_t *x, const int64_t *y);

uint32_t ttft_xorshift32(uint32_t x);

#ifdef __cplusplus
}
#endif
#endif

/* The FLOOR_PLUS_HALF shift of docs/arithmetic.md ("Rounding and saturation"), shared by
 * ttforge_infer.c and ttforge_train.c (each compiles its own static copy). It computes what
 * ttforge.ir.arith.rshift_round computes, for every int64 value and every right shift. */
#ifndef TTFORGE_SHIFT_H
#define TTFORGE_SHIFT_H

#include <stdint.h>

/* a << n on the bits (no signed overflow); the caller keeps 0 <= n <= 63 and the result
 * within int64, as every shift of shift_range(acc_bits) on an acc_bits-bit sum does */
static inline int64_t ttf_shl(int64_t a, int n) { return (int64_t)((uint64_t)a << n); }

/* floor(a / 2^s + 1/2) for s >= 1, a << -s for s <= 0. Computed as
 * ((a >> (s-1)) + 1) >> 1, so no a + 2^(s-1) can pass 2^63, and the shift is capped at 63:
 * C leaves a shift by 64 or more undefined (x86 takes it mod 64), the spec gives 0 there. */
static inline int64_t ttf_rshift_round(int64_t a, int s) {
    if (s <= 0) return ttf_shl(a, -s);
    if (s == 1) return (a >> 1) + (a & 1);   /* a + 1 would overflow at 2^63 - 1 */
    return ((a >> (s - 1 < 63 ? s - 1 : 63)) + 1) >> 1;
}

#endif

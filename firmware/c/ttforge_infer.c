/* ttforge integer inference (see ttforge_infer.h and docs/arithmetic.md). */
#include "ttforge_infer.h"
#include "ttforge_shift.h"

#include <stdlib.h>
#include <string.h>

static int64_t saturate(int64_t v, int bits) {
    int64_t hi = ((int64_t)1 << (bits - 1)) - 1, lo = -hi - 1;
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Elements of the largest intermediate of any layer, per sample. */
static int64_t widest(int32_t n_layers, const ttfi_layer *layers) {
    int64_t w = 1;
    int32_t i, t;
    for (i = 0; i < n_layers; i++) {
        if (layers[i].in_size > w) w = layers[i].in_size;
        for (t = 0; t < layers[i].d; t++) {
            const ttfi_step *s = &layers[i].steps[t];
            int64_t n = (int64_t)s->A * s->P * s->Q;
            if (n > w) w = n;
        }
    }
    return w;
}

/* acc[0..n) = sum over k of m[k*n + i] * v[k*vs]: n outputs, the inner loop contiguous
 * in m (int32 sums when the step's sums fit 32 bits, which the compiler vectorizes). */
static void rows_int32(const int32_t *m, int32_t n, const int32_t *v, int32_t K, int64_t vs, int32_t *acc32,
                       int64_t *acc) {
    int32_t k, i;
    memset(acc32, 0, sizeof(int32_t) * (size_t)n);
    for (k = 0; k < K; k++) {
        const int32_t vk = v[k * vs];
        const int32_t *mk = m + (int64_t)k * n;
        for (i = 0; i < n; i++) acc32[i] += mk[i] * vk;
    }
    for (i = 0; i < n; i++) acc[i] = acc32[i];
}

static void rows_int64(const int32_t *m, int32_t n, const int32_t *v, int32_t K, int64_t vs, int64_t *acc) {
    int32_t k, i;
    memset(acc, 0, sizeof(int64_t) * (size_t)n);
    for (k = 0; k < K; k++) {
        const int64_t vk = v[k * vs];
        const int32_t *mk = m + (int64_t)k * n;
        for (i = 0; i < n; i++) acc[i] += mk[i] * vk;
    }
}

/* One step of one sample: in (A, K, Q) -> out (A, P, Q), requantized. The inner loop runs
 * over the longer of P and Q: over q (rows of the input, c[p, k] the scalar), or over p
 * (rows of the transposed core matrix Ct, x[a, k, q] the scalar). */
static void step_one(const ttfi_step *s, const int64_t *bias, int32_t n_bias, const int32_t *in, int32_t *out,
                     int64_t *acc, int32_t *acc32) {
    int32_t a, p, q;
    const int32_t A = s->A, K = s->K, Q = s->Q, P = s->P;
    for (a = 0; a < A; a++) {
        const int32_t *xa = in + (int64_t)a * K * Q;
        int32_t *oa = out + (int64_t)a * P * Q;
        if (Q >= P) {                           /* for each p: Q sums, inner loop over q */
            for (p = 0; p < P; p++) {
                const int32_t *c = s->C + (int64_t)p * K;
                if (s->acc32) rows_int32(xa, Q, c, K, 1, acc32, acc);   /* x[a, k, q] rows, c[p, k] scalars */
                else rows_int64(xa, Q, c, K, 1, acc);
                for (q = 0; q < Q; q++) {
                    int64_t flat = (int64_t)a * P * Q + (int64_t)p * Q + q, v = acc[q];
                    if (bias && flat < n_bias) v += bias[flat];
                    oa[(int64_t)p * Q + q] = (int32_t)saturate(ttf_rshift_round(v, s->shift), s->out_bits);
                }
            }
        } else {                                /* for each q: P sums, inner loop over p */
            for (q = 0; q < Q; q++) {
                if (s->acc32) rows_int32(s->Ct, P, xa + q, K, Q, acc32, acc);
                else rows_int64(s->Ct, P, xa + q, K, Q, acc);
                for (p = 0; p < P; p++) {
                    int64_t flat = (int64_t)a * P * Q + (int64_t)p * Q + q, v = acc[p];
                    if (bias && flat < n_bias) v += bias[flat];
                    oa[(int64_t)p * Q + q] = (int32_t)saturate(ttf_rshift_round(v, s->shift), s->out_bits);
                }
            }
        }
    }
}

int ttfi_execute(int32_t n_layers, const ttfi_layer *layers, int32_t batch, const int64_t *x, int64_t *y) {
    int64_t w = widest(n_layers, layers), maxq = 1;
    int32_t *buf0, *buf1, *acc32;
    int64_t *acc;
    int32_t b, i, t, j;
    for (i = 0; i < n_layers; i++)
        for (t = 0; t < layers[i].d; t++) {
            if (layers[i].steps[t].Q > maxq) maxq = layers[i].steps[t].Q;
            if (layers[i].steps[t].P > maxq) maxq = layers[i].steps[t].P;
        }
    buf0 = (int32_t *)malloc(sizeof(int32_t) * (size_t)w);
    buf1 = (int32_t *)malloc(sizeof(int32_t) * (size_t)w);
    acc = (int64_t *)malloc(sizeof(int64_t) * (size_t)maxq);
    acc32 = (int32_t *)malloc(sizeof(int32_t) * (size_t)maxq);
    if (!buf0 || !buf1 || !acc || !acc32) { free(buf0); free(buf1); free(acc); free(acc32); return -1; }
    for (b = 0; b < batch; b++) {
        int32_t *cur = buf0, *nxt = buf1, *tmp;
        const ttfi_layer *first = &layers[0];
        const int64_t *xb = x + (int64_t)b * first->in_features;
        memset(cur, 0, sizeof(int32_t) * (size_t)first->in_size);
        for (j = 0; j < first->in_features; j++) cur[j] = (int32_t)xb[j];
        for (i = 0; i < n_layers; i++) {
            const ttfi_layer *L = &layers[i];
            if (i > 0) {                        /* zero-pad the previous layer's output */
                for (j = layers[i - 1].out_features; j < L->in_size; j++) cur[j] = 0;
            }
            for (t = 0; t < L->d; t++) {
                int last = (t == L->d - 1);
                step_one(&L->steps[t], last ? L->bias : NULL, last ? L->out_features : 0, cur, nxt, acc, acc32);
                tmp = cur; cur = nxt; nxt = tmp;
            }
            if (L->relu)
                for (j = 0; j < L->out_features; j++) if (cur[j] < 0) cur[j] = 0;
        }
        for (j = 0; j < layers[n_layers - 1].out_features; j++)
            y[(int64_t)b * layers[n_layers - 1].out_features + j] = cur[j];
    }
    free(buf0); free(buf1); free(acc); free(acc32);
    return 0;
}

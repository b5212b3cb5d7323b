/* ttforge integer inference (see ttforge_infer.h and docs/arithmetic.md). */
#include "ttforge_infer.h"

#include <stdlib.h>
#include <string.h>

static int64_t shl(int64_t a, int n) { return (int64_t)((uint64_t)a << n); }

/* FLOOR_PLUS_HALF shift: (a + 2^(s-1)) >> s for s >= 1, a << -s for s <= 0 */
static int64_t rshift_round(int64_t a, int s) {
    if (s <= 0) return shl(a, -s);
    return (a + ((int64_t)1 << (s - 1))) >> s;
}

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

/* One step of one sample: in (A, K, Q) -> out (A, P, Q), requantized. */
static void step_one(const ttfi_step *s, const int64_t *bias, int32_t n_bias, const int64_t *in, int64_t *out,
                     int64_t *acc) {
    int32_t a, p, k, q;
    const int32_t A = s->A, K = s->K, Q = s->Q, P = s->P;
    for (a = 0; a < A; a++) {
        const int64_t *xa = in + (int64_t)a * K * Q;
        int64_t *oa = out + (int64_t)a * P * Q;
        for (p = 0; p < P; p++) {
            const int32_t *c = s->C + (int64_t)p * K;
            if (Q == 1) {                       /* a dot product over contiguous k */
                int64_t sum = 0;
                for (k = 0; k < K; k++) sum += (int64_t)c[k] * xa[k];
                acc[0] = sum;
            } else {                            /* rows of q: the inner loop is contiguous */
                memset(acc, 0, sizeof(int64_t) * (size_t)Q);
                for (k = 0; k < K; k++) {
                    const int64_t ck = c[k];
                    const int64_t *xk = xa + (int64_t)k * Q;
                    for (q = 0; q < Q; q++) acc[q] += ck * xk[q];
                }
            }
            for (q = 0; q < Q; q++) {
                int64_t i = ((int64_t)p * Q + q), v = acc[q];
                int64_t flat = (int64_t)a * P * Q + i;
                if (bias && flat < n_bias) v += bias[flat];
                oa[i] = saturate(rshift_round(v, s->shift), s->out_bits);
            }
        }
    }
}

int ttfi_execute(int32_t n_layers, const ttfi_layer *layers, int32_t batch, const int64_t *x, int64_t *y) {
    int64_t w = widest(n_layers, layers), maxq = 1;
    int64_t *buf0, *buf1, *acc;
    int32_t b, i, t, j;
    for (i = 0; i < n_layers; i++)
        for (t = 0; t < layers[i].d; t++)
            if (layers[i].steps[t].Q > maxq) maxq = layers[i].steps[t].Q;
    buf0 = (int64_t *)malloc(sizeof(int64_t) * (size_t)w);
    buf1 = (int64_t *)malloc(sizeof(int64_t) * (size_t)w);
    acc = (int64_t *)malloc(sizeof(int64_t) * (size_t)maxq);
    if (!buf0 || !buf1 || !acc) { free(buf0); free(buf1); free(acc); return -1; }
    for (b = 0; b < batch; b++) {
        int64_t *cur = buf0, *nxt = buf1, *tmp;
        const ttfi_layer *first = &layers[0];
        memset(cur, 0, sizeof(int64_t) * (size_t)first->in_size);
        memcpy(cur, x + (int64_t)b * first->in_features, sizeof(int64_t) * (size_t)first->in_features);
        for (i = 0; i < n_layers; i++) {
            const ttfi_layer *L = &layers[i];
            if (i > 0) {                        /* zero-pad the previous layer's output */
                for (j = layers[i - 1].out_features; j < L->in_size; j++) cur[j] = 0;
            }
            for (t = 0; t < L->d; t++) {
                int last = (t == L->d - 1);
                step_one(&L->steps[t], last ? L->bias : NULL, last ? L->out_features : 0, cur, nxt, acc);
                tmp = cur; cur = nxt; nxt = tmp;
            }
            if (L->relu)
                for (j = 0; j < L->out_features; j++) if (cur[j] < 0) cur[j] = 0;
        }
        memcpy(y + (int64_t)b * layers[n_layers - 1].out_features, cur,
               sizeof(int64_t) * (size_t)layers[n_layers - 1].out_features);
    }
    free(buf0); free(buf1); free(acc);
    return 0;
}

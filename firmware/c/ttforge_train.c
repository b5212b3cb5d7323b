/* ttforge all-integer training step (see ttforge_train.h and docs/arithmetic.md). */
#include "ttforge_train.h"
#include "ttforge_shift.h"

#include <stdlib.h>
#include <string.h>

#define MAXL 16 /* layers */
#define MAXD 16 /* cores per layer */

uint32_t ttft_xorshift32(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static int64_t clip(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static int64_t hi_of(int bits) { return ((int64_t)1 << (bits - 1)) - 1; }
static int bitlen(uint64_t m) { int n = 0; while (m) { n++; m >>= 1; } return n; }
static int64_t iabs(int64_t v) { return v < 0 ? -v : v; }
static int imin(int a, int b) { return a < b ? a : b; }

/* clip(v << k, +-lim) without overflow (lim < 2^62): a value that would pass lim saturates */
static int64_t sat_shl(int64_t v, int k, int64_t lim) {
    int64_t m;
    if (k > 62) k = 62;
    m = lim >> k;
    if (v > m) return lim;
    if (v < -m) return -lim;
    return ttf_shl(v, k);
}

/* sat_bits(ttf_rshift_round(v, s)); for s < 0 a clamped left shift (as ir.train.shift_sat) */
static int64_t shift_sat(int64_t v, int s, int bits, int narrow) {
    int64_t hi = hi_of(bits), lo = narrow ? -hi : -hi - 1;
    if (s < 0) {
        int64_t lim = (int64_t)1 << bits;
        v = sat_shl(v, imin(-s, 40), lim);
    } else {
        v = ttf_rshift_round(v, s);
    }
    return clip(v, lo, hi);
}

static int fit_exp(int64_t maxabs, int e_acc, int bits) {
    int n = bitlen((uint64_t)maxabs) - (bits - 1);
    return e_acc + (n > 0 ? n : 0);
}

/* element (p, k) of the step's P x K core matrix: its flat index in the stored core */
static int64_t core_index(const int32_t *shape, const int32_t *axes, int32_t K, int32_t P, int64_t p, int64_t k) {
    int64_t i = p * K + k;
    int32_t ps[4];
    int64_t idx[4] = {0, 0, 0, 0};
    int j;
    (void)P;
    for (j = 0; j < 4; j++) ps[j] = shape[axes[j]];
    for (j = 3; j >= 0; j--) { idx[axes[j]] = i % ps[j]; i /= ps[j]; }
    return ((idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]) * shape[3] + idx[3];
}

/* the update of one exact gradient sum v by shift s (one word drawn when stochastic) */
static int64_t round_update(ttft_train *t, int64_t v, int s, int bits) {
    uint32_t w = 0;
    if (t->stochastic) { t->rng = ttft_xorshift32(t->rng); w = t->rng; t->words++; }
    if (s <= 0) {
        int64_t lim = (int64_t)1 << (bits + 1);
        return sat_shl(v, imin(-s, 40), lim);
    }
    /* floor first; the shift capped at 63 (C leaves 64 and more undefined), where every
     * int64 gives 0 or -1 as ir.train.round_update's does */
    if (s > 32) { v >>= imin(s - 32, 63); s = 32; }
    if (t->stochastic) {
        uint64_t mask = (s == 32) ? 0xFFFFFFFFull : (((uint64_t)1 << s) - 1);
        return (v + (int64_t)(w & mask)) >> s;
    }
    return ttf_rshift_round(v, s);
}

int ttft_step_batch(ttft_train *t, int32_t n_layers, ttft_layer *layers, int32_t B,
                    const int64_t *x, const int64_t *y) {
    int64_t *fcore[MAXL][MAXD];     /* forward cores, stored layout */
    int64_t *step_in[MAXL][MAXD];   /* input of every step, B x A*K*Q */
    int64_t *outs[MAXL];            /* layer outputs after ReLU, B x out_features */
    int32_t new_step_exps[MAXL][MAXD];
    int64_t *logits_g = NULL, *cur = NULL, *nxt = NULL, *accW = NULL, *dout = NULL;
    int ok = 1, i, s_, extra = t->master_bits - t->w_bits;
    int64_t b, j;
    if (n_layers > MAXL) return -1;
    memset(fcore, 0, sizeof fcore);
    memset(step_in, 0, sizeof step_in);
    memset(outs, 0, sizeof outs);

    /* ---- forward ------------------------------------------------------------------- */
    {
        const int64_t *h = x;
        int64_t h_cols = layers[0].in_features;
        for (i = 0; i < n_layers && ok; i++) {
            ttft_layer *L = &layers[i];
            int in_exp = (i == 0) ? t->in_exp : layers[i - 1].step_exps[layers[i - 1].d - 1];
            int e_in = in_exp, k;
            int64_t *hp;
            if (L->d > MAXD) { ok = 0; break; }
            for (k = 0; k < L->d; k++) {
                const int32_t *sh = &L->core_shape[4 * k];
                int64_t n = (int64_t)sh[0] * sh[1] * sh[2] * sh[3];
                fcore[i][k] = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
                if (!fcore[i][k]) { ok = 0; break; }
                for (j = 0; j < n; j++)
                    fcore[i][k][j] = shift_sat(L->masters[k][j], extra, t->w_bits, 1);
            }
            if (!ok) break;
            hp = calloc((size_t)B * L->in_size, sizeof(int64_t));
            if (!hp) { ok = 0; break; }
            for (b = 0; b < B; b++)
                for (j = 0; j < L->in_features; j++) hp[b * L->in_size + j] = h[b * h_cols + j];
            for (s_ = 0; s_ < L->d; s_++) {
                const ttft_step *st = &L->steps[s_];
                int last = (s_ == L->d - 1);
                int out_bits = last ? t->act_bits : t->inter_bits;
                int e_acc = L->master_exps[st->core] + extra + e_in;
                int shift = L->step_exps[s_] - e_acc;
                int64_t n_out = (int64_t)st->A * st->P * st->Q, maxabs = 0, a, p, q, kk;
                int64_t *o = malloc(sizeof(int64_t) * (size_t)(B * n_out));
                int64_t *bias_al = NULL;
                const int32_t *sh = &L->core_shape[4 * st->core];
                int64_t *cm = malloc(sizeof(int64_t) * (size_t)((int64_t)st->P * st->K));
                step_in[i][s_] = hp;
                if (!o || !cm) { free(o); free(cm); ok = 0; break; }
                for (p = 0; p < st->P; p++)
                    for (kk = 0; kk < st->K; kk++)
                        cm[p * st->K + kk] = fcore[i][st->core][core_index(sh, st->axes, st->K, st->P, p, kk)];
                if (last && L->has_bias) {
                    int in_bits = (s_ == 0) ? t->act_bits : t->inter_bits;
                    int64_t limit = hi_of(t->acc_bits) - (int64_t)st->K * hi_of(t->w_bits) * ((int64_t)1 << (in_bits - 1));
                    int sb = e_acc - L->bias_exp;
                    if (limit < 0) limit = 0;
                    bias_al = malloc(sizeof(int64_t) * (size_t)L->out_features);
                    if (!bias_al) { free(o); free(cm); ok = 0; break; }
                    for (j = 0; j < L->out_features; j++) {
                        int64_t v = L->bias[j];
                        if (sb < 0) {
                            v = sat_shl(v, -sb, limit);   /* clip(b << -sb, +-limit), exact */
                        } else {
                            v = clip(ttf_rshift_round(v, sb), -limit, limit);
                        }
                        bias_al[j] = v;
                    }
                }
                for (b = 0; b < B; b++)
                    for (a = 0; a < st->A; a++)
                        for (p = 0; p < st->P; p++)
                            for (q = 0; q < st->Q; q++) {
                                int64_t acc = 0, e;
                                const int64_t *crow = &cm[p * st->K];
                                const int64_t *xcol = &hp[(b * st->A + a) * st->K * st->Q + q];
                                for (kk = 0; kk < st->K; kk++) acc += crow[kk] * xcol[kk * st->Q];
                                e = (a * st->P + p) * st->Q + q;
                                if (bias_al && e < L->out_features) acc += bias_al[e];
                                if (iabs(acc) > maxabs) maxabs = iabs(acc);
                                o[b * n_out + e] = clip(ttf_rshift_round(acc, shift), -hi_of(out_bits) - 1, hi_of(out_bits));
                            }
                free(bias_al);
                free(cm);
                new_step_exps[i][s_] = fit_exp(maxabs, e_acc, out_bits);
                e_in = L->step_exps[s_];
                hp = o;
            }
            if (!ok) break; /* every buffer is owned by step_in: freed below */
            /* the last step's output (B x out_size) -> layer output */
            outs[i] = malloc(sizeof(int64_t) * (size_t)(B * L->out_features));
            if (!outs[i]) { free(hp); ok = 0; break; }
            for (b = 0; b < B; b++)
                for (j = 0; j < L->out_features; j++) {
                    int64_t v = hp[b * L->out_size + j];
                    outs[i][b * L->out_features + j] = (L->relu && v < 0) ? 0 : v;
                }
            free(hp);
            h = outs[i];
            h_cols = L->out_features;
        }
    }

    /* ---- loss: base-2 softmax, p - onehot at exponent -G ------------------------------ */
    if (ok) {
        ttft_layer *L = &layers[n_layers - 1];
        int C = L->out_features, P = t->table_bits, F = t->table_frac_bits, G = t->prob_bits;
        int e_z = L->step_exps[L->d - 1], sh = e_z + F;
        int64_t cap = (int64_t)(P + 1) << F;
        int64_t *e = malloc(sizeof(int64_t) * (size_t)C);
        logits_g = malloc(sizeof(int64_t) * (size_t)(B * C));
        if (!e || !logits_g) ok = 0;
        for (b = 0; ok && b < B; b++) {
            const int64_t *z = &outs[n_layers - 1][b * C];
            int64_t m = z[0], S = 0, R;
            for (j = 1; j < C; j++) if (z[j] > m) m = z[j];
            for (j = 0; j < C; j++) {
                int64_t u = m - z[j], tt;
                tt = (sh < 0) ? ttf_rshift_round(u, -sh) : ttf_shl(u, imin(sh, bitlen((uint64_t)cap)));
                if (tt > cap) tt = cap;
                e[j] = t->table[tt & (((int64_t)1 << F) - 1)] >> (tt >> F);
                S += e[j];
            }
            R = ((int64_t)1 << (P + G)) / S;
            for (j = 0; j < C; j++) {
                int64_t p = ttf_rshift_round(e[j] * R, P);
                logits_g[b * C + j] = p - ((j == y[b]) ? ((int64_t)1 << G) : 0);
            }
        }
        free(e);
    }

    /* ---- backward, gradients and updates, from the last layer ------------------------ */
    if (ok) {
        int e_g = -t->prob_bits;
        dout = logits_g;
        logits_g = NULL;
        for (i = n_layers - 1; i >= 0 && ok; i--) {
            ttft_layer *L = &layers[i];
            int in_exp = (i == 0) ? t->in_exp : layers[i - 1].step_exps[layers[i - 1].d - 1];
            int32_t grad_exps[MAXD];
            int64_t mhi = hi_of(t->master_bits), bhi = hi_of(t->bias_bits);
            memcpy(grad_exps, L->grad_exps, sizeof(int32_t) * (size_t)L->d);
            if (L->relu)
                for (j = 0; j < (int64_t)B * L->out_features; j++)
                    if (outs[i][j] <= 0) dout[j] = 0;
            cur = calloc((size_t)B * L->out_size, sizeof(int64_t));
            if (!cur) { ok = 0; break; }
            for (b = 0; b < B; b++)
                for (j = 0; j < L->out_features; j++) cur[b * L->out_size + j] = dout[b * L->out_features + j];
            if (L->has_bias) {
                int s = L->bias_exp + t->lr_shift - e_g;
                for (j = 0; j < L->out_features; j++) {
                    int64_t acc = 0;
                    for (b = 0; b < B; b++) acc += dout[b * L->out_features + j];
                    L->bias[j] = clip(L->bias[j] - round_update(t, acc, s, t->bias_bits), -bhi, bhi);
                }
            }
            free(dout);
            dout = NULL;
            for (s_ = L->d - 1; s_ >= 0 && ok; s_--) {
                const ttft_step *st = &L->steps[s_];
                const int32_t *sh = &L->core_shape[4 * st->core];
                const int64_t *xin = step_in[i][s_];
                int e_x = (s_ == 0) ? in_exp : L->step_exps[s_ - 1];
                int64_t A = st->A, K = st->K, Q = st->Q, P = st->P, a, p, q, kk;
                int e_next = 0;
                int64_t *cm = malloc(sizeof(int64_t) * (size_t)(P * K));
                int64_t *cidx = malloc(sizeof(int64_t) * (size_t)(P * K));
                accW = calloc((size_t)(P * K), sizeof(int64_t));
                if (!accW || !cm || !cidx) { free(accW); free(cm); free(cidx); accW = NULL; ok = 0; break; }
                for (p = 0; p < P; p++)
                    for (kk = 0; kk < K; kk++) {
                        cidx[p * K + kk] = core_index(sh, st->axes, (int32_t)K, (int32_t)P, p, kk);
                        cm[p * K + kk] = fcore[i][st->core][cidx[p * K + kk]];
                    }
                for (b = 0; b < B; b++)            /* the sum is exact: any order gives the same */
                    for (a = 0; a < A; a++)
                        for (p = 0; p < P; p++) {
                            const int64_t *dr = &cur[((b * A + a) * P + p) * Q];
                            int64_t *wr = &accW[p * K];
                            for (kk = 0; kk < K; kk++) {
                                const int64_t *xr = &xin[((b * A + a) * K + kk) * Q];
                                int64_t acc = 0;
                                for (q = 0; q < Q; q++) acc += dr[q] * xr[q];
                                wr[kk] += acc;
                            }
                        }
                nxt = NULL;
                if (i > 0 || s_ > 0) {
                    int e_acc = L->master_exps[st->core] + extra + e_g, shift = grad_exps[s_] - e_acc;
                    int64_t maxabs = 0;
                    nxt = malloc(sizeof(int64_t) * (size_t)(B * A * K * Q));
                    if (!nxt) { ok = 0; free(accW); free(cm); free(cidx); accW = NULL; break; }
                    for (b = 0; b < B; b++)
                        for (a = 0; a < A; a++)
                            for (kk = 0; kk < K; kk++)
                                for (q = 0; q < Q; q++) {
                                    int64_t acc = 0;
                                    for (p = 0; p < P; p++)
                                        acc += cm[p * K + kk] * cur[((b * A + a) * P + p) * Q + q];
                                    if (iabs(acc) > maxabs) maxabs = iabs(acc);
                                    nxt[((b * A + a) * K + kk) * Q + q] = shift_sat(acc, shift, t->grad_bits, 0);
                                }
                    e_next = grad_exps[s_];
                    grad_exps[s_] = fit_exp(maxabs, e_acc, t->grad_bits);
                }
                {
                    int s = L->master_exps[st->core] + t->lr_shift - (e_g + e_x);
                    int64_t *m = L->masters[st->core];
                    for (p = 0; p < P; p++)
                        for (kk = 0; kk < K; kk++) {
                            int64_t ci = cidx[p * K + kk];
                            m[ci] = clip(m[ci] - round_update(t, accW[p * K + kk], s, t->master_bits), -mhi, mhi);
                        }
                }
                free(accW);
                free(cm);
                free(cidx);
                accW = NULL;
                free(cur);
                cur = nxt;
                e_g = e_next;
            }
            /* the gradient of the layer input (B x in_size) -> dout of layer i - 1 */
            if (ok && cur) {
                dout = malloc(sizeof(int64_t) * (size_t)(B * L->in_features));
                if (!dout) ok = 0;
                for (b = 0; ok && b < B; b++)
                    for (j = 0; j < L->in_features; j++) dout[b * L->in_features + j] = cur[b * L->in_size + j];
            }
            free(cur);
            cur = NULL;
            memcpy(L->grad_exps, grad_exps, sizeof(int32_t) * (size_t)L->d);
        }
        free(dout);
        for (i = 0; i < n_layers; i++) memcpy(layers[i].step_exps, new_step_exps[i], sizeof(int32_t) * (size_t)layers[i].d);
        t->step++;
    }

    for (i = 0; i < n_layers; i++) {
        int k;
        for (k = 0; k < MAXD; k++) { free(fcore[i][k]); free(step_in[i][k]); }
        free(outs[i]);
    }
    free(logits_g);
    return ok ? 0 : -1;
}

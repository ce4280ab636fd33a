/* The plain-C reference of every op: simple loops, written once (ops.inc) and compiled in
 * float (_f32) and double (_f64). It is the oracle for the gradient checks and for the fast
 * backends, and the "ref" backend runs it. Layouts are plain row-major NCHW. */
#ifndef MS_REF_H
#define MS_REF_H

#include <stddef.h>
#include <stdint.h>

#include "engine/spec.h"

typedef struct {
    int n, c, h, w;      /* input */
    int o, oh, ow;       /* output channels and size */
    int k, stride, pad;  /* square window */
} ms_conv_shape_t;       /* also used for pooling, with o == c */

typedef struct {
    ms_mil_kind_t kind;
    double a, r;
} ms_mil_params_t;

typedef struct {
    double lr, beta1, beta2, eps;
} ms_ref_adam_t;

#define MS_REF_DECLARE(real, SFX)                                                          \
    /* out (N,O,OH,OW); in (N,C,H,W); w (O,C,k,k); b (O) */                                \
    void ms_ref_conv_forward##SFX(real *out, const real *in, const real *w, const real *b, \
                                  const ms_conv_shape_t *s);                               \
    /* din may be NULL (overwritten); dw, db may be NULL (added into) */                   \
    void ms_ref_conv_backward##SFX(real *din, real *dw, real *db, const real *dout,        \
                                   const real *in, const real *w, const ms_conv_shape_t *s); \
    void ms_ref_relu_forward##SFX(real *out, const real *in, size_t n);                    \
    /* mask from the forward output: din = dout where out > 0 */                           \
    void ms_ref_relu_backward##SFX(real *din, const real *dout, const real *out, size_t n); \
    /* max pooling ignores out-of-range cells; average divides by the in-range count */    \
    void ms_ref_pool_forward##SFX(real *out, const real *in, const ms_conv_shape_t *s,     \
                                  int is_max);                                             \
    void ms_ref_pool_backward##SFX(real *din, const real *dout, const real *in,            \
                                   const ms_conv_shape_t *s, int is_max);                  \
    /* logical NCHW index i keeps with ms_dropout_keep(key, i0 + i, rate) */               \
    void ms_ref_dropout_forward##SFX(real *out, const real *in, size_t n, uint64_t i0,     \
                                     uint64_t key, double rate);                           \
    void ms_ref_dropout_backward##SFX(real *din, const real *dout, size_t n, uint64_t i0,  \
                                      uint64_t key, double rate);                          \
    void ms_ref_sigmoid##SFX(real *out, const real *in, size_t n);                         \
    /* z (N,K,J) logits -> P, logP, log1mP (N,K); b (K) Noisy-AND thresholds or NULL */    \
    void ms_ref_mil_forward##SFX(real *P, real *logP, real *log1mP, const real *z,         \
                                 const real *b, const ms_mil_params_t *m, int N, int K,    \
                                 int J);                                                   \
    /* gradients w.r.t. P, logP, log1mP (any may be NULL) -> dz (overwritten), db (added) */ \
    void ms_ref_mil_backward##SFX(real *dz, real *db, const real *gP, const real *glogP,   \
                                  const real *glog1mP, const real *z, const real *b,       \
                                  const ms_mil_params_t *m, int N, int K, int J);          \
    /* y (N,no) = x (N,ni) w^T (no,ni) + b */                                                  \
    void ms_ref_fc_forward##SFX(real *y, const real *x, const real *w, const real *b, int N, \
                                int ni, int no);                                             \
    void ms_ref_fc_backward##SFX(real *dx, real *dw, real *db, const real *dy,             \
                                 const real *x, const real *w, int N, int ni, int no);       \
    /* the head's probabilities: softmax or sigmoid of logits y (N,K) */                  \
    void ms_ref_head_prob##SFX(real *prob, const real *y, ms_head_t head, int N, int K);   \
    /* Eq. 2, mean over the batch: sum_i BCE(P_i, t_i) from logP/log1mP, plus the head's   \
     * cross-entropy on logits y when y != NULL. Writes gradients w.r.t. logP, log1mP, y   \
     * and the head's probabilities prob (N,K). Returns the loss. */                       \
    double ms_ref_loss##SFX(real *glogP, real *glog1mP, real *gy, real *prob,              \
                            const real *logP, const real *log1mP, const real *y,           \
                            const real *t, ms_head_t head, int N, int K);                  \
    void ms_ref_adam##SFX(real *p, const real *g, real *m, real *v, size_t n,              \
                          const ms_ref_adam_t *hp, long step);                             \
    void ms_ref_clamp##SFX(real *p, size_t n, double lo, double hi);

MS_REF_DECLARE(float, _f32)
MS_REF_DECLARE(double, _f64)

#endif

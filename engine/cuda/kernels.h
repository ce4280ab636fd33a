/* The CUDA backend's own kernels (everything but the convolutions, which are cuDNN's),
 * behind plain C launchers so the host code stays C. Activations are NHWC in the compute
 * dtype (bf16 != 0: __nv_bfloat16, else float), passed as void *; head tensors (N,K) and
 * everything touching parameters, gradients and Adam moments are fp32. Every launcher
 * returns cudaGetLastError() after its launches. */
#ifndef MS_CUDA_KERNELS_H
#define MS_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of per-block partial sums used by the bias-gradient reduction: the partial buffer
 * must hold MS_CUK_BIAS_BLOCKS * C floats. */
#define MS_CUK_BIAS_BLOCKS 512

/* dst (N,H,W,C) compute <- src (N,C,H,W) float */
cudaError_t ms_cuk_nchw_to_nhwc(void *dst, const float *src, int N, int C, int H, int W,
                                int bf16, cudaStream_t s);
/* dst (N,C,H,W) float <- src (N,H,W,C) compute, through sigmoid when sigm */
cudaError_t ms_cuk_nhwc_to_nchw(float *dst, const void *src, int N, int C, int H, int W,
                                int sigm, int bf16, cudaStream_t s);
/* dst (O,k,k,Ip) compute <- w (O,I,k,k) float: cuDNN's NHWC filter layout (KRSC), input
 * channels I..Ip-1 zero (Ip == I: no padding) */
cudaError_t ms_cuk_weights_krsc(void *dst, const float *w, int O, int I, int Ip, int k, int bf16,
                                cudaStream_t s);
/* dw (O,I,k,k) float += src (O,k,k,Ip) compute, padding channels ignored */
cudaError_t ms_cuk_dw_add(float *dw, const void *src, int O, int I, int Ip, int k, int bf16,
                          cudaStream_t s);
/* pad: dst (rows,Cp) <- src (rows,C), channels C..Cp-1 zero; !pad: dst (rows,C) <- the first C
 * channels of src (rows,Cp). Lets a convolution with few input channels (the first: 3) run
 * on tensor-core kernels, which want channel counts that are multiples of 8. */
cudaError_t ms_cuk_pad_channels(void *dst, const void *src, size_t rows, int C, int Cp, int pad,
                                int bf16, cudaStream_t s);
/* y (rows,C) compute, in place: y = y + b[c], then max(y, 0) when relu */
cudaError_t ms_cuk_bias_act(void *y, const float *b, size_t rows, int C, int relu, int bf16,
                            cudaStream_t s);
/* dy (rows,C) compute, in place: dy = y > 0 ? dy : 0 when relu; when partial != NULL the
 * per-block column sums of the (masked) dy go to partial (MS_CUK_BIAS_BLOCKS, C) and
 * ms_cuk_bias_finish() adds them into db (C) in a fixed order (deterministic). */
cudaError_t ms_cuk_relu_bias_bwd(void *dy, const void *y, float *partial, size_t rows, int C,
                                 int relu, int bf16, cudaStream_t s);
cudaError_t ms_cuk_bias_finish(float *db, const float *partial, size_t rows, int C,
                               cudaStream_t s);

typedef struct {
    int n, c, h, w;        /* input (NHWC storage) */
    int oh, ow;            /* output */
    int k, stride, pad;
} ms_cuk_pool_t;

/* out (N,OH,OW,C) <- in (N,H,W,C); max ignores out-of-range cells, avg divides by the
 * in-range count (exclude padding), as the reference. Max pooling with arg != NULL records
 * each maximum's offset in its window (N,OH,OW,C), one byte: windows up to 15x15. */
#define MS_CUK_POOL_ARG_MAX_K 15
cudaError_t ms_cuk_pool_fwd(void *out, uint8_t *arg, const void *in, const ms_cuk_pool_t *p,
                            int is_max, int bf16, cudaStream_t s);
/* din (N,H,W,C) overwritten, gathered from every window that holds the cell: deterministic,
 * no atomics; max routes to the first maximum in scan order, from arg when given (the
 * forward's), else searched again in `in` */
cudaError_t ms_cuk_pool_bwd(void *din, const void *dout, const void *in, const uint8_t *arg,
                            const ms_cuk_pool_t *p, int is_max, int bf16, cudaStream_t s);

/* out = max(in, 0) over n; din = out > 0 ? dout : 0 */
cudaError_t ms_cuk_relu_fwd(void *out, const void *in, size_t n, int bf16, cudaStream_t s);
cudaError_t ms_cuk_relu_bwd(void *din, const void *dout, const void *out, size_t n, int bf16,
                            cudaStream_t s);
/* out (N,H,W,C) = keep ? in * scale : 0 with keep = ms_dropout_keep(key, i0 + logical NCHW
 * index, rate) (i0: image0 * C*H*W, the batch's first unit in the global batch); the same
 * call is the backward pass on gradients. out may be in. */
cudaError_t ms_cuk_dropout(void *out, const void *in, int N, int C, int H, int W, uint64_t i0,
                           uint64_t key, float rate, float scale, int bf16, cudaStream_t s);
/* p (n floats) = p / d, correctly rounded: the mean of an all-reduced sum */
cudaError_t ms_cuk_div(float *p, size_t n, float d, cudaStream_t s);
/* p = clamp(p, lo, hi) */
cudaError_t ms_cuk_clamp(void *p, size_t n, float lo, float hi, int bf16, cudaStream_t s);

/* MIL pooling (engine/spec.h ms_mil_kind_t), one block per bag (n,k) of J instances; z is
 * (N,J,K) (NHWC of the class-map layer). b (K) Noisy-AND thresholds or NULL. */
cudaError_t ms_cuk_mil_fwd(float *P, float *logP, float *log1mP, const void *z, const float *b,
                           int kind, float a, float r, int N, int K, int J, int bf16,
                           cudaStream_t s);
/* dz (N,J,K) overwritten; dbbag (N,K) the per-bag threshold gradients (when b != NULL),
 * then ms_cuk_colsum_add(db, dbbag) adds their sum over n into db */
cudaError_t ms_cuk_mil_bwd(void *dz, float *dbbag, const float *gP, const float *glogP,
                           const float *glog1mP, const void *z, const float *b, int kind,
                           float a, float r, int N, int K, int J, int bf16, cudaStream_t s);
cudaError_t ms_cuk_colsum_add(float *db, const float *x, int N, int K, cudaStream_t s);

/* the head: y (N,no) = x (N,ni) w^T + b; backward: dx overwritten, dw, db added; any of
 * dx, dw, db may be NULL */
cudaError_t ms_cuk_fc_fwd(float *y, const float *x, const float *w, const float *b, int N,
                          int ni, int no, cudaStream_t s);
cudaError_t ms_cuk_fc_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, int N, int ni, int no, cudaStream_t s);
/* the head's probabilities prob (N,K): softmax or sigmoid of y, as ms_ref_head_prob */
cudaError_t ms_cuk_head_prob(float *prob, const float *y, int head, int N, int K,
                             cudaStream_t s);
/* eq. 2 as ms_ref_loss: *loss (device double) = mean over the batch; writes glogP, glog1mP,
 * and when y != NULL gy and prob; head: ms_head_t */
cudaError_t ms_cuk_loss(double *loss, float *glogP, float *glog1mP, float *gy, float *prob,
                        const float *logP, const float *log1mP, const float *y, const float *t,
                        int head, int N, int K, cudaStream_t s);
/* d (N,J,K) compute = P[n,k] * sigmoid(z) for class cls (every class when cls < 0), else 0 */
cudaError_t ms_cuk_guided_seed(void *d, const void *z, const float *P, int cls, int N, int K,
                               int J, int bf16, cudaStream_t s);
/* torch.optim.Adam's arithmetic with the bias corrections precomputed on the host (in
 * float, as the reference) so that the result matches it to the last bit */
cudaError_t ms_cuk_adam(float *p, const float *g, float *m, float *v, size_t n, float b1,
                        float b2, float step_size, float sbc2, float eps, cudaStream_t s);

/* Loopy belief propagation on a 4-connected binary MRF with Potts potentials, as
 * ms_lbp_binary (pipeline/localise/localise.c): unary (H,W) log-odds; msg and nxt (4,H,W) zeroed
 * scratch (a missing neighbour's message stays 0); out (H,W) 0/1. */
cudaError_t ms_cuk_lbp(uint8_t *out, float *msg, float *nxt, const float *unary, int H, int W,
                       float beta, int iterations, int max_product, float damping,
                       cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif

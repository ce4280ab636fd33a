/* Localisation (paper §2.4): masks from Jacobian maps (threshold, then loopy belief
 * propagation on a 4-connected binary MRF) and the baseline, global Otsu thresholding.
 * Pure functions on arrays at input resolution; no files, no network. */
#ifndef MS_LOCALISE_H
#define MS_LOCALISE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/status.h"

/* Number of histogram bins of ms_otsu_threshold: fine enough that the threshold's
 * quantisation (range/1024) is far below the spread of either class in practice. */
#define MS_OTSU_BINS 1024

/* Global Otsu threshold of x[n]: the value t maximising the between-class variance of
 * {x <= t} and {x > t}, over a MS_OTSU_BINS-bin histogram spanning [min, max]; t is a bin's
 * upper edge. Non-finite values are ignored. Foreground is x > t. Defined results for the
 * degenerate cases: n == 0 (or no finite value) gives 0; a constant x gives that constant,
 * so nothing is foreground. */
float ms_otsu_threshold(const float *x, size_t n);

/* Baseline mask (global Otsu on linear intensities, the paper's baseline) of one image
 * img (C, H, W): channel c in [0, C) thresholds that channel; channel -1 thresholds the sum
 * of all channels, each first scaled to [0, 1] between its MS_OTSU_SUM_LOW and
 * 1 - MS_OTSU_SUM_LOW quantiles (so that every stain counts, whatever its brightness).
 * mask (H, W) gets 0/1. */
#define MS_OTSU_SUM_LOW 0.001
ms_status_t ms_otsu_mask(uint8_t *mask, const float *img, int C, int H, int W, int channel);

typedef enum { MS_THRESH_LOG_OTSU, MS_THRESH_OTSU, MS_THRESH_FRACTION } ms_thresh_mode_t;
typedef enum { MS_UNARY_BINARY, MS_UNARY_SOFT } ms_unary_mode_t;
typedef enum { MS_MASK_JACOBIAN, MS_MASK_OTSU } ms_mask_mode_t;

/* A loopy belief propagation solver with ms_lbp_binary's arguments and results, e.g. the
 * CUDA backend's (engine/cuda/cuda.h); ctx is its own. */
typedef ms_status_t (*ms_lbp_fn)(void *ctx, uint8_t *out, const float *unary, int H, int W,
                                 double pairwise, int iterations, int max_product,
                                 double damping);

typedef struct {
    ms_mask_mode_t mode;        /* what `score` writes to /masks */
    int otsu_channel;           /* MS_MASK_OTSU: channel, or -1 for the channel sum */
    ms_thresh_mode_t threshold; /* how the Jacobian map is thresholded */
    double clip;                /* the map is clipped at this quantile first (1: not) */
    double fraction;            /* MS_THRESH_FRACTION: t = fraction * max(clipped map) */
    ms_unary_mode_t unary;      /* evidence of each pixel for the MRF */
    double confidence;          /* P(the thresholded pixel is right), in (0.5, 1) */
    double pairwise;            /* Potts strength: log-potential bonus of equal neighbours */
    int iterations;             /* synchronous message-passing sweeps */
    int max_product;            /* 0: sum-product (marginals), 1: max-product (MAP) */
    double damping;             /* new = (1-d) * update + d * old, in [0, 1) */
    ms_lbp_fn lbp;              /* NULL: ms_lbp_binary on this CPU */
    void *lbp_ctx;
} ms_localise_opts_t;

/* Defaults (see localise.c for why): Jacobian masks, Otsu threshold on the logarithm of the
 * map's positive values, after clipping at its 99.9th percentile, binary unary with confidence 0.8, Potts strength 1, 10 sum-product
 * sweeps, damping 0.5. */
void ms_localise_defaults(ms_localise_opts_t *o);
/* Reads the [localise] section (keys: mode, otsu_channel, threshold, clip, fraction, unary,
 * confidence, pairwise, iterations, inference, damping); missing keys keep the defaults. */
ms_status_t ms_localise_read(ms_config_t *cfg, ms_localise_opts_t *o);

/* Threshold *t of a map by o (foreground is map > t): values clipped at the o->clip quantile,
 * then Otsu on the logarithms of the positive ones (zeros are background: guided backprop
 * gives exact zeros wherever no positive path reaches), Otsu on the values, or o->fraction
 * times their max. */
ms_status_t ms_map_threshold(const float *map, size_t n, const ms_localise_opts_t *o, float *t);
/* The q-quantile (0 <= q <= 1) of the finite values of x[n] (the value of rank
 * floor(q (m - 1)) among the m finite ones, as numpy's 'lower' method); 0 when none. */
ms_status_t ms_quantile(const float *x, size_t n, double q, float *out);

/* Largest Potts strength: exp(50) is finite in float, and beyond a few units the MRF
 * already overrides any evidence. */
#define MS_LBP_MAX_PAIRWISE 50.0

/* Loopy belief propagation on a 4-connected binary MRF with Potts pairwise potentials:
 * unary (H, W) is each pixel's evidence as a log-odds log p(1)/p(0); out (H, W) gets the
 * arg-max of each pixel's belief (0 on a tie). Messages are log-odds too, updated all at once
 * from the previous sweep's (synchronous: deterministic, one GPU thread per pixel later). */
ms_status_t ms_lbp_binary(uint8_t *out, const float *unary, int H, int W, double pairwise,
                          int iterations, int max_product, double damping);

/* A segmentation mask from a Jacobian map jac (H, W) (guided backprop, |.| summed over the
 * input channels, so >= 0): threshold, then LBP denoising. mask (H, W) gets 0/1. */
ms_status_t ms_jacobian_mask(uint8_t *mask, const float *jac, int H, int W,
                             const ms_localise_opts_t *o);

#endif

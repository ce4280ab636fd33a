/* Evaluation metrics (paper §3.4): accuracy and mean per-class accuracy, average precision
 * and mAP (as sklearn defines them), treatment-level accuracy from the median over
 * replicates, and mask intersection over union. Pure functions; NaN means "undefined"
 * (nothing to measure), never an error. */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"

/* Arg-max of each row of prob (N, K) into pred[N] (the first on ties). */
void ms_argmax_rows(int *pred, const float *prob, size_t N, int K);

/* Fraction of images with pred == label, over those whose label is known (>= 0). NaN if none
 * is known. *n_used (optional) gets the count. */
double ms_accuracy(const int *pred, const int *label, size_t n, size_t *n_used);

/* Mean over classes of the per-class accuracy (recall: correct / images of that class),
 * over the classes 0..K-1 that occur among the known labels; sklearn's
 * balanced_accuracy_score. Labels >= K are an error. NaN if no label is known. */
ms_status_t ms_mean_class_accuracy(const int *pred, const int *label, size_t n, int K,
                                   double *out);

/* Average precision of one class from scores score[i * stride] and truth truth[i * stride]
 * (1 positive, 0 negative, < 0 unknown and skipped): sklearn's average_precision_score,
 * AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, descending (tied scores
 * form one step, so the order within ties does not matter). NaN if there is no positive. */
ms_status_t ms_average_precision(const float *score, const int *truth, size_t n, size_t stride,
                                 double *out);

/* Per-class AP of multi-label scores prob (N, K) against truth (N, K); ap[K] (optional) gets
 * every class's AP and *map their mean over the classes that have a positive (sklearn's
 * 'macro' average, which is NaN-free only when every class has one). */
ms_status_t ms_mean_average_precision(const float *prob, const int *truth, size_t N, int K,
                                      double *ap, double *map);

/* Treatment-level accuracy (paper Table 3: "the median prediction across the 3 experimental
 * replicates"): images grouped by treatment[i] (>= 0; < 0 is skipped); within a treatment,
 * each replicate's prediction is the mean of its images' probability vectors prob (N, K)
 * (replicate NULL, or < 0 for an image: each image is its own replicate); the treatment's
 * prediction is the arg-max of the per-class median over its replicates (the mean of the two
 * middle values for an even count, as numpy.median), compared with the treatment's label: the
 * most frequent known label among its images (smallest on ties). Treatments without a known
 * label are skipped. *n_treatments (optional) gets the number scored; NaN if none is. */
ms_status_t ms_treatment_accuracy(const float *prob, const int *treatment, const int *replicate,
                                  const int *label, size_t N, int K, double *acc,
                                  size_t *n_treatments);

/* Intersection over union of two binary masks (nonzero = inside) of n pixels. Two empty
 * masks agree perfectly: 1. */
double ms_mask_iou(const uint8_t *a, const uint8_t *b, size_t n);
/* Mean of ms_mask_iou over N images of hw pixels each; NaN when N == 0. */
double ms_mean_iou(const uint8_t *a, const uint8_t *b, size_t N, size_t hw);

#endif

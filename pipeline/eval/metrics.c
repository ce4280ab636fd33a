/* Evaluation metrics on plain arrays. Sums are in double and counts in size_t, so results
 * are exact rationals rounded once. */
#include "pipeline/eval/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ms_argmax_rows(int *pred, const float *prob, size_t N, int K)
{
    for (size_t i = 0; i < N; i++) {
        const float *p = prob + i * (size_t)K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (p[k] > p[best])
                best = k;
        pred[i] = K > 0 ? best : -1;
    }
}

double ms_accuracy(const int *pred, const int *label, size_t n, size_t *n_used)
{
    size_t used = 0, right = 0;
    for (size_t i = 0; i < n; i++) {
        if (label[i] < 0)
            continue;
        used++;
        right += pred[i] == label[i];
    }
    if (n_used)
        *n_used = used;
    return used ? (double)right / used : NAN;
}

ms_status_t ms_mean_class_accuracy(const int *pred, const int *label, size_t n, int K,
                                   double *out)
{
    ms_status_t st = MS_OK;
    size_t *count = NULL, *right = NULL; /* (K) */
    *out = NAN;
    if (K < 1)
        MS_FAIL(MS_EARG, "mean class accuracy: %d classes", K);
    MS_ALLOC(count, K, "per-class counts");
    MS_ALLOC(right, K, "per-class counts");
    for (size_t i = 0; i < n; i++) {
        if (label[i] < 0)
            continue;
        if (label[i] >= K)
            MS_FAIL(MS_EARG, "mean class accuracy: label %d of image %zu is not below %d classes",
                    label[i], i, K);
        count[label[i]]++;
        right[label[i]] += pred[i] == label[i];
    }
    double sum = 0;
    int present = 0;
    for (int k = 0; k < K; k++) {
        if (!count[k])
            continue;
        sum += (double)right[k] / count[k];
        present++;
    }
    *out = present ? sum / present : NAN;
done:
    free(count);
    free(right);
    return st;
}

typedef struct {
    float s;
    int t;
} scored_t;

static int by_score_desc(const void *a, const void *b)
{
    float x = ((const scored_t *)a)->s, y = ((const scored_t *)b)->s;
    return (x < y) - (x > y);
}

ms_status_t ms_average_precision(const float *score, const int *truth, size_t n, size_t stride,
                                 double *out)
{
    ms_status_t st = MS_OK;
    scored_t *v = NULL; /* (m) the known samples */
    *out = NAN;
    MS_ALLOC(v, n, "average precision");
    size_t m = 0, npos = 0;
    for (size_t i = 0; i < n; i++) {
        int t = truth[i * stride];
        float s = score[i * stride];
        if (t < 0)
            continue;
        if (isnan(s))
            MS_FAIL(MS_EARG, "average precision: score %zu is NaN", i);
        v[m].s = s;
        v[m].t = t > 0;
        npos += t > 0;
        m++;
    }
    if (npos == 0)
        goto done;
    qsort(v, m, sizeof *v, by_score_desc);
    /* Walk the distinct thresholds from the top: each group of tied scores is one step of
     * the precision-recall curve, adding (recall gained) x (precision at that point). */
    size_t tp = 0, seen = 0;
    double ap = 0;
    for (size_t i = 0; i < m;) {
        size_t j = i, gained = 0;
        while (j < m && v[j].s == v[i].s) {
            gained += v[j].t;
            j++;
        }
        tp += gained;
        seen = j;
        if (gained)
            ap += ((double)gained / npos) * ((double)tp / seen);
        i = j;
    }
    *out = ap;
done:
    free(v);
    return st;
}

ms_status_t ms_mean_average_precision(const float *prob, const int *truth, size_t N, int K,
                                      double *ap, double *map)
{
    ms_status_t st = MS_OK;
    double sum = 0;
    int used = 0;
    *map = NAN;
    for (int k = 0; k < K; k++) {
        double a;
        MS_TRY(ms_average_precision(prob + k, truth + k, N, (size_t)K, &a));
        if (ap)
            ap[k] = a;
        if (!isnan(a)) {
            sum += a;
            used++;
        }
    }
    *map = used ? sum / used : NAN;
done:
    return st;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int treatment;
    long long replicate; /* unique negative keys for images without one */
    size_t index;
} member_t;

static int by_treatment(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    if (x->treatment != y->treatment)
        return (x->treatment > y->treatment) - (x->treatment < y->treatment);
    if (x->replicate != y->replicate)
        return (x->replicate > y->replicate) - (x->replicate < y->replicate);
    return (x->index > y->index) - (x->index < y->index);
}

ms_status_t ms_treatment_accuracy(const float *prob, const int *treatment, const int *replicate,
                                  const int *label, size_t N, int K, double *acc,
                                  size_t *n_treatments)
{
    ms_status_t st = MS_OK;
    member_t *m = NULL;   /* (n) images with a treatment, grouped */
    float *rep = NULL;    /* (R, K) one treatment's replicate means, R <= n */
    float *col = NULL;    /* (R) one class's replicate means */
    float *med = NULL;    /* (K) the treatment's median vector */
    size_t *votes = NULL; /* (K) label counts within a treatment */
    *acc = NAN;
    if (n_treatments)
        *n_treatments = 0;
    if (K < 1)
        MS_FAIL(MS_EARG, "treatment accuracy: %d classes", K);
    MS_ALLOC(m, N, "treatment groups");
    MS_ALLOC(rep, N * (size_t)K, "replicate means");
    MS_ALLOC(col, N, "treatment medians");
    MS_ALLOC(med, K, "treatment medians");
    MS_ALLOC(votes, K, "treatment labels");
    size_t n = 0;
    for (size_t i = 0; i < N; i++)
        if (treatment[i] >= 0)
            m[n++] = (member_t){treatment[i],
                                replicate && replicate[i] >= 0 ? replicate[i] : -1 - (long long)i,
                                i};
    qsort(m, n, sizeof *m, by_treatment);
    size_t scored = 0, right = 0;
    for (size_t g = 0; g < n;) {
        size_t e = g;
        while (e < n && m[e].treatment == m[g].treatment)
            e++;
        memset(votes, 0, K * sizeof *votes);
        int known = 0;
        for (size_t j = g; j < e; j++) {
            int l = label[m[j].index];
            if (l >= K)
                MS_FAIL(MS_EARG, "treatment accuracy: label %d of image %zu is not below %d "
                        "classes", l, m[j].index, K);
            if (l >= 0) {
                votes[l]++;
                known = 1;
            }
        }
        if (known) {
            int truth = 0;
            for (int k = 1; k < K; k++)
                if (votes[k] > votes[truth])
                    truth = k;
            /* Mean over each replicate's images, in double. */
            size_t R = 0;
            for (size_t r0 = g; r0 < e;) {
                size_t r1 = r0;
                while (r1 < e && m[r1].replicate == m[r0].replicate)
                    r1++;
                for (int k = 0; k < K; k++) {
                    double sum = 0;
                    for (size_t j = r0; j < r1; j++)
                        sum += prob[m[j].index * (size_t)K + k];
                    rep[R * K + k] = (float)(sum / (double)(r1 - r0));
                }
                R++;
                r0 = r1;
            }
            for (int k = 0; k < K; k++) {
                for (size_t r = 0; r < R; r++)
                    col[r] = rep[r * K + k];
                qsort(col, R, sizeof *col, cmp_float);
                med[k] = R % 2 ? col[R / 2]
                               : (float)(0.5 * ((double)col[R / 2 - 1] + col[R / 2]));
            }
            int pred;
            ms_argmax_rows(&pred, med, 1, K);
            scored++;
            right += pred == truth;
        }
        g = e;
    }
    if (n_treatments)
        *n_treatments = scored;
    *acc = scored ? (double)right / scored : NAN;
done:
    free(m);
    free(rep);
    free(col);
    free(med);
    free(votes);
    return st;
}

double ms_mask_iou(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t inter = 0, uni = 0;
    for (size_t i = 0; i < n; i++) {
        int x = a[i] != 0, y = b[i] != 0;
        inter += x & y;
        uni += x | y;
    }
    return uni ? (double)inter / uni : 1.0;
}

double ms_mean_iou(const uint8_t *a, const uint8_t *b, size_t N, size_t hw)
{
    if (N == 0)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < N; i++)
        s += ms_mask_iou(a + i * hw, b + i * hw, hw);
    return s / N;
}

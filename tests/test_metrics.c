/* Metrics: hand-computed cases whose answers are exact fractions, then random data compared
 * with sklearn (accuracy, balanced accuracy, average precision) and with an independent numpy
 * version of the treatment-level accuracy, through tests/metrics_sklearn.py. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pipeline/eval/metrics.h"

#ifndef MS_TEST_DIR
#define MS_TEST_DIR "tests"
#endif

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void test_hand(void)
{
    int pred[8] = {0, 1, 1, 2, 2, 0, 1, 2}, label[8] = {0, 1, 2, 2, -1, 1, 1, -1};
    size_t used;
    /* known: 0/0 1/1 1/2 2/2 0/1 1/1 -> 4 right of 6 */
    CHECK(check_close(ms_accuracy(pred, label, 8, &used), 4.0 / 6, 1e-15) && used == 6,
          "accuracy 4/6 over 6 known");
    double mca;
    /* class 0: 1/1, class 1: 2/3, class 2: 1/2 -> (1 + 2/3 + 1/2) / 3 */
    CHECK_OK(ms_mean_class_accuracy(pred, label, 8, 3, &mca));
    CHECK(check_close(mca, (1 + 2.0 / 3 + 0.5) / 3, 1e-15), "mean class accuracy %g", mca);
    /* A class without images does not count: K = 5 gives the same mean. */
    CHECK_OK(ms_mean_class_accuracy(pred, label, 8, 5, &mca));
    CHECK(check_close(mca, (1 + 2.0 / 3 + 0.5) / 3, 1e-15), "absent classes skipped: %g", mca);
    ms_error_clear();
    CHECK(ms_mean_class_accuracy(pred, label, 8, 2, &mca) == MS_EARG, "label >= K is an error");
    int none[2] = {-1, -1};
    CHECK(isnan(ms_accuracy(pred, none, 2, &used)) && used == 0, "no known label: NaN");
    CHECK_OK(ms_mean_class_accuracy(pred, none, 2, 3, &mca));
    CHECK(isnan(mca), "no known label: mean class accuracy NaN");

    /* AP: positives at ranks 1, 3 of 4 -> (1/2)(1/1) + (1/2)(2/3). */
    float s[4] = {0.9f, 0.8f, 0.7f, 0.1f};
    int t[4] = {1, 0, 1, 0};
    double ap;
    CHECK_OK(ms_average_precision(s, t, 4, 1, &ap));
    CHECK(check_close(ap, 0.5 + 1.0 / 3, 1e-15), "AP %g", ap);
    /* Ties form one step: scores {0.5, 0.5} with one positive -> precision 1/2 at recall 1,
     * whichever order the tie is sorted in (sklearn gives 0.5 too). */
    float s2[3] = {0.1f, 0.5f, 0.5f};
    int t2[3] = {0, 0, 1}, t3[3] = {0, 1, 0};
    double ap2, ap3;
    CHECK_OK(ms_average_precision(s2, t2, 3, 1, &ap2));
    CHECK_OK(ms_average_precision(s2, t3, 3, 1, &ap3));
    CHECK(ap2 == 0.5 && ap3 == 0.5, "tied scores: AP %g and %g, both 0.5", ap2, ap3);
    int t4[4] = {0, 0, 0, 0}, t5[4] = {1, -1, 1, -1};
    CHECK_OK(ms_average_precision(s, t4, 4, 1, &ap));
    CHECK(isnan(ap), "no positive: AP NaN");
    CHECK_OK(ms_average_precision(s, t5, 4, 1, &ap));
    CHECK(ap == 1.0, "unknowns skipped, only positives left: AP 1 (%g)", ap);

    /* mAP with a stride: class 1 has no positive and is left out of the mean. */
    float p[3 * 2] = {0.9f, 0.1f, 0.2f, 0.3f, 0.6f, 0.2f};
    int tr[3 * 2] = {1, 0, 0, 0, 1, 0};
    double aps[2], map;
    CHECK_OK(ms_mean_average_precision(p, tr, 3, 2, aps, &map));
    CHECK(aps[0] == 1.0 && isnan(aps[1]) && map == 1.0, "mAP over classes with a positive");

    /* Treatments: A = {0,1,2} label 1, median of class-1 column {0.6, 0.2, 0.9} = 0.6 >
     * class-0 median {0.4, 0.8, 0.1} = 0.4 -> right, although image 1 alone is wrong.
     * B = {3,4} label 0: medians (0.3+0.5)/2 = 0.4 vs (0.7+0.5)/2 = 0.6 -> wrong.
     * C = {5} no known label -> skipped; image 6 has no treatment -> skipped. */
    float pr[7 * 2] = {0.4f, 0.6f, 0.8f, 0.2f, 0.1f, 0.9f, 0.3f, 0.7f,
                       0.5f, 0.5f, 0.9f, 0.1f, 0.9f, 0.1f};
    int tid[7] = {10, 10, 10, 20, 20, 30, -1}, tl[7] = {1, 1, -1, 0, 0, -1, 0};
    double tacc;
    size_t nt;
    CHECK_OK(ms_treatment_accuracy(pr, tid, NULL, tl, 7, 2, &tacc, &nt));
    CHECK(tacc == 0.5 && nt == 2, "treatment accuracy %g over %zu treatments (want 0.5, 2)",
          tacc, nt);
    /* The treatment's label is its images' majority: B relabelled {1, 1, 0} -> 1. */
    int tid2[3] = {5, 5, 5}, tl2[3] = {1, 0, 1};
    float pr2[3 * 2] = {0.2f, 0.8f, 0.6f, 0.4f, 0.3f, 0.7f};
    CHECK_OK(ms_treatment_accuracy(pr2, tid2, NULL, tl2, 3, 2, &tacc, &nt));
    CHECK(tacc == 1.0 && nt == 1, "majority label: %g", tacc);
    /* Replicates: replicate 0 has three images favouring class 0, replicates 1 and 2 one
     * image each favouring class 1 (the label). Per image the median follows replicate 0's
     * many images (class-0 median 0.8: wrong); per replicate it is the median of
     * {0.8, 0.3, 0.4} = 0.4 against {0.2, 0.7, 0.6} = 0.6: right. */
    float pr3[5 * 2] = {0.8f, 0.2f, 0.8f, 0.2f, 0.8f, 0.2f, 0.3f, 0.7f, 0.4f, 0.6f};
    int tid3[5] = {1, 1, 1, 1, 1}, rep3[5] = {0, 0, 0, 1, 2}, tl3[5] = {1, 1, 1, 1, 1};
    CHECK_OK(ms_treatment_accuracy(pr3, tid3, NULL, tl3, 5, 2, &tacc, &nt));
    CHECK(tacc == 0.0, "median over images follows the replicate with most images (%g)", tacc);
    CHECK_OK(ms_treatment_accuracy(pr3, tid3, rep3, tl3, 5, 2, &tacc, &nt));
    CHECK(tacc == 1.0, "median over replicate means gives every replicate one vote (%g)", tacc);

    /* IoU. */
    uint8_t a[6] = {1, 1, 0, 0, 1, 0}, b[6] = {1, 0, 0, 1, 255, 0}, z[6] = {0};
    CHECK(check_close(ms_mask_iou(a, b, 6), 2.0 / 4, 1e-15), "IoU 2/4 (nonzero is inside)");
    CHECK(ms_mask_iou(z, z, 6) == 1.0, "two empty masks: IoU 1");
    CHECK(ms_mask_iou(a, z, 6) == 0.0, "mask vs empty: IoU 0");
    uint8_t two_a[12], two_b[12];
    memcpy(two_a, a, 6);
    memcpy(two_a + 6, z, 6);
    memcpy(two_b, b, 6);
    memcpy(two_b + 6, z, 6);
    CHECK(check_close(ms_mean_iou(two_a, two_b, 2, 6), 0.75, 1e-15), "mean IoU (0.5 + 1) / 2");
    CHECK(isnan(ms_mean_iou(a, b, 0, 6)), "mean IoU of no images: NaN");

    int am[2];
    float rows[2 * 3] = {0.1f, 0.5f, 0.5f, 0.9f, 0.0f, 0.2f};
    ms_argmax_rows(am, rows, 2, 3);
    CHECK(am[0] == 1 && am[1] == 0, "arg-max, first on ties");
}

/* One random data set against sklearn; quantised scores make ties common. */
static void test_sklearn(size_t N, int K, int quantise, int ntreat)
{
    int *pred = malloc(N * sizeof *pred), *label = malloc(N * sizeof *label);
    int *treat = malloc(N * sizeof *treat), *truth = malloc(N * K * sizeof *truth);
    int *rep = malloc(N * sizeof *rep);
    float *prob = malloc(N * K * sizeof *prob);
    for (size_t i = 0; i < N; i++) {
        label[i] = uniform() < 0.1 ? -1 : (int)(uniform() * K);
        /* Better than chance so that per-class accuracies differ from each other. */
        pred[i] = uniform() < 0.6 && label[i] >= 0 ? label[i] : (int)(uniform() * K);
        treat[i] = uniform() < 0.05 ? -1 : (int)(uniform() * ntreat);
        rep[i] = uniform() < 0.05 ? -1 : (int)(uniform() * 3);
        for (int k = 0; k < K; k++) {
            int pos = uniform() < 0.3;
            double sc = 0.35 * pos + 0.65 * uniform();
            prob[i * K + k] = quantise ? (float)(floor(sc * 10) / 10) : (float)sc;
            truth[i * K + k] = pos;
        }
        truth[i * K + (i % K)] = 1; /* every class has positives: sklearn's mean has no NaN */
    }
    char path[] = "/tmp/ms_test_metrics_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(f != NULL, "temporary file");
    if (!f)
        goto out;
    fprintf(f, "%zu %d\n", N, K);
    for (size_t i = 0; i < N; i++)
        fprintf(f, "%d ", pred[i]);
    fprintf(f, "\n");
    for (size_t i = 0; i < N; i++)
        fprintf(f, "%d ", label[i]);
    fprintf(f, "\n");
    for (size_t i = 0; i < N; i++)
        fprintf(f, "%d ", treat[i]);
    fprintf(f, "\n");
    for (size_t i = 0; i < N; i++)
        fprintf(f, "%d ", rep[i]);
    fprintf(f, "\n");
    for (size_t i = 0; i < N; i++) {
        for (int k = 0; k < K; k++)
            fprintf(f, "%.9g ", prob[i * K + k]); /* %.9g round-trips a float exactly */
        fprintf(f, "\n");
    }
    for (size_t i = 0; i < N; i++) {
        for (int k = 0; k < K; k++)
            fprintf(f, "%d ", truth[i * K + k]);
        fprintf(f, "\n");
    }
    fclose(f);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/metrics_sklearn.py %s", MS_TEST_DIR, path);
    FILE *p = popen(cmd, "r");
    double want_acc = NAN, want_bal = NAN, want_map = NAN, want_treat = NAN;
    double *want_ap = calloc(K, sizeof *want_ap);
    size_t want_nt = 0;
    int got = 0;
    char word[16];
    while (p && fscanf(p, "%15s", word) == 1) {
        if (!strcmp(word, "acc"))
            got += fscanf(p, "%lf", &want_acc);
        else if (!strcmp(word, "bal"))
            got += fscanf(p, "%lf", &want_bal);
        else if (!strcmp(word, "map"))
            got += fscanf(p, "%lf", &want_map);
        else if (!strcmp(word, "treat"))
            got += fscanf(p, "%lf %zu", &want_treat, &want_nt) == 2;
        else if (!strcmp(word, "ap"))
            for (int k = 0; k < K; k++)
                got += fscanf(p, "%lf", &want_ap[k]);
    }
    int rc = p ? pclose(p) : -1;
    unlink(path);
    CHECK(rc == 0 && got == 4 + K, "python3 with sklearn ran (exit %d, %d of %d values)", rc,
          got, 4 + K);

    /* Tolerances: both sides sum the same terms in double, in possibly different order, so
     * they agree to a few ulps of the result; 1e-12 is far above that and far below any
     * real disagreement (one misranked sample changes AP by about 1/N^2 > 1e-7). */
    double acc = ms_accuracy(pred, label, N, NULL), bal, map, tacc;
    double *ap = calloc(K, sizeof *ap);
    size_t nt;
    CHECK_OK(ms_mean_class_accuracy(pred, label, N, K, &bal));
    CHECK_OK(ms_mean_average_precision(prob, truth, N, K, ap, &map));
    CHECK_OK(ms_treatment_accuracy(prob, treat, rep, label, N, K, &tacc, &nt));
    CHECK(check_close(acc, want_acc, 1e-12), "N=%zu K=%d: accuracy %.15g, sklearn %.15g", N, K,
          acc, want_acc);
    CHECK(check_close(bal, want_bal, 1e-12), "N=%zu K=%d: mean class accuracy %.15g, sklearn "
          "balanced accuracy %.15g", N, K, bal, want_bal);
    int ap_ok = 1;
    for (int k = 0; k < K; k++)
        if (!check_close(ap[k], want_ap[k], 1e-12)) {
            ap_ok = 0;
            fprintf(stderr, "  class %d: AP %.15g, sklearn %.15g\n", k, ap[k], want_ap[k]);
        }
    CHECK(ap_ok, "N=%zu K=%d quantised=%d: per-class AP equals sklearn's", N, K, quantise);
    CHECK(check_close(map, want_map, 1e-12), "N=%zu K=%d: mAP %.15g, sklearn %.15g", N, K, map,
          want_map);
    CHECK(check_close(tacc, want_treat, 1e-12) && nt == want_nt, "N=%zu K=%d: treatment "
          "accuracy %.15g over %zu, numpy %.15g over %zu", N, K, tacc, nt, want_treat, want_nt);
    free(ap);
    free(want_ap);
out:
    free(pred);
    free(label);
    free(treat);
    free(rep);
    free(truth);
    free(prob);
}

int main(void)
{
    test_hand();
    test_sklearn(500, 12, 0, 40);
    test_sklearn(300, 17, 1, 25);
    test_sklearn(7, 3, 1, 3);
    return check_summary();
}

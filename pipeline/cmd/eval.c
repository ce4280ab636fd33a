/* milscreen eval: metrics of score outputs against the labels, treatments, cell labels and
 * true masks of the shards they came from (paper §3.4), pooled over all files given; a table
 * on stdout and, with --json, the same numbers for machines. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/eval/evalio.h"
#include "pipeline/localise/localise.h"
#include "pipeline/eval/metrics.h"
#include "pipeline/names.h"

static void help(void)
{
    printf("usage: milscreen eval OUTPUT.h5... [--json FILE] [--shard-dir DIR] "
           "[--otsu-channel C]\n\n"
           "Evaluates score outputs (from 'milscreen score') against the shards they name in\n"
           "their 'source' attribute, pooling all files. Labels are compared with the columns\n"
           "by class name (a shard scored with --remap-classes may order its classes otherwise,\n"
           "or name only some: the others are unknown for its images); a shard class the\n"
           "output lacks, or files of different class lists, are refused naming both lists.\n"
           "  single-label shards (/meta/label): accuracy and mean per-class accuracy of both\n"
           "    heads (fc_prob: the FC output; mil_prob: the MIL-pool output, arg-max);\n"
           "  multi-label shards (/meta/labels): mean average precision (sklearn's AP);\n"
           "  /meta/treatment: treatment-level accuracy: each replicate (/meta/replicate) of a\n"
           "    treatment predicts the mean of its images, the treatment the arg-max of the\n"
           "    per-class median over its replicates, against its images' majority label;\n"
           "  /cells/prob in the output with /cells/label in the shard: per-cell accuracy,\n"
           "    mean per-class accuracy and mAP (one class against the rest) against the\n"
           "    cells' own labels (cells labelled -1, control-like, are left out) and against\n"
           "    their images' labels (the noisy labels of the paper's Table 2);\n"
           "  /masks in the output: mean IoU against the shard's true /masks when present, of\n"
           "    global-Otsu masks of the same images against them, and of the output's masks\n"
           "    against Otsu's (the paper's comparison).\n"
           "Metrics that do not apply are omitted (null in JSON). JSON keys: files, images,\n"
           "labelled, classes, multilabel, class_names; fc, mil, cells, cells_image_label:\n"
           "{accuracy, mean_class_accuracy, map, ap[K]} (cells: + count); treatment: {fc,\n"
           "mil, count}; masks: {images (with output masks), with_truth (with true masks),\n"
           "iou_mask_true, iou_otsu_true, iou_mask_otsu}. Fractions in [0, 1].\n\n"
           "  --json FILE        also write the numbers as JSON\n"
           "  --shard-dir DIR    look for the shards in DIR (by file name) when the 'source'\n"
           "                     path does not exist, e.g. after moving the data\n"
           "  --otsu-channel C   Otsu baseline on channel C (default: the sum of the channels,\n"
           "                     each scaled to its 0.1-99.9 percentile range first)\n");
}

/* Everything pooled over the files. */
typedef struct {
    int K;
    int multilabel;
    char **class_names;    /* (K) from the first file */
    char *first;           /* its path */
    size_t N;
    float *fc, *mil;       /* (N, K) */
    int *label;            /* (N) single label or -1 */
    int *labels;           /* (N, K) multi-hot or -1 */
    int *treat;            /* (N) treatment id across files, -1 unknown */
    int *rep;              /* (N) replicate number (the same number in two files is one
                              replicate: replicates are numbered screen-wide) */
    char **treat_names;    /* (ntreat) */
    size_t ntreat;
    int have_fc, have_treat;
    size_t M;
    float *cell_prob;      /* (M, K) */
    int *cell_label;       /* (M) */
    int *cell_truth;       /* (M, K) one-hot of cell_label, -1 when unknown */
    int *cell_bag_label;   /* (M) the label of the cell's image (single-label), or -1 */
    int *cell_bag_truth;   /* (M, K) the image's label row (one- or multi-hot), -1 unknown */
    size_t n_mask_images;  /* images with output masks */
    size_t n_true_images;  /* ... of which with true masks */
    size_t n_otsu_true;    /* images with true masks (the Otsu baseline needs no output) */
    double iou_mask_true, iou_otsu_true, iou_mask_otsu; /* sums over images */
} pool_t;

static ms_status_t grow(void **p, size_t n, size_t elem, const char *what)
{
    size_t bytes = n * elem;
    void *q = realloc(*p, bytes > 0 ? bytes : 1);
    if (!q)
        return MS_ERR(MS_ENOMEM, "out of memory for %s", what);
    *p = q;
    return MS_OK;
}

static int file_exists(const char *p)
{
    FILE *f = fopen(p, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

/* Where the shard of a score file is: its 'source' as written, else the same file name in
 * --shard-dir, else beside the score file. */
static ms_status_t find_shard(const ms_scores_t *s, const char *shard_dir, char *out, size_t n)
{
    if (!s->source)
        return MS_ERR(MS_EFORMAT, "%s has no 'source' attribute naming its shard", s->path);
    if (file_exists(s->source)) {
        snprintf(out, n, "%s", s->source);
        return MS_OK;
    }
    const char *base = strrchr(s->source, '/');
    base = base ? base + 1 : s->source;
    if (shard_dir) {
        snprintf(out, n, "%s/%s", shard_dir, base);
        if (file_exists(out))
            return MS_OK;
    }
    const char *slash = strrchr(s->path, '/');
    snprintf(out, n, "%.*s%s", slash ? (int)(slash - s->path + 1) : 0, s->path, base);
    if (file_exists(out))
        return MS_OK;
    return MS_ERR(MS_EIO, "%s: its shard %s does not exist (nor %s%s%s); use --shard-dir",
                  s->path, s->source, shard_dir ? shard_dir : "", shard_dir ? "/" : "", base);
}

/* Labels are compared by name: the shard's class j is the score file's column map[j]. The
 * two lists are the same when the shard was scored as it is; with score --remap-classes the
 * shard's classes are a permutation or subset of the score file's (the checkpoint's). A score
 * file that names no classes (another tool's) is taken to follow its shard's order. */
static ms_status_t class_map(const ms_scores_t *s, const ms_shard_view_t *v, int *map)
{
    char a[1024], b[1024];
    if (!s->named) {
        if (v->K != s->K)
            return MS_ERR(MS_EFORMAT, "%s has %d classes but its shard %s has %d", s->path, s->K,
                          v->path, v->K);
        fprintf(stderr, "milscreen eval: note: %s names no classes (attribute class_names); "
                "its columns are taken to be the classes of %s in order\n", s->path, v->path);
        for (int k = 0; k < v->K; k++)
            map[k] = k;
        return MS_OK;
    }
    for (int j = 0; j < v->K; j++) {
        if ((map[j] = ms_names_index(v->class_names[j], s->class_names, s->K)) < 0)
            return MS_ERR(MS_EFORMAT, "%s: class '%s' of its shard %s (%s) is not one of its "
                          "classes (%s)", s->path, v->class_names[j], v->path,
                          ms_names_format(a, sizeof a, v->class_names, v->K),
                          ms_names_format(b, sizeof b, s->class_names, s->K));
    }
    return MS_OK;
}

static ms_status_t add_file(pool_t *P, const char *path, const char *shard_dir, int otsu_ch)
{
    ms_status_t st = MS_OK;
    ms_scores_t s;
    ms_shard_view_t v;
    char shard[4096];
    int *map = NULL;                             /* (shard's K) the score column of each */
    float *img = NULL;                           /* (C, H, W) */
    uint8_t *mask = NULL, *truth = NULL, *otsu = NULL; /* (H, W) each */
    memset(&v, 0, sizeof v);
    MS_TRY(ms_scores_open(&s, path));
    MS_TRY(find_shard(&s, shard_dir, shard, sizeof shard));
    MS_TRY(ms_shard_view_open(&v, shard));
    if (v.N != s.N)
        MS_FAIL(MS_EFORMAT, "%s has %zu images but its shard %s has %zu", path, s.N, shard, v.N);
    if (v.image_id && s.image_id)
        for (size_t i = 0; i < s.N; i++)
            if (strcmp(v.image_id[i], s.image_id[i]))
                MS_FAIL(MS_EFORMAT, "%s: image %zu is '%s' but the shard %s has '%s' there",
                        path, i, s.image_id[i], shard, v.image_id[i]);
    int multilabel = v.labels != NULL;
    MS_ALLOC(map, v.K + 1, "class map");
    MS_TRY(class_map(&s, &v, map));
    if (P->N == 0 && P->K == 0) {
        P->K = s.K;
        P->multilabel = multilabel;
        P->have_fc = s.fc_prob != NULL;
        P->have_treat = v.treatment != NULL;
        P->class_names = s.class_names;
        s.class_names = NULL;
        if (!(P->first = strdup(path)))
            MS_FAIL(MS_ENOMEM, "out of memory");
    } else if (!ms_names_same(s.class_names, s.K, P->class_names, P->K)) {
        char a[1024], b[1024];
        MS_FAIL(MS_EFORMAT, "%s has %d classes (%s), but %s before it has %d (%s): eval pools "
                "only score files of one class list, in one order", path, s.K,
                ms_names_format(a, sizeof a, s.class_names, s.K), P->first, P->K,
                ms_names_format(b, sizeof b, P->class_names, P->K));
    } else if (multilabel != P->multilabel) {
        MS_FAIL(MS_EFORMAT, "%s has %s labels, unlike the files before it (%s)", shard,
                multilabel ? "multi-label" : "single-label",
                P->multilabel ? "multi-label" : "single-label");
    } else {
        P->have_fc &= s.fc_prob != NULL;
        P->have_treat &= v.treatment != NULL;
    }
    const int K = P->K;
    size_t N0 = P->N, N1 = N0 + s.N;
    MS_TRY(grow((void **)&P->mil, N1 * K, sizeof(float), "probabilities"));
    MS_TRY(grow((void **)&P->fc, N1 * K, sizeof(float), "probabilities"));
    MS_TRY(grow((void **)&P->label, N1, sizeof(int), "labels"));
    MS_TRY(grow((void **)&P->labels, N1 * K, sizeof(int), "labels"));
    MS_TRY(grow((void **)&P->treat, N1, sizeof(int), "treatments"));
    MS_TRY(grow((void **)&P->rep, N1, sizeof(int), "replicates"));
    memcpy(P->mil + N0 * K, s.mil_prob, s.N * K * sizeof(float));
    if (s.fc_prob)
        memcpy(P->fc + N0 * K, s.fc_prob, s.N * K * sizeof(float));
    for (size_t i = 0; i < s.N; i++) {
        int l = v.label ? v.label[i] : -1;
        if (l >= v.K)
            MS_FAIL(MS_EFORMAT, "%s: label %d of image %zu is not below its %d classes", shard,
                    l, i, v.K);
        P->label[N0 + i] = l < 0 ? -1 : map[l];
        /* a class the shard does not name is unknown for its images */
        for (int k = 0; k < K; k++)
            P->labels[(N0 + i) * K + k] = -1;
        for (int j = 0; v.labels && j < v.K; j++)
            P->labels[(N0 + i) * K + map[j]] = v.labels[i * v.K + j];
        P->treat[N0 + i] = -1;
        P->rep[N0 + i] = v.replicate[i];
        const char *tn = v.treatment ? v.treatment[i] : "";
        if (!tn[0])
            continue;
        size_t t = 0;
        while (t < P->ntreat && strcmp(P->treat_names[t], tn))
            t++;
        if (t == P->ntreat) {
            MS_TRY(grow((void **)&P->treat_names, P->ntreat + 1, sizeof(char *), "treatments"));
            if (!(P->treat_names[P->ntreat] = strdup(tn)))
                MS_FAIL(MS_ENOMEM, "out of memory for treatments");
            P->ntreat++;
        }
        P->treat[N0 + i] = (int)t;
    }
    P->N = N1;

    /* Cells: the output's /cells/prob rows are the shard's /cells rows, in order. */
    if (s.M && v.cell_label) {
        if (s.M != v.M)
            MS_FAIL(MS_EFORMAT, "%s has %zu cells but its shard %s has %zu", path, s.M, shard,
                    v.M);
        size_t M0 = P->M, M1 = M0 + s.M;
        MS_TRY(grow((void **)&P->cell_prob, M1 * K, sizeof(float), "cells"));
        MS_TRY(grow((void **)&P->cell_label, M1, sizeof(int), "cells"));
        MS_TRY(grow((void **)&P->cell_truth, M1 * K, sizeof(int), "cells"));
        MS_TRY(grow((void **)&P->cell_bag_label, M1, sizeof(int), "cells"));
        MS_TRY(grow((void **)&P->cell_bag_truth, M1 * K, sizeof(int), "cells"));
        memcpy(P->cell_prob + M0 * K, s.cell_prob, s.M * K * sizeof(float));
        for (size_t j = 0; j < s.M; j++) {
            int l = v.cell_label[j];
            if (l >= v.K)
                MS_FAIL(MS_EFORMAT, "%s: cell %zu has label %d, not below its %d classes",
                        shard, j, l, v.K);
            l = l < 0 ? -1 : map[l];
            P->cell_label[M0 + j] = l;
            for (int k = 0; k < K; k++)
                P->cell_truth[(M0 + j) * K + k] = l < 0 ? -1 : l == k;
            /* The noisy labels of paper Table 2: every cell gets its image's label. */
            size_t im = (size_t)v.cell_image[j];
            int bl = P->label[N0 + im];
            P->cell_bag_label[M0 + j] = P->multilabel ? -1 : bl;
            for (int k = 0; k < K; k++)
                P->cell_bag_truth[(M0 + j) * K + k] =
                    P->multilabel ? P->labels[(N0 + im) * K + k] : bl < 0 ? -1 : bl == k;
        }
        P->M = M1;
    }

    /* Masks, one image at a time: the full-resolution images are the large part. The Otsu
     * baseline against the truth is measured even when the output has no masks. */
    if (s.mask_h || v.has_masks) {
        if (s.mask_h && (s.mask_h != v.H || s.mask_w != v.W))
            MS_FAIL(MS_EFORMAT, "%s: masks are %dx%d but the images of %s are %dx%d", path,
                    s.mask_w, s.mask_h, shard, v.W, v.H);
        if (otsu_ch >= v.C)
            MS_FAIL(MS_EARG, "--otsu-channel %d: %s has %d channels", otsu_ch, shard, v.C);
        size_t hw = (size_t)v.H * v.W;
        MS_ALLOC(img, hw * v.C, "image");
        MS_ALLOC(mask, hw, "mask");
        MS_ALLOC(otsu, hw, "Otsu mask");
        MS_ALLOC(truth, hw, "true mask");
        for (size_t i = 0; i < s.N; i++) {
            MS_TRY(ms_shard_view_image(&v, i, img));
            MS_TRY(ms_otsu_mask(otsu, img, v.C, v.H, v.W, otsu_ch));
            if (v.has_masks) {
                MS_TRY(ms_shard_view_mask(&v, i, truth));
                P->iou_otsu_true += ms_mask_iou(otsu, truth, hw);
                P->n_otsu_true++;
            }
            if (s.mask_h) {
                MS_TRY(ms_scores_read_mask(&s, i, mask));
                P->iou_mask_otsu += ms_mask_iou(mask, otsu, hw);
                P->n_mask_images++;
                if (v.has_masks) {
                    P->iou_mask_true += ms_mask_iou(mask, truth, hw);
                    P->n_true_images++;
                }
            }
        }
    }
done:
    free(map);
    free(img);
    free(mask);
    free(otsu);
    free(truth);
    ms_shard_view_close(&v);
    ms_scores_close(&s);
    return st;
}

typedef struct {
    double acc, mca, map;
} head_metrics_t;

static ms_status_t head_metrics(const pool_t *P, const float *prob, const int *label,
                                const int *truth, size_t n, head_metrics_t *m, double *ap)
{
    ms_status_t st = MS_OK;
    int *pred = NULL;
    m->acc = m->mca = m->map = NAN;
    MS_ALLOC(pred, n, "predictions");
    ms_argmax_rows(pred, prob, n, P->K);
    if (label) {
        m->acc = ms_accuracy(pred, label, n, NULL);
        MS_TRY(ms_mean_class_accuracy(pred, label, n, P->K, &m->mca));
    }
    if (truth)
        MS_TRY(ms_mean_average_precision(prob, truth, n, P->K, ap, &m->map));
done:
    free(pred);
    return st;
}

static void pct(FILE *f, double x)
{
    if (isnan(x))
        fprintf(f, " %9s", "-");
    else
        fprintf(f, " %8.2f%%", 100 * x);
}

static void jnum(FILE *f, const char *key, double x, const char *sep)
{
    if (isnan(x))
        fprintf(f, "\"%s\": null%s", key, sep);
    else
        fprintf(f, "\"%s\": %.6f%s", key, x, sep);
}

static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int ms_cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {{"json", required_argument, 0, 'j'},
                                         {"shard-dir", required_argument, 0, 'd'},
                                         {"otsu-channel", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *json = NULL, *shard_dir = NULL;
    int otsu_ch = -1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'h') {
            help();
            return 0;
        } else if (opt == 'j') {
            json = optarg;
        } else if (opt == 'd') {
            shard_dir = optarg;
        } else if (opt == 'o') {
            if (ms_cli_int("eval", "otsu-channel", optarg, -1, 1024, &otsu_ch))
                return 2; /* -1: the sum of the channels */
        } else {
            return ms_cli_usage_error("eval", "unknown option");
        }
    }
    if (optind >= argc)
        return ms_cli_usage_error("eval", "no score output files given");

    ms_status_t st = MS_OK;
    pool_t P;
    memset(&P, 0, sizeof P);
    double *ap_fc = NULL, *ap_mil = NULL, *ap_cell = NULL, *ap_bag = NULL; /* (K) */
    FILE *jf = NULL;
    for (int a = optind; a < argc; a++)
        MS_TRY(add_file(&P, argv[a], shard_dir, otsu_ch));
    const int K = P.K;
    MS_ALLOC(ap_fc, K, "AP");
    MS_ALLOC(ap_mil, K, "AP");
    MS_ALLOC(ap_cell, K, "AP");
    MS_ALLOC(ap_bag, K, "AP");
    head_metrics_t fc = {NAN, NAN, NAN}, mil = {NAN, NAN, NAN}, cell = {NAN, NAN, NAN},
                   bag = {NAN, NAN, NAN};
    const int *label = P.multilabel ? NULL : P.label, *truth = P.multilabel ? P.labels : NULL;
    if (P.have_fc)
        MS_TRY(head_metrics(&P, P.fc, label, truth, P.N, &fc, ap_fc));
    MS_TRY(head_metrics(&P, P.mil, label, truth, P.N, &mil, ap_mil));
    if (P.M)
    {
        MS_TRY(head_metrics(&P, P.cell_prob, P.cell_label, P.cell_truth, P.M, &cell, ap_cell));
        MS_TRY(head_metrics(&P, P.cell_prob, P.multilabel ? NULL : P.cell_bag_label,
                            P.cell_bag_truth, P.M, &bag, ap_bag));
    }
    double treat_fc = NAN, treat_mil = NAN;
    size_t ntreat = 0;
    if (P.have_treat && !P.multilabel) {
        if (P.have_fc)
            MS_TRY(ms_treatment_accuracy(P.fc, P.treat, P.rep, P.label, P.N, K, &treat_fc,
                                          &ntreat));
        MS_TRY(ms_treatment_accuracy(P.mil, P.treat, P.rep, P.label, P.N, K, &treat_mil,
                                      &ntreat));
    }
    double m_true = P.n_true_images ? P.iou_mask_true / P.n_true_images : NAN;
    double o_true = P.n_otsu_true ? P.iou_otsu_true / P.n_otsu_true : NAN;
    double m_otsu = P.n_mask_images ? P.iou_mask_otsu / P.n_mask_images : NAN;

    size_t known = 0;
    for (size_t i = 0; i < P.N; i++) {
        int row = 0; /* a multi-label row is known when any of its classes is */
        for (int k = 0; P.multilabel && k < K; k++)
            row |= P.labels[i * K + k] >= 0;
        known += P.multilabel ? row : P.label[i] >= 0;
    }
    printf("milscreen eval: %d file%s, %zu images (%zu labelled), %d classes, %s\n",
           argc - optind, argc - optind == 1 ? "" : "s", P.N, known, K,
           P.multilabel ? "multi-label" : "single-label");
    printf("%-36s %9s %9s\n", "", "fc_prob", "mil_prob");
    if (!P.multilabel) {
        printf("%-36s", "image accuracy");
        pct(stdout, fc.acc);
        pct(stdout, mil.acc);
        printf("\n%-36s", "image mean per-class accuracy");
        pct(stdout, fc.mca);
        pct(stdout, mil.mca);
        printf("\n");
        if (ntreat) {
            char t[64];
            snprintf(t, sizeof t, "treatment accuracy (%zu treatments)", ntreat);
            printf("%-36s", t);
            pct(stdout, treat_fc);
            pct(stdout, treat_mil);
            printf("\n");
        }
    } else {
        printf("%-36s", "image mAP");
        pct(stdout, fc.map);
        pct(stdout, mil.map);
        printf("\n");
    }
    if (P.M) {
        char t[64];
        snprintf(t, sizeof t, "cells (%zu): accuracy", P.M);
        printf("%-36s %9s", t, "");
        pct(stdout, cell.acc);
        printf("\n%-36s %9s", "cells: mean per-class accuracy", "");
        pct(stdout, cell.mca);
        printf("\n%-36s %9s", "cells: mAP", "");
        pct(stdout, cell.map);
        printf("\n%-36s %9s", "cells, image labels: accuracy", "");
        pct(stdout, bag.acc);
        printf("\n%-36s %9s", "cells, image labels: mAP", "");
        pct(stdout, bag.map);
        printf("\n");
    }
    if (P.n_mask_images || P.n_otsu_true) {
        printf("mask IoU over %zu images:\n",
               P.n_mask_images > P.n_otsu_true ? P.n_mask_images : P.n_otsu_true);
        if (P.n_true_images) {
            printf("  %-34s", "masks vs true masks");
            pct(stdout, m_true);
            printf("\n");
        }
        if (P.n_otsu_true) {
            printf("  %-34s", "Otsu vs true masks");
            pct(stdout, o_true);
            printf("\n");
        }
        if (P.n_mask_images) {
            printf("  %-34s", "masks vs Otsu");
            pct(stdout, m_otsu);
            printf("\n");
        }
    }

    if (json) {
        jf = fopen(json, "w");
        if (!jf)
            MS_FAIL(MS_EIO, "cannot write %s", json);
        fprintf(jf, "{\n  \"files\": [");
        for (int a = optind; a < argc; a++) {
            jstr(jf, argv[a]);
            fprintf(jf, a + 1 < argc ? ", " : "");
        }
        fprintf(jf, "],\n  \"images\": %zu, \"labelled\": %zu, \"classes\": %d, "
                    "\"multilabel\": %s,\n  \"class_names\": [",
                P.N, known, K, P.multilabel ? "true" : "false");
        for (int k = 0; k < K; k++) {
            jstr(jf, P.class_names[k]);
            fprintf(jf, k + 1 < K ? ", " : "");
        }
        fprintf(jf, "],\n");
        const struct {
            const char *name;
            const head_metrics_t *m;
            const double *ap;
            int present;
        } heads[] = {{"fc", &fc, ap_fc, P.have_fc}, {"mil", &mil, ap_mil, 1},
                     {"cells", &cell, ap_cell, P.M > 0},
                     {"cells_image_label", &bag, ap_bag, P.M > 0}};
        for (int h = 0; h < 4; h++) {
            fprintf(jf, "  \"%s\": ", heads[h].name);
            if (!heads[h].present) {
                fprintf(jf, "null,\n");
                continue;
            }
            fprintf(jf, "{");
            jnum(jf, "accuracy", heads[h].m->acc, ", ");
            jnum(jf, "mean_class_accuracy", heads[h].m->mca, ", ");
            jnum(jf, "map", heads[h].m->map, ", ");
            fprintf(jf, "\"ap\": ");
            if (isnan(heads[h].m->map)) {
                fprintf(jf, "null");
            } else {
                fprintf(jf, "[");
                for (int k = 0; k < K; k++) {
                    if (isnan(heads[h].ap[k]))
                        fprintf(jf, "null");
                    else
                        fprintf(jf, "%.6f", heads[h].ap[k]);
                    fprintf(jf, k + 1 < K ? ", " : "");
                }
                fprintf(jf, "]");
            }
            if (h >= 2)
                fprintf(jf, ", \"count\": %zu", P.M);
            fprintf(jf, "},\n");
        }
        fprintf(jf, "  \"treatment\": {");
        jnum(jf, "fc", treat_fc, ", ");
        jnum(jf, "mil", treat_mil, ", ");
        fprintf(jf, "\"count\": %zu},\n  \"masks\": {\"images\": %zu, \"with_truth\": %zu, ",
                ntreat, P.n_mask_images, P.n_otsu_true);
        jnum(jf, "iou_mask_true", m_true, ", ");
        jnum(jf, "iou_otsu_true", o_true, ", ");
        jnum(jf, "iou_mask_otsu", m_otsu, "");
        fprintf(jf, "}\n}\n");
        if (fclose(jf) != 0) {
            jf = NULL;
            MS_FAIL(MS_EIO, "writing %s failed", json);
        }
        jf = NULL;
        printf("wrote %s\n", json);
    }
done:
    if (jf)
        fclose(jf);
    free(ap_fc);
    free(ap_mil);
    free(ap_cell);
    free(ap_bag);
    free(P.fc);
    free(P.mil);
    free(P.label);
    free(P.labels);
    free(P.treat);
    free(P.rep);
    for (size_t t = 0; t < P.ntreat; t++)
        free(P.treat_names[t]);
    free(P.treat_names);
    free(P.cell_prob);
    free(P.cell_label);
    free(P.cell_truth);
    free(P.cell_bag_label);
    free(P.cell_bag_truth);
    if (P.class_names)
        for (int k = 0; k < P.K; k++)
            free(P.class_names[k]);
    free(P.class_names);
    free(P.first);
    return st ? ms_cli_fail("eval", st) : 0;
}

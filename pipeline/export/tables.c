/* The export tables: images.csv (one row per image) and cells.csv (one row per scored cell),
 * RFC 4180 CSV: comma-separated, CRLF line ends, a field quoted when it holds a comma, a quote
 * or a line break, quotes inside doubled. Probabilities are written with 9 significant digits,
 * which reads back as the same float32 (what the score output stores). */
#include "pipeline/export/export.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CSV_SPECIAL ",\"\r\n"

/* s with its quotes doubled (inside a quoted field) or as is. */
static void csv_put(FILE *f, const char *s, int quoted)
{
    for (; s && *s; s++) {
        if (quoted && *s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
}

static void csv_field(FILE *f, const char *s)
{
    int q = s && strpbrk(s, CSV_SPECIAL);
    if (q)
        fputc('"', f);
    csv_put(f, s, q);
    if (q)
        fputc('"', f);
}

/* A header cell "prefix:<class name>". */
static void csv_named(FILE *f, const char *prefix, const char *name)
{
    int q = strpbrk(prefix, CSV_SPECIAL) || strpbrk(name, CSV_SPECIAL);
    if (q)
        fputc('"', f);
    csv_put(f, prefix, q);
    fputc(':', f);
    csv_put(f, name, q);
    if (q)
        fputc('"', f);
}

static void csv_probs(FILE *f, const float *p, int K)
{
    for (int k = 0; k < K; k++)
        fprintf(f, ",%.9g", p[k]);
}

/* The true label of image i by the shard's class names: single-label the name ("" unknown),
 * multi-label the names of the classes present joined by ';' ("" unknown). */
static void csv_true_label(FILE *f, ms_shard_t *sh, int i)
{
    if (!ms_shard_multi_label(sh)) {
        int k = ms_shard_label(sh, i);
        csv_field(f, k >= 0 ? ms_shard_class_name(sh, k) : "");
        return;
    }
    if (!ms_shard_labelled(sh, i))
        return;
    const uint8_t *row = ms_shard_labels(sh, i);
    const int K = ms_shard_classes(sh);
    int q = 0, first = 1;
    for (int k = 0; k < K; k++)
        q |= row[k] && strpbrk(ms_shard_class_name(sh, k), CSV_SPECIAL);
    if (q)
        fputc('"', f);
    for (int k = 0; k < K; k++)
        if (row[k]) {
            if (!first)
                fputc(';', f);
            csv_put(f, ms_shard_class_name(sh, k), q);
            first = 0;
        }
    if (q)
        fputc('"', f);
}

static int argmax(const float *p, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        best = p[k] > p[best] ? k : best;
    return best;
}

/* plate, well, site, treatment, replicate of image i */
static void csv_meta(FILE *f, const ms_image_meta_t *m)
{
    csv_field(f, m->plate);
    fputc(',', f);
    csv_field(f, m->well);
    fprintf(f, ",%d,", m->site);
    csv_field(f, m->treatment);
    fprintf(f, ",%d,", m->replicate);
}

static ms_status_t close_checked(FILE *f, const char *path)
{
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fclose(f) && !err)
        err = errno ? errno : EIO;
    if (err)
        return MS_ERR(MS_EIO, "%s: write failed: %s", path, strerror(err));
    return MS_OK;
}

static ms_status_t open_table(const char *dir, const char *name, char *path, size_t cap,
                              FILE **f)
{
    if (snprintf(path, cap, "%s/%s", dir, name) >= (int)cap)
        return MS_ERR(MS_EARG, "%s/%s: path too long", dir, name);
    if (!(*f = fopen(path, "wb")))
        return MS_ERR(MS_EIO, "%s: cannot create: %s", path, strerror(errno));
    return MS_OK;
}

ms_status_t ms_export_tables(const char *dir, const ms_export_input_t *in, int n_in,
                             char **const *zarr_path, int *wrote_cells)
{
    ms_status_t st = MS_OK;
    FILE *f = NULL;
    char path[4096];
    *wrote_cells = 0;
    if (n_in < 1)
        return MS_OK;
    const int K = in[0].s.K;
    char **names = in[0].s.class_names;

    MS_TRY(open_table(dir, "images.csv", path, sizeof path, &f));
    fputs("shard,image_id,plate,well,site,treatment,replicate,true_label,predicted,"
          "predicted_mil", f);
    for (int k = 0; k < K; k++) {
        fputc(',', f);
        csv_named(f, "fc_prob", names[k]);
    }
    for (int k = 0; k < K; k++) {
        fputc(',', f);
        csv_named(f, "mil_prob", names[k]);
    }
    fputs(zarr_path ? ",zarr_path\r\n" : "\r\n", f);
    for (int a = 0; a < n_in; a++) {
        const ms_scores_t *s = &in[a].s;
        for (size_t i = 0; i < s->N; i++) {
            const ms_image_meta_t *m = ms_shard_meta(in[a].shard, (int)i);
            const float *fc = s->fc_prob + i * K, *mil = s->mil_prob + i * K;
            csv_field(f, ms_export_basename(in[a].shard_path));
            fputc(',', f);
            csv_field(f, s->image_id[i]);
            fputc(',', f);
            csv_meta(f, m);
            csv_true_label(f, in[a].shard, (int)i);
            fputc(',', f);
            csv_field(f, names[s->pred[i]]);
            fputc(',', f);
            csv_field(f, names[argmax(mil, K)]);
            csv_probs(f, fc, K);
            csv_probs(f, mil, K);
            if (zarr_path) {
                fputc(',', f);
                csv_field(f, zarr_path[a] ? zarr_path[a][i] : "");
            }
            fputs("\r\n", f);
        }
    }
    st = close_checked(f, path);
    f = NULL;
    if (st)
        goto done;

    int any_cells = 0;
    for (int a = 0; a < n_in; a++)
        any_cells |= in[a].s.M > 0;
    if (!any_cells)
        goto done;
    MS_TRY(open_table(dir, "cells.csv", path, sizeof path, &f));
    fputs("shard,cell,image_id,plate,well,site,x,y,true_label,predicted", f);
    for (int k = 0; k < K; k++) {
        fputc(',', f);
        csv_named(f, "mil_prob", names[k]);
    }
    fputs("\r\n", f);
    for (int a = 0; a < n_in; a++) {
        const ms_scores_t *s = &in[a].s;
        if (!s->M)
            continue;
        ms_cells_t c;
        MS_TRY(ms_shard_cells(in[a].shard, &c));
        for (size_t j = 0; j < s->M; j++) {
            int i = c.image_index[j]; /* checked against the output's when opened */
            const float *p = s->cell_prob + j * K;
            csv_field(f, ms_export_basename(in[a].shard_path));
            fprintf(f, ",%zu,", j);
            csv_field(f, s->image_id[i]);
            fputc(',', f);
            const ms_image_meta_t *m = ms_shard_meta(in[a].shard, i);
            csv_field(f, m->plate);
            fputc(',', f);
            csv_field(f, m->well);
            fprintf(f, ",%d,%.9g,%.9g,", m->site, c.x[j], c.y[j]);
            int lab = c.label ? c.label[j] : -1;
            if (lab < -1 || lab >= ms_shard_classes(in[a].shard))
                MS_FAIL(MS_EFORMAT, "%s: /cells/label[%zu] = %d is not a class of its %d",
                        in[a].shard_path, j, lab, ms_shard_classes(in[a].shard));
            csv_field(f, lab >= 0 ? ms_shard_class_name(in[a].shard, lab) : "");
            fputc(',', f);
            csv_field(f, names[argmax(p, K)]);
            csv_probs(f, p, K);
            fputs("\r\n", f);
        }
    }
    st = close_checked(f, path);
    f = NULL;
    if (st)
        goto done;
    *wrote_cells = 1;
done:
    if (f)
        fclose(f);
    return st;
}

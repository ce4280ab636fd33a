/* Ingest: CSV parsing, the manifest and BBBC021 layouts, then one common path that checks
 * every TIFF (exists, decodes its header, one size for all), creates the shard, reads images
 * in parallel batches and writes them in row order. */
#include "io/ingest.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/tiff.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAXCH = 16, MAXK = 256 };

/* ------------------------------------------------------------------ CSV */

typedef struct {
    int nf;
    char **f;
    int line;
} csv_row_t;

typedef struct {
    char *path;
    int nrows; /* data rows (the header is hdr) */
    csv_row_t hdr;
    csv_row_t *rows;
} csv_t;

static void csv_free(csv_t *t)
{
    for (int r = -1; r < t->nrows; r++) {
        csv_row_t *row = r < 0 ? &t->hdr : &t->rows[r];
        for (int j = 0; j < row->nf; j++)
            free(row->f[j]);
        free(row->f);
    }
    free(t->rows);
    free(t->path);
    memset(t, 0, sizeof *t);
}

/* RFC 4180: quoted fields with "" for a quote, CR LF or LF; blank lines are skipped. */
static ms_status_t csv_load(csv_t *t, const char *path)
{
    ms_status_t st = MS_OK;
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    char *text = NULL, *field = NULL;
    if (!f)
        return MS_ERR(MS_EIO, "cannot read %s: %m", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    MS_ALLOC(text, (size_t)size + 1, "CSV text");
    if (size > 0 && fread(text, 1, (size_t)size, f) != (size_t)size)
        MS_FAIL(MS_EIO, "cannot read %s", path);
    t->path = strdup(path);
    MS_ALLOC(field, (size_t)size + 1, "CSV field");
    int cap = 0, line = 1;
    long i = 0;
    if (size >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        i = 3; /* a UTF-8 byte order mark */
    while (i < size) {
        csv_row_t row = {.line = line};
        int fcap = 0;
        for (;;) {
            size_t n = 0;
            int quoted = 0;
            if (text[i] == '"') {
                quoted = 1;
                i++;
                for (;;) {
                    if (i >= size)
                        MS_FAIL(MS_EFORMAT, "%s:%d: a quoted field is not closed", path,
                                row.line);
                    if (text[i] == '"') {
                        if (i + 1 < size && text[i + 1] == '"') {
                            field[n++] = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (text[i] == '\n')
                        line++;
                    field[n++] = text[i++];
                }
            }
            while (i < size && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                if (quoted && !isspace((unsigned char)text[i]))
                    MS_FAIL(MS_EFORMAT, "%s:%d: text after a closing quote", path, line);
                field[n++] = text[i++];
            }
            field[n] = 0;
            if (row.nf == fcap) {
                fcap = fcap ? 2 * fcap : 16;
                char **g = realloc(row.f, sizeof *g * (size_t)fcap);
                if (!g)
                    MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
                row.f = g;
            }
            /* trim unquoted surrounding spaces */
            char *s = field;
            if (!quoted) {
                while (isspace((unsigned char)*s))
                    s++;
                size_t l = strlen(s);
                while (l && isspace((unsigned char)s[l - 1]))
                    s[--l] = 0;
            }
            row.f[row.nf++] = strdup(s);
            if (i < size && text[i] == ',') {
                i++;
                continue;
            }
            break;
        }
        if (i < size && text[i] == '\r')
            i++;
        if (i < size && text[i] == '\n')
            i++;
        line++;
        int blank = row.nf == 1 && !row.f[0][0];
        if (blank) {
            free(row.f[0]);
            free(row.f);
            continue;
        }
        if (!t->hdr.f) {
            t->hdr = row;
            continue;
        }
        if (t->nrows == cap) {
            cap = cap ? 2 * cap : 256;
            csv_row_t *g = realloc(t->rows, sizeof *g * (size_t)cap);
            if (!g)
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
            t->rows = g;
        }
        t->rows[t->nrows++] = row;
        if (row.nf != t->hdr.nf)
            MS_FAIL(MS_EFORMAT, "%s:%d: %d fields, but the header has %d", path, row.line,
                    row.nf, t->hdr.nf);
    }
    if (!t->hdr.f)
        MS_FAIL(MS_EFORMAT, "%s is empty (a header line is expected)", path);
done:
    free(text);
    free(field);
    fclose(f);
    if (st)
        csv_free(t);
    return st;
}

static int csv_col(const csv_t *t, const char *name)
{
    for (int j = 0; j < t->hdr.nf; j++)
        if (!strcmp(t->hdr.f[j], name))
            return j;
    return -1;
}

/* ------------------------------------------------------------------ common rows */

typedef struct {
    ms_image_meta_t m;
    uint8_t labels[MAXK];
    int known;
    char *file[MAXCH];
    int page[MAXCH];
    int line;
} row_t;

typedef struct {
    const char *src; /* the CSV, for messages */
    int n, c, k, multi;
    row_t *rows;
    char *chan[MAXCH];
    char *cls[MAXK];
} set_t;

static void set_free(set_t *s)
{
    for (int i = 0; i < s->n; i++) {
        row_t *r = &s->rows[i];
        free(r->m.image_id);
        free(r->m.plate);
        free(r->m.well);
        free(r->m.treatment);
        for (int c = 0; c < s->c; c++)
            free(r->file[c]);
    }
    free(s->rows);
    for (int c = 0; c < s->c; c++)
        free(s->chan[c]);
    for (int k = 0; k < s->k; k++)
        free(s->cls[k]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Class names: from the option (in its order) or the sorted distinct names found. */
static ms_status_t set_classes(set_t *s, const char *opt, char **found, int nfound)
{
    ms_status_t st = MS_OK;
    if (opt) {
        char *copy = strdup(opt), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (s->k == MAXK) {
                free(copy);
                return MS_ERR(MS_EARG, "more than %d classes", MAXK);
            }
            s->cls[s->k++] = strdup(tok);
        }
        free(copy);
        return MS_OK;
    }
    qsort(found, (size_t)nfound, sizeof *found, cmp_str);
    for (int j = 0; j < nfound; j++) {
        if (j && !strcmp(found[j], found[j - 1]))
            continue;
        if (s->k == MAXK)
            MS_FAIL(MS_EARG, "more than %d classes", MAXK);
        s->cls[s->k++] = strdup(found[j]);
    }
done:
    return st;
}

static int class_index(const set_t *s, const char *name)
{
    for (int k = 0; k < s->k; k++)
        if (!strcmp(s->cls[k], name))
            return k;
    return -1;
}

/* Prefixes this thread's error message with the CSV place (the message is copied first: the
 * buffer MS_ERR writes is the one being read). */
static ms_status_t at_row(ms_status_t st, const char *src, int line, const char *chan)
{
    char prev[1024];
    snprintf(prev, sizeof prev, "%s", ms_error_message());
    if (chan)
        return MS_ERR(st, "%s:%d: channel %s: %s", src, line, chan, prev);
    return MS_ERR(st, "%s:%d: %s", src, line, prev);
}

/* Reads one row's channels into img (C, H, W). */
static ms_status_t read_row(const set_t *s, const row_t *r, int H, int W, uint16_t *img)
{
    ms_status_t st = MS_OK;
    for (int c = 0; c < s->c; c++) {
        st = ms_tiff_read(r->file[c], r->page[c], H, W, img + (size_t)c * H * W);
        if (st)
            return at_row(st, s->src, r->line, s->chan[c]);
    }
    return st;
}

static ms_status_t write_set(set_t *s, const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    ms_shard_writer_t *w = NULL;
    uint16_t *img = NULL;
    ms_status_t *sts = NULL;
    char (*msg)[1024] = NULL;
    if (s->n == 0)
        return MS_ERR(MS_EARG, "%s: no images to ingest", s->src);
    /* check every file before creating anything */
    int H = 0, W = 0, bits = 8;
    for (int i = 0; i < s->n && !o->dry_run; i++)
        for (int c = 0; c < s->c; c++) {
            row_t *r = &s->rows[i];
            ms_tiff_info_t info;
            st = ms_tiff_info(r->file[c], r->page[c], &info);
            if (st)
                return at_row(st, s->src, r->line, s->chan[c]);
            if (!H) {
                H = info.height;
                W = info.width;
            }
            if (info.height != H || info.width != W)
                return MS_ERR(MS_ESHAPE, "%s:%d: channel %s: %s (page %d) is %dx%d, but %s is "
                              "%dx%d", s->src, r->line, s->chan[c], r->file[c], r->page[c],
                              info.width, info.height, s->rows[0].file[0], W, H);
            if (info.bits > bits)
                bits = info.bits;
        }
    int labelled = 0;
    for (int i = 0; i < s->n; i++)
        labelled += s->rows[i].known;
    if (o->log)
        fprintf(o->log, "ingest: %d images (%d labelled), %d channels, %d classes%s%s\n", s->n,
                labelled, s->c, s->k, s->multi ? " (multi-label)" : "",
                o->dry_run ? "; dry run: no TIFF read, nothing written" : "");
    if (o->dry_run) {
        if (o->log)
            for (int k = 0; k < s->k; k++) {
                int cnt = 0;
                for (int i = 0; i < s->n; i++)
                    cnt += s->rows[i].known && s->rows[i].labels[k];
                fprintf(o->log, "ingest:   class %2d %-28s %6d images\n", k, s->cls[k], cnt);
            }
        return MS_OK;
    }
    ms_pixel_t dt = o->dtype ? o->dtype : bits == 8 ? MS_DTYPE_U8 : MS_DTYPE_U16;
    ms_shard_spec_t sp = {.n = s->n, .c = s->c, .h = H, .w = W, .dtype = dt, .comp = o->comp,
                          .level = o->level, .tile = o->tile, .k = s->k,
                          .class_names = (const char *const *)s->cls,
                          .channel_names = (const char *const *)s->chan,
                          .multi_label = s->multi};
    MS_TRY(ms_shard_create(&w, out, &sp));
    int B = o->threads;
#ifdef _OPENMP
    if (B <= 0)
        B = omp_get_max_threads();
#endif
    if (B <= 0)
        B = 1;
    size_t per = (size_t)s->c * H * W;
    MS_ALLOC(img, (size_t)B * per, "ingest images");
    MS_ALLOC(sts, B, "ingest");
    MS_ALLOC(msg, B, "ingest");
    for (int i0 = 0; i0 < s->n; i0 += B) {
        int nb = s->n - i0 < B ? s->n - i0 : B;
#pragma omp parallel for num_threads(B) schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            sts[b] = read_row(s, &s->rows[i0 + b], H, W, img + (size_t)b * per);
            if (sts[b])
                snprintf(msg[b], sizeof msg[b], "%s", ms_error_message());
        }
        for (int b = 0; b < nb; b++) {
            row_t *r = &s->rows[i0 + b];
            if (sts[b])
                MS_FAIL(sts[b], "%s", msg[b]);
            if (dt == MS_DTYPE_U8) {
                /* narrow in place: the first bytes of the batch become (nb, C, H, W) uint8 */
                const uint16_t *src = img + (size_t)b * per;
                long bad = ms_narrow_u8((uint8_t *)img + (size_t)b * per, src, per);
                if (bad >= 0)
                    MS_FAIL(MS_EARG, "%s:%d: value %u > 255 for a uint8 shard (--dtype uint16)",
                            s->src, r->line, src[bad]);
            }
        }
        MS_TRY(ms_shard_write_images(w, i0, nb, img, B));
        for (int b = 0; b < nb; b++) {
            int i = i0 + b;
            row_t *r = &s->rows[i];
            st = ms_shard_set_meta(w, i, &r->m, s->multi && r->known ? r->labels : NULL);
            if (st) {
                st = at_row(st, s->src, r->line, NULL);
                goto done;
            }
        }
        if (o->log && (i0 + nb == s->n || (i0 / B) % 50 == 49))
            fprintf(o->log, "ingest: %s: %d/%d images\n", out, i0 + nb, s->n);
    }
    st = ms_shard_finish(w);
    w = NULL;
done:
    ms_shard_discard(w);
    free(img);
    free(sts);
    free(msg);
    return st;
}

/* "path#page" -> file and page; relative paths are taken from base's folder. */
static ms_status_t split_file(const char *spec, const char *base, const char *src, int line,
                              char **file, int *page)
{
    const char *hash = strrchr(spec, '#');
    size_t n = hash ? (size_t)(hash - spec) : strlen(spec);
    *page = 0;
    if (hash) {
        char *end;
        long p = strtol(hash + 1, &end, 10);
        if (end == hash + 1 || *end || p < 0 || p > 100000)
            return MS_ERR(MS_EFORMAT, "%s:%d: '%s': the page after # must be a number", src, line,
                          spec);
        *page = (int)p;
    }
    if (n == 0)
        return MS_ERR(MS_EFORMAT, "%s:%d: an empty file name", src, line);
    const char *slash = strrchr(base, '/');
    size_t dl = spec[0] == '/' || !slash ? 0 : (size_t)(slash - base + 1);
    *file = malloc(dl + n + 1);
    if (!*file)
        return MS_ERR(MS_ENOMEM, "out of memory");
    memcpy(*file, base, dl);
    memcpy(*file + dl, spec, n);
    (*file)[dl + n] = 0;
    return MS_OK;
}

static ms_status_t parse_int(const char *s, const char *src, int line, const char *col, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < -2147483647L || v > 2147483647L)
        return MS_ERR(MS_EFORMAT, "%s:%d: %s '%s' is not an integer", src, line, col, s);
    *out = (int)v;
    return MS_OK;
}

/* ------------------------------------------------------------------ manifest */

ms_status_t ms_ingest_manifest(const char *path, const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    csv_t t;
    set_t s = {.src = path};
    char **found = NULL;
    int nfound = 0, cls = -1;
    MS_TRY(csv_load(&t, path));
    int ci = csv_col(&t, "image_id"), cp = csv_col(&t, "plate"), cw = csv_col(&t, "well");
    int cs = csv_col(&t, "site"), ct = csv_col(&t, "treatment"), cr = csv_col(&t, "replicate");
    int cl = csv_col(&t, "label");
    cls = csv_col(&t, "labels");
    int cf[MAXCH];
    if (cl >= 0 && cls >= 0)
        MS_FAIL(MS_EFORMAT, "%s:%d: give 'label' (one class) or 'labels' (multi-label), not both",
                path, t.hdr.line);
    for (int j = 0; j < t.hdr.nf; j++) {
        const char *h = t.hdr.f[j];
        if (!strncmp(h, "file_", 5) && h[5]) {
            if (s.c == MAXCH)
                MS_FAIL(MS_EFORMAT, "%s: more than %d channels", path, MAXCH);
            cf[s.c] = j;
            s.chan[s.c++] = strdup(h + 5);
        } else if (j != ci && j != cp && j != cw && j != cs && j != ct && j != cr && j != cl &&
                   j != cls) {
            MS_FAIL(MS_EFORMAT, "%s:%d: unknown column '%s' (image_id, plate, well, site, "
                    "treatment, replicate, label or labels, file_<channel>)", path, t.hdr.line, h);
        }
    }
    if (!s.c)
        MS_FAIL(MS_EFORMAT, "%s:%d: no file_<channel> column", path, t.hdr.line);
    if (cp < 0 || cw < 0)
        MS_FAIL(MS_EFORMAT, "%s:%d: columns 'plate' and 'well' are required", path, t.hdr.line);
    s.multi = cls >= 0;
    /* classes */
    MS_ALLOC(found, (size_t)t.nrows * 8 + 1, "class names");
    for (int r = 0; r < t.nrows && (cl >= 0 || cls >= 0); r++) {
        const char *v = t.rows[r].f[cl >= 0 ? cl : cls];
        if (cl >= 0) {
            if (*v)
                found[nfound++] = (char *)v;
        } else {
            char *copy = strdup(v), *save = NULL;
            for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
                if (nfound < t.nrows * 8)
                    found[nfound++] = strdup(tok);
            free(copy);
        }
    }
    MS_TRY(set_classes(&s, o->classes, found, nfound));
    if (cls >= 0)
        for (int j = 0; j < nfound; j++)
            free(found[j]);
    nfound = 0;
    MS_ALLOC(s.rows, t.nrows + 1, "rows");
    for (int r = 0; r < t.nrows; r++) {
        csv_row_t *in = &t.rows[r];
        row_t *d = &s.rows[r];
        s.n = r + 1;
        d->line = in->line;
        d->m.plate = strdup(in->f[cp]);
        d->m.well = strdup(in->f[cw]);
        d->m.treatment = strdup(ct >= 0 ? in->f[ct] : "");
        if (cs >= 0)
            MS_TRY(parse_int(in->f[cs], path, in->line, "site", &d->m.site));
        if (cr >= 0 && in->f[cr][0])
            MS_TRY(parse_int(in->f[cr], path, in->line, "replicate", &d->m.replicate));
        char id[512];
        snprintf(id, sizeof id, "%s_%s_s%d", in->f[cp], in->f[cw], d->m.site);
        d->m.image_id = strdup(ci >= 0 && in->f[ci][0] ? in->f[ci] : id);
        if (!d->m.plate[0] || !d->m.well[0])
            MS_FAIL(MS_EFORMAT, "%s:%d: empty plate or well", path, in->line);
        d->m.label = -1;
        if (cl >= 0 && in->f[cl][0]) {
            d->m.label = class_index(&s, in->f[cl]);
            if (d->m.label < 0)
                MS_FAIL(MS_EFORMAT, "%s:%d: label '%s' is not one of the classes given", path,
                        in->line, in->f[cl]);
            d->known = 1;
        }
        if (cls >= 0 && in->f[cls][0]) {
            char *copy = strdup(in->f[cls]), *save = NULL;
            for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
                int k = class_index(&s, tok);
                if (k < 0) {
                    free(copy);
                    MS_FAIL(MS_EFORMAT, "%s:%d: label '%s' is not one of the classes given",
                            path, in->line, tok);
                }
                d->labels[k] = 1;
            }
            free(copy);
            d->known = 1;
        }
        for (int c = 0; c < s.c; c++) {
            if (!in->f[cf[c]][0])
                MS_FAIL(MS_EFORMAT, "%s:%d: no file for channel %s", path, in->line, s.chan[c]);
            MS_TRY(split_file(in->f[cf[c]], path, path, in->line, &d->file[c], &d->page[c]));
        }
    }
    MS_TRY(write_set(&s, out, o));
done:
    if (cls >= 0)
        for (int j = 0; j < nfound; j++)
            free(found[j]);
    free(found);
    set_free(&s);
    csv_free(&t);
    return st;
}

/* ------------------------------------------------------------------ BBBC021 */

static ms_status_t need_col(const csv_t *t, const char *name, int *col)
{
    *col = csv_col(t, name);
    if (*col < 0)
        return MS_ERR(MS_EFORMAT, "%s:%d: column '%s' is missing (is this BBBC021's table?)",
                      t->path, t->hdr.line, name);
    return MS_OK;
}

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n))
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

ms_status_t ms_ingest_bbbc021(const char *image_csv, const char *moa_csv, const char *root,
                              const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    csv_t im, moa;
    memset(&im, 0, sizeof im);
    memset(&moa, 0, sizeof moa);
    set_t s = {.src = image_csv, .c = 3};
    char **found = NULL;
    double *mconc = NULL;
    char *rootbuf = NULL;
    MS_TRY(csv_load(&im, image_csv));
    MS_TRY(csv_load(&moa, moa_csv));
    static const char *const chans[3] = {"DAPI", "Tubulin", "Actin"};
    int cfile[3], cpath[3], cplate, cwell, crep, ccomp, cconc, mc, mk, mm;
    for (int c = 0; c < 3; c++) {
        char name[64];
        snprintf(name, sizeof name, "Image_FileName_%s", chans[c]);
        MS_TRY(need_col(&im, name, &cfile[c]));
        snprintf(name, sizeof name, "Image_PathName_%s", chans[c]);
        MS_TRY(need_col(&im, name, &cpath[c]));
        s.chan[c] = strdup(chans[c]);
    }
    MS_TRY(need_col(&im, "Image_Metadata_Plate_DAPI", &cplate));
    MS_TRY(need_col(&im, "Image_Metadata_Well_DAPI", &cwell));
    MS_TRY(need_col(&im, "Replicate", &crep));
    MS_TRY(need_col(&im, "Image_Metadata_Compound", &ccomp));
    MS_TRY(need_col(&im, "Image_Metadata_Concentration", &cconc));
    MS_TRY(need_col(&moa, "compound", &mc));
    MS_TRY(need_col(&moa, "concentration", &mk));
    MS_TRY(need_col(&moa, "moa", &mm));
    MS_ALLOC(mconc, moa.nrows + 1, "MoA table");
    MS_ALLOC(found, moa.nrows + 1, "MoA table");
    for (int r = 0; r < moa.nrows; r++) {
        char *end;
        mconc[r] = strtod(moa.rows[r].f[mk], &end);
        if (end == moa.rows[r].f[mk] || *end)
            MS_FAIL(MS_EFORMAT, "%s:%d: concentration '%s' is not a number", moa_csv,
                    moa.rows[r].line, moa.rows[r].f[mk]);
        found[r] = moa.rows[r].f[mm];
    }
    MS_TRY(set_classes(&s, o->classes, found, moa.nrows));
    if (!root) {
        const char *slash = strrchr(image_csv, '/');
        rootbuf = slash ? strndup(image_csv, (size_t)(slash - image_csv)) : strdup(".");
        root = rootbuf;
    }
    MS_ALLOC(s.rows, im.nrows + 1, "rows");
    for (int r = 0; r < im.nrows; r++) {
        csv_row_t *in = &im.rows[r];
        if (o->plates && !in_list(o->plates, in->f[cplate]))
            continue;
        char *end;
        double conc = strtod(in->f[cconc], &end);
        if (end == in->f[cconc] || *end)
            MS_FAIL(MS_EFORMAT, "%s:%d: concentration '%s' is not a number", image_csv, in->line,
                    in->f[cconc]);
        /* the join: same compound, same concentration (the tables print 6 decimals) */
        int hit = -1;
        for (int m = 0; m < moa.nrows && hit < 0; m++)
            if (!strcmp(moa.rows[m].f[mc], in->f[ccomp]) &&
                fabs(mconc[m] - conc) <= 1e-9 + 1e-6 * fabs(conc))
                hit = m;
        if (hit < 0 && !o->all)
            continue;
        row_t *d = &s.rows[s.n++];
        d->line = in->line;
        d->m.plate = strdup(in->f[cplate]);
        d->m.well = strdup(in->f[cwell]);
        MS_TRY(parse_int(in->f[crep], image_csv, in->line, "Replicate", &d->m.replicate));
        /* the site is in the file name: G10_s1_w1....tif */
        d->m.site = 0;
        for (const char *sp = strstr(in->f[cfile[0]], "_s"); sp; sp = strstr(sp + 1, "_s"))
            if (isdigit((unsigned char)sp[2])) {
                d->m.site = atoi(sp + 2);
                break;
            }
        char buf[1024];
        snprintf(buf, sizeof buf, "%s@%g", in->f[ccomp], conc);
        d->m.treatment = strdup(buf);
        snprintf(buf, sizeof buf, "%s_%s_s%d", in->f[cplate], in->f[cwell], d->m.site);
        d->m.image_id = strdup(buf);
        d->m.label = -1;
        if (hit >= 0) {
            d->m.label = class_index(&s, moa.rows[hit].f[mm]);
            if (d->m.label < 0)
                MS_FAIL(MS_EFORMAT, "%s:%d: mechanism '%s' is not one of the classes given",
                        moa_csv, moa.rows[hit].line, moa.rows[hit].f[mm]);
            d->known = 1;
            d->labels[d->m.label] = 1;
        }
        for (int c = 0; c < 3; c++) {
            snprintf(buf, sizeof buf, "%s/%s/%s", root, in->f[cpath[c]], in->f[cfile[c]]);
            d->file[c] = strdup(buf);
            d->page[c] = 0;
        }
    }
    MS_TRY(write_set(&s, out, o));
done:
    free(found);
    free(mconc);
    free(rootbuf);
    set_free(&s);
    csv_free(&im);
    csv_free(&moa);
    return st;
}

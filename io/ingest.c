/* Ingest: the manifest layouts (milscreen's, CellProfiler's LoadData, BBBC021's tables) turn
 * into one list of rows, each naming its files; then one common path checks every file (the
 * output is none of them, each TIFF decodes its header, gives the same channels and size),
 * says once what it will do (class order, conversions, pixel size), creates the shard, reads
 * images in parallel batches and writes them in row order. */
#include "io/ingest.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/csv.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAXCH = MS_TIFF_MAX_CHANNELS, MAXSRC = 32, MAXK = 256, MAXEXTRA = 128, NAMELEN = 96 };

ms_ingest_opts_t ms_ingest_defaults(void)
{
    return (ms_ingest_opts_t){.comp = MS_COMP_DEFLATE, .sample = -1, .log = stderr};
}

static void say(const ms_ingest_opts_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const ms_ingest_opts_t *o, const char *fmt, ...)
{
    if (!o->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("ingest: ", o->log);
    vfprintf(o->log, fmt, ap);
    fputc('\n', o->log);
    va_end(ap);
}

/* ------------------------------------------------------------------ rows */

typedef struct {
    char *file; /* path as opened */
    int page;
} src_t;

typedef struct {
    ms_image_meta_t m;
    uint8_t labels[MAXK];
    int known, line;
    src_t src[MAXSRC]; /* one per file column */
    /* after the check: channel c is sample ch_sample[c] of page ch_page[c] of ch_src[c] */
    uint8_t ch_src[MAXCH], ch_sample[MAXCH];
    int ch_page[MAXCH];
    uint32_t warned; /* sources whose libtiff warnings were shown already */
} row_t;

typedef struct {
    const char *src; /* the CSV, for messages */
    const char *inputs[2]; /* the CSV files themselves (the output must be neither) */
    int n, k, multi;
    row_t *rows;
    int nsrc;
    char *src_name[MAXSRC]; /* channel name of a file_<ch> column; NULL for `file` */
    int c;
    char *chan[MAXCH];
    char *cls[MAXK];
    int nextra;
    char *extra_name[MAXEXTRA];
    char **extra; /* (n, nextra) */
    const char *cls_from; /* where the class order came from, for the summary line */
    int cls_guessed;      /* the sorted names of one manifest's labels: say it loudly */
} set_t;

static void set_free(set_t *s)
{
    for (int i = 0; i < s->n; i++) {
        row_t *r = &s->rows[i];
        free(r->m.image_id);
        free(r->m.plate);
        free(r->m.well);
        free(r->m.treatment);
        for (int j = 0; j < s->nsrc; j++)
            free(r->src[j].file);
    }
    free(s->rows);
    for (int j = 0; j < s->nsrc; j++)
        free(s->src_name[j]);
    for (int c = 0; c < s->c; c++)
        free(s->chan[c]);
    for (int k = 0; k < s->k; k++)
        free(s->cls[k]);
    if (s->extra)
        for (size_t j = 0; j < (size_t)s->n * s->nextra; j++)
            free(s->extra[j]);
    free(s->extra);
    for (int j = 0; j < s->nextra; j++)
        free(s->extra_name[j]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits a comma-separated option into names (spaces around each trimmed); an empty name or
 * one given twice is refused. Returns the count; names are malloc'd. */
static ms_status_t split_names(const char *opt, const char *what, int max, char **names,
                               int *n)
{
    ms_status_t st = MS_OK;
    *n = 0;
    for (const char *p = opt;;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && isspace((unsigned char)*p)) {
            p++;
            l--;
        }
        while (l && isspace((unsigned char)p[l - 1]))
            l--;
        if (!l)
            MS_FAIL(MS_EARG, "%s '%s': an empty name", what, opt);
        if (*n == max)
            MS_FAIL(MS_EARG, "%s: more than %d names", what, max);
        if (!(names[*n] = strndup(p, l)))
            MS_FAIL(MS_ENOMEM, "out of memory");
        for (int j = 0; j < *n; j++)
            if (!strcmp(names[j], names[*n])) {
                (*n)++;
                MS_FAIL(MS_EARG, "%s names '%s' twice (each name once, in the order wanted)",
                        what, names[j]);
            }
        (*n)++;
        if (!e)
            break;
        p = e + 1;
    }
done:
    if (st) {
        for (int j = 0; j < *n; j++)
            free(names[j]);
        *n = 0;
    }
    return st;
}

/* Class names: --classes in its order, or the sorted distinct names found. */
static ms_status_t set_classes(set_t *s, const char *opt, char **found, int nfound,
                               const char *from)
{
    ms_status_t st = MS_OK;
    if (opt) {
        s->cls_from = "--classes";
        return split_names(opt, "--classes", MAXK, s->cls, &s->k);
    }
    s->cls_from = from;
    if (nfound)
        qsort(found, (size_t)nfound, sizeof *found, cmp_str);
    for (int j = 0; j < nfound; j++) {
        if (j && !strcmp(found[j], found[j - 1]))
            continue;
        if (s->k == MAXK)
            MS_FAIL(MS_EARG, "more than %d classes", MAXK);
        if (!(s->cls[s->k++] = strdup(found[j])))
            MS_FAIL(MS_ENOMEM, "out of memory");
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

/* ------------------------------------------------------------------ the output's safety */

/* stat() of the output (following links), or exists = 0. */
typedef struct {
    int exists;
    struct stat st;
} out_id_t;

static int same_file(const out_id_t *out, const char *path)
{
    struct stat st;
    return out->exists && !stat(path, &st) && st.st_dev == out->st.st_dev &&
           st.st_ino == out->st.st_ino;
}

/* Refuses an output that is a folder, one of the CSV inputs, or an existing file without
 * force. TIFF inputs are compared while they are checked. */
static ms_status_t check_out(const set_t *s, const char *out, const ms_ingest_opts_t *o,
                             out_id_t *id)
{
    id->exists = !stat(out, &id->st);
    if (!id->exists) {
        if (errno != ENOENT)
            return MS_ERR(MS_EIO, "--out %s: %s", out, strerror(errno));
        return MS_OK;
    }
    if (S_ISDIR(id->st.st_mode))
        return MS_ERR(MS_EARG, "--out %s is a folder; give the shard's file name", out);
    for (int j = 0; j < 2; j++)
        if (s->inputs[j] && same_file(id, s->inputs[j]))
            return MS_ERR(MS_EARG, "--out %s is the input %s; choose another output name", out,
                          s->inputs[j]);
    if (!o->force)
        return MS_ERR(MS_EARG, "--out %s exists; give --force to replace it", out);
    return MS_OK;
}

/* ------------------------------------------------------------------ the check */

/* What the check of every file gathers, to say once. */
typedef struct {
    int h, w, bits;
    const char *first; /* the file that set the size */
    int nconv[5];      /* files with each MS_TIFF_* conversion */
    char conv_file[5][512];
    int conv_bits[5];
    const char *conv_kind; /* of the first mapped page */
    int split, sampled; /* multi-sample pages split into channels, or one sample kept */
    char split_file[512];
    double ps[2]; /* pixel size from OME-XML */
    char ps_file[512];
    int ps_files, ps_differs;
    char note[640]; /* the first pixel-size note */
    /* libtiff warnings: each distinct text shown for a few files, then counted */
    int nwtext;
    char wtext[32][256];
    int wshown[32];
    int wsuppressed, wfiles;
} check_t;

enum { WARN_REPEAT = 3 };

/* Shows a file's libtiff warning once, unless the same text was shown for WARN_REPEAT files
 * already (a plate of 10,000 files with the same unknown tag gets three lines and a count). */
static void show_warning(check_t *ck, const ms_ingest_opts_t *o, const char *file, int n,
                         const char *text, const char *when)
{
    if (n <= 0)
        return;
    ck->wfiles++;
    int j;
    for (j = 0; j < ck->nwtext && strcmp(ck->wtext[j], text); j++)
        ;
    if (j == ck->nwtext && j < 32) {
        snprintf(ck->wtext[j], sizeof ck->wtext[j], "%s", text);
        ck->wshown[j] = 0;
        ck->nwtext++;
    }
    if (j < 32 && ck->wshown[j] >= WARN_REPEAT) {
        ck->wsuppressed++;
        return;
    }
    if (j < 32)
        ck->wshown[j]++;
    if (n > 1)
        say(o, "warning: %s: libtiff%s: %s (and %d more warnings)", file, when, text, n - 1);
    else
        say(o, "warning: %s: libtiff%s: %s", file, when, text);
}

static const int conv_flag[5] = {MS_TIFF_WIDENED, MS_TIFF_INVERTED, MS_TIFF_PALETTE,
                                 MS_TIFF_MAPPED, MS_TIFF_YCBCR};

/* Records one page's header in the check; the same size for all is enforced. */
static ms_status_t note_page(check_t *ck, const ms_ingest_opts_t *o, const ms_tiff_info_t *in,
                             const char *file, int page, row_t *r, int src)
{
    if (!ck->h) {
        ck->h = in->height;
        ck->w = in->width;
        ck->first = file;
    }
    if (in->height != ck->h || in->width != ck->w)
        return MS_ERR(MS_ESHAPE, "%s (page %d) is %dx%d, but %s is %dx%d", file, page,
                      in->width, in->height, ck->first, ck->w, ck->h);
    if (in->out_bits > ck->bits)
        ck->bits = in->out_bits;
    for (int j = 0; j < 5; j++)
        if (in->conv & conv_flag[j]) {
            if (!ck->nconv[j]++) {
                snprintf(ck->conv_file[j], sizeof ck->conv_file[j], "%s", file);
                ck->conv_bits[j] = in->bits;
                if (conv_flag[j] == MS_TIFF_MAPPED)
                    ck->conv_kind = in->format == 3 ? "floating-point"
                                    : in->format == 2 ? "signed" : "unsigned";
            }
        }
    if (in->nwarnings && !(r->warned & (1u << src))) {
        show_warning(ck, o, file, in->nwarnings, in->warning, "");
        r->warned |= 1u << src;
    }
    const double *ps = in->ome.pixel_size;
    if (ps[0] > 0) {
        if (!ck->ps_files++) {
            ck->ps[0] = ps[0];
            ck->ps[1] = ps[1];
            snprintf(ck->ps_file, sizeof ck->ps_file, "%s", file);
        } else if (fabs(ps[0] - ck->ps[0]) > 1e-9 * ck->ps[0] ||
                   fabs(ps[1] - ck->ps[1]) > 1e-9 * ck->ps[1]) {
            if (!o->pixel_size[0])
                return MS_ERR(MS_EFORMAT, "%s declares pixels of %g x %g um, but %s declares "
                              "%g x %g um: give --pixel-size to say which is right", file,
                              ps[1], ps[0], ck->ps_file, ck->ps[1], ck->ps[0]);
            ck->ps_differs = 1;
        }
    }
    if (in->ome.pixel_note[0] && !ck->note[0])
        snprintf(ck->note, sizeof ck->note, "%s: %s", file, in->ome.pixel_note);
    return MS_OK;
}

/* A channel a row's files give: sample `sample` of page `page` of source `src`. */
typedef struct {
    char name[NAMELEN];
    int src, page, sample;
} chan_t;

/* Name of sample k of a multi-sample page (R, G, B for colour, else s<k>). */
static void sample_name(const ms_tiff_info_t *in, int k, char *out, size_t n)
{
    if (in->rgb && k < 3)
        snprintf(out, n, "%c", "RGB"[k]);
    else
        snprintf(out, n, "s%d", k);
}

/* Appends the channels of one page: one, its samples split, or the --sample one. */
static ms_status_t add_samples(chan_t *ch, int *nch, const ms_tiff_info_t *in, const char *base,
                               const char *file, int src, int page, const ms_ingest_opts_t *o,
                               check_t *ck)
{
    int from = 0, to = in->samples;
    if (in->samples > 1) {
        if (o->sample >= 0) {
            if (o->sample >= in->samples)
                return MS_ERR(MS_EARG, "%s (page %d) has %d samples per pixel; --sample %d "
                              "was asked for", file, page, in->samples, o->sample);
            from = o->sample;
            to = from + 1;
            ck->sampled++;
        } else {
            ck->split++;
        }
        if (!ck->split_file[0])
            snprintf(ck->split_file, sizeof ck->split_file, "%s", file);
    }
    for (int k = from; k < to; k++) {
        if (*nch == MAXCH)
            return MS_ERR(MS_EFORMAT, "%s: more than %d channels in a row", file, MAXCH);
        chan_t *c = &ch[(*nch)++];
        char sn[16];
        sample_name(in, k, sn, sizeof sn);
        if (to - from == 1)
            if (base || in->samples > 1)
            snprintf(c->name, sizeof c->name, "%s", base ? base : sn);
        else
            snprintf(c->name, sizeof c->name, "ch%d", *nch - 1); /* a grey file, no name */
        else if (base)
            snprintf(c->name, sizeof c->name, "%s.%s", base, sn);
        else
            snprintf(c->name, sizeof c->name, "%s", sn);
        c->src = src;
        c->page = page;
        c->sample = k;
    }
    return MS_OK;
}

/* The channels row r's files give, in column order (each file's header checked). */
static ms_status_t expand_row(const set_t *s, row_t *r, const uint8_t *wanted,
                              const ms_ingest_opts_t *o, const out_id_t *out_id,
                              const char *out, check_t *ck, chan_t *ch, int *nch, int *bad)
{
    ms_status_t st = MS_OK;
    ms_tiff_info_t *in = NULL, *cin = NULL;
    MS_ALLOC(in, 1, "TIFF header");
    MS_ALLOC(cin, 1, "TIFF header");
    *nch = 0;
    for (int j = 0; j < s->nsrc; j++) {
        if (!wanted[j])
            continue;
        const char *file = r->src[j].file, *col = s->src_name[j];
        *bad = j;
        if (same_file(out_id, file))
            MS_FAIL(MS_EARG, "--out %s is the input %s; choose another output name", out, file);
        st = ms_tiff_info(file, r->src[j].page, &o->map, in);
        if (st)
            goto done;
        if (col) {
            MS_TRY(note_page(ck, o, in, file, r->src[j].page, r, j));
            MS_TRY(add_samples(ch, nch, in, col, file, j, r->src[j].page, o, ck));
            continue;
        }
        /* a `file` column: every channel the file holds (its first page may be none of them,
         * e.g. an OME-TIFF's thumbnail) */
        if (!in->ome.present) {
            MS_TRY(note_page(ck, o, in, file, 0, r, j));
            if (in->pages > 1)
                MS_FAIL(MS_EFORMAT, "%s has %d pages and no OME-XML saying which channel each "
                        "page holds: name them in file_<channel> columns as %s#0, %s#1, ...",
                        file, in->pages, file, file);
            MS_TRY(add_samples(ch, nch, in, NULL, file, j, 0, o, ck));
            continue;
        }
        if (in->ome.problem[0])
            MS_FAIL(MS_EFORMAT, "%s: %s", file, in->ome.problem);
        for (int c = 0; c < in->ome.nchannels; c++) {
            int page = in->ome.page[c];
            const ms_tiff_info_t *pi = in;
            if (page != r->src[j].page) {
                MS_TRY(ms_tiff_info(file, page, &o->map, cin));
                pi = cin;
            }
            MS_TRY(note_page(ck, o, pi, file, page, r, j));
            char base[NAMELEN];
            if (in->ome.name[c][0])
                snprintf(base, sizeof base, "%s", in->ome.name[c]);
            else
                snprintf(base, sizeof base, "ch%d", c);
            MS_TRY(add_samples(ch, nch, pi, base, file, j, page, o, ck));
        }
    }
done:
    free(in);
    free(cin);
    return st;
}

/* Joins channel names with ", " into buf. */
static const char *join_names(char *buf, size_t n, const chan_t *ch, int nch)
{
    size_t k = 0;
    buf[0] = 0;
    for (int c = 0; c < nch && k + 1 < n; c++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", c ? ", " : "", ch[c].name);
    return buf;
}

/* Checks every row's files, fixes the channel list (the first row's, selected and ordered by
 * --channels) and each row's mapping onto it. */
static ms_status_t check_files(set_t *s, const ms_ingest_opts_t *o, const out_id_t *out_id,
                               const char *out, check_t *ck)
{
    ms_status_t st = MS_OK;
    chan_t *first = NULL, *ch = NULL;
    char *want[MAXCH] = {0};
    int nwant = 0, nfirst = 0, pick[MAXCH];
    uint8_t wanted[MAXSRC];
    char buf[2][2048];
    MS_ALLOC(first, MAXCH, "channels");
    MS_ALLOC(ch, MAXCH, "channels");
    if (o->channels)
        MS_TRY(split_names(o->channels, "--channels", MAXCH, want, &nwant));
    /* a file column no chosen channel comes from is not opened (e.g. LoadData's Illum*) */
    for (int j = 0; j < s->nsrc; j++) {
        const char *col = s->src_name[j];
        wanted[j] = !nwant || !col;
        for (int k = 0; k < nwant && !wanted[j]; k++) {
            size_t l = strlen(col);
            wanted[j] = !strncmp(want[k], col, l) && (!want[k][l] || want[k][l] == '.');
        }
    }
    for (int i = 0; i < s->n; i++) {
        row_t *r = &s->rows[i];
        int nch = 0, bad = 0;
        st = expand_row(s, r, wanted, o, out_id, out, ck, i ? ch : first, &nch, &bad);
        if (st) {
            st = at_row(st, s->src, r->line, s->src_name[bad]); /* NULL: a `file` column */
            goto done;
        }
        if (i == 0) {
            nfirst = nch;
            for (int a = 0; a < nch; a++)
                for (int b = 0; b < a; b++)
                    if (!strcmp(first[a].name, first[b].name))
                        MS_FAIL(MS_EFORMAT, "%s:%d: two channels are named '%s' (%s)", s->src,
                                r->line, first[a].name, join_names(buf[0], sizeof buf[0], first,
                                                                  nch));
            /* the shard's channels: all, or those --channels names, in its order */
            s->c = nwant ? nwant : nch;
            for (int c = 0; c < s->c; c++) {
                pick[c] = c;
                if (nwant) {
                    pick[c] = -1;
                    for (int a = 0; a < nch; a++)
                        if (!strcmp(first[a].name, want[c]))
                            pick[c] = a;
                    if (pick[c] < 0) {
                        s->c = c;
                        MS_FAIL(MS_EARG, "--channels: '%s' is not a channel of %s:%d (it has "
                                "%s)", want[c], s->src, r->line,
                                join_names(buf[0], sizeof buf[0], first, nch));
                    }
                }
                if (!(s->chan[c] = strdup(first[pick[c]].name)))
                    MS_FAIL(MS_ENOMEM, "out of memory");
            }
        } else {
            int a = 0;
            while (a < nch && a < nfirst && !strcmp(ch[a].name, first[a].name))
                a++;
            if (a < nch || a < nfirst) {
                /* name the files where the lists part */
                const char *mine = a < nch ? r->src[ch[a].src].file : "(none)";
                const char *theirs = a < nfirst ? s->rows[0].src[first[a].src].file : "(none)";
                MS_FAIL(MS_EFORMAT, "%s:%d: its files give the channels %s (from %s on), but "
                        "line %d's give %s (from %s on); every row must give the same channels",
                        s->src, r->line, join_names(buf[0], sizeof buf[0], ch, nch), mine,
                        s->rows[0].line, join_names(buf[1], sizeof buf[1], first, nfirst),
                        theirs);
            }
        }
        const chan_t *use = i ? ch : first;
        for (int c = 0; c < s->c; c++) {
            r->ch_src[c] = (uint8_t)use[pick[c]].src;
            r->ch_page[c] = use[pick[c]].page;
            r->ch_sample[c] = (uint8_t)use[pick[c]].sample;
        }
    }
done:
    for (int k = 0; k < nwant; k++)
        free(want[k]);
    free(first);
    free(ch);
    return st;
}

/* ------------------------------------------------------------------ writing */

/* Reads one row's channels into img (C, H, W): consecutive channels of one page in one
 * decode. Returns libtiff's decoding warnings of a file not warned about yet. */
static ms_status_t read_row(const set_t *s, const row_t *r, const ms_tiff_map_t *map, int H,
                            int W, uint16_t *img, int *nwarn, char *warn, int *wsrc)
{
    ms_status_t st = MS_OK;
    *nwarn = 0;
    for (int c = 0; c < s->c;) {
        int e = c + 1, sel[MAXCH];
        sel[0] = r->ch_sample[c];
        while (e < s->c && r->ch_src[e] == r->ch_src[c] && r->ch_page[e] == r->ch_page[c]) {
            sel[e - c] = r->ch_sample[e];
            e++;
        }
        int nw = 0;
        char w[256];
        const src_t *sr = &r->src[r->ch_src[c]];
        st = ms_tiff_read(sr->file, r->ch_page[c], map, e - c, sel, H, W,
                          img + (size_t)c * H * W, &nw, w);
        if (st)
            return at_row(st, s->src, r->line, s->chan[c]);
        if (nw && !*nwarn && !(r->warned & (1u << r->ch_src[c]))) {
            *nwarn = nw;
            *wsrc = r->ch_src[c];
            memcpy(warn, w, sizeof w);
        }
        c = e;
    }
    return st;
}

static void say_summary(const set_t *s, const ms_ingest_opts_t *o, const check_t *ck,
                        const double *ps)
{
    int labelled = 0;
    for (int i = 0; i < s->n; i++)
        labelled += s->rows[i].known;
    char buf[4096];
    size_t k = 0;
    buf[0] = 0;
    for (int c = 0; c < s->c && k + 1 < sizeof buf; c++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", c ? ", " : "", s->chan[c]);
    say(o, "%d images (%d labelled), %d channels (%s), %d classes%s%s", s->n, labelled, s->c,
        buf, s->k, s->multi ? " (multi-label)" : "",
        o->dry_run ? "; dry run: no TIFF read, nothing written" : "");
    /* the class order, in one line: what a second plate must repeat */
    k = 0;
    buf[0] = 0;
    for (int j = 0; j < s->k && k + 1 < sizeof buf; j++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", j ? "," : "", s->cls[j]);
    if (!s->k)
        say(o, "classes: none (no labels; --classes records a screen's classes anyway)");
    else if (!strcmp(s->cls_from, "--classes"))
        say(o, "classes (--classes order): %s", buf);
    else if (s->cls_guessed)
        say(o, "warning: no --classes: the %d classes are the sorted label names found in %s "
            "(%s); a plate that lacks one of them would number them differently: give "
            "--classes %s to every ingest of this screen", s->k, s->cls_from, buf, buf);
    else
        say(o, "classes (%s): %s", s->cls_from, buf);
    if (o->dry_run || !ck)
        return;
    static const char *const what[5] = {
        "widened to %d bits, values kept (lossless)",
        "min-is-white: inverted, v -> 2^bits - 1 - v (lossless)",
        "palette: stored as the colours R, G, B of its colormap (16-bit values), not as indices",
        "", "JPEG YCbCr: decoded to RGB by libjpeg"};
    for (int j = 0; j < 5; j++) {
        if (!ck->nconv[j])
            continue;
        if (conv_flag[j] == MS_TIFF_MAPPED) {
            say(o, "conversion: %d page(s) of %d-bit %s samples (first %s): mapped linearly by "
                "--value-range %g:%g, u = round((v - (%g)) * 65535 / %g); a value outside is "
                "refused", ck->nconv[j], ck->conv_bits[j], ck->conv_kind, ck->conv_file[j],
                o->map.lo, o->map.hi, o->map.lo, o->map.hi - o->map.lo);
            continue;
        }
        char w[160];
        snprintf(w, sizeof w, what[j], ck->conv_bits[j] <= 8 ? 8 : 16);
        say(o, "conversion: %d page(s) (first %s, %d-bit): %s", ck->nconv[j], ck->conv_file[j],
            ck->conv_bits[j], w);
    }
    if (o->map.set && !ck->nconv[3])
        say(o, "--value-range unused: no page has float, signed or 32-bit samples");
    if (ck->split)
        say(o, "conversion: %d page(s) with several samples per pixel (first %s): each sample "
            "a channel (--sample N keeps one)", ck->split, ck->split_file);
    if (ck->sampled)
        say(o, "conversion: %d page(s) with several samples per pixel (first %s): only sample "
            "%d kept (--sample)", ck->sampled, ck->split_file, o->sample);
    if (o->pixel_size[0] && ck->ps_files && ck->ps_differs)
        say(o, "pixel size (x, y) %g, %g um from --pixel-size (files declare others, e.g. %s: "
            "%g, %g um)", ps[1], ps[0], ck->ps_file, ck->ps[1], ck->ps[0]);
    else if (o->pixel_size[0] && ck->ps_files &&
             (fabs(ck->ps[0] - ps[0]) > 1e-9 * ps[0] || fabs(ck->ps[1] - ps[1]) > 1e-9 * ps[1]))
        say(o, "pixel size (x, y) %g, %g um from --pixel-size (%s's OME-XML says %g, %g um)",
            ps[1], ps[0], ck->ps_file, ck->ps[1], ck->ps[0]);
    else if (o->pixel_size[0])
        say(o, "pixel size (x, y) %g, %g um from --pixel-size", ps[1], ps[0]);
    else if (ps[0])
        say(o, "pixel size (x, y) %g, %g um from the OME-XML of %d page(s) (first %s)", ps[1],
            ps[0], ck->ps_files, ck->ps_file);
    else
        say(o, "pixel size unknown (no OME-XML declares it; --pixel-size UM sets it)");
    if (ck->note[0])
        say(o, "note: %s", ck->note);
    if (ck->wsuppressed)
        say(o, "libtiff warnings in %d file(s) in all; %d repeating an earlier text not shown",
            ck->wfiles, ck->wsuppressed);
}

static int cmp_row_id(const void *a, const void *b)
{
    const row_t *x = *(const row_t *const *)a, *y = *(const row_t *const *)b;
    int c = strcmp(x->m.image_id, y->m.image_id);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Unique image ids, checked before any file is read (the writer would refuse them only at
 * the end). */
static ms_status_t check_ids(const set_t *s)
{
    ms_status_t st = MS_OK;
    const row_t **ix = NULL;
    MS_ALLOC(ix, s->n + 1, "image ids");
    for (int i = 0; i < s->n; i++)
        ix[i] = &s->rows[i];
    qsort(ix, (size_t)s->n, sizeof *ix, cmp_row_id);
    for (int i = 1; i < s->n; i++)
        if (!strcmp(ix[i]->m.image_id, ix[i - 1]->m.image_id))
            MS_FAIL(MS_EFORMAT, "%s:%d: image_id '%s' is also line %d's (ids must be unique: "
                    "give an image_id column, or make plate, well and site unique)", s->src,
                    ix[i]->line, ix[i]->m.image_id, ix[i - 1]->line);
done:
    free(ix);
    return st;
}

static ms_status_t write_set(set_t *s, const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    ms_shard_writer_t *w = NULL;
    uint16_t *img = NULL;
    ms_status_t *sts = NULL;
    char (*msg)[1024] = NULL, (*warn)[256] = NULL;
    int *nwarn = NULL, *wsrc = NULL;
    check_t *ck = NULL;
    const char **vals = NULL;
    if (s->n == 0)
        return MS_ERR(MS_EARG, "%s: no images to ingest", s->src);
    MS_TRY(check_ids(s));
    if (o->dry_run) {
        s->c = 0;
        for (int j = 0; j < s->nsrc && s->c < MAXCH; j++)
            if (!(s->chan[s->c++] = strdup(s->src_name[j] ? s->src_name[j]
                                                          : "(every channel of 'file')")))
                MS_FAIL(MS_ENOMEM, "out of memory");
        say_summary(s, o, NULL, NULL);
        for (int k = 0; k < s->k && o->log; k++) {
            int cnt = 0;
            for (int i = 0; i < s->n; i++)
                cnt += s->rows[i].known && s->rows[i].labels[k];
            say(o, "  class %2d %-28s %6d images", k, s->cls[k], cnt);
        }
        return MS_OK;
    }
    out_id_t out_id;
    MS_TRY(check_out(s, out, o, &out_id));
    MS_ALLOC(ck, 1, "ingest check");
    ck->bits = 8;
    MS_TRY(check_files(s, o, &out_id, out, ck));
    int H = ck->h, W = ck->w;
    double ps[2] = {o->pixel_size[0], o->pixel_size[1]};
    if (!ps[0]) {
        ps[0] = ck->ps[0];
        ps[1] = ck->ps[1];
    }
    say_summary(s, o, ck, ps);
    ms_pixel_t dt = o->dtype ? o->dtype : ck->bits == 8 ? MS_DTYPE_U8 : MS_DTYPE_U16;
    ms_shard_spec_t sp = {.n = s->n, .c = s->c, .h = H, .w = W, .dtype = dt, .comp = o->comp,
                          .level = o->level, .tile = o->tile, .k = s->k,
                          .class_names = (const char *const *)s->cls,
                          .channel_names = (const char *const *)s->chan,
                          .multi_label = s->multi, .pixel_size = {ps[0], ps[1]}};
    /* images read at once: the threads, fewer where the batch would pass the memory cap */
    int B = o->threads;
#ifdef _OPENMP
    if (B <= 0)
        B = omp_get_max_threads();
#endif
    if (B <= 0)
        B = 1;
    size_t per = (size_t)s->c * H * W;
    /* a uint16 copy and its encoded chunks (at most about the same size again) per image */
    uint64_t cost = (uint64_t)per * 4 + 4096;
    if (B > s->n)
        B = s->n;
    if ((uint64_t)B * cost > MS_INGEST_BATCH_BYTES) {
        int nb = (int)(MS_INGEST_BATCH_BYTES / cost);
        if (nb < 1)
            nb = 1;
        say(o, "images of %.1f MiB: reading %d at a time instead of %d (memory cap %.0f GiB)",
            (double)per * 2 / (1 << 20), nb, B, (double)MS_INGEST_BATCH_BYTES / (1 << 30));
        B = nb;
    }
    MS_TRY(ms_shard_create(&w, out, &sp));
    MS_ALLOC(vals, s->n + 1, "metadata");
    for (int e = 0; e < s->nextra; e++) {
        for (int i = 0; i < s->n; i++)
            vals[i] = s->extra[(size_t)i * s->nextra + e];
        MS_TRY(ms_shard_write_meta_strings(w, s->extra_name[e], vals));
    }
    MS_ALLOC(img, (size_t)B * per, "ingest images");
    MS_ALLOC(sts, B, "ingest");
    MS_ALLOC(msg, B, "ingest");
    MS_ALLOC(warn, B, "ingest");
    MS_ALLOC(nwarn, B, "ingest");
    MS_ALLOC(wsrc, B, "ingest");
    for (int i0 = 0; i0 < s->n; i0 += B) {
        int nb = s->n - i0 < B ? s->n - i0 : B;
#pragma omp parallel for num_threads(B) schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            sts[b] = read_row(s, &s->rows[i0 + b], &o->map, H, W, img + (size_t)b * per,
                              &nwarn[b], warn[b], &wsrc[b]);
            if (sts[b])
                snprintf(msg[b], sizeof msg[b], "%s", ms_error_message());
        }
        for (int b = 0; b < nb; b++) {
            row_t *r = &s->rows[i0 + b];
            if (sts[b])
                MS_FAIL(sts[b], "%s", msg[b]);
            if (nwarn[b]) {
                show_warning(ck, o, r->src[wsrc[b]].file, nwarn[b], warn[b], " (decoding)");
                r->warned |= 1u << wsrc[b];
            }
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
        if (i0 + nb == s->n || (i0 / B) % 50 == 49)
            say(o, "%s: %d/%d images", out, i0 + nb, s->n);
    }
    /* a file that appeared under the output's name meanwhile is not replaced either */
    struct stat now;
    if (!o->force && !stat(out, &now))
        MS_FAIL(MS_EARG, "--out %s appeared while ingesting; give --force to replace it", out);
    st = ms_shard_finish(w);
    w = NULL;
done:
    ms_shard_discard(w);
    free(img);
    free(sts);
    free(msg);
    free(warn);
    free(nwarn);
    free(wsrc);
    free(ck);
    free(vals);
    return st;
}

/* ------------------------------------------------------------------ paths and numbers */

/* dir + "/" + rel, or rel when it is absolute or dir is empty (malloc'd). */
static char *join_path(const char *dir, const char *rel)
{
    size_t dl = rel[0] == '/' || !dir || !dir[0] ? 0 : strlen(dir);
    size_t rl = strlen(rel);
    char *p = malloc(dl + rl + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    if (dl && dir[dl - 1] != '/')
        p[dl++] = '/';
    memcpy(p + dl, rel, rl + 1);
    return p;
}

/* The folder of path ("" for a bare name), malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path + 1)) : strdup("");
}

/* "path#page" -> file and page; relative paths start from dir. */
static ms_status_t split_file(const char *spec, const char *dir, const char *src, int line,
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
    char *name = strndup(spec, n);
    *file = name ? join_path(dir, name) : NULL;
    free(name);
    if (!*file)
        return MS_ERR(MS_ENOMEM, "out of memory");
    return MS_OK;
}

static ms_status_t parse_int(const char *s, const char *src, int line, const char *col, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < -2147483647L || v > 2147483647L)
        return MS_ERR(MS_EFORMAT, "%s:%d: %s '%s' is not an integer", src, line, col, s);
    *out = (int)v;
    return MS_OK;
}

/* ------------------------------------------------------------------ manifests */

/* Where each field comes from in a manifest's header (-1: absent). */
typedef struct {
    int id, plate, well, site, treatment, replicate, label, labels;
    int file[MAXSRC], path[MAXSRC], frame[MAXSRC], series[MAXSRC];
    int extra[MAXEXTRA];
} cols_t;

/* LoadData allows an "Image_" prefix on its column names. */
static const char *loaddata_name(const char *h)
{
    static const char *const kinds[] = {"FileName_", "PathName_", "Frame_", "Series_", "URL_",
                                        "Metadata_"};
    if (strncmp(h, "Image_", 6))
        return h;
    for (size_t j = 0; j < sizeof kinds / sizeof *kinds; j++)
        if (!strncmp(h + 6, kinds[j], strlen(kinds[j])))
            return h + 6;
    return h;
}

/* The column of LoadData's `<kind><ch>` (e.g. PathName_DNA), or -1. */
static int loaddata_col(const ms_csv_t *t, const char *kind, const char *ch)
{
    size_t kl = strlen(kind);
    for (int j = 0; j < t->hdr.nf; j++) {
        const char *h = loaddata_name(t->hdr.f[j]);
        if (!strncmp(h, kind, kl) && !strcmp(h + kl, ch))
            return j;
    }
    return -1;
}

/* Reads the header: milscreen's layout (file_<ch>, file) or LoadData's (FileName_<ch> and
 * PathName_<ch>, Metadata_Plate/Well/Site); Metadata_* columns are kept in both. */
static ms_status_t read_header(const ms_csv_t *t, set_t *s, cols_t *cl, int *loaddata,
                               const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    const char *path = t->name;
    int line = t->hdr.line, mine = 0, theirs = 0;
    char ignored[512] = "";
    size_t ni = 0;
    *cl = (cols_t){.id = -1, .plate = -1, .well = -1, .site = -1, .treatment = -1,
                   .replicate = -1, .label = -1, .labels = -1};
    for (int j = 0; j < t->hdr.nf; j++) {
        const char *h = t->hdr.f[j];
        for (int k = 0; k < j; k++)
            if (!strcmp(t->hdr.f[k], h))
                return MS_ERR(MS_EFORMAT, "%s:%d: column '%s' twice", path, line, h);
        mine += !strcmp(h, "file") || (!strncmp(h, "file_", 5) && h[5]);
        theirs += !strncmp(loaddata_name(h), "FileName_", 9);
    }
    if (mine && theirs)
        return MS_ERR(MS_EFORMAT, "%s:%d: both file_<channel> and FileName_<channel> columns: "
                      "one layout per manifest (milscreen's or CellProfiler's LoadData)", path,
                      line);
    *loaddata = theirs > 0;
    for (int j = 0; j < t->hdr.nf; j++) {
        const char *h = *loaddata ? loaddata_name(t->hdr.f[j]) : t->hdr.f[j];
        const char *raw = t->hdr.f[j];
        int *slot = NULL;
        if (o->label_column && !strcmp(raw, o->label_column))
            slot = &cl->label;
        else if (o->treatment_column && !strcmp(raw, o->treatment_column))
            slot = &cl->treatment;
        else if (!strcmp(h, "image_id"))
            slot = &cl->id;
        else if (!strcmp(h, "treatment"))
            slot = o->treatment_column ? NULL : &cl->treatment;
        else if (!strcmp(h, "replicate"))
            slot = &cl->replicate;
        else if (!strcmp(h, "label"))
            slot = o->label_column ? NULL : &cl->label;
        else if (!strcmp(h, "labels"))
            slot = &cl->labels;
        else if (!*loaddata && !strcmp(h, "plate"))
            slot = &cl->plate;
        else if (!*loaddata && !strcmp(h, "well"))
            slot = &cl->well;
        else if (!*loaddata && !strcmp(h, "site"))
            slot = &cl->site;
        else if (*loaddata && !strcmp(h, "Metadata_Plate"))
            slot = &cl->plate;
        else if (*loaddata && !strcmp(h, "Metadata_Well"))
            slot = &cl->well;
        else if (*loaddata && !strcmp(h, "Metadata_Site"))
            slot = &cl->site;
        if (slot) {
            *slot = j;
            if (strncmp(h, "Metadata_", 9) || slot == &cl->plate || slot == &cl->well ||
                slot == &cl->site)
                continue; /* a Metadata_* label or treatment column is kept as well */
        }
        if (!strncmp(h, "Metadata_", 9) && h[9]) {
            if (s->nextra == MAXEXTRA)
                return MS_ERR(MS_EFORMAT, "%s:%d: more than %d Metadata_ columns", path, line,
                              MAXEXTRA);
            cl->extra[s->nextra] = j;
            if (!(s->extra_name[s->nextra++] = strdup(h)))
                return MS_ERR(MS_ENOMEM, "out of memory");
            continue;
        }
        int src = -1;
        const char *name = NULL;
        if (!*loaddata && !strcmp(h, "file")) {
            src = j;
        } else if (!*loaddata && !strncmp(h, "file_", 5) && h[5]) {
            src = j;
            name = h + 5;
        } else if (*loaddata && !strncmp(h, "FileName_", 9) && h[9]) {
            src = j;
            name = h + 9;
        }
        if (src >= 0) {
            if (s->nsrc == MAXSRC)
                return MS_ERR(MS_EFORMAT, "%s:%d: more than %d file columns", path, line, MAXSRC);
            int k = s->nsrc++;
            cl->file[k] = j;
            cl->path[k] = cl->frame[k] = cl->series[k] = -1;
            s->src_name[k] = name ? strdup(name) : NULL;
            if (name && !s->src_name[k])
                return MS_ERR(MS_ENOMEM, "out of memory");
            if (*loaddata) {
                cl->path[k] = loaddata_col(t, "PathName_", name);
                cl->frame[k] = loaddata_col(t, "Frame_", name);
                cl->series[k] = loaddata_col(t, "Series_", name);
                if (cl->path[k] < 0)
                    return MS_ERR(MS_EFORMAT, "%s:%d: FileName_%s has no PathName_%s column",
                                  path, line, name, name);
            }
            continue;
        }
        if (*loaddata) {
            const char *kinds[] = {"PathName_", "Frame_", "Series_"};
            int used = 0;
            for (int q = 0; q < 3 && !used; q++)
                if (!strncmp(h, kinds[q], strlen(kinds[q])))
                    used = loaddata_col(t, "FileName_", h + strlen(kinds[q])) >= 0;
            if (used)
                continue;
            if (!strncmp(h, "URL_", 4) && loaddata_col(t, "FileName_", h + 4) < 0)
                return MS_ERR(MS_EFORMAT, "%s:%d: %s has no FileName_%s column: only local "
                              "files (FileName_ and PathName_) are read", path, line, raw,
                              h + 4);
            /* LoadData tables carry other columns (ImageNumber, URL_...): named, not read */
            if (ni + strlen(raw) + 3 < sizeof ignored)
                ni += (size_t)snprintf(ignored + ni, sizeof ignored - ni, "%s%s",
                                       ni ? ", " : "", raw);
            continue;
        }
        return MS_ERR(MS_EFORMAT, "%s:%d: unknown column '%s' (image_id, plate, well, site, "
                      "treatment, replicate, label or labels, file_<channel> or file, "
                      "Metadata_<name>)", path, line, raw);
    }
    if (o->label_column && cl->label < 0)
        return MS_ERR(MS_EARG, "--label-column %s: %s:%d has no such column", o->label_column,
                      path, line);
    if (o->treatment_column && cl->treatment < 0)
        return MS_ERR(MS_EARG, "--treatment-column %s: %s:%d has no such column",
                      o->treatment_column, path, line);
    if (cl->label >= 0 && cl->labels >= 0)
        return MS_ERR(MS_EFORMAT, "%s:%d: give 'label' (one class) or 'labels' (multi-label), "
                      "not both", path, line);
    if (!s->nsrc)
        return MS_ERR(MS_EFORMAT, "%s:%d: no file_<channel>, file or FileName_<channel> "
                      "column", path, line);
    if (cl->plate < 0 || cl->well < 0)
        return MS_ERR(MS_EFORMAT, "%s:%d: columns '%s' and '%s' are required", path, line,
                      *loaddata ? "Metadata_Plate" : "plate", *loaddata ? "Metadata_Well" : "well");
    if (*loaddata)
        say(o, "%s: CellProfiler LoadData layout (FileName_/PathName_ columns)%s%s", path,
            ni ? "; columns not read: " : "", ignored);
    return st;
}

/* Appends name to the growing list of label names found. */
static ms_status_t add_found(char ***found, int *n, int *cap, const char *name)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 256;
        char **g = realloc(*found, sizeof *g * (size_t)c);
        if (!g)
            return MS_ERR(MS_ENOMEM, "out of memory");
        *found = g;
        *cap = c;
    }
    if (!((*found)[*n] = strdup(name)))
        return MS_ERR(MS_ENOMEM, "out of memory");
    (*n)++;
    return MS_OK;
}

ms_status_t ms_ingest_manifest_text(const char *path, const char *text, size_t size,
                                    const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    ms_csv_t t;
    set_t s = {.src = path, .inputs = {path, NULL}};
    char **found = NULL, *dir = NULL;
    int nfound = 0, capfound = 0, loaddata = 0;
    cols_t cl;
    MS_TRY(ms_csv_parse(&t, path, text, size));
    MS_TRY(read_header(&t, &s, &cl, &loaddata, o));
    dir = o->root ? strdup(o->root) : dir_of(path);
    if (!dir)
        MS_FAIL(MS_ENOMEM, "out of memory");
    s.multi = cl.labels >= 0;
    /* classes */
    for (int r = 0; r < t.nrows && (cl.label >= 0 || cl.labels >= 0); r++) {
        const char *v = t.rows[r].f[cl.label >= 0 ? cl.label : cl.labels];
        if (cl.label >= 0) {
            if (*v)
                MS_TRY(add_found(&found, &nfound, &capfound, v));
            continue;
        }
        char *copy = strdup(v), *save = NULL;
        if (!copy)
            MS_FAIL(MS_ENOMEM, "out of memory");
        for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
            if ((st = add_found(&found, &nfound, &capfound, tok)))
                break;
        free(copy);
        if (st)
            goto done;
    }
    MS_TRY(set_classes(&s, o->classes, found, nfound, path));
    s.cls_guessed = !o->classes && s.k > 0;
    MS_ALLOC(s.rows, t.nrows + 1, "rows");
    if (s.nextra)
        MS_ALLOC(s.extra, (size_t)t.nrows * s.nextra + 1, "metadata columns");
    for (int r = 0; r < t.nrows; r++) {
        ms_csv_row_t *in = &t.rows[r];
        row_t *d = &s.rows[r];
        s.n = r + 1;
        d->line = in->line;
        d->m.plate = strdup(in->f[cl.plate]);
        d->m.well = strdup(in->f[cl.well]);
        d->m.treatment = strdup(cl.treatment >= 0 ? in->f[cl.treatment] : "");
        if (!d->m.plate || !d->m.well || !d->m.treatment)
            MS_FAIL(MS_ENOMEM, "out of memory");
        if (cl.site >= 0)
            MS_TRY(parse_int(in->f[cl.site], path, in->line, t.hdr.f[cl.site], &d->m.site));
        if (cl.replicate >= 0 && in->f[cl.replicate][0])
            MS_TRY(parse_int(in->f[cl.replicate], path, in->line, "replicate", &d->m.replicate));
        char id[512];
        snprintf(id, sizeof id, "%s_%s_s%d", in->f[cl.plate], in->f[cl.well], d->m.site);
        d->m.image_id = strdup(cl.id >= 0 && in->f[cl.id][0] ? in->f[cl.id] : id);
        if (!d->m.image_id)
            MS_FAIL(MS_ENOMEM, "out of memory");
        if (!d->m.plate[0] || !d->m.well[0])
            MS_FAIL(MS_EFORMAT, "%s:%d: empty plate or well", path, in->line);
        d->m.label = -1;
        if (cl.label >= 0 && in->f[cl.label][0]) {
            d->m.label = class_index(&s, in->f[cl.label]);
            if (d->m.label < 0)
                MS_FAIL(MS_EFORMAT, "%s:%d: label '%s' is not one of the classes given", path,
                        in->line, in->f[cl.label]);
            d->known = 1;
            d->labels[d->m.label] = 1;
        }
        if (cl.labels >= 0 && in->f[cl.labels][0]) {
            char *copy = strdup(in->f[cl.labels]), *save = NULL;
            if (!copy)
                MS_FAIL(MS_ENOMEM, "out of memory");
            for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
                int k = class_index(&s, tok);
                if (k < 0) {
                    st = MS_ERR(MS_EFORMAT, "%s:%d: label '%s' is not one of the classes given",
                                path, in->line, tok);
                    break;
                }
                d->labels[k] = 1;
            }
            free(copy);
            if (st)
                goto done;
            d->known = 1;
        }
        for (int j = 0; j < s.nsrc; j++) {
            const char *v = in->f[cl.file[j]];
            const char *ch = s.src_name[j] ? s.src_name[j] : "(file)";
            if (!v[0])
                MS_FAIL(MS_EFORMAT, "%s:%d: no file for channel %s", path, in->line, ch);
            if (!loaddata) {
                MS_TRY(split_file(v, dir, path, in->line, &d->src[j].file, &d->src[j].page));
                if (!s.src_name[j] && strrchr(v, '#'))
                    MS_FAIL(MS_EFORMAT, "%s:%d: '%s': a 'file' column takes a whole file (its "
                            "OME channels or its samples); name one page in a file_<channel> "
                            "column", path, in->line, v);
                continue;
            }
            const char *pn = in->f[cl.path[j]];
            char *rel = join_path(pn, v);
            d->src[j].file = rel ? join_path(dir, rel) : NULL;
            free(rel);
            if (!d->src[j].file)
                MS_FAIL(MS_ENOMEM, "out of memory");
            if (cl.frame[j] >= 0 && in->f[cl.frame[j]][0])
                MS_TRY(parse_int(in->f[cl.frame[j]], path, in->line, t.hdr.f[cl.frame[j]],
                                 &d->src[j].page));
            if (d->src[j].page < 0)
                MS_FAIL(MS_EFORMAT, "%s:%d: %s %d is negative", path, in->line,
                        t.hdr.f[cl.frame[j]], d->src[j].page);
            if (cl.series[j] >= 0 && in->f[cl.series[j]][0] &&
                strcmp(in->f[cl.series[j]], "0"))
                MS_FAIL(MS_EFORMAT, "%s:%d: %s is %s: only series 0 is read from a TIFF", path,
                        in->line, t.hdr.f[cl.series[j]], in->f[cl.series[j]]);
        }
        for (int e = 0; e < s.nextra; e++)
            if (!(s.extra[(size_t)r * s.nextra + e] = strdup(in->f[cl.extra[e]])))
                MS_FAIL(MS_ENOMEM, "out of memory");
    }
    MS_TRY(write_set(&s, out, o));
done:
    for (int j = 0; j < nfound; j++)
        free(found[j]);
    free(found);
    free(dir);
    set_free(&s);
    ms_csv_free(&t);
    return st;
}

ms_status_t ms_ingest_manifest(const char *path, const char *out, const ms_ingest_opts_t *o)
{
    ms_status_t st = MS_OK;
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t n = 0, cap = 0;
    if (!f)
        return MS_ERR(MS_EIO, "cannot read %s: %s", path, strerror(errno));
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *g = realloc(text, cap);
            if (!g)
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", path);
            text = g;
        }
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (!got) {
            if (ferror(f))
                MS_FAIL(MS_EIO, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
            break;
        }
    }
    MS_TRY(ms_ingest_manifest_text(path, text, n, out, o));
done:
    free(text);
    fclose(f);
    return st;
}

/* ------------------------------------------------------------------ BBBC021 */

static ms_status_t need_col(const ms_csv_t *t, const char *name, int *col)
{
    *col = ms_csv_col(t, name);
    if (*col < 0)
        return MS_ERR(MS_EFORMAT, "%s:%d: column '%s' is missing (is this BBBC021's table?)",
                      t->name, t->hdr.line, name);
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
    ms_csv_t im, moa;
    memset(&im, 0, sizeof im);
    memset(&moa, 0, sizeof moa);
    set_t s = {.src = image_csv, .inputs = {image_csv, moa_csv}, .nsrc = 3};
    char **found = NULL;
    double *mconc = NULL;
    char *rootbuf = NULL;
    MS_TRY(ms_csv_load(&im, image_csv));
    MS_TRY(ms_csv_load(&moa, moa_csv));
    static const char *const chans[3] = {"DAPI", "Tubulin", "Actin"};
    int cfile[3], cpath[3], cplate, cwell, crep, ccomp, cconc, mc, mk, mm;
    for (int c = 0; c < 3; c++) {
        char name[64];
        snprintf(name, sizeof name, "Image_FileName_%s", chans[c]);
        MS_TRY(need_col(&im, name, &cfile[c]));
        snprintf(name, sizeof name, "Image_PathName_%s", chans[c]);
        MS_TRY(need_col(&im, name, &cpath[c]));
        if (!(s.src_name[c] = strdup(chans[c])))
            MS_FAIL(MS_ENOMEM, "out of memory");
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
    /* every mechanism of the table, whichever plates are kept: plates ingested one by one
     * agree on the order */
    MS_TRY(set_classes(&s, o->classes, found, moa.nrows,
                       "the sorted mechanisms of the MoA table, the same for every plate"));
    if (!root)
        root = o->root;
    if (!root) {
        const char *slash = strrchr(image_csv, '/');
        rootbuf = slash ? strndup(image_csv, (size_t)(slash - image_csv)) : strdup(".");
        root = rootbuf;
    }
    MS_ALLOC(s.rows, im.nrows + 1, "rows");
    for (int r = 0; r < im.nrows; r++) {
        ms_csv_row_t *in = &im.rows[r];
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
        if (!d->m.plate || !d->m.well || !d->m.treatment || !d->m.image_id)
            MS_FAIL(MS_ENOMEM, "out of memory");
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
            if (!(d->src[c].file = strdup(buf)))
                MS_FAIL(MS_ENOMEM, "out of memory");
            d->src[c].page = 0;
        }
    }
    MS_TRY(write_set(&s, out, o));
done:
    free(found);
    free(mconc);
    free(rootbuf);
    set_free(&s);
    ms_csv_free(&im);
    ms_csv_free(&moa);
    return st;
}

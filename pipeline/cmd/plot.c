/* milscreen plot: the training curves of a run as a PNG: loss and accuracy against epoch,
 * training and validation, from the "epoch" lines of the run's log.jsonl (docs/FORMATS.md),
 * drawn with the project's own chart code (render/plot.c) and PNG writer. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/render/plot.h"

static void help(void)
{
    printf("usage: milscreen plot RUN [--out FILE.png] [--title TEXT]\n\n"
           "Draws the training curves of a run: the loss (left) and the accuracy (right)\n"
           "against the epoch, training in blue and validation in vermilion; for the accuracy\n"
           "the MIL output solid and the head dashed. Training figures are over the epoch's\n"
           "batches as trained (dropout and augmentation on, before each update); validation\n"
           "is the whole [data] val after the epoch. A dashed grey line marks where the run\n"
           "was resumed. RUN is a run folder (its log.jsonl is read) or a log.jsonl file.\n\n"
           "  --out FILE.png  where to write, replacing FILE.png (default: curves.png in the\n"
           "                  run folder, which is never replaced: name it to replace it)\n"
           "  --title TEXT    the figure's title (default: the run folder)\n");
}

/* ---- reading the run log: flat JSON objects, one per line ------------------------------ */

typedef enum { J_NUM, J_STR, J_NULL, J_BOOL } jtype_t;
typedef struct {
    char key[40];
    jtype_t type;
    double num;
    char str[80];
} jfield_t;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* A JSON string at p (after its opening quote) into out (truncated to n); returns the
 * character after the closing quote, or NULL when malformed. */
static const char *jstring(const char *p, char *out, size_t n)
{
    size_t len = 0;
    for (; *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\') {
            p++;
            if (!*p)
                return NULL;
            c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'u' ? '?' : *p;
            if (*p == 'u') /* \uXXXX: not in our own logs; kept as '?' */
                for (int i = 0; i < 4 && p[1]; i++)
                    p++;
        }
        if (len + 1 < n)
            out[len++] = c;
    }
    out[len] = 0;
    return *p == '"' ? p + 1 : NULL;
}

/* Parses one flat object {"key": number|string|null|true|false, ...} into f (at most max
 * fields; later ones are dropped). Returns the number of fields, or -1 if malformed. */
static int jparse(const char *s, jfield_t *f, int max)
{
    int n = 0;
    const char *p = skip_ws(s);
    if (*p++ != '{')
        return -1;
    p = skip_ws(p);
    if (*p == '}')
        return 0;
    for (;;) {
        jfield_t tmp, *d = n < max ? &f[n] : &tmp;
        if (*p++ != '"' || !(p = jstring(p, d->key, sizeof d->key)))
            return -1;
        p = skip_ws(p);
        if (*p++ != ':')
            return -1;
        p = skip_ws(p);
        d->str[0] = 0;
        d->num = NAN;
        if (*p == '"') {
            d->type = J_STR;
            if (!(p = jstring(p + 1, d->str, sizeof d->str)))
                return -1;
        } else if (!strncmp(p, "null", 4)) {
            d->type = J_NULL;
            p += 4;
        } else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
            d->type = J_BOOL;
            d->num = *p == 't';
            p += *p == 't' ? 4 : 5;
        } else {
            char *end;
            d->type = J_NUM;
            d->num = strtod(p, &end);
            if (end == p)
                return -1;
            p = end;
        }
        n += n < max;
        p = skip_ws(p);
        if (*p == '}')
            return *skip_ws(p + 1) ? -1 : n;
        if (*p++ != ',')
            return -1;
        p = skip_ws(p);
    }
}

static const jfield_t *jget(const jfield_t *f, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i].key, key))
            return &f[i];
    return NULL;
}

/* A number field, NaN when absent or null. */
static double jnum(const jfield_t *f, int n, const char *key)
{
    const jfield_t *x = jget(f, n, key);
    return x && x->type == J_NUM ? x->num : NAN;
}

typedef struct {
    double epoch, step, lr;
    double v[6]; /* train loss, train MIL, train head, val loss, val MIL, val head */
} epoch_t;

static const char *const fields[6] = {"train_loss", "train_accuracy_mil",
                                      "train_accuracy_head", "val_loss",
                                      "val_accuracy_mil", "val_accuracy_head"};

typedef struct {
    epoch_t *e;  /* (n) by epoch, each epoch once (the last line for it wins) */
    int n, cap;
    double *resumed; /* (nres) epochs after which a later process went on */
    int nres, rcap;
    long lines, bad;
} curves_t;

static ms_status_t add_epoch(curves_t *c, const epoch_t *e)
{
    for (int i = 0; i < c->n; i++)
        if (c->e[i].epoch == e->epoch) {
            /* the same epoch again: a run resumed from an older checkpoint trained it again,
             * and what followed came from the later pass */
            c->e[i] = *e;
            return MS_OK;
        }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        epoch_t *ne = realloc(c->e, sizeof *ne * cap);
        if (!ne)
            return MS_ERR(MS_ENOMEM, "out of memory reading the run log");
        c->e = ne;
        c->cap = cap;
    }
    c->e[c->n++] = *e;
    return MS_OK;
}

static int by_epoch(const void *a, const void *b)
{
    double x = ((const epoch_t *)a)->epoch, y = ((const epoch_t *)b)->epoch;
    return (x > y) - (x < y);
}

static ms_status_t read_log(const char *path, curves_t *c)
{
    ms_status_t st = MS_OK;
    char *line = NULL;
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return MS_ERR(MS_EIO, "%s: cannot open the run log: %s", path, strerror(errno));
    double last_epoch = NAN;
    jfield_t fl[40];
    while (getline(&line, &cap, f) >= 0) {
        c->lines++;
        if (!*skip_ws(line))
            continue;
        int n = jparse(line, fl, 40);
        const jfield_t *ev = n > 0 ? jget(fl, n, "event") : NULL;
        if (!ev || ev->type != J_STR) {
            c->bad++; /* e.g. a last line cut short when the job was killed */
            continue;
        }
        if (!strcmp(ev->str, "epoch")) {
            epoch_t e = {.epoch = jnum(fl, n, "epoch"), .step = jnum(fl, n, "step"),
                         .lr = jnum(fl, n, "lr")};
            if (!isfinite(e.epoch)) {
                c->bad++;
                continue;
            }
            for (int k = 0; k < 6; k++)
                e.v[k] = jnum(fl, n, fields[k]);
            MS_TRY(add_epoch(c, &e));
            last_epoch = e.epoch;
        } else if (!strcmp(ev->str, "start") && jnum(fl, n, "step") > 0 &&
                   isfinite(last_epoch)) {
            if (c->nres == c->rcap) {
                int rc = c->rcap ? 2 * c->rcap : 16;
                double *r = realloc(c->resumed, sizeof *r * rc);
                if (!r)
                    MS_FAIL(MS_ENOMEM, "out of memory reading the run log");
                c->resumed = r;
                c->rcap = rc;
            }
            c->resumed[c->nres++] = last_epoch;
        }
    }
    if (ferror(f))
        MS_FAIL(MS_EIO, "%s: read error", path);
    if (c->n)
        qsort(c->e, (size_t)c->n, sizeof *c->e, by_epoch);
done:
    free(line);
    fclose(f);
    return st;
}

/* "lr 0.001" or "lr 0.001, 0.0001 from epoch 21, ..." from the epochs' rates. */
static void describe_lr(char *buf, size_t n, const curves_t *c)
{
    size_t len = (size_t)snprintf(buf, n, "lr");
    double prev = NAN;
    int shown = 0;
    for (int i = 0; i < c->n && len < n; i++) {
        double lr = c->e[i].lr;
        if (!isfinite(lr) || lr == prev)
            continue;
        if (shown == 4) {
            len += (size_t)snprintf(buf + len, n - len, ", ...");
            break;
        }
        len += (size_t)snprintf(buf + len, n - len, shown ? ", %g from epoch %g" : " %g", lr,
                                c->e[i].epoch);
        prev = lr;
        shown++;
    }
    if (!shown)
        snprintf(buf, n, "lr not logged");
}

int ms_cmd_plot(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"title", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *title = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': help(); return 0;
        case 'o': out = optarg; break;
        case 't': title = optarg; break;
        default: return ms_cli_usage_error("plot", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return ms_cli_usage_error("plot", optind >= argc ? "which run? give its folder"
                                                         : "one run at a time");
    const char *run = argv[optind];

    ms_status_t st = MS_OK;
    curves_t c = {0};
    ms_canvas_t cv = {0};
    double *x = NULL, *y = NULL; /* (n), (6, n) */
    char log[4096], outbuf[4200], sub[256], lr[160], titlebuf[4096];
    struct stat sb;
    int is_dir = stat(run, &sb) == 0 && S_ISDIR(sb.st_mode);
    snprintf(log, sizeof log, is_dir ? "%s/log.jsonl" : "%s", run);
    if (!out) {
        const char *slash = strrchr(log, '/');
        snprintf(outbuf, sizeof outbuf, "%.*scurves.png", slash ? (int)(slash - log + 1) : 0,
                 log);
        out = outbuf;
    }
    /* the default name is no output the user named: never replace a file there */
    if (out == outbuf && stat(out, &sb) == 0)
        MS_FAIL(MS_EARG, "%s exists; to replace it name it: --out %s", out, out);
    MS_TRY(read_log(log, &c));
    if (c.bad)
        fprintf(stderr, "milscreen plot: warning: %s: %ld of %ld lines are not log events and "
                "were skipped (a line cut short when a job was killed, or another file)\n",
                log, c.bad, c.lines);
    if (c.n == 0)
        MS_FAIL(MS_EFORMAT, "%s has no \"epoch\" lines: no epoch of the run has finished, or "
                "it was written by a milscreen from before per-epoch logging", log);

    MS_ALLOC(x, c.n, "curves");
    MS_ALLOC(y, 6 * (size_t)c.n, "curves");
    int has[6] = {0};
    for (int i = 0; i < c.n; i++) {
        x[i] = c.e[i].epoch;
        for (int k = 0; k < 6; k++) {
            y[k * c.n + i] = c.e[i].v[k];
            has[k] |= isfinite(c.e[i].v[k]);
        }
    }
    ms_plot_t p = {.npanels = 2};
    ms_plot_panel_t *loss = &p.panels[0], *acc = &p.panels[1];
    loss->title = "loss";
    acc->title = "accuracy";
    loss->xlabel = acc->xlabel = "epoch";
    acc->ymin = -0.03; /* 0 to 1, with room for markers at exactly 0 and 1 */
    acc->ymax = 1.03;
    const uint8_t *colour[6] = {ms_plot_train_rgb, ms_plot_train_rgb, ms_plot_train2_rgb,
                                ms_plot_val_rgb,   ms_plot_val_rgb,   ms_plot_val2_rgb};
    static const char *const label[6] = {"training",           "training, MIL output",
                                         "training, head",     "validation",
                                         "validation, MIL output", "validation, head"};
    /* loss: training then validation; accuracy: MIL then head, training then validation */
    static const int order[6] = {0, 3, 1, 4, 2, 5};
    for (int j = 0; j < 6; j++) {
        int k = order[j];
        if (!has[k])
            continue;
        ms_plot_panel_t *pn = k == 0 || k == 3 ? loss : acc;
        ms_plot_series_t *se = &pn->series[pn->nseries++];
        se->label = label[k];
        se->x = x;
        se->y = y + (size_t)k * c.n;
        se->n = c.n;
        memcpy(se->rgb, colour[k], 3);
        ms_plot_marker_colour(se->marker, colour[k]);
        se->dashed = k == 2 || k == 5;
    }
    for (int i = 0; i < 2; i++) {
        p.panels[i].marks = c.resumed;
        p.panels[i].nmarks = c.nres;
        p.panels[i].mark_label = "resumed";
    }
    if (!has[1] && !has[2] && !has[4] && !has[5])
        p.npanels = 1;
    describe_lr(lr, sizeof lr, &c);
    snprintf(sub, sizeof sub, "%d epochs, %.0f steps; %s", c.n, c.e[c.n - 1].step, lr);
    if (!title) {
        snprintf(titlebuf, sizeof titlebuf, "%s", is_dir ? run : log);
        size_t len = strlen(titlebuf);
        while (len > 1 && titlebuf[len - 1] == '/')
            titlebuf[--len] = 0;
        title = titlebuf;
    }
    p.title = title;
    p.subtitle = sub;
    ms_plot_frame_t fr[MS_PLOT_MAX_PANELS];
    MS_TRY(ms_plot_draw(&cv, &p, fr));
    MS_TRY(ms_png_write(out, cv.rgb, cv.w, cv.h));
    printf("wrote %s (%dx%d): %d epochs of %s\n", out, cv.w, cv.h, c.n, log);
    /* where the values went, for a script that checks the picture */
    for (int i = 0; i < p.npanels; i++)
        printf("  %s: epoch %g to %g on x %d to %d, %g to %g on y %d to %d\n",
               p.panels[i].title, fr[i].xmin, fr[i].xmax, fr[i].x0, fr[i].x1, fr[i].ymax,
               fr[i].ymin, fr[i].y0, fr[i].y1);
done:
    ms_canvas_free(&cv);
    free(x);
    free(y);
    free(c.e);
    free(c.resumed);
    return st ? ms_cli_fail("plot", st) : 0;
}

/* milscreen render: one image of a score output as a PNG a person can read: the source image
 * (from the shard the output names), the class map as a heat overlay, the mask outline, and
 * the class probabilities of both heads written beside it. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/spec.h"
#include "io/h5util.h"
#include "io/shard.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/eval/evalio.h"
#include "pipeline/render/render.h"

static void help(void)
{
    printf("usage: milscreen render --input OUTPUT.h5 (--index I | --id IMAGE_ID) --out FILE.png\n"
           "                        [options]\n\n"
           "Draws image I of a score output: its channels in colour (percentile contrast\n"
           "stretch), the instance map of the predicted class (or --class) as a heat overlay\n"
           "whose opacity is the instance probability, the mask outline in cyan, a scale bar\n"
           "when the shard records its pixel size (attribute pixel_size_um), and a panel with\n"
           "the image id, plate, well, site, treatment, its true label, the channels' colours,\n"
           "the heat colour bar and every class's probability from both heads (FC and MIL),\n"
           "highest first. The image is read from the shard named by the output's 'source'\n"
           "attribute.\n\n"
           "  --class NAME       class map to show, by its name (exact, else ignoring case when\n"
           "                     that is unambiguous); --class '#K' takes the class with index\n"
           "                     K (0-based), so a class named \"3\" is never taken for index 3\n"
           "                     (default: /pred, else the arg-max of fc_prob)\n"
           "  --percentile P     contrast stretch from the P-th to the (100-P)-th percentile\n"
           "                     of each channel (default 0.5)\n"
           "  --alpha A          heat opacity at probability 1 (default 0.4; 0: no heat)\n"
           "  --colours LIST     colour per channel, e.g. blue,green,red (names: red green\n"
           "                     blue cyan magenta yellow white off); default: by the shard's\n"
           "                     channel names (DAPI/Hoechst blue, tubulin/GFP green, actin\n"
           "                     red, RFP/mCherry magenta), else grey for one channel,\n"
           "                     green,magenta for two, red,green,blue for three\n"
           "  --no-mask          leave out the mask outline\n"
           "  --zoom Z           enlarge the image Z times (default: images under 512 pixels\n"
           "                     to about 512)\n"
           "  --shard-dir DIR    look for the shard in DIR when 'source' does not exist\n");
}

static const struct {
    const char *name;
    uint8_t rgb[3];
} named_colours[] = {{"red", {255, 0, 0}},     {"green", {0, 255, 0}},
                     {"blue", {0, 0, 255}},    {"cyan", {0, 255, 255}},
                     {"magenta", {255, 0, 255}}, {"yellow", {255, 255, 0}},
                     {"white", {255, 255, 255}}, {"grey", {255, 255, 255}},
                     {"gray", {255, 255, 255}},  {"off", {0, 0, 0}}};

static int parse_colours(const char *s, uint8_t (*out)[3], int C)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int c = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","), c++) {
        if (c >= C)
            return -1;
        size_t i = 0;
        while (i < sizeof named_colours / sizeof *named_colours &&
               strcmp(named_colours[i].name, tok))
            i++;
        if (i == sizeof named_colours / sizeof *named_colours)
            return -1;
        memcpy(out[c], named_colours[i].rgb, 3);
    }
    return c == C ? 0 : -1;
}

/* Colours by the usual stains: a channel named like a nuclear stain is blue, tubulin or GFP
 * green, actin or RFP red (BBBC021's and the yeast screen's conventions). 0 when a channel
 * name matches none, or two channels would share a colour; the defaults apply then. */
static int colours_by_name(char *const *names, int C, uint8_t (*out)[3])
{
    static const struct {
        const char *key;
        uint8_t rgb[3];
    } stains[] = {{"dapi", {0, 0, 255}},      {"hoechst", {0, 0, 255}}, {"nucle", {0, 0, 255}},
                  {"dna", {0, 0, 255}},       {"tubulin", {0, 255, 0}}, {"gfp", {0, 255, 0}},
                  {"actin", {255, 0, 0}},     {"phalloidin", {255, 0, 0}},
                  {"rfp", {255, 0, 255}},     {"mcherry", {255, 0, 255}}};
    for (int c = 0; c < C; c++) {
        char low[64];
        size_t n = 0;
        for (; names[c][n] && n + 1 < sizeof low; n++)
            low[n] = (char)(names[c][n] >= 'A' && names[c][n] <= 'Z' ? names[c][n] + 32
                                                                       : names[c][n]);
        low[n] = 0;
        size_t j = 0;
        while (j < sizeof stains / sizeof *stains && !strstr(low, stains[j].key))
            j++;
        if (j == sizeof stains / sizeof *stains)
            return 0;
        memcpy(out[c], stains[j].rgb, 3);
        for (int d = 0; d < c; d++)
            if (!memcmp(out[d], out[c], 3))
                return 0;
    }
    return C > 1;
}

/* Where the network puts instance (0, 0) and how far apart instances are, from the config
 * the output was scored with: centre = sum over layers of ((size-1)/2 - pad) * stride so far. */
static int geometry(const char *config_text, int *stride, double *offset)
{
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    int ok = 0;
    if (config_text && ms_config_parse(&cfg, config_text, "score output config") == MS_OK &&
        ms_spec_from_config(&spec, cfg) == MS_OK) {
        double off = 0;
        int j = 1;
        for (int i = 0; i < spec.mil; i++) {
            const ms_layer_spec_t *l = &spec.layers[i];
            if (l->kind == MS_LAYER_CONV || l->kind == MS_LAYER_MAXPOOL ||
                l->kind == MS_LAYER_AVGPOOL) {
                off += ((l->size - 1) / 2.0 - l->pad) * j;
                j *= l->stride;
            }
        }
        *stride = j;
        *offset = off;
        ok = 1;
    }
    ms_spec_free(&spec);
    ms_config_free(cfg);
    ms_error_clear();
    return ok;
}

/* The shard's pixel size, micrometres per pixel (y, x) from its root attribute
 * pixel_size_um; 0 when it has none. A malformed one is an error: no bar beats a wrong one. */
static ms_status_t shard_pixel_size(const char *path, double um[2])
{
    ms_status_t st = MS_OK;
    hid_t f = H5I_INVALID_HID;
    um[0] = um[1] = 0;
    MS_TRY(ms_h5_open(&f, path));
    if (ms_h5_attr_exists(f, "pixel_size_um")) {
        MS_TRY(ms_h5_attr_get_doubles(f, "pixel_size_um", 2, um));
        if (!(um[0] > 0 && um[1] > 0 && um[0] < 1e6 && um[1] < 1e6))
            MS_FAIL(MS_EFORMAT, "%s: pixel_size_um = (%g, %g) is not a pixel size in "
                    "micrometres", path, um[0], um[1]);
    }
done:
    if (f >= 0)
        H5Fclose(f);
    return st;
}

static int file_exists(const char *p)
{
    FILE *f = fopen(p, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

typedef struct {
    int k;
    float p;
} ranked_t;

static int by_prob_desc(const void *a, const void *b)
{
    float x = ((const ranked_t *)a)->p, y = ((const ranked_t *)b)->p;
    return (x < y) - (x > y);
}

#define NLINE 96

int ms_cmd_render(int argc, char **argv)
{
    static const struct option opts[] = {{"input", required_argument, 0, 'i'},
                                         {"index", required_argument, 0, 'n'},
                                         {"id", required_argument, 0, 'I'},
                                         {"class", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"percentile", required_argument, 0, 'p'},
                                         {"alpha", required_argument, 0, 'a'},
                                         {"colours", required_argument, 0, 'c'},
                                         {"colors", required_argument, 0, 'c'},
                                         {"no-mask", no_argument, 0, 'm'},
                                         {"zoom", required_argument, 0, 'z'},
                                         {"shard-dir", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *input = NULL, *out = NULL, *cls = NULL, *colours = NULL, *shard_dir = NULL;
    const char *image_id = NULL;
    long index = -1;
    double percentile = 0.5, alpha = 0.4;
    int zoom = 0;
    int no_mask = 0, opt;
    char *end;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            help();
            return 0;
        case 'i':
            input = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'k':
            cls = optarg;
            break;
        case 'c':
            colours = optarg;
            break;
        case 'd':
            shard_dir = optarg;
            break;
        case 'm':
            no_mask = 1;
            break;
        case 'I':
            image_id = optarg;
            break;
        case 'z':
            if (ms_cli_int("render", "zoom", optarg, 1, 64, &zoom))
                return 2;
            break;
        case 'n': {
            int i;
            if (ms_cli_int("render", "index", optarg, 0, 2147483647, &i))
                return 2;
            index = i;
            break;
        }
        case 'p':
            percentile = strtod(optarg, &end);
            if (*end || end == optarg || !(percentile >= 0 && percentile < 50))
                return ms_cli_usage_error("render", "--percentile '%s': expected 0 <= P < 50",
                                          optarg);
            break;
        case 'a':
            alpha = strtod(optarg, &end);
            if (*end || end == optarg || !(alpha >= 0 && alpha <= 1))
                return ms_cli_usage_error("render", "--alpha '%s': expected 0 to 1", optarg);
            break;
        default:
            return ms_cli_usage_error("render", "unknown option");
        }
    }
    if (optind < argc)
        return ms_cli_usage_error("render", "unexpected argument '%s'", argv[optind]);
    if (!input || !out || (index < 0) == !image_id)
        return ms_cli_usage_error("render", "--input, --out and one of --index or --id are "
                                  "required");

    ms_status_t st = MS_OK;
    ms_scores_t s;
    ms_shard_view_t v;
    ms_canvas_t cv = {0};
    float *img = NULL, *map = NULL; /* (C, H, W), (h, w) */
    uint8_t *mask = NULL;           /* (H, W) */
    uint8_t(*col)[3] = NULL;        /* (C) */
    ranked_t *rank = NULL;          /* (K) */
    char (*text)[NLINE] = NULL;     /* (MS_RENDER_MAX_LINES) */
    char shard[4096];
    memset(&v, 0, sizeof v);
    MS_TRY(ms_scores_open(&s, input));
    if (image_id) {
        for (size_t j = 0; j < s.N && s.image_id && index < 0; j++)
            if (!strcmp(s.image_id[j], image_id))
                index = (long)j;
        if (index < 0)
            MS_FAIL(MS_EARG, "--id %s: no such image in %s", image_id, input);
    }
    if ((size_t)index >= s.N)
        MS_FAIL(MS_EARG, "--index %ld: %s has %zu images", index, input, s.N);
    const size_t i = (size_t)index;
    const int K = s.K;

    /* The shard: as recorded, else by file name in --shard-dir or beside the output. */
    if (!s.source)
        MS_FAIL(MS_EFORMAT, "%s has no 'source' attribute naming its shard", input);
    snprintf(shard, sizeof shard, "%s", s.source);
    if (!file_exists(shard)) {
        const char *base = strrchr(s.source, '/');
        base = base ? base + 1 : s.source;
        const char *slash = strrchr(input, '/');
        if (shard_dir)
            snprintf(shard, sizeof shard, "%s/%s", shard_dir, base);
        if (!shard_dir || !file_exists(shard))
            snprintf(shard, sizeof shard, "%.*s%s", slash ? (int)(slash - input + 1) : 0, input,
                     base);
        if (!file_exists(shard))
            MS_FAIL(MS_EIO, "%s: its shard %s does not exist; use --shard-dir", input, s.source);
    }
    MS_TRY(ms_shard_view_open(&v, shard));
    if (v.N != s.N)
        MS_FAIL(MS_EFORMAT, "%s has %zu images but its shard %s has %zu", input, s.N, shard, v.N);

    /* Class to show: a name, or "#K" for an index, never guessed between the two. */
    const float *fc = s.fc_prob ? s.fc_prob + i * K : NULL, *mil = s.mil_prob + i * K;
    int k = -1;
    const char *how = "the prediction";
    if (cls && cls[0] == '#') {
        char *e2;
        long kk = strtol(cls + 1, &e2, 10);
        if (*e2 || e2 == cls + 1 || kk < 0 || kk >= K)
            MS_FAIL(MS_EARG, "--class %s: %s has classes #0 to #%d", cls, input, K - 1);
        k = (int)kk;
        how = "by index";
    } else if (cls) {
        for (int c = 0; c < K && k < 0; c++)
            if (!strcmp(s.class_names[c], cls))
                k = c;
        int matches = 0;
        for (int c = 0; c < K && k < 0; c++)
            matches += !strcasecmp(s.class_names[c], cls);
        for (int c = 0; c < K && k < 0 && matches == 1; c++)
            if (!strcasecmp(s.class_names[c], cls))
                k = c;
        if (matches > 1)
            MS_FAIL(MS_EARG, "--class %s: %d classes of %s have that name in another case; "
                    "give it exactly, or as #index", cls, matches, input);
        if (k < 0) {
            long kk = strtol(cls, &end, 10);
            int number = !*end && end != cls && kk >= 0 && kk < K;
            if (number)
                MS_FAIL(MS_EARG, "--class %s: no class of %s is named \"%s\"; for the class "
                        "with index %ld (\"%s\") write --class '#%ld'", cls, input, cls, kk,
                        s.class_names[kk], kk);
            MS_FAIL(MS_EARG, "--class %s: no class of %s has that name (they are: %s%s%s%s); "
                    "or give #0 to #%d", cls, input, s.class_names[0], K > 1 ? ", " : "",
                    K > 1 ? s.class_names[1] : "", K > 2 ? ", ..." : "", K - 1);
        }
        how = "by name";
    } else if (s.pred && s.pred[i] >= 0 && s.pred[i] < K) {
        k = s.pred[i];
    } else {
        const float *p = fc ? fc : mil;
        k = 0;
        for (int c = 1; c < K; c++)
            if (p[c] > p[k])
                k = c;
    }

    size_t hw = (size_t)v.H * v.W;
    MS_ALLOC(img, hw * v.C, "image");
    MS_TRY(ms_shard_view_image(&v, i, img));
    ms_render_t r = {.img = img, .C = v.C, .H = v.H, .W = v.W, .percentile = percentile,
                     .heat_alpha = alpha, .zoom = zoom};
    MS_ALLOC(col, v.C, "channel colours");
    if (colours) {
        if (parse_colours(colours, col, v.C) != 0)
            MS_FAIL(MS_EARG, "--colours %s: expected %d names of red green blue cyan magenta "
                    "yellow white off, separated by commas", colours, v.C);
        r.colours = (const uint8_t(*)[3])col;
    } else if (!colours_by_name(v.channel_names, v.C, col)) {
        ms_render_default_colours(col, v.C);
    }
    r.colours = (const uint8_t(*)[3])col; /* the legend names them */
    double um[2];
    MS_TRY(shard_pixel_size(shard, um));
    r.pixel_um = um[1]; /* the bar runs along x */
    if (s.map_h && alpha > 0) {
        MS_ALLOC(map, (size_t)s.map_h * s.map_w, "instance map");
        MS_TRY(ms_scores_read_map(&s, i, k, map));
        r.map = map;
        r.h = s.map_h;
        r.w = s.map_w;
        if (!geometry(s.config, &r.stride, &r.offset)) {
            fprintf(stderr, "milscreen render: warning: no network config in %s; the instance "
                    "map is stretched over the image\n", input);
            r.stride = 0;
        }
    }
    if (s.mask_h && !no_mask) {
        if (s.mask_h != v.H || s.mask_w != v.W)
            MS_FAIL(MS_EFORMAT, "%s: masks are %dx%d but the images of %s are %dx%d", input,
                    s.mask_w, s.mask_h, shard, v.W, v.H);
        MS_ALLOC(mask, hw, "mask");
        MS_TRY(ms_scores_read_mask(&s, i, mask));
        r.mask = mask;
    }

    /* The panel: where the image comes from, its label, what each colour means, then the
     * classes. Text keeps its case (names are shown as the shard spells them). */
    static const uint8_t yellow[3] = {255, 230, 0}, green[3] = {80, 255, 80},
                         grey[3] = {170, 170, 170}, orange[3] = {255, 140, 0},
                         cyan[3] = {0, 255, 255};
    MS_ALLOC(text, MS_RENDER_MAX_LINES, "text");
    int nl = 0, namew = 5;
    for (int c = 0; c < K; c++) {
        int len = (int)strlen(s.class_names[c]);
        namew = len > namew ? len : namew;
    }
    namew = namew > 24 ? 24 : namew;
    const char *id = s.image_id ? s.image_id[i] : v.image_id ? v.image_id[i] : "";
    snprintf(text[nl++], NLINE, "image %zu  %.40s", i, id);
    const ms_image_meta_t *m = ms_shard_meta(v.shard, (int)i);
    if (m->plate[0] || m->well[0])
        snprintf(text[nl++], NLINE, "plate %.24s  well %.8s  site %d", m->plate, m->well,
                 m->site);
    if (m->treatment[0])
        snprintf(text[nl++], NLINE, "treatment %.40s  replicate %d", m->treatment,
                 m->replicate);
    int true_k = v.label ? v.label[i] : -1;
    if (true_k >= 0 && true_k < K) {
        snprintf(text[nl], NLINE, "true  %.40s", s.class_names[true_k]);
        r.line_rgb[nl++] = green;
    } else if (v.labels) {
        int n = snprintf(text[nl], NLINE, "true ");
        for (int c = 0; c < K && n < NLINE - 20; c++)
            if (v.labels[i * K + c] > 0)
                n += snprintf(text[nl] + n, NLINE - n, " %.16s", s.class_names[c]);
        r.line_rgb[nl++] = green;
    }
    text[nl++][0] = 0;
    for (int c = 0; c < v.C && nl < MS_RENDER_MAX_LINES - 16; c++) {
        int off = !col[c][0] && !col[c][1] && !col[c][2];
        snprintf(text[nl], NLINE, "%.40s%s", v.channel_names[c], off ? " (off)" : "");
        r.line_swatch[nl++] = col[c];
    }
    if (r.map) {
        snprintf(text[nl], NLINE, "heat  P(%.30s), line at 0.5", s.class_names[k]);
        r.line_rgb[nl++] = orange;
        r.line_heatbar[nl++] = 1;
    }
    if (r.mask) {
        snprintf(text[nl], NLINE, "cyan  mask outline");
        r.line_rgb[nl++] = cyan;
    }
    text[nl++][0] = 0;
    snprintf(text[nl], NLINE, "%-*s %6s %6s", namew, "class", fc ? "FC" : "", "MIL");
    r.line_rgb[nl++] = grey;
    MS_ALLOC(rank, K, "ranking");
    for (int c = 0; c < K; c++)
        rank[c] = (ranked_t){c, fc ? fc[c] : mil[c]};
    qsort(rank, K, sizeof *rank, by_prob_desc);
    int shown = 0;
    for (int j = 0; j < K && nl < MS_RENDER_MAX_LINES - 1; j++) {
        int c = rank[j].k;
        char fcs[16] = "";
        if (fc)
            snprintf(fcs, sizeof fcs, "%5.1f%%", 100 * fc[c]);
        snprintf(text[nl], NLINE, "%-*.*s %6s %5.1f%%", namew, namew, s.class_names[c], fcs,
                 100 * mil[c]);
        r.line_rgb[nl++] = c == k ? yellow : c == true_k ? green : NULL;
        shown++;
    }
    if (shown < K)
        snprintf(text[nl++], NLINE, "(%d more)", K - shown);
    for (int j = 0; j < nl; j++)
        r.lines[j] = text[j];
    r.nlines = nl;

    ms_render_layout_t lay;
    MS_TRY(ms_render_draw_layout(&cv, &r, &lay));
    MS_TRY(ms_png_write(out, cv.rgb, cv.w, cv.h));
    printf("wrote %s (%dx%d): image %zu of %s, class map %d (%s, %s)\n", out, cv.w, cv.h, i,
           input, k, s.class_names[k], how);
    if (lay.bar_um > 0)
        printf("  scale bar %g \xc2\xb5m = %d pixels (%g \xc2\xb5m per pixel)\n", lay.bar_um,
               lay.bar_w, r.pixel_um);
    else
        printf("  no scale bar: %s does not record its pixel size (pixel_size_um)\n", shard);
    /* the panel's text as drawn, for logs and scripts */
    for (int j = 0; j < nl; j++)
        if (text[j][0] && !r.line_heatbar[j])
            printf("  | %s\n", text[j]);
done:
    ms_canvas_free(&cv);
    free(img);
    free(map);
    free(mask);
    free(col);
    free(rank);
    free(text);
    ms_shard_view_close(&v);
    ms_scores_close(&s);
    return st ? ms_cli_fail("render", st) : 0;
}

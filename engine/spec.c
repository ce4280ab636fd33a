/* Network specification from the INI config, and shape/cost resolution. */
#include "engine/spec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sections that are not layers: read by other parts of milscreen. */
static const char *const reserved[] = {"net", "train", "data", "score", "eval", "loader",
                                       "bench", "localise", "render", NULL};

static const char *const kind_names[] = {"conv", "maxpool", "avgpool", "relu",
                                         "dropout", "mil", "fc", NULL};
static const char *const mil_names[] = {"noisy_and", "lse", "gm", "max", "noisy_or", "isr",
                                        NULL};
static const char *const head_names[] = {"softmax", "sigmoid", NULL};
static const char *const rounding_names[] = {"floor", "ceil", NULL};

const char *ms_layer_kind_name(ms_layer_kind_t k) { return kind_names[k]; }
const char *ms_mil_name(ms_mil_kind_t k) { return mil_names[k]; }

static int is_reserved(const char *s)
{
    for (int i = 0; reserved[i]; i++)
        if (!strcmp(s, reserved[i]))
            return 1;
    return 0;
}

int ms_window_out(int in, int size, int stride, int pad, int ceil_mode)
{
    /* Torch7's rule: out = ceil((in + 2 pad - size) / stride) + 1 with a true ceiling, so a
     * window may hang over the far edge but must start inside the input; floor mode needs
     * the whole window inside. For inputs of at least one window both agree with PyTorch. */
    int span = in + 2 * pad - size;
    int out;
    if (ceil_mode)
        out = (span >= 0 ? (span + stride - 1) / stride : -((-span) / stride)) + 1;
    else
        out = span >= 0 ? span / stride + 1 : 0;
    /* the last window must start inside the input or the left padding */
    if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad)
        out--;
    return out > 0 ? out : 0;
}

static ms_status_t read_layer(ms_config_t *cfg, const char *sec, int default_ceil, int classes,
                              ms_layer_spec_t *l)
{
    ms_status_t st = MS_OK;
    long v;
    int k;
    if (!ms_config_has(cfg, sec, "type"))
        return MS_ERR(MS_ECONFIG,
                      "%s: section [%s] has no 'type' (one of conv, maxpool, avgpool, relu, "
                      "dropout, mil, fc; or a reserved section name)",
                      ms_config_where(cfg, sec, NULL), sec);
    if (strlen(sec) >= sizeof l->name)
        return MS_ERR(MS_ECONFIG, "%s: layer name '%s' is longer than %zu characters",
                      ms_config_where(cfg, sec, NULL), sec, sizeof l->name - 1);
    memset(l, 0, sizeof *l);
    strcpy(l->name, sec);
    MS_TRY(ms_config_choice(cfg, sec, "type", "conv", kind_names, &k));
    l->kind = (ms_layer_kind_t)k;
    l->bias_init = NAN;
    switch (l->kind) {
    case MS_LAYER_CONV: {
        const char *f;
        MS_TRY(ms_config_str(cfg, sec, "filters", NULL, &f));
        if (!f)
            MS_FAIL(MS_ECONFIG, "%s: [%s] conv needs 'filters' (a number or 'classes')",
                    ms_config_where(cfg, sec, NULL), sec);
        if (!strcmp(f, "classes")) {
            l->filters = classes;
        } else {
            MS_TRY(ms_config_int(cfg, sec, "filters", 0, 1, 65536, &v));
            l->filters = (int)v;
        }
        MS_TRY(ms_config_int(cfg, sec, "size", 3, 1, 64, &v));
        l->size = (int)v;
        MS_TRY(ms_config_int(cfg, sec, "stride", 1, 1, 64, &v));
        l->stride = (int)v;
        MS_TRY(ms_config_int(cfg, sec, "pad", 0, 0, 64, &v));
        l->pad = (int)v;
        static const char *const acts[] = {"linear", "relu", NULL};
        MS_TRY(ms_config_choice(cfg, sec, "activation", "relu", acts, &k));
        l->relu = k;
        if (ms_config_has(cfg, sec, "bias_init"))
            MS_TRY(ms_config_real(cfg, sec, "bias_init", 0, -100, 100, &l->bias_init));
        MS_TRY(ms_config_real(cfg, sec, "gain", 1.0, 0.0, 100.0, &l->gain));
        break;
    }
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        MS_TRY(ms_config_int(cfg, sec, "size", 3, 1, 64, &v));
        l->size = (int)v;
        MS_TRY(ms_config_int(cfg, sec, "stride", 2, 1, 64, &v));
        l->stride = (int)v;
        MS_TRY(ms_config_int(cfg, sec, "pad", 0, 0, 32, &v));
        l->pad = (int)v;
        if (2 * l->pad > l->size)
            MS_FAIL(MS_ECONFIG, "%s: [%s] pad %d is more than half the window %d",
                    ms_config_where(cfg, sec, "pad"), sec, l->pad, l->size);
        MS_TRY(ms_config_choice(cfg, sec, "rounding", rounding_names[default_ceil],
                                rounding_names, &l->ceil));
        break;
    case MS_LAYER_RELU:
        break;
    case MS_LAYER_DROPOUT:
        MS_TRY(ms_config_real(cfg, sec, "rate", 0.5, 0.0, 0.99, &l->rate));
        break;
    case MS_LAYER_MIL:
        MS_TRY(ms_config_choice(cfg, sec, "pool", "noisy_and", mil_names, &k));
        l->pool = (ms_mil_kind_t)k;
        MS_TRY(ms_config_real(cfg, sec, "a", 10.0, 1e-3, 1e3, &l->a));
        MS_TRY(ms_config_real(cfg, sec, "r", 1.0, 1e-3, 1e3, &l->r));
        MS_TRY(ms_config_real(cfg, sec, "b_init", 0.5, 0.0, 1.0, &l->b_init));
        /* a, b_init apply to noisy_and and r to lse and gm; they may stay in the file when
         * a sweep switches the pooling function with --set mil.pool=... */
        break;
    case MS_LAYER_FC:
        MS_TRY(ms_config_choice(cfg, sec, "head", "softmax", head_names, &k));
        l->head = (ms_head_t)k;
        MS_TRY(ms_config_real(cfg, sec, "identity", 0.0, 0.0, 1000.0, &l->identity));
        break;
    }
done:
    return st;
}

ms_status_t ms_spec_from_config(ms_spec_t *spec, ms_config_t *cfg)
{
    ms_status_t st = MS_OK;
    long v;
    int rounding;
    memset(spec, 0, sizeof *spec);
    spec->fc = -1;
    spec->mil = -1;
    MS_TRY(ms_config_int(cfg, "net", "channels", 3, 1, 256, &v));
    spec->channels = (int)v;
    MS_TRY(ms_config_int(cfg, "net", "classes", 12, 1, 4096, &v));
    spec->classes = (int)v;
    MS_TRY(ms_config_choice(cfg, "net", "rounding", "ceil", rounding_names, &rounding));

    int ns = ms_config_nsections(cfg), nl = 0;
    for (int i = 0; i < ns; i++)
        nl += !is_reserved(ms_config_section(cfg, i));
    if (nl == 0)
        MS_FAIL(MS_ECONFIG, "%s: no layers: the network is one section per layer, e.g. "
                            "[conv1] type = conv (see configs/paper.ini)",
                ms_config_where(cfg, "net", NULL));
    MS_ALLOC(spec->layers, nl, "layer specs");
    for (int i = 0; i < ns; i++) {
        const char *sec = ms_config_section(cfg, i);
        if (is_reserved(sec))
            continue;
        ms_layer_spec_t *l = &spec->layers[spec->nlayers];
        MS_TRY(read_layer(cfg, sec, rounding, spec->classes, l));
        if (l->kind == MS_LAYER_MIL) {
            if (spec->mil >= 0)
                MS_FAIL(MS_ECONFIG, "%s: [%s] a second MIL layer (the first is [%s])",
                        ms_config_where(cfg, sec, NULL), sec, spec->layers[spec->mil].name);
            spec->mil = spec->nlayers;
        } else if (l->kind == MS_LAYER_FC) {
            if (spec->mil < 0 || spec->nlayers != spec->mil + 1)
                MS_FAIL(MS_ECONFIG, "%s: [%s] the fc head must directly follow the mil layer",
                        ms_config_where(cfg, sec, NULL), sec);
            spec->fc = spec->nlayers;
        } else if (spec->mil >= 0) {
            MS_FAIL(MS_ECONFIG, "%s: [%s] only an fc head may follow the mil layer",
                    ms_config_where(cfg, sec, NULL), sec);
        }
        spec->nlayers++;
    }
    if (spec->mil < 0)
        MS_FAIL(MS_ECONFIG, "%s: the network has no layer of type = mil",
                ms_config_where(cfg, "net", NULL));
    if (spec->mil == 0)
        MS_FAIL(MS_ECONFIG, "%s: the mil layer needs a convolution before it",
                ms_config_where(cfg, spec->layers[0].name, NULL));
    /* the map layer: the last conv must give one map per class */
    {
        int last_conv = -1;
        for (int i = 0; i < spec->mil; i++)
            if (spec->layers[i].kind == MS_LAYER_CONV)
                last_conv = i;
        if (last_conv < 0)
            MS_FAIL(MS_ECONFIG, "%s: the network has no convolution",
                    ms_config_where(cfg, "net", NULL));
        const ms_layer_spec_t *l = &spec->layers[last_conv];
        if (l->filters != spec->classes)
            MS_FAIL(MS_ECONFIG,
                    "%s: [%s] the last convolution gives the class maps: filters must be %d "
                    "([net] classes), not %d",
                    ms_config_where(cfg, l->name, "filters"), l->name, spec->classes,
                    l->filters);
        if (l->relu)
            MS_FAIL(MS_ECONFIG,
                    "%s: [%s] the class-map convolution needs activation = linear (its "
                    "outputs are logits z_ij)",
                    ms_config_where(cfg, l->name, NULL), l->name);
    }
    return MS_OK;
done:
    ms_spec_free(spec);
    return st;
}

void ms_spec_free(ms_spec_t *spec)
{
    free(spec->layers);
    spec->layers = NULL;
    spec->nlayers = 0;
}

ms_status_t ms_spec_resolve(const ms_spec_t *spec, int h, int w, ms_layer_t *L)
{
    int c = spec->channels;
    size_t off = 0;
    for (int i = 0; i < spec->nlayers; i++) {
        const ms_layer_spec_t *s = &spec->layers[i];
        ms_layer_t *l = &L[i];
        memset(l, 0, sizeof *l);
        l->spec = s;
        l->index = i;
        l->c = c;
        l->h = h;
        l->w = w;
        l->oc = c;
        l->oh = h;
        l->ow = w;
        switch (s->kind) {
        case MS_LAYER_CONV:
            l->oc = s->filters;
            l->oh = ms_window_out(h, s->size, s->stride, s->pad, 0);
            l->ow = ms_window_out(w, s->size, s->stride, s->pad, 0);
            l->nw = (size_t)s->filters * c * s->size * s->size;
            l->nb = (size_t)s->filters;
            l->flops = 2.0 * l->nw * l->oh * l->ow;
            break;
        case MS_LAYER_MAXPOOL:
        case MS_LAYER_AVGPOOL:
            l->oh = ms_window_out(h, s->size, s->stride, s->pad, s->ceil);
            l->ow = ms_window_out(w, s->size, s->stride, s->pad, s->ceil);
            break;
        case MS_LAYER_RELU:
        case MS_LAYER_DROPOUT:
            break;
        case MS_LAYER_MIL:
            l->oh = l->ow = 1;
            l->nb = s->pool == MS_MIL_NOISY_AND ? (size_t)c : 0;
            break;
        case MS_LAYER_FC:
            l->oh = l->ow = 1;
            l->nw = (size_t)c * c;
            l->nb = (size_t)c;
            l->flops = 2.0 * l->nw;
            break;
        }
        if (l->oh < 1 || l->ow < 1)
            return MS_ERR(MS_ESHAPE,
                          "input %dx%d is too small for this network: layer %s gets %dx%d "
                          "(the smallest input is %dx%d)",
                          L[0].w, L[0].h, s->name, w, h, ms_spec_min_input(spec),
                          ms_spec_min_input(spec));
        l->w_off = off;
        off += l->nw;
        l->b_off = off;
        off += l->nb;
        c = l->oc;
        h = l->oh;
        w = l->ow;
    }
    return MS_OK;
}

size_t ms_spec_nparams(const ms_spec_t *spec)
{
    ms_layer_t *L = calloc((size_t)spec->nlayers, sizeof *L);
    if (!L)
        return 0;
    int m = ms_spec_min_input(spec);
    size_t n = 0;
    if (ms_spec_resolve(spec, m, m, L) == MS_OK)
        n = L[spec->nlayers - 1].b_off + L[spec->nlayers - 1].nb;
    free(L);
    return n;
}

/* Smallest side s for which every layer before the MIL layer gives at least 1 output:
 * walk back from a 1x1 map. With ceil rounding a pool needs in >= (out-1)*stride + 1 - 2 pad
 * ... but the exact inverse is easiest found by search. */
int ms_spec_min_input(const ms_spec_t *spec)
{
    for (int s = 1; s < 100000; s++) {
        int x = s, ok = 1;
        for (int i = 0; i < spec->mil && ok; i++) {
            const ms_layer_spec_t *l = &spec->layers[i];
            if (l->kind == MS_LAYER_CONV)
                x = ms_window_out(x, l->size, l->stride, l->pad, 0);
            else if (l->kind == MS_LAYER_MAXPOOL || l->kind == MS_LAYER_AVGPOOL)
                x = ms_window_out(x, l->size, l->stride, l->pad, l->ceil);
            ok = x >= 1;
        }
        if (ok)
            return s;
    }
    return 0;
}

void ms_spec_geometry(const ms_spec_t *spec, int *rf, int *stride)
{
    int r = 1, j = 1;
    for (int i = 0; i < spec->mil; i++) {
        const ms_layer_spec_t *l = &spec->layers[i];
        if (l->kind == MS_LAYER_CONV || l->kind == MS_LAYER_MAXPOOL ||
            l->kind == MS_LAYER_AVGPOOL) {
            r += (l->size - 1) * j;
            j *= l->stride;
        }
    }
    *rf = r;
    *stride = j;
}

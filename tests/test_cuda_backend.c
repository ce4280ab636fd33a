/* The CUDA backend against the reference backend in double (bf16: against an oracle that
 * also rounds to bf16 where the backend stores bf16, see the tolerances): every layer kind in
 * a small network of its own, every MIL pooling function and head, the paper's network, forward
 * and backward (outputs, loss, every parameter gradient, the input gradient, guided
 * backprop, one Adam step) in fp32, TF32 and bf16, on fresh random inputs; dropout with a
 * non-zero first image (ms_pass_t.image0) in some cases. The CUDA plan's arena and the host
 * result buffers are poisoned with NaN (MILSCREEN_CUDA_POISON) and a different batch runs
 * first, so an element the backend forgets to write fails. Without a CUDA device it says so
 * and passes. The backend comes through its plugin, as in the milscreen binary
 * (MILSCREEN_PLUGIN_DIR, set by ctest, or beside this executable). --reduced: the small
 * networks in fp32 and bf16, for compute-sanitizer. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/cuda/cuda.h"
#include "engine/net.h"
#include "engine/ref/ref.h"
#include "engine/rng.h"
#include "ms_build_config.h"
#include "pipeline/localise/localise.h"
#include "tests/check.h"

/* Tolerances on the relative error ||gpu - oracle||_2 / ||oracle||_2 of a whole tensor.
 * fp32 against the reference in double: the 1e-5.
 * bf16 against an oracle in double that rounds to bf16 where the backend stores bf16 (see
 * emulate()): the 1e-2. Against the exact reference no bf16 implementation could
 * meet it: bf16 activations change max-pooling and ReLU decisions (near-ties), and each
 * changed decision moves a whole gradient entry. Emulated on the CPU in double with the
 * backend's rounding points (paper network, 2x3x100x116), the exact-vs-bf16 error is 4e-3 for
 * the logits but 0.25 for the input gradient and conv1's weight gradient; the same emulation
 * with fp32 accumulation (the GPU's) against the bf16-rounding oracle stays below 1e-3.
 * tf32 against the exact reference: forward 5e-3 (operands of every convolution rounded to
 * 10 mantissa bits, unit roundoff 4.9e-4, through seven layers); gradients 0.1, because the
 * same decision changes occur (emulated: 4.3e-2 for the input gradient and conv1's weights),
 * and tf32's own rounding of operands (round or truncate) is the hardware's, not emulated. */
typedef struct {
    const char *name;
    double tol, gtol; /* forward outputs; gradients and Adam moments */
} prec_t;
static const prec_t precs[] = {{"fp32", 1e-5, 1e-5}, {"tf32", 5e-3, 0.1}, {"bf16", 1e-2, 1e-2}};
/* --reduced (for compute-sanitizer, which slows every kernel many times): the small networks
 * only, in fp32 and bf16 (tf32 runs the fp32 kernels; only cuDNN's choice differs) */
static int reduced;

static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static void fill(float *x, size_t n, uint64_t key, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = bf16_round((2.0f * ms_uniform(key, i) - 1.0f) * scale);
}

static double rel_err(const float *a, const float *b, size_t n, int *nan)
{
    double d = 0, r = 0;
    *nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            *nan = 1;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    if (r == 0)
        return sqrt(d) == 0 ? 0 : INFINITY;
    return sqrt(d / r);
}

static void compare(const char *cas, const char *prec, const char *what, const float *gpu,
                    const float *ref, size_t n, double tol)
{
    int nan;
    double e = rel_err(gpu, ref, n, &nan);
    printf("  %-10s %-5s %-28s rel %.2e%s\n", cas, prec, what, e, nan ? " NaN" : "");
    CHECK(!nan && e <= tol, "%s %s %s: relative error %.3e (tolerance %.0e)%s", cas, prec,
          what, e, tol, nan ? ", non-finite values" : "");
}

/* Everything one backend computes for one case. */
typedef struct {
    float *logits, *maps, *mil, *fc, *dx, *guided_all, *guided_one, *grads, *params, *m, *v;
    double loss;
} result_t;

static void result_free(result_t *r)
{
    free(r->logits), free(r->maps), free(r->mil), free(r->fc), free(r->dx);
    free(r->guided_all), free(r->guided_one), free(r->grads), free(r->params), free(r->m);
    free(r->v);
}

typedef struct {
    const char *name;
    const char *text;   /* the config; NULL: configs/paper.ini */
    int n, h, w, train;
    uint64_t image0;    /* the pass's first image in the global batch (dropout counters) */
} case_t;

/* The dropout stream of a case's passes: both backends and the oracle draw from it. */
static ms_pass_t case_pass(const case_t *cs)
{
    return (ms_pass_t){.seed = 1234, .step = 17, .image0 = cs->image0};
}

/* The network's inputs and outputs are float here; a double network (the reference's
 * oracle) gets converted copies in and gives converted results back. */
static void *as_dtype(const float *src, size_t n, ms_dtype_t dt)
{
    if (dt == MS_F32) {
        float *d = malloc(4 * n);
        memcpy(d, src, 4 * n);
        return d;
    }
    double *d = malloc(8 * n);
    for (size_t i = 0; i < n; i++)
        d[i] = src[i];
    return d;
}

/* A host result buffer filled with NaN: an element that no get_output/read writes fails. */
static float *nan_alloc(size_t n)
{
    float *p = malloc(4 * n);
    for (size_t i = 0; p && i < n; i++)
        p[i] = NAN;
    return p;
}

static ms_status_t out_f(ms_net_t *net, ms_output_t w, float *dst, size_t n, double *tmp)
{
    if (ms_net_dtype(net) == MS_F32)
        return ms_net_output(net, w, dst);
    ms_status_t st = ms_net_output(net, w, tmp);
    for (size_t i = 0; st == MS_OK && i < n; i++)
        dst[i] = (float)tmp[i];
    return st;
}

static ms_status_t read_f(ms_net_t *net, const void *which, float *dst, size_t n, double *tmp)
{
    if (ms_net_dtype(net) == MS_F32)
        return ms_net_read(net, which, dst);
    ms_status_t st = ms_net_read(net, which, tmp);
    for (size_t i = 0; st == MS_OK && i < n; i++)
        dst[i] = (float)tmp[i];
    return st;
}

static int run(ms_backend_t *be, ms_dtype_t dt, const ms_spec_t *spec, const case_t *cs,
               const float *params, const float *x, const float *x_other, const float *t,
               result_t *r)
{
    ms_net_t *net = NULL;
    const ms_pass_t pass = case_pass(cs);
    int ok = 0;
    const int K = spec->classes, C = spec->channels;
    void *p_in = NULL, *x_in = NULL, *x2_in = NULL, *t_in = NULL;
    double *tmp = NULL;
    if (ms_net_create(&net, spec, be, dt, 5) != MS_OK)
        goto out;
    size_t np = ms_net_nparams(net);
    size_t nx = (size_t)cs->n * C * cs->h * cs->w, nk = (size_t)cs->n * K;
    p_in = as_dtype(params, np, dt), x_in = as_dtype(x, nx, dt);
    x2_in = as_dtype(x_other, nx, dt), t_in = as_dtype(t, nk, dt);
    if (ms_net_write(net, ms_net_params(net), p_in) != MS_OK ||
        ms_net_plan(net, cs->n, cs->h, cs->w, cs->train) != MS_OK)
        goto out;
    const ms_plan_t *pl = ms_net_current_plan(net);
    size_t nmap = (size_t)cs->n * K * pl->mh * pl->mw;
    size_t ntmp = nx > np ? nx : np;
    tmp = malloc(8 * (ntmp > nmap ? ntmp : nmap));
    r->logits = nan_alloc(nmap), r->maps = nan_alloc(nmap), r->mil = nan_alloc(nk);
    r->fc = nan_alloc(nk), r->dx = nan_alloc(nx), r->guided_all = nan_alloc(nx);
    r->guided_one = nan_alloc(nx), r->grads = nan_alloc(np), r->params = nan_alloc(np);
    r->m = nan_alloc(np), r->v = nan_alloc(np);
    /* a different batch first: what the second pass fails to write still holds its values */
    if (ms_net_forward(net, x2_in, &pass) != MS_OK || ms_net_forward(net, x_in, &pass) != MS_OK ||
        out_f(net, MS_OUT_LOGITS, r->logits, nmap, tmp) != MS_OK ||
        out_f(net, MS_OUT_MAPS, r->maps, nmap, tmp) != MS_OK ||
        out_f(net, MS_OUT_MIL, r->mil, nk, tmp) != MS_OK)
        goto out;
    if (cs->train) {
        if (ms_net_loss(net, t_in, &r->loss) != MS_OK ||
            (spec->fc >= 0 && out_f(net, MS_OUT_FC, r->fc, nk, tmp) != MS_OK) ||
            ms_net_backward(net, &pass, 1) != MS_OK ||
            out_f(net, MS_OUT_INPUT_GRAD, r->dx, nx, tmp) != MS_OK ||
            read_f(net, ms_net_grads(net), r->grads, np, tmp) != MS_OK)
            goto out;
    }
    if (ms_net_guided(net, -1) != MS_OK ||
        out_f(net, MS_OUT_INPUT_GRAD, r->guided_all, nx, tmp) != MS_OK ||
        ms_net_guided(net, K > 1 ? 1 : 0) != MS_OK ||
        out_f(net, MS_OUT_INPUT_GRAD, r->guided_one, nx, tmp) != MS_OK)
        goto out;
    if (cs->train) {
        const ms_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
        if (ms_net_adam(net, &hp) != MS_OK ||
            read_f(net, ms_net_params(net), r->params, np, tmp) != MS_OK ||
            read_f(net, ms_net_adam_m(net), r->m, np, tmp) != MS_OK ||
            read_f(net, ms_net_adam_v(net), r->v, np, tmp) != MS_OK)
            goto out;
    }
    ok = 1;
out:
    if (!ok)
        fprintf(stderr, "%s on %s: %s\n%s", cs->name, be->name, ms_error_message(),
                ms_error_trace());
    ms_net_free(net);
    free(p_in), free(x_in), free(x2_in), free(t_in), free(tmp);
    return ok;
}

/* ---- the bf16 oracle ----------------------------------------------------------------------
 * The network in double through the reference ops, rounded to bf16 (through float, as the
 * GPU converts its fp32 accumulators) exactly where the CUDA backend stores bf16: every
 * layer's output, the convolution's output before the bias is added, every gradient the
 * backend writes for a layer input (data gradients, MIL's dz), and each convolution's weight
 * gradient before it is added into the fp32 gradients. Head tensors stay unrounded (fp32). */

static void round_bf16(double *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = bf16_round((float)p[i]);
}

typedef struct {
    const ms_spec_t *spec;
    ms_layer_t *L;
    int n, train;
    double *params, *grads, *x, *dx, *t;
    double **act, **dact;
    double *logP, *log1mP, *glogP, *glog1mP, *prob, *gP, *tmp;
} emu_t;

static ms_conv_shape_t emu_shape(const emu_t *e, const ms_layer_t *L)
{
    ms_conv_shape_t s = {.n = e->n, .c = L->c, .h = L->h, .w = L->w, .o = L->oc, .oh = L->oh,
                         .ow = L->ow, .k = L->spec->size, .stride = L->spec->stride,
                         .pad = L->spec->pad};
    return s;
}

static size_t emu_out(const emu_t *e, int l)
{
    return (size_t)e->n * e->L[l].oc * e->L[l].oh * e->L[l].ow;
}

static size_t emu_in(const emu_t *e, int l)
{
    return (size_t)e->n * e->L[l].c * e->L[l].h * e->L[l].w;
}

static void emu_forward(emu_t *e, const ms_pass_t *pass)
{
    const ms_spec_t *sp = e->spec;
    for (int l = 0; l < sp->nlayers; l++) {
        const ms_layer_t *L = &e->L[l];
        const ms_layer_spec_t *s = L->spec;
        const double *in = l ? e->act[l - 1] : e->x, *w = e->params + L->w_off;
        const double *b = e->params + L->b_off;
        double *out = e->act[l];
        size_t no = emu_out(e, l), hw = (size_t)L->oh * L->ow;
        ms_conv_shape_t cs = emu_shape(e, L);
        ms_mil_params_t m = {.kind = s->pool, .a = s->a, .r = s->r};
        switch (s->kind) {
        case MS_LAYER_CONV:
            ms_ref_conv_forward_f64(out, in, w, NULL, &cs);
            round_bf16(out, no); /* cuDNN writes bf16 */
            for (size_t i = 0; i < no; i++) {
                double v = out[i] + b[i / hw % L->oc];
                out[i] = s->relu && v < 0 ? 0 : v;
            }
            round_bf16(out, no);
            break;
        case MS_LAYER_MAXPOOL:
        case MS_LAYER_AVGPOOL:
            ms_ref_pool_forward_f64(out, in, &cs, s->kind == MS_LAYER_MAXPOOL);
            round_bf16(out, no);
            break;
        case MS_LAYER_RELU:
            ms_ref_relu_forward_f64(out, in, no);
            break;
        case MS_LAYER_DROPOUT:
            if (e->train && s->rate > 0)
                ms_ref_dropout_forward_f64(out, in, no, ms_pass_index0(pass, no / e->n),
                                           ms_pass_key(pass, l), s->rate);
            else
                memcpy(out, in, 8 * no);
            round_bf16(out, no);
            break;
        case MS_LAYER_MIL:
            ms_ref_mil_forward_f64(out, e->logP, e->log1mP, in, L->nb ? b : NULL, &m, e->n,
                                   L->c, L->h * L->w);
            break;
        case MS_LAYER_FC:
            ms_ref_fc_forward_f64(out, in, w, b, e->n, L->c, L->oc);
            break;
        }
    }
}

/* backward of layer l; grads NULL: data only; guided: clamp the input gradient at 0 */
static void emu_backward(emu_t *e, int l, const ms_pass_t *pass, int data, double *grads,
                         int guided)
{
    const ms_layer_t *L = &e->L[l];
    const ms_layer_spec_t *s = L->spec;
    const int mil = e->spec->mil;
    const double *in = l ? e->act[l - 1] : e->x, *w = e->params + L->w_off;
    const double *b = e->params + L->b_off;
    double *din = !data ? NULL : (l ? e->dact[l - 1] : e->dx);
    double *dout = l == mil ? NULL : e->dact[l];
    double *dw = grads ? grads + L->w_off : NULL, *db = grads ? grads + L->b_off : NULL;
    size_t no = emu_out(e, l), ni = emu_in(e, l), hw = (size_t)L->oh * L->ow;
    ms_conv_shape_t cs = emu_shape(e, L);
    ms_mil_params_t m = {.kind = s->pool, .a = s->a, .r = s->r};
    switch (s->kind) {
    case MS_LAYER_CONV:
        if (s->relu)
            ms_ref_relu_backward_f64(dout, dout, e->act[l], no);
        if (dw) {
            for (size_t i = 0; i < no; i++)
                db[i / hw % L->oc] += dout[i];
            memset(e->tmp, 0, 8 * L->nw);
            ms_ref_conv_backward_f64(NULL, e->tmp, NULL, dout, in, w, &cs);
            round_bf16(e->tmp, L->nw); /* cuDNN's weight gradient is bf16 */
            for (size_t i = 0; i < L->nw; i++)
                dw[i] += e->tmp[i];
        }
        if (din) {
            ms_ref_conv_backward_f64(din, NULL, NULL, dout, in, w, &cs);
            round_bf16(din, ni);
        }
        break;
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        if (din) {
            ms_ref_pool_backward_f64(din, dout, in, &cs, s->kind == MS_LAYER_MAXPOOL);
            round_bf16(din, ni);
        }
        break;
    case MS_LAYER_RELU:
        if (din)
            ms_ref_relu_backward_f64(din, dout, e->act[l], no);
        break;
    case MS_LAYER_DROPOUT:
        if (din && e->train && s->rate > 0)
            ms_ref_dropout_backward_f64(din, dout, no, ms_pass_index0(pass, no / e->n),
                                        ms_pass_key(pass, l), s->rate);
        else if (din)
            memcpy(din, dout, 8 * no);
        if (din)
            round_bf16(din, ni);
        break;
    case MS_LAYER_MIL:
        if (din) {
            ms_ref_mil_backward_f64(din, L->nb && db ? db : NULL, e->gP, e->glogP, e->glog1mP,
                                    in, L->nb ? b : NULL, &m, e->n, L->c, L->h * L->w);
            round_bf16(din, ni);
        }
        break;
    case MS_LAYER_FC:
        ms_ref_fc_backward_f64(data ? e->gP : NULL, dw, db, e->dact[l], in, w, e->n, L->c,
                               L->oc);
        break;
    }
    if (din && guided)
        ms_ref_clamp_f64(din, ni, 0.0, INFINITY);
}

/* guided backprop runs through dropout with the forward pass's stream (net.c keeps it) */
static void emu_guided(emu_t *e, int cls, const ms_pass_t *pass)
{
    const int mil = e->spec->mil, K = e->spec->classes;
    const size_t J = (size_t)e->L[mil].h * e->L[mil].w;
    double *d = e->dact[mil - 1];
    ms_ref_sigmoid_f64(d, e->act[mil - 1], (size_t)e->n * K * J);
    for (size_t i = 0; i < (size_t)e->n * K * J; i++) {
        size_t bag = i / J;
        int k = (int)(bag % K);
        d[i] *= (cls < 0 || cls == k) ? e->act[mil][bag] : 0;
    }
    round_bf16(d, (size_t)e->n * K * J);
    for (int l = mil - 1; l >= 0; l--)
        emu_backward(e, l, pass, 1, NULL, 1);
}

static void to_float(float *dst, const double *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

static void emulate(const ms_spec_t *spec, const case_t *cs, const float *params, size_t np,
                    const float *x, const float *t, result_t *r)
{
    const ms_pass_t pass = case_pass(cs);
    const int nl = spec->nlayers, K = spec->classes, mil = spec->mil, fc = spec->fc;
    emu_t e = {.spec = spec, .n = cs->n, .train = cs->train};
    e.L = calloc((size_t)nl, sizeof *e.L);
    ms_spec_resolve(spec, cs->h, cs->w, e.L);
    size_t nx = emu_in(&e, 0), nk = (size_t)cs->n * K, nmap = emu_out(&e, mil - 1), maxw = 1;
    e.params = malloc(8 * np), e.grads = calloc(np, 8), e.x = malloc(8 * nx);
    e.dx = malloc(8 * nx), e.t = malloc(8 * nk);
    for (size_t i = 0; i < np; i++)
        e.params[i] = params[i];
    for (size_t i = 0; i < nx; i++)
        e.x[i] = x[i];
    for (size_t i = 0; i < nk; i++)
        e.t[i] = t[i];
    e.act = calloc((size_t)nl, sizeof *e.act), e.dact = calloc((size_t)nl, sizeof *e.dact);
    for (int l = 0; l < nl; l++) {
        e.act[l] = calloc(emu_out(&e, l), 8), e.dact[l] = calloc(emu_out(&e, l), 8);
        maxw = e.L[l].nw > maxw ? e.L[l].nw : maxw;
    }
    e.tmp = malloc(8 * maxw);
    double **head[] = {&e.logP, &e.log1mP, &e.glogP, &e.glog1mP, &e.prob, &e.gP};
    for (size_t i = 0; i < sizeof head / sizeof *head; i++)
        *head[i] = calloc(nk, 8);
    r->logits = malloc(4 * nmap), r->maps = malloc(4 * nmap), r->mil = malloc(4 * nk);
    r->fc = malloc(4 * nk), r->dx = malloc(4 * nx), r->guided_all = malloc(4 * nx);
    r->guided_one = malloc(4 * nx), r->grads = malloc(4 * np), r->params = malloc(4 * np);
    r->m = malloc(4 * np), r->v = malloc(4 * np);

    emu_forward(&e, &pass);
    to_float(r->logits, e.act[mil - 1], nmap);
    ms_ref_sigmoid_f64(e.dact[mil - 1], e.act[mil - 1], nmap); /* scratch until backward */
    to_float(r->maps, e.dact[mil - 1], nmap);
    to_float(r->mil, e.act[mil], nk);
    if (cs->train) {
        ms_head_t hk = fc >= 0 ? spec->layers[fc].head : MS_HEAD_SOFTMAX;
        r->loss = ms_ref_loss_f64(e.glogP, e.glog1mP, fc >= 0 ? e.dact[fc] : NULL, e.prob,
                                  e.logP, e.log1mP, fc >= 0 ? e.act[fc] : NULL, e.t, hk,
                                  cs->n, K);
        to_float(r->fc, e.prob, nk);
        memset(e.gP, 0, 8 * nk);
        for (int l = nl - 1; l >= 0; l--)
            emu_backward(&e, l, &pass, 1, e.grads, 0);
        to_float(r->dx, e.dx, nx);
        to_float(r->grads, e.grads, np);
    }
    emu_guided(&e, -1, &pass);
    to_float(r->guided_all, e.dx, nx);
    emu_guided(&e, K > 1 ? 1 : 0, &pass);
    to_float(r->guided_one, e.dx, nx);
    if (cs->train) { /* one Adam step in double from zero moments, as the reference */
        double *m = calloc(np, 8), *v = calloc(np, 8);
        ms_ref_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
        ms_ref_adam_f64(e.params, e.grads, m, v, np, &hp, 1);
        to_float(r->params, e.params, np);
        to_float(r->m, m, np);
        to_float(r->v, v, np);
        free(m), free(v);
    }
    for (int l = 0; l < nl; l++)
        free(e.act[l]), free(e.dact[l]);
    for (size_t i = 0; i < sizeof head / sizeof *head; i++)
        free(*head[i]);
    free(e.act), free(e.dact), free(e.L), free(e.params), free(e.grads), free(e.x);
    free(e.dx), free(e.t), free(e.tmp);
}

/* configs/paper.ini of the source tree, or of the current directory when the binary runs
 * elsewhere (a GPU machine that gets the build carried to it); MILSCREEN_SOURCE_DIR wins. */
static const char *paper_ini(void)
{
    static char path[4096];
    const char *dir = getenv("MILSCREEN_SOURCE_DIR");
    if (!dir)
        dir = access(MS_SOURCE_DIR "/configs/paper.ini", R_OK) == 0 ? MS_SOURCE_DIR : ".";
    snprintf(path, sizeof path, "%s/configs/paper.ini", dir);
    return path;
}

static void check_case(const case_t *cs)
{
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_backend_t *ref = NULL;
    ms_net_t *net = NULL;
    result_t rr = {0}, re = {0};
    float *params = NULL, *x = NULL, *x2 = NULL, *t = NULL;
    if (cs->text)
        CHECK_OK(ms_config_parse(&cfg, cs->text, cs->name));
    else
        CHECK_OK(ms_config_load(&cfg, paper_ini()));
    if (!cfg)
        goto out;
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK_OK(ms_backend_ref(&ref));
    if (!spec.layers || !ref)
        goto out;
    CHECK_OK(ms_net_create(&net, &spec, ref, MS_F32, 5));
    if (!net)
        goto out;
    const int K = spec.classes, C = spec.channels;
    size_t np = ms_net_nparams(net), nx = (size_t)cs->n * C * cs->h * cs->w;
    params = malloc(4 * np), x = malloc(4 * nx), x2 = malloc(4 * nx);
    t = calloc((size_t)cs->n * K, 4);
    CHECK_OK(ms_net_read(net, ms_net_params(net), params));
    for (size_t i = 0; i < np; i++) /* bf16-representable: every precision sees the same data */
        params[i] = bf16_round(params[i]);
    ms_net_free(net);
    net = NULL;
    fill(x, nx, 0x5eed0001, 2.0f);
    fill(x2, nx, 0x5eed0002, 3.0f);
    for (int n = 0; n < cs->n; n++) {
        t[(size_t)n * K + (n * 7 + 1) % K] = 1;
        if (spec.fc >= 0 && spec.layers[spec.fc].head == MS_HEAD_SIGMOID)
            t[(size_t)n * K + (n * 3) % K] = 1; /* multi-label */
    }
    /* the oracle: the reference in double, so that the comparison measures the GPU's rounding
     * alone (the float reference's own error, about 2^-24 sqrt(n) for its n-term sums, is
     * already 5e-6 for a weight gradient summed over 20,000 positions: half the fp32 budget) */
    if (!run(ref, MS_F64, &spec, cs, params, x, x2, t, &rr)) {
        CHECK(0, "%s: the reference run failed", cs->name);
        goto out;
    }
    emulate(&spec, cs, params, np, x, t, &re);
    for (size_t p = 0; p < sizeof precs / sizeof *precs; p++) {
        const prec_t *pr = &precs[p];
        ms_backend_t *gpu = NULL;
        if (reduced && !strcmp(pr->name, "tf32"))
            continue;
        result_t gr = {0};
        CHECK_OK(ms_backend_cuda(&gpu, 0, pr->name));
        if (!gpu)
            continue;
        if (!run(gpu, MS_F32, &spec, cs, params, x, x2, t, &gr)) {
            CHECK(0, "%s %s: the CUDA run failed", cs->name, pr->name);
        } else {
            /* bf16 against its rounding oracle, the others against the exact reference */
            const result_t *o = strcmp(pr->name, "bf16") ? &rr : &re;
            const double gt = pr->gtol;
            ms_layer_t *L = calloc((size_t)spec.nlayers, sizeof *L);
            ms_spec_resolve(&spec, cs->h, cs->w, L);
            size_t nmap = (size_t)cs->n * K * L[spec.mil].h * L[spec.mil].w;
            size_t nk = (size_t)cs->n * K;
            compare(cs->name, pr->name, "logits z (forward)", gr.logits, o->logits, nmap,
                    pr->tol);
            compare(cs->name, pr->name, "maps p", gr.maps, o->maps, nmap, pr->tol);
            compare(cs->name, pr->name, "MIL P", gr.mil, o->mil, nk, pr->tol);
            if (cs->train) {
                printf("  %-10s %-5s %-28s %.6f vs %.6f\n", cs->name, pr->name, "loss",
                       gr.loss, o->loss);
                CHECK(fabs(gr.loss - o->loss) <= pr->tol * fabs(o->loss),
                      "%s %s loss %.8g vs %.8g", cs->name, pr->name, gr.loss, o->loss);
                if (spec.fc >= 0)
                    compare(cs->name, pr->name, "head probabilities", gr.fc, o->fc, nk, pr->tol);
                compare(cs->name, pr->name, "input gradient", gr.dx, o->dx, nx, gt);
                for (int l = 0; l < spec.nlayers; l++) {
                    char what[64];
                    if (L[l].nw) {
                        snprintf(what, sizeof what, "%s weight gradient", spec.layers[l].name);
                        compare(cs->name, pr->name, what, gr.grads + L[l].w_off,
                                o->grads + L[l].w_off, L[l].nw, gt);
                    }
                    if (L[l].nb) {
                        snprintf(what, sizeof what, "%s bias gradient", spec.layers[l].name);
                        compare(cs->name, pr->name, what, gr.grads + L[l].b_off,
                                o->grads + L[l].b_off, L[l].nb, gt);
                    }
                }
                /* the Adam kernel itself is checked bit for bit below; here the moments
                 * carry the gradients through it (the step, lr * m/(sqrt(v)+eps), flips
                 * sign with the rounding of gradients near zero, so it is not compared) */
                compare(cs->name, pr->name, "Adam m", gr.m, o->m, np, gt);
                /* v is quadratic in the gradients (twice their error); and fp32 Adam's
                 * 1 - beta2 = 1 - 0.999f is 1.3e-5 off the double oracle's, a difference of
                 * the dtypes, not of the backends (measured: float reference vs double) */
                compare(cs->name, pr->name, "Adam v", gr.v, o->v, np, 2 * gt + 1.5e-5);
            }
            compare(cs->name, pr->name, "guided (all classes)", gr.guided_all, o->guided_all, nx,
                    gt);
            compare(cs->name, pr->name, "guided (class 1)", gr.guided_one, o->guided_one, nx,
                    gt);
            free(L);
        }
        result_free(&gr);
        ms_backend_close(gpu);
    }
out:
    result_free(&rr);
    result_free(&re);
    free(params), free(x), free(x2), free(t);
    ms_net_free(net);
    ms_backend_close(ref);
    ms_spec_free(&spec);
    ms_config_free(cfg);
}

/* Adam and clamp on identical inputs: the same float operations in the same order as the
 * reference, so equal to the last bit (the kernel avoids fused multiply-adds). */
static void check_adam_exact(void)
{
    ms_backend_t *gpu = NULL;
    CHECK_OK(ms_backend_cuda(&gpu, 0, "bf16"));
    if (!gpu)
        return;
    enum { N = 10007 };
    float *p = malloc(4 * N), *g = malloc(4 * N), *m = calloc(N, 4), *v = calloc(N, 4);
    float *out = malloc(4 * N);
    void *dp = NULL, *dg = NULL, *dm = NULL, *dv = NULL;
    fill(p, N, 11, 1.0f);
    CHECK_OK(gpu->alloc(gpu, &dp, 4 * N));
    CHECK_OK(gpu->alloc(gpu, &dg, 4 * N));
    CHECK_OK(gpu->alloc(gpu, &dm, 4 * N));
    CHECK_OK(gpu->alloc(gpu, &dv, 4 * N));
    if (!dp || !dg || !dm || !dv)
        goto out;
    CHECK_OK(gpu->upload(gpu, dp, p, 4 * N));
    ms_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
    ms_ref_adam_t rhp = {1e-3, 0.9, 0.999, 1e-8};
    for (long step = 1; step <= 3; step++) {
        fill(g, N, 100 + step, 0.1f);
        CHECK_OK(gpu->upload(gpu, dg, g, 4 * N));
        CHECK_OK(gpu->adam(gpu, dp, dg, dm, dv, N, &hp, step, MS_F32));
        ms_ref_adam_f32(p, g, m, v, N, &rhp, step);
    }
    CHECK_OK(gpu->download(gpu, out, dp, 4 * N));
    size_t diff = 0;
    for (size_t i = 0; i < N; i++)
        diff += out[i] != p[i];
    CHECK(diff == 0, "Adam: %zu of %d parameters differ from the reference after 3 steps", diff,
          N);
    CHECK_OK(gpu->clamp(gpu, dp, N, -0.25, 0.5, MS_F32));
    CHECK_OK(gpu->download(gpu, out, dp, 4 * N));
    ms_ref_clamp_f32(p, N, -0.25, 0.5);
    diff = 0;
    for (size_t i = 0; i < N; i++)
        diff += out[i] != p[i];
    CHECK(diff == 0, "clamp: %zu elements differ", diff);
out:
    gpu->release(gpu, dp), gpu->release(gpu, dg), gpu->release(gpu, dm), gpu->release(gpu, dv);
    free(p), free(g), free(m), free(v), free(out);
    ms_backend_close(gpu);
}

/* LBP on the GPU against the CPU's ms_lbp_binary on noisy blobs, sum- and max-product: the
 * same arithmetic in the same order, but the GPU's expf/logf may differ from glibc's by an
 * ulp or two, which can flip a pixel whose belief is within rounding of 0: at most 1 in
 * 1,000 pixels may differ. */
static void check_lbp(void)
{
    ms_backend_t *gpu = NULL;
    CHECK_OK(ms_backend_cuda(&gpu, 0, "bf16"));
    if (!gpu)
        return;
    const int H = 157, W = 211;
    const size_t hw = (size_t)H * W;
    float *u = malloc(4 * hw);
    uint8_t *a = malloc(hw), *b = malloc(hw);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            /* two discs of evidence for 1 in a field for 0, plus uniform noise */
            double d1 = hypot(y - 50, x - 60), d2 = hypot(y - 110, x - 150);
            double v = (d1 < 30 || d2 < 22) ? 1.0 : -1.0;
            double noise = 3.0 * (ms_uniform(77, (size_t)y * W + x) - 0.5);
            u[(size_t)y * W + x] = (float)(1.2 * v + noise);
        }
    for (int maxp = 0; maxp <= 1; maxp++) {
        CHECK_OK(ms_lbp_binary(a, u, H, W, 1.0, 10, maxp, 0.5));
        CHECK_OK(ms_cuda_lbp_binary(gpu, b, u, H, W, 1.0, 10, maxp, 0.5));
        size_t diff = 0, ones = 0;
        for (size_t i = 0; i < hw; i++) {
            diff += a[i] != b[i];
            ones += a[i];
        }
        printf("  lbp %s-product: %zu of %zu pixels differ from the CPU (%zu foreground)\n",
               maxp ? "max" : "sum", diff, hw, ones);
        CHECK(diff * 1000 <= hw, "LBP (%s-product): %zu of %zu pixels differ from the CPU",
              maxp ? "max" : "sum", diff, hw);
        CHECK(ones > hw / 20 && ones < hw / 2, "LBP: a degenerate test mask (%zu of %zu)", ones,
              hw);
    }
    free(u), free(a), free(b);
    ms_backend_close(gpu);
}

#define NET(extra) "[net]\nchannels = 3\nclasses = 4\n" extra
#define HEAD(pool, head) "[mil]\ntype = mil\npool = " pool "\na = 7.5\nr = 2.5\n" \
                         "[fc]\ntype = fc\nhead = " head "\n"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reduced")) {
            fprintf(stderr, "usage: test_cuda_backend [--reduced]\n");
            return 2;
        }
        reduced = 1;
    }
    ms_backend_t *probe = NULL;
    ms_status_t st = ms_backend_cuda(&probe, 0, "fp32");
    if (st != MS_OK) {
        if (strstr(ms_error_message(), "no CUDA device")) {
            printf("skipped: no CUDA device (%s)\n", ms_error_message());
            return 0;
        }
        fprintf(stderr, "FAIL: the CUDA backend does not open: %s\n", ms_error_message());
        return 1;
    }
    char line[1024];
    probe->describe(probe, line, sizeof line);
    printf("%s\n", line);
    ms_backend_close(probe);
    setenv("MILSCREEN_CUDA_POISON", "1", 1);

    const case_t cases[] = {
        {"conv", NET("[c1]\ntype = conv\nfilters = 6\nsize = 3\nstride = 2\npad = 1\n"
                     "[c2]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                     HEAD("noisy_and", "softmax")), 2, 21, 19, 1, 0},
        {"maxpool", NET("[c1]\ntype = conv\nfilters = 5\nsize = 3\n"
                        "[p1]\ntype = maxpool\nsize = 3\nstride = 2\n"
                        "[d1]\ntype = dropout\nrate = 0.2\n" /* in place on the GPU */
                        "[c2]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
                        HEAD("noisy_and", "softmax")), 2, 23, 20, 1, 1},
        {"avgpool", NET("[p0]\ntype = avgpool\nsize = 3\nstride = 2\npad = 1\n"
                        "[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                        HEAD("noisy_and", "softmax")), 2, 18, 23, 1, 0},
        {"relu+drop", NET("[c1]\ntype = conv\nfilters = 8\nsize = 1\nactivation = linear\n"
                          "[r1]\ntype = relu\n[d1]\ntype = dropout\nrate = 0.5\n"
                          "[c2]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
                          HEAD("noisy_and", "softmax")), 3, 9, 11, 1, 3},
        {"lse", NET("[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                    HEAD("lse", "softmax")), 2, 12, 14, 1, 0},
        {"gm", NET("[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                   HEAD("gm", "sigmoid")), 2, 12, 14, 1, 0},
        {"max", NET("[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                    HEAD("max", "softmax")), 2, 12, 14, 1, 0},
        {"noisy_or", NET("[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                         HEAD("noisy_or", "sigmoid")), 2, 12, 14, 1, 0},
        {"isr", NET("[c1]\ntype = conv\nfilters = classes\nsize = 3\nactivation = linear\n"
                    HEAD("isr", "softmax")), 2, 12, 14, 1, 0},
        /* 2 input channels (padded to 8), 12 and 9 channels (no 16-byte vectors), a ceil-mode
         * pooling window hanging over the edge, a padded convolution */
        {"k9", "[net]\nchannels = 2\nclasses = 9\n"
               "[c1]\ntype = conv\nfilters = 12\nsize = 3\npad = 1\n"
               "[p1]\ntype = maxpool\nsize = 2\nstride = 2\n"
               "[c2]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
               HEAD("noisy_and", "sigmoid"), 3, 15, 13, 1, 0},
        {"paper", NULL, 2, 100, 116, 1, 2}, /* image0: rank 1 of a global batch of 4 */
        {"paper-inf", NULL, 1, 70, 64, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (!reduced || strncmp(cases[i].name, "paper", 5))
            check_case(&cases[i]);
    check_adam_exact();
    check_lbp();
    return check_summary();
}

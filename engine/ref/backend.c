/* The "ref" backend: the reference ops behind the backend interface, in float or double,
 * plain NCHW host buffers, one buffer per layer output and per output gradient. Slow and
 * simple: the oracle for the fast backends and the fallback where none is built. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/host.h"
#include "engine/ref/ref.h"
#include "engine/rng.h"

typedef struct {
    int f64;
    size_t es;       /* element size */
    void *x, *dx;    /* input (N,C,H,W) and its gradient */
    void **act;      /* per layer: output */
    void **dact;     /* per layer: gradient w.r.t. the output */
    void *logP, *log1mP, *glogP, *glog1mP, *prob; /* (N,K) */
} ref_plan_t;

/* Calls the float or double version of a reference op. */
#define CALL(f64, name, ...) ((f64) ? name##_f64(__VA_ARGS__) : name##_f32(__VA_ARGS__))
#define AT(p, off, es) ((void *)((char *)(p) + (size_t)(off) * (es)))

static size_t out_count(const ms_plan_t *pl, int l)
{
    const ms_layer_t *L = &pl->layers[l];
    return (size_t)pl->n * L->oc * L->oh * L->ow;
}

static size_t in_count(const ms_plan_t *pl, int l)
{
    const ms_layer_t *L = &pl->layers[l];
    return (size_t)pl->n * L->c * L->h * L->w;
}

static ms_conv_shape_t conv_shape(const ms_plan_t *pl, const ms_layer_t *L)
{
    ms_conv_shape_t s = {.n = pl->n, .c = L->c, .h = L->h, .w = L->w, .o = L->oc,
                         .oh = L->oh, .ow = L->ow, .k = L->spec->size,
                         .stride = L->spec->stride, .pad = L->spec->pad};
    return s;
}

static ms_mil_params_t mil_params(const ms_layer_spec_t *s)
{
    ms_mil_params_t m = {.kind = s->pool, .a = s->a, .r = s->r};
    return m;
}

static ms_status_t ref_sync(ms_backend_t *be) { return MS_OK; }

static void ref_plan_destroy(ms_backend_t *be, ms_plan_t *pl)
{
    ref_plan_t *r = pl->be;
    if (!r)
        return;
    for (int l = 0; l < pl->spec->nlayers; l++) {
        if (r->act)
            free(r->act[l]);
        if (r->dact)
            free(r->dact[l]);
    }
    free(r->act);
    free(r->dact);
    free(r->x);
    free(r->dx);
    free(r->logP);
    free(r->log1mP);
    free(r->glogP);
    free(r->glog1mP);
    free(r->prob);
    free(r);
    pl->be = NULL;
}

static ms_status_t ref_plan_create(ms_backend_t *be, ms_plan_t *pl)
{
    ms_status_t st = MS_OK;
    ref_plan_t *r = calloc(1, sizeof *r);
    if (!r)
        return MS_ERR(MS_ENOMEM, "out of memory planning the network");
    pl->be = r;
    r->f64 = pl->dtype == MS_F64;
    r->es = ms_dtype_size(pl->dtype);
    int nl = pl->spec->nlayers;
    size_t nk = (size_t)pl->n * pl->spec->classes;
    MS_ALLOC(r->act, nl, "activation table");
    MS_ALLOC(r->dact, nl, "gradient table");
    size_t xb = in_count(pl, 0) * r->es, nkb = nk * r->es;
    if (!(r->x = ms_host_alloc_raw(xb)) || !(r->dx = ms_host_alloc_raw(xb)))
        MS_FAIL(MS_ENOMEM, "out of memory for the input of %dx%dx%dx%d", pl->n,
                pl->spec->channels, pl->h, pl->w);
    for (int l = 0; l < nl; l++)
        if (!(r->act[l] = ms_host_alloc_raw(out_count(pl, l) * r->es)) ||
            !(r->dact[l] = ms_host_alloc_raw(out_count(pl, l) * r->es)))
            MS_FAIL(MS_ENOMEM, "out of memory for the activations of layer %s",
                    pl->layers[l].spec->name);
    if (!(r->logP = ms_host_alloc_raw(nkb)) || !(r->log1mP = ms_host_alloc_raw(nkb)) ||
        !(r->glogP = ms_host_alloc_raw(nkb)) || !(r->glog1mP = ms_host_alloc_raw(nkb)) ||
        !(r->prob = ms_host_alloc_raw(nkb)))
        MS_FAIL(MS_ENOMEM, "out of memory for the MIL outputs");
    return MS_OK;
done:
    ref_plan_destroy(be, pl);
    return st;
}

static ms_status_t ref_set_input(ms_backend_t *be, ms_plan_t *pl, const void *x)
{
    ref_plan_t *r = pl->be;
    memcpy(r->x, x, in_count(pl, 0) * r->es);
    return MS_OK;
}

static const void *layer_in(const ms_plan_t *pl, int l)
{
    const ref_plan_t *r = pl->be;
    return l == 0 ? r->x : r->act[l - 1];
}

static ms_status_t ref_forward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                               const ms_pass_t *pass)
{
    ref_plan_t *r = pl->be;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const int f = r->f64;
    const void *in = layer_in(pl, l);
    void *out = r->act[l];
    const void *w = AT(params, L->w_off, r->es), *b = AT(params, L->b_off, r->es);
    ms_conv_shape_t cs = conv_shape(pl, L);
    switch (s->kind) {
    case MS_LAYER_CONV:
        CALL(f, ms_ref_conv_forward, out, in, w, b, &cs);
        if (s->relu)
            CALL(f, ms_ref_relu_forward, out, out, out_count(pl, l));
        break;
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        CALL(f, ms_ref_pool_forward, out, in, &cs, s->kind == MS_LAYER_MAXPOOL);
        break;
    case MS_LAYER_RELU:
        CALL(f, ms_ref_relu_forward, out, in, out_count(pl, l));
        break;
    case MS_LAYER_DROPOUT:
        if (pl->train && s->rate > 0)
            CALL(f, ms_ref_dropout_forward, out, in, out_count(pl, l),
                 ms_pass_index0(pass, out_count(pl, l) / pl->n), ms_pass_key(pass, l), s->rate);
        else
            memcpy(out, in, out_count(pl, l) * r->es);
        break;
    case MS_LAYER_MIL: {
        ms_mil_params_t m = mil_params(s);
        CALL(f, ms_ref_mil_forward, out, r->logP, r->log1mP, in, L->nb ? b : NULL, &m, pl->n,
             L->c, L->h * L->w);
        break;
    }
    case MS_LAYER_FC:
        CALL(f, ms_ref_fc_forward, out, in, w, b, pl->n, L->c, L->oc);
        CALL(f, ms_ref_head_prob, r->prob, out, s->head, pl->n, L->oc);
        break;
    }
    return MS_OK;
}

static ms_status_t ref_loss(ms_backend_t *be, ms_plan_t *pl, const void *t, double *loss)
{
    ref_plan_t *r = pl->be;
    const ms_spec_t *sp = pl->spec;
    int fc = sp->fc;
    void *y = fc >= 0 ? r->act[fc] : NULL, *gy = fc >= 0 ? r->dact[fc] : NULL;
    ms_head_t head = fc >= 0 ? sp->layers[fc].head : MS_HEAD_SOFTMAX;
    *loss = CALL(r->f64, ms_ref_loss, r->glogP, r->glog1mP, gy, r->prob, r->logP, r->log1mP, y,
                 t, head, pl->n, sp->classes);
    /* the MIL output's own gradient comes only from the head */
    memset(r->dact[sp->mil], 0, out_count(pl, sp->mil) * r->es);
    return MS_OK;
}

static ms_status_t ref_guided_seed(ms_backend_t *be, ms_plan_t *pl, int cls)
{
    ref_plan_t *r = pl->be;
    int mil = pl->spec->mil, K = pl->spec->classes, J = pl->mh * pl->mw;
    const void *z = r->act[mil - 1];
    void *d = r->dact[mil - 1];
    /* d = P_i * sigmoid(z_ij) for the chosen classes */
    CALL(r->f64, ms_ref_sigmoid, d, z, out_count(pl, mil - 1));
    for (int n = 0; n < pl->n; n++)
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)n * K + k;
            for (int j = 0; j < J; j++) {
                size_t e = i * J + j;
                if (r->f64)
                    ((double *)d)[e] *= (cls < 0 || cls == k) ? ((double *)r->act[mil])[i] : 0;
                else
                    ((float *)d)[e] *= (cls < 0 || cls == k) ? ((float *)r->act[mil])[i] : 0;
            }
        }
    return MS_OK;
}

static void clamp_negative(void *p, size_t n, int f64)
{
    CALL(f64, ms_ref_clamp, p, n, 0.0, INFINITY);
}

static ms_status_t ref_backward(ms_backend_t *be, ms_plan_t *pl, int l, const void *params,
                                void *grads, int flags, const ms_pass_t *pass)
{
    ref_plan_t *r = pl->be;
    const ms_layer_t *L = &pl->layers[l];
    const ms_layer_spec_t *s = L->spec;
    const int f = r->f64;
    const void *in = layer_in(pl, l);
    void *din = (flags & MS_BWD_DATA) ? (l == 0 ? r->dx : r->dact[l - 1]) : NULL;
    void *dout = r->dact[l];
    const void *w = AT(params, L->w_off, r->es), *b = AT(params, L->b_off, r->es);
    void *dw = (flags & MS_BWD_WEIGHTS) && grads ? AT(grads, L->w_off, r->es) : NULL;
    void *db = (flags & MS_BWD_WEIGHTS) && grads ? AT(grads, L->b_off, r->es) : NULL;
    ms_conv_shape_t cs = conv_shape(pl, L);
    switch (s->kind) {
    case MS_LAYER_CONV:
        if (s->relu)
            CALL(f, ms_ref_relu_backward, dout, dout, r->act[l], out_count(pl, l));
        CALL(f, ms_ref_conv_backward, din, dw, db, dout, in, w, &cs);
        break;
    case MS_LAYER_MAXPOOL:
    case MS_LAYER_AVGPOOL:
        if (din)
            CALL(f, ms_ref_pool_backward, din, dout, in, &cs, s->kind == MS_LAYER_MAXPOOL);
        break;
    case MS_LAYER_RELU:
        if (din)
            CALL(f, ms_ref_relu_backward, din, dout, r->act[l], out_count(pl, l));
        break;
    case MS_LAYER_DROPOUT:
        if (din && pl->train && s->rate > 0)
            CALL(f, ms_ref_dropout_backward, din, dout, out_count(pl, l),
                 ms_pass_index0(pass, out_count(pl, l) / pl->n), ms_pass_key(pass, l), s->rate);
        else if (din)
            memcpy(din, dout, out_count(pl, l) * r->es);
        break;
    case MS_LAYER_MIL: {
        ms_mil_params_t m = mil_params(s);
        if (din)
            CALL(f, ms_ref_mil_backward, din, L->nb ? db : NULL, dout, r->glogP, r->glog1mP,
                 in, L->nb ? b : NULL, &m, pl->n, L->c, L->h * L->w);
        break;
    }
    case MS_LAYER_FC:
        CALL(f, ms_ref_fc_backward, din, dw, db, dout, in, w, pl->n, L->c, L->oc);
        break;
    }
    if (din && (flags & MS_BWD_GUIDED))
        clamp_negative(din, in_count(pl, l), f);
    return MS_OK;
}

static ms_status_t ref_get_output(ms_backend_t *be, ms_plan_t *pl, ms_output_t which,
                                  void *host)
{
    ref_plan_t *r = pl->be;
    int mil = pl->spec->mil;
    switch (which) {
    case MS_OUT_MAPS:
        CALL(r->f64, ms_ref_sigmoid, host, r->act[mil - 1], out_count(pl, mil - 1));
        return MS_OK;
    case MS_OUT_LOGITS:
        memcpy(host, r->act[mil - 1], out_count(pl, mil - 1) * r->es);
        return MS_OK;
    case MS_OUT_MIL:
        memcpy(host, r->act[mil], out_count(pl, mil) * r->es);
        return MS_OK;
    case MS_OUT_FC:
        if (pl->spec->fc < 0)
            return MS_ERR(MS_EARG, "the network has no fc head");
        memcpy(host, r->prob, (size_t)pl->n * pl->spec->classes * r->es);
        return MS_OK;
    case MS_OUT_INPUT_GRAD:
        memcpy(host, r->dx, in_count(pl, 0) * r->es);
        return MS_OK;
    }
    return MS_ERR(MS_EARG, "unknown output %d", (int)which);
}

static ms_status_t ref_adam(ms_backend_t *be, void *p, const void *g, void *m, void *v, size_t n,
                            const ms_adam_t *hp, long step, ms_dtype_t dt)
{
    ms_ref_adam_t h = {hp->lr, hp->beta1, hp->beta2, hp->eps};
    CALL(dt == MS_F64, ms_ref_adam, p, g, m, v, n, &h, step);
    return MS_OK;
}

static ms_status_t ref_clamp(ms_backend_t *be, void *p, size_t n, double lo, double hi,
                             ms_dtype_t dt)
{
    CALL(dt == MS_F64, ms_ref_clamp, p, n, lo, hi);
    return MS_OK;
}

static void ref_describe(ms_backend_t *be, char *buf, size_t n)
{
    snprintf(buf, n, "ref: plain C reference, 1 thread, float or double");
}

static void ref_destroy(ms_backend_t *be) { free(be); }

ms_status_t ms_backend_ref(ms_backend_t **out)
{
    ms_backend_t *be = calloc(1, sizeof *be);
    if (!be)
        return MS_ERR(MS_ENOMEM, "out of memory");
    *be = (ms_backend_t){
        .name = "ref",
        .dtypes = MS_F32 | MS_F64,
        .destroy = ref_destroy,
        .describe = ref_describe,
        .alloc = ms_host_alloc,
        .release = ms_host_release,
        .upload = ms_host_copy,
        .download = ms_host_copy,
        .zero = ms_host_zero,
        .sync = ref_sync,
        .plan_create = ref_plan_create,
        .plan_destroy = ref_plan_destroy,
        .set_input = ref_set_input,
        .forward = ref_forward,
        .loss = ref_loss,
        .guided_seed = ref_guided_seed,
        .backward = ref_backward,
        .get_output = ref_get_output,
        .adam = ref_adam,
        .clamp = ref_clamp,
    };
    *out = be;
    return MS_OK;
}

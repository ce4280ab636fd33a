/* The network: flat parameter buffers, initialisation, and the layer-by-layer
 * orchestration of forward, loss, backward, guided backprop and Adam over any backend. */
#include "engine/net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/rng.h"

struct ms_net {
    ms_spec_t spec;       /* a private copy */
    ms_backend_t *be;
    ms_dtype_t dtype;
    size_t np;            /* parameter count */
    void *params, *grads, *m, *v; /* backend memory, np elements each */
    long step;            /* Adam steps taken */
    size_t b_off, nb;     /* Noisy-AND thresholds, kept in [0,1] after every step */
    ms_plan_t plan;
    int planned;
    int have_input_grad;
    ms_pass_t last;       /* the forward pass's dropout stream, for guided backprop */
    ms_net_hook_t hook;   /* called after each layer's backward (the all-reduce buckets) */
    void *hook_ctx;
};

static uint64_t init_seed(uint64_t seed, int layer, int which)
{
    return ms_mix64(seed ^ ms_mix64(0x696e6974ULL + (uint64_t)layer * 16 + (uint64_t)which));
}

/* PyTorch's default: kaiming_uniform(a=sqrt(5)) for weights = U(+-1/sqrt(fan_in)) (times a
 * conv layer's gain), and the same bound for biases. */
static void init_params(const ms_spec_t *spec, const ms_layer_t *L, double *p, uint64_t seed)
{
    for (int i = 0; i < spec->nlayers; i++) {
        const ms_layer_t *l = &L[i];
        const ms_layer_spec_t *s = l->spec;
        if (s->kind == MS_LAYER_CONV || s->kind == MS_LAYER_FC) {
            double fan_in = s->kind == MS_LAYER_CONV ? (double)l->c * s->size * s->size : l->c;
            double bound = 1.0 / sqrt(fan_in), gain = s->kind == MS_LAYER_CONV ? s->gain : 1.0;
            uint64_t kw = init_seed(seed, i, 0), kb = init_seed(seed, i, 1);
            for (size_t j = 0; j < l->nw; j++)
                p[l->w_off + j] = (2.0 * ms_uniform(kw, j) - 1.0) * bound * gain;
            for (size_t j = 0; j < l->nb; j++)
                p[l->b_off + j] = isnan(s->bias_init) ? (2.0 * ms_uniform(kb, j) - 1.0) * bound
                                                      : s->bias_init;
            /* the head may start as a scaled identity: y = s P, a softmax over the MIL
             * outputs that then learns how classes co-occur */
            if (s->kind == MS_LAYER_FC && s->identity > 0) {
                for (size_t j = 0; j < l->nw; j++)
                    p[l->w_off + j] = (j / l->c == j % l->c) ? s->identity : 0.0;
                for (size_t j = 0; j < l->nb; j++)
                    p[l->b_off + j] = 0.0;
            }
        } else if (s->kind == MS_LAYER_MIL) {
            for (size_t j = 0; j < l->nb; j++)
                p[l->b_off + j] = s->b_init;
        }
    }
}

ms_status_t ms_net_create(ms_net_t **out, const ms_spec_t *spec, ms_backend_t *be,
                          ms_dtype_t dtype, uint64_t seed)
{
    ms_status_t st = MS_OK;
    ms_net_t *net = NULL;
    ms_layer_t *L = NULL;
    double *host = NULL;
    void *conv = NULL;
    *out = NULL;
    if (!(be->dtypes & dtype))
        return MS_ERR(MS_EARG, "the %s backend does not compute in %s", be->name,
                      dtype == MS_F64 ? "double" : "float");
    MS_ALLOC(net, 1, "network");
    net->be = be;
    net->dtype = dtype;
    net->spec = *spec;
    net->spec.layers = NULL;
    MS_ALLOC(net->spec.layers, spec->nlayers, "layer specs");
    memcpy(net->spec.layers, spec->layers, sizeof *spec->layers * (size_t)spec->nlayers);
    net->np = ms_spec_nparams(spec);
    MS_ALLOC(L, spec->nlayers, "layers");
    int m = ms_spec_min_input(spec);
    MS_TRY(ms_spec_resolve(&net->spec, m, m, L));
    if (spec->layers[spec->mil].pool == MS_MIL_NOISY_AND) {
        net->b_off = L[spec->mil].b_off;
        net->nb = L[spec->mil].nb;
    }

    size_t bytes = net->np * ms_dtype_size(dtype);
    MS_TRY(be->alloc(be, &net->params, bytes));
    MS_TRY(be->alloc(be, &net->grads, bytes));
    MS_TRY(be->alloc(be, &net->m, bytes));
    MS_TRY(be->alloc(be, &net->v, bytes));
    MS_ALLOC(host, net->np, "initial parameters");
    init_params(&net->spec, L, host, seed);
    if (dtype == MS_F32) {
        float *f;
        MS_ALLOC(f, net->np, "initial parameters");
        conv = f;
        for (size_t i = 0; i < net->np; i++)
            f[i] = (float)host[i];
        MS_TRY(be->upload(be, net->params, f, bytes));
    } else {
        MS_TRY(be->upload(be, net->params, host, bytes));
    }
    *out = net;
    net = NULL;
done:
    free(conv);
    free(host);
    free(L);
    ms_net_free(net);
    return st;
}

static void unplan(ms_net_t *net)
{
    if (!net->planned)
        return;
    net->be->plan_destroy(net->be, &net->plan);
    free(net->plan.layers);
    memset(&net->plan, 0, sizeof net->plan);
    net->planned = 0;
}

void ms_net_free(ms_net_t *net)
{
    if (!net)
        return;
    unplan(net);
    if (net->be) {
        net->be->release(net->be, net->params);
        net->be->release(net->be, net->grads);
        net->be->release(net->be, net->m);
        net->be->release(net->be, net->v);
    }
    free(net->spec.layers);
    free(net);
}

ms_status_t ms_net_plan(ms_net_t *net, int n, int h, int w, int train)
{
    ms_status_t st = MS_OK;
    ms_plan_t *p = &net->plan;
    if (net->planned && p->n == n && p->h == h && p->w == w && p->train == train)
        return MS_OK;
    unplan(net);
    if (n < 1)
        return MS_ERR(MS_EARG, "batch size %d", n);
    p->spec = &net->spec;
    p->n = n;
    p->h = h;
    p->w = w;
    p->train = train;
    p->dtype = net->dtype;
    MS_ALLOC(p->layers, net->spec.nlayers, "layers");
    MS_TRY(ms_spec_resolve(&net->spec, h, w, p->layers));
    p->mh = p->layers[net->spec.mil].h;
    p->mw = p->layers[net->spec.mil].w;
    MS_TRY(net->be->plan_create(net->be, p));
    net->planned = 1;
    net->have_input_grad = 0;
    return MS_OK;
done:
    free(p->layers);
    memset(p, 0, sizeof *p);
    return st;
}

const ms_plan_t *ms_net_current_plan(const ms_net_t *net)
{
    return net->planned ? &net->plan : NULL;
}

static ms_status_t need_plan(const ms_net_t *net)
{
    return net->planned ? MS_OK
                        : MS_ERR(MS_EINTERNAL, "ms_net_plan() must be called before running");
}

ms_status_t ms_net_forward(ms_net_t *net, const void *x, const ms_pass_t *pass)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = net->be;
    MS_TRY(need_plan(net));
    MS_TRY(be->set_input(be, &net->plan, x));
    net->last = pass ? *pass : (ms_pass_t){0};
    for (int l = 0; l < net->spec.nlayers; l++)
        MS_TRY(be->forward(be, &net->plan, l, net->params, pass));
    net->have_input_grad = 0;
done:
    return st;
}

ms_status_t ms_net_loss(ms_net_t *net, const void *t, double *loss)
{
    ms_status_t st = MS_OK;
    MS_TRY(need_plan(net));
    MS_TRY(net->be->loss(net->be, &net->plan, t, loss));
done:
    return st;
}

ms_status_t ms_net_backward(ms_net_t *net, const ms_pass_t *pass, int input_grad)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = net->be;
    MS_TRY(need_plan(net));
    MS_TRY(be->zero(be, net->grads, net->np * ms_dtype_size(net->dtype)));
    for (int l = net->spec.nlayers - 1; l >= 0; l--) {
        int flags = MS_BWD_WEIGHTS | ((l > 0 || input_grad) ? MS_BWD_DATA : 0);
        MS_TRY(be->backward(be, &net->plan, l, net->params, net->grads, flags, pass));
        if (net->hook) {
            const ms_layer_t *L = &net->plan.layers[l]; /* weights then bias, contiguous */
            MS_TRY(net->hook(net->hook_ctx, l, L->w_off, L->nw + L->nb));
        }
    }
    net->have_input_grad = input_grad;
done:
    return st;
}

void ms_net_set_backward_hook(ms_net_t *net, ms_net_hook_t fn, void *ctx)
{
    net->hook = fn;
    net->hook_ctx = fn ? ctx : NULL;
}

ms_status_t ms_net_guided(ms_net_t *net, int cls)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = net->be;
    MS_TRY(need_plan(net));
    if (cls >= net->spec.classes)
        MS_FAIL(MS_EARG, "class %d out of range (the network has %d)", cls, net->spec.classes);
    MS_TRY(be->guided_seed(be, &net->plan, cls));
    for (int l = net->spec.mil - 1; l >= 0; l--)
        MS_TRY(be->backward(be, &net->plan, l, net->params, NULL, MS_BWD_DATA | MS_BWD_GUIDED,
                            &net->last));
    net->have_input_grad = 1;
done:
    return st;
}

ms_status_t ms_net_adam(ms_net_t *net, const ms_adam_t *hp)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = net->be;
    net->step++;
    MS_TRY(be->adam(be, net->params, net->grads, net->m, net->v, net->np, hp, net->step,
                    net->dtype));
    /* Noisy-AND thresholds b_i stay in [0,1] (projected gradient step) */
    if (net->nb)
        MS_TRY(be->clamp(be, (char *)net->params + net->b_off * ms_dtype_size(net->dtype),
                         net->nb, 0.0, 1.0, net->dtype));
done:
    return st;
}

ms_status_t ms_net_output(ms_net_t *net, ms_output_t which, void *host)
{
    ms_status_t st = MS_OK;
    MS_TRY(need_plan(net));
    if (which == MS_OUT_INPUT_GRAD && !net->have_input_grad)
        MS_FAIL(MS_EARG, "no input gradient: run ms_net_guided() or backward with input_grad");
    MS_TRY(net->be->get_output(net->be, &net->plan, which, host));
done:
    return st;
}

size_t ms_net_nparams(const ms_net_t *net) { return net->np; }
ms_dtype_t ms_net_dtype(const ms_net_t *net) { return net->dtype; }
const ms_spec_t *ms_net_spec(const ms_net_t *net) { return &net->spec; }
ms_backend_t *ms_net_backend(ms_net_t *net) { return net->be; }
void *ms_net_params(ms_net_t *net) { return net->params; }
void *ms_net_grads(ms_net_t *net) { return net->grads; }
void *ms_net_adam_m(ms_net_t *net) { return net->m; }
void *ms_net_adam_v(ms_net_t *net) { return net->v; }
long ms_net_step(const ms_net_t *net) { return net->step; }
void ms_net_set_step(ms_net_t *net, long step) { net->step = step; }

ms_status_t ms_net_read(ms_net_t *net, const void *which, void *host)
{
    return net->be->download(net->be, host, which, net->np * ms_dtype_size(net->dtype));
}

ms_status_t ms_net_write(ms_net_t *net, void *which, const void *host)
{
    return net->be->upload(net->be, which, host, net->np * ms_dtype_size(net->dtype));
}

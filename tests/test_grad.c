/* Gradient checks in double against central finite differences: every layer of the
 * reference, every MIL pooling function with its edge cases, the loss, Adam against a hand
 * computed step, and the whole network through the ref backend. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/net.h"
#include "engine/ref/ref.h"
#include "engine/rng.h"

static uint64_t rng_state = 12345;
static double urand(void) /* [-1, 1) */
{
    return 2.0 * ms_uniform(0xabcdef, rng_state++) - 1.0;
}
static void fill(double *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * urand();
}
static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Central differences of f over x[idx] for up to `limit` indices (all when n <= limit).
 * Step 1e-6 in double: truncation O(h^2) ~ 1e-12 and rounding ~ eps/h ~ 1e-10 relative, so
 * 1e-6 relative agreement leaves a wide margin while catching any wrong term. */
typedef double (*fn_t)(void *ctx);
static void fd_check(const char *what, double *x, size_t n, const double *analytic, fn_t f,
                     void *ctx, size_t limit, double tol)
{
    const double h = 1e-6;
    double worst = 0;
    size_t worst_i = 0;
    for (size_t k = 0; k < (n < limit ? n : limit); k++) {
        size_t i = n <= limit ? k : (size_t)(ms_uniform(0x5eed, rng_state++) * n);
        double keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx);
        x[i] = keep - h;
        double fm = f(ctx);
        x[i] = keep;
        double num = (fp - fm) / (2 * h);
        double err = fabs(num - analytic[i]) / fmax(1.0, fabs(num));
        if (err > worst || isnan(err)) {
            worst = isnan(err) ? INFINITY : err;
            worst_i = i;
        }
    }
    CHECK(worst <= tol, "%s: worst error %.3g at %zu (analytic %.10g)", what, worst, worst_i,
          analytic[worst_i]);
}

/* ---- convolution and pooling ---- */
typedef struct {
    ms_conv_shape_t s;
    double *in, *w, *b, *out, *r;
    int pool, is_max;
} conv_ctx_t;

static double conv_loss(void *p)
{
    conv_ctx_t *c = p;
    if (c->pool)
        ms_ref_pool_forward_f64(c->out, c->in, &c->s, c->is_max);
    else
        ms_ref_conv_forward_f64(c->out, c->in, c->w, c->b, &c->s);
    return dot(c->out, c->r, (size_t)c->s.n * c->s.o * c->s.oh * c->s.ow);
}

static void check_conv(int n, int c, int h, int w, int o, int k, int stride, int pad)
{
    conv_ctx_t x = {.s = {n, c, h, w, o, ms_window_out(h, k, stride, pad, 0),
                          ms_window_out(w, k, stride, pad, 0), k, stride, pad}};
    size_t ni = (size_t)n * c * h * w, nw = (size_t)o * c * k * k,
           no = (size_t)n * o * x.s.oh * x.s.ow;
    x.in = malloc(ni * 8);
    x.w = malloc(nw * 8);
    x.b = malloc(o * 8);
    x.out = malloc(no * 8);
    x.r = malloc(no * 8);
    double *din = malloc(ni * 8), *dw = calloc(nw, 8), *db = calloc(o, 8);
    fill(x.in, ni, 1);
    fill(x.w, nw, 0.5);
    fill(x.b, o, 0.5);
    fill(x.r, no, 1);
    ms_ref_conv_backward_f64(din, dw, db, x.r, x.in, x.w, &x.s);
    char what[128];
    snprintf(what, sizeof what, "conv k%d s%d p%d %dx%d input", k, stride, pad, h, w);
    fd_check(what, x.in, ni, din, conv_loss, &x, 200, 1e-6);
    snprintf(what, sizeof what, "conv k%d s%d p%d weights", k, stride, pad);
    fd_check(what, x.w, nw, dw, conv_loss, &x, 200, 1e-6);
    snprintf(what, sizeof what, "conv k%d s%d p%d bias", k, stride, pad);
    fd_check(what, x.b, o, db, conv_loss, &x, 200, 1e-6);
    /* backward adds into parameter gradients */
    double dw0 = dw[0];
    ms_ref_conv_backward_f64(NULL, dw, NULL, x.r, x.in, x.w, &x.s);
    CHECK(check_close(dw[0], 2 * dw0, 1e-12), "conv backward must add into dw");
    free(x.in), free(x.w), free(x.b), free(x.out), free(x.r), free(din), free(dw), free(db);
}

static void check_pool(int is_max, int h, int w, int k, int stride, int pad, int ceil_mode)
{
    conv_ctx_t x = {.pool = 1, .is_max = is_max,
                    .s = {2, 3, h, w, 3, ms_window_out(h, k, stride, pad, ceil_mode),
                          ms_window_out(w, k, stride, pad, ceil_mode), k, stride, pad}};
    size_t ni = (size_t)6 * h * w, no = (size_t)6 * x.s.oh * x.s.ow;
    x.in = malloc(ni * 8);
    x.out = malloc(no * 8);
    x.r = malloc(no * 8);
    double *din = malloc(ni * 8);
    fill(x.in, ni, 1);
    fill(x.r, no, 1);
    ms_ref_pool_backward_f64(din, x.r, x.in, &x.s, is_max);
    char what[128];
    snprintf(what, sizeof what, "%s pool k%d s%d p%d %s %dx%d", is_max ? "max" : "avg", k,
             stride, pad, ceil_mode ? "ceil" : "floor", h, w);
    fd_check(what, x.in, ni, din, conv_loss, &x, 400, 1e-6);
    free(x.in), free(x.out), free(x.r), free(din);
}

/* ---- MIL pooling ---- */
typedef struct {
    ms_mil_params_t m;
    int N, K, J;
    double *z, *b, *P, *lp, *l1, *gP, *gl, *gq;
} mil_ctx_t;

static double mil_loss(void *p)
{
    mil_ctx_t *c = p;
    ms_ref_mil_forward_f64(c->P, c->lp, c->l1, c->z, c->b, &c->m, c->N, c->K, c->J);
    size_t nk = (size_t)c->N * c->K;
    return dot(c->P, c->gP, nk) + dot(c->lp, c->gl, nk) + dot(c->l1, c->gq, nk);
}

/* Direct evaluation of the paper's formulas (no log-space tricks) for moderate inputs. */
static double mil_direct(const ms_mil_params_t *m, const double *z, double b, int J)
{
    double s = 0, prod = 1, mx = 0;
    for (int j = 0; j < J; j++) {
        double p = 1 / (1 + exp(-z[j]));
        switch (m->kind) {
        case MS_MIL_NOISY_AND: s += p; break;
        case MS_MIL_LSE: s += exp(m->r * p); break;
        case MS_MIL_GM: s += pow(p, m->r); break;
        case MS_MIL_MAX: mx = p > mx ? p : mx; break;
        case MS_MIL_NOISY_OR: prod *= 1 - p; break;
        case MS_MIL_ISR: s += p / (1 - p); break;
        }
    }
    double sg = 0;
    switch (m->kind) {
    case MS_MIL_NOISY_AND: {
        double pbar = s / J, a = m->a;
#define SG(x) (1 / (1 + exp(-(x))))
        sg = (SG(a * (pbar - b)) - SG(-a * b)) / (SG(a * (1 - b)) - SG(-a * b));
        return sg;
    }
    case MS_MIL_LSE: return log(s / J) / m->r;
    case MS_MIL_GM: return pow(s / J, 1 / m->r);
    case MS_MIL_MAX: return mx;
    case MS_MIL_NOISY_OR: return 1 - prod;
    case MS_MIL_ISR: return s / (1 + s);
    }
    return NAN;
}

static void check_mil(ms_mil_kind_t kind, double a, double r, int J, double zc, double zs,
                      const char *label)
{
    mil_ctx_t c = {.m = {kind, a, r}, .N = 2, .K = 3, .J = J};
    size_t nz = (size_t)c.N * c.K * J, nk = (size_t)c.N * c.K;
    c.z = malloc(nz * 8);
    c.b = malloc(c.K * 8);
    c.P = malloc(nk * 8), c.lp = malloc(nk * 8), c.l1 = malloc(nk * 8);
    c.gP = malloc(nk * 8), c.gl = malloc(nk * 8), c.gq = malloc(nk * 8);
    double *dz = malloc(nz * 8), *db = calloc(c.K, 8);
    for (size_t i = 0; i < nz; i++)
        c.z[i] = zc + zs * urand();
    for (int k = 0; k < c.K; k++)
        c.b[k] = 0.5 + 0.4 * urand();
    fill(c.gP, nk, 1);
    fill(c.gl, nk, 1);
    fill(c.gq, nk, 1);
    ms_ref_mil_backward_f64(dz, db, c.gP, c.gl, c.gq, c.z, c.b, &c.m, c.N, c.K, J);
    mil_loss(&c);
    char what[160];
    int finite = 1;
    for (size_t i = 0; i < nk; i++)
        finite &= isfinite(c.P[i]) && isfinite(c.lp[i]) && isfinite(c.l1[i]) && c.P[i] >= 0 &&
                  c.P[i] <= 1;
    for (size_t i = 0; i < nz; i++)
        finite &= isfinite(dz[i]);
    snprintf(what, sizeof what, "%s %s: outputs and gradients finite, P in [0,1]",
             ms_mil_name(kind), label);
    CHECK(finite, "%s", what);
    /* P and 1-P from their logs add up to one */
    for (size_t i = 0; i < nk; i++)
        CHECK(fabs(exp(c.lp[i]) + exp(c.l1[i]) - 1) < 1e-9, "%s %s: P + (1-P) = %.17g",
              ms_mil_name(kind), label, exp(c.lp[i]) + exp(c.l1[i]));
    /* forward against the paper's formula where the direct form is accurate */
    if (fabs(zc) <= 3) {
        for (int i = 0; i < c.N * c.K; i++) {
            double d = mil_direct(&c.m, c.z + (size_t)i * J, c.b[i % c.K], J);
            CHECK(fabs(c.P[i] - d) <= 1e-9 * fmax(1, fabs(d)), "%s %s: P %.15g vs formula %.15g",
                  ms_mil_name(kind), label, c.P[i], d);
        }
    }
    /* gradient: finite differences are exact enough only where the function is not flat to
     * machine precision; near saturation compare in absolute terms (fd_check floors at 1) */
    snprintf(what, sizeof what, "%s %s dz", ms_mil_name(kind), label);
    if (kind != MS_MIL_MAX || J > 0)
        fd_check(what, c.z, nz, dz, mil_loss, &c, 60, 2e-6);
    if (kind == MS_MIL_NOISY_AND) {
        snprintf(what, sizeof what, "%s %s db", ms_mil_name(kind), label);
        fd_check(what, c.b, c.K, db, mil_loss, &c, 10, 2e-6);
    }
    free(c.z), free(c.b), free(c.P), free(c.lp), free(c.l1), free(c.gP), free(c.gl), free(c.gq);
    free(dz), free(db);
}

/* float version: thousands of saturated instances must not give NaN or infinities */
static void check_mil_float_extremes(ms_mil_kind_t kind, double a, double r)
{
    const int J = 4096;
    float *z = malloc(J * sizeof *z), *dz = malloc(J * sizeof *dz);
    double *zd = malloc(J * sizeof *zd), *dzd = malloc(J * sizeof *dzd);
    float b = 0.5f, db = 0, P, lp, l1, g = 1;
    double bd = 0.5, dbd = 0, Pd, lpd, l1d, gd = 1;
    ms_mil_params_t m = {kind, a, r};
    /* beyond +-88 a float sigmoid underflows to 0 (a network that has learnt to be sure) */
    const float zs[] = {-200.f, -100.f, -40.f, -15.f, 15.f, 40.f, 100.f, 200.f};
    uint64_t keep = rng_state; /* the later checks draw the same numbers as before */
    for (int t = 0; t < 8; t++) {
        for (int j = 0; j < J; j++)
            zd[j] = z[j] = zs[t] + (float)urand();
        ms_ref_mil_forward_f32(&P, &lp, &l1, z, &b, &m, 1, 1, J);
        ms_ref_mil_backward_f32(dz, &db, &g, &g, &g, z, &b, &m, 1, 1, J);
        int ok = isfinite(P) && isfinite(lp) && isfinite(l1) && isfinite(db);
        for (int j = 0; j < J; j++)
            ok &= isfinite(dz[j]);
        CHECK(ok, "%s float with %d instances at z=%g: P %g logP %g log1mP %g",
              ms_mil_name(kind), J, zs[t], P, lp, l1);
        /* and agree with double precision wherever the float result is finite */
        if (kind == MS_MIL_NOISY_AND) {
            ms_ref_mil_forward_f64(&Pd, &lpd, &l1d, zd, &bd, &m, 1, 1, J);
            ms_ref_mil_backward_f64(dzd, &dbd, &gd, &gd, &gd, zd, &bd, &m, 1, 1, J);
            double worst = fabs(lp - lpd) / fmax(fabs(lpd), 1) +
                           fabs(l1 - l1d) / fmax(fabs(l1d), 1);
            double gmax = 0;
            for (int j = 0; j < J; j++)
                gmax = fmax(gmax, fabs(dzd[j]));
            for (int j = 0; j < J; j++)
                worst = fmax(worst, fabs(dz[j] - dzd[j]) / fmax(gmax, 1e-30));
            CHECK(worst < 1e-3, "noisy_and float vs double at z=%g: relative error %g", zs[t],
                  worst);
        }
        /* saturated bags must still say which side they are on */
        if (kind != MS_MIL_NOISY_AND || fabsf(zs[t]) > 20)
            CHECK((zs[t] > 0) == (P > 0.5f), "%s at z=%g: P=%g", ms_mil_name(kind), zs[t], P);
    }
    rng_state = keep;
    for (int i = 0; i < 4 * J; i++)
        (void)urand();
    free(z), free(dz), free(zd), free(dzd);
}

/* ---- fc and loss ---- */
typedef struct {
    int N, ni, no;
    double *x, *w, *b, *y, *r;
} fc_ctx_t;

static double fc_loss(void *p)
{
    fc_ctx_t *c = p;
    ms_ref_fc_forward_f64(c->y, c->x, c->w, c->b, c->N, c->ni, c->no);
    return dot(c->y, c->r, (size_t)c->N * c->no);
}

typedef struct {
    int N, K;
    ms_head_t head;
    double *lp, *l1, *y, *t, *g1, *g2, *gy, *prob;
} loss_ctx_t;

static double loss_fn(void *p)
{
    loss_ctx_t *c = p;
    size_t nk = (size_t)c->N * c->K;
    double *a = malloc(nk * 8), *b = malloc(nk * 8), *d = malloc(nk * 8), *e = malloc(nk * 8);
    double L = ms_ref_loss_f64(a, b, d, e, c->lp, c->l1, c->y, c->t, c->head, c->N, c->K);
    free(a), free(b), free(d), free(e);
    return L;
}

static void check_loss(ms_head_t head)
{
    loss_ctx_t c = {.N = 3, .K = 4, .head = head};
    size_t nk = 12;
    double *buf = calloc(nk * 8, 8);
    c.lp = buf, c.l1 = buf + nk, c.y = buf + 2 * nk, c.t = buf + 3 * nk;
    c.g1 = buf + 4 * nk, c.g2 = buf + 5 * nk, c.gy = buf + 6 * nk, c.prob = buf + 7 * nk;
    for (size_t i = 0; i < nk; i++) {
        double P = 0.05 + 0.9 * (urand() + 1) / 2;
        c.lp[i] = log(P);
        c.l1[i] = log1p(-P);
        c.y[i] = 2 * urand();
        c.t[i] = head == MS_HEAD_SOFTMAX ? (i % c.K == (i / c.K) % c.K) : (urand() > 0);
    }
    double L = ms_ref_loss_f64(c.g1, c.g2, c.gy, c.prob, c.lp, c.l1, c.y, c.t, head, c.N, c.K);
    /* the loss by hand */
    double want = 0;
    for (int n = 0; n < c.N; n++) {
        double z = 0;
        for (int k = 0; k < c.K; k++)
            z += exp(c.y[n * c.K + k]);
        for (int k = 0; k < c.K; k++) {
            size_t i = (size_t)n * c.K + k;
            double P = exp(c.lp[i]);
            want -= c.t[i] * log(P) + (1 - c.t[i]) * log(1 - P);
            if (head == MS_HEAD_SOFTMAX)
                want -= c.t[i] * log(exp(c.y[i]) / z);
            else
                want -= c.t[i] * log(1 / (1 + exp(-c.y[i]))) +
                        (1 - c.t[i]) * log(1 - 1 / (1 + exp(-c.y[i])));
        }
    }
    want /= c.N;
    CHECK(fabs(L - want) < 1e-12 * fmax(1, want), "loss %s %.15g vs %.15g",
          head == MS_HEAD_SOFTMAX ? "softmax" : "sigmoid", L, want);
    fd_check("loss d/dlogP", c.lp, nk, c.g1, loss_fn, &c, 100, 1e-6);
    fd_check("loss d/dlog1mP", c.l1, nk, c.g2, loss_fn, &c, 100, 1e-6);
    fd_check("loss d/dy", c.y, nk, c.gy, loss_fn, &c, 100, 1e-6);
    free(buf);
}

/* ---- whole network ---- */
static const char *small_net =
    "[net]\nchannels = 2\nclasses = 3\n"
    "[pool0]\ntype = avgpool\nsize = 3\nstride = 1\n"
    "[drop0]\ntype = dropout\nrate = 0.2\n"
    "[conv1]\ntype = conv\nfilters = 4\nsize = 3\n"
    "[conv2]\ntype = conv\nfilters = 5\nsize = 3\n"
    "[pool1]\ntype = maxpool\nsize = 3\nstride = 2\n"
    "[drop1]\ntype = dropout\nrate = 0.2\n"
    "[conv3]\ntype = conv\nfilters = 4\nsize = 5\n"
    "[pool2]\ntype = maxpool\nsize = 3\nstride = 2\n"
    "[conv6]\ntype = conv\nfilters = 6\nsize = 1\n"
    "[drop6]\ntype = dropout\nrate = 0.5\n"
    "[conv7]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
    "[mil]\ntype = mil\npool = %s\n%s"
    "[fc]\ntype = fc\nhead = %s\n";

typedef struct {
    ms_net_t *net;
    double *x, *t, *params;
    size_t np;
    ms_pass_t pass;
} net_ctx_t;

static double net_loss(void *p)
{
    net_ctx_t *c = p;
    double L = NAN;
    ms_net_write(c->net, ms_net_params(c->net), c->params);
    if (ms_net_forward(c->net, c->x, &c->pass) == MS_OK)
        ms_net_loss(c->net, c->t, &L);
    return L;
}

static void check_net(const char *pool, const char *extra, const char *head, int train)
{
    char text[2048];
    snprintf(text, sizeof text, small_net, pool, extra, head);
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_backend_t *be = NULL;
    net_ctx_t c = {.pass = {.seed = 7, .step = 3}};
    CHECK_OK(ms_config_parse(&cfg, text, "small.ini"));
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK_OK(ms_backend_ref(&be));
    CHECK_OK(ms_net_create(&c.net, &spec, be, MS_F64, 11));
    if (!c.net)
        goto out;
    const int N = 2, H = 37, W = 41, C = 2, K = 3;
    CHECK_OK(ms_net_plan(c.net, N, H, W, train));
    c.np = ms_net_nparams(c.net);
    c.x = malloc(sizeof(double) * N * C * H * W);
    c.t = calloc((size_t)N * K, 8);
    c.params = malloc(c.np * 8);
    double *grads = malloc(c.np * 8), *dx = malloc(sizeof(double) * N * C * H * W);
    fill(c.x, (size_t)N * C * H * W, 1);
    c.t[0 * K + 1] = 1;
    c.t[1 * K + 2] = 1;
    if (!strcmp(head, "sigmoid"))
        c.t[1 * K + 0] = 1;
    CHECK_OK(ms_net_read(c.net, ms_net_params(c.net), c.params));
    double L0 = net_loss(&c);
    CHECK(isfinite(L0) && L0 > 0, "network loss %g", L0);
    CHECK_OK(ms_net_backward(c.net, &c.pass, 1));
    CHECK_OK(ms_net_read(c.net, ms_net_grads(c.net), grads));
    CHECK_OK(ms_net_output(c.net, MS_OUT_INPUT_GRAD, dx));
    char what[128];
    snprintf(what, sizeof what, "network (%s, %s head, %s) parameter gradients", pool, head,
             train ? "training" : "eval");
    /* dropout is on (same seed and step in every evaluation: a fixed mask) */
    fd_check(what, c.params, c.np, grads, net_loss, &c, 300, 1e-5);
    snprintf(what, sizeof what, "network (%s, %s head, %s) input gradient", pool, head,
             train ? "training" : "eval");
    fd_check(what, c.x, (size_t)N * C * H * W, dx, net_loss, &c, 100, 1e-5);
    free(grads), free(dx);
out:
    free(c.x), free(c.t), free(c.params);
    ms_net_free(c.net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
}

static void check_adam(void)
{
    /* one step by hand: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2,
     * p -= lr * g / (|g| + eps) */
    double p[3] = {1.0, -2.0, 0.5}, g[3] = {0.5, -0.25, 0.0}, m[3] = {0}, v[3] = {0};
    ms_ref_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
    ms_ref_adam_f64(p, g, m, v, 3, &hp, 1);
    CHECK(fabs(p[0] - (1.0 - 1e-3 * 0.5 / (0.5 + 1e-8))) < 1e-15, "adam p0 %.17g", p[0]);
    CHECK(fabs(p[1] - (-2.0 + 1e-3 * 0.25 / (0.25 + 1e-8))) < 1e-15, "adam p1 %.17g", p[1]);
    CHECK(p[2] == 0.5, "adam with zero gradient moved p2 to %.17g", p[2]);
    CHECK(fabs(m[0] - 0.05) < 1e-16 && fabs(v[0] - 0.00025) < 1e-18, "adam moments %g %g", m[0],
          v[0]);
    /* second step with the same gradient: m = 0.19 g, v = 0.001999 g^2,
     * mhat = 0.19/0.19 g, vhat = g^2 -> the same step again */
    double p0 = p[0];
    ms_ref_adam_f64(p, g, m, v, 3, &hp, 2);
    double bc1 = 1 - 0.81, bc2 = 1 - 0.998001;
    double want = p0 - 1e-3 / bc1 * m[0] / (sqrt(v[0]) / sqrt(bc2) + 1e-8);
    CHECK(fabs(p[0] - want) < 1e-15, "adam step 2 %.17g vs %.17g", p[0], want);
    CHECK(fabs(p0 - p[0] - 1e-3) < 1e-10, "adam step 2 moves by lr: %.17g", p0 - p[0]);
}

int main(void)
{
    check_conv(2, 3, 9, 11, 4, 3, 1, 0);
    check_conv(1, 2, 8, 7, 3, 3, 2, 1);
    check_conv(2, 4, 5, 6, 3, 1, 1, 0);
    check_conv(1, 3, 12, 10, 2, 5, 1, 2);
    check_pool(1, 9, 11, 3, 2, 0, 1);
    check_pool(1, 10, 7, 3, 2, 0, 0);
    check_pool(0, 9, 11, 3, 1, 0, 1);
    check_pool(0, 8, 9, 3, 2, 1, 1);
    check_pool(1, 2, 5, 3, 2, 0, 1); /* window hangs over the edge */

    struct { ms_mil_kind_t k; double a, r; } pools[] = {
        {MS_MIL_NOISY_AND, 10, 1}, {MS_MIL_NOISY_AND, 5, 1}, {MS_MIL_LSE, 1, 2.5},
        {MS_MIL_LSE, 1, 5},        {MS_MIL_GM, 1, 1},        {MS_MIL_GM, 1, 2.5},
        {MS_MIL_MAX, 1, 1},        {MS_MIL_NOISY_OR, 1, 1},  {MS_MIL_ISR, 1, 1}};
    for (size_t i = 0; i < sizeof pools / sizeof *pools; i++) {
        check_mil(pools[i].k, pools[i].a, pools[i].r, 49, 0, 2.5, "mixed");
        check_mil(pools[i].k, pools[i].a, pools[i].r, 1, 0, 2, "one instance");
        check_mil(pools[i].k, pools[i].a, pools[i].r, 30, -9, 1, "all p~0");
        check_mil(pools[i].k, pools[i].a, pools[i].r, 30, 9, 1, "all p~1");
        check_mil(pools[i].k, pools[i].a, pools[i].r, 3025, 0, 3, "3025 instances");
        check_mil(pools[i].k, pools[i].a, pools[i].r, 3025, -6, 1, "3025 instances p~0");
        check_mil_float_extremes(pools[i].k, pools[i].a, pools[i].r);
    }

    {
        fc_ctx_t c = {.N = 3, .ni = 4, .no = 5};
        double *buf = malloc(8 * (12 + 20 + 5 + 15 + 15)), *dx = malloc(12 * 8);
        double *dw = calloc(20, 8), *db = calloc(5, 8);
        c.x = buf, c.w = buf + 12, c.b = buf + 32, c.y = buf + 37, c.r = buf + 52;
        fill(buf, 67, 1);
        ms_ref_fc_backward_f64(dx, dw, db, c.r, c.x, c.w, c.N, c.ni, c.no);
        fd_check("fc input", c.x, 12, dx, fc_loss, &c, 100, 1e-6);
        fd_check("fc weights", c.w, 20, dw, fc_loss, &c, 100, 1e-6);
        fd_check("fc bias", c.b, 5, db, fc_loss, &c, 100, 1e-6);
        free(buf), free(dx), free(dw), free(db);
    }
    check_loss(MS_HEAD_SOFTMAX);
    check_loss(MS_HEAD_SIGMOID);
    check_adam();

    check_net("noisy_and", "a = 7.5\n", "softmax", 1);
    check_net("noisy_and", "", "softmax", 0);
    check_net("lse", "r = 2.5\n", "softmax", 1);
    check_net("gm", "r = 2.5\n", "sigmoid", 1);
    check_net("max", "", "softmax", 1);
    check_net("noisy_or", "", "sigmoid", 1);
    check_net("isr", "", "softmax", 1);
    return check_summary();
}

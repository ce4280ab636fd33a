/* milscreen bench --cpu: the machine (measured FMA and bf16 peak, core / SMT layout, load),
 * then the paper's network on the oneDNN CPU backend in fp32 and bf16: training images/s
 * (256x256 batch 4 and 900x900 batch 1: forward, loss, backward, Adam), inference images/s
 * (1000x1200), each layer's forward and backward time and GFLOP/s, every rate also as a
 * fraction of the peak of its precision; with --vs-pytorch, tools/bench-pytorch --cpu (fp32
 * and bf16 autocast) in the same invocation and the ratios. Each backend is checked against
 * the reference before anything is timed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/install.h"
#include "engine/net.h"
#include "engine/rng.h"
#include "ms_build_config.h"
#include "pipeline/bench/peak.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/version.h"

static void help(void)
{
    printf(
        "usage: milscreen bench --cpu [--vs-pytorch] [options]\n\n"
        "First the machine: the CPU, its packages / physical cores / threads per core\n"
        "(/sys/devices/system/cpu), the CPUs this process may use, the load average, and the\n"
        "measured arithmetic peak of these cores (a kernel of independent AVX-512 FMA chains\n"
        "in fp32, and AVX512_BF16's vdpbf16ps), on one thread and on all. Then the paper's\n"
        "network (configs/paper.ini: 3 channels, 12 classes) on the oneDNN CPU backend in each\n"
        "precision: training images/s at 256x256 batch 4 and 900x900 batch 1 (forward, loss,\n"
        "backward, Adam), inference images/s at 1000x1200 batch 1, and each layer's forward\n"
        "and backward time and GFLOP/s; every GFLOP/s also as a fraction of the all-thread\n"
        "peak of its precision (fp32 FMA for fp32, vdpbf16ps for bf16). Each backend is first\n"
        "checked against the reference on a small input; each figure is the median of --steps\n"
        "timed steps after --warmup untimed ones.\n\n"
        "  --vs-pytorch      also run tools/bench-pytorch --cpu now, in the same precisions\n"
        "                    (bf16: torch.autocast on the CPU), same threads and steps, and\n"
        "                    print the ratios\n"
        "  --precision LIST  fp32, bf16 or fp32,bf16 (default: both where the CPU has\n"
        "                    AVX-512, else fp32)\n"
        "  --threads N       OpenMP threads (default: the online CPUs)\n"
        "  --steps N         timed steps per figure (default 5)\n"
        "  --warmup N        untimed steps first (default 1)\n"
        "  --only LIST       a subset of train256,train900,infer (default: all three)\n"
        "  --rounds N        repeat everything N times, alternating with PyTorch, and compare\n"
        "                    each side's best round (default 1; use 3 on a shared machine)\n"
        "  --infer WxH       inference input (default 1000x1200)\n"
        "  --no-layers       skip the per-layer tables\n"
        "  --no-peak         skip the peak measurement (the fractions are then not printed)\n"
        "  --config FILE     the network (default: configs/paper.ini of the install,\n"
        "                    share/milscreen/configs beside bin/milscreen)\n"
        "  --set sec.key=val override a config entry\n");
}

enum { P_FP32, P_BF16, NPREC };
static const char *const prec_names[NPREC] = {"fp32", "bf16"};

typedef struct {
    int vs_pytorch, threads, steps, warmup, layers, iw, ih, rounds, peak;
    unsigned figures; /* bit 0: train 256x256 b4, 1: train 900x900 b1, 2: inference */
    unsigned precs;   /* bit p: prec_names[p]; 0: the default */
} opts_t;

typedef struct {
    const char *what;  /* "train" or "infer" */
    int w, h, n;
    double med_s, ips, gflops; /* median step, images/s, achieved GFLOP/s */
    double min_s;              /* fastest step: less disturbed by other load on the machine */
    double load;               /* the load average when it ran */
} figure_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill_input(float *x, size_t nx, float *t, int n, int K)
{
    for (size_t i = 0; i < nx; i++)
        x[i] = 2.0f * ms_uniform(0xbe7c, i) - 1.0f;
    memset(t, 0, sizeof(float) * n * K);
    for (int i = 0; i < n; i++)
        t[i * K + i % K] = 1;
}

/* The all-thread peak of precision p (GFLOP/s), 0 when not measured. */
static double peak_of(const ms_peak_t *pk, int p)
{
    return p == P_BF16 ? pk->bf16_all : pk->fp32_all;
}

/* " 41%" of the peak, or "" when there is none. */
static const char *frac(char *buf, size_t n, double gflops, double peak)
{
    if (peak > 0 && gflops > 0)
        snprintf(buf, n, "%3.0f%%", 100 * gflops / peak);
    else
        snprintf(buf, n, "%s", "");
    return buf;
}

/* One forward of the backend and of the reference on the same small input and weights:
 * instance maps and MIL output. fp32: within 1e-4 of the largest value (float against float
 * with different summation orders; tests/test_cpu_backend.c measures ~1e-6). bf16: relative
 * L2 error within 2e-2 (its rounding of every layer's output; the test measures at most 6e-3
 * for the logits and gives the reasons). */
static ms_status_t check_backend(const ms_spec_t *spec, ms_backend_t *be, int bf16)
{
    ms_status_t st = MS_OK;
    ms_backend_t *rb = NULL;
    ms_net_t *a = NULL, *b = NULL;
    float *x = NULL, *buf[2] = {NULL, NULL}, *params = NULL;
    const int N = 1, H = 70, W = 90, K = spec->classes;
    MS_TRY(ms_backend_ref(&rb));
    MS_TRY(ms_net_create(&a, spec, be, MS_F32, 3));
    MS_TRY(ms_net_create(&b, spec, rb, MS_F32, 3));
    MS_TRY(ms_net_plan(a, N, H, W, 0));
    MS_TRY(ms_net_plan(b, N, H, W, 0));
    const ms_plan_t *pl = ms_net_current_plan(a);
    size_t nx = (size_t)N * spec->channels * H * W, nm = (size_t)N * K * pl->mh * pl->mw;
    size_t np = ms_net_nparams(a);
    MS_ALLOC(x, nx, "check input");
    MS_ALLOC(params, np, "check parameters");
    MS_ALLOC(buf[0], nm, "check output");
    MS_ALLOC(buf[1], nm, "check output");
    for (size_t i = 0; i < nx; i++)
        x[i] = 2.0f * ms_uniform(0xc4ec, i) - 1.0f;
    MS_TRY(ms_net_read(a, ms_net_params(a), params));
    MS_TRY(ms_net_write(b, ms_net_params(b), params));
    MS_TRY(ms_net_forward(a, x, NULL));
    MS_TRY(ms_net_forward(b, x, NULL));
    static const ms_output_t outs[] = {MS_OUT_LOGITS, MS_OUT_MIL};
    static const char *const names[] = {"instance logits", "MIL output"};
    for (int o = 0; o < 2; o++) {
        size_t n = o ? (size_t)N * K : nm;
        for (size_t i = 0; i < n; i++)
            buf[0][i] = buf[1][i] = NAN;
        MS_TRY(ms_net_output(a, outs[o], buf[0]));
        MS_TRY(ms_net_output(b, outs[o], buf[1]));
        double scale = 0, err = 0, se = 0, sb = 0;
        for (size_t i = 0; i < n; i++) {
            scale = fmax(scale, fabs(buf[1][i]));
            double e = fabs((double)buf[0][i] - buf[1][i]);
            err = isnan(e) ? INFINITY : fmax(err, e);
            se += e * e, sb += (double)buf[1][i] * buf[1][i];
        }
        double l2 = sqrt(se / fmax(sb, 1e-300));
        int ok = bf16 ? l2 <= 2e-2 && err < INFINITY : err <= 1e-4 * fmax(scale, 1e-30);
        if (!ok)
            MS_FAIL(MS_EINTERNAL, "check failed (%s): %s differ from the reference by %.3g (scale "
                    "%.3g, relative L2 %.3g); not timing a wrong result",
                    prec_names[bf16], names[o], err, scale, l2);
        printf("check %s: %-16s matches the reference (error %.2g of %.2g, relative L2 %.2g)\n",
               prec_names[bf16], names[o], err, scale, l2);
    }
done:
    free(x), free(params), free(buf[0]), free(buf[1]);
    ms_net_free(a);
    ms_net_free(b);
    ms_backend_close(rb);
    return st;
}

/* Times training steps (train) or forwards (!train) layer by layer through the backend
 * interface, as ms_net_forward/backward/adam do them. lf, lb: per-layer median forward and
 * backward seconds (nlayers each), may be NULL. */
static ms_status_t time_run(ms_net_t *net, int n, int h, int w, int train, const opts_t *o,
                            figure_t *fig, double *lf, double *lb)
{
    ms_status_t st = MS_OK;
    const ms_spec_t *spec = ms_net_spec(net);
    ms_backend_t *be = ms_net_backend(net);
    const int nl = spec->nlayers, K = spec->classes, total = o->warmup + o->steps;
    float *x = NULL, *t = NULL;
    double *tf = NULL, *tb = NULL, *step = NULL;
    MS_TRY(ms_net_plan(net, n, h, w, train));
    ms_plan_t *pl = (ms_plan_t *)ms_net_current_plan(net);
    size_t nx = (size_t)n * spec->channels * h * w;
    MS_ALLOC(x, nx, "bench input");
    MS_ALLOC(t, (size_t)n * K, "bench targets");
    MS_ALLOC(tf, (size_t)nl * o->steps, "timings");
    MS_ALLOC(tb, (size_t)nl * o->steps, "timings");
    MS_ALLOC(step, o->steps, "timings");
    fill_input(x, nx, t, n, K);
    void *params = ms_net_params(net), *grads = ms_net_grads(net);
    size_t gbytes = ms_net_nparams(net) * sizeof(float);
    ms_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
    for (int s = 0; s < total; s++) {
        int k = s - o->warmup; /* timed when >= 0 */
        ms_pass_t pass = {.seed = 1, .step = (uint64_t)s + 1};
        double t0 = now(), ta;
        MS_TRY(be->set_input(be, pl, x));
        for (int l = 0; l < nl; l++) {
            ta = now();
            MS_TRY(be->forward(be, pl, l, params, &pass));
            MS_TRY(be->sync(be));
            if (k >= 0)
                tf[(size_t)l * o->steps + k] = now() - ta;
        }
        if (train) {
            double loss;
            MS_TRY(ms_net_loss(net, t, &loss));
            MS_TRY(be->zero(be, grads, gbytes));
            for (int l = nl - 1; l >= 0; l--) {
                ta = now();
                int flags = MS_BWD_WEIGHTS | (l > 0 ? MS_BWD_DATA : 0);
                MS_TRY(be->backward(be, pl, l, params, grads, flags, &pass));
                MS_TRY(be->sync(be));
                if (k >= 0)
                    tb[(size_t)l * o->steps + k] = now() - ta;
            }
            MS_TRY(ms_net_adam(net, &hp));
            if (!isfinite(loss))
                MS_FAIL(MS_EINTERNAL, "loss became %g while timing", loss);
        }
        MS_TRY(be->sync(be));
        if (k >= 0)
            step[k] = now() - t0;
    }
    double flops = 0;
    for (int l = 0; l < nl; l++)
        flops += pl->layers[l].flops;
    flops *= n * (train ? 3.0 : 1.0); /* backward: data + weights, each as the forward */
    fig->what = train ? "train" : "infer";
    fig->w = w, fig->h = h, fig->n = n;
    fig->med_s = median(step, o->steps);
    fig->min_s = step[0]; /* median() sorted it */
    fig->ips = n / fig->med_s;
    fig->gflops = flops / fig->med_s * 1e-9;
    fig->load = ms_load_average();
    for (int l = 0; l < nl; l++) {
        if (lf)
            lf[l] = median(tf + (size_t)l * o->steps, o->steps);
        if (lb)
            lb[l] = train ? median(tb + (size_t)l * o->steps, o->steps) : 0;
    }
done:
    free(x), free(t), free(tf), free(tb), free(step);
    return st;
}

/* GFLOP per image of a figure: the forward's, 3x for a training step. */
static double figure_gflop(const figure_t *f) { return f->gflops * f->med_s / f->n; }

static void print_layers(const ms_plan_t *pl, const double *lf, const double *lb,
                         const char *prec, double peak)
{
    printf("\nper layer, %s, %s %dx%d batch %d (median of the timed steps; %% of the %s "
           "peak):\n", prec, pl->train ? "training" : "inference", pl->w, pl->h, pl->n, prec);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", pl->w, pl->h);
    printf("  %-8s %-8s %-16s %9s %8s %5s %9s %8s %5s %6s\n", "layer", "kind", "output",
           "fwd ms", "GFLOP/s", "peak", "bwd ms", "GFLOP/s", "peak", "share");
    double tot = 0;
    for (int l = 0; l < pl->spec->nlayers; l++)
        tot += lf[l] + lb[l];
    for (int l = 0; l < pl->spec->nlayers; l++) {
        const ms_layer_t *L = &pl->layers[l];
        char out[32];
        snprintf(out, sizeof out, "%dx%dx%d", L->oc, L->oh, L->ow);
        double fl = L->flops * pl->n * 1e-9;
        /* conv1's backward also computes the input gradient of the layer before: as costly
         * as its forward again, so every conv's backward counts 2x its forward */
        char gf[16] = "", gb[16] = "", pf[16] = "", pb[16] = "";
        if (fl > 0) {
            snprintf(gf, sizeof gf, "%.1f", fl / lf[l]);
            frac(pf, sizeof pf, fl / lf[l], peak);
            if (lb[l] > 0) {
                snprintf(gb, sizeof gb, "%.1f", 2 * fl / lb[l]);
                frac(pb, sizeof pb, 2 * fl / lb[l], peak);
            }
        }
        printf("  %-8s %-8s %-16s %9.2f %8s %5s %9.2f %8s %5s %5.1f%%\n", L->spec->name,
               ms_layer_kind_name(L->spec->kind), out, 1e3 * lf[l], gf, pf, 1e3 * lb[l], gb, pb,
               100 * (lf[l] + lb[l]) / tot);
        printf("milscreen-layer prec=%s size=%s batch=%d name=%s kind=%s fwd_ms=%.3f "
               "bwd_ms=%.3f gflop=%.3f\n", prec, size, pl->n, L->spec->name,
               ms_layer_kind_name(L->spec->kind), 1e3 * lf[l], 1e3 * lb[l], fl);
    }
}

/* ---- tools/bench-pytorch --cpu ---------------------------------------------------------- */

static double token_value(const char *line, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p += n)
        if ((p == line || p[-1] == ' ') && p[n] == '=')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static int token_is(const char *line, const char *key, const char *val)
{
    char pat[64];
    snprintf(pat, sizeof pat, " %s=%s ", key, val);
    return strstr(line, pat) != NULL;
}

/* Runs the PyTorch twin in the precisions of o->precs with the same threads and steps;
 * fills torch_ips[p][i] (NAN where it reports nothing). Returns 0, or -1 when it could not
 * run. */
static int run_pytorch(const opts_t *o, const figure_t *fig, int nfig, double (*torch_ips)[3],
                       double (*torch_min_s)[3])
{
    char cmd[5120], script[4096];
    if (ms_install_data(script, sizeof script, "tools/bench-pytorch") != MS_OK) {
        fprintf(stderr, "milscreen bench: %s\n", ms_error_message());
        return -1;
    }
    snprintf(cmd, sizeof cmd,
             "'%s' --cpu --threads %d --steps %d --warmup %d --infer %dx%d "
             "--modes %s --only %s%s%s 2>&1",
             script, o->threads, o->steps, o->warmup, o->iw, o->ih,
             o->precs == 3 ? "fp32,bf16" : prec_names[o->precs == 2],
             o->figures & 1 ? "train256," : "", o->figures & 2 ? "train900," : "",
             o->figures & 4 ? "infer" : "");
    printf("\n== PyTorch (load average %.2f): %s\n", ms_load_average(), cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[2048];
    for (int p = 0; p < NPREC; p++)
        for (int i = 0; i < nfig; i++)
            torch_ips[p][i] = torch_min_s[p][i] = NAN;
    while (fgets(line, sizeof line, f)) {
        fputs("  | ", stdout);
        fputs(line, stdout);
        if (strncmp(line, "pytorch-cpu ", 12))
            continue;
        for (int p = 0; p < NPREC; p++)
            for (int i = 0; i < nfig; i++) {
                char size[32], batch[16];
                snprintf(size, sizeof size, "%dx%d", fig[i].w, fig[i].h);
                snprintf(batch, sizeof batch, "%d", fig[i].n);
                if (token_is(line, "mode", prec_names[p]) &&
                    token_is(line, "what", fig[i].what) && token_is(line, "size", size) &&
                    token_is(line, "batch", batch))
                    torch_ips[p][i] = token_value(line, "img_s"),
                    torch_min_s[p][i] = token_value(line, "min_s");
            }
    }
    int rc = pclose(f);
    if (rc != 0)
        fprintf(stderr, "milscreen bench: tools/bench-pytorch exited with status %d\n", rc);
    return rc != 0 ? -1 : 0;
}

/* ---- the command ------------------------------------------------------------------------ */

static void print_machine(const ms_peak_t *pk, int measured)
{
    ms_topology_print(stdout, "");
    printf("load average (1 min): %.2f\n", ms_load_average());
    if (!measured) {
        printf("peak: not measured (--no-peak)\n");
        return;
    }
    /* the clock the fp32 rate implies at 2 FMA pipes of 16 fp32 lanes (AVX-512 on Zen 4/5
     * server cores and on Intel's two-FMA-port cores): a check against the nominal clock */
    double lanes = !strcmp(pk->fp32_isa, "avx512") ? 16 : 8;
    printf("peak (measured, best of short runs): fp32 FMA (%s) %.1f GFLOP/s on 1 thread, %.1f "
           "on %d (%.2fx); implied clock at 2 FMA/cycle of %g lanes: %.2f GHz (nominal %.2f)\n",
           pk->fp32_isa, pk->fp32_1, pk->fp32_all, pk->threads,
           pk->fp32_1 > 0 ? pk->fp32_all / pk->fp32_1 : 0, lanes,
           pk->fp32_1 / (2 * 2 * lanes), pk->mhz * 1e-3);
    if (pk->bf16_1 > 0)
        printf("peak (measured): bf16 dot products (vdpbf16ps, fp32 accumulation) %.1f GFLOP/s "
               "on 1 thread, %.1f on %d (%.2fx the fp32 rate)\n",
               pk->bf16_1, pk->bf16_all, pk->threads, pk->bf16_all / fmax(pk->fp32_all, 1e-9));
    else
        printf("peak: no AVX512_BF16 on this CPU (no bf16 dot-product rate)\n");
    printf("milscreen-peak threads=%d fp32_isa=%s fp32_1=%.1f fp32_all=%.1f bf16_1=%.1f "
           "bf16_all=%.1f mhz=%.0f\n",
           pk->threads, pk->fp32_isa, pk->fp32_1, pk->fp32_all, pk->bf16_1, pk->bf16_all,
           pk->mhz);
}

static ms_status_t bench(opts_t *o, ms_config_t *cfg)
{
    ms_status_t st = MS_OK;
    ms_spec_t spec = {0};
    ms_backend_t *be[NPREC] = {NULL, NULL};
    ms_net_t *net = NULL;
    double *lf = NULL, *lb = NULL;
    figure_t fig[3] = {{0}};
    ms_peak_t pk = {0};
    MS_TRY(ms_spec_from_config(&spec, cfg));
    /* the precisions: as asked, or both where bf16 runs here */
    int want_default = o->precs == 0;
    if (want_default)
        o->precs = 3;
    for (int p = 0; p < NPREC; p++) {
        if (!(o->precs & (1u << p)))
            continue;
        ms_status_t s = ms_backend_cpu(&be[p], o->threads, prec_names[p]);
        if (s != MS_OK && p == P_BF16 && want_default) {
            printf("bf16: %s; measuring fp32 only\n", ms_error_message());
            o->precs &= ~(1u << p);
            continue;
        }
        MS_TRY(s);
    }
    char desc[512];
    const char *rev = ms_version_revision();
    for (int p = 0; p < NPREC; p++)
        if (be[p]) {
            be[p]->describe(be[p], desc, sizeof desc);
            printf("milscreen bench --cpu: %s\n", desc);
        }
    printf("network: %d channels, %d classes, %zu parameters; git %s; %d timed steps after "
           "%d warm-up (median)\n",
           spec.channels, spec.classes, ms_spec_nparams(&spec), rev, o->steps, o->warmup);
    printf("milscreen-machine backend=\"%s\" threads=%d git=%s\n", desc, o->threads, rev);
    if (o->peak)
        ms_peak_measure(&pk, o->threads);
    print_machine(&pk, o->peak);
    for (int p = 0; p < NPREC; p++)
        if (be[p])
            MS_TRY(check_backend(&spec, be[p], p == P_BF16));
    MS_ALLOC(lf, spec.nlayers, "layer timings");
    MS_ALLOC(lb, spec.nlayers, "layer timings");
    static const int runs[3][4] = {{256, 256, 4, 1}, {900, 900, 1, 1}, {0, 0, 1, 0}};
    /* best[p][r]: the round with the fastest median; tbest[p][r]: PyTorch's, likewise */
    figure_t best[NPREC][3] = {{{0}}};
    double tbest[NPREC][3], tbest_min[NPREC][3];
    for (int p = 0; p < NPREC; p++)
        for (int r = 0; r < 3; r++)
            tbest[p][r] = tbest_min[p][r] = NAN;
    for (int round = 0; round < o->rounds; round++) {
        if (o->rounds > 1)
            printf("\n== round %d of %d\n", round + 1, o->rounds);
        for (int p = 0; p < NPREC; p++) {
            if (!be[p])
                continue;
            MS_TRY(ms_net_create(&net, &spec, be[p], MS_F32, 1));
            printf("\n  %-4s %-6s %-10s %5s %9s %9s %9s %5s %9s %6s\n", "", "", "input", "batch",
                   "median s", "images/s", "GFLOP/s", "peak", "fastest s", "load");
            for (int r = 0; r < 3; r++) {
                if (!(o->figures & (1 << r)))
                    continue;
                int w = runs[r][0] ? runs[r][0] : o->iw, h = runs[r][1] ? runs[r][1] : o->ih;
                int train = runs[r][3];
                char pf[16];
                MS_TRY(time_run(net, runs[r][2], h, w, train, o, &fig[r], lf, lb));
                printf("  %-4s %-6s %4dx%-5d %5d %9.3f %9.2f %9.1f %5s %9.3f %6.2f\n",
                       prec_names[p], fig[r].what, w, h, fig[r].n, fig[r].med_s, fig[r].ips,
                       fig[r].gflops, frac(pf, sizeof pf, fig[r].gflops, peak_of(&pk, p)),
                       fig[r].min_s, fig[r].load);
                printf("milscreen-cpu prec=%s what=%s size=%dx%d batch=%d img_s=%.3f "
                       "median_s=%.4f min_s=%.4f gflop_s=%.1f peak_frac=%.3f steps=%d threads=%d "
                       "round=%d load=%.2f\n",
                       prec_names[p], fig[r].what, w, h, fig[r].n, fig[r].ips, fig[r].med_s,
                       fig[r].min_s, fig[r].gflops,
                       peak_of(&pk, p) > 0 ? fig[r].gflops / peak_of(&pk, p) : 0, o->steps,
                       o->threads, round + 1, fig[r].load);
                fflush(stdout);
                if (o->layers && round == 0)
                    print_layers(ms_net_current_plan(net), lf, lb, prec_names[p],
                                 peak_of(&pk, p));
                if (round == 0 || fig[r].ips > best[p][r].ips)
                    best[p][r] = fig[r];
            }
            /* free the big plans before the next precision, and before PyTorch */
            ms_net_free(net);
            net = NULL;
        }
        if (o->vs_pytorch) {
            double tips[NPREC][3], tmin[NPREC][3];
            if (run_pytorch(o, fig, 3, tips, tmin))
                MS_FAIL(MS_EIO, "tools/bench-pytorch --cpu failed (see its output above)");
            for (int p = 0; p < NPREC; p++)
                for (int r = 0; r < 3; r++)
                    if (isnan(tbest[p][r]) || tips[p][r] > tbest[p][r])
                        tbest[p][r] = tips[p][r], tbest_min[p][r] = tmin[p][r];
        }
    }
    if (o->vs_pytorch) {
        printf("\n== milscreen / PyTorch (same invocation, same machine, same threads; >1: "
               "milscreen faster)%s\n",
               o->rounds > 1 ? "\n   each side's best round (alternating rounds filter out "
                               "other load on the machine)" : "");
        printf("   GFLOP/s count the network's own arithmetic for both (3x the forward for a "
               "training step); peak: of the precision's measured all-thread peak\n");
        for (int r = 0; r < 3; r++) {
            if (!(o->figures & (1 << r)))
                continue;
            const figure_t *any = best[be[P_FP32] ? P_FP32 : P_BF16] + r;
            printf("  %-6s %4dx%-5d batch %d:\n", any->what, any->w, any->h, any->n);
            double gf_img = figure_gflop(any);
            for (int p = 0; p < NPREC; p++) {
                if (!be[p])
                    continue;
                char a[16], b[16];
                printf("    milscreen %s %8.2f img/s %7.1f GFLOP/s %4s | PyTorch %s %8.2f img/s "
                       "%7.1f GFLOP/s %4s\n",
                       prec_names[p], best[p][r].ips, best[p][r].gflops,
                       frac(a, sizeof a, best[p][r].gflops, peak_of(&pk, p)), prec_names[p],
                       tbest[p][r], tbest[p][r] * gf_img,
                       frac(b, sizeof b, tbest[p][r] * gf_img, peak_of(&pk, p)));
            }
            for (int p = 0; p < NPREC; p++)
                for (int q = 0; q < NPREC; q++) {
                    /* milscreen p against PyTorch q: fp32/fp32, bf16/fp32, bf16/bf16 */
                    if (!be[p] || !be[q] || (p == P_FP32 && q == P_BF16))
                        continue;
                    double ratio = best[p][r].ips / tbest[q][r];
                    double rmin = tbest_min[q][r] / best[p][r].min_s;
                    printf("    milscreen %s / PyTorch %s: %5.2fx (fastest steps: %5.2fx)\n",
                           prec_names[p], prec_names[q], ratio, rmin);
                    printf("milscreen-vs-pytorch-cpu prec=%s torch=%s what=%s size=%dx%d "
                           "batch=%d milscreen_img_s=%.3f pytorch_img_s=%.3f ratio=%.3f "
                           "ratio_fastest=%.3f rounds=%d load=%.2f\n",
                           prec_names[p], prec_names[q], best[p][r].what, best[p][r].w,
                           best[p][r].h, best[p][r].n, best[p][r].ips, tbest[q][r], ratio, rmin,
                           o->rounds, best[p][r].load);
                }
        }
        printf("  targets (issue 14): milscreen bf16 >= 2.5x PyTorch fp32 and >= 1.5x PyTorch "
               "bf16, training and inference\n");
    }
done:
    free(lf), free(lb);
    ms_net_free(net);
    for (int p = 0; p < NPREC; p++)
        ms_backend_close(be[p]);
    ms_spec_free(&spec);
    return st;
}

int ms_bench_cpu(int argc, char **argv)
{
    enum {
        O_CPU = MS_OPT_FIRST_FREE,
        O_VS,
        O_THREADS,
        O_STEPS,
        O_WARMUP,
        O_INFER,
        O_NOLAYERS,
        O_ROUNDS,
        O_ONLY,
        O_PREC,
        O_NOPEAK
    };
    static const struct option longopts[] = {
        MS_CLI_COMMON_OPTIONS,
        {"cpu", no_argument, 0, O_CPU},
        {"vs-pytorch", no_argument, 0, O_VS},
        {"threads", required_argument, 0, O_THREADS},
        {"steps", required_argument, 0, O_STEPS},
        {"warmup", required_argument, 0, O_WARMUP},
        {"infer", required_argument, 0, O_INFER},
        {"no-layers", no_argument, 0, O_NOLAYERS},
        {"rounds", required_argument, 0, O_ROUNDS},
        {"only", required_argument, 0, O_ONLY},
        {"precision", required_argument, 0, O_PREC},
        {"no-peak", no_argument, 0, O_NOPEAK},
        {0, 0, 0, 0}};
    ms_cli_t cli = {.cmd = "bench"};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    opts_t o = {.threads = ncpu > 0 ? (int)ncpu : 1, .steps = 5, .warmup = 1, .layers = 1,
                .iw = 1000, .ih = 1200, .rounds = 1, .figures = 7, .peak = 1};
    int opt, c;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_CPU: break;
        case O_VS: o.vs_pytorch = 1; break;
        case O_THREADS:
            if (ms_cli_int("bench", "threads", optarg, 0, 4096, &o.threads))
                return 2;
            break;
        case O_STEPS:
            if (ms_cli_int("bench", "steps", optarg, 1, 1000000, &o.steps))
                return 2;
            break;
        case O_WARMUP:
            if (ms_cli_int("bench", "warmup", optarg, 0, 1000000, &o.warmup))
                return 2;
            break;
        case O_NOLAYERS: o.layers = 0; break;
        case O_NOPEAK: o.peak = 0; break;
        case O_ROUNDS:
            if (ms_cli_int("bench", "rounds", optarg, 1, 1000, &o.rounds))
                return 2;
            break;
        case O_ONLY:
            o.figures = (strstr(optarg, "train256") ? 1u : 0) |
                        (strstr(optarg, "train900") ? 2u : 0) | (strstr(optarg, "infer") ? 4u : 0);
            if (!o.figures)
                return ms_cli_usage_error("bench", "--only wants train256, train900, infer");
            break;
        case O_PREC: {
            o.precs = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                int p = !strcmp(tok, "fp32") ? P_FP32 : !strcmp(tok, "bf16") ? P_BF16 : -1;
                if (p < 0)
                    return ms_cli_usage_error("bench", "--precision wants fp32, bf16 or "
                                                       "fp32,bf16, not '%s'", optarg);
                o.precs |= 1u << p;
            }
            if (!o.precs)
                return ms_cli_usage_error("bench", "--precision wants fp32, bf16 or fp32,bf16");
            break;
        }
        case O_INFER:
            if (ms_cli_parse_size(optarg, &o.iw, &o.ih, &c, 3))
                return ms_cli_usage_error("bench", "--infer wants WxH, not '%s'", optarg);
            break;
        default: return ms_cli_usage_error("bench", "unknown option");
        }
    }
    if (optind < argc)
        return ms_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    if (o.threads < 1 || o.steps < 1 || o.warmup < 0 || o.rounds < 1)
        return ms_cli_usage_error("bench", "--threads, --steps and --rounds must be >= 1, "
                                           "--warmup >= 0");
    char paper[4096];
    ms_config_t *cfg = NULL;
    ms_status_t st = MS_OK;
    if (!cli.config_path) {
        st = ms_install_data(paper, sizeof paper, "configs/paper.ini");
        cli.config_path = paper;
    }
    if (st == MS_OK)
        st = ms_cli_config(&cli, &cfg);
    if (st == MS_OK)
        st = bench(&o, cfg);
    ms_config_free(cfg);
    return st == MS_OK ? 0 : ms_cli_fail("bench", st);
}

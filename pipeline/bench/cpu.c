/* milscreen bench --cpu: the paper's network on the oneDNN CPU backend: training images/s
 * (256x256 batch 4 and 900x900 batch 1: forward, loss, backward, Adam), inference images/s
 * (1000x1200), each layer's forward and backward time and GFLOP/s; with --vs-pytorch,
 * tools/bench-pytorch --cpu in the same invocation and the ratios. Checked against the
 * reference backend before anything is timed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/net.h"
#include "engine/rng.h"
#include "ms_build_config.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void help(void)
{
    printf(
        "usage: milscreen bench --cpu [--vs-pytorch] [options]\n\n"
        "The paper's network (configs/paper.ini: 3 channels, 12 classes) on the oneDNN CPU\n"
        "backend: training images/s at 256x256 batch 4 and 900x900 batch 1 (forward, loss,\n"
        "backward, Adam), inference images/s at 1000x1200 batch 1, and each layer's forward\n"
        "and backward time and GFLOP/s (in each training run). The backend is first checked\n"
        "against the reference on a small input; each figure is the median of --steps timed\n"
        "steps after --warmup untimed ones.\n\n"
        "  --vs-pytorch      also run tools/bench-pytorch --cpu now (same threads, steps) and\n"
        "                    print the ratios\n"
        "  --threads N       OpenMP threads (default: the online CPUs)\n"
        "  --steps N         timed steps per figure (default 5)\n"
        "  --warmup N        untimed steps first (default 1)\n"
        "  --only LIST       a subset of train256,train900,infer (default: all three)\n"
        "  --rounds N        repeat everything N times, alternating with PyTorch, and compare\n"
        "                    each side's best round (default 1; use 3 on a shared machine)\n"
        "  --infer WxH       inference input (default 1000x1200)\n"
        "  --no-layers       skip the per-layer table\n"
        "  --config FILE     the network (default: configs/paper.ini of the source tree)\n"
        "  --set sec.key=val override a config entry\n");
}

typedef struct {
    int vs_pytorch, threads, steps, warmup, layers, iw, ih, rounds;
    unsigned figures; /* bit 0: train 256x256 b4, 1: train 900x900 b1, 2: inference */
} opts_t;

typedef struct {
    const char *what;  /* "train" or "infer" */
    int w, h, n;
    double med_s, ips, gflops; /* median step, images/s, achieved GFLOP/s */
    double min_s;              /* fastest step: less disturbed by other load on the machine */
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

/* One forward of the backend and of the reference on the same small input and weights:
 * instance maps, MIL output and head within 1e-4 of the largest value (float against float
 * with different summation orders; tests/test_cpu_backend.c measures ~1e-6). */
static ms_status_t check_backend(const ms_spec_t *spec, ms_backend_t *be)
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
        double scale = 0, err = 0;
        for (size_t i = 0; i < n; i++) {
            scale = fmax(scale, fabs(buf[1][i]));
            double e = fabs((double)buf[0][i] - buf[1][i]);
            err = isnan(e) ? INFINITY : fmax(err, e);
        }
        if (!(err <= 1e-4 * fmax(scale, 1e-30)))
            MS_FAIL(MS_EINTERNAL, "check failed: %s differ from the reference by %.3g (scale "
                    "%.3g); not timing a wrong result", names[o], err, scale);
        printf("check: %-16s matches the reference (error %.2g of %.2g)\n", names[o], err,
               scale);
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

static void print_layers(const ms_plan_t *pl, const double *lf, const double *lb)
{
    printf("\nper layer, training %dx%d batch %d (median of the timed steps):\n", pl->w, pl->h,
           pl->n);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", pl->w, pl->h);
    printf("  %-8s %-8s %-16s %10s %9s %10s %9s %6s\n", "layer", "kind", "output", "fwd ms",
           "GFLOP/s", "bwd ms", "GFLOP/s", "share");
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
        char gf[16] = "", gb[16] = "";
        if (fl > 0) {
            snprintf(gf, sizeof gf, "%.1f", fl / lf[l]);
            snprintf(gb, sizeof gb, "%.1f", 2 * fl / lb[l]);
        }
        printf("  %-8s %-8s %-16s %10.2f %9s %10.2f %9s %5.1f%%\n", L->spec->name,
               ms_layer_kind_name(L->spec->kind), out, 1e3 * lf[l], gf, 1e3 * lb[l], gb,
               100 * (lf[l] + lb[l]) / tot);
        printf("milscreen-layer size=%s batch=%d name=%s kind=%s fwd_ms=%.3f bwd_ms=%.3f "
               "gflop=%.3f\n", size, pl->n, L->spec->name, ms_layer_kind_name(L->spec->kind),
               1e3 * lf[l], 1e3 * lb[l], fl);
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

/* Runs the PyTorch twin with the same threads and steps; fills torch[i].ips for the
 * figures it reports. Returns 0, or -1 when it could not run. */
static int run_pytorch(const opts_t *o, const figure_t *fig, int nfig, double *torch_ips,
                       double *torch_min_s)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s/tools/bench-pytorch' --cpu --threads %d --steps %d --warmup %d --infer %dx%d "
             "--only %s%s%s 2>&1",
             MS_SOURCE_DIR, o->threads, o->steps, o->warmup, o->iw, o->ih,
             o->figures & 1 ? "train256," : "", o->figures & 2 ? "train900," : "",
             o->figures & 4 ? "infer" : "");
    printf("\n== PyTorch: %s\n", cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[2048];
    for (int i = 0; i < nfig; i++)
        torch_ips[i] = torch_min_s[i] = NAN;
    while (fgets(line, sizeof line, f)) {
        fputs("  | ", stdout);
        fputs(line, stdout);
        if (strncmp(line, "pytorch-cpu ", 12))
            continue;
        for (int i = 0; i < nfig; i++) {
            char size[32], batch[16];
            snprintf(size, sizeof size, "%dx%d", fig[i].w, fig[i].h);
            snprintf(batch, sizeof batch, "%d", fig[i].n);
            if (token_is(line, "what", fig[i].what) && token_is(line, "size", size) &&
                token_is(line, "batch", batch))
                torch_ips[i] = token_value(line, "img_s"),
                torch_min_s[i] = token_value(line, "min_s");
        }
    }
    int rc = pclose(f);
    if (rc != 0)
        fprintf(stderr, "milscreen bench: tools/bench-pytorch exited with status %d\n", rc);
    return rc != 0 ? -1 : 0;
}

/* ---- the command ------------------------------------------------------------------------ */

static ms_status_t bench(const opts_t *o, ms_config_t *cfg)
{
    ms_status_t st = MS_OK;
    ms_spec_t spec = {0};
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    double *lf = NULL, *lb = NULL;
    figure_t fig[3] = {{0}};
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_backend_cpu(&be, o->threads, NULL));
    char desc[512], rev[64] = "unknown";
    be->describe(be, desc, sizeof desc);
    FILE *g = popen("git -C '" MS_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null", "r");
    if (g) {
        if (fgets(rev, sizeof rev, g))
            rev[strcspn(rev, "\n")] = 0;
        pclose(g);
    }
    printf("milscreen bench --cpu: %s\n", desc);
    printf("network: %d channels, %d classes, %zu parameters; git %s; %d timed steps after "
           "%d warm-up (median)\n",
           spec.channels, spec.classes, ms_spec_nparams(&spec), rev, o->steps, o->warmup);
    printf("milscreen-machine backend=\"%s\" threads=%d git=%s\n", desc, o->threads, rev);
    MS_TRY(check_backend(&spec, be));
    MS_ALLOC(lf, spec.nlayers, "layer timings");
    MS_ALLOC(lb, spec.nlayers, "layer timings");
    static const int runs[3][4] = {{256, 256, 4, 1}, {900, 900, 1, 1}, {0, 0, 1, 0}};
    /* best[r]: the round with the fastest median; tbest[r]: PyTorch's, likewise */
    figure_t best[3] = {{0}};
    double tbest[3] = {NAN, NAN, NAN}, tbest_min[3] = {NAN, NAN, NAN};
    for (int round = 0; round < o->rounds; round++) {
        if (o->rounds > 1)
            printf("\n== round %d of %d\n", round + 1, o->rounds);
        MS_TRY(ms_net_create(&net, &spec, be, MS_F32, 1));
        printf("\n  %-6s %-10s %5s %10s %10s %10s %10s\n", "", "input", "batch", "median s",
               "images/s", "GFLOP/s", "fastest s");
        for (int r = 0; r < 3; r++) {
            if (!(o->figures & (1 << r)))
                continue;
            int w = runs[r][0] ? runs[r][0] : o->iw, h = runs[r][1] ? runs[r][1] : o->ih;
            int train = runs[r][3];
            MS_TRY(time_run(net, runs[r][2], h, w, train, o, &fig[r], lf, lb));
            printf("  %-6s %4dx%-5d %5d %10.3f %10.2f %10.1f %10.3f\n", fig[r].what, w, h,
                   fig[r].n, fig[r].med_s, fig[r].ips, fig[r].gflops, fig[r].min_s);
            printf("milscreen-cpu what=%s size=%dx%d batch=%d img_s=%.3f median_s=%.4f "
                   "min_s=%.4f gflop_s=%.1f steps=%d threads=%d round=%d\n",
                   fig[r].what, w, h, fig[r].n, fig[r].ips, fig[r].med_s, fig[r].min_s,
                   fig[r].gflops, o->steps, o->threads, round + 1);
            fflush(stdout);
            if (train && o->layers && round == 0)
                print_layers(ms_net_current_plan(net), lf, lb);
            if (round == 0 || fig[r].ips > best[r].ips)
                best[r] = fig[r];
        }
        /* free the big plans before PyTorch runs beside us */
        ms_net_free(net);
        net = NULL;
        if (o->vs_pytorch) {
            double tips[3], tmin[3];
            if (run_pytorch(o, fig, 3, tips, tmin))
                MS_FAIL(MS_EIO, "tools/bench-pytorch --cpu failed (see its output above)");
            for (int r = 0; r < 3; r++)
                if (isnan(tbest[r]) || tips[r] > tbest[r])
                    tbest[r] = tips[r], tbest_min[r] = tmin[r];
        }
    }
    if (o->vs_pytorch) {
        printf("\n== milscreen / PyTorch (same invocation, same machine, same threads; >1: "
               "milscreen faster)%s\n",
               o->rounds > 1 ? "\n   each side's best round (alternating rounds filter out "
                               "other load on the machine)" : "");
        for (int r = 0; r < 3; r++) {
            if (!(o->figures & (1 << r)))
                continue;
            double ratio = best[r].ips / tbest[r], rmin = tbest_min[r] / best[r].min_s;
            printf("  %-6s %4dx%-5d batch %d: milscreen %8.2f img/s, PyTorch %8.2f img/s: "
                   "%5.2fx (fastest steps: %5.2fx)\n",
                   best[r].what, best[r].w, best[r].h, best[r].n, best[r].ips, tbest[r], ratio,
                   rmin);
            printf("milscreen-vs-pytorch-cpu what=%s size=%dx%d batch=%d milscreen_img_s=%.3f "
                   "pytorch_img_s=%.3f ratio=%.3f ratio_fastest=%.3f rounds=%d\n",
                   best[r].what, best[r].w, best[r].h, best[r].n, best[r].ips, tbest[r], ratio,
                   rmin, o->rounds);
        }
        printf("  target (issue 3): >= 1.5x for training and for inference\n");
    }
done:
    free(lf), free(lb);
    ms_net_free(net);
    ms_backend_close(be);
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
        O_ONLY
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
        {0, 0, 0, 0}};
    ms_cli_t cli = {.cmd = "bench"};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    opts_t o = {.threads = ncpu > 0 ? (int)ncpu : 1, .steps = 5, .warmup = 1, .layers = 1,
                .iw = 1000, .ih = 1200, .rounds = 1, .figures = 7};
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
    if (!cli.config_path)
        cli.config_path = MS_SOURCE_DIR "/configs/paper.ini";
    ms_config_t *cfg = NULL;
    ms_status_t st = ms_cli_config(&cli, &cfg);
    if (st == MS_OK)
        st = bench(&o, cfg);
    ms_config_free(cfg);
    return st == MS_OK ? 0 : ms_cli_fail("bench", st);
}

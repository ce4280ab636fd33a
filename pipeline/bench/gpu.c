/* milscreen bench --gpu: the paper's network on the CUDA backend in fp32, TF32 and bf16:
 * training images/s (900x900 crops, batch 16), inference images/s (1000x1200), peak device
 * memory and per-layer times; with --vs-pytorch, tools/bench-pytorch --gpu in the same
 * invocation and the ratios. Every precision is checked against the reference first. */
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
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/version.h"

#if MS_HAVE_CUDA
#include "engine/cuda/cuda.h" /* the plugin's extras: no CUDA header or library needed here */
#endif

/* The bf16 dense tensor rate measured on the lent H200 (DESIGN.md §6): the ceiling that
 * "fraction of peak" refers to, whatever the precision. */
#define H200_BF16_TFLOPS 790.0

static void help(void)
{
    printf(
        "usage: milscreen bench --gpu [--vs-pytorch] [options]\n\n"
        "The paper's network (configs/paper.ini: 3 channels, 12 classes) on the CUDA backend:\n"
        "training images/s at 900x900 crops with batch 16 (forward, loss, backward, Adam),\n"
        "inference images/s at 1000x1200, peak device memory, per-layer forward and backward\n"
        "times, in fp32, TF32 and bf16. Each precision is checked against the reference\n"
        "backend on a small input before it is timed.\n\n"
        "  --vs-pytorch        also run tools/bench-pytorch --gpu now and print the ratios\n"
        "  --pytorch-modes L   PyTorch's modes for --vs-pytorch, a subset of fp32,tf32,\n"
        "                      bf16_cl,bf16_compile (default: all four)\n"
        "  --precision LIST    comma-separated subset of fp32,tf32,bf16 (default: all three)\n"
        "  --device N          CUDA device (default 0)\n"
        "  --batch N           training batch (default 16)\n"
        "  --crop N            training crop side (default 900)\n"
        "  --infer WxH         inference input (default 1000x1200)\n"
        "  --infer-batch N     inference batch (default 16)\n"
        "  --steps N           timed steps per measurement (default 20; the median is shown)\n"
        "  --warmup N          untimed steps first (default 3)\n"
        "  --no-layers         skip the per-layer table\n"
        "  --config FILE       the network (default: configs/paper.ini of the install,\n"
        "                      share/milscreen/configs beside bin/milscreen)\n"
        "  --set sec.key=val   override a config entry\n");
}

#if !MS_HAVE_CUDA

int ms_bench_gpu(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help();
            return 0;
        }
    fprintf(stderr, "milscreen bench: error: --gpu needs the CUDA backend, and this milscreen "
                    "was built without CUDA/cuDNN\n");
    return 1;
}

#else

typedef struct {
    const char *precisions;
    const char *pytorch_modes; /* NULL: tools/bench-pytorch's default */
    int device, batch, crop, iw, ih, ibatch, steps, warmup, layers, vs_pytorch;
} bench_opts_t;

typedef struct {
    char prec[8];
    double train_ips, infer_ips;   /* images per second, median step */
    double train_peak_mib;         /* the backend's peak allocation during training */
    double infer_peak_mib;
    double device_used_mib;        /* cudaMemGetInfo: everything on the device, context too */
} bench_result_t;

/* configs/ and tools/: MILSCREEN_SOURCE_DIR, else the binary's own data folder
 * (engine/install.h: share/milscreen of an install or of a build tree), else the current
 * directory. */
static const char *source_dir(void)
{
    static char dir[4096];
    const char *env = getenv("MILSCREEN_SOURCE_DIR");
    if (env)
        return env;
    return ms_install_data(dir, sizeof dir, "") == MS_OK ? dir : ".";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill_input(float *x, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f * ms_uniform(key, i) - 1.0f;
}

static void fill_targets(float *t, int n, int k)
{
    memset(t, 0, sizeof *t * (size_t)n * k);
    for (int i = 0; i < n; i++)
        t[(size_t)i * k + i % k] = 1;
}

/* The MIL output on a small input, against the reference backend: a benchmark of a wrong
 * result is worthless. Tolerance: the test suite's (fp32 1e-5, tf32 5e-3, bf16 1e-2), on the
 * relative L2 error. */
static ms_status_t check_against_ref(const ms_spec_t *spec, ms_backend_t *gpu, const char *prec)
{
    ms_status_t st = MS_OK;
    ms_backend_t *ref = NULL;
    ms_net_t *a = NULL, *b = NULL;
    float *x = NULL, *t = NULL, *pa = NULL, *pb = NULL, *params = NULL;
    const int n = 2, h = 96, w = 80, K = spec->classes;
    size_t nx = (size_t)n * spec->channels * h * w;
    double la = 0, lb = 0;
    MS_TRY(ms_backend_ref(&ref));
    MS_TRY(ms_net_create(&a, spec, ref, MS_F32, 3));
    MS_TRY(ms_net_create(&b, spec, gpu, MS_F32, 3));
    MS_ALLOC(params, ms_net_nparams(a), "parameters");
    MS_TRY(ms_net_read(a, ms_net_params(a), params));
    MS_TRY(ms_net_write(b, ms_net_params(b), params));
    MS_ALLOC(x, nx, "input");
    MS_ALLOC(t, (size_t)n * K, "targets");
    MS_ALLOC(pa, (size_t)n * K, "output");
    MS_ALLOC(pb, (size_t)n * K, "output");
    fill_input(x, nx, 77);
    fill_targets(t, n, K);
    MS_TRY(ms_net_plan(a, n, h, w, 0));
    MS_TRY(ms_net_plan(b, n, h, w, 0));
    MS_TRY(ms_net_forward(a, x, NULL));
    MS_TRY(ms_net_forward(b, x, NULL));
    MS_TRY(ms_net_loss(a, t, &la));
    MS_TRY(ms_net_loss(b, t, &lb));
    MS_TRY(ms_net_output(a, MS_OUT_MIL, pa));
    MS_TRY(ms_net_output(b, MS_OUT_MIL, pb));
    double d = 0, r = 0;
    for (int i = 0; i < n * K; i++) {
        d += ((double)pb[i] - pa[i]) * ((double)pb[i] - pa[i]);
        r += (double)pa[i] * pa[i];
    }
    double err = sqrt(d / (r > 0 ? r : 1)), tol = !strcmp(prec, "fp32") ? 1e-5
                                                  : !strcmp(prec, "tf32") ? 5e-3 : 1e-2;
    printf("  check against the reference (%dx%dx%d, batch %d): MIL output rel. error %.1e, "
           "loss %.6f vs %.6f\n", spec->channels, h, w, n, err, lb, la);
    if (!(err <= tol) || !(fabs(lb - la) <= tol * fabs(la)))
        MS_FAIL(MS_EINTERNAL, "%s: the CUDA backend disagrees with the reference (MIL output "
                "relative error %.2e, tolerance %.0e; loss %.8g vs %.8g): not benchmarking a "
                "wrong result", prec, err, tol, lb, la);
done:
    ms_net_free(a);
    ms_net_free(b);
    ms_backend_close(ref);
    free(x), free(t), free(pa), free(pb), free(params);
    return st;
}

static ms_status_t train_step(ms_net_t *net, const float *x, const float *t, long step,
                              const ms_adam_t *hp)
{
    ms_status_t st = MS_OK;
    ms_pass_t pass = {.seed = 1, .step = (uint64_t)step};
    double loss;
    MS_TRY(ms_net_forward(net, x, &pass));
    MS_TRY(ms_net_loss(net, t, &loss));
    MS_TRY(ms_net_backward(net, &pass, 0));
    MS_TRY(ms_net_adam(net, hp));
    MS_TRY(ms_net_backend(net)->sync(ms_net_backend(net)));
    if (!isfinite(loss))
        MS_FAIL(MS_EINTERNAL, "the training loss is %g at step %ld", loss, step);
done:
    return st;
}

/* The same step with the input already on the device (uploaded once), as PyTorch's figure is
 * measured: the layer loop of ms_net_forward/backward/adam driven through the backend. */
static ms_status_t resident_step(ms_net_t *net, const float *t, long step, const ms_adam_t *hp,
                                 int train)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = ms_net_backend(net);
    ms_plan_t *pl = (ms_plan_t *)ms_net_current_plan(net);
    const ms_spec_t *sp = ms_net_spec(net);
    const size_t np = ms_net_nparams(net);
    ms_pass_t pass = {.seed = 1, .step = (uint64_t)step};
    double loss = 0;
    float P[4096]; /* the bag probabilities of a batch (N x K) */
    for (int l = 0; l < sp->nlayers; l++)
        MS_TRY(be->forward(be, pl, l, ms_net_params(net), train ? &pass : NULL));
    if (!train) { /* as score: the bag probabilities back on the host */
        if ((size_t)pl->n * sp->classes <= sizeof P / sizeof *P)
            MS_TRY(be->get_output(be, pl, MS_OUT_MIL, P));
        MS_TRY(be->sync(be));
        goto done;
    }
    MS_TRY(be->loss(be, pl, t, &loss));
    MS_TRY(be->zero(be, ms_net_grads(net), np * sizeof(float)));
    for (int l = sp->nlayers - 1; l >= 0; l--)
        MS_TRY(be->backward(be, pl, l, ms_net_params(net), ms_net_grads(net),
                            MS_BWD_WEIGHTS | (l > 0 ? MS_BWD_DATA : 0), &pass));
    MS_TRY(be->adam(be, ms_net_params(net), ms_net_grads(net), ms_net_adam_m(net),
                    ms_net_adam_v(net), np, hp, step, MS_F32));
    {
        const ms_layer_t *M = &pl->layers[sp->mil];
        if (M->spec->pool == MS_MIL_NOISY_AND && M->nb)
            MS_TRY(be->clamp(be, (float *)ms_net_params(net) + M->b_off, M->nb, 0.0, 1.0,
                             MS_F32));
    }
    MS_TRY(be->sync(be));
    if (!isfinite(loss))
        MS_FAIL(MS_EINTERNAL, "the training loss is %g at step %ld", loss, step);
done:
    return st;
}

/* Median seconds of `steps` calls after `warmup`: resident (input uploaded once before) or
 * through ms_net with the upload from (pinned) host memory in every step. */
static ms_status_t time_steps(ms_net_t *net, const float *x, const float *t, int train,
                              int resident, const bench_opts_t *o, long *step, double *times,
                              double *med)
{
    ms_status_t st = MS_OK;
    const ms_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
    ms_backend_t *be = ms_net_backend(net);
    float P[4096];
    if (resident)
        MS_TRY(be->set_input(be, (ms_plan_t *)ms_net_current_plan(net), x));
    for (int i = 0; i < o->warmup + o->steps; i++) {
        double s0 = now_s();
        if (resident)
            MS_TRY(resident_step(net, t, ++*step, &hp, train));
        else if (train)
            MS_TRY(train_step(net, x, t, ++*step, &hp));
        else {
            MS_TRY(ms_net_forward(net, x, NULL));
            size_t nk = (size_t)ms_net_current_plan(net)->n * ms_net_spec(net)->classes;
            if (nk <= sizeof P / sizeof *P)
                MS_TRY(ms_net_output(net, MS_OUT_MIL, P));
            MS_TRY(be->sync(be));
        }
        if (i >= o->warmup)
            times[i - o->warmup] = now_s() - s0;
    }
    *med = median(times, o->steps);
done:
    return st;
}

/* Per-layer forward and backward times of the current (training) plan: each layer run alone
 * and waited for, the median of `reps`. */
static ms_status_t layer_table(ms_net_t *net, const float *x, const float *t, int reps,
                               double train_ips)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = ms_net_backend(net);
    ms_plan_t *pl = (ms_plan_t *)ms_net_current_plan(net);
    const ms_spec_t *sp = ms_net_spec(net);
    const int nl = sp->nlayers;
    double *f = NULL, *b = NULL, *tmp = NULL, loss;
    ms_pass_t pass = {.seed = 1, .step = 1};
    MS_ALLOC(f, (size_t)nl * reps, "timings");
    MS_ALLOC(b, (size_t)nl * reps, "timings");
    MS_ALLOC(tmp, reps, "timings");
    for (int r = 0; r < reps; r++) {
        MS_TRY(be->set_input(be, pl, x));
        for (int l = 0; l < nl; l++) {
            MS_TRY(be->sync(be));
            double t0 = now_s();
            MS_TRY(be->forward(be, pl, l, ms_net_params(net), &pass));
            MS_TRY(be->sync(be));
            f[(size_t)l * reps + r] = now_s() - t0;
        }
        MS_TRY(be->loss(be, pl, t, &loss));
        MS_TRY(be->zero(be, ms_net_grads(net), ms_net_nparams(net) * sizeof(float)));
        for (int l = nl - 1; l >= 0; l--) {
            int flags = MS_BWD_WEIGHTS | (l > 0 ? MS_BWD_DATA : 0);
            MS_TRY(be->sync(be));
            double t0 = now_s();
            MS_TRY(be->backward(be, pl, l, ms_net_params(net), ms_net_grads(net), flags, &pass));
            MS_TRY(be->sync(be));
            b[(size_t)l * reps + r] = now_s() - t0;
        }
    }
    printf("\n  per layer (batch %d, %dx%d, median of %d; each layer waited for alone, so the\n"
           "  sum exceeds the step time by the launch gaps):\n", pl->n, pl->h, pl->w, reps);
    printf("  %-8s %-10s %-18s %9s %9s %9s %9s %9s  %s\n", "layer", "type", "output CxHxW",
           "GFLOP/img", "fwd ms", "bwd ms", "fwd TF/s", "bwd TF/s", "cuDNN algorithms");
    double sf = 0, sb = 0, flops = 0;
    for (int l = 0; l < nl; l++) {
        const ms_layer_t *L = &pl->layers[l];
        memcpy(tmp, f + (size_t)l * reps, sizeof *tmp * reps);
        double tf = median(tmp, reps);
        memcpy(tmp, b + (size_t)l * reps, sizeof *tmp * reps);
        double tb = median(tmp, reps);
        char shape[40];
        snprintf(shape, sizeof shape, "%dx%dx%d", L->oc, L->oh, L->ow);
        double fl = L->flops * pl->n;
        /* backward of a convolution is two convolutions of the forward's cost (data and
         * filter); the first layer's data gradient is not computed */
        double flb = L->spec->kind == MS_LAYER_CONV ? (l > 0 ? 2 : 1) * fl : 0;
        char algos[128];
        ms_cuda_conv_algos(be, pl, l, algos, sizeof algos);
        printf("  %-8s %-10s %-18s %9.2f %9.3f %9.3f %9.1f %9.1f  %s\n", L->spec->name,
               ms_layer_kind_name(L->spec->kind), shape, L->flops / 1e9, tf * 1e3, tb * 1e3,
               fl > 0 ? fl / tf / 1e12 : 0.0, flb > 0 ? flb / tb / 1e12 : 0.0, algos);
        sf += tf;
        sb += tb;
        flops += L->flops;
    }
    printf("  %-8s %-10s %-18s %9.2f %9.3f %9.3f\n", "total", "", "", flops / 1e9, sf * 1e3,
           sb * 1e3);
    double achieved = train_ips * 3 * flops / 1e12;
    printf("  training arithmetic: %.0f GFLOP per image (3x forward) x %.1f images/s = %.1f "
           "TFLOP/s, %.1f%% of the %.0f TFLOP/s bf16 dense rate (DESIGN.md §6)\n",
           3 * flops / 1e9, train_ips, achieved, 100 * achieved / H200_BF16_TFLOPS,
           H200_BF16_TFLOPS);
done:
    free(f), free(b), free(tmp);
    return st;
}

static double device_used_mib(int device)
{
    size_t fr = 0, tot = 0;
    if (ms_cuda_device_memory(device, &fr, &tot) != MS_OK)
        return NAN;
    return (double)(tot - fr) / 1048576.0;
}

static ms_status_t bench_precision(const ms_spec_t *spec, const bench_opts_t *o,
                                   const char *prec, bench_result_t *res)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    float *x = NULL, *t = NULL;
    double *times = NULL;
    ms_cuda_memory_t mem;
    char line[1024];
    const int C = spec->channels, K = spec->classes;
    memset(res, 0, sizeof *res);
    snprintf(res->prec, sizeof res->prec, "%s", prec);
    MS_TRY(ms_backend_cuda(&be, o->device, prec));
    be->describe(be, line, sizeof line);
    printf("\n== %s: %s\n", prec, line);
    MS_TRY(check_against_ref(spec, be, prec));
    MS_ALLOC(times, o->steps, "timings");

    /* training */
    MS_TRY(ms_net_create(&net, spec, be, MS_F32, 1));
    size_t nx = (size_t)o->batch * C * o->crop * o->crop;
    size_t nxi = (size_t)o->ibatch * C * o->ih * o->iw, nmax = nx > nxi ? nx : nxi;
    /* pinned, as a loader handing batches to the GPU should use */
    MS_TRY(ms_cuda_host_alloc((void **)&x, nmax * sizeof(float)));
    MS_ALLOC(t, (size_t)(o->batch > o->ibatch ? o->batch : o->ibatch) * K, "targets");
    fill_input(x, nmax, 5);
    fill_targets(t, o->batch, K);
    ms_cuda_memory_reset_peak(be);
    double t0 = now_s(), tm, tu;
    MS_TRY(ms_net_plan(net, o->batch, o->crop, o->crop, 1));
    printf("  training plan (algorithm search included): %.2f s\n", now_s() - t0);
    long step = 0;
    MS_TRY(time_steps(net, x, t, 1, 1, o, &step, times, &tm));
    MS_TRY(time_steps(net, x, t, 1, 0, o, &step, times, &tu));
    res->train_ips = o->batch / tm;
    MS_TRY(ms_cuda_memory(be, &mem));
    res->train_peak_mib = mem.peak / 1048576.0;
    res->device_used_mib = device_used_mib(o->device);
    printf("  training %dx%d batch %d: %.1f images/s (median step %.2f ms of %d, input on the "
           "device as PyTorch's figure); %.1f images/s (%.2f ms) uploading each batch from "
           "pinned host memory\n", o->crop, o->crop, o->batch, res->train_ips, tm * 1e3,
           o->steps, o->batch / tu, tu * 1e3);
    printf("  peak memory: %.0f MiB allocated by milscreen (arena %.0f MiB, of which workspace "
           "%.0f MiB); %.0f MiB in use on the device (CUDA context and cuDNN included)\n",
           res->train_peak_mib, mem.arena / 1048576.0, mem.workspace / 1048576.0,
           res->device_used_mib);
    if (o->layers)
        MS_TRY(layer_table(net, x, t, o->steps < 5 ? 5 : o->steps / 2, res->train_ips));

    /* inference: forward and the MIL output, as `score` runs it */
    ms_cuda_memory_reset_peak(be);
    MS_TRY(ms_net_plan(net, o->ibatch, o->ih, o->iw, 0));
    MS_TRY(time_steps(net, x, t, 0, 1, o, &step, times, &tm));
    MS_TRY(time_steps(net, x, t, 0, 0, o, &step, times, &tu));
    res->infer_ips = o->ibatch / tm;
    MS_TRY(ms_cuda_memory(be, &mem));
    res->infer_peak_mib = mem.peak / 1048576.0;
    printf("  inference %dx%d batch %d: %.1f images/s (median %.2f ms, input on the device); "
           "%.1f images/s (%.2f ms) with the upload; peak %.0f MiB\n", o->iw, o->ih, o->ibatch,
           res->infer_ips, tm * 1e3, o->ibatch / tu, tu * 1e3, res->infer_peak_mib);
    /* machine-readable, one line per precision */
    printf("milscreen-gpu precision=%s train_img_s=%.2f train_upload_img_s=%.2f "
           "infer_img_s=%.2f train_peak_mib=%.0f infer_peak_mib=%.0f device_used_mib=%.0f "
           "batch=%d crop=%d infer=%dx%d infer_batch=%d\n", prec, res->train_ips,
           o->batch / tu, res->infer_ips, res->train_peak_mib, res->infer_peak_mib,
           res->device_used_mib, o->batch, o->crop, o->iw, o->ih, o->ibatch);
done:
    ms_net_free(net);
    ms_backend_close(be);
    ms_cuda_host_free(x);
    free(t), free(times);
    return st;
}

/* ---- tools/bench-pytorch --gpu ------------------------------------------------------------
 * Its machine-readable lines (see the script's header) carry key=value tokens:
 *   pytorch-gpu mode=fp32|tf32|bf16_cl|bf16_compile train_img_s=F infer_img_s=F peak_mib=F
 * every line with a mode and a throughput is kept ("skipped=" lines have none). */

typedef struct {
    char mode[32];
    double train_ips, infer_ips, peak_mib;
} torch_result_t;

static double token_value(const char *line, const char *const *keys)
{
    for (int k = 0; keys[k]; k++) {
        size_t n = strlen(keys[k]);
        for (const char *p = line; (p = strstr(p, keys[k])); p += n)
            if ((p == line || p[-1] == ' ' || p[-1] == '\t') && p[n] == '=')
                return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static int token_string(const char *line, const char *key, char *out, size_t n)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p += kl)
        if ((p == line || p[-1] == ' ' || p[-1] == '\t') && p[kl] == '=') {
            size_t i = 0;
            p += kl + 1;
            while (p[i] && p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && i + 1 < n) {
                out[i] = p[i];
                i++;
            }
            out[i] = 0;
            return 1;
        }
    return 0;
}

static int run_pytorch(const bench_opts_t *o, torch_result_t *tr, int max)
{
    char cmd[2048];
    /* the script names Debian's /usr/bin/python3; where torch lives in another interpreter
     * (the GPU machines' image: `python3` on PATH), MILSCREEN_PYTHON names it */
    const char *py = getenv("MILSCREEN_PYTHON");
    if (snprintf(cmd, sizeof cmd,
                 "%s%s%s'%s/tools/bench-pytorch' --gpu --batch %d --crop %d --infer %dx%d "
                 "--infer-batch %d --steps %d --warmup %d%s%s 2>&1",
                 py ? "'" : "", py ? py : "", py ? "' " : "", source_dir(), o->batch, o->crop,
                 o->iw, o->ih, o->ibatch, o->steps, o->warmup,
                 o->pytorch_modes ? " --modes " : "",
                 o->pytorch_modes ? o->pytorch_modes : "") >= (int)sizeof cmd) {
        fprintf(stderr, "milscreen bench: the tools/bench-pytorch command is too long\n");
        return -1;
    }
    printf("\n== PyTorch: %s\n", cmd);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        fprintf(stderr, "milscreen bench: could not run tools/bench-pytorch\n");
        return -1;
    }
    static const char *const k_train[] = {"train_img_s", "train_ips", NULL};
    static const char *const k_infer[] = {"infer_img_s", "infer_ips", NULL};
    static const char *const k_peak[] = {"peak_mib", "train_peak_mib", "peak_memory_mib", NULL};
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        fputs("  | ", stdout);
        fputs(line, stdout);
        char mode[32];
        if (!token_string(line, "mode", mode, sizeof mode) &&
            !token_string(line, "precision", mode, sizeof mode))
            continue;
        double tr_ips = token_value(line, k_train), in_ips = token_value(line, k_infer);
        if (isnan(tr_ips) && isnan(in_ips))
            continue;
        int i = 0;
        while (i < n && strcmp(tr[i].mode, mode))
            i++;
        if (i == n) {
            if (n == max)
                continue;
            memset(&tr[n], 0, sizeof tr[n]);
            snprintf(tr[n].mode, sizeof tr[n].mode, "%s", mode);
            tr[n].train_ips = tr[n].infer_ips = tr[n].peak_mib = NAN;
            n++;
        }
        if (!isnan(tr_ips))
            tr[i].train_ips = tr_ips;
        if (!isnan(in_ips))
            tr[i].infer_ips = in_ips;
        double pk = token_value(line, k_peak);
        if (!isnan(pk))
            tr[i].peak_mib = pk;
    }
    int rc = pclose(f);
    if (rc != 0)
        fprintf(stderr, "milscreen bench: tools/bench-pytorch exited with status %d\n", rc);
    return rc != 0 && n == 0 ? -1 : n;
}

static void print_ratios(const bench_result_t *r, int nr, const torch_result_t *tr, int nt)
{
    printf("\n== milscreen / PyTorch (same run, same device; >1 means milscreen is faster or "
           "smaller)\n");
    printf("  %-10s %-14s %12s %12s %12s\n", "milscreen", "PyTorch", "train", "infer",
           "memory");
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nt; j++) {
            double a = r[i].train_ips / tr[j].train_ips, b = r[i].infer_ips / tr[j].infer_ips;
            double m = tr[j].peak_mib / r[i].train_peak_mib;
            printf("  %-10s %-14s %11.2fx %11.2fx %11.2fx\n", r[i].prec, tr[j].mode, a, b, m);
            printf("milscreen-vs-pytorch milscreen=%s pytorch=%s train_ratio=%.3f "
                   "infer_ratio=%.3f memory_ratio=%.3f\n", r[i].prec, tr[j].mode, a, b, m);
        }
    printf("  targets (issue 6): bf16 training >= 1.5x PyTorch bf16 + torch.compile; bf16 "
           "inference >= 1.5x PyTorch bf16 channels-last; training memory <= PyTorch bf16 + "
           "torch.compile's\n");
}

int ms_bench_gpu(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "bench"};
    enum { O_GPU = MS_OPT_FIRST_FREE, O_VS, O_PREC, O_DEV, O_BATCH, O_CROP, O_INFER, O_IBATCH,
           O_STEPS, O_WARMUP, O_NOLAYERS, O_TORCH_MODES };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"gpu", no_argument, 0, O_GPU},
                                         {"vs-pytorch", no_argument, 0, O_VS},
                                         {"precision", required_argument, 0, O_PREC},
                                         {"device", required_argument, 0, O_DEV},
                                         {"batch", required_argument, 0, O_BATCH},
                                         {"crop", required_argument, 0, O_CROP},
                                         {"infer", required_argument, 0, O_INFER},
                                         {"infer-batch", required_argument, 0, O_IBATCH},
                                         {"steps", required_argument, 0, O_STEPS},
                                         {"warmup", required_argument, 0, O_WARMUP},
                                         {"no-layers", no_argument, 0, O_NOLAYERS},
                                         {"pytorch-modes", required_argument, 0, O_TORCH_MODES},
                                         {0, 0, 0, 0}};
    bench_opts_t o = {.precisions = "fp32,tf32,bf16", .device = 0, .batch = 16, .crop = 900,
                      .iw = 1000, .ih = 1200, .ibatch = 16, .steps = 20, .warmup = 3,
                      .layers = 1};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r)
            continue;
        int *iv = NULL, lo = 1;
        switch (opt) {
        case MS_OPT_HELP:
            help();
            return 0;
        case O_GPU:
            break;
        case O_VS:
            o.vs_pytorch = 1;
            break;
        case O_PREC:
            o.precisions = optarg;
            break;
        case O_DEV:
            iv = &o.device, lo = 0;
            break;
        case O_BATCH:
            iv = &o.batch;
            break;
        case O_CROP:
            iv = &o.crop;
            break;
        case O_IBATCH:
            iv = &o.ibatch;
            break;
        case O_STEPS:
            iv = &o.steps;
            break;
        case O_WARMUP:
            iv = &o.warmup, lo = 0;
            break;
        case O_NOLAYERS:
            o.layers = 0;
            break;
        case O_TORCH_MODES:
            if (strspn(optarg, "abcdefghijklmnopqrstuvwxyz0123456789_,") != strlen(optarg))
                return ms_cli_usage_error("bench", "--pytorch-modes '%s': a comma-separated "
                                          "list of fp32, tf32, bf16_cl, bf16_compile", optarg);
            o.pytorch_modes = optarg;
            break;
        case O_INFER: {
            int c = 0;
            if (ms_cli_parse_size(optarg, &o.iw, &o.ih, &c, 0) != 0)
                return ms_cli_usage_error("bench", "--infer '%s': expected WxH", optarg);
            break;
        }
        default:
            return ms_cli_usage_error("bench", "unknown option");
        }
        if (iv && ms_cli_int("bench", ms_cli_opt_name(opts, opt), optarg, lo, 1000000, iv))
            return 2;
    }
    if (optind < argc)
        return ms_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);

    int ndev = 0;
    if (ms_cuda_device_count(&ndev) != MS_OK) {
        fprintf(stderr, "milscreen bench: error: --gpu needs a CUDA device: %s\n",
                ms_error_message());
        return 1;
    }
    if (o.device >= ndev)
        return ms_cli_usage_error("bench", "--device %d: this node has %d GPU(s)", o.device,
                                  ndev);

    ms_status_t st = MS_OK;
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    bench_result_t res[3];
    int nres = 0;
    char paper[4200];
    if (snprintf(paper, sizeof paper, "%s/configs/paper.ini", source_dir()) >= (int)sizeof paper)
        MS_FAIL(MS_EARG, "the default config's path is too long: %s/configs", source_dir());
    if (!cli.config_path)
        cli.config_path = paper;
    MS_TRY(ms_cli_config(&cli, &cfg));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    {
        printf("milscreen %s (git %s) bench --gpu: %s, %d channels, %d classes\n"
               "  CUDA plugin %s\n", MS_VERSION, ms_version_revision(), cli.config_path,
               spec.channels, spec.classes, ms_cuda_plugin_status());
    }
    char list[64];
    snprintf(list, sizeof list, "%s", o.precisions);
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (strcmp(p, "fp32") && strcmp(p, "tf32") && strcmp(p, "bf16"))
            MS_FAIL(MS_EARG, "--precision: '%s' is not one of fp32, tf32, bf16", p);
        if (nres == 3)
            MS_FAIL(MS_EARG, "--precision: at most three entries");
        MS_TRY(bench_precision(&spec, &o, p, &res[nres]));
        nres++;
    }
    if (o.vs_pytorch) {
        torch_result_t tr[8];
        int nt = run_pytorch(&o, tr, 8);
        if (nt <= 0)
            MS_FAIL(MS_EIO, "tools/bench-pytorch --gpu gave no figures (see its output above)");
        print_ratios(res, nres, tr, nt);
    }
done:
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return st ? ms_cli_fail("bench", st) : 0;
}

#endif

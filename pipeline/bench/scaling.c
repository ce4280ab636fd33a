/* milscreen bench --scaling: what data-parallel training costs on this machine. Each rank runs
 * the training step of the paper's network on its part of the global batch and the gradient
 * all-reduce through the same interface as `train` (pipeline/dist/allreduce.h); the step's
 * compute time and its all-reduce time are measured apart, then the all-reduce of the whole
 * gradient buffer (484,476 floats, 1.9 MB, for the paper's network) alone, many times, with
 * its algorithm and bus bandwidth as NVIDIA's nccl-tests report them. Run once as one rank and
 * once under `mpirun -np 2`: docs/PERFORMANCE.md ("Scaling") projects GPU nodes from it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/net.h"
#include "engine/rng.h"
#include "ms_build_config.h"
#include "engine/install.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/version.h"
#include "pipeline/dist/allreduce.h"
#include "pipeline/dist/dist.h"

static void help(void)
{
    printf(
        "usage: milscreen bench --scaling [options]\n"
        "       mpirun -np 2 milscreen bench --scaling [options]\n\n"
        "Each rank trains the paper's network (configs/paper.ini) on its part of the global\n"
        "batch and all-reduces the gradients as `train` does (MPI_Allreduce on CPU ranks, NCCL\n"
        "on GPU ranks): the median step compute time (forward, loss, backward, Adam) and the\n"
        "all-reduce time of the step are printed apart, then the all-reduce of the whole\n"
        "gradient buffer alone (--reps times: median, fastest, algbw = bytes / time and busbw =\n"
        "algbw x 2(n-1)/n, as nccl-tests reports them). With one rank the all-reduce path runs\n"
        "too (the mean of one rank is itself): its time is the interface's own overhead.\n\n"
        "  --backend NAME    cpu (default), ref, cuda or auto\n"
        "  --batch N         global batch, divided among the ranks (default 4)\n"
        "  --size WxH        training input (default 256x256)\n"
        "  --threads N       threads per rank (default: the online CPUs / ranks on the node)\n"
        "  --steps N         timed training steps (default 5; the median is shown)\n"
        "  --warmup N        untimed steps first (default 1)\n"
        "  --reps N          all-reduces of the buffer alone (default 50)\n"
        "  --config FILE     the network (default: configs/paper.ini of the source tree)\n"
        "  --set sec.key=val override a config entry\n");
}

typedef struct {
    const char *backend;
    int batch, w, h, threads, steps, warmup, reps;
} opts_t;

static double now_s(void)
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

/* "model name" of /proc/cpuinfo, the 1-minute load average, the git revision. */
static void machine(char *cpu, size_t ncpu, double *load, char *rev, size_t nrev)
{
    snprintf(cpu, ncpu, "unknown CPU");
    snprintf(rev, nrev, "unknown");
    *load = NAN;
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(cpu, ncpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf", load) != 1)
        *load = NAN;
    if (f)
        fclose(f);
    snprintf(rev, nrev, "%s", ms_version_revision());
}

static ms_status_t run(ms_dist_t *d, const char *config, const ms_spec_t *spec,
                       const opts_t *o)
{
    ms_status_t st = MS_OK;
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    ms_allreduce_t *ar = NULL;
    float *x = NULL, *t = NULL;
    double *tc = NULL, *ta = NULL, *tr = NULL;
    const int R = d->ranks, C = spec->channels, K = spec->classes;
    if (o->batch % R)
        MS_FAIL(MS_EARG, "--batch %d does not divide among %d ranks", o->batch, R);
    const int n = o->batch / R; /* this rank's part of each batch */
    int threads = o->threads;
    if (!threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > d->local_ranks ? (int)(cores / d->local_ranks) : 1;
    }
    MS_TRY(ms_backend_open(&be, o->backend, d->local_rank, threads, "bf16"));
    MS_TRY(ms_net_create(&net, spec, be, MS_F32, 1));
    MS_TRY(ms_allreduce_open(&ar, d, net, 1));
    const size_t np = ms_net_nparams(net), bytes = np * sizeof(float);
    const size_t nx = (size_t)n * C * o->h * o->w;
    MS_ALLOC(x, nx, "input batch");
    MS_ALLOC(t, (size_t)n * K, "targets");
    MS_ALLOC(tc, o->steps, "timings");
    MS_ALLOC(ta, o->steps, "timings");
    MS_ALLOC(tr, o->reps, "timings");
    for (size_t i = 0; i < nx; i++) /* each rank its own images */
        x[i] = 2.0f * ms_uniform(0x5ca1e + (uint64_t)d->rank, i) - 1.0f;
    for (int i = 0; i < n; i++)
        t[(size_t)i * K + (d->rank * n + i) % K] = 1;
    MS_TRY(ms_net_plan(net, n, o->h, o->w, 1));

    char desc[1024], cpu[256], rev[64];
    double load;
    ms_backend_describe(be, desc, sizeof desc);
    machine(cpu, sizeof cpu, &load, rev, sizeof rev);
    if (d->rank == 0)
        printf("milscreen %s (git %s) bench --scaling: %s, %d parameters (%.2f MB of float "
               "gradients)\n  machine   %s, %ld CPUs online, load average %.2f at the start\n"
               "  backend   %s\n  ranks     %d (%d on this node), %d thread(s) each\n"
               "  allreduce %s\n  step      batch %d = %d rank(s) x %d, %dx%d, median of %d "
               "after %d warm-up\n",
               MS_VERSION, rev, config, (int)np, bytes / 1e6, cpu,
               sysconf(_SC_NPROCESSORS_ONLN), load, desc, R, d->local_ranks, threads,
               ms_allreduce_describe(ar), o->batch, R, n, o->w, o->h, o->steps, o->warmup);
    fflush(stdout);

    const ms_adam_t hp = {1e-4, 0.9, 0.999, 1e-8};
    double loss = 0;
    for (int i = 0; i < o->warmup + o->steps; i++) {
        ms_pass_t pass = {.seed = 1, .step = (uint64_t)i, .image0 = (uint64_t)d->rank * n};
        double t0 = now_s();
        MS_TRY(ms_net_forward(net, x, &pass));
        MS_TRY(ms_net_loss(net, t, &loss));
        MS_TRY(ms_net_backward(net, &pass, 0));
        MS_TRY(be->sync(be));
        double t1 = now_s();
        MS_TRY(ms_allreduce_wait(ar)); /* as train: the NCCL buckets started in backward */
        double t2 = now_s();
        MS_TRY(ms_net_adam(net, &hp));
        MS_TRY(be->sync(be));
        double t3 = now_s();
        if (!isfinite(loss))
            MS_FAIL(MS_EINTERNAL, "the training loss is %g at step %d", loss, i);
        if (i >= o->warmup) {
            tc[i - o->warmup] = (t1 - t0) + (t3 - t2);
            ta[i - o->warmup] = t2 - t1;
        }
    }
    /* the buffer alone: every rank enters together (a small all-reduce as a barrier), then
     * back-to-back all-reduces, each waited for, as nccl-tests times them */
    double sync[1] = {0};
    MS_TRY(ms_dist_sum(d, sync, 1));
    for (int i = 0; i < o->reps; i++) {
        double t0 = now_s();
        MS_TRY(ms_allreduce_wait(ar));
        tr[i] = now_s() - t0;
    }
    /* the mean over ranks of each rank's medians (they wait for each other every step) */
    double v[4] = {median(tc, o->steps), median(ta, o->steps), median(tr, o->reps), 0};
    qsort(tr, (size_t)o->reps, sizeof *tr, cmp_double);
    v[3] = tr[0];
    MS_TRY(ms_dist_sum(d, v, 4));
    for (int i = 0; i < 4; i++)
        v[i] /= R;
    if (d->rank == 0) {
        /* nccl-tests' definitions; with one rank nothing crosses a link: no bandwidth */
        double algbw = R > 1 ? bytes / v[2] / 1e9 : 0, busbw = algbw * 2.0 * (R - 1) / R;
        double share = v[1] / (v[0] + v[1]);
        printf("  compute   %.2f ms per step (forward, loss, backward, Adam)\n"
               "  allreduce %.3f ms per step (%.1f%% of the step; waiting for the slowest rank "
               "included)\n            the buffer alone: %.3f ms median, %.3f ms fastest of %d", v[0] * 1e3, v[1] * 1e3, 100 * share, v[2] * 1e3,
               v[3] * 1e3, o->reps);
        if (R > 1)
            printf(": algbw %.3f GB/s, busbw %.3f GB/s\n", algbw, busbw);
        else
            printf(" (one rank: the interface's own cost, nothing crosses)\n");
        printf("  images/s  %.2f over all ranks\n", o->batch / (v[0] + v[1]));
        printf("milscreen-scaling ranks=%d threads=%d backend=%s batch=%d per_rank=%d size=%dx%d "
               "compute_ms=%.3f allreduce_step_ms=%.4f allreduce_ms=%.4f allreduce_min_ms=%.4f "
               "bytes=%zu algbw_gb_s=%.3f busbw_gb_s=%.3f img_s=%.3f load=%.2f git=%s\n",
               R, threads, be->name, o->batch, n, o->w, o->h, v[0] * 1e3, v[1] * 1e3,
               v[2] * 1e3, v[3] * 1e3, bytes, algbw, busbw, o->batch / (v[0] + v[1]), load, rev);
    }
done:
    ms_allreduce_close(ar);
    ms_net_free(net);
    ms_backend_close(be);
    free(x), free(t), free(tc), free(ta), free(tr);
    return st;
}

int ms_bench_scaling(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "bench"};
    enum { O_SCALING = MS_OPT_FIRST_FREE, O_BACKEND, O_BATCH, O_SIZE, O_THREADS, O_STEPS,
           O_WARMUP, O_REPS };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"scaling", no_argument, 0, O_SCALING},
                                         {"backend", required_argument, 0, O_BACKEND},
                                         {"batch", required_argument, 0, O_BATCH},
                                         {"size", required_argument, 0, O_SIZE},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"steps", required_argument, 0, O_STEPS},
                                         {"warmup", required_argument, 0, O_WARMUP},
                                         {"reps", required_argument, 0, O_REPS},
                                         {0, 0, 0, 0}};
    opts_t o = {.backend = "cpu", .batch = 4, .w = 256, .h = 256, .threads = 0, .steps = 5,
                .warmup = 1, .reps = 50};
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
        case MS_OPT_HELP: help(); return 0;
        case O_SCALING: break;
        case O_BACKEND: o.backend = optarg; break;
        case O_BATCH: iv = &o.batch; break;
        case O_THREADS: iv = &o.threads, lo = 0; break;
        case O_STEPS: iv = &o.steps; break;
        case O_WARMUP: iv = &o.warmup, lo = 0; break;
        case O_REPS: iv = &o.reps; break;
        case O_SIZE: {
            int c = 0;
            if (ms_cli_parse_size(optarg, &o.w, &o.h, &c, 0) != 0)
                return ms_cli_usage_error("bench", "--size '%s': expected WxH", optarg);
            break;
        }
        default: return ms_cli_usage_error("bench", "unknown option");
        }
        if (iv && ms_cli_int("bench", ms_cli_opt_name(opts, opt), optarg, lo, 100000, iv))
            return 2;
    }
    if (optind < argc)
        return ms_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);

    ms_status_t st = MS_OK;
    ms_dist_t dist = {0};
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    char paper[4096];
    MS_TRY(ms_dist_open(&dist));
    if (!cli.config_path) {
        MS_TRY(ms_install_data(paper, sizeof paper, "configs/paper.ini"));
        cli.config_path = paper;
    }
    MS_TRY(ms_cli_config(&cli, &cfg));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(run(&dist, cli.config_path, &spec, &o));
done:
    ms_spec_free(&spec);
    ms_config_free(cfg);
    if (st)
        return ms_dist_fail(&dist, ms_cli_fail("bench", st));
    ms_dist_close(&dist);
    return 0;
}

/* milscreen train: trains the network of a config on plate shards with Adam; validation
 * each epoch; atomic checkpoints every N steps and at the end, the last K kept; --resume
 * continues bit for bit (dropout masks and shuffles are functions of seed, step and epoch);
 * SIGUSR1/SIGTERM/SIGINT write a checkpoint and stop cleanly so --requeue jobs resume. */
#include <math.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/net.h"
#include "io/loader.h"
#include "io/shard.h"
#include "ms_build_config.h"
#include "io/checkpoint.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/dist/allreduce.h"
#include "pipeline/dist/dist.h"
#include "pipeline/options.h"
#include "pipeline/progress.h"

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static void help(void)
{
    printf(
        "usage: milscreen train --config FILE [--set section.key=value ...] [--resume]\n"
        "                       [--run DIR] [--backend auto|cpu|cuda|ref] [--threads N]\n"
        "                       [--progress auto|lines|bar]\n\n"
        "Trains the network of FILE on the shards of [data] train, validating on [data] val\n"
        "after every epoch. Checkpoints go to the run folder (default runs/<config name>):\n"
        "ckpt-<step>.h5 every [train] checkpoint_every steps and at the end, the last\n"
        "[train] keep kept, written atomically; log.jsonl has one JSON line per interval.\n"
        "--resume continues from the newest checkpoint of the run folder, bit for bit on the\n"
        "same machine. SIGUSR1, SIGTERM or Ctrl-C write a checkpoint and stop.\n"
        "log.jsonl also has one \"epoch\" line per epoch (training and validation loss and\n"
        "accuracy, learning rate, time): 'milscreen plot RUN' draws them.\n"
        "--print-config prints the config as read, every default filled in, and exits.\n\n"
        "[train] keys: batch (16), lr (0.001), lr_drop_epoch (0 = never) and lr_drop (0.1): the\n"
        "  rate is lr * lr_drop from that epoch on, beta1, beta2, eps, crop (0 = whole image),\n"
        "  epochs, seed, augment (true), checkpoint_every (0 = each epoch), keep (3),\n"
        "  loader_threads (2), cache_mb (1024), precision (auto: fp32 on the cpu backend, bf16\n"
        "  on cuda; bf16 on cpu: bf16 convolutions, fp32 master weights and Adam; score uses\n"
        "  the checkpoint's)\n"
        "[data] keys: train, val (shard paths, space separated)\n");
}

/* Splits a space-separated list (in place) into at most max paths. */
static int split_paths(char *s, const char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, " \t,"); tok && n < max; tok = strtok(NULL, " \t,"))
        out[n++] = tok;
    return n;
}

/* Images whose arg-max class is a true class, for the MIL output and the head, over the n
 * rows of P and Y (n, K) against targets t (n, K); a network without a head counts none. */
static void count_right(const float *P, const float *Y, const float *t, int n, int K,
                        int has_head, double *right_mil, double *right_fc)
{
    for (int i = 0; i < n; i++) {
        const float *p = P + (size_t)i * K, *y = Y + (size_t)i * K, *ti = t + (size_t)i * K;
        int am = 0, af = 0;
        for (int k = 1; k < K; k++) {
            am = p[k] > p[am] ? k : am;
            af = y[k] > y[af] ? k : af;
        }
        *right_mil += ti[am] > 0.5f;
        *right_fc += has_head && ti[af] > 0.5f;
    }
}

/* What one pass over labelled images gives: the mean loss (eq. 2, as in training) and the
 * accuracy of the MIL output and of the head (-1: the network has none), over count images
 * of all ranks. */
typedef struct {
    double loss, acc_mil, acc_fc;
    long count;
} pass_stats_t;

/* Validation: every labelled image of the shards, whole, without dropout, each rank scoring
 * its part; sums over the ranks. */
static ms_status_t validate(ms_dist_t *dist, ms_net_t *net, const char *const *paths,
                            int npaths, const float *mean, const float *std, int threads,
                            pass_stats_t *out)
{
    ms_status_t st = MS_OK;
    ms_loader_t *L = NULL;
    const ms_spec_t *spec = ms_net_spec(net);
    int K = spec->classes, has_head = spec->fc >= 0;
    float *P = NULL, *Y = NULL; /* (1, K) */
    double sums[4] = {0}; /* right MIL, right head, images, loss summed over images */
    ms_loader_opts_t o = {.paths = paths, .npaths = npaths, .batch = 1, .rank = dist->rank,
                          .ranks = dist->ranks, .threads = threads, .mean = mean, .std = std,
                          .labelled_only = 1};
    MS_TRY(ms_loader_open(&L, &o));
    MS_TRY(ms_loader_epoch(L, 0));
    MS_ALLOC(P, K, "validation outputs");
    MS_ALLOC(Y, K, "validation outputs");
    for (;;) {
        ms_batch_t b;
        double loss = 0;
        MS_TRY(ms_loader_next(L, &b));
        if (b.n == 0)
            break;
        MS_TRY(ms_net_plan(net, 1, b.h, b.w, 0));
        MS_TRY(ms_net_forward(net, b.x, NULL));
        MS_TRY(ms_net_loss(net, b.t, &loss));
        MS_TRY(ms_net_output(net, MS_OUT_MIL, P));
        if (has_head)
            MS_TRY(ms_net_output(net, MS_OUT_FC, Y));
        count_right(P, Y, b.t, 1, K, has_head, &sums[0], &sums[1]);
        sums[2]++;
        sums[3] += loss;
    }
    MS_TRY(ms_dist_sum(dist, sums, 4));
    out->count = (long)sums[2];
    out->acc_mil = sums[2] ? sums[0] / sums[2] : 0;
    out->acc_fc = !has_head ? -1 : sums[2] ? sums[1] / sums[2] : 0;
    out->loss = sums[2] ? sums[3] / sums[2] : 0;
done:
    free(P);
    free(Y);
    ms_loader_close(L);
    return st;
}

/* A JSON number, or null for a negative accuracy (no head) or no images. */
static const char *json_num(char *buf, size_t n, double v, int ok)
{
    if (ok && v >= 0)
        snprintf(buf, n, "%.8g", v);
    else
        snprintf(buf, n, "null");
    return buf;
}

/* The per-epoch line of log.jsonl and the console: training loss and accuracy (over the
 * batches this process trained in the epoch, outputs before each step's update, dropout and
 * augmentation on), validation loss and accuracy, learning rate, the epoch's wall time. */
static void log_epoch(ms_progress_t *prog, long epoch, long epochs, long step, double lr,
                      const pass_stats_t *tr, long batches, const pass_stats_t *va,
                      double seconds)
{
    char js[1024], a[8][32];
    int v = va != NULL;
    snprintf(js, sizeof js,
             "\"event\": \"epoch\", \"epoch\": %ld, \"step\": %ld, \"lr\": %.8g, "
             "\"train_loss\": %s, \"train_accuracy_mil\": %s, \"train_accuracy_head\": %s, "
             "\"train_images\": %ld, \"train_batches\": %ld, \"val_loss\": %s, "
             "\"val_accuracy_mil\": %s, \"val_accuracy_head\": %s, \"val_images\": %ld, "
             "\"epoch_s\": %.3f",
             epoch, step, lr, json_num(a[0], 32, tr->loss, tr->count > 0),
             json_num(a[1], 32, tr->acc_mil, tr->count > 0),
             json_num(a[2], 32, tr->acc_fc, tr->count > 0), tr->count, batches,
             json_num(a[3], 32, v ? va->loss : 0, v && va->count > 0),
             json_num(a[4], 32, v ? va->acc_mil : 0, v && va->count > 0),
             json_num(a[5], 32, v ? va->acc_fc : 0, v && va->count > 0), v ? va->count : 0,
             seconds);
    char head_tr[32] = "", head_va[32] = "", val[160] = "";
    if (tr->acc_fc >= 0)
        snprintf(head_tr, sizeof head_tr, ", head %.4f", tr->acc_fc);
    if (v && va->acc_fc >= 0)
        snprintf(head_va, sizeof head_va, ", head %.4f", va->acc_fc);
    if (v)
        snprintf(val, sizeof val, " | validation loss %.5f, accuracy MIL %.4f%s (%ld images)",
                 va->loss, va->acc_mil, head_va, va->count);
    ms_progress_note(prog, js, "epoch %ld/%ld: train loss %.5f, accuracy MIL %.4f%s%s | lr %g "
                     "| %.1f s", epoch, epochs, tr->loss, tr->acc_mil, head_tr, val, lr, seconds);
}

int ms_cmd_train(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "train"};
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS, MS_CLI_PRINT_CONFIG_OPTION,
                                         {"resume", no_argument, 0, 'r'},
                                         {"run", required_argument, 0, 'o'},
                                         {"backend", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"progress", required_argument, 0, 'p'},
                                         {0, 0, 0, 0}};
    int resume = 0, threads = 0, opt;
    const char *run_dir = NULL, *backend_name = "auto";
    ms_progress_mode_t pmode = MS_PROGRESS_AUTO;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r)
            continue;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case 'r': resume = 1; break;
        case 'o': run_dir = optarg; break;
        case 'b': backend_name = optarg; break;
        case 't':
            if (ms_cli_int("train", "threads", optarg, 0, 4096, &threads))
                return 2;
            break;
        case 'p':
            if (ms_progress_parse(optarg, &pmode))
                return ms_cli_usage_error("train", "--progress must be auto, lines or bar");
            break;
        default: return ms_cli_usage_error("train", "unknown option");
        }
    }
    if (optind < argc)
        return ms_cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!cli.config_path)
        return ms_cli_usage_error("train", "--config FILE is required");

    ms_status_t st = MS_OK;
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_options_t po;
    ms_train_opts_t to;
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    ms_loader_t *L = NULL;
    ms_shard_t *first = NULL;
    ms_ckpt_t ck = {0};
    char *cfg_text = NULL, *train_list = NULL, *val_list = NULL, *names = NULL;
    char *channel_names = NULL;
    float *out_mil = NULL, *out_fc = NULL; /* (batch, K) this step's outputs, for accuracy */
    const char *train_paths[1024], *val_paths[1024];
    int ntrain = 0, nval = 0;
    FILE *log = NULL;
    ms_progress_t prog;
    ms_dist_t dist = {0};
    ms_allreduce_t *ar = NULL;
    char run[2048], path[4096];

    /* first thing: a signal during the start-up (statistics, a slow file system) must not
     * kill the job without a checkpoint; it stops the run after its first step instead */
    signal(SIGUSR1, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    MS_TRY(ms_dist_open(&dist));
    MS_TRY(ms_cli_config(&cli, &cfg));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_options_read(cfg, &po));
    MS_TRY(ms_config_check_used(cfg));
    if (cli.print_config) { /* before anything is opened or written */
        if (dist.rank == 0)
            MS_TRY(ms_cli_print_config(&cli, cfg, cli.config_path));
        goto done;
    }
    to = po.train;
    train_list = strdup(po.data.train);
    val_list = strdup(po.data.val);
    if (!train_list || !val_list)
        MS_FAIL(MS_ENOMEM, "out of memory");
    ntrain = split_paths(train_list, train_paths, 1024);
    nval = split_paths(val_list, val_paths, 1024);
    if (ntrain == 0)
        MS_FAIL(MS_ECONFIG, "%s: [data] train = SHARD... is required for training",
                cli.config_path);
    MS_TRY(ms_config_text(cfg, &cfg_text));

    if (run_dir)
        snprintf(run, sizeof run, "%s", run_dir);
    else {
        const char *base = strrchr(cli.config_path, '/');
        base = base ? base + 1 : cli.config_path;
        snprintf(run, sizeof run, "runs/%.*s", (int)(strcspn(base, ".")), base);
    }
    MS_TRY(ms_mkdirs(run));

    /* data: every training shard must fit the network */
    MS_TRY(ms_shard_open(&first, train_paths[0]));
    if (ms_shard_channels(first) != spec.channels || ms_shard_classes(first) != spec.classes)
        MS_FAIL(MS_EFORMAT,
                "%s has %d channels and %d classes; the network of %s takes %d and %d",
                train_paths[0], ms_shard_channels(first), ms_shard_classes(first),
                cli.config_path, spec.channels, spec.classes);
    if (spec.fc >= 0 && (spec.layers[spec.fc].head == MS_HEAD_SIGMOID) !=
                            (ms_shard_multi_label(first) != 0))
        MS_FAIL(MS_ECONFIG, "%s is %s-label but [%s] head = %s", train_paths[0],
                ms_shard_multi_label(first) ? "multi" : "single", spec.layers[spec.fc].name,
                spec.layers[spec.fc].head == MS_HEAD_SIGMOID ? "sigmoid" : "softmax");
    names = ms_shard_names_joined(first, 0);
    channel_names = ms_shard_names_joined(first, 1);
    if (!names || !channel_names)
        MS_FAIL(MS_ENOMEM, "out of memory");
    int crop = (int)to.crop, H = ms_shard_height(first), W = ms_shard_width(first);
    if (crop > 0 && (crop > H || crop > W))
        MS_FAIL(MS_ECONFIG, "[train] crop = %d is larger than the images of %s (%dx%d)", crop,
                train_paths[0], W, H);
    int th = crop ? crop : H, tw = crop ? crop : W;
    if (to.batch % dist.ranks)
        MS_FAIL(MS_ECONFIG, "[train] batch = %ld does not divide among %d ranks", to.batch,
                dist.ranks);
    const int batch = (int)to.batch / dist.ranks; /* this rank's part of each batch */

    MS_TRY(ms_backend_open(&be, backend_name, dist.local_rank, threads,
                           to.precision));
    MS_TRY(ms_net_create(&net, &spec, be, MS_F32, (uint64_t)to.seed));
    MS_TRY(ms_allreduce_open(&ar, &dist, net, 0));

    long epoch0 = 0, batch0 = 0;
    if (resume) {
        ms_checkpoint_newest(run, path, sizeof path);
        if (!path[0])
            MS_FAIL(MS_EARG, "--resume: no checkpoint in %s", run);
        MS_TRY(ms_checkpoint_read_meta(path, &ck));
        if (ck.seed != (uint64_t)to.seed)
            MS_FAIL(MS_ECONFIG, "--resume: %s was trained with seed %llu, the config says %ld",
                    path, (unsigned long long)ck.seed, to.seed);
        MS_TRY(ms_checkpoint_load(path, net, 1));
        epoch0 = ck.epoch;
        batch0 = ck.batch;
    } else {
        ck.channels = spec.channels;
        MS_TRY(ms_norm_stats(train_paths, ntrain, ck.mean, ck.std));
    }
    ck.seed = (uint64_t)to.seed;
    free(ck.config);
    ck.config = cfg_text;
    cfg_text = NULL;
    free(ck.class_names);
    ck.class_names = names;
    names = NULL;
    free(ck.channel_names);
    ck.channel_names = channel_names;
    channel_names = NULL;

    ms_loader_opts_t lo = {.paths = train_paths, .npaths = ntrain, .crop = crop,
                           .random_crop = 1, .augment = to.augment, .shuffle = 1,
                           .seed = (uint64_t)to.seed, .rank = dist.rank, .ranks = dist.ranks,
                           .batch = batch, .drop_last = 1,
                           .threads = (int)to.loader_threads,
                           .cache_bytes = (size_t)to.cache_mb << 20, .mean = ck.mean,
                           .std = ck.std, .labelled_only = 1};
    MS_TRY(ms_loader_open(&L, &lo));
    long per_epoch = ms_loader_steps(L);
    if (per_epoch < 1)
        MS_FAIL(MS_EARG, "the training shards hold fewer labelled images than one batch (%ld)",
                to.batch);

    char desc[1024]; /* the backend and, after an auto fallback, why */
    ms_backend_describe(be, desc, sizeof desc);
    if (dist.rank == 0) {
        printf("milscreen train: %s\n  backend  %s\n", cli.config_path, desc);
        if (dist.ranks > 1)
            printf("  ranks    %d (%d per node), %d images of each batch per rank\n",
                   dist.ranks, dist.local_ranks, batch);
        printf("  allreduce %s\n", ms_allreduce_describe(ar));
        printf("  data     %d shard(s), %ld batches of %ld per epoch, %dx%d %s\n"
               "  run      %s%s\n",
               ntrain, per_epoch, to.batch, tw, th, crop ? "crops" : "images", run,
               resume ? " (resumed)" : "");
        snprintf(path, sizeof path, "%s/log.jsonl", run);
        log = fopen(path, "a");
        if (!log)
            MS_FAIL(MS_EIO, "%s: cannot open the run log: %s", path, strerror(errno));
    }

    ms_adam_t hp = {to.lr, to.beta1, to.beta2, to.eps};
    long total = per_epoch * to.epochs;
    long step = ms_net_step(net);
    ms_progress_start(&prog, pmode, log, step, total, dist.rank != 0);
    long ckpt_every = to.checkpoint_every > 0 ? to.checkpoint_every : per_epoch;
    long images = 0;
    double loss = 0;
    int stop = 0; /* a signal reached some rank: every rank stops after the same step */
    MS_ALLOC(out_mil, (size_t)batch * spec.classes, "training outputs");
    MS_ALLOC(out_fc, (size_t)batch * spec.classes, "training outputs");
    for (long e = epoch0; e < to.epochs && !stop; e++) {
        MS_TRY(ms_loader_epoch(L, (int)e));
        hp.lr = to.lr_drop_epoch > 0 && e >= to.lr_drop_epoch ? to.lr * to.lr_drop : to.lr;
        /* this epoch's training loss and right answers (this rank's images), for log_epoch */
        double epoch_t0 = ms_now(), loss_sum = 0, tsums[3] = {0}; /* right MIL, head, images */
        long batches = 0;
        for (long b = 0; b < per_epoch && !stop; b++) {
            ms_batch_t bt;
            MS_TIMED(prog.time.loader, ms_loader_next(L, &bt));
            if (e == epoch0 && b < batch0)
                continue; /* resumed mid-epoch: this batch was trained on already */
            double t = ms_now(); /* the backend's part of the step, to the device's end */
            MS_TRY(ms_net_plan(net, bt.n, bt.h, bt.w, 1));
            ms_pass_t pass = {.seed = (uint64_t)to.seed, .step = (uint64_t)step,
                              .image0 = (uint64_t)dist.rank * batch};
            MS_TRY(ms_net_forward(net, bt.x, &pass));
            MS_TRY(ms_net_loss(net, bt.t, &loss));
            MS_TRY(ms_net_output(net, MS_OUT_MIL, out_mil));
            if (spec.fc >= 0)
                MS_TRY(ms_net_output(net, MS_OUT_FC, out_fc));
            count_right(out_mil, out_fc, bt.t, bt.n, spec.classes, spec.fc >= 0, &tsums[0],
                        &tsums[1]);
            tsums[2] += bt.n;
            MS_TRY(ms_net_backward(net, &pass, 0));
            MS_TRY(be->sync(be));
            prog.time.engine += ms_now() - t;
            t = ms_now();
            MS_TRY(ms_allreduce_wait(ar)); /* NCCL buckets began during the backward pass */
            double shared[2] = {loss, stop_signal != 0};
            MS_TRY(ms_dist_sum(&dist, shared, 2));
            loss = shared[0] / dist.ranks;
            stop = shared[1] > 0;
            prog.time.comm += ms_now() - t;
            if (!isfinite(loss))
                MS_FAIL(MS_ENUMERIC, "step %ld (epoch %ld, batch %ld): the loss is %g; the "
                        "parameters were not updated and the checkpoints in %s are from "
                        "before; --resume with a lower [train] lr, or report this",
                        step + 1, e + 1, b + 1, loss, run);
            MS_TIMED(prog.time.engine, ms_net_adam(net, &hp));
            MS_TIMED(prog.time.engine, be->sync(be));
            loss_sum += loss;
            batches++;
            step = ms_net_step(net);
            images += (long)bt.n * dist.ranks;
            ms_progress_step(&prog, step, e, loss, images, 0);
            int end_epoch = b + 1 == per_epoch;
            if (dist.rank == 0 &&
                (step % ckpt_every == 0 || stop || (end_epoch && e + 1 == to.epochs))) {
                ck.epoch = end_epoch ? e + 1 : e;
                ck.batch = end_epoch ? 0 : b + 1;
                snprintf(path, sizeof path, "%s/ckpt-%08ld.h5", run, step);
                MS_TIMED(prog.time.checkpoint, ms_checkpoint_save(path, net, &ck));
                ms_checkpoint_prune(run, (int)to.keep);
            }
        }
        if (stop)
            break;
        ms_progress_step(&prog, step, e + 1, loss, images, 1);
        MS_TRY(ms_dist_sum(&dist, tsums, 3));
        pass_stats_t tr = {.loss = batches ? loss_sum / batches : 0,
                           .acc_mil = tsums[2] ? tsums[0] / tsums[2] : 0,
                           .acc_fc = spec.fc < 0 ? -1 : tsums[2] ? tsums[1] / tsums[2] : 0,
                           .count = (long)tsums[2]};
        pass_stats_t va = {0};
        if (nval) {
            MS_TIMED(prog.time.validation, validate(&dist, net, val_paths, nval, ck.mean, ck.std,
                                                    (int)to.loader_threads, &va));
            char js[320], head[32];
            snprintf(js, sizeof js,
                     "\"event\": \"validation\", \"epoch\": %ld, \"step\": %ld, \"images\": %ld, "
                     "\"loss\": %.8g, \"accuracy_mil\": %.6f, \"accuracy_head\": %s",
                     e + 1, step, va.count, va.loss, va.acc_mil,
                     json_num(head, sizeof head, va.acc_fc, 1));
            ms_progress_log(&prog, js);
        }
        log_epoch(&prog, e + 1, to.epochs, step, hp.lr, &tr, batches, nval ? &va : NULL,
                  ms_now() - epoch_t0);
    }
    ms_progress_end(&prog);
    if (dist.rank == 0 && stop)
        printf("milscreen train: stopped by signal at step %ld; checkpoint written, run again "
               "with --resume\n", step);
    else if (dist.rank == 0)
        printf("milscreen train: done, %ld steps; checkpoint %s/ckpt-%08ld.h5\n", step, run,
               step);
done:
    if (log)
        fclose(log);
    ms_loader_close(L);
    ms_shard_close(first);
    ms_allreduce_close(ar);
    ms_net_free(net);
    ms_backend_close(be);
    ms_checkpoint_free(&ck);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    free(cfg_text), free(train_list), free(val_list), free(names), free(channel_names);
    free(out_mil), free(out_fc);
    if (st)
        return ms_dist_fail(&dist, ms_cli_fail("train", st));
    ms_dist_close(&dist);
    return 0;
}

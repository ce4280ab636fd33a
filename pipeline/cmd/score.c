/* milscreen score: runs a trained network over plate shards and writes one output file per
 * shard (DESIGN §3): image ids, MIL and head probabilities, predictions, instance maps,
 * masks at input resolution (guided-backprop Jacobian maps denoised by loopy BP, or global
 * Otsu), and cell predictions from crops around the shard's cell centres. Files are written
 * under a temporary name and renamed when complete; a shard whose output already carries the
 * same checkpoint and shard digests is skipped. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/net.h"
#include "io/h5util.h"
#include "io/shard.h"
#include "ms_build_config.h"
#include "io/checkpoint.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/dist/dist.h"
#include "pipeline/localise/localise.h"
#include "pipeline/options.h"
#include "pipeline/progress.h"
#if MS_HAVE_CUDA
#include "engine/cuda/cuda.h"
#endif

#define MS_SCORES_FORMAT "milscreen-scores"
#define MS_SCORES_VERSION 1

static void help(void)
{
    printf("usage: milscreen score --checkpoint CK --out DIR [--force] [--backend NAME]\n"
           "                       [--threads N] [--set section.key=value ...] SHARD...\n\n"
           "Writes DIR/<shard name>.scores.h5 for every shard: image_id, mil_prob [N,K],\n"
           "fc_prob [N,K], pred [N], maps [N,K,h,w] (instance probabilities), masks [N,H,W]\n"
           "and, when the shard lists cells, cells/prob [M,K] from %dx%d crops around them.\n"
           "A shard whose output carries the same checkpoint and shard digests and settings is\n"
           "skipped (--force scores it again). --set changes the checkpoint's config for this run,\n"
           "e.g. --set localise.mode=otsu or --set score.cells=false.\n"
           "--set score.class_masks=true adds class_masks [N,K,H,W]: the Jacobian mask of each\n"
           "class's map alone (K more guided backward passes per image).\n"
           "A shard that cannot be scored is reported and the others are still scored; the exit\n"
           "status is then 1. Under MPI (srun --mpi=pmix, mpirun) shard i goes to rank\n"
           "i mod ranks, and each rank writes its own outputs.\n",
           64, 64);
}

/* Normalises image (C,H,W) uint16 into x with per-channel statistics. */
static void normalise(float *x, const uint16_t *img, int C, size_t HW, const float *mean,
                      const float *std)
{
    for (int c = 0; c < C; c++) {
        float m = mean[c], s = std[c] > 0 ? 1.0f / std[c] : 1.0f;
        for (size_t i = 0; i < HW; i++)
            x[c * HW + i] = ((float)img[c * HW + i] - m) * s;
    }
}

/* Output exists with the same checkpoint and shard digests and the same settings? */
static int up_to_date(const char *out, const char *ck_digest, const char *src_digest,
                      const char *config)
{
    struct stat sb;
    if (stat(out, &sb) != 0)
        return 0;
    hid_t f;
    if (ms_h5_open(&f, out) != MS_OK)
        return 0;
    char *a = NULL, *b = NULL, *c = NULL;
    int same = ms_h5_attr_get_str(f, "checkpoint_digest", &a) == MS_OK &&
               ms_h5_attr_get_str(f, "source_digest", &b) == MS_OK &&
               ms_h5_attr_get_str(f, "config", &c) == MS_OK && !strcmp(a, ck_digest) &&
               !strcmp(b, src_digest) && !strcmp(c, config);
    free(a);
    free(b);
    free(c);
    H5Fclose(f);
    ms_error_clear();
    return same;
}

typedef struct {
    ms_net_t *net;
    const ms_ckpt_t *ck;
    const ms_localise_opts_t *loc;
    int cells;        /* score cell crops */
    int cell_size;
    int masks;
    int class_masks;  /* also one Jacobian mask per class (paper Fig. 6) */
    char *config_text;
    double t_net, t_mask, t_io; /* seconds in the network (device work included), the
                                   masks' thresholds and belief propagation, reading and
                                   writing, over the current shard */
} score_ctx_t;

/* A uint8 dataset of masks, dims (N, H, W) or (N, K, H, W): one deflated chunk per (H, W)
 * mask, written mask by mask. */
static ms_status_t create_masks(hid_t f, const char *name, int rank, const hsize_t *dims,
                                hid_t *ds)
{
    hsize_t chunk[4];
    for (int d = 0; d < rank; d++)
        chunk[d] = d < rank - 2 ? 1 : dims[d];
    hid_t space = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 1);
    *ds = H5Dcreate2(f, name, H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return *ds < 0 ? MS_ERR(MS_EIO, "%s: cannot create it", ms_h5_where(f, name)) : MS_OK;
}

/* Writes mask (H, W) of image i (and class k when the dataset is (N, K, H, W)). */
static ms_status_t write_mask(hid_t ds, int i, int k, int H, int W, const uint8_t *m)
{
    hid_t fs = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t start[4] = {(hsize_t)i, (hsize_t)k, 0, 0}, count[4] = {1, 1, 1, 1};
    count[rank - 2] = (hsize_t)H, count[rank - 1] = (hsize_t)W;
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t r = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (r >= 0)
        r = H5Dwrite(ds, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, m);
    ms_status_t st = r < 0 ? MS_ERR(MS_EIO, "%s: writing the mask of image %d failed: %s",
                                    ms_h5_where(ds, NULL), i, ms_h5_reason()) : MS_OK;
    H5Sclose(ms);
    H5Sclose(fs);
    return st;
}

/* The Jacobian mask of the last forward pass from class cls (every class when cls < 0):
 * guided backprop, |J| summed over the channels into jsum, threshold and LBP. */
static ms_status_t jacobian_mask(score_ctx_t *sc, int cls, float *jac, float *jsum, int C,
                                 int H, int W, uint8_t *mask)
{
    ms_status_t st = MS_OK;
    size_t HW = (size_t)H * W;
    MS_TIMED(sc->t_net, ms_net_guided(sc->net, cls));
    MS_TIMED(sc->t_net, ms_net_output(sc->net, MS_OUT_INPUT_GRAD, jac));
    for (size_t j = 0; j < HW; j++) {
        float s = 0;
        for (int c = 0; c < C; c++)
            s += fabsf(jac[c * HW + j]);
        jsum[j] = s;
    }
    MS_TIMED(sc->t_mask, ms_jacobian_mask(mask, jsum, H, W, sc->loc));
done:
    return st;
}

static ms_status_t score_shard(score_ctx_t *sc, const char *shard_path, const char *out_path,
                               int force, int *skipped)
{
    ms_status_t st = MS_OK;
    ms_shard_t *sh = NULL;
    ms_h5file_t f = {0};
    hid_t mask_ds = H5I_INVALID_HID, class_ds = H5I_INVALID_HID;
    ms_net_t *net = sc->net;
    const ms_spec_t *spec = ms_net_spec(net);
    uint16_t *img = NULL;
    float *x = NULL, *P = NULL, *Y = NULL, *maps = NULL, *jac = NULL, *jsum = NULL;
    float *cell_x = NULL, *cell_prob = NULL;
    uint8_t *mask = NULL;
    int32_t *pred = NULL;
    const char **ids = NULL;
    char digest[65];
    *skipped = 0;

    MS_TRY(ms_shard_open(&sh, shard_path));
    const int N = ms_shard_count(sh), C = ms_shard_channels(sh), H = ms_shard_height(sh),
              W = ms_shard_width(sh), K = spec->classes;
    if (C != spec->channels || ms_shard_classes(sh) != K)
        MS_FAIL(MS_EFORMAT,
                "%s has %d channels and %d classes, the checkpoint's network %d channels and "
                "%d classes",
                shard_path, C, ms_shard_classes(sh), spec->channels, K);
    MS_TRY(ms_shard_digest(sh, digest));
    if (!force && up_to_date(out_path, sc->ck->digest, digest, sc->config_text)) {
        *skipped = 1;
        goto done;
    }
    MS_TRY(ms_net_plan(net, 1, H, W, 0));
    const ms_plan_t *pl = ms_net_current_plan(net);
    const int mh = pl->mh, mw = pl->mw;
    size_t HW = (size_t)H * W, mapn = (size_t)K * mh * mw;
    MS_ALLOC(img, (size_t)C * HW, "image");
    MS_ALLOC(x, (size_t)C * HW, "normalised image");
    MS_ALLOC(jac, (size_t)C * HW, "Jacobian map");
    MS_ALLOC(jsum, HW, "Jacobian map");
    MS_ALLOC(mask, HW, "mask");
    MS_ALLOC(P, (size_t)N * K, "mil_prob");
    MS_ALLOC(Y, (size_t)N * K, "fc_prob");
    MS_ALLOC(pred, N, "pred");
    MS_ALLOC(maps, (size_t)N * mapn, "maps");
    MS_ALLOC(ids, N, "image ids");

    MS_TRY(ms_h5_create(&f, out_path));
    hsize_t dmask[3] = {(hsize_t)N, (hsize_t)H, (hsize_t)W},
            dclass[4] = {(hsize_t)N, (hsize_t)K, (hsize_t)H, (hsize_t)W};
    if (sc->masks)
        MS_TRY(create_masks(f.id, "masks", 3, dmask, &mask_ds));
    if (sc->class_masks)
        MS_TRY(create_masks(f.id, "class_masks", 4, dclass, &class_ds));
    for (int i = 0; i < N; i++) {
        ids[i] = ms_shard_meta(sh, i)->image_id;
        MS_TIMED(sc->t_io, ms_shard_read(sh, i, img));
        normalise(x, img, C, HW, sc->ck->mean, sc->ck->std);
        MS_TIMED(sc->t_net, ms_net_forward(net, x, NULL));
        MS_TIMED(sc->t_net, ms_net_output(net, MS_OUT_MIL, P + (size_t)i * K));
        MS_TIMED(sc->t_net, ms_net_output(net, MS_OUT_MAPS, maps + (size_t)i * mapn));
        const float *prob = P + (size_t)i * K;
        if (spec->fc >= 0) {
            MS_TIMED(sc->t_net, ms_net_output(net, MS_OUT_FC, Y + (size_t)i * K));
            prob = Y + (size_t)i * K;
        } else {
            memcpy(Y + (size_t)i * K, prob, sizeof(float) * K);
        }
        int best = 0;
        for (int k = 1; k < K; k++)
            best = prob[k] > prob[best] ? k : best;
        pred[i] = best;
        if (sc->masks) {
            if (sc->loc->mode == MS_MASK_OTSU) {
                for (size_t j = 0; j < (size_t)C * HW; j++)
                    jac[j] = img[j];
                MS_TIMED(sc->t_mask, ms_otsu_mask(mask, jac, C, H, W, sc->loc->otsu_channel));
            } else {
                MS_TRY(jacobian_mask(sc, -1, jac, jsum, C, H, W, mask));
            }
            MS_TIMED(sc->t_io, write_mask(mask_ds, i, 0, H, W, mask));
        }
        for (int k = 0; sc->class_masks && k < K; k++) {
            MS_TRY(jacobian_mask(sc, k, jac, jsum, C, H, W, mask));
            MS_TIMED(sc->t_io, write_mask(class_ds, i, k, H, W, mask));
        }
    }

    /* cells: crops of cell_size around each centre, shifted to lie inside the image */
    size_t M = 0;
    if (sc->cells && ms_shard_has_cells(sh)) {
        ms_cells_t cells;
        int cs = sc->cell_size;
        MS_TRY(ms_shard_cells(sh, &cells));
        M = (size_t)cells.n;
        if (cs > H || cs > W)
            MS_FAIL(MS_EARG, "cell crops of %d px do not fit the %dx%d images of %s", cs, W, H,
                    shard_path);
        MS_ALLOC(cell_x, (size_t)C * cs * cs, "cell crop");
        MS_ALLOC(cell_prob, M * K + 1, "cell probabilities");
        MS_TRY(ms_net_plan(net, 1, cs, cs, 0));
        int loaded = -1;
        for (size_t m = 0; m < M; m++) {
            int im = cells.image_index[m];
            if (im < 0 || im >= N)
                MS_FAIL(MS_EFORMAT, "%s: cell %zu names image %d of %d", shard_path, m, im, N);
            if (im != loaded) {
                MS_TIMED(sc->t_io, ms_shard_read(sh, im, img));
                normalise(x, img, C, HW, sc->ck->mean, sc->ck->std);
                loaded = im;
            }
            int y0 = (int)lrintf(cells.y[m]) - cs / 2, x0 = (int)lrintf(cells.x[m]) - cs / 2;
            y0 = y0 < 0 ? 0 : (y0 > H - cs ? H - cs : y0);
            x0 = x0 < 0 ? 0 : (x0 > W - cs ? W - cs : x0);
            for (int c = 0; c < C; c++)
                for (int yy = 0; yy < cs; yy++)
                    memcpy(cell_x + ((size_t)c * cs + yy) * cs,
                           x + (size_t)c * HW + (size_t)(y0 + yy) * W + x0, sizeof(float) * cs);
            MS_TIMED(sc->t_net, ms_net_forward(net, cell_x, NULL));
            MS_TIMED(sc->t_net, ms_net_output(net, MS_OUT_MIL, cell_prob + m * K));
        }
        hsize_t dm[2] = {M, (hsize_t)K};
        MS_TRY(ms_h5_write(f.id, "cells/prob", H5T_NATIVE_FLOAT, 2, dm, cell_prob, NULL, 0));
        MS_TRY(ms_h5_write(f.id, "cells/image_index", H5T_NATIVE_INT32, 1, dm,
                           cells.image_index, NULL, 0));
    }

    hsize_t dnk[2] = {(hsize_t)N, (hsize_t)K}, dn = (hsize_t)N;
    hsize_t dmap[4] = {(hsize_t)N, (hsize_t)K, (hsize_t)mh, (hsize_t)mw};
    hsize_t cmap[4] = {1, (hsize_t)K, (hsize_t)mh, (hsize_t)mw};
    MS_TRY(ms_h5_write_strings(f.id, "image_id", (size_t)N, ids));
    MS_TRY(ms_h5_write(f.id, "mil_prob", H5T_NATIVE_FLOAT, 2, dnk, P, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "fc_prob", H5T_NATIVE_FLOAT, 2, dnk, Y, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "pred", H5T_NATIVE_INT32, 1, &dn, pred, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "maps", H5T_NATIVE_FLOAT, 4, dmap, maps, cmap, 1));
    {
        const char *names[4096];
        for (int k = 0; k < K && k < 4096; k++)
            names[k] = ms_shard_class_name(sh, k);
        MS_TRY(ms_h5_attr_set_strings(f.id, "class_names", (size_t)K, names));
    }
    MS_TRY(ms_h5_attr_set_str(f.id, "format", MS_SCORES_FORMAT));
    MS_TRY(ms_h5_attr_set_int(f.id, "format_version", MS_SCORES_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "milscreen_version", MS_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "checkpoint_digest", sc->ck->digest));
    MS_TRY(ms_h5_attr_set_str(f.id, "source", shard_path));
    MS_TRY(ms_h5_attr_set_str(f.id, "source_digest", digest));
    MS_TRY(ms_h5_attr_set_str(f.id, "config", sc->config_text));
    MS_TRY(ms_h5_attr_set_str(f.id, "mask_mode", !sc->masks ? "none"
                                                 : sc->loc->mode == MS_MASK_OTSU ? "otsu"
                                                                                 : "jacobian"));
    if (mask_ds >= 0) {
        H5Dclose(mask_ds);
        mask_ds = H5I_INVALID_HID;
    }
    if (class_ds >= 0) {
        H5Dclose(class_ds);
        class_ds = H5I_INVALID_HID;
    }
    MS_TRY(ms_h5_commit(&f));
done:
    if (mask_ds >= 0)
        H5Dclose(mask_ds);
    if (class_ds >= 0)
        H5Dclose(class_ds);
    if (st)
        ms_h5_abort(&f);
    ms_shard_close(sh);
    free(img), free(x), free(P), free(Y), free(maps), free(jac), free(jsum), free(mask);
    free(pred), free(ids), free(cell_x), free(cell_prob);
    return st;
}

#if MS_HAVE_CUDA
static ms_status_t lbp_cuda(void *be, uint8_t *out, const float *unary, int H, int W,
                            double pairwise, int iterations, int max_product, double damping)
{
    return ms_cuda_lbp_binary(be, out, unary, H, W, pairwise, iterations, max_product, damping);
}
#endif

int ms_cmd_score(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "score"};
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS,
                                         {"checkpoint", required_argument, 0, 'c'},
                                         {"out", required_argument, 0, 'o'},
                                         {"force", no_argument, 0, 'f'},
                                         {"backend", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {0, 0, 0, 0}};
    const char *ck_path = NULL, *out_dir = NULL, *backend_name = "auto";
    int force = 0, threads = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r)
            continue;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case 'c': ck_path = optarg; break;
        case 'o': out_dir = optarg; break;
        case 'f': force = 1; break;
        case 'b': backend_name = optarg; break;
        case 't':
            if (ms_cli_int("score", "threads", optarg, 0, 4096, &threads))
                return 2;
            break;
        default: return ms_cli_usage_error("score", "unknown option");
        }
    }
    if (!ck_path || !out_dir)
        return ms_cli_usage_error("score", "--checkpoint CK and --out DIR are required");
    if (optind >= argc)
        return ms_cli_usage_error("score", "no shards to score");
    if (cli.config_path)
        return ms_cli_usage_error("score", "the config comes from the checkpoint; use --set");

    ms_status_t st = MS_OK;
    ms_ckpt_t ck = {0};
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_options_t o;
    ms_backend_t *be = NULL;
    score_ctx_t sc = {0};
    ms_dist_t dist = {0};
    double failed = 0;
    MS_TRY(ms_dist_open(&dist));
    MS_TRY(ms_checkpoint_read_meta(ck_path, &ck));
    MS_TRY(ms_config_parse(&cfg, ck.config, ck_path));
    for (int i = 0; i < cli.nsets; i++)
        MS_TRY(ms_config_set(cfg, cli.sets[i]));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_options_read(cfg, &o));
    MS_TRY(ms_config_check_used(cfg));
    MS_TRY(ms_config_text(cfg, &sc.config_text));
    if (ck.channels != spec.channels)
        MS_FAIL(MS_EFORMAT, "%s: statistics for %d channels, network of %d", ck_path,
                ck.channels, spec.channels);
    MS_TRY(ms_backend_open(&be, backend_name, dist.local_rank, threads, "bf16"));
#if MS_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) { /* the masks' belief propagation on the GPU too */
        o.localise.lbp = lbp_cuda;
        o.localise.lbp_ctx = be;
    }
#endif
    MS_TRY(ms_net_create(&sc.net, &spec, be, MS_F32, 0));
    MS_TRY(ms_checkpoint_load(ck_path, sc.net, 0));
    sc.ck = &ck;
    sc.loc = &o.localise;
    sc.masks = o.score.masks;
    sc.class_masks = o.score.class_masks;
    sc.cells = o.score.cells;
    sc.cell_size = (int)o.score.cell_size;
    MS_TRY(ms_mkdirs(out_dir));
    char who[32] = "";
    if (dist.ranks > 1)
        snprintf(who, sizeof who, " (rank %d)", dist.rank);
    for (int i = optind + dist.rank; i < argc; i += dist.ranks) {
        const char *shard = argv[i];
        const char *base = strrchr(shard, '/');
        base = base ? base + 1 : shard;
        char out[4096];
        int len = (int)strlen(base);
        if (len > 3 && !strcmp(base + len - 3, ".h5"))
            len -= 3;
        snprintf(out, sizeof out, "%s/%.*s.scores.h5", out_dir, len, base);
        double t0 = ms_now();
        int skipped = 0;
        sc.t_net = sc.t_mask = sc.t_io = 0;
        ms_status_t s = score_shard(&sc, shard, out, force, &skipped);
        double el = ms_now() - t0;
        if (s) {
            const char *msg = ms_error_message();
            int named = strstr(msg, shard) != NULL; /* most messages name the file already */
            fprintf(stderr, "milscreen score%s: error: %s%s%s; no output written, going on\n",
                    who, named ? "" : shard, named ? "" : ": ", msg);
            failed++;
        } else if (skipped) {
            printf("score%s: %s: up to date (same checkpoint and shard digests), skipped\n",
                   who, out);
        } else {
            printf("score%s: %s -> %s (%.1f s: network %.0f%%, masks %.0f%%, reading and "
                   "writing %.0f%%)\n", who, shard, out, el, 100 * sc.t_net / el,
                   100 * sc.t_mask / el, 100 * sc.t_io / el);
        }
        fflush(stdout);
    }
    MS_TRY(ms_dist_sum(&dist, &failed, 1));
    if (failed > 0)
        MS_FAIL(MS_EIO, "%.0f of %d shards could not be scored (see above)", failed,
                argc - optind);
done:
    free(sc.config_text);
    ms_net_free(sc.net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    ms_checkpoint_free(&ck);
    if (st && !failed)
        return ms_dist_fail(&dist, ms_cli_fail("score", st));
    if (st)
        ms_cli_fail("score", st); /* every rank got here: no need to abort */
    ms_dist_close(&dist);
    return st ? 1 : 0;
}

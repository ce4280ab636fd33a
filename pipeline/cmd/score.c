/* milscreen score: runs a trained network over plate shards and writes one output file per
 * shard (DESIGN §3): image ids, MIL and head probabilities, predictions, instance maps,
 * masks at input resolution (guided-backprop Jacobian maps denoised by loopy BP, or global
 * Otsu), and cell predictions from crops around the shard's cell centres.
 *
 * What it guards (docs/RELIABILITY.md): a shard is scored only when its channel and class
 * names are the checkpoint's (or its classes a permutation or subset of them, asked for with
 * --remap-classes); no two shards share an output and no output is an input, checked for the
 * whole list before any rank writes; a signal stops every rank after its current image with no
 * temporary file left (exit 75). Files are written under a temporary name and renamed when
 * complete; a shard whose output already carries the same checkpoint digest, shard digest,
 * settings and classes is skipped, and the shard digest is cached beside the output, keyed by
 * the shard's size, times, inode and device, so that a nightly pass over unchanged shards costs
 * a stat and two small reads per shard instead of reading every byte. */
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/net.h"
#include "io/checkpoint.h"
#include "io/h5util.h"
#include "io/shard.h"
#include "ms_build_config.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/dist/dist.h"
#include "pipeline/dist/stop.h"
#include "pipeline/localise/localise.h"
#include "pipeline/names.h"
#include "pipeline/options.h"
#include "pipeline/progress.h"
#if MS_HAVE_CUDA
#include "engine/cuda/cuda.h"
#endif

#define MS_SCORES_FORMAT "milscreen-scores"
#define MS_SCORES_VERSION 1
#define DIGEST_CACHE_FORMAT "milscreen-digest-cache"
/* Stopped by a signal, resumable (EX_TEMPFAIL): the exit status train uses too. */
#define EXIT_INTERRUPTED 75
/* A file changed again within its file system's timestamp granularity can keep its times
 * (ext4 ticks in milliseconds, FAT-family and some NFS servers in up to 2 s): a key is
 * cached only once the shard's times are this much older than the moment it was read. */
#define RACY_SECONDS 2.0

static void help(void)
{
    printf(
        "usage: milscreen score --checkpoint CK|RUN_DIR --out DIR [options] SHARD...\n\n"
        "Writes DIR/<shard name>.scores.h5 for every shard: image_id, mil_prob [N,K],\n"
        "fc_prob [N,K], pred [N], maps [N,K,h,w] (instance probabilities), masks [N,H,W]\n"
        "and, when the shard lists cells, cells/prob [M,K] from %dx%d crops around them.\n"
        "Datasets carry dimension labels and, where one dimension is the class, the class\n"
        "names (attribute class_names): the checkpoint's classes, in the network's order.\n\n"
        "  --checkpoint CK     a checkpoint, or a run folder: its newest ckpt-*.h5\n"
        "  --out DIR           the output folder (created)\n"
        "  --dry-run           check everything (checkpoint, every shard's names and shape,\n"
        "                      DIR writable, output names) and say which shards would be\n"
        "                      scored and which skipped as up to date; writes nothing\n"
        "  --force             score every shard again, replacing its output whatever it holds\n"
        "  --verify            read and hash every shard instead of trusting the digest cache\n"
        "  --remap-classes     score a shard whose classes are a permutation or subset of the\n"
        "                      checkpoint's (matched by name; the output keeps the checkpoint's\n"
        "                      order, and eval compares labels by name)\n"
        "  --assume-channel-order  score with a checkpoint that predates channel names,\n"
        "                      taking the shard's channels to be in the training order\n"
        "  --backend NAME      auto, cpu, cuda or ref;  --threads N: CPU threads\n"
        "  --max-image-pixels N  refuse shards of larger images (pixels per plane)\n"
        "  --set section.key=value  changes the checkpoint's config for this run, e.g.\n"
        "                      --set localise.mode=otsu, --set score.cells=false,\n"
        "                      --set score.class_masks=true (class_masks [N,K,H,W]: the\n"
        "                      Jacobian mask of each class's map alone, K more backward passes)\n\n"
        "Refused for the whole list, before anything is written (exit status 2): two shards\n"
        "with one output name (a/plate.h5 and b/plate.h5: both named), an output that is one\n"
        "of the inputs. Refused for one shard: channel or class names that differ from the\n"
        "checkpoint's (both lists named; --remap-classes for classes) and, unless --force,\n"
        "replacing an output that holds another existing shard's scores or is not a score\n"
        "file.\n"
        "Skipped: a shard whose output carries the same checkpoint digest, shard digest,\n"
        "settings and classes. The shard digest (SHA-256 of the file) is cached beside the\n"
        "output (DIR/.<name>.scores.h5.digest) with the shard's size, modification and change\n"
        "times, inode and device; an unchanged shard is not read again (--verify reads it).\n"
        "A shard that cannot be scored is reported and the others are still scored; the exit\n"
        "status is then 1. SIGTERM, SIGINT, SIGHUP or SIGUSR1 stop the run after the current\n"
        "image (every rank under MPI): its temporary file is removed, finished outputs are kept,\n"
        "and the exit status is 75; running the same command again scores the rest.\n"
        "Under MPI (srun --mpi=pmix, mpirun) shard i goes to rank i mod ranks, and each rank\n"
        "writes its own outputs.\n"
        "--print-config prints the checkpoint's config with the --set changes and every\n"
        "default filled in, and exits (no --out or shards needed).\n",
        64, 64);
}

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
    }
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    const char *out_dir;
    int force, verify, dry_run;
} run_opts_t;

typedef struct {
    ms_net_t *net;
    const ms_ckpt_t *ck;
    const char *ck_path;
    char **classes;   /* (K) the checkpoint's class names: the outputs' columns */
    int K;
    char **channels;  /* (C) the checkpoint's channel names; NULL when it predates them */
    int C;
    int remap;        /* --remap-classes */
    int assume_order; /* --assume-channel-order */
    const ms_localise_opts_t *loc;
    int cells;        /* score cell crops */
    int cell_size;
    int masks;
    int class_masks;  /* also one Jacobian mask per class (paper Fig. 6) */
    char *config_text;
    ms_dist_stop_t stop;
    char why[64];     /* what stopped the run: "SIGTERM", "SIGTERM at rank 1" */
    char tmp[4096];   /* temporary name of the output being written, "" when none */
    double t_net, t_mask, t_io; /* seconds in the network (device work included), the
                                   masks' thresholds and belief propagation, reading and
                                   writing, over the current shard */
} score_ctx_t;

/* A signal here or a stop request from another rank: stop after the current image. The
 * first time here after a signal, the other ranks are told. */
static int stopping(score_ctx_t *sc)
{
    if (stop_signal) {
        if (!sc->why[0])
            snprintf(sc->why, sizeof sc->why, "%s", sig_name(stop_signal));
        if (ms_dist_stop_send(&sc->stop, stop_signal) != MS_OK)
            fprintf(stderr, "milscreen score: warning: %s\n", ms_error_message());
        return 1;
    }
    if (ms_dist_stop_poll(&sc->stop)) {
        if (!sc->why[0])
            snprintf(sc->why, sizeof sc->why, "%s at rank %d", sig_name(sc->stop.sig),
                     sc->stop.from);
        return 1;
    }
    return 0;
}

/* The shard's channels must be the checkpoint's, by name and in order; its classes too,
 * unless remapping by name was asked for (a permutation or subset). A shard that names no
 * classes (an unlabelled plate) has nothing to compare. */
static ms_status_t check_names(const score_ctx_t *sc, const ms_shard_t *sh, const char *path)
{
    ms_status_t st = MS_OK;
    const int C = ms_shard_channels(sh), K = ms_shard_classes(sh);
    const int net_C = ms_net_spec(sc->net)->channels;
    char **ch = NULL, **cl = NULL; /* (C), (K): the shard's, borrowed */
    char a[1024], b[1024];
    MS_ALLOC(ch, C + 1, "channel names");
    MS_ALLOC(cl, K + 1, "class names");
    for (int c = 0; c < C; c++)
        ch[c] = (char *)ms_shard_channel_name(sh, c);
    for (int k = 0; k < K; k++)
        cl[k] = (char *)ms_shard_class_name(sh, k);
    if (!sc->channels) {
        if (C != net_C)
            MS_FAIL(MS_EFORMAT, "%s has %d channels (%s); the network of %s takes %d", path, C,
                    ms_names_format(a, sizeof a, ch, C), sc->ck_path, net_C);
        if (!sc->assume_order)
            MS_FAIL(MS_EFORMAT,
                    "%s predates channel names, so the channels of %s (%s) cannot be checked "
                    "against those it was trained on: pass --assume-channel-order to score "
                    "them in this order anyway",
                    sc->ck_path, path, ms_names_format(a, sizeof a, ch, C));
    } else if (!ms_names_same(ch, C, sc->channels, sc->C)) {
        MS_FAIL(MS_EFORMAT,
                "%s has %d channels (%s), but %s was trained on %d channels (%s), in that "
                "order",
                path, C, ms_names_format(a, sizeof a, ch, C), sc->ck_path, sc->C,
                ms_names_format(b, sizeof b, sc->channels, sc->C));
    }
    if (K == 0 || ms_names_same(cl, K, sc->classes, sc->K))
        goto done;
    if (!sc->remap)
        MS_FAIL(MS_EFORMAT,
                "%s has %d classes (%s), but %s has %d classes (%s), in that order: pass "
                "--remap-classes to match them by name",
                path, K, ms_names_format(a, sizeof a, cl, K), sc->ck_path, sc->K,
                ms_names_format(b, sizeof b, sc->classes, sc->K));
    for (int k = 0; k < K; k++) {
        if (ms_names_index(cl[k], cl, k) >= 0)
            MS_FAIL(MS_EFORMAT, "%s names class '%s' twice (%s)", path, cl[k],
                    ms_names_format(a, sizeof a, cl, K));
        if (ms_names_index(cl[k], sc->classes, sc->K) < 0)
            MS_FAIL(MS_EFORMAT,
                    "--remap-classes: class '%s' of %s (%s) is not one of the %d classes of "
                    "%s (%s)",
                    cl[k], path, ms_names_format(a, sizeof a, cl, K), sc->K, sc->ck_path,
                    ms_names_format(b, sizeof b, sc->classes, sc->K));
    }
done:
    free(ch);
    free(cl);
    return st;
}

/* Everything about a shard that can be checked without scoring it: names, and that its
 * images (and cell crops) fit the network. Leaves the net planned for the whole image. */
static ms_status_t check_shard(score_ctx_t *sc, const ms_shard_t *sh, const char *path)
{
    ms_status_t st = MS_OK;
    const int H = ms_shard_height(sh), W = ms_shard_width(sh);
    MS_TRY(check_names(sc, sh, path));
    if (sc->cells && ms_shard_has_cells(sh) && (sc->cell_size > H || sc->cell_size > W))
        MS_FAIL(MS_EARG, "cell crops of %d px do not fit the %dx%d images of %s",
                sc->cell_size, W, H, path);
    MS_TRY(ms_net_plan(sc->net, 1, H, W, 0));
done:
    return st;
}

/* OUT/<shard file name without .h5>.scores.h5; 0 when it does not fit. */
static int output_path(const char *out_dir, const char *shard, char *out, size_t n)
{
    const char *base = strrchr(shard, '/');
    base = base ? base + 1 : shard;
    int len = (int)strlen(base);
    if (len > 3 && !strcmp(base + len - 3, ".h5"))
        len -= 3;
    int w = snprintf(out, n, "%s/%.*s.scores.h5", out_dir, len, base);
    return w > 0 && (size_t)w < n;
}

typedef struct {
    const char *key; /* output path, or NULL */
    dev_t dev;
    ino_t ino;
    int index;
} entry_t;

static int by_key(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->key, ((const entry_t *)b)->key);
}

static int by_file(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* No two shards share an output, and no output is one of the inputs (a shard or the
 * checkpoint). Every rank checks the whole list (each has all of it), so under MPI all ranks
 * refuse together, before any rank has written anything. */
static ms_status_t check_outputs(const char *out_dir, const char *ck_path, char *const *shards,
                                 int n)
{
    ms_status_t st = MS_OK;
    entry_t *outs = NULL, *ins = NULL; /* (n), (n + 1) */
    char buf[4096];
    int nin = 0;
    MS_ALLOC(outs, n + 1, "output names");
    MS_ALLOC(ins, n + 1, "inputs");
    for (int i = 0; i < n; i++) {
        if (!output_path(out_dir, shards[i], buf, sizeof buf))
            MS_FAIL(MS_EARG, "the output name for %s in %s is too long", shards[i], out_dir);
        if (!(outs[i].key = strdup(buf)))
            MS_FAIL(MS_ENOMEM, "out of memory for output names");
        outs[i].index = i;
    }
    qsort(outs, (size_t)n, sizeof *outs, by_key);
    for (int i = 1; i < n; i++) {
        if (strcmp(outs[i - 1].key, outs[i].key))
            continue;
        const char *a = shards[outs[i - 1].index], *b = shards[outs[i].index];
        struct stat sa, sb;
        if (!strcmp(a, b) || (stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
                              sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino))
            MS_FAIL(MS_EARG, "%s is given twice%s%s%s", a, strcmp(a, b) ? " (as " : "",
                    strcmp(a, b) ? b : "", strcmp(a, b) ? ")" : "");
        MS_FAIL(MS_EARG,
                "%s and %s would both be scored into %s: one would overwrite the other; score "
                "them into separate --out folders, or give the shards distinct file names",
                a, b, outs[i].key);
    }
    /* the inputs as files, to find an output that is one of them */
    for (int i = 0; i <= n; i++) {
        struct stat s;
        if (stat(i < n ? shards[i] : ck_path, &s) == 0)
            ins[nin++] = (entry_t){.dev = s.st_dev, .ino = s.st_ino, .index = i};
    }
    qsort(ins, (size_t)nin, sizeof *ins, by_file);
    for (int i = 0; i < n; i++) {
        struct stat s;
        if (stat(outs[i].key, &s) != 0)
            continue;
        entry_t k = {.dev = s.st_dev, .ino = s.st_ino}, *hit;
        if ((hit = bsearch(&k, ins, (size_t)nin, sizeof *ins, by_file)))
            MS_FAIL(MS_EARG, "%s, the output for %s, is one of the inputs (%s %s): refusing "
                    "to overwrite it; choose another --out",
                    outs[i].key, shards[outs[i].index], hit->index < n ? "shard" : "checkpoint",
                    hit->index < n ? shards[hit->index] : ck_path);
    }
done:
    for (int i = 0; outs && i < n; i++)
        free((char *)outs[i].key);
    free(outs);
    free(ins);
    return st;
}

/* --dry-run: the output folder exists and is writable, or could be created. */
static ms_status_t check_out_dir(const char *dir, int rank0)
{
    char p[4096];
    struct stat s;
    snprintf(p, sizeof p, "%s", dir);
    for (;;) {
        if (stat(p, &s) == 0) {
            if (!S_ISDIR(s.st_mode))
                return MS_ERR(MS_EIO, "--out %s: %s is not a folder", dir, p);
            if (access(p, W_OK | X_OK) != 0)
                return MS_ERR(MS_EIO, "--out %s: cannot write in %s: %s", dir, p,
                              strerror(errno));
            if (rank0)
                printf("score: dry run: %s %s\n", dir,
                       strcmp(p, dir) ? "would be created (its parent is writable)"
                                      : "is writable");
            return MS_OK;
        }
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) {
            snprintf(p, sizeof p, "%s", slash == p ? "/" : ".");
            if (stat(p, &s) != 0)
                return MS_ERR(MS_EIO, "--out %s: cannot reach %s", dir, p);
            continue;
        }
        *slash = 0;
    }
}

/* ---------------------------------------------------------------- the digest cache */

/* What identifies a version of a file without reading it: any write moves the change time
 * (which no user call can set back), a replacement (rename over it) changes the inode. */
typedef struct {
    unsigned long long dev, ino, size;
    long long mtime, ctime; /* ns */
    double seen;            /* wall clock when it was read, s */
} file_key_t;

static ms_status_t key_of(const char *path, file_key_t *k)
{
    struct stat s;
    struct timespec now;
    if (stat(path, &s) != 0)
        return MS_ERR(MS_EIO, "cannot read %s: %s", path, strerror(errno));
    clock_gettime(CLOCK_REALTIME, &now);
    k->dev = (unsigned long long)s.st_dev;
    k->ino = (unsigned long long)s.st_ino;
    k->size = (unsigned long long)s.st_size;
    k->mtime = (long long)s.st_mtim.tv_sec * 1000000000LL + s.st_mtim.tv_nsec;
    k->ctime = (long long)s.st_ctim.tv_sec * 1000000000LL + s.st_ctim.tv_nsec;
    k->seen = now.tv_sec + 1e-9 * now.tv_nsec;
    return MS_OK;
}

static int same_key(const file_key_t *a, const file_key_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime == b->mtime && a->ctime == b->ctime;
}

/* OUT/.<output name>.digest beside OUT/<output name>. */
static void cache_path(const char *out, char *buf, size_t n)
{
    const char *slash = strrchr(out, '/');
    int dir = slash ? (int)(slash - out + 1) : 0;
    snprintf(buf, n, "%.*s.%s.digest", dir, out, out + dir);
}

/* 1 and the digest when the cache beside out records exactly key. */
static int cache_read(const char *out, const file_key_t *k, char digest[65])
{
    char path[4200], magic[32], hex[80];
    int version = 0;
    file_key_t c = {0};
    cache_path(out, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fscanf(f, "%31s %d %llu %llu %llu %lld %lld %79s", magic, &version, &c.dev, &c.ino,
                    &c.size, &c.mtime, &c.ctime, hex) == 8 &&
             !strcmp(magic, DIGEST_CACHE_FORMAT) && version == 1 && same_key(&c, k) &&
             strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64;
    fclose(f);
    if (ok)
        memcpy(digest, hex, 65);
    return ok;
}

/* Records key -> digest beside out (temporary name, then rename), unless the shard changed
 * too recently for its times to tell a later change apart. A cache that cannot be written
 * only costs a full read next time. */
static void cache_write(const char *out, const file_key_t *k, const char *digest)
{
    if (k->seen - k->ctime * 1e-9 < RACY_SECONDS || k->seen - k->mtime * 1e-9 < RACY_SECONDS)
        return;
    char path[4200], tmp[4300];
    cache_path(out, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%s 1\n%llu %llu %llu %lld %lld\n%s\n", DIGEST_CACHE_FORMAT,
                          k->dev, k->ino, k->size, k->mtime, k->ctime, digest) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "milscreen score: warning: cannot write the digest cache %s: %s (the "
                "next run reads the shard again)\n", path, strerror(errno));
        unlink(tmp);
    }
}

/* The shard's SHA-256: from the cache when its key is the shard's now, else (and with
 * --verify) by reading the whole file. *hashed says which. */
static ms_status_t source_digest(const char *shard, const char *out, int verify,
                                 const file_key_t *k, char digest[65], int *hashed)
{
    *hashed = verify || !cache_read(out, k, digest);
    return *hashed ? ms_file_sha256(shard, digest) : MS_OK;
}

/* ---------------------------------------------------------------- outputs on disk */

/* Output exists with the same checkpoint and shard digests, the same settings and the
 * checkpoint's classes (an output written before names were checked carries the shard's)? */
static int up_to_date(const char *out, const score_ctx_t *sc, const char *src_digest)
{
    struct stat sb;
    if (stat(out, &sb) != 0)
        return 0;
    hid_t f;
    if (ms_h5_open(&f, out) != MS_OK) {
        ms_error_clear();
        return 0;
    }
    char *a = NULL, *b = NULL, *c = NULL, **names = NULL;
    size_t n = 0;
    int same = ms_h5_attr_get_str(f, "checkpoint_digest", &a) == MS_OK &&
               ms_h5_attr_get_str(f, "source_digest", &b) == MS_OK &&
               ms_h5_attr_get_str(f, "config", &c) == MS_OK && !strcmp(a, sc->ck->digest) &&
               !strcmp(b, src_digest) && !strcmp(c, sc->config_text) &&
               ms_h5_attr_get_strings(f, "class_names", &n, &names) == MS_OK &&
               ms_names_same(names, (int)n, sc->classes, sc->K);
    free(a);
    free(b);
    free(c);
    ms_names_free(names, (int)n);
    H5Fclose(f);
    ms_error_clear();
    return same;
}

/* An existing output about to be replaced must be a score file of this shard: one whose
 * source is another existing file (an earlier run scored b/plate.h5 into the output a/plate.h5
 * now wants) or that is not a score file is refused (--force replaces it). A file that is not
 * HDF5 at all is a damaged output under our name and is replaced. */
static ms_status_t check_replace(const char *out, const char *shard)
{
    ms_status_t st = MS_OK;
    struct stat so, ss, sp;
    hid_t f = H5I_INVALID_HID;
    char *fmt = NULL, *src = NULL;
    if (stat(out, &so) != 0 || ms_h5_open(&f, out) != MS_OK) {
        ms_error_clear();
        return MS_OK;
    }
    if (!ms_h5_attr_exists(f, "format") || ms_h5_attr_get_str(f, "format", &fmt) != MS_OK ||
        strcmp(fmt, MS_SCORES_FORMAT))
        MS_FAIL(MS_EIO, "%s exists and is not a milscreen score file: refusing to replace it "
                "(remove it, choose another --out, or --force)", out);
    if (ms_h5_attr_exists(f, "source") && ms_h5_attr_get_str(f, "source", &src) == MS_OK &&
        stat(src, &sp) == 0 && stat(shard, &ss) == 0 &&
        (sp.st_dev != ss.st_dev || sp.st_ino != ss.st_ino))
        MS_FAIL(MS_EIO, "%s holds the scores of %s, another shard of the same name: refusing "
                "to replace them with those of %s (score it into another --out, or --force)",
                out, src, shard);
done:
    free(fmt);
    free(src);
    H5Fclose(f);
    if (st == MS_OK)
        ms_error_clear();
    return st;
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

/* Dimension labels on dataset name (h5py's dims[i].label; HDFView and ViTables show them)
 * and, when one of them is "class", the class names in that dimension's order. */
static ms_status_t describe(hid_t f, const char *name, const char *const *labels, int rank,
                            const score_ctx_t *sc)
{
    ms_status_t st = MS_OK;
    hid_t ds = H5I_INVALID_HID;
    MS_TRY(ms_h5_label_dims(f, name, labels));
    for (int d = 0; d < rank; d++) {
        if (strcmp(labels[d], "class"))
            continue;
        if ((ds = H5Dopen2(f, name, H5P_DEFAULT)) < 0)
            MS_FAIL(MS_EIO, "cannot open %s", ms_h5_where(f, name));
        MS_TRY(ms_h5_attr_set_strings(ds, "class_names", (size_t)sc->K,
                                      (const char *const *)sc->classes));
    }
done:
    if (ds >= 0)
        H5Dclose(ds);
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

/* Scores one shard into out_path. digest: the shard's SHA-256, taken when the shard had key;
 * a shard whose key is another by the end (rewritten while it was read) is refused. */
static ms_status_t score_shard(score_ctx_t *sc, const char *shard_path, const char *out_path,
                               const char *digest, const file_key_t *key)
{
    ms_status_t st = MS_OK;
    ms_shard_t *sh = NULL;
    ms_h5file_t f = {0};
    hid_t mask_ds = H5I_INVALID_HID, class_ds = H5I_INVALID_HID;
    ms_net_t *net = sc->net;
    const ms_spec_t *spec = ms_net_spec(net);
    uint16_t *img = NULL;                      /* (C, H, W) */
    float *x = NULL, *jac = NULL;              /* (C, H, W) */
    float *jsum = NULL;                        /* (H, W) */
    float *P = NULL, *Y = NULL;                /* (N, K) */
    float *maps = NULL;                        /* (N, K, h, w) */
    float *cell_x = NULL, *cell_prob = NULL;   /* (C, cs, cs), (M, K) */
    uint8_t *mask = NULL;                      /* (H, W) */
    int32_t *pred = NULL;                      /* (N) */
    const char **ids = NULL;                   /* (N) */
    char source[PATH_MAX];
    file_key_t after;
    sc->tmp[0] = 0;

    MS_TRY(ms_shard_open(&sh, shard_path));
    MS_TRY(check_shard(sc, sh, shard_path));
    const int N = ms_shard_count(sh), C = ms_shard_channels(sh), H = ms_shard_height(sh),
              W = ms_shard_width(sh), K = spec->classes;
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
    snprintf(sc->tmp, sizeof sc->tmp, "%s", f.tmp);
    hsize_t dmask[3] = {(hsize_t)N, (hsize_t)H, (hsize_t)W},
            dclass[4] = {(hsize_t)N, (hsize_t)K, (hsize_t)H, (hsize_t)W};
    if (sc->masks)
        MS_TRY(create_masks(f.id, "masks", 3, dmask, &mask_ds));
    if (sc->class_masks)
        MS_TRY(create_masks(f.id, "class_masks", 4, dclass, &class_ds));
    for (int i = 0; i < N; i++) {
        if (stopping(sc))
            MS_FAIL(MS_EINTERRUPT, "stopped by %s after image %d of %d of %s", sc->why, i, N,
                    shard_path);
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
        MS_ALLOC(cell_x, (size_t)C * cs * cs, "cell crop");
        MS_ALLOC(cell_prob, M * K + 1, "cell probabilities");
        MS_TRY(ms_net_plan(net, 1, cs, cs, 0));
        int loaded = -1;
        for (size_t m = 0; m < M; m++) {
            int im = cells.image_index[m];
            if (im < 0 || im >= N)
                MS_FAIL(MS_EFORMAT, "%s: cell %zu names image %d of %d", shard_path, m, im, N);
            if (im != loaded) {
                if (stopping(sc))
                    MS_FAIL(MS_EINTERRUPT, "stopped by %s in the cells of image %d of %d of %s",
                            sc->why, im, N, shard_path);
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
        MS_TRY(describe(f.id, "cells/prob", (const char *[]){"cell", "class"}, 2, sc));
        MS_TRY(describe(f.id, "cells/image_index", (const char *[]){"cell"}, 1, sc));
    }

    hsize_t dnk[2] = {(hsize_t)N, (hsize_t)K}, dn = (hsize_t)N;
    hsize_t dmap[4] = {(hsize_t)N, (hsize_t)K, (hsize_t)mh, (hsize_t)mw};
    hsize_t cmap[4] = {1, (hsize_t)K, (hsize_t)mh, (hsize_t)mw};
    MS_TRY(ms_h5_write_strings(f.id, "image_id", (size_t)N, ids));
    MS_TRY(ms_h5_write(f.id, "mil_prob", H5T_NATIVE_FLOAT, 2, dnk, P, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "fc_prob", H5T_NATIVE_FLOAT, 2, dnk, Y, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "pred", H5T_NATIVE_INT32, 1, &dn, pred, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "maps", H5T_NATIVE_FLOAT, 4, dmap, maps, cmap, 1));
    if (mask_ds >= 0) {
        H5Dclose(mask_ds);
        mask_ds = H5I_INVALID_HID;
    }
    if (class_ds >= 0) {
        H5Dclose(class_ds);
        class_ds = H5I_INVALID_HID;
    }
    MS_TRY(describe(f.id, "image_id", (const char *[]){"image"}, 1, sc));
    MS_TRY(describe(f.id, "mil_prob", (const char *[]){"image", "class"}, 2, sc));
    MS_TRY(describe(f.id, "fc_prob", (const char *[]){"image", "class"}, 2, sc));
    MS_TRY(describe(f.id, "pred", (const char *[]){"image"}, 1, sc));
    MS_TRY(describe(f.id, "maps", (const char *[]){"image", "class", "y", "x"}, 4, sc));
    if (sc->masks)
        MS_TRY(describe(f.id, "masks", (const char *[]){"image", "y", "x"}, 3, sc));
    if (sc->class_masks)
        MS_TRY(describe(f.id, "class_masks", (const char *[]){"image", "class", "y", "x"}, 4,
                        sc));
    /* the network's classes, never the shard's (which --remap-classes may order otherwise) */
    MS_TRY(ms_h5_attr_set_strings(f.id, "class_names", (size_t)K,
                                  (const char *const *)sc->classes));
    if (!realpath(shard_path, source))
        MS_FAIL(MS_EIO, "cannot resolve the path of %s: %s", shard_path, strerror(errno));
    MS_TRY(ms_h5_attr_set_str(f.id, "format", MS_SCORES_FORMAT));
    MS_TRY(ms_h5_attr_set_int(f.id, "format_version", MS_SCORES_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "milscreen_version", MS_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "checkpoint_digest", sc->ck->digest));
    MS_TRY(ms_h5_attr_set_str(f.id, "source", source));
    MS_TRY(ms_h5_attr_set_str(f.id, "source_digest", digest));
    MS_TRY(ms_h5_attr_set_str(f.id, "config", sc->config_text));
    MS_TRY(ms_h5_attr_set_str(f.id, "mask_mode", !sc->masks ? "none"
                                                 : sc->loc->mode == MS_MASK_OTSU ? "otsu"
                                                                                 : "jacobian"));
    MS_TRY(key_of(shard_path, &after));
    if (!same_key(key, &after))
        MS_FAIL(MS_EIO, "%s changed while it was scored (its size, times or inode are not "
                "those it had when its digest was taken): score it again once it is complete",
                shard_path);
    MS_TRY(ms_h5_commit(&f));
    sc->tmp[0] = 0;
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

typedef enum { SCORED, SKIPPED, WOULD_SCORE, WOULD_SKIP } outcome_t;

/* One shard of the run: digest (cached or read), skip when up to date, else score it (or,
 * in a dry run, check it and say what would happen). */
static ms_status_t one_shard(score_ctx_t *sc, const run_opts_t *ro, const char *shard,
                             const char *out, outcome_t *what, int *hashed)
{
    ms_status_t st = MS_OK;
    ms_shard_t *sh = NULL;
    file_key_t key;
    char digest[65];
    MS_TRY(key_of(shard, &key));
    if (ro->dry_run) {
        MS_TRY(ms_shard_open(&sh, shard));
        MS_TRY(check_shard(sc, sh, shard));
    }
    MS_TRY(source_digest(shard, out, ro->verify, &key, digest, hashed));
    int fresh = !ro->force && up_to_date(out, sc, digest);
    if (!fresh && !*hashed) {
        /* The cache only ever proves a shard unchanged: one about to be scored is read, so
         * that no output records a digest it was not computed from. */
        MS_TRY(ms_file_sha256(shard, digest));
        *hashed = 1;
        fresh = !ro->force && up_to_date(out, sc, digest);
    }
    if (fresh) {
        *what = ro->dry_run ? WOULD_SKIP : SKIPPED;
        if (*hashed && !ro->dry_run)
            cache_write(out, &key, digest);
        goto done;
    }
    if (!ro->force)
        MS_TRY(check_replace(out, shard));
    if (ro->dry_run) {
        *what = WOULD_SCORE;
        goto done;
    }
    MS_TRY(score_shard(sc, shard, out, digest, &key));
    cache_write(out, &key, digest);
    *what = SCORED;
done:
    ms_shard_close(sh);
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
    enum { O_CK = MS_OPT_FIRST_FREE, O_OUT, O_FORCE, O_BACKEND, O_THREADS, O_DRY, O_VERIFY,
           O_REMAP, O_ASSUME };
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS, MS_CLI_PRINT_CONFIG_OPTION,
                                         {"checkpoint", required_argument, 0, O_CK},
                                         {"out", required_argument, 0, O_OUT},
                                         {"force", no_argument, 0, O_FORCE},
                                         {"backend", required_argument, 0, O_BACKEND},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"dry-run", no_argument, 0, O_DRY},
                                         {"verify", no_argument, 0, O_VERIFY},
                                         {"remap-classes", no_argument, 0, O_REMAP},
                                         {"assume-channel-order", no_argument, 0, O_ASSUME},
                                         {0, 0, 0, 0}};
    const char *ck_arg = NULL, *backend_name = "auto";
    run_opts_t ro = {0};
    int threads = 0, remap = 0, assume_order = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r)
            continue;
        switch (opt) {
        case MS_OPT_HELP: help(); return 0;
        case O_CK: ck_arg = optarg; break;
        case O_OUT: ro.out_dir = optarg; break;
        case O_FORCE: ro.force = 1; break;
        case O_BACKEND: backend_name = optarg; break;
        case O_THREADS:
            if (ms_cli_int("score", "threads", optarg, 0, 4096, &threads))
                return 2;
            break;
        case O_DRY: ro.dry_run = 1; break;
        case O_VERIFY: ro.verify = 1; break;
        case O_REMAP: remap = 1; break;
        case O_ASSUME: assume_order = 1; break;
        default: return ms_cli_usage_error("score", "unknown option");
        }
    }
    if (!ck_arg || (!ro.out_dir && !cli.print_config))
        return ms_cli_usage_error("score", "--checkpoint CK and --out DIR are required");
    if (optind >= argc && !cli.print_config)
        return ms_cli_usage_error("score", "no shards to score");
    if (cli.config_path)
        return ms_cli_usage_error("score", "the config comes from the checkpoint; use --set");
    /* first thing: a signal from here on stops the run cleanly instead of killing it */
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGUSR1, on_signal);

    ms_status_t st = MS_OK;
    ms_ckpt_t ck = {0};
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_options_t o;
    ms_backend_t *be = NULL;
    score_ctx_t sc = {0};
    ms_dist_t dist = {0};
    char ck_path[4096];
    char *const *shards = argv + optind;
    const int nshards = argc - optind;
    /* what every rank found, summed over ranks */
    enum { N_FAILED, N_STOPPED, N_SCORED, N_SKIPPED, N_WOULD_SCORE, N_WOULD_SKIP, N_TALLY };
    double tally[N_TALLY] = {0};
    int agreed_exit = 0;
    MS_TRY(ms_dist_open(&dist));
    const int rank0 = dist.rank == 0;
    struct stat cs;
    if (stat(ck_arg, &cs) == 0 && S_ISDIR(cs.st_mode)) {
        ms_checkpoint_newest(ck_arg, ck_path, sizeof ck_path);
        if (!ck_path[0])
            MS_FAIL(MS_EIO, "run folder %s holds no checkpoint (ckpt-<step>.h5): has its "
                    "training written one yet?", ck_arg);
        if (rank0)
            printf("score: run folder %s: newest checkpoint %s\n", ck_arg, ck_path);
    } else {
        snprintf(ck_path, sizeof ck_path, "%s", ck_arg);
    }
    sc.ck_path = ck_path;
    MS_TRY(ms_checkpoint_read_meta(ck_path, &ck));
    MS_TRY(ms_config_parse(&cfg, ck.config, ck_path));
    for (int i = 0; i < cli.nsets; i++)
        MS_TRY(ms_config_set(cfg, cli.sets[i]));
    if (cli.print_config)
        ms_config_record_defaults(cfg);
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_options_read(cfg, &o));
    MS_TRY(ms_config_check_used(cfg));
    if (cli.print_config) {
        if (rank0)
            MS_TRY(ms_cli_print_config(&cli, cfg, ck_path));
        goto done;
    }
    MS_TRY(ms_config_text(cfg, &sc.config_text));
    if (ck.channels != spec.channels)
        MS_FAIL(MS_EFORMAT, "%s: statistics for %d channels, network of %d", ck_path,
                ck.channels, spec.channels);
    MS_TRY(ms_names_split(ck.class_names, &sc.classes, &sc.K));
    if (sc.K != spec.classes)
        MS_FAIL(MS_EFORMAT, "%s names %d classes for a network of %d", ck_path, sc.K,
                spec.classes);
    MS_TRY(ms_names_split(ck.channel_names, &sc.channels, &sc.C));
    if (sc.channels && sc.C != spec.channels)
        MS_FAIL(MS_EFORMAT, "%s names %d channels for a network of %d", ck_path, sc.C,
                spec.channels);
    if (!sc.channels && assume_order && rank0)
        fprintf(stderr, "milscreen score: warning: %s predates channel names; the shards' "
                "channels are taken to be in the order it was trained on "
                "(--assume-channel-order)\n", ck_path);
    MS_TRY(ms_backend_open(&be, backend_name, dist.local_rank, threads,
                           o.train.precision));
#if MS_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) { /* the masks' belief propagation on the GPU too */
        o.localise.lbp = lbp_cuda;
        o.localise.lbp_ctx = be;
    }
#endif
    MS_TRY(ms_net_create(&sc.net, &spec, be, MS_F32, 0));
    MS_TRY(ms_checkpoint_load(ck_path, sc.net, 0));
    sc.ck = &ck;
    sc.remap = remap;
    sc.assume_order = assume_order;
    sc.loc = &o.localise;
    sc.masks = o.score.masks;
    sc.class_masks = o.score.class_masks;
    sc.cells = o.score.cells;
    sc.cell_size = (int)o.score.cell_size;
    /* Every rank checks the whole list and finds the same thing: they agree (one sum) and,
     * on a refusal, end together, before any of them has written a file. */
    ms_status_t refused = check_outputs(ro.out_dir, ck_path, shards, nshards);
    if (!refused)
        refused = ro.dry_run ? check_out_dir(ro.out_dir, rank0) : ms_mkdirs(ro.out_dir);
    double agree[3] = {refused != MS_OK, rank0 && refused,
                       !refused ? 0 : refused == MS_EARG ? 2 : 1}; /* ms_cli_fail's codes */
    MS_TRY(ms_dist_sum(&dist, agree, 3));
    if (agree[0] > 0) {
        if (refused && (rank0 || agree[1] == 0)) /* printed once when rank 0 found it */
            ms_cli_fail("score", refused);
        agreed_exit = (int)lrint(agree[2] / agree[0]); /* the same code on every rank */
        goto done;
    }
    MS_TRY(ms_dist_stop_open(&sc.stop, &dist));

    char who[32] = "";
    if (dist.ranks > 1)
        snprintf(who, sizeof who, " (rank %d)", dist.rank);
    for (int i = dist.rank; i < nshards; i += dist.ranks) {
        const char *shard = shards[i];
        char out[4096];
        output_path(ro.out_dir, shard, out, sizeof out); /* fits: check_outputs said so */
        if (stopping(&sc)) {
            printf("score%s: stopped by %s before %s; no file of it was written\n", who,
                   sc.why, shard);
            tally[N_STOPPED]++;
            break;
        }
        double t0 = ms_now();
        int hashed = 0;
        outcome_t what = SCORED;
        sc.t_net = sc.t_mask = sc.t_io = 0;
        ms_status_t s = one_shard(&sc, &ro, shard, out, &what, &hashed);
        double el = ms_now() - t0;
        const char *digest_how = hashed ? "shard digest" : "shard, unchanged since it was hashed";
        if (s == MS_EINTERRUPT) {
            if (!sc.tmp[0])
                printf("score%s: %s; no file of it was written\n", who, ms_error_message());
            else if (access(sc.tmp, F_OK) != 0)
                printf("score%s: %s; its temporary file %s was removed\n", who,
                       ms_error_message(), sc.tmp);
            else
                printf("score%s: %s; its temporary file %s could not be removed\n", who,
                       ms_error_message(), sc.tmp);
            tally[N_STOPPED]++;
            break;
        } else if (s) {
            const char *msg = ms_error_message();
            int named = strstr(msg, shard) != NULL; /* most messages name the file already */
            fprintf(stderr, "milscreen score%s: error: %s%s%s; %s\n", who,
                    named ? "" : shard, named ? "" : ": ", msg,
                    ro.dry_run ? "it would not be scored" : "no output written, going on");
            tally[N_FAILED]++;
        } else if (what == SKIPPED || what == WOULD_SKIP) {
            printf("score%s: %s%s: up to date (same checkpoint, settings and %s), %s\n", who,
                   what == WOULD_SKIP ? "dry run: " : "", out, digest_how,
                   what == WOULD_SKIP ? "would be skipped" : "skipped");
            tally[what == SKIPPED ? N_SKIPPED : N_WOULD_SKIP]++;
        } else if (what == WOULD_SCORE) {
            printf("score%s: dry run: %s would be scored -> %s\n", who, shard, out);
            tally[N_WOULD_SCORE]++;
        } else {
            printf("score%s: %s -> %s (%.1f s: network %.0f%%, masks %.0f%%, reading and "
                   "writing %.0f%%)\n", who, shard, out, el, 100 * sc.t_net / el,
                   100 * sc.t_mask / el, 100 * sc.t_io / el);
            tally[N_SCORED]++;
        }
        fflush(stdout);
    }
    /* every rank gets here, stopped or not: the collectives below end the run together */
    MS_TRY(ms_dist_stop_close(&sc.stop, &stop_signal));
    MS_TRY(ms_dist_sum(&dist, tally, N_TALLY));
    if (rank0) {
        if (ro.dry_run)
            printf("score: dry run: %.0f of %d shards would be scored, %.0f skipped as up to "
                   "date, %.0f cannot be scored; nothing was written\n", tally[N_WOULD_SCORE],
                   nshards, tally[N_WOULD_SKIP], tally[N_FAILED]);
        if (tally[N_STOPPED] > 0)
            printf("score: stopped by a signal: %.0f shards scored, %.0f up to date, %.0f not "
                   "finished; the outputs written are complete; run the same command again "
                   "to score the rest\n", tally[N_SCORED], tally[N_SKIPPED],
                   nshards - tally[N_SCORED] - tally[N_SKIPPED] - tally[N_FAILED]);
        if (tally[N_FAILED] > 0)
            fprintf(stderr, "milscreen score: error: %.0f of %d shards %s (named above)\n",
                    tally[N_FAILED], nshards,
                    ro.dry_run ? "cannot be scored" : "could not be scored");
        fflush(stdout);
    }
done:
    ms_names_free(sc.classes, sc.K);
    ms_names_free(sc.channels, sc.C);
    free(sc.config_text);
    ms_net_free(sc.net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    ms_checkpoint_free(&ck);
    if (st) /* this rank alone: the others must not wait for it in a collective */
        return ms_dist_fail(&dist, ms_cli_fail("score", st));
    ms_dist_close(&dist);
    if (agreed_exit)
        return agreed_exit;
    return tally[N_STOPPED] > 0 ? EXIT_INTERRUPTED : tally[N_FAILED] > 0 ? 1 : 0;
}

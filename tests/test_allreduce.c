/* The gradient all-reduce (pipeline/dist/allreduce.h).
 *
 * test_allreduce --buckets CONFIG: the bucket boundaries, on the CPU alone (NCCL cannot run
 * here): the paper's network (CONFIG = configs/paper.ini) at the default bucket size gives the
 * buckets worked out by hand from its layer sizes, a made-up layer table gives its hand-worked
 * buckets at three sizes, and every plan tiles the buffer from its end down, each bucket
 * minimal (without its lowest layer it would be under the size).
 *
 * test_allreduce [--backend cpu|ref|cuda], alone or under `mpirun -np R` (R = 1 to 3): the
 * interface, forced to reduce even with one rank, on the path the backend takes (MPI_Allreduce
 * for cpu and ref, NCCL for cuda):
 *   - integer-valued gradients, different on every rank, through the buckets started layer by
 *     layer as the backward hook starts them, and through a bare wait: the mean must be exact
 *     (sums of integers below 2^24 are exact in any order; the division rounds once);
 *   - a real backward pass with the hook on identical batches on every rank: the mean of R
 *     equal gradients, which for R <= 3 is a known float expression of them;
 *   - both again with one bucket per layer (MILSCREEN_BUCKET_KB=0).
 * Every rank checks; the exit status is the same on every rank. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/net.h"
#include "engine/rng.h"
#include "ms_build_config.h"
#include "pipeline/dist/allreduce.h"
#include "pipeline/dist/dist.h"

/* ---- buckets ------------------------------------------------------------------------------ */

static int find_layer(const ms_spec_t *s, const char *name)
{
    for (int i = 0; i < s->nlayers; i++)
        if (!strcmp(s->layers[i].name, name))
            return i;
    return -1;
}

/* Tiles [0, total) from its end down, each bucket minimal for its size target. */
static void check_plan(const char *what, const ms_layer_t *L, int nl, size_t total, size_t elems,
                       const ms_bucket_t *b, int nb)
{
    size_t end = total;
    for (int i = 0; i < nb; i++) {
        CHECK(b[i].off + b[i].n == end && b[i].n > 0, "%s: bucket %d is [%zu, %zu), the one "
              "before ended at %zu", what, i, b[i].off, b[i].off + b[i].n, end);
        CHECK(b[i].off == L[b[i].layer].w_off, "%s: bucket %d starts at %zu, its lowest layer "
              "%d at %zu", what, i, b[i].off, b[i].layer, L[b[i].layer].w_off);
        size_t low = L[b[i].layer].nw + L[b[i].layer].nb;
        CHECK(low > 0 && (b[i].n == low || b[i].n - low < elems), "%s: bucket %d would reach "
              "%zu without its lowest layer (target %zu)", what, i, b[i].n - low, elems);
        if (i + 1 < nb)
            CHECK(b[i].n >= elems, "%s: bucket %d holds %zu < %zu but is not the last", what, i,
                  b[i].n, elems);
        end = b[i].off;
    }
    CHECK(end == 0, "%s: parameters [0, %zu) in no bucket", what, end);
    (void)nl;
}

static int test_buckets(const char *config)
{
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_layer_t *L = NULL;
    ms_bucket_t *b = NULL;
    CHECK_OK(ms_config_load(&cfg, config));
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    if (spec.nlayers == 0)
        return check_summary();
    L = calloc((size_t)spec.nlayers, sizeof *L);
    b = calloc((size_t)spec.nlayers, sizeof *b);
    CHECK_OK(ms_spec_resolve(&spec, 900, 900, L));
    const size_t np = ms_spec_nparams(&spec), elems = MS_ALLREDUCE_BUCKET_KB * 1024 / 4;
    CHECK(np == 484476, "the paper's network has %zu parameters, not 484,476", np);

    /* by hand, from the layer table (`milscreen model`), 131,072 floats per bucket, from the
     * back: fc 156 + mil 12 + conv7 12,012 + conv6 129,000 = 141,180 (>= 131,072: closes at
     * conv6); conv5 147,584 alone; conv4 73,856 + conv3 102,464 = 176,320; conv2 18,496 +
     * conv1 896 = 19,392, the rest */
    int nb = ms_allreduce_buckets(L, spec.nlayers, elems, b);
    const struct { const char *layer; size_t n; } want[] = {
        {"conv6", 141180}, {"conv5", 147584}, {"conv3", 176320}, {"conv1", 19392}};
    CHECK(nb == 4, "paper network: %d buckets, not 4", nb);
    for (int i = 0; i < nb && i < 4; i++) {
        CHECK(b[i].layer == find_layer(&spec, want[i].layer) && b[i].n == want[i].n,
              "paper network bucket %d: layer %s, %zu parameters; expected %s, %zu", i,
              spec.layers[b[i].layer].name, b[i].n, want[i].layer, want[i].n);
        printf("  bucket %d: %-6s %7zu parameters [%6zu, %6zu)\n", i,
               spec.layers[b[i].layer].name, b[i].n, b[i].off, b[i].off + b[i].n);
    }
    check_plan("paper, 512 KiB", L, spec.nlayers, np, elems, b, nb);
    for (size_t e = 0; e <= np + 1; e += 30011) { /* many sizes, properties only */
        nb = ms_allreduce_buckets(L, spec.nlayers, e, b);
        char what[64];
        snprintf(what, sizeof what, "paper, %zu elements", e);
        check_plan(what, L, spec.nlayers, np, e, b, nb);
    }
    nb = ms_allreduce_buckets(L, spec.nlayers, 0, b); /* one per layer with parameters */
    CHECK(nb == 9, "paper network, size 0: %d buckets, not one per layer with parameters (9)",
          nb);

    /* a made-up table: parameters 10, 0, 5, 100, 0, 3 (offsets chained as engine/spec.c
     * chains them) */
    ms_layer_t T[6] = {{0}};
    const size_t sizes[6] = {10, 0, 5, 100, 0, 3};
    size_t off = 0;
    for (int i = 0; i < 6; i++) {
        T[i].w_off = off;
        T[i].nw = sizes[i] > 1 ? sizes[i] - 1 : sizes[i]; /* weights, then one bias */
        T[i].nb = sizes[i] > 1 ? 1 : 0;
        T[i].b_off = off + T[i].nw;
        off += sizes[i];
    }
    ms_bucket_t tb[6];
    /* target 8: 3 (layer 5), +100 (layer 3) = 103 closes; 5 (layer 2) + 10 (layer 0) = 15 */
    nb = ms_allreduce_buckets(T, 6, 8, tb);
    CHECK(nb == 2 && tb[0].layer == 3 && tb[0].n == 103 && tb[0].off == 15 && tb[1].layer == 0 &&
          tb[1].n == 15 && tb[1].off == 0, "table, 8: %d buckets (%d:%zu, %d:%zu)", nb,
          tb[0].layer, tb[0].n, tb[1].layer, tb[1].n);
    /* target 103, met exactly by 3 + 100: the bucket closes at layer 3 ("at least") */
    nb = ms_allreduce_buckets(T, 6, 103, tb);
    CHECK(nb == 2 && tb[0].layer == 3 && tb[0].n == 103 && tb[1].n == 15,
          "table, 103: %d buckets (%d:%zu)", nb, tb[0].layer, tb[0].n);
    /* target 1000: everything in one bucket that starts after layer 0 */
    nb = ms_allreduce_buckets(T, 6, 1000, tb);
    CHECK(nb == 1 && tb[0].layer == 0 && tb[0].n == 118, "table, 1000: %d buckets", nb);
    /* target 4: 3 < 4, +100 closes at layer 3; 5 alone closes at layer 2; 10 alone */
    nb = ms_allreduce_buckets(T, 6, 4, tb);
    CHECK(nb == 3 && tb[0].layer == 3 && tb[1].layer == 2 && tb[1].n == 5 && tb[2].layer == 0,
          "table, 4: %d buckets", nb);
    check_plan("table, 4", T, 6, 118, 4, tb, nb);

    free(L), free(b);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return check_summary();
}

/* ---- the interface, on ranks ------------------------------------------------------------- */

static const char *const NET =
    "[net]\nchannels = 2\nclasses = 3\n"
    "[c1]\ntype = conv\nfilters = 8\nsize = 3\n"
    "[p1]\ntype = maxpool\nsize = 3\nstride = 2\n"
    "[c2]\ntype = conv\nfilters = 16\nsize = 3\n"
    "[c3]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
    "[mil]\ntype = mil\npool = noisy_and\na = 7.5\n"
    "[fc]\ntype = fc\nhead = softmax\n";

/* An integer in [-2^20, 2^20], different for every rank and element: R of them sum exactly. */
static float int_value(int rank, size_t i)
{
    return (float)((int64_t)(ms_mix64((uint64_t)rank * 1000003 + i) % 2097153) - 1048576);
}

static void check_interface(ms_dist_t *d, const char *backend, const char *bucket_kb)
{
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    ms_allreduce_t *ar = NULL;
    float *g = NULL, *want = NULL, *x = NULL, *t = NULL;
    const int R = d->ranks, n = 2, h = 23, w = 21;
    setenv("MILSCREEN_BUCKET_KB", bucket_kb, 1);
    CHECK_OK(ms_config_parse(&cfg, NET, "test net"));
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK_OK(ms_backend_open(&be, backend, d->local_rank, 1, "fp32"));
    if (be)
        CHECK_OK(ms_net_create(&net, &spec, be, MS_F32, 7));
    if (net)
        CHECK_OK(ms_allreduce_open(&ar, d, net, 1));
    if (!ar)
        goto out;
    const ms_allreduce_kind_t kind = ms_allreduce_kind(ar);
    CHECK(kind == (strcmp(be->name, "cuda") ? MS_ALLREDUCE_MPI : MS_ALLREDUCE_NCCL),
          "%s backend, %d rank(s): all-reduce '%s'", be->name, R, ms_allreduce_describe(ar));
    if (d->rank == 0)
        printf("%s, buckets of %s KiB: %s\n", be->name, bucket_kb, ms_allreduce_describe(ar));
    const size_t np = ms_net_nparams(net);
    g = malloc(np * sizeof *g);
    want = malloc(np * sizeof *want);

    /* integers: through the buckets as the hook starts them, then through a bare wait */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < np; i++) {
            g[i] = int_value(d->rank, i);
            double s = 0;
            for (int r = 0; r < R; r++)
                s += int_value(r, i);
            want[i] = (float)s / (float)R; /* s exact in float: |s| < 2^22 */
        }
        CHECK_OK(ms_net_write(net, ms_net_grads(net), g));
        if (pass == 0)
            for (int l = spec.nlayers - 1; l >= 0; l--)
                CHECK_OK(ms_allreduce_layer_done(ar, l));
        CHECK_OK(ms_allreduce_wait(ar));
        CHECK_OK(ms_net_read(net, ms_net_grads(net), g));
        size_t bad = 0, moved = 0, first = np;
        for (size_t i = 0; i < np; i++) {
            bad += g[i] != want[i];
            moved += g[i] != int_value(d->rank, i);
            if (g[i] != want[i] && first == np)
                first = i;
        }
        CHECK(bad == 0, "rank %d, %s, integers (%s): %zu of %zu means not exact, the first "
              "[%zu] %.9g instead of %.9g", d->rank, be->name, pass ? "bare wait" : "hook", bad,
              np, first, first < np ? g[first] : 0.0, first < np ? want[first] : 0.0);
        if (R > 1) /* the comparison has power: the mean is not this rank's own */
            CHECK(moved > np / 2, "rank %d: only %zu of %zu values changed", d->rank, moved, np);
    }

    /* a real backward pass with the hook; every rank the same batch, so the mean of R equal
     * gradients: g itself for R = 1 and 2 (g + g = 2g exactly), fl(fl(3g) / 3) for R = 3
     * (2g is exact, so any order sums to fl(3g)) */
    const size_t nx = (size_t)n * spec.channels * h * w;
    x = malloc(nx * sizeof *x);
    t = calloc((size_t)n * spec.classes, sizeof *t);
    for (size_t i = 0; i < nx; i++)
        x[i] = 2.0f * ms_uniform(0xa11, i) - 1.0f;
    for (int i = 0; i < n; i++)
        t[i * spec.classes + i % spec.classes] = 1;
    ms_pass_t pass = {.seed = 3, .step = 1};
    double loss = 0;
    CHECK_OK(ms_net_plan(net, n, h, w, 1));
    CHECK_OK(ms_net_forward(net, x, &pass));
    CHECK_OK(ms_net_loss(net, t, &loss));
    /* the local gradients first, from a pass without the hook */
    ms_allreduce_close(ar);
    ar = NULL;
    CHECK_OK(ms_net_backward(net, &pass, 0));
    CHECK_OK(ms_net_read(net, ms_net_grads(net), want));
    for (size_t i = 0; i < np; i++)
        want[i] = R == 3 ? (3.0f * want[i]) / 3.0f : want[i];
    CHECK_OK(ms_allreduce_open(&ar, d, net, 1));
    CHECK_OK(ms_net_forward(net, x, &pass));
    CHECK_OK(ms_net_loss(net, t, &loss));
    CHECK_OK(ms_net_backward(net, &pass, 0)); /* the buckets start in here on GPU ranks */
    CHECK_OK(ms_allreduce_wait(ar));
    CHECK_OK(ms_net_read(net, ms_net_grads(net), g));
    size_t bad = 0, nonzero = 0;
    for (size_t i = 0; i < np; i++) {
        bad += g[i] != want[i];
        nonzero += g[i] != 0;
    }
    CHECK(bad == 0 && nonzero > np / 2, "rank %d, %s, backward with the hook: %zu of %zu "
          "gradients differ from the mean of equal ones (%zu non-zero)", d->rank, be->name, bad,
          np, nonzero);
out:
    ms_allreduce_close(ar);
    ms_net_free(net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    free(g), free(want), free(x), free(t);
}

int main(int argc, char **argv)
{
    const char *backend = MS_HAVE_DNNL ? "cpu" : "ref";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--buckets") && i + 1 < argc)
            return test_buckets(argv[i + 1]);
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else {
            fprintf(stderr, "usage: test_allreduce [--buckets CONFIG] [--backend NAME]\n");
            return 2;
        }
    }
    ms_dist_t d;
    if (ms_dist_open(&d) != MS_OK) {
        fprintf(stderr, "FAIL: %s\n", ms_error_message());
        return 1;
    }
    if (d.ranks > 3) {
        fprintf(stderr, "test_allreduce: run it on 1 to 3 ranks (the backward check's "
                        "expected mean is written for those)\n");
        return ms_dist_fail(&d, 2);
    }
    if (!strcmp(backend, "cuda")) {
        ms_backend_t *probe = NULL;
        if (ms_backend_cuda(&probe, d.local_rank, "fp32") != MS_OK &&
            strstr(ms_error_message(), "no CUDA device")) {
            printf("skipped: no CUDA device (%s)\n", ms_error_message());
            ms_dist_close(&d);
            return 0;
        }
        ms_backend_close(probe);
    }
    check_interface(&d, backend, "512");
    check_interface(&d, backend, "0");
    double fails[1] = {check_fail};
    if (ms_dist_sum(&d, fails, 1) != MS_OK)
        return ms_dist_fail(&d, 1);
    int rc = check_summary();
    if (d.rank == 0 && fails[0] > check_fail)
        printf("other ranks failed %.0f checks\n", fails[0] - check_fail);
    ms_dist_close(&d);
    return rc || fails[0] > 0;
}

/* Localisation: Otsu thresholds against a brute-force Otsu, loopy belief propagation against
 * exact inference on chains (where BP is exact), its symmetries, and denoising of synthetic
 * blobs with salt-and-pepper noise; degenerate inputs give the documented results. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pipeline/localise/localise.h"
#include "pipeline/eval/metrics.h"

/* xorshift64*: reproducible test data without touching the engine's RNG. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double normal(void)
{
    double u = uniform() + 1e-300, v = uniform();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* Otsu by definition: every split of the sorted values, between-class variance w0 w1 (m0-m1)^2
 * on the raw values (no histogram). Returns the largest value of the lower class. */
static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static float otsu_brute(const float *x, size_t n)
{
    float *s = malloc(n * sizeof *s);
    memcpy(s, x, n * sizeof *s);
    qsort(s, n, sizeof *s, cmpf);
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += s[i];
    double best = -1, sum0 = 0;
    float t = s[0];
    for (size_t i = 0; i + 1 < n; i++) {
        sum0 += s[i];
        if (s[i] == s[i + 1])
            continue;
        double w0 = (double)(i + 1), w1 = (double)(n - i - 1);
        double d = sum0 / w0 - (total - sum0) / w1;
        double v = w0 * w1 * d * d;
        if (v > best) {
            best = v;
            t = s[i];
        }
    }
    free(s);
    return t;
}

static void test_otsu(void)
{
    /* Bimodal: 6000 values around 10 (sd 1) and 3000 around 30 (sd 2). */
    size_t n = 9000;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = i < 6000 ? (float)(10 + normal()) : (float)(30 + 2 * normal());
    float t = ms_otsu_threshold(x, n), tb = otsu_brute(x, n);
    float lo = x[0], hi = x[0];
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    /* Between two well-separated modes the exact split lies anywhere in the empty gap, so
     * compare by what it separates: every value is put on its own mode's side. */
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong += (x[i] > t) != (i >= 6000);
    CHECK(wrong == 0, "Otsu %g (brute force %g) misplaces %zu of %zu", t, tb, wrong, n);
    CHECK(t > 14 && t < 24, "Otsu threshold %g between modes at 10 and 30", t);

    /* Overlapping modes: the histogram's split must match the exact one to within about a
     * bin, since binning moves each value by at most one bin width (range / 1024). */
    for (size_t i = 0; i < n; i++)
        x[i] = i < 6000 ? (float)(10 + 3 * normal()) : (float)(18 + 3 * normal());
    t = ms_otsu_threshold(x, n);
    tb = otsu_brute(x, n);
    lo = hi = x[0];
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    double bin = (hi - lo) / MS_OTSU_BINS;
    CHECK(fabs(t - tb) <= 2 * bin, "overlapping modes: Otsu %g, brute force %g (bin %g)", t,
          tb, bin);

    /* Degenerate inputs. */
    CHECK(ms_otsu_threshold(x, 0) == 0, "empty input thresholds at 0");
    for (size_t i = 0; i < 100; i++)
        x[i] = 7.5f;
    CHECK(ms_otsu_threshold(x, 100) == 7.5f, "constant input thresholds at the constant");
    x[3] = NAN;
    x[50] = INFINITY;
    CHECK(ms_otsu_threshold(x, 100) == 7.5f, "non-finite values are ignored");
    float nan1[2] = {NAN, NAN};
    CHECK(ms_otsu_threshold(nan1, 2) == 0, "nothing finite thresholds at 0");
    float two[6] = {0, 0, 0, 1, 1, 0};
    t = ms_otsu_threshold(two, 6);
    CHECK(t >= 0 && t < 1, "two levels 0/1: threshold %g in [0,1)", t);
    /* The midpoint of the gap, not its lower end, on a plateau of empty bins. */
    CHECK(fabs(t - 0.5) < 0.01, "two levels: threshold %g at the middle of the gap", t);
    free(x);
}

static void test_quantile(void)
{
    /* Against sorting, on data with many ties (values quantised to 20 levels) and without. */
    size_t n = 5001;
    float *x = malloc(n * sizeof *x), *s = malloc(n * sizeof *s);
    int bad = 0;
    for (int trial = 0; trial < 8; trial++) {
        size_t m = trial < 4 ? n : 1 + (size_t)trial;
        for (size_t i = 0; i < m; i++)
            x[i] = trial % 2 ? (float)floor(20 * uniform()) : (float)normal();
        memcpy(s, x, m * sizeof *s);
        qsort(s, m, sizeof *s, cmpf);
        const double qs[] = {0, 0.25, 0.5, 0.999, 1};
        for (int j = 0; j < 5; j++) {
            float q;
            CHECK_OK(ms_quantile(x, m, qs[j], &q));
            bad += q != s[(size_t)(qs[j] * (double)(m - 1))];
        }
    }
    CHECK(bad == 0, "quantiles equal the sorted values (%d differ)", bad);
    float y[4] = {NAN, 3, INFINITY, 1};
    float q;
    CHECK_OK(ms_quantile(y, 4, 1, &q));
    CHECK(q == 3, "non-finite values ignored (max of {3, 1} is %g)", q);
    CHECK_OK(ms_quantile(y, 0, 0.5, &q));
    CHECK(q == 0, "no values: 0");
    ms_error_clear();
    CHECK(ms_quantile(y, 4, 1.5, &q) == MS_EARG, "q outside [0, 1] is an error");
    free(x);
    free(s);
}

static void test_otsu_mask(void)
{
    /* 2 channels, 4x4: channel 0 at 100 on the left half (else 1), channel 1 at 1000 on the
     * top row only (else 1). */
    enum { C = 2, H = 4, W = 4 };
    float img[C * H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            img[y * W + x] = x < 2 ? 100 : 1;
            img[H * W + y * W + x] = y < 1 ? 1000 : 1;
        }
    uint8_t m[H * W];
    CHECK_OK(ms_otsu_mask(m, img, C, H, W, 0));
    int ok = 1;
    for (int i = 0; i < H * W; i++)
        ok &= m[i] == ((i % W) < 2);
    CHECK(ok, "channel 0 mask is the left half");
    CHECK_OK(ms_otsu_mask(m, img, C, H, W, 1));
    ok = 1;
    for (int i = 0; i < H * W; i++)
        ok &= m[i] == ((i / W) < 1);
    CHECK(ok, "channel 1 mask is the top row");
    /* Sum of the scaled channels: 2 on 2 pixels, 1 on 8, 0 on 6. Otsu on {0 x6, 1 x8, 2 x2}
     * splits below 1 (between-class variance 0.338 against 0.223 above it), so the mask is
     * the union: left half or top row. A raw sum would be the top row alone (1000 drowns
     * 100), which is why channels are scaled first. */
    CHECK_OK(ms_otsu_mask(m, img, C, H, W, -1));
    ok = 1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            ok &= m[y * W + x] == (x < 2 || y < 1);
    CHECK(ok, "scaled channel sum: the union of both channels' bright parts");
    /* A flat channel adds nothing. */
    for (int i = 0; i < H * W; i++)
        img[H * W + i] = 7;
    CHECK_OK(ms_otsu_mask(m, img, C, H, W, -1));
    ok = 1;
    for (int i = 0; i < H * W; i++)
        ok &= m[i] == ((i % W) < 2);
    CHECK(ok, "a flat channel is ignored in the sum");
    ms_error_clear();
    CHECK(ms_otsu_mask(m, img, C, H, W, 2) == MS_EARG, "channel out of range is an error");
    CHECK(ms_otsu_mask(m, img, C, H, W, -2) == MS_EARG, "channel -2 is an error");
}

/* Exact marginal log-odds (sum) or MAP (max) of a binary Potts chain by enumeration. */
static void chain_exact(const float *u, int n, double beta, int max_product, int *decision,
                        double *margin)
{
    double p1[16] = {0}, p0[16] = {0}, best = -INFINITY;
    int best_s = 0;
    for (int s = 0; s < (1 << n); s++) {
        double e = 0;
        for (int i = 0; i < n; i++) {
            e += ((s >> i) & 1) ? u[i] : 0;
            if (i + 1 < n)
                e += (((s >> i) & 1) == ((s >> (i + 1)) & 1)) ? beta : 0;
        }
        if (e > best) {
            best = e;
            best_s = s;
        }
        for (int i = 0; i < n; i++) {
            if ((s >> i) & 1)
                p1[i] += exp(e);
            else
                p0[i] += exp(e);
        }
    }
    for (int i = 0; i < n; i++) {
        if (max_product) {
            decision[i] = (best_s >> i) & 1;
            margin[i] = 1; /* ties of the MAP are ruled out below by the random unaries */
        } else {
            double lo = log(p1[i] / p0[i]);
            decision[i] = lo > 0;
            margin[i] = fabs(lo);
        }
    }
}

static void test_lbp_chain_exact(void)
{
    /* On a tree BP is exact: a 1xN chain (and its Nx1 transpose) must give the exact
     * marginals' arg-max (sum-product) and the MAP (max-product), checking the message
     * formula and the indexing of both directions. */
    enum { N = 9 };
    int mismatches = 0, trials = 0;
    for (int trial = 0; trial < 200; trial++) {
        float u[N];
        for (int i = 0; i < N; i++)
            u[i] = (float)(3 * (uniform() - 0.5));
        double beta = 2 * uniform();
        for (int mp = 0; mp < 2; mp++) {
            int dec[N];
            double margin[N];
            chain_exact(u, N, beta, mp, dec, margin);
            uint8_t row[N], col[N];
            /* N sweeps carry every message across the chain; damping only slows the way
             * to the same fixed point, so give it 4N. */
            CHECK_OK(ms_lbp_binary(row, u, 1, N, beta, 4 * N, mp, 0.5));
            CHECK_OK(ms_lbp_binary(col, u, N, 1, beta, 4 * N, mp, 0.5));
            for (int i = 0; i < N; i++) {
                if (margin[i] < 1e-3)
                    continue; /* a near tie: float rounding may go either way */
                trials++;
                mismatches += row[i] != dec[i] || col[i] != dec[i];
            }
        }
    }
    CHECK(mismatches == 0, "BP on chains disagrees with exact inference at %d of %d pixels",
          mismatches, trials);
}

static int iou_pct(const uint8_t *a, const uint8_t *b, size_t n)
{
    return (int)(100 * ms_mask_iou(a, b, n));
}

static void test_lbp_patterns(void)
{
    enum { H = 20, W = 24 };
    ms_localise_opts_t o;
    ms_localise_defaults(&o);
    float L = (float)log(o.confidence / (1 - o.confidence));
    float u[H * W];
    uint8_t in[H * W], out[H * W], want[H * W];
    /* A 10x8 rectangle with a one-pixel hole, an isolated pixel, a 2-pixel speck and a
     * one-pixel-wide line 6 long: the hole fills, the specks and line go, the rectangle
     * (corners included) stays. */
    memset(in, 0, sizeof in);
    memset(want, 0, sizeof want);
    for (int y = 3; y < 11; y++)
        for (int x = 4; x < 14; x++)
            in[y * W + x] = want[y * W + x] = 1;
    in[6 * W + 8] = 0;
    in[16 * W + 2] = 1;
    in[15 * W + 20] = in[15 * W + 21] = 1;
    for (int x = 10; x < 16; x++)
        in[17 * W + x] = 1;
    for (int mp = 0; mp < 2; mp++) {
        for (int i = 0; i < H * W; i++)
            u[i] = in[i] ? L : -L;
        CHECK_OK(ms_lbp_binary(out, u, H, W, o.pairwise, o.iterations, mp, o.damping));
        CHECK(!memcmp(out, want, sizeof out), "%s-product: rectangle kept, hole filled, specks "
              "and line removed (IoU %d%%)", mp ? "max" : "sum", iou_pct(out, want, H * W));
    }
    /* Zero iterations: the unary alone, i.e. the raw threshold. */
    CHECK_OK(ms_lbp_binary(out, u, H, W, o.pairwise, 0, 0, o.damping));
    CHECK(!memcmp(out, in, sizeof out), "0 iterations gives the thresholded map back");
    /* Pairwise 0: no smoothing at any iteration count. */
    CHECK_OK(ms_lbp_binary(out, u, H, W, 0, 10, 0, 0));
    CHECK(!memcmp(out, in, sizeof out), "pairwise 0 gives the thresholded map back");

    /* Symmetry: the grid's transpose and mirror images commute with LBP, on random evidence.
     * This catches a message sent to, or read from, the wrong neighbour. */
    float r[H * W], rt[W * H], rm[H * W];
    uint8_t a[H * W], b[W * H], c[H * W];
    for (int i = 0; i < H * W; i++)
        r[i] = (float)(2 * (uniform() - 0.5));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            rt[x * H + y] = r[y * W + x];
            rm[(H - 1 - y) * W + (W - 1 - x)] = r[y * W + x];
        }
    for (int mp = 0; mp < 2; mp++) {
        CHECK_OK(ms_lbp_binary(a, r, H, W, 0.7, 7, mp, 0.3));
        CHECK_OK(ms_lbp_binary(b, rt, W, H, 0.7, 7, mp, 0.3));
        CHECK_OK(ms_lbp_binary(c, rm, H, W, 0.7, 7, mp, 0.3));
        int same_t = 1, same_m = 1, ones = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                same_t &= a[y * W + x] == b[x * H + y];
                same_m &= a[y * W + x] == c[(H - 1 - y) * W + (W - 1 - x)];
                ones += a[y * W + x];
            }
        CHECK(same_t && same_m, "%s-product: LBP commutes with transpose (%d) and 180-degree "
              "rotation (%d)", mp ? "max" : "sum", same_t, same_m);
        CHECK(ones > 0 && ones < H * W, "random evidence gives a mixed mask (%d ones)", ones);
    }

    /* Bad arguments are errors, not crashes. */
    ms_error_clear();
    CHECK(ms_lbp_binary(out, u, H, W, 1, 10, 0, 1.0) == MS_EARG, "damping 1 is an error");
    CHECK(ms_lbp_binary(out, u, H, W, -1, 10, 0, 0) == MS_EARG, "negative pairwise is an error");
    CHECK_OK(ms_lbp_binary(out, u, 0, W, 1, 10, 0, 0));
}

/* Synthetic Jacobian map: discs of value ~1 on a background ~0.05 plus salt-and-pepper
 * noise (a fraction of pixels set to 0 or to the blob level at random). */
static void make_blobs(float *map, uint8_t *truth, int H, int W, int nblobs, double noise)
{
    memset(truth, 0, (size_t)H * W);
    for (int b = 0; b < nblobs; b++) {
        double cx = 10 + uniform() * (W - 20), cy = 10 + uniform() * (H - 20);
        double rad = 4 + 4 * uniform();
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= rad * rad)
                    truth[y * W + x] = 1;
    }
    for (int i = 0; i < H * W; i++) {
        map[i] = truth[i] ? (float)(0.8 + 0.4 * uniform()) : (float)(0.1 * uniform());
        if (uniform() < noise)
            map[i] = uniform() < 0.5 ? 0.0f : (float)(0.8 + 0.4 * uniform());
    }
}

typedef struct {
    int calls, H, W, iterations;
} lbp_seen_t;

static ms_status_t lbp_counting(void *ctx, uint8_t *out, const float *unary, int H, int W,
                                double pairwise, int iterations, int max_product, double damping)
{
    lbp_seen_t *s = ctx;
    s->calls++, s->H = H, s->W = W, s->iterations = iterations;
    return ms_lbp_binary(out, unary, H, W, pairwise, iterations, max_product, damping);
}

static void test_jacobian_denoise(void)
{
    enum { H = 128, W = 160 };
    float *map = malloc(sizeof(float) * H * W);
    uint8_t *truth = malloc(H * W), *raw = malloc(H * W), *m = malloc(H * W);
    ms_localise_opts_t o;
    ms_localise_defaults(&o);
    for (int rep = 0; rep < 3; rep++) {
        make_blobs(map, truth, H, W, 8, 0.08);
        float t;
        CHECK_OK(ms_map_threshold(map, (size_t)H * W, &o, &t));
        for (int i = 0; i < H * W; i++)
            raw[i] = map[i] > t;
        double iou_raw = ms_mask_iou(raw, truth, (size_t)H * W);
        static const struct {
            ms_unary_mode_t unary;
            int max_product;
            ms_thresh_mode_t thr;
        } variants[] = {{MS_UNARY_BINARY, 0, MS_THRESH_LOG_OTSU},
                        {MS_UNARY_BINARY, 1, MS_THRESH_LOG_OTSU},
                        {MS_UNARY_SOFT, 0, MS_THRESH_LOG_OTSU},
                        {MS_UNARY_BINARY, 0, MS_THRESH_OTSU},
                        {MS_UNARY_SOFT, 0, MS_THRESH_OTSU},
                        {MS_UNARY_BINARY, 0, MS_THRESH_FRACTION}};
        for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
            ms_localise_opts_t ov = o;
            ov.unary = variants[v].unary;
            ov.max_product = variants[v].max_product;
            ov.threshold = variants[v].thr;
            ov.fraction = 0.4;
            CHECK_OK(ms_jacobian_mask(m, map, H, W, &ov));
            double iou = ms_mask_iou(m, truth, (size_t)H * W);
            /* 8% salt-and-pepper: about 4% of the background turns on, as many pixels as
             * the blobs have, so the raw IoU sits near 0.5-0.6; LBP recovers nearly all of it
             * (measured 0.98-0.99; the bound leaves room for other blob layouts while
             * failing if denoising does little). */
            CHECK(iou > iou_raw + 0.1 && iou > 0.9, "variant %zu rep %d: IoU after LBP %.3f, raw "
                  "threshold %.3f", v, rep, iou, iou_raw);
            if (v == 0 && rep == 0)
                printf("blobs + 8%% salt-and-pepper: IoU raw threshold %.3f, after LBP %.3f\n",
                       iou_raw, iou);
        }
    }
    /* Why Otsu is the default: guided-backprop maps are heavy-tailed. Blobs of log-normal
     * strength on a faint background, plus 20 hot pixels 40x the blob level: a threshold at
     * a fraction of the max keeps little but the hot pixels, Otsu still finds the blobs. */
    {
        make_blobs(map, truth, H, W, 8, 0.0);
        for (int i = 0; i < H * W; i++)
            map[i] = truth[i] ? (float)(0.1 * exp(0.5 * (uniform() + uniform() - 1)))
                              : (float)(0.005 * uniform());
        for (int j = 0; j < 20; j++)
            map[(int)(uniform() * H * W)] = 4.0f;
        ms_localise_opts_t ov = o;
        double iou[2][3]; /* [clip off/on][log-otsu, otsu, fraction] */
        for (int clip = 0; clip < 2; clip++)
            for (int mode = 0; mode < 3; mode++) {
                ov.clip = clip ? o.clip : 1;
                ov.threshold = mode == 0   ? MS_THRESH_LOG_OTSU
                               : mode == 1 ? MS_THRESH_OTSU
                                           : MS_THRESH_FRACTION;
                CHECK_OK(ms_jacobian_mask(m, map, H, W, &ov));
                iou[clip][mode] = ms_mask_iou(m, truth, (size_t)H * W);
            }
        printf("hot pixels: IoU without clipping log-Otsu %.3f Otsu %.3f fraction %.3f; "
               "clipped %.3f %.3f %.3f\n", iou[0][0], iou[0][1], iou[0][2], iou[1][0],
               iou[1][1], iou[1][2]);
        CHECK(iou[0][1] < 0.2 && iou[0][2] < 0.2, "hot pixels, no clipping: Otsu (IoU %.3f) and "
              "a fraction of the max (%.3f) both isolate the hot pixels", iou[0][1], iou[0][2]);
        CHECK(iou[1][1] > 0.9 && iou[1][2] > 0.9, "hot pixels, clipped at the 99.9th percentile: "
              "IoU %.3f with Otsu, %.3f with a fraction", iou[1][1], iou[1][2]);
        CHECK(iou[0][0] > 0.9 && iou[1][0] > 0.9, "log-Otsu (the default) is unmoved by hot "
              "pixels, clipped (IoU %.3f) or not (%.3f)", iou[1][0], iou[0][0]);
    }

    /* Deterministic: the same input gives the same bytes. */
    uint8_t *m2 = malloc(H * W);
    CHECK_OK(ms_jacobian_mask(m, map, H, W, &o));
    CHECK_OK(ms_jacobian_mask(m2, map, H, W, &o));
    CHECK(!memcmp(m, m2, H * W), "two runs give identical masks");

    /* Another solver (the GPU's in score) is called with the same unary and settings. */
    ms_localise_opts_t oh = o;
    lbp_seen_t seen = {0};
    oh.lbp = lbp_counting;
    oh.lbp_ctx = &seen;
    memset(m2, 7, H * W);
    CHECK_OK(ms_jacobian_mask(m2, map, H, W, &oh));
    CHECK(seen.calls == 1 && seen.H == H && seen.W == W && seen.iterations == o.iterations,
          "the solver hook ran once on the %dx%d map (%d calls)", W, H, seen.calls);
    CHECK(!memcmp(m, m2, H * W), "the hook's mask is the CPU solver's");
    free(m2);

    /* Degenerate maps. */
    for (int i = 0; i < H * W; i++)
        map[i] = 0;
    CHECK_OK(ms_jacobian_mask(m, map, H, W, &o));
    int ones = 0;
    for (int i = 0; i < H * W; i++)
        ones += m[i];
    CHECK(ones == 0, "an all-zero map gives an empty mask (%d ones)", ones);
    for (int i = 0; i < H * W; i++)
        map[i] = 1;
    CHECK_OK(ms_jacobian_mask(m, map, H, W, &o));
    ones = 0;
    for (int i = 0; i < H * W; i++)
        ones += m[i];
    CHECK(ones == 0, "a constant map with log-Otsu gives an empty mask (%d ones)", ones);
    ms_localise_opts_t ol = o;
    ol.threshold = MS_THRESH_OTSU;
    CHECK_OK(ms_jacobian_mask(m, map, H, W, &ol));
    ones = 0;
    for (int i = 0; i < H * W; i++)
        ones += m[i];
    CHECK(ones == 0, "a constant map with Otsu gives an empty mask (%d ones)", ones);
    ms_localise_opts_t of = o;
    of.threshold = MS_THRESH_FRACTION;
    CHECK_OK(ms_jacobian_mask(m, map, H, W, &of));
    ones = 0;
    for (int i = 0; i < H * W; i++)
        ones += m[i];
    CHECK(ones == H * W, "a constant positive map with a fraction threshold is all ones (%d)",
          ones);
    float one = 5;
    uint8_t m1 = 7;
    CHECK_OK(ms_jacobian_mask(&m1, &one, 1, 1, &o));
    CHECK(m1 == 0, "a 1x1 map gives 0 (constant)");
    ms_error_clear();
    of.confidence = 0.5;
    CHECK(ms_jacobian_mask(m, map, H, W, &of) == MS_EARG, "confidence 0.5 is an error");
    free(map);
    free(truth);
    free(raw);
    free(m);
}

static void test_config(void)
{
    ms_config_t *cfg = NULL;
    ms_localise_opts_t o;
    CHECK_OK(ms_config_parse(&cfg,
                             "[localise]\nmode = otsu\notsu_channel = 1\nthreshold = fraction\n"
                             "clip = 0.99\nfraction = 0.3\nunary = soft\nconfidence = 0.9\n"
                             "pairwise = 2\niterations = 4\ninference = max\ndamping = 0\n",
                             "test"));
    CHECK_OK(ms_localise_read(cfg, &o));
    CHECK(o.mode == MS_MASK_OTSU && o.otsu_channel == 1 && o.threshold == MS_THRESH_FRACTION &&
              o.clip == 0.99 && o.fraction == 0.3 && o.unary == MS_UNARY_SOFT &&
              o.confidence == 0.9 && o.pairwise == 2 && o.iterations == 4 &&
              o.max_product == 1 && o.damping == 0,
          "every [localise] key is read");
    CHECK_OK(ms_config_check_used(cfg));
    ms_config_free(cfg);
    CHECK_OK(ms_config_parse(&cfg, "[localise]\nthreshold = median\n", "test"));
    ms_error_clear();
    CHECK(ms_localise_read(cfg, &o) == MS_ECONFIG, "an unknown threshold mode is an error");
    CHECK(strstr(ms_error_message(), "test:2") != NULL, "the error names the line: %s",
          ms_error_message());
    ms_config_free(cfg);
    CHECK_OK(ms_config_parse(&cfg, "", "test"));
    CHECK_OK(ms_localise_read(cfg, &o));
    ms_localise_opts_t d;
    ms_localise_defaults(&d);
    CHECK(o.mode == d.mode && o.otsu_channel == d.otsu_channel && o.threshold == d.threshold &&
              o.clip == d.clip && o.fraction == d.fraction && o.unary == d.unary &&
              o.confidence == d.confidence && o.pairwise == d.pairwise &&
              o.iterations == d.iterations && o.max_product == d.max_product &&
              o.damping == d.damping, "an empty config gives the defaults");
    ms_config_free(cfg);
}

int main(void)
{
    test_otsu();
    test_quantile();
    test_otsu_mask();
    test_lbp_chain_exact();
    test_lbp_patterns();
    test_jacobian_denoise();
    test_config();
    return check_summary();
}

/* Smoke training: the paper's network (configs/paper.ini, 4 classes) learns a small
 * synthetic MIL task with each pooling function. 8 images of 128x128 (a 5x5 instance map), 4 classes; class k draws its own
 * pattern in a class-dependent share of the 25 cells and a shared distractor (a ring) in
 * most others, so that no single cell or global statistic gives the label away. The loss
 * must fall at least 10x; with Noisy-AND the training accuracy must reach 100%.
 * usage: test_smoke_train BACKEND [POOL] [EPOCHS] [section.key=value ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/net.h"
#include "engine/rng.h"
#include "ms_build_config.h"

enum { N = 8, K = 4, S = 128, CELL = 24, GRID = 5 };

/* pattern k at cell (cy, cx) of image x (3, S, S) */
static void draw(float *x, int k, int cy, int cx, uint64_t key)
{
    int y0 = 4 + cy * CELL, x0 = 4 + cx * CELL;
    for (int dy = 0; dy < 20; dy++)
        for (int dx = 0; dx < 20; dx++) {
            int on;
            int ry = dy - 10, rx = dx - 10, r2 = ry * ry + rx * rx;
            switch (k) {
            case 0: on = (dy / 3) % 2 == 0; break;                 /* horizontal bars */
            case 1: on = (dx / 3) % 2 == 0; break;                 /* vertical bars */
            case 2: on = abs(dy - dx) < 3 || abs(dy + dx - 19) < 3; break; /* cross */
            case 3: on = ((dy / 5) + (dx / 5)) % 2 == 0; break;    /* checker */
            default: on = r2 < 81 && r2 > 36; break;               /* ring: distractor */
            }
            float v = on ? 1.0f : 0.0f;
            v += 0.2f * (ms_uniform(key, (uint64_t)dy * 20 + dx) - 0.5f);
            for (int c = 0; c < 3; c++)
                x[((size_t)c * S + y0 + dy) * S + x0 + dx] = v * (c == 0 ? 1.0f : 0.5f);
        }
}

static void make_task(float *x, float *t)
{
    memset(x, 0, sizeof(float) * N * 3 * S * S);
    memset(t, 0, sizeof(float) * N * K);
    for (int n = 0; n < N; n++) {
        int k = n % K;
        t[n * K + k] = 1;
        float *xi = x + (size_t)n * 3 * S * S;
        for (int i = 0; i < S * S * 3; i++)
            xi[i] = 0.1f * (ms_uniform(99 + n, i) - 0.5f);
        int share = 8 + 3 * k; /* 8..17 of 25 cells carry the class pattern */
        for (int cell = 0; cell < GRID * GRID; cell++) {
            int pat = ((cell * 7 + n * 3) % (GRID * GRID)) < share ? k : 4;
            draw(xi, pat, cell / GRID, cell % GRID, ms_mix64((uint64_t)n * 100 + cell));
        }
    }
}

static char **extra_sets; /* further section.key=value from the command line (experiments) */
static int nextra;

static int train(const char *backend, const char *pool, const char *extra, int epochs,
                 int require_accuracy)
{
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_backend_t *be = NULL;
    ms_net_t *net = NULL;
    float *x = malloc(sizeof(float) * N * 3 * S * S), *t = malloc(sizeof(float) * N * K);
    float P[N * K], Y[N * K];
    char set[64];
    CHECK_OK(ms_config_load(&cfg, MS_SOURCE_DIR "/configs/paper.ini"));
    CHECK_OK(ms_config_set(cfg, "net.classes=4"));
    snprintf(set, sizeof set, "mil.pool=%s", pool);
    CHECK_OK(ms_config_set(cfg, set));
    if (extra)
        CHECK_OK(ms_config_set(cfg, extra));
    for (int i = 0; i < nextra; i++)
        CHECK_OK(ms_config_set(cfg, extra_sets[i]));
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK_OK(ms_backend_open(&be, backend, 0, 0, "fp32"));
    CHECK_OK(ms_net_create(&net, &spec, be, MS_F32, 1));
    if (!net)
        return 1;
    CHECK_OK(ms_net_plan(net, N, S, S, 1));
    make_task(x, t);
    ms_adam_t hp = {getenv("SMOKE_LR") ? atof(getenv("SMOKE_LR")) : 1e-3, 0.9, 0.999, 1e-8};
    double first = -1, loss = 0, best = 1e30, train_loss = 0;
    int acc_mil = 0, acc_fc = 0, epoch;
    for (epoch = 0; epoch <= epochs; epoch++) {
        if (epoch > 0) {
            ms_pass_t pass = {.seed = 1, .step = (uint64_t)epoch};
            CHECK_OK(ms_net_plan(net, N, S, S, 1));
            CHECK_OK(ms_net_forward(net, x, &pass));
            CHECK_OK(ms_net_loss(net, t, &train_loss));
            CHECK_OK(ms_net_backward(net, &pass, 0));
            CHECK_OK(ms_net_adam(net, &hp));
        }
        if (epoch % 10 == 0 || epoch == epochs) {
            /* the loss and accuracy of the model itself: no dropout */
            CHECK_OK(ms_net_plan(net, N, S, S, 0));
            CHECK_OK(ms_net_forward(net, x, NULL));
            CHECK_OK(ms_net_loss(net, t, &loss));
            CHECK_OK(ms_net_output(net, MS_OUT_MIL, P));
            CHECK_OK(ms_net_output(net, MS_OUT_FC, Y));
            if (first < 0)
                first = loss;
            best = loss < best ? loss : best;
            acc_mil = acc_fc = 0;
            for (int n = 0; n < N; n++) {
                int am = 0, af = 0;
                for (int k = 1; k < K; k++) {
                    am = P[n * K + k] > P[n * K + am] ? k : am;
                    af = Y[n * K + k] > Y[n * K + af] ? k : af;
                }
                acc_mil += t[n * K + am] > 0;
                acc_fc += t[n * K + af] > 0;
            }
            printf("%-9s epoch %3d loss %.4f (at start %.4f; training, with dropout %.4f) "
                   "accuracy MIL %d/%d head %d/%d\n",
                   pool, epoch, loss, first, train_loss, acc_mil, N, acc_fc, N);
            fflush(stdout);
            if (best * 10 <= first && (!require_accuracy || (acc_mil == N && acc_fc == N)))
                break;
        }
    }
    CHECK(best * 10 <= first, "%s: loss fell from %.4f only to %.4f in %d epochs", pool, first,
          best, epochs);
    if (require_accuracy)
        CHECK(acc_mil == N && acc_fc == N, "%s: training accuracy MIL %d/%d head %d/%d", pool,
              acc_mil, N, acc_fc, N);
    ms_net_free(net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    free(x), free(t);
    return 0;
}

int main(int argc, char **argv)
{
    const char *backend = argc > 1 ? argv[1] : "cpu";
    const char *only = argc > 2 ? argv[2] : NULL;
    int epochs = argc > 3 ? atoi(argv[3]) : 300;
    extra_sets = argv + 4;
    nextra = argc > 4 ? argc - 4 : 0;
    const struct { const char *pool, *extra; } pools[] = {
        {"noisy_and", NULL}, {"lse", "mil.r=2.5"}, {"gm", "mil.r=2.5"},
        {"max", NULL},       {"noisy_or", NULL},   {"isr", NULL}};
    for (size_t i = 0; i < sizeof pools / sizeof *pools; i++)
        if (!only || !strcmp(only, pools[i].pool))
            train(backend, pools[i].pool, pools[i].extra, epochs, i == 0);
    return check_summary();
}

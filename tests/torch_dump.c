/* Runs one training step of a network on random data with a chosen backend and writes
 * everything PyTorch needs to check it (tests/torch_compare.py): parameters before and
 * after one Adam step, input, targets, class-map logits, instance probabilities, P, head
 * probabilities, loss, parameter and input gradients, as raw float32 files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/net.h"
#include "engine/rng.h"

static int save(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 4, n, f) != n) {
        fprintf(stderr, "torch_dump: cannot write %s\n", path);
        if (f)
            fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

#define TRY(x)                                                                         \
    do {                                                                               \
        if ((x) != MS_OK) {                                                            \
            fprintf(stderr, "torch_dump: %s: %s\n", #x, ms_error_message());           \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 9) {
        fprintf(stderr, "usage: torch_dump BACKEND CONFIG OUTDIR N H W SEED TRAIN [section.key=value...]\n");
        return 2;
    }
    const char *backend = argv[1], *config = argv[2], *dir = argv[3];
    int N = atoi(argv[4]), H = atoi(argv[5]), W = atoi(argv[6]);
    uint64_t seed = strtoull(argv[7], NULL, 10);
    int train = atoi(argv[8]);
    ms_config_t *cfg;
    ms_spec_t spec;
    ms_backend_t *be;
    ms_net_t *net;
    TRY(ms_config_load(&cfg, config));
    for (int i = 9; i < argc; i++)
        TRY(ms_config_set(cfg, argv[i]));
    TRY(ms_spec_from_config(&spec, cfg));
    TRY(ms_backend_open(&be, backend, 0, 0, "fp32"));
    TRY(ms_net_create(&net, &spec, be, MS_F32, seed));
    TRY(ms_net_plan(net, N, H, W, train));
    const int C = spec.channels, K = spec.classes;
    const ms_plan_t *pl = ms_net_current_plan(net);
    size_t nx = (size_t)N * C * H * W, nm = (size_t)N * K * pl->mh * pl->mw;
    size_t np = ms_net_nparams(net);
    float *x = malloc(nx * 4), *t = calloc((size_t)N * K, 4), *buf = malloc((nm > np ? nm : np) * 4);
    float *dx = malloc(nx * 4);
    for (size_t i = 0; i < nx; i++)
        x[i] = 2.0f * ms_uniform(seed + 1000, i) - 1.0f;
    int sigmoid = spec.fc >= 0 && spec.layers[spec.fc].head == MS_HEAD_SIGMOID;
    for (int n = 0; n < N; n++) {
        t[n * K + (int)(ms_uniform(seed + 2000, n) * K)] = 1;
        if (sigmoid)
            t[n * K + (int)(ms_uniform(seed + 3000, n) * K)] = 1;
    }
    ms_pass_t pass = {.seed = seed, .step = 5};
    double loss;
    int bad = 0;
    TRY(ms_net_read(net, ms_net_params(net), buf));
    bad |= save(dir, "params", buf, np);
    bad |= save(dir, "x", x, nx);
    bad |= save(dir, "t", t, (size_t)N * K);
    TRY(ms_net_forward(net, x, &pass));
    /* every output is read before the loss: forward alone must produce them */
    TRY(ms_net_output(net, MS_OUT_LOGITS, buf));
    bad |= save(dir, "z", buf, nm);
    TRY(ms_net_output(net, MS_OUT_MAPS, buf));
    bad |= save(dir, "maps", buf, nm);
    TRY(ms_net_output(net, MS_OUT_MIL, buf));
    bad |= save(dir, "P", buf, (size_t)N * K);
    if (spec.fc >= 0) {
        TRY(ms_net_output(net, MS_OUT_FC, buf));
        bad |= save(dir, "fc", buf, (size_t)N * K);
    }
    if (!train) {
        TRY(ms_net_guided(net, -1));
        TRY(ms_net_output(net, MS_OUT_INPUT_GRAD, dx));
        bad |= save(dir, "guided", dx, nx);
    }
    TRY(ms_net_loss(net, t, &loss));
    TRY(ms_net_backward(net, &pass, 1));
    TRY(ms_net_read(net, ms_net_grads(net), buf));
    bad |= save(dir, "grads", buf, np);
    TRY(ms_net_output(net, MS_OUT_INPUT_GRAD, dx));
    bad |= save(dir, "dx", dx, nx);
    ms_adam_t hp = {1e-3, 0.9, 0.999, 1e-8};
    TRY(ms_net_adam(net, &hp));
    TRY(ms_net_read(net, ms_net_params(net), buf));
    bad |= save(dir, "params_after", buf, np);
    char path[4096];
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fprintf(f, "%d %d %d %d %d %d %d %llu %d %.17g\n", N, C, H, W, K, pl->mh, pl->mw,
            (unsigned long long)seed, train, loss);
    fclose(f);
    free(x), free(t), free(buf), free(dx);
    ms_net_free(net);
    ms_backend_close(be);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return bad;
}

/* milscreen model: the network of a config as a table (darknet's start-up table): each
 * layer with its output size, parameters and forward cost for one input size. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/spec.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/options.h"

static void help(void)
{
    printf("usage: milscreen model --config FILE [--set section.key=value ...] "
           "[--input WxH[xC]]\n"
           "       milscreen model --config FILE [--set ...] --print-config\n\n"
           "Prints each layer with its output size, the parameter count, the instance map\n"
           "size and the forward cost (multiply-adds x2) for one input of WxH pixels\n"
           "(default: 900x900, the paper's training crop; C defaults to [net] channels and,\n"
           "when given, sets it).\n"
           "--print-config prints the config as read, every default filled in, and exits.\n");
}

static void group(char *buf, size_t n, double x)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.0f", x);
    size_t len = 0, d = 0, digits = 0;
    for (const char *p = tmp; *p; p++)
        digits++;
    for (const char *p = tmp; *p && len + 2 < n; p++, d++) {
        if (d && (digits - d) % 3 == 0)
            buf[len++] = ',';
        buf[len++] = *p;
    }
    buf[len] = 0;
}

int ms_cmd_model(int argc, char **argv)
{
    ms_cli_t cli = {.cmd = "model"};
    static const struct option opts[] = {MS_CLI_COMMON_OPTIONS, MS_CLI_PRINT_CONFIG_OPTION,
                                         {"input", required_argument, 0, 'i'},
                                         {0, 0, 0, 0}};
    int w = 900, h = 900, c = 0, opt;
    const char *input = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = ms_cli_common(&cli, opt, optarg);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (opt == MS_OPT_HELP) {
            help();
            return 0;
        }
        if (opt == 'i')
            input = optarg;
        else
            return ms_cli_usage_error("model", "unknown option");
    }
    if (optind < argc)
        return ms_cli_usage_error("model", "unexpected argument '%s'", argv[optind]);
    if (!cli.config_path)
        return ms_cli_usage_error("model", "--config FILE is required");
    if (input && ms_cli_parse_size(input, &w, &h, &c, 0) != 0)
        return ms_cli_usage_error("model", "--input '%s': expected WxH or WxHxC", input);

    ms_status_t st = MS_OK;
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_layer_t *L = NULL;
    ms_options_t options;
    char cbuf[32];
    if (c > 0) {
        snprintf(cbuf, sizeof cbuf, "net.channels=%d", c);
        if (cli.nsets < MS_CLI_MAX_SETS)
            cli.sets[cli.nsets++] = cbuf;
    }
    MS_TRY(ms_cli_config(&cli, &cfg));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_TRY(ms_options_read(cfg, &options));
    MS_TRY(ms_config_check_used(cfg));
    if (cli.print_config) {
        MS_TRY(ms_cli_print_config(&cli, cfg, cli.config_path));
        goto done;
    }
    MS_ALLOC(L, spec.nlayers, "layers");
    MS_TRY(ms_spec_resolve(&spec, h, w, L));

    printf("network %s: input %dx%dx%d, %d classes\n\n", cli.config_path, w, h, spec.channels,
           spec.classes);
    printf("  #  %-8s %-8s %-22s %10s %10s\n", "layer", "type", "output (C x H x W)", "params",
           "GFLOP");
    double total = 0;
    size_t np = 0;
    for (int i = 0; i < spec.nlayers; i++) {
        const ms_layer_t *l = &L[i];
        char shape[64], what[32], pbuf[32];
        snprintf(shape, sizeof shape, "%d x %d x %d", l->oc, l->oh, l->ow);
        snprintf(what, sizeof what, "%s", ms_layer_kind_name(l->spec->kind));
        if (l->spec->kind == MS_LAYER_CONV || l->spec->kind == MS_LAYER_MAXPOOL ||
            l->spec->kind == MS_LAYER_AVGPOOL)
            snprintf(what, sizeof what, "%s%dx%d", ms_layer_kind_name(l->spec->kind),
                     l->spec->size, l->spec->size);
        if (l->spec->kind == MS_LAYER_MIL)
            snprintf(what, sizeof what, "%s", ms_mil_name(l->spec->pool));
        group(pbuf, sizeof pbuf, (double)(l->nw + l->nb));
        printf("%3d  %-8s %-8s %-22s %10s %10.3f\n", i, l->spec->name, what, shape, pbuf,
               l->flops / 1e9);
        total += l->flops;
        np += l->nw + l->nb;
    }
    int rf, stride;
    ms_spec_geometry(&spec, &rf, &stride);
    const ms_layer_t *m = &L[spec.mil];
    char pbuf[32];
    group(pbuf, sizeof pbuf, (double)np);
    printf("\nparameters: %s\n", pbuf);
    printf("output map: %dx%d (%d instances per class)\n", m->w, m->h, m->w * m->h);
    printf("receptive field %d px, total stride %d, smallest input %dx%d\n", rf, stride,
           ms_spec_min_input(&spec), ms_spec_min_input(&spec));
    printf("forward cost: %.1f GFLOP per image; training (forward + backward) about %.0f\n",
           total / 1e9, 3 * total / 1e9);
done:
    free(L);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return st ? ms_cli_fail("model", st) : 0;
}

/* Config parsing and the network spec: the paper's network resolves to the figures of
 * DESIGN.md §1, and bad configs fail naming file, line and key. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/config.h"
#include "engine/spec.h"
#include "ms_build_config.h"

static ms_status_t load_spec(const char *text, ms_spec_t *spec)
{
    ms_config_t *cfg = NULL;
    ms_status_t st = ms_config_parse(&cfg, text, "t.ini");
    if (st == MS_OK)
        st = ms_spec_from_config(spec, cfg);
    if (st == MS_OK)
        st = ms_config_check_used(cfg);
    ms_config_free(cfg);
    return st;
}

static void expect_error(const char *text, const char *needle)
{
    ms_spec_t spec = {0};
    ms_status_t st = load_spec(text, &spec);
    CHECK(st != MS_OK, "config should fail: %s", needle);
    CHECK(strstr(ms_error_message(), needle) != NULL, "message '%s' lacks '%s'",
          ms_error_message(), needle);
    ms_spec_free(&spec);
}

int main(void)
{
    /* the paper's network */
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    CHECK_OK(ms_config_load(&cfg, MS_SOURCE_DIR "/configs/paper.ini"));
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK(ms_spec_nparams(&spec) == 484476, "params %zu", ms_spec_nparams(&spec));
    CHECK(ms_spec_min_input(&spec) == 54, "min input %d", ms_spec_min_input(&spec));
    int rf, stride;
    ms_spec_geometry(&spec, &rf, &stride);
    CHECK(rf == 69 && stride == 16, "rf %d stride %d", rf, stride);
    ms_layer_t L[64];
    CHECK_OK(ms_spec_resolve(&spec, 900, 900, L));
    CHECK(L[spec.mil].h == 53 && L[spec.mil].w == 53, "map %dx%d", L[spec.mil].h,
          L[spec.mil].w);
    double fl = 0;
    for (int i = 0; i < spec.nlayers; i++)
        fl += L[i].flops;
    CHECK(fabs(fl / 1e9 - 82.3) < 0.05, "GFLOP %.3f", fl / 1e9);
    CHECK_OK(ms_spec_resolve(&spec, 64, 64, L));
    CHECK(L[spec.mil].h == 1 && L[spec.mil].w == 1, "64x64 map %dx%d", L[spec.mil].h,
          L[spec.mil].w);
    CHECK(ms_spec_resolve(&spec, 53, 200, L) == MS_ESHAPE, "53 px must be too small");
    /* floor rounding: a 64x64 crop gives an empty map */
    CHECK_OK(ms_config_set(cfg, "net.rounding=floor"));
    ms_spec_free(&spec);
    CHECK_OK(ms_spec_from_config(&spec, cfg));
    CHECK(ms_spec_resolve(&spec, 64, 64, L) == MS_ESHAPE, "floor rounding at 64x64");
    ms_spec_free(&spec);
    ms_config_free(cfg);

    /* pooling arithmetic against PyTorch's ceil_mode rule */
    CHECK(ms_window_out(894, 3, 2, 0, 1) == 447, "ceil 894");
    CHECK(ms_window_out(894, 3, 2, 0, 0) == 446, "floor 894");
    CHECK(ms_window_out(5, 2, 2, 1, 1) == 3, "ceil with pad: last window must start inside");
    CHECK(ms_window_out(2, 3, 2, 0, 1) == 1, "ceil: a window may hang over the edge");
    CHECK(ms_window_out(1, 3, 2, 0, 1) == 0, "ceil: but must start inside");
    CHECK(ms_window_out(2, 3, 2, 0, 0) == 0, "floor: the window must fit");

    /* typed errors with file:line */
    expect_error("[net]\nclasses = twelve\n", "t.ini:2: [net] classes = 'twelve' is not an integer");
    expect_error("[net]\nclasses = 0\n", "out of range");
    expect_error("[net]\nclasses = 3\nclases = 3\n[c]\ntype=conv\nfilters=3\nactivation=linear\n[m]\ntype=mil\n",
                 "t.ini:3: unknown key 'clases' in section [net]");
    expect_error("[net]\nclasses=2\n[c]\ntype=conv\nfilters=3\nactivation=linear\n[m]\ntype=mil\n",
                 "filters must be 2");
    expect_error("[net]\n[c]\nfilters=3\n", "t.ini:2: section [c] has no 'type'");
    expect_error("[net]\nthis line is broken\n", "t.ini:2: malformed line");
    expect_error("[net]\n[c]\ntype=conv\n[c]\ntype=conv\n", "t.ini:4: section [c] appears twice");
    expect_error("[net]\nclasses=2\n[c]\ntype=convolution\n", "t.ini:4: [c] type = 'convolution' is not one of");
    expect_error("[net]\nclasses=2\n[c]\ntype=conv\nfilters=2\nactivation=linear\n[m]\ntype=mil\npool=lse\nr=x\n",
                 "t.ini:10: [m] r = 'x' is not a number");
    expect_error("[net]\nclasses=2\n[c]\ntype=conv\nfilters=2\nactivation=linear\n", "no layer of type = mil");

    /* --set replaces and adds */
    CHECK_OK(ms_config_parse(&cfg, "[net]\nclasses = 3\n", "s.ini"));
    CHECK_OK(ms_config_set(cfg, "net.classes=5"));
    long v = 0;
    CHECK_OK(ms_config_int(cfg, "net", "classes", 1, 1, 10, &v));
    CHECK(v == 5, "set gave %ld", v);
    CHECK(ms_config_set(cfg, "noequals") == MS_EARG, "bad --set");
    CHECK(strstr(ms_config_where(cfg, "net", "classes"), "--set") != NULL, "where of --set");
    ms_config_free(cfg);
    return check_summary();
}

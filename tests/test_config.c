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

/* Comments after a value as inih reads them: ';' after a blank starts one, also right after
 * the blanks that follow '=' (an empty value: --print-config writes "test =   ; default"). */
static void test_inline_comments(void)
{
    ms_config_t *cfg = NULL;
    const char *v = NULL;
    CHECK_OK(ms_config_parse(&cfg, "[data]\ntest = ; default\ntrain = a.h5 ; b\n", "t"));
    CHECK_OK(ms_config_str(cfg, "data", "test", "unset", &v));
    CHECK(v && !strcmp(v, ""), "'test = ; default' gives '%s'", v ? v : "(null)");
    CHECK_OK(ms_config_str(cfg, "data", "train", "unset", &v));
    CHECK(v && !strcmp(v, "a.h5"), "'train = a.h5 ; b' gives '%s'", v ? v : "(null)");
    ms_config_free(cfg);
    /* a value beginning with ';' would be written back as "val = ;x", a comment: refused */
    expect_error("[data]\nval =;x\n", "may not begin with ';'");
}

int main(void)
{
    test_inline_comments();
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

    /* the stored config reads back whatever the length of a value (inih's 200-character line
     * limit made every checkpoint of a run with a long data.train list unloadable) */
    {
        size_t big = 20000;
        char *list = malloc(big + 1), *text = malloc(big + 64), *set = malloc(big + 32);
        size_t o = 0;
        for (int i = 0; o + 40 < big; i++)
            o += (size_t)snprintf(list + o, big - o, "%s/scratch/screen7/plate-%04d.h5",
                                  i ? " " : "", i);
        snprintf(text, big + 64, "[data]\ntrain = %s\n", list);
        CHECK_OK(ms_config_parse(&cfg, text, "long.ini"));
        const char *got = NULL;
        CHECK_OK(ms_config_str(cfg, "data", "train", "", &got));
        CHECK(got && !strcmp(got, list), "a %zu-character line parses whole", o);
        snprintf(set, big + 32, "data.val=%s", list);
        CHECK_OK(ms_config_set(cfg, set));
        char *t1 = NULL, *t2 = NULL;
        CHECK_OK(ms_config_text(cfg, &t1));
        ms_config_t *back = NULL;
        CHECK_OK(ms_config_parse(&back, t1, "stored"));
        CHECK_OK(ms_config_str(back, "data", "val", "", &got));
        CHECK(got && !strcmp(got, list), "a %zu-character --set value reads back", o);
        CHECK_OK(ms_config_text(back, &t2));
        CHECK(t1 && t2 && !strcmp(t1, t2), "the text reads back as the same text");
        ms_config_free(back);
        ms_config_free(cfg);
        free(t1), free(t2), free(list), free(text), free(set);
    }
    /* what the file allows: CR LF, a byte order mark, comments, ':' */
    CHECK_OK(ms_config_parse(&cfg, "\xef\xbb\xbf[net] ; the net\r\nclasses : 3 ; three\r\n"
                             "# comment\n  [ train ]\n  lr = 1e-3;no comment\n", "x.ini"));
    {
        long k = 0;
        const char *lr = NULL;
        CHECK_OK(ms_config_int(cfg, "net", "classes", 1, 1, 10, &k));
        CHECK_OK(ms_config_str(cfg, "train", "lr", "", &lr));
        CHECK(k == 3 && lr && !strcmp(lr, "1e-3;no comment"), "classes %ld lr '%s'", k,
              lr ? lr : "");
    }
    /* --set values that would not read back are refused, blanks around a value dropped */
    CHECK(ms_config_set(cfg, "data.train=a.h5 ;b.h5") == MS_EARG &&
              strstr(ms_error_message(), "comment"), "%s", ms_error_message());
    CHECK(ms_config_set(cfg, "data.train=a.h5\nb.h5") == MS_EARG &&
              strstr(ms_error_message(), "control character"), "%s", ms_error_message());
    CHECK(ms_config_set(cfg, "da ta.train=x") == MS_EARG, "a blank in a --set name");
    CHECK(ms_config_set(cfg, "data.tr:ain=x") == MS_EARG, "':' in a --set key");
    CHECK_OK(ms_config_set(cfg, "data.train=  a.h5;b.h5  "));
    {
        const char *tv = NULL;
        CHECK_OK(ms_config_str(cfg, "data", "train", "", &tv));
        CHECK(tv && !strcmp(tv, "a.h5;b.h5"), "trimmed '%s'", tv ? tv : "");
    }
    ms_config_free(cfg);
    expect_error("[net]x\n", "t.ini:1: malformed section header");
    expect_error("[]\n", "t.ini:1: empty section name");
    expect_error("classes = 3\n[net]\n", "t.ini:1: key 'classes' is outside any [section]");
    expect_error("[net]\nclasses = 3\nclasses = 4\n", "t.ini:3: [net] classes is given twice");
    expect_error("[net]\nclasses = 3\x01\n", "t.ini:2: control character");
    CHECK(ms_config_parse_n(&cfg, "[net]\nclasses = 3\0\n", 19, "n.ini") == MS_EFORMAT &&
              strstr(ms_error_message(), "n.ini:2: a NUL byte"), "%s", ms_error_message());
    return check_summary();
}

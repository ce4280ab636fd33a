/* Fuzz target: the INI parser (engine/config.c) and the network built from what it parses.
 * Properties beyond "no crash": an accepted config's text (what checkpoints store) parses
 * again to the same text, so a checkpoint's config is never unloadable (issue 11, item 5);
 * every error carries a message. The input is a config text; a line starting "#set " is
 * applied as a --set assignment instead. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/spec.h"
#include "tests/fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    /* split off "#set a.b=c" lines: they become --set assignments */
    char *sets[8];
    int nsets = 0;
    for (char *p = text; (p = strstr(p, "#set ")) && nsets < 8;) {
        if (p != text && p[-1] != '\n') {
            p += 5;
            continue;
        }
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        sets[nsets++] = p + 5;
        memset(p, ' ', 5); /* the line itself parses as blank-led text, not a comment */
        p = nl ? nl + 1 : p + strlen(p);
        if (!nl)
            break;
    }
    ms_config_t *cfg = NULL;
    ms_status_t st = ms_config_parse(&cfg, text, "fuzz.ini");
    if (st) {
        FUZZ_CHECK(ms_error_message()[0], "status %d without a message", st);
        ms_error_clear();
        free(text);
        return 0;
    }
    for (int i = 0; i < nsets && !st; i++)
        st = ms_config_set(cfg, sets[i]);
    if (st) {
        FUZZ_CHECK(ms_error_message()[0], "--set failed without a message");
        ms_error_clear();
        ms_config_free(cfg);
        free(text);
        return 0;
    }
    char *t1 = NULL, *t2 = NULL;
    FUZZ_CHECK(ms_config_text(cfg, &t1) == MS_OK, "ms_config_text failed: %s",
               ms_error_message());
    ms_config_t *again = NULL;
    st = ms_config_parse(&again, t1, "fuzz.ini (round trip)");
    FUZZ_CHECK(st == MS_OK, "the text of an accepted config does not parse again: %s\n%s",
               ms_error_message(), t1);
    FUZZ_CHECK(ms_config_text(again, &t2) == MS_OK, "ms_config_text failed");
    FUZZ_CHECK(!strcmp(t1, t2), "the config text changed on a round trip:\n%s\n---\n%s", t1, t2);
    /* the network of the config, when it is one */
    ms_spec_t spec = {0};
    if (ms_spec_from_config(&spec, cfg) == MS_OK)
        ms_spec_free(&spec);
    ms_error_clear();
    free(t1);
    free(t2);
    ms_config_free(again);
    ms_config_free(cfg);
    free(text);
    return 0;
}

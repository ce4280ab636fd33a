/* Name lists (pipeline/names.h): the checkpoint's '\n'-joined form split, compared in order,
 * looked up, and printed for messages, cut when too long. */
#include <string.h>

#include "check.h"
#include "pipeline/names.h"

int main(void)
{
    char **v = NULL, **w = NULL;
    int n = -1, m = -1;
    CHECK_OK(ms_names_split("DNA damage\nActin\nTubulin", &v, &n));
    CHECK(n == 3 && !strcmp(v[0], "DNA damage") && !strcmp(v[2], "Tubulin"), "split: %d", n);
    CHECK_OK(ms_names_split("", &w, &m));
    CHECK(m == 0 && w == NULL, "an empty list has no names: %d", m);
    CHECK_OK(ms_names_split(NULL, &w, &m));
    CHECK(m == 0, "NULL: no names");
    CHECK_OK(ms_names_split("a\n", &w, &m));
    CHECK(m == 2 && !strcmp(w[1], ""), "a trailing newline is an empty name: %d", m);
    ms_names_free(w, m);
    CHECK_OK(ms_names_split("DNA damage\nTubulin\nActin", &w, &m));
    CHECK(!ms_names_same(v, n, w, m), "the same names in another order differ");
    CHECK(ms_names_same(v, n, v, n), "a list is itself");
    CHECK(!ms_names_same(v, 2, v, 3), "a prefix is not the list");
    CHECK(ms_names_index("Actin", w, m) == 2 && ms_names_index("actin", w, m) == -1,
          "lookup is exact");
    char buf[64];
    CHECK(!strcmp(ms_names_format(buf, sizeof buf, v, n), "'DNA damage', 'Actin', 'Tubulin'"),
          "%s", buf);
    CHECK(!strcmp(ms_names_format(buf, sizeof buf, v, 0), "none"), "%s", buf);
    char small[20];
    ms_names_format(small, sizeof small, v, n);
    CHECK(strlen(small) < sizeof small && !strcmp(small + strlen(small) - 3, "..."),
          "cut with ...: %s", small);
    ms_names_free(v, n);
    ms_names_free(w, m);
    return check_summary();
}

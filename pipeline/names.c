/* Name lists (pipeline/names.h). */
#include "pipeline/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ms_status_t ms_names_split(const char *joined, char ***out, int *n)
{
    ms_status_t st = MS_OK;
    *out = NULL;
    *n = 0;
    if (!joined || !*joined)
        return MS_OK;
    int cap = 1;
    for (const char *p = joined; *p; p++)
        cap += *p == '\n';
    MS_ALLOC(*out, cap, "names");
    for (const char *p = joined;;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!((*out)[(*n)++] = strndup(p, len)))
            MS_FAIL(MS_ENOMEM, "out of memory for names");
        if (!e)
            break;
        p = e + 1;
    }
done:
    if (st) {
        ms_names_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return st;
}

void ms_names_free(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

int ms_names_same(char *const *a, int na, char *const *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return 0;
    return 1;
}

int ms_names_index(const char *name, char *const *v, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i], name))
            return i;
    return -1;
}

const char *ms_names_format(char *buf, size_t size, char *const *v, int n)
{
    size_t used = 0;
    snprintf(buf, size, "%s", n ? "" : "none");
    for (int i = 0; i < n; i++) {
        int w = snprintf(buf + used, size - used, "%s'%s'", i ? ", " : "", v[i]);
        if (w < 0 || used + (size_t)w >= size - 4) {
            snprintf(buf + (used < size - 4 ? used : size - 4), 4, "...");
            break;
        }
        used += (size_t)w;
    }
    return buf;
}

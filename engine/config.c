/* INI configuration: entries with their origin, typed getters, unknown-key detection. */
#include "engine/config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *sec, *key, *val;
    int line; /* 0 for --set, -1 for a default recorded by ms_config_record_defaults */
    int used;
} entry_t;

typedef struct {
    char *name;
    int line;
} section_t;

struct ms_config {
    char *origin; /* file name, or a label for text */
    entry_t *e;
    int n, cap;
    section_t *s;
    int ns, scap;
    /* parse state */
    int cur_line, long_line;
    FILE *fp;
    const char *text;
    ms_status_t st;
    int record_defaults; /* getters add the defaults they return as entries (line -1) */
};

static char *dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int find(const ms_config_t *c, const char *sec, const char *key)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].sec, sec) && !strcmp(c->e[i].key, key))
            return i;
    return -1;
}

static int find_section(const ms_config_t *c, const char *sec)
{
    for (int i = 0; i < c->ns; i++)
        if (!strcmp(c->s[i].name, sec))
            return i;
    return -1;
}

static ms_status_t add_section(ms_config_t *c, const char *sec, int line)
{
    if (find_section(c, sec) >= 0)
        return MS_OK;
    if (c->ns == c->scap) {
        int cap = c->scap ? 2 * c->scap : 16;
        section_t *s = realloc(c->s, (size_t)cap * sizeof *s);
        if (!s)
            return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
        c->s = s;
        c->scap = cap;
    }
    c->s[c->ns].name = dup(sec);
    c->s[c->ns].line = line;
    if (!c->s[c->ns].name)
        return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
    c->ns++;
    return MS_OK;
}

static ms_status_t add_entry(ms_config_t *c, const char *sec, const char *key, const char *val,
                             int line)
{
    ms_status_t st = add_section(c, sec, line);
    if (st)
        return st;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        entry_t *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e)
            return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
        c->e = e;
        c->cap = cap;
    }
    entry_t *e = &c->e[c->n];
    e->sec = dup(sec);
    e->key = dup(key);
    e->val = dup(val);
    e->line = line;
    e->used = 0;
    if (!e->sec || !e->key || !e->val)
        return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
    c->n++;
    return MS_OK;
}

/* Reader for ini_parse_stream: counts lines so that every handler call knows its line. */
static char *reader(char *str, int num, void *stream)
{
    ms_config_t *c = stream;
    char *r = NULL;
    if (c->fp) {
        r = fgets(str, num, c->fp);
    } else if (*c->text) {
        const char *nl = strchr(c->text, '\n');
        size_t len = nl ? (size_t)(nl - c->text + 1) : strlen(c->text);
        if (len > (size_t)num - 1)
            len = (size_t)num - 1;
        memcpy(str, c->text, len);
        str[len] = 0;
        c->text += len;
        r = str;
    }
    if (!r)
        return NULL;
    size_t len = strlen(r);
    int complete = len > 0 && r[len - 1] == '\n';
    if (!complete && len == (size_t)num - 1 && !c->long_line)
        c->long_line = c->cur_line + 1;
    /* a line read in pieces counts once */
    if (complete || len < (size_t)num - 1)
        c->cur_line++;
    return r;
}

static int handler(void *user, const char *sec, const char *key, const char *val)
{
    ms_config_t *c = user;
    if (c->st)
        return 1;
    int line = c->cur_line;
    if (!sec[0]) {
        c->st = MS_ERR(MS_ECONFIG, "%s:%d: key '%s' is outside any [section]", c->origin, line,
                       key);
        return 1;
    }
    if (find(c, sec, key) >= 0) {
        c->st = MS_ERR(MS_ECONFIG, "%s:%d: [%s] %s is given twice (first at line %d)", c->origin,
                       line, sec, key, c->e[find(c, sec, key)].line);
        return 1;
    }
    c->st = add_entry(c, sec, key, val, line);
    return 1;
}

/* inih reports sections only through keys: find header lines ourselves for empty sections
 * and for section order. */
static ms_status_t scan_headers(ms_config_t *c, const char *text)
{
    int line = 0;
    for (const char *p = text; *p;) {
        line++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '[') {
            const char *q = strchr(p, ']');
            const char *nl = strchr(p, '\n');
            if (q && (!nl || q < nl)) {
                char name[256];
                size_t len = (size_t)(q - p - 1);
                if (len >= sizeof name)
                    return MS_ERR(MS_ECONFIG, "%s:%d: section name too long", c->origin, line);
                memcpy(name, p + 1, len);
                name[len] = 0;
                /* trim like inih does */
                char *s = name;
                while (*s == ' ' || *s == '\t')
                    s++;
                char *e = s + strlen(s);
                while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                    *--e = 0;
                if (find_section(c, s) >= 0)
                    return MS_ERR(MS_ECONFIG,
                                  "%s:%d: section [%s] appears twice (first at line %d); "
                                  "every layer needs its own name",
                                  c->origin, line, s, c->s[find_section(c, s)].line);
                ms_status_t st = add_section(c, s, line);
                if (st)
                    return st;
            }
        }
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return MS_OK;
}

static ms_status_t parse(ms_config_t *c, const char *text)
{
    ms_status_t st = scan_headers(c, text);
    if (st)
        return st;
    c->text = text;
    c->cur_line = 0;
    int r = ini_parse_stream(reader, c, handler, c);
    if (c->st)
        return c->st;
    if (c->long_line)
        return MS_ERR(MS_ECONFIG, "%s:%d: line longer than %d characters", c->origin,
                      c->long_line, INI_MAX_LINE - 2);
    if (r > 0)
        return MS_ERR(MS_ECONFIG,
                      "%s:%d: malformed line (expected [section], key = value, or a comment)",
                      c->origin, r);
    if (r < 0)
        return MS_ERR(MS_EIO, "%s: cannot parse configuration", c->origin);
    return MS_OK;
}

ms_status_t ms_config_parse(ms_config_t **out, const char *text, const char *origin)
{
    ms_status_t st = MS_OK;
    ms_config_t *c = calloc(1, sizeof *c);
    if (!c)
        return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
    c->origin = dup(origin ? origin : "(config)");
    MS_TRY(parse(c, text ? text : ""));
    *out = c;
    return MS_OK;
done:
    ms_config_free(c);
    *out = NULL;
    return st;
}

ms_status_t ms_config_load(ms_config_t **out, const char *path)
{
    ms_status_t st = MS_OK;
    char *text = NULL;
    *out = NULL;
    if (!path)
        return ms_config_parse(out, "", "(defaults)");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return MS_ERR(MS_EIO, "%s: cannot open configuration: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return MS_ERR(MS_EIO, "%s: cannot read configuration", path);
    }
    long size = ftell(fp);
    rewind(fp);
    if (size < 0 || size > (1L << 24)) {
        fclose(fp);
        return MS_ERR(MS_EIO, "%s: not a configuration file (size %ld)", path, size);
    }
    MS_ALLOC(text, (size_t)size + 1, "configuration text");
    if (fread(text, 1, (size_t)size, fp) != (size_t)size)
        MS_FAIL(MS_EIO, "%s: read failed", path);
    text[size] = 0;
    if (memchr(text, 0, (size_t)size))
        MS_FAIL(MS_EFORMAT, "%s: not a text file", path);
    MS_TRY(ms_config_parse(out, text, path));
done:
    fclose(fp);
    free(text);
    return st;
}

ms_status_t ms_config_set(ms_config_t *c, const char *a)
{
    const char *dot = strchr(a, '.');
    const char *eq = strchr(a, '=');
    if (!dot || !eq || dot > eq || dot == a || eq == dot + 1)
        return MS_ERR(MS_EARG, "--set %s: expected section.key=value", a);
    char sec[256], key[256];
    size_t ls = (size_t)(dot - a), lk = (size_t)(eq - dot - 1);
    if (ls >= sizeof sec || lk >= sizeof key)
        return MS_ERR(MS_EARG, "--set %s: name too long", a);
    memcpy(sec, a, ls);
    sec[ls] = 0;
    memcpy(key, dot + 1, lk);
    key[lk] = 0;
    int i = find(c, sec, key);
    if (i >= 0) {
        char *v = dup(eq + 1);
        if (!v)
            return MS_ERR(MS_ENOMEM, "out of memory");
        free(c->e[i].val);
        c->e[i].val = v;
        c->e[i].line = 0;
        return MS_OK;
    }
    return add_entry(c, sec, key, eq + 1, 0);
}

void ms_config_free(ms_config_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].sec);
        free(c->e[i].key);
        free(c->e[i].val);
    }
    for (int i = 0; i < c->ns; i++)
        free(c->s[i].name);
    free(c->e);
    free(c->s);
    free(c->origin);
    free(c);
}

int ms_config_nsections(const ms_config_t *c) { return c->ns; }
const char *ms_config_section(const ms_config_t *c, int i) { return c->s[i].name; }
int ms_config_has(const ms_config_t *c, const char *sec, const char *key)
{
    return key ? find(c, sec, key) >= 0 : find_section(c, sec) >= 0;
}

const char *ms_config_where(const ms_config_t *c, const char *sec, const char *key)
{
    static _Thread_local char buf[512];
    int line = 0;
    if (key) {
        int i = find(c, sec, key);
        if (i >= 0 && c->e[i].line == 0) {
            snprintf(buf, sizeof buf, "--set %s.%s", sec, key);
            return buf;
        }
        if (i >= 0 && c->e[i].line < 0)
            return "default";
        if (i >= 0)
            line = c->e[i].line;
    } else {
        int i = find_section(c, sec);
        if (i >= 0)
            line = c->s[i].line;
    }
    if (line > 0)
        snprintf(buf, sizeof buf, "%s:%d", c->origin, line);
    else
        snprintf(buf, sizeof buf, "%s", c->origin);
    return buf;
}

static const char *lookup(ms_config_t *c, const char *sec, const char *key)
{
    int i = find(c, sec, key);
    if (i < 0)
        return NULL;
    c->e[i].used = 1;
    return c->e[i].val;
}

/* With ms_config_record_defaults: a getter that returned its default adds it as an entry,
 * so that the config text shows every key that was read. Out of memory only loses the line. */
static void remember(ms_config_t *c, const char *sec, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void remember(ms_config_t *c, const char *sec, const char *key, const char *fmt, ...)
{
    if (!c->record_defaults || find(c, sec, key) >= 0)
        return;
    char val[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    if (add_entry(c, sec, key, val, -1) == MS_OK)
        c->e[c->n - 1].used = 1;
    else
        ms_error_clear();
}

void ms_config_record_defaults(ms_config_t *c) { c->record_defaults = 1; }

ms_status_t ms_config_int(ms_config_t *c, const char *sec, const char *key, long def, long lo,
                          long hi, long *out)
{
    const char *v = lookup(c, sec, key);
    if (!v) {
        remember(c, sec, key, "%ld", def);
        *out = def;
        return MS_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno)
        return MS_ERR(MS_ECONFIG, "%s: [%s] %s = '%s' is not an integer",
                      ms_config_where(c, sec, key), sec, key, v);
    if (x < lo || x > hi)
        return MS_ERR(MS_ECONFIG, "%s: [%s] %s = %ld is out of range [%ld, %ld]",
                      ms_config_where(c, sec, key), sec, key, x, lo, hi);
    *out = x;
    return MS_OK;
}

ms_status_t ms_config_real(ms_config_t *c, const char *sec, const char *key, double def,
                           double lo, double hi, double *out)
{
    const char *v = lookup(c, sec, key);
    if (!v) {
        if (c->record_defaults) { /* 15 digits read back exactly for decimal defaults */
            char b[32];
            snprintf(b, sizeof b, "%.15g", def);
            if (strtod(b, NULL) != def)
                snprintf(b, sizeof b, "%.17g", def);
            remember(c, sec, key, "%s", b);
        }
        *out = def;
        return MS_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        return MS_ERR(MS_ECONFIG, "%s: [%s] %s = '%s' is not a number",
                      ms_config_where(c, sec, key), sec, key, v);
    if (x < lo || x > hi)
        return MS_ERR(MS_ECONFIG, "%s: [%s] %s = %g is out of range [%g, %g]",
                      ms_config_where(c, sec, key), sec, key, x, lo, hi);
    *out = x;
    return MS_OK;
}

ms_status_t ms_config_bool(ms_config_t *c, const char *sec, const char *key, int def, int *out)
{
    static const char *const names[] = {"false", "true", "no", "yes", "0", "1", "off", "on", NULL};
    const char *v = lookup(c, sec, key);
    if (!v) {
        remember(c, sec, key, "%s", def ? "true" : "false");
        *out = def;
        return MS_OK;
    }
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i & 1;
            return MS_OK;
        }
    return MS_ERR(MS_ECONFIG, "%s: [%s] %s = '%s' is not a boolean (true/false)",
                  ms_config_where(c, sec, key), sec, key, v);
}

ms_status_t ms_config_str(ms_config_t *c, const char *sec, const char *key, const char *def,
                          const char **out)
{
    const char *v = lookup(c, sec, key);
    if (!v && def)
        remember(c, sec, key, "%s", def);
    *out = v ? v : def;
    return MS_OK;
}

ms_status_t ms_config_choice(ms_config_t *c, const char *sec, const char *key, const char *def,
                             const char *const *names, int *out)
{
    const char *v = lookup(c, sec, key);
    if (!v) {
        remember(c, sec, key, "%s", def);
        v = def;
    }
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return MS_OK;
        }
    char list[512] = "";
    for (int i = 0; names[i]; i++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", names[i]);
    }
    return MS_ERR(MS_ECONFIG, "%s: [%s] %s = '%s' is not one of: %s",
                  ms_config_where(c, sec, key), sec, key, v, list);
}

void ms_config_mark_section(ms_config_t *c, const char *sec)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].sec, sec))
            c->e[i].used = 1;
}

ms_status_t ms_config_check_used(const ms_config_t *c)
{
    for (int i = 0; i < c->n; i++)
        if (!c->e[i].used)
            return MS_ERR(MS_ECONFIG, "%s: unknown key '%s' in section [%s]",
                          ms_config_where(c, c->e[i].sec, c->e[i].key), c->e[i].key,
                          c->e[i].sec);
    return MS_OK;
}

ms_status_t ms_config_text(const ms_config_t *c, char **text)
{
    size_t cap = 256;
    for (int i = 0; i < c->n; i++)
        cap += strlen(c->e[i].sec) + strlen(c->e[i].key) + strlen(c->e[i].val) + 8;
    for (int i = 0; i < c->ns; i++)
        cap += strlen(c->s[i].name) + 8;
    char *t = malloc(cap);
    if (!t)
        return MS_ERR(MS_ENOMEM, "out of memory");
    size_t n = 0;
    for (int s = 0; s < c->ns; s++) {
        n += (size_t)snprintf(t + n, cap - n, "%s[%s]\n", s ? "\n" : "", c->s[s].name);
        for (int i = 0; i < c->n; i++)
            if (!strcmp(c->e[i].sec, c->s[s].name))
                n += (size_t)snprintf(t + n, cap - n, "%s = %s\n", c->e[i].key, c->e[i].val);
    }
    *text = t;
    return MS_OK;
}

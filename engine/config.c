/* INI configuration: entries with their origin, typed getters, unknown-key detection, and
 * the parser itself (a function over a buffer, no line length limit: a checkpoint stores the
 * config as text, so any accepted config must read back, whatever the length of its values). */
#include "engine/config.h"

#include <errno.h>
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

/* ------------------------------------------------------------------ the parser */

/* One line at a time:
 *   blank line | ';' or '#' comment | '[' name ']' [comment] | key ('=' | ':') value
 * Blanks (space, tab) around names, keys and values are dropped; in a value, ';' after a blank
 * starts a comment; a UTF-8 byte order mark and CR LF line ends are allowed. Other control
 * characters are refused, so that every accepted entry writes back as the same text. */

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

/* Trims [*b, *e) of blanks. */
static void trim(const char **b, const char **e)
{
    while (*b < *e && blank(**b))
        (*b)++;
    while (*e > *b && blank((*e)[-1]))
        (*e)--;
}

/* A copy of [b, e) (malloc'd). */
static char *dup_range(const char *b, const char *e)
{
    char *d = malloc((size_t)(e - b) + 1);
    if (d) {
        memcpy(d, b, (size_t)(e - b));
        d[e - b] = 0;
    }
    return d;
}

/* The end of a value starting at b (after the blanks that follow '='): the first ';' after a
 * blank, or e. b[-1] is the separator or a blank, so "key = ; note" has an empty value. */
static const char *value_end(const char *b, const char *e)
{
    for (const char *q = b; q < e; q++)
        if (*q == ';' && blank(q[-1]))
            return q;
    return e;
}

static ms_status_t parse_line(ms_config_t *c, const char *b, const char *e, int line,
                              const char **sec)
{
    ms_status_t st = MS_OK;
    char *name = NULL, *key = NULL, *val = NULL;
    for (const char *q = b; q < e; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t')
            return MS_ERR(MS_ECONFIG, "%s:%d: control character (byte 0x%02x) in the line",
                          c->origin, line, (unsigned char)*q);
    trim(&b, &e);
    if (b == e || *b == ';' || *b == '#')
        return MS_OK;
    if (*b == '[') {
        const char *close = memchr(b, ']', (size_t)(e - b));
        const char *rest = close ? close + 1 : e;
        while (rest < e && blank(*rest))
            rest++;
        if (!close || (rest < e && *rest != ';' && *rest != '#'))
            return MS_ERR(MS_ECONFIG, "%s:%d: malformed section header (expected [name])",
                          c->origin, line);
        const char *nb = b + 1, *ne = close;
        trim(&nb, &ne);
        if (nb == ne)
            return MS_ERR(MS_ECONFIG, "%s:%d: empty section name", c->origin, line);
        if (!(name = dup_range(nb, ne)))
            return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
        int other = find_section(c, name);
        if (other >= 0)
            MS_FAIL(MS_ECONFIG, "%s:%d: section [%s] appears twice (first at line %d); every "
                    "layer needs its own name", c->origin, line, name, c->s[other].line);
        MS_TRY(add_section(c, name, line));
        *sec = c->s[c->ns - 1].name;
        goto done;
    }
    const char *sep = b;
    while (sep < e && *sep != '=' && *sep != ':')
        sep++;
    const char *kb = b, *ke = sep;
    trim(&kb, &ke);
    if (sep == e || kb == ke)
        return MS_ERR(MS_ECONFIG, "%s:%d: malformed line (expected [section], key = value, or a "
                      "comment)", c->origin, line);
    const char *vb = sep + 1;
    while (vb < e && blank(*vb))
        vb++;
    if (vb < e && *vb == ';' && vb == sep + 1)
        return MS_ERR(MS_ECONFIG, "%s:%d: a value may not begin with ';' (written back as "
                      "\"key = ;...\" it would read as a comment)", c->origin, line);
    const char *ve = vb < e ? value_end(vb, e) : e;
    trim(&vb, &ve);
    if (!(key = dup_range(kb, ke)) || !(val = dup_range(vb, ve)))
        MS_FAIL(MS_ENOMEM, "out of memory reading configuration");
    if (!*sec)
        MS_FAIL(MS_ECONFIG, "%s:%d: key '%s' is outside any [section]", c->origin, line, key);
    int i = find(c, *sec, key);
    if (i >= 0)
        MS_FAIL(MS_ECONFIG, "%s:%d: [%s] %s is given twice (first at line %d)", c->origin, line,
                *sec, key, c->e[i].line);
    MS_TRY(add_entry(c, *sec, key, val, line));
done:
    free(name), free(key), free(val);
    return st;
}

static ms_status_t parse(ms_config_t *c, const char *text, size_t len)
{
    ms_status_t st = MS_OK;
    const char *p = text, *end = text + len, *sec = NULL;
    if (len >= 3 && !memcmp(p, "\xef\xbb\xbf", 3))
        p += 3; /* byte order mark */
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if (memchr(p, 0, (size_t)(e - p)))
            return MS_ERR(MS_EFORMAT, "%s:%d: a NUL byte: not a text file", c->origin, line);
        if (e > p && e[-1] == '\r')
            e--; /* CR LF */
        MS_TRY(parse_line(c, p, e, line, &sec));
        p = nl ? nl + 1 : end;
    }
done:
    return st;
}

ms_status_t ms_config_parse_n(ms_config_t **out, const char *text, size_t len,
                              const char *origin)
{
    ms_status_t st = MS_OK;
    ms_config_t *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return MS_ERR(MS_ENOMEM, "out of memory reading configuration");
    c->origin = dup(origin ? origin : "(config)");
    if (!c->origin)
        MS_FAIL(MS_ENOMEM, "out of memory reading configuration");
    MS_TRY(parse(c, text ? text : "", text ? len : 0));
    *out = c;
    return MS_OK;
done:
    ms_config_free(c);
    return st;
}

ms_status_t ms_config_parse(ms_config_t **out, const char *text, const char *origin)
{
    return ms_config_parse_n(out, text, text ? strlen(text) : 0, origin);
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
    MS_TRY(ms_config_parse_n(out, text, (size_t)size, path));
done:
    fclose(fp);
    free(text);
    return st;
}

/* A name in --set: letters, digits, '_', '-' (and '.' in keys), so that it writes back as
 * the same text. */
static int name_ok(const char *b, const char *e, int dots)
{
    if (b == e)
        return 0;
    for (; b < e; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9') ||
              *b == '_' || *b == '-' || (dots && *b == '.')))
            return 0;
    return 1;
}

ms_status_t ms_config_set(ms_config_t *c, const char *a)
{
    const char *dot = strchr(a, '.');
    const char *eq = strchr(a, '=');
    if (!dot || !eq || dot > eq || dot == a || eq == dot + 1)
        return MS_ERR(MS_EARG, "--set %s: expected section.key=value", a);
    if (!name_ok(a, dot, 0) || !name_ok(dot + 1, eq, 1))
        return MS_ERR(MS_EARG, "--set %s: section and key names are letters, digits, '_' and "
                      "'-'", a);
    /* the value as the parser would read it back from the config text: blanks around it
     * dropped; a line break, another control character or a ';' after a blank (a comment in
     * the file) would not read back, so they are refused */
    const char *vb = eq + 1, *ve = vb + strlen(vb);
    trim(&vb, &ve);
    for (const char *q = vb; q < ve; q++) {
        if ((unsigned char)*q < 0x20 && *q != '\t')
            return MS_ERR(MS_EARG, "--set %.*s: the value holds a control character (byte "
                          "0x%02x)", (int)(eq - a), a, (unsigned char)*q);
        if (*q == ';' && (q == vb || blank(q[-1])))
            return MS_ERR(MS_EARG, "--set %.*s: %s in the value would start a comment in "
                          "the stored config", (int)(eq - a), a,
                          q == vb ? "a leading ';'" : "' ;'");
    }
    char sec[256], key[256];
    size_t ls = (size_t)(dot - a), lk = (size_t)(eq - dot - 1);
    if (ls >= sizeof sec || lk >= sizeof key)
        return MS_ERR(MS_EARG, "--set %s: name too long", a);
    memcpy(sec, a, ls);
    sec[ls] = 0;
    memcpy(key, dot + 1, lk);
    key[lk] = 0;
    char *v = dup_range(vb, ve);
    if (!v)
        return MS_ERR(MS_ENOMEM, "out of memory");
    int i = find(c, sec, key);
    if (i >= 0) {
        free(c->e[i].val);
        c->e[i].val = v;
        c->e[i].line = 0;
        return MS_OK;
    }
    ms_status_t st = add_entry(c, sec, key, v, 0);
    free(v);
    return st;
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
    t[n] = 0;
    /* what is stored must read back as this configuration: prove it here, once, rather than
     * find out when a checkpoint will not load */
    ms_config_t *back = NULL;
    ms_status_t st = ms_config_parse_n(&back, t, n, "(stored config)");
    int same = st == MS_OK && back->n == c->n && back->ns == c->ns;
    for (int i = 0; same && i < c->n; i++) {
        int j = find(back, c->e[i].sec, c->e[i].key);
        same = j >= 0 && !strcmp(back->e[j].val, c->e[i].val);
        if (!same)
            st = MS_ERR(MS_EINTERNAL, "[%s] %s = '%s' does not read back from the config text",
                        c->e[i].sec, c->e[i].key, c->e[i].val);
    }
    ms_config_free(back);
    if (!same) {
        free(t);
        return st ? st : MS_ERR(MS_EINTERNAL, "the config text does not read back");
    }
    *text = t;
    return MS_OK;
}

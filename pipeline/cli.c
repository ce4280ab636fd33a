/* Shared command-line handling. */
#include "pipeline/cli.h"

#include "io/shard.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ms_cli_common(ms_cli_t *cli, int opt, const char *arg)
{
    switch (opt) {
    case MS_OPT_CONFIG:
        cli->config_path = arg;
        return 1;
    case MS_OPT_SET:
        if (cli->nsets == MS_CLI_MAX_SETS) {
            fprintf(stderr, "milscreen %s: too many --set options (at most %d)\n", cli->cmd,
                    MS_CLI_MAX_SETS);
            return -1;
        }
        cli->sets[cli->nsets++] = arg;
        return 1;
    case MS_OPT_PRINT_CONFIG:
        cli->print_config = 1;
        return 1;
    case MS_OPT_MAX_PIXELS: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (end == arg || *end || errno || v < 1 || arg[0] == '-') {
            ms_cli_usage_error(cli->cmd, "--max-image-pixels '%s': expected a positive whole "
                               "number (pixels per image plane)", arg);
            return -1;
        }
        ms_io_set_max_image_pixels(v);
        return 1;
    }
    default:
        return 0;
    }
}

ms_status_t ms_cli_config(const ms_cli_t *cli, ms_config_t **cfg)
{
    ms_status_t st = ms_config_load(cfg, cli->config_path);
    if (st)
        return st;
    for (int i = 0; i < cli->nsets; i++) {
        st = ms_config_set(*cfg, cli->sets[i]);
        if (st) {
            ms_config_free(*cfg);
            *cfg = NULL;
            return st;
        }
    }
    if (cli->print_config)
        ms_config_record_defaults(*cfg);
    return MS_OK;
}

ms_status_t ms_cli_print_config(const ms_cli_t *cli, const ms_config_t *cfg, const char *origin)
{
    ms_status_t st = MS_OK;
    char *text = NULL, sec[256] = "";
    MS_TRY(ms_config_text(cfg, &text));
    printf("; milscreen %s: the resolved config of %s%s; '; default' marks the keys not given\n",
           cli->cmd, origin ? origin : "(no file: defaults)",
           cli->nsets ? " with --set" : "");
    /* ms_config_text writes "[section]" and "key = value" lines: annotate each key with where
     * its value came from */
    for (char *line = text, *next; *line; line = next) {
        next = line + strcspn(line, "\n");
        if (*next)
            *next++ = 0;
        size_t len = strlen(line);
        if (line[0] == '[' && len >= 2 && line[len - 1] == ']') {
            snprintf(sec, sizeof sec, "%.*s", (int)(len - 2), line + 1);
            printf("%s\n", line);
            continue;
        }
        const char *eq = strstr(line, " = ");
        char key[256] = "";
        if (eq && eq - line < (long)sizeof key)
            snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
        const char *where = key[0] ? ms_config_where(cfg, sec, key) : "";
        const char *note = !strcmp(where, "default")      ? "default"
                           : !strncmp(where, "--set ", 6) ? "--set"
                                                          : NULL;
        if (note)
            printf("%-40s ; %s\n", line, note);
        else
            printf("%s\n", line);
    }
    fflush(stdout);
done:
    free(text);
    return st;
}

int ms_cli_fail(const char *cmd, ms_status_t st)
{
    /* stopped on request is an outcome, not an error: said as it is, with its own status */
    fprintf(stderr, "milscreen %s: %s%s\n", cmd, st == MS_EINTERRUPT ? "" : "error: ",
            ms_error_message());
    const char *t = getenv("MS_TRACE");
    if (t && *t && strcmp(t, "0"))
        fprintf(stderr, "  (%s; %s)\n", ms_status_name(st), ms_error_trace());
    if (st == MS_EINTERRUPT)
        return MS_EXIT_INTERRUPTED;
    return (st == MS_EARG || st == MS_ECONFIG) ? 2 : 1;
}

int ms_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "milscreen %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'milscreen %s --help'\n", cmd);
    return 2;
}

int ms_cli_int(const char *cmd, const char *name, const char *arg, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || errno || v < lo || v > hi) {
        ms_cli_usage_error(cmd, "--%s '%s': expected a whole number from %ld to %ld", name, arg,
                           lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

const char *ms_cli_opt_name(const struct option *opts, int opt)
{
    for (; opts->name; opts++)
        if (!opts->flag && opts->val == opt)
            return opts->name;
    return "?";
}

ms_status_t ms_mkdirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return MS_ERR(MS_EARG, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST)
                return MS_ERR(MS_EIO, "%s: cannot create folder: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return MS_ERR(MS_EIO, "%s: cannot create folder: %s", buf, strerror(errno));
    return MS_OK;
}

int ms_cli_parse_size(const char *s, int *w, int *h, int *c, int def_c)
{
    char *end;
    long a = strtol(s, &end, 10);
    if (end == s || *end != 'x')
        return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p)
        return -1;
    long d = def_c;
    int has_c = *end == 'x';
    if (has_c) {
        p = end + 1;
        d = strtol(p, &end, 10);
        if (end == p)
            return -1;
    }
    if (*end || a < 1 || b < 1 || (has_c && d < 1) || a > 1 << 20 || b > 1 << 20 || d > 4096)
        return -1;
    *w = (int)a;
    *h = (int)b;
    *c = (int)d;
    return 0;
}

/* The CSV parser ingest's manifests go through: one pass over a buffer, one scratch buffer
 * for the field being read, rows grown by doubling. */
#include "io/csv.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ms_csv_free(ms_csv_t *t)
{
    for (int r = -1; r < t->nrows; r++) {
        ms_csv_row_t *row = r < 0 ? &t->hdr : &t->rows[r];
        for (int j = 0; j < row->nf; j++)
            free(row->f[j]);
        free(row->f);
    }
    free(t->rows);
    free(t->name);
    memset(t, 0, sizeof *t);
}

static void row_free(ms_csv_row_t *row)
{
    for (int j = 0; j < row->nf; j++)
        free(row->f[j]);
    free(row->f);
    memset(row, 0, sizeof *row);
}

ms_status_t ms_csv_parse(ms_csv_t *t, const char *name, const char *text, size_t size)
{
    ms_status_t st = MS_OK;
    char *field = NULL;
    ms_csv_row_t row = {0};
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return MS_ERR(MS_ENOMEM, "out of memory reading %s", name);
    const char *nul = memchr(text, 0, size);
    if (nul) {
        int l = 1;
        for (const char *p = text; p < nul; p++)
            l += *p == '\n';
        MS_FAIL(MS_EFORMAT, "%s:%d: a NUL byte: this is not a text file", name, l);
    }
    MS_ALLOC(field, size + 1, "CSV field");
    int cap = 0, line = 1;
    size_t i = 0;
    if (size >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        i = 3; /* a UTF-8 byte order mark */
    while (i < size) {
        row = (ms_csv_row_t){.line = line};
        int fcap = 0;
        for (;;) {
            size_t n = 0;
            int quoted = 0;
            if (i < size && text[i] == '"') { /* after a last ',' i is size: an empty field */
                quoted = 1;
                i++;
                for (;;) {
                    if (i >= size)
                        MS_FAIL(MS_EFORMAT, "%s:%d: a quoted field is not closed", name,
                                row.line);
                    if (text[i] == '"') {
                        if (i + 1 < size && text[i + 1] == '"') {
                            field[n++] = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (text[i] == '\n')
                        line++;
                    field[n++] = text[i++];
                }
            }
            while (i < size && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                if (quoted && !isspace((unsigned char)text[i]))
                    MS_FAIL(MS_EFORMAT, "%s:%d: text after a closing quote", name, line);
                if (quoted) { /* blanks after the closing quote are not part of the field */
                    i++;
                    continue;
                }
                field[n++] = text[i++];
            }
            field[n] = 0;
            if (row.nf == fcap) {
                fcap = fcap ? 2 * fcap : 16;
                char **g = realloc(row.f, sizeof *g * (size_t)fcap);
                if (!g)
                    MS_FAIL(MS_ENOMEM, "out of memory reading %s", name);
                row.f = g;
            }
            /* unquoted fields lose their surrounding spaces */
            char *s = field;
            if (!quoted) {
                while (isspace((unsigned char)*s))
                    s++;
                size_t l = strlen(s);
                while (l && isspace((unsigned char)s[l - 1]))
                    s[--l] = 0;
            }
            if (!(row.f[row.nf] = strdup(s)))
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", name);
            row.nf++;
            if (i < size && text[i] == ',') {
                i++;
                continue;
            }
            break;
        }
        if (i < size && text[i] == '\r')
            i++;
        if (i < size && text[i] == '\n')
            i++;
        line++;
        if (row.nf == 1 && !row.f[0][0]) { /* a blank line */
            row_free(&row);
            continue;
        }
        if (!t->hdr.f) {
            t->hdr = row;
            row = (ms_csv_row_t){0};
            continue;
        }
        if (row.nf != t->hdr.nf)
            MS_FAIL(MS_EFORMAT, "%s:%d: %d fields, but the header has %d", name, row.line,
                    row.nf, t->hdr.nf);
        if (t->nrows == cap) {
            cap = cap ? 2 * cap : 256;
            ms_csv_row_t *g = realloc(t->rows, sizeof *g * (size_t)cap);
            if (!g)
                MS_FAIL(MS_ENOMEM, "out of memory reading %s", name);
            t->rows = g;
        }
        t->rows[t->nrows++] = row;
        row = (ms_csv_row_t){0};
    }
    if (!t->hdr.f)
        MS_FAIL(MS_EFORMAT, "%s is empty (a header line is expected)", name);
done:
    row_free(&row);
    free(field);
    if (st)
        ms_csv_free(t);
    return st;
}

ms_status_t ms_csv_read(ms_csv_t *t, const char *name, FILE *f)
{
    ms_status_t st = MS_OK;
    char *text = NULL;
    size_t n = 0, cap = 0;
    memset(t, 0, sizeof *t);
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *g = realloc(text, cap);
            if (!g)
                MS_FAIL(MS_ENOMEM, "out of memory reading %s (%zu bytes so far)", name, n);
            text = g;
        }
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                MS_FAIL(MS_EIO, "cannot read %s: %s", name, strerror(errno ? errno : EIO));
            break;
        }
    }
    st = ms_csv_parse(t, name, text, n);
done:
    free(text);
    return st;
}

ms_status_t ms_csv_load(ms_csv_t *t, const char *path)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f)
        return MS_ERR(MS_EIO, "cannot read %s: %s", path, strerror(errno));
    ms_status_t st = ms_csv_read(t, path, f);
    fclose(f);
    return st;
}

int ms_csv_col(const ms_csv_t *t, const char *name)
{
    for (int j = 0; j < t->hdr.nf; j++)
        if (!strcmp(t->hdr.f[j], name))
            return j;
    return -1;
}

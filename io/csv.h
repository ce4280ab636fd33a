/* CSV tables for ingest's manifests (RFC 4180: quoted fields with "" for a quote, CR LF or
 * LF, a UTF-8 byte order mark skipped, blank lines skipped). The parser takes a buffer, so a
 * fuzz target calls it without a file; every error names the source and the line. */
#ifndef MS_CSV_H
#define MS_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "engine/status.h"

typedef struct {
    int nf;   /* fields */
    char **f; /* nf malloc'd strings (unquoted fields trimmed of surrounding spaces) */
    int line; /* line of the file where the row starts (1-based) */
} ms_csv_row_t;

typedef struct {
    char *name; /* the file (or whatever the caller named the buffer), for messages */
    ms_csv_row_t hdr;
    int nrows;  /* data rows, the header not counted */
    ms_csv_row_t *rows;
} ms_csv_t;

/* Parses n bytes of text (need not be NUL-terminated). Every row must have the header's
 * number of fields. On failure t is left empty. */
ms_status_t ms_csv_parse(ms_csv_t *t, const char *name, const char *text, size_t n);
/* Reads all of f (a file, pipe or FIFO) and parses it. */
ms_status_t ms_csv_read(ms_csv_t *t, const char *name, FILE *f);
/* Opens path and parses it. */
ms_status_t ms_csv_load(ms_csv_t *t, const char *path);
void ms_csv_free(ms_csv_t *t);
/* Column of the header named name, or -1. */
int ms_csv_col(const ms_csv_t *t, const char *name);

#endif

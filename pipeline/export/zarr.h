/* A Zarr version 2 directory store written by hand (https://zarr.readthedocs.io/en/stable/spec/v2.html):
 * groups are folders with .zgroup and .zattrs, arrays folders with .zarray and one file per
 * chunk under nested chunk keys ("0/3/1", dimension_separator "/", as OME-NGFF 0.4 asks),
 * each chunk raw or a zlib stream (numcodecs' "zlib" codec). Plus the JSON text builder the
 * metadata files are written with. No reading: tests read stores with zarr-python. */
#ifndef MS_ZARR_H
#define MS_ZARR_H

#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"

/* ---------------------------------------------------------------- JSON text */

/* A growing string. An allocation failure sets `failed` and later appends do nothing; the
 * writer that uses the text reports it (MS_ENOMEM), so callers need not check every append. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} ms_json_t;

void ms_json_free(ms_json_t *j);
/* Appends printf-style text as is (numbers, punctuation). */
void ms_json_raw(ms_json_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal: quoted, with ", \ and control characters escaped. */
void ms_json_str(ms_json_t *j, const char *s);
/* Appends a double in the fewest digits that read back equal (15 to 17), always with a
 * decimal point or exponent; a non-finite one (which JSON cannot hold) as null. */
void ms_json_num(ms_json_t *j, double v);

/* ---------------------------------------------------------------- files */

/* printf into buf of cap bytes; a path that does not fit is an error (MS_EARG) naming it. */
ms_status_t ms_zarr_path(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes len bytes to path (created or truncated); the message names the file. */
ms_status_t ms_zarr_write_file(const char *path, const void *data, size_t len);

/* Creates the folder dir (its parent must exist) as a Zarr group: .zgroup, and .zattrs with
 * attrs (a JSON object) unless attrs is NULL. */
ms_status_t ms_zarr_group(const char *dir, const ms_json_t *attrs);

typedef enum { MS_ZARR_U8 = 1, MS_ZARR_U16 = 2 } ms_zarr_dtype_t;

/* Creates the array folder dir holding data (C order, shape[rank], rank 1 to 4) cut into
 * chunks[rank]: every chunk file has the full chunk shape, edge chunks padded with the fill
 * value 0 as the Zarr spec has it. level 0 stores chunks raw, 1..12 as zlib streams
 * (libdeflate) at that level. The dtype is written in this machine's byte order. */
ms_status_t ms_zarr_write_array(const char *dir, int rank, const size_t *shape,
                                const size_t *chunks, ms_zarr_dtype_t dtype, int level,
                                const void *data);

#endif

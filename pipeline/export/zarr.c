/* Zarr v2 directory store writer and the JSON text it needs (see zarr.h). */
#include "pipeline/export/zarr.h"

#include <errno.h>
#include <libdeflate.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- JSON text */

static int json_reserve(ms_json_t *j, size_t more)
{
    if (j->failed)
        return 0;
    if (j->len + more + 1 <= j->cap)
        return 1;
    size_t cap = j->cap ? j->cap : 256;
    while (cap < j->len + more + 1)
        cap *= 2;
    char *s = realloc(j->s, cap);
    if (!s) {
        j->failed = 1;
        return 0;
    }
    j->s = s;
    j->cap = cap;
    return 1;
}

void ms_json_free(ms_json_t *j)
{
    free(j->s);
    memset(j, 0, sizeof *j);
}

void ms_json_raw(ms_json_t *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        j->failed = 1;
        return;
    }
    if (!json_reserve(j, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(j->s + j->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    j->len += (size_t)n;
}

void ms_json_str(ms_json_t *j, const char *s)
{
    ms_json_raw(j, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            ms_json_raw(j, "\\%c", *p);
        else if (*p < 0x20)
            ms_json_raw(j, "\\u%04x", *p);
        else
            ms_json_raw(j, "%c", *p); /* UTF-8 bytes pass through: JSON text is UTF-8 */
    }
    ms_json_raw(j, "\"");
}

void ms_json_num(ms_json_t *j, double v)
{
    if (!isfinite(v)) {
        ms_json_raw(j, "null");
        return;
    }
    /* the fewest digits that read back as v: 0.65, not 0.65000000000000002 */
    char b[32];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(b, sizeof b, "%.*g", digits, v);
        if (strtod(b, NULL) == v)
            break;
    }
    /* a whole number stays a JSON number of the float kind: 2.0, not 2 */
    ms_json_raw(j, "%s%s", b, strpbrk(b, ".eE") ? "" : ".0");
}

/* ---------------------------------------------------------------- files */

ms_status_t ms_zarr_path(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return MS_ERR(MS_EARG, "path too long: %.200s...", buf);
    return MS_OK;
}

ms_status_t ms_zarr_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return MS_ERR(MS_EIO, "%s: cannot create: %s", path, strerror(errno));
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    int err = put != len ? errno : 0;
    if (fclose(f) && !err)
        err = errno ? errno : EIO;
    if (put != len || err)
        return MS_ERR(MS_EIO, "%s: write failed: %s", path, strerror(err ? err : EIO));
    return MS_OK;
}

static ms_status_t make_dir(const char *dir)
{
    if (mkdir(dir, 0777) && errno != EEXIST)
        return MS_ERR(MS_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    return MS_OK;
}

static ms_status_t write_json(const char *dir, const char *name, const ms_json_t *j)
{
    char path[4096];
    if (j->failed)
        return MS_ERR(MS_ENOMEM, "out of memory writing %s/%s", dir, name);
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return MS_ERR(MS_EARG, "%s/%s: path too long", dir, name);
    return ms_zarr_write_file(path, j->s ? j->s : "", j->len);
}

ms_status_t ms_zarr_group(const char *dir, const ms_json_t *attrs)
{
    ms_status_t st = MS_OK;
    ms_json_t g = {0};
    MS_TRY(make_dir(dir));
    ms_json_raw(&g, "{\"zarr_format\": 2}\n");
    MS_TRY(write_json(dir, ".zgroup", &g));
    if (attrs)
        MS_TRY(write_json(dir, ".zattrs", attrs));
done:
    ms_json_free(&g);
    return st;
}

ms_status_t ms_zarr_write_array(const char *dir, int rank, const size_t *shape,
                                const size_t *chunks, ms_zarr_dtype_t dtype, int level,
                                const void *data)
{
    ms_status_t st = MS_OK;
    ms_json_t meta = {0};
    struct libdeflate_compressor *comp = NULL;
    uint8_t *buf = NULL, *zbuf = NULL; /* one chunk: (chunks...) raw, and compressed */
    size_t grid[4], idx[4] = {0}, nchunks = 1, chunk_elems = 1;
    const size_t es = dtype == MS_ZARR_U16 ? 2 : 1;
    if (rank < 1 || rank > 4 || level < 0 || level > 12)
        MS_FAIL(MS_EINTERNAL, "%s: zarr array of rank %d, zlib level %d", dir, rank, level);
    for (int d = 0; d < rank; d++) {
        if (!shape[d] || !chunks[d])
            MS_FAIL(MS_EINTERNAL, "%s: zero extent in dimension %d", dir, d);
        grid[d] = (shape[d] + chunks[d] - 1) / chunks[d];
        nchunks *= grid[d];
        chunk_elems *= chunks[d];
    }

    /* .zarray: dtype in this machine's byte order (a uint8 has none: "|") */
    const int little = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
    MS_TRY(make_dir(dir));
    ms_json_raw(&meta, "{\n  \"zarr_format\": 2,\n  \"shape\": [");
    for (int d = 0; d < rank; d++)
        ms_json_raw(&meta, "%s%zu", d ? ", " : "", shape[d]);
    ms_json_raw(&meta, "],\n  \"chunks\": [");
    for (int d = 0; d < rank; d++)
        ms_json_raw(&meta, "%s%zu", d ? ", " : "", chunks[d]);
    ms_json_raw(&meta, "],\n  \"dtype\": \"%s\",\n",
                dtype == MS_ZARR_U8 ? "|u1" : little ? "<u2" : ">u2");
    if (level)
        ms_json_raw(&meta, "  \"compressor\": {\"id\": \"zlib\", \"level\": %d},\n", level);
    else
        ms_json_raw(&meta, "  \"compressor\": null,\n");
    ms_json_raw(&meta, "  \"fill_value\": 0,\n  \"order\": \"C\",\n  \"filters\": null,\n"
                       "  \"dimension_separator\": \"/\"\n}\n");
    MS_TRY(write_json(dir, ".zarray", &meta));

    const size_t raw_bytes = chunk_elems * es;
    MS_ALLOC(buf, raw_bytes, "a zarr chunk");
    size_t zcap = raw_bytes;
    if (level) {
        if (!(comp = libdeflate_alloc_compressor(level)))
            MS_FAIL(MS_ENOMEM, "out of memory for a zlib compressor (%s)", dir);
        zcap = libdeflate_zlib_compress_bound(comp, raw_bytes);
        MS_ALLOC(zbuf, zcap, "a compressed zarr chunk");
    }
    for (size_t c = 0; c < nchunks; c++) {
        /* idx: this chunk's grid coordinates, last dimension fastest */
        for (size_t r = c, d = (size_t)rank; d-- > 0;) {
            idx[d] = r % grid[d];
            r /= grid[d];
        }
        /* copy the chunk row by row (rows along the last dimension), zero elsewhere */
        memset(buf, 0, raw_bytes);
        size_t rows = chunk_elems / chunks[rank - 1];
        const size_t cw = chunks[rank - 1], x0 = idx[rank - 1] * cw;
        const size_t n = shape[rank - 1] - x0 < cw ? shape[rank - 1] - x0 : cw;
        for (size_t row = 0; row < rows; row++) {
            /* the row's coordinates in the array: chunk origin + position within the chunk */
            size_t at[4], r = row, inside = 1;
            for (int d = rank - 2; d >= 0; d--) {
                at[d] = idx[d] * chunks[d] + r % chunks[d];
                r /= chunks[d];
                inside &= at[d] < shape[d];
            }
            if (!inside)
                continue;
            at[rank - 1] = x0;
            size_t off = 0; /* C order: ((a0 * s1 + a1) * s2 + a2) ... */
            for (int d = 0; d < rank; d++)
                off = off * shape[d] + at[d];
            memcpy(buf + row * cw * es, (const uint8_t *)data + off * es, n * es);
        }
        const void *out = buf;
        size_t out_len = raw_bytes;
        if (level) {
            out_len = libdeflate_zlib_compress(comp, buf, raw_bytes, zbuf, zcap);
            if (!out_len)
                MS_FAIL(MS_EINTERNAL, "%s: zlib compression of a chunk failed", dir);
            out = zbuf;
        }
        /* the chunk key "i/j/k": every coordinate but the last is a folder */
        char path[4096];
        int pos = snprintf(path, sizeof path, "%s", dir);
        for (int d = 0; d < rank && pos < (int)sizeof path; d++) {
            pos += snprintf(path + pos, sizeof path - (size_t)pos, "/%zu", idx[d]);
            if (d < rank - 1 && pos < (int)sizeof path)
                MS_TRY(make_dir(path));
        }
        if (pos >= (int)sizeof path)
            MS_FAIL(MS_EARG, "%s: path too long", dir);
        MS_TRY(ms_zarr_write_file(path, out, out_len));
    }
done:
    if (comp)
        libdeflate_free_compressor(comp);
    free(buf);
    free(zbuf);
    ms_json_free(&meta);
    return st;
}

/* Plate shards (DESIGN §3, docs/FORMATS.md): one HDF5 file holding /images [N, C, H, W] uint8
 * or uint16 chunked one image (or one tile) per chunk, per-image metadata under /meta, optional
 * per-cell records under /cells and true masks under /masks. The reader keeps the metadata in
 * memory and decodes pixels itself (pread of the raw chunk + libdeflate + unshuffle) so that
 * several threads decode at once despite HDF5's global lock. */
#ifndef MS_SHARD_H
#define MS_SHARD_H

#include <stdint.h>

#include "engine/status.h"

#define MS_SHARD_FORMAT "milscreen-shard"
#define MS_SHARD_VERSION 1

typedef enum { MS_DTYPE_U8 = 1, MS_DTYPE_U16 = 2 } ms_pixel_t;
typedef enum { MS_COMP_NONE = 0, MS_COMP_DEFLATE = 1 } ms_comp_t;

/* Measured in docs/PERFORMANCE.md "## I/O": deflate level 1 (+ shuffle) decodes as fast as
 * higher levels and writes several times faster for a few percent more bytes. */
#define MS_SHARD_DEFAULT_LEVEL 1

/* Per-image metadata (OME-NGFF plate model: plate -> well -> field). */
typedef struct {
    char *image_id;  /* unique key */
    char *plate;
    char *well;      /* e.g. "B03" */
    int site;        /* field of view within the well */
    char *treatment; /* e.g. "taxol@0.3" */
    int replicate;
    int label;       /* class index, -1 unknown (single-label shards) */
} ms_image_meta_t;

/* ---------------------------------------------------------------- limits */

/* An image whose plane holds more than this many pixels (H * W) is refused before anything is
 * allocated for it, so that a damaged or hostile header (a shard's /images dims, a TIFF's
 * ImageWidth) ends in a message naming the file and the memory it would take, never in the
 * kernel's out-of-memory killer. 2^28 is 16384 x 16384, 25 times a 1024x1280 BBBC021 field;
 * every command takes --max-image-pixels N to change it. */
#define MS_MAX_IMAGE_PIXELS_DEFAULT (1ULL << 28)
void ms_io_set_max_image_pixels(uint64_t n);
uint64_t ms_io_max_image_pixels(void);
/* MS_EFORMAT naming path, the h x w x c size, the bytes one image of bytes_per_sample would
 * take and the limit, when h * w exceeds it (or h, w or c is not positive). */
ms_status_t ms_io_check_image_size(const char *path, uint64_t c, uint64_t h, uint64_t w,
                                   unsigned bytes_per_sample);

/* ---------------------------------------------------------------- reading */

typedef struct ms_shard ms_shard_t;

/* Opens and validates: format name and version, dataset shapes and types, metadata lengths.
 * Every message names the file. */
ms_status_t ms_shard_open(ms_shard_t **s, const char *path);
void ms_shard_close(ms_shard_t *s);

const char *ms_shard_path(const ms_shard_t *s);
int ms_shard_count(const ms_shard_t *s);    /* N */
int ms_shard_channels(const ms_shard_t *s); /* C */
int ms_shard_height(const ms_shard_t *s);   /* H */
int ms_shard_width(const ms_shard_t *s);    /* W */
ms_pixel_t ms_shard_dtype(const ms_shard_t *s);
int ms_shard_classes(const ms_shard_t *s); /* K */
const char *ms_shard_class_name(const ms_shard_t *s, int k);
const char *ms_shard_channel_name(const ms_shard_t *s, int c);
/* The class names (channels = 0) or channel names (channels = 1) in order, joined by '\n'
 * (the checkpoint's form); malloc'd, NULL when out of memory. */
char *ms_shard_names_joined(const ms_shard_t *s, int channels);
int ms_shard_multi_label(const ms_shard_t *s);
/* Identity by name, not by index: MS_EFORMAT when the '\n'-joined name lists a and b differ,
 * naming both in order ("classes differ ...: A has [x, y, z]; B has [x, y]"). kind: "classes"
 * or "channels"; a_from, b_from: where each list comes from (a file). */
ms_status_t ms_names_check(const char *kind, const char *a_from, const char *a,
                           const char *b_from, const char *b);
/* a and b have the same channel names, the same class names in the same order, and the same
 * kind of labels (single or multi); else MS_EFORMAT naming both files and both lists. */
ms_status_t ms_shard_check_same(const ms_shard_t *a, const ms_shard_t *b);
/* Compression of /images as stored: MS_COMP_NONE or MS_COMP_DEFLATE (level unknown: 0). */
ms_comp_t ms_shard_compression(const ms_shard_t *s);

const ms_image_meta_t *ms_shard_meta(const ms_shard_t *s, int i);
/* Single-label: the class or -1. Multi-label: -1 when unknown, else the first class set. */
int ms_shard_label(const ms_shard_t *s, int i);
/* 1 if image i has a known label (row), 0 if unknown. */
int ms_shard_labelled(const ms_shard_t *s, int i);
/* Multi-hot row (K values 0/1); for single-label shards the one-hot of label (all 0 when
 * unknown). */
const uint8_t *ms_shard_labels(const ms_shard_t *s, int i);

/* Decodes image i into out (C, H, W); uint8 images are widened. Thread-safe: several threads
 * may read one shard at once. */
ms_status_t ms_shard_read(ms_shard_t *s, int i, uint16_t *out);
/* The window rows y..y+h-1, columns x..x+w-1 of image i into out (C, h, w); decodes only the
 * chunks (tiles) it touches. */
ms_status_t ms_shard_read_region(ms_shard_t *s, int i, int y, int x, int h, int w,
                                 uint16_t *out);
/* Zero-copy variant for a uint16 shard chunked one image per chunk: decodes image i into this
 * thread's scratch buffer and points *pix at it (C, H, W), valid until this thread's next
 * read of any shard. Otherwise (tiles, uint8, foreign filters) *pix is NULL and the caller
 * uses ms_shard_read. */
ms_status_t ms_shard_read_view(ms_shard_t *s, int i, const uint16_t **pix);
/* The same through HDF5's own H5Dread (its zlib, under its global lock): the baseline that
 * bench --io compares against, and a cross-check in the tests. */
ms_status_t ms_shard_read_hdf5(ms_shard_t *s, int i, uint16_t *out);

/* 1 if the HDF5 library is built threadsafe (then several threads may read shards at once;
 * the loader decodes on the caller's thread otherwise). */
int ms_hdf5_threadsafe(void);

/* Seconds this process has spent inside HDF5 calls (serialised by its global lock) on the
 * ms_shard_read path: the serial part of parallel decoding. */
double ms_shard_hdf5_seconds(void);

/* Per-cell records (optional): n cells; each has its image index, centre (x, y) in pixels,
 * label (class whose phenotype the cell shows, -1 if it looks like a control cell) and
 * mask_id (its value in /masks, 0 when there are no masks). Pointers owned by the shard. */
typedef struct {
    int n;
    const int32_t *image_index;
    const float *x, *y;
    const int32_t *label;
    const int32_t *mask_id;
} ms_cells_t;
int ms_shard_has_cells(const ms_shard_t *s);
ms_status_t ms_shard_cells(ms_shard_t *s, ms_cells_t *cells);

/* True instance masks (optional, synthetic data): out (H, W), 0 background, else cell id. */
int ms_shard_has_masks(const ms_shard_t *s);
ms_status_t ms_shard_read_mask(ms_shard_t *s, int i, uint16_t *out);

/* SHA-256 of the whole file's bytes as 64 hex digits + NUL: it changes whenever pixels,
 * labels or any other stored byte changes. Reads the whole file. */
ms_status_t ms_shard_digest(ms_shard_t *s, char out[65]);
ms_status_t ms_file_sha256(const char *path, char out[65]);

/* ---------------------------------------------------------------- writing */

typedef struct {
    int n, c, h, w;
    ms_pixel_t dtype;
    ms_comp_t comp;                   /* MS_COMP_DEFLATE: shuffle + deflate */
    int level;                        /* 1..9, 0 = MS_SHARD_DEFAULT_LEVEL */
    int tile;                         /* 0: one chunk per image, else square tiles of this side */
    int k;                            /* classes */
    const char *const *class_names;   /* k names */
    const char *const *channel_names; /* c names, NULL: "ch0", "ch1", ... */
    int multi_label;
    int masks;                        /* 1: /masks uint16 [N, H, W] is written too */
    double pixel_size[2];             /* (y, x) micrometres per pixel: root attribute
                                       * pixel_size_um; 0: unknown (no attribute) */
} ms_shard_spec_t;

typedef struct ms_shard_writer ms_shard_writer_t;

/* Creates the shard under a temporary name in the same folder. */
ms_status_t ms_shard_create(ms_shard_writer_t **w, const char *path, const ms_shard_spec_t *spec);
/* pix (C, H, W) in the shard's dtype (uint8_t or uint16_t). */
ms_status_t ms_shard_write_image(ms_shard_writer_t *w, int i, const void *pix);
/* n images i0..i0+n-1 from pix (n, C, H, W) in the shard's dtype, compressed by `threads`
 * threads at once (HDF5 then writes them in order from one thread). */
ms_status_t ms_shard_write_images(ms_shard_writer_t *w, int i0, int n, const void *pix,
                                  int threads);
/* dst[j] = src[j] for j < n, front to back (so dst may start at src's own first byte, or
 * anywhere before it); returns the index of the first value over 255 (dst is then written
 * only up to it), or -1. */
long ms_narrow_u8(uint8_t *dst, const uint16_t *src, size_t n);
/* pix (C, H, W) uint16; for a uint8 shard every value must be <= 255. */
ms_status_t ms_shard_write_image_u16(ms_shard_writer_t *w, int i, const uint16_t *pix);
/* Metadata of image i (strings copied). labels: the K-row for multi-label shards (0/1, or NULL
 * for unknown), ignored for single-label shards (m->label is used). */
ms_status_t ms_shard_set_meta(ms_shard_writer_t *w, int i, const ms_image_meta_t *m,
                              const uint8_t *labels);
/* An extra per-image string column /meta/<name> (values: N strings, copied now), e.g. a
 * LoadData manifest's Metadata_* columns. Names of the shard's own /meta datasets, and names
 * with '/' or that are empty, are refused. */
ms_status_t ms_shard_write_meta_strings(ms_shard_writer_t *w, const char *name,
                                        const char *const *values);
/* mask (H, W) of image i; needs spec.masks. */
ms_status_t ms_shard_write_mask(ms_shard_writer_t *w, int i, const uint16_t *mask);
/* Appends n cells (mask_id may be NULL). */
ms_status_t ms_shard_add_cells(ms_shard_writer_t *w, int n, const int32_t *image_index,
                               const float *x, const float *y, const int32_t *label,
                               const int32_t *mask_id);
/* Checks that every image and its metadata were written, writes the metadata, closes and
 * renames to the final name. Frees w whatever happens; on failure no file is left. */
ms_status_t ms_shard_finish(ms_shard_writer_t *w);
/* Drops the temporary file and frees w. */
void ms_shard_discard(ms_shard_writer_t *w);

/* Image bytes of one image in memory (C * H * W * sizeof dtype). */
static inline uint64_t ms_shard_image_bytes(int c, int h, int w, ms_pixel_t dt)
{
    return (uint64_t)c * (uint64_t)h * (uint64_t)w * (dt == MS_DTYPE_U8 ? 1u : 2u);
}

#endif

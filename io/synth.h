/* Synthetic plates (DESIGN §5): fields of rendered cells whose phenotype shows in only a
 * class-dependent fraction of them, with uneven illumination, blur, shot noise and debris, the
 * true instance masks and per-cell labels. Deterministic from the seed whatever the thread
 * count: every field draws from its own counter-based stream. */
#ifndef MS_SYNTH_H
#define MS_SYNTH_H

#include <stdint.h>
#include <stdio.h>

#include "engine/status.h"

typedef enum { MS_SYNTH_MCF7 = 0, MS_SYNTH_YEAST = 1 } ms_synth_kind_t;

typedef struct {
    const char *name;
    ms_synth_kind_t kind;
    int c, h, w, k;
    int multi_label;
    int treatments;       /* per class; the last one of each class goes to the test shard */
    int replicates;       /* plates */
    int sites;            /* fields per well */
    int cells_min, cells_max;
    float radius;         /* typical cell radius in pixels */
    const int *class_map; /* k indices into the kind's phenotype table (NULL: 0..k-1) */
} ms_synth_preset_t;

/* "tiny", "bbbc021-like" or "yeast-like". */
ms_status_t ms_synth_preset(const char *name, ms_synth_preset_t *p);
/* The kind's name for class k of the preset, and its channel names. */
const char *ms_synth_class_name(const ms_synth_preset_t *p, int k);
const char *ms_synth_channel_name(const ms_synth_preset_t *p, int c);
/* Fraction of cells that show the phenotype of class k (class-dependent, 0.25..0.8). */
float ms_synth_fraction(const ms_synth_preset_t *p, int k);

/* One field. classes: K multi-hot (single-label: exactly one set). img (C, H, W), mask (H, W)
 * (0 background, else cell id 1..n). Cells: up to max_cells entries of centre, label (class
 * shown, -1 for a normal cell) and mask id; *ncells their count. */
typedef struct {
    float x, y;
    int32_t label;
    int32_t id;
} ms_synth_cell_t;
ms_status_t ms_synth_field(const ms_synth_preset_t *p, uint64_t seed, uint64_t field,
                           const uint8_t *classes, float strength, uint16_t *img, uint16_t *mask,
                           ms_synth_cell_t *cells, int max_cells, int *ncells);

/* Writes DIR/train.h5 and DIR/test.h5 for the preset (level: deflate level, 0 = default).
 * threads: fields rendered at once (0 = all cores). Progress lines go to log if not NULL. */
ms_status_t ms_synth_write(const ms_synth_preset_t *p, const char *dir, uint64_t seed,
                           int threads, int level, FILE *log);

#endif

/* Settings of the pipeline's own config sections ([train], ...), read and range-checked in
 * one place so that every command rejects the same typos. */
#ifndef MS_OPTIONS_H
#define MS_OPTIONS_H

#include "engine/config.h"
#include "pipeline/localise/localise.h"

typedef struct {
    long batch;          /* images per step, over all ranks */
    double lr, beta1, beta2, eps;
    long lr_drop_epoch;  /* from this epoch on (counting from 0) the rate is lr * lr_drop; 0: never */
    double lr_drop;
    long crop;           /* square random crop side for training; 0: whole image */
    long epochs;
    long seed;
    int augment;         /* random 90-degree rotations and reflections */
    long checkpoint_every; /* steps; 0: at the end of every epoch */
    long keep;           /* checkpoints kept */
    long loader_threads;
    long cache_mb;       /* decoded training images kept in memory */
    const char *precision; /* the backend's compute precision: "fp32", "bf16", "tf32" (cuda),
                              or NULL for the backend's default (fp32 on cpu, bf16 on cuda);
                              train and score both take it from here */
} ms_train_opts_t;

typedef struct {
    const char *train, *val, *test; /* space-separated shard paths ("" when absent) */
} ms_data_opts_t;

typedef struct {
    int masks;           /* write /masks */
    int class_masks;     /* write /class_masks: one Jacobian mask per class */
    int cells;           /* score crops around the shard's cells */
    long cell_size;      /* crop side (the paper: 64) */
} ms_score_opts_t;

typedef struct {
    ms_train_opts_t train;
    ms_data_opts_t data;
    ms_score_opts_t score;
    ms_localise_opts_t localise;
} ms_options_t;

/* Reads every section the pipeline owns; call before ms_config_check_used(). Strings point
 * into cfg. */
ms_status_t ms_options_read(ms_config_t *cfg, ms_options_t *o);

#endif

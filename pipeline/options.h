/* Settings of the pipeline's own config sections ([train], ...), read and range-checked in
 * one place so that every command rejects the same typos. */
#ifndef MS_OPTIONS_H
#define MS_OPTIONS_H

#include "engine/config.h"

typedef struct {
    long batch;          /* images per step, over all ranks */
    double lr, beta1, beta2, eps;
    long crop;           /* square random crop side for training; 0: whole image */
    long epochs;
    long seed;
    int augment;         /* random 90-degree rotations and reflections */
} ms_train_opts_t;

/* Reads every section the pipeline owns; call before ms_config_check_used(). */
ms_status_t ms_options_read(ms_config_t *cfg, ms_train_opts_t *train);

#endif

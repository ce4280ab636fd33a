/* The pipeline's config sections. */
#include "pipeline/options.h"

ms_status_t ms_options_read(ms_config_t *cfg, ms_options_t *o)
{
    ms_status_t st = MS_OK;
    ms_train_opts_t *t = &o->train;
    MS_TRY(ms_config_int(cfg, "train", "batch", 16, 1, 1 << 16, &t->batch));
    MS_TRY(ms_config_real(cfg, "train", "lr", 1e-3, 0.0, 10.0, &t->lr));
    MS_TRY(ms_config_int(cfg, "train", "lr_drop_epoch", 0, 0, 1 << 24, &t->lr_drop_epoch));
    MS_TRY(ms_config_real(cfg, "train", "lr_drop", 0.1, 0.0, 1.0, &t->lr_drop));
    MS_TRY(ms_config_real(cfg, "train", "beta1", 0.9, 0.0, 0.999999, &t->beta1));
    MS_TRY(ms_config_real(cfg, "train", "beta2", 0.999, 0.0, 0.999999999, &t->beta2));
    MS_TRY(ms_config_real(cfg, "train", "eps", 1e-8, 0.0, 1.0, &t->eps));
    MS_TRY(ms_config_int(cfg, "train", "crop", 0, 0, 1 << 16, &t->crop));
    MS_TRY(ms_config_int(cfg, "train", "epochs", 100, 1, 1 << 24, &t->epochs));
    MS_TRY(ms_config_int(cfg, "train", "seed", 1, 0, 0x7fffffffL, &t->seed));
    MS_TRY(ms_config_bool(cfg, "train", "augment", 1, &t->augment));
    MS_TRY(ms_config_int(cfg, "train", "checkpoint_every", 0, 0, 1L << 40, &t->checkpoint_every));
    MS_TRY(ms_config_int(cfg, "train", "keep", 3, 1, 1000, &t->keep));
    MS_TRY(ms_config_int(cfg, "train", "loader_threads", 2, 1, 256, &t->loader_threads));
    MS_TRY(ms_config_int(cfg, "train", "cache_mb", 1024, 0, 1L << 30, &t->cache_mb));
    /* auto: each backend's own default, so that a config without the key computes as before
     * on either backend (cpu fp32, cuda bf16) */
    static const char *const precisions[] = {"auto", "fp32", "bf16", "tf32", NULL};
    int prec;
    MS_TRY(ms_config_choice(cfg, "train", "precision", "auto", precisions, &prec));
    t->precision = prec ? precisions[prec] : NULL;
    MS_TRY(ms_config_str(cfg, "data", "train", "", &o->data.train));
    MS_TRY(ms_config_str(cfg, "data", "val", "", &o->data.val));
    MS_TRY(ms_config_str(cfg, "data", "test", "", &o->data.test));
    MS_TRY(ms_config_bool(cfg, "score", "masks", 1, &o->score.masks));
    MS_TRY(ms_config_bool(cfg, "score", "class_masks", 0, &o->score.class_masks));
    MS_TRY(ms_config_bool(cfg, "score", "cells", 1, &o->score.cells));
    MS_TRY(ms_config_int(cfg, "score", "cell_size", 64, 8, 4096, &o->score.cell_size));
    MS_TRY(ms_localise_read(cfg, &o->localise));
done:
    return st;
}

/* The pipeline's config sections. */
#include "pipeline/options.h"

ms_status_t ms_options_read(ms_config_t *cfg, ms_train_opts_t *t)
{
    ms_status_t st = MS_OK;
    MS_TRY(ms_config_int(cfg, "train", "batch", 16, 1, 1 << 16, &t->batch));
    MS_TRY(ms_config_real(cfg, "train", "lr", 1e-3, 0.0, 10.0, &t->lr));
    MS_TRY(ms_config_real(cfg, "train", "beta1", 0.9, 0.0, 0.999999, &t->beta1));
    MS_TRY(ms_config_real(cfg, "train", "beta2", 0.999, 0.0, 0.999999999, &t->beta2));
    MS_TRY(ms_config_real(cfg, "train", "eps", 1e-8, 0.0, 1.0, &t->eps));
    MS_TRY(ms_config_int(cfg, "train", "crop", 0, 0, 1 << 16, &t->crop));
    MS_TRY(ms_config_int(cfg, "train", "epochs", 100, 1, 1 << 24, &t->epochs));
    MS_TRY(ms_config_int(cfg, "train", "seed", 1, 0, 0x7fffffffL, &t->seed));
    MS_TRY(ms_config_bool(cfg, "train", "augment", 1, &t->augment));
done:
    return st;
}

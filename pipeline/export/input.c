/* A score output and the shard it scored, opened and cross-checked for export: nothing is
 * written until both are known to describe the same images. */
#include "pipeline/export/export.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/config.h"
#include "engine/spec.h"
#include "io/h5util.h"

const char *ms_export_basename(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The shard as recorded; else by its file name in shard_dir; else beside the output (a
 * recorded relative path is relative to where score ran, which need not be here). */
static ms_status_t find_shard(const char *scores, const char *source, const char *shard_dir,
                              char **out)
{
    char buf[4096];
    const char *base = ms_export_basename(source);
    const char *slash = strrchr(scores, '/');
    *out = NULL;
    snprintf(buf, sizeof buf, "%s", source);
    if (!is_file(buf) && shard_dir)
        snprintf(buf, sizeof buf, "%s/%s", shard_dir, base);
    if (!is_file(buf))
        snprintf(buf, sizeof buf, "%.*s%s", slash ? (int)(slash - scores + 1) : 0, scores, base);
    if (!is_file(buf))
        return MS_ERR(MS_EIO, "%s: the shard it scored, %s, does not exist%s%s%s (nor beside "
                      "the score output); name its folder with --shard-dir",
                      scores, source, shard_dir ? " (nor in " : "", shard_dir ? shard_dir : "",
                      shard_dir ? ")" : "");
    if (!(*out = strdup(buf)))
        return MS_ERR(MS_ENOMEM, "out of memory");
    return MS_OK;
}

/* Instance geometry from the config the output was scored with (sum over the layers before
 * the MIL pooling of ((size-1)/2 - pad) times the stride so far, as render draws maps), and
 * the map size that network gives for an H x W image, to check the stored maps against. */
static ms_status_t map_geometry(ms_export_input_t *in)
{
    ms_status_t st = MS_OK;
    ms_config_t *cfg = NULL;
    ms_spec_t spec = {0};
    ms_layer_t *layers = NULL;
    const ms_scores_t *s = &in->s;
    if (!s->config || !*s->config)
        MS_FAIL(MS_EFORMAT, "%s has instance maps but no network config (attribute 'config'), "
                "so where each instance sits in the image is unknown", in->scores_path);
    MS_TRY(ms_config_parse(&cfg, s->config, in->scores_path));
    MS_TRY(ms_spec_from_config(&spec, cfg));
    MS_ALLOC(layers, spec.nlayers, "network layers");
    MS_TRY(ms_spec_resolve(&spec, in->H, in->W, layers));
    const ms_layer_t *mil = &layers[spec.mil];
    if (mil->c != s->K || mil->h != s->map_h || mil->w != s->map_w)
        MS_FAIL(MS_EFORMAT, "%s: /maps are %d x %d x %d per image, but its network gives %d x "
                "%d x %d for the %dx%d images of %s", in->scores_path, s->K, s->map_h,
                s->map_w, mil->c, mil->h, mil->w, in->W, in->H, in->shard_path);
    double off = 0;
    int j = 1;
    for (int i = 0; i < spec.mil; i++) {
        const ms_layer_spec_t *l = &spec.layers[i];
        if (l->kind == MS_LAYER_CONV || l->kind == MS_LAYER_MAXPOOL ||
            l->kind == MS_LAYER_AVGPOOL) {
            off += ((l->size - 1) / 2.0 - l->pad) * j;
            j *= l->stride;
        }
    }
    in->stride = j;
    in->offset = off;
done:
    free(layers);
    ms_spec_free(&spec);
    ms_config_free(cfg);
    return st;
}

/* The shard's root attribute pixel_size_um, float64 [2] = (y, x), when present. */
static ms_status_t pixel_size(ms_export_input_t *in)
{
    ms_status_t st = MS_OK;
    hid_t f = H5I_INVALID_HID, a = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    MS_TRY(ms_h5_open(&f, in->shard_path));
    if (H5Aexists(f, "pixel_size_um") <= 0)
        goto done;
    if ((a = H5Aopen(f, "pixel_size_um", H5P_DEFAULT)) < 0 || (sp = H5Aget_space(a)) < 0 ||
        H5Sget_simple_extent_npoints(sp) != 2)
        MS_FAIL(MS_EFORMAT, "%s: attribute pixel_size_um is not two numbers (y, x)",
                in->shard_path);
    if (H5Aread(a, H5T_NATIVE_DOUBLE, in->pixel_size) < 0)
        MS_FAIL(MS_EFORMAT, "%s: cannot read attribute pixel_size_um as numbers",
                in->shard_path);
    if (!(in->pixel_size[0] > 0 && in->pixel_size[1] > 0 && in->pixel_size[0] < 1e6 &&
          in->pixel_size[1] < 1e6))
        MS_FAIL(MS_EFORMAT, "%s: pixel_size_um (%g, %g) is not a positive size in "
                "micrometres", in->shard_path, in->pixel_size[0], in->pixel_size[1]);
    in->has_pixel_size = 1;
done:
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    if (f >= 0)
        H5Fclose(f);
    return st;
}

ms_status_t ms_export_input_open(ms_export_input_t *in, const char *scores_path,
                                 const char *shard_dir)
{
    ms_status_t st = MS_OK;
    char *want = NULL;
    memset(in, 0, sizeof *in);
    in->s.file = -1;
    if (!(in->scores_path = strdup(scores_path)))
        MS_FAIL(MS_ENOMEM, "out of memory");
    MS_TRY(ms_scores_open(&in->s, scores_path));
    const ms_scores_t *s = &in->s;
    const char *missing = !s->image_id ? "/image_id" : !s->fc_prob ? "/fc_prob"
                          : !s->pred   ? "/pred"     : NULL;
    if (missing)
        MS_FAIL(MS_EFORMAT, "%s has no %s (milscreen score writes it): not a complete score "
                "output", scores_path, missing);
    for (size_t i = 0; i < s->N; i++)
        if (s->pred[i] < 0 || s->pred[i] >= s->K)
            MS_FAIL(MS_EFORMAT, "%s: /pred[%zu] = %d is not a class (0..%d)", scores_path, i,
                    s->pred[i], s->K - 1);
    if (!s->source)
        MS_FAIL(MS_EFORMAT, "%s has no 'source' attribute naming the shard it scored",
                scores_path);
    MS_TRY(find_shard(scores_path, s->source, shard_dir, &in->shard_path));
    MS_TRY(ms_shard_open(&in->shard, in->shard_path));
    ms_shard_t *sh = in->shard;

    /* the same images, by name and in order: the rows of every table are joined by index */
    if ((size_t)ms_shard_count(sh) != s->N)
        MS_FAIL(MS_EFORMAT, "%s has %zu images but its shard %s has %d: not the shard it "
                "scored", scores_path, s->N, in->shard_path, ms_shard_count(sh));
    for (size_t i = 0; i < s->N; i++) {
        const char *id = ms_shard_meta(sh, (int)i)->image_id;
        if (strcmp(s->image_id[i], id ? id : ""))
            MS_FAIL(MS_EFORMAT, "%s: image %zu is '%s' but image %zu of its shard %s is '%s': "
                    "not the shard it scored", scores_path, i, s->image_id[i], i,
                    in->shard_path, id ? id : "");
    }
    /* the same bytes: a shard re-made with the same ids but other pixels or labels */
    if (ms_h5_attr_exists((hid_t)s->file, "source_digest")) {
        char got[65];
        MS_TRY(ms_h5_attr_get_str((hid_t)s->file, "source_digest", &want));
        MS_TRY(ms_shard_digest(sh, got));
        if (strcmp(want, got))
            MS_FAIL(MS_EFORMAT, "%s was scored from a shard with SHA-256 %s, but %s has %s: "
                    "the shard changed since it was scored (score it again)", scores_path, want,
                    in->shard_path, got);
    } else {
        fprintf(stderr, "milscreen export: warning: %s has no source_digest; cannot check that "
                "%s is the shard it scored\n", scores_path, in->shard_path);
    }

    in->H = ms_shard_height(sh);
    in->W = ms_shard_width(sh);
    if (s->mask_h && (s->mask_h != in->H || s->mask_w != in->W))
        MS_FAIL(MS_EFORMAT, "%s: /masks are %dx%d but the images of %s are %dx%d", scores_path,
                s->mask_w, s->mask_h, in->shard_path, in->W, in->H);
    if (s->map_h)
        MS_TRY(map_geometry(in));
    if (s->M) {
        ms_cells_t c;
        if (!ms_shard_has_cells(sh))
            MS_FAIL(MS_EFORMAT, "%s has %zu scored cells but its shard %s lists none",
                    scores_path, s->M, in->shard_path);
        MS_TRY(ms_shard_cells(sh, &c));
        if ((size_t)c.n != s->M)
            MS_FAIL(MS_EFORMAT, "%s has %zu scored cells but its shard %s lists %d",
                    scores_path, s->M, in->shard_path, c.n);
        for (size_t j = 0; j < s->M; j++)
            if (s->cell_image[j] != c.image_index[j] || c.image_index[j] < 0 ||
                (size_t)c.image_index[j] >= s->N)
                MS_FAIL(MS_EFORMAT, "%s: scored cell %zu is in image %d, but cell %zu of %s in "
                        "image %d", scores_path, j, s->cell_image[j], j, in->shard_path,
                        c.image_index[j]);
    }
    MS_TRY(pixel_size(in));
done:
    free(want);
    if (st)
        ms_export_input_close(in);
    return st;
}

void ms_export_input_close(ms_export_input_t *in)
{
    if (in->shard)
        ms_shard_close(in->shard);
    if (in->s.path)
        ms_scores_close(&in->s);
    free(in->scores_path);
    free(in->shard_path);
    memset(in, 0, sizeof *in);
    in->s.file = -1;
}

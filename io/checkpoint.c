/* Checkpoint files (see checkpoint.h). */
#include "io/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <unistd.h>

#include "io/h5util.h"
#include "ms_build_config.h"

/* FNV-1a, 64 bit: a digest to recognise the same weights, not a security measure. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Per parameter tensor: name, rank, dims, offset into the flat buffer. */
typedef struct {
    char name[80];
    int rank;
    hsize_t dims[4];
    size_t off, n;
} tensor_t;

static int list_tensors(const ms_spec_t *spec, tensor_t *t, int max)
{
    ms_layer_t L[256];
    int m = ms_spec_min_input(spec), n = 0;
    if (spec->nlayers > 256 || ms_spec_resolve(spec, m, m, L) != MS_OK)
        return -1;
    for (int i = 0; i < spec->nlayers && n + 2 <= max; i++) {
        const ms_layer_spec_t *s = L[i].spec;
        if (s->kind == MS_LAYER_CONV) {
            t[n] = (tensor_t){.rank = 4, .dims = {(hsize_t)L[i].oc, (hsize_t)L[i].c,
                                                   (hsize_t)s->size, (hsize_t)s->size},
                              .off = L[i].w_off, .n = L[i].nw};
            snprintf(t[n++].name, sizeof t->name, "%s/weight", s->name);
            t[n] = (tensor_t){.rank = 1, .dims = {(hsize_t)L[i].oc}, .off = L[i].b_off,
                              .n = L[i].nb};
            snprintf(t[n++].name, sizeof t->name, "%s/bias", s->name);
        } else if (s->kind == MS_LAYER_FC) {
            t[n] = (tensor_t){.rank = 2, .dims = {(hsize_t)L[i].oc, (hsize_t)L[i].c},
                              .off = L[i].w_off, .n = L[i].nw};
            snprintf(t[n++].name, sizeof t->name, "%s/weight", s->name);
            t[n] = (tensor_t){.rank = 1, .dims = {(hsize_t)L[i].oc}, .off = L[i].b_off,
                              .n = L[i].nb};
            snprintf(t[n++].name, sizeof t->name, "%s/bias", s->name);
        } else if (s->kind == MS_LAYER_MIL && L[i].nb) {
            t[n] = (tensor_t){.rank = 1, .dims = {(hsize_t)L[i].nb}, .off = L[i].b_off,
                              .n = L[i].nb};
            snprintf(t[n++].name, sizeof t->name, "%s/threshold", s->name);
        }
    }
    return n;
}

/* The digest: FNV-1a over the config text and the flat parameters (float32, the net's
 * order), as 16 hex digits; the same in format versions 1 and 2. */
static void digest_of(const char *config, const float *p, size_t np, char out[17])
{
    uint64_t h = fnv(0xcbf29ce484222325ULL, config ? config : "", config ? strlen(config) : 0);
    h = fnv(h, p, np * sizeof *p);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* The normalisation every image goes through: finite means, finite positive deviations. */
static ms_status_t check_norm(const char *path, const ms_ckpt_t *ck)
{
    for (int c = 0; c < ck->channels; c++)
        if (!isfinite(ck->mean[c]) || !isfinite(ck->std[c]) || !(ck->std[c] > 0))
            return MS_ERR(MS_EFORMAT, "%s: /norm of channel %d is mean %g, std %g (a finite "
                          "mean and a finite std > 0 are needed)", path, c,
                          (double)ck->mean[c], (double)ck->std[c]);
    return MS_OK;
}

static ms_status_t read_flat(ms_net_t *net, void *which, float **out)
{
    ms_status_t st = MS_OK;
    size_t np = ms_net_nparams(net);
    *out = NULL;
    if (ms_net_dtype(net) != MS_F32)
        return MS_ERR(MS_EARG, "checkpoints hold float32 networks");
    MS_ALLOC(*out, np, "parameter copy");
    MS_TRY(ms_net_read(net, which, *out));
done:
    return st;
}

ms_status_t ms_checkpoint_save(const char *path, ms_net_t *net, ms_ckpt_t *ck)
{
    ms_status_t st = MS_OK;
    float *p = NULL, *m = NULL, *v = NULL;
    ms_h5file_t f = {0};
    tensor_t T[512];
    int nt = list_tensors(ms_net_spec(net), T, 512);
    if (nt < 0)
        return MS_ERR(MS_EINTERNAL, "cannot list the network's parameters");
    MS_TRY(read_flat(net, ms_net_params(net), &p));
    MS_TRY(read_flat(net, ms_net_adam_m(net), &m));
    MS_TRY(read_flat(net, ms_net_adam_v(net), &v));
    size_t np = ms_net_nparams(net);
    /* a diverged network must not replace the good checkpoints before it */
    for (size_t i = 0; i < np; i++)
        if (!isfinite(p[i]) || !isfinite(m[i]) || !isfinite(v[i]))
            MS_FAIL(MS_ENUMERIC, "%s: not written: parameter %zu of the network (or its Adam "
                    "state) is not finite", path, i);
    MS_TRY(check_norm(path, ck));
    digest_of(ck->config, p, np, ck->digest);

    MS_TRY(ms_h5_create(&f, path));
    for (int i = 0; i < nt; i++) {
        char full[sizeof T->name + 16];
        if (snprintf(full, sizeof full, "weights/%s", T[i].name) >= (int)sizeof full)
            MS_FAIL(MS_EINTERNAL, "parameter name too long: %s", T[i].name);
        MS_TRY(ms_h5_write_checked(f.id, full, H5T_NATIVE_FLOAT, T[i].rank, T[i].dims,
                                   p + T[i].off));
    }
    hsize_t dn = np, dc = (hsize_t)ck->channels;
    MS_TRY(ms_h5_write_checked(f.id, "optimizer/m", H5T_NATIVE_FLOAT, 1, &dn, m));
    MS_TRY(ms_h5_write_checked(f.id, "optimizer/v", H5T_NATIVE_FLOAT, 1, &dn, v));
    MS_TRY(ms_h5_write_checked(f.id, "norm/mean", H5T_NATIVE_FLOAT, 1, &dc, ck->mean));
    MS_TRY(ms_h5_write_checked(f.id, "norm/std", H5T_NATIVE_FLOAT, 1, &dc, ck->std));
    MS_TRY(ms_h5_attr_set_str(f.id, "format", MS_CKPT_FORMAT));
    MS_TRY(ms_h5_attr_set_int(f.id, "format_version", MS_CKPT_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "milscreen_version", MS_VERSION));
    MS_TRY(ms_h5_attr_set_str(f.id, "config", ck->config ? ck->config : ""));
    MS_TRY(ms_h5_attr_set_str(f.id, "class_names", ck->class_names ? ck->class_names : ""));
    MS_TRY(ms_h5_attr_set_str(f.id, "channel_names", ck->channel_names ? ck->channel_names : ""));
    MS_TRY(ms_h5_attr_set_str(f.id, "digest", ck->digest));
    MS_TRY(ms_h5_attr_set_int(f.id, "step", ms_net_step(net)));
    MS_TRY(ms_h5_attr_set_int(f.id, "epoch", ck->epoch));
    MS_TRY(ms_h5_attr_set_int(f.id, "batch", ck->batch));
    MS_TRY(ms_h5_attr_set_int(f.id, "seed", (long long)ck->seed));
    MS_TRY(ms_h5_attr_set_str(f.id, "flat_order",
                              "optimizer/m and optimizer/v: per layer in config order, weight "
                              "then bias, the mil threshold"));
    MS_TRY(ms_h5_commit(&f));
done:
    if (st)
        ms_h5_abort(&f);
    free(p), free(m), free(v);
    return st;
}

ms_status_t ms_checkpoint_read_meta(const char *path, ms_ckpt_t *ck)
{
    ms_status_t st = MS_OK;
    char *fmt = NULL;
    long long version = 0, x;
    hid_t f = H5I_INVALID_HID;
    memset(ck, 0, sizeof *ck);
    MS_TRY(ms_h5_open(&f, path));
    if (!ms_h5_attr_exists(f, "format"))
        MS_FAIL(MS_EFORMAT, "%s: not a milscreen checkpoint (no 'format' attribute)", path);
    MS_TRY(ms_h5_attr_get_str(f, "format", &fmt));
    if (strcmp(fmt, MS_CKPT_FORMAT))
        MS_FAIL(MS_EFORMAT, "%s: format is '%s', not a %s", path, fmt, MS_CKPT_FORMAT);
    MS_TRY(ms_h5_attr_get_int(f, "format_version", &version));
    if (version < 1 || version > MS_CKPT_VERSION)
        MS_FAIL(MS_EFORMAT, "%s: checkpoint format version %lld, this milscreen reads versions "
                "1 to %d", path, version, MS_CKPT_VERSION);
    ck->version = (int)version;
    MS_TRY(ms_h5_attr_get_str(f, "config", &ck->config));
    MS_TRY(ms_h5_attr_get_str(f, "class_names", &ck->class_names));
    if (ms_h5_attr_exists(f, "channel_names"))
        MS_TRY(ms_h5_attr_get_str(f, "channel_names", &ck->channel_names));
    char *dig = NULL;
    MS_TRY(ms_h5_attr_get_str(f, "digest", &dig));
    snprintf(ck->digest, sizeof ck->digest, "%s", dig);
    free(dig);
    MS_TRY(ms_h5_attr_get_int(f, "step", &x));
    ck->step = (long)x;
    MS_TRY(ms_h5_attr_get_int(f, "epoch", &x));
    ck->epoch = (long)x;
    MS_TRY(ms_h5_attr_get_int(f, "batch", &x));
    ck->batch = (long)x;
    MS_TRY(ms_h5_attr_get_int(f, "seed", &x));
    ck->seed = (uint64_t)x;
    int rank;
    hsize_t dims[8];
    MS_TRY(ms_h5_dims(f, "norm/mean", &rank, dims));
    if (rank != 1 || dims[0] < 1 || dims[0] > MS_MAX_CHANNELS)
        MS_FAIL(MS_EFORMAT, "%s: norm/mean has an unexpected shape", path);
    ck->channels = (int)dims[0];
    MS_TRY(ms_h5_read(f, "norm/mean", H5T_NATIVE_FLOAT, 1, dims, ck->mean));
    MS_TRY(ms_h5_read(f, "norm/std", H5T_NATIVE_FLOAT, 1, dims, ck->std));
    MS_TRY(check_norm(path, ck));
    if (ck->channel_names && ck->channel_names[0]) {
        int nc = 1;
        for (const char *q = ck->channel_names; *q; q++)
            nc += *q == '\n';
        if (nc != ck->channels)
            MS_FAIL(MS_EFORMAT, "%s: %d channel names but /norm has %d channels", path, nc,
                    ck->channels);
    }
done:
    free(fmt);
    if (f >= 0)
        H5Fclose(f);
    if (st)
        ms_checkpoint_free(ck);
    return st;
}

ms_status_t ms_checkpoint_load(const char *path, ms_net_t *net, int with_optimizer)
{
    ms_status_t st = MS_OK;
    float *p = NULL, *m = NULL, *v = NULL;
    char *config = NULL, *stored = NULL;
    tensor_t T[512];
    hid_t f = H5I_INVALID_HID;
    long long step = 0;
    MS_TRY(ms_h5_open(&f, path));
    int nt = list_tensors(ms_net_spec(net), T, 512);
    size_t np = ms_net_nparams(net);
    if (nt < 0)
        MS_FAIL(MS_EINTERNAL, "cannot list the network's parameters");
    MS_ALLOC(p, np, "parameters");
    /* everything is read and proved before the net is touched: a damaged file leaves the
     * net as it was (so --resume can go on to an older checkpoint) */
    for (int i = 0; i < nt; i++) {
        char full[sizeof T->name + 16];
        if (snprintf(full, sizeof full, "weights/%s", T[i].name) >= (int)sizeof full)
            MS_FAIL(MS_EINTERNAL, "parameter name too long: %s", T[i].name);
        /* version 2: HDF5 checks each dataset's fletcher32 sum and names a damaged one */
        MS_TRY(ms_h5_read(f, full, H5T_NATIVE_FLOAT, T[i].rank, T[i].dims, p + T[i].off));
        for (size_t j = 0; j < T[i].n; j++)
            if (!isfinite(p[T[i].off + j]))
                MS_FAIL(MS_EFORMAT, "%s: %s holds a non-finite value (element %zu)", path, full,
                        j);
    }
    /* the digest proves the weights and the config together (and is all a version 1 file
     * has): a change made after writing, even one that kept the checksums right, is found */
    char digest[17];
    MS_TRY(ms_h5_attr_get_str(f, "config", &config));
    MS_TRY(ms_h5_attr_get_str(f, "digest", &stored));
    digest_of(config, p, np, digest);
    if (strcmp(digest, stored))
        MS_FAIL(MS_EFORMAT, "%s: the weights and config do not match the stored digest (%s, "
                "computed %s): the file was changed or damaged after it was written", path,
                stored, digest);
    if (with_optimizer) {
        hsize_t dn = np;
        MS_ALLOC(m, np, "adam m");
        MS_ALLOC(v, np, "adam v");
        MS_TRY(ms_h5_read(f, "optimizer/m", H5T_NATIVE_FLOAT, 1, &dn, m));
        MS_TRY(ms_h5_read(f, "optimizer/v", H5T_NATIVE_FLOAT, 1, &dn, v));
        for (size_t j = 0; j < np; j++)
            if (!isfinite(m[j]) || !isfinite(v[j]) || v[j] < 0)
                MS_FAIL(MS_EFORMAT, "%s: optimizer/%s[%zu] = %g is not a valid Adam moment",
                        path, isfinite(m[j]) ? "v" : "m", j,
                        (double)(isfinite(m[j]) ? v[j] : m[j]));
        MS_TRY(ms_h5_attr_get_int(f, "step", &step));
        if (step < 0)
            MS_FAIL(MS_EFORMAT, "%s: step %lld", path, step);
    }
    MS_TRY(ms_net_write(net, ms_net_params(net), p));
    if (with_optimizer) {
        MS_TRY(ms_net_write(net, ms_net_adam_m(net), m));
        MS_TRY(ms_net_write(net, ms_net_adam_v(net), v));
        ms_net_set_step(net, (long)step);
    }
done:
    free(p), free(m), free(v), free(config), free(stored);
    if (f >= 0)
        H5Fclose(f);
    return st;
}

void ms_checkpoint_free(ms_ckpt_t *ck)
{
    free(ck->class_names);
    free(ck->channel_names);
    free(ck->config);
    ck->class_names = ck->channel_names = ck->config = NULL;
}

/* ---------------------------------------------------------------- run folders */

int ms_checkpoint_list(const char *dir, long *steps, int max)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (!d || max < 1) {
        if (d)
            closedir(d);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "ckpt-%ld.%3s", &s, tail) != 2 || strcmp(tail, "h5") || s < 0)
            continue;
        /* keep the max newest, in order: insert s where it belongs, dropping the oldest */
        int i = n < max ? n++ : max;
        if (i == max && s <= steps[max - 1])
            continue;
        if (i == max)
            i = max - 1;
        for (; i > 0 && steps[i - 1] < s; i--)
            steps[i] = steps[i - 1];
        steps[i] = s;
    }
    closedir(d);
    return n;
}

int ms_checkpoint_path(const char *dir, long step, char *out, size_t n)
{
    return snprintf(out, n, "%s/ckpt-%08ld.h5", dir, step) < (int)n ? 0 : -1;
}

void ms_checkpoint_newest(const char *dir, char *out, size_t n)
{
    long step;
    out[0] = 0;
    if (ms_checkpoint_list(dir, &step, 1) == 1 && ms_checkpoint_path(dir, step, out, n))
        out[0] = 0;
}

void ms_checkpoint_prune(const char *dir, int keep)
{
    long steps[4096];
    int n = ms_checkpoint_list(dir, steps, 4096);
    for (int i = keep > 0 ? keep : 0; i < n; i++) {
        char path[4096];
        if (!ms_checkpoint_path(dir, steps[i], path, sizeof path))
            unlink(path);
    }
}

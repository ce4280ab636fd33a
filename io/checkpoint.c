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
    uint64_t h = fnv(0xcbf29ce484222325ULL, ck->config ? ck->config : "",
                     ck->config ? strlen(ck->config) : 0);
    h = fnv(h, p, np * sizeof *p);
    snprintf(ck->digest, sizeof ck->digest, "%016llx", (unsigned long long)h);

    MS_TRY(ms_h5_create(&f, path));
    for (int i = 0; i < nt; i++) {
        char full[sizeof T->name + 16];
        if (snprintf(full, sizeof full, "weights/%s", T[i].name) >= (int)sizeof full)
            MS_FAIL(MS_EINTERNAL, "parameter name too long: %s", T[i].name);
        MS_TRY(ms_h5_write(f.id, full, H5T_NATIVE_FLOAT, T[i].rank, T[i].dims, p + T[i].off,
                           NULL, 0));
    }
    hsize_t dn = np, dc = (hsize_t)ck->channels;
    MS_TRY(ms_h5_write(f.id, "optimizer/m", H5T_NATIVE_FLOAT, 1, &dn, m, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "optimizer/v", H5T_NATIVE_FLOAT, 1, &dn, v, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "norm/mean", H5T_NATIVE_FLOAT, 1, &dc, ck->mean, NULL, 0));
    MS_TRY(ms_h5_write(f.id, "norm/std", H5T_NATIVE_FLOAT, 1, &dc, ck->std, NULL, 0));
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
    if (version != MS_CKPT_VERSION)
        MS_FAIL(MS_EFORMAT, "%s: checkpoint format version %lld, this milscreen reads %d", path,
                version, MS_CKPT_VERSION);
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
    tensor_t T[512];
    hid_t f = H5I_INVALID_HID;
    MS_TRY(ms_h5_open(&f, path));
    int nt = list_tensors(ms_net_spec(net), T, 512);
    size_t np = ms_net_nparams(net);
    MS_ALLOC(p, np, "parameters");
    for (int i = 0; i < nt; i++) {
        char full[sizeof T->name + 16];
        if (snprintf(full, sizeof full, "weights/%s", T[i].name) >= (int)sizeof full)
            MS_FAIL(MS_EINTERNAL, "parameter name too long: %s", T[i].name);
        MS_TRY(ms_h5_read(f, full, H5T_NATIVE_FLOAT, T[i].rank, T[i].dims, p + T[i].off));
        for (size_t j = 0; j < T[i].n; j++)
            if (!isfinite(p[T[i].off + j]))
                MS_FAIL(MS_EFORMAT, "%s: %s holds a non-finite value (element %zu)", path, full,
                        j);
    }
    MS_TRY(ms_net_write(net, ms_net_params(net), p));
    if (with_optimizer) {
        hsize_t dn = np;
        long long step;
        MS_ALLOC(m, np, "adam m");
        MS_ALLOC(v, np, "adam v");
        MS_TRY(ms_h5_read(f, "optimizer/m", H5T_NATIVE_FLOAT, 1, &dn, m));
        MS_TRY(ms_h5_read(f, "optimizer/v", H5T_NATIVE_FLOAT, 1, &dn, v));
        MS_TRY(ms_net_write(net, ms_net_adam_m(net), m));
        MS_TRY(ms_net_write(net, ms_net_adam_v(net), v));
        MS_TRY(ms_h5_attr_get_int(f, "step", &step));
        ms_net_set_step(net, (long)step);
    }
done:
    free(p), free(m), free(v);
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

void ms_checkpoint_newest(const char *dir, char *out, size_t n)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "ckpt-%ld.%3s", &s, tail) == 2 && !strcmp(tail, "h5") &&
            s > best) {
            if (snprintf(out, n, "%s/%s", dir, e->d_name) < (int)n)
                best = s;
            else
                out[0] = 0;
        }
    }
    closedir(d);
}

void ms_checkpoint_prune(const char *dir, int keep)
{
    long steps[4096];
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "ckpt-%ld.%3s", &s, tail) == 2 && !strcmp(tail, "h5"))
            steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++)
            newer += steps[j] > steps[i];
        if (newer >= keep) {
            char path[4096];
            if (snprintf(path, sizeof path, "%s/ckpt-%08ld.h5", dir, steps[i]) < (int)sizeof path)
                unlink(path);
        }
    }
}

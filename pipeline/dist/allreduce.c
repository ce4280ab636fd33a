/* The gradient all-reduce behind one interface (pipeline/dist/allreduce.h): the choice between
 * NCCL, MPI and MPI through host memory, the buckets and their start from the backward hook. */
#include "pipeline/dist/allreduce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_build_config.h"
#if MS_HAVE_CUDA
#include "engine/cuda/cuda.h"
#endif

struct ms_allreduce {
    ms_allreduce_kind_t kind;
    ms_dist_t *d;
    ms_net_t *net;
    int top;              /* the last layer: where each backward pass starts */
    ms_bucket_t *buckets; /* NCCL: from the end of the buffer down */
    int nbuckets, next;   /* next: the first bucket not started in this step */
    void *stage;          /* STAGED: the host copy of the gradients */
#if MS_HAVE_CUDA
    ms_cuda_nccl_t *nccl;
#endif
    char desc[512];
};

int ms_allreduce_buckets(const ms_layer_t *L, int nlayers, size_t bucket_elems,
                         ms_bucket_t *out)
{
    int nb = 0;
    size_t acc = 0;
    int low = -1;
    for (int l = nlayers - 1; l >= 0; l--) {
        size_t n = L[l].nw + L[l].nb;
        if (n == 0)
            continue;
        acc += n;
        low = l;
        if (acc >= bucket_elems) {
            out[nb++] = (ms_bucket_t){.off = L[l].w_off, .n = acc, .layer = l};
            acc = 0;
        }
    }
    if (acc)
        out[nb++] = (ms_bucket_t){.off = L[low].w_off, .n = acc, .layer = low};
    return nb;
}

#if MS_HAVE_CUDA /* the buckets are the NCCL path's */
/* MILSCREEN_BUCKET_KB, else the default, in elements of the net's dtype. */
static ms_status_t bucket_elems(size_t es, size_t *elems)
{
    const char *env = getenv("MILSCREEN_BUCKET_KB");
    long kb = MS_ALLREDUCE_BUCKET_KB;
    if (env) {
        char *end = NULL;
        kb = strtol(env, &end, 10);
        if (!*env || *end || kb < 0 || kb > (1L << 30))
            return MS_ERR(MS_EARG, "MILSCREEN_BUCKET_KB='%s' is not a number of KiB", env);
    }
    *elems = (size_t)kb * 1024 / es;
    return MS_OK;
}

static ms_status_t plan_buckets(ms_allreduce_t *ar)
{
    ms_status_t st = MS_OK;
    const ms_spec_t *spec = ms_net_spec(ar->net);
    ms_layer_t *L = NULL;
    size_t elems = 0;
    MS_TRY(bucket_elems(ms_dtype_size(ms_net_dtype(ar->net)), &elems));
    MS_ALLOC(L, spec->nlayers, "layers");
    MS_ALLOC(ar->buckets, spec->nlayers, "all-reduce buckets");
    /* parameter offsets do not depend on the input size */
    int m = ms_spec_min_input(spec);
    MS_TRY(ms_spec_resolve(spec, m, m, L));
    ar->nbuckets = ms_allreduce_buckets(L, spec->nlayers, elems, ar->buckets);
    ar->top = spec->nlayers - 1;
    /* the buckets must tile the buffer, or some gradient would be left unreduced */
    size_t end = ms_net_nparams(ar->net);
    for (int b = 0; b < ar->nbuckets; b++) {
        if (ar->buckets[b].off + ar->buckets[b].n != end)
            MS_FAIL(MS_EINTERNAL, "all-reduce bucket %d ends at %zu, not %zu", b,
                    ar->buckets[b].off + ar->buckets[b].n, end);
        end = ar->buckets[b].off;
    }
    if (end != 0)
        MS_FAIL(MS_EINTERNAL, "the all-reduce buckets leave parameters [0, %zu) out", end);
done:
    free(L);
    return st;
}

static ms_status_t on_backward(void *ctx, int layer, size_t off, size_t n)
{
    return ms_allreduce_layer_done(ctx, layer);
}
#endif

ms_status_t ms_allreduce_layer_done(ms_allreduce_t *ar, int layer)
{
    if (ar->kind != MS_ALLREDUCE_NCCL)
        return MS_OK;
#if MS_HAVE_CUDA
    ms_status_t st = MS_OK;
    if (layer == ar->top && ar->next != 0)
        MS_FAIL(MS_EINTERNAL, "a backward pass began before ms_allreduce_wait() ended the "
                "previous one's all-reduce");
    while (ar->next < ar->nbuckets && ar->buckets[ar->next].layer == layer) {
        const ms_bucket_t *b = &ar->buckets[ar->next];
        MS_TRY(ms_cuda_nccl_start(ar->nccl, (float *)ms_net_grads(ar->net) + b->off, b->n));
        ar->next++;
    }
done:
    return st;
#else
    return MS_OK;
#endif
}

/* Whether this rank could use NCCL; why not, when it cannot. */
static int nccl_usable(ms_allreduce_t *ar, char *why, size_t n)
{
    ms_backend_t *be = ms_net_backend(ar->net);
    if (!be->device_memory) {
        snprintf(why, n, "the %s backend's gradients are in host memory", be->name);
        return 0;
    }
#if MS_HAVE_CUDA
    int v = 0;
    if (strcmp(be->name, "cuda") != 0)
        snprintf(why, n, "NCCL needs the cuda backend");
    else if (ms_net_dtype(ar->net) != MS_F32)
        snprintf(why, n, "NCCL path reduces float gradients only");
    else if (ms_cuda_nccl_version(&v) != MS_OK)
        snprintf(why, n, "%s", ms_error_message());
    else
        return 1;
#else
    snprintf(why, n, "this milscreen was built without CUDA");
#endif
    return 0;
}

ms_status_t ms_allreduce_open(ms_allreduce_t **out, ms_dist_t *d, ms_net_t *net, int force)
{
    ms_status_t st = MS_OK;
    ms_allreduce_t *ar = NULL;
    char why[400] = "";
    *out = NULL;
    MS_ALLOC(ar, 1, "all-reduce");
    ar->d = d;
    ar->net = net;
    ar->kind = MS_ALLREDUCE_NONE;
    if (d->ranks == 1 && !force) {
        snprintf(ar->desc, sizeof ar->desc, "none (one rank)");
        goto chosen;
    }
    /* every rank takes the same path, or the ranks would wait in different collectives: any
     * rank that cannot use NCCL sends all of them to MPI */
    int can = nccl_usable(ar, why, sizeof why);
    double cannot = !can;
    MS_TRY(ms_dist_sum(d, &cannot, 1));
    if (can && cannot > 0)
        snprintf(why, sizeof why, "%.0f of the %d ranks cannot use NCCL", cannot, d->ranks);
    if (cannot == 0) {
#if MS_HAVE_CUDA
        char id[MS_CUDA_NCCL_ID_BYTES] = {0};
        int v = 0;
        if (d->rank == 0)
            MS_TRY(ms_cuda_nccl_id(id));
        MS_TRY(ms_dist_bcast(d, id, (int)sizeof id));
        MS_TRY(ms_cuda_nccl_open(&ar->nccl, ms_net_backend(net), id, d->rank, d->ranks));
        MS_TRY(plan_buckets(ar));
        MS_TRY(ms_cuda_nccl_version(&v));
        ar->kind = MS_ALLREDUCE_NCCL;
        ms_net_set_backward_hook(net, on_backward, ar);
        snprintf(ar->desc, sizeof ar->desc, "NCCL %d.%d.%d over %d rank%s in device memory, %d "
                 "bucket%s from the last layer back overlapping the backward pass",
                 v / 10000, v / 100 % 100, v % 100, d->ranks, d->ranks > 1 ? "s" : "",
                 ar->nbuckets, ar->nbuckets > 1 ? "s" : "");
#endif
    } else if (ms_net_backend(net)->device_memory) {
        size_t bytes = ms_net_nparams(net) * ms_dtype_size(ms_net_dtype(net));
        MS_ALLOC(ar->stage, bytes, "all-reduce staging buffer");
        ar->kind = MS_ALLREDUCE_STAGED;
        snprintf(ar->desc, sizeof ar->desc, "MPI_Allreduce over %d rank%s through host memory "
                 "(no NCCL: %s)", d->ranks, d->ranks > 1 ? "s" : "", why);
    } else {
        ar->kind = MS_ALLREDUCE_MPI;
        snprintf(ar->desc, sizeof ar->desc, "MPI_Allreduce over %d rank%s in host memory",
                 d->ranks, d->ranks > 1 ? "s" : "");
    }
chosen:
    *out = ar;
    ar = NULL;
done:
    ms_allreduce_close(ar);
    return st;
}

void ms_allreduce_close(ms_allreduce_t *ar)
{
    if (!ar)
        return;
    if (ar->kind == MS_ALLREDUCE_NCCL)
        ms_net_set_backward_hook(ar->net, NULL, NULL);
#if MS_HAVE_CUDA
    ms_cuda_nccl_close(ar->nccl);
#endif
    free(ar->buckets);
    free(ar->stage);
    free(ar);
}

const char *ms_allreduce_describe(const ms_allreduce_t *ar) { return ar->desc; }
ms_allreduce_kind_t ms_allreduce_kind(const ms_allreduce_t *ar) { return ar->kind; }
int ms_allreduce_nbuckets(const ms_allreduce_t *ar) { return ar->nbuckets; }

ms_status_t ms_allreduce_wait(ms_allreduce_t *ar)
{
    ms_status_t st = MS_OK;
    ms_net_t *net = ar->net;
    const size_t n = ms_net_nparams(net);
    const ms_dtype_t dt = ms_net_dtype(net);
    switch (ar->kind) {
    case MS_ALLREDUCE_NONE:
        break;
    case MS_ALLREDUCE_MPI:
        MS_TRY(ms_dist_mean(ar->d, ms_net_grads(net), n, dt));
        break;
    case MS_ALLREDUCE_STAGED:
        MS_TRY(ms_net_read(net, ms_net_grads(net), ar->stage));
        MS_TRY(ms_dist_mean(ar->d, ar->stage, n, dt));
        MS_TRY(ms_net_write(net, ms_net_grads(net), ar->stage));
        break;
    case MS_ALLREDUCE_NCCL:
#if MS_HAVE_CUDA
        /* buckets the hook has not started (a buffer written directly, no backward pass) */
        while (ar->next < ar->nbuckets) {
            const ms_bucket_t *b = &ar->buckets[ar->next];
            MS_TRY(ms_cuda_nccl_start(ar->nccl, (float *)ms_net_grads(net) + b->off, b->n));
            ar->next++;
        }
        ar->next = 0;
        MS_TRY(ms_cuda_nccl_wait(ar->nccl));
#endif
        break;
    }
done:
    return st;
}

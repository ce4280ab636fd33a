/* Prefetching loader. The consumer takes batches in order from a ring of `prefetch` slots;
 * worker threads claim single images in epoch order, decode (cache or shard), crop, transform
 * and normalise them straight into their slot. A slot is reused only after the consumer has
 * asked for the batch after it. Randomness comes from hashes of (seed, epoch, image), never
 * from a shared stream, so the thread count cannot change a batch. */
#include "io/loader.h"

#include "io/h5util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    float *x, *t;
    int64_t *index;
    int *shard, *image, *transform, *y0, *x0;
    int done; /* images finished in this slot */
} slot_t;

struct ms_loader {
    ms_loader_opts_t o;
    ms_shard_t **shards;
    int ns;
    int64_t *offset;  /* (ns + 1) global index of each shard's first image */
    int c, k, h, w;   /* output size per image */
    int maxh, maxw;
    int64_t total;    /* images in all shards */
    int64_t *items;   /* (M) eligible global indices */
    int64_t m;
    float *mean_inv[2]; /* (C) mean, 1/std */

    /* the epoch */
    int epoch;
    int64_t *perm;      /* (M) */
    int64_t *mine;      /* this rank's global indices in order (nmine) */
    int64_t nmine;
    int nbatch;
    int64_t *bstart;    /* (nbatch + 1) first item of each batch in mine */

    /* the ring */
    int q;
    slot_t *slots;
    int64_t next_item;  /* next item a worker claims */
    int consumed;       /* batches handed to the consumer */
    int returned;       /* batches the consumer is done with: their slots may be refilled */
    int busy;           /* workers inside a decode */
    int gen;            /* bumped at every epoch start: stale results are dropped */
    int stop;
    ms_status_t err;
    char errmsg[1024];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *tid;
    int nthreads;

    /* cache: decoded full images per global index */
    uint16_t **cache;
    size_t cache_used;
    uint16_t *scratch0; /* image buffer for synchronous decoding (threads == 0) */
};

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t hash3(uint64_t seed, uint64_t a, uint64_t b)
{
    return mix64(mix64(mix64(seed) ^ a) ^ b);
}

/* ------------------------------------------------------------------ one image */

static void locate(const ms_loader_t *L, int64_t g, int *s, int *i)
{
    int lo = 0, hi = L->ns - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (L->offset[mid] <= g)
            lo = mid;
        else
            hi = mid - 1;
    }
    *s = lo;
    *i = (int)(g - L->offset[lo]);
}

/* Decodes global image g into slot position p of the slot. buf: a (C, maxH, maxW) scratch. */
static ms_status_t load_one(ms_loader_t *L, slot_t *sl, int p, int64_t g, uint16_t *buf)
{
    ms_status_t st = MS_OK;
    int s, i;
    locate(L, g, &s, &i);
    ms_shard_t *sh = L->shards[s];
    int H = ms_shard_height(sh), W = ms_shard_width(sh), C = L->c;
    int oh = L->h, ow = L->w;
    uint64_t r = hash3(L->o.seed, (uint64_t)L->epoch, (uint64_t)g);
    int tr = 0;
    if (L->o.augment)
        tr = (oh == ow) ? (int)(r & 7) : (int)(r & 3);
    int y0 = 0, x0 = 0;
    if (L->o.crop) {
        uint64_t r2 = mix64(r);
        if (L->o.random_crop) {
            y0 = (int)((r2 >> 8) % (uint64_t)(H - oh + 1));
            x0 = (int)((r2 >> 36) % (uint64_t)(W - ow + 1));
        } else {
            y0 = (H - oh) / 2;
            x0 = (W - ow) / 2;
        }
    }
    /* the source window (oh x ow at y0, x0): row stride sw, channel stride cs */
    const uint16_t *src;
    size_t sw, cs;
    size_t bytes = (size_t)C * H * W * sizeof(uint16_t);
    uint16_t *cached = NULL;
    int fill = 0;
    if (L->cache) {
        pthread_mutex_lock(&L->mu);
        cached = L->cache[g];
        fill = !cached && L->cache_used + bytes <= L->o.cache_bytes;
        pthread_mutex_unlock(&L->mu);
    }
    if (!cached && fill) {
        /* decode the whole image once and keep it */
        MS_TRY(ms_shard_read(sh, i, buf));
        uint16_t *copy = malloc(bytes);
        if (copy) {
            memcpy(copy, buf, bytes);
            pthread_mutex_lock(&L->mu);
            if (!L->cache[g] && L->cache_used + bytes <= L->o.cache_bytes) {
                L->cache[g] = copy;
                L->cache_used += bytes;
                copy = NULL;
            }
            pthread_mutex_unlock(&L->mu);
            free(copy);
        }
    }
    if (cached || fill) {
        src = (cached ? cached : buf) + (size_t)y0 * W + x0;
        sw = (size_t)W;
        cs = (size_t)H * W;
    } else {
        const uint16_t *view = NULL;
        MS_TRY(ms_shard_read_view(sh, i, &view));
        if (view) {
            /* one decoded chunk in the thread's scratch: normalise straight from it */
            src = view + (size_t)y0 * W + x0;
            sw = (size_t)W;
            cs = (size_t)H * W;
        } else {
            /* only the window: with tiled shards only the tiles it touches are decoded */
            MS_TRY(ms_shard_read_region(sh, i, y0, x0, oh, ow, buf));
            src = buf;
            sw = (size_t)ow;
            cs = (size_t)oh * ow;
        }
    }
    float *out = sl->x + (size_t)p * C * oh * ow;
    int transpose = tr & 4, fy = tr & 2, fx = tr & 1;
    for (int c = 0; c < C; c++) {
        const uint16_t *sc = src + (size_t)c * cs;
        float m = L->mean_inv[0][c], inv = L->mean_inv[1][c];
        float *oc = out + (size_t)c * oh * ow;
        for (int y = 0; y < oh; y++) {
            float *o = oc + (size_t)y * ow;
            if (!transpose) {
                /* output row y is source row a, read forwards or backwards: vectorisable */
                const uint16_t *srow = sc + (size_t)(fy ? oh - 1 - y : y) * sw;
                if (!fx)
                    for (int x = 0; x < ow; x++)
                        o[x] = ((float)srow[x] - m) * inv;
                else
                    for (int x = 0; x < ow; x++)
                        o[x] = ((float)srow[ow - 1 - x] - m) * inv;
            } else {
                /* output row y is source column b (square crops only) */
                const uint16_t *col = sc + (fx ? ow - 1 - y : y);
                for (int x = 0; x < ow; x++) {
                    int a = fy ? oh - 1 - x : x;
                    o[x] = ((float)col[(size_t)a * sw] - m) * inv;
                }
            }
        }
    }
    const uint8_t *row = ms_shard_labels(sh, i);
    int known = ms_shard_labelled(sh, i);
    for (int k = 0; k < L->k; k++)
        sl->t[(size_t)p * L->k + k] = known ? (float)row[k] : 0.0f;
    sl->index[p] = g;
    sl->shard[p] = s;
    sl->image[p] = i;
    sl->transform[p] = tr;
    sl->y0[p] = y0;
    sl->x0[p] = x0;
done:
    return st;
}

/* ------------------------------------------------------------------ threads */

static int64_t batch_of(const ms_loader_t *L, int64_t u)
{
    /* batches are equal-sized except possibly the last */
    int64_t b = u / L->o.batch;
    return b < L->nbatch ? b : L->nbatch - 1;
}

static void *worker(void *arg)
{
    ms_loader_t *L = arg;
    size_t n = (size_t)L->c * L->maxh * L->maxw;
    uint16_t *buf = malloc(n * sizeof *buf);
    pthread_mutex_lock(&L->mu);
    if (!buf && !L->err) {
        L->err = MS_ENOMEM;
        snprintf(L->errmsg, sizeof L->errmsg, "out of memory for a loader thread");
        pthread_cond_broadcast(&L->cv);
    }
    while (!L->stop && buf) {
        int64_t u = L->next_item;
        int64_t j = u < L->nmine ? batch_of(L, u) : -1;
        if (L->err || u >= L->nmine || j >= L->returned + L->q) {
            pthread_cond_wait(&L->cv, &L->mu);
            continue;
        }
        L->next_item++;
        L->busy++;
        int gen = L->gen;
        slot_t *sl = &L->slots[j % L->q];
        int p = (int)(u - L->bstart[j]);
        int64_t g = L->mine[u];
        pthread_mutex_unlock(&L->mu);
        ms_status_t st = load_one(L, sl, p, g, buf);
        pthread_mutex_lock(&L->mu);
        L->busy--;
        if (st && !L->err) {
            L->err = st;
            snprintf(L->errmsg, sizeof L->errmsg, "%s", ms_error_message());
        }
        if (gen == L->gen && !st)
            sl->done++;
        pthread_cond_broadcast(&L->cv);
    }
    pthread_mutex_unlock(&L->mu);
    free(buf);
    return NULL;
}

/* ------------------------------------------------------------------ open, epoch, next */

static void free_slot(slot_t *s)
{
    free(s->x);
    free(s->t);
    free(s->index);
    free(s->shard);
    free(s->image);
    free(s->transform);
    free(s->y0);
    free(s->x0);
}

void ms_loader_close(ms_loader_t *L)
{
    if (!L)
        return;
    if (L->tid) {
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
        for (int t = 0; t < L->nthreads; t++)
            pthread_join(L->tid[t], NULL);
        free(L->tid);
    }
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv);
    for (int s = 0; s < L->ns && L->shards; s++)
        ms_shard_close(L->shards[s]);
    free(L->shards);
    free(L->offset);
    free(L->items);
    free(L->mean_inv[0]);
    free(L->mean_inv[1]);
    free(L->perm);
    free(L->mine);
    free(L->bstart);
    for (int q = 0; q < L->q && L->slots; q++)
        free_slot(&L->slots[q]);
    free(L->slots);
    if (L->cache)
        for (int64_t g = 0; g < L->total; g++)
            free(L->cache[g]);
    free(L->cache);
    free(L->scratch0);
    free(L);
}

ms_status_t ms_loader_open(ms_loader_t **out, const ms_loader_opts_t *o)
{
    ms_status_t st = MS_OK;
    ms_loader_t *L = NULL;
    *out = NULL;
    if (o->npaths < 1 || o->batch < 1 || o->ranks < 1 || o->rank < 0 || o->rank >= o->ranks ||
        o->crop < 0 || o->threads < 0 || o->prefetch < 0)
        return MS_ERR(MS_EARG, "loader: bad options (shards %d, batch %d, rank %d of %d, crop %d, "
                      "threads %d)", o->npaths, o->batch, o->rank, o->ranks, o->crop, o->threads);
    MS_ALLOC(L, 1, "loader");
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv, NULL);
    L->o = *o;
    L->o.paths = NULL;
    if (!ms_hdf5_threadsafe())
        L->o.threads = 0; /* HDF5 must not be entered from two threads: decode in next() */
    L->epoch = -1;
    MS_ALLOC(L->shards, o->npaths, "loader");
    MS_ALLOC(L->offset, o->npaths + 1, "loader");
    for (int s = 0; s < o->npaths; s++) {
        MS_TRY(ms_shard_open(&L->shards[s], o->paths[s]));
        L->ns = s + 1;
        ms_shard_t *a = L->shards[0], *b = L->shards[s];
        /* one loader, one kind of shard: channels and classes by name, in order */
        MS_TRY(ms_shard_check_same(a, b));
        int H = ms_shard_height(b), W = ms_shard_width(b);
        if (o->crop && (H < o->crop || W < o->crop))
            MS_FAIL(MS_EARG, "%s: images of %dx%d are smaller than the crop %d", o->paths[s], W,
                    H, o->crop);
        if (!o->crop && (H != ms_shard_height(a) || W != ms_shard_width(a)))
            MS_FAIL(MS_EFORMAT, "%s has %dx%d images but %s has %dx%d: use a crop", o->paths[s],
                    W, H, o->paths[0], ms_shard_width(a), ms_shard_height(a));
        L->maxh = H > L->maxh ? H : L->maxh;
        L->maxw = W > L->maxw ? W : L->maxw;
        L->offset[s + 1] = L->offset[s] + ms_shard_count(b);
    }
    L->c = ms_shard_channels(L->shards[0]);
    L->k = ms_shard_classes(L->shards[0]);
    L->h = o->crop ? o->crop : ms_shard_height(L->shards[0]);
    L->w = o->crop ? o->crop : ms_shard_width(L->shards[0]);
    L->total = L->offset[L->ns];
    MS_ALLOC(L->items, L->total + 1, "loader index");
    for (int s = 0; s < L->ns; s++)
        for (int i = 0; i < ms_shard_count(L->shards[s]); i++)
            if (!o->labelled_only || ms_shard_labelled(L->shards[s], i))
                L->items[L->m++] = L->offset[s] + i;
    MS_ALLOC(L->mean_inv[0], L->c, "loader");
    MS_ALLOC(L->mean_inv[1], L->c, "loader");
    for (int c = 0; c < L->c; c++) {
        float sd = o->std ? o->std[c] : 1.0f;
        if (!(sd > 0))
            MS_FAIL(MS_EARG, "loader: std of channel %d is %g (must be > 0)", c, (double)sd);
        L->mean_inv[0][c] = o->mean ? o->mean[c] : 0.0f;
        L->mean_inv[1][c] = 1.0f / sd;
    }
    MS_ALLOC(L->perm, L->m + 1, "loader");
    MS_ALLOC(L->mine, L->m + 1, "loader");
    MS_ALLOC(L->bstart, L->m / o->batch + 3, "loader");
    if (o->cache_bytes)
        MS_ALLOC(L->cache, L->total + 1, "loader cache index");
    L->q = o->prefetch ? o->prefetch : 2 + L->o.threads / o->batch;
    if (!L->o.threads)
        L->q = 1;
    size_t per = (size_t)L->c * L->h * L->w;
    /* sizes read from the shards times the batch: checked before anything is taken */
    {
        /* the cache fills up to cache_bytes, or with every decoded image if they take less */
        double all = 0;
        for (int s = 0; s < L->ns; s++)
            all += (double)ms_shard_count(L->shards[s]) * L->c * ms_shard_height(L->shards[s]) *
                   ms_shard_width(L->shards[s]) * 2;
        double cache = (double)o->cache_bytes < all ? (double)o->cache_bytes : all;
        double need = (double)L->q * o->batch * (double)per * sizeof(float) +
                      (double)(L->o.threads ? L->o.threads : 1) * L->c * L->maxh * L->maxw * 2 +
                      cache;
        char what[200];
        snprintf(what, sizeof what, "%d batches of %d images of %dx%dx%d ahead and %.0f MiB of "
                 "decoded images cached", L->q, o->batch, L->c, L->h, L->w, cache / (1 << 20));
        MS_TRY(ms_io_check_memory(o->paths[0], what, need));
    }
    MS_ALLOC(L->slots, L->q, "loader slots");
    for (int q = 0; q < L->q; q++) {
        slot_t *s = &L->slots[q];
        int b = o->batch;
        MS_ALLOC(s->x, (size_t)b * per, "loader batch");
        MS_ALLOC(s->t, (size_t)b * (L->k ? L->k : 1), "loader batch");
        MS_ALLOC(s->index, b, "loader batch");
        MS_ALLOC(s->shard, b, "loader batch");
        MS_ALLOC(s->image, b, "loader batch");
        MS_ALLOC(s->transform, b, "loader batch");
        MS_ALLOC(s->y0, b, "loader batch");
        MS_ALLOC(s->x0, b, "loader batch");
    }
    if (!L->o.threads)
        MS_ALLOC(L->scratch0, (size_t)L->c * L->maxh * L->maxw, "loader image");
    if (L->o.threads) {
        MS_ALLOC(L->tid, L->o.threads, "loader threads");
        for (int t = 0; t < L->o.threads; t++) {
            if (pthread_create(&L->tid[t], NULL, worker, L) != 0)
                MS_FAIL(MS_ENOMEM, "cannot start loader thread %d", t);
            L->nthreads = t + 1;
        }
    }
    *out = L;
    L = NULL;
done:
    if (L && L->tid && L->nthreads == 0) {
        free(L->tid);
        L->tid = NULL;
    }
    ms_loader_close(L);
    return st;
}

int ms_loader_nshards(const ms_loader_t *L) { return L->ns; }
ms_shard_t *ms_loader_shard(ms_loader_t *L, int s) { return L->shards[s]; }
int ms_loader_images(const ms_loader_t *L) { return (int)L->m; }
size_t ms_loader_cached_bytes(const ms_loader_t *L) { return L->cache_used; }

int ms_loader_steps(const ms_loader_t *L)
{
    int64_t G = (int64_t)L->o.batch * L->o.ranks;
    return (int)(L->o.drop_last ? L->m / G : (L->m + G - 1) / G);
}

ms_status_t ms_loader_epoch(ms_loader_t *L, int e)
{
    pthread_mutex_lock(&L->mu);
    L->gen++;
    L->next_item = L->nmine = 0; /* workers stop claiming */
    while (L->busy)
        pthread_cond_wait(&L->cv, &L->mu);
    L->epoch = e;
    L->err = MS_OK;
    /* the shared permutation: Fisher-Yates from a stream of (seed, epoch) */
    memcpy(L->perm, L->items, (size_t)L->m * sizeof *L->perm);
    if (L->o.shuffle)
        for (int64_t j = L->m - 1; j > 0; j--) {
            uint64_t r = hash3(L->o.seed ^ 0x51ed, (uint64_t)e, (uint64_t)j);
            int64_t k = (int64_t)(r % (uint64_t)(j + 1));
            int64_t t = L->perm[j];
            L->perm[j] = L->perm[k];
            L->perm[k] = t;
        }
    /* this rank's part of each global batch */
    int64_t b = L->o.batch, G = b * L->o.ranks;
    int steps = ms_loader_steps(L);
    int64_t n = 0;
    L->nbatch = 0;
    for (int j = 0; j < steps; j++) {
        int64_t lo = j * G + L->o.rank * b, hi = lo + b;
        if (hi > L->m)
            hi = L->m;
        if (lo >= hi)
            break; /* this rank has nothing in the last, short global batch */
        L->bstart[L->nbatch++] = n;
        for (int64_t u = lo; u < hi; u++)
            L->mine[n++] = L->perm[u];
    }
    L->bstart[L->nbatch] = n;
    for (int q = 0; q < L->q; q++)
        L->slots[q].done = 0;
    L->consumed = L->returned = 0;
    L->nmine = n;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    return MS_OK;
}

ms_status_t ms_loader_next(ms_loader_t *L, ms_batch_t *bt)
{
    ms_status_t st = MS_OK;
    memset(bt, 0, sizeof *bt);
    bt->c = L->c;
    bt->h = L->h;
    bt->w = L->w;
    bt->k = L->k;
    if (L->epoch < 0)
        return MS_ERR(MS_EARG, "loader: call ms_loader_epoch before ms_loader_next");
    pthread_mutex_lock(&L->mu);
    /* the batch handed out last time is returned now: its slot may be refilled */
    int j = L->consumed;
    if (j > L->returned) {
        L->slots[(j - 1) % L->q].done = 0;
        L->returned = j;
        pthread_cond_broadcast(&L->cv);
    }
    if (j >= L->nbatch) {
        pthread_mutex_unlock(&L->mu);
        return MS_OK;
    }
    slot_t *sl = &L->slots[j % L->q];
    int n = (int)(L->bstart[j + 1] - L->bstart[j]);
    if (!L->nthreads) {
        pthread_mutex_unlock(&L->mu);
        for (int p = 0; p < n; p++)
            MS_TRY(load_one(L, sl, p, L->mine[L->bstart[j] + p], L->scratch0));
        pthread_mutex_lock(&L->mu);
    } else {
        pthread_cond_broadcast(&L->cv);
        while (sl->done < n && !L->err)
            pthread_cond_wait(&L->cv, &L->mu);
        if (L->err) {
            st = MS_ERR(L->err, "%s", L->errmsg);
            pthread_mutex_unlock(&L->mu);
            goto done;
        }
    }
    L->consumed = j + 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    bt->n = n;
    bt->x = sl->x;
    bt->t = sl->t;
    bt->index = sl->index;
    bt->shard = sl->shard;
    bt->image = sl->image;
    bt->transform = sl->transform;
    bt->y0 = sl->y0;
    bt->x0 = sl->x0;
done:
    return st;
}

ms_status_t ms_norm_stats(const char *const *paths, int n, float *mean, float *std)
{
    ms_status_t st = MS_OK;
    ms_shard_t *s = NULL;
    double *acc = NULL;
    int C = -1;
    uint64_t count = 0;
    for (int f = 0; f < n; f++) {
        MS_TRY(ms_shard_open(&s, paths[f]));
        int c = ms_shard_channels(s), H = ms_shard_height(s), W = ms_shard_width(s);
        int N = ms_shard_count(s);
        if (C < 0) {
            C = c;
            MS_ALLOC(acc, 2 * C, "statistics");
        } else if (c != C) {
            MS_FAIL(MS_EFORMAT, "%s has %d channels, %s has %d", paths[f], c, paths[0], C);
        }
        size_t hw = (size_t)H * W;
        ms_status_t first = MS_OK;
        char msg[1024] = "";
#pragma omp parallel if (ms_hdf5_threadsafe())
        {
            uint16_t *buf = malloc(sizeof(uint16_t) * C * hw);
            double *loc = calloc(2 * (size_t)C, sizeof(double));
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < N; i++) {
                ms_status_t e = buf && loc ? ms_shard_read(s, i, buf) : MS_ENOMEM;
                if (e) {
#pragma omp critical(ms_norm_err)
                    if (!first) {
                        first = e;
                        snprintf(msg, sizeof msg, "%s", buf && loc ? ms_error_message()
                                                                   : "out of memory");
                    }
                    continue;
                }
                for (int cc = 0; cc < C; cc++) {
                    /* per image sums are exact in 64-bit integers */
                    uint64_t s1 = 0, s2 = 0;
                    const uint16_t *p = buf + cc * hw;
                    for (size_t j = 0; j < hw; j++) {
                        s1 += p[j];
                        s2 += (uint64_t)p[j] * p[j];
                    }
                    loc[2 * cc] += (double)s1;
                    loc[2 * cc + 1] += (double)s2;
                }
            }
#pragma omp critical(ms_norm_acc)
            if (loc)
                for (int j = 0; j < 2 * C; j++)
                    acc[j] += loc[j];
            free(buf);
            free(loc);
        }
        if (first)
            MS_FAIL(first, "%s", msg);
        count += (uint64_t)N * hw;
        ms_shard_close(s);
        s = NULL;
    }
    if (!count)
        MS_FAIL(MS_EARG, "no images to compute normalisation statistics from");
    for (int c = 0; c < C; c++) {
        double m = acc[2 * c] / (double)count;
        double v = acc[2 * c + 1] / (double)count - m * m;
        mean[c] = (float)m;
        std[c] = (float)sqrt(v > 0 ? v : 0);
        if (!(std[c] > 0))
            std[c] = 1; /* a constant channel: leave it unscaled */
    }
done:
    ms_shard_close(s);
    free(acc);
    return st;
}

/* Synthetic plate renderer: MCF-7-like (DAPI, tubulin, actin; BBBC021's 12 mechanisms as
 * visible phenotypes) and yeast-like (GFP localisation over an RFP cytoplasm; Chong et al.'s 17
 * compartments) fields. Cells are wobbly ellipses with a nucleus; a phenotype changes how
 * a cell is drawn. The optics follow: uneven illumination, Gaussian blur, shot and read noise,
 * debris. */
#include "io/synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "io/shard.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ------------------------------------------------------------------ random numbers */

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t next64(rng_t *r) { return mix64(r->s += 0x9e3779b97f4a7c15ULL); }
static float unif(rng_t *r) { return (float)(next64(r) >> 40) * (1.0f / 16777216.0f); }
static float unif2(rng_t *r, float a, float b) { return a + (b - a) * unif(r); }
static int randint(rng_t *r, int a, int b) { return a + (int)(unif(r) * (float)(b - a + 1)); }
static float gauss(rng_t *r)
{
    float u = unif(r) + 1e-7f, v = unif(r);
    return sqrtf(-2.0f * logf(u)) * cosf(2.0f * (float)M_PI * v);
}

/* Smooth value noise in [0, 1) on a lattice of spacing 1 (scale coordinates first). */
static float lattice(int x, int y, uint32_t s)
{
    uint64_t h = mix64(((uint64_t)(uint32_t)x << 32 | (uint32_t)y) ^ ((uint64_t)s * 0x9e37ULL));
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

static float vnoise(float x, float y, uint32_t s)
{
    int ix = (int)floorf(x), iy = (int)floorf(y);
    float fx = x - (float)ix, fy = y - (float)iy;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    float a = lattice(ix, iy, s), b = lattice(ix + 1, iy, s);
    float c = lattice(ix, iy + 1, s), d = lattice(ix + 1, iy + 1, s);
    return (a + (b - a) * fx) + ((c + (d - c) * fx) - (a + (b - a) * fx)) * fy;
}

/* ------------------------------------------------------------------ presets */

static const char *const mcf7_classes[12] = {
    "Actin disruptors", "Aurora kinase inhibitors", "Cholesterol-lowering", "DNA damage",
    "DNA replication", "Eg5 inhibitors", "Epithelial", "Kinase inhibitors",
    "Microtubule destabilizers", "Microtubule stabilizers", "Protein degradation",
    "Protein synthesis"};
static const char *const mcf7_channels[3] = {"DAPI", "Tubulin", "Actin"};
static const char *const yeast_classes[17] = {
    "ACTIN", "BUDNECK", "BUDTIP", "CELLPERIPHERY", "CYTOPLASM", "ENDOSOME", "ER", "GOLGI",
    "MITOCHONDRIA", "NUCLEARPERIPHERY", "NUCLEUS", "NUCLEOLUS", "PEROXISOME", "SPINDLE",
    "SPINDLEPOLE", "VACUOLARMEMBRANE", "VACUOLE"};
static const char *const yeast_channels[2] = {"GFP", "RFP"};
/* tiny: three phenotypes that differ in three different channels */
static const int tiny_map[3] = {3, 9, 0};

ms_status_t ms_synth_preset(const char *name, ms_synth_preset_t *p)
{
    memset(p, 0, sizeof *p);
    if (!strcmp(name, "tiny")) {
        *p = (ms_synth_preset_t){.name = "tiny", .kind = MS_SYNTH_MCF7, .c = 3, .h = 128,
                                 .w = 128, .k = 3, .treatments = 2, .replicates = 3, .sites = 2,
                                 .cells_min = 8, .cells_max = 12, .radius = 14,
                                 .class_map = tiny_map};
    } else if (!strcmp(name, "bbbc021-like")) {
        *p = (ms_synth_preset_t){.name = "bbbc021-like", .kind = MS_SYNTH_MCF7, .c = 3,
                                 .h = 1024, .w = 1280, .k = 12, .treatments = 2,
                                 .replicates = 3, .sites = 1, .cells_min = 70, .cells_max = 120,
                                 .radius = 34};
    } else if (!strcmp(name, "yeast-like")) {
        *p = (ms_synth_preset_t){.name = "yeast-like", .kind = MS_SYNTH_YEAST, .c = 2,
                                 .h = 1010, .w = 1335, .k = 17, .multi_label = 1,
                                 .treatments = 2, .replicates = 3, .sites = 1,
                                 .cells_min = 120, .cells_max = 200, .radius = 15};
    } else {
        return MS_ERR(MS_EARG, "unknown synth preset '%s' (tiny, bbbc021-like, yeast-like)",
                      name);
    }
    return MS_OK;
}

static int pheno_of(const ms_synth_preset_t *p, int k) { return p->class_map ? p->class_map[k] : k; }

const char *ms_synth_class_name(const ms_synth_preset_t *p, int k)
{
    int j = pheno_of(p, k);
    return p->kind == MS_SYNTH_MCF7 ? mcf7_classes[j] : yeast_classes[j];
}

const char *ms_synth_channel_name(const ms_synth_preset_t *p, int c)
{
    return p->kind == MS_SYNTH_MCF7 ? mcf7_channels[c] : yeast_channels[c];
}

float ms_synth_fraction(const ms_synth_preset_t *p, int k)
{
    /* spread over 0.25..0.8 by a golden-ratio sequence, fixed per phenotype */
    float g = fmodf(0.618034f * (float)(pheno_of(p, k) + 1), 1.0f);
    return 0.25f + 0.55f * g;
}

/* ------------------------------------------------------------------ cells */

enum { MAXSPOT = 40 };

typedef struct {
    float x, y, sigma, amp;
    int c;
} spot_t;

typedef struct {
    float cx, cy, a, b, cth, sth; /* centre, semi-axes, rotation */
    float wamp[3], wph[3];        /* boundary wobble: harmonics 2, 3 and h3 */
    int h3;
    float nu, nv, na, nb;         /* nucleus centre (cell frame) and semi-axes */
    float bound;                  /* radius of the bounding circle */
    int bud;                      /* yeast: a bud of radius br at (bx, by) (image frame) */
    float bx, by, br;
    float vu, vv, vr;             /* yeast vacuole (cell frame) */
    int pheno;                    /* phenotype index in the kind's table, -1 normal */
    int label;                    /* class index shown, -1 */
    float g;                      /* brightness factor */
    float fib_n, fib_ph, sf_ang;  /* tubulin fibres, actin stress fibre direction */
    float nuc2;                   /* 1: a second nucleus (Aurora) */
    int nspot;
    spot_t spot[MAXSPOT];
} cell_t;

/* A random point inside the cell's ellipse at normalised radius <= rmax (image frame). */
static void cell_point(const cell_t *c, rng_t *r, float rmax, float *x, float *y)
{
    float rho = rmax * sqrtf(unif(r)), phi = unif2(r, 0, 2 * (float)M_PI);
    float u = rho * c->a * cosf(phi), v = rho * c->b * sinf(phi);
    *x = c->cx + u * c->cth - v * c->sth;
    *y = c->cy + u * c->sth + v * c->cth;
}

static void to_image(const cell_t *c, float u, float v, float *x, float *y)
{
    *x = c->cx + u * c->cth - v * c->sth;
    *y = c->cy + u * c->sth + v * c->cth;
}

static void add_spot(cell_t *c, int ch, float x, float y, float sigma, float amp)
{
    if (c->nspot < MAXSPOT)
        c->spot[c->nspot++] = (spot_t){x, y, sigma, amp, ch};
}

/* Geometry and phenotype-specific parameters of a new cell. */
static void make_cell(const ms_synth_preset_t *p, rng_t *r, cell_t *c, float radius, int pheno)
{
    memset(c, 0, sizeof *c);
    c->pheno = pheno;
    float rr = radius * unif2(r, 0.8f, 1.2f);
    float ecc = unif2(r, 0.8f, 1.2f);
    c->a = rr * ecc;
    c->b = rr / ecc;
    float th = unif2(r, 0, (float)M_PI);
    c->cth = cosf(th);
    c->sth = sinf(th);
    c->wamp[0] = unif2(r, 0, 0.08f);
    c->wamp[1] = unif2(r, 0, 0.06f);
    c->h3 = 5;
    c->wamp[2] = unif2(r, 0, 0.03f);
    for (int j = 0; j < 3; j++)
        c->wph[j] = unif2(r, 0, 2 * (float)M_PI);
    c->g = unif2(r, 0.75f, 1.25f);
    c->fib_n = (float)randint(r, 14, 22);
    c->fib_ph = unif2(r, 0, 6.28f);
    c->sf_ang = unif2(r, 0, (float)M_PI);
    float ns = p->kind == MS_SYNTH_MCF7 ? unif2(r, 0.38f, 0.48f) : unif2(r, 0.28f, 0.36f);
    c->na = rr * ns * unif2(r, 0.9f, 1.15f);
    c->nb = rr * ns * unif2(r, 0.9f, 1.1f);
    c->nu = unif2(r, -0.15f, 0.15f) * rr;
    c->nv = unif2(r, -0.15f, 0.15f) * rr;
    if (p->kind == MS_SYNTH_MCF7) {
        switch (pheno) {
        case 0: /* actin disruptors: round, no cortical actin, actin aggregates */
            c->a = c->b = rr * 0.9f;
            break;
        case 1: /* Aurora: giant cell, giant (often double) nucleus */
            c->a *= 1.35f;
            c->b *= 1.35f;
            c->na *= 1.6f;
            c->nb *= 1.6f;
            c->nuc2 = unif(r) < 0.5f;
            c->nu = c->nv = 0;
            break;
        case 5: /* Eg5: rounded mitotic cell, ring of DNA */
            c->a = c->b = rr * 0.75f;
            c->na = c->nb = rr * 0.5f;
            c->nu = c->nv = 0;
            break;
        case 6: /* epithelial: polygonal outline */
            c->h3 = 6;
            c->wamp[2] = 0.09f;
            c->wamp[0] *= 0.3f;
            break;
        case 7: /* kinase inhibitors: elongated, spiky */
            c->a = rr * 1.8f;
            c->b = rr * 0.6f;
            c->h3 = 9;
            c->wamp[2] = 0.1f;
            c->nu = c->nv = 0;
            c->na = c->nb = rr * 0.4f;
            break;
        case 8: /* MT destabilisers: small, round */
            c->a = c->b = rr * 0.8f;
            break;
        case 9: /* MT stabilisers: few thick bundles */
            c->fib_n = (float)randint(r, 6, 9);
            break;
        case 11: /* protein synthesis: small, dim */
            c->a *= 0.85f;
            c->b *= 0.85f;
            break;
        default:
            break;
        }
    } else {
        c->wamp[0] *= 0.4f;
        c->wamp[1] *= 0.4f;
        c->wamp[2] *= 0.3f;
        c->bud = unif(r) < 0.45f || pheno == 1 || pheno == 2;
        c->vr = rr * unif2(r, 0.35f, 0.45f);
        float va = unif2(r, 0, 6.28f);
        c->vu = 0.3f * rr * cosf(va);
        c->vv = 0.3f * rr * sinf(va);
        c->nu = -0.35f * rr * cosf(va);
        c->nv = -0.35f * rr * sinf(va);
    }
    float wsum = c->wamp[0] + c->wamp[1] + c->wamp[2];
    c->bound = fmaxf(c->a, c->b) * (1 + wsum) + 2;
    if (c->bud) {
        c->br = rr * unif2(r, 0.45f, 0.65f);
        c->bound += 2 * c->br;
    }
}

/* Places the cell's bud and puncta once its centre is known. */
static void finish_cell(const ms_synth_preset_t *p, rng_t *r, cell_t *c)
{
    if (c->bud) {
        float psi = unif2(r, 0, 6.28f);
        float rr = 0.5f * (c->a + c->b);
        c->bx = c->cx + (rr + c->br * 0.75f) * cosf(psi);
        c->by = c->cy + (rr + c->br * 0.75f) * sinf(psi);
    }
    float x, y, nx, ny;
    to_image(c, c->nu, c->nv, &nx, &ny);
    float rr = 0.5f * (c->a + c->b);
    if (p->kind == MS_SYNTH_MCF7) {
        switch (c->pheno) {
        case 0:
            for (int j = randint(r, 8, 14); j > 0; j--) {
                cell_point(c, r, 0.9f, &x, &y);
                add_spot(c, 2, x, y, unif2(r, 1.2f, 2.2f), unif2(r, 2500, 5000));
            }
            break;
        case 2:
            for (int j = randint(r, 20, 30); j > 0; j--) {
                cell_point(c, r, 0.9f, &x, &y);
                add_spot(c, 1, x, y, unif2(r, 0.9f, 1.4f), unif2(r, 1500, 3000));
            }
            break;
        case 3: /* fragmented nucleus */
            for (int j = randint(r, 4, 7); j > 0; j--) {
                float ang = unif2(r, 0, 6.28f), d = unif2(r, 0, 1.1f) * c->na;
                add_spot(c, 0, nx + d * cosf(ang), ny + d * sinf(ang), unif2(r, 1.5f, 3.0f),
                         unif2(r, 9000, 16000));
            }
            break;
        case 5:
            add_spot(c, 1, nx, ny, rr * 0.18f, 7000);
            break;
        case 10:
            for (int j = randint(r, 1, 3); j > 0; j--) {
                float ang = unif2(r, 0, 6.28f), d = c->na * unif2(r, 1.1f, 1.5f);
                add_spot(c, 1, nx + d * cosf(ang), ny + d * sinf(ang), unif2(r, 2.5f, 4.0f),
                         unif2(r, 9000, 14000));
            }
            break;
        default:
            break;
        }
        return;
    }
    /* yeast GFP patterns made of spots (channel 0) */
    switch (c->pheno) {
    case 0: /* actin patches at the cortex and in the bud */
        for (int j = randint(r, 6, 10); j > 0; j--) {
            float phi = unif2(r, 0, 6.28f);
            to_image(c, 0.8f * c->a * cosf(phi), 0.8f * c->b * sinf(phi), &x, &y);
            add_spot(c, 0, x, y, 1.1f, 6000);
        }
        if (c->bud)
            for (int j = 0; j < 3; j++)
                add_spot(c, 0, c->bx + unif2(r, -0.4f, 0.4f) * c->br,
                         c->by + unif2(r, -0.4f, 0.4f) * c->br, 1.1f, 6000);
        break;
    case 1: { /* bud neck: a bar across the junction */
        float dx = c->bx - c->cx, dy = c->by - c->cy, d = sqrtf(dx * dx + dy * dy);
        float jx = c->cx + dx / d * (d - c->br * 0.85f), jy = c->cy + dy / d * (d - c->br * 0.85f);
        for (int j = -2; j <= 2; j++)
            add_spot(c, 0, jx - dy / d * j * 1.6f, jy + dx / d * j * 1.6f, 1.2f, 5000);
        break;
    }
    case 2: { /* bud tip */
        float dx = c->bx - c->cx, dy = c->by - c->cy, d = sqrtf(dx * dx + dy * dy);
        add_spot(c, 0, c->bx + dx / d * c->br * 0.7f, c->by + dy / d * c->br * 0.7f, 1.6f,
                 8000);
        break;
    }
    case 5: /* endosome */
        for (int j = randint(r, 3, 6); j > 0; j--) {
            cell_point(c, r, 0.75f, &x, &y);
            add_spot(c, 0, x, y, 1.5f, 5000);
        }
        break;
    case 7: /* golgi */
        for (int j = randint(r, 6, 11); j > 0; j--) {
            cell_point(c, r, 0.8f, &x, &y);
            add_spot(c, 0, x, y, 1.0f, 4000);
        }
        break;
    case 8: /* mitochondria: short tubules along the cortex */
        for (int t = randint(r, 4, 6); t > 0; t--) {
            float phi = unif2(r, 0, 6.28f), rho = unif2(r, 0.55f, 0.8f);
            for (int j = 0; j < 5 && c->nspot < MAXSPOT; j++) {
                float q = phi + 0.12f * (float)j;
                to_image(c, rho * c->a * cosf(q), rho * c->b * sinf(q), &x, &y);
                add_spot(c, 0, x, y, 1.0f, 3000);
            }
        }
        break;
    case 11: { /* nucleolus: a crescent-like spot at the nuclear edge */
        float ang = unif2(r, 0, 6.28f);
        add_spot(c, 0, nx + 0.5f * c->na * cosf(ang), ny + 0.5f * c->na * sinf(ang),
                 0.35f * c->na, 7000);
        break;
    }
    case 12: /* peroxisome: few very bright dots */
        for (int j = randint(r, 2, 5); j > 0; j--) {
            cell_point(c, r, 0.8f, &x, &y);
            add_spot(c, 0, x, y, 0.8f, 12000);
        }
        break;
    case 13: { /* spindle: a line through the nucleus */
        float ang = unif2(r, 0, 6.28f);
        for (int j = -4; j <= 4; j++)
            add_spot(c, 0, nx + cosf(ang) * j * c->na * 0.3f, ny + sinf(ang) * j * c->na * 0.3f,
                     0.9f, 4000);
        break;
    }
    case 14: { /* spindle pole bodies */
        float ang = unif2(r, 0, 6.28f);
        add_spot(c, 0, nx + c->na * cosf(ang), ny + c->na * sinf(ang), 0.9f, 9000);
        if (unif(r) < 0.6f)
            add_spot(c, 0, nx - c->na * cosf(ang), ny - c->na * sinf(ang), 0.9f, 9000);
        break;
    }
    default:
        break;
    }
}

/* Normalised radius of image point (x, y) in the cell's wobbly ellipse (< 1 inside), with the
 * angle phi (cell frame) and cell-frame coordinates. */
static float cell_rho(const cell_t *c, float x, float y, float *u, float *v, float *phi)
{
    float dx = x - c->cx, dy = y - c->cy;
    *u = dx * c->cth + dy * c->sth;
    *v = -dx * c->sth + dy * c->cth;
    *phi = atan2f(*v / c->b, *u / c->a);
    float w = 1 + c->wamp[0] * cosf(2 * *phi + c->wph[0]) + c->wamp[1] * cosf(3 * *phi + c->wph[1]) +
              c->wamp[2] * cosf((float)c->h3 * *phi + c->wph[2]);
    return sqrtf((*u / c->a) * (*u / c->a) + (*v / c->b) * (*v / c->b)) / w;
}

static float ring(float rho, float at, float width)
{
    float d = (rho - at) / width;
    return expf(-d * d);
}

/* Adds the cell's signal to F (C, H, W) and its id to mask. */
static void draw_cell(const ms_synth_preset_t *p, const cell_t *c, float *F, uint16_t *mask,
                      uint32_t nseed)
{
    int H = p->h, W = p->w;
    size_t HW = (size_t)H * W;
    int x0 = (int)floorf(c->cx - c->bound), x1 = (int)ceilf(c->cx + c->bound);
    int y0 = (int)floorf(c->cy - c->bound), y1 = (int)ceilf(c->cy + c->bound);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > W - 1) x1 = W - 1;
    if (y1 > H - 1) y1 = H - 1;
    float g = c->g;
    int ph = c->pheno;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            float u, v, phi;
            float rho = cell_rho(c, (float)x + 0.5f, (float)y + 0.5f, &u, &v, &phi);
            float rhob = 9;
            if (c->bud) {
                float dx = (float)x + 0.5f - c->bx, dy = (float)y + 0.5f - c->by;
                rhob = sqrtf(dx * dx + dy * dy) / c->br;
            }
            if (rho >= 1 && rhob >= 1)
                continue;
            size_t o = (size_t)y * W + x;
            if (!mask[o])
                mask[o] = (uint16_t)c->label; /* replaced by the id below */
            float un = (u - c->nu) / c->na, vn = (v - c->nv) / c->nb;
            float rn = sqrtf(un * un + vn * vn);
            if (c->nuc2) {
                float un2 = (u + c->nu + 0.9f * c->na) / c->na, vn2 = (v - c->nv) / c->nb;
                float rn2 = sqrtf(un2 * un2 + vn2 * vn2);
                un = (u - c->nu - 0.9f * c->na) / c->na;
                rn = fminf(sqrtf(un * un + vn * vn), rn2);
            }
            float tex = vnoise((float)x / 3.0f, (float)y / 3.0f, nseed);
            float tex2 = vnoise((float)x / 7.0f, (float)y / 7.0f, nseed + 1);
            float body = rho < 1 ? 1 - powf(rho, 8) : 1 - powf(rhob, 8);
            if (p->kind == MS_SYNTH_MCF7) {
                float dapi = 0, tub, act;
                if (rn < 1) {
                    float edge = 1 - powf(rn, 6);
                    dapi = 11000 * (0.65f + 0.35f * tex) * edge;
                    if (ph == 3)
                        dapi *= 0.25f;
                    if (ph == 4)
                        dapi *= 1.9f;
                    if (ph == 5)
                        dapi *= 1.6f * ring(rn, 0.7f, 0.2f);
                }
                if (ph == 4 && rn >= 1 && rn < 1.5f) /* the nucleus shrinks: drawn smaller */
                    dapi = 0;
                if (ph == 4 && rn > 0.65f)
                    dapi = 0;
                float fib = powf(fmaxf(0, cosf(c->fib_n * phi + c->fib_ph + 3.0f * tex2 + 2.0f * rho)), 6);
                tub = 2600 * (0.45f + 0.55f * fib) * body * (rn < 1 ? 0.5f : 1);
                if (ph == 8)
                    tub = 1700 * body * (0.8f + 0.2f * tex);
                if (ph == 9) {
                    float thick = powf(fmaxf(0, cosf(c->fib_n * phi + c->fib_ph + tex2)), 1.5f);
                    tub = 5000 * thick * body + 5000 * ring(rn, 1.15f, 0.15f);
                }
                if (ph == 5)
                    tub *= 0.5f;
                float along = u * cosf(c->sf_ang) + v * sinf(c->sf_ang);
                float sf = powf(fmaxf(0, cosf(along / 2.2f + 2 * tex2)), 6);
                act = 3200 * ring(rho < 1 ? rho : rhob, 0.93f, 0.09f) + 700 * body +
                      900 * sf * body;
                if (ph == 0)
                    act = 500 * body;
                if (ph == 6)
                    act = 9000 * ring(rho, 0.93f, 0.08f) + 500 * body;
                if (ph == 11) {
                    tub *= 0.4f;
                    act *= 0.4f;
                }
                F[o] += g * dapi;
                F[HW + o] += g * tub;
                F[2 * HW + o] += g * act;
            } else {
                /* RFP: cytoplasm, excluded from the vacuole, a little from the nucleus */
                float vu = (u - c->vu) / c->vr, vv = (v - c->vv) / c->vr;
                float rv = rho < 1 ? sqrtf(vu * vu + vv * vv) : 9;
                float rfp = 3000 * body * (0.8f + 0.2f * tex) * (rv < 1 ? 0.3f : 1) *
                            (rn < 1 ? 0.7f : 1);
                float gfp = 120 * body; /* autofluorescence of every cell */
                int inb = rho >= 1;
                switch (ph) {
                case 3: gfp += 3500 * ring(inb ? rhob : rho, 0.92f, 0.08f); break;
                case 4: gfp += 2200 * body * (rv < 1 ? 0.2f : 1) * (0.8f + 0.2f * tex); break;
                case 6:
                    gfp += 2500 * ring(rn, 1.05f, 0.15f) + 1500 * ring(inb ? rhob : rho, 0.9f, 0.06f);
                    break;
                case 9: gfp += 4500 * ring(rn, 1.0f, 0.13f); break;
                case 10: gfp += rn < 1 ? 4500 * (1 - powf(rn, 6)) : 0; break;
                case 15: gfp += 4000 * ring(rv, 1.0f, 0.12f); break;
                case 16: gfp += rv < 1 ? 4500 * (1 - powf(rv, 8)) * (0.85f + 0.15f * tex) : 0; break;
                default: break;
                }
                F[o] += g * gfp;
                F[HW + o] += g * rfp;
            }
        }
}

/* Stamps cell id over the pixels marked with the temporary label marker. */
static void stamp_ids(const ms_synth_preset_t *p, const cell_t *c, uint16_t *mask, int id,
                      uint16_t marker)
{
    int W = p->w, H = p->h;
    int x0 = (int)floorf(c->cx - c->bound), x1 = (int)ceilf(c->cx + c->bound);
    int y0 = (int)floorf(c->cy - c->bound), y1 = (int)ceilf(c->cy + c->bound);
    for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < H; y++)
        for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < W; x++)
            if (mask[(size_t)y * W + x] == marker)
                mask[(size_t)y * W + x] = (uint16_t)id;
}

static void draw_spots(const ms_synth_preset_t *p, const cell_t *c, float *F)
{
    size_t HW = (size_t)p->h * p->w;
    for (int s = 0; s < c->nspot; s++) {
        const spot_t *q = &c->spot[s];
        int r = (int)ceilf(3 * q->sigma);
        for (int y = (int)q->y - r; y <= (int)q->y + r; y++)
            for (int x = (int)q->x - r; x <= (int)q->x + r; x++) {
                if (x < 0 || y < 0 || x >= p->w || y >= p->h)
                    continue;
                float dx = (float)x + 0.5f - q->x, dy = (float)y + 0.5f - q->y;
                F[(size_t)q->c * HW + (size_t)y * p->w + x] +=
                    c->g * q->amp * expf(-(dx * dx + dy * dy) / (2 * q->sigma * q->sigma));
            }
    }
}

static void blur(float *img, float *tmp, int H, int W, float sigma)
{
    enum { R = 4 };
    float k[2 * R + 1], sum = 0;
    for (int j = -R; j <= R; j++)
        sum += k[j + R] = expf(-(float)(j * j) / (2 * sigma * sigma));
    for (int j = 0; j <= 2 * R; j++)
        k[j] /= sum;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float a = 0;
            for (int j = -R; j <= R; j++) {
                int xx = x + j < 0 ? -(x + j) : x + j >= W ? 2 * W - 2 - (x + j) : x + j;
                a += k[j + R] * img[(size_t)y * W + xx];
            }
            tmp[(size_t)y * W + x] = a;
        }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float a = 0;
            for (int j = -R; j <= R; j++) {
                int yy = y + j < 0 ? -(y + j) : y + j >= H ? 2 * H - 2 - (y + j) : y + j;
                a += k[j + R] * tmp[(size_t)yy * W + x];
            }
            img[(size_t)y * W + x] = a;
        }
}

ms_status_t ms_synth_field(const ms_synth_preset_t *p, uint64_t seed, uint64_t field,
                           const uint8_t *classes, float strength, uint16_t *img, uint16_t *mask,
                           ms_synth_cell_t *cells, int max_cells, int *ncells)
{
    ms_status_t st = MS_OK;
    int H = p->h, W = p->w, C = p->c;
    size_t HW = (size_t)H * W;
    float *F = NULL, *tmp = NULL;
    cell_t *cs = NULL;
    rng_t r = {mix64(seed * 0x9e3779b97f4a7c15ULL + field)};
    MS_ALLOC(F, (size_t)C * HW, "synthetic field");
    MS_ALLOC(tmp, HW, "synthetic field");
    int want = randint(&r, p->cells_min, p->cells_max);
    MS_ALLOC(cs, want, "cells");
    memset(mask, 0, HW * sizeof *mask);
    int act[64], na = 0;
    for (int k = 0; k < p->k; k++)
        if (classes[k])
            act[na++] = k;
    int n = 0;
    for (int attempt = 0; attempt < want * 40 && n < want && n < max_cells; attempt++) {
        int label = -1;
        if (na) {
            int k = act[randint(&r, 0, na - 1)];
            if (unif(&r) < ms_synth_fraction(p, k) * strength)
                label = k;
        }
        cell_t *c = &cs[n];
        make_cell(p, &r, c, p->radius, label >= 0 ? pheno_of(p, label) : -1);
        c->label = label;
        /* centres may leave the field a little: cut cells at the border, as in a real field */
        c->cx = unif2(&r, -0.3f * p->radius, (float)W + 0.3f * p->radius);
        c->cy = unif2(&r, -0.3f * p->radius, (float)H + 0.3f * p->radius);
        int ok = 1;
        for (int j = 0; j < n && ok; j++) {
            float dx = cs[j].cx - c->cx, dy = cs[j].cy - c->cy;
            float d = 0.92f * (cs[j].bound + c->bound) - 2 * (c->bud || cs[j].bud ? 0.6f * p->radius : 0);
            ok = dx * dx + dy * dy > d * d;
        }
        if (!ok)
            continue;
        finish_cell(p, &r, c);
        n++;
    }
    int nout = 0;
    for (int j = 0; j < n; j++) {
        /* marker 65535 then the id: cells drawn later never take pixels of earlier ones */
        cell_t *c = &cs[j];
        int lab = c->label;
        c->label = 65535;
        draw_cell(p, c, F, mask, (uint32_t)(field * 977 + (uint64_t)j));
        stamp_ids(p, c, mask, j + 1, 65535);
        c->label = lab;
        draw_spots(p, c, F);
        if (c->cx >= 0 && c->cy >= 0 && c->cx < W && c->cy < H && nout < max_cells)
            cells[nout++] = (ms_synth_cell_t){c->cx, c->cy, lab, j + 1};
    }
    /* debris: irregular bright specks outside cells, in one channel or all */
    for (int d = randint(&r, 0, 3); d > 0; d--) {
        float x = unif2(&r, 0, (float)W), y = unif2(&r, 0, (float)H);
        int ch = unif(&r) < 0.5f ? -1 : randint(&r, 0, C - 1);
        for (int b = randint(&r, 3, 8); b > 0; b--) {
            float bx = x + 4 * gauss(&r), by = y + 4 * gauss(&r), s = unif2(&r, 1, 2.5f);
            float amp = unif2(&r, 1500, 6000);
            for (int yy = (int)(by - 3 * s); yy <= (int)(by + 3 * s); yy++)
                for (int xx = (int)(bx - 3 * s); xx <= (int)(bx + 3 * s); xx++) {
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H || mask[(size_t)yy * W + xx])
                        continue;
                    float dx = (float)xx - bx, dy = (float)yy - by;
                    float v = amp * expf(-(dx * dx + dy * dy) / (2 * s * s));
                    for (int c = 0; c < C; c++)
                        if (ch < 0 || ch == c)
                            F[(size_t)c * HW + (size_t)yy * W + xx] += v;
                }
        }
    }
    /* optics: blur, uneven illumination (off-centre vignetting), background, shot + read noise */
    float icx = unif2(&r, 0.3f, 0.7f) * (float)W, icy = unif2(&r, 0.3f, 0.7f) * (float)H;
    float fall = unif2(&r, 0.25f, 0.45f);
    float diag2 = 0.25f * (float)(W * W + H * H);
    for (int c = 0; c < C; c++) {
        float *Fc = F + (size_t)c * HW;
        blur(Fc, tmp, H, W, 1.1f);
        float bg = 250 + 60 * (float)c;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float dx = (float)x - icx, dy = (float)y - icy;
                float illum = 1 - fall * (dx * dx + dy * dy) / diag2;
                float v = (bg + Fc[(size_t)y * W + x]) * illum;
                /* gain 2 counts per photo-electron, read noise 12 counts */
                v += sqrtf(2 * fmaxf(v, 0)) * gauss(&r) + 12 * gauss(&r);
                v = v < 0 ? 0 : v > 65535 ? 65535 : v;
                img[(size_t)c * HW + (size_t)y * W + x] = (uint16_t)lrintf(v);
            }
    }
    *ncells = nout;
done:
    free(F);
    free(tmp);
    free(cs);
    return st;
}

/* ------------------------------------------------------------------ whole data set */

typedef struct {
    int k;            /* class of the treatment (single-label) */
    uint8_t lab[64];  /* multi-hot */
    int t, rep, site; /* treatment index within class, replicate, site */
    float strength;   /* treatment potency: scales the phenotype fraction */
} field_t;

static ms_status_t write_split(const ms_synth_preset_t *p, const char *path, const field_t *fs,
                               int n, uint64_t seed, uint64_t base, int threads, int level,
                               FILE *log)
{
    ms_status_t st = MS_OK;
    ms_shard_writer_t *w = NULL;
    const char *cn[64], *chn[8];
    uint16_t *img = NULL, *mask = NULL;
    ms_synth_cell_t *cells = NULL;
    int *ncell = NULL;
    ms_status_t *sts = NULL;
    int maxc = p->cells_max;
    for (int k = 0; k < p->k; k++)
        cn[k] = ms_synth_class_name(p, k);
    for (int c = 0; c < p->c; c++)
        chn[c] = ms_synth_channel_name(p, c);
    ms_shard_spec_t sp = {.n = n, .c = p->c, .h = p->h, .w = p->w, .dtype = MS_DTYPE_U16,
                          .comp = MS_COMP_DEFLATE, .level = level, .k = p->k,
                          .class_names = cn, .channel_names = chn,
                          .multi_label = p->multi_label, .masks = 1};
    MS_TRY(ms_shard_create(&w, path, &sp));
    size_t HW = (size_t)p->h * p->w;
    /* fields per batch: fixed, so that the file's layout (images of a batch, then their
     * masks) and hence its bytes do not depend on the thread count */
    enum { B = 16 };
    MS_ALLOC(img, (size_t)B * p->c * HW, "synthetic images");
    MS_ALLOC(mask, (size_t)B * HW, "synthetic masks");
    MS_ALLOC(cells, (size_t)B * maxc, "cells");
    MS_ALLOC(ncell, B, "cells");
    MS_ALLOC(sts, B, "status");
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (int i0 = 0; i0 < n; i0 += B) {
        int nb = n - i0 < B ? n - i0 : B;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            const field_t *f = &fs[i0 + b];
            sts[b] = ms_synth_field(p, seed, base + (uint64_t)(i0 + b), f->lab, f->strength,
                                    img + (size_t)b * p->c * HW, mask + (size_t)b * HW,
                                    cells + (size_t)b * maxc, maxc, &ncell[b]);
        }
        for (int b = 0; b < nb; b++)
            if (sts[b] != MS_OK)
                MS_FAIL(sts[b], "rendering field %d failed", i0 + b);
        MS_TRY(ms_shard_write_images(w, i0, nb, img, threads));
        for (int b = 0; b < nb; b++) {
            int i = i0 + b;
            const field_t *f = &fs[i];
            MS_TRY(ms_shard_write_mask(w, i, mask + (size_t)b * HW));
            char plate[32], well[8], id[64], treat[96];
            snprintf(plate, sizeof plate, "SYN-%s-P%d", p->kind == MS_SYNTH_MCF7 ? "M" : "Y",
                     f->rep + 1);
            int widx = f->k * p->treatments + f->t; /* one well per treatment on every plate */
            snprintf(well, sizeof well, "%c%02d", 'B' + widx / 22 % 14, 2 + widx % 22);
            snprintf(id, sizeof id, "%s_%s_s%d", plate, well, f->site + 1);
            snprintf(treat, sizeof treat, "%s-cmpd%d@%.2f", p->kind == MS_SYNTH_MCF7 ? "moa" : "strain",
                     widx, (double)f->strength);
            ms_image_meta_t m = {.image_id = id, .plate = plate, .well = well,
                                 .site = f->site + 1, .treatment = treat,
                                 .replicate = f->rep + 1, .label = f->k};
            MS_TRY(ms_shard_set_meta(w, i, &m, f->lab));
            int32_t ii[1], lab[1], mid[1];
            float x[1], y[1];
            for (int j = 0; j < ncell[b]; j++) {
                const ms_synth_cell_t *c = &cells[(size_t)b * maxc + j];
                ii[0] = i;
                x[0] = c->x;
                y[0] = c->y;
                lab[0] = c->label;
                mid[0] = c->id;
                MS_TRY(ms_shard_add_cells(w, 1, ii, x, y, lab, mid));
            }
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (log && (i0 + nb == n || now.tv_sec - last.tv_sec >= 10)) {
            fprintf(log, "synth: %s: %d/%d fields\n", path, i0 + nb, n);
            last = now;
        }
    }
    st = ms_shard_finish(w);
    w = NULL;
done:
    ms_shard_discard(w);
    free(img);
    free(mask);
    free(cells);
    free(ncell);
    free(sts);
    return st;
}

ms_status_t ms_synth_write(const ms_synth_preset_t *p, const char *dir, uint64_t seed,
                           int threads, int level, FILE *log)
{
    ms_status_t st = MS_OK;
    field_t *tr = NULL, *te = NULL;
    if (p->treatments < 2 || p->replicates < 1 || p->sites < 1 || p->k > 64)
        return MS_ERR(MS_EARG, "synth needs >= 2 treatments per class (the last one is the test "
                      "set), >= 1 replicate and site, <= 64 classes");
    if (mkdir(dir, 0777) != 0) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return MS_ERR(MS_EIO, "cannot create folder %s: %m", dir);
    }
#ifdef _OPENMP
    if (threads <= 0)
        threads = omp_get_max_threads();
#endif
    if (threads <= 0)
        threads = 1;
    int per = p->replicates * p->sites;
    int ntr = p->k * (p->treatments - 1) * per, nte = p->k * per;
    MS_ALLOC(tr, ntr, "fields");
    MS_ALLOC(te, nte, "fields");
    rng_t r = {mix64(seed ^ 0x5eedULL)};
    int a = 0, b = 0;
    for (int k = 0; k < p->k; k++)
        for (int t = 0; t < p->treatments; t++) {
            field_t f = {.k = k, .t = t, .strength = unif2(&r, 0.8f, 1.2f)};
            f.lab[k] = 1;
            if (p->multi_label && unif(&r) < 0.3f) {
                /* a second compartment for some strains */
                int k2 = (k + 1 + randint(&r, 0, p->k - 2)) % p->k;
                f.lab[k2] = 1;
            }
            for (int rep = 0; rep < p->replicates; rep++)
                for (int s = 0; s < p->sites; s++) {
                    f.rep = rep;
                    f.site = s;
                    if (t < p->treatments - 1)
                        tr[a++] = f;
                    else
                        te[b++] = f;
                }
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/train.h5", dir);
    MS_TRY(write_split(p, path, tr, ntr, seed, 0, threads, level, log));
    snprintf(path, sizeof path, "%s/test.h5", dir);
    MS_TRY(write_split(p, path, te, nte, seed, 1u << 20, threads, level, log));
done:
    free(tr);
    free(te);
    return st;
}

/* Line charts: frame, grid, round ticks and labels in the built-in font, lines with square
 * markers, legends and vertical marks. No files here (cmd/plot.c reads the run log). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/render/plot.h"

const uint8_t ms_plot_train_rgb[3] = {0, 114, 178}, ms_plot_val_rgb[3] = {213, 94, 0},
              ms_plot_train2_rgb[3] = {86, 180, 233}, ms_plot_val2_rgb[3] = {230, 159, 0};

static const uint8_t black[3] = {0, 0, 0},
                     ink[3] = {40, 40, 40}, grid[3] = {228, 228, 228},
                     mark_rgb[3] = {120, 120, 120};

void ms_plot_marker_colour(uint8_t out[3], const uint8_t line[3])
{
    for (int k = 0; k < 3; k++)
        out[k] = (uint8_t)(line[k] * 0.6 + 0.5);
}

double ms_plot_tick_step(double span, int want)
{
    if (!(span > 0) || want < 1)
        return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static int to_px(double v, double lo, double hi, int p0, int p1)
{
    return (int)floor(p0 + (v - lo) / (hi - lo) * (p1 - p0) + 0.5);
}

/* A line of thickness t from (xa, ya) to (xb, yb); dash > 0: on and off every dash pixels,
 * starting phase pixels into the pattern. Returns the phase at the end, so that a polyline's
 * dashes run on across its segments. */
static int dline(ms_canvas_t *c, int xa, int ya, int xb, int yb, int t, int dash, int phase,
                 const uint8_t rgb[3])
{
    int dx = xb - xa, dy = yb - ya, n = abs(dx) > abs(dy) ? abs(dx) : abs(dy);
    for (int i = 0; i <= n; i++) {
        if (dash > 0 && ((phase + i) / dash) % 2)
            continue;
        int x = n ? xa + (int)floor((double)dx * i / n + 0.5) : xa;
        int y = n ? ya + (int)floor((double)dy * i / n + 0.5) : ya;
        ms_canvas_rect(c, x - t / 2, y - t / 2, t, t, rgb, 1);
    }
    return phase + n;
}

static void line(ms_canvas_t *c, int xa, int ya, int xb, int yb, int t, int dash,
                 const uint8_t rgb[3])
{
    dline(c, xa, ya, xb, yb, t, dash, 0, rgb);
}

/* "%g" of a tick value, with -0 and rounding noise (0.30000000000000004) cleaned up. */
static void tick_text(char *buf, size_t n, double v, double step)
{
    if (fabs(v) < step * 1e-9)
        v = 0;
    snprintf(buf, n, "%.6g", v);
}

typedef struct {
    double xmin, xmax, ymin, ymax, xstep, ystep;
    int left;   /* pixels left of the plotting area for the tick labels */
} layout_t;

static ms_status_t panel_layout(const ms_plot_panel_t *pn, int scale, layout_t *L)
{
    ms_status_t st = MS_OK;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < pn->nseries; s++)
        for (int i = 0; i < pn->series[s].n; i++) {
            double x = pn->series[s].x[i], y = pn->series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
            y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
        }
    if (!(x0 <= x1))
        MS_FAIL(MS_EARG, "plot panel '%s': no point to draw", pn->title ? pn->title : "");
    if (x1 == x0)
        x0 -= 1, x1 += 1;
    /* a little room at both ends so that the first and last markers clear the frame */
    double pad = 0.03 * (x1 - x0);
    L->xmin = x0 - pad;
    L->xmax = x1 + pad;
    L->xstep = ms_plot_tick_step(x1 - x0, 6);
    if (L->xstep < 1 && x0 == floor(x0) && x1 == floor(x1))
        L->xstep = 1; /* whole numbers (epochs) get whole ticks */
    if (pn->ymin < pn->ymax) {
        L->ymin = pn->ymin;
        L->ymax = pn->ymax;
        L->ystep = ms_plot_tick_step(L->ymax - L->ymin, 5);
    } else {
        /* the data's range out to round values, with room for the markers at both ends (a
         * loss that falls from 0.9 to 0.3 fills the panel instead of its top third) */
        double lo = y0, hi = y1 > y0 ? y1 : y0 + (y0 ? fabs(y0) * 0.1 : 1);
        L->ystep = ms_plot_tick_step(hi - lo, 5);
        double rlo = floor(lo / L->ystep) * L->ystep, rhi = ceil(hi / L->ystep) * L->ystep;
        if (lo - rlo < 0.03 * (rhi - rlo))
            rlo -= 0.05 * (rhi - rlo);
        if (rhi - hi < 0.03 * (rhi - rlo))
            rhi += 0.05 * (rhi - rlo);
        L->ymin = rlo;
        L->ymax = rhi;
    }
    int wmax = 0;
    char t[32];
    for (double v = ceil(L->ymin / L->ystep) * L->ystep; v <= L->ymax + 1e-9 * L->ystep;
         v += L->ystep) {
        tick_text(t, sizeof t, v, L->ystep);
        int w = ms_font_text_width(t, scale);
        wmax = w > wmax ? w : wmax;
    }
    L->left = wmax + 6 * scale;
done:
    return st;
}

ms_status_t ms_plot_draw(ms_canvas_t *canvas, const ms_plot_t *p, ms_plot_frame_t *frames)
{
    ms_status_t st = MS_OK;
    layout_t L[MS_PLOT_MAX_PANELS];
    canvas->rgb = NULL;
    if (p->npanels < 1 || p->npanels > MS_PLOT_MAX_PANELS)
        MS_FAIL(MS_EARG, "plot: %d panels (1 to %d)", p->npanels, MS_PLOT_MAX_PANELS);
    const int s = p->scale > 0 ? p->scale : 2;
    const int W = p->width > 0 ? p->width : 520, H = p->height > 0 ? p->height : 340;
    const int gh = ms_font_text_height(s), row = gh + 4 * s, margin = 8 * s;
    const int thick = s, msize = 2 * s + 3; /* line thickness; marker side (odd: centred) */
    int maxseries = 0, width = margin;
    for (int i = 0; i < p->npanels; i++) {
        if (p->panels[i].nseries < 0 || p->panels[i].nseries > MS_PLOT_MAX_SERIES)
            MS_FAIL(MS_EARG, "plot: %d series in a panel", p->panels[i].nseries);
        MS_TRY(panel_layout(&p->panels[i], s, &L[i]));
        maxseries = p->panels[i].nseries > maxseries ? p->panels[i].nseries : maxseries;
        width += L[i].left + W + margin;
    }
    /* rows from the top: title, subtitle, panel title; the area; tick labels, x label,
     * one legend row per series */
    const int top = margin + row * (p->subtitle ? 2 : 1) + row + 2 * s;
    const int height = top + H + 3 * s + row * (2 + maxseries) + margin;
    MS_TRY(ms_canvas_init(canvas, width, height));
    memset(canvas->rgb, 255, (size_t)width * height * 3);
    if (p->title)
        ms_font_draw(canvas, margin, margin, p->title, s, ink);
    if (p->subtitle)
        ms_font_draw(canvas, margin, margin + row, p->subtitle, s, ink);

    int xoff = margin;
    for (int i = 0; i < p->npanels; i++) {
        const ms_plot_panel_t *pn = &p->panels[i];
        const layout_t *l = &L[i];
        const int x0 = xoff + l->left, x1 = x0 + W - 1, y0 = top, y1 = top + H - 1;
        xoff = x1 + 1 + margin;
        if (frames)
            frames[i] = (ms_plot_frame_t){x0, x1, y0, y1, l->xmin, l->xmax, l->ymin, l->ymax};
        if (pn->title)
            ms_font_draw(canvas, x0, top - row, pn->title, s, ink);
        char t[32];
        /* grid and ticks at round values */
        for (double v = ceil(l->xmin / l->xstep) * l->xstep; v <= l->xmax; v += l->xstep) {
            int x = to_px(v, l->xmin, l->xmax, x0, x1);
            line(canvas, x, y0, x, y1, 1, 0, grid);
            line(canvas, x, y1, x, y1 + 3 * s, 1, 0, black);
            tick_text(t, sizeof t, v, l->xstep);
            ms_font_draw(canvas, x - ms_font_text_width(t, s) / 2, y1 + 4 * s, t, s, ink);
        }
        for (double v = ceil(l->ymin / l->ystep - 1e-9) * l->ystep;
             v <= l->ymax + 1e-9 * l->ystep; v += l->ystep) {
            int y = to_px(v, l->ymax, l->ymin, y0, y1);
            line(canvas, x0, y, x1, y, 1, 0, grid);
            line(canvas, x0 - 3 * s, y, x0, y, 1, 0, black);
            tick_text(t, sizeof t, v, l->ystep);
            ms_font_draw(canvas, x0 - 4 * s - ms_font_text_width(t, s), y - gh / 2, t, s, ink);
        }
        if (pn->xlabel)
            ms_font_draw(canvas, (x0 + x1 - ms_font_text_width(pn->xlabel, s)) / 2,
                         y1 + 4 * s + row, pn->xlabel, s, ink);
        for (int m = 0; m < pn->nmarks; m++) {
            if (!(pn->marks[m] >= l->xmin && pn->marks[m] <= l->xmax))
                continue;
            int x = to_px(pn->marks[m], l->xmin, l->xmax, x0, x1);
            line(canvas, x, y0, x, y1, 1, 3 * s, mark_rgb);
            if (pn->mark_label)
                ms_font_draw(canvas, x + 2 * s, y0 + 2 * s, pn->mark_label, s, mark_rgb);
        }
        /* frame over the grid, lines over the frame, markers over everything */
        line(canvas, x0, y0, x1, y0, 1, 0, black);
        line(canvas, x0, y1, x1, y1, 1, 0, black);
        line(canvas, x0, y0, x0, y1, 1, 0, black);
        line(canvas, x1, y0, x1, y1, 1, 0, black);
        for (int k = 0; k < pn->nseries; k++) {
            const ms_plot_series_t *se = &pn->series[k];
            int have = 0, px = 0, py = 0, phase = 0;
            for (int j = 0; j < se->n; j++) {
                if (!isfinite(se->x[j]) || !isfinite(se->y[j])) {
                    have = 0; /* a gap */
                    continue;
                }
                int x = to_px(se->x[j], l->xmin, l->xmax, x0, x1);
                int y = to_px(se->y[j], l->ymax, l->ymin, y0, y1);
                if (have)
                    phase = dline(canvas, px, py, x, y, thick, se->dashed ? 4 * s : 0, phase,
                                  se->rgb);
                have = 1, px = x, py = y;
            }
        }
        for (int k = 0; k < pn->nseries; k++) {
            const ms_plot_series_t *se = &pn->series[k];
            for (int j = 0; j < se->n; j++)
                if (isfinite(se->x[j]) && isfinite(se->y[j]))
                    ms_canvas_rect(canvas, to_px(se->x[j], l->xmin, l->xmax, x0, x1) - msize / 2,
                                   to_px(se->y[j], l->ymax, l->ymin, y0, y1) - msize / 2,
                                   msize, msize, se->marker, 1);
        }
        /* legend: a sample of each line (no marker: marker colours mark data only) */
        for (int k = 0; k < pn->nseries; k++) {
            const ms_plot_series_t *se = &pn->series[k];
            int y = y1 + 4 * s + 2 * row + k * row + gh / 2;
            line(canvas, x0, y, x0 + 16 * s, y, thick, se->dashed ? 4 * s : 0, se->rgb);
            if (se->label)
                ms_font_draw(canvas, x0 + 20 * s, y - gh / 2, se->label, s, ink);
        }
    }
done:
    if (st)
        ms_canvas_free(canvas);
    return st;
}

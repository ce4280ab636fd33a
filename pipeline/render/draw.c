/* Composes the render picture from arrays: channels to colours with a percentile stretch,
 * the class map as a heat overlay placed by the network's geometry, the mask outline, and a
 * text panel in the built-in font. No files here (render.c reads them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/render/render.h"

void ms_render_default_colours(uint8_t (*rgb)[3], int C)
{
    static const uint8_t grey[3] = {255, 255, 255};
    static const uint8_t two[2][3] = {{0, 255, 0}, {255, 0, 255}};
    static const uint8_t three[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    for (int c = 0; c < C; c++) {
        const uint8_t *src = C == 1 ? grey : C == 2 ? two[c] : c < 3 ? three[c] : NULL;
        for (int k = 0; k < 3; k++)
            rgb[c][k] = src ? src[k] : 0;
    }
}

void ms_render_heat(uint8_t rgb[3], float p)
{
    /* Yellow at low probability to red at 1: saturated at the top so that it stays visible
     * over bright (white) cells, where a ramp ending in white would vanish. */
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    rgb[0] = 255;
    rgb[1] = (uint8_t)(230 * (1 - p) + 0.5f);
    rgb[2] = 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Low and high percentiles of one channel, from at most about a million samples (a regular
 * subsample: percentiles of a large image do not need every pixel). */
static ms_status_t channel_range(const float *x, size_t n, double pct, float *lo, float *hi)
{
    ms_status_t st = MS_OK;
    float *s = NULL; /* (m) */
    size_t step = n > (1u << 20) ? n / (1u << 20) : 1, m = 0;
    MS_ALLOC(s, n / step + 1, "contrast stretch");
    for (size_t i = 0; i < n; i += step)
        if (isfinite(x[i]))
            s[m++] = x[i];
    *lo = 0;
    *hi = 1;
    if (m) {
        qsort(s, m, sizeof *s, cmp_float);
        *lo = s[(size_t)(pct / 100 * (m - 1) + 0.5)];
        *hi = s[(size_t)((100 - pct) / 100 * (m - 1) + 0.5)];
    }
    if (!(*hi > *lo))
        *hi = *lo + 1; /* flat channel: shows as black rather than dividing by zero */
done:
    free(s);
    return st;
}

/* Bilinear sample of map (h, w) at fractional instance coordinates, clamped at the edges. */
static float sample(const float *map, int h, int w, double u, double v)
{
    u = u < 0 ? 0 : u > w - 1 ? w - 1 : u;
    v = v < 0 ? 0 : v > h - 1 ? h - 1 : v;
    int u0 = (int)u, v0 = (int)v;
    int u1 = u0 + 1 < w ? u0 + 1 : u0, v1 = v0 + 1 < h ? v0 + 1 : v0;
    double fu = u - u0, fv = v - v0;
    double top = (1 - fu) * map[v0 * w + u0] + fu * map[v0 * w + u1];
    double bot = (1 - fu) * map[v1 * w + u0] + fu * map[v1 * w + u1];
    return (float)((1 - fv) * top + fv * bot);
}

double ms_render_scale_length(double width_um)
{
    if (!(width_um > 0))
        return 0;
    double p = pow(10, floor(log10(width_um / 5))), best = p;
    for (int m = 1; m <= 10; m *= 10)
        for (int k = 0; k < 3; k++) {
            double v = (k == 0 ? 1 : k == 1 ? 2 : 5) * p * m;
            if (v <= width_um / 5 * (1 + 1e-9))
                best = v > best ? v : best;
        }
    return best;
}

ms_status_t ms_render_draw(ms_canvas_t *canvas, const ms_render_t *r)
{
    return ms_render_draw_layout(canvas, r, NULL);
}

ms_status_t ms_render_draw_layout(ms_canvas_t *canvas, const ms_render_t *r,
                                  ms_render_layout_t *layout)
{
    ms_status_t st = MS_OK;
    float *acc = NULL;     /* (H, W, 3) */
    float *heat_p = NULL;  /* (H, W) the class map sampled at every pixel */
    uint8_t(*col)[3] = NULL; /* (C) */
    ms_canvas_t im = {0};    /* (H, W) the picture at the image's own resolution */
    canvas->rgb = NULL;
    if (r->C < 1 || r->H < 1 || r->W < 1 || (r->map && (r->h < 1 || r->w < 1)))
        MS_FAIL(MS_EARG, "render: image %dx%dx%d, map %dx%d", r->W, r->H, r->C, r->w, r->h);
    const int H = r->H, W = r->W;
    const size_t hw = (size_t)H * W;
    /* Small images (a 128-pixel field, a 64-pixel cell) are enlarged by pixel replication
     * to about 512 pixels, so that cells and outlines can be seen next to the text. */
    const int zmax = H > W ? H : W;
    const int zoom = r->zoom > 0 ? r->zoom : zmax < 512 ? 512 / zmax : 1;
    const int ZH = H * zoom, ZW = W * zoom;
    /* Text size grows with the picture so that it stays readable when the PNG is shown
     * scaled to a screen: 7 px glyphs at 256 px, 28 px at 1024. */
    const int scale = ZH / 256 > 2 ? ZH / 256 : 2;
    const int gh = ms_font_text_height(scale);
    const int margin = 4 * scale, line_h = gh + 3 * scale;
    const int swatch_w = gh + 2 * scale;                     /* square plus a space */
    const int heat_w = 24 * (MS_FONT_W + 1) * scale;         /* 24 characters wide */
    int panel_w = 0, rows = 0;
    for (int i = 0; i < r->nlines; i++) {
        int tw = r->line_heatbar[i] ? heat_w
                                    : ms_font_text_width(r->lines[i], scale) +
                                          (r->line_swatch[i] ? swatch_w : 0);
        panel_w = tw > panel_w ? tw : panel_w;
        rows += r->line_heatbar[i] ? 2 : 1;
    }
    panel_w = r->nlines ? panel_w + 2 * margin : 0;
    int canvas_h = 2 * margin + rows * line_h;
    canvas_h = canvas_h > ZH ? canvas_h : ZH;
    if (layout)
        memset(layout, 0, sizeof *layout);
    MS_TRY(ms_canvas_init(&im, W, H));

    /* Channels: each stretched to [0, 1] between its percentiles, times its colour, summed
     * and clipped (additive mixing, as a fluorescence viewer does). */
    MS_ALLOC(col, r->C, "channel colours");
    if (r->colours)
        memcpy(col, r->colours, sizeof *col * r->C);
    else
        ms_render_default_colours(col, r->C);
    MS_ALLOC(acc, hw * 3, "render");
    for (int c = 0; c < r->C; c++) {
        if (!col[c][0] && !col[c][1] && !col[c][2])
            continue;
        const float *x = r->img + (size_t)c * hw;
        float lo = 0, hi = 1;
        MS_TRY(channel_range(x, hw, r->percentile, &lo, &hi));
        float inv = 1.0f / (hi - lo);
        for (size_t i = 0; i < hw; i++) {
            float v = isfinite(x[i]) ? (x[i] - lo) * inv : 0;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            for (int k = 0; k < 3; k++)
                acc[3 * i + k] += v * col[c][k];
        }
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = im.rgb + ((size_t)y * W + x) * 3;
            for (int k = 0; k < 3; k++) {
                float v = acc[3 * ((size_t)y * W + x) + k];
                p[k] = (uint8_t)(v > 255 ? 255 : v + 0.5f);
            }
        }

    /* Heat: opacity proportional to the probability, so that confident instances stand out
     * and the image shows through where the class is absent; plus the p = 0.5 contour, which
     * reads as "where the model finds the class" even over bright cells. */
    if (r->map) {
        MS_ALLOC(heat_p, hw, "heat map");
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double u, v;
                if (r->stride > 0) {
                    u = (x - r->offset) / r->stride;
                    v = (y - r->offset) / r->stride;
                } else {
                    u = (x + 0.5) * r->w / W - 0.5;
                    v = (y + 0.5) * r->h / H - 0.5;
                }
                float p = sample(r->map, r->h, r->w, u, v);
                uint8_t heat[3];
                ms_render_heat(heat, p);
                ms_canvas_blend(&im, x, y, heat, (float)(r->heat_alpha * p));
                heat_p[(size_t)y * W + x] = p;
            }
        static const uint8_t contour[3] = {255, 255, 0};
        int t = W / 512 + 1;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = (size_t)y * W + x;
                if (heat_p[i] < 0.5f)
                    continue;
                int edge = (x > 0 && heat_p[i - 1] < 0.5f) ||
                           (x < W - 1 && heat_p[i + 1] < 0.5f) ||
                           (y > 0 && heat_p[i - W] < 0.5f) || (y < H - 1 && heat_p[i + W] < 0.5f);
                if (edge)
                    ms_canvas_rect(&im, x, y, t, t, contour, 1);
            }
    }

    /* Mask outline: inside pixels with an outside 4-neighbour (the image border counts as
     * outside), thickened for large images. */
    if (r->mask) {
        static const uint8_t cyan[3] = {0, 255, 255};
        int t = W / 512 + 1;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                if (!r->mask[(size_t)y * W + x])
                    continue;
                int edge = x == 0 || y == 0 || x == W - 1 || y == H - 1 ||
                           !r->mask[(size_t)y * W + x - 1] || !r->mask[(size_t)y * W + x + 1] ||
                           !r->mask[(size_t)(y - 1) * W + x] || !r->mask[(size_t)(y + 1) * W + x];
                if (edge)
                    for (int dy = 0; dy < t; dy++)
                        for (int dx = 0; dx < t; dx++)
                            if (x + dx < W && y + dy < H)
                                ms_canvas_blend(&im, x + dx, y + dy, cyan, 1);
            }
    }

    MS_TRY(ms_canvas_init(canvas, ZW + panel_w, canvas_h));
    memset(canvas->rgb, 24, (size_t)canvas->w * canvas->h * 3); /* dark grey panel */
    for (int y = 0; y < ZH; y++)
        for (int x = 0; x < ZW; x++)
            memcpy(canvas->rgb + ((size_t)y * canvas->w + x) * 3,
                   im.rgb + ((size_t)(y / zoom) * W + x / zoom) * 3, 3);
    static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0},
                         edge[3] = {110, 110, 110};
    /* Scale bar: white with a black rim (readable over bright and dark images), its length
     * over it, at the bottom left of the image. */
    double bar_um = r->pixel_um > 0 ? ms_render_scale_length(W * r->pixel_um) : 0;
    if (bar_um > 0) {
        int bw = (int)floor(bar_um / r->pixel_um * zoom + 0.5);
        int bh = ZH / 80 > 3 ? ZH / 80 : 3, rim = scale / 2 > 1 ? scale / 2 : 1;
        int bx = ZW / 25 > margin ? ZW / 25 : margin, by = ZH - ZH / 25 - bh;
        ms_canvas_rect(canvas, bx - rim, by - rim, bw + 2 * rim, bh + 2 * rim, black, 1);
        ms_canvas_rect(canvas, bx, by, bw, bh, white, 1);
        char label[32];
        if (bar_um >= 1000)
            snprintf(label, sizeof label, "%g mm", bar_um / 1000);
        else
            snprintf(label, sizeof label, "%g \xc2\xb5m", bar_um);
        int tx = bx + (bw - ms_font_text_width(label, scale)) / 2, ty = by - rim - 2 * scale - gh;
        tx = tx < rim ? rim : tx;
        ms_font_draw(canvas, tx + rim, ty + rim, label, scale, black); /* shadow */
        ms_font_draw(canvas, tx, ty, label, scale, white);
        if (layout) {
            layout->bar_um = bar_um;
            layout->bar_x = bx, layout->bar_y = by, layout->bar_w = bw, layout->bar_h = bh;
        }
    }
    /* The panel: lines of text, some led by a colour swatch, and the heat colour bar. */
    int y = margin;
    for (int i = 0; i < r->nlines; i++) {
        int x = ZW + margin;
        if (r->line_heatbar[i]) {
            int x1 = x + heat_w - 1;
            for (int xx = x; xx <= x1; xx++) {
                uint8_t rgb[3];
                ms_render_heat(rgb, (float)(xx - x) / (float)(x1 - x));
                ms_canvas_rect(canvas, xx, y, 1, gh, rgb, 1);
            }
            if (layout)
                layout->heat_x0 = x, layout->heat_x1 = x1, layout->heat_y = y, layout->heat_h = gh;
            int ty = y + line_h;
            ms_font_draw(canvas, x, ty, "0", scale, white);
            ms_font_draw(canvas, (x + x1 - ms_font_text_width("0.5", scale)) / 2, ty, "0.5",
                         scale, white);
            ms_font_draw(canvas, x1 + 1 - ms_font_text_width("1", scale), ty, "1", scale, white);
            y += 2 * line_h;
            continue;
        }
        if (r->line_swatch[i]) {
            /* a grey rim, so that a channel shown black ("off") still shows its square */
            ms_canvas_rect(canvas, x, y, gh, gh, edge, 1);
            ms_canvas_rect(canvas, x + 1, y + 1, gh - 2, gh - 2, r->line_swatch[i], 1);
            x += swatch_w;
        }
        ms_font_draw(canvas, x, y, r->lines[i], scale, r->line_rgb[i] ? r->line_rgb[i] : white);
        y += line_h;
    }
done:
    free(acc);
    free(heat_p);
    free(col);
    ms_canvas_free(&im);
    if (st)
        ms_canvas_free(canvas);
    return st;
}

/* Pictures: the bitmap font (well-formed, every glyph distinct, upper and lower case, text
 * drawn where it should be and readable back dot by dot), PNG files round-tripping exactly,
 * the render composition (contrast stretch, heat overlay placement, mask outline, text panel,
 * channel swatches, heat colour bar, scale bar) and the line charts of `plot` (markers where
 * the values say, ticks at round values). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pipeline/render/plot.h"
#include "pipeline/render/png.h"
#include "pipeline/render/render.h"

static void test_font(void)
{
    CHECK(ms_font_selfcheck() == 0, "%d malformed glyph rows", ms_font_selfcheck());
    const char *set = ms_font_charset();
    /* every printable ASCII character and the micro sign, each with its own glyph */
    for (int ch = ' '; ch <= '~'; ch++)
        CHECK(strchr(set, ch) != NULL, "the font has '%c'", ch);
    CHECK(ms_font_has(0xB5) && strchr(set, (char)0xB5), "the font has the micro sign");
    /* Distinct glyphs: a reader can tell every pair apart, 'l' from 'I', 'o' from 'O'. */
    int same = 0, blank = 0;
    for (const char *a = set; *a; a++) {
        int dots = 0;
        for (int r = 0; r < MS_FONT_H; r++)
            for (int c = 0; c < MS_FONT_W; c++)
                dots += ms_font_dot(*a, c, r);
        blank += dots == 0 && *a != ' ';
        for (const char *b = a + 1; *b; b++) {
            int diff = 0;
            for (int r = 0; r < MS_FONT_H; r++)
                for (int c = 0; c < MS_FONT_W; c++)
                    diff += ms_font_dot(*a, c, r) != ms_font_dot(*b, c, r);
            if (!diff) {
                same++;
                fprintf(stderr, "  '%c' and '%c' look the same\n", *a, *b);
            }
        }
    }
    CHECK(same == 0 && blank == 0, "glyphs distinct (%d pairs equal) and inked (%d blank)",
          same, blank);
    int lower_own = 1;
    for (char ch = 'a'; ch <= 'z'; ch++) {
        int diff = 0;
        for (int r = 0; r < MS_FONT_H; r++)
            for (int c = 0; c < MS_FONT_W; c++)
                diff += ms_font_dot(ch, c, r) != ms_font_dot((char)(ch - 32), c, r);
        lower_own &= diff > 0;
    }
    CHECK(lower_own, "lower case has its own glyphs (case is kept)");
    CHECK(!ms_font_has('\x7f') && ms_font_dot('\x7f', 2, 6) == ms_font_dot('?', 2, 6),
          "unknown characters drawn as '?'");
    CHECK(ms_font_text_width("", 3) == 0 && ms_font_text_width("AB", 3) == 33,
          "width: 2 glyphs of 5 dots plus 1 space, times 3");
    CHECK(ms_font_text_width("10 \xc2\xb5m", 1) == ms_font_text_width("10 um", 1) &&
              ms_font_text_width("\xc3\xa9", 1) == MS_FONT_W,
          "UTF-8: the micro sign and any other character are one glyph each");

    /* Draw, then read the text back from the pixels cell by cell. */
    const char *text = "P(7)=99.5% mil @ 10 \xc2\xb5m";
    int scale = 3;
    ms_canvas_t cv;
    CHECK_OK(ms_canvas_init(&cv, ms_font_text_width(text, scale) + 20, 40));
    uint8_t ink[3] = {255, 255, 0};
    int w = ms_font_draw(&cv, 10, 5, text, scale, ink);
    CHECK(w == ms_font_text_width(text, scale), "draw returns the width");
    char read[64] = {0};
    size_t n = (size_t)(w + scale) / ((MS_FONT_W + 1) * scale);
    for (size_t i = 0; i < n; i++) {
        read[i] = '~';
        for (const char *g = set; *g; g++) {
            int match = 1;
            for (int r = 0; r < MS_FONT_H && match; r++)
                for (int c = 0; c < MS_FONT_W && match; c++)
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++) {
                            int x = 10 + (int)i * (MS_FONT_W + 1) * scale + c * scale + dx;
                            int y = 5 + r * scale + dy;
                            int on = cv.rgb[((size_t)y * cv.w + x) * 3 + 2] == 0 &&
                                     cv.rgb[((size_t)y * cv.w + x) * 3] == 255;
                            match &= on == ms_font_dot(*g, c, r);
                        }
            if (match) {
                read[i] = *g;
                break;
            }
        }
    }
    CHECK(!strcmp(read, "P(7)=99.5% mil @ 10 \xb5m"), "text read back from the pixels, case "
          "kept: '%s'", read);
    ms_canvas_free(&cv);
}

static void test_png(void)
{
    ms_canvas_t cv;
    CHECK_OK(ms_canvas_init(&cv, 37, 21));
    for (size_t i = 0; i < (size_t)37 * 21 * 3; i++)
        cv.rgb[i] = (uint8_t)(i * 7 + i / 3);
    char path[] = "/tmp/ms_test_png_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "temporary file");
    close(fd);
    CHECK_OK(ms_png_write(path, cv.rgb, cv.w, cv.h));
    uint8_t *back = NULL;
    int w = 0, h = 0;
    CHECK_OK(ms_png_read(path, &back, &w, &h));
    CHECK(w == 37 && h == 21 && back && !memcmp(back, cv.rgb, (size_t)w * h * 3),
          "PNG round trip is exact (%dx%d)", w, h);
    free(back);
    FILE *f = fopen(path, "rb");
    unsigned char sig[8] = {0};
    CHECK(f && fread(sig, 1, 8, f) == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8),
          "the file starts with the PNG signature");
    if (f)
        fclose(f);
    unlink(path);
    ms_error_clear();
    CHECK(ms_png_write("/nonexistent-dir/x.png", cv.rgb, cv.w, cv.h) == MS_EIO,
          "an unwritable path is an error");
    CHECK(strstr(ms_error_message(), "/nonexistent-dir/x.png") != NULL, "naming the file: %s",
          ms_error_message());
    CHECK(ms_png_read("/nonexistent-dir/x.png", &back, &w, &h) == MS_EIO && back == NULL,
          "reading a missing file is an error");
    ms_canvas_free(&cv);
}

static void test_draw(void)
{
    enum { C = 2, H = 64, W = 80 };
    static float img[C * H * W];
    /* Channel 0: a ramp 0..W-1 along x; channel 1: zero. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[y * W + x] = (float)x;
    /* Map 2x2: only the top-left instance is on. */
    float map[4] = {1, 0, 0, 0};
    static uint8_t mask[H * W];
    for (int y = 20; y < 40; y++)
        for (int x = 30; x < 50; x++)
            mask[y * W + x] = 1;
    ms_render_t r = {.img = img, .C = C, .H = H, .W = W, .map = NULL, .h = 2, .w = 2,
                     .stride = 0, .mask = NULL, .percentile = 0, .heat_alpha = 0.5,
                     .zoom = 1, .nlines = 0};
    ms_canvas_t cv;
    CHECK_OK(ms_render_draw(&cv, &r));
    CHECK(cv.w == W && cv.h == H, "no text: canvas is the image (%dx%d)", cv.w, cv.h);
    /* Two channels: channel 0 green; percentile 0 stretches min..max to 0..255. */
    uint8_t *p0 = cv.rgb, *p1 = cv.rgb + (size_t)(W - 1) * 3;
    CHECK(p0[0] == 0 && p0[1] == 0 && p0[2] == 0 && p1[0] == 0 && p1[1] == 255 && p1[2] == 0,
          "ramp stretched to black..green: (%d,%d,%d) .. (%d,%d,%d)", p0[0], p0[1], p0[2],
          p1[0], p1[1], p1[2]);
    uint8_t base[W * H * 3];
    memcpy(base, cv.rgb, sizeof base);
    ms_canvas_free(&cv);

    /* Percentile 10: the lowest tenth is black, the top tenth saturated. */
    r.percentile = 10;
    CHECK_OK(ms_render_draw(&cv, &r));
    CHECK(cv.rgb[5 * 3 + 1] == 0 && cv.rgb[(size_t)(W - 5) * 3 + 1] == 255 &&
              cv.rgb[(size_t)(W / 2) * 3 + 1] > 100 && cv.rgb[(size_t)(W / 2) * 3 + 1] < 155,
          "10th-90th percentile stretch clips both ends");
    ms_canvas_free(&cv);
    r.percentile = 0;

    /* Heat, stretched: the top-left quarter is covered, the bottom-right untouched. */
    r.map = map;
    CHECK_OK(ms_render_draw(&cv, &r));
    size_t tl = ((size_t)2 * W + 2) * 3, br = ((size_t)(H - 3) * W + W - 3) * 3;
    CHECK(cv.rgb[tl] > 100 && !memcmp(cv.rgb + br, base + br, 3),
          "heat on the top-left instance only (red %d there)", cv.rgb[tl]);
    ms_canvas_free(&cv);
    /* Placed by geometry: stride 16, offset 34 puts instance (0,0) at pixel 34; pixels left
     * of it clamp to it, and pixel 50 (one instance right) is instance (1,0) = 0. */
    r.stride = 16;
    r.offset = 34;
    CHECK_OK(ms_render_draw(&cv, &r));
    size_t at = ((size_t)34 * W + 34) * 3, right = ((size_t)34 * W + 50) * 3;
    CHECK(cv.rgb[at] > 100 && !memcmp(cv.rgb + right, base + right, 3),
          "heat placed by receptive-field centres");
    ms_canvas_free(&cv);
    r.map = NULL;

    /* Outline: the square's border pixels cyan, its inside and outside untouched. */
    r.mask = mask;
    CHECK_OK(ms_render_draw(&cv, &r));
    size_t edge = ((size_t)20 * W + 40) * 3, inside = ((size_t)30 * W + 40) * 3,
           outside = ((size_t)10 * W + 40) * 3;
    CHECK(cv.rgb[edge] == 0 && cv.rgb[edge + 1] == 255 && cv.rgb[edge + 2] == 255,
          "outline pixel is cyan");
    CHECK(!memcmp(cv.rgb + inside, base + inside, 3) &&
              !memcmp(cv.rgb + outside, base + outside, 3), "inside and outside untouched");
    ms_canvas_free(&cv);

    /* Text panel to the right, at least as wide as the longest line. */
    r.lines[0] = "CLASS 3";
    r.lines[1] = "MIL 99.0%";
    r.nlines = 2;
    CHECK_OK(ms_render_draw(&cv, &r));
    CHECK(cv.w >= W + ms_font_text_width("MIL 99.0%", 2) && cv.h == H, "panel %dx%d", cv.w,
          cv.h);
    int lit = 0;
    for (int y = 0; y < cv.h; y++)
        for (int x = W; x < cv.w; x++)
            lit += cv.rgb[((size_t)y * cv.w + x) * 3] == 255;
    CHECK(lit > 50, "text drawn in the panel (%d white pixels)", lit);
    ms_canvas_free(&cv);

    /* Zoom: every pixel becomes a z x z block; auto zoom brings 80 pixels to 480. */
    r.nlines = 0;
    r.mask = mask;
    ms_canvas_t one, two;
    CHECK_OK(ms_render_draw(&one, &r));
    r.zoom = 2;
    CHECK_OK(ms_render_draw(&two, &r));
    int same = two.w == 2 * W && two.h == 2 * H;
    for (int y = 0; y < 2 * H && same; y++)
        for (int x = 0; x < 2 * W && same; x++)
            same = !memcmp(two.rgb + ((size_t)y * two.w + x) * 3,
                           one.rgb + ((size_t)(y / 2) * one.w + x / 2) * 3, 3);
    CHECK(same, "zoom 2 replicates every pixel into a 2x2 block (%dx%d)", two.w, two.h);
    ms_canvas_free(&one);
    ms_canvas_free(&two);
    r.zoom = 0;
    CHECK_OK(ms_render_draw(&two, &r));
    CHECK(two.w == 6 * W && two.h == 6 * H, "auto zoom: 80 pixels wide -> x6 (%dx%d)", two.w,
          two.h);
    ms_canvas_free(&two);
    r.zoom = 1;

    ms_error_clear();
    r.C = 0;
    CHECK(ms_render_draw(&cv, &r) == MS_EARG && cv.rgb == NULL, "no channels is an error");
}


/* The panel's legend and bars, and the scale bar, where ms_render_draw_layout says they are. */
static void test_legend_bars(void)
{
    enum { C = 2, H = 100, W = 200 };
    static float img[C * H * W]; /* zeros: a black image */
    float map[1] = {0};
    static const uint8_t red[3] = {255, 0, 0}, off[3] = {0, 0, 0};
    ms_render_t r = {.img = img, .C = C, .H = H, .W = W, .map = map, .h = 1, .w = 1,
                     .percentile = 0, .heat_alpha = 0.5, .zoom = 2, .pixel_um = 0.65};
    r.lines[0] = "DAPI";
    r.line_swatch[0] = red;
    r.lines[1] = "GFP";
    r.line_swatch[1] = off;
    r.lines[2] = "heat";
    r.line_heatbar[3] = 1;
    r.lines[3] = "";
    r.lines[4] = "after the bar";
    r.nlines = 5;
    ms_canvas_t cv;
    ms_render_layout_t L;
    CHECK_OK(ms_render_draw_layout(&cv, &r, &L));
    /* Scale bar: 200 px * 0.65 um = 130 um wide; a fifth is 26, so 20 um = 30.8 px, times
     * the zoom of 2: 62 px (rounded), white, at the bottom left of the image. */
    CHECK(ms_render_scale_length(130) == 20 && ms_render_scale_length(4.9) == 0.5 &&
              ms_render_scale_length(5000) == 1000 && ms_render_scale_length(0) == 0,
          "scale bar lengths: 1, 2 or 5 times a power of ten, at most a fifth of the width");
    CHECK(L.bar_um == 20 && L.bar_w == 62, "a 20 um bar of 62 pixels (%g um, %d px)", L.bar_um,
          L.bar_w);
    int white_run = 0, longest = 0;
    int row = L.bar_y + L.bar_h / 2;
    for (int x = 0; x < 2 * W; x++) {
        const uint8_t *p = cv.rgb + ((size_t)row * cv.w + x) * 3;
        white_run = p[0] == 255 && p[1] == 255 && p[2] == 255 ? white_run + 1 : 0;
        longest = white_run > longest ? white_run : longest;
    }
    CHECK(longest == 62 && L.bar_x < W / 2 && L.bar_y > H, "the bar is 62 white pixels in the "
          "lower left (longest run %d at row %d, x %d)", longest, row, L.bar_x);
    /* Unknown pixel size: no bar. */
    r.pixel_um = 0;
    ms_canvas_t nb;
    ms_render_layout_t L2;
    CHECK_OK(ms_render_draw_layout(&nb, &r, &L2));
    int whites = 0;
    for (int y = 0; y < 2 * H; y++)
        for (int x = 0; x < 2 * W; x++) {
            const uint8_t *p = nb.rgb + ((size_t)y * nb.w + x) * 3;
            whites += p[0] == 255 && p[1] == 255 && p[2] == 255;
        }
    CHECK(L2.bar_um == 0 && whites == 0, "no pixel size, no bar (%d white pixels)", whites);
    ms_canvas_free(&nb);
    /* Heat bar: column x shows ms_render_heat((x - x0) / (x1 - x0)), from yellow to red. */
    int bad = 0;
    for (int x = L.heat_x0; x <= L.heat_x1; x++) {
        uint8_t want[3];
        ms_render_heat(want, (float)(x - L.heat_x0) / (float)(L.heat_x1 - L.heat_x0));
        for (int y = L.heat_y; y < L.heat_y + L.heat_h; y++)
            bad += memcmp(cv.rgb + ((size_t)y * cv.w + x) * 3, want, 3) != 0;
    }
    const uint8_t *lo = cv.rgb + ((size_t)L.heat_y * cv.w + L.heat_x0) * 3,
                  *hi = cv.rgb + ((size_t)L.heat_y * cv.w + L.heat_x1) * 3;
    CHECK(L.heat_x1 - L.heat_x0 > 100 && L.heat_x0 >= 2 * W && bad == 0 && lo[1] == 230 &&
              hi[1] == 0 && hi[0] == 255,
          "heat bar in the panel from P = 0 (255,230,0) to 1 (255,0,0) (%d pixels off)", bad);
    /* Swatches: a square of the channel's colour (inside a grey rim, which shows "off"). */
    int gh = ms_font_text_height(2), margin = 8, x0 = 2 * W + margin, y0 = margin;
    const uint8_t *sw0 = cv.rgb + ((size_t)(y0 + gh / 2) * cv.w + x0 + gh / 2) * 3;
    int line_h = gh + 6;
    const uint8_t *sw1 = cv.rgb + ((size_t)(y0 + line_h + gh / 2) * cv.w + x0 + gh / 2) * 3;
    const uint8_t *rim1 = cv.rgb + ((size_t)(y0 + line_h) * cv.w + x0) * 3;
    CHECK(!memcmp(sw0, red, 3) && !memcmp(sw1, off, 3) && rim1[0] == 110,
          "swatches: red for DAPI, black in a grey rim for the channel that is off");
    CHECK(L.heat_y == y0 + 3 * line_h && cv.h >= y0 + 6 * line_h,
          "the heat bar takes two rows (bar and ticks) in the panel's flow");
    ms_canvas_free(&cv);
}

/* The chart: every marker centred where the frame says its value goes; ticks at round values;
 * a gap for a missing value. */
static void test_plot(void)
{
    CHECK(ms_plot_tick_step(10, 5) == 2 && ms_plot_tick_step(1, 5) == 0.2 &&
              ms_plot_tick_step(0.07, 5) == 0.01 && ms_plot_tick_step(37, 6) == 5,
          "tick steps 1, 2 or 5 times a power of ten");
    double ep[5] = {1, 2, 3, 4, 5}, loss[5] = {2.0, 1.2, 0.9, 0.7, 0.65},
           val[5] = {2.2, 1.5, NAN, 1.1, 1.0}, acc[5] = {0.3, 0.5, 0.7, 0.8, 1.0};
    ms_plot_t p = {.title = "run", .npanels = 2};
    ms_plot_panel_t *a = &p.panels[0], *b = &p.panels[1];
    a->title = "loss";
    a->nseries = 2;
    a->series[0] = (ms_plot_series_t){"train", ep, loss, 5, {0, 114, 178}, {0, 68, 107}, 0};
    a->series[1] = (ms_plot_series_t){"val", ep, val, 5, {213, 94, 0}, {128, 56, 0}, 1};
    double mark = 3;
    a->marks = &mark;
    a->nmarks = 1;
    b->title = "accuracy";
    b->ymin = -0.03;
    b->ymax = 1.03;
    b->nseries = 1;
    b->series[0] = (ms_plot_series_t){"acc", ep, acc, 5, {0, 114, 178}, {0, 68, 107}, 0};
    ms_canvas_t cv;
    ms_plot_frame_t fr[2];
    CHECK_OK(ms_plot_draw(&cv, &p, fr));
    CHECK(fr[0].x1 > fr[0].x0 && fr[1].x0 > fr[0].x1 && fr[0].ymin <= 0.65 &&
              fr[0].ymax >= 2.2 && fr[1].ymin == -0.03 && fr[1].ymax == 1.03,
          "two panels side by side, the loss range covering the data");
    /* find each marker: the centre of the pixels of its exact colour in a window */
    for (int pi = 0; pi < 2; pi++)
        for (int si = 0; si < p.panels[pi].nseries; si++) {
            const ms_plot_series_t *se = &p.panels[pi].series[si];
            const ms_plot_frame_t *f = &fr[pi];
            int ok = 1;
            for (int j = 0; j < se->n; j++) {
                if (!(se->y[j] == se->y[j]))
                    continue;
                double wx = f->x0 + (se->x[j] - f->xmin) / (f->xmax - f->xmin) * (f->x1 - f->x0);
                double wy = f->y0 + (f->ymax - se->y[j]) / (f->ymax - f->ymin) * (f->y1 - f->y0);
                double sx = 0, sy = 0;
                int cnt = 0;
                for (int y = (int)wy - 12; y <= (int)wy + 12; y++)
                    for (int x = (int)wx - 12; x <= (int)wx + 12; x++)
                        if (x >= 0 && y >= 0 && x < cv.w && y < cv.h &&
                            !memcmp(cv.rgb + ((size_t)y * cv.w + x) * 3, se->marker, 3))
                            sx += x, sy += y, cnt++;
                double cx = cnt ? sx / cnt : -99, cy = cnt ? sy / cnt : -99;
                if (cnt < 25 || fabs(cx - wx) > 0.75 || fabs(cy - wy) > 0.75) {
                    ok = 0;
                    fprintf(stderr, "  %s point %d: marker at (%.1f, %.1f) of %d px, value at "
                            "(%.1f, %.1f)\n", se->label, j, cx, cy, cnt, wx, wy);
                }
            }
            CHECK(ok, "%s: every marker centred on its value", se->label);
        }
    /* the missing validation value: no marker anywhere in its column band */
    const ms_plot_frame_t *f = &fr[0];
    int gx = (int)(f->x0 + (3 - f->xmin) / (f->xmax - f->xmin) * (f->x1 - f->x0) + 0.5), stray = 0;
    for (int y = f->y0; y <= f->y1; y++)
        for (int x = gx - 5; x <= gx + 5; x++)
            stray += !memcmp(cv.rgb + ((size_t)y * cv.w + x) * 3, a->series[1].marker, 3);
    CHECK(stray == 0, "no marker for a missing value (%d pixels)", stray);
    ms_canvas_free(&cv);
    ms_plot_t empty = {.npanels = 1};
    ms_error_clear();
    CHECK(ms_plot_draw(&cv, &empty, NULL) == MS_EARG && cv.rgb == NULL,
          "a panel with nothing to draw is an error");
}

int main(void)
{
    test_font();
    test_png();
    test_draw();
    test_legend_bars();
    test_plot();
    return check_summary();
}

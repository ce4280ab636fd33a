/* Pictures: the bitmap font (well-formed, every glyph distinct, text drawn where it should
 * be and readable back dot by dot), PNG files round-tripping exactly, and the render
 * composition (contrast stretch, heat overlay placement, mask outline, text panel). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pipeline/render/png.h"
#include "pipeline/render/render.h"

static void test_font(void)
{
    CHECK(ms_font_selfcheck() == 0, "%d malformed glyph rows", ms_font_selfcheck());
    const char *set = ms_font_charset();
    const char *need = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.%:-_/() ";
    for (const char *p = need; *p; p++)
        CHECK(strchr(set, *p) != NULL, "the font has '%c'", *p);
    /* Distinct glyphs: a reader can tell every pair apart. */
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
    int lower_ok = 1;
    for (char ch = 'a'; ch <= 'z'; ch++)
        for (int r = 0; r < MS_FONT_H; r++)
            for (int c = 0; c < MS_FONT_W; c++)
                lower_ok &= ms_font_dot(ch, c, r) == ms_font_dot((char)(ch - 32), c, r);
    CHECK(lower_ok && ms_font_has('q') && !ms_font_has('~'), "lower case drawn as upper case");
    CHECK(ms_font_dot('~', 2, 6) == ms_font_dot('?', 2, 6), "unknown characters drawn as '?'");
    CHECK(ms_font_text_width("", 3) == 0 && ms_font_text_width("AB", 3) == 33,
          "width: 2 glyphs of 5 dots plus 1 space, times 3");

    /* Draw, then read the text back from the pixels cell by cell. */
    const char *text = "P(7)=99.5% mil";
    int scale = 3;
    ms_canvas_t cv;
    CHECK_OK(ms_canvas_init(&cv, ms_font_text_width(text, scale) + 20, 40));
    uint8_t ink[3] = {255, 255, 0};
    int w = ms_font_draw(&cv, 10, 5, text, scale, ink);
    CHECK(w == ms_font_text_width(text, scale), "draw returns the width");
    char read[32] = {0};
    size_t n = strlen(text);
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
    CHECK(!strcmp(read, "P(7)=99.5% MIL"), "text read back from the pixels: '%s'", read);
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

int main(void)
{
    test_font();
    test_png();
    test_draw();
    return check_summary();
}

/* RGB canvas, the 5x7 bitmap font and PNG files (libpng's simplified API, which reports
 * errors in the image struct instead of longjmp-ing through our frames). */
#include "pipeline/render/png.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ms_status_t ms_canvas_init(ms_canvas_t *c, int w, int h)
{
    ms_status_t st = MS_OK;
    c->w = c->h = 0;
    c->rgb = NULL;
    if (w < 1 || h < 1)
        MS_FAIL(MS_EARG, "canvas of %dx%d pixels", w, h);
    MS_ALLOC(c->rgb, (size_t)w * h * 3, "canvas");
    c->w = w;
    c->h = h;
done:
    return st;
}

void ms_canvas_free(ms_canvas_t *c)
{
    free(c->rgb);
    c->rgb = NULL;
    c->w = c->h = 0;
}

void ms_canvas_blend(ms_canvas_t *c, int x, int y, const uint8_t rgb[3], float alpha)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return;
    uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
    alpha = alpha < 0 ? 0 : alpha > 1 ? 1 : alpha;
    for (int k = 0; k < 3; k++)
        p[k] = (uint8_t)((1 - alpha) * p[k] + alpha * rgb[k] + 0.5f);
}

void ms_canvas_rect(ms_canvas_t *c, int x, int y, int w, int h, const uint8_t rgb[3],
                    float alpha)
{
    for (int j = y < 0 ? 0 : y; j < y + h && j < c->h; j++)
        for (int i = x < 0 ? 0 : x; i < x + w && i < c->w; i++)
            ms_canvas_blend(c, i, j, rgb, alpha);
}

/* The font: 7 rows of 5 dots per glyph, drawn as text so that it can be read and corrected
 * here. Shapes after the common HD44780 LCD 5x7 font. */
typedef struct {
    char ch;
    const char *rows[MS_FONT_H];
} glyph_t;

static const glyph_t font[] = {
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
    {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'[', {".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."}},
    {']', {".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."}},
    {'#', {".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."}},
    {'\'', {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."}},
    {'<', {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."}},
    {'>', {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."}},
    {'*', {".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", "....."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};

static const glyph_t *glyph_of(char ch)
{
    if (ch >= 'a' && ch <= 'z')
        ch = (char)(ch - 'a' + 'A');
    for (size_t i = 0; i < sizeof font / sizeof *font; i++)
        if (font[i].ch == ch)
            return &font[i];
    return NULL;
}

int ms_font_has(char ch)
{
    return glyph_of(ch) != NULL;
}

int ms_font_dot(char ch, int col, int row)
{
    const glyph_t *g = glyph_of(ch);
    if (!g)
        g = glyph_of('?');
    if (col < 0 || col >= MS_FONT_W || row < 0 || row >= MS_FONT_H)
        return 0;
    return g->rows[row][col] == '#';
}

int ms_font_selfcheck(void)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof font / sizeof *font; i++)
        for (int row = 0; row < MS_FONT_H; row++)
            bad += strlen(font[i].rows[row]) != MS_FONT_W ||
                   strspn(font[i].rows[row], ".#") != MS_FONT_W;
    return bad;
}

const char *ms_font_charset(void)
{
    static char set[sizeof font / sizeof *font + 1];
    for (size_t i = 0; i < sizeof font / sizeof *font; i++)
        set[i] = font[i].ch;
    return set;
}

int ms_font_text_width(const char *s, int scale)
{
    size_t n = strlen(s);
    return n ? (int)(n * (MS_FONT_W + 1) - 1) * scale : 0;
}

int ms_font_text_height(int scale)
{
    return MS_FONT_H * scale;
}

int ms_font_draw(ms_canvas_t *c, int x, int y, const char *s, int scale, const uint8_t rgb[3])
{
    for (const char *p = s; *p; p++, x += (MS_FONT_W + 1) * scale)
        for (int row = 0; row < MS_FONT_H; row++)
            for (int col = 0; col < MS_FONT_W; col++)
                if (ms_font_dot(*p, col, row))
                    ms_canvas_rect(c, x + col * scale, y + row * scale, scale, scale, rgb, 1);
    return ms_font_text_width(s, scale);
}

ms_status_t ms_png_write(const char *path, const uint8_t *rgb, int w, int h)
{
    ms_status_t st = MS_OK;
    char *tmp = NULL;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = PNG_FORMAT_RGB;
    size_t len = strlen(path) + 32;
    MS_ALLOC(tmp, len, "file name");
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    if (!png_image_write_to_file(&img, tmp, 0, rgb, (png_int_32)(3 * w), NULL)) {
        unlink(tmp);
        MS_FAIL(MS_EIO, "writing PNG %s: libpng: %s", tmp, img.message);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        MS_FAIL(MS_EIO, "renaming %s to %s: %s", tmp, path, strerror(e));
    }
done:
    png_image_free(&img);
    free(tmp);
    return st;
}

ms_status_t ms_png_read(const char *path, uint8_t **rgb, int *w, int *h)
{
    ms_status_t st = MS_OK;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    *rgb = NULL;
    if (!png_image_begin_read_from_file(&img, path))
        MS_FAIL(MS_EIO, "reading PNG %s: libpng: %s", path, img.message);
    img.format = PNG_FORMAT_RGB;
    MS_ALLOC(*rgb, PNG_IMAGE_SIZE(img), "PNG pixels");
    if (!png_image_finish_read(&img, NULL, *rgb, 0, NULL)) {
        free(*rgb);
        *rgb = NULL;
        MS_FAIL(MS_EIO, "reading PNG %s: libpng: %s", path, img.message);
    }
    *w = (int)img.width;
    *h = (int)img.height;
done:
    png_image_free(&img);
    return st;
}

/*
 * Image payloads in and pool files out.
 *
 * Decoding goes through libpng's simplified API for PNG (what every render
 * server sends), and through px_image for JPEG and WebP when the server
 * answers with those. PNG pool files (the default; metaio.c does JPEG and
 * WebP) are written with libpng's full API because the pool needs text chunks
 * (the image module's encoder writes pixels only, on purpose): tEXt
 * "parameters" in the AUTOMATIC1111 layout, so existing tools read the prompt
 * and seed, and iTXt "pixpipe" with our JSON.
 * Reading a text chunk back is a plain walk over the chunk list.
 */
#include "gen_internal.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "../image/px_image.h"

void px_gen_rgb_free(px_gen_rgb *img)
{
    if (!img)
        return;
    free(img->px);
    memset(img, 0, sizeof *img);
}

static int decode_png(const uint8_t *data, size_t len, uint64_t max_pixels, px_gen_rgb *out,
                      px_err *err)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, data, len))
        return px_err_set(err, PX_ECORRUPT, "PNG: %s", im.message);
    if (im.width == 0 || im.height == 0 || (uint64_t)im.width * im.height > max_pixels) {
        png_image_free(&im);
        return px_err_set(err, PX_ELIMIT, "PNG: %ux%u is over the limit of %llu pixels", im.width,
                          im.height, (unsigned long long)max_pixels);
    }
    im.format = PNG_FORMAT_RGB;
    size_t n = (size_t)im.width * im.height * 3;
    uint8_t *px = malloc(n);
    if (!px) {
        png_image_free(&im);
        return px_err_set(err, PX_ENOMEM, "PNG: out of memory for %ux%u", im.width, im.height);
    }
    png_color black = {0, 0, 0};
    if (!png_image_finish_read(&im, &black, px, 0, NULL)) {
        free(px);
        int st = px_err_set(err, PX_ECORRUPT, "PNG: %s", im.message);
        png_image_free(&im);
        return st;
    }
    out->w = (int)im.width;
    out->h = (int)im.height;
    out->px = px;
    return PX_OK;
}

int px_gen_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_gen_rgb *out,
                  px_err *err)
{
    memset(out, 0, sizeof *out);
    if (max_pixels == 0)
        max_pixels = 64u << 20;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && !memcmp(data, sig, 8))
        return decode_png(data, len, max_pixels, out, err);
    px_format f = px_image_sniff(data, len);
    if (f == PX_FMT_UNKNOWN)
        return px_err_set(err, PX_EUNSUPPORTED, "payload of %zu bytes is not a PNG, JPEG or WebP "
                          "image", len);
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = max_pixels;
    px_image img;
    int st = px_image_decode(data, len, &o, &img, NULL, err);
    if (st != PX_OK)
        return st;
    uint8_t *px = malloc((size_t)img.w * img.h * 3);
    if (!px) {
        px_image_free(&img);
        return px_err_set(err, PX_ENOMEM, "decode: out of memory");
    }
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) {
            const uint8_t *s = img.px + (size_t)y * img.stride + (size_t)x * img.channels;
            uint8_t *d = px + ((size_t)y * img.w + x) * 3;
            int a = img.channels == 4 ? s[3] : 255;
            for (int c = 0; c < 3; c++)
                d[c] = (uint8_t)(s[c] * a / 255);
        }
    out->w = img.w;
    out->h = img.h;
    out->px = px;
    px_image_free(&img);
    return PX_OK;
}

typedef struct {
    px_buf *out;
    int failed;
} png_sink;

static void on_write(png_structp png, png_bytep data, size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (px_buf_append(s->out, data, n) != PX_OK)
        s->failed = 1;
}

static void on_flush(png_structp png)
{
    (void)png;
}

static void on_error(png_structp png, png_const_charp msg)
{
    px_err *e = png_get_error_ptr(png);
    px_err_set(e, PX_EIO, "PNG encode: %s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Encodes in a separate function so no local is live across setjmp. */
static int encode_inner(png_structp png, png_infop info, const px_gen_rgb *img,
                        const char *parameters, const char *json, png_sink *s)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_write_fn(png, s, on_write, on_flush);
    /* pool files: zlib level 1 with the up filter costs a few ms per megapixel and stays
     * within ~10% of level 6 on rendered (smooth) images */
    png_set_compression_level(png, 1);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text t[2];
    int nt = 0;
    memset(t, 0, sizeof t);
    if (parameters) {
        t[nt].compression = PNG_TEXT_COMPRESSION_NONE;
        t[nt].key = (png_charp) "parameters";
        t[nt].text = (png_charp)parameters;
        t[nt].text_length = strlen(parameters);
        nt++;
    }
    if (json) {
        t[nt].compression = PNG_ITXT_COMPRESSION_NONE;
        t[nt].key = (png_charp) "pixpipe";
        t[nt].text = (png_charp)json;
        t[nt].itxt_length = strlen(json);
        t[nt].lang = (png_charp) "";
        t[nt].lang_key = (png_charp) "";
        nt++;
    }
    if (nt)
        png_set_text(png, info, t, nt);
    png_write_info(png, info);
    for (int y = 0; y < img->h; y++)
        png_write_row(png, img->px + (size_t)y * img->w * 3);
    png_write_end(png, info);
    return 0;
}

int px_gen_encode_png(const px_gen_rgb *img, const char *parameters, const char *json,
                      px_buf *out, px_err *err)
{
    if (!img || !img->px || img->w <= 0 || img->h <= 0)
        return px_err_set(err, PX_EINVAL, "PNG encode: empty image");
    px_err local;
    px_err *e = err ? err : &local;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return px_err_set(err, PX_ENOMEM, "PNG encode: out of memory");
    }
    png_sink s = {out, 0};
    int r = encode_inner(png, info, img, parameters, json, &s);
    png_destroy_write_struct(&png, &info);
    if (s.failed)
        return px_err_set(err, PX_ENOMEM, "PNG encode: out of memory");
    return r == 0 ? PX_OK : PX_EIO;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int px_gen_png_text(const uint8_t *data, size_t len, const char *key, char **value, px_err *err)
{
    *value = NULL;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(data, sig, 8))
        return px_err_set(err, PX_EUNSUPPORTED, "not a PNG file");
    size_t klen = strlen(key), pos = 8;
    while (pos + 12 <= len) {
        uint32_t n = be32(data + pos);
        if (n > len - pos - 12)
            return px_err_set(err, PX_ECORRUPT, "PNG: chunk at %zu runs past the end", pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (n > klen && !memcmp(body, key, klen) && body[klen] == 0) {
            const uint8_t *txt = NULL;
            size_t tl = 0;
            if (!memcmp(type, "tEXt", 4)) {
                txt = body + klen + 1;
                tl = n - klen - 1;
            } else if (!memcmp(type, "iTXt", 4) && n > klen + 3 && body[klen + 1] == 0) {
                /* keyword\0 compression-flag(0) method language\0 translated\0 text */
                const uint8_t *p = body + klen + 3, *end = body + n;
                const uint8_t *z = memchr(p, 0, (size_t)(end - p));
                if (z)
                    z = memchr(z + 1, 0, (size_t)(end - z - 1));
                if (z) {
                    txt = z + 1;
                    tl = (size_t)(end - txt);
                }
            }
            if (txt)
                return px_gen_text_dup(txt, tl, value, err);
        }
        if (!memcmp(type, "IEND", 4))
            break;
        pos += 12 + (size_t)n;
    }
    return px_err_set(err, PX_ENOTFOUND, "PNG: no text chunk '%s'", key);
}

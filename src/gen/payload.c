/*
 * Render payloads in, pool files out.
 *
 * Payloads are decoded to plain RGB for the checks: PNG (what every render
 * server sends) through libpng's simplified API, which composites any alpha
 * and expands any bit depth in one call; JPEG and WebP through px_image.
 * Pool files are written by px_image_encode_meta (the A1111 "parameters"
 * text and our JSON, see px_image.h); this file only adds the pool's quality
 * policy.
 */
#include "gen_internal.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

static int decode_png(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
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
    uint8_t *px = px_malloc(n);
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
    out->channels = 3;
    out->stride = (size_t)out->w * 3;
    out->px = px;
    return PX_OK;
}

int px_gen_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
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
    if (img.channels == 3 && img.stride == (size_t)img.w * 3) {
        *out = img;
        return PX_OK;
    }
    uint8_t *px = px_malloc((size_t)img.w * img.h * 3);
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
    px_image_free(&img);
    out->w = img.w;
    out->h = img.h;
    out->channels = 3;
    out->stride = (size_t)img.w * 3;
    out->px = px;
    return PX_OK;
}

int px_gen_encode(const px_image *img, px_format f, int quality, const px_image_meta *meta,
                  px_buf *out, px_err *err)
{
    if (f == PX_FMT_UNKNOWN)
        f = PX_FMT_PNG;
    if (quality < 1 || quality > 100)
        quality = 92;
    /* lossless WebP is what quality 100 means to the image module; pool files
     * that want lossless should be PNG, so cap lossy WebP at 99 */
    if (f == PX_FMT_WEBP && quality > 99)
        quality = 99;
    return px_image_encode_meta(img, f, quality, meta, out, err);
}

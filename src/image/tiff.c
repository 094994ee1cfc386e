/*
 * TIFF decoding through libtiff, from memory (read-only input, never
 * written). Only the first image (directory) of a multi-page file is read.
 *
 * How it works: TIFFClientOpenExt over the buffer with our own read/seek/
 * size procedures and per-handle error and warning handlers (libtiff 4.5),
 * so libtiff neither prints nor touches a global handler another thread may
 * be using; a single allocation inside libtiff is capped too. The size is
 * checked against the pixel cap from the tags before any raster exists, then
 * TIFFReadRGBAImageOriented converts whatever the file holds (any bit depth,
 * palette, grey, YCbCr, CMYK, tiles or strips, any compression libtiff
 * knows) to 8-bit RGBA. It is asked for the file's own orientation, which
 * makes it return the rows as stored; the Orientation tag is then applied by
 * image.c like EXIF orientation (libtiff itself only flips, it would get
 * the transposing orientations 5-8 wrong). An ICC profile (tag 34675) is
 * converted to sRGB (icc.c).
 */
#include "image_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

/* Largest single allocation libtiff may make (a strip, a tile, a tag array). */
#define PX_TIFF_ALLOC_MAX ((tmsize_t)256 << 20)

typedef struct tsrc {
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
} tsrc;

static tmsize_t t_read(thandle_t h, void *buf, tmsize_t n)
{
    tsrc *s = h;
    if (n <= 0)
        return 0;
    size_t k = (size_t)n;
    if (k > s->len - s->pos)
        k = s->len - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (tmsize_t)k;
}

static tmsize_t t_write(thandle_t h, void *buf, tmsize_t n)
{
    (void)h, (void)buf, (void)n;
    return -1;
}

static toff_t t_seek(thandle_t h, toff_t off, int whence)
{
    tsrc *s = h;
    uint64_t base = whence == SEEK_CUR ? s->pos : whence == SEEK_END ? s->len : 0;
    if (off > UINT64_MAX - base || base + off > s->len)
        return (toff_t)-1;
    s->pos = (size_t)(base + off);
    return s->pos;
}

static int t_close(thandle_t h)
{
    (void)h;
    return 0;
}

static toff_t t_size(thandle_t h)
{
    return ((tsrc *)h)->len;
}

static int t_map(thandle_t h, void **base, toff_t *size)
{
    (void)h, (void)base, (void)size;
    return 0; /* no mapping: libtiff reads through t_read */
}

static void t_unmap(thandle_t h, void *base, toff_t size)
{
    (void)h, (void)base, (void)size;
}

static int t_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif, (void)module;
    tsrc *s = user;
    if (!s->msg[0]) /* the first error is the cause; later ones follow from it */
        vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    return 1;
}

static int t_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* recoverable; library code never prints */
}

int px_tiff_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err)
{
    tsrc s = {.data = data, .len = len, .pos = 0, .msg = ""};
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the TIFF decoder");
    TIFFOpenOptionsSetMaxSingleMemAlloc(opts, PX_TIFF_ALLOC_MAX);
    TIFFOpenOptionsSetErrorHandlerExtR(opts, t_error, &s);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, t_warning, &s);
    /* "rm": read-only, and never memory-map (the data is not a file) */
    TIFF *tif = TIFFClientOpenExt("TIFF", "rm", &s, t_read, t_write, t_seek, t_close, t_size,
                                  t_map, t_unmap, opts);
    TIFFOpenOptionsFree(opts);
    if (!tif)
        return px_err_set(err, PX_ECORRUPT, "corrupt TIFF: %s",
                          s.msg[0] ? s.msg : "cannot read the header");
    uint32_t w = 0, h = 0;
    uint16_t orient = ORIENTATION_TOPLEFT;
    int status = PX_OK;
    uint32_t *raster = NULL;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h)) {
        status = px_err_set(err, PX_ECORRUPT, "corrupt TIFF: no image width or length");
        goto done;
    }
    status = px_image_check_size(w, h, max_pixels, "TIFF", err);
    if (status != PX_OK)
        goto done;
    TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &orient);
    if (orient < 1 || orient > 8)
        orient = ORIENTATION_TOPLEFT;
    char why[1024];
    if (!TIFFRGBAImageOK(tif, why)) {
        status = px_err_set(err, PX_EUNSUPPORTED, "TIFF layout not handled: %s", why);
        goto done;
    }
    raster = px_malloc((size_t)w * h * sizeof *raster);
    if (!raster || px_image_alloc(out, (int)w, (int)h, 4) != PX_OK) {
        status = px_err_set(err, PX_ENOMEM, "out of memory for a %ux%u TIFF", (unsigned)w,
                            (unsigned)h);
        goto done;
    }
    /* asking for the file's own orientation gives the rows as stored (see top) */
    if (!TIFFReadRGBAImageOriented(tif, w, h, raster, orient, 0)) {
        status = px_err_set(err, PX_ECORRUPT, "corrupt TIFF: %s",
                            s.msg[0] ? s.msg : "cannot read the pixels");
        goto done;
    }
    int opaque = 1;
    for (uint32_t y = 0; y < h; y++) {
        uint8_t *row = out->px + (size_t)y * out->stride;
        const uint32_t *src = raster + (size_t)y * w;
        for (uint32_t x = 0; x < w; x++) {
            row[4 * x + 0] = (uint8_t)TIFFGetR(src[x]);
            row[4 * x + 1] = (uint8_t)TIFFGetG(src[x]);
            row[4 * x + 2] = (uint8_t)TIFFGetB(src[x]);
            row[4 * x + 3] = (uint8_t)TIFFGetA(src[x]);
            opaque &= row[4 * x + 3] == 255;
        }
    }
    if (opaque) { /* no real alpha: RGB, like the other decoders; packed in
                   * place, front to back (a pixel only moves towards the start) */
        for (size_t i = 0; i < (size_t)w * h; i++)
            memmove(out->px + 3 * i, out->px + 4 * i, 3);
        out->channels = 3;
        out->stride = (size_t)w * 3;
    }
    info->orientation = orient;
    info->stored_w = (int)w;
    info->stored_h = (int)h;
    uint32_t n = 0;
    void *p = NULL;
    if (TIFFGetField(tif, TIFFTAG_XMLPACKET, &n, &p))
        info->had_metadata = 1;
    if (TIFFGetField(tif, TIFFTAG_ICCPROFILE, &n, &p) && px_icc_to_srgb(out, p, n, info) != PX_OK)
        status = px_err_set(err, PX_ENOMEM, "out of memory converting a TIFF's colours to sRGB");

done:
    if (status != PX_OK)
        px_image_free(out);
    free(raster);
    TIFFClose(tif);
    return status;
}

/*
 * The format-independent half of px_image: sniffing, allocation, dispatch to
 * the per-format decoders and encoders, and EXIF orientation (turning a
 * stored image upright by flips and quarter turns).
 *
 * Decoders hand back the image as stored; this file applies the orientation
 * afterwards, so each decoder stays a plain "bytes to pixels" function and
 * the eight orientations are implemented (and tested) once.
 */
#include "image_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

px_format px_image_sniff(const uint8_t *data, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!data)
        return PX_FMT_UNKNOWN;
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return PX_FMT_JPEG;
    if (len >= 8 && memcmp(data, png_sig, 8) == 0)
        return PX_FMT_PNG;
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return PX_FMT_WEBP;
    if (len >= 4 && (memcmp(data, "II*\0", 4) == 0 || memcmp(data, "MM\0*", 4) == 0 ||
                     memcmp(data, "II+\0", 4) == 0 || memcmp(data, "MM\0+", 4) == 0))
        return PX_FMT_TIFF; /* classic and BigTIFF, either byte order */
    if (len >= 6 && (memcmp(data, "GIF87a", 6) == 0 || memcmp(data, "GIF89a", 6) == 0))
        return PX_FMT_GIF;
    /* ISO BMFF: a box "ftyp" first, then the major brand. AVIF by its brands,
     * every other HEIF brand (HEVC, and mif1/msf1 whatever they hold) as HEIF:
     * libheif reads both, the name is only what we report. */
    if (len >= 12 && memcmp(data + 4, "ftyp", 4) == 0) {
        static const char *heif[] = {"heic", "heix", "hevc", "hevx", "heim",
                                     "heis", "hevm", "hevs", "mif1", "msf1"};
        if (memcmp(data + 8, "avif", 4) == 0 || memcmp(data + 8, "avis", 4) == 0)
            return PX_FMT_AVIF;
        for (size_t i = 0; i < sizeof heif / sizeof heif[0]; i++)
            if (memcmp(data + 8, heif[i], 4) == 0)
                return PX_FMT_HEIF;
    }
    return PX_FMT_UNKNOWN;
}

int px_format_writable(px_format f)
{
    return f == PX_FMT_JPEG || f == PX_FMT_PNG || f == PX_FMT_WEBP;
}

px_format px_format_from_path_any(const char *path)
{
    const px_format f = px_format_from_path(path);
    const char *dot = path ? strrchr(path, '.') : NULL;
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (f != PX_FMT_UNKNOWN || !dot || (slash && dot < slash))
        return f;
    if (strcasecmp(dot, ".tif") == 0 || strcasecmp(dot, ".tiff") == 0)
        return PX_FMT_TIFF;
    if (strcasecmp(dot, ".gif") == 0)
        return PX_FMT_GIF;
    if (strcasecmp(dot, ".heic") == 0 || strcasecmp(dot, ".heif") == 0 ||
        strcasecmp(dot, ".hif") == 0)
        return PX_FMT_HEIF;
    if (strcasecmp(dot, ".avif") == 0)
        return PX_FMT_AVIF;
    return PX_FMT_UNKNOWN;
}

px_format px_format_from_path(const char *path)
{
    if (!path)
        return PX_FMT_UNKNOWN;
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        return PX_FMT_UNKNOWN;
    if (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0)
        return PX_FMT_JPEG;
    if (strcasecmp(dot, ".png") == 0)
        return PX_FMT_PNG;
    if (strcasecmp(dot, ".webp") == 0)
        return PX_FMT_WEBP;
    return PX_FMT_UNKNOWN;
}

px_format px_format_parse(const char *name)
{
    if (!name)
        return PX_FMT_UNKNOWN;
    if (*name == '.')
        name++;
    if (strcasecmp(name, "jpg") == 0 || strcasecmp(name, "jpeg") == 0)
        return PX_FMT_JPEG;
    if (strcasecmp(name, "png") == 0)
        return PX_FMT_PNG;
    if (strcasecmp(name, "webp") == 0)
        return PX_FMT_WEBP;
    return PX_FMT_UNKNOWN;
}

const char *px_format_name(px_format f)
{
    switch (f) {
    case PX_FMT_JPEG:
        return "jpeg";
    case PX_FMT_PNG:
        return "png";
    case PX_FMT_WEBP:
        return "webp";
    case PX_FMT_TIFF:
        return "tiff";
    case PX_FMT_GIF:
        return "gif";
    case PX_FMT_HEIF:
        return "heif";
    case PX_FMT_AVIF:
        return "avif";
    default:
        return "unknown";
    }
}

const char *px_format_extension(px_format f)
{
    switch (f) {
    case PX_FMT_JPEG:
        return ".jpg";
    case PX_FMT_PNG:
        return ".png";
    case PX_FMT_WEBP:
        return ".webp";
    case PX_FMT_TIFF:
        return ".tif";
    case PX_FMT_GIF:
        return ".gif";
    case PX_FMT_HEIF:
        return ".heic";
    case PX_FMT_AVIF:
        return ".avif";
    default:
        return "";
    }
}

px_decode_opts px_decode_opts_default(void)
{
    px_decode_opts o;
    o.max_pixels = PX_IMAGE_DEFAULT_MAX_PIXELS;
    o.apply_orientation = 1;
    return o;
}

int px_image_alloc(px_image *img, int w, int h, int channels)
{
    if (!img)
        return PX_EINVAL;
    memset(img, 0, sizeof *img);
    if (w <= 0 || h <= 0 || (channels != 3 && channels != 4))
        return PX_EINVAL;
    size_t stride, total;
    if (px_mul_size((size_t)w, (size_t)channels, &stride) != PX_OK ||
        px_mul_size(stride, (size_t)h, &total) != PX_OK)
        return PX_ELIMIT;
    uint8_t *px = px_calloc(total, 1);
    if (!px)
        return PX_ENOMEM;
    img->w = w;
    img->h = h;
    img->channels = channels;
    img->stride = stride;
    img->px = px;
    return PX_OK;
}

void px_image_free(px_image *img)
{
    if (!img)
        return;
    free(img->px);
    memset(img, 0, sizeof *img);
}

int px_image_copy(const px_image *src, px_image *dst)
{
    if (!src || !dst || !src->px)
        return PX_EINVAL;
    px_image tmp;
    int st = px_image_alloc(&tmp, src->w, src->h, src->channels);
    if (st != PX_OK)
        return st;
    size_t row = (size_t)src->w * (size_t)src->channels;
    for (int y = 0; y < src->h; y++)
        memcpy(tmp.px + (size_t)y * tmp.stride, src->px + (size_t)y * src->stride, row);
    *dst = tmp;
    return PX_OK;
}

int px_image_check_size(uint64_t w, uint64_t h, uint64_t max_pixels, const char *fmt_name,
                        px_err *err)
{
    if (w == 0 || h == 0)
        return px_err_set(err, PX_ECORRUPT, "%s header declares an empty image (%llux%llu)",
                          fmt_name, (unsigned long long)w, (unsigned long long)h);
    /* int fields in px_image; both factors < 2^32 so the product cannot wrap */
    if (w > INT32_MAX / 4 || h > INT32_MAX / 4 || w * h > max_pixels)
        return px_err_set(err, PX_ELIMIT,
                          "%s image is %llux%llu = %llu pixels, over the limit of %llu pixels",
                          fmt_name, (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)(w * h), (unsigned long long)max_pixels);
    return PX_OK;
}

/* px_image_decode, with a JPEG decoded at 1/denom of its size. */
static int decode(const uint8_t *data, size_t len, const px_decode_opts *opts, int denom,
                  px_image *out, px_decode_info *info, px_err *err)
{
    px_decode_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    if (!out)
        return px_err_set(err, PX_EINVAL, "px_image_decode: no output image");
    memset(out, 0, sizeof *out);
    if (!data || len == 0)
        return px_err_set(err, PX_EINVAL, "empty input: 0 bytes of image data");

    px_decode_opts o = opts ? *opts : px_decode_opts_default();
    uint64_t max_pixels = o.max_pixels ? o.max_pixels : PX_IMAGE_DEFAULT_MAX_PIXELS;

    px_format f = px_image_sniff(data, len);
    info->format = f;
    int st;
    switch (f) {
    case PX_FMT_JPEG:
        st = px_jpeg_decode_scaled(data, len, max_pixels, denom, out, info, err);
        break;
    case PX_FMT_PNG:
        st = px_png_decode(data, len, max_pixels, out, info, err);
        break;
    case PX_FMT_WEBP:
        st = px_webp_decode(data, len, max_pixels, out, info, err);
        break;
    case PX_FMT_TIFF:
        st = px_tiff_decode(data, len, max_pixels, out, info, err);
        break;
    case PX_FMT_GIF:
        st = px_gif_decode(data, len, max_pixels, out, info, err);
        break;
    case PX_FMT_HEIF:
    case PX_FMT_AVIF:
        st = px_heif_decode(data, len, max_pixels, out, info, err);
        break;
    default:
        return px_err_set(err, PX_EUNSUPPORTED,
                          "not a JPEG, PNG, WebP, TIFF, GIF, HEIF or AVIF image");
    }
    if (st != PX_OK) {
        px_image_free(out);
        return st;
    }
    if (info->orientation < 1 || info->orientation > 8)
        info->orientation = 1;
    if (o.apply_orientation && info->orientation != 1) {
        st = px_image_apply_orientation(out, info->orientation);
        if (st != PX_OK) {
            px_image_free(out);
            return px_err_set(err, st, "out of memory applying EXIF orientation %d",
                              info->orientation);
        }
    }
    return PX_OK;
}

int px_image_decode(const uint8_t *data, size_t len, const px_decode_opts *opts, px_image *out,
                    px_decode_info *info, px_err *err)
{
    return decode(data, len, opts, 1, out, info, err);
}

int px_image_decode_scaled(const uint8_t *data, size_t len, const px_decode_opts *opts, int denom,
                           px_image *out, px_decode_info *info, int *applied, px_err *err)
{
    if (applied)
        *applied = 1;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        if (out)
            memset(out, 0, sizeof *out);
        return px_err_set(err, PX_EINVAL, "scaled decode: denominator %d is not 1, 2, 4 or 8",
                          denom);
    }
    const int jpeg = px_image_sniff(data, len) == PX_FMT_JPEG;
    const int st = decode(data, len, opts, jpeg ? denom : 1, out, info, err);
    if (st == PX_OK && applied && jpeg)
        *applied = denom;
    return st;
}

int px_image_exif_orientation(const uint8_t *data, size_t len)
{
    switch (px_image_sniff(data, len)) {
    case PX_FMT_JPEG:
        return px_jpeg_exif_orientation(data, len);
    case PX_FMT_PNG:
        return px_png_exif_orientation(data, len);
    case PX_FMT_WEBP:
        return px_webp_exif_orientation(data, len);
    default:
        return 1;
    }
}

/* Mirror each row in place (orientation 2). */
static void flip_h(px_image *img)
{
    int c = img->channels;
    for (int y = 0; y < img->h; y++) {
        uint8_t *row = img->px + (size_t)y * img->stride;
        for (int a = 0, b = img->w - 1; a < b; a++, b--) {
            uint8_t t[4];
            memcpy(t, row + (size_t)a * c, (size_t)c);
            memcpy(row + (size_t)a * c, row + (size_t)b * c, (size_t)c);
            memcpy(row + (size_t)b * c, t, (size_t)c);
        }
    }
}

/* Swap rows top to bottom in place (orientation 4). */
static int flip_v(px_image *img)
{
    size_t n = (size_t)img->w * (size_t)img->channels;
    uint8_t *t = px_malloc(n);
    if (!t)
        return PX_ENOMEM;
    for (int a = 0, b = img->h - 1; a < b; a++, b--) {
        uint8_t *ra = img->px + (size_t)a * img->stride, *rb = img->px + (size_t)b * img->stride;
        memcpy(t, ra, n);
        memcpy(ra, rb, n);
        memcpy(rb, t, n);
    }
    free(t);
    return PX_OK;
}

int px_image_apply_orientation(px_image *img, int o)
{
    if (!img || !img->px || o < 1 || o > 8)
        return PX_EINVAL;
    switch (o) {
    case 1:
        return PX_OK;
    case 2:
        flip_h(img);
        return PX_OK;
    case 3:
        flip_h(img);
        return flip_v(img);
    case 4:
        return flip_v(img);
    default:
        break;
    }
    /* 5..8 swap width and height: write into a new buffer. For a stored pixel
     * (x, y) the upright position (X, Y) is, following the EXIF definitions
     * (row 0 / column 0 of the stored image become which visual side):
     *   5 transpose   X = y        Y = x
     *   6 rotate 90cw X = h-1-y    Y = x
     *   7 transverse  X = h-1-y    Y = w-1-x
     *   8 rotate 90ccw X = y       Y = w-1-x */
    px_image dst;
    int st = px_image_alloc(&dst, img->h, img->w, img->channels);
    if (st != PX_OK)
        return st;
    const int w = img->w, h = img->h, c = img->channels;
    const int flip_x = (o == 6 || o == 7); /* X counts from the right */
    const int flip_y = (o == 7 || o == 8); /* Y counts from the bottom */
    for (int y = 0; y < h; y++) {
        const uint8_t *src = img->px + (size_t)y * img->stride;
        int X = flip_x ? h - 1 - y : y;
        for (int x = 0; x < w; x++) {
            int Y = flip_y ? w - 1 - x : x;
            memcpy(dst.px + (size_t)Y * dst.stride + (size_t)X * c, src + (size_t)x * c, (size_t)c);
        }
    }
    px_image_free(img);
    *img = dst;
    return PX_OK;
}

int px_image_encode(const px_image *img, px_format f, int quality, px_buf *out, px_err *err)
{
    if (!img || !img->px || img->w <= 0 || img->h <= 0 ||
        (img->channels != 3 && img->channels != 4) ||
        img->stride < (size_t)img->w * (size_t)img->channels)
        return px_err_set(err, PX_EINVAL, "encode: invalid image (size, channels or stride)");
    if (!out)
        return px_err_set(err, PX_EINVAL, "encode: no output buffer");
    if (quality < 1 || quality > 100)
        return px_err_set(err, PX_EINVAL, "encode: quality %d outside 1..100", quality);
    switch (f) {
    case PX_FMT_JPEG:
        return px_jpeg_encode(img, quality, out, err);
    case PX_FMT_PNG:
        return px_png_encode(img, out, err);
    case PX_FMT_WEBP:
        return px_webp_encode(img, quality, out, err);
    default:
        return px_err_set(err, PX_EUNSUPPORTED,
                          "encode: unknown output format (want jpeg, png or webp)");
    }
}

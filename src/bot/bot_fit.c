/*
 * Fitting a result into Telegram's upload limits: a photo must be at most
 * 10 MB with width + height at most 10000, a document at most 50 MB
 * (px_bot_fit_limits carries them so that a local Bot API server's larger
 * limits, or a test's smaller ones, can be used instead).
 *
 * How: decode our own output, scale it down first if its sides break the
 * photo rule, then encode as JPEG at falling qualities; when even the lowest
 * quality is too big, scale by the square root of the size ratio (bytes
 * grow roughly with the pixel count) with a margin, and try again. A PNG or
 * WebP document over the limit becomes a JPEG: a lossless file that big
 * cannot shrink enough any other way.
 *
 * px_bot_image_pixels reads an image's size from its header (JPEG SOF, PNG
 * IHDR, WebP VP8/VP8L/VP8X) so the pixel budget can be charged before the
 * decode allocates anything.
 *
 * The downscale is a plain box filter written here: the image module has no
 * resizer, and averaging whole source areas is exactly what a reduction by a
 * non-integer factor of a photo needs (no aliasing, no ringing).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_bot.h"

/* Area-average downscale of src to w x h (w <= src->w, h <= src->h). */
static int downscale(const px_image *src, int w, int h, px_image *dst, px_err *err)
{
    if (px_image_alloc(dst, w, h, src->channels) != PX_OK)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory scaling a %dx%d image", src->w,
                          src->h);
    int ch = src->channels;
    double fx = (double)src->w / w, fy = (double)src->h / h;
    uint32_t *acc = px_calloc((size_t)w * (size_t)ch, sizeof *acc);
    if (!acc) {
        px_image_free(dst);
        return px_err_set(err, PX_ENOMEM, "bot: out of memory scaling a %dx%d image", src->w,
                          src->h);
    }
    for (int y = 0; y < h; y++) {
        int y0 = (int)(y * fy), y1 = (int)((y + 1) * fy);
        if (y1 <= y0)
            y1 = y0 + 1;
        if (y1 > src->h)
            y1 = src->h;
        memset(acc, 0, (size_t)w * (size_t)ch * sizeof *acc);
        uint32_t cnt = 0;
        for (int sy = y0; sy < y1; sy++, cnt++) {
            const uint8_t *row = src->px + (size_t)sy * src->stride;
            for (int x = 0; x < w; x++) {
                int x0 = (int)(x * fx), x1 = (int)((x + 1) * fx);
                if (x1 <= x0)
                    x1 = x0 + 1;
                if (x1 > src->w)
                    x1 = src->w;
                for (int sx = x0; sx < x1; sx++)
                    for (int c = 0; c < ch; c++)
                        acc[(size_t)x * ch + c] += row[(size_t)sx * ch + c];
            }
        }
        uint8_t *out = dst->px + (size_t)y * dst->stride;
        for (int x = 0; x < w; x++) {
            int x0 = (int)(x * fx), x1 = (int)((x + 1) * fx);
            if (x1 <= x0)
                x1 = x0 + 1;
            if (x1 > src->w)
                x1 = src->w;
            uint32_t n = cnt * (uint32_t)(x1 - x0);
            for (int c = 0; c < ch; c++)
                out[(size_t)x * ch + c] = (uint8_t)((acc[(size_t)x * ch + c] + n / 2) / n);
        }
    }
    free(acc);
    return PX_OK;
}

int px_bot_fit(const uint8_t *data, size_t len, int w, int h, const px_bot_fit_limits *lim,
               int photo, px_buf *out, char *note, size_t cap, px_err *err)
{
    if (note && cap)
        note[0] = '\0';
    int sides_ok = !photo || lim->max_sides <= 0 || (int64_t)w + h <= lim->max_sides;
    if (len <= lim->max_bytes && sides_ok)
        return 0;
    px_image img = {0};
    px_decode_opts dopt = px_decode_opts_default();
    int st = px_image_decode(data, len, &dopt, &img, NULL, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "bot: re-reading the result to fit Telegram's limits");
    double scale = 1.0;
    if (!sides_ok)
        scale = (double)lim->max_sides / ((double)img.w + img.h);
    static const int photo_q[] = {85, 75, 65, 55, 45};
    static const int doc_q[] = {95, 90, 80, 70, 60};
    const int *qs = photo ? photo_q : doc_q;
    int q = 0, ow = img.w, oh = img.h;
    st = PX_ELIMIT;
    for (int round = 0; round < 8 && st == PX_ELIMIT; round++) {
        px_image small = {0};
        const px_image *cur = &img;
        ow = (int)floor(img.w * scale), oh = (int)floor(img.h * scale);
        if (ow < 1)
            ow = 1;
        if (oh < 1)
            oh = 1;
        if (scale < 1.0) {
            if ((st = downscale(&img, ow, oh, &small, err)) != PX_OK)
                break;
            cur = &small;
        }
        size_t last = 0;
        st = PX_ELIMIT;
        for (int i = 0; i < 5 && st == PX_ELIMIT; i++) {
            out->len = 0;
            q = qs[i];
            int e = px_image_encode(cur, PX_FMT_JPEG, q, out, err);
            if (e != PX_OK) {
                st = e;
                break;
            }
            last = out->len;
            if (out->len <= lim->max_bytes)
                st = PX_OK;
        }
        px_image_free(&small);
        if (st == PX_ELIMIT && last > 0)
            scale *= sqrt((double)lim->max_bytes / (double)last) * 0.9;
    }
    int iw = img.w, ih = img.h;
    px_image_free(&img);
    if (st == PX_ELIMIT)
        px_err_set(err, PX_ELIMIT, "bot: could not bring the result under %zu bytes",
                   lim->max_bytes);
    if (st != PX_OK) {
        px_buf_free(out);
        return st;
    }
    if (note && cap) {
        char mb[32];
        if (lim->max_bytes >= ((size_t)1 << 20))
            snprintf(mb, sizeof mb, "%zu MB", lim->max_bytes >> 20);
        else
            snprintf(mb, sizeof mb, "%zu KB", lim->max_bytes >> 10);
        if (photo && lim->max_sides > 0)
            snprintf(note, cap,
                     "Telegram takes photos up to %s and %d pixels wide plus high, so I sent it "
                     "as JPEG quality %d",
                     mb, lim->max_sides, q);
        else
            snprintf(note, cap, "Telegram takes %s up to %s, so I sent it as JPEG quality %d",
                     photo ? "photos" : "files", mb, q);
        size_t used = strlen(note);
        if (ow != iw || oh != ih)
            snprintf(note + used, cap - used, ", scaled down from %dx%d to %dx%d", iw, ih, ow, oh);
        used = strlen(note);
        snprintf(note + used, cap - used, ".");
    }
    return 1;
}

static uint32_t le24(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

uint64_t px_bot_image_pixels(const uint8_t *d, size_t n)
{
    if (!d)
        return 0;
    if (n >= 24 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8))
        return (uint64_t)be32(d + 16) * be32(d + 20);
    if (n >= 30 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) {
        if (!memcmp(d + 12, "VP8 ", 4))
            return (uint64_t)((d[26] | (d[27] << 8)) & 0x3fff) * ((d[28] | (d[29] << 8)) & 0x3fff);
        if (!memcmp(d + 12, "VP8L", 4)) {
            uint32_t v = (uint32_t)d[21] | ((uint32_t)d[22] << 8) | ((uint32_t)d[23] << 16) |
                         ((uint32_t)d[24] << 24);
            return (uint64_t)((v & 0x3fff) + 1) * (((v >> 14) & 0x3fff) + 1);
        }
        if (!memcmp(d + 12, "VP8X", 4))
            return (uint64_t)(le24(d + 24) + 1) * (le24(d + 27) + 1);
        return 0;
    }
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return 0;
    /* JPEG: walk the marker segments to the frame header */
    size_t i = 2;
    while (i + 9 < n) {
        if (d[i] != 0xFF) {
            i++;
            continue;
        }
        unsigned m = d[i + 1];
        if (m == 0xFF || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
            i += m == 0xFF ? 1 : 2;
            continue;
        }
        size_t seg = ((size_t)d[i + 2] << 8) | d[i + 3];
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)
            return (uint64_t)(((unsigned)d[i + 5] << 8) | d[i + 6]) *
                   (((unsigned)d[i + 7] << 8) | d[i + 8]);
        i += 2 + seg;
    }
    return 0;
}

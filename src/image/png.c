/*
 * PNG through libpng (the classic read/write API, with a memory reader and a
 * px_buf writer).
 *
 * Decoding: the IHDR size is checked against the pixel cap straight from the
 * bytes before libpng is even started (IHDR must be the first chunk), and
 * again through png_set_user_limits as a second line; the chunk headers are
 * walked too (png_check_chunks) so that no chunk can make libpng allocate
 * more than the file holds or 8 MiB, and png_set_chunk_malloc_max caps what
 * a compressed chunk (zTXt, iCCP) inflates to. libpng's png_error
 * longjmps; ours records the message and lands in the decode function, which
 * returns PX_ECORRUPT. Palette, grey, low bit depths and 16-bit samples are
 * all expanded to 8-bit RGB, tRNS becomes an alpha channel (RGBA out). The
 * eXIf chunk (before or after IDAT) gives the orientation; an iCCP profile
 * is converted to sRGB (icc.c).
 *
 * Encoding: IHDR, IDAT and IEND only. No text, time, gamma, ICC or eXIf chunk
 * is ever set on the write struct, so libpng has nothing else to write.
 */
#include "image_internal.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

/* Ancillary chunks (text, ICC) bigger than this are skipped by libpng. */
#define PX_PNG_CHUNK_MAX (8u << 20)
/* Ancillary chunks kept (text, sPLT, unknown) before libpng ignores the rest. */
#define PX_PNG_CHUNK_COUNT_MAX 256

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int px_png_exif_orientation(const uint8_t *data, size_t len)
{
    /* A plain chunk walk: cheaper than a libpng pass and eXIf may sit after
     * IDAT, where png_read_info would not have reached it. */
    size_t pos = 8;
    while (pos <= len && len - pos >= 12) {
        uint32_t n = be32(data + pos);
        const uint8_t *type = data + pos + 4;
        if (n > len - pos - 12)
            break;
        if (memcmp(type, "eXIf", 4) == 0)
            return px_exif_orientation_from_payload(data + pos + 8, n);
        if (memcmp(type, "IEND", 4) == 0)
            break;
        pos += 12 + (size_t)n;
    }
    return 1;
}

/* libpng 1.6 allocates a tEXt chunk's declared length before reading it,
 * whatever png_set_chunk_malloc_max says (only compressed chunks honour it),
 * so a 1 MB file whose text chunk claims 2 GB made it take 2 GB. The whole
 * file is in memory, so walk the chunk headers first: a chunk that claims
 * more bytes than are left is a truncated file, and any chunk but IDAT over
 * PX_PNG_CHUNK_MAX is refused. What libpng then allocates for one chunk is
 * bounded by both. */
static int png_check_chunks(const uint8_t *data, size_t len, px_err *err)
{
    size_t pos = 8;
    while (len - pos >= 8) {
        const uint32_t n = be32(data + pos);
        const uint8_t *type = data + pos + 4;
        char name[5];
        for (int i = 0; i < 4; i++)
            name[i] = (type[i] >= 'A' && type[i] <= 'z') ? (char)type[i] : '?';
        name[4] = '\0';
        if (n > len - pos - 8 || len - pos - 8 - n < 4)
            return px_err_set(err, PX_ECORRUPT,
                              "corrupt PNG: chunk %s declares %u bytes, only %zu left (truncated "
                              "file)", name, (unsigned)n, len - pos - 8);
        if (n > PX_PNG_CHUNK_MAX && memcmp(type, "IDAT", 4) != 0)
            return px_err_set(err, PX_ELIMIT, "PNG chunk %s has %u bytes, over the %u-byte limit",
                              name, (unsigned)n, PX_PNG_CHUNK_MAX);
        if (memcmp(type, "IEND", 4) == 0)
            break;
        pos += 12 + (size_t)n;
    }
    return PX_OK;
}

/* Lives on the heap so that everything survives libpng's longjmp intact. */
typedef struct pdec {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t len, pos;
    png_bytep *rows;
    char msg[256];
} pdec;

static void on_png_error(png_structp png, png_const_charp msg)
{
    pdec *d = png_get_error_ptr(png);
    snprintf(d->msg, sizeof d->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* library code never prints; warnings are recoverable */
    (void)msg;
}

static void on_png_read(png_structp png, png_bytep dst, size_t n)
{
    pdec *d = png_get_io_ptr(png);
    if (n > d->len - d->pos)
        png_error(png, "PNG data ends early (truncated file)");
    memcpy(dst, d->data + d->pos, n);
    d->pos += n;
}

int px_png_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                  px_decode_info *info, px_err *err)
{
    /* signature (8) + IHDR length/type (8) + IHDR data (13) + CRC (4) */
    if (len < 33 || be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return px_err_set(err, PX_ECORRUPT, "corrupt PNG: missing or short IHDR chunk");
    int st = px_image_check_size(be32(data + 16), be32(data + 20), max_pixels, "PNG", err);
    if (st == PX_OK)
        st = png_check_chunks(data, len, err);
    if (st != PX_OK)
        return st;

    pdec *d = px_calloc(1, sizeof *d);
    if (!d)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the PNG decoder");
    d->data = data;
    d->len = len;
    d->pos = 0;
    int status = PX_OK;
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, on_png_error, on_png_warning);
    if (d->png)
        d->info = png_create_info_struct(d->png);
    if (!d->png || !d->info) {
        status = px_err_set(err, PX_ENOMEM, "out of memory starting the PNG decoder");
        goto done;
    }
    if (setjmp(png_jmpbuf(d->png)) != 0) {
        status = strstr(d->msg, "user limit") ? PX_ELIMIT
                 : strstr(d->msg, "memory")   ? PX_ENOMEM
                                              : PX_ECORRUPT;
        px_err_set(err, status, "corrupt PNG: %s", d->msg);
        goto done;
    }
    png_set_read_fn(d->png, d, on_png_read);
    uint64_t lim = max_pixels < 0x7fffffffu ? max_pixels : 0x7fffffffu;
    png_set_user_limits(d->png, (png_uint_32)lim, (png_uint_32)lim);
    png_set_chunk_malloc_max(d->png, PX_PNG_CHUNK_MAX);
    png_set_chunk_cache_max(d->png, PX_PNG_CHUNK_COUNT_MAX);
    png_read_info(d->png, d->info);

    png_uint_32 w = png_get_image_width(d->png, d->info);
    png_uint_32 h = png_get_image_height(d->png, d->info);
    if (px_image_check_size(w, h, max_pixels, "PNG", err) != PX_OK) {
        status = PX_ELIMIT;
        goto done;
    }
    int color = png_get_color_type(d->png, d->info);
    int depth = png_get_bit_depth(d->png, d->info);
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(d->png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(d->png);
    if (png_get_valid(d->png, d->info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(d->png);
    if (depth == 16)
        png_set_scale_16(d->png); /* rounds, unlike strip_16 */
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);

    int ch = png_get_channels(d->png, d->info);
    if ((ch != 3 && ch != 4) || png_get_rowbytes(d->png, d->info) != (size_t)w * (size_t)ch) {
        status = px_err_set(err, PX_EUNSUPPORTED, "PNG layout not handled (%d channels)", ch);
        goto done;
    }
    status = px_image_alloc(out, (int)w, (int)h, ch);
    if (status == PX_OK)
        d->rows = px_malloc(sizeof *d->rows * h);
    if (status != PX_OK || !d->rows) {
        status =
            px_err_set(err, PX_ENOMEM, "out of memory for a %ux%u PNG", (unsigned)w, (unsigned)h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++)
        d->rows[y] = out->px + (size_t)y * out->stride;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, d->info); /* chunks after IDAT (eXIf, text) land in info too */

    /* iCCP (inflated under the 8 MiB chunk cap): convert to sRGB, since we
     * write no profile */
    png_charp icc_name = NULL;
    int icc_comp = 0;
    png_bytep icc = NULL;
    png_uint_32 icc_len = 0;
    if (png_get_iCCP(d->png, d->info, &icc_name, &icc_comp, &icc, &icc_len) &&
        px_icc_to_srgb(out, icc, icc_len, info) != PX_OK) {
        status = px_err_set(err, PX_ENOMEM, "out of memory converting a PNG's colours to sRGB");
        goto done;
    }

    png_bytep exif = NULL;
    png_uint_32 exif_len = 0;
    if (!png_get_eXIf_1(d->png, d->info, &exif_len, &exif))
        exif_len = 0;
    if (exif && exif_len)
        info->orientation = px_exif_orientation_from_payload(exif, exif_len);
    png_textp text = NULL;
    int ntext = 0;
    png_get_text(d->png, d->info, &text, &ntext);
    if (ntext > 0 || exif_len || png_get_valid(d->png, d->info, PNG_INFO_iCCP) ||
        png_get_valid(d->png, d->info, PNG_INFO_tIME))
        info->had_metadata = 1;
    info->stored_w = (int)w;
    info->stored_h = (int)h;

done:
    if (status != PX_OK)
        px_image_free(out);
    if (d->png)
        png_destroy_read_struct(&d->png, d->info ? &d->info : NULL, NULL);
    free(d->rows);
    free(d);
    return status;
}

/* ---- encoder ---- */

typedef struct penc {
    png_structp png;
    png_infop info;
    px_buf *out;
    char msg[256];
} penc;

static void on_png_write(png_structp png, png_bytep src, size_t n)
{
    penc *e = png_get_io_ptr(png);
    if (px_buf_append(e->out, src, n) != PX_OK)
        png_error(png, "out of memory growing the PNG output");
}

static void on_png_flush(png_structp png)
{
    (void)png;
}

static void on_png_write_error(png_structp png, png_const_charp msg)
{
    penc *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

int px_png_encode(const px_image *img, px_buf *out, px_err *err)
{
    penc *e = px_calloc(1, sizeof *e);
    if (!e)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the PNG encoder");
    const size_t start_len = out->len;
    int status = PX_OK;
    e->out = out;
    e->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, on_png_write_error, on_png_warning);
    if (e->png)
        e->info = png_create_info_struct(e->png);
    if (!e->png || !e->info) {
        status = px_err_set(err, PX_ENOMEM, "out of memory starting the PNG encoder");
        goto done;
    }
    if (setjmp(png_jmpbuf(e->png)) != 0) {
        status = strstr(e->msg, "memory") ? PX_ENOMEM : PX_EINVAL;
        px_err_set(err, status, "PNG encode failed: %s", e->msg);
        out->len = start_len;
        goto done;
    }
    png_set_write_fn(e->png, e, on_png_write, on_png_flush);
    png_set_IHDR(e->png, e->info, (png_uint_32)img->w, (png_uint_32)img->h, 8,
                 img->channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(e->png, e->info);
    for (int y = 0; y < img->h; y++)
        png_write_row(e->png, img->px + (size_t)y * img->stride);
    png_write_end(e->png, NULL); /* NULL: no chunks after IDAT */

done:
    if (e->png)
        png_destroy_write_struct(&e->png, e->info ? &e->info : NULL);
    free(e);
    return status;
}

/*
 * GIF decoding through giflib, from memory. Only the first frame is read: an
 * animated GIF becomes a still of its first frame (docs/image.md), which is
 * what the anonymizer writes out (we write no GIF).
 *
 * How it works: DGifOpen with a read callback over the buffer, then the
 * records are walked by hand (DGifGetRecordType) rather than with DGifSlurp,
 * which would decode and keep every frame of a long animation. A graphics
 * control extension before the first image gives its transparent colour
 * index. The frame is drawn on the logical screen (SWidth x SHeight, the size
 * checked against the pixel cap before any allocation); the part of the
 * screen it does not cover gets the background colour, and with a
 * transparent index in use the result is RGBA, else RGB. Interlaced frames
 * are read in the four GIF passes. GIF has no orientation tag.
 */
#include "image_internal.h"

#include <gif_lib.h>
#include <stdlib.h>
#include <string.h>

typedef struct gsrc {
    const uint8_t *data;
    size_t len, pos;
} gsrc;

static int g_read(GifFileType *gif, GifByteType *buf, int n)
{
    gsrc *s = gif->UserData;
    if (n <= 0)
        return 0;
    size_t k = (size_t)n;
    if (k > s->len - s->pos)
        k = s->len - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

static int gif_fail(GifFileType *gif, px_err *err, const char *what)
{
    const char *why = GifErrorString(gif ? gif->Error : 0);
    return px_err_set(err, PX_ECORRUPT, "corrupt GIF: %s: %s", what, why ? why : "unknown error");
}

/* Reads the records up to the first image descriptor, keeping the
 * transparent index of a graphics control extension seen on the way. */
static int gif_first_image(GifFileType *gif, int *transparent, px_err *err)
{
    *transparent = -1;
    for (;;) {
        GifRecordType t;
        if (DGifGetRecordType(gif, &t) == GIF_ERROR)
            return gif_fail(gif, err, "reading a record");
        if (t == IMAGE_DESC_RECORD_TYPE)
            return DGifGetImageDesc(gif) == GIF_ERROR ? gif_fail(gif, err, "image descriptor")
                                                       : PX_OK;
        if (t == TERMINATE_RECORD_TYPE)
            return px_err_set(err, PX_ECORRUPT, "corrupt GIF: no image in the file");
        if (t != EXTENSION_RECORD_TYPE)
            return px_err_set(err, PX_ECORRUPT, "corrupt GIF: unknown record type");
        int code = 0;
        GifByteType *ext = NULL;
        if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR)
            return gif_fail(gif, err, "extension");
        if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) {
            GraphicsControlBlock gcb;
            if (DGifExtensionToGCB(ext[0], ext + 1, &gcb) == GIF_OK)
                *transparent = gcb.TransparentColor;
        }
        while (ext)
            if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR)
                return gif_fail(gif, err, "extension");
    }
}

/* Decodes the frame's indices into rows of canvas pixels (channels 3 or 4). */
static int gif_draw(GifFileType *gif, const ColorMapObject *cmap, int transparent, px_image *out,
                    px_err *err)
{
    const GifImageDesc *d = &gif->Image;
    GifPixelType *line = px_malloc((size_t)d->Width);
    if (!line)
        return px_err_set(err, PX_ENOMEM, "out of memory decoding a GIF");
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    const int passes = d->Interlace ? 4 : 1;
    for (int p = 0; p < passes; p++) {
        for (int y = d->Interlace ? start[p] : 0; y < d->Height; y += d->Interlace ? step[p] : 1) {
            if (DGifGetLine(gif, line, d->Width) == GIF_ERROR) {
                free(line);
                return gif_fail(gif, err, "image data");
            }
            const int cy = d->Top + y;
            if (cy < 0 || cy >= out->h)
                continue; /* a frame may stick out of the screen: clip it */
            uint8_t *row = out->px + (size_t)cy * out->stride;
            for (int x = 0; x < d->Width; x++) {
                const int cx = d->Left + x;
                if (cx < 0 || cx >= out->w)
                    continue;
                uint8_t *px = row + (size_t)cx * (size_t)out->channels;
                const int i = line[x];
                if (i == transparent) {
                    if (out->channels == 4)
                        px[3] = 0;
                    continue;
                }
                const GifColorType c = i < cmap->ColorCount ? cmap->Colors[i] : cmap->Colors[0];
                px[0] = c.Red, px[1] = c.Green, px[2] = c.Blue;
                if (out->channels == 4)
                    px[3] = 255;
            }
        }
    }
    free(line);
    return PX_OK;
}

int px_gif_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                  px_decode_info *info, px_err *err)
{
    gsrc s = {.data = data, .len = len, .pos = 0};
    int e = 0;
    GifFileType *gif = DGifOpen(&s, g_read, &e);
    if (!gif) {
        const char *why = GifErrorString(e);
        return px_err_set(err, e == D_GIF_ERR_NOT_ENOUGH_MEM ? PX_ENOMEM : PX_ECORRUPT,
                          "corrupt GIF: %s", why ? why : "cannot read the header");
    }
    int transparent = -1;
    int status = px_image_check_size((uint64_t)(gif->SWidth > 0 ? gif->SWidth : 0),
                                     (uint64_t)(gif->SHeight > 0 ? gif->SHeight : 0), max_pixels,
                                     "GIF", err);
    if (status == PX_OK)
        status = gif_first_image(gif, &transparent, err);
    const ColorMapObject *cmap = gif->Image.ColorMap ? gif->Image.ColorMap : gif->SColorMap;
    if (status == PX_OK && (!cmap || cmap->ColorCount <= 0 || !cmap->Colors))
        status = px_err_set(err, PX_ECORRUPT, "corrupt GIF: no colour table for the first frame");
    if (status == PX_OK && (gif->Image.Width <= 0 || gif->Image.Height <= 0 ||
                            (uint64_t)gif->Image.Width * (uint64_t)gif->Image.Height >
                                (uint64_t)gif->SWidth * (uint64_t)gif->SHeight * 4))
        status = px_err_set(err, PX_ECORRUPT, "corrupt GIF: first frame is %dx%d on a %dx%d "
                            "screen", gif->Image.Width, gif->Image.Height, gif->SWidth,
                            gif->SHeight);
    if (status == PX_OK &&
        px_image_alloc(out, gif->SWidth, gif->SHeight, transparent >= 0 ? 4 : 3) != PX_OK)
        status = px_err_set(err, PX_ENOMEM, "out of memory for a %dx%d GIF", gif->SWidth,
                            gif->SHeight);
    if (status == PX_OK) {
        /* what the frame does not cover: the background colour (or clear) */
        const ColorMapObject *g = gif->SColorMap;
        GifColorType bg = {0, 0, 0};
        if (g && gif->SBackGroundColor >= 0 && gif->SBackGroundColor < g->ColorCount)
            bg = g->Colors[gif->SBackGroundColor];
        for (int y = 0; y < out->h; y++)
            for (int x = 0; x < out->w; x++) {
                uint8_t *px = out->px + (size_t)y * out->stride + (size_t)x * out->channels;
                px[0] = bg.Red, px[1] = bg.Green, px[2] = bg.Blue;
                if (out->channels == 4)
                    px[3] = 0;
            }
        status = gif_draw(gif, cmap, transparent, out, err);
    }
    if (status == PX_OK) {
        info->orientation = 1;
        info->stored_w = out->w;
        info->stored_h = out->h;
    } else {
        px_image_free(out);
    }
    DGifCloseFile(gif, &e);
    return status;
}

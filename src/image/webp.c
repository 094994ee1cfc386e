/*
 * WebP through libwebp: WebPGetFeatures reads the header (size, alpha,
 * animation) so the pixel cap is checked before anything is allocated, then
 * WebPDecodeRGB(A)Into decodes straight into our buffer. The container's EXIF
 * chunk (for orientation) and its ICCP/XMP flags come from the demux API; an
 * ICCP profile is converted to sRGB (icc.c).
 *
 * Encoding uses the simple API (WebPEncodeRGB/RGBA, or the lossless variants
 * at quality 100). It only ever writes the bitstream (VP8/VP8L, plus ALPH in a
 * VP8X wrapper for lossy alpha): no EXIF, XMP or ICCP chunk can appear.
 */
#include "image_internal.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/encode.h>

/* Reads the container's flags and EXIF orientation; quietly does nothing
 * when the demuxer refuses the data (the decoder reports real damage). */
static void webp_metadata(const uint8_t *data, size_t len, int *orientation, int *had_metadata)
{
    WebPData wd = {data, len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (!dmx)
        return;
    uint32_t flags = WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS);
    if (had_metadata && (flags & (ICCP_FLAG | EXIF_FLAG | XMP_FLAG)))
        *had_metadata = 1;
    WebPChunkIterator it;
    if ((flags & EXIF_FLAG) && WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
        *orientation = px_exif_orientation_from_payload(it.chunk.bytes, it.chunk.size);
        WebPDemuxReleaseChunkIterator(&it);
    }
    WebPDemuxDelete(dmx);
}

/* The ICCP chunk's profile, converted to sRGB (icc.c). PX_OK or PX_ENOMEM. */
static int webp_icc(const uint8_t *data, size_t len, px_image *out, px_decode_info *info)
{
    WebPData wd = {data, len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (!dmx)
        return PX_OK;
    int st = PX_OK;
    WebPChunkIterator it;
    if ((WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & ICCP_FLAG) &&
        WebPDemuxGetChunk(dmx, "ICCP", 1, &it)) {
        st = px_icc_to_srgb(out, it.chunk.bytes, it.chunk.size, info);
        WebPDemuxReleaseChunkIterator(&it);
    }
    WebPDemuxDelete(dmx);
    return st;
}

int px_webp_exif_orientation(const uint8_t *data, size_t len)
{
    int o = 1;
    webp_metadata(data, len, &o, NULL);
    return o;
}

int px_webp_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err)
{
    WebPBitstreamFeatures f;
    VP8StatusCode vs = WebPGetFeatures(data, len, &f);
    if (vs == VP8_STATUS_NOT_ENOUGH_DATA)
        return px_err_set(err, PX_ECORRUPT, "corrupt WebP: header is truncated");
    if (vs == VP8_STATUS_UNSUPPORTED_FEATURE)
        return px_err_set(err, PX_EUNSUPPORTED, "WebP uses a feature libwebp does not support");
    if (vs != VP8_STATUS_OK)
        return px_err_set(err, PX_ECORRUPT, "corrupt WebP: bad header (libwebp status %d)",
                          (int)vs);
    int st = px_image_check_size((uint64_t)(f.width > 0 ? f.width : 0),
                                 (uint64_t)(f.height > 0 ? f.height : 0), max_pixels, "WebP", err);
    if (st != PX_OK)
        return st;
    if (f.has_animation)
        return px_err_set(err, PX_EUNSUPPORTED, "animated WebP is not supported");

    int ch = f.has_alpha ? 4 : 3;
    st = px_image_alloc(out, f.width, f.height, ch);
    if (st != PX_OK)
        return px_err_set(err, st, "out of memory for a %dx%d WebP", f.width, f.height);
    size_t size = out->stride * (size_t)out->h;
    uint8_t *r = ch == 4 ? WebPDecodeRGBAInto(data, len, out->px, size, (int)out->stride)
                         : WebPDecodeRGBInto(data, len, out->px, size, (int)out->stride);
    if (!r) {
        px_image_free(out);
        return px_err_set(err, PX_ECORRUPT, "corrupt WebP: bitstream is damaged or truncated");
    }
    webp_metadata(data, len, &info->orientation, &info->had_metadata);
    info->stored_w = f.width;
    info->stored_h = f.height;
    if (webp_icc(data, len, out, info) != PX_OK) {
        px_image_free(out);
        return px_err_set(err, PX_ENOMEM, "out of memory converting a WebP's colours to sRGB");
    }
    return PX_OK;
}

int px_webp_encode(const px_image *img, int quality, px_buf *out, px_err *err)
{
    if (img->w > WEBP_MAX_DIMENSION || img->h > WEBP_MAX_DIMENSION)
        return px_err_set(err, PX_ELIMIT, "WebP cannot store %dx%d (max %d pixels a side)", img->w,
                          img->h, WEBP_MAX_DIMENSION);
    if (img->stride > (size_t)INT32_MAX)
        return px_err_set(err, PX_ELIMIT, "WebP encode: row stride too large");
    uint8_t *enc = NULL;
    size_t n;
    int stride = (int)img->stride;
    if (quality >= 100)
        n = img->channels == 4 ? WebPEncodeLosslessRGBA(img->px, img->w, img->h, stride, &enc)
                               : WebPEncodeLosslessRGB(img->px, img->w, img->h, stride, &enc);
    else
        n = img->channels == 4
                ? WebPEncodeRGBA(img->px, img->w, img->h, stride, (float)quality, &enc)
                : WebPEncodeRGB(img->px, img->w, img->h, stride, (float)quality, &enc);
    if (n == 0 || !enc) {
        WebPFree(enc);
        return px_err_set(err, PX_ENOMEM, "WebP encode of a %dx%d image failed", img->w, img->h);
    }
    int st = px_buf_append(out, enc, n);
    WebPFree(enc);
    if (st != PX_OK)
        return px_err_set(err, st, "out of memory storing a %zu-byte WebP", n);
    return PX_OK;
}

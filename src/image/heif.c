/*
 * HEIF (HEIC: iPhone photos, HEVC inside) and AVIF (AV1 inside) decoding
 * through libheif, from memory. The primary image is read (what a viewer
 * shows); thumbnails, depth maps and the other images of a burst are not.
 *
 * How it works: the container is parsed from the caller's buffer without a
 * copy, the primary image's size (after its transformations) is checked
 * against the pixel cap before anything is decoded, and libheif decodes to
 * interleaved 8-bit RGB or RGBA (HDR samples scaled down). Decoding runs on
 * the calling thread (max_decoding_threads 0): the anonymizer already runs
 * one file per core. HEIF carries its orientation as transformation boxes
 * (irot, imir) that libheif applies while decoding, so the image comes back
 * upright and orientation is reported as 1; an EXIF Orientation tag inside a
 * HEIF is, per the format, not authoritative and is not applied again. An
 * ICC profile is converted to sRGB (icc.c).
 */
#include "image_internal.h"

#include <libheif/heif.h>
#include <stdlib.h>
#include <string.h>

/* libheif's own cap on a side (its security limit), beside our pixel cap. */
#define PX_HEIF_MAX_SIDE 65535

static int heif_status(const struct heif_error *e)
{
    if (e->code == heif_error_Memory_allocation_error)
        return PX_ENOMEM;
    if (e->subcode == heif_suberror_Security_limit_exceeded)
        return PX_ELIMIT;
    if (e->code == heif_error_Unsupported_feature || e->code == heif_error_Unsupported_filetype ||
        e->code == heif_error_Decoder_plugin_error)
        return PX_EUNSUPPORTED;
    return PX_ECORRUPT;
}

/* An ICC profile (colr box of type prof or rICC) converted to sRGB; an nclx
 * colr box is applied by libheif itself when it makes RGB. */
static int heif_icc(const struct heif_image_handle *handle, px_image *out, px_decode_info *info,
                    const char *kind, px_err *err)
{
    const enum heif_color_profile_type t = heif_image_handle_get_color_profile_type(handle);
    if (t != heif_color_profile_type_prof && t != heif_color_profile_type_rICC) {
        info->had_metadata |= t != heif_color_profile_type_not_present;
        return PX_OK;
    }
    const size_t n = heif_image_handle_get_raw_color_profile_size(handle);
    uint8_t *icc = n ? px_malloc(n) : NULL;
    int st = PX_OK;
    if (n && !icc)
        st = PX_ENOMEM;
    else if (icc && heif_image_handle_get_raw_color_profile(handle, icc).code == heif_error_Ok)
        st = px_icc_to_srgb(out, icc, n, info);
    free(icc);
    return st == PX_OK ? PX_OK
                       : px_err_set(err, st, "out of memory converting a %s's colours to sRGB",
                                    kind);
}

int px_heif_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err)
{
    const char *kind = info->format == PX_FMT_AVIF ? "AVIF" : "HEIF";
    struct heif_context *ctx = heif_context_alloc();
    if (!ctx)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the %s decoder", kind);
    heif_context_set_maximum_image_size_limit(ctx, PX_HEIF_MAX_SIDE);
    heif_context_set_max_decoding_threads(ctx, 0);
    struct heif_image_handle *handle = NULL;
    struct heif_image *img = NULL;
    struct heif_decoding_options *dopts = NULL;
    int status = PX_OK;
    struct heif_error e = heif_context_read_from_memory_without_copy(ctx, data, len, NULL);
    if (e.code == heif_error_Ok)
        e = heif_context_get_primary_image_handle(ctx, &handle);
    if (e.code != heif_error_Ok) {
        status = px_err_set(err, heif_status(&e), "%s %s: %s",
                            heif_status(&e) == PX_ECORRUPT ? "corrupt" : "cannot read", kind,
                            e.message ? e.message : "unknown error");
        goto done;
    }
    const int w = heif_image_handle_get_width(handle), h = heif_image_handle_get_height(handle);
    status = px_image_check_size((uint64_t)(w > 0 ? w : 0), (uint64_t)(h > 0 ? h : 0), max_pixels,
                                 kind, err);
    if (status != PX_OK)
        goto done;
    const int alpha = heif_image_handle_has_alpha_channel(handle) != 0;
    dopts = heif_decoding_options_alloc();
    if (!dopts) {
        status = px_err_set(err, PX_ENOMEM, "out of memory decoding a %dx%d %s", w, h, kind);
        goto done;
    }
    dopts->convert_hdr_to_8bit = 1;
    e = heif_decode_image(handle, &img, heif_colorspace_RGB,
                          alpha ? heif_chroma_interleaved_RGBA : heif_chroma_interleaved_RGB,
                          dopts);
    if (e.code != heif_error_Ok) {
        status = px_err_set(err, heif_status(&e), "%s %s: %s",
                            heif_status(&e) == PX_ECORRUPT ? "corrupt" : "cannot decode", kind,
                            e.message ? e.message : "unknown error");
        goto done;
    }
    int stride = 0;
    const uint8_t *plane = heif_image_get_plane_readonly(img, heif_channel_interleaved, &stride);
    const int iw = heif_image_get_width(img, heif_channel_interleaved);
    const int ih = heif_image_get_height(img, heif_channel_interleaved);
    const int ch = alpha ? 4 : 3;
    if (!plane || iw != w || ih != h || stride < w * ch ||
        heif_image_get_bits_per_pixel_range(img, heif_channel_interleaved) != 8) {
        status = px_err_set(err, PX_EUNSUPPORTED, "%s decoded to an unexpected layout", kind);
        goto done;
    }
    if (px_image_alloc(out, w, h, ch) != PX_OK) {
        status = px_err_set(err, PX_ENOMEM, "out of memory for a %dx%d %s", w, h, kind);
        goto done;
    }
    for (int y = 0; y < h; y++)
        memcpy(out->px + (size_t)y * out->stride, plane + (size_t)y * (size_t)stride,
               (size_t)w * (size_t)ch);
    info->orientation = 1; /* irot/imir already applied (see top) */
    info->stored_w = w;
    info->stored_h = h;
    heif_item_id ids[1];
    if (heif_image_handle_get_list_of_metadata_block_IDs(handle, NULL, ids, 1) > 0)
        info->had_metadata = 1;
    status = heif_icc(handle, out, info, kind, err);

done:
    if (status != PX_OK)
        px_image_free(out);
    heif_decoding_options_free(dopts);
    heif_image_release(img);
    heif_image_handle_release(handle);
    heif_context_free(ctx);
    return status;
}

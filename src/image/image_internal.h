/*
 * Private glue between the files of the image module: the per-format
 * decoders/encoders (jpeg.c, png.c, webp.c; decoders only: tiff.c, gif.c,
 * heif.c) and the EXIF reader (exif.c) that
 * image.c dispatches to. Nothing here is part of the public contract.
 */
#ifndef PX_IMAGE_INTERNAL_H
#define PX_IMAGE_INTERNAL_H

#include "px_image.h"

/* Default pixel cap when px_decode_opts.max_pixels is 0 (100 megapixels). */
#define PX_IMAGE_DEFAULT_MAX_PIXELS 100000000ull

/* Per-format decoders. They fill *out (stored orientation, not yet rotated),
 * info->orientation/stored size/had_metadata, and return a PX_* status with
 * err set. On failure *out is left zeroed. max_pixels is already resolved. */
/* JPEG, at 1/denom of the size (denom 1, 2, 4 or 8; libjpeg-turbo scales in
 * the inverse DCT); info->stored_w/h stay the full stored size. */
int px_jpeg_decode_scaled(const uint8_t *data, size_t len, uint64_t max_pixels, int denom,
                          px_image *out, px_decode_info *info, px_err *err);
int px_png_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                  px_decode_info *info, px_err *err);
int px_webp_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err);
int px_tiff_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err);
int px_gif_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                  px_decode_info *info, px_err *err);
/* HEIF and AVIF; info->format says which (for messages). */
int px_heif_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                   px_decode_info *info, px_err *err);

int px_jpeg_encode(const px_image *img, int quality, px_buf *out, px_err *err);
int px_png_encode(const px_image *img, px_buf *out, px_err *err);
int px_webp_encode(const px_image *img, int quality, px_buf *out, px_err *err);

/* Orientation (1..8) from an EXIF payload: either "Exif\0\0" followed by a
 * TIFF header (JPEG APP1) or a bare TIFF header (PNG eXIf, WebP EXIF chunk).
 * 1 when absent, out of range or unreadable. */
int px_exif_orientation_from_payload(const uint8_t *data, size_t len);

/* Orientation read from the EXIF of each container without decoding pixels. */
int px_jpeg_exif_orientation(const uint8_t *data, size_t len);
int px_png_exif_orientation(const uint8_t *data, size_t len);
int px_webp_exif_orientation(const uint8_t *data, size_t len);

/* Converts img (RGB or RGBA) in place from the ICC profile icc[len] to sRGB
 * and sets info->icc (1 converted, -1 profile unusable and ignored) and
 * info->had_metadata; no profile (NULL/short) is a no-op. PX_OK, or
 * PX_ENOMEM when lcms2 could not start. (icc.c) */
int px_icc_to_srgb(px_image *img, const uint8_t *icc, size_t len, px_decode_info *info);

/* 1 when px_icc_to_srgb would convert with this profile and the conversion
 * moves no colour of a 6x6x6 cube (0, 51, ..., 255) by more than one level:
 * an sRGB profile in effect (cameras embed IEC 61966-2.1). Else 0. (icc.c) */
int px_icc_is_srgb(const uint8_t *icc, size_t len);

/* Checks w x h against the cap; PX_OK or PX_ELIMIT/PX_ECORRUPT with err set. */
int px_image_check_size(uint64_t w, uint64_t h, uint64_t max_pixels, const char *fmt_name,
                        px_err *err);

#endif

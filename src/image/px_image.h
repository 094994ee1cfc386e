/*
 * px_image: decoding and encoding (JPEG via libjpeg-turbo, PNG via libpng,
 * WebP via libwebp), decoding only of TIFF (libtiff), GIF (giflib) and
 * HEIF/AVIF (libheif), EXIF orientation (libexif), sampling into network
 * input tensors, and the concealment effects used to hide faces.
 *
 * Images in memory are 8-bit interleaved RGB (3 channels) or RGBA (4, when
 * the source had alpha), rows of stride bytes, always upright after decoding
 * (EXIF orientation applied). px_image_encode writes pixels only: no EXIF, XMP,
 * IPTC, ICC profile, comments or text chunks ever reach the output (what the
 * anonymizer needs). px_image_encode_meta adds two texts of our own and
 * nothing else (what generated pool files need); px_image_meta_read reads
 * them back.
 *
 * All functions are thread-safe on distinct images. Decoders treat their input
 * as hostile: size limits are checked before any pixel buffer is allocated,
 * truncated/corrupt data is PX_ECORRUPT, never a crash or a longjmp escaping.
 */
#ifndef PX_IMAGE_H
#define PX_IMAGE_H

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_image {
    int w, h;
    int channels;  /* 3 (RGB) or 4 (RGBA) */
    size_t stride; /* bytes per row, >= w*channels */
    uint8_t *px;   /* owned; free with px_image_free */
} px_image;

/* The formats we decode. JPEG, PNG and WebP are also written; TIFF, GIF,
 * HEIF (HEIC) and AVIF are read only (px_format_writable says which). */
typedef enum px_format {
    PX_FMT_UNKNOWN = 0,
    PX_FMT_JPEG,
    PX_FMT_PNG,
    PX_FMT_WEBP,
    PX_FMT_TIFF, /* first page only */
    PX_FMT_GIF,  /* first frame only */
    PX_FMT_HEIF, /* HEIC and other HEIF brands: the primary image */
    PX_FMT_AVIF, /* the primary image */
} px_format;

/* Format from magic bytes, any format we decode (PX_FMT_UNKNOWN if none matches). */
px_format px_image_sniff(const uint8_t *data, size_t len);
/* 1 for the formats px_image_encode writes (JPEG, PNG, WebP), else 0. */
int px_format_writable(px_format f);
/* Format from a path's extension, for the formats we write only (.jpg .jpeg
 * .png .webp, any case), or UNKNOWN: it names outputs. */
px_format px_format_from_path(const char *path);
/* Like px_format_from_path, for every format we decode (also .tif .tiff .gif
 * .heic .heif .avif): it picks inputs. */
px_format px_format_from_path_any(const char *path);
/* "jpeg", "png", "webp", "tiff", "gif", "heif", "avif", "unknown" */
const char *px_format_name(px_format f);
/* ".jpg", ".png", ".webp", ".tif", ".gif", ".heic", ".avif", "" */
const char *px_format_extension(px_format f);
/* Format from a name as a user types it: "png", "jpg" or "jpeg", "webp" (any case,
 * a leading dot allowed), else PX_FMT_UNKNOWN. */
px_format px_format_parse(const char *name);

typedef struct px_decode_opts {
    uint64_t max_pixels;   /* refuse images with more pixels than this (0: 100 megapixels) */
    int apply_orientation; /* apply EXIF Orientation (1 by default via px_decode_opts_default) */
} px_decode_opts;
px_decode_opts px_decode_opts_default(void);

typedef struct px_decode_info {
    px_format format;
    int orientation;        /* EXIF orientation found (1..8), 1 when absent or unreadable */
    int stored_w, stored_h; /* size as stored, before orientation */
    int had_metadata;       /* EXIF/XMP/ICC/comment/text seen in the input (dropped on output) */
    int icc;                /* embedded ICC profile: 1 pixels converted from it to sRGB, -1 one
                             * was present but unusable (ignored: pixels taken as sRGB), 0 none */
} px_decode_info;

/* Decodes JPEG/PNG/WebP/TIFF/GIF/HEIF/AVIF from memory into *out (upright
 * if opts says so: EXIF orientation for JPEG/PNG/WebP, the Orientation tag
 * for TIFF, irot/imir for HEIF/AVIF; GIF has none), in sRGB: an embedded RGB
 * ICC profile is converted from with lcms2 (info->icc), since the encoders
 * write no profile.
 * Errors: PX_EUNSUPPORTED (not an image we read), PX_ELIMIT (too many pixels,
 * checked from the header before allocating), PX_ECORRUPT (damaged/truncated),
 * PX_ENOMEM, PX_EINVAL (empty input). err names what is wrong but not the
 * file (the caller adds it). info may be NULL. On error *out is zeroed and
 * nothing needs freeing. */
int px_image_decode(const uint8_t *data, size_t len, const px_decode_opts *opts, px_image *out,
                    px_decode_info *info, px_err *err);

/* Like px_image_decode, but a JPEG comes out at 1/denom of its size (denom 1,
 * 2, 4 or 8): libjpeg-turbo scales in the inverse DCT, so a 1/4 decode of a
 * 12 MP photo costs a fraction of a full one (docs/image.md). Meant for
 * coarse detection passes. The stored image of W x H pixels becomes
 * ceil(W/denom) x ceil(H/denom), then the orientation is applied as opts
 * says; info->stored_w/h stay the full stored size, so a coordinate x found
 * on the result maps back by x * stored_w / (its stored-orientation width).
 * Other formats are decoded at full size. *applied (may be NULL) is the
 * denominator used: denom for a JPEG, 1 otherwise and on error. The pixel
 * cap applies to the full size. Errors: those of px_image_decode, and
 * PX_EINVAL for a denom other than 1, 2, 4, 8. Thread-safe. */
int px_image_decode_scaled(const uint8_t *data, size_t len, const px_decode_opts *opts, int denom,
                           px_image *out, px_decode_info *info, int *applied, px_err *err);

/* EXIF orientation (1..8) of a JPEG/PNG/WebP buffer, 1 when absent or corrupt. */
int px_image_exif_orientation(const uint8_t *data, size_t len);

/* Rotates/flips img in place so that an image stored with EXIF orientation o
 * becomes upright (o in 1..8; 1 is a no-op). PX_ENOMEM or PX_EINVAL. */
int px_image_apply_orientation(px_image *img, int o);

/* Encodes to f, pixels only (see top). quality 1..100 for JPEG and lossy WebP
 * (WebP quality 100 means lossless; the colour of fully transparent pixels is
 * not kept). RGBA to JPEG is composited on white. Appends to *out; caller
 * frees it; on failure out->len is unchanged. Errors: PX_EINVAL (bad image or
 * quality), PX_EUNSUPPORTED (format), PX_ELIMIT (JPEG > 65500 or WebP > 16383
 * px a side), PX_ENOMEM. */
int px_image_encode(const px_image *img, px_format f, int quality, px_buf *out, px_err *err);

/* ---- JPEG in, JPEG out: only the changed blocks re-encoded ----
 * A fingerprint of an image's 8x8 pixel tiles, taken before it is changed
 * (concealed), so that px_image_encode_jpeg_patched can tell which tiles
 * changed without being told where: every tile whose pixels differ is
 * re-encoded, whoever changed it. */
typedef struct px_image_print {
    int w, h;             /* size of the image it was taken from */
    int tiles_x, tiles_y; /* ceil(w/8), ceil(h/8) */
    uint64_t *tile;       /* (tiles_y, tiles_x) 64-bit hashes of the tiles' pixels, row-major */
} px_image_print;

/* Takes img's fingerprint into *p (free with px_image_print_free). PX_OK,
 * PX_EINVAL (no image) or PX_ENOMEM (p zeroed then). Reads every pixel once:
 * 1.5-4 ms per megapixel on the (busy) build machine. Thread-safe. */
int px_image_print_take(const px_image *img, px_image_print *p, px_err *err);
void px_image_print_free(px_image_print *p); /* zeroes *p; safe on a zeroed print */

/* How px_image_encode_jpeg_patched wrote its output. */
typedef struct px_jpeg_patch_info {
    int lossless;          /* 1: DCT blocks of unchanged tiles copied from the input, the
                            * changed ones re-encoded with the input's quantisation tables;
                            * 0: the whole image was encoded afresh (px_image_encode) */
    char why[128];         /* when lossless is 0: why the copy could not apply */
    long blocks;           /* lossless: DCT blocks in the image, all components */
    long blocks_reencoded; /* lossless: how many of them were re-encoded */
} px_jpeg_patch_info;

/* Writes img, the decoded (and since changed) pixels of the JPEG jpeg[len],
 * as a JPEG that keeps the input's DCT coefficients wherever img still
 * equals the decoded input: the blocks whose 8x8 pixel tiles (per
 * component, so a 4:2:0 chroma block spans 2x2 tiles) changed since
 * `before` was taken are re-encoded from img (forward DCT, quantised with
 * the input's own tables), every other block is copied bit for bit. No
 * generation loss outside the changed areas, and faster than encoding
 * afresh. No metadata is copied: the output carries a JFIF APP0 and the
 * tables, frame and scans only (progressive stays progressive, arithmetic
 * coding becomes Huffman). dinfo is what px_image_decode reported for
 * jpeg; an EXIF orientation (img is upright) is applied to the blocks
 * themselves (mirrored, transposed), which is exact. Where the copy cannot
 * apply, img is encoded afresh at `quality` exactly as px_image_encode does
 * and info->why says why: pixels converted from an ICC profile (not sRGB
 * itself: an sRGB profile's conversion moves no colour by more than a
 * rounding, so its blocks are copied), an
 * orientation that mirrors a side which is not whole MCUs (e.g. 6 on a
 * 4:2:0 image whose height is not a multiple of 16), a colour space other
 * than YCbCr or grey (CMYK, YCCK, RGB), sampling factors that are not whole
 * multiples of each other, 12-bit samples, an image or fingerprint of
 * another size, RGBA pixels.
 * Appends to *out (caller frees; on failure out->len is unchanged). Errors:
 * those of px_image_encode, PX_EINVAL for missing arguments. info may be
 * NULL. Thread-safe. */
int px_image_encode_jpeg_patched(const uint8_t *jpeg, size_t len, const px_decode_info *dinfo,
                                 const px_image *img, const px_image_print *before, int quality,
                                 px_buf *out, px_jpeg_patch_info *info, px_err *err);

/* ---- Text metadata of generated images ----
 * Two texts ride along with an image, each where other tools look for it:
 *  - parameters: the AUTOMATIC1111 "parameters" text (prompt, "Negative
 *    prompt:", "Steps: .., Seed: ..") that image viewers and web UIs show.
 *    PNG: tEXt chunk "parameters". JPEG and WebP: EXIF UserComment with the
 *    "UNICODE\0" prefix and UTF-16BE text in a big-endian TIFF block, as
 *    AUTOMATIC1111 writes it (JPEG APP1 "Exif"; WebP "EXIF" chunk).
 *  - json: our own JSON record. PNG: iTXt chunk "pixpipe". JPEG and WebP: an
 *    XMP packet with one property pixpipe:json in the namespace
 *    urn:pixpipe:meta:1, XML-escaped (JPEG APP1 XMP; WebP "XMP " chunk). */
typedef struct px_image_meta {
    const char *parameters; /* UTF-8; NULL: none */
    const char *json;       /* UTF-8; NULL: none */
} px_image_meta;

/* Which of the two texts to read back. */
typedef enum px_image_meta_key {
    PX_META_PARAMETERS = 0, /* the AUTOMATIC1111 "parameters" text */
    PX_META_JSON,           /* our JSON ("pixpipe") */
} px_image_meta_key;

/* Encodes img (RGB or RGBA) as f with the texts of meta (NULL or both fields
 * NULL: same as px_image_encode). quality as for px_image_encode (PNG ignores
 * it and is written fast, zlib level 1 with the up filter: pool files are
 * rendered, smooth images where that stays within ~10% of level 6). Appends
 * to *out (caller frees); on failure out->len is unchanged. Errors: those of
 * px_image_encode, and PX_ELIMIT when a JPEG text does not fit an APP1
 * segment (64 KiB). Thread-safe. */
int px_image_encode_meta(const px_image *img, px_format f, int quality, const px_image_meta *meta,
                         px_buf *out, px_err *err);

/* Reads the text `key` from an encoded PNG, JPEG or WebP (see above). On PX_OK
 * *value is a malloc'd NUL-terminated string the caller frees; otherwise
 * *value is NULL and the status is PX_ENOTFOUND (no such text),
 * PX_EUNSUPPORTED (not one of the three formats), PX_ECORRUPT (a chunk,
 * segment or TIFF offset runs past the data), PX_EINVAL or PX_ENOMEM. The
 * data is treated as hostile: every offset is checked against len.
 * Thread-safe. */
int px_image_meta_read(const uint8_t *data, size_t len, px_image_meta_key key, char **value,
                       px_err *err);

/* Allocates a w x h image with `channels` channels, zero-filled. */
int px_image_alloc(px_image *img, int w, int h, int channels);
void px_image_free(px_image *img); /* zeroes *img; safe on a zeroed image */
int px_image_copy(const px_image *src, px_image *dst);

/* ---- Network input ----
 * Samples the source rectangle (sx, sy, sw, sh) of img (in pixels, may extend
 * past the image: outside is filled with `pad`) into a planar float tensor
 * out[3][oh][ow] with bilinear filtering (area-averaged when shrinking by more
 * than 2x, so small faces are not aliased away). Channel order BGR if bgr,
 * else RGB; value = (v - mean) * scale. Alpha is ignored. `pad` is a pixel
 * value on the image's 0..255 scale and goes through mean/scale like the
 * pixels (pad 0 with mean 127.5 gives -127.5 * scale). out must hold
 * 3*ow*oh floats. Allocates a little scratch per call: PX_ENOMEM when that
 * fails (the tensor is then all pad; a caller must not run a detector on it
 * as if it were the image: no faces found would hide none), else PX_OK
 * (also for an empty source, which gives an all-pad tensor). Thread-safe;
 * img is read only. */
int px_image_to_tensor(const px_image *img, float sx, float sy, float sw, float sh, int ow, int oh,
                       int bgr, float mean, float scale, float pad, float *out);
/* The same sampling into a new 3-channel image dst (ow x oh, RGB, outside
 * the image black), rounded to the nearest value. PX_OK, PX_EINVAL (no image,
 * empty rectangle or size), PX_ENOMEM; dst is zeroed on failure. Caller frees
 * dst with px_image_free. */
int px_image_resample(const px_image *img, float sx, float sy, float sw, float sh, int ow, int oh,
                      px_image *dst);

/* ---- Concealment ----
 * A coverage mask over a rectangle of the image: alpha[y*w + x] in 0..255 is
 * how much of the effect pixel (x0+x, y0+y) gets (255: fully replaced). The
 * rectangle may extend past the image; outside pixels are ignored. */
typedef struct px_mask {
    int x0, y0, w, h;
    uint8_t *alpha; /* w*h, owned by whoever made it */
} px_mask;

typedef enum {
    PX_CONCEAL_BLUR = 0, /* gaussian blur, sigma = strength */
    PX_CONCEAL_PIXELATE, /* block average, cell size = strength pixels */
    PX_CONCEAL_NOISE,    /* uniform random noise from seed */
    PX_CONCEAL_SOLID,    /* flat colour (rgb) */
} px_conceal_mode;

typedef struct px_conceal {
    px_conceal_mode mode;
    float strength; /* blur sigma, pixelate cell or noise grain size, in pixels */
    uint64_t seed;  /* noise */
    uint8_t rgb[3]; /* solid */
} px_conceal;

/* Applies the effect inside mask, blending by alpha. The effect reads only
 * pixels under the mask's rectangle (blur samples a margin clamped to the
 * image) so the result does not depend on other regions. For blur the source
 * region is first pixel-averaged so that no high-frequency detail of the face
 * survives. PX_OK, PX_ENOMEM or PX_EINVAL (no image/mask/alpha, unknown
 * mode, blur/pixelate strength outside 0.5..10000). A mask entirely outside
 * the image is PX_OK and changes nothing. The alpha channel is never touched.
 * Thread-safe on distinct images; mask->alpha is only read. */
int px_image_conceal(px_image *img, const px_mask *mask, const px_conceal *how, px_err *err);

#ifdef __cplusplus
}
#endif
#endif

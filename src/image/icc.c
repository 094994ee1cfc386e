/*
 * Embedded ICC profiles: the decoded pixels are converted from the photo's
 * own colour space to sRGB with lcms2, so that writing them without any
 * profile (which px_image_encode always does: a profile can identify a
 * device) keeps their colours. A wide-gamut (Display P3, Adobe RGB) photo
 * written as if it were sRGB would come out dull and shifted.
 *
 * How it works: the profile bytes each decoder found (JPEG APP2, PNG iCCP,
 * WebP ICCP, TIFF tag 34675, HEIF prof/rICC) are opened with lcms2; an RGB
 * profile gives a perceptual transform to lcms2's built-in sRGB, run in place
 * row by row (alpha copied through). Each call has its own lcms2 context, so
 * threads never share lcms2 state and its errors are captured here instead
 * of going to a global handler. A profile lcms2 cannot read, or one for a
 * colour space the pixels are no longer in (grey, CMYK: the decoders have
 * already expanded those to RGB), is ignored: the pixels are taken as sRGB,
 * as they were before this existed, and decoding does not fail over it.
 */
#include "image_internal.h"

#include <lcms2.h>
#include <stdlib.h>
#include <string.h>

/* Larger profiles are ignored (real ones are a few KiB; the biggest LUT
 * profiles about 1 MiB). */
#define PX_ICC_MAX_BYTES ((size_t)4 << 20)

static void icc_quiet(cmsContext ctx, cmsUInt32Number code, const char *text)
{
    (void)ctx, (void)code, (void)text; /* library code never prints */
}

/* lcms2's transform from an RGB profile to its built-in sRGB, in a context
 * of its own; t stays NULL for a profile we do not convert (unreadable, not
 * RGB, not a display/input/colour-space profile). */
typedef struct icc_xf {
    cmsContext ctx;
    cmsHPROFILE src, srgb;
    cmsHTRANSFORM t;
} icc_xf;

static int xf_open(icc_xf *x, const uint8_t *icc, size_t len, cmsUInt32Number fmt,
                   cmsUInt32Number flags)
{
    memset(x, 0, sizeof *x);
    x->ctx = cmsCreateContext(NULL, NULL);
    if (!x->ctx)
        return PX_ENOMEM;
    cmsSetLogErrorHandlerTHR(x->ctx, icc_quiet);
    x->src = cmsOpenProfileFromMemTHR(x->ctx, icc, (cmsUInt32Number)len);
    x->srgb = x->src ? cmsCreate_sRGBProfileTHR(x->ctx) : NULL;
    if (x->src && x->srgb && cmsGetColorSpace(x->src) == cmsSigRgbData &&
        (cmsGetDeviceClass(x->src) == cmsSigDisplayClass ||
         cmsGetDeviceClass(x->src) == cmsSigInputClass ||
         cmsGetDeviceClass(x->src) == cmsSigColorSpaceClass))
        x->t = cmsCreateTransformTHR(x->ctx, x->src, fmt, x->srgb, fmt, INTENT_PERCEPTUAL, flags);
    return PX_OK;
}

static void xf_close(icc_xf *x)
{
    if (x->t)
        cmsDeleteTransform(x->t);
    if (x->srgb)
        cmsCloseProfile(x->srgb);
    if (x->src)
        cmsCloseProfile(x->src);
    if (x->ctx)
        cmsDeleteContext(x->ctx);
}

int px_icc_to_srgb(px_image *img, const uint8_t *icc, size_t len, px_decode_info *info)
{
    if (!icc || len < 132 || len > PX_ICC_MAX_BYTES || !img || !img->px)
        return PX_OK; /* 128-byte header plus a tag count at least */
    info->had_metadata = 1;
    info->icc = -1; /* present; 1 once converted */
    icc_xf x;
    const cmsUInt32Number fmt = img->channels == 4 ? TYPE_RGBA_8 : TYPE_RGB_8;
    if (xf_open(&x, icc, len, fmt, img->channels == 4 ? cmsFLAGS_COPY_ALPHA : 0) != PX_OK)
        return PX_ENOMEM;
    if (x.t) {
        for (int y = 0; y < img->h; y++) {
            uint8_t *row = img->px + (size_t)y * img->stride;
            cmsDoTransform(x.t, row, row, (cmsUInt32Number)img->w);
        }
        info->icc = 1;
    }
    xf_close(&x);
    return PX_OK;
}

int px_icc_is_srgb(const uint8_t *icc, size_t len)
{
    if (!icc || len < 132 || len > PX_ICC_MAX_BYTES)
        return 0;
    icc_xf x;
    int same = 0;
    if (xf_open(&x, icc, len, TYPE_RGB_8, 0) == PX_OK && x.t) {
        uint8_t in[216 * 3], out[216 * 3]; /* a 6x6x6 cube: 0, 51, ..., 255 */
        for (int i = 0; i < 216; i++) {
            in[3 * i] = (uint8_t)(51 * (i % 6));
            in[3 * i + 1] = (uint8_t)(51 * (i / 6 % 6));
            in[3 * i + 2] = (uint8_t)(51 * (i / 36));
        }
        cmsDoTransform(x.t, in, out, 216);
        same = 1;
        for (int i = 0; i < 216 * 3; i++)
            same &= abs(in[i] - out[i]) <= 1;
    }
    xf_close(&x);
    return same;
}

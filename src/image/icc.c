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

int px_icc_to_srgb(px_image *img, const uint8_t *icc, size_t len, px_decode_info *info)
{
    if (!icc || len < 132 || len > PX_ICC_MAX_BYTES || !img || !img->px)
        return PX_OK; /* 128-byte header plus a tag count at least */
    info->had_metadata = 1;
    info->icc = -1; /* present; 1 once converted */
    cmsContext ctx = cmsCreateContext(NULL, NULL);
    if (!ctx)
        return PX_ENOMEM;
    cmsSetLogErrorHandlerTHR(ctx, icc_quiet);
    int status = PX_OK;
    cmsHPROFILE src = cmsOpenProfileFromMemTHR(ctx, icc, (cmsUInt32Number)len);
    cmsHPROFILE srgb = src ? cmsCreate_sRGBProfileTHR(ctx) : NULL;
    cmsHTRANSFORM t = NULL;
    if (src && srgb && cmsGetColorSpace(src) == cmsSigRgbData &&
        (cmsGetDeviceClass(src) == cmsSigDisplayClass ||
         cmsGetDeviceClass(src) == cmsSigInputClass ||
         cmsGetDeviceClass(src) == cmsSigColorSpaceClass)) {
        const cmsUInt32Number fmt = img->channels == 4 ? TYPE_RGBA_8 : TYPE_RGB_8;
        t = cmsCreateTransformTHR(ctx, src, fmt, srgb, fmt, INTENT_PERCEPTUAL,
                                  img->channels == 4 ? cmsFLAGS_COPY_ALPHA : 0);
    }
    if (t) {
        for (int y = 0; y < img->h; y++) {
            uint8_t *row = img->px + (size_t)y * img->stride;
            cmsDoTransform(t, row, row, (cmsUInt32Number)img->w);
        }
        info->icc = 1;
        cmsDeleteTransform(t);
    }
    if (srgb)
        cmsCloseProfile(srgb);
    if (src)
        cmsCloseProfile(src);
    cmsDeleteContext(ctx);
    return status;
}

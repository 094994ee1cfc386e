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
 * row by row (alpha copied through). Each transform has its own lcms2
 * context, so its errors are captured here instead of going to a global
 * handler; the transforms of recent profiles are kept (below). A profile
 * that maps sRGB's colours onto themselves (cameras embed IEC 61966-2.1)
 * leaves the pixels as they are: converting would move none by more than
 * a rounding. A profile lcms2 cannot read, or one for a
 * colour space the pixels are no longer in (grey, CMYK: the decoders have
 * already expanded those to RGB), is ignored: the pixels are taken as sRGB,
 * as they were before this existed, and decoding does not fail over it.
 */
#include "image_internal.h"

#include <lcms2.h>
#include <pthread.h>
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

/* ---- transforms kept for the profiles seen last ----
 * Building a transform (lcms2 parses the profile and precomputes its
 * pipeline) costs more than converting a 1-megapixel photo through it, and a
 * batch's photos mostly carry the same few profiles (a camera's, sRGB): the
 * last ICC_CACHE transforms are kept, keyed by the profile's bytes and the
 * pixel format. A transform is shared by the threads that use it at once
 * (made with cmsFLAGS_NOCACHE, lcms2's thread-safe form) and only replaced
 * while no one holds it; when every entry is held, the caller gets a
 * transform of its own, closed after use. Entries live until the process
 * ends. */
#define ICC_CACHE 4

typedef struct icc_entry {
    uint8_t *bytes; /* the profile, compared in full (not a hash) */
    size_t len;
    cmsUInt32Number fmt, flags;
    icc_xf x;
    int same;       /* the transform moves no colour of the test cube by more than one level */
    unsigned holds; /* callers using it now */
    unsigned used;  /* tick of the last use */
    int cached;     /* 0: a caller's own entry */
} icc_entry;

static pthread_mutex_t icc_mu = PTHREAD_MUTEX_INITIALIZER;
static icc_entry *icc_cache[ICC_CACHE];
static unsigned icc_tick;

/* Whether x's transform maps a 6x6x6 cube (0, 51, ..., 255) onto itself
 * within one level. */
static int xf_keeps_srgb(const icc_xf *x, int channels)
{
    if (!x->t)
        return 0;
    uint8_t in[216 * 4], out[216 * 4];
    for (int i = 0; i < 216; i++) {
        uint8_t *p = in + (size_t)i * (size_t)channels;
        p[0] = (uint8_t)(51 * (i % 6));
        p[1] = (uint8_t)(51 * (i / 6 % 6));
        p[2] = (uint8_t)(51 * (i / 36));
        if (channels == 4)
            p[3] = 255;
    }
    cmsDoTransform(x->t, in, out, 216);
    for (int i = 0; i < 216 * channels; i++)
        if (abs(in[i] - out[i]) > 1)
            return 0;
    return 1;
}

static void entry_free(icc_entry *e)
{
    if (!e)
        return;
    xf_close(&e->x);
    free(e->bytes);
    free(e);
}

/* The transform for this profile and format: a cached entry (held until
 * entry_release) or a caller's own. NULL only when out of memory. */
static icc_entry *entry_get(const uint8_t *icc, size_t len, int channels)
{
    const cmsUInt32Number fmt = channels == 4 ? TYPE_RGBA_8 : TYPE_RGB_8;
    const cmsUInt32Number flags = cmsFLAGS_NOCACHE | (channels == 4 ? cmsFLAGS_COPY_ALPHA : 0);
    pthread_mutex_lock(&icc_mu);
    for (int i = 0; i < ICC_CACHE; i++) {
        icc_entry *e = icc_cache[i];
        if (e && e->len == len && e->fmt == fmt && e->flags == flags &&
            memcmp(e->bytes, icc, len) == 0) {
            e->holds++;
            e->used = ++icc_tick;
            pthread_mutex_unlock(&icc_mu);
            return e;
        }
    }
    pthread_mutex_unlock(&icc_mu);
    /* built outside the lock: it is the slow part */
    icc_entry *e = px_calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->bytes = px_malloc(len);
    if (!e->bytes || xf_open(&e->x, icc, len, fmt, flags) != PX_OK) {
        entry_free(e);
        return NULL;
    }
    memcpy(e->bytes, icc, len);
    e->len = len, e->fmt = fmt, e->flags = flags;
    e->same = xf_keeps_srgb(&e->x, channels);
    e->holds = 1;
    pthread_mutex_lock(&icc_mu);
    int slot = -1; /* an empty slot, else the least recently used one no one holds */
    for (int i = 0; i < ICC_CACHE && slot < 0; i++)
        if (!icc_cache[i])
            slot = i;
    for (int i = 0; i < ICC_CACHE && (slot < 0 || icc_cache[slot]); i++)
        if (!icc_cache[i]->holds && (slot < 0 || icc_cache[i]->used < icc_cache[slot]->used))
            slot = i;
    icc_entry *old = NULL;
    if (slot >= 0) {
        old = icc_cache[slot];
        icc_cache[slot] = e;
        e->cached = 1;
        e->used = ++icc_tick;
    }
    pthread_mutex_unlock(&icc_mu);
    entry_free(old);
    return e;
}

static void entry_release(icc_entry *e)
{
    if (!e->cached) {
        entry_free(e);
        return;
    }
    pthread_mutex_lock(&icc_mu);
    e->holds--;
    pthread_mutex_unlock(&icc_mu);
}

int px_icc_to_srgb(px_image *img, const uint8_t *icc, size_t len, px_decode_info *info)
{
    if (!icc || len < 132 || len > PX_ICC_MAX_BYTES || !img || !img->px)
        return PX_OK; /* 128-byte header plus a tag count at least */
    info->had_metadata = 1;
    info->icc = -1; /* present; 1 once converted */
    icc_entry *e = entry_get(icc, len, img->channels == 4 ? 4 : 3);
    if (!e)
        return PX_ENOMEM;
    if (e->x.t) {
        /* an sRGB profile in effect: its conversion would move no colour by
         * more than a rounding, so the pixels are already what it gives */
        for (int y = 0; y < img->h && !e->same; y++) {
            uint8_t *row = img->px + (size_t)y * img->stride;
            cmsDoTransform(e->x.t, row, row, (cmsUInt32Number)img->w);
        }
        info->icc = 1;
    }
    entry_release(e);
    return PX_OK;
}

int px_icc_is_srgb(const uint8_t *icc, size_t len)
{
    if (!icc || len < 132 || len > PX_ICC_MAX_BYTES)
        return 0;
    icc_entry *e = entry_get(icc, len, 3);
    if (!e)
        return 0;
    const int same = e->x.t && e->same;
    entry_release(e);
    return same;
}

/*
 * Masks that hide a detected face, and the strength of the effect drawn
 * under them.
 *
 * A detector box is tight around the eyes-to-chin area, so the mask grows it
 * (scale, 1.4x by default for the ellipse) and lifts it upwards for the
 * forehead and hair, which identify a person as much as the face does. The
 * ellipse is never smaller than the one through the box corners, so every
 * pixel of the detected box is fully replaced. Feathering only ever goes
 * outwards: alpha is 255 over the whole shape and falls to 0 over a band
 * outside it, so softening the edge can never let the face show through.
 */
#include "px_face.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Share of the face height added above the box for forehead and hair. */
#define PX_MASK_LIFT 0.2f

px_mask_opts px_mask_opts_default(void)
{
    px_mask_opts o;
    o.shape = PX_MASK_ELLIPSE;
    o.scale = 1.4f;
    o.feather = 0.15f;
    return o;
}

float px_mask_default_scale(px_mask_shape shape)
{
    return shape == PX_MASK_BOX ? 1.2f : 1.4f;
}

/* 1 at t <= 0 falling smoothly to 0 at t >= 1. */
static float falloff(float t)
{
    if (t <= 0.0f)
        return 1.0f;
    if (t >= 1.0f)
        return 0.0f;
    return 1.0f - t * t * (3.0f - 2.0f * t);
}

int px_face_mask(const px_face *f, int img_w, int img_h, const px_mask_opts *o, px_mask *mask,
                 px_err *err)
{
    if (mask)
        memset(mask, 0, sizeof *mask);
    if (!f || !mask || img_w <= 0 || img_h <= 0)
        return px_err_set(err, PX_EINVAL, "face mask: missing face, mask or image size");
    px_mask_opts def = px_mask_opts_default();
    const px_mask_opts *opt = o ? o : &def;
    const float scale = opt->scale > 0.0f ? opt->scale : px_mask_default_scale(opt->shape);
    const float feather = opt->feather;
    if (!(scale >= 1.0f && scale <= 8.0f))
        return px_err_set(err, PX_EINVAL,
                          "face mask: scale %g outside 1..8 (below 1 would leave the face visible)",
                          (double)scale);
    if (!(feather >= 0.0f && feather <= 2.0f))
        return px_err_set(err, PX_EINVAL, "face mask: feather %g outside 0..2", (double)feather);
    const float w = f->x2 - f->x1, h = f->y2 - f->y1;
    if (!isfinite(f->x1) || !isfinite(f->y1) || !isfinite(w) || !isfinite(h) || !(w > 0.0f) ||
        !(h > 0.0f))
        return px_err_set(err, PX_EINVAL, "face mask: empty or non-finite face box");

    const float lift = PX_MASK_LIFT * h;
    const float cx = 0.5f * (f->x1 + f->x2);
    const float cy = 0.5f * (f->y1 + f->y2) - 0.5f * lift;
    float rx = 0.5f * scale * w, ry = 0.5f * scale * h + 0.5f * lift;
    /* The box's far corners are (w/2, h/2 + lift/2) from the shape's centre. */
    const float hx = 0.5f * w, hy = 0.5f * h + 0.5f * lift;
    if (opt->shape == PX_MASK_ELLIPSE) {
        const float q = (hx / rx) * (hx / rx) + (hy / ry) * (hy / ry);
        if (q > 1.0f) {
            const float k = sqrtf(q) * 1.001f;
            rx *= k;
            ry *= k;
        }
    } else {
        rx = fmaxf(rx, hx);
        ry = fmaxf(ry, hy);
    }
    const float band = opt->shape == PX_MASK_ELLIPSE ? 1.0f + feather : 1.0f;
    const float pad_px = opt->shape == PX_MASK_BOX ? feather * fmaxf(rx, ry) : 0.0f;
    const float ox = rx * band + pad_px, oy = ry * band + pad_px;

    /* The mask's rectangle: the outer edge of the feather, clipped to the image. */
    double fx0 = floor(cx - ox), fy0 = floor(cy - oy), fx1 = ceil(cx + ox), fy1 = ceil(cy + oy);
    if (fx0 < 0)
        fx0 = 0;
    if (fy0 < 0)
        fy0 = 0;
    if (fx1 > img_w)
        fx1 = img_w;
    if (fy1 > img_h)
        fy1 = img_h;
    if (fx1 <= fx0 || fy1 <= fy0)
        return PX_OK; /* face entirely outside the image: nothing to cover */
    const int x0 = (int)fx0, y0 = (int)fy0, mw = (int)(fx1 - fx0), mh = (int)(fy1 - fy0);
    uint8_t *alpha = px_malloc((size_t)mw * (size_t)mh);
    if (!alpha)
        return px_err_set(err, PX_ENOMEM, "face mask: %d x %d alpha", mw, mh);

    for (int y = 0; y < mh; y++) {
        const float dy = (float)(y0 + y) + 0.5f - cy;
        uint8_t *row = alpha + (size_t)y * (size_t)mw;
        for (int x = 0; x < mw; x++) {
            const float dx = (float)(x0 + x) + 0.5f - cx;
            float a;
            if (opt->shape == PX_MASK_ELLIPSE) {
                const float d = sqrtf((dx / rx) * (dx / rx) + (dy / ry) * (dy / ry));
                a = d <= 1.0f ? 1.0f : (feather > 0.0f ? falloff((d - 1.0f) / feather) : 0.0f);
            } else {
                const float ex = fmaxf(fabsf(dx) - rx, 0.0f), ey = fmaxf(fabsf(dy) - ry, 0.0f);
                const float e = sqrtf(ex * ex + ey * ey);
                a = e <= 0.0f ? 1.0f : (pad_px > 0.0f ? falloff(e / pad_px) : 0.0f);
            }
            row[x] = (uint8_t)lrintf(a * 255.0f);
        }
    }
    mask->x0 = x0;
    mask->y0 = y0;
    mask->w = mw;
    mask->h = mh;
    mask->alpha = alpha;
    return PX_OK;
}

px_conceal px_face_conceal_for(const px_face *f, px_conceal_mode mode, uint64_t seed)
{
    px_conceal c;
    memset(&c, 0, sizeof c);
    c.mode = mode;
    c.seed = seed;
    float w = f ? f->x2 - f->x1 : 0.0f;
    if (!(w > 0.0f) || !isfinite(w))
        w = 1.0f;
    switch (mode) {
    case PX_CONCEAL_BLUR:
        /* sigma of a third of the face width leaves not even the layout of
         * eyes and mouth (with w / 5, face detectors still found 4% of
         * blurred faces); 8 px keeps tiny faces from surviving */
        c.strength = fmaxf(8.0f, w / 3.0f);
        break;
    case PX_CONCEAL_PIXELATE:
        /* at most 4 cells across the face: with 8, detectors still found
         * 14% of them (the cell grid itself keeps the eyes-nose-mouth
         * layout); 4 keeps no such layout */
        c.strength = fmaxf(4.0f, ceilf(w / 4.0f));
        break;
    case PX_CONCEAL_SOLID:
        /* mid grey: a black head-shaped fill is itself "a face" to YuNet
         * 2022mar (scores 0.7-0.88 on the reference photos) */
        c.rgb[0] = c.rgb[1] = c.rgb[2] = 128;
        c.strength = 0.0f;
        break;
    case PX_CONCEAL_NOISE:
    default:
        /* grain of a 24th of the face width: noise per pixel averages to a
         * flat grey at the scale a detector looks at a big face, and a flat
         * head-shaped blob with hair around it is what YuNet 2022mar still
         * found (scores 0.61-0.71, 4 faces over 6 seeds on the reference
         * photos; none with this grain: docs/anonymize.md) */
        c.strength = fmaxf(1.0f, floorf(w / 24.0f));
        break;
    }
    return c;
}

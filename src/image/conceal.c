/*
 * Concealment effects for faces: blur, pixelate, noise and solid fill, each
 * computed for the mask's rectangle (clipped to the image) and blended into
 * the image by the mask's alpha: out = lerp(original, effect, alpha / 255).
 * The alpha channel of RGBA images is never touched.
 *
 * Blur is built to be irreversible in practice, not just soft: the masked
 * rectangle is first replaced by block means (blocks of about sigma/2 px,
 * aligned to the mask), which throws away the detail a deconvolution could
 * otherwise recover, and only then blurred with a gaussian of the given sigma
 * (radius 3 sigma; the margin it reads around the mask is clamped to the
 * image). The gaussian is separable; for large sigma it runs on a grid
 * decimated by d = floor(sigma / 4) (the image there is already flat over
 * blocks of sigma/2, and a gaussian of >= 4 px is well sampled on it), with
 * the box decimation's own variance taken out of the kernel, then read back
 * with bilinear interpolation. That keeps a 600 px face at tens of ms
 * instead of seconds.
 *
 * Noise is uniform per channel and grain cell (strength px, aligned to the
 * mask like pixelate's cells; below 1, per pixel) from splitmix64 keyed by
 * the seed and the cell's position, so it is deterministic for a seed,
 * independent of processing order, and carries nothing of the original.
 */
#include "image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct rect {
    int x0, y0, x1, y1; /* [x0, x1) x [y0, y1) */
} rect;

static uint64_t splitmix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static inline uint8_t mix(uint8_t o, uint8_t e, unsigned a)
{
    return (uint8_t)((o * (255u - a) + e * a + 127u) / 255u);
}

/* Blends eff (3 channels, rect-sized, row-major) into img by mask alpha. */
static void blend(px_image *img, const px_mask *m, rect r, const uint8_t *eff)
{
    const int rw = r.x1 - r.x0;
    for (int y = r.y0; y < r.y1; y++) {
        uint8_t *px = img->px + (size_t)y * img->stride;
        const uint8_t *al = m->alpha + (size_t)(y - m->y0) * (size_t)m->w;
        const uint8_t *e = eff + (size_t)(y - r.y0) * (size_t)rw * 3;
        for (int x = r.x0; x < r.x1; x++, e += 3) {
            unsigned a = al[x - m->x0];
            if (a == 0)
                continue;
            uint8_t *q = px + (size_t)x * (size_t)img->channels;
            if (a == 255) {
                memcpy(q, e, 3);
                continue;
            }
            q[0] = mix(q[0], e[0], a);
            q[1] = mix(q[1], e[1], a);
            q[2] = mix(q[2], e[2], a);
        }
    }
}

static void effect_solid(uint8_t *eff, rect r, const uint8_t rgb[3])
{
    size_t n = (size_t)(r.x1 - r.x0) * (size_t)(r.y1 - r.y0);
    for (size_t i = 0; i < n; i++)
        memcpy(eff + 3 * i, rgb, 3);
}

/* Uniform noise per grain cell of `cell` px aligned to (ox, oy), like
 * pixelate's cells; cell 1 is per pixel. */
static void effect_noise(uint8_t *eff, rect r, int ox, int oy, int cell, uint64_t seed)
{
    const uint64_t key = splitmix64(seed);
    /* whole cells from the grid's origin; the bias keeps the division on
     * non-negative numbers (floor) for pixels left of or above it */
    const long long bias = (1LL << 30) * cell;
    for (int y = r.y0; y < r.y1; y++) {
        const uint64_t cy = (uint32_t)(((long long)y - oy + bias) / cell);
        for (int x = r.x0; x < r.x1; x++, eff += 3) {
            const uint64_t cx = (uint32_t)(((long long)x - ox + bias) / cell);
            const uint64_t v = splitmix64(key ^ (cy << 32 | cx));
            eff[0] = (uint8_t)v;
            eff[1] = (uint8_t)(v >> 8);
            eff[2] = (uint8_t)(v >> 16);
        }
    }
}

/* Block means over cells of `cell` px aligned to (ox, oy), clipped to r. */
static void effect_pixelate(const px_image *img, uint8_t *eff, rect r, int ox, int oy, int cell)
{
    const int rw = r.x1 - r.x0, c = img->channels;
    /* first cell boundary at or before r.x0 on the grid anchored at ox */
    int gx = r.x0 - (int)(((long long)r.x0 - ox) % cell + cell) % cell;
    int gy = r.y0 - (int)(((long long)r.y0 - oy) % cell + cell) % cell;
    for (int cy = gy; cy < r.y1; cy += cell) {
        int ya = cy < r.y0 ? r.y0 : cy, yb = cy + cell > r.y1 ? r.y1 : cy + cell;
        for (int cx = gx; cx < r.x1; cx += cell) {
            int xa = cx < r.x0 ? r.x0 : cx, xb = cx + cell > r.x1 ? r.x1 : cx + cell;
            uint64_t s[3] = {0, 0, 0};
            for (int y = ya; y < yb; y++) {
                const uint8_t *p = img->px + (size_t)y * img->stride + (size_t)xa * c;
                for (int x = xa; x < xb; x++, p += c) {
                    s[0] += p[0];
                    s[1] += p[1];
                    s[2] += p[2];
                }
            }
            uint64_t n = (uint64_t)(yb - ya) * (uint64_t)(xb - xa);
            uint8_t mean[3];
            for (int k = 0; k < 3; k++)
                mean[k] = (uint8_t)((s[k] + n / 2) / n);
            for (int y = ya; y < yb; y++) {
                uint8_t *e = eff + ((size_t)(y - r.y0) * (size_t)rw + (size_t)(xa - r.x0)) * 3;
                for (int x = xa; x < xb; x++, e += 3)
                    memcpy(e, mean, 3);
            }
        }
    }
}

/* 1-D gaussian pass over n samples of 3 floats at stride `step` (in floats),
 * edges clamped. */
static void gauss_line(const float *src, float *dst, int n, size_t step, const float *k, int rad)
{
    for (int i = 0; i < n; i++) {
        float a0 = 0, a1 = 0, a2 = 0;
        for (int t = -rad; t <= rad; t++) {
            int j = clampi(i + t, 0, n - 1);
            const float *s = src + (size_t)j * step;
            float w = k[t + rad];
            a0 += w * s[0];
            a1 += w * s[1];
            a2 += w * s[2];
        }
        float *d = dst + (size_t)i * step;
        d[0] = a0;
        d[1] = a1;
        d[2] = a2;
    }
}

static int effect_blur(const px_image *img, uint8_t *eff, rect r, int ox, int oy, float sigma)
{
    const int c = img->channels;
    const int rad = (int)ceilf(3.0f * sigma);
    rect e = {clampi(r.x0 - rad, 0, img->w), clampi(r.y0 - rad, 0, img->h),
              clampi(r.x1 + rad, 0, img->w), clampi(r.y1 + rad, 0, img->h)};
    const int ew = e.x1 - e.x0, eh = e.y1 - e.y0, rw = r.x1 - r.x0;
    const int blk = sigma >= 3.0f ? (int)lroundf(sigma / 2.0f) : 1;
    const int d = sigma >= 8.0f ? (int)(sigma / 4.0f) : 1;
    const int lw = (ew + d - 1) / d, lh = (eh + d - 1) / d;
    /* kernel on the decimated grid, minus the variance the box already added */
    double var = (double)sigma * sigma - (d > 1 ? (double)(d * d - 1) / 12.0 : 0.0);
    float sl = (float)(sqrt(var > 0.25 ? var : 0.25) / d);
    const int lrad = (int)ceilf(3.0f * sl);

    const size_t ews = (size_t)ew * 3; /* work row stride */
    size_t nl = (size_t)lw * (size_t)lh * 3;
    uint8_t *work = px_malloc(ews * (size_t)eh);
    float *low = px_malloc(nl * sizeof(float));
    float *tmp = px_malloc(nl * sizeof(float));
    float *k = px_malloc((size_t)(2 * lrad + 1) * sizeof(float));
    int *xt = px_malloc((size_t)rw * 2 * sizeof(int));
    float *xf = px_malloc((size_t)rw * sizeof(float));
    int st = PX_ENOMEM;
    if (!work || !low || !tmp || !k || !xt || !xf)
        goto out;

    /* 1. copy the region with its margin (RGB only) */
    for (int y = 0; y < eh; y++) {
        const uint8_t *p = img->px + (size_t)(e.y0 + y) * img->stride + (size_t)e.x0 * c;
        uint8_t *w = work + (size_t)y * ews;
        if (c == 3) {
            memcpy(w, p, ews);
        } else {
            for (int x = 0; x < ew; x++, p += c, w += 3) {
                w[0] = p[0];
                w[1] = p[1];
                w[2] = p[2];
            }
        }
    }
    /* 2. flatten the masked rectangle into blocks (aligned to the mask) */
    if (blk > 1) {
        int gx = r.x0 - (int)(((long long)r.x0 - ox) % blk + blk) % blk;
        int gy = r.y0 - (int)(((long long)r.y0 - oy) % blk + blk) % blk;
        for (int cy = gy; cy < r.y1; cy += blk) {
            int ya = cy < r.y0 ? r.y0 : cy, yb = cy + blk > r.y1 ? r.y1 : cy + blk;
            for (int cx = gx; cx < r.x1; cx += blk) {
                int xa = cx < r.x0 ? r.x0 : cx, xb = cx + blk > r.x1 ? r.x1 : cx + blk;
                const size_t off = (size_t)(xa - e.x0) * 3, len = (size_t)(xb - xa) * 3;
                uint32_t s[3] = {0, 0, 0};
                for (int y = ya; y < yb; y++) {
                    const uint8_t *w = work + (size_t)(y - e.y0) * ews + off;
                    for (size_t i = 0; i < len; i += 3) {
                        s[0] += w[i];
                        s[1] += w[i + 1];
                        s[2] += w[i + 2];
                    }
                }
                uint32_t n = (uint32_t)(yb - ya) * (uint32_t)(xb - xa);
                uint8_t m[3];
                for (int ch = 0; ch < 3; ch++)
                    m[ch] = (uint8_t)((s[ch] + n / 2) / n);
                for (int y = ya; y < yb; y++) {
                    uint8_t *w = work + (size_t)(y - e.y0) * ews + off;
                    for (size_t i = 0; i < len; i += 3)
                        memcpy(w + i, m, 3);
                }
            }
        }
    }
    /* 3. decimate by d (box mean, partial blocks at the far edges) */
    for (int j = 0; j < lh; j++) {
        int ya = j * d, yb = ya + d < eh ? ya + d : eh;
        float *l = low + (size_t)j * lw * 3;
        for (int i = 0; i < lw; i++, l += 3) {
            int xa = i * d, xb = xa + d < ew ? xa + d : ew;
            uint32_t s[3] = {0, 0, 0};
            for (int y = ya; y < yb; y++) {
                const uint8_t *w = work + (size_t)y * ews + (size_t)xa * 3;
                for (int x = xa; x < xb; x++, w += 3) {
                    s[0] += w[0];
                    s[1] += w[1];
                    s[2] += w[2];
                }
            }
            float inv = 1.0f / (float)((yb - ya) * (xb - xa));
            l[0] = (float)s[0] * inv;
            l[1] = (float)s[1] * inv;
            l[2] = (float)s[2] * inv;
        }
    }
    /* 4. separable gaussian on the decimated grid */
    double ksum = 0.0;
    for (int t = -lrad; t <= lrad; t++)
        ksum += exp(-(double)t * t / (2.0 * (double)sl * sl));
    for (int t = -lrad; t <= lrad; t++)
        k[t + lrad] = (float)(exp(-(double)t * t / (2.0 * (double)sl * sl)) / ksum);
    for (int j = 0; j < lh; j++)
        gauss_line(low + (size_t)j * lw * 3, tmp + (size_t)j * lw * 3, lw, 3, k, lrad);
    for (int i = 0; i < lw; i++)
        gauss_line(tmp + (size_t)i * 3, low + (size_t)i * 3, lh, (size_t)lw * 3, k, lrad);
    /* 5. back to full resolution over the mask rectangle (bilinear, x table once) */
    for (int x = 0; x < rw; x++) {
        float u = ((float)(r.x0 + x - e.x0) + 0.5f) / (float)d - 0.5f;
        int i0 = (int)floorf(u);
        xf[x] = u - (float)i0;
        xt[2 * x] = 3 * clampi(i0, 0, lw - 1);
        xt[2 * x + 1] = 3 * clampi(i0 + 1, 0, lw - 1);
    }
    for (int y = r.y0; y < r.y1; y++) {
        float v = ((float)(y - e.y0) + 0.5f) / (float)d - 0.5f;
        int j0 = (int)floorf(v);
        float fy = v - (float)j0;
        const float *ra = low + (size_t)clampi(j0, 0, lh - 1) * lw * 3;
        const float *rb = low + (size_t)clampi(j0 + 1, 0, lh - 1) * lw * 3;
        uint8_t *o = eff + (size_t)(y - r.y0) * (size_t)rw * 3;
        for (int x = 0; x < rw; x++, o += 3) {
            const float fx = xf[x];
            const int ia = xt[2 * x], ib = xt[2 * x + 1];
            for (int ch = 0; ch < 3; ch++) {
                float top = ra[ia + ch] + fx * (ra[ib + ch] - ra[ia + ch]);
                float bot = rb[ia + ch] + fx * (rb[ib + ch] - rb[ia + ch]);
                float val = top + fy * (bot - top) + 0.5f;
                o[ch] = (uint8_t)(val < 0.0f ? 0.0f : val > 255.0f ? 255.0f : val);
            }
        }
    }
    st = PX_OK;
out:
    free(work);
    free(low);
    free(tmp);
    free(k);
    free(xt);
    free(xf);
    return st;
}

int px_image_conceal(px_image *img, const px_mask *mask, const px_conceal *how, px_err *err)
{
    if (!img || !img->px || img->w <= 0 || img->h <= 0 ||
        (img->channels != 3 && img->channels != 4))
        return px_err_set(err, PX_EINVAL, "conceal: invalid image");
    if (!mask || !how || mask->w <= 0 || mask->h <= 0 || !mask->alpha)
        return px_err_set(err, PX_EINVAL, "conceal: mask needs a positive size and alpha");
    if ((how->mode == PX_CONCEAL_BLUR || how->mode == PX_CONCEAL_PIXELATE) &&
        !(how->strength >= 0.5f && how->strength <= 10000.0f))
        return px_err_set(err, PX_EINVAL, "conceal: strength %g outside 0.5..10000 px",
                          (double)how->strength);
    /* rectangle of the mask clipped to the image (64-bit: x0 + w may overflow int) */
    long long x1 = (long long)mask->x0 + mask->w, y1 = (long long)mask->y0 + mask->h;
    rect r = {mask->x0 < 0 ? 0 : mask->x0, mask->y0 < 0 ? 0 : mask->y0,
              (int)(x1 < img->w ? x1 : img->w), (int)(y1 < img->h ? y1 : img->h)};
    if (r.x0 >= r.x1 || r.y0 >= r.y1)
        return PX_OK; /* mask entirely outside the image */

    size_t n = (size_t)(r.x1 - r.x0) * (size_t)(r.y1 - r.y0) * 3;
    uint8_t *eff = px_malloc(n);
    if (!eff)
        return px_err_set(err, PX_ENOMEM, "conceal: out of memory for a %dx%d region", r.x1 - r.x0,
                          r.y1 - r.y0);
    int st = PX_OK;
    switch (how->mode) {
    case PX_CONCEAL_SOLID:
        effect_solid(eff, r, how->rgb);
        break;
    case PX_CONCEAL_NOISE:
        effect_noise(
            eff, r, mask->x0, mask->y0,
            how->strength >= 1.0f && how->strength <= 10000.0f ? (int)lroundf(how->strength) : 1,
            how->seed);
        break;
    case PX_CONCEAL_PIXELATE:
        effect_pixelate(img, eff, r, mask->x0, mask->y0, (int)lroundf(how->strength));
        break;
    case PX_CONCEAL_BLUR:
        st = effect_blur(img, eff, r, mask->x0, mask->y0, how->strength);
        if (st != PX_OK)
            px_err_set(err, st, "conceal: out of memory blurring a %dx%d region", r.x1 - r.x0,
                       r.y1 - r.y0);
        break;
    default:
        st = px_err_set(err, PX_EINVAL, "conceal: unknown mode %d", (int)how->mode);
        break;
    }
    if (st == PX_OK)
        blend(img, mask, r, eff);
    free(eff);
    return st;
}

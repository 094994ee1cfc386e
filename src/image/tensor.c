/*
 * Sampling an image rectangle into a planar float tensor (network input).
 *
 * Separable resampling with precomputed tap tables: for every output column
 * (and row) a run of consecutive in-image source pixels with weights, plus
 * the weight that falls outside the image and therefore takes the pad value.
 * Up to 2x shrink (and for any enlargement) the taps are bilinear, with the
 * sample centred as usual (out pixel i <- source s0 + (i + 0.5) * f - 0.5);
 * beyond 2x shrink each output pixel averages its whole footprint (a box
 * filter with fractional edge weights), since bilinear would then skip
 * source pixels and a 10-pixel face could vanish between samples.
 *
 * Per output row the source rows are first combined vertically into one
 * float row (a contiguous multiply-add loop that the compiler vectorises),
 * then the horizontal taps produce the row's three planes. An exact 1:1
 * mapping ends up with single taps of weight 1, i.e. a plain conversion.
 * Scratch (tables + one float row) is one malloc per call. Where every
 * output column is one or two taps inside the image (bilinear, the usual
 * case) the horizontal step runs branch-free from per-column pair tables;
 * a tile reaching past the image's edge runs them on its columns inside.
 */
#include "image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The per-pixel loops are also compiled for AVX2 and picked per call from
 * the CPU (about 2.5x on the plain conversion): each loop is a body inlined
 * into a baseline and an AVX2 twin. Not GCC's target_clones: its ifunc
 * resolver runs before ThreadSanitizer's runtime is up and crashes every
 * TSan binary. AVX2 without FMA: no contraction, the same floats bit for
 * bit. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PX_TWIN(name, params, args)                                                                \
    __attribute__((target("avx2"))) static void name##_avx2 params                                 \
    {                                                                                              \
        name##_body args;                                                                          \
    }                                                                                              \
    static void name params                                                                        \
    {                                                                                              \
        if (__builtin_cpu_supports("avx2"))                                                        \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_body args;                                                                      \
    }
#else
#define PX_TWIN(name, params, args)                                                                \
    static void name params                                                                        \
    {                                                                                              \
        name##_body args;                                                                          \
    }
#endif
#define PX_BODY static inline __attribute__((always_inline)) void

typedef struct axis_taps {
    int *first;  /* [n_out] first in-image source index */
    int *count;  /* [n_out] number of in-image taps (0: all pad) */
    int *off;    /* [n_out] offset of the first weight in w */
    float *padw; /* [n_out] weight of the part outside the image */
    float *w;    /* [total taps] */
} axis_taps;

/* Maximum taps per output sample for a scale factor f (source px per output
 * px) on an axis of `size` pixels: only in-image pixels get a tap, so a
 * rectangle far larger than the image does not blow up the tables. */
static int max_taps(double f, int size)
{
    if (!(f > 2.0))
        return 2;
    return f < (double)size ? (int)ceil(f) + 2 : size + 2;
}

/* Fills the taps for one axis: output samples 0..n_out-1 cover source
 * [s0, s0 + len) of an axis with `size` pixels. */
static void build_axis(axis_taps *t, double s0, double len, int n_out, int size)
{
    const double f = len / n_out;
    int wpos = 0;
    for (int i = 0; i < n_out; i++) {
        t->off[i] = wpos;
        t->count[i] = 0;
        t->first[i] = 0;
        t->padw[i] = 0.0f;
        if (f > 2.0) {
            double a = s0 + i * f, b = a + f;
            double ia = a > 0.0 ? a : 0.0, ib = b < size ? b : (double)size;
            if (ib <= ia) {
                t->padw[i] = 1.0f;
                continue;
            }
            int p0 = (int)floor(ia), p1 = (int)ceil(ib); /* [p0, p1) */
            if (p1 > size)
                p1 = size;
            double inside = 0.0;
            for (int p = p0; p < p1; p++) {
                double lo = p > ia ? p : ia, hi = p + 1 < ib ? p + 1 : ib;
                double wv = (hi - lo) / f;
                inside += wv;
                t->w[wpos++] = (float)wv;
            }
            t->first[i] = p0;
            t->count[i] = p1 - p0;
            double pw = 1.0 - inside;
            t->padw[i] = pw > 1e-7 ? (float)pw : 0.0f;
        } else {
            double c = s0 + (i + 0.5) * f; /* sample centre, in pixel-edge units */
            if (c < 0.0 || c >= size) {
                t->padw[i] = 1.0f;
                continue;
            }
            double u = c - 0.5;
            int p = (int)floor(u);
            double frac = u - p;
            int i0 = p < 0 ? 0 : p, i1 = p + 1 >= size ? size - 1 : p + 1;
            if (p + 1 <= 0)
                i1 = 0;
            t->first[i] = i0;
            if (i0 == i1 || frac < 1e-6) {
                t->count[i] = 1;
                t->w[wpos++] = 1.0f;
            } else if (frac > 1.0 - 1e-6) {
                t->first[i] = i1;
                t->count[i] = 1;
                t->w[wpos++] = 1.0f;
            } else {
                t->count[i] = 2;
                t->w[wpos++] = (float)(1.0 - frac);
                t->w[wpos++] = (float)frac;
            }
        }
    }
}

static void fill_value(float *out, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        out[i] = v;
}

/* One row of pixels to three planes: v * scale + bias. Separate restrict
 * pointers so the compiler keeps values in registers (a uint8_t pointer may
 * otherwise alias the float stores). */
PX_BODY convert_row_body(const uint8_t *restrict src, int cn, int n, float scale, float bias,
                         float *restrict r, float *restrict g, float *restrict b)
{
    if (cn == 3)
        for (int x = 0; x < n; x++) {
            r[x] = (float)src[3 * x] * scale + bias;
            g[x] = (float)src[3 * x + 1] * scale + bias;
            b[x] = (float)src[3 * x + 2] * scale + bias;
        }
    else
        for (int x = 0; x < n; x++) {
            r[x] = (float)src[(size_t)x * (size_t)cn] * scale + bias;
            g[x] = (float)src[(size_t)x * (size_t)cn + 1] * scale + bias;
            b[x] = (float)src[(size_t)x * (size_t)cn + 2] * scale + bias;
        }
}
PX_TWIN(convert_row,
        (const uint8_t *restrict src, int cn, int n, float scale, float bias, float *restrict r,
         float *restrict g, float *restrict b),
        (src, cn, n, scale, bias, r, g, b))

/* Scale 1 at a whole-pixel offset (canvases made at network size): a plain
 * conversion, row by row, pad outside the image. */
static void copy_exact(const px_image *img, long sx, long sy, int ow, int oh, int bgr, float mean,
                       float scale, float pad, float *out)
{
    const size_t plane = (size_t)ow * (size_t)oh;
    const float padv = (pad - mean) * scale, bias = -mean * scale;
    float *pr = out + (bgr ? 2 : 0) * plane, *pg = out + plane, *pb = out + (bgr ? 0 : 2) * plane;
    const int cn = img->channels;
    /* columns [x0, x1) of the output come from the image */
    const long x0 = sx < 0 ? -sx : 0, x1l = (long)img->w - sx;
    const int x0i = (int)(x0 > ow ? ow : x0), x1 = (int)(x1l < x0i ? x0i : x1l > ow ? ow : x1l);
    for (int y = 0; y < oh; y++) {
        const size_t o = (size_t)y * (size_t)ow;
        const long iy = sy + y;
        if (iy < 0 || iy >= img->h || x1 <= x0i) {
            fill_value(pr + o, (size_t)ow, padv);
            fill_value(pg + o, (size_t)ow, padv);
            fill_value(pb + o, (size_t)ow, padv);
            continue;
        }
        fill_value(pr + o, (size_t)x0i, padv);
        fill_value(pg + o, (size_t)x0i, padv);
        fill_value(pb + o, (size_t)x0i, padv);
        const uint8_t *src = img->px + (size_t)iy * img->stride + (size_t)(sx + x0i) * (size_t)cn;
        convert_row(src, cn, x1 - x0i, scale, bias, pr + o + x0i, pg + o + x0i, pb + o + x0i);
        fill_value(pr + o + x1, (size_t)(ow - x1), padv);
        fill_value(pg + o + x1, (size_t)(ow - x1), padv);
        fill_value(pb + o + x1, (size_t)(ow - x1), padv);
    }
}

/* The vertical step's loops on one row of interleaved samples, restrict so
 * that the compiler vectorises them (a uint8_t pointer may alias anything). */
PX_BODY rows2_body(const uint8_t *restrict a, const uint8_t *restrict b, float wa, float wb,
                   float add, size_t n, float *restrict row)
{
    for (size_t k = 0; k < n; k++)
        row[k] = wa * (float)a[k] + wb * (float)b[k] + add;
}
PX_TWIN(rows2,
        (const uint8_t *restrict a, const uint8_t *restrict b, float wa, float wb, float add,
         size_t n, float *restrict row),
        (a, b, wa, wb, add, n, row))

static void row1(const uint8_t *restrict a, float wa, float add, size_t n, float *restrict row)
{
    for (size_t k = 0; k < n; k++)
        row[k] = wa * (float)a[k] + add;
}

static void row_add(const uint8_t *restrict a, float wa, size_t n, float *restrict row)
{
    for (size_t k = 0; k < n; k++)
        row[k] += wa * (float)a[k];
}

/* The horizontal step when every column is a pair of taps. */
PX_BODY hpairs_body(const float *restrict row, const int *restrict at, const float *restrict w0,
                    const float *restrict w1, int n, float scale, float bias, float *restrict pr,
                    float *restrict pg, float *restrict pb)
{
    for (int i = 0; i < n; i++) {
        const float *rp = row + at[i];
        const float a = w0[i], b = w1[i];
        pr[i] = (a * rp[0] + b * rp[3]) * scale + bias;
        pg[i] = (a * rp[1] + b * rp[4]) * scale + bias;
        pb[i] = (a * rp[2] + b * rp[5]) * scale + bias;
    }
}
PX_TWIN(hpairs,
        (const float *restrict row, const int *restrict at, const float *restrict w0,
         const float *restrict w1, int n, float scale, float bias, float *restrict pr,
         float *restrict pg, float *restrict pb),
        (row, at, w0, w1, n, scale, bias, pr, pg, pb))

/* Column i is one or two taps, all inside the image. */
static int is_pair(const axis_taps *t, int i)
{
    return t->padw[i] == 0.0f && (t->count[i] == 1 || t->count[i] == 2);
}

/* The horizontal step for columns ox0..ox1-1, any number of taps and pad. */
static void hgeneral(const axis_taps *tx, const float *row, int xlo, int ox0, int ox1, float pad,
                     float scale, float bias, float *const pl[3])
{
    for (int ox = ox0; ox < ox1; ox++) {
        const int xc = tx->count[ox];
        const float *wx = tx->w + tx->off[ox];
        const float *rp = row + (size_t)(tx->first[ox] - xlo) * 3;
        float vr, vg, vb;
        if (xc == 1 && tx->padw[ox] == 0.0f) {
            vr = rp[0], vg = rp[1], vb = rp[2];
        } else if (xc == 2 && tx->padw[ox] == 0.0f) {
            const float w0 = wx[0], w1 = wx[1];
            vr = w0 * rp[0] + w1 * rp[3];
            vg = w0 * rp[1] + w1 * rp[4];
            vb = w0 * rp[2] + w1 * rp[5];
        } else {
            const float pv = tx->padw[ox] * pad;
            vr = pv, vg = pv, vb = pv;
            for (int k = 0; k < xc; k++, rp += 3) {
                vr += wx[k] * rp[0];
                vg += wx[k] * rp[1];
                vb += wx[k] * rp[2];
            }
        }
        pl[0][ox] = vr * scale + bias;
        pl[1][ox] = vg * scale + bias;
        pl[2][ox] = vb * scale + bias;
    }
}

int px_image_to_tensor(const px_image *img, float sx, float sy, float sw, float sh, int ow, int oh,
                       int bgr, float mean, float scale, float pad, float *out)
{
    if (!out || ow <= 0 || oh <= 0)
        return PX_OK;
    const size_t plane = (size_t)ow * (size_t)oh;
    const float padv = (pad - mean) * scale;
    if (!img || !img->px || img->w <= 0 || img->h <= 0 || !(sw > 0.0f) || !(sh > 0.0f) ||
        !isfinite(sx) || !isfinite(sy) || !isfinite(sw) || !isfinite(sh)) {
        fill_value(out, 3 * plane, padv);
        return PX_OK;
    }
    const int cn = img->channels;
    if (sw == (float)ow && sh == (float)oh && sx == floorf(sx) && sy == floorf(sy) &&
        fabsf(sx) < 1e8f && fabsf(sy) < 1e8f) {
        copy_exact(img, (long)sx, (long)sy, ow, oh, bgr, mean, scale, pad, out);
        return PX_OK;
    }
    const int mtx = max_taps((double)sw / ow, img->w), mty = max_taps((double)sh / oh, img->h);

    /* one block: x tables, y tables, the pair tables, then the float row
     * (3 floats of slack: a single tap read as a pair looks one pixel on) */
    size_t nx = (size_t)ow, ny = (size_t)oh;
    size_t bytes = (nx + ny) * (3 * sizeof(int) + sizeof(float)) +
                   (nx * (size_t)mtx + ny * (size_t)mty) * sizeof(float) +
                   nx * (sizeof(int) + 2 * sizeof(float)) +
                   ((size_t)img->w * 3 + 3) * sizeof(float) + 64;
    char *mem = px_malloc(bytes);
    if (!mem) {
        fill_value(out, 3 * plane, padv);
        return PX_ENOMEM;
    }
    char *p = mem;
    axis_taps tx, ty;
    tx.first = (int *)p, p += nx * sizeof(int);
    tx.count = (int *)p, p += nx * sizeof(int);
    tx.off = (int *)p, p += nx * sizeof(int);
    ty.first = (int *)p, p += ny * sizeof(int);
    ty.count = (int *)p, p += ny * sizeof(int);
    ty.off = (int *)p, p += ny * sizeof(int);
    int *pair_at = (int *)p;
    p += nx * sizeof(int);
    tx.padw = (float *)p, p += nx * sizeof(float);
    ty.padw = (float *)p, p += ny * sizeof(float);
    float *pair_w0 = (float *)p;
    p += nx * sizeof(float);
    float *pair_w1 = (float *)p;
    p += nx * sizeof(float);
    tx.w = (float *)p, p += nx * (size_t)mtx * sizeof(float);
    ty.w = (float *)p, p += ny * (size_t)mty * sizeof(float);
    float *row = (float *)p; /* [xhi - xlo][3] + 3, source columns the x taps touch */

    build_axis(&tx, sx, sw, ow, img->w);
    build_axis(&ty, sy, sh, oh, img->h);

    int xlo = img->w, xhi = 0;
    for (int i = 0; i < ow; i++)
        if (tx.count[i] > 0) {
            if (tx.first[i] < xlo)
                xlo = tx.first[i];
            if (tx.first[i] + tx.count[i] > xhi)
                xhi = tx.first[i] + tx.count[i];
        }
    const size_t nrow = xhi > xlo ? (size_t)(xhi - xlo) * 3 : 0;
    row[nrow] = row[nrow + 1] = row[nrow + 2] = 0.0f;
    /* Columns pa..pb-1 one or two taps inside the image (bilinear, the usual
     * case): the same sums as the general loop below, with a single tap
     * taken as the pair (1, 0), branch-free: 1 * a + 0 * b is a. The
     * columns around that run (a tile reaching past the image's edge: its
     * padding) take the general loop. */
    int pa = 0;
    while (pa < ow && !is_pair(&tx, pa))
        pa++;
    int pb = pa;
    while (pb < ow && is_pair(&tx, pb))
        pb++;
    for (int i = pa; i < pb; i++) {
        const float *wx = tx.w + tx.off[i];
        pair_at[i] = (tx.first[i] - xlo) * 3;
        pair_w0[i] = wx[0];
        pair_w1[i] = tx.count[i] == 2 ? wx[1] : 0.0f;
    }
    float *plane_r = out + (bgr ? 2 : 0) * plane;
    float *plane_g = out + plane;
    float *plane_b = out + (bgr ? 0 : 2) * plane;
    const float bias = -mean * scale;

    for (int oy = 0; oy < oh; oy++) {
        /* vertical: row[k] = sum_r w_r * src[r][xlo*3 + k] + padw * pad */
        const float pw = ty.padw[oy] * pad;
        const int yc = ty.count[oy];
        const float *wy = ty.w + ty.off[oy];
        if (yc == 0) {
            fill_value(row, nrow, pad);
        } else if (cn == 3) {
            const uint8_t *src =
                img->px + (size_t)ty.first[oy] * img->stride + (size_t)xlo * (size_t)cn;
            if (yc == 2)
                rows2(src, src + img->stride, wy[0], wy[1], pw, nrow, row);
            else {
                row1(src, wy[0], pw, nrow, row);
                for (int r = 1; r < yc; r++)
                    row_add(src + (size_t)r * img->stride, wy[r], nrow, row);
            }
        } else {
            for (int r = 0; r < yc; r++) {
                const uint8_t *src =
                    img->px + (size_t)(ty.first[oy] + r) * img->stride + (size_t)xlo * (size_t)cn;
                const float wv = wy[r];
                const float add = r == 0 ? pw : 0.0f;
                for (size_t k = 0, s4 = 0; k < nrow; k += 3, s4 += 4) {
                    float r0 = wv * (float)src[s4], g0 = wv * (float)src[s4 + 1],
                          b0 = wv * (float)src[s4 + 2];
                    if (r == 0) {
                        row[k] = r0 + add;
                        row[k + 1] = g0 + add;
                        row[k + 2] = b0 + add;
                    } else {
                        row[k] += r0;
                        row[k + 1] += g0;
                        row[k + 2] += b0;
                    }
                }
            }
        }
        const size_t o = (size_t)oy * (size_t)ow;
        float *const pl[3] = {plane_r + o, plane_g + o, plane_b + o};
        hgeneral(&tx, row, xlo, 0, pa, pad, scale, bias, pl);
        if (pb > pa)
            hpairs(row, pair_at + pa, pair_w0 + pa, pair_w1 + pa, pb - pa, scale, bias, pl[0] + pa,
                   pl[1] + pa, pl[2] + pa);
        hgeneral(&tx, row, xlo, pb, ow, pad, scale, bias, pl);
    }
    free(mem);
    return PX_OK;
}

/* Three planes back to interleaved bytes, rounded and clamped. */
PX_BODY planes_to_rgb_body(const float *restrict r, const float *restrict g,
                           const float *restrict b, int n, uint8_t *restrict d)
{
    for (int x = 0; x < n; x++) {
        const float v[3] = {r[x], g[x], b[x]};
        for (int c = 0; c < 3; c++)
            d[3 * x + c] = (uint8_t)(v[c] <= 0.0f ? 0 : v[c] >= 255.0f ? 255 : (int)(v[c] + 0.5f));
    }
}
PX_TWIN(planes_to_rgb,
        (const float *restrict r, const float *restrict g, const float *restrict b, int n,
         uint8_t *restrict d),
        (r, g, b, n, d))

int px_image_resample(const px_image *img, float sx, float sy, float sw, float sh, int ow, int oh,
                      px_image *dst)
{
    memset(dst, 0, sizeof *dst);
    if (!img || !img->px || ow <= 0 || oh <= 0 || !(sw > 0.0f) || !(sh > 0.0f))
        return PX_EINVAL;
    const size_t plane = (size_t)ow * (size_t)oh;
    float *t = px_malloc(sizeof *t * 3 * plane);
    if (!t || px_image_alloc(dst, ow, oh, 3) != PX_OK) {
        free(t);
        return PX_ENOMEM;
    }
    int st = px_image_to_tensor(img, sx, sy, sw, sh, ow, oh, 0, 0.0f, 1.0f, 0.0f, t);
    if (st == PX_OK)
        for (int y = 0; y < oh; y++) {
            const size_t o = (size_t)y * (size_t)ow;
            planes_to_rgb(t + o, t + plane + o, t + 2 * plane + o, ow,
                          dst->px + (size_t)y * dst->stride);
        }
    free(t);
    if (st != PX_OK)
        px_image_free(dst);
    return st;
}

/*
 * Automatic checks on every rendered image, all on luma:
 *  - near-uniform: standard deviation of luma below a threshold (blank or
 *    flat renders, a classic failure of a diverged sampler);
 *  - too dark / too bright: mean luma outside a band;
 *  - blur: variance of the 4-neighbour Laplacian, measured on a copy reduced
 *    to at most 512 pixels on the long side by box averaging, so the
 *    threshold means the same for a 512 and a 2048 pixel render;
 *  - faces: our face detector (px_face); stock images must not carry
 *    generated faces, which are often distorted. Reject or flag.
 * Perceptual-hash duplicates are judged by the pipeline against the whole
 * pool; this file computes the hash: 32x32 luma (area average), 2-D DCT-II,
 * the 8x8 lowest frequencies, one bit per coefficient above their median.
 */
#include "gen_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face/px_face.h"

px_gen_check_opts px_gen_check_opts_default(void)
{
    px_gen_check_opts o = {.min_stddev = 12,
                           .min_mean = 28,
                           .max_mean = 235,
                           .min_blur = 30,
                           .phash_distance = 4,
                           .faces = PX_GEN_FACES_OFF,
                           .face_detector = NULL};
    return o;
}

int px_gen_hamming(uint64_t a, uint64_t b)
{
    return __builtin_popcountll(a ^ b);
}

/* Area-averages the luma of img into an ow x oh float grid. */
static void luma_resample(const px_image *img, int ow, int oh, float *out)
{
    for (int oy = 0; oy < oh; oy++) {
        int y0 = (int)((int64_t)oy * img->h / oh), y1 = (int)((int64_t)(oy + 1) * img->h / oh);
        if (y1 <= y0)
            y1 = y0 + 1;
        for (int ox = 0; ox < ow; ox++) {
            int x0 = (int)((int64_t)ox * img->w / ow), x1 = (int)((int64_t)(ox + 1) * img->w / ow);
            if (x1 <= x0)
                x1 = x0 + 1;
            double acc = 0;
            for (int y = y0; y < y1 && y < img->h; y++) {
                const uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x0 * 3;
                for (int x = x0; x < x1 && x < img->w; x++, p += 3)
                    acc += 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            }
            out[oy * ow + ox] = (float)(acc / ((double)(y1 - y0) * (x1 - x0)));
        }
    }
}

uint64_t px_gen_phash(const px_image *img)
{
    float g[32 * 32], tmp[8 * 32], d[64];
    luma_resample(img, 32, 32, g);
    static const double pi = 3.14159265358979323846;
    double cs[8][32]; /* DCT-II basis: 256 cosines per call instead of 10,000 */
    for (int u = 0; u < 8; u++)
        for (int y = 0; y < 32; y++)
            cs[u][y] = cos((2 * y + 1) * u * pi / 64);
    /* separable DCT-II, keeping only the 8 lowest frequencies per axis */
    for (int u = 0; u < 8; u++)
        for (int x = 0; x < 32; x++) {
            double s = 0;
            for (int y = 0; y < 32; y++)
                s += g[y * 32 + x] * cs[u][y];
            tmp[u * 32 + x] = (float)s;
        }
    for (int u = 0; u < 8; u++)
        for (int v = 0; v < 8; v++) {
            double s = 0;
            for (int x = 0; x < 32; x++)
                s += tmp[u * 32 + x] * cs[v][x];
            d[u * 8 + v] = (float)s;
        }
    /* median of the 63 AC terms (the DC term only says how bright it is) */
    float sorted[63];
    memcpy(sorted, d + 1, sizeof sorted);
    for (int i = 1; i < 63; i++) {
        float k = sorted[i];
        int j = i - 1;
        while (j >= 0 && sorted[j] > k) {
            sorted[j + 1] = sorted[j];
            j--;
        }
        sorted[j + 1] = k;
    }
    float med = sorted[31];
    uint64_t h = 0;
    for (int i = 0; i < 64; i++)
        if (d[i] > med)
            h |= 1ULL << i;
    return h;
}

int px_gen_check_image(const px_image *img, const px_gen_check_opts *o,
                       px_gen_check_result *res, px_err *err)
{
    memset(res, 0, sizeof *res);
    res->faces = -1;
    if (!img || !img->px || img->w < 8 || img->h < 8)
        return px_err_set(err, PX_EINVAL, "check: image smaller than 8x8");
    if (img->channels != 3 || img->stride < (size_t)img->w * 3)
        return px_err_set(err, PX_EINVAL, "check: expected 3-channel RGB, got %d channels",
                          img->channels);
    px_gen_check_opts def = px_gen_check_opts_default();
    if (!o)
        o = &def;
    int longest = img->w > img->h ? img->w : img->h;
    int f = (longest + 511) / 512;
    if (f < 1)
        f = 1;
    int sw = img->w / f, sh = img->h / f;
    if (sw < 8)
        sw = 8;
    if (sh < 8)
        sh = 8;
    float *g = px_malloc((size_t)sw * sh * sizeof *g);
    if (!g)
        return px_err_set(err, PX_ENOMEM, "check: out of memory");
    if (f == 1 && sw == img->w && sh == img->h) {
        for (int y = 0; y < sh; y++)
            for (int x = 0; x < sw; x++) {
                const uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * 3;
                g[(size_t)y * sw + x] = (float)(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
            }
    } else {
        luma_resample(img, sw, sh, g);
    }
    double s = 0, s2 = 0;
    for (size_t i = 0; i < (size_t)sw * sh; i++) {
        s += g[i];
        s2 += (double)g[i] * g[i];
    }
    double n = (double)sw * sh;
    res->mean = s / n;
    double var = s2 / n - res->mean * res->mean;
    res->stddev = var > 0 ? sqrt(var) : 0;
    double l = 0, l2 = 0;
    for (int y = 1; y < sh - 1; y++)
        for (int x = 1; x < sw - 1; x++) {
            const float *p = g + (size_t)y * sw + x;
            double v = p[-1] + p[1] + p[-sw] + p[sw] - 4.0 * p[0];
            l += v;
            l2 += v * v;
        }
    double ln = (double)(sw - 2) * (sh - 2);
    res->blur = l2 / ln - (l / ln) * (l / ln);
    free(g);
    res->phash = px_gen_phash(img);

    snprintf(res->status, sizeof res->status, "accepted");
    if (res->stddev < o->min_stddev) {
        snprintf(res->reason, sizeof res->reason, "near-uniform (luma stddev %.1f < %.1f)",
                 res->stddev, o->min_stddev);
    } else if (res->mean < o->min_mean) {
        snprintf(res->reason, sizeof res->reason, "too dark (mean luma %.1f < %.1f)", res->mean,
                 o->min_mean);
    } else if (res->mean > o->max_mean) {
        snprintf(res->reason, sizeof res->reason, "too bright (mean luma %.1f > %.1f)", res->mean,
                 o->max_mean);
    } else if (res->blur < o->min_blur) {
        snprintf(res->reason, sizeof res->reason, "blurry (Laplacian variance %.1f < %.1f)",
                 res->blur, o->min_blur);
    }
    if (res->reason[0]) {
        snprintf(res->status, sizeof res->status, "rejected");
        return PX_OK;
    }
    if (o->faces != PX_GEN_FACES_OFF && o->face_detector) {
        px_face_detect_opts fo = px_face_detect_opts_default();
        fo.min_face = 24; /* a face smaller than this is not a distorted-face risk on stock art */
        px_face *faces = NULL;
        int nf = 0;
        int st = px_face_detect((px_face_detector *)o->face_detector, img, &fo, &faces, &nf, NULL,
                                err);
        free(faces);
        if (st != PX_OK)
            return px_err_prefix(err, st, "face check");
        res->faces = nf;
        if (nf > 0) {
            snprintf(res->reason, sizeof res->reason, "%d face%s found", nf, nf > 1 ? "s" : "");
            snprintf(res->status, sizeof res->status, "%s",
                     o->faces == PX_GEN_FACES_REJECT ? "rejected" : "flagged");
        }
    }
    return PX_OK;
}

/*
 * bench_anonymize: what anonymizing a big photo costs, and how small a face
 * the detector finds. Prints figures; never passes or fails on time.
 *
 * 1. End to end on a 12-megapixel JPEG (4000x3000), built here by enlarging
 *    a crowd photo from ../shared/testdata (so it has many faces): decode,
 *    detect at full coverage (default --min-face 20), mask + conceal, encode,
 *    in ms per stage (best of `runs`), with the pass count.
 * 2. Smallest face the network finds in one pass ("net_min_face", the number
 *    the tiling plan is built on): a face pasted into a 640x640 canvas at
 *    widths 6..40 px, 12 positions each, one pass at scale 1.
 * 3. Smallest face found per --min-face setting on a 24-megapixel canvas
 *    with faces pasted at widths 8..32 px: found/pasted per width, passes, ms.
 *
 * usage: bench_anonymize [--threads N] [--runs N] [--model PATH] [--skip-sweep]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anon/px_anon.h"

#ifndef PX_SHARED_DIR
#define PX_SHARED_DIR "../shared"
#endif
#define FACES PX_SHARED_DIR "/testdata/faces"

static int load(const char *path, px_image *img)
{
    uint8_t *d;
    size_t n;
    px_err e;
    px_decode_opts o = px_decode_opts_default();
    if (px_read_file(path, (size_t)1 << 28, &d, &n, &e) != PX_OK ||
        px_image_decode(d, n, &o, img, NULL, &e) != PX_OK) {
        fprintf(stderr, "bench_anonymize: %s: %s\n", path, e.msg);
        return -1;
    }
    free(d);
    return 0;
}

/* Resamples the rectangle (sx, sy, sw, sh) of src to a w x h RGB image,
 * using the tensor sampler (area-averaged when shrinking, bilinear when
 * enlarging) so the bench needs no resizer of its own. */
static int resample(const px_image *src, float sx, float sy, float sw, float sh, int w, int h,
                    px_image *dst)
{
    float *t = malloc(sizeof *t * 3 * (size_t)w * (size_t)h);
    if (!t || px_image_alloc(dst, w, h, 3) != PX_OK) {
        free(t);
        return -1;
    }
    px_image_to_tensor(src, sx, sy, sw, sh, w, h, 0, 0.0f, 1.0f, 0.0f, t);
    const size_t plane = (size_t)w * (size_t)h;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = t[c * plane + (size_t)y * (size_t)w + (size_t)x];
                v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
                dst->px[(size_t)y * dst->stride + (size_t)x * 3 + c] = (uint8_t)lrintf(v);
            }
    free(t);
    return 0;
}

static void fill_background(px_image *img)
{
    uint32_t rng = 7;
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            rng = rng * 1664525u + 1013904223u;
            const uint8_t v = (uint8_t)(110 + (rng >> 28) + ((x / 40 + y / 40) & 1) * 12);
            uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * 3;
            p[0] = v;
            p[1] = (uint8_t)(v + 5);
            p[2] = (uint8_t)(v - 5);
        }
}

/* Pastes `face` (its box in photo pixels, with half a face of context)
 * scaled to width `size` at (x, y); returns the pasted face's box. */
static px_face paste(px_image *canvas, const px_image *photo, const px_face *face, float size,
                     int x, int y)
{
    const float fw = face->x2 - face->x1, fh = face->y2 - face->y1, k = size / fw;
    const float cx0 = fmaxf(face->x1 - 0.5f * fw, 0), cy0 = fmaxf(face->y1 - 0.5f * fh, 0);
    const float cx1 = fminf(face->x2 + 0.5f * fw, (float)photo->w);
    const float cy1 = fminf(face->y2 + 0.5f * fh, (float)photo->h);
    const int pw = (int)lrintf((cx1 - cx0) * k), ph = (int)lrintf((cy1 - cy0) * k);
    px_image patch;
    px_face out = *face;
    if (pw < 1 || ph < 1 || resample(photo, cx0, cy0, cx1 - cx0, cy1 - cy0, pw, ph, &patch))
        return out;
    for (int r = 0; r < ph && y + r < canvas->h; r++)
        memcpy(canvas->px + (size_t)(y + r) * canvas->stride + (size_t)x * 3,
               patch.px + (size_t)r * patch.stride,
               (size_t)(x + pw <= canvas->w ? pw : canvas->w - x) * 3);
    px_image_free(&patch);
    out.x1 = (float)x + (face->x1 - cx0) * (float)pw / (cx1 - cx0);
    out.y1 = (float)y + (face->y1 - cy0) * (float)ph / (cy1 - cy0);
    out.x2 = (float)x + (face->x2 - cx0) * (float)pw / (cx1 - cx0);
    out.y2 = (float)y + (face->y2 - cy0) * (float)ph / (cy1 - cy0);
    return out;
}

static int found(const px_face *want, const px_face *got, int n)
{
    for (int i = 0; i < n; i++)
        if (px_face_iou(want, &got[i]) >= 0.4f)
            return 1;
    return 0;
}

/* Four frontal faces of ultraface_imgs_2.jpg (reference_boxes.json). */
static const px_face sample_faces[4] = {
    {302.6f, 96.6f, 405.5f, 233.3f, 1, {{0}}, 0},
    {549.4f, 76.9f, 651.3f, 217.7f, 1, {{0}}, 0},
    {125.9f, 107.3f, 224.6f, 246.0f, 1, {{0}}, 0},
    {719.2f, 127.3f, 829.5f, 276.9f, 1, {{0}}, 0},
};

static void bench_end_to_end(px_face_detector *det, int runs)
{
    px_image crowd, big;
    if (load(FACES "/ultraface_imgs_27.jpg", &crowd) ||
        resample(&crowd, 0, 0, (float)crowd.w, (float)crowd.h, 4000, 3000, &big))
        return;
    px_buf jpg = {0};
    px_err e;
    if (px_image_encode(&big, PX_FMT_JPEG, 90, &jpg, &e) != PX_OK) {
        fprintf(stderr, "bench_anonymize: encode: %s\n", e.msg);
        return;
    }
    printf("end to end: 4000x3000 JPEG (%.1f MB, the crowd photo enlarged), best of %d runs\n",
           (double)jpg.len / 1e6, runs);
    px_anon_opts o = px_anon_opts_default();
    o.seed = 1;
    double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    int faces = 0, passes = 0;
    for (int r = 0; r < runs; r++) {
        px_anon_result res;
        const double t0 = px_now_ms();
        if (px_anon_process(det, jpg.data, jpg.len, &o, &res, &e) != PX_OK) {
            fprintf(stderr, "bench_anonymize: %s\n", e.msg);
            return;
        }
        const double total = px_now_ms() - t0;
        const double v[5] = {res.ms_decode, res.ms_detect, res.ms_conceal, res.ms_encode, total};
        for (int k = 0; k < 5; k++)
            best[k] = v[k] < best[k] ? v[k] : best[k];
        faces = res.n_faces;
        passes = res.detect_stats.passes;
        px_anon_result_free(&res);
    }
    printf("  decode %8.1f ms\n  detect %8.1f ms  (%d passes, %d faces)\n  conceal %7.1f ms\n"
           "  encode %8.1f ms\n  total  %8.1f ms\n",
           best[0], best[1], passes, faces, best[2], best[3], best[4]);
    px_buf_free(&jpg);
    px_image_free(&big);
    px_image_free(&crowd);
}

static void bench_net_min_face(px_face_detector *det, const px_image *photo)
{
    printf("single pass at scale 1 (640x640 canvas): faces found by width\n");
    px_face_detect_opts o = px_face_detect_opts_default();
    o.max_passes = 1;
    for (int size = 6; size <= 40; size += 2) {
        int hit = 0, total = 0;
        for (int rep = 0; rep < 3; rep++) {
            px_image canvas;
            if (px_image_alloc(&canvas, 640, 640, 3) != PX_OK)
                return;
            fill_background(&canvas);
            px_face want[16];
            int nw = 0;
            for (int i = 0; i < 16; i++) {
                const int x = 40 + (i % 4) * 150 + rep * 7, y = 40 + (i / 4) * 150 + rep * 5;
                want[nw++] = paste(&canvas, photo, &sample_faces[(i + rep) % 4], (float)size, x, y);
            }
            px_face *f;
            int n;
            if (px_face_detect(det, &canvas, &o, &f, &n, NULL, NULL) == PX_OK) {
                for (int i = 0; i < nw; i++)
                    hit += found(&want[i], f, n);
                total += nw;
                free(f);
            }
            px_image_free(&canvas);
        }
        printf("  %2d px: %2d/%d\n", size, hit, total);
    }
}

static void bench_min_face_settings(px_face_detector *det, const px_image *photo)
{
    const int W = 6000, H = 4000;
    px_image canvas;
    if (px_image_alloc(&canvas, W, H, 3) != PX_OK)
        return;
    fill_background(&canvas);
    static const int sizes[] = {8, 10, 12, 16, 20, 24, 32, 48};
    enum { NS = sizeof sizes / sizeof sizes[0], PER = 6 };
    px_face want[NS * PER];
    for (int s = 0; s < NS; s++)
        for (int k = 0; k < PER; k++) {
            const int x = 200 + k * 950 + s * 13, y = 200 + s * 470 + k * 17;
            want[s * PER + k] = paste(&canvas, photo, &sample_faces[(s + k) % 4], (float)sizes[s], x, y);
        }
    printf("24 MP canvas (6000x4000), faces pasted at widths 8..48 px, %d each:\n", PER);
    static const int settings[] = {40, 20, 12};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        px_face_detect_opts o = px_face_detect_opts_default();
        o.min_face = settings[i];
        px_face *f;
        int n;
        px_face_stats st;
        const double t0 = px_now_ms();
        if (px_face_detect(det, &canvas, &o, &f, &n, &st, NULL) != PX_OK)
            break;
        const double ms = px_now_ms() - t0;
        printf("  --min-face %2d: %3d passes, %6.0f ms; found per width:", settings[i], st.passes, ms);
        for (int s = 0; s < NS; s++) {
            int hit = 0;
            for (int k = 0; k < PER; k++)
                hit += found(&want[s * PER + k], f, n);
            printf(" %d:%d/%d", sizes[s], hit, PER);
        }
        printf("\n");
        free(f);
    }
    px_image_free(&canvas);
}

int main(int argc, char **argv)
{
    int threads = 0, runs = 3, sweep = 1;
    char model[4096];
    const char *model_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_arg = argv[++i];
        else if (!strcmp(argv[i], "--skip-sweep"))
            sweep = 0;
        else {
            fprintf(stderr, "usage: bench_anonymize [--threads N] [--runs N] [--model PATH] "
                            "[--skip-sweep]\n");
            return 2;
        }
    }
    if (runs < 1)
        runs = 1;
    px_err e;
    px_face_detector *det;
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, 1, threads > 0 ? threads : px_cpu_count(), 1};
    if (px_anon_find_model(model_arg, NULL, model, sizeof model, &e) != PX_OK ||
        px_face_detector_create(model, &dopts, &det, &e) != PX_OK) {
        fprintf(stderr, "bench_anonymize: %s\n", e.msg);
        return 3;
    }
    printf("model %s, %d single-threaded sessions (passes spread over them, as the CLI does)\n", model,
           threads > 0 ? threads : px_cpu_count());
    bench_end_to_end(det, runs);
    px_image photo;
    if (sweep && load(FACES "/ultraface_imgs_2.jpg", &photo) == 0) {
        bench_net_min_face(det, &photo);
        bench_min_face_settings(det, &photo);
        px_image_free(&photo);
    }
    px_face_detector_destroy(det);
    return 0;
}

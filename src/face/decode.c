/*
 * Box decoding for the two detector families, and the box arithmetic (IoU,
 * greedy NMS) that merges detections from overlapping passes.
 *
 * YuNet 2023mar is anchor-free: every cell (row, col) of the stride-8/16/32
 * grids predicts a class score and an objectness (both already through a
 * sigmoid in the exported graph), a box as an offset of its centre from the
 * cell corner plus log width/height in stride units, and five landmarks as
 * offsets in stride units. That is the decoding OpenCV's FaceDetectorYN does
 * for this model; we keep OpenCV's landmark order (right eye, left eye, nose
 * tip, right mouth corner, left mouth corner, "right" as seen in the photo's
 * subject). UltraFace emits one softmaxed score pair and normalised corners
 * per prior, already decoded by the exported graph.
 */
#include "px_face.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scores come from a sigmoid, but clamp anyway so a slightly-off engine can
 * never produce NaN from sqrt of a negative product. */
static float clamp01(float v)
{
    if (!(v > 0.0f))
        return 0.0f;
    return v > 1.0f ? 1.0f : v;
}

int px_face_decode_yunet(const float *cls, const float *obj, const float *bbox, const float *kps,
                         int in_w, int in_h, int stride, float thr, px_face *faces, int cap)
{
    if (!cls || !obj || !bbox || stride <= 0 || in_w <= 0 || in_h <= 0 || cap < 0)
        return 0;
    const int cols = in_w / stride, rows = in_h / stride;
    int n = 0;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            const int i = r * cols + c;
            const float score = sqrtf(clamp01(cls[i]) * clamp01(obj[i]));
            if (!(score >= thr))
                continue;
            if (n >= cap)
                return n;
            const float *b = bbox + (size_t)i * 4;
            /* exp of a wild logit would overflow into inf boxes; 12 is e^12
             * strides, far larger than any input */
            const float lw = b[2] > 12.0f ? 12.0f : b[2], lh = b[3] > 12.0f ? 12.0f : b[3];
            const float cx = ((float)c + b[0]) * (float)stride;
            const float cy = ((float)r + b[1]) * (float)stride;
            const float w = expf(lw) * (float)stride, h = expf(lh) * (float)stride;
            px_face *f = &faces[n++];
            memset(f, 0, sizeof *f);
            f->x1 = cx - 0.5f * w;
            f->y1 = cy - 0.5f * h;
            f->x2 = cx + 0.5f * w;
            f->y2 = cy + 0.5f * h;
            f->score = score;
            if (kps) {
                const float *k = kps + (size_t)i * 10;
                for (int j = 0; j < 5; j++) {
                    f->lm[j][0] = ((float)c + k[2 * j]) * (float)stride;
                    f->lm[j][1] = ((float)r + k[2 * j + 1]) * (float)stride;
                }
                f->has_landmarks = 1;
            }
        }
    }
    return n;
}

int px_face_decode_ultraface(const float *scores, const float *boxes, int n_priors, int in_w,
                             int in_h, float thr, px_face *faces, int cap)
{
    if (!scores || !boxes || n_priors <= 0 || cap < 0)
        return 0;
    int n = 0;
    for (int i = 0; i < n_priors; i++) {
        const float score = clamp01(scores[(size_t)i * 2 + 1]);
        if (!(score >= thr))
            continue;
        if (n >= cap)
            return n;
        const float *b = boxes + (size_t)i * 4;
        px_face *f = &faces[n++];
        memset(f, 0, sizeof *f);
        f->x1 = b[0] * (float)in_w;
        f->y1 = b[1] * (float)in_h;
        f->x2 = b[2] * (float)in_w;
        f->y2 = b[3] * (float)in_h;
        f->score = score;
    }
    return n;
}

float px_face_iou(const px_face *a, const px_face *b)
{
    const float ix1 = fmaxf(a->x1, b->x1), iy1 = fmaxf(a->y1, b->y1);
    const float ix2 = fminf(a->x2, b->x2), iy2 = fminf(a->y2, b->y2);
    const float iw = ix2 - ix1, ih = iy2 - iy1;
    if (!(iw > 0.0f) || !(ih > 0.0f))
        return 0.0f;
    const float inter = iw * ih;
    const float area_a = fmaxf(a->x2 - a->x1, 0.0f) * fmaxf(a->y2 - a->y1, 0.0f);
    const float area_b = fmaxf(b->x2 - b->x1, 0.0f) * fmaxf(b->y2 - b->y1, 0.0f);
    const float uni = area_a + area_b - inter;
    return uni > 0.0f ? inter / uni : 0.0f;
}

/* Descending score; ties broken by position so the order (and so the NMS
 * result) never depends on qsort's instability. */
static int by_score_desc(const void *pa, const void *pb)
{
    const px_face *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->y1 != b->y1)
        return a->y1 < b->y1 ? -1 : 1;
    if (a->x1 != b->x1)
        return a->x1 < b->x1 ? -1 : 1;
    return 0;
}

void px_face_sort(px_face *faces, int n)
{
    if (faces && n > 1)
        qsort(faces, (size_t)n, sizeof *faces, by_score_desc);
}

int px_face_nms(px_face *faces, int n, float iou)
{
    if (!faces || n <= 0)
        return 0;
    px_face_sort(faces, n);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        int keep = 1;
        for (int j = 0; j < kept; j++) {
            if (px_face_iou(&faces[i], &faces[j]) > iou) {
                keep = 0;
                break;
            }
        }
        if (keep)
            faces[kept++] = faces[i];
    }
    return kept;
}

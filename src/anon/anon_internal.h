/*
 * Pieces of the anonymize job shared between its files (not a public API):
 * quarter-turn rotations of images and of boxes, image resampling, and the
 * face list helpers used by the coverage passes and the self-check.
 */
#ifndef PX_ANON_INTERNAL_H
#define PX_ANON_INTERNAL_H

#include "px_anon.h"

/* Turns src by k quarter turns clockwise (k in 0..3) into a new RGB(A)
 * image of the same channel count. PX_ENOMEM; dst is zeroed then. */
int anon_rotate(const px_image *src, int k, px_image *dst, px_err *err);
/* The same into dst (of src's channel count) with the turned image's top
 * left corner at (x0, y0); dst must hold it. */
void anon_rotate_into(const px_image *src, int k, px_image *dst, int x0, int y0);

/* Clips the boxes of n faces to a w x h image (landmarks left as they are). */
void anon_clip_faces(px_face *f, int n, int w, int h);

/* Maps face f found in the image turned k quarter turns clockwise back to
 * the unturned w x h image (box corners and landmarks). */
void anon_unrotate_face(int k, int w, int h, px_face *f);

/* Resamples the rectangle (sx, sy, sw, sh) of src (may extend past it: black)
 * into an ow x oh RGB image (area mean when shrinking, bilinear when
 * enlarging). PX_ENOMEM / PX_EINVAL. */
int anon_resample(const px_image *src, float sx, float sy, float sw, float sh, int ow, int oh,
                  px_image *dst, px_err *err);

/* A growable face list. */
typedef struct anon_faces {
    px_face *v;
    int n, cap;
} anon_faces;
int anon_faces_push(anon_faces *l, const px_face *f);

/* The self-check (verify.c): re-detects around every concealed face at the
 * scales given in the docs, conceals again (more strongly, at last with
 * noise) every face still found, up to a few rounds. */
typedef struct anon_verify_out {
    int verified;     /* 1: the last check found no face */
    int strengthened; /* faces concealed again more strongly */
    int passes;       /* network runs */
    int rounds;
    int unresolved; /* faces still found at the last level (then verified is 0) */
} anon_verify_out;
int anon_verify(px_face_detector *det, px_image *img, anon_faces *faces, const px_anon_opts *o,
                uint64_t seed, float s0, anon_verify_out *out, px_err *err);

/* The self-check's first look laid out without running it (for tests): the
 * crops of faces[0..n) that mode's check looks at (s0: the whole-image
 * scale), packed into canvases of at most net a side. Up to cap crops go to
 * out (canvas index, place and size in network pixels); returns how many
 * there are (-1: out of memory) and sets *canvases. */
typedef struct anon_check_crop {
    int canvas, x, y, w, h;
} anon_check_crop;
int anon_check_layout(const px_face *faces, int n, float s0, int net, px_conceal_mode mode,
                      anon_check_crop *out, int cap, int *canvases);

/* Conceals face f at strength level `level` (0: as asked; 1, 2: stronger
 * and with grain; 3: noise; 4: noise under a 1.5x larger mask). */
int anon_conceal_one(px_image *img, const px_face *f, const px_anon_opts *o, uint64_t seed,
                     int level, px_err *err);

#endif

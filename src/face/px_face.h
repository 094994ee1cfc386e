/*
 * px_face: face detection on images of any size, and the masks that hide them.
 *
 * A detector wraps one ONNX model (YuNet 2023mar / yunet_n at 640x640, or
 * UltraFace RFB-640 at 640x480) loaded with px_nn. Detection covers the whole
 * image at several scales: one pass over the whole image letterboxed into the
 * network input, then overlapping tiles at finer scales so that small faces in
 * large photos are seen at a size the network finds (see docs/anonymize.md for
 * the smallest face found per setting). Boxes from all passes are merged with
 * NMS.
 *
 * The detector holds the model (read-only) and a pool of sessions; it is
 * thread-safe: concurrent px_face_detect calls each take a session.
 */
#ifndef PX_FACE_H
#define PX_FACE_H

#include "core/px_core.h"
#include "image/px_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_face {
    float x1, y1, x2, y2; /* box in upright image pixels */
    float score;          /* 0..1 */
    float lm[5][2];       /* landmarks in pixels: right eye, left eye, nose tip, right and left
                             mouth corners (the subject's right: image left); 0 when the model
                             has none */
    int has_landmarks;
} px_face;

typedef enum {
    PX_FACE_MODEL_AUTO = 0,
    PX_FACE_MODEL_YUNET, /* 2023mar and yunet_n: anchor-free, cls/obj/bbox/kps per stride */
    PX_FACE_MODEL_ULTRAFACE,
    PX_FACE_MODEL_YUNET_V1, /* 2022mar: prior boxes, loc/conf/iou outputs */
} px_face_model_kind;

typedef struct px_face_detector px_face_detector;

typedef struct px_face_detector_opts {
    px_face_model_kind kind; /* AUTO: from the model's outputs */
    int threads;             /* compute threads per detection (<=0: all cores) */
    int max_sessions;        /* concurrent detections (<=0: 1) */
    /* 1: a detection with several passes (a large image) also runs them on
     * the sessions that are idle at that moment, one thread each, so a
     * detector of N one-thread sessions spends all N cores on one big
     * image. The faces found are the same either way. */
    int spread_passes;
} px_face_detector_opts;

/* Loads the model and creates max_sessions sessions of `threads` compute
 * threads each. PX_OK and *out, or an error naming the file: PX_ENOTFOUND/
 * PX_EIO when it cannot be read, PX_ECORRUPT/PX_EUNSUPPORTED from the
 * engine, PX_EUNSUPPORTED when the outputs match neither model family (or not
 * the requested kind). Free with px_face_detector_destroy. opts may be NULL. */
int px_face_detector_create(const char *model_path, const px_face_detector_opts *opts,
                            px_face_detector **out, px_err *err);
/* The same with the model's input re-declared as net_w x net_h before
 * loading (fully convolutional models such as YuNet 2022mar, whose file
 * says 160x120); net_w or net_h <= 0 keeps the file's size. */
int px_face_detector_create_sized(const char *model_path, const px_face_detector_opts *opts,
                                  int net_w, int net_h, px_face_detector **out, px_err *err);
void px_face_detector_destroy(px_face_detector *d); /* NULL is a no-op */
px_face_model_kind px_face_detector_kind(const px_face_detector *d);
/* Network input size (640x640 for YuNet, 640x480 for UltraFace). */
void px_face_detector_input_size(const px_face_detector *d, int *w, int *h);
/* Face side, in network input pixels, that the tiling plan brings min_face
 * up to: a little above the smallest face the model finds (measured; see
 * docs/anonymize.md). 0 for NULL. */
float px_face_detector_net_min_face(const px_face_detector *d);

typedef struct px_face_detect_opts {
    float score_threshold; /* default 0.6 */
    float nms_iou;         /* default 0.3 */
    int min_face;          /* smallest face side (pixels) to look for; sets the finest tile scale. default 20 */
    int max_passes;        /* cap on network runs per image (0: no cap beyond min_face's) */
    /* 1 (default): passes run the network at the size of what they look at
     * (px_face_plan_fit) where the model allows it (YuNet); 0: every pass at
     * the model's own size (px_face_plan). Same faces either way, up to the
     * plans' different scales; fitted costs less. */
    int fit;
} px_face_detect_opts;
px_face_detect_opts px_face_detect_opts_default(void);

typedef struct px_face_stats {
    int passes;          /* network runs */
    double ms_preprocess, ms_network, ms_postprocess;
} px_face_stats;

/* Detects faces in img. On PX_OK, *faces is a malloc'd array of *n faces
 * sorted by score (caller frees), possibly empty (*faces may be NULL when
 * *n == 0), boxes clipped to the image. opts NULL means the defaults.
 * stats may be NULL. Errors: PX_EINVAL (bad image or options), PX_ENOMEM,
 * or the engine's error; *faces is NULL and *n 0 then. Thread-safe: each
 * call waits for a free session of the detector's pool. */
int px_face_detect(px_face_detector *d, const px_image *img, const px_face_detect_opts *opts,
                   px_face **faces, int *n, px_face_stats *stats, px_err *err);

/* One network run over img as it is (scale 1, the network input fitted to
 * it): for canvases a caller composed at network scale (crops of several
 * places, turned copies). img at most px_face_detector_max_side on each
 * side; larger, or a model of one size, gets px_face_detect's single
 * letterboxed pass instead. Faces with score >= threshold, in img pixels,
 * as px_face_detect returns them. */
int px_face_detect_canvas(px_face_detector *d, const px_image *img, float threshold,
                          px_face **faces, int *n, px_err *err);

/* ---- lower-level pieces, exposed for tests ---- */

/* One network run: the source rectangle (sx, sy, sw, sh) in image pixels is
 * sampled into the whole network input, so scale = net_w / sw network
 * pixels per image pixel. The rectangle may extend past the image (padding).
 * level 0 is the whole-image pass, 1.. are successively finer tile levels. */
typedef struct px_face_pass {
    float sx, sy, sw, sh;
    float scale;
    int level;
    int net_w, net_h; /* the network input the rectangle is sampled into */
} px_face_pass;

/* Plans the passes that cover an img_w x img_h image so that a face of
 * min_face image pixels reaches net_min_face network pixels in some pass:
 * the whole image letterboxed, then tile levels whose scales grow by at most
 * 3x per level, tiles at each level overlapping by more than the largest face
 * the previous level could miss. When max_passes > 0 and the plan is longer,
 * the finest scale is lowered until it fits (smaller faces may be missed).
 * Writes up to cap passes and returns the total count (so a call with cap 0
 * sizes the array); returns 0 only for a non-positive size. Thread-safe. */
int px_face_plan(int img_w, int img_h, int net_w, int net_h, float net_min_face, int min_face,
                 int max_passes, px_face_pass *passes, int cap);

/* The same plan with network inputs fitted to what each pass looks at
 * (YuNet runs at any size that is a multiple of 32): sizes are multiples of
 * 64 up to max_side. The whole image at the letterbox scale, fitted (no
 * letterbox padding beyond the rounding); when the finest scale needed is
 * within 1.25x of that and the image fits max_side at it, one pass at the
 * finest scale instead; otherwise tile levels as px_face_plan's, with tiles
 * up to max_side instead of the network's size. Returns the count as
 * px_face_plan does; 0 also for max_side < 64. */
int px_face_plan_fit(int img_w, int img_h, int net_w, int net_h, float net_min_face, int min_face,
                     int max_passes, int max_side, px_face_pass *passes, int cap);
/* Fitted network inputs (px_face_plan_fit, px_face_detect_canvas) come in
 * steps of PX_FACE_FIT_STEP: v network pixels run at px_face_fit_side(v),
 * v rounded up to the next step (at least one step). Callers that compose
 * canvases or tiles size them by it, so they cost what the detector runs. */
#define PX_FACE_FIT_STEP 64
int px_face_fit_side(int v);
/* The largest network side a fitted pass may use: 1024 for YuNet, the
 * model's own size for UltraFace (whose priors are part of the graph). */
int px_face_detector_max_side(const px_face_detector *d);

/* Runs passes a caller planned (tiles of a region at one scale, say) over
 * img, each rectangle sampled straight from img into its network input
 * (past the image: black), and merges their candidates as px_face_detect
 * merges its own plan's (a box cut by a tile edge inside the image gives way
 * to the same face seen whole, NMS, boxes inside bigger ones). Network sizes:
 * multiples of 32 up to px_face_detector_max_side for a fitted detector, the
 * model's own size otherwise; PX_EINVAL names a pass that breaks this.
 * level > 0 marks a tile (its edges inside the image may cut faces). Faces
 * with score >= threshold, in img pixels. stats may be NULL. Thread-safe as
 * px_face_detect is. */
int px_face_detect_passes(px_face_detector *d, const px_image *img, const px_face_pass *passes,
                          int n_pass, float threshold, px_face **faces, int *n,
                          px_face_stats *stats, px_err *err);

/* Sorts by score, descending (ties by position, so the order is stable). */
void px_face_sort(px_face *faces, int n);

/* Greedy NMS: sorts by score descending, keeps boxes whose IoU with every kept
 * box is <= iou. Compacts in place; returns the new count. */
int px_face_nms(px_face *faces, int n, float iou);
float px_face_iou(const px_face *a, const px_face *b);

/* Decodes YuNet 2023mar-style outputs of one stride into faces with
 * score = sqrt(cls*obj) >= thr. cls/obj (N,), bbox (N,4) [dx,dy,log w,log h],
 * kps (N,10), with N = (in_w/stride)*(in_h/stride). Coordinates are in network
 * input pixels. Appends to faces (capacity cap); returns the number appended. */
int px_face_decode_yunet(const float *cls, const float *obj, const float *bbox, const float *kps,
                         int in_w, int in_h, int stride, float thr, px_face *faces, int cap);

/* Decodes UltraFace outputs: scores (n_priors, 2) softmaxed [background,
 * face], boxes (n_priors, 4) normalised corners. Faces with score >= thr, in
 * network input pixels, are appended to faces (capacity cap); returns the
 * number appended. */
int px_face_decode_ultraface(const float *scores, const float *boxes, int n_priors, int in_w,
                             int in_h, float thr, px_face *faces, int cap);

/* ---- masks ---- */
typedef enum { PX_MASK_ELLIPSE = 0, PX_MASK_BOX } px_mask_shape;

typedef struct px_mask_opts {
    px_mask_shape shape;
    float scale;   /* mask size relative to the face box (default 1.4 for ellipse, 1.2 for box;
                      <= 0 picks the shape's default; must be >= 1) */
    float feather; /* outward soft edge as a fraction of the mask radius (default 0.15) */
} px_mask_opts;
px_mask_opts px_mask_opts_default(void);
/* The scale used when px_mask_opts.scale <= 0: 1.4 for ellipses, 1.2 for boxes. */
float px_mask_default_scale(px_mask_shape shape);

/* Builds the mask for one face: an ellipse (or box) centred on the face box,
 * scaled to cover the whole head (extended upwards for hair/forehead) and
 * never smaller than the shape through the box corners; alpha is 255 over the
 * scaled shape and fades to 0 *outside* it over the feather width, so the
 * face itself is always fully covered. The mask is clipped to the image (a
 * face wholly outside gives w = h = 0 and alpha NULL). PX_EINVAL for an
 * empty/non-finite box or a scale below 1, PX_ENOMEM. Caller frees
 * mask->alpha. Thread-safe. */
int px_face_mask(const px_face *f, int img_w, int img_h, const px_mask_opts *o, px_mask *mask,
                 px_err *err);

/* Conceal parameters scaled to a face so it cannot be recovered: blur sigma
 * face width / 3 (at least 8 px), pixelate cell face width / 4 (at least 4 px),
 * noise grain face width / 24 (at least 1 px), solid mid grey. */
px_conceal px_face_conceal_for(const px_face *f, px_conceal_mode mode, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif

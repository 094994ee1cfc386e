/*
 * The face detector: one ONNX model, a small pool of engine sessions, and the
 * multi-scale plan that lets a 640x640 network find 20-pixel faces in a
 * 24-megapixel photo.
 *
 * Why tiles: squeezing a 6000x4000 photo into 640x640 shrinks every face by
 * ~9x, so anything under ~100 px disappears. px_face_plan adds tile levels at
 * finer scales until a face of min_face image pixels is as big in the network
 * input as the smallest face the model finds reliably (net_min_face, measured
 * per model). Scales grow by at most 3x per level, and tiles at a level
 * overlap by more than the largest face the coarser level could have missed,
 * so every face is whole in at least one tile of the level that needs it.
 *
 * Merging: a box touching a tile edge that lies inside the image is "cut"
 * (the face continues in the next tile); it is dropped when another pass saw
 * the same face whole. Then greedy NMS, then boxes mostly inside a somewhat
 * bigger box are dropped (the bigger box's mask hides them anyway, so this
 * can only remove duplicates, never expose a face).
 *
 * Threads: the model is read-only; each px_face_detect call takes a session
 * from the pool (mutex + condition variable) for all its passes, so one
 * detector serves any number of threads with max_sessions running at once.
 * With spread_passes, a call with several passes also borrows the sessions
 * that are idle at that moment and runs the passes on all of them; each
 * pass's candidates are kept apart and joined in pass order, so the result
 * does not depend on how many sessions took part.
 */
#include "px_face.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/px_nn.h"

/* Face side (network pixels) the plan brings min_face up to, per model.
 * bench_anonymize's sweep finds every YuNet face from 12 px at scale 1, but
 * faces shrunk from big photos were missed at 12-13 px (4 of 6 at
 * --min-face 40), so the plan aims at 14 (docs/anonymize.md). */
#define PX_YUNET_NET_MIN_FACE 14.0f
#define PX_ULTRAFACE_NET_MIN_FACE 16.0f
/* Fitted passes (YuNet, fully convolutional): the network input is sized
 * to what a pass looks at, in steps of FIT_STEP up to FIT_MAX_SIDE, instead
 * of letterboxing everything into the model's 640x640. Each size is the same
 * graph built once more from the file parsed at creation (px_nn_source; kept
 * for the detector's life: sizes in steps of 64 up to 1024 are at most 256
 * of them); every session slot keeps a few sessions of such sizes on one
 * shared arena. */
#define FIT_STEP PX_FACE_FIT_STEP
#define FIT_MAX_SIDE 1024
#define MAX_SHAPES 256
#define SLOT_SESSIONS 16
/* A fitted plan looks at the whole image at the finest scale in one pass
 * when that scale is at most this much above the letterbox scale (bigger
 * than that, the largest faces would outgrow what the network finds). */
#define FIT_MERGE_RATIO 1.25f
/* Most sessions one detection spreads its passes over. */
#define PX_MAX_SPREAD 64
/* Most candidates one pass may produce before its own NMS. */
#define PX_PASS_CAP 4096
/* Levels grow by at most this factor, and a single pass is kept while the
 * whole-image scale is within this tolerance of the finest one needed. */
#define PX_LEVEL_RATIO 3.0f
#define PX_SCALE_SLACK 1.05f

/* The model loaded at one input size. */
typedef struct net_shape {
    int w, h;
    px_nn_model *model;
    float *v1_priors; /* YuNet 2022mar: cx, cy, w, h per prior, in network pixels */
    int v1_n;
} net_shape;

/* A session of a fitted size, on the slot's arena. */
typedef struct slot_session {
    const net_shape *shape;
    px_nn_session *s;
    unsigned used;
} slot_session;

typedef struct slot {
    px_nn_session *s;
    px_face *scratch; /* PX_PASS_CAP candidates of one pass */
    px_pool *pool;    /* fitted sessions: one pool, one arena */
    uint8_t *arena;
    size_t arena_len;
    slot_session fit[SLOT_SESSIONS];
    unsigned tick;
} slot;

struct px_face_detector {
    px_nn_model *model;
    px_face_model_kind kind;
    int net_w, net_h;
    int threads;
    px_nn_source *src; /* the parsed model file, for building it at other sizes */
    char *path;
    net_shape *shapes[MAX_SHAPES]; /* fitted sizes loaded so far, under mu */
    int n_shapes;
    float net_min_face;
    /* YuNet: cls/obj/bbox/kps output indices for strides 8, 16, 32 */
    int y_out[3][4];
    /* UltraFace: scores, boxes output indices and the prior count */
    int u_scores, u_boxes, u_priors;
    /* YuNet 2022mar: loc, conf, iou output indices and the priors (cx, cy, w, h in
     * network pixels, v1_priors x 4) */
    int v1_loc, v1_conf, v1_iou;
    net_shape base; /* the model's own size (model, net_w, net_h) */

    int spread_passes;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_slots, n_free;
    slot *slots;
    int *free_list; /* indices of free slots, n_free of them */
};

static const int yunet_strides[3] = {8, 16, 32};

/* Finds YuNet's outputs in the model of shape sh and checks their sizes;
 * the indices must be those of the first size set up. */
static int setup_yunet(px_face_detector *d, const net_shape *sh, const char *path, px_err *err)
{
    static const char *const prefix[4] = {"cls", "obj", "bbox", "kps"};
    static const int per_cell[4] = {1, 1, 4, 10};
    for (int s = 0; s < 3; s++) {
        const size_t cells =
            (size_t)(sh->w / yunet_strides[s]) * (size_t)(sh->h / yunet_strides[s]);
        for (int k = 0; k < 4; k++) {
            char name[16];
            snprintf(name, sizeof name, "%s_%d", prefix[k], yunet_strides[s]);
            const int i = px_nn_model_find_output(sh->model, name);
            if (i < 0 || (sh != &d->base && i != d->y_out[s][k]))
                return px_err_set(err, PX_EUNSUPPORTED, "%s: YuNet output '%s' missing", path,
                                  name);
            px_nn_tensor_info ti;
            int st = px_nn_model_output_info(sh->model, i, &ti);
            if (st != PX_OK || ti.count != cells * (size_t)per_cell[k])
                return px_err_set(
                    err, PX_EUNSUPPORTED,
                    "%s: YuNet output '%s' has %zu values, expected %zu for a %dx%d input", path,
                    name, st == PX_OK ? ti.count : 0, cells * (size_t)per_cell[k], sh->w, sh->h);
            if (sh == &d->base) /* other sizes only check: shared, read by other threads */
                d->y_out[s][k] = i;
        }
    }
    if (sh == &d->base)
        d->net_min_face = PX_YUNET_NET_MIN_FACE;
    return PX_OK;
}

/* YuNet 2022mar's prior boxes, in the order of its outputs: levels of
 * stride 8, 16, 32, 64 (feature maps halved from a quarter of the input,
 * rounding down as its export did), row by row, then each prior size. */
static int setup_yunet_v1(px_face_detector *d, net_shape *sh, const char *path, px_err *err)
{
    static const int steps[4] = {8, 16, 32, 64};
    static const int sizes[4][3] = {{10, 16, 24}, {32, 48, 0}, {64, 96, 0}, {128, 192, 256}};
    const int loc = px_nn_model_find_output(sh->model, "loc");
    const int conf = px_nn_model_find_output(sh->model, "conf");
    const int iou = px_nn_model_find_output(sh->model, "iou");
    if (sh == &d->base)
        d->v1_loc = loc, d->v1_conf = conf, d->v1_iou = iou;
    if (loc < 0 || conf < 0 || iou < 0 || loc != d->v1_loc || conf != d->v1_conf ||
        iou != d->v1_iou)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: YuNet 2022mar outputs loc, conf, iou missing",
                          path);
    int fw = ((sh->w + 1) / 2) / 2, fh = ((sh->h + 1) / 2) / 2, n = 0;
    int fws[4], fhs[4];
    for (int l = 0; l < 4; l++) {
        fw /= 2, fh /= 2;
        fws[l] = fw, fhs[l] = fh;
        for (int k = 0; k < 3; k++)
            n += sizes[l][k] ? fw * fh : 0;
    }
    px_nn_tensor_info li, ci, ii;
    if (px_nn_model_output_info(sh->model, loc, &li) != PX_OK ||
        px_nn_model_output_info(sh->model, conf, &ci) != PX_OK ||
        px_nn_model_output_info(sh->model, iou, &ii) != PX_OK || li.count != (size_t)n * 14 ||
        ci.count != (size_t)n * 2 || ii.count != (size_t)n)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: YuNet 2022mar outputs must hold %d priors for a %dx%d input", path,
                          n, sh->w, sh->h);
    sh->v1_priors = px_malloc(sizeof(float) * 4 * (size_t)n);
    if (!sh->v1_priors)
        return px_err_set(err, PX_ENOMEM, "%s: %d priors", path, n);
    float *p = sh->v1_priors;
    for (int l = 0; l < 4; l++)
        for (int r = 0; r < fhs[l]; r++)
            for (int c = 0; c < fws[l]; c++)
                for (int k = 0; k < 3 && sizes[l][k]; k++) {
                    *p++ = ((float)c + 0.5f) * (float)steps[l];
                    *p++ = ((float)r + 0.5f) * (float)steps[l];
                    *p++ = (float)sizes[l][k];
                    *p++ = (float)sizes[l][k];
                }
    sh->v1_n = n;
    if (sh == &d->base)
        d->net_min_face = PX_YUNET_NET_MIN_FACE;
    return PX_OK;
}

/* YuNet 2022mar: score = sqrt(conf[1] x clamp(iou)), centre = prior + 0.1 x
 * loc x prior size, size = prior size x exp(0.2 x loc); landmarks like the
 * centre. Network pixels. */
static int decode_yunet_v1(const px_face_detector *d, const net_shape *sh, const px_nn_session *s,
                           float thr, px_face *buf, int cap)
{
    const float *loc = px_nn_session_output(s, d->v1_loc),
                *conf = px_nn_session_output(s, d->v1_conf);
    const float *iou = px_nn_session_output(s, d->v1_iou);
    int n = 0;
    for (int i = 0; i < sh->v1_n && n < cap; i++) {
        const float c = conf[2 * i + 1], u = iou[i] < 0.0f ? 0.0f : iou[i] > 1.0f ? 1.0f : iou[i];
        const float score = c > 0.0f ? sqrtf(c * u) : 0.0f;
        if (!(score >= thr))
            continue;
        const float *pr = sh->v1_priors + 4 * (size_t)i, *l = loc + 14 * (size_t)i;
        const float cx = pr[0] + 0.1f * l[0] * pr[2], cy = pr[1] + 0.1f * l[1] * pr[3];
        const float w = pr[2] * expf(fminf(0.2f * l[2], 12.0f)),
                    h = pr[3] * expf(fminf(0.2f * l[3], 12.0f));
        px_face *f = &buf[n++];
        memset(f, 0, sizeof *f);
        f->x1 = cx - 0.5f * w, f->y1 = cy - 0.5f * h, f->x2 = cx + 0.5f * w, f->y2 = cy + 0.5f * h;
        f->score = score;
        for (int j = 0; j < 5; j++) {
            f->lm[j][0] = pr[0] + 0.1f * l[4 + 2 * j] * pr[2];
            f->lm[j][1] = pr[1] + 0.1f * l[5 + 2 * j] * pr[3];
        }
        f->has_landmarks = 1;
    }
    return n;
}

/* The model with its input at w x h (both > 0), built from the parsed file. */
static int load_resized(const char *path, const px_nn_source *src, int w, int h, px_nn_model **out,
                        px_err *err)
{
    const int st = px_nn_model_from_source(src, h, w, out, err);
    if (st != PX_OK)
        px_err_prefix(err, st, "%s at %dx%d", path, w, h);
    return st;
}

static int setup_ultraface(px_face_detector *d, const char *path, px_err *err)
{
    d->u_scores = px_nn_model_find_output(d->model, "scores");
    d->u_boxes = px_nn_model_find_output(d->model, "boxes");
    if (d->u_scores < 0 || d->u_boxes < 0)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: UltraFace outputs 'scores' and 'boxes' missing", path);
    px_nn_tensor_info si, bi;
    if (px_nn_model_output_info(d->model, d->u_scores, &si) != PX_OK ||
        px_nn_model_output_info(d->model, d->u_boxes, &bi) != PX_OK || si.count % 2 ||
        bi.count != si.count * 2 || si.count == 0)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: UltraFace outputs must be scores [1,N,2] and boxes [1,N,4]", path);
    d->u_priors = (int)(si.count / 2);
    d->net_min_face = PX_ULTRAFACE_NET_MIN_FACE;
    return PX_OK;
}

int px_face_detector_create(const char *model_path, const px_face_detector_opts *opts,
                            px_face_detector **out, px_err *err)
{
    return px_face_detector_create_sized(model_path, opts, 0, 0, out, err);
}

int px_face_detector_create_sized(const char *model_path, const px_face_detector_opts *opts,
                                  int net_w, int net_h, px_face_detector **out, px_err *err)
{
    if (!out)
        return px_err_set(err, PX_EINVAL, "face detector: no output handle");
    *out = NULL;
    if (!model_path || !*model_path)
        return px_err_set(err, PX_EINVAL, "face detector: no model path");
    px_face_detector_opts def = {PX_FACE_MODEL_AUTO, 0, 1, 0};
    const px_face_detector_opts *o = opts ? opts : &def;

    px_face_detector *d = px_calloc(1, sizeof *d);
    if (!d)
        return px_err_set(err, PX_ENOMEM, "face detector");
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->threads = o->threads;
    d->path = px_strdup(model_path);
    uint8_t *file = NULL;
    size_t file_len = 0;
    int st = d->path ? px_read_file(model_path, (size_t)1 << 30, &file, &file_len, err)
                     : px_err_set(err, PX_ENOMEM, "face detector");
    if (st == PX_OK)
        st = px_nn_source_open(file, file_len, &d->src, err);
    free(file);
    if (st == PX_OK)
        st = net_w > 0 && net_h > 0 ? load_resized(model_path, d->src, net_w, net_h, &d->model, err)
                                    : px_nn_model_from_source(d->src, 0, 0, &d->model, err);
    if (st != PX_OK) {
        px_err_prefix(err, st, "%s", model_path);
        goto fail;
    }

    px_nn_tensor_info in;
    st = px_nn_model_input_info(d->model, 0, &in);
    if (st != PX_OK || in.rank != 4 || in.dims[0] != 1 || in.dims[1] != 3 || in.dims[2] < 32 ||
        in.dims[3] < 32 || in.dims[2] > 4096 || in.dims[3] > 4096) {
        st = px_err_set(err, PX_EUNSUPPORTED, "%s: input must be 1x3xHxW with H, W in 32..4096",
                        model_path);
        goto fail;
    }
    d->net_h = (int)in.dims[2];
    d->net_w = (int)in.dims[3];
    d->base.w = d->net_w;
    d->base.h = d->net_h;
    d->base.model = d->model;

    px_face_model_kind kind = o->kind;
    if (kind == PX_FACE_MODEL_AUTO) {
        if (px_nn_model_find_output(d->model, "cls_8") >= 0)
            kind = PX_FACE_MODEL_YUNET;
        else if (px_nn_model_find_output(d->model, "scores") >= 0)
            kind = PX_FACE_MODEL_ULTRAFACE;
        else if (px_nn_model_find_output(d->model, "loc") >= 0 &&
                 px_nn_model_find_output(d->model, "iou") >= 0)
            kind = PX_FACE_MODEL_YUNET_V1;
        else {
            st = px_err_set(err, PX_EUNSUPPORTED,
                            "%s: outputs are neither YuNet's (cls_8, obj_8, ...) nor UltraFace's "
                            "(scores, boxes)",
                            model_path);
            goto fail;
        }
    }
    d->kind = kind;
    st = kind == PX_FACE_MODEL_YUNET      ? setup_yunet(d, &d->base, model_path, err)
         : kind == PX_FACE_MODEL_YUNET_V1 ? setup_yunet_v1(d, &d->base, model_path, err)
                                          : setup_ultraface(d, model_path, err);
    if (st != PX_OK)
        goto fail;

    d->spread_passes = o->spread_passes;
    d->n_slots = o->max_sessions > 0 ? o->max_sessions : 1;
    d->slots = px_calloc((size_t)d->n_slots, sizeof *d->slots);
    d->free_list = px_calloc((size_t)d->n_slots, sizeof *d->free_list);
    if (!d->slots || !d->free_list) {
        st = px_err_set(err, PX_ENOMEM, "face detector: %d sessions", d->n_slots);
        goto fail;
    }
    for (int i = 0; i < d->n_slots; i++) {
        st = px_nn_session_create(d->model, o->threads, &d->slots[i].s, err);
        if (st != PX_OK) {
            px_err_prefix(err, st, "%s", model_path);
            goto fail;
        }
        d->slots[i].scratch = px_malloc(sizeof(px_face) * PX_PASS_CAP);
        if (!d->slots[i].scratch) {
            st = px_err_set(err, PX_ENOMEM, "face detector: candidate buffer");
            goto fail;
        }
        d->free_list[d->n_free++] = i;
    }
    *out = d;
    return PX_OK;
fail:
    px_face_detector_destroy(d);
    return st;
}

static void shape_free(net_shape *sh)
{
    px_nn_model_destroy(sh->model);
    free(sh->v1_priors);
    free(sh);
}

void px_face_detector_destroy(px_face_detector *d)
{
    if (!d)
        return;
    if (d->slots) {
        for (int i = 0; i < d->n_slots; i++) {
            slot *sl = &d->slots[i];
            px_nn_session_destroy(sl->s);
            for (int k = 0; k < SLOT_SESSIONS; k++)
                px_nn_session_destroy(sl->fit[k].s);
            px_pool_destroy(sl->pool);
            px_aligned_free(sl->arena);
            free(sl->scratch);
        }
    }
    for (int i = 0; i < d->n_shapes; i++)
        shape_free(d->shapes[i]);
    free(d->slots);
    free(d->free_list);
    free(d->base.v1_priors);
    px_nn_source_close(d->src);
    free(d->path);
    px_nn_model_destroy(d->model);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

px_face_model_kind px_face_detector_kind(const px_face_detector *d)
{
    return d ? d->kind : PX_FACE_MODEL_AUTO;
}

void px_face_detector_input_size(const px_face_detector *d, int *w, int *h)
{
    if (w)
        *w = d ? d->net_w : 0;
    if (h)
        *h = d ? d->net_h : 0;
}

float px_face_detector_net_min_face(const px_face_detector *d)
{
    return d ? d->net_min_face : 0.0f;
}

int px_face_detector_max_side(const px_face_detector *d)
{
    if (!d)
        return 0;
    if (d->kind == PX_FACE_MODEL_ULTRAFACE) /* its priors are part of the graph: one size */
        return d->net_w > d->net_h ? d->net_w : d->net_h;
    return FIT_MAX_SIDE;
}

static int fits_base(const px_face_detector *d, int w, int h)
{
    return d->kind == PX_FACE_MODEL_ULTRAFACE || (w == d->net_w && h == d->net_h);
}

/* The model at w x h (multiples of FIT_STEP), loaded on first use. Models
 * are read-only once set up, so they are shared by all slots. */
static int shape_get(px_face_detector *d, int w, int h, const net_shape **out, px_err *err)
{
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n_shapes; i++)
        if (d->shapes[i]->w == w && d->shapes[i]->h == h) {
            *out = d->shapes[i];
            pthread_mutex_unlock(&d->mu);
            return PX_OK;
        }
    pthread_mutex_unlock(&d->mu);
    net_shape *sh = px_calloc(1, sizeof *sh);
    if (!sh)
        return px_err_set(err, PX_ENOMEM, "face detector: %dx%d input", w, h);
    sh->w = w;
    sh->h = h;
    int st = load_resized(d->path, d->src, w, h, &sh->model, err);
    if (st == PX_OK)
        st = d->kind == PX_FACE_MODEL_YUNET ? setup_yunet(d, sh, d->path, err)
                                            : setup_yunet_v1(d, sh, d->path, err);
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n_shapes && st == PX_OK; i++)
        if (d->shapes[i]->w == w && d->shapes[i]->h == h) { /* another thread was quicker */
            shape_free(sh);
            *out = d->shapes[i];
            pthread_mutex_unlock(&d->mu);
            return PX_OK;
        }
    if (st == PX_OK && d->n_shapes == MAX_SHAPES)
        st = px_err_set(err, PX_ELIMIT, "face detector: more than %d input sizes", MAX_SHAPES);
    if (st == PX_OK)
        d->shapes[d->n_shapes++] = sh;
    pthread_mutex_unlock(&d->mu);
    if (st != PX_OK) {
        shape_free(sh);
        return st;
    }
    *out = sh;
    return PX_OK;
}

/* The slot's session for a fitted size: kept among its last SLOT_SESSIONS,
 * all on one arena (a slot runs one pass at a time), which grows to the
 * largest size asked for. */
static int slot_session_get(px_face_detector *d, slot *sl, int w, int h, const net_shape **shape,
                            px_nn_session **out, px_err *err)
{
    const net_shape *sh = NULL;
    int st = shape_get(d, w, h, &sh, err);
    if (st != PX_OK)
        return st;
    sl->tick++;
    int victim = 0;
    for (int k = 0; k < SLOT_SESSIONS; k++) {
        if (sl->fit[k].shape == sh) {
            sl->fit[k].used = sl->tick;
            *shape = sh;
            *out = sl->fit[k].s;
            return PX_OK;
        }
        if (sl->fit[k].used < sl->fit[victim].used)
            victim = k;
    }
    if (!sl->pool && px_pool_create(d->threads, &sl->pool) < 0) {
        sl->pool = NULL;
        return px_err_set(err, PX_ENOMEM, "face detector: %d compute threads", d->threads);
    }
    const size_t need = px_nn_model_arena_bytes(sh->model);
    if (need > sl->arena_len) { /* the sessions on the old arena go with it */
        for (int k = 0; k < SLOT_SESSIONS; k++) {
            px_nn_session_destroy(sl->fit[k].s);
            memset(&sl->fit[k], 0, sizeof sl->fit[k]);
        }
        px_aligned_free(sl->arena);
        sl->arena_len = 0;
        /* Room at once for the largest size (activations grow with the
         * pixels: need scaled to FIT_MAX_SIDE squared), so that the sizes of
         * a run, which mostly grow, do not re-allocate and fault a new arena
         * each time. Not cleared (every pass fills its input first): pages
         * no size touches cost no memory. */
        const double grow = (double)FIT_MAX_SIDE * FIT_MAX_SIDE / ((double)w * (double)h);
        const size_t len = grow > 1.0 ? (size_t)((double)need * grow) + 4096 : need;
        sl->arena = px_aligned_alloc(len);
        if (!sl->arena)
            return px_err_set(err, PX_ENOMEM, "face detector: %zu bytes for a %dx%d input", len, w,
                              h);
        sl->arena_len = len;
        victim = 0;
    }
    px_nn_session_destroy(sl->fit[victim].s);
    memset(&sl->fit[victim], 0, sizeof sl->fit[victim]);
    st = px_nn_session_create_in(sh->model, sl->pool, sl->arena, sl->arena_len, &sl->fit[victim].s,
                                 err);
    if (st != PX_OK)
        return st;
    sl->fit[victim].shape = sh;
    sl->fit[victim].used = sl->tick;
    *shape = sh;
    *out = sl->fit[victim].s;
    return PX_OK;
}

px_face_detect_opts px_face_detect_opts_default(void)
{
    px_face_detect_opts o;
    o.score_threshold = 0.6f;
    o.nms_iou = 0.3f;
    o.min_face = 20;
    o.max_passes = 0;
    o.fit = 1;
    return o;
}

/* ---- planning ---------------------------------------------------------- */

/* Tile origins along one axis: n tiles of length t over [0, len) spread so
 * that neighbours overlap by at least `overlap`; one tile at 0 when it fits. */
static int axis_tiles(float len, float t, float overlap)
{
    if (t >= len)
        return 1;
    const float step = t - overlap;
    if (step <= 1.0f)
        return 1 + (int)ceilf(len - t); /* degenerate; never with sane inputs */
    return 1 + (int)ceilf((len - t) / step - 1e-4f);
}

static float axis_origin(float len, float t, int n, int i)
{
    if (n <= 1 || t >= len)
        return 0.0f;
    return (len - t) * (float)i / (float)(n - 1);
}

/* Network pixels v rounded up to the fitted sizes' step. */
static int fit_round(float v)
{
    const int r = (int)ceilf(v / (float)FIT_STEP - 1e-3f) * FIT_STEP;
    return r < FIT_STEP ? FIT_STEP : r;
}

int px_face_fit_side(int v)
{
    return fit_round((float)v);
}

/* Tiles along one axis of len image pixels at scale s, overlapping by ov
 * image pixels: their count and each one's network size. Fixed (max_side
 * 0): net pixels each; fitted: at most max_side, the shortest that covers. */
static int level_axis(float len, float s, int net, int max_side, float ov, int *tile_net)
{
    if (!max_side) {
        *tile_net = net;
        return axis_tiles(len, (float)net / s, ov);
    }
    const int n = axis_tiles(len, (float)max_side / s, ov);
    const float t = n > 1 ? (len + (float)(n - 1) * ov) / (float)n : len;
    *tile_net = fit_round(t * s);
    if (*tile_net > max_side)
        *tile_net = max_side;
    return n;
}

/* The plan at finest scale s_min: max_side 0 for the fixed network size,
 * else fitted (px_face_plan_fit). */
static int plan_with(int iw, int ih, int nw, int nh, float m_net, float s_min, int max_side,
                     px_face_pass *p, int cap)
{
    /* whole image, letterboxed; small images are enlarged at most 2x */
    float s0 = fminf((float)nw / (float)iw, (float)nh / (float)ih);
    if (s0 > 2.0f)
        s0 = 2.0f;
    /* fitted: the finest scale alone when it is close to the letterbox
     * scale and the image fits max_side at it */
    const int one = !(s_min > s0 * PX_SCALE_SLACK) ||
                    (max_side && s_min <= s0 * FIT_MERGE_RATIO &&
                     (float)iw * s_min <= (float)max_side && (float)ih * s_min <= (float)max_side);
    const float sw = one ? fmaxf(s0, s_min) : s0;
    int count = 0;
    if (count < cap) {
        const int w = max_side ? fit_round((float)iw * sw) : nw;
        const int h = max_side ? fit_round((float)ih * sw) : nh;
        p[count] = (px_face_pass){0.0f, 0.0f, (float)w / sw, (float)h / sw, sw, 0, w, h};
    }
    count++;
    if (one)
        return count;
    const int levels = (int)ceilf(logf(s_min / s0) / logf(PX_LEVEL_RATIO) - 1e-4f);
    const float ratio = powf(s_min / s0, 1.0f / (float)levels);
    for (int l = 1; l <= levels; l++) {
        const float s = l == levels ? s_min : s0 * powf(ratio, (float)l);
        /* the coarser level finds faces from ratio*m_net network pixels up,
         * so nothing bigger than that can be missed here: overlap by it and
         * a margin for the box being larger than the face */
        const float ov = (1.5f * ratio * m_net + 16.0f) / s;
        int tnw, tnh;
        const int nx = level_axis((float)iw, s, nw, max_side, ov, &tnw);
        const int ny = level_axis((float)ih, s, nh, max_side, ov, &tnh);
        const float tw = (float)tnw / s, th = (float)tnh / s;
        for (int y = 0; y < ny; y++)
            for (int x = 0; x < nx; x++) {
                if (count < cap)
                    p[count] = (px_face_pass){axis_origin((float)iw, tw, nx, x),
                                              axis_origin((float)ih, th, ny, y),
                                              tw,
                                              th,
                                              s,
                                              l,
                                              tnw,
                                              tnh};
                count++;
            }
    }
    return count;
}

static int plan_capped(int img_w, int img_h, int net_w, int net_h, float net_min_face, int min_face,
                       int max_passes, int max_side, px_face_pass *passes, int cap)
{
    if (!passes)
        cap = 0;
    if (min_face < 1)
        min_face = 1;
    float s_min = net_min_face / (float)min_face;
    int count = plan_with(img_w, img_h, net_w, net_h, net_min_face, s_min, max_side, NULL, 0);
    /* over the cap: look for larger faces only, until the plan fits */
    while (max_passes > 0 && count > max_passes && count > 1) {
        s_min *= 0.85f;
        count = plan_with(img_w, img_h, net_w, net_h, net_min_face, s_min, max_side, NULL, 0);
    }
    return plan_with(img_w, img_h, net_w, net_h, net_min_face, s_min, max_side, passes, cap);
}

int px_face_plan(int img_w, int img_h, int net_w, int net_h, float net_min_face, int min_face,
                 int max_passes, px_face_pass *passes, int cap)
{
    if (img_w <= 0 || img_h <= 0 || net_w <= 0 || net_h <= 0 || !(net_min_face > 0.0f))
        return 0;
    return plan_capped(img_w, img_h, net_w, net_h, net_min_face, min_face, max_passes, 0, passes,
                       cap);
}

int px_face_plan_fit(int img_w, int img_h, int net_w, int net_h, float net_min_face, int min_face,
                     int max_passes, int max_side, px_face_pass *passes, int cap)
{
    if (img_w <= 0 || img_h <= 0 || net_w <= 0 || net_h <= 0 || !(net_min_face > 0.0f) ||
        max_side < FIT_STEP)
        return 0;
    return plan_capped(img_w, img_h, net_w, net_h, net_min_face, min_face, max_passes,
                       max_side - max_side % FIT_STEP, passes, cap);
}

/* ---- detection --------------------------------------------------------- */

typedef struct cand {
    px_face f;
    int cut; /* touches a tile edge inside the image */
} cand;

typedef struct cand_list {
    cand *v;
    int n, cap;
} cand_list;

static int cand_push(cand_list *l, const px_face *f, int cut)
{
    if (l->n == l->cap) {
        const int ncap = l->cap ? l->cap * 2 : 64;
        cand *nv = px_realloc(l->v, sizeof *nv * (size_t)ncap);
        if (!nv)
            return PX_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n].f = *f;
    l->v[l->n].cut = cut;
    l->n++;
    return PX_OK;
}

static int decode_pass(const px_face_detector *d, const net_shape *sh, const px_nn_session *s,
                       float thr, px_face *buf)
{
    int n = 0;
    if (d->kind == PX_FACE_MODEL_YUNET_V1)
        return decode_yunet_v1(d, sh, s, thr, buf, PX_PASS_CAP);
    if (d->kind == PX_FACE_MODEL_YUNET) {
        for (int k = 0; k < 3; k++) {
            const int *o = d->y_out[k];
            n +=
                px_face_decode_yunet(px_nn_session_output(s, o[0]), px_nn_session_output(s, o[1]),
                                     px_nn_session_output(s, o[2]), px_nn_session_output(s, o[3]),
                                     sh->w, sh->h, yunet_strides[k], thr, buf + n, PX_PASS_CAP - n);
        }
    } else {
        n = px_face_decode_ultraface(px_nn_session_output(s, d->u_scores),
                                     px_nn_session_output(s, d->u_boxes), d->u_priors, d->net_w,
                                     d->net_h, thr, buf, PX_PASS_CAP);
    }
    return n;
}

static float area(const px_face *f)
{
    return fmaxf(f->x2 - f->x1, 0.0f) * fmaxf(f->y2 - f->y1, 0.0f);
}

static float inter(const px_face *a, const px_face *b)
{
    const float w = fminf(a->x2, b->x2) - fmaxf(a->x1, b->x1);
    const float h = fminf(a->y2, b->y2) - fmaxf(a->y1, b->y1);
    return w > 0.0f && h > 0.0f ? w * h : 0.0f;
}

static slot *take_slot(px_face_detector *d)
{
    pthread_mutex_lock(&d->mu);
    while (d->n_free == 0)
        pthread_cond_wait(&d->cv, &d->mu);
    slot *s = &d->slots[d->free_list[--d->n_free]];
    pthread_mutex_unlock(&d->mu);
    return s;
}

/* A free slot, or NULL when none is free right now. */
static slot *try_take_slot(px_face_detector *d)
{
    slot *s = NULL;
    pthread_mutex_lock(&d->mu);
    if (d->n_free > 0)
        s = &d->slots[d->free_list[--d->n_free]];
    pthread_mutex_unlock(&d->mu);
    return s;
}

static void give_slot(px_face_detector *d, slot *s)
{
    pthread_mutex_lock(&d->mu);
    d->free_list[d->n_free++] = (int)(s - d->slots);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* Runs every pass of the plan on one session, collecting candidates in image
 * coordinates. */
static int run_passes(px_face_detector *d, slot *sl, const px_image *img, const px_face_pass *plan,
                      int n_pass, const px_face_detect_opts *o, cand_list *out, px_face_stats *st,
                      px_err *err)
{
    const int yunet = d->kind == PX_FACE_MODEL_YUNET || d->kind == PX_FACE_MODEL_YUNET_V1;
    for (int p = 0; p < n_pass; p++) {
        const px_face_pass *ps = &plan[p];
        double t0 = px_now_ms();
        px_nn_session *ses = sl->s;
        const net_shape *sh = &d->base;
        if (!fits_base(d, ps->net_w, ps->net_h)) {
            const int gst = slot_session_get(d, sl, ps->net_w, ps->net_h, &sh, &ses, err);
            if (gst != PX_OK)
                return gst;
        }
        float *input = px_nn_session_input(ses, 0);
        if (!input)
            return px_err_set(err, PX_EINVAL, "face detector: session has no input 0");
        /* YuNet: BGR 0..255; UltraFace: RGB (v - 127) / 128. The padding
         * (a pixel value) is black for YuNet and mid-grey, 0 after
         * normalising, for UltraFace. */
        /* an input that failed to fill must fail the detection: "no faces" would hide none */
        int tst = yunet ? px_image_to_tensor(img, ps->sx, ps->sy, ps->sw, ps->sh, sh->w, sh->h, 1,
                                             0.0f, 1.0f, 0.0f, input)
                        : px_image_to_tensor(img, ps->sx, ps->sy, ps->sw, ps->sh, sh->w, sh->h, 0,
                                             127.0f, 1.0f / 128.0f, 127.0f, input);
        if (tst != PX_OK)
            return px_err_set(err, tst, "face detector: out of memory sampling pass %d", p);
        double t1 = px_now_ms();
        int rc = px_nn_session_run(ses, err);
        double t2 = px_now_ms();
        if (rc != PX_OK)
            return rc;
        int n = decode_pass(d, sh, ses, o->score_threshold, sl->scratch);
        n = px_face_nms(sl->scratch, n, o->nms_iou);

        /* Which tile edges lie inside the image: a box touching one of them
         * may be a cut face. The whole-image pass has none. */
        const float edge = 2.0f; /* network pixels */
        const float ex = (float)sh->w - edge, ey = (float)sh->h - edge;
        const int in_l = ps->level > 0 && ps->sx > 0.5f;
        const int in_t = ps->level > 0 && ps->sy > 0.5f;
        const int in_r = ps->level > 0 && ps->sx + ps->sw < (float)img->w - 0.5f;
        const int in_b = ps->level > 0 && ps->sy + ps->sh < (float)img->h - 0.5f;
        const float inv = 1.0f / ps->scale;
        for (int i = 0; i < n; i++) {
            px_face f = sl->scratch[i];
            const int cut = (in_l && f.x1 < edge) || (in_t && f.y1 < edge) || (in_r && f.x2 > ex) ||
                            (in_b && f.y2 > ey);
            f.x1 = ps->sx + f.x1 * inv;
            f.y1 = ps->sy + f.y1 * inv;
            f.x2 = ps->sx + f.x2 * inv;
            f.y2 = ps->sy + f.y2 * inv;
            for (int j = 0; j < 5 && f.has_landmarks; j++) {
                f.lm[j][0] = ps->sx + f.lm[j][0] * inv;
                f.lm[j][1] = ps->sy + f.lm[j][1] * inv;
            }
            if (!(f.x2 > f.x1) || !(f.y2 > f.y1))
                continue;
            if (cand_push(out, &f, cut) != PX_OK)
                return px_err_set(err, PX_ENOMEM, "face detector: candidate list");
        }
        double t3 = px_now_ms();
        st->passes++;
        st->ms_preprocess += t1 - t0;
        st->ms_network += t2 - t1;
        st->ms_postprocess += t3 - t2;
    }
    return PX_OK;
}

/* Passes shared by several sessions: each worker takes the next pass number
 * and collects that pass's candidates in lists[p]. */
typedef struct spread_job {
    px_face_detector *d;
    const px_image *img;
    const px_face_pass *plan;
    int n_pass;
    const px_face_detect_opts *o;
    cand_list *lists;
    int *rcs;
    px_err *errs;
    atomic_int next;
} spread_job;

typedef struct spread_worker {
    spread_job *job;
    slot *sl;
    px_face_stats st;
} spread_worker;

static void *spread_run(void *arg)
{
    spread_worker *w = arg;
    spread_job *j = w->job;
    for (int p; (p = atomic_fetch_add(&j->next, 1)) < j->n_pass;)
        j->rcs[p] = run_passes(j->d, w->sl, j->img, j->plan + p, 1, j->o, &j->lists[p], &w->st,
                               &j->errs[p]);
    return NULL;
}

/* Runs the plan on the n_sl sessions in sl (the caller's thread works too),
 * then joins the candidates in pass order into out. */
static int run_spread(px_face_detector *d, slot **sl, int n_sl, const px_image *img,
                      const px_face_pass *plan, int n_pass, const px_face_detect_opts *o,
                      cand_list *out, px_face_stats *st, px_err *err)
{
    cand_list *lists = px_calloc((size_t)n_pass, sizeof *lists);
    int *rcs = px_calloc((size_t)n_pass, sizeof *rcs);
    px_err *errs = px_calloc((size_t)n_pass, sizeof *errs);
    spread_worker *w = px_calloc((size_t)n_sl, sizeof *w);
    pthread_t *tid = px_calloc((size_t)n_sl, sizeof *tid);
    int rc = PX_OK;
    if (!lists || !rcs || !errs || !w || !tid) {
        rc = px_err_set(err, PX_ENOMEM, "face detector: %d passes", n_pass);
        goto out;
    }
    spread_job job = {d, img, plan, n_pass, o, lists, rcs, errs, 0};
    int started = 1;
    for (int i = 0; i < n_sl; i++) {
        w[i].job = &job;
        w[i].sl = sl[i];
    }
    /* helpers that cannot start simply leave their passes to the others */
    for (int i = 1; i < n_sl; i++) {
        if (pthread_create(&tid[i], NULL, spread_run, &w[i]) != 0)
            break;
        started++;
    }
    spread_run(&w[0]);
    for (int i = 1; i < started; i++)
        pthread_join(tid[i], NULL);
    for (int i = 0; i < n_sl; i++) {
        st->passes += w[i].st.passes;
        st->ms_preprocess += w[i].st.ms_preprocess;
        st->ms_network += w[i].st.ms_network;
        st->ms_postprocess += w[i].st.ms_postprocess;
    }
    for (int p = 0; p < n_pass && rc == PX_OK; p++) {
        if (rcs[p] != PX_OK) {
            *err = errs[p];
            rc = rcs[p];
        }
        for (int i = 0; i < lists[p].n && rc == PX_OK; i++)
            if (cand_push(out, &lists[p].v[i].f, lists[p].v[i].cut) != PX_OK)
                rc = px_err_set(err, PX_ENOMEM, "face detector: candidate list");
    }
out:
    for (int p = 0; lists && p < n_pass; p++)
        free(lists[p].v);
    free(lists);
    free(rcs);
    free(errs);
    free(w);
    free(tid);
    return rc;
}

/* Cut-box removal, NMS, containment removal, clipping; result into *faces. */
static int merge(cand_list *c, const px_image *img, const px_face_detect_opts *o, px_face **faces,
                 int *n_out, px_err *err)
{
    int n = 0;
    px_face *v = px_malloc(sizeof *v * (size_t)(c->n > 0 ? c->n : 1));
    if (!v)
        return px_err_set(err, PX_ENOMEM, "face detector: %d candidates", c->n);
    for (int i = 0; i < c->n; i++) {
        if (c->v[i].cut) {
            int seen_whole = 0;
            for (int j = 0; j < c->n && !seen_whole; j++) {
                if (j == i || c->v[j].cut)
                    continue;
                const float ia = inter(&c->v[i].f, &c->v[j].f);
                const float small = fminf(area(&c->v[i].f), area(&c->v[j].f));
                seen_whole = small > 0.0f && ia >= 0.5f * small;
            }
            if (seen_whole)
                continue;
        }
        v[n++] = c->v[i].f;
    }
    n = px_face_nms(v, n, o->nms_iou);
    /* drop boxes lying mostly inside a somewhat bigger kept box: a part of a
     * face (eyes, half a face) found at a finer level. A box many times
     * bigger is another thing (a crowd behind a large false positive), so
     * the small faces inside it are kept and reported. */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        int inside = 0;
        const float ai = area(&v[i]);
        for (int j = 0; j < n && !inside; j++)
            if (j != i && area(&v[j]) > ai && area(&v[j]) <= 6.0f * ai &&
                inter(&v[i], &v[j]) >= 0.85f * ai)
                inside = 1;
        if (!inside)
            v[kept++] = v[i];
    }
    n = kept;
    for (int i = 0; i < n; i++) {
        v[i].x1 = fminf(fmaxf(v[i].x1, 0.0f), (float)img->w);
        v[i].y1 = fminf(fmaxf(v[i].y1, 0.0f), (float)img->h);
        v[i].x2 = fminf(fmaxf(v[i].x2, 0.0f), (float)img->w);
        v[i].y2 = fminf(fmaxf(v[i].y2, 0.0f), (float)img->h);
    }
    px_face_sort(v, n);
    if (n == 0) {
        free(v);
        v = NULL;
    }
    *faces = v;
    *n_out = n;
    return PX_OK;
}

/* Runs the passes of a plan (spread over idle sessions when allowed) and
 * merges their candidates into faces. */
static int detect_plan(px_face_detector *d, const px_image *img, const px_face_pass *plan,
                       int n_pass, const px_face_detect_opts *o, px_face **faces, int *n,
                       px_face_stats *st, px_err *err)
{
    cand_list c = {NULL, 0, 0};
    slot *sl[PX_MAX_SPREAD];
    int n_sl = 1;
    sl[0] = take_slot(d);
    while (d->spread_passes && n_sl < n_pass && n_sl < PX_MAX_SPREAD &&
           (sl[n_sl] = try_take_slot(d)) != NULL)
        n_sl++;
    int rc = n_sl > 1 ? run_spread(d, sl, n_sl, img, plan, n_pass, o, &c, st, err)
                      : run_passes(d, sl[0], img, plan, n_pass, o, &c, st, err);
    for (int i = 0; i < n_sl; i++)
        give_slot(d, sl[i]);
    if (rc == PX_OK) {
        const double t = px_now_ms();
        rc = merge(&c, img, o, faces, n, err);
        st->ms_postprocess += px_now_ms() - t;
    }
    free(c.v);
    return rc;
}

int px_face_detect(px_face_detector *d, const px_image *img, const px_face_detect_opts *opts,
                   px_face **faces, int *n, px_face_stats *stats, px_err *err)
{
    if (faces)
        *faces = NULL;
    if (n)
        *n = 0;
    px_face_stats st_local;
    px_face_stats *st = stats ? stats : &st_local;
    memset(st, 0, sizeof *st);
    if (!d || !faces || !n)
        return px_err_set(err, PX_EINVAL, "face detect: missing detector or output");
    if (!img || !img->px || img->w <= 0 || img->h <= 0 ||
        (img->channels != 3 && img->channels != 4))
        return px_err_set(err, PX_EINVAL,
                          "face detect: image must be a non-empty RGB or RGBA image");
    px_face_detect_opts o = opts ? *opts : px_face_detect_opts_default();
    if (!(o.score_threshold >= 0.0f && o.score_threshold <= 1.0f))
        return px_err_set(err, PX_EINVAL, "face detect: score threshold %g outside 0..1",
                          (double)o.score_threshold);
    if (!(o.nms_iou > 0.0f && o.nms_iou <= 1.0f))
        return px_err_set(err, PX_EINVAL, "face detect: NMS IoU %g outside (0, 1]",
                          (double)o.nms_iou);
    if (o.min_face < 1 || o.max_passes < 0)
        return px_err_set(err, PX_EINVAL, "face detect: min_face must be >= 1 and max_passes >= 0");

    const int max_side = px_face_detector_max_side(d);
    const int fit = o.fit && max_side > d->net_w && max_side > d->net_h;
    const int n_pass = fit ? px_face_plan_fit(img->w, img->h, d->net_w, d->net_h, d->net_min_face,
                                              o.min_face, o.max_passes, max_side, NULL, 0)
                           : px_face_plan(img->w, img->h, d->net_w, d->net_h, d->net_min_face,
                                          o.min_face, o.max_passes, NULL, 0);
    px_face_pass *plan = px_malloc(sizeof *plan * (size_t)n_pass);
    if (!plan)
        return px_err_set(err, PX_ENOMEM, "face detect: plan of %d passes", n_pass);
    if (fit)
        px_face_plan_fit(img->w, img->h, d->net_w, d->net_h, d->net_min_face, o.min_face,
                         o.max_passes, max_side, plan, n_pass);
    else
        px_face_plan(img->w, img->h, d->net_w, d->net_h, d->net_min_face, o.min_face, o.max_passes,
                     plan, n_pass);

    int rc = detect_plan(d, img, plan, n_pass, &o, faces, n, st, err);
    free(plan);
    return rc;
}

int px_face_detect_passes(px_face_detector *d, const px_image *img, const px_face_pass *passes,
                          int n_pass, float threshold, px_face **faces, int *n,
                          px_face_stats *stats, px_err *err)
{
    if (faces)
        *faces = NULL;
    if (n)
        *n = 0;
    px_face_stats st_local;
    px_face_stats *st = stats ? stats : &st_local;
    memset(st, 0, sizeof *st);
    if (!d || !faces || !n || !img || !img->px || img->w <= 0 || img->h <= 0 ||
        (img->channels != 3 && img->channels != 4) || !passes || n_pass < 1 ||
        !(threshold >= 0.0f && threshold <= 1.0f))
        return px_err_set(err, PX_EINVAL,
                          "face detect: missing detector, image, passes or output, or threshold "
                          "outside 0..1");
    const int max_side = px_face_detector_max_side(d);
    const int fitted = max_side > d->net_w && max_side > d->net_h;
    for (int p = 0; p < n_pass; p++) {
        const px_face_pass *ps = &passes[p];
        const int size_ok = fitted ? ps->net_w >= 32 && ps->net_h >= 32 && ps->net_w % 32 == 0 &&
                                         ps->net_h % 32 == 0 && ps->net_w <= max_side &&
                                         ps->net_h <= max_side
                                   : ps->net_w == d->net_w && ps->net_h == d->net_h;
        if (!size_ok || !(ps->sw > 0.0f) || !(ps->sh > 0.0f) || !(ps->scale > 0.0f) ||
            !isfinite(ps->sx) || !isfinite(ps->sy))
            return px_err_set(err, PX_EINVAL,
                              "face detect: pass %d (%dx%d network input over %gx%g at %g) is not "
                              "one this detector can run",
                              p, ps->net_w, ps->net_h, (double)ps->sw, (double)ps->sh,
                              (double)ps->scale);
    }
    px_face_detect_opts o = px_face_detect_opts_default();
    o.score_threshold = threshold;
    return detect_plan(d, img, passes, n_pass, &o, faces, n, st, err);
}

int px_face_detect_canvas(px_face_detector *d, const px_image *img, float threshold,
                          px_face **faces, int *n, px_err *err)
{
    px_face_detect_opts o = px_face_detect_opts_default();
    o.score_threshold = threshold;
    o.max_passes = 1;
    const int max_side = px_face_detector_max_side(d);
    if (!d || !img || !img->px || img->w <= 0 || img->h <= 0 || img->w > max_side ||
        img->h > max_side || max_side <= d->net_w || max_side <= d->net_h)
        return px_face_detect(d, img, &o, faces, n, NULL, err);
    if (faces)
        *faces = NULL;
    if (n)
        *n = 0;
    if (!faces || !n || (img->channels != 3 && img->channels != 4) ||
        !(threshold >= 0.0f && threshold <= 1.0f))
        return px_err_set(err, PX_EINVAL, "face detect: bad canvas, output or threshold");
    const int w = fit_round((float)img->w), h = fit_round((float)img->h);
    const px_face_pass pass = {0.0f, 0.0f, (float)w, (float)h, 1.0f, 0, w, h};
    cand_list c = {NULL, 0, 0};
    px_face_stats st;
    memset(&st, 0, sizeof st);
    slot *sl = take_slot(d);
    int rc = run_passes(d, sl, img, &pass, 1, &o, &c, &st, err);
    give_slot(d, sl);
    if (rc == PX_OK)
        rc = merge(&c, img, &o, faces, n, err);
    free(c.v);
    return rc;
}

/*
 * px_anon: the whole "photo in, anonymized photo out" job shared by the CLI
 * (`pixpipe anonymize`), the Telegram bot and the HTTP API: decode (EXIF
 * orientation applied), detect every face, conceal each under its mask,
 * encode with no metadata.
 *
 * px_anon_process is thread-safe for one detector shared by many threads
 * (the detector hands each call its own session). All memory it returns is
 * owned by the caller.
 */
#ifndef PX_ANON_H
#define PX_ANON_H

#include "core/px_core.h"
#include "face/px_face.h"
#include "image/px_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_anon_opts {
    px_conceal_mode mode;       /* default PX_CONCEAL_NOISE: keeps nothing of the face (docs/anonymize.md) */
    px_mask_opts mask;          /* ellipse 1.4x by default; PX_MASK_BOX for --boxes */
    px_face_detect_opts detect; /* threshold, NMS, smallest face */
    px_format out_format;       /* PX_FMT_UNKNOWN: the input's if writable, else JPEG */
    int jpeg_keep_blocks;       /* 1 (default): JPEG in, JPEG out copies the input's DCT blocks
                                   outside what was concealed (jpeg_quality then applies only
                                   where that cannot be done: res->jpeg); 0: always afresh */
    int jpeg_quality;           /* 1..100, default 90 */
    uint64_t max_pixels;        /* decode limit (0: default 100 MP) */
    uint64_t seed;              /* noise seed (0: random per call) */
    int rotations;     /* 1 (default): a probe pass finds faces turned by 90/180/270 degrees and the
                          full plan runs for those turns; 0: upright only; 2: all four turns */
    int refine_crowds; /* 1 (default): regions with several small faces searched again finer */
    int verify;        /* 1 (default): the self-check after concealing (docs/anonymize.md) */
} px_anon_opts;
px_anon_opts px_anon_opts_default(void);

/* What the coverage passes did for one image. */
typedef struct px_anon_coverage {
    int probe_passes;   /* rotation probe runs: 1 (quick) or 2 (quick and full), 0 off */
    int probe_found[4]; /* faces the probe saw turned by 0, 90, 180, 270 degrees */
    int turns_run;      /* bit k: the full plan ran on the image turned k quarter turns clockwise */
    int crowd_passes;   /* network runs spent searching crowds again at a finer scale */
} px_anon_coverage;

typedef struct px_anon_result {
    px_buf out;              /* encoded image; free with px_buf_free (or px_anon_result_free) */
    px_format out_format;
    px_format in_format;
    px_jpeg_patch_info jpeg; /* JPEG in and out with jpeg_keep_blocks: jpeg.lossless 1 when
                                blocks were copied, else jpeg.why; zeroed otherwise */
    int width, height;       /* upright output size */
    int orientation;         /* EXIF orientation that was applied */
    px_face *faces;          /* n_faces boxes in output pixel coordinates; malloc'd */
    int n_faces;
    px_face_stats detect_stats; /* passes counts every network run of detection (probe included) */
    px_anon_coverage coverage;
    int verified;      /* 1: the self-check ran and its last look found no face */
    int strengthened;  /* faces the self-check concealed again more strongly */
    int verify_passes; /* network runs of the self-check */
    double ms_decode, ms_detect, ms_conceal, ms_verify, ms_encode;
} px_anon_result;

/* Runs the whole job on an encoded image in memory. On PX_OK *res holds the
 * output (free with px_anon_result_free). On error res is zeroed and err says
 * what was wrong with the input (without the file name; callers add it):
 * PX_EINVAL (empty input, bad options), PX_EUNSUPPORTED (not an image we
 * read), PX_ELIMIT (over max_pixels), PX_ECORRUPT (damaged), PX_ENOMEM, or
 * the engine's error. Thread-safe (see top). */
int px_anon_process(px_face_detector *det, const uint8_t *data, size_t len,
                    const px_anon_opts *opts, px_anon_result *res, px_err *err);
void px_anon_result_free(px_anon_result *res);

/* Conceals the given faces in an already-decoded image (used by the above
 * and by tests): one mask per face (opts->mask), the effect from
 * px_face_conceal_for (opts->mode; noise seeded from opts->seed, or a fresh
 * seed when 0). PX_EINVAL for a bad face box or mode, PX_ENOMEM; the image
 * may be partly concealed then. Thread-safe on distinct images. */
int px_anon_conceal_faces(px_image *img, const px_face *faces, int n, const px_anon_opts *opts,
                          px_err *err);

/* Detection with the job's full coverage on a decoded, upright image: the
 * rotation probe and the turned plans (opts->rotations), crowds searched
 * again (opts->refine_crowds), all merged by NMS. *faces is malloc'd (caller
 * frees; NULL when *n is 0), boxes in img's pixels. stats and cov may be
 * NULL. Errors as px_face_detect. Thread-safe like px_face_detect. */
int px_anon_detect(px_face_detector *det, const px_image *img, const px_anon_opts *opts,
                   px_face **faces, int *n, px_face_stats *stats, px_anon_coverage *cov,
                   px_err *err);

/* One detector pass at exactly `scale` network pixels per image pixel over
 * the whole image (network-sized tiles overlapping by 96 network pixels),
 * merged by NMS at IoU 0.3: how an independent detector run at native size
 * (1) or enlarged (2) sees the image. For tests and benchmarks. Same
 * ownership and errors as px_anon_detect; PX_EINVAL for a scale outside
 * 0.05..8. */
int px_anon_detect_at_scale(px_face_detector *det, const px_image *img, float scale,
                            float threshold, px_face **faces, int *n, px_err *err);

/* Finds the detector model file. `explicit_path` (e.g. --model) wins when
 * given (it must exist). Otherwise `name` (NULL: PX_ANON_DEFAULT_MODEL) is
 * looked for in $PIXPIPE_MODEL_DIR, then <directory of the running
 * binary>/../models, then <that>/../share/pixpipe/models (where cmake
 * --install puts them), then the source tree's models/ folder (a compile-time
 * path, for binaries run from a build folder). Writes the path into out
 * (cap bytes). PX_ENOTFOUND with every place tried named in err. */
#define PX_ANON_DEFAULT_MODEL "face_detection_yunet_2023mar.onnx"
int px_anon_find_model(const char *explicit_path, const char *name, char *out, size_t cap,
                       px_err *err);

/* Parses "blur" | "pixelate" | "noise" | "solid"; PX_EINVAL otherwise. */
int px_anon_mode_parse(const char *s, px_conceal_mode *mode);
const char *px_anon_mode_name(px_conceal_mode mode);

#ifdef __cplusplus
}
#endif
#endif

/*
 * The anonymize job shared by the CLI, the Telegram bot and the HTTP API:
 * bytes in, bytes out. Decoding applies the EXIF orientation, so detection,
 * masks and the output all work on upright pixels; the encoders write pixels
 * only, so no metadata (EXIF with GPS and its thumbnail of the unblurred
 * face, XMP, ICC text, comments) survives.
 *
 * Each face is concealed under its own mask (px_face_mask) with an effect
 * scaled to its size (px_face_conceal_for). Noise seeds differ per face and,
 * unless the caller fixes one, per call; the noise never depends on the
 * face's pixels, so nothing of the face can be read back from it.
 */
#include "anon_internal.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

px_anon_opts px_anon_opts_default(void)
{
    px_anon_opts o;
    memset(&o, 0, sizeof o);
    o.mode = PX_CONCEAL_NOISE;
    o.mask = px_mask_opts_default();
    o.detect = px_face_detect_opts_default();
    o.out_format = PX_FMT_UNKNOWN;
    o.jpeg_keep_blocks = 1;
    o.jpeg_quality = 90;
    o.max_pixels = 0;
    o.seed = 0;
    o.rotations = 1;
    o.refine_crowds = 1;
    o.verify = 1;
    return o;
}

static const char *const mode_names[] = {"blur", "pixelate", "noise", "solid"};

int px_anon_mode_parse(const char *s, px_conceal_mode *mode)
{
    if (!s || !mode)
        return PX_EINVAL;
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, mode_names[i])) {
            *mode = (px_conceal_mode)i;
            return PX_OK;
        }
    }
    return PX_EINVAL;
}

const char *px_anon_mode_name(px_conceal_mode mode)
{
    return (int)mode >= 0 && (int)mode < 4 ? mode_names[mode] : "unknown";
}

/* splitmix64: spreads a counter into well-mixed seeds. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t fresh_seed(void)
{
    static atomic_uint_fast64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t c = (uint64_t)atomic_fetch_add(&counter, 1);
    return mix64(((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ mix64(c));
}

int px_anon_conceal_faces(px_image *img, const px_face *faces, int n, const px_anon_opts *opts,
                          px_err *err)
{
    if (!img || !img->px || (n > 0 && !faces) || n < 0)
        return px_err_set(err, PX_EINVAL, "conceal: missing image or faces");
    px_anon_opts def = px_anon_opts_default();
    const px_anon_opts *o = opts ? opts : &def;
    if ((int)o->mode < 0 || (int)o->mode > PX_CONCEAL_SOLID)
        return px_err_set(err, PX_EINVAL, "conceal: unknown mode %d", (int)o->mode);
    const uint64_t seed = o->seed ? o->seed : fresh_seed();
    for (int i = 0; i < n; i++) {
        const int st = anon_conceal_one(img, &faces[i], o, mix64(seed + (uint64_t)i), 0, err);
        if (st != PX_OK)
            return st;
    }
    return PX_OK;
}

void px_anon_result_free(px_anon_result *res)
{
    if (!res)
        return;
    px_buf_free(&res->out);
    free(res->faces);
    memset(res, 0, sizeof *res);
}

int px_anon_process(px_face_detector *det, const uint8_t *data, size_t len,
                    const px_anon_opts *opts, px_anon_result *res, px_err *err)
{
    if (res)
        memset(res, 0, sizeof *res);
    if (!det || !res || (!data && len))
        return px_err_set(err, PX_EINVAL, "anonymize: missing detector, input or result");
    if (len == 0)
        return px_err_set(err, PX_EINVAL, "empty input (0 bytes)");
    px_anon_opts def = px_anon_opts_default();
    const px_anon_opts *o = opts ? opts : &def;
    if (o->jpeg_quality < 1 || o->jpeg_quality > 100)
        return px_err_set(err, PX_EINVAL, "anonymize: JPEG quality %d outside 1..100",
                          o->jpeg_quality);

    double t0 = px_now_ms();
    px_decode_opts dopt = px_decode_opts_default();
    dopt.max_pixels = o->max_pixels;
    dopt.apply_orientation = 1;
    px_image img;
    px_decode_info info;
    memset(&info, 0, sizeof info);
    int st = px_image_decode(data, len, &dopt, &img, &info, err);
    if (st != PX_OK)
        return st;
    double t1 = px_now_ms();
    /* JPEG to JPEG: fingerprint the pixels before anything changes them, so
     * that the encoder copies every block that still matches (docs/image.md) */
    px_image_print print;
    memset(&print, 0, sizeof print);
    const int keep_blocks = o->jpeg_keep_blocks && info.format == PX_FMT_JPEG &&
                            (o->out_format == PX_FMT_UNKNOWN || o->out_format == PX_FMT_JPEG);
    if (keep_blocks && px_image_print_take(&img, &print, NULL) != PX_OK)
        px_image_print_free(&print); /* no memory for it: encoded afresh */

    px_face *faces = NULL;
    int n = 0;
    st = px_anon_detect(det, &img, o, &faces, &n, &res->detect_stats, &res->coverage, err);
    double t2 = px_now_ms();
    /* one seed for the first concealing and the self-check's, so --seed fixes both */
    const uint64_t seed = o->seed ? o->seed : fresh_seed();
    px_anon_opts oc = *o;
    oc.seed = seed;
    if (st == PX_OK)
        st = px_anon_conceal_faces(&img, faces, n, &oc, err);
    double t3 = px_now_ms();
    anon_verify_out vo;
    memset(&vo, 0, sizeof vo);
    if (st == PX_OK && o->verify) {
        int nw, nh;
        px_face_detector_input_size(det, &nw, &nh);
        const float s0 = fminf(fminf((float)nw / (float)img.w, (float)nh / (float)img.h), 2.0f);
        anon_faces list = {faces, n, n};
        st = anon_verify(det, &img, &list, &oc, mix64(seed ^ 0x5e1fULL), s0, &vo, err);
        faces = list.v;
        n = list.n;
    }
    double t3v = px_now_ms();
    /* the input's format where we write it; TIFF, GIF, HEIF and AVIF become JPEG */
    const px_format fmt = o->out_format != PX_FMT_UNKNOWN ? o->out_format
                          : px_format_writable(info.format) ? info.format
                                                            : PX_FMT_JPEG;
    if (st == PX_OK)
        st = keep_blocks ? px_image_encode_jpeg_patched(data, len, &info, &img, &print,
                                                        o->jpeg_quality, &res->out, &res->jpeg, err)
                         : px_image_encode(&img, fmt, o->jpeg_quality, &res->out, err);
    px_image_print_free(&print);
    double t4 = px_now_ms();
    anon_clip_faces(faces, n, img.w, img.h); /* the self-check's boxes may reach past the edges */
    if (st != PX_OK) {
        px_buf_free(&res->out);
        free(faces);
        px_image_free(&img);
        memset(res, 0, sizeof *res);
        return st;
    }
    res->out_format = fmt;
    res->in_format = info.format;
    res->width = img.w;
    res->height = img.h;
    res->orientation = info.orientation;
    res->faces = faces;
    res->n_faces = n;
    res->ms_decode = t1 - t0;
    res->ms_detect = t2 - t1;
    res->ms_conceal = t3 - t2;
    res->ms_verify = t3v - t3;
    res->ms_encode = t4 - t3v;
    res->verified = vo.verified;
    res->strengthened = vo.strengthened;
    res->verify_passes = vo.passes;
    px_image_free(&img);
    return PX_OK;
}

/* ---- model lookup ------------------------------------------------------ */

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends "dir/name" to out when it exists; records the place tried. */
static int try_dir(const char *dir, const char *name, char *out, size_t cap, char *tried,
                   size_t tcap)
{
    char p[PATH_MAX];
    int k = snprintf(p, sizeof p, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= sizeof p)
        return 0;
    size_t tl = strlen(tried);
    snprintf(tried + tl, tcap - tl, "%s%s", tl ? ", " : "", dir);
    if (!file_exists(p) || strlen(p) >= cap)
        return 0;
    memcpy(out, p, strlen(p) + 1);
    return 1;
}

int px_anon_find_model(const char *explicit_path, const char *name, char *out, size_t cap,
                       px_err *err)
{
    if (!out || cap == 0)
        return px_err_set(err, PX_EINVAL, "model lookup: no output buffer");
    out[0] = '\0';
    if (explicit_path && *explicit_path) {
        if (!file_exists(explicit_path))
            return px_err_set(err, PX_ENOTFOUND, "model %s: no such file", explicit_path);
        if (strlen(explicit_path) >= cap)
            return px_err_set(err, PX_ELIMIT, "model %s: path too long", explicit_path);
        memcpy(out, explicit_path, strlen(explicit_path) + 1);
        return PX_OK;
    }
    if (!name || !*name)
        name = PX_ANON_DEFAULT_MODEL;
    char tried[1024] = "";
    const char *env = getenv("PIXPIPE_MODEL_DIR");
    if (env && *env && try_dir(env, name, out, cap, tried, sizeof tried))
        return PX_OK;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char dir[PATH_MAX + 32];
            snprintf(dir, sizeof dir, "%s/../models", exe);
            if (try_dir(dir, name, out, cap, tried, sizeof tried))
                return PX_OK;
            snprintf(dir, sizeof dir, "%s/../share/pixpipe/models", exe); /* cmake --install */
            if (try_dir(dir, name, out, cap, tried, sizeof tried))
                return PX_OK;
        }
    }
#ifdef PX_SOURCE_MODEL_DIR
    if (try_dir(PX_SOURCE_MODEL_DIR, name, out, cap, tried, sizeof tried))
        return PX_OK;
#endif
    return px_err_set(err, PX_ENOTFOUND,
                      "model %s not found (looked in %s); run scripts/fetch-models.sh or pass "
                      "--model PATH",
                      name, tried[0] ? tried : "nowhere");
}

/*
 * Integration tests of face detection and `pixpipe anonymize` with the real
 * YuNet model and the photos in ../shared/testdata/faces:
 *  - recall against reference_boxes.json (IoU >= 0.4) over every photo, and
 *    no face on the photo that has none; UltraFace picked by its outputs;
 *  - one detector used from several threads gives the same faces;
 *  - a 24-megapixel canvas with faces pasted at 20-32 px: all found (and the
 *    single whole-image pass alone would miss them, so tiling is what works);
 *  - a photo stored rotated with EXIF Orientation 6 (built here) gives the
 *    same upright boxes;
 *  - the CLI on a folder of good and bad files: one error line per bad file,
 *    exit 1, every reference face concealed in the outputs, inputs untouched,
 *    no EXIF in the outputs, --json (also for names that are not UTF-8), stdin
 *    to stdout, no overwriting;
 *  - TIFF (turned, Orientation 6) and HEIC inputs come out as JPEG with the
 *    faces found upright; an unreadable file and folder are reported by name
 *    and make the exit status 1.
 * Photos are read from PX_SHARED_DIR and never copied into the repository;
 * scratch files go to a mkdtemp folder that is removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <libheif/heif.h>
#include <tiffio.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anon/px_anon.h"

#define FACES PX_SHARED_DIR "/testdata/faces"
#define MODEL PX_MODEL_DIR "/" PX_ANON_DEFAULT_MODEL

static px_face_detector *det;
static json_t *refs; /* reference_boxes.json "images" */
static char tmpdir[64];

/* ---- helpers ---- */

static void load_image(const char *path, px_image *img, px_decode_info *info)
{
    uint8_t *data;
    size_t len = 0;
    px_err e;
    if (px_read_file(path, (size_t)1 << 28, &data, &len, &e) != PX_OK)
        fail_msg("%s: %s", path, e.msg);
    px_decode_opts o = px_decode_opts_default();
    if (px_image_decode(data, len, &o, img, info, &e) != PX_OK)
        fail_msg("%s: %s", path, e.msg);
    free(data);
}

static px_face ref_box(json_t *b)
{
    px_face f;
    memset(&f, 0, sizeof f);
    f.x1 = (float)json_number_value(json_array_get(b, 0));
    f.y1 = (float)json_number_value(json_array_get(b, 1));
    f.x2 = (float)json_number_value(json_array_get(b, 2));
    f.y2 = (float)json_number_value(json_array_get(b, 3));
    f.score = 1.0f;
    return f;
}

/* How many of the reference boxes some detection overlaps with IoU >= thr. */
static int matched(const px_face *ref, int nref, const px_face *got, int n, float thr)
{
    int m = 0;
    for (int r = 0; r < nref; r++)
        for (int i = 0; i < n; i++)
            if (px_face_iou(&ref[r], &got[i]) >= thr) {
                m++;
                break;
            }
    return m;
}

static int image_refs(const char *name, px_face *out, int cap)
{
    json_t *boxes = json_object_get(json_object_get(refs, name), "boxes");
    assert_non_null(boxes);
    int n = 0;
    for (size_t i = 0; i < json_array_size(boxes) && n < cap; i++)
        out[n++] = ref_box(json_array_get(boxes, i));
    return n;
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (px_read_file(path, (size_t)1 << 28, &d, &n, NULL) != PX_OK)
        return NULL;
    char *s = realloc(d, n + 1);
    if (!s) {
        free(d);
        return NULL;
    }
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

static void put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void copy(const char *from, const char *to)
{
    size_t n = 0;
    char *d = slurp(from, &n);
    assert_non_null(d);
    put(to, d, n);
    free(d);
}

static int has_exif(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++)
        if (!memcmp(d + i, "Exif\0\0", 6))
            return 1;
    return 0;
}

/* Mean absolute difference of channel values over a rectangle. */
static double mad(const px_image *a, const px_image *b, int x1, int y1, int x2, int y2)
{
    double s = 0;
    long n = 0;
    for (int y = y1; y < y2; y++)
        for (int x = x1; x < x2; x++)
            for (int c = 0; c < 3; c++) {
                s += fabs((double)a->px[(size_t)y * a->stride + (size_t)x * a->channels + c] -
                          (double)b->px[(size_t)y * b->stride + (size_t)x * b->channels + c]);
                n++;
            }
    return n ? s / (double)n : 0.0;
}

/* Every reference face of `name` is concealed in `out`: the pixels inside
 * its box changed a lot compared with the input. */
static void assert_concealed(const char *name, const px_image *in, const px_image *out)
{
    px_face r[64];
    int n = image_refs(name, r, 64);
    assert_int_equal(in->w, out->w);
    assert_int_equal(in->h, out->h);
    for (int i = 0; i < n; i++) {
        const double d = mad(in, out, (int)r[i].x1, (int)r[i].y1, (int)r[i].x2, (int)r[i].y2);
        if (d < 25.0)
            fail_msg("%s: reference face %d not concealed (mean difference %.1f)", name, i, d);
    }
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    px_err e;
    px_face_detector_opts o = {PX_FACE_MODEL_AUTO, 2, 2, 0};
    if (px_face_detector_create(MODEL, &o, &det, &e) != PX_OK) {
        fprintf(stderr, "cannot load %s: %s\n", MODEL, e.msg);
        return -1;
    }
    json_error_t je;
    json_t *root = json_load_file(FACES "/reference_boxes.json", 0, &je);
    if (!root)
        return -1;
    refs = json_incref(json_object_get(root, "images"));
    json_decref(root);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/px_anon_it_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    px_face_detector_destroy(det);
    json_decref(refs);
    if (tmpdir[0])
        run("rm -rf '%s'", tmpdir);
    return 0;
}

/* ---- detection ---- */

static void test_recall_on_reference_photos(void **state)
{
    (void)state;
    const char *name;
    json_t *v;
    int total = 0, found = 0;
    json_object_foreach(refs, name, v)
    {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", FACES, name);
        px_image img;
        load_image(path, &img, NULL);
        px_face *faces;
        int n;
        px_face_stats st;
        px_err e;
        assert_int_equal(px_face_detect(det, &img, NULL, &faces, &n, &st, &e), PX_OK);
        px_face r[64];
        int nr = image_refs(name, r, 64);
        int m = matched(r, nr, faces, n, 0.4f);
        printf("  %-24s %4dx%-4d refs %2d found %2d detections %2d passes %d (%.0f ms net)\n",
               name, img.w, img.h, nr, m, n, st.passes, st.ms_network);
        total += nr;
        found += m;
        if (nr == 0)
            assert_int_equal(n, 0); /* inspireface_view.jpg: no face at all */
        for (int i = 0; i < n; i++) {
            assert_true(faces[i].x1 >= 0 && faces[i].y1 >= 0 && faces[i].x2 <= (float)img.w &&
                        faces[i].y2 <= (float)img.h);
            assert_true(faces[i].score >= 0.6f && faces[i].score <= 1.0f);
            assert_int_equal(faces[i].has_landmarks, 1);
        }
        free(faces);
        px_image_free(&img);
    }
    printf("  recall %d/%d = %.3f\n", found, total, (double)found / total);
    assert_true(total > 20);
    assert_true((double)found >= 0.95 * total);
}

/* The second-opinion model: picked by its output names, same merging. */
static void test_ultraface_model(void **state)
{
    (void)state;
    px_face_detector *u;
    px_err e;
    if (px_face_detector_create(PX_MODEL_DIR "/ultraface_rfb_640.onnx", NULL, &u, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(px_face_detector_kind(u), PX_FACE_MODEL_ULTRAFACE);
    int w, h;
    px_face_detector_input_size(u, &w, &h);
    assert_int_equal(w, 640);
    assert_int_equal(h, 480);
    const char *names[] = {"ultraface_imgs_2.jpg", "libfd_ios_test.jpg"};
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", FACES, names[k]);
        px_image img;
        load_image(path, &img, NULL);
        px_face *faces;
        int n;
        assert_int_equal(px_face_detect(u, &img, NULL, &faces, &n, NULL, &e), PX_OK);
        px_face r[16];
        const int nr = image_refs(names[k], r, 16);
        assert_int_equal(matched(r, nr, faces, n, 0.4f), nr);
        assert_true(n <= nr + 2);
        for (int i = 0; i < n; i++)
            assert_int_equal(faces[i].has_landmarks, 0);
        free(faces);
        px_image_free(&img);
    }
    /* asking for YuNet on an UltraFace file is a clear error */
    px_face_detector_destroy(u);
    px_face_detector_opts o = {PX_FACE_MODEL_YUNET, 1, 1, 0};
    assert_int_equal(px_face_detector_create(PX_MODEL_DIR "/ultraface_rfb_640.onnx", &o, &u, &e),
                     PX_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "cls_8"));
    assert_null(u);
}

typedef struct thread_arg {
    const px_image *img;
    px_face *faces;
    int n, rc;
} thread_arg;

static void *detect_thread(void *p)
{
    thread_arg *a = p;
    a->rc = px_face_detect(det, a->img, NULL, &a->faces, &a->n, NULL, NULL);
    return NULL;
}

static void test_threads_share_one_detector(void **state)
{
    (void)state;
    px_image img;
    load_image(FACES "/libfd_ios_test.jpg", &img, NULL);
    px_face *ref;
    int nref;
    assert_int_equal(px_face_detect(det, &img, NULL, &ref, &nref, NULL, NULL), PX_OK);
    assert_true(nref >= 5);
    thread_arg a[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) { /* 3 threads on a 2-session pool: one waits */
        a[i] = (thread_arg){&img, NULL, 0, -1};
        assert_int_equal(pthread_create(&t[i], NULL, detect_thread, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, PX_OK);
        assert_int_equal(a[i].n, nref);
        assert_memory_equal(a[i].faces, ref, sizeof *ref * (size_t)nref);
        free(a[i].faces);
    }
    free(ref);
    px_image_free(&img);
}

/* Area-average downscale of the rectangle (x0,y0,w,h) of src by k < 1. */
static void shrink(const px_image *src, int x0, int y0, int w, int h, float k, px_image *dst)
{
    const int dw = (int)lrintf((float)w * k), dh = (int)lrintf((float)h * k);
    assert_int_equal(px_image_alloc(dst, dw, dh, 3), PX_OK);
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++) {
            const int sx0 = x0 + (int)((float)x / k), sx1 = x0 + (int)((float)(x + 1) / k);
            const int sy0 = y0 + (int)((float)y / k), sy1 = y0 + (int)((float)(y + 1) / k);
            for (int c = 0; c < 3; c++) {
                long s = 0, n = 0;
                for (int yy = sy0; yy < sy1 && yy < src->h; yy++)
                    for (int xx = sx0; xx < sx1 && xx < src->w; xx++, n++)
                        s += src->px[(size_t)yy * src->stride + (size_t)xx * src->channels + c];
                dst->px[(size_t)y * dst->stride + (size_t)x * 3 + c] = (uint8_t)(n ? s / n : 0);
            }
        }
}

static void test_small_faces_in_24mp(void **state)
{
    (void)state;
    const int W = 6000, H = 4000;
    px_image canvas, photo;
    assert_int_equal(px_image_alloc(&canvas, W, H, 3), PX_OK);
    uint32_t rng = 99;
    for (int y = 0; y < H; y++) /* textured grey, not a flat field */
        for (int x = 0; x < W; x++) {
            rng = rng * 1664525u + 1013904223u;
            const uint8_t v = (uint8_t)(110 + (rng >> 28) + ((x / 40 + y / 40) & 1) * 12);
            uint8_t *p = canvas.px + (size_t)y * canvas.stride + (size_t)x * 3;
            p[0] = v;
            p[1] = (uint8_t)(v + 5);
            p[2] = (uint8_t)(v - 5);
        }
    load_image(FACES "/ultraface_imgs_2.jpg", &photo, NULL);
    px_face r[8];
    const int nr = image_refs("ultraface_imgs_2.jpg", r, 8);
    assert_int_equal(nr, 4);

    enum { N = 24 };
    px_face expect[N];
    for (int i = 0; i < N; i++) {
        const px_face *f = &r[i % nr];
        const float fw = f->x2 - f->x1, fh = f->y2 - f->y1;
        const float size = 20.0f + (float)(i % 4) * 4.0f; /* face width 20..32 px */
        const float k = size / fw;
        /* the patch: the face with half a face of context around it */
        int cx0 = (int)(f->x1 - 0.5f * fw), cy0 = (int)(f->y1 - 0.5f * fh);
        int cx1 = (int)(f->x2 + 0.5f * fw), cy1 = (int)(f->y2 + 0.5f * fh);
        cx0 = cx0 < 0 ? 0 : cx0;
        cy0 = cy0 < 0 ? 0 : cy0;
        cx1 = cx1 > photo.w ? photo.w : cx1;
        cy1 = cy1 > photo.h ? photo.h : cy1;
        px_image patch;
        shrink(&photo, cx0, cy0, cx1 - cx0, cy1 - cy0, k, &patch);
        /* spread over the canvas, many near tile borders of any level */
        const int px0 = 150 + (i % 6) * 967 + (i * 37) % 200;
        const int py0 = 150 + (i / 6) * 941 + (i * 53) % 150;
        for (int y = 0; y < patch.h; y++)
            memcpy(canvas.px + (size_t)(py0 + y) * canvas.stride + (size_t)px0 * 3,
                   patch.px + (size_t)y * patch.stride, (size_t)patch.w * 3);
        expect[i] = *f;
        expect[i].x1 = (float)px0 + (f->x1 - (float)cx0) * k;
        expect[i].y1 = (float)py0 + (f->y1 - (float)cy0) * k;
        expect[i].x2 = (float)px0 + (f->x2 - (float)cx0) * k;
        expect[i].y2 = (float)py0 + (f->y2 - (float)cy0) * k;
        px_image_free(&patch);
    }
    px_image_free(&photo);

    px_face *faces;
    int n;
    px_face_stats st;
    px_err e;
    const double t0 = px_now_ms();
    assert_int_equal(px_face_detect(det, &canvas, NULL, &faces, &n, &st, &e), PX_OK);
    const double ms = px_now_ms() - t0;
    const int m = matched(expect, N, faces, n, 0.4f);
    printf("  24 MP: %d/%d pasted faces (20-32 px) found, %d detections, %d passes, %.0f ms\n", m,
           N, n, st.passes, ms);
    for (int i = 0; i < N; i++)
        if (matched(&expect[i], 1, faces, n, 0.4f) == 0)
            printf("  missed face %d at (%.0f,%.0f) width %.0f\n", i, (double)expect[i].x1,
                   (double)expect[i].y1, (double)(expect[i].x2 - expect[i].x1));
    assert_int_equal(m, N);
    free(faces);

    /* the whole-image pass alone loses them: tiling is what finds them */
    px_face_detect_opts one = px_face_detect_opts_default();
    one.max_passes = 1;
    assert_int_equal(px_face_detect(det, &canvas, &one, &faces, &n, &st, &e), PX_OK);
    assert_int_equal(st.passes, 1);
    assert_true(matched(expect, N, faces, n, 0.4f) < N / 4);
    free(faces);
    px_image_free(&canvas);
}

/* ---- EXIF orientation ---- */

/* A JPEG of `upright` stored rotated, with an APP1 Exif segment saying
 * Orientation 6 (rotate 90 degrees clockwise to display). */
static void make_rotated_jpeg(const px_image *upright, px_buf *out)
{
    px_image s;
    assert_int_equal(px_image_alloc(&s, upright->h, upright->w, 3), PX_OK);
    for (int sy = 0; sy < s.h; sy++)
        for (int sx = 0; sx < s.w; sx++)
            memcpy(s.px + (size_t)sy * s.stride + (size_t)sx * 3,
                   upright->px + (size_t)sx * upright->stride +
                       (size_t)(upright->w - 1 - sy) * upright->channels,
                   3);
    px_buf jpg = {0};
    assert_int_equal(px_image_encode(&s, PX_FMT_JPEG, 95, &jpg, NULL), PX_OK);
    px_image_free(&s);
    /* little-endian TIFF with one IFD entry: 0x0112 SHORT 1 = 6 */
    static const uint8_t exif[] = {
        0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 0x2A, 0x00, 0x08, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    assert_int_equal(sizeof exif, 0x22 + 2);
    assert_int_equal(px_buf_append(out, jpg.data, 2), PX_OK); /* SOI */
    assert_int_equal(px_buf_append(out, exif, sizeof exif), PX_OK);
    assert_int_equal(px_buf_append(out, jpg.data + 2, jpg.len - 2), PX_OK);
    px_buf_free(&jpg);
}

static void test_exif_rotated_photo(void **state)
{
    (void)state;
    px_image up;
    load_image(FACES "/ultraface_imgs_2.jpg", &up, NULL);
    px_buf rot = {0};
    make_rotated_jpeg(&up, &rot);
    assert_int_equal(px_image_exif_orientation(rot.data, rot.len), 6);

    px_anon_opts o = px_anon_opts_default();
    px_anon_result res;
    px_err e;
    assert_int_equal(px_anon_process(det, rot.data, rot.len, &o, &res, &e), PX_OK);
    assert_int_equal(res.orientation, 6);
    assert_int_equal(res.width, up.w); /* upright again */
    assert_int_equal(res.height, up.h);
    px_face r[8];
    const int nr = image_refs("ultraface_imgs_2.jpg", r, 8);
    assert_int_equal(matched(r, nr, res.faces, res.n_faces, 0.4f), nr);
    /* the output is upright, concealed and carries no EXIF */
    assert_false(has_exif(res.out.data, res.out.len));
    assert_int_equal(px_image_exif_orientation(res.out.data, res.out.len), 1);
    px_image out;
    px_decode_opts dopt = px_decode_opts_default();
    assert_int_equal(px_image_decode(res.out.data, res.out.len, &dopt, &out, NULL, &e), PX_OK);
    assert_concealed("ultraface_imgs_2.jpg", &up, &out);
    /* far from the faces the picture is what it was (JPEG noise only) */
    assert_true(mad(&up, &out, 0, up.h - 60, 100, up.h) < 8.0);
    px_image_free(&out);
    px_anon_result_free(&res);
    px_buf_free(&rot);
    px_image_free(&up);
}

/* ---- the CLI ---- */

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *line = s; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[2048];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        n += strstr(buf, needle) != NULL;
        line = end ? end + 1 : NULL;
    }
    return n;
}

static void test_cli_folder_with_bad_files(void **state)
{
    (void)state;
    char in[256], out[256], p[512];
    snprintf(in, sizeof in, "%s/in", tmpdir);
    snprintf(out, sizeof out, "%s/out", tmpdir);
    assert_int_equal(mkdir(in, 0700), 0);
    snprintf(p, sizeof p, "%s/sub", in);
    assert_int_equal(mkdir(p, 0700), 0);

    /* good ones: a JPEG, a PNG, one in a subfolder, one EXIF-rotated */
    snprintf(p, sizeof p, "%s/a.jpg", in);
    copy(FACES "/ultraface_imgs_2.jpg", p);
    snprintf(p, sizeof p, "%s/sub/city.jpg", in);
    copy(FACES "/deface_city.jpg", p);
    px_image img;
    load_image(FACES "/ultraface_imgs_3.jpg", &img, NULL);
    px_buf b = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &b, NULL), PX_OK);
    snprintf(p, sizeof p, "%s/b.png", in);
    put(p, b.data, b.len);
    px_buf_free(&b);
    px_image_free(&img);
    load_image(FACES "/ultraface_imgs_2.jpg", &img, NULL);
    make_rotated_jpeg(&img, &b);
    snprintf(p, sizeof p, "%s/rotated.jpg", in);
    put(p, b.data, b.len);
    px_image_free(&img);

    /* bad ones */
    snprintf(p, sizeof p, "%s/empty.jpg", in);
    put(p, "", 0);
    snprintf(p, sizeof p, "%s/truncated.jpg", in);
    put(p, b.data, b.len / 3);
    px_buf_free(&b);
    snprintf(p, sizeof p, "%s/notes.png", in);
    put(p, "this is not a picture\n", 22);
    /* a PNG header declaring 100000 x 100000 pixels (CRC left wrong on
     * purpose: the size check must come first or the CRC check catch it) */
    static const uint8_t huge[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13,
                                   'I', 'H', 'D', 'R', 0x00, 0x01, 0x86, 0xA0, 0x00, 0x01,
                                   0x86, 0xA0, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    snprintf(p, sizeof p, "%s/huge.png", in);
    put(p, huge, sizeof huge);
    /* corrupt EXIF on a good JPEG: the picture is still processed */
    {
        size_t n = 0;
        char *jpg = slurp(FACES "/libfd_keliamoniz1.jpg", &n);
        assert_non_null(jpg);
        static const uint8_t bad_exif[] = {0xFF, 0xE1, 0x00, 0x10, 'E', 'x', 'i', 'f', 0, 0,
                                           'M', 'M', 0x00, 0x2A, 0xFF, 0xFF, 0xFF, 0xF0};
        px_buf c = {0};
        px_buf_append(&c, jpg, 2);
        px_buf_append(&c, bad_exif, sizeof bad_exif);
        px_buf_append(&c, jpg + 2, n - 2);
        snprintf(p, sizeof p, "%s/badexif.jpg", in);
        put(p, c.data, c.len);
        px_buf_free(&c);
        free(jpg);
    }
    size_t a_len = 0;
    snprintf(p, sizeof p, "%s/a.jpg", in);
    char *a_before = slurp(p, &a_len);

    char errf[512];
    snprintf(errf, sizeof errf, "%s/err.txt", tmpdir);
    int rc = run("'%s' anonymize --threads 2 --outdir '%s' '%s' 2>'%s'", PX_PIXPIPE_BIN, out, in,
                 errf);
    char *err = slurp(errf, NULL);
    assert_non_null(err);
    printf("  stderr:\n%s", err);
    assert_int_equal(rc, 1);
    const char *bad[] = {"empty.jpg", "truncated.jpg", "notes.png", "huge.png"};
    for (int i = 0; i < 4; i++) {
        char needle[512];
        snprintf(needle, sizeof needle, "pixpipe: %s/%s: ", in, bad[i]);
        if (count_lines(err, needle) != 1)
            fail_msg("expected one error line for %s", bad[i]);
        snprintf(p, sizeof p, "%s/%s", out, bad[i]);
        assert_int_not_equal(access(p, F_OK), 0); /* no output, no partial file */
    }
    assert_int_equal(count_lines(err, "pixpipe: "), 4 + 1); /* + the summary line */
    assert_non_null(strstr(err, "huge.png: "));
    free(err);

    /* good outputs exist, mirror the tree, keep the format, hide every face */
    struct {
        const char *out, *ref, *src;
    } good[] = {{"a.jpg", "ultraface_imgs_2.jpg", FACES "/ultraface_imgs_2.jpg"},
                {"sub/city.jpg", "deface_city.jpg", FACES "/deface_city.jpg"},
                {"b.png", "ultraface_imgs_3.jpg", FACES "/ultraface_imgs_3.jpg"},
                {"rotated.jpg", "ultraface_imgs_2.jpg", FACES "/ultraface_imgs_2.jpg"},
                {"badexif.jpg", "libfd_keliamoniz1.jpg", FACES "/libfd_keliamoniz1.jpg"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", out, good[i].out);
        size_t n = 0;
        char *data = slurp(p, &n);
        if (!data)
            fail_msg("missing output %s", p);
        assert_false(has_exif((uint8_t *)data, n));
        assert_int_equal(px_image_sniff((uint8_t *)data, n), px_format_from_path(good[i].out));
        free(data);
        px_image o, src;
        load_image(p, &o, NULL);
        load_image(good[i].src, &src, NULL);
        assert_concealed(good[i].ref, &src, &o);
        px_image_free(&o);
        px_image_free(&src);
    }
    /* the input is untouched and nothing was written beside it */
    size_t a_after_len = 0;
    snprintf(p, sizeof p, "%s/a.jpg", in);
    char *a_after = slurp(p, &a_after_len);
    assert_int_equal(a_len, a_after_len);
    assert_memory_equal(a_before, a_after, a_len);
    free(a_after);
    snprintf(p, sizeof p, "%s/a.anon.jpg", in);
    assert_int_not_equal(access(p, F_OK), 0);

    /* refusing to overwrite an input */
    snprintf(p, sizeof p, "%s/a.jpg", in);
    rc = run("'%s' anonymize -q -o '%s' '%s' 2>'%s'", PX_PIXPIPE_BIN, p, p, errf);
    assert_int_equal(rc, 1);
    err = slurp(errf, NULL);
    assert_non_null(strstr(err, "refusing to overwrite"));
    free(err);
    a_after = slurp(p, &a_after_len);
    assert_int_equal(a_len, a_after_len);
    assert_memory_equal(a_before, a_after, a_len);
    free(a_after);

    /* without -o/--outdir: NAME.anon.EXT beside the input */
    rc = run("'%s' anonymize -q '%s' 2>'%s'", PX_PIXPIPE_BIN, p, errf);
    assert_int_equal(rc, 0);
    snprintf(p, sizeof p, "%s/a.anon.jpg", in);
    assert_int_equal(access(p, F_OK), 0);
    free(a_before);

    /* usage errors exit 2, a missing model 3 */
    assert_int_equal(run("'%s' anonymize --mode smudge x.jpg 2>/dev/null", PX_PIXPIPE_BIN), 2);
    assert_int_equal(run("'%s' anonymize 2>/dev/null", PX_PIXPIPE_BIN), 2);
    assert_int_equal(run("'%s' anonymize --model /nonexistent.onnx '%s/a.jpg' 2>/dev/null",
                         PX_PIXPIPE_BIN, in),
                     3);
}

static void test_cli_json_and_stdin(void **state)
{
    (void)state;
    char o[512], js[512];
    snprintf(o, sizeof o, "%s/j.png", tmpdir);
    snprintf(js, sizeof js, "%s/j.json", tmpdir);
    int rc = run("'%s' anonymize --json --mode blur -o '%s' '%s' >'%s'", PX_PIXPIPE_BIN, o,
                 FACES "/ultraface_imgs_3.jpg", js);
    assert_int_equal(rc, 0);
    json_error_t je;
    json_t *j = json_load_file(js, 0, &je);
    if (!j)
        fail_msg("--json output does not parse: %s", je.text);
    assert_string_equal(json_string_value(json_object_get(j, "input")), FACES "/ultraface_imgs_3.jpg");
    assert_string_equal(json_string_value(json_object_get(j, "output")), o);
    assert_int_equal(json_integer_value(json_object_get(j, "width")), 1024);
    assert_int_equal(json_integer_value(json_object_get(j, "height")), 768);
    assert_string_equal(json_string_value(json_object_get(j, "output_format")), "png");
    json_t *faces = json_object_get(j, "faces");
    px_face got[64];
    int n = 0;
    for (size_t i = 0; i < json_array_size(faces) && n < 64; i++) {
        json_t *f = json_array_get(faces, i);
        got[n++] = ref_box(json_object_get(f, "box"));
        assert_true(json_number_value(json_object_get(f, "score")) >= 0.6);
        assert_int_equal(json_array_size(json_object_get(f, "landmarks")), 5);
    }
    px_face r[16];
    const int nr = image_refs("ultraface_imgs_3.jpg", r, 16);
    assert_int_equal(matched(r, nr, got, n, 0.4f), nr);
    assert_true(json_number_value(json_object_get(json_object_get(j, "timings_ms"), "detect")) > 0);
    /* the self-check ran and found no concealed face again; upright was searched */
    assert_true(json_is_true(json_object_get(j, "verified")));
    assert_true(json_integer_value(json_object_get(j, "check_passes")) >= 1);
    assert_true(json_is_integer(json_object_get(j, "strengthened")));
    json_t *turns = json_object_get(j, "turns_searched");
    assert_true(json_array_size(turns) >= 1);
    assert_int_equal(json_integer_value(json_array_get(turns, 0)), 0);
    json_decref(j);
    /* the -o extension picked PNG */
    size_t len = 0;
    char *d = slurp(o, &len);
    assert_int_equal(px_image_sniff((uint8_t *)d, len), PX_FMT_PNG);
    free(d);

    /* stdin to stdout, same format as the input */
    snprintf(o, sizeof o, "%s/stdout.jpg", tmpdir);
    rc = run("'%s' anonymize - <'%s' >'%s'", PX_PIXPIPE_BIN, FACES "/ultraface_imgs_27.jpg", o);
    assert_int_equal(rc, 0);
    px_image in, out;
    load_image(FACES "/ultraface_imgs_27.jpg", &in, NULL);
    load_image(o, &out, NULL);
    assert_concealed("ultraface_imgs_27.jpg", &in, &out);
    px_image_free(&in);
    px_image_free(&out);

    /* --json for a bad input is an error object, and exit 1 */
    rc = run("'%s' anonymize --json -o '%s/x.jpg' /nonexistent.jpg >'%s' 2>/dev/null",
             PX_PIXPIPE_BIN, tmpdir, js);
    assert_int_equal(rc, 1);
    j = json_load_file(js, 0, &je);
    assert_non_null(j);
    assert_non_null(json_string_value(json_object_get(j, "error")));
    json_decref(j);

    /* names that are not UTF-8 still get their one line each: U+FFFD in "input"/"output",
     * the exact bytes in "input_base64"/"output_base64" (docs/anonymize.md) */
    rc = run("cd '%s' && mkdir jd && cp '%s' 'jd/caf\351.jpg' && printf x >'jd/bad\377\376.png' && "
             "'%s' anonymize --json --outdir jo jd >j2.json 2>/dev/null",
             tmpdir, FACES "/ultraface_imgs_3.jpg", PX_PIXPIPE_BIN);
    assert_int_equal(rc, 1);
    snprintf(js, sizeof js, "%s/j2.json", tmpdir);
    char *lines = slurp(js, NULL);
    assert_non_null(lines);
    int nl = 0;
    for (char *line = strtok(lines, "\n"); line; line = strtok(NULL, "\n"), nl++) {
        j = json_loads(line, 0, &je);
        if (!j)
            fail_msg("--json line %d does not parse: %s", nl, je.text);
        const char *name = json_string_value(json_object_get(j, "input"));
        const char *b64 = json_string_value(json_object_get(j, "input_base64"));
        assert_non_null(name);
        assert_non_null(b64);
        if (json_object_get(j, "error")) {
            assert_string_equal(name, "jd/bad\xEF\xBF\xBD\xEF\xBF\xBD.png");
            assert_string_equal(b64, "amQvYmFk//4ucG5n");
        } else {
            assert_string_equal(name, "jd/caf\xEF\xBF\xBD.jpg");
            assert_string_equal(b64, "amQvY2Fm6S5qcGc=");
            assert_string_equal(json_string_value(json_object_get(j, "output_base64")),
                                "am8vY2Fm6S5qcGc=");
            assert_true(json_array_size(json_object_get(j, "faces")) > 0);
        }
        json_decref(j);
    }
    assert_int_equal(nl, 2);
    free(lines);
}

/* x265 (libheif's HEVC encoder, used here to make HEIC inputs) keeps one
 * 1168-byte block for the life of the process: not ours, so LeakSanitizer is
 * told to ignore it (this hook is read only by sanitizer builds). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libx265.so\n";
}

/* img as an 8-bit RGB TIFF (LZW) with Orientation tag o, the pixels stored as
 * given (so o = 6 means they are stored turned). */
static void put_tiff(const char *path, const px_image *img, int o)
{
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, img->w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, img->h);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
    TIFFSetField(t, TIFFTAG_ORIENTATION, o);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 16);
    for (int y = 0; y < img->h; y++)
        assert_int_equal(TIFFWriteScanline(t, img->px + (size_t)y * img->stride, (uint32_t)y, 0), 1);
    TIFFClose(t);
}

/* img (RGB) as HEIC through libheif's HEVC encoder; 0 when there is none. */
static int put_heic(const char *path, const px_image *img)
{
    if (!heif_have_encoder_for_format(heif_compression_HEVC))
        return 0;
    struct heif_context *ctx = heif_context_alloc();
    struct heif_image *hi = NULL;
    assert_int_equal(heif_image_create(img->w, img->h, heif_colorspace_RGB,
                                       heif_chroma_interleaved_RGB, &hi).code, heif_error_Ok);
    assert_int_equal(heif_image_add_plane(hi, heif_channel_interleaved, img->w, img->h, 8).code,
                     heif_error_Ok);
    int stride = 0;
    uint8_t *p = heif_image_get_plane(hi, heif_channel_interleaved, &stride);
    for (int y = 0; y < img->h; y++)
        memcpy(p + (size_t)y * stride, img->px + (size_t)y * img->stride, (size_t)img->w * 3);
    struct heif_encoder *enc = NULL;
    assert_int_equal(heif_context_get_encoder_for_format(ctx, heif_compression_HEVC, &enc).code,
                     heif_error_Ok);
    heif_encoder_set_lossy_quality(enc, 85);
    assert_int_equal(heif_context_encode_image(ctx, hi, enc, NULL, NULL).code, heif_error_Ok);
    assert_int_equal(heif_context_write_to_file(ctx, path).code, heif_error_Ok);
    heif_encoder_release(enc);
    heif_image_release(hi);
    heif_context_free(ctx);
    return 1;
}

/* Issue 12: TIFF (turned, Orientation 6) and HEIC photos in a folder are
 * anonymized to JPEG, faces found upright; a file and a folder we may not
 * read are each reported by name (stderr and --json) and the exit status is
 * 1. Run as an unprivileged user when we are root (root reads anything). */
static void test_cli_read_only_formats_and_unreadable(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_ro_XXXXXX", p[512];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0777), 0);
    px_image img, turned;
    load_image(FACES "/ultraface_imgs_3.jpg", &img, NULL);
    /* stored turned a quarter the other way (applying 8 undoes what 6 applies) */
    assert_int_equal(px_image_copy(&img, &turned), PX_OK);
    assert_int_equal(px_image_apply_orientation(&turned, 8), PX_OK);
    snprintf(p, sizeof p, "%s/turned.tif", dir);
    put_tiff(p, &turned, 6);
    snprintf(p, sizeof p, "%s/photo.heic", dir);
    const int heic = put_heic(p, &img);
    if (!heic)
        print_message("no HEVC encoder in this libheif: the HEIC input is not tested\n");
    snprintf(p, sizeof p, "%s/locked.jpg", dir);
    copy(FACES "/ultraface_imgs_2.jpg", p);
    assert_int_equal(chmod(p, 0), 0);
    snprintf(p, sizeof p, "%s/lockdir", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/lockdir/x.jpg", dir);
    copy(FACES "/ultraface_imgs_2.jpg", p);
    snprintf(p, sizeof p, "%s/lockdir", dir);
    assert_int_equal(chmod(p, 0), 0);
    /* the model travels with the run (the models folder may be private to its owner) */
    snprintf(p, sizeof p, "%s/.model.onnx", dir);
    copy(MODEL, p);
    assert_int_equal(chmod(p, 0644), 0);
    const char *as = geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
    int rc = run("cd '%s' && %s'%s' anonymize --model .model.onnx --json --outdir out . >r.json "
                 "2>r.err", dir, as, PX_PIXPIPE_BIN);
    assert_int_equal(rc, 1);
    snprintf(p, sizeof p, "%s/r.json", dir);
    char *lines = slurp(p, NULL);
    assert_non_null(lines);
    int n = 0, seen_locked = 0, seen_dir = 0, seen_tif = 0, seen_heic = 0;
    for (char *line = strtok(lines, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            fail_msg("--json line does not parse: %s", je.text);
        const char *in = json_string_value(json_object_get(j, "input"));
        const char *err = json_string_value(json_object_get(j, "error"));
        assert_non_null(in);
        if (!strcmp(in, "./locked.jpg")) {
            seen_locked = 1;
            assert_non_null(err);
            assert_non_null(strstr(err, "Permission denied"));
        } else if (!strcmp(in, "./lockdir")) {
            seen_dir = 1;
            assert_non_null(err);
            assert_non_null(strstr(err, "cannot read directory"));
        } else if (!strcmp(in, "./turned.tif") || !strcmp(in, "./photo.heic")) {
            const int tif = in[2] == 't';
            if (err)
                fail_msg("%s: %s", in, err);
            seen_tif |= tif, seen_heic |= !tif;
            assert_string_equal(json_string_value(json_object_get(j, "input_format")),
                                tif ? "tiff" : "heif");
            assert_string_equal(json_string_value(json_object_get(j, "output_format")), "jpeg");
            assert_string_equal(json_string_value(json_object_get(j, "output")),
                                tif ? "out/turned.jpg" : "out/photo.jpg");
            assert_int_equal(json_integer_value(json_object_get(j, "orientation")), tif ? 6 : 1);
            assert_int_equal(json_integer_value(json_object_get(j, "width")), img.w);
            /* the reference faces are found upright */
            json_t *faces = json_object_get(j, "faces");
            px_face got[64], r[16];
            int ng = 0;
            for (size_t i = 0; i < json_array_size(faces) && ng < 64; i++)
                got[ng++] = ref_box(json_object_get(json_array_get(faces, i), "box"));
            const int nr = image_refs("ultraface_imgs_3.jpg", r, 16);
            assert_int_equal(matched(r, nr, got, ng, 0.4f), nr);
        } else {
            fail_msg("unexpected input %s", in);
        }
        json_decref(j);
    }
    free(lines);
    assert_int_equal(n, 3 + heic);
    assert_true(seen_locked && seen_dir && seen_tif && seen_heic == heic);
    snprintf(p, sizeof p, "%s/r.err", dir);
    char *errs = slurp(p, NULL);
    assert_non_null(errs);
    assert_non_null(strstr(errs, "pixpipe: ./locked.jpg: "));
    assert_non_null(strstr(errs, "pixpipe: ./lockdir: cannot read directory"));
    free(errs);
    /* the output really is a JPEG with the faces hidden */
    snprintf(p, sizeof p, "%s/out/turned.jpg", dir);
    px_image out;
    load_image(p, &out, NULL);
    assert_concealed("ultraface_imgs_3.jpg", &img, &out);
    px_image_free(&out);
    px_image_free(&img);
    px_image_free(&turned);
    run("chmod -R u+rwx '%s' && rm -rf '%s'", dir, dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recall_on_reference_photos),
        cmocka_unit_test(test_ultraface_model),
        cmocka_unit_test(test_threads_share_one_detector),
        cmocka_unit_test(test_small_faces_in_24mp),
        cmocka_unit_test(test_exif_rotated_photo),
        cmocka_unit_test(test_cli_folder_with_bad_files),
        cmocka_unit_test(test_cli_json_and_stdin),
        cmocka_unit_test(test_cli_read_only_formats_and_unreadable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

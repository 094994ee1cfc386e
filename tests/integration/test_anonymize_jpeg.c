/*
 * JPEG in, JPEG out through the whole anonymize job (px_anon_process with the
 * real YuNet model and the photos in ../shared/testdata/faces): the output
 * keeps the input's DCT blocks away from the faces (read back with libjpeg
 * and compared block by block), every luma block inside a found face is new,
 * the output decodes at the input's size (also deface_city.jpg, whose ICC
 * profile is sRGB); any run with jpeg_keep_blocks off is encoded afresh and
 * says so; a photo stored turned with EXIF orientation 6 (made here) keeps
 * its blocks too, turned, and gives the upright faces; `pixpipe anonymize
 * --json` says which way each JPEG was written and why not (orientation 8 on
 * a width that is not whole MCUs), and --quality asks for a fresh encode. Prints the encode time both ways (never asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jpeglib.h>
#include <unistd.h>

#include "anon/px_anon.h"

#define FACES PX_SHARED_DIR "/testdata/faces"
#define MODEL PX_MODEL_DIR "/" PX_ANON_DEFAULT_MODEL

static const char *photos[] = {"centerface_t3.jpeg", "deface_city.jpg",     "inspireface_view.jpg",
                               "libfd_ios_test.jpg", "libfd_keliamoniz1.jpg", "ultraface_imgs_2.jpg",
                               "ultraface_imgs_27.jpg", "ultraface_imgs_3.jpg"};

static jmp_buf jb;
static void die(j_common_ptr c)
{
    (void)c;
    longjmp(jb, 1);
}

/* The luma plane's quantised blocks: wb*hb blocks of 64, row-major. */
static JCOEF *luma_blocks(const uint8_t *data, size_t len, int *wb, int *hb)
{
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr e;
    d.err = jpeg_std_error(&e);
    e.error_exit = die;
    if (setjmp(jb))
        fail_msg("libjpeg could not read the coefficients");
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, data, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    jvirt_barray_ptr *arr = jpeg_read_coefficients(&d);
    *wb = (int)d.comp_info[0].width_in_blocks;
    *hb = (int)d.comp_info[0].height_in_blocks;
    JCOEF *c = malloc((size_t)*wb * (size_t)*hb * 64 * sizeof(JCOEF));
    assert_non_null(c);
    for (int by = 0; by < *hb; by++) {
        JBLOCKARRAY r =
            (*d.mem->access_virt_barray)((j_common_ptr)&d, arr[0], (JDIMENSION)by, 1, FALSE);
        memcpy(c + (size_t)by * (size_t)*wb * 64, r[0], (size_t)*wb * 64 * sizeof(JCOEF));
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    return c;
}

static void test_faces_reencoded_rest_copied(void **state)
{
    (void)state;
    px_face_detector *det = NULL;
    px_err e;
    if (px_face_detector_create(MODEL, NULL, &det, &e) != PX_OK)
        fail_msg("%s", e.msg);
    int lossless_photos = 0;
    for (size_t i = 0; i < sizeof photos / sizeof photos[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", FACES, photos[i]);
        uint8_t *data;
        size_t len;
        if (px_read_file(path, (size_t)1 << 26, &data, &len, &e) != PX_OK)
            fail_msg("%s: %s", path, e.msg);
        px_decode_info di;
        px_image img;
        assert_int_equal(px_image_decode(data, len, NULL, &img, &di, &e), PX_OK);
        px_anon_opts o = px_anon_opts_default();
        o.seed = 11;
        px_anon_result r, fresh;
        if (px_anon_process(det, data, len, &o, &r, &e) != PX_OK)
            fail_msg("%s: %s", photos[i], e.msg);
        o.jpeg_keep_blocks = 0;
        assert_int_equal(px_anon_process(det, data, len, &o, &fresh, &e), PX_OK);
        assert_false(fresh.jpeg.lossless);
        assert_int_equal(fresh.jpeg.why[0], '\0');
        assert_int_equal(r.out_format, PX_FMT_JPEG);
        printf("%-22s %d faces: encode %.1f ms keeping blocks (%s%s), %.1f ms afresh; %zu vs %zu "
               "bytes\n",
               photos[i], r.n_faces, r.ms_encode, r.jpeg.lossless ? "lossless" : "fresh: ",
               r.jpeg.why, fresh.ms_encode, r.out.len, fresh.out.len);
        {
            if (!r.jpeg.lossless)
                fail_msg("%s: encoded afresh: %s", photos[i], r.jpeg.why);
            lossless_photos++;
            int wb, hb, wb2, hb2;
            JCOEF *a = luma_blocks(data, len, &wb, &hb);
            JCOEF *b = luma_blocks(r.out.data, r.out.len, &wb2, &hb2);
            assert_int_equal(wb, wb2);
            assert_int_equal(hb, hb2);
            long same = 0, inside = 0, inside_changed = 0;
            for (int by = 0; by < hb; by++)
                for (int bx = 0; bx < wb; bx++) {
                    const size_t off = ((size_t)by * (size_t)wb + (size_t)bx) * 64;
                    const int eq = !memcmp(a + off, b + off, 64 * sizeof(JCOEF));
                    same += eq;
                    for (int f = 0; f < r.n_faces; f++) {
                        const px_face *fc = &r.faces[f];
                        if (bx * 8 >= fc->x1 && bx * 8 + 8 <= fc->x2 && by * 8 >= fc->y1 &&
                            by * 8 + 8 <= fc->y2) {
                            inside++;
                            inside_changed += !eq;
                            break;
                        }
                    }
                }
            assert_int_equal(inside_changed, inside); /* noise over every face block */
            if (r.n_faces > 0)
                assert_true(inside > 0);
            assert_true(same > (long)wb * hb / 4); /* the rest kept */
            assert_true(r.jpeg.blocks_reencoded > 0 || r.n_faces == 0);
            free(a);
            free(b);
        }
        px_image back;
        assert_int_equal(px_image_decode(r.out.data, r.out.len, NULL, &back, NULL, &e), PX_OK);
        assert_int_equal(back.w, img.w);
        assert_int_equal(back.h, img.h);
        px_image_free(&back);
        px_image_free(&img);
        px_anon_result_free(&r);
        px_anon_result_free(&fresh);
        free(data);
    }
    assert_int_equal(lossless_photos, (int)(sizeof photos / sizeof photos[0]));
    px_face_detector_destroy(det);
}

/* The photo stored turned (pixels rotated back, an EXIF APP1 saying o: 6 or 8). */
static void turned_jpeg(const px_image *upright, int o, px_buf *out)
{
    px_image st;
    px_err e;
    assert_int_equal(px_image_copy(upright, &st), PX_OK);
    assert_int_equal(px_image_apply_orientation(&st, 14 - o), PX_OK); /* 8 undoes 6, 6 undoes 8 */
    px_buf plain = {0};
    assert_int_equal(px_image_encode(&st, PX_FMT_JPEG, 85, &plain, &e), PX_OK);
    uint8_t app1[] = {0xFF, 0xE1, 0, 34, 'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0,
                      8,    0,    0, 0,  1,   0,   0x12, 0x01, 3, 0, 1, 0, 0, 0,
                      6,    0,    0, 0,  0,   0,   0, 0};
    app1[28] = (uint8_t)o;
    memset(out, 0, sizeof *out);
    assert_int_equal(px_buf_append(out, plain.data, 2), PX_OK); /* SOI */
    assert_int_equal(px_buf_append(out, app1, sizeof app1), PX_OK);
    assert_int_equal(px_buf_append(out, plain.data + 2, plain.len - 2), PX_OK);
    px_buf_free(&plain);
    px_image_free(&st);
}

static void test_turned_photo_keeps_blocks(void **state)
{
    (void)state;
    px_face_detector *det = NULL;
    px_err e;
    if (px_face_detector_create(MODEL, NULL, &det, &e) != PX_OK)
        fail_msg("%s", e.msg);
    uint8_t *data;
    size_t len;
    if (px_read_file(FACES "/libfd_keliamoniz1.jpg", (size_t)1 << 26, &data, &len, &e) != PX_OK)
        fail_msg("%s", e.msg);
    px_image up;
    assert_int_equal(px_image_decode(data, len, NULL, &up, NULL, &e), PX_OK);
    px_buf turned;
    turned_jpeg(&up, 6, &turned);
    px_anon_opts o = px_anon_opts_default();
    o.seed = 5;
    px_anon_result a, b;
    assert_int_equal(px_anon_process(det, data, len, &o, &a, &e), PX_OK);
    assert_int_equal(px_anon_process(det, turned.data, turned.len, &o, &b, &e), PX_OK);
    assert_int_equal(b.orientation, 6);
    if (!b.jpeg.lossless)
        fail_msg("orientation 6: encoded afresh: %s", b.jpeg.why);
    assert_true(b.jpeg.blocks_reencoded > 0);
    assert_int_equal(b.width, up.w);
    assert_int_equal(b.height, up.h);
    assert_int_equal(b.n_faces, a.n_faces);
    px_image back;
    px_decode_info bi;
    assert_int_equal(px_image_decode(b.out.data, b.out.len, NULL, &back, &bi, &e), PX_OK);
    assert_int_equal(bi.orientation, 1); /* stored upright, no EXIF */
    assert_int_equal(back.w, up.w);
    px_image_free(&back);
    px_anon_result_free(&a);
    px_anon_result_free(&b);
    px_buf_free(&turned);
    px_image_free(&up);
    free(data);
    px_face_detector_destroy(det);
}

/* Runs `pixpipe anonymize --json ARGS` and returns the JSON line for input in. */
static json_t *cli_line(const char *args, const char *in)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "PIXPIPE_MODEL_DIR=%s %s anonymize --json --seed 3 %s", PX_MODEL_DIR,
             PX_PIXPIPE_BIN, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[65536];
    json_t *found = NULL;
    while (fgets(line, sizeof line, p)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *name = o ? json_string_value(json_object_get(o, "input")) : NULL;
        if (name && strcmp(name, in) == 0 && !found)
            found = o;
        else
            json_decref(o);
    }
    pclose(p);
    if (!found)
        fail_msg("no --json line for %s from: %s", in, cmd);
    return found;
}

static void test_cli_json_says_how(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_anon_jpeg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char a[512], b[512], out[512], args[2048];
    snprintf(a, sizeof a, "%s/plain.jpg", dir);
    snprintf(b, sizeof b, "%s/turned8.jpg", dir);
    snprintf(out, sizeof out, "%s/q80.jpg", dir);
    snprintf(args, sizeof args, "cp %s/ultraface_imgs_3.jpg %s", FACES, a);
    assert_int_equal(system(args), 0);
    /* deface_city.jpg (800x564) stored turned with orientation 8: the stored
     * width 564 is mirrored and is not whole 16-pixel MCUs */
    uint8_t *data;
    size_t len;
    px_err e;
    px_image up;
    if (px_read_file(FACES "/deface_city.jpg", (size_t)1 << 26, &data, &len, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(px_image_decode(data, len, NULL, &up, NULL, &e), PX_OK);
    px_buf turned;
    turned_jpeg(&up, 8, &turned);
    FILE *f = fopen(b, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(turned.data, 1, turned.len, f), turned.len);
    fclose(f);
    px_buf_free(&turned);
    px_image_free(&up);
    free(data);
    snprintf(args, sizeof args, "%s %s", a, b);
    json_t *o = cli_line(args, a);
    assert_string_equal(json_string_value(json_object_get(o, "jpeg")), "lossless-outside-masks");
    assert_null(json_object_get(o, "jpeg_reencoded_because"));
    json_decref(o);
    o = cli_line(args, b);
    assert_string_equal(json_string_value(json_object_get(o, "jpeg")), "reencoded");
    assert_non_null(
        strstr(json_string_value(json_object_get(o, "jpeg_reencoded_because")), "orientation 8"));
    json_decref(o);
    snprintf(args, sizeof args, "--quality 80 -o %s %s", out, a);
    o = cli_line(args, a);
    assert_string_equal(json_string_value(json_object_get(o, "jpeg")), "reencoded");
    json_decref(o);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    assert_int_equal(system(args), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faces_reencoded_rest_copied),
        cmocka_unit_test(test_turned_photo_keeps_blocks),
        cmocka_unit_test(test_cli_json_says_how),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Golden tests of the whole engine on the real face models.
 *
 * For the two YuNet models that have reference outputs (OpenCV 4.6's DNN
 * module, shared/golden/yunet: index.json lists the cases and every output's
 * shape), the network input is rebuilt from input.png exactly as index.json
 * says (BGR, 0..255, NCHW float, no mean/scale), run through px_nn, and every
 * output tensor is compared with the little-endian .f32 file: the worst
 * absolute error per case is printed and must be <= 1e-4. The same input is
 * then run with 2 threads and must give bitwise identical outputs.
 *
 * The two other models (UltraFace RFB-640, YuNet 2022mar) have no golden
 * files; they must load, run, and give outputs of the expected shapes whose
 * softmax rows sum to 1.
 *
 * The PNG is read with libpng here rather than through px_image so that this
 * test depends only on px_nn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/px_nn.h"

#define GOLDEN_DIR PX_SHARED_DIR "/golden/yunet"
#define TOL 1e-4

/* Reads an 8-bit PNG as packed RGB. Returns 0 on success. */
static int read_png_rgb(const char *path, uint8_t **rgb, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile data = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(data);
        free(rows);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_read_info(png, info);
    png_set_strip_16(png);
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_read_update_info(png, info);
    int width = (int)png_get_image_width(png, info), height = (int)png_get_image_height(png, info);
    if (png_get_rowbytes(png, info) != (size_t)width * 3)
        longjmp(png_jmpbuf(png), 1);
    data = malloc((size_t)width * height * 3);
    rows = malloc((size_t)height * sizeof *rows);
    if (!data || !rows)
        longjmp(png_jmpbuf(png), 1);
    for (int y = 0; y < height; y++)
        rows[y] = data + (size_t)y * width * 3;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    fclose(f);
    *rgb = data;
    *w = width;
    *h = height;
    return 0;
}

static float *read_f32(const char *path, size_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    float *v = malloc(count * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, count, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (got != count || extra != EOF) {
        free(v);
        return NULL;
    }
    return v; /* little-endian file on a little-endian host */
}

/* Loads the model, fills its input from input.png of the case directory. */
static void fill_input(px_nn_session *s, const px_nn_model *m, const char *case_dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/input.png", case_dir);
    uint8_t *rgb;
    int w, h;
    assert_int_equal(read_png_rgb(path, &rgb, &w, &h), 0);
    px_nn_tensor_info in;
    assert_int_equal(px_nn_model_input_info(m, 0, &in), PX_OK);
    assert_int_equal(in.rank, 4);
    assert_int_equal(in.dims[1], 3);
    assert_int_equal(in.dims[2], h);
    assert_int_equal(in.dims[3], w);
    float *x = px_nn_session_input(s, 0);
    assert_non_null(x);
    size_t plane = (size_t)w * h;
    for (size_t i = 0; i < plane; i++) {
        x[i] = rgb[3 * i + 2];             /* B */
        x[plane + i] = rgb[3 * i + 1];     /* G */
        x[2 * plane + i] = rgb[3 * i + 0]; /* R */
    }
    free(rgb);
}

static void test_golden_yunet(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *idx = json_load_file(GOLDEN_DIR "/index.json", 0, &jerr);
    assert_non_null(idx);
    json_t *cases = json_object_get(idx, "cases");
    assert_true(json_is_object(cases));
    assert_true(json_object_size(cases) >= 6);
    const char *key;
    json_t *cs;
    int n_cases = 0;
    json_object_foreach(cases, key, cs)
    {
        char model_name[256], model_path[1024], case_dir[1024];
        const char *slash = strchr(key, '/');
        assert_non_null(slash);
        snprintf(model_name, sizeof model_name, "%.*s", (int)(slash - key), key);
        snprintf(model_path, sizeof model_path, "%s/%s.onnx", PX_MODEL_DIR, model_name);
        snprintf(case_dir, sizeof case_dir, "%s/%s", GOLDEN_DIR, key);
        px_err err;
        px_nn_model *m = NULL;
        int rc = px_nn_model_load(model_path, &m, &err);
        if (rc != PX_OK)
            fail_msg("%s: %s", model_path, err.msg);
        px_nn_session *s1 = NULL, *s2 = NULL;
        assert_int_equal(px_nn_session_create(m, 1, &s1, &err), PX_OK);
        assert_int_equal(px_nn_session_create(m, 2, &s2, &err), PX_OK);
        fill_input(s1, m, case_dir);
        fill_input(s2, m, case_dir);
        assert_int_equal(px_nn_session_run(s1, &err), PX_OK);
        assert_int_equal(px_nn_session_run(s2, &err), PX_OK);

        json_t *outs = json_object_get(cs, "outputs");
        assert_true(json_object_size(outs) == (size_t)px_nn_model_num_outputs(m));
        const char *oname;
        json_t *oshape;
        double worst = 0;
        const char *worst_name = "";
        json_object_foreach(outs, oname, oshape)
        {
            int oi = px_nn_model_find_output(m, oname);
            if (oi < 0)
                fail_msg("%s: output '%s' missing", key, oname);
            px_nn_tensor_info info;
            assert_int_equal(px_nn_model_output_info(m, oi, &info), PX_OK);
            assert_int_equal((size_t)info.rank, json_array_size(oshape));
            for (int d = 0; d < info.rank; d++)
                assert_int_equal(info.dims[d], json_integer_value(json_array_get(oshape, (size_t)d)));
            char path[1100];
            snprintf(path, sizeof path, "%s/%s.f32", case_dir, oname);
            float *ref = read_f32(path, info.count);
            assert_non_null(ref);
            const float *got = px_nn_session_output(s1, oi);
            for (size_t i = 0; i < info.count; i++) {
                double e = fabs((double)got[i] - (double)ref[i]);
                if (!(e <= worst)) { /* also catches NaN */
                    worst = isnan(e) ? INFINITY : e;
                    worst_name = oname;
                }
            }
            /* 1 vs 2 threads: bitwise identical */
            assert_memory_equal(got, px_nn_session_output(s2, oi), info.count * sizeof(float));
            free(ref);
        }
        printf("golden %-36s worst abs error %.3g (%s), %d steps\n", key, worst, worst_name,
               px_nn_model_num_steps(m));
        if (!(worst <= TOL))
            fail_msg("%s: worst abs error %g in %s exceeds %g", key, worst, worst_name, TOL);
        px_nn_session_destroy(s1);
        px_nn_session_destroy(s2);
        px_nn_model_destroy(m);
        n_cases++;
    }
    assert_int_equal(n_cases, 6);
    json_decref(idx);
}

/* Deterministic pseudo-image in 0..255 (a smooth pattern plus noise). */
static void fill_pattern(float *x, size_t n)
{
    uint32_t r = 12345;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)((i / 7) % 200) + (float)(r >> 27);
    }
}

static void check_softmax_rows(const float *v, size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        double sum = 0;
        for (size_t c = 0; c < cols; c++) {
            assert_true(v[r * cols + c] >= 0.0f && v[r * cols + c] <= 1.0f);
            sum += v[r * cols + c];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
}

static px_nn_model *load_and_run(const char *file, px_nn_session **s)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", PX_MODEL_DIR, file);
    px_err err;
    px_nn_model *m = NULL;
    if (px_nn_model_load(path, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(px_nn_session_create(m, 1, s, &err), PX_OK);
    px_nn_tensor_info in;
    assert_int_equal(px_nn_model_input_info(m, 0, &in), PX_OK);
    fill_pattern(px_nn_session_input(*s, 0), in.count);
    if (px_nn_session_run(*s, &err) != PX_OK)
        fail_msg("%s", err.msg);
    return m;
}

static void test_ultraface_runs(void **state)
{
    (void)state;
    px_nn_session *s;
    px_nn_model *m = load_and_run("ultraface_rfb_640.onnx", &s);
    px_nn_tensor_info in, sc, bx;
    assert_int_equal(px_nn_model_input_info(m, 0, &in), PX_OK);
    assert_int_equal(in.dims[2], 480);
    assert_int_equal(in.dims[3], 640);
    int si = px_nn_model_find_output(m, "scores"), bi = px_nn_model_find_output(m, "boxes");
    assert_true(si >= 0 && bi >= 0);
    assert_int_equal(px_nn_model_output_info(m, si, &sc), PX_OK);
    assert_int_equal(px_nn_model_output_info(m, bi, &bx), PX_OK);
    assert_int_equal(sc.rank, 3);
    assert_int_equal(sc.dims[0], 1);
    assert_int_equal(sc.dims[1], 17640);
    assert_int_equal(sc.dims[2], 2);
    assert_int_equal(bx.rank, 3);
    assert_int_equal(bx.dims[1], 17640);
    assert_int_equal(bx.dims[2], 4);
    check_softmax_rows(px_nn_session_output(s, si), 17640, 2);
    const float *b = px_nn_session_output(s, bi);
    for (size_t i = 0; i < bx.count; i++)
        assert_true(isfinite(b[i]));
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
}

static void test_yunet_2022_runs(void **state)
{
    (void)state;
    px_nn_session *s;
    px_nn_model *m = load_and_run("face_detection_yunet_2022mar.onnx", &s);
    static const struct {
        const char *name;
        int64_t cols;
    } outs[] = {{"loc", 14}, {"conf", 2}, {"iou", 1}};
    for (int k = 0; k < 3; k++) {
        int oi = px_nn_model_find_output(m, outs[k].name);
        assert_true(oi >= 0);
        px_nn_tensor_info o;
        assert_int_equal(px_nn_model_output_info(m, oi, &o), PX_OK);
        assert_int_equal(o.rank, 2);
        assert_int_equal(o.dims[0], 1076);
        assert_int_equal(o.dims[1], outs[k].cols);
        const float *v = px_nn_session_output(s, oi);
        for (size_t i = 0; i < o.count; i++)
            assert_true(isfinite(v[i]));
        if (k == 1)
            check_softmax_rows(v, 1076, 2);
    }
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_yunet),
        cmocka_unit_test(test_ultraface_runs),
        cmocka_unit_test(test_yunet_2022_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * JPEG in, JPEG out (px_image_encode_jpeg_patched) and scaled JPEG decoding
 * (px_image_decode_scaled).
 *
 * The inputs are made here with libjpeg in every layout the block copy
 * handles (4:2:0, 4:2:2, 4:4:4, grey, progressive, arithmetic, sizes off the
 * block grid, EXIF and comment markers), then decoded, partly concealed and
 * written back. The output's DCT coefficients are read with libjpeg and
 * compared block by block with the input's: every block whose pixels lie
 * outside the concealed rectangle must be bit-identical, the blocks inside
 * must have changed, and the output must decode to the concealed colour
 * there. Each case that falls back to a fresh encode is taken and its output
 * compared byte for byte with px_image_encode's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* cmocka.h needs the three above first */
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <lcms2.h>

#include "image/px_image.h"

/* ---------- helpers ---------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Gradients, and either (noise 1) a checkerboard and noise, so that every
 * block has content, or (0) a smooth wave, what photos mostly are. */
static void make_image_n(px_image *img, int w, int h, int noise)
{
    assert_int_equal(px_image_alloc(img, w, h, 3), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1) / 2 + (noise ? rnd() & 63 : 32));
            p[2] = noise ? (uint8_t)(((x / 12 + y / 12) & 1) ? 200 : 40)
                         : (uint8_t)(128.0 + 100.0 * sin(x / 9.0) * cos(y / 7.0));
        }
}

static void make_image(px_image *img, int w, int h)
{
    make_image_n(img, w, h, 1);
}

typedef struct jpeg_spec {
    int h_samp, v_samp; /* of Y (chroma 1x1) */
    int quality;
    int progressive, arith, grey, cmyk;
    int markers; /* EXIF APP1 (orientation `orient`) + COM */
    int orient;
    const uint8_t *icc; /* an ICC profile to embed (APP2), or NULL */
    unsigned icc_len;
} jpeg_spec;

static jmp_buf jb;
static void die(j_common_ptr c)
{
    (void)c;
    longjmp(jb, 1);
}

/* A minimal little-endian EXIF block with one Orientation entry. */
static size_t exif_app1(uint8_t *b, int orient)
{
    static const uint8_t head[] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0,
                                   1,   0,   0x12, 0x01, 3, 0, 1, 0, 0, 0};
    memcpy(b, head, sizeof head);
    size_t n = sizeof head;
    b[n++] = (uint8_t)orient;
    memset(b + n, 0, 7); /* value padding + next IFD 0 */
    return n + 7;
}

static void encode_spec(const px_image *img, const jpeg_spec *sp, px_buf *out)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *mem = NULL;
    unsigned long mlen = 0;
    c.err = jpeg_std_error(&e);
    e.error_exit = die;
    if (setjmp(jb))
        fail_msg("libjpeg failed to write the test input");
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &mlen);
    c.image_width = (JDIMENSION)img->w;
    c.image_height = (JDIMENSION)img->h;
    c.input_components = sp->cmyk ? 4 : 3;
    c.in_color_space = sp->cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&c);
    if (sp->grey)
        jpeg_set_colorspace(&c, JCS_GRAYSCALE);
    jpeg_set_quality(&c, sp->quality, TRUE);
    if (!sp->grey && !sp->cmyk) {
        c.comp_info[0].h_samp_factor = sp->h_samp;
        c.comp_info[0].v_samp_factor = sp->v_samp;
    }
    if (sp->progressive)
        jpeg_simple_progression(&c);
    c.arith_code = sp->arith ? TRUE : FALSE;
    jpeg_start_compress(&c, TRUE);
    if (sp->icc)
        jpeg_write_icc_profile(&c, sp->icc, sp->icc_len);
    if (sp->markers) {
        uint8_t app1[64];
        jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)exif_app1(app1, sp->orient));
        static const char com[] = "secret comment";
        jpeg_write_marker(&c, JPEG_COM, (const JOCTET *)com, (unsigned)strlen(com));
    }
    uint8_t *row = malloc((size_t)img->w * 4);
    assert_non_null(row);
    while (c.next_scanline < c.image_height) {
        const uint8_t *src = img->px + (size_t)c.next_scanline * img->stride;
        for (int x = 0; x < img->w; x++) {
            if (sp->cmyk) {
                for (int k = 0; k < 3; k++)
                    row[4 * x + k] = src[3 * x + k];
                row[4 * x + 3] = 255;
            } else {
                memcpy(row + 3 * x, src + 3 * x, 3);
            }
        }
        JSAMPROW r[1] = {row};
        jpeg_write_scanlines(&c, r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    memset(out, 0, sizeof *out);
    assert_int_equal(px_buf_append(out, mem, mlen), PX_OK);
    free(mem);
}

/* Every quantised coefficient of a JPEG, per component, plus its geometry. */
typedef struct coefs {
    int n;
    int wb[4], hb[4], rx[4], ry[4];
    JCOEF *c[4]; /* hb*wb blocks of 64 */
    int progressive, arith;
} coefs;

static void read_coefs(const px_buf *b, coefs *k)
{
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr e;
    memset(k, 0, sizeof *k);
    d.err = jpeg_std_error(&e);
    e.error_exit = die;
    if (setjmp(jb))
        fail_msg("libjpeg could not read the coefficients");
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, b->data, (unsigned long)b->len);
    jpeg_read_header(&d, TRUE);
    jvirt_barray_ptr *arr = jpeg_read_coefficients(&d);
    k->n = d.num_components;
    k->progressive = d.progressive_mode;
    k->arith = d.arith_code;
    for (int ci = 0; ci < k->n; ci++) {
        jpeg_component_info *cp = &d.comp_info[ci];
        k->wb[ci] = (int)cp->width_in_blocks;
        k->hb[ci] = (int)cp->height_in_blocks;
        k->rx[ci] = d.max_h_samp_factor / cp->h_samp_factor;
        k->ry[ci] = d.max_v_samp_factor / cp->v_samp_factor;
        k->c[ci] = malloc((size_t)k->wb[ci] * (size_t)k->hb[ci] * 64 * sizeof(JCOEF));
        assert_non_null(k->c[ci]);
        for (int by = 0; by < k->hb[ci]; by++) {
            JBLOCKARRAY r =
                (*d.mem->access_virt_barray)((j_common_ptr)&d, arr[ci], (JDIMENSION)by, 1, FALSE);
            memcpy(k->c[ci] + (size_t)by * (size_t)k->wb[ci] * 64, r[0],
                   (size_t)k->wb[ci] * 64 * sizeof(JCOEF));
        }
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
}

static void free_coefs(coefs *k)
{
    for (int i = 0; i < 4; i++)
        free(k->c[i]);
}

/* APPn (n >= 1) or COM markers before the first SOS. */
static int metadata_markers(const px_buf *b)
{
    const uint8_t *d = b->data;
    size_t i = 2;
    int found = 0;
    while (i + 4 <= b->len && d[i] == 0xFF) {
        const uint8_t m = d[i + 1];
        if ((m >= 0xE1 && m <= 0xEF) || m == 0xFE)
            found++;
        if (m == 0xDA)
            break;
        i += 2 + ((size_t)d[i + 2] << 8 | d[i + 3]);
    }
    return found;
}

static px_mask box(int x0, int y0, int w, int h)
{
    px_mask m = {x0, y0, w, h, malloc((size_t)w * (size_t)h)};
    assert_non_null(m.alpha);
    memset(m.alpha, 255, (size_t)w * (size_t)h);
    return m;
}

/* ---------- the block copy ---------- */

static void check_patch(const jpeg_spec *sp, int w, int h)
{
    px_image src;
    make_image(&src, w, h);
    px_buf in;
    encode_spec(&src, sp, &in);
    px_image img;
    px_decode_info di;
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    px_image_print before;
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    const int mx = 37, my = 29, mw = 61, mh = 45;
    px_mask m = box(mx, my, mw, mh);
    px_conceal how = {.mode = PX_CONCEAL_SOLID, .rgb = {200, 30, 90}};
    assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);

    px_buf out = {0};
    px_jpeg_patch_info pi;
    assert_int_equal(
        px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90, &out, &pi, &err),
        PX_OK);
    assert_true(pi.lossless);
    assert_true(pi.blocks_reencoded > 0 && pi.blocks_reencoded < pi.blocks / 4);
    assert_int_equal(metadata_markers(&in), sp->markers ? 2 : 0);
    assert_int_equal(metadata_markers(&out), 0);

    coefs a, b;
    read_coefs(&in, &a);
    read_coefs(&out, &b);
    assert_int_equal(a.n, b.n);
    assert_int_equal(b.progressive, sp->progressive);
    assert_false(b.arith);
    long touched = 0, changed_inside = 0, inside = 0;
    for (int ci = 0; ci < a.n; ci++) {
        assert_int_equal(a.wb[ci], b.wb[ci]);
        assert_int_equal(a.hb[ci], b.hb[ci]);
        for (int by = 0; by < a.hb[ci]; by++)
            for (int bx = 0; bx < a.wb[ci]; bx++) {
                /* the pixels the block covers, from the JPEG geometry alone */
                const int px0 = bx * 8 * a.rx[ci], px1 = px0 + 8 * a.rx[ci];
                const int py0 = by * 8 * a.ry[ci], py1 = py0 + 8 * a.ry[ci];
                const size_t o = ((size_t)by * (size_t)a.wb[ci] + (size_t)bx) * 64;
                const int same = !memcmp(a.c[ci] + o, b.c[ci] + o, 64 * sizeof(JCOEF));
                const int hit = px0 < mx + mw && px1 > mx && py0 < my + mh && py1 > my;
                if (!hit)
                    assert_true(same); /* untouched: bit for bit the input's */
                touched += hit;
                if (px0 >= mx && px1 <= mx + mw && py0 >= my && py1 <= my + mh) {
                    inside++;
                    changed_inside += !same;
                }
            }
    }
    assert_true(inside > 0);
    assert_int_equal(changed_inside, inside); /* a solid colour over noisy content */
    assert_true(pi.blocks_reencoded <= touched);

    /* the re-encoded blocks show the colour concealed */
    px_image back;
    assert_int_equal(px_image_decode(out.data, out.len, NULL, &back, NULL, &err), PX_OK);
    assert_int_equal(back.w, w);
    assert_int_equal(back.h, h);
    /* the re-encoded blocks show the colour concealed as well as libjpeg's own
     * encoder with the same settings shows it */
    px_buf ref;
    jpeg_spec rsp = *sp;
    rsp.markers = 0;
    encode_spec(&img, &rsp, &ref);
    px_image rback;
    assert_int_equal(px_image_decode(ref.data, ref.len, NULL, &rback, NULL, &err), PX_OK);
    const int grey_v = (int)(0.299 * 200 + 0.587 * 30 + 0.114 * 90 + 0.5);
    double sum = 0, sum_ref = 0;
    int cnt = 0;
    for (int y = my + 4; y < my + mh - 4; y++)
        for (int x = mx + 4; x < mx + mw - 4; x++)
            for (int c = 0; c < 3; c++, cnt++) {
                const int want = sp->grey ? grey_v : how.rgb[c];
                const size_t o = (size_t)y * back.stride + (size_t)x * 3 + c;
                sum += abs(back.px[o] - want);
                sum_ref += abs(rback.px[o] - want);
            }
    if (sum / cnt > sum_ref / cnt + 1.5)
        fail_msg("%dx%d q%d %dx%d grey %d: concealed colour off by %.2f on average, libjpeg's "
                 "own encoder %.2f",
                 w, h, sp->quality, sp->h_samp, sp->v_samp, sp->grey, sum / cnt, sum_ref / cnt);
    px_image_free(&rback);
    px_buf_free(&ref);

    free_coefs(&a);
    free_coefs(&b);
    free(m.alpha);
    px_image_print_free(&before);
    px_image_free(&img);
    px_image_free(&back);
    px_image_free(&src);
    px_buf_free(&in);
    px_buf_free(&out);
}

static void test_patch_copies_untouched_blocks(void **state)
{
    (void)state;
    const jpeg_spec specs[] = {
        {.h_samp = 2, .v_samp = 2, .quality = 85, .markers = 1, .orient = 1}, /* 4:2:0 */
        {.h_samp = 1, .v_samp = 1, .quality = 95},                            /* 4:4:4 */
        {.h_samp = 2, .v_samp = 1, .quality = 80},                            /* 4:2:2 */
        {.h_samp = 1, .v_samp = 2, .quality = 80},                            /* 4:4:0 */
        {.h_samp = 2, .v_samp = 2, .quality = 75, .progressive = 1},
        {.h_samp = 2, .v_samp = 2, .quality = 90, .arith = 1},
        {.h_samp = 1, .v_samp = 1, .quality = 85, .grey = 1},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        check_patch(&specs[i], 203, 157); /* off the 16x16 grid both ways */
        check_patch(&specs[i], 256, 128);
    }
}

static void test_patch_unchanged_image_copies_everything(void **state)
{
    (void)state;
    px_image src, img;
    make_image(&src, 120, 90);
    px_buf in, out = {0};
    const jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 80};
    encode_spec(&src, &sp, &in);
    px_decode_info di;
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    px_image_print before;
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    px_jpeg_patch_info pi;
    assert_int_equal(
        px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90, &out, &pi, &err),
        PX_OK);
    assert_true(pi.lossless);
    assert_int_equal(pi.blocks_reencoded, 0);
    coefs a, b;
    read_coefs(&in, &a);
    read_coefs(&out, &b);
    for (int ci = 0; ci < a.n; ci++)
        assert_memory_equal(a.c[ci], b.c[ci], (size_t)a.wb[ci] * (size_t)a.hb[ci] * 64 * sizeof(JCOEF));
    /* one pixel changed: exactly the blocks over it (1 Y + Cb + Cr) */
    img.px[(size_t)50 * img.stride + 70 * 3] ^= 0x80;
    px_buf out2 = {0};
    assert_int_equal(
        px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90, &out2, &pi, &err),
        PX_OK);
    assert_int_equal(pi.blocks_reencoded, 3);
    free_coefs(&a);
    free_coefs(&b);
    px_image_print_free(&before);
    px_image_free(&img);
    px_image_free(&src);
    px_buf_free(&in);
    px_buf_free(&out);
    px_buf_free(&out2);
}

/* Falls back: the output is exactly px_image_encode's and why names the cause. */
static void expect_fallback(const px_buf *in, const px_decode_info *di, const px_image *img,
                            const px_image_print *before, const char *why)
{
    px_buf out = {0}, ref = {0};
    px_jpeg_patch_info pi;
    px_err err;
    assert_int_equal(
        px_image_encode_jpeg_patched(in->data, in->len, di, img, before, 77, &out, &pi, &err),
        PX_OK);
    assert_false(pi.lossless);
    if (!strstr(pi.why, why))
        fail_msg("fallback reason '%s' does not name '%s'", pi.why, why);
    assert_int_equal(px_image_encode(img, PX_FMT_JPEG, 77, &ref, &err), PX_OK);
    assert_int_equal(out.len, ref.len);
    assert_memory_equal(out.data, ref.data, ref.len);
    assert_int_equal(metadata_markers(&out), 0);
    px_buf_free(&out);
    px_buf_free(&ref);
}

static void test_patch_fallbacks(void **state)
{
    (void)state;
    px_image src, img;
    make_image(&src, 96, 64);
    px_err err;
    px_decode_info di;
    px_image_print before;

    /* EXIF orientation 6 mirrors the stored rows: 60 is not whole 16-row MCUs */
    px_buf in;
    px_image src60;
    make_image(&src60, 96, 60);
    jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 85, .markers = 1, .orient = 6};
    encode_spec(&src60, &sp, &in);
    px_image_free(&src60);
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    assert_int_equal(img.w, 60);
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    expect_fallback(&in, &di, &img, &before, "orientation 6");
    px_image_print_free(&before);
    px_image_free(&img);
    px_buf_free(&in);

    /* CMYK */
    jpeg_spec cm = {.quality = 90, .cmyk = 1};
    encode_spec(&src, &cm, &in);
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    expect_fallback(&in, &di, &img, &before, "CMYK");

    /* a plain 4:2:0 input and each of the other causes */
    px_image_print_free(&before);
    px_image_free(&img);
    px_buf_free(&in);
    jpeg_spec plain = {.h_samp = 2, .v_samp = 2, .quality = 85};
    encode_spec(&src, &plain, &in);
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    px_decode_info icc = di;
    icc.icc = 1;
    expect_fallback(&in, &icc, &img, &before, "ICC");
    px_decode_info png = di;
    png.format = PX_FMT_PNG;
    expect_fallback(&in, &png, &img, &before, "not a JPEG");
    expect_fallback(&in, &di, &img, NULL, "fingerprint");
    px_image_print other;
    assert_int_equal(px_image_print_take(&src, &other, &err), PX_OK);
    other.w = 95;
    expect_fallback(&in, &di, &img, &other, "fingerprint");
    px_image_print_free(&other);
    /* damaged entropy data the caller's decode did not see */
    px_buf cut = {0};
    assert_int_equal(px_buf_append(&cut, in.data, in.len / 2), PX_OK);
    expect_fallback(&cut, &di, &img, &before, "could not be copied");
    px_buf_free(&cut);
    /* a JPEG of another size */
    px_image small;
    make_image(&small, 40, 30);
    px_image_print sp_small;
    assert_int_equal(px_image_print_take(&small, &sp_small, &err), PX_OK);
    expect_fallback(&in, &di, &small, &sp_small, "40x30");
    px_image_print_free(&sp_small);
    px_image_free(&small);
    /* RGBA */
    px_image rgba;
    assert_int_equal(px_image_alloc(&rgba, img.w, img.h, 4), PX_OK);
    expect_fallback(&in, &di, &rgba, &before, "channels");
    px_image_free(&rgba);

    /* bad arguments */
    px_buf out = {0};
    assert_int_equal(px_image_encode_jpeg_patched(NULL, 0, &di, &img, &before, 90, &out, NULL, &err),
                     PX_EINVAL);
    assert_int_equal(px_image_encode_jpeg_patched(in.data, in.len, NULL, &img, &before, 90, &out,
                                                  NULL, &err),
                     PX_EINVAL);
    assert_int_equal(out.len, 0);
    assert_int_equal(px_image_print_take(NULL, &other, &err), PX_EINVAL);
    px_image_print_free(NULL);

    px_image_print_free(&before);
    px_image_free(&img);
    px_image_free(&src);
    px_buf_free(&in);
}

/* Orientations 2..8 done on the blocks: the output, stored upright with no
 * EXIF, decodes to the upright input everywhere away from the concealed
 * rectangle, and shows the concealed colour inside. Not bit for bit in
 * pixels: the decoder's IDCT and chroma upsampling round a little
 * differently along rows than along columns (seen: 4 at a sharp chroma edge
 * of a 4:2:2 input turned into 4:4:0); a block put in the wrong place or with
 * a wrong sign is off by tens. */
static void check_turned(int o, int w, int h, int hs, int vs)
{
    px_image src, img, back;
    make_image_n(&src, w, h, 0);
    px_buf in, out = {0};
    const jpeg_spec sp = {.h_samp = hs, .v_samp = vs, .quality = 90, .markers = 1, .orient = o};
    encode_spec(&src, &sp, &in);
    px_decode_info di;
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    assert_int_equal(di.orientation, o);
    px_image_print before;
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    px_image orig;
    assert_int_equal(px_image_copy(&img, &orig), PX_OK);
    const int mx = 21, my = 17, mw = 40, mh = 33;
    px_mask m = box(mx, my, mw, mh);
    px_conceal how = {.mode = PX_CONCEAL_SOLID, .rgb = {20, 220, 60}};
    assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
    px_jpeg_patch_info pi;
    assert_int_equal(
        px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90, &out, &pi, &err),
        PX_OK);
    if (!pi.lossless)
        fail_msg("orientation %d, %dx%d %dx%d: encoded afresh: %s", o, w, h, hs, vs, pi.why);
    assert_true(pi.blocks_reencoded > 0 && pi.blocks_reencoded < pi.blocks / 3);
    assert_int_equal(metadata_markers(&out), 0);
    px_decode_info bi;
    assert_int_equal(px_image_decode(out.data, out.len, NULL, &back, &bi, &err), PX_OK);
    assert_int_equal(bi.orientation, 1);
    assert_int_equal(back.w, img.w);
    assert_int_equal(back.h, img.h);
    int worst_out = 0;
    double in_sum = 0, out_sum = 0;
    int in_n = 0, out_n = 0;
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++)
            for (int c = 0; c < 3; c++) {
                const size_t i = (size_t)y * img.stride + (size_t)x * 3 + c;
                const int d = abs(back.px[i] - orig.px[i]);
                if (x < mx - 16 || x >= mx + mw + 16 || y < my - 16 || y >= my + mh + 16) {
                    worst_out = d > worst_out ? d : worst_out;
                    out_sum += d;
                    out_n++;
                }
                if (x >= mx + 4 && x < mx + mw - 4 && y >= my + 4 && y < my + mh - 4) {
                    in_sum += abs(back.px[i] - how.rgb[c]);
                    in_n++;
                }
            }
    if (worst_out > 8 || out_sum / out_n > 0.5 || in_sum / in_n > 4.0)
        fail_msg("orientation %d, %dx%d %dx%d: off by %d (mean %.2f) outside, %.2f inside", o, w,
                 h, hs, vs, worst_out, out_sum / out_n, in_sum / in_n);
    free(m.alpha);
    px_image_print_free(&before);
    px_image_free(&img);
    px_image_free(&orig);
    px_image_free(&back);
    px_image_free(&src);
    px_buf_free(&in);
    px_buf_free(&out);
}

static void test_patch_orientations(void **state)
{
    (void)state;
    for (int o = 2; o <= 8; o++) {
        check_turned(o, 128, 96, 2, 2); /* whole MCUs both ways */
        check_turned(o, 120, 88, 1, 1); /* 4:4:4: whole 8x8 blocks */
        check_turned(o, 128, 96, 2, 1); /* 4:2:2 turns into 4:4:0 for 5..8 */
    }
    /* only the mirrored axis has to be whole: 5 mirrors none, 6 the rows, 2 the columns */
    check_turned(5, 203, 157, 2, 2);
    check_turned(6, 203, 160, 2, 2);
    check_turned(2, 208, 157, 2, 2);
}

/* A profile made with lcms2, serialised (malloc'd): sRGB itself, or a wide
 * gamut one (Rec. 2020 primaries, D65, gamma 2.2). */
static uint8_t *make_profile(int wide, unsigned *n)
{
    cmsHPROFILE p;
    if (wide) {
        cmsCIExyY wp;
        cmsWhitePointFromTemp(&wp, 6504);
        const cmsCIExyYTRIPLE prim = {{0.708, 0.292, 1.0}, {0.170, 0.797, 1.0}, {0.131, 0.046, 1.0}};
        cmsToneCurve *g = cmsBuildGamma(NULL, 2.2);
        cmsToneCurve *curves[3] = {g, g, g};
        p = cmsCreateRGBProfile(&wp, &prim, curves);
        cmsFreeToneCurve(g);
    } else {
        p = cmsCreate_sRGBProfile();
    }
    assert_non_null(p);
    cmsUInt32Number len = 0;
    assert_true(cmsSaveProfileToMem(p, NULL, &len));
    uint8_t *b = malloc(len);
    assert_non_null(b);
    assert_true(cmsSaveProfileToMem(p, b, &len));
    cmsCloseProfile(p);
    *n = len;
    return b;
}

/* A JPEG tagged sRGB keeps its blocks (the decoder's sRGB-to-sRGB conversion
 * moved no pixel by more than a rounding); a wide-gamut one is re-encoded. */
static void test_patch_icc_profiles(void **state)
{
    (void)state;
    for (int wide = 0; wide < 2; wide++) {
        px_image src, img;
        make_image(&src, 96, 64);
        jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 85};
        sp.icc = make_profile(wide, &sp.icc_len);
        px_buf in, out = {0};
        encode_spec(&src, &sp, &in);
        px_decode_info di;
        px_err err;
        assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
        assert_int_equal(di.icc, 1); /* converted by the decoder either way */
        px_image_print before;
        assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
        px_mask m = box(10, 10, 30, 20);
        px_conceal how = {.mode = PX_CONCEAL_SOLID, .rgb = {200, 30, 90}};
        assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
        if (wide) {
            expect_fallback(&in, &di, &img, &before, "ICC");
        } else {
            px_jpeg_patch_info pi;
            assert_int_equal(px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90,
                                                          &out, &pi, &err),
                             PX_OK);
            if (!pi.lossless)
                fail_msg("sRGB-tagged JPEG encoded afresh: %s", pi.why);
            assert_true(pi.blocks_reencoded > 0);
            assert_int_equal(metadata_markers(&out), 0); /* the APP2 profile not copied */
        }
        free(m.alpha);
        free((void *)sp.icc);
        px_image_print_free(&before);
        px_image_free(&img);
        px_image_free(&src);
        px_buf_free(&in);
        px_buf_free(&out);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Prints what the block copy costs against a fresh encode (no assertion on time). */
static void test_patch_speed(void **state)
{
    (void)state;
    const int w = 3000, h = 2000;
    px_image src, img;
    make_image(&src, w, h);
    px_buf in;
    const jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 90};
    encode_spec(&src, &sp, &in);
    px_decode_info di;
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &img, &di, &err), PX_OK);
    double t0 = now_ms();
    px_image_print before;
    assert_int_equal(px_image_print_take(&img, &before, &err), PX_OK);
    const double t_print = now_ms() - t0;
    for (int f = 0; f < 4; f++) { /* four 300 px faces */
        px_mask m = box(400 + f * 600, 700, 300, 300);
        px_conceal how = {.mode = PX_CONCEAL_NOISE, .seed = 7};
        assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
        free(m.alpha);
    }
    double best_patch = 1e9, best_full = 1e9;
    size_t len_patch = 0, len_full = 0;
    for (int rep = 0; rep < 3; rep++) {
        px_buf a = {0}, b = {0};
        px_jpeg_patch_info pi;
        t0 = now_ms();
        assert_int_equal(
            px_image_encode_jpeg_patched(in.data, in.len, &di, &img, &before, 90, &a, &pi, &err),
            PX_OK);
        const double t1 = now_ms();
        assert_int_equal(px_image_encode(&img, PX_FMT_JPEG, 90, &b, &err), PX_OK);
        const double t2 = now_ms();
        assert_true(pi.lossless);
        best_patch = t1 - t0 < best_patch ? t1 - t0 : best_patch;
        best_full = t2 - t1 < best_full ? t2 - t1 : best_full;
        len_patch = a.len;
        len_full = b.len;
        px_buf_free(&a);
        px_buf_free(&b);
    }
    printf("jpeg patch, %dx%d 4:2:0 q90, four 300 px masks: block copy %.1f ms (%zu bytes), "
           "fresh encode %.1f ms (%zu bytes), %.2fx; fingerprint %.1f ms\n",
           w, h, best_patch, len_patch, best_full, len_full, best_patch / best_full, t_print);
    px_image_print_free(&before);
    px_image_free(&img);
    px_image_free(&src);
    px_buf_free(&in);
}

/* ---------- scaled decoding ---------- */

static void check_scaled(int w, int h, int pixels)
{
    px_image src, full;
    make_image_n(&src, w, h, 0);
    px_buf in;
    const jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 92, .markers = 1, .orient = 6};
    encode_spec(&src, &sp, &in);
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &full, NULL, &err), PX_OK);
    for (int denom = 1; denom <= 8; denom *= 2) {
        px_image s;
        px_decode_info di;
        int applied = 0;
        assert_int_equal(
            px_image_decode_scaled(in.data, in.len, NULL, denom, &s, &di, &applied, &err), PX_OK);
        assert_int_equal(applied, denom);
        /* orientation 6: the stored w x h becomes h wide */
        assert_int_equal(s.w, (h + denom - 1) / denom);
        assert_int_equal(s.h, (w + denom - 1) / denom);
        assert_int_equal(di.stored_w, w);
        assert_int_equal(di.stored_h, h);
        assert_int_equal(di.orientation, 6);
        if (!pixels) {
            px_image_free(&s);
            continue;
        }
        /* each pixel near the mean of the full decode's denom x denom block */
        double err_sum = 0;
        int n = 0;
        for (int y = 0; y < s.h; y++)
            for (int x = 0; x < s.w; x++)
                for (int c = 0; c < 3; c++) {
                    double m = 0;
                    for (int a = 0; a < denom; a++)
                        for (int b = 0; b < denom; b++)
                            m += full.px[(size_t)(y * denom + a) * full.stride +
                                         (size_t)(x * denom + b) * 3 + c];
                    m /= denom * denom;
                    err_sum += fabs(m - s.px[(size_t)y * s.stride + (size_t)x * 3 + c]);
                    n++;
                }
        if (err_sum / n >= 2.0)
            fail_msg("1/%d: mean error %.2f", denom, err_sum / n);
        px_image_free(&s);
    }
    px_buf_free(&in);
    px_image_free(&full);
    px_image_free(&src);
}

static void test_decode_scaled(void **state)
{
    (void)state;
    check_scaled(208, 160, 1); /* on the grid: pixels compared */
    check_scaled(203, 157, 0); /* off it: sizes rounded up */
    px_image src;
    make_image_n(&src, 203, 157, 0);
    px_buf in;
    const jpeg_spec sp = {.h_samp = 2, .v_samp = 2, .quality = 92};
    encode_spec(&src, &sp, &in);
    px_err err;
    /* a PNG is decoded at full size, and says so */
    px_buf png = {0};
    assert_int_equal(px_image_encode(&src, PX_FMT_PNG, 90, &png, &err), PX_OK);
    px_image s;
    int applied = 0;
    assert_int_equal(px_image_decode_scaled(png.data, png.len, NULL, 4, &s, NULL, &applied, &err),
                     PX_OK);
    assert_int_equal(applied, 1);
    assert_int_equal(s.w, 203);
    px_image_free(&s);
    assert_int_equal(px_image_decode_scaled(in.data, in.len, NULL, 3, &s, NULL, &applied, &err),
                     PX_EINVAL);
    assert_null(s.px);
    assert_int_equal(px_image_decode_scaled(in.data, in.len / 3, NULL, 2, &s, NULL, &applied, &err),
                     PX_ECORRUPT);
    assert_int_equal(applied, 1);
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = 1000; /* the cap is on the full size */
    assert_int_equal(px_image_decode_scaled(in.data, in.len, &o, 8, &s, NULL, &applied, &err),
                     PX_ELIMIT);
    px_buf_free(&png);
    px_buf_free(&in);
    px_image_free(&src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_copies_untouched_blocks),
        cmocka_unit_test(test_patch_unchanged_image_copies_everything),
        cmocka_unit_test(test_patch_fallbacks),
        cmocka_unit_test(test_patch_orientations),
        cmocka_unit_test(test_patch_icc_profiles),
        cmocka_unit_test(test_patch_speed),
        cmocka_unit_test(test_decode_scaled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * JPEG through libjpeg-turbo.
 *
 * Decoding: libjpeg reports fatal errors by calling error_exit, which must not
 * return; ours formats the message and longjmps back to the decode function,
 * which maps it to PX_ECORRUPT (or PX_ELIMIT/PX_ENOMEM). libjpeg only *warns*
 * about a truncated stream (it pads with a fake EOI and would hand back an
 * image with a grey bottom), so the warnings that mean "data is missing or
 * damaged" are promoted to errors here. The header is read first and its
 * width*height checked against the cap before libjpeg allocates any pixel or
 * coefficient buffer (jpeg_start_decompress does that). A progress monitor
 * stops progressive files with an absurd number of scans, which otherwise cost
 * minutes of CPU for a few KB of input. APP1 is saved for EXIF orientation,
 * APP2 for the ICC profile (converted to sRGB, icc.c; not for CMYK files,
 * whose CMYK profile does not describe the RGB we make of them).
 *
 * Encoding: a destination manager that appends to the caller's px_buf in 16 KB
 * chunks. We write nothing but what jpeg_start_compress emits by default (SOI,
 * JFIF APP0, tables, frame, scans, EOI): no EXIF, ICC or comment ever.
 */
#include "jpeg_internal.h"

#include <stdlib.h>
#include <string.h>

#include <jerror.h>

/* Above this many scans a progressive JPEG is treated as hostile (real
 * encoders use about 10; libjpeg-turbo's own fuzzers cap at 500). */
#define PX_JPEG_MAX_SCANS 500

static void on_error_exit(j_common_ptr cinfo)
{
    jerr_mgr *m = (jerr_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, m->msg);
    int code = cinfo->err->msg_code;
    if (code == JERR_OUT_OF_MEMORY)
        m->status = PX_ENOMEM;
    else if (code == JERR_IMAGE_TOO_BIG)
        m->status = PX_ELIMIT;
    else if (m->status == PX_OK)
        m->status = PX_ECORRUPT;
    longjmp(m->jb, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return; /* trace messages: ignore */
    jerr_mgr *m = (jerr_mgr *)cinfo->err;
    cinfo->err->num_warnings++;
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:      /* input ended before EOI */
    case JWRN_HIT_MARKER:    /* entropy data ended early */
    case JWRN_HUFF_BAD_CODE: /* damaged entropy data */
#ifdef D_ARITH_CODING_SUPPORTED
    case JWRN_ARITH_BAD_CODE:
#endif
        (*cinfo->err->format_message)(cinfo, m->msg);
        m->status = PX_ECORRUPT;
        longjmp(m->jb, 1);
    default:
        break; /* e.g. extraneous bytes before a marker: harmless */
    }
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* library code never prints */
}

void px_jpeg_err_init(jerr_mgr *m)
{
    memset(m, 0, sizeof *m);
    jpeg_std_error(&m->pub);
    m->pub.error_exit = on_error_exit;
    m->pub.emit_message = on_emit_message;
    m->pub.output_message = on_output_message;
    m->status = PX_OK;
}

static void on_progress(j_common_ptr cinfo)
{
    if (!cinfo->is_decompressor)
        return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > PX_JPEG_MAX_SCANS) {
        jerr_mgr *m = (jerr_mgr *)cinfo->err;
        snprintf(m->msg, sizeof m->msg, "progressive JPEG with more than %d scans",
                 PX_JPEG_MAX_SCANS);
        m->status = PX_ECORRUPT;
        longjmp(m->jb, 1);
    }
}

static int is_exif_app1(const jpeg_saved_marker_ptr mk)
{
    return mk->marker == JPEG_APP0 + 1 && mk->data_length >= 6 &&
           memcmp(mk->data, "Exif\0\0", 6) == 0;
}

/* Everything a decode needs after a longjmp lives here, in memory. */
typedef struct jdec {
    struct jpeg_decompress_struct cinfo;
    jerr_mgr jerr;
    struct jpeg_progress_mgr progress;
    uint8_t *row; /* CMYK scratch row */
    JOCTET *icc;  /* the ICC profile put together from APP2 segments (libjpeg's malloc) */
    unsigned int icc_len;
} jdec;

static void jdec_start(jdec *d, const uint8_t *data, size_t len)
{
    px_jpeg_err_init(&d->jerr);
    d->cinfo.err = &d->jerr.pub;
    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = on_progress;
    d->cinfo.progress = &d->progress;
    jpeg_mem_src(&d->cinfo, data, (unsigned long)len);
}

int px_jpeg_exif_orientation(const uint8_t *data, size_t len)
{
    jdec *d = px_calloc(1, sizeof *d);
    if (!d)
        return 1;
    int o = 1;
    jdec_start(d, data, len);
    if (setjmp(d->jerr.jb) == 0) {
        jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xFFFF);
        jpeg_read_header(&d->cinfo, TRUE);
    }
    /* Also after an error: markers read before the damage are complete and
     * still linked in cinfo (libjpeg appends a marker once fully read). */
    for (jpeg_saved_marker_ptr mk = d->cinfo.marker_list; mk; mk = mk->next) {
        if (is_exif_app1(mk)) {
            o = px_exif_orientation_from_payload(mk->data, mk->data_length);
            break;
        }
    }
    jpeg_destroy_decompress(&d->cinfo);
    free(d);
    return o;
}

/* Adobe writers store CMYK inverted (0 = full ink); others store it plain. */
static void cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int w, int inverted)
{
    for (int x = 0; x < w; x++, src += 4, dst += 3) {
        unsigned c = src[0], m = src[1], y = src[2], k = src[3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        dst[0] = (uint8_t)((c * k + 127) / 255);
        dst[1] = (uint8_t)((m * k + 127) / 255);
        dst[2] = (uint8_t)((y * k + 127) / 255);
    }
}

int px_jpeg_decode_scaled(const uint8_t *data, size_t len, uint64_t max_pixels, int denom,
                          px_image *out, px_decode_info *info, px_err *err)
{
    jdec *d = px_calloc(1, sizeof *d);
    if (!d)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the JPEG decoder");
    int status = PX_OK;
    jdec_start(d, data, len);
    if (setjmp(d->jerr.jb) != 0) {
        status = d->jerr.status != PX_OK ? d->jerr.status : PX_ECORRUPT;
        px_err_set(err, status, "corrupt JPEG: %s", d->jerr.msg);
        goto done;
    }

    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xFFFF); /* EXIF (and XMP) */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 2, 0xFFFF); /* ICC profile, converted to sRGB */
    /* Only their presence matters for had_metadata: keep a few bytes. */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 13, 16); /* IPTC / Photoshop */
    jpeg_save_markers(&d->cinfo, JPEG_COM, 16);
    jpeg_read_header(&d->cinfo, TRUE);

    status =
        px_image_check_size(d->cinfo.image_width, d->cinfo.image_height, max_pixels, "JPEG", err);
    if (status != PX_OK)
        goto done;

    for (jpeg_saved_marker_ptr mk = d->cinfo.marker_list; mk; mk = mk->next) {
        info->had_metadata = 1;
        if (info->orientation == 1 && is_exif_app1(mk))
            info->orientation = px_exif_orientation_from_payload(mk->data, mk->data_length);
    }

    /* now, while the saved APP2 segments exist (jpeg_finish_decompress frees them) */
    if (!jpeg_read_icc_profile(&d->cinfo, &d->icc, &d->icc_len))
        d->icc = NULL;
    int cmyk = d->cinfo.jpeg_color_space == JCS_CMYK || d->cinfo.jpeg_color_space == JCS_YCCK;
    if (cmyk) {
        d->cinfo.out_color_space = JCS_CMYK;
    } else if (d->cinfo.num_components == 1 || d->cinfo.num_components == 3) {
        d->cinfo.out_color_space = JCS_RGB; /* libjpeg-turbo expands grayscale itself */
    } else {
        status = px_err_set(err, PX_EUNSUPPORTED, "JPEG with %d colour components",
                            d->cinfo.num_components);
        goto done;
    }
    /* libjpeg-turbo scales in the IDCT (a 4x4, 2x2 or 1x1 inverse transform
     * per block): far less work than decoding everything and shrinking. */
    d->cinfo.scale_num = 1;
    d->cinfo.scale_denom = (unsigned int)denom;
    jpeg_start_decompress(&d->cinfo);

    int w = (int)d->cinfo.output_width, h = (int)d->cinfo.output_height;
    status = px_image_alloc(out, w, h, 3);
    if (status != PX_OK) {
        px_err_set(err, status, "out of memory for a %dx%d JPEG", w, h);
        goto done;
    }
    if (cmyk) {
        d->row = px_malloc((size_t)w * 4);
        if (!d->row) {
            status = px_err_set(err, PX_ENOMEM, "out of memory for a %dx%d JPEG", w, h);
            goto done;
        }
    }
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        uint8_t *dst = out->px + (size_t)d->cinfo.output_scanline * out->stride;
        JSAMPROW rows[1] = {cmyk ? d->row : dst};
        if (jpeg_read_scanlines(&d->cinfo, rows, 1) != 1)
            continue; /* cannot happen with a memory source; loop re-checks */
        if (cmyk)
            cmyk_to_rgb(d->row, dst, w, d->cinfo.saw_Adobe_marker);
    }
    jpeg_finish_decompress(&d->cinfo); /* reads to EOI: catches a cut-off tail */
    info->stored_w = (int)d->cinfo.image_width; /* the full size, also when scaled */
    info->stored_h = (int)d->cinfo.image_height;
    if (!cmyk && d->icc && px_icc_to_srgb(out, d->icc, d->icc_len, info) != PX_OK)
        status = px_err_set(err, PX_ENOMEM, "out of memory converting a JPEG's colours to sRGB");

done:
    if (status != PX_OK)
        px_image_free(out);
    jpeg_destroy_decompress(&d->cinfo);
    free(d->row);
    free(d->icc);
    free(d);
    return status;
}

/* ---- encoder ---- */

static void dest_init(j_compress_ptr c)
{
    jdest *d = (jdest *)c->dest;
    d->pub.next_output_byte = d->chunk;
    d->pub.free_in_buffer = sizeof d->chunk;
}

static boolean dest_empty(j_compress_ptr c)
{
    jdest *d = (jdest *)c->dest;
    /* libjpeg calls this only when the whole chunk is full */
    if (px_buf_append(d->out, d->chunk, sizeof d->chunk) != PX_OK)
        ERREXIT1(c, JERR_OUT_OF_MEMORY, 1);
    d->pub.next_output_byte = d->chunk;
    d->pub.free_in_buffer = sizeof d->chunk;
    return TRUE;
}

static void dest_term(j_compress_ptr c)
{
    jdest *d = (jdest *)c->dest;
    if (px_buf_append(d->out, d->chunk, sizeof d->chunk - d->pub.free_in_buffer) != PX_OK)
        ERREXIT1(c, JERR_OUT_OF_MEMORY, 2);
}

void px_jpeg_dest_init(jdest *d, px_buf *out)
{
    d->out = out;
    d->pub.init_destination = dest_init;
    d->pub.empty_output_buffer = dest_empty;
    d->pub.term_destination = dest_term;
}

typedef struct jenc {
    struct jpeg_compress_struct cinfo;
    jerr_mgr jerr;
    jdest dest;
    uint8_t *row; /* RGBA composited on white */
} jenc;

int px_jpeg_encode(const px_image *img, int quality, px_buf *out, px_err *err)
{
    if (img->w > JPEG_MAX_DIMENSION || img->h > JPEG_MAX_DIMENSION)
        return px_err_set(err, PX_ELIMIT, "JPEG cannot store %dx%d (max %ld pixels a side)", img->w,
                          img->h, (long)JPEG_MAX_DIMENSION);
    jenc *e = px_calloc(1, sizeof *e);
    if (!e)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the JPEG encoder");
    const size_t start_len = out->len;
    int status = PX_OK;
    px_jpeg_err_init(&e->jerr);
    e->cinfo.err = &e->jerr.pub;
    jpeg_create_compress(&e->cinfo);
    if (setjmp(e->jerr.jb) != 0) {
        status = e->jerr.status != PX_OK ? e->jerr.status : PX_EINVAL;
        px_err_set(err, status, "JPEG encode failed: %s", e->jerr.msg);
        out->len = start_len; /* drop the partial output */
        goto done;
    }
    if (img->channels == 4) {
        e->row = px_malloc((size_t)img->w * 3);
        if (!e->row) {
            status =
                px_err_set(err, PX_ENOMEM, "out of memory encoding a %dx%d JPEG", img->w, img->h);
            goto done;
        }
    }
    px_jpeg_dest_init(&e->dest, out);
    e->cinfo.dest = &e->dest.pub;

    e->cinfo.image_width = (JDIMENSION)img->w;
    e->cinfo.image_height = (JDIMENSION)img->h;
    e->cinfo.input_components = 3;
    e->cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&e->cinfo);
    jpeg_set_quality(&e->cinfo, quality, TRUE);
    e->cinfo.optimize_coding = TRUE; /* a few % smaller for little time */
    if (quality >= 90) {
        /* 4:4:4: at high quality chroma subsampling is the main loss */
        e->cinfo.comp_info[0].h_samp_factor = 1;
        e->cinfo.comp_info[0].v_samp_factor = 1;
    } /* else jpeg_set_defaults' 4:2:0 */
    jpeg_start_compress(&e->cinfo, TRUE);
    while (e->cinfo.next_scanline < e->cinfo.image_height) {
        const uint8_t *src = img->px + (size_t)e->cinfo.next_scanline * img->stride;
        JSAMPROW rows[1];
        if (img->channels == 4) {
            for (int x = 0; x < img->w; x++) {
                unsigned a = src[4 * x + 3];
                for (int c = 0; c < 3; c++)
                    e->row[3 * x + c] =
                        (uint8_t)((src[4 * x + c] * a + 255u * (255u - a) + 127u) / 255u);
            }
            rows[0] = e->row;
        } else {
            rows[0] = (JSAMPROW)(uintptr_t)src; /* libjpeg does not write to input rows */
        }
        jpeg_write_scanlines(&e->cinfo, rows, 1);
    }
    jpeg_finish_compress(&e->cinfo);

done:
    jpeg_destroy_compress(&e->cinfo);
    free(e->row);
    free(e);
    return status;
}

/*
 * Encoding with text metadata (px_image_encode_meta, see px_image.h): the two
 * texts of a generated image, the AUTOMATIC1111 "parameters" and our JSON,
 * where other tools look for them.
 *
 * PNG is written here with libpng's full API because it needs text chunks
 * (png.c's encoder writes pixels only, on purpose). JPEG and WebP reuse the
 * pixel encoders and add the metadata around their output: for JPEG the two
 * APP1 segments (EXIF first, as the EXIF spec wants, then XMP) are spliced in
 * after SOI and the JFIF APP0; for WebP libwebpmux wraps the bitstream in the
 * extended (VP8X) layout with "EXIF" and "XMP " chunks.
 *
 * The EXIF block is built by hand (libexif would do, but the block is one
 * fixed 44-byte header and the text): TIFF big-endian ("MM"), so the UTF-16BE
 * that piexif-based readers assume and the byte-order-following reading of
 * ExifTool agree.
 */
#include "image_internal.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <webp/mux.h>

#include "meta_internal.h"

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Next code point of UTF-8 text; invalid bytes give U+FFFD and advance one. */
static uint32_t utf8_next(const unsigned char **sp)
{
    const unsigned char *s = *sp;
    uint32_t c = s[0];
    int n = c < 0x80             ? 0
            : (c & 0xE0) == 0xC0 ? 1
            : (c & 0xF0) == 0xE0 ? 2
            : (c & 0xF8) == 0xF0 ? 3
                                 : -1;
    if (n < 0) {
        *sp = s + 1;
        return 0xFFFD;
    }
    c &= n == 0 ? 0x7F : n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07;
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *sp = s + 1;
            return 0xFFFD;
        }
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
    *sp = s + n + 1;
    if (c < min[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0xFFFD;
    return c;
}

/* The EXIF block (TIFF header onwards) holding only UserComment = text. */
static int build_exif(const char *text, px_buf *out)
{
    /* UTF-16BE units: at most 2 per code point, and at most one code point per byte */
    size_t cap = strlen(text) * 4;
    uint8_t *u16 = px_malloc(cap ? cap : 1);
    if (!u16)
        return PX_ENOMEM;
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)text; *s;) {
        uint32_t c = utf8_next(&s);
        if (c >= 0x10000) {
            c -= 0x10000;
            put16(u16 + n, 0xD800 | (c >> 10));
            put16(u16 + n + 2, 0xDC00 | (c & 0x3FF));
            n += 4;
        } else {
            put16(u16 + n, c);
            n += 2;
        }
    }
    /* MM, 42, IFD0 at 8: one entry ExifIFDPointer -> Exif IFD at 26: one entry
     * UserComment (UNDEFINED, 8-byte charset prefix + text) whose data is at 44 */
    uint8_t h[44];
    memset(h, 0, sizeof h);
    h[0] = h[1] = 'M';
    put16(h + 2, 42);
    put32(h + 4, 8);
    put16(h + 8, 1);
    put16(h + 10, 0x8769);
    put16(h + 12, 4); /* LONG */
    put32(h + 14, 1);
    put32(h + 18, 26);
    /* 22: next IFD = 0 */
    put16(h + 26, 1);
    put16(h + 28, 0x9286);
    put16(h + 30, 7); /* UNDEFINED */
    put32(h + 32, (uint32_t)(8 + n));
    put32(h + 36, 44);
    /* 40: next IFD = 0 */
    int st = px_buf_append(out, h, sizeof h) == PX_OK &&
                     px_buf_append(out, "UNICODE\0", 8) == PX_OK &&
                     px_buf_append(out, u16, n) == PX_OK
                 ? PX_OK
                 : PX_ENOMEM;
    free(u16);
    return st;
}

static int append_str(px_buf *b, const char *s)
{
    return px_buf_append(b, s, strlen(s));
}

/* An XMP packet whose one property pixpipe:json holds json, XML-escaped. */
static int build_xmp(const char *json, px_buf *out)
{
    int ok = append_str(out, "<?xpacket begin=\"\xEF\xBB\xBF\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n"
                             "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF "
                             "xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">"
                             "<rdf:Description rdf:about=\"\" xmlns:pixpipe=\"" PX_META_XMP_NS "\">"
                             "<pixpipe:json>") == PX_OK;
    for (const char *p = json; ok && *p; p++) {
        const char *e = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : NULL;
        ok = (e ? append_str(out, e) : px_buf_append(out, p, 1)) == PX_OK;
    }
    ok = ok && append_str(out, "</pixpipe:json></rdf:Description></rdf:RDF></x:xmpmeta>\n"
                               "<?xpacket end=\"r\"?>") == PX_OK;
    return ok ? PX_OK : PX_ENOMEM;
}

static int app1(px_buf *out, const char *sig, size_t siglen, const px_buf *body, px_err *err)
{
    size_t n = 2 + siglen + body->len;
    if (n > 65535)
        return px_err_set(err, PX_ELIMIT,
                          "JPEG: metadata of %zu bytes does not fit an APP1 segment", body->len);
    uint8_t h[4] = {0xFF, 0xE1, 0, 0};
    put16(h + 2, (unsigned)n);
    return px_buf_append(out, h, 4) == PX_OK && px_buf_append(out, sig, siglen) == PX_OK &&
                   px_buf_append(out, body->data, body->len) == PX_OK
               ? PX_OK
               : px_err_set(err, PX_ENOMEM, "JPEG: out of memory");
}

/* Splices the EXIF and XMP segments into a metadata-free JPEG stream. */
static int jpeg_with_meta(const px_buf *jpg, const px_buf *exif, const px_buf *xmp, px_buf *out,
                          px_err *err)
{
    const uint8_t *d = jpg->data;
    size_t at = 2; /* after SOI; also after a JFIF APP0 when the encoder wrote one */
    if (jpg->len > 6 && d[2] == 0xFF && d[3] == 0xE0)
        at = 4 + ((size_t)d[4] << 8 | d[5]);
    if (jpg->len < at + 2 || d[0] != 0xFF || d[1] != 0xD8)
        return px_err_set(err, PX_EIO, "JPEG: encoder output is not a JPEG stream");
    int st =
        px_buf_append(out, d, at) == PX_OK ? PX_OK : px_err_set(err, PX_ENOMEM, "out of memory");
    if (!st && exif->len)
        st = app1(out, "Exif\0\0", 6, exif, err);
    if (!st && xmp->len)
        st = app1(out, PX_META_XMP_SIG, PX_META_XMP_SIG_LEN, xmp, err);
    if (!st && px_buf_append(out, d + at, jpg->len - at) != PX_OK)
        st = px_err_set(err, PX_ENOMEM, "out of memory");
    return st;
}

static int webp_with_meta(const px_buf *webp, const px_buf *exif, const px_buf *xmp, px_buf *out,
                          px_err *err)
{
    WebPData in = {webp->data, webp->len}, asm_ = {NULL, 0};
    WebPMux *mux = WebPMuxCreate(&in, 0);
    if (!mux)
        return px_err_set(err, PX_EIO, "WebP: cannot wrap the encoded image");
    WebPData e = {exif->data, exif->len}, x = {xmp->data, xmp->len};
    int st = PX_OK;
    if ((exif->len && WebPMuxSetChunk(mux, "EXIF", &e, 0) != WEBP_MUX_OK) ||
        (xmp->len && WebPMuxSetChunk(mux, "XMP ", &x, 0) != WEBP_MUX_OK) ||
        WebPMuxAssemble(mux, &asm_) != WEBP_MUX_OK)
        st = px_err_set(err, PX_EIO, "WebP: cannot add the metadata chunks");
    else if (px_buf_append(out, asm_.bytes, asm_.size) != PX_OK)
        st = px_err_set(err, PX_ENOMEM, "out of memory");
    WebPDataClear(&asm_);
    WebPMuxDelete(mux);
    return st;
}

typedef struct {
    px_buf *out;
    int failed;
} png_sink;

static void on_write(png_structp png, png_bytep data, size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (px_buf_append(s->out, data, n) != PX_OK)
        s->failed = 1;
}

static void on_flush(png_structp png)
{
    (void)png;
}

static void on_png_error(png_structp png, png_const_charp msg)
{
    px_err *e = png_get_error_ptr(png);
    px_err_set(e, PX_EIO, "PNG encode: %s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Encodes in a separate function so no local is live across setjmp. */
static int png_encode_inner(png_structp png, png_infop info, const px_image *img,
                            const char *parameters, const char *json, png_sink *s)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_write_fn(png, s, on_write, on_flush);
    /* zlib level 1 with the up filter costs a few ms per megapixel and stays within ~10% of
     * level 6 on rendered (smooth) images, which is what carries metadata */
    png_set_compression_level(png, 1);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8,
                 img->channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text t[2];
    int nt = 0;
    memset(t, 0, sizeof t);
    if (parameters) {
        t[nt].compression = PNG_TEXT_COMPRESSION_NONE;
        t[nt].key = (png_charp) "parameters";
        t[nt].text = (png_charp)parameters;
        t[nt].text_length = strlen(parameters);
        nt++;
    }
    if (json) {
        t[nt].compression = PNG_ITXT_COMPRESSION_NONE;
        t[nt].key = (png_charp) "pixpipe";
        t[nt].text = (png_charp)json;
        t[nt].itxt_length = strlen(json);
        t[nt].lang = (png_charp) "";
        t[nt].lang_key = (png_charp) "";
        nt++;
    }
    if (nt)
        png_set_text(png, info, t, nt);
    png_write_info(png, info);
    for (int y = 0; y < img->h; y++)
        png_write_row(png, img->px + (size_t)y * img->stride);
    png_write_end(png, info);
    return 0;
}

/* PNG with tEXt "parameters" and iTXt "pixpipe". */
static int png_encode_meta(const px_image *img, const px_image_meta *meta, px_buf *out, px_err *err)
{
    px_err local;
    px_err *e = err ? err : &local;
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, e, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return px_err_set(err, PX_ENOMEM, "PNG encode: out of memory");
    }
    size_t len0 = out->len;
    png_sink s = {out, 0};
    int r = png_encode_inner(png, info, img, meta->parameters, meta->json, &s);
    png_destroy_write_struct(&png, &info);
    if (s.failed || r != 0)
        out->len = len0;
    if (s.failed)
        return px_err_set(err, PX_ENOMEM, "PNG encode: out of memory");
    return r == 0 ? PX_OK : PX_EIO;
}

int px_image_encode_meta(const px_image *img, px_format f, int quality, const px_image_meta *meta,
                         px_buf *out, px_err *err)
{
    if (!meta || (!meta->parameters && !meta->json))
        return px_image_encode(img, f, quality, out, err);
    if (!img || !img->px || img->w <= 0 || img->h <= 0 ||
        (img->channels != 3 && img->channels != 4) ||
        img->stride < (size_t)img->w * (size_t)img->channels)
        return px_err_set(err, PX_EINVAL, "encode: empty or malformed image");
    if (f == PX_FMT_PNG)
        return png_encode_meta(img, meta, out, err);
    if (f != PX_FMT_JPEG && f != PX_FMT_WEBP)
        return px_err_set(err, PX_EUNSUPPORTED, "encode: format %s: expected png, jpeg or webp",
                          px_format_name(f));
    px_buf enc = {0}, exif = {0}, xmp = {0};
    int st = px_image_encode(img, f, quality, &enc, err);
    if (!st && meta->parameters && build_exif(meta->parameters, &exif))
        st = px_err_set(err, PX_ENOMEM, "encode: out of memory for the EXIF block");
    if (!st && meta->json && build_xmp(meta->json, &xmp))
        st = px_err_set(err, PX_ENOMEM, "encode: out of memory for the XMP packet");
    if (!st) {
        size_t len0 = out->len;
        st = f == PX_FMT_JPEG ? jpeg_with_meta(&enc, &exif, &xmp, out, err)
                              : webp_with_meta(&enc, &exif, &xmp, out, err);
        if (st)
            out->len = len0;
    }
    px_buf_free(&enc);
    px_buf_free(&exif);
    px_buf_free(&xmp);
    return st;
}

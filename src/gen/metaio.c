/*
 * Pool files as JPEG or WebP, with the same two pieces of metadata a PNG
 * pool file carries (pngio.c):
 *
 *  - "parameters", the AUTOMATIC1111 text, goes where AUTOMATIC1111 itself
 *    puts it for JPEG and WebP: EXIF UserComment with the "UNICODE\0" prefix
 *    and UTF-16 text. We write the TIFF block big-endian ("MM"), so the
 *    UTF-16BE that piexif-based readers assume and the byte-order-following
 *    reading of ExifTool agree.
 *  - "pixpipe", our JSON, goes into an XMP packet as the text of one
 *    property, pixpipe:json, in the namespace urn:pixpipe:meta:1 (XML-escaped).
 *
 * JPEG: the image module's encoder writes pixels only, so the two APP1
 * segments (EXIF first, as the EXIF spec wants, then XMP) are spliced in
 * after SOI and the JFIF APP0. WebP: libwebpmux wraps the encoded bitstream
 * in the extended (VP8X) layout with "EXIF" and "XMP " chunks.
 *
 * Reading back is a walk over JPEG segments or RIFF chunks and a small TIFF
 * IFD reader, by hand because the three are tiny and bounded; every offset
 * from the file is checked against its length (the fuzz target feeds this).
 */
#include "gen_internal.h"

#include <stdlib.h>
#include <string.h>
#include <webp/mux.h>

#include "../image/px_image.h"

#define XMP_NS "urn:pixpipe:meta:1"
static const char xmp_sig[] = "http://ns.adobe.com/xap/1.0/"; /* + NUL in the segment */

const char *px_gen_format_ext(int format)
{
    return format == PX_GEN_JPEG ? "jpg" : format == PX_GEN_WEBP ? "webp" : "png";
}

int px_gen_format_parse(const char *s)
{
    if (!strcmp(s, "png"))
        return PX_GEN_PNG;
    if (!strcmp(s, "jpg") || !strcmp(s, "jpeg"))
        return PX_GEN_JPEG;
    if (!strcmp(s, "webp"))
        return PX_GEN_WEBP;
    return -1;
}

/* ---- writing ------------------------------------------------------------ */

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
    uint8_t *u16 = malloc(cap ? cap : 1);
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
                             "<rdf:Description rdf:about=\"\" xmlns:pixpipe=\"" XMP_NS "\">"
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
        st = app1(out, xmp_sig, sizeof xmp_sig, xmp, err);
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

int px_gen_encode(const px_gen_rgb *img, int format, int quality, const char *parameters,
                  const char *json, px_buf *out, px_err *err)
{
    if (format == PX_GEN_PNG)
        return px_gen_encode_png(img, parameters, json, out, err);
    if (format != PX_GEN_JPEG && format != PX_GEN_WEBP)
        return px_err_set(err, PX_EINVAL, "pool format %d: expected png, jpg or webp", format);
    if (!img || !img->px || img->w <= 0 || img->h <= 0)
        return px_err_set(err, PX_EINVAL, "encode: empty image");
    if (quality < 1 || quality > 100)
        quality = 92;
    /* lossless WebP is what quality 100 means to the image module; pool files
     * that want lossless should be PNG, so cap lossy WebP at 99 */
    if (format == PX_GEN_WEBP && quality > 99)
        quality = 99;
    px_image pi = {
        .w = img->w, .h = img->h, .channels = 3, .stride = (size_t)img->w * 3, .px = img->px};
    px_buf enc = {0}, exif = {0}, xmp = {0};
    int st =
        px_image_encode(&pi, format == PX_GEN_JPEG ? PX_FMT_JPEG : PX_FMT_WEBP, quality, &enc, err);
    if (!st && parameters && build_exif(parameters, &exif))
        st = px_err_set(err, PX_ENOMEM, "out of memory");
    if (!st && json && build_xmp(json, &xmp))
        st = px_err_set(err, PX_ENOMEM, "out of memory");
    if (!st)
        st = format == PX_GEN_JPEG ? jpeg_with_meta(&enc, &exif, &xmp, out, err)
                                   : webp_with_meta(&enc, &exif, &xmp, out, err);
    px_buf_free(&enc);
    px_buf_free(&exif);
    px_buf_free(&xmp);
    return st;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n;
    int be;
} tiff;

static uint32_t t16(const tiff *t, size_t o)
{
    return t->be ? (uint32_t)t->p[o] << 8 | t->p[o + 1] : (uint32_t)t->p[o + 1] << 8 | t->p[o];
}

static uint32_t t32(const tiff *t, size_t o)
{
    return t->be ? t16(t, o) << 16 | t16(t, o + 2) : t16(t, o + 2) << 16 | t16(t, o);
}

/* Finds tag in the IFD at offset ifd; *count and *off (value offset, or the
 * entry's own value field when it fits in 4 bytes, for 1-byte types). */
static int ifd_find(const tiff *t, uint32_t ifd, unsigned tag, uint32_t *type, uint32_t *count,
                    uint32_t *off)
{
    if (ifd < 8 || (size_t)ifd + 2 > t->n)
        return 0;
    unsigned ne = t16(t, ifd);
    for (unsigned i = 0; i < ne; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > t->n)
            return 0;
        if (t16(t, e) != tag)
            continue;
        *type = t16(t, e + 2);
        *count = t32(t, e + 4);
        *off = *count <= 4 ? (uint32_t)(e + 8) : t32(t, e + 8);
        return 1;
    }
    return 0;
}

int px_gen_text_dup(const void *s, size_t n, char **value, px_err *err)
{
    char *v = malloc(n + 1);
    if (!v)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    memcpy(v, s, n);
    v[n] = '\0';
    *value = v;
    return PX_OK;
}

/* UserComment of an EXIF block (TIFF header onwards) as UTF-8. */
static int exif_user_comment(const uint8_t *p, size_t n, char **value, px_err *err)
{
    tiff t = {p, n, 0};
    if (n < 8 || !((p[0] == 'M' && p[1] == 'M') || (p[0] == 'I' && p[1] == 'I')))
        return px_err_set(err, PX_ECORRUPT, "EXIF: no TIFF header");
    t.be = p[0] == 'M';
    uint32_t type, count, off, sub;
    if (!ifd_find(&t, t32(&t, 4), 0x8769, &type, &count, &off) || (size_t)off + 4 > n)
        return px_err_set(err, PX_ENOTFOUND, "EXIF: no Exif IFD");
    sub = t32(&t, off);
    if (!ifd_find(&t, sub, 0x9286, &type, &count, &off) || type != 7 || count < 8 ||
        (size_t)off + count > n || off + (size_t)count < off)
        return px_err_set(err, PX_ENOTFOUND, "EXIF: no UserComment");
    const uint8_t *c = p + off + 8;
    size_t cl = count - 8;
    if (memcmp(p + off, "UNICODE\0", 8)) /* ASCII or undefined: take the bytes as they are */
        return px_gen_text_dup(c, strnlen((const char *)c, cl), value, err);
    int be = t.be;
    if (cl >= 2 && ((c[0] == 0xFE && c[1] == 0xFF) || (c[0] == 0xFF && c[1] == 0xFE))) {
        be = c[0] == 0xFE;
        c += 2;
        cl -= 2;
    }
    char *v = malloc(cl / 2 * 3 + 1), *w = v; /* a UTF-16 unit never needs more than 3 bytes */
    if (!v)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    for (size_t i = 0; i + 1 < cl; i += 2) {
        uint32_t u = be ? (uint32_t)c[i] << 8 | c[i + 1] : (uint32_t)c[i + 1] << 8 | c[i];
        if (u == 0)
            break;
        if (u >= 0xD800 && u < 0xDC00 && i + 3 < cl) {
            uint32_t l =
                be ? (uint32_t)c[i + 2] << 8 | c[i + 3] : (uint32_t)c[i + 3] << 8 | c[i + 2];
            if (l >= 0xDC00 && l < 0xE000) {
                u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
                i += 2;
            }
        }
        if (u >= 0xD800 && u < 0xE000)
            u = 0xFFFD;
        if (u < 0x80) {
            *w++ = (char)u;
        } else if (u < 0x800) {
            *w++ = (char)(0xC0 | u >> 6);
            *w++ = (char)(0x80 | (u & 0x3F));
        } else if (u < 0x10000) {
            *w++ = (char)(0xE0 | u >> 12);
            *w++ = (char)(0x80 | ((u >> 6) & 0x3F));
            *w++ = (char)(0x80 | (u & 0x3F));
        } else { /* a surrogate pair: 4 input bytes, 4 output bytes */
            *w++ = (char)(0xF0 | u >> 18);
            *w++ = (char)(0x80 | ((u >> 12) & 0x3F));
            *w++ = (char)(0x80 | ((u >> 6) & 0x3F));
            *w++ = (char)(0x80 | (u & 0x3F));
        }
    }
    *w = '\0';
    *value = v;
    return PX_OK;
}

static const uint8_t *find(const uint8_t *p, size_t n, const char *s, size_t sl)
{
    for (size_t i = 0; sl <= n && i <= n - sl; i++)
        if (p[i] == (uint8_t)s[0] && !memcmp(p + i, s, sl))
            return p + i;
    return NULL;
}

/* The text of pixpipe:json in an XMP packet, unescaped. */
static int xmp_json(const uint8_t *p, size_t n, char **value, px_err *err)
{
    static const char open[] = "<pixpipe:json>", close[] = "</pixpipe:json>";
    const uint8_t *a = find(p, n, open, sizeof open - 1);
    if (!a)
        return px_err_set(err, PX_ENOTFOUND, "XMP: no pixpipe:json property");
    a += sizeof open - 1;
    const uint8_t *b = find(a, n - (size_t)(a - p), close, sizeof close - 1);
    if (!b)
        return px_err_set(err, PX_ECORRUPT, "XMP: pixpipe:json is not closed");
    char *v = malloc((size_t)(b - a) + 1), *w = v;
    if (!v)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (const uint8_t *s = a; s < b;) {
        int hit = 0;
        for (size_t k = 0; *s == '&' && k < sizeof ents / sizeof ents[0]; k++) {
            size_t el = strlen(ents[k].ent);
            if ((size_t)(b - s) >= el && !memcmp(s, ents[k].ent, el)) {
                *w++ = ents[k].c;
                s += el;
                hit = 1;
                break;
            }
        }
        if (!hit)
            *w++ = (char)*s++;
    }
    *w = '\0';
    *value = v;
    return PX_OK;
}

/* The EXIF (want_exif) or XMP body of a JPEG stream, from the segments before SOS. */
static int jpeg_find(const uint8_t *d, size_t n, int want_exif, const uint8_t **body, size_t *bl)
{
    size_t pos = 2;
    while (pos + 4 <= n) {
        if (d[pos] != 0xFF)
            return 0;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
            pos += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9)
            return 0;
        size_t sl = (size_t)d[pos + 2] << 8 | d[pos + 3];
        if (sl < 2 || pos + 2 + sl > n)
            return 0;
        const uint8_t *s = d + pos + 4;
        size_t len = sl - 2;
        if (m == 0xE1 && want_exif && len >= 6 && !memcmp(s, "Exif\0\0", 6)) {
            *body = s + 6;
            *bl = len - 6;
            return 1;
        }
        if (m == 0xE1 && !want_exif && len >= sizeof xmp_sig &&
            !memcmp(s, xmp_sig, sizeof xmp_sig)) {
            *body = s + sizeof xmp_sig;
            *bl = len - sizeof xmp_sig;
            return 1;
        }
        pos += 2 + sl;
    }
    return 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The body of the RIFF chunk fourcc of a WebP file. */
static int webp_find(const uint8_t *d, size_t n, const char *fourcc, const uint8_t **body,
                     size_t *bl)
{
    if (n < 12)
        return 0;
    size_t end = (size_t)le32(d + 4) + 8;
    if (end > n)
        end = n;
    for (size_t pos = 12; pos + 8 <= end;) {
        size_t cl = le32(d + pos + 4);
        if (cl > end - pos - 8)
            return 0;
        if (!memcmp(d + pos, fourcc, 4)) {
            *body = d + pos + 8;
            *bl = cl;
            return 1;
        }
        pos += 8 + cl + (cl & 1);
    }
    return 0;
}

int px_gen_meta_text(const uint8_t *data, size_t len, const char *key, char **value, px_err *err)
{
    *value = NULL;
    int exif = !strcmp(key, "parameters");
    if (!exif && strcmp(key, "pixpipe"))
        return px_err_set(err, PX_EINVAL, "metadata key '%s': expected parameters or pixpipe", key);
    px_format f = px_image_sniff(data, len);
    const uint8_t *b = NULL;
    size_t bl = 0;
    int found;
    if (f == PX_FMT_PNG)
        return px_gen_png_text(data, len, key, value, err);
    else if (f == PX_FMT_JPEG)
        found = jpeg_find(data, len, exif, &b, &bl);
    else if (f == PX_FMT_WEBP)
        found = webp_find(data, len, exif ? "EXIF" : "XMP ", &b, &bl);
    else
        return px_err_set(err, PX_EUNSUPPORTED, "not a PNG, JPEG or WebP file");
    if (!found)
        return px_err_set(err, PX_ENOTFOUND, "%s: no %s metadata", px_format_name(f),
                          exif ? "EXIF" : "XMP");
    if (exif && bl >= 6 && !memcmp(b, "Exif\0\0", 6)) { /* some WebP writers keep the prefix */
        b += 6;
        bl -= 6;
    }
    return exif ? exif_user_comment(b, bl, value, err) : xmp_json(b, bl, value, err);
}

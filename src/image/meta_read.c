/*
 * Reading back the texts px_image_encode_meta writes (px_image_meta_read, see
 * px_image.h): a walk over PNG chunks, JPEG segments or RIFF chunks, and a
 * small TIFF IFD reader for the EXIF UserComment, by hand because the four are
 * tiny and bounded. Every offset taken from the file is checked against its
 * length: this parses outside input (a fuzz target feeds it).
 */
#include "image_internal.h"

#include <stdlib.h>
#include <string.h>

#include "meta_internal.h"

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

/* *value = a malloc'd NUL-terminated copy of the n bytes at s. */
static int text_dup(const void *s, size_t n, char **value, px_err *err)
{
    char *v = px_malloc(n + 1);
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
        return text_dup(c, strnlen((const char *)c, cl), value, err);
    int be = t.be;
    if (cl >= 2 && ((c[0] == 0xFE && c[1] == 0xFF) || (c[0] == 0xFF && c[1] == 0xFE))) {
        be = c[0] == 0xFE;
        c += 2;
        cl -= 2;
    }
    char *v = px_malloc(cl / 2 * 3 + 1), *w = v; /* a UTF-16 unit never needs more than 3 bytes */
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
    char *v = px_malloc((size_t)(b - a) + 1), *w = v;
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
        if (m == 0xE1 && !want_exif && len >= PX_META_XMP_SIG_LEN &&
            !memcmp(s, PX_META_XMP_SIG, PX_META_XMP_SIG_LEN)) {
            *body = s + PX_META_XMP_SIG_LEN;
            *bl = len - PX_META_XMP_SIG_LEN;
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

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The text of tEXt or iTXt (uncompressed) chunk `key` of a PNG. */
static int png_text(const uint8_t *data, size_t len, const char *key, char **value, px_err *err)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(data, sig, 8))
        return px_err_set(err, PX_EUNSUPPORTED, "not a PNG file");
    size_t klen = strlen(key), pos = 8;
    while (pos + 12 <= len) {
        uint32_t n = be32(data + pos);
        if (n > len - pos - 12)
            return px_err_set(err, PX_ECORRUPT, "PNG: chunk at %zu runs past the end", pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (n > klen && !memcmp(body, key, klen) && body[klen] == 0) {
            const uint8_t *txt = NULL;
            size_t tl = 0;
            if (!memcmp(type, "tEXt", 4)) {
                txt = body + klen + 1;
                tl = n - klen - 1;
            } else if (!memcmp(type, "iTXt", 4) && n > klen + 3 && body[klen + 1] == 0) {
                /* keyword\0 compression-flag(0) method language\0 translated\0 text */
                const uint8_t *p = body + klen + 3, *end = body + n;
                const uint8_t *z = memchr(p, 0, (size_t)(end - p));
                if (z)
                    z = memchr(z + 1, 0, (size_t)(end - z - 1));
                if (z) {
                    txt = z + 1;
                    tl = (size_t)(end - txt);
                }
            }
            if (txt)
                return text_dup(txt, tl, value, err);
        }
        if (!memcmp(type, "IEND", 4))
            break;
        pos += 12 + (size_t)n;
    }
    return px_err_set(err, PX_ENOTFOUND, "PNG: no text chunk '%s'", key);
}

int px_image_meta_read(const uint8_t *data, size_t len, px_image_meta_key key, char **value,
                       px_err *err)
{
    *value = NULL;
    if (key != PX_META_PARAMETERS && key != PX_META_JSON)
        return px_err_set(err, PX_EINVAL, "metadata key %d: expected parameters or json", (int)key);
    int exif = key == PX_META_PARAMETERS;
    if (!data || len == 0)
        return px_err_set(err, PX_EINVAL, "metadata: empty input");
    px_format f = px_image_sniff(data, len);
    const uint8_t *b = NULL;
    size_t bl = 0;
    int found;
    if (f == PX_FMT_PNG)
        return png_text(data, len, exif ? "parameters" : "pixpipe", value, err);
    else if (f == PX_FMT_JPEG)
        found = jpeg_find(data, len, exif, &b, &bl);
    else if (f == PX_FMT_WEBP)
        found = webp_find(data, len, exif ? "EXIF" : "XMP ", &b, &bl);
    else
        return px_err_set(err, PX_EUNSUPPORTED, "metadata: not a PNG, JPEG or WebP file");
    if (!found)
        return px_err_set(err, PX_ENOTFOUND, "%s: no %s metadata", px_format_name(f),
                          exif ? "EXIF" : "XMP");
    if (exif && bl >= 6 && !memcmp(b, "Exif\0\0", 6)) { /* some WebP writers keep the prefix */
        b += 6;
        bl -= 6;
    }
    return exif ? exif_user_comment(b, bl, value, err) : xmp_json(b, bl, value, err);
}

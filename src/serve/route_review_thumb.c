/*
 * Review images at review size, and their near duplicates:
 *
 *   GET /v1/pool/images/{id}/thumb?size=384|768   WebP, longest side `size`
 *   GET /v1/pool/images/{id}/similar?n=4          nearest images by pHash
 *
 * A thumbnail is made once (decode, area-average downscale, WebP q80) and
 * kept in POOL/.thumbs/ID-SIZE.webp, written atomically, so concurrent first
 * requests at worst both make it and the later rename wins; later requests
 * send the file. A 1024x1536 PNG of ~2.5 MB becomes ~30 KB, so a page of 60
 * images is a couple of MB instead of 150. The downscale is a plain box
 * filter over the source pixels each output pixel covers: px_image has no
 * resize and this needs nothing better (no upscaling, one pass).
 */
#include "serve_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image/px_image.h"
#include "manifest/px_manifest.h"

#define THUMB_SMALL 384
#define THUMB_LARGE 768
#define THUMB_QUALITY 80
#define THUMB_SRC_MAX (256u << 20)

/* Box-filter downscale of src into dst (allocated here) so that the longest
 * side is at most side. */
static int downscale(const px_image *src, int side, px_image *dst)
{
    int w = src->w, h = src->h;
    int ow = w, oh = h;
    if (w >= h && w > side) {
        ow = side;
        oh = (int)((long long)h * side / w);
    } else if (h > w && h > side) {
        oh = side;
        ow = (int)((long long)w * side / h);
    }
    if (ow < 1)
        ow = 1;
    if (oh < 1)
        oh = 1;
    int ch = src->channels;
    int st = px_image_alloc(dst, ow, oh, ch);
    if (st)
        return st;
    for (int oy = 0; oy < oh; oy++) {
        int y0 = (int)((long long)oy * h / oh), y1 = (int)((long long)(oy + 1) * h / oh);
        if (y1 <= y0)
            y1 = y0 + 1;
        uint8_t *out = dst->px + (size_t)oy * dst->stride;
        for (int ox = 0; ox < ow; ox++) {
            int x0 = (int)((long long)ox * w / ow), x1 = (int)((long long)(ox + 1) * w / ow);
            if (x1 <= x0)
                x1 = x0 + 1;
            unsigned sum[4] = {0, 0, 0, 0};
            for (int y = y0; y < y1; y++) {
                const uint8_t *p = src->px + (size_t)y * src->stride + (size_t)x0 * ch;
                for (int x = x0; x < x1; x++, p += ch)
                    for (int k = 0; k < ch; k++)
                        sum[k] += p[k];
            }
            unsigned cnt = (unsigned)((y1 - y0) * (x1 - x0));
            for (int k = 0; k < ch; k++)
                out[(size_t)ox * ch + k] = (uint8_t)((sum[k] + cnt / 2) / cnt);
        }
    }
    return PX_OK;
}

/* Makes the thumbnail of the pool file src at dst. */
static int make_thumb(const char *src, const char *dst, int side, px_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int st = px_read_file(src, THUMB_SRC_MAX, &data, &len, err);
    if (st)
        return st;
    px_image img = {0}, small = {0};
    px_decode_opts dopt = px_decode_opts_default();
    st = px_image_decode(data, len, &dopt, &img, NULL, err);
    free(data);
    if (st)
        return st;
    if ((st = downscale(&img, side, &small)) != PX_OK) {
        px_image_free(&img);
        return px_err_set(err, st, "thumbnail: out of memory");
    }
    px_image_free(&img);
    px_buf webp = {0};
    st = px_image_encode(&small, PX_FMT_WEBP, THUMB_QUALITY, &webp, err);
    px_image_free(&small);
    /* no fsync: a cache; after a power cut a torn (empty) file is made again */
    px_write_opts wo = {0, 0};
    if (!st)
        st = px_write_file_atomic_opts(dst, webp.data, webp.len, &wo, err);
    px_buf_free(&webp);
    return st;
}

static int query_int(struct MHD_Connection *c, const char *key, long lo, long hi, long def,
                     long *out)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    *out = def;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

enum MHD_Result px_review_thumb(struct MHD_Connection *c, px_req *r)
{
    long side;
    if (query_int(c, "size", THUMB_SMALL, THUMB_LARGE, THUMB_SMALL, &side) ||
        (side != THUMB_SMALL && side != THUMB_LARGE))
        return px_reply_error(c, r, 400, "query size: expected %d or %d", THUMB_SMALL,
                              THUMB_LARGE);
    px_manifest_image m;
    px_err err = {{0}};
    int st = px_manifest_get_image(px_pool_store(r->srv), r->id, &m, &err);
    if (st == PX_ENOTFOUND)
        return px_reply_error(c, r, 404, "no image with id %lld in the pool", (long long)r->id);
    if (st)
        return px_reply_error(c, r, 500, "thumb: the manifest could not be read");
    char dir[PATH_MAX], path[PATH_MAX + 64], src[PATH_MAX], etag[96];
    snprintf(dir, sizeof dir, "%s/.thumbs", px_pool_dir(r->srv));
    snprintf(path, sizeof path, "%s/%lld-%ld.webp", dir, (long long)r->id, side);
    snprintf(etag, sizeof etag, "\"%.40s-%ld\"", m.sha256, side);
    struct stat sb;
    enum MHD_Result ret;
    if (stat(path, &sb) != 0 || sb.st_size == 0) {
        if (!px_pool_file(r->srv, m.path, src)) {
            px_log(PX_LOG_WARN, "serve: image %lld: file '%s' is missing from the pool",
                   (long long)r->id, m.path);
            px_manifest_image_clear(&m);
            return px_reply_error(c, r, 404, "image %lld: its file is missing from the pool",
                                  (long long)r->id);
        }
        st = stat(dir, &sb) == 0 ? PX_OK : px_mkdir_p(dir, &err);
        if (!st)
            st = make_thumb(src, path, (int)side, &err);
        if (st) {
            px_log(PX_LOG_WARN, "serve: image %lld: no thumbnail: %s", (long long)r->id, err.msg);
            px_manifest_image_clear(&m);
            return px_reply_error(c, r, st == PX_ENOMEM ? 503 : 422,
                                  "image %lld: no thumbnail could be made of it", (long long)r->id);
        }
    }
    ret = px_pool_send_file(c, r, path, etag, "image/webp");
    px_manifest_image_clear(&m);
    return ret;
}

/* ---- similar ------------------------------------------------------------------ */

typedef struct near {
    int64_t id;
    int d;
} near;

enum MHD_Result px_review_similar(struct MHD_Connection *c, px_req *r)
{
    long want;
    if (query_int(c, "n", 1, 20, 4, &want))
        return px_reply_error(c, r, 400, "query n: expected 1..20");
    px_manifest *s = px_pool_store(r->srv);
    px_manifest_image m;
    px_err err = {{0}};
    int st = px_manifest_get_image(s, r->id, &m, &err);
    if (st == PX_ENOTFOUND)
        return px_reply_error(c, r, 404, "no image with id %lld in the pool", (long long)r->id);
    if (st)
        return px_reply_error(c, r, 500, "similar: the manifest could not be read");
    uint64_t me = m.phash;
    px_manifest_image_clear(&m);
    int64_t *ids = NULL;
    uint64_t *hashes = NULL;
    size_t n = 0;
    if (px_manifest_all_phashes(s, &ids, &hashes, &n, &err) != PX_OK) {
        px_log(PX_LOG_WARN, "serve: similar: %s", err.msg);
        return px_reply_error(c, r, 500, "similar: the manifest could not be read");
    }
    /* keep the `want` nearest in a small sorted array (insertion) */
    near best[20];
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == r->id)
            continue;
        int d = __builtin_popcountll(hashes[i] ^ me);
        if (k == want && d >= best[k - 1].d)
            continue;
        int j = k < want ? k++ : k - 1;
        while (j > 0 && best[j - 1].d > d) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = (near){ids[i], d};
    }
    free(ids);
    free(hashes);
    json_t *arr = json_array();
    for (int i = 0; i < k; i++) {
        char thumb[64];
        snprintf(thumb, sizeof thumb, "/v1/pool/images/%lld/thumb", (long long)best[i].id);
        json_array_append_new(arr, json_pack("{s:I,s:i,s:s}", "id", (json_int_t)best[i].id,
                                             "distance", best[i].d, "thumb", thumb));
    }
    return px_reply_json(c, r, 200, json_pack("{s:I,s:o}", "id", (json_int_t)r->id, "images", arr));
}

/*
 * Fixtures for the serve tests (see test_serve_fixture.h). The pool is built
 * with the same store calls `pixpipe generate` makes (campaign, quotas, jobs,
 * images), so the server is tested against the real schema; the pictures
 * are small synthetic PNGs, different per image so their hashes differ.
 */
#include "test_serve_fixture.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "manifest/px_manifest.h"
#include "image/px_image.h"
#include "px_test.h"

static int mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static void sha256_hex(const uint8_t *d, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(d, n, md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int fx_make_pool(const char *dir, int per_slot, int quota, int64_t *first_id, px_err *err)
{
    static const char *themes[2][2] = {{"Business and office", "business-and-office"},
                                       {"Food and drink", "food-and-drink"}};
    static const char *types[2] = {"interiors", "items"};
    if (mkdir_p(dir) != 0)
        return px_err_set(err, PX_EIO, "%s: cannot create", dir);
    char db[1024];
    snprintf(db, sizeof db, "%s/%s", dir, PX_MANIFEST_FILE);
    px_manifest *s = NULL;
    int st = px_manifest_open(db, 0, &s, err);
    if (st)
        return st;
    int64_t camp = 0;
    st = px_manifest_add_campaign(s, "serve-test", "{\"name\":\"serve-test\"}", &camp, err);
    int n = 0;
    if (first_id)
        *first_id = 0;
    for (int t = 0; t < 2 && !st; t++)
        for (int y = 0; y < 2 && !st; y++) {
            st = px_manifest_set_quota(s, camp, themes[t][0], themes[t][1], types[y], quota, err);
            for (int k = 0; k < per_slot && !st; k++, n++) {
                char prompt[256];
                snprintf(prompt, sizeof prompt, "a %s photo for %s, picture %d",
                         types[y], themes[t][0], k);
                px_manifest_job j;
                memset(&j, 0, sizeof j);
                j.theme = (char *)themes[t][0];
                j.theme_slug = (char *)themes[t][1];
                j.type = (char *)types[y];
                j.prompt = prompt;
                j.negative = (char *)"text, watermark";
                j.seed = -1;
                j.width = 96;
                j.height = 64;
                j.steps = 20;
                j.cfg = 6.5;
                j.sampler = (char *)"euler";
                j.backend = (char *)"a1111";
                j.model = (char *)"test-model";
                int64_t id = 0, seed = 0;
                st = px_manifest_add_job(s, &j, "test", NULL, &id, &seed, err);
                if (st)
                    break;
                if (first_id && !*first_id)
                    *first_id = id;
                /* a picture of its own: colour and stripes from the image number */
                px_image img;
                st = px_image_alloc(&img, 96, 64, 3);
                if (st)
                    break;
                for (int yy = 0; yy < 64; yy++)
                    for (int xx = 0; xx < 96; xx++) {
                        uint8_t *p = img.px + (size_t)yy * img.stride + (size_t)xx * 3;
                        p[0] = (uint8_t)(40 + 50 * t + ((xx / (4 + n % 5)) % 2) * 60);
                        p[1] = (uint8_t)(60 + 70 * y + yy);
                        p[2] = (uint8_t)(30 * (n % 7) + xx);
                    }
                px_buf png = {0};
                st = px_image_encode(&img, PX_FMT_PNG, 90, &png, err);
                px_image_free(&img);
                char rel[256], full[1400], sub[1200], hex[65];
                snprintf(rel, sizeof rel, "%s/%s/%lld.png", themes[t][1], types[y], (long long)id);
                snprintf(sub, sizeof sub, "%s/%s/%s", dir, themes[t][1], types[y]);
                snprintf(full, sizeof full, "%s/%s", dir, rel);
                if (!st && mkdir_p(sub) != 0)
                    st = px_err_set(err, PX_EIO, "%s: cannot create", sub);
                if (!st)
                    st = px_write_file_atomic(full, png.data, png.len, err);
                if (!st) {
                    sha256_hex(png.data, png.len, hex);
                    px_manifest_image_rec rec;
                    memset(&rec, 0, sizeof rec);
                    rec.job_id = id;
                    rec.path = rel;
                    rec.sha256 = hex;
                    rec.bytes = (int64_t)png.len;
                    rec.width = 96;
                    rec.height = 64;
                    rec.phash = (uint64_t)id * 0x9e3779b97f4a7c15ull;
                    rec.status = n % 4 == 3 ? "flagged" : "accepted";
                    rec.reason = n % 4 == 3 ? "low contrast" : "";
                    rec.checks = "{\"mean\":120.5,\"contrast\":0.31,\"faces\":0}";
                    rec.server = "test";
                    rec.render_ms = 1234.0;
                    st = px_manifest_add_image(s, &rec, err);
                }
                px_buf_free(&png);
            }
        }
    px_manifest_close(s);
    return st;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    fx_resp *r = ud;
    return px_buf_append(&r->body, p, sz * n) == PX_OK ? sz * n : 0;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || strncasecmp(line, name, nl) || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    if (vl >= cap)
        vl = cap - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    fx_resp *r = ud;
    size_t len = sz * n;
    header_value(p, len, "Content-Type", r->ctype, sizeof r->ctype);
    header_value(p, len, "Retry-After", r->retry_after, sizeof r->retry_after);
    header_value(p, len, "X-Faces-Found", r->faces, sizeof r->faces);
    header_value(p, len, "Referrer-Policy", r->referrer_policy, sizeof r->referrer_policy);
    header_value(p, len, "X-Frame-Options", r->frame_options, sizeof r->frame_options);
    header_value(p, len, "X-Content-Type-Options", r->nosniff, sizeof r->nosniff);
    return len;
}

int fx_http(const char *method, const char *url, const void *body, size_t len,
            const char *const *headers, fx_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    struct curl_slist *hl = NULL;
    int expect = 0;
    for (int i = 0; headers && headers[i]; i++) {
        hl = curl_slist_append(hl, headers[i]);
        expect |= !strncasecmp(headers[i], "Expect:", 7);
    }
    if (!expect)
        hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)px_test_ms(60000) / 1000);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->code);
    if (rc != CURLE_OK) /* say why, for a test that fails on it */
        fprintf(stderr, "fx_http: %s %s: %s\n", method, url, curl_easy_strerror(rc));
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    px_buf_append(&out->body, "", 1);
    if (out->body.len)
        out->body.len--;
    return rc == CURLE_OK ? 0 : -1;
}

void fx_resp_free(fx_resp *r)
{
    px_buf_free(&r->body);
}

long long fx_sql_int(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    long long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return v;
}

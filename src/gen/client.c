/*
 * HTTP for the generation pipeline: a px_gen_client is one px_http (src/net),
 * so one curl easy handle per worker thread, as curl requires, reused so
 * connections stay alive between renders. px_gen_http maps the pipeline's
 * call (GET or JSON POST, optional API key) onto it.
 *
 * Also here: base64 (no Debian-packaged C library offers a plain one we
 * already depend on, and it is twenty lines), SHA-256 through OpenSSL's
 * libcrypto (already pulled in by libcurl), and URL joining.
 */
#include "gen_internal.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/px_http.h"

struct px_gen_client {
    px_http *h;
    const atomic_int *cancel; /* px_gen_client_set_cancel */
};

void px_gen_client_set_cancel(px_gen_client *c, const void *flag)
{
    c->cancel = flag;
}

const void *px_gen_client_get_cancel(const px_gen_client *c)
{
    return c->cancel;
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    /* libcurl >= 7.84 makes this thread-safe; main() normally did it already */
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int px_gen_client_create(px_gen_client **out, px_err *err)
{
    pthread_once(&g_curl_once, curl_init_once);
    *out = NULL;
    px_gen_client *c = px_calloc(1, sizeof *c);
    if (!c)
        return px_err_set(err, PX_ENOMEM, "http: out of memory");
    int st = px_http_create(&c->h, err);
    if (st != PX_OK) {
        free(c);
        return st;
    }
    *out = c;
    return PX_OK;
}

void px_gen_client_destroy(px_gen_client *c)
{
    if (!c)
        return;
    px_http_destroy(c->h);
    free(c);
}

void px_gen_join_url(const char *base, const char *path, char *out, size_t cap)
{
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    snprintf(out, cap, "%.*s%s%s", (int)bl, base, path[0] == '/' ? "" : "/", path);
}

int px_gen_http(px_gen_client *c, const char *url, const char *body, const char *bearer,
                long timeout_ms, size_t max_body, long *status, px_buf *resp, px_err *err)
{
    *status = 0;
    resp->len = 0;
    px_http_opts o = px_http_opts_default();
    o.timeout_ms = timeout_ms > 0 ? timeout_ms : 300000L;
    o.connect_timeout_ms = timeout_ms > 0 && timeout_ms < 10000 ? timeout_ms : 10000L;
    o.max_body = max_body ? max_body : (size_t)256 << 20;
    o.bearer = bearer;
    o.cancel = c->cancel;
    px_http_response r;
    int st = body ? px_http_post_json(c->h, url, body, &o, &r, err)
                  : px_http_get(c->h, url, &o, &r, err);
    if (st != PX_OK)
        return st;
    *status = r.status;
    /* hand the body over without copying (renders are megabytes) */
    px_buf_free(resp);
    *resp = r.body;
    return PX_OK;
}

/* ---- base64 ----------------------------------------------------------------- */

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-') /* url-safe variants too */
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int px_gen_b64_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    uint8_t *d = px_malloc(n / 4 * 3 + 3);
    if (!d)
        return PX_ENOMEM;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '=')
            break;
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        int v = b64v(ch);
        if (v < 0) {
            free(d);
            return PX_ECORRUPT;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out = d;
    *outlen = k;
    return PX_OK;
}

int px_gen_b64_encode(const uint8_t *d, size_t n, px_buf *out)
{
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        q[0] = k_b64[(v >> 18) & 63];
        q[1] = k_b64[(v >> 12) & 63];
        q[2] = i + 1 < n ? k_b64[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? k_b64[v & 63] : '=';
        if (px_buf_append(out, q, 4))
            return PX_ENOMEM;
    }
    return PX_OK;
}

void px_gen_sha256_hex(const uint8_t *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        memset(hex, '0', 64);
        hex[64] = '\0';
        return;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

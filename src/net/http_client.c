/*
 * px_http implementation over one libcurl easy handle per px_http.
 *
 * The handle is reset before each request (curl_easy_reset keeps the
 * connection cache, so keep-alive still works) and every option is set again:
 * no state leaks from one request to the next. The body is collected in a
 * px_buf by a write callback that refuses to grow past the cap, and a
 * progress callback polls the cancel flag so shutdown does not wait for a
 * long poll to run out.
 */
#include "px_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct px_http {
    CURL *curl;
};

typedef struct {
    px_buf *body;
    size_t max;
    int over; /* set when the body passed max */
} sink;

px_http_opts px_http_opts_default(void)
{
    px_http_opts o = {0};
    o.connect_timeout_ms = 10000;
    o.timeout_ms = 60000;
    o.max_body = (size_t)64 << 20;
    return o;
}

void px_http_response_free(px_http_response *r)
{
    if (!r)
        return;
    px_buf_free(&r->body);
    memset(r, 0, sizeof *r);
}

int px_http_create(px_http **out, px_err *err)
{
    *out = NULL;
    px_http *h = px_calloc(1, sizeof *h);
    if (!h)
        return px_err_set(err, PX_ENOMEM, "http: out of memory");
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        return px_err_set(err, PX_ENOMEM, "http: curl_easy_init failed");
    }
    *out = h;
    return PX_OK;
}

void px_http_destroy(px_http *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void px_http_redact_url(const char *url, char *out, size_t cap)
{
    if (!out || cap == 0)
        return;
    out[0] = '\0';
    if (!url)
        return;
    size_t o = 0;
    const char *p = url;
    while (*p && o + 1 < cap) {
        /* "/bot" followed by a token up to the next '/' (or the end) */
        if (!strncmp(p, "/bot", 4) && p[4] && p[4] != '/') {
            const char *end = strchr(p + 4, '/');
            if (!end)
                end = p + strlen(p);
            const char *rep = "/bot<redacted>";
            for (const char *r = rep; *r && o + 1 < cap; r++)
                out[o++] = *r;
            p = end;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t n = size * nmemb;
    if (s->body->len + n > s->max) {
        s->over = 1;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (px_buf_append(s->body, ptr, n) != PX_OK)
        return 0;
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const atomic_int *cancel = ud;
    return cancel && atomic_load(cancel) ? 1 : 0;
}

/* Runs the request already configured on h->curl (method and body set by the
 * caller), with the common options; header (may be NULL) is one extra request
 * header line. */
static int perform(px_http *h, const char *url, const char *header,
                   const px_http_opts *opts, px_http_response *res, px_err *err)
{
    px_http_opts d = px_http_opts_default();
    if (!opts)
        opts = &d;
    CURL *c = h->curl;
    sink s = {&res->body, opts->max_body ? opts->max_body : d.max_body, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                                                  : d.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, opts->timeout_ms > 0 ? opts->timeout_ms : d.timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pixpipe/" PX_VERSION);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* any encoding curl can decode */
    /* no 100-continue round trip before large bodies */
    struct curl_slist *all = curl_slist_append(NULL, "Expect:"), *t;
    if (all && header && (t = curl_slist_append(all, header)) == NULL) {
        curl_slist_free_all(all);
        all = NULL;
    }
    if (all && opts->bearer && *opts->bearer) {
        size_t n = strlen(opts->bearer) + 32;
        char *auth = px_malloc(n);
        if (auth) {
            snprintf(auth, n, "Authorization: Bearer %s", opts->bearer);
            t = curl_slist_append(all, auth);
            explicit_bzero(auth, n);
            free(auth);
        }
        if (!auth || !t) {
            curl_slist_free_all(all);
            all = NULL;
        }
    }
    if (!all)
        return px_err_set(err, PX_ENOMEM, "http: out of memory");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, all);
    if (opts->cancel) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)opts->cancel);
    }
    /* a Content-Length over the cap is refused before any byte is read */
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s.max);

    CURLcode rc = curl_easy_perform(c);
    for (struct curl_slist *it = all; it; it = it->next) /* the key must not linger in memory */
        explicit_bzero(it->data, strlen(it->data));
    curl_slist_free_all(all);
    if (rc != CURLE_OK) {
        char safe[512];
        px_http_redact_url(url, safe, sizeof safe);
        int st = PX_ENET;
        if (rc == CURLE_OPERATION_TIMEDOUT)
            st = PX_ETIMEOUT;
        else if (rc == CURLE_ABORTED_BY_CALLBACK)
            st = PX_ECLOSED;
        else if (s.over || rc == CURLE_FILESIZE_EXCEEDED)
            st = PX_ELIMIT;
        if (st == PX_ELIMIT)
            px_err_set(err, st, "%s: response larger than %zu bytes", safe, s.max);
        else
            px_err_set(err, st, "%s: %s", safe, curl_easy_strerror(rc));
        px_http_response_free(res);
        return st;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &res->status);
    char *ct = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) {
        strncpy(res->content_type, ct, sizeof res->content_type - 1);
        res->content_type[sizeof res->content_type - 1] = '\0';
    }
    /* NUL-terminate for parsers, without counting it */
    if (px_buf_append(&res->body, "", 1) != PX_OK) {
        px_http_response_free(res);
        return px_err_set(err, PX_ENOMEM, "http: out of memory");
    }
    res->body.len--;
    return PX_OK;
}

int px_http_get(px_http *h, const char *url, const px_http_opts *opts, px_http_response *res,
                px_err *err)
{
    memset(res, 0, sizeof *res);
    if (!h || !url)
        return px_err_set(err, PX_EINVAL, "http: missing handle or URL");
    curl_easy_reset(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    return perform(h, url, NULL, opts, res, err);
}

int px_http_post_json(px_http *h, const char *url, const char *json, const px_http_opts *opts,
                      px_http_response *res, px_err *err)
{
    memset(res, 0, sizeof *res);
    if (!h || !url || !json)
        return px_err_set(err, PX_EINVAL, "http: missing handle, URL or body");
    curl_easy_reset(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(json));
    return perform(h, url, "Content-Type: application/json", opts, res, err);
}

int px_http_post_multipart(px_http *h, const char *url, const px_http_part *parts, int n,
                           const px_http_opts *opts, px_http_response *res, px_err *err)
{
    memset(res, 0, sizeof *res);
    if (!h || !url || (n > 0 && !parts) || n < 0)
        return px_err_set(err, PX_EINVAL, "http: missing handle, URL or parts");
    curl_easy_reset(h->curl);
    curl_mime *mime = curl_mime_init(h->curl);
    if (!mime)
        return px_err_set(err, PX_ENOMEM, "http: out of memory");
    for (int i = 0; i < n; i++) {
        const px_http_part *p = &parts[i];
        curl_mimepart *mp = curl_mime_addpart(mime);
        if (!mp || !p->name) {
            curl_mime_free(mime);
            return px_err_set(err, p->name ? PX_ENOMEM : PX_EINVAL, "http: bad multipart part %d",
                              i);
        }
        curl_mime_name(mp, p->name);
        if (p->data) {
            curl_mime_data(mp, (const char *)p->data, p->len);
            curl_mime_filename(mp, p->filename ? p->filename : p->name);
            curl_mime_type(mp, p->content_type ? p->content_type : "application/octet-stream");
        } else {
            curl_mime_data(mp, p->value ? p->value : "", CURL_ZERO_TERMINATED);
        }
    }
    curl_easy_setopt(h->curl, CURLOPT_MIMEPOST, mime);
    int st = perform(h, url, NULL, opts, res, err);
    curl_mime_free(mime);
    return st;
}

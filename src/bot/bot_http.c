/*
 * bot_http: the bot's one HTTP listener (libmicrohttpd, a small pool of
 * internal threads), for GET /healthz and /metrics and, in webhook mode,
 * the updates Telegram POSTs. One piece of server code for both; when
 * --metrics and --listen name the same address one daemon serves both.
 * Written here rather than through src/serve: that server is the review
 * application with its own routing, hosts, CSRF and limits; this needs
 * two GETs and one POST.
 *
 * A webhook POST is judged on its headers first (path, method, secret,
 * declared length), so a stranger's request is refused before any body is
 * read; the body is then collected up to max_body and handed to on_update,
 * whose status is the answer. The secret is compared in constant time and
 * neither it nor the header sent ever reaches a log.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bot_metrics.h"

struct bot_http {
    struct MHD_Daemon *d;
    bot_http_routes r;
    char *secret; /* copy, scrubbed at stop */
};

typedef struct {
    int status; /* decided from the headers (0: read the body) */
    char *body;
    size_t len, cap;
} hook_req;

/* Equal strings, in time that depends only on want's length. */
static int secret_equal(const char *got, const char *want)
{
    size_t lg = strlen(got), lw = strlen(want);
    volatile unsigned char d = (unsigned char)(lg != lw);
    for (size_t i = 0; i < lw; i++)
        d |= (unsigned char)(want[i] ^ (i < lg ? got[i] : 0));
    return d == 0;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned code, const char *type,
                              const char *text, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
    return answer(conn, code, "text/plain; charset=utf-8", text, strlen(text));
}

static enum MHD_Result on_get(bot_http *h, struct MHD_Connection *conn, const char *url)
{
    const bot_metrics *m = h->r.m;
    if (!strcmp(url, "/healthz")) {
        int ok = atomic_load(&m->healthy);
        return answer_text(conn, ok ? 200 : 503, ok ? "ok\n" : "not receiving updates\n");
    }
    if (!strcmp(url, "/metrics")) {
        char buf[8192];
        size_t len = bot_metrics_render(m, buf, sizeof buf);
        if (len >= sizeof buf)
            len = sizeof buf - 1;
        return answer(conn, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len);
    }
    return answer_text(conn, 404, "not found: /healthz or /metrics\n");
}

/* What the headers alone say about a webhook request: 0 to read its body,
 * else the status to answer. */
static int hook_judge(bot_http *h, struct MHD_Connection *conn, const char *method)
{
    if (strcmp(method, "POST"))
        return 405;
    const char *got =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Telegram-Bot-Api-Secret-Token");
    if (!got)
        return 401;
    if (!secret_equal(got, h->secret))
        return 403;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > h->r.max_body)
        return 413;
    return 0;
}

static int count_of(int status)
{
    if (status >= 200 && status < 300)
        return BM_HOOK_OK;
    if (status == 401 || status == 403)
        return BM_HOOK_DENIED;
    return status >= 500 ? BM_HOOK_RETRY : BM_HOOK_BAD;
}

static enum MHD_Result hook_answer(bot_http *h, struct MHD_Connection *conn, int status)
{
    if (h->r.m)
        atomic_fetch_add(&h->r.m->c[count_of(status)], 1);
    const char *text = status == 200   ? "ok\n"
                       : status == 401 ? "secret token missing\n"
                       : status == 403 ? "wrong secret token\n"
                       : status == 405 ? "POST only\n"
                       : status == 413 ? "update too large\n"
                       : status == 400 ? "not an update\n"
                       : status == 404 ? "not found\n"
                                       : "try again later\n";
    return answer_text(conn, (unsigned)status, text);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    bot_http *h = cls;
    int is_hook = h->r.on_update && !strcmp(url, h->r.hook_path);
    if (!is_hook) {
        if (*upload_size) { /* a body nobody asked for: skip it */
            *upload_size = 0;
            return MHD_YES;
        }
        if (h->r.m && (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
            return on_get(h, conn, url);
        if (h->r.on_update)
            return hook_answer(h, conn, 404); /* not the webhook's path */
        return answer_text(conn, 405, "GET only\n");
    }
    hook_req *q = *con_cls;
    if (!q) { /* headers only so far */
        q = calloc(1, sizeof *q);
        if (!q)
            return MHD_NO;
        q->status = hook_judge(h, conn, method);
        *con_cls = q;
        if (q->status) /* refused on its headers: answered now, the body never read */
            return hook_answer(h, conn, q->status);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (q->status)
            return MHD_YES; /* over the limit: the rest is not kept */
        if (q->len + n > h->r.max_body) {
            q->status = 413;
            return MHD_YES;
        }
        if (q->len + n + 1 > q->cap) {
            size_t nc = (q->len + n + 1) * 2;
            char *nb = realloc(q->body, nc < h->r.max_body + 1 ? nc : h->r.max_body + 1);
            if (!nb) {
                q->status = 503;
                return MHD_YES;
            }
            q->body = nb;
            q->cap = nc < h->r.max_body + 1 ? nc : h->r.max_body + 1;
        }
        memcpy(q->body + q->len, upload, n);
        q->len += n;
        q->body[q->len] = '\0';
        return MHD_YES;
    }
    int status = q->status ? q->status : q->len ? h->r.on_update(h->r.ctx, q->body, q->len) : 400;
    return hook_answer(h, conn, status);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    hook_req *q = *con_cls;
    if (q) {
        free(q->body);
        free(q);
        *con_cls = NULL;
    }
}

int bot_http_start(const char *addr, const bot_http_routes *r, bot_http **out, int *port,
                   px_err *err)
{
    *out = NULL;
    char host[64];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return px_err_set(err, PX_EINVAL, "bot: listen address '%s': expected IPV4:PORT",
                          addr ? addr : "");
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)p);
    if (!colon[1] || *end || p < 0 || p > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return px_err_set(err, PX_EINVAL, "bot: listen address '%s': expected IPV4:PORT", addr);
    bot_http *h = px_calloc(1, sizeof *h);
    if (!h)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    h->r = *r;
    h->secret = px_strdup(r->secret ? r->secret : "");
    if (!h->secret) {
        free(h);
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    }
    h->r.secret = NULL;
    unsigned conns = r->max_conns > 0 ? (unsigned)r->max_conns : 16u;
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY, 0, NULL,
                            NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_THREAD_POOL_SIZE, r->on_update ? 4u : 1u,
                            MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, h, MHD_OPTION_END);
    if (!h->d) {
        bot_http_stop(h);
        return px_err_set(err, PX_EIO, "bot: cannot listen on %s (in use, or not an address here)",
                          addr);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? (int)di->port : (int)p;
    *out = h;
    return PX_OK;
}

void bot_http_stop(bot_http *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    if (h->secret)
        explicit_bzero(h->secret, strlen(h->secret));
    free(h->secret);
    free(h);
}

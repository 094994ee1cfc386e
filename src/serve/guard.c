/*
 * The server's "safe by default" checks, made on the headers of every request
 * before any work is done:
 *
 *  - Host allow-list (DNS rebinding): a page on evil.example whose name is
 *    made to resolve to 127.0.0.1 reaches us with `Host: evil.example`, so
 *    only the names in srv->hosts are answered (421 otherwise). Defaults: the
 *    listen address, localhost and 127.0.0.1, each with the bound port.
 *  - Cross-origin writes: browsers say where a request comes from. A POST
 *    whose Sec-Fetch-Site is anything but same-origin (or none: typed by the
 *    user), or whose Origin is not one of the allowed hosts, is refused 403.
 *    Clients that are not browsers (curl, scripts) send neither header.
 *  - CSRF token: old browsers send neither header, so a verdict must also
 *    prove it comes from a page of ours. Without a bearer token it needs
 *    X-CSRF-Token equal to a random per-server token that GET /v1/csrf hands
 *    out. Another origin cannot read that answer (no CORS headers), a form
 *    cannot set a custom header, and a cross-origin fetch with one needs a
 *    CORS preflight we never grant.
 *  - Slow headers: a connection must deliver complete headers within
 *    header_timeout_s of its start (or of its previous request's end), or
 *    it is shut down (below); the idle timeout alone restarts with every byte.
 *  - Size: a URL (path and query) over 8 KiB is 414, headers over 16 KiB 431,
 *    both as JSON. libmicrohttpd answers requests that do not fit its
 *    per-connection buffer (256 KiB, see server.c) itself, in HTML; that
 *    text is fixed inside the library.
 */
#include "serve_internal.h"

#include "manifest/px_manifest.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define URL_MAX 8192
#define HEADERS_MAX 16384

/* Splits "name", "name:port", "[v6]" or "[v6]:port" (n bytes at s) into a
 * lower-case name and a port (def when none is given). 0 when malformed. */
static int split_host(const char *s, size_t n, char *name, size_t cap, int *port, int def)
{
    size_t hl;
    const char *rest;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return 0;
        hl = (size_t)(close - s) + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        hl = colon ? (size_t)(colon - s) : n;
    }
    rest = s + hl;
    size_t rl = n - hl;
    if (hl == 0 || hl >= cap)
        return 0;
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && !strchr(".-_[]:%", ch))
            return 0;
        name[i] = (char)tolower(ch);
    }
    name[hl] = '\0';
    *port = def;
    if (rl == 0)
        return 1;
    if (rest[0] != ':' || rl < 2 || rl > 6)
        return 0;
    int p = 0;
    for (size_t i = 1; i < rl; i++) {
        if (rest[i] < '0' || rest[i] > '9')
            return 0;
        p = p * 10 + (rest[i] - '0');
    }
    if (p < 1 || p > 65535)
        return 0;
    *port = p;
    return 1;
}

static int add_host(px_server *srv, const char *spec, px_err *err)
{
    px_host_entry e;
    if (!split_host(spec, strlen(spec), e.name, sizeof e.name, &e.port, 0))
        return px_err_set(err, PX_EINVAL,
                          "allowed host '%.200s': expected NAME or NAME:PORT (IPv6 in brackets)",
                          spec);
    px_host_entry *h = px_realloc(srv->hosts, (srv->n_hosts + 1) * sizeof *h);
    if (!h)
        return px_err_set(err, PX_ENOMEM, "serve: out of memory");
    srv->hosts = h;
    srv->hosts[srv->n_hosts++] = e;
    return PX_OK;
}

int px_guard_init(px_server *srv, px_err *err)
{
    int st = px_manifest_random_hex(srv->csrf, 32, err);
    for (int i = 0; !st && srv->o.allowed_hosts && srv->o.allowed_hosts[i]; i++)
        st = add_host(srv, srv->o.allowed_hosts[i], err);
    srv->o.allowed_hosts = NULL; /* copied: the caller's list may go away */
    return st;
}

int px_guard_add_defaults(px_server *srv, px_err *err)
{
    char spec[300];
    const int v6 = strchr(srv->addr, ':') != NULL;
    snprintf(spec, sizeof spec, "%s%s%s:%d", v6 ? "[" : "", srv->addr, v6 ? "]" : "", srv->port);
    int st = add_host(srv, spec, err);
    snprintf(spec, sizeof spec, "localhost:%d", srv->port);
    st = st ? st : add_host(srv, spec, err);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", srv->port);
    return st ? st : add_host(srv, spec, err);
}

/* Whether "host[:port]" (n bytes) names this server; a missing port is def. */
static int host_allowed(const px_server *srv, const char *s, size_t n, int def)
{
    char name[256];
    int port;
    if (!split_host(s, n, name, sizeof name, &port, def))
        return 0;
    for (size_t i = 0; i < srv->n_hosts; i++)
        if (!strcmp(srv->hosts[i].name, name) && (!srv->hosts[i].port || srv->hosts[i].port == port))
            return 1;
    return 0;
}

static enum MHD_Result refuse(struct MHD_Connection *c, px_req *r, int code, const char *msg,
                              const char *what)
{
    return px_reply_error(c, r, code, "%s%.100s%s", msg, what ? what : "", what ? "'" : "");
}

static enum MHD_Result add_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    size_t *sum = cls;
    *sum += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

int px_guard_request(struct MHD_Connection *c, px_req *r, const char *url, enum MHD_Result *ret)
{
    size_t q = 0, h = 0;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_size, &q);
    if (strlen(url) + q > URL_MAX) {
        *ret = px_reply_error(c, r, 414, "URL longer than %d bytes", URL_MAX);
        return 1;
    }
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_size, &h);
    if (h > HEADERS_MAX) {
        *ret = px_reply_error(c, r, 431, "request headers larger than %d bytes", HEADERS_MAX);
        return 1;
    }
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!host || !host_allowed(r->srv, host, strlen(host), 80)) {
        *ret = refuse(c, r, 421,
                      "this server does not answer to the Host '", host ? host : "(none)");
        return 1;
    }
    return 0;
}

int px_guard_origin(struct MHD_Connection *c, px_req *r, enum MHD_Result *ret)
{
    const char *sfs = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (sfs && strcmp(sfs, "same-origin") && strcmp(sfs, "none")) {
        *ret = refuse(c, r, 403, "cross-origin write refused: Sec-Fetch-Site '", sfs);
        return 1;
    }
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN);
    if (!o)
        return 0;
    int def = 0;
    const char *hp = NULL;
    if (!strncmp(o, "http://", 7))
        hp = o + 7, def = 80;
    else if (!strncmp(o, "https://", 8))
        hp = o + 8, def = 443;
    if (!hp || !host_allowed(r->srv, hp, strlen(hp), def)) {
        *ret = refuse(c, r, 403, "cross-origin write refused: Origin '", o);
        return 1;
    }
    return 0;
}

int px_guard_csrf(struct MHD_Connection *c, px_req *r, enum MHD_Result *ret)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    const char *want = r->srv->csrf;
    size_t n = strlen(want), m = t ? strlen(t) : 0;
    unsigned diff = (unsigned)(n ^ m) | (t == NULL);
    for (size_t i = 0; i < n; i++) /* constant time: a guess learns nothing from timing */
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? t[i] : 0);
    if (diff) {
        *ret = px_reply_error(c, r, 403, "missing or wrong X-CSRF-Token header: take it from "
                                         "GET /v1/csrf (or send a bearer token)");
        return 1;
    }
    return 0;
}

enum MHD_Result px_guard_csrf_reply(struct MHD_Connection *c, px_req *r)
{
    return px_reply_json(c, r, 200, json_pack("{s:s,s:s}", "csrf_token", r->srv->csrf, "header",
                                              "X-CSRF-Token"));
}

/* ---- header deadline ------------------------------------------------------
 * libmicrohttpd's connection timeout is an idle timeout: every byte restarts
 * it, so a client sending a header byte every few seconds would keep its
 * connection for ever. Each connection is tracked from its start (or the end
 * of its previous request) until its headers are complete; a sweeper thread
 * shuts down the socket of one that is still without complete headers after
 * header_timeout_s, and libmicrohttpd then closes it as a client gone away.
 * The tracker holds a dup() of the socket, so the number it shuts down can
 * never be one the library has closed and the system handed out again. */
struct px_conn {
    int fd;    /* our duplicate of the connection's socket; -1 when dup failed */
    double t0; /* when the wait for headers began */
    int busy;  /* a request is in progress (headers complete) */
    int shut;
    struct px_conn *prev, *next;
};

void px_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe)
{
    px_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        px_conn *k = px_calloc(1, sizeof *k);
        if (!k)
            return; /* not tracked: only the idle timeout applies */
        k->fd = ci ? dup(ci->connect_fd) : -1;
        k->t0 = px_now_ms();
        pthread_mutex_lock(&srv->conn_mu);
        k->next = srv->conns;
        if (k->next)
            k->next->prev = k;
        srv->conns = k;
        pthread_mutex_unlock(&srv->conn_mu);
        *socket_context = k;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        px_conn *k = *socket_context;
        pthread_mutex_lock(&srv->conn_mu);
        if (k->prev)
            k->prev->next = k->next;
        else
            srv->conns = k->next;
        if (k->next)
            k->next->prev = k->prev;
        pthread_mutex_unlock(&srv->conn_mu);
        if (k->fd >= 0)
            close(k->fd);
        free(k);
        *socket_context = NULL;
    }
}

void px_guard_conn_busy(px_server *srv, struct MHD_Connection *c, int busy)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    px_conn *k = ci ? ci->socket_context : NULL;
    if (!k)
        return;
    pthread_mutex_lock(&srv->conn_mu);
    k->busy = busy;
    k->t0 = px_now_ms();
    pthread_mutex_unlock(&srv->conn_mu);
}

void *px_guard_sweeper(void *arg)
{
    px_server *srv = arg;
    pthread_mutex_lock(&srv->conn_mu);
    while (!srv->sweep_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->sweep_cv, &srv->conn_mu, &ts);
        const double late = px_now_ms() - 1000.0 * srv->o.header_timeout_s;
        for (px_conn *k = srv->conns; k; k = k->next)
            if (!k->busy && !k->shut && k->fd >= 0 && k->t0 < late) {
                shutdown(k->fd, SHUT_RDWR);
                k->shut = 1;
                atomic_fetch_add(&srv->metrics.header_timeouts, 1);
            }
    }
    pthread_mutex_unlock(&srv->conn_mu);
    return NULL;
}

/*
 * libFuzzer target for `pixpipe serve`'s request handling: every input is
 * sent as raw bytes over a TCP connection to an in-process server (with a
 * small pool and a 64 KiB body limit), then the answer is read until the
 * server closes. It exercises routing, id and query parsing, the body limits,
 * the verdict JSON and the pool routes behind libmicrohttpd's own parser.
 * The anonymize route runs without a detector (checks up to the queue).
 * The seeds say `Host: x`, which this server is told to allow, and the
 * server's CSRF token is put in as the second line of every input that has
 * none, so the verdict route is reached past the CSRF check.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "integration/test_serve_fixture.h"
#include "serve/px_serve.h"

static px_server *g_srv;
static int g_port;
static char g_csrf_line[128]; /* "X-CSRF-Token: HEX\r\n" */
static char g_pool[] = "/tmp/px-fuzz-serve-XXXXXX";

static void remove_pool(void)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pool);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_serve_http: could not remove %s\n", g_pool);
}

static void start_server(void)
{
    px_err err = {{0}};
    if (!mkdtemp(g_pool) || (atexit(remove_pool), fx_make_pool(g_pool, 2, 3, NULL, &err)) != PX_OK) {
        fprintf(stderr, "fuzz_serve_http: cannot make a pool: %s\n", err.msg);
        abort();
    }
    px_serve_opts o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = g_pool;
    o.max_body_bytes = 64 * 1024;
    o.read_timeout_s = 1;
    static const char *const hosts[] = {"x", NULL};
    o.allowed_hosts = hosts;
    if (px_server_create(&o, &g_srv, &err) != PX_OK) {
        fprintf(stderr, "fuzz_serve_http: %s\n", err.msg);
        abort();
    }
    g_port = px_server_port(g_srv);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/v1/csrf", g_port);
    fx_resp r;
    const char *tok = NULL;
    if (fx_http("GET", u, NULL, 0, NULL, &r) == 0 && r.code == 200)
        tok = strstr((const char *)r.body.data, "\"csrf_token\":\"");
    if (!tok || strlen(tok) < 14 + 64) {
        fprintf(stderr, "fuzz_serve_http: no CSRF token from %s\n", u);
        abort();
    }
    snprintf(g_csrf_line, sizeof g_csrf_line, "X-CSRF-Token: %.64s\r\n", tok + 14);
    fx_resp_free(&r);
}

/* The input with the CSRF header after its first line (a copy to free), or
 * NULL when it has no line end or already names the header. */
static uint8_t *with_csrf(const uint8_t *data, size_t size, size_t *out_size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl)
        return NULL;
    for (size_t i = 0; i + 12 <= size; i++)
        if (!memcmp(data + i, "X-CSRF-Token", 12))
            return NULL;
    size_t head = (size_t)(nl - data) + 1, extra = strlen(g_csrf_line);
    uint8_t *b = malloc(size + extra);
    if (!b)
        return NULL;
    memcpy(b, data, head);
    memcpy(b + head, g_csrf_line, extra);
    memcpy(b + head + extra, data + head, size - head);
    *out_size = size + extra;
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_srv)
        start_server();
    size_t n2 = 0;
    uint8_t *copy = with_csrf(data, size, &n2);
    if (copy) {
        data = copy;
        size = n2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        free(copy);
        return 0;
    }
    struct timeval tv = {0, 300000}; /* an incomplete request gets no answer */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        size_t off = 0;
        while (off < size) {
            ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        shutdown(fd, SHUT_WR);
        /* libmicrohttpd keeps a half-closed HTTP/1.1 connection open until its
         * timeout, so stop reading once the answer has stopped coming (10 ms
         * of silence after the first bytes) rather than waiting for a close */
        char buf[4096];
        while (recv(fd, buf, sizeof buf, 0) > 0) {
            struct timeval quiet = {0, 10000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &quiet, sizeof quiet);
        }
    }
    close(fd);
    free(copy);
    return 0;
}

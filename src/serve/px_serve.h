/*
 * px_serve: the HTTP side of pixpipe (`pixpipe serve`). One server object
 * wraps a libmicrohttpd daemon that answers
 *
 *   GET  /healthz                       liveness and what is configured
 *   GET  /metrics                       Prometheus text exposition
 *   POST /v1/anonymize                  image body -> anonymized image (or ?format=json report)
 *   GET  /v1/pool/stats                 counts per theme/type/status against the quota
 *   GET  /v1/pool/images                list with filters and paging (JSON)
 *   GET  /v1/pool/images/{id}           the image file, found by id (never by path)
 *   GET  /v1/csrf                       this server's CSRF token (for the review page)
 *   POST /v1/pool/images/{id}/verdict   approve / reject / skip, with reviewer name
 *   GET  /review/...                    the expert review page (HTML/CSS/JS built into the binary)
 *
 * How it works: libmicrohttpd runs a small pool of I/O threads that parse
 * requests and collect bodies (bounded by max_body_bytes). Cheap routes are
 * answered on the I/O thread. An anonymize request is handed to a bounded job
 * queue served by `workers` threads; its connection is suspended meanwhile so
 * the I/O threads stay free, and a watchdog answers 504 when a job overruns
 * process_timeout_ms (the worker finishes and throws the result away). A full
 * queue or more than max_inflight requests at once is answered 503 with
 * Retry-After. Every error is JSON: {"error": "..."}.
 *
 * Safe by default: only requests whose Host is one of allowed_hosts (default
 * the listen address, localhost and 127.0.0.1 with the bound port) are
 * answered (421 otherwise: DNS rebinding); a POST whose Origin is not one of
 * them or whose Sec-Fetch-Site is cross-site/same-site is refused (403), and
 * a verdict without a valid bearer token must carry the server's CSRF token
 * (GET /v1/csrf) in X-CSRF-Token, which a page on another origin can neither
 * read nor send. One client address may hold per_ip_connections connections,
 * and headers must arrive within header_timeout_s (slow clients).
 *
 * Thread-safety: create/start/stop/destroy from one thread. px_server_port
 * and px_server_metrics_text may be called from any thread while it runs.
 */
#ifndef PX_SERVE_H
#define PX_SERVE_H

#include "anon/px_anon.h"
#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_serve_opts {
    const char *listen_addr;    /* numeric IPv4 or IPv6 address; default "127.0.0.1" */
    int port;                   /* 0: any free port (px_server_port tells which); default 8080 */
    int io_threads;             /* libmicrohttpd polling threads (default 2) */
    int workers;                /* anonymize worker threads (default 2) */
    int queue_capacity;         /* anonymize jobs waiting before 503 (default 2 * workers) */
    int max_connections;        /* open connections (default 128) */
    int max_inflight;           /* requests being handled at once before 503 (default 64);
                                   /healthz and /metrics are never refused */
    size_t max_body_bytes;      /* request body limit, 413 above it (default 25 MiB) */
    int read_timeout_s;         /* idle connection timeout while reading (default 15) */
    int process_timeout_ms;     /* an anonymize job that takes longer is answered 504 (default 30000) */
    int retry_after_s;          /* Retry-After value sent with 503 (default 1) */
    const char *api_token;      /* bearer token for write endpoints; NULL or "" leaves them open.
                                   Copied by px_server_create. */
    px_face_detector *detector; /* borrowed, must outlive the server; NULL: /v1/anonymize is 503 */
    px_anon_opts anon;          /* defaults for anonymize requests (query parameters override) */
    const char *pool_dir;       /* pool folder holding manifest.sqlite (src/manifest/px_manifest.h);
                                   NULL: the pool routes answer 404 */
    int log_requests;           /* one px_log line per request at INFO (default 0: DEBUG) */
    const char *const *allowed_hosts; /* NULL-terminated Host names answered besides the
                                   defaults: "name" (any port) or "name:port", "[v6]:port";
                                   copied by px_server_create. NULL: defaults only */
    int per_ip_connections;     /* open connections from one client address (default 32) */
    int header_timeout_s;       /* a connection's request headers must be complete this long
                                   after it opened or its last request ended (default 15) */
    /* Campaigns (route_campaign.c, admin only): what the Campaigns page may
     * choose from, set by the operator; requests name these, never URLs.
     * Pointers are borrowed and must outlive the server. */
    const char *const *gen_servers; /* NULL-terminated "NAME=URL" render servers */
    const char *gen_backend;        /* their API: "a1111" (default) or "openai" */
    const char *const *gen_llms;    /* NULL-terminated "NAME=URL" OpenAI-compatible chat servers */
    const char *gen_llm_model;      /* model name sent to them ("" default) */
    const char *gen_llm_api_key;    /* their bearer key or NULL (never logged) */
    const char *gen_model;          /* the local engine's model; NULL: no local rendering */
    const char *gen_clip_vocab;     /* CLIP vocabulary for a single-file model, or NULL */
    int gen_threads;                /* local engine threads (<= 0: half the cores) */
    const char *gen_vocab_dir;      /* the offline writer's vocab/ (NULL: no offline writer) */
    const char *gen_style_path;     /* styles JSON (NULL: built-in styles) */
    int lease_seconds;          /* review claims last this long (default 600) */
    int secure_cookie;          /* the session cookie gets Secure (behind HTTPS) */
} px_serve_opts;

/* Defaults as documented above (detector and pool unset). */
px_serve_opts px_serve_opts_default(void);

typedef struct px_server px_server;

/* Validates opts, opens the pool manifest if one is given, starts the worker
 * and watchdog threads and the HTTP daemon (listening when it returns).
 * PX_EINVAL for a bad option (err names it), PX_EIO when the address cannot
 * be bound, PX_ENOTFOUND / PX_EIO for a missing or unreadable pool,
 * PX_ENOMEM. On failure *out is NULL and nothing is left running. The server
 * keeps no pointer into opts except detector. */
int px_server_create(const px_serve_opts *opts, px_server **out, px_err *err);

/* The TCP port actually bound (useful with port 0). */
int px_server_port(const px_server *srv);

/* Graceful stop: stops accepting, waits up to grace_ms for requests in
 * progress (including queued anonymize jobs) to finish, answers anything left
 * with 503, then stops the daemon and joins every thread. Idempotent. */
void px_server_stop(px_server *srv, int grace_ms);

/* Stops (with a 5 s grace) if still running and frees everything. NULL is a no-op. */
void px_server_destroy(px_server *srv);

/* Appends the Prometheus exposition of the server's metrics to *out (what
 * GET /metrics returns). PX_OK or PX_ENOMEM. Thread-safe. */
int px_server_metrics_text(px_server *srv, px_buf *out);

/* Parses "ADDR:PORT", "[V6ADDR]:PORT" or ":PORT"/"PORT" (address unchanged)
 * into addr (capacity addr_cap) and *port. PX_EINVAL with a message otherwise. */
int px_serve_parse_listen(const char *s, char *addr, size_t addr_cap, int *port, px_err *err);

/* ---- Built-in web assets (the review page), generated at build time ---- */
typedef struct px_serve_asset {
    const char *path;         /* "/review/index.html", ... */
    const char *content_type; /* "text/html; charset=utf-8", ... */
    const unsigned char *data;
    size_t len;
} px_serve_asset;
/* The asset at exactly `path`, or NULL. The data is static and read-only. */
const px_serve_asset *px_serve_asset_find(const char *path);

#ifdef __cplusplus
}
#endif
#endif

/*
 * px_http: a small HTTP client over libcurl for the Telegram bot and the
 * generation pipeline's calls to image and LLM servers.
 *
 * One px_http wraps one curl easy handle and so belongs to one thread at a
 * time (curl forbids sharing an easy handle across threads); make one per
 * thread. Reusing a handle keeps its connection alive between requests.
 *
 * Every request has a connect timeout, a total timeout, a cap on the response
 * body (a download over the cap is cut off and reported as PX_ELIMIT before
 * the whole thing is buffered) and an optional cancel flag, polled while the
 * transfer runs, so that a 50 s long poll ends promptly on shutdown.
 *
 * URLs that reach an error message have any "/bot<token>/" segment redacted:
 * the Telegram token is a password and must never be logged.
 *
 * curl_global_init must have been called once (in main) before px_http_create.
 */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <stdatomic.h>

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_http px_http;

typedef struct px_http_opts {
    long connect_timeout_ms; /* 0: 10 s */
    long timeout_ms;         /* whole request; 0: 60 s */
    size_t max_body;         /* response body cap in bytes; 0: 64 MiB */
    const atomic_int
        *cancel; /* when non-NULL and it becomes non-zero the request ends with PX_ECLOSED */
    const char *bearer; /* when non-empty: "Authorization: Bearer <bearer>" (never logged) */
} px_http_opts;
px_http_opts px_http_opts_default(void);

/* A response: HTTP status and the whole body (NUL-terminated for
 * convenience; body.len excludes the NUL). Free with px_http_response_free. */
typedef struct px_http_response {
    long status;
    px_buf body;
    char content_type[128];
} px_http_response;
void px_http_response_free(px_http_response *r); /* safe on a zeroed response */

/* One part of a multipart/form-data body: either a text field (data NULL,
 * value a NUL-terminated string) or a file (data/len with filename and
 * content_type). The request copies nothing: the memory must stay valid until
 * the call returns. */
typedef struct px_http_part {
    const char *name;
    const char *value;
    const uint8_t *data;
    size_t len;
    const char *filename;
    const char *content_type;
} px_http_part;

/* Creates a client (one curl easy handle). PX_OK or PX_ENOMEM. */
int px_http_create(px_http **out, px_err *err);
void px_http_destroy(px_http *h); /* NULL is a no-op */

/* The requests. Each returns PX_OK when an HTTP response arrived, whatever
 * its status (the caller reads res->status); PX_ETIMEOUT when a timeout hit;
 * PX_ELIMIT when the body passed opts->max_body; PX_ECLOSED when cancelled;
 * PX_ENET for any other transport failure (refused, DNS, TLS, reset);
 * PX_EINVAL for bad arguments. On error *res is zeroed and err names the
 * (redacted) URL. On PX_OK the caller frees res. Not thread-safe per handle. */
int px_http_get(px_http *h, const char *url, const px_http_opts *opts, px_http_response *res,
                px_err *err);
/* POST with Content-Type: application/json and the given body. */
int px_http_post_json(px_http *h, const char *url, const char *json, const px_http_opts *opts,
                      px_http_response *res, px_err *err);
/* POST a multipart/form-data body made of n parts. */
int px_http_post_multipart(px_http *h, const char *url, const px_http_part *parts, int n,
                           const px_http_opts *opts, px_http_response *res, px_err *err);

/* Copies url into out (capacity cap, always NUL-terminated) with the token in
 * any "/bot<token>/" segment replaced by "<redacted>". Thread-safe. */
void px_http_redact_url(const char *url, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif

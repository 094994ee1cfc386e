/*
 * Test fixtures for `pixpipe serve`: a small image pool made through the
 * generation pipeline's store API (so the schema is the real one), and
 * helpers that talk HTTP with libcurl. Shared by the serve unit test, the
 * serve integration test and the browser test's pool maker.
 */
#ifndef PX_TEST_SERVE_FIXTURE_H
#define PX_TEST_SERVE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "core/px_core.h"

/* Creates DIR (must not hold a pool yet) with manifest.sqlite, quotas for
 * two themes x two types (quota `quota` each), and per_slot PNG images per
 * theme/type (distinct synthetic pictures, 96x64); every 4th image is
 * "flagged" by the automatic checks. Returns PX_OK; *ids (may be NULL)
 * receives the first image id. */
int fx_make_pool(const char *dir, int per_slot, int quota, int64_t *first_id, px_err *err);

typedef struct fx_resp {
    long code;
    px_buf body;     /* NUL-terminated (not counted in len) */
    char ctype[128]; /* Content-Type */
    char retry_after[32];
    char faces[16];  /* X-Faces-Found */
    char referrer_policy[32];
    char frame_options[16];   /* X-Frame-Options */
    char nosniff[16];         /* X-Content-Type-Options */
} fx_resp;

/* One request with a fresh easy handle. method "GET"/"POST"/...; body may be
 * NULL; headers is a NULL-terminated list or NULL. Returns 0 when a response
 * came back (any status), -1 on a transport error. */
int fx_http(const char *method, const char *url, const void *body, size_t len,
            const char *const *headers, fx_resp *out);
void fx_resp_free(fx_resp *r);

/* Runs the SQL query on db and returns the first column of the first row as
 * an integer (-1 when no row / error): for checking what the manifest holds. */
long long fx_sql_int(const char *db, const char *sql);

#endif

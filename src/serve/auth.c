/*
 * Who is asking: the role of a request (none, reviewer, admin) from its
 * credentials. Other route files (the review queue, the Campaigns pages) ask
 * px_auth_role or px_auth_require and never look at headers themselves.
 *
 * Rules (docs/review.md):
 *  - `Authorization: Bearer T` where T is the server's --token
 *    (PIXPIPE_API_TOKEN): admin, no account (scripts as before accounts).
 *  - No --token: a local, anonymous admin; writes must still carry the
 *    CSRF token (guard.c), as they did before accounts existed.
 *  - --token set and not presented: no role (401).
 */
#include "serve_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Constant-time comparison, so timing does not tell how much of a guess was
 * right. */
static int same_secret(const char *want, const char *got)
{
    size_t n = strlen(want), m = strlen(got);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? got[i] : 0);
    return diff == 0;
}

/* The bearer credential of the request, or NULL. */
static const char *bearer_of(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7))
        return NULL;
    return h + 7;
}

px_role px_auth_role(struct MHD_Connection *c, px_req *r, int64_t *account_id)
{
    px_server *srv = r->srv;
    if (account_id)
        *account_id = 0;
    const char *b = bearer_of(c);
    if (srv->token)
        return b && same_secret(srv->token, b) ? PX_ROLE_ADMIN : PX_ROLE_NONE;
    return PX_ROLE_ADMIN; /* local, anonymous: writes are CSRF-checked by the caller */
}

int px_auth_uses_csrf(struct MHD_Connection *c, px_req *r)
{
    (void)c;
    return r->srv->token == NULL;
}

enum MHD_Result px_auth_unauthorized(struct MHD_Connection *c, px_req *r, const char *msg)
{
    json_t *v = json_pack("{s:s}", "error", msg);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text)
        return px_reply_error(c, r, 401, "%s", msg);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(strlen(text), text, free);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return px_reply_response(c, r, 401, resp, "application/json");
}

int px_auth_require(struct MHD_Connection *c, px_req *r, px_role need, int64_t *account_id,
                    enum MHD_Result *ret)
{
    px_role have = px_auth_role(c, r, account_id);
    if (have == PX_ROLE_NONE) {
        *ret = px_auth_unauthorized(c, r, "missing or wrong bearer token");
        return 1;
    }
    if (have < need) {
        *ret = px_reply_error(c, r, 403, "this needs the admin role");
        return 1;
    }
    return 0;
}

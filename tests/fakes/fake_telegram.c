/*
 * fake_telegram implementation: libmicrohttpd with a thread per connection
 * (so a long poll can block on a condition variable without stalling other
 * requests), one mutex over all state, Jansson for the answers.
 *
 * Requests are normalised into a list of named parameters whatever the body
 * (query string, JSON object, urlencoded or multipart form), as the real
 * server accepts all of them. Checks the real server makes and a buggy bot
 * would trip are made here too: unknown token (401), unknown chat or a reply
 * to a message of another chat (400), an upload that is not an image for
 * sendPhoto (400), getFile on a file over 20 MB (400), the upload limits: a
 * photo over 10 MB (400 IMAGE_PROCESS_FAILED) or with width + height over
 * 10000 (400 PHOTO_INVALID_DIMENSIONS), a document over 50 MB (413); the
 * limits can be lowered so a test need not build 50 MB images.
 */
#include "fake_telegram.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_UPLOAD ((size_t)60 << 20)
#define FAKE_PUSHERS 8 /* webhook delivery threads (max_connections above this: this many) */

typedef struct {
    char key[64];
    char *val; /* NUL-terminated copy, also for files */
    size_t len;
    char filename[128], mime[64];
    int is_file;
} param;

typedef struct {
    param *p;
    int n, cap;
    char *raw; /* JSON or other body */
    size_t raw_len, raw_cap;
    struct MHD_PostProcessor *pp;
    int too_big;
} req_ctx;

typedef struct {
    int64_t update_id, chat_id, message_id;
    char *json; /* the Update object */
    int confirmed;
    int pushing;        /* a webhook delivery of it is under way */
    int tries;          /* failed webhook deliveries */
    double next_try_ms; /* no delivery before (monotonic ms) */
} update_rec;

typedef struct {
    char file_id[64], path[128];
    uint8_t *data;
    size_t len;
} file_rec;

typedef struct {
    char method[32];
    int count, code, retry_after, delay_ms;
} rule;

typedef struct {
    char name[32];
    int n;
} counter;

struct fake_tg {
    struct MHD_Daemon *d;
    char token[128];
    char url[64];
    pthread_mutex_t mu;
    pthread_cond_t cv; /* new update, new send, or stop */
    int stopping;
    update_rec *ups;
    int nups, capups;
    int64_t next_update, next_message, next_file;
    int64_t confirmed;
    file_rec *files;
    int nfiles, capfiles;
    fake_tg_sent *sent;
    int nsent, capsent;
    rule rules[16];
    int nrules;
    counter calls[32];
    int ncalls;
    int64_t chats[4096]; /* chats that wrote to the bot */
    int nchats;
    char local_dir[256];
    size_t photo_max, doc_max; /* upload limits, bytes */
    int photo_sides;           /* a photo's width + height at most */
    /* the webhook (setWebhook), and where its deliveries go */
    char hook_url[512];    /* empty: none set, getUpdates works */
    char hook_secret[257]; /* sent as X-Telegram-Bot-Api-Secret-Token (empty: no header) */
    int hook_max_conn;     /* parallel deliveries */
    char hook_route[64];   /* "IPV4:PORT" the "reverse proxy" forwards to (empty: unreachable) */
    int hook_busy;         /* deliveries under way */
    int64_t hook_error_date;
    char hook_error[256];
    int hook_ok, hook_failed; /* deliveries answered 2xx / otherwise */
    pthread_t pushers[FAKE_PUSHERS];
    int npushers;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ---- params ---- */

static param *param_add(req_ctx *c, const char *key)
{
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 8;
        param *np = realloc(c->p, (size_t)nc * sizeof *np);
        if (!np)
            return NULL;
        c->p = np;
        c->cap = nc;
    }
    param *p = &c->p[c->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->val = calloc(1, 1);
    return p->val ? p : NULL;
}

static int param_append(param *p, const char *data, size_t n)
{
    char *v = realloc(p->val, p->len + n + 1);
    if (!v)
        return -1;
    memcpy(v + p->len, data, n);
    p->len += n;
    v[p->len] = '\0';
    p->val = v;
    return 0;
}

static const param *param_get(const req_ctx *c, const char *key)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->p[i].key, key))
            return &c->p[i];
    return NULL;
}

static enum MHD_Result on_post(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    (void)kind, (void)transfer_encoding;
    req_ctx *c = cls;
    param *p = (c->n > 0 && !strcmp(c->p[c->n - 1].key, key) && off > 0) ? &c->p[c->n - 1] : NULL;
    if (!p) {
        p = param_add(c, key);
        if (!p)
            return MHD_NO;
        if (filename) {
            p->is_file = 1;
            snprintf(p->filename, sizeof p->filename, "%s", filename);
            snprintf(p->mime, sizeof p->mime, "%s", content_type ? content_type : "");
        }
    }
    if (p->len + size > MAX_UPLOAD) {
        c->too_big = 1;
        return MHD_NO;
    }
    return param_append(p, data, size) ? MHD_NO : MHD_YES;
}

static enum MHD_Result on_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    param *p = param_add(cls, key);
    if (p && value)
        param_append(p, value, strlen(value));
    return MHD_YES;
}

static void ctx_free(req_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        free(c->p[i].val);
    free(c->p);
    free(c->raw);
    if (c->pp)
        MHD_destroy_post_processor(c->pp);
    free(c);
}

/* JSON body: each top-level field becomes a parameter (strings as is, other
 * values in their JSON text), the way the real server reads them. */
static int params_from_json(req_ctx *c)
{
    json_t *j = json_loadb(c->raw ? c->raw : "", c->raw_len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        param *p = param_add(c, k);
        if (!p)
            break;
        if (json_is_string(v)) {
            param_append(p, json_string_value(v), json_string_length(v));
        } else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s)
                param_append(p, s, strlen(s));
            free(s);
        }
    }
    json_decref(j);
    return 0;
}

/* ---- answers ---- */

static enum MHD_Result send_json(struct MHD_Connection *conn, int code, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, int code, const char *desc,
                                  int retry_after)
{
    json_t *j = json_pack("{s:b,s:i,s:s}", "ok", 0, "error_code", code, "description", desc);
    if (retry_after > 0)
        json_object_set_new(j, "parameters", json_pack("{s:i}", "retry_after", retry_after));
    return send_json(conn, code, j);
}

static enum MHD_Result send_ok(struct MHD_Connection *conn, json_t *result)
{
    return send_json(conn, 200, json_pack("{s:b,s:o}", "ok", 1, "result", result));
}

/* ---- state helpers (mu held) ---- */

static void count_call(fake_tg *f, const char *method)
{
    for (int i = 0; i < f->ncalls; i++)
        if (!strcmp(f->calls[i].name, method)) {
            f->calls[i].n++;
            return;
        }
    if (f->ncalls < 32) {
        snprintf(f->calls[f->ncalls].name, sizeof f->calls[0].name, "%s", method);
        f->calls[f->ncalls++].n = 1;
    }
}

static int chat_known(const fake_tg *f, int64_t chat)
{
    for (int i = 0; i < f->nchats; i++)
        if (f->chats[i] == chat)
            return 1;
    return 0;
}

static const update_rec *message_rec(const fake_tg *f, int64_t message_id)
{
    for (int i = 0; i < f->nups; i++)
        if (f->ups[i].message_id == message_id)
            return &f->ups[i];
    return NULL;
}

static const file_rec *file_by(const fake_tg *f, const char *id, const char *path)
{
    for (int i = 0; i < f->nfiles; i++)
        if ((id && !strcmp(f->files[i].file_id, id)) || (path && !strcmp(f->files[i].path, path)))
            return &f->files[i];
    return NULL;
}

/* Width and height from a JPEG's SOF or a PNG's IHDR; 0 when not found. */
static int image_dims(const char *d, size_t n, int *w, int *h)
{
    const unsigned char *u = (const unsigned char *)d;
    *w = *h = 0;
    if (n >= 24 && !memcmp(u, "\x89PNG\r\n\x1a\n", 8)) {
        *w = (u[16] << 24) | (u[17] << 16) | (u[18] << 8) | u[19];
        *h = (u[20] << 24) | (u[21] << 16) | (u[22] << 8) | u[23];
        return 1;
    }
    size_t i = 2;
    while (n >= 4 && u[0] == 0xFF && u[1] == 0xD8 && i + 9 < n) {
        if (u[i] != 0xFF) {
            i++;
            continue;
        }
        unsigned m = u[i + 1];
        size_t seg = ((size_t)u[i + 2] << 8) | u[i + 3];
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            *h = (u[i + 5] << 8) | u[i + 6];
            *w = (u[i + 7] << 8) | u[i + 8];
            return 1;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            i += 2;
            continue;
        }
        i += 2 + seg;
    }
    return 0;
}

static int looks_like_image(const char *d, size_t n)
{
    const unsigned char *u = (const unsigned char *)d;
    if (n >= 3 && u[0] == 0xFF && u[1] == 0xD8 && u[2] == 0xFF)
        return 1;
    if (n >= 8 && !memcmp(u, "\x89PNG\r\n\x1a\n", 8))
        return 1;
    if (n >= 12 && !memcmp(u, "RIFF", 4) && !memcmp(u + 8, "WEBP", 4))
        return 1;
    return 0;
}

/* ---- methods ---- */

static int64_t param_i64(const req_ctx *c, const char *key, int64_t def)
{
    const param *p = param_get(c, key);
    if (!p || !p->len)
        return def;
    char *end;
    long long v = strtoll(p->val, &end, 10);
    return *end ? def : (int64_t)v;
}

static const char k_hook_conflict[] =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first";

static enum MHD_Result do_get_updates(fake_tg *f, struct MHD_Connection *conn, const req_ctx *c)
{
    int64_t offset = param_i64(c, "offset", 0);
    int64_t timeout = param_i64(c, "timeout", 0);
    int64_t limit = param_i64(c, "limit", 100);
    if (timeout < 0 || timeout > 60 || limit < 1 || limit > 100)
        return send_error(conn, 400, "Bad Request: wrong timeout or limit", 0);
    struct timespec dl;
    deadline(&dl, (int)timeout * 1000);
    pthread_mutex_lock(&f->mu);
    if (f->hook_url[0]) {
        pthread_mutex_unlock(&f->mu);
        return send_error(conn, 409, k_hook_conflict, 0);
    }
    if (offset > 0) {
        for (int i = 0; i < f->nups; i++)
            if (f->ups[i].update_id < offset)
                f->ups[i].confirmed = 1;
        if (offset > f->confirmed)
            f->confirmed = offset;
    }
    json_t *arr = json_array();
    for (;;) {
        for (int i = 0; i < f->nups && (int64_t)json_array_size(arr) < limit; i++)
            if (!f->ups[i].confirmed && f->ups[i].update_id >= offset)
                json_array_append_new(arr, json_loads(f->ups[i].json, 0, NULL));
        if (json_array_size(arr) > 0 || f->stopping || timeout == 0 || f->hook_url[0])
            break;
        if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT)
            timeout = 0; /* one last look, then answer empty */
    }
    int hooked = f->hook_url[0] != '\0';
    pthread_mutex_unlock(&f->mu);
    if (hooked) { /* a webhook was set during the wait */
        json_decref(arr);
        return send_error(conn, 409, k_hook_conflict, 0);
    }
    return send_ok(conn, arr);
}

static enum MHD_Result do_get_file(fake_tg *f, struct MHD_Connection *conn, const req_ctx *c)
{
    const param *id = param_get(c, "file_id");
    pthread_mutex_lock(&f->mu);
    const file_rec *fr = id ? file_by(f, id->val, NULL) : NULL;
    if (!fr) {
        pthread_mutex_unlock(&f->mu);
        return send_error(conn, 400, "Bad Request: invalid file_id", 0);
    }
    if (fr->len > ((size_t)20 << 20)) {
        pthread_mutex_unlock(&f->mu);
        return send_error(conn, 400, "Bad Request: file is too big", 0);
    }
    char path[512];
    if (f->local_dir[0]) {
        snprintf(path, sizeof path, "%s/%s", f->local_dir, fr->file_id);
        FILE *fp = fopen(path, "wb");
        if (fp) {
            fwrite(fr->data, 1, fr->len, fp);
            fclose(fp);
        }
    } else {
        snprintf(path, sizeof path, "%s", fr->path);
    }
    json_t *r = json_pack("{s:s,s:s,s:I,s:s}", "file_id", fr->file_id, "file_unique_id",
                          fr->file_id, "file_size", (json_int_t)fr->len, "file_path", path);
    pthread_mutex_unlock(&f->mu);
    return send_ok(conn, r);
}

static int64_t reply_target(const req_ctx *c, int *allow_without)
{
    *allow_without = 0;
    int64_t r = param_i64(c, "reply_to_message_id", 0);
    const param *rp = param_get(c, "reply_parameters");
    if (rp) {
        json_t *j = json_loads(rp->val, 0, NULL);
        json_t *m = json_object_get(j, "message_id");
        if (json_is_integer(m))
            r = (int64_t)json_integer_value(m);
        *allow_without = json_is_true(json_object_get(j, "allow_sending_without_reply"));
        json_decref(j);
    }
    if (param_get(c, "allow_sending_without_reply"))
        *allow_without = 1;
    return r;
}

static enum MHD_Result do_send(fake_tg *f, struct MHD_Connection *conn, const req_ctx *c,
                               const char *method)
{
    int64_t chat = param_i64(c, "chat_id", 0);
    int allow;
    int64_t reply_to = reply_target(c, &allow);
    const char *field = !strcmp(method, "sendPhoto")      ? "photo"
                        : !strcmp(method, "sendDocument") ? "document"
                                                          : NULL;
    const param *text = param_get(c, field ? "caption" : "text");
    const param *file = field ? param_get(c, field) : NULL;
    if (!field && (!text || !text->len))
        return send_error(conn, 400, "Bad Request: message text is empty", 0);
    if (text && text->len > (field ? 1024u : 4096u))
        return send_error(conn, 400, "Bad Request: text is too long", 0);
    if (field && (!file || !file->is_file || !file->len))
        return send_error(conn, 400, "Bad Request: there is no file in the request", 0);
    pthread_mutex_lock(&f->mu);
    size_t photo_max = f->photo_max, doc_max = f->doc_max;
    int sides = f->photo_sides;
    pthread_mutex_unlock(&f->mu);
    if (field && !strcmp(field, "photo") &&
        (file->len > photo_max || !looks_like_image(file->val, file->len)))
        return send_error(conn, 400, "Bad Request: IMAGE_PROCESS_FAILED", 0);
    int w, h;
    if (field && !strcmp(field, "photo") && image_dims(file->val, file->len, &w, &h) &&
        w + h > sides)
        return send_error(conn, 400, "Bad Request: PHOTO_INVALID_DIMENSIONS", 0);
    if (field && !strcmp(field, "document") && file->len > doc_max)
        return send_error(conn, 413, "Request Entity Too Large", 0);
    pthread_mutex_lock(&f->mu);
    if (!chat_known(f, chat)) {
        pthread_mutex_unlock(&f->mu);
        return send_error(conn, 400, "Bad Request: chat not found", 0);
    }
    if (reply_to) {
        const update_rec *u = message_rec(f, reply_to);
        if ((!u || u->chat_id != chat) && !allow) {
            pthread_mutex_unlock(&f->mu);
            return send_error(conn, 400, "Bad Request: message to be replied not found", 0);
        }
    }
    if (f->nsent == f->capsent) {
        int nc = f->capsent ? f->capsent * 2 : 64;
        fake_tg_sent *ns = realloc(f->sent, (size_t)nc * sizeof *ns);
        if (!ns) {
            pthread_mutex_unlock(&f->mu);
            return send_error(conn, 500, "Internal Server Error", 0);
        }
        f->sent = ns;
        f->capsent = nc;
    }
    fake_tg_sent *s = &f->sent[f->nsent++];
    memset(s, 0, sizeof *s);
    snprintf(s->method, sizeof s->method, "%s", method);
    s->chat_id = chat;
    s->reply_to = reply_to;
    s->message_id = f->next_message++;
    if (text)
        snprintf(s->text, sizeof s->text, "%s", text->val);
    if (file) {
        s->data = malloc(file->len);
        if (s->data)
            memcpy(s->data, file->val, file->len);
        s->len = s->data ? file->len : 0;
        snprintf(s->filename, sizeof s->filename, "%s", file->filename);
        snprintf(s->mime, sizeof s->mime, "%s", file->mime);
    }
    json_t *r =
        json_pack("{s:I,s:I,s:{s:I,s:s}}", "message_id", (json_int_t)s->message_id, "date",
                  (json_int_t)time(NULL), "chat", "id", (json_int_t)chat, "type", "private");
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return send_ok(conn, r);
}

/* ---- the webhook: setWebhook and deliveries ---- */

static enum MHD_Result send_ok_desc(struct MHD_Connection *conn, json_t *result, const char *desc)
{
    return send_json(conn, 200,
                     json_pack("{s:b,s:o,s:s}", "ok", 1, "result", result, "description", desc));
}

/* Removes the webhook (mu held); drop: forget undelivered updates too. */
static void hook_clear(fake_tg *f, int drop)
{
    f->hook_url[0] = f->hook_secret[0] = '\0';
    f->hook_error_date = 0;
    f->hook_error[0] = '\0';
    for (int i = 0; drop && i < f->nups; i++)
        f->ups[i].confirmed = 1;
    pthread_cond_broadcast(&f->cv);
}

/* Splits "https://host[:port][/path]" into host and path; *port 443 by
 * default. Returns 0, or -1 when it is not an https URL. */
static int hook_split(const char *url, char *host, size_t hcap, int *port, char *path, size_t pcap)
{
    if (strncmp(url, "https://", 8))
        return -1;
    const char *h = url + 8, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= hcap)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = 443;
    char *colon = strchr(host, ':');
    if (colon) {
        *colon = '\0';
        *port = atoi(colon + 1);
    }
    snprintf(path, pcap, "%s", slash ? slash : "/");
    return 0;
}

static enum MHD_Result do_set_webhook(fake_tg *f, struct MHD_Connection *conn, const req_ctx *c)
{
    const param *url = param_get(c, "url");
    const param *secret = param_get(c, "secret_token");
    int64_t maxc = param_i64(c, "max_connections", 40);
    if (!url)
        return send_error(conn, 400, "Bad Request: parameter \"url\" is required", 0);
    if (!url->len) { /* an empty URL removes the webhook */
        pthread_mutex_lock(&f->mu);
        hook_clear(f, 0);
        pthread_mutex_unlock(&f->mu);
        return send_ok_desc(conn, json_true(), "Webhook was deleted");
    }
    char host[256], path[512];
    int port;
    if (hook_split(url->val, host, sizeof host, &port, path, sizeof path) || url->len >= 512)
        return send_error(conn, 400,
                          "Bad Request: bad webhook: An HTTPS URL must be provided for webhook", 0);
    if (port != 443 && port != 80 && port != 88 && port != 8443)
        return send_error(
            conn, 400,
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443", 0);
    if (secret &&
        (secret->len < 1 || secret->len > 256 ||
         strspn(secret->val, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") !=
             secret->len))
        return send_error(conn, 400, "Bad Request: secret token contains unallowed characters", 0);
    if (maxc < 1 || maxc > 100)
        return send_error(conn, 400, "Bad Request: bad max_connections", 0);
    const param *au = param_get(c, "allowed_updates");
    json_t *aj = au ? json_loads(au->val, 0, NULL) : NULL;
    int au_ok = !au || json_is_array(aj);
    json_decref(aj);
    if (!au_ok)
        return send_error(conn, 400, "Bad Request: can't parse allowed_updates JSON array", 0);
    pthread_mutex_lock(&f->mu);
    snprintf(f->hook_url, sizeof f->hook_url, "%s", url->val);
    snprintf(f->hook_secret, sizeof f->hook_secret, "%s", secret ? secret->val : "");
    f->hook_max_conn = (int)maxc;
    pthread_cond_broadcast(&f->cv); /* long polls end with 409, pushers start */
    pthread_mutex_unlock(&f->mu);
    return send_ok_desc(conn, json_true(), "Webhook was set");
}

static enum MHD_Result do_get_webhook_info(fake_tg *f, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&f->mu);
    int pending = 0;
    for (int i = 0; i < f->nups; i++)
        pending += !f->ups[i].confirmed;
    json_t *r = json_pack("{s:s,s:b,s:i}", "url", f->hook_url, "has_custom_certificate", 0,
                          "pending_update_count", pending);
    if (f->hook_url[0]) {
        json_object_set_new(r, "max_connections", json_integer(f->hook_max_conn));
        json_object_set_new(r, "allowed_updates", json_pack("[s]", "message"));
    }
    if (f->hook_error_date) {
        json_object_set_new(r, "last_error_date", json_integer((json_int_t)f->hook_error_date));
        json_object_set_new(r, "last_error_message", json_string(f->hook_error));
    }
    pthread_mutex_unlock(&f->mu);
    return send_ok(conn, r);
}

/* POSTs body to route ("IPV4:PORT") as Telegram would to url's host and
 * path, through a TLS-terminating proxy. Returns the HTTP status, or 0
 * with why set when there was no HTTP answer. */
static int hook_post(const char *route, const char *host, const char *path, const char *secret,
                     const char *body, char *why, size_t cap)
{
    if (!route[0]) { /* the proxy forwards nowhere */
        snprintf(why, cap, "Connection refused");
        return 0;
    }
    char ip[64];
    snprintf(ip, sizeof ip, "%s", route);
    char *colon = strrchr(ip, ':');
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (!colon || (*colon = '\0', inet_pton(AF_INET, ip, &sa.sin_addr) != 1)) {
        snprintf(why, cap, "Failed to resolve host: Name or service not known");
        return 0;
    }
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {30, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        snprintf(why, cap, "Connection refused");
        return 0;
    }
    size_t bl = strlen(body), cap_req = bl + strlen(host) + strlen(path) + strlen(secret) + 512;
    char *req = malloc(cap_req);
    int n = req ? snprintf(req, cap_req,
                           "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n%s",
                           path, host, bl, secret[0] ? "X-Telegram-Bot-Api-Secret-Token: " : "",
                           secret, secret[0] ? "\r\n" : "", body)
                : -1;
    int code = 0;
    for (ssize_t off = 0, w = 0; n > 0 && off < n; off += w)
        if ((w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL)) <= 0)
            n = -1;
    free(req);
    char head[512];
    size_t got = 0;
    ssize_t r;
    while (n > 0 && got + 1 < sizeof head && (r = read(fd, head + got, sizeof head - 1 - got)) > 0)
        got += (size_t)r;
    head[got] = '\0';
    char sink[4096];
    while (n > 0 && got + 1 >= sizeof head && read(fd, sink, sizeof sink) > 0) {
    }
    close(fd);
    if (!strncmp(head, "HTTP/1.", 7) && strlen(head) >= 12)
        code = atoi(head + 9);
    if (code == 0)
        snprintf(why, cap, "Connection reset by peer");
    return code;
}

/* The next update a pusher may deliver (mu held): not confirmed, not being
 * delivered, due, and the oldest undelivered of its chat, so one chat's
 * updates arrive in order. -1 when none. */
static int hook_next(const fake_tg *f, double now)
{
    for (int i = 0; i < f->nups; i++) {
        const update_rec *u = &f->ups[i];
        if (u->confirmed || u->pushing || u->next_try_ms > now)
            continue;
        int blocked = 0;
        for (int j = 0; j < i && !blocked; j++)
            blocked = !f->ups[j].confirmed && f->ups[j].chat_id == u->chat_id;
        if (!blocked)
            return i;
    }
    return -1;
}

typedef struct {
    fake_tg *f;
    int index;
} pusher_arg;

/* A delivery thread: like Telegram, it POSTs each update to the webhook
 * (at most max_connections at once), takes any 2xx as delivered and tries
 * anything else again later, with a growing pause (100 ms doubling, at
 * most 2 s: much shorter than Telegram's, so tests are quick). */
static void *pusher_main(void *arg)
{
    pusher_arg *pa = arg;
    fake_tg *f = pa->f;
    pthread_mutex_lock(&f->mu);
    while (!f->stopping) {
        int i = f->hook_url[0] && pa->index < f->hook_max_conn ? hook_next(f, now_ms()) : -1;
        if (i < 0) {
            struct timespec dl;
            deadline(&dl, 50);
            pthread_cond_timedwait(&f->cv, &f->mu, &dl);
            continue;
        }
        update_rec *u = &f->ups[i];
        u->pushing = 1;
        int64_t id = u->update_id;
        char *body = strdup(u->json), route[64], host[256], path[512], secret[257], why[128];
        int port;
        snprintf(route, sizeof route, "%s", f->hook_route);
        snprintf(secret, sizeof secret, "%s", f->hook_secret);
        hook_split(f->hook_url, host, sizeof host, &port, path, sizeof path);
        f->hook_busy++;
        pthread_mutex_unlock(&f->mu);
        int code = body ? hook_post(route, host, path, secret, body, why, sizeof why) : 0;
        free(body);
        pthread_mutex_lock(&f->mu);
        f->hook_busy--;
        for (int k = 0; k < f->nups; k++) { /* ups may have moved (realloc) */
            u = &f->ups[k];
            if (u->update_id != id)
                continue;
            u->pushing = 0;
            if (code >= 200 && code < 300) {
                u->confirmed = 1;
                if (id + 1 > f->confirmed)
                    f->confirmed = id + 1;
                f->hook_ok++;
            } else {
                u->tries++;
                u->next_try_ms = now_ms() + (u->tries < 5 ? 100 << u->tries : 2000);
                f->hook_failed++;
                f->hook_error_date = (int64_t)time(NULL);
                if (code)
                    snprintf(f->hook_error, sizeof f->hook_error,
                             "Wrong response from the webhook: %d", code);
                else
                    snprintf(f->hook_error, sizeof f->hook_error, "%s", why);
            }
        }
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
    free(pa);
    return NULL;
}

static enum MHD_Result do_method(fake_tg *f, struct MHD_Connection *conn, const req_ctx *c,
                                 const char *method)
{
    /* injected failures and slowness first, as a real outage would be */
    int code = 0, retry_after = 0, delay = 0;
    pthread_mutex_lock(&f->mu);
    count_call(f, method);
    for (int i = 0; i < f->nrules; i++) {
        rule *r = &f->rules[i];
        if (r->count > 0 && (!strcmp(r->method, "*") || !strcmp(r->method, method))) {
            r->count--;
            code = r->code;
            retry_after = r->retry_after;
            delay = r->delay_ms;
            break;
        }
    }
    if (delay > 0) {
        struct timespec dl;
        deadline(&dl, delay);
        while (!f->stopping && pthread_cond_timedwait(&f->cv, &f->mu, &dl) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (code == 429)
        return send_error(conn, 429, "Too Many Requests: retry later", retry_after);
    if (code == 409)
        return send_error(conn, 409,
                          "Conflict: terminated by other getUpdates request; make sure that only "
                          "one bot instance is running",
                          0);
    if (code >= 500)
        return send_error(conn, code, "Internal Server Error", 0);
    if (code >= 400)
        return send_error(conn, code, "Bad Request: injected", 0);

    if (!strcmp(method, "getUpdates"))
        return do_get_updates(f, conn, c);
    if (!strcmp(method, "getFile"))
        return do_get_file(f, conn, c);
    if (!strcmp(method, "sendMessage") || !strcmp(method, "sendPhoto") ||
        !strcmp(method, "sendDocument"))
        return do_send(f, conn, c, method);
    if (!strcmp(method, "sendChatAction")) {
        pthread_mutex_lock(&f->mu);
        int known = chat_known(f, param_i64(c, "chat_id", 0));
        pthread_mutex_unlock(&f->mu);
        if (!known)
            return send_error(conn, 400, "Bad Request: chat not found", 0);
        if (!param_get(c, "action"))
            return send_error(conn, 400, "Bad Request: wrong parameter action in request", 0);
        return send_ok(conn, json_true());
    }
    if (!strcmp(method, "setMyCommands")) {
        const param *p = param_get(c, "commands");
        json_t *j = p ? json_loads(p->val, 0, NULL) : NULL;
        int good = json_is_array(j);
        json_decref(j);
        return good ? send_ok(conn, json_true())
                    : send_error(conn, 400, "Bad Request: can't parse commands JSON object", 0);
    }
    if (!strcmp(method, "setWebhook"))
        return do_set_webhook(f, conn, c);
    if (!strcmp(method, "deleteWebhook")) {
        pthread_mutex_lock(&f->mu);
        hook_clear(f, param_get(c, "drop_pending_updates") &&
                          !strcmp(param_get(c, "drop_pending_updates")->val, "true"));
        pthread_mutex_unlock(&f->mu);
        return send_ok_desc(conn, json_true(), "Webhook was deleted");
    }
    if (!strcmp(method, "getWebhookInfo"))
        return do_get_webhook_info(f, conn);
    if (!strcmp(method, "getMe"))
        return send_ok(conn, json_pack("{s:I,s:b,s:s,s:s}", "id", (json_int_t)42, "is_bot", 1,
                                       "first_name", "Fake", "username", "fake_bot"));
    return send_error(conn, 404, "Not Found", 0);
}

static enum MHD_Result do_file(fake_tg *f, struct MHD_Connection *conn, const char *path)
{
    pthread_mutex_lock(&f->mu);
    count_call(f, "file");
    const file_rec *fr = file_by(f, NULL, path);
    struct MHD_Response *r = NULL;
    if (fr)
        r = MHD_create_response_from_buffer(fr->len, fr->data, MHD_RESPMEM_MUST_COPY);
    pthread_mutex_unlock(&f->mu);
    if (!r)
        return send_error(conn, 404, "Not Found", 0);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    fake_tg *f = cls;
    req_ctx *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        *con_cls = c;
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        if (!strcmp(method, "POST") && ct &&
            (!strncmp(ct, "multipart/form-data", 19) ||
             !strncmp(ct, "application/x-www-form-urlencoded", 33)))
            c->pp = MHD_create_post_processor(conn, 65536, on_post, c);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (c->pp) {
            MHD_post_process(c->pp, upload_data, *upload_data_size);
        } else if (c->raw_len + *upload_data_size > MAX_UPLOAD) {
            c->too_big = 1;
        } else {
            if (c->raw_len + *upload_data_size + 1 > c->raw_cap) {
                size_t nc = (c->raw_len + *upload_data_size + 1) * 2;
                char *nr = realloc(c->raw, nc);
                if (!nr)
                    return MHD_NO;
                c->raw = nr;
                c->raw_cap = nc;
            }
            memcpy(c->raw + c->raw_len, upload_data, *upload_data_size);
            c->raw_len += *upload_data_size;
            c->raw[c->raw_len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* whole request in: route it */
    size_t tl = strlen(f->token);
    if (!strncmp(url, "/file/bot", 9)) {
        if (strncmp(url + 9, f->token, tl) || url[9 + tl] != '/')
            return send_error(conn, 401, "Unauthorized", 0);
        return do_file(f, conn, url + 10 + tl);
    }
    if (strncmp(url, "/bot", 4) || strncmp(url + 4, f->token, tl) || url[4 + tl] != '/')
        return send_error(conn, 401, "Unauthorized", 0);
    if (c->too_big)
        return send_error(conn, 413, "Request Entity Too Large", 0);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, on_query, c);
    if (!c->pp && c->raw_len > 0 && params_from_json(c))
        return send_error(conn, 400, "Bad Request: can't parse JSON body", 0);
    return do_method(f, conn, c, url + 5 + tl);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    ctx_free(*con_cls);
    *con_cls = NULL;
}

int fake_tg_start(const char *token, fake_tg **out)
{
    *out = NULL;
    fake_tg *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->token, sizeof f->token, "%s", token);
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    f->next_update = 1000000000LL * 5; /* past 2^32: ids must be 64-bit */
    f->next_message = 100;
    f->photo_max = (size_t)10 << 20;
    f->doc_max = (size_t)50 << 20;
    f->photo_sides = 10000;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, on_request, f, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, f, MHD_OPTION_CONNECTION_TIMEOUT,
                            120u, MHD_OPTION_END);
    if (!f->d) {
        free(f);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", di ? (unsigned)di->port : 0u);
    for (int i = 0; i < FAKE_PUSHERS; i++) {
        pusher_arg *pa = malloc(sizeof *pa);
        if (!pa)
            break;
        *pa = (pusher_arg){f, i};
        if (pthread_create(&f->pushers[f->npushers], NULL, pusher_main, pa) != 0) {
            free(pa);
            break;
        }
        f->npushers++;
    }
    *out = f;
    return 0;
}

void fake_tg_stop(fake_tg *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < f->npushers; i++)
        pthread_join(f->pushers[i], NULL);
    MHD_stop_daemon(f->d);
    for (int i = 0; i < f->nups; i++)
        free(f->ups[i].json);
    free(f->ups);
    for (int i = 0; i < f->nfiles; i++)
        free(f->files[i].data);
    free(f->files);
    for (int i = 0; i < f->nsent; i++)
        free(f->sent[i].data);
    free(f->sent);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const char *fake_tg_url(const fake_tg *f)
{
    return f->url;
}

/* Adds an update whose message is msg (stolen); fills ids. mu held. */
static int64_t add_update(fake_tg *f, int64_t chat, int64_t user, json_t *msg)
{
    if (f->nups == f->capups) {
        int nc = f->capups ? f->capups * 2 : 64;
        update_rec *nu = realloc(f->ups, (size_t)nc * sizeof *nu);
        if (!nu) {
            json_decref(msg);
            return -1;
        }
        f->ups = nu;
        f->capups = nc;
    }
    if (!chat_known(f, chat) && f->nchats < 4096)
        f->chats[f->nchats++] = chat;
    int64_t mid = f->next_message++;
    json_object_set_new(msg, "message_id", json_integer((json_int_t)mid));
    json_object_set_new(msg, "date", json_integer((json_int_t)time(NULL)));
    json_object_set_new(msg, "chat",
                        json_pack("{s:I,s:s}", "id", (json_int_t)chat, "type", "private"));
    json_object_set_new(
        msg, "from",
        json_pack("{s:I,s:b,s:s}", "id", (json_int_t)user, "is_bot", 0, "first_name", "Test"));
    int64_t uid = f->next_update++;
    json_t *u = json_pack("{s:I,s:o}", "update_id", (json_int_t)uid, "message", msg);
    update_rec *r = &f->ups[f->nups];
    memset(r, 0, sizeof *r);
    r->json = json_dumps(u, JSON_COMPACT);
    json_decref(u);
    if (!r->json)
        return -1;
    r->update_id = uid;
    r->chat_id = chat;
    r->message_id = mid;
    r->confirmed = 0;
    f->nups++;
    pthread_cond_broadcast(&f->cv);
    return uid;
}

/* Stores a file and returns its id (static buffer in rec). mu held. */
static const file_rec *add_file(fake_tg *f, const uint8_t *data, size_t len, const char *ext)
{
    if (f->nfiles == f->capfiles) {
        int nc = f->capfiles ? f->capfiles * 2 : 64;
        file_rec *nf = realloc(f->files, (size_t)nc * sizeof *nf);
        if (!nf)
            return NULL;
        f->files = nf;
        f->capfiles = nc;
    }
    file_rec *r = &f->files[f->nfiles];
    r->data = malloc(len ? len : 1);
    if (!r->data)
        return NULL;
    memcpy(r->data, data, len);
    r->len = len;
    int64_t n = ++f->next_file;
    snprintf(r->file_id, sizeof r->file_id, "AgACAgFAKE%06lld", (long long)n);
    snprintf(r->path, sizeof r->path, "%s/file_%lld%s", ext[1] == 'j' ? "photos" : "documents",
             (long long)n, ext);
    f->nfiles++;
    return r;
}

int64_t fake_tg_add_photo(fake_tg *f, int64_t chat_id, int64_t user_id, const uint8_t *data,
                          size_t len, const char *media_group_id)
{
    pthread_mutex_lock(&f->mu);
    const file_rec *fr = add_file(f, data, len, ".jpg");
    int64_t id = -1;
    if (fr) {
        /* Telegram offers several sizes; the bot must take the largest */
        json_t *sizes =
            json_pack("[{s:s,s:s,s:i,s:i,s:i},{s:s,s:s,s:I,s:i,s:i}]", "file_id",
                      "AgACthumbnail-not-downloadable", "file_unique_id", "thumb", "file_size",
                      1000, "width", 90, "height", 90, "file_id", fr->file_id, "file_unique_id",
                      fr->file_id, "file_size", (json_int_t)len, "width", 1280, "height", 960);
        json_t *msg = json_pack("{s:o}", "photo", sizes);
        if (media_group_id)
            json_object_set_new(msg, "media_group_id", json_string(media_group_id));
        id = add_update(f, chat_id, user_id, msg);
    }
    pthread_mutex_unlock(&f->mu);
    return id;
}

int64_t fake_tg_add_document(fake_tg *f, int64_t chat_id, int64_t user_id, const uint8_t *data,
                             size_t len, const char *file_name, const char *mime)
{
    pthread_mutex_lock(&f->mu);
    const file_rec *fr = add_file(f, data, len, ".bin");
    int64_t id = -1;
    if (fr) {
        json_t *msg = json_pack("{s:{s:s,s:s,s:s,s:s,s:I}}", "document", "file_id", fr->file_id,
                                "file_unique_id", fr->file_id, "file_name", file_name, "mime_type",
                                mime, "file_size", (json_int_t)len);
        id = add_update(f, chat_id, user_id, msg);
    }
    pthread_mutex_unlock(&f->mu);
    return id;
}

int64_t fake_tg_add_text(fake_tg *f, int64_t chat_id, int64_t user_id, const char *text)
{
    pthread_mutex_lock(&f->mu);
    int64_t id = add_update(f, chat_id, user_id, json_pack("{s:s}", "text", text));
    pthread_mutex_unlock(&f->mu);
    return id;
}

int64_t fake_tg_add_sticker(fake_tg *f, int64_t chat_id, int64_t user_id)
{
    pthread_mutex_lock(&f->mu);
    int64_t id = add_update(f, chat_id, user_id,
                            json_pack("{s:{s:s,s:i,s:i,s:s}}", "sticker", "file_id", "CAACsticker",
                                      "width", 512, "height", 512, "emoji", "x"));
    pthread_mutex_unlock(&f->mu);
    return id;
}

int64_t fake_tg_message_id(fake_tg *f, int64_t update_id)
{
    int64_t r = -1;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nups; i++)
        if (f->ups[i].update_id == update_id)
            r = f->ups[i].message_id;
    pthread_mutex_unlock(&f->mu);
    return r;
}

void fake_tg_set_local_dir(fake_tg *f, const char *dir)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->local_dir, sizeof f->local_dir, "%s", dir ? dir : "");
    pthread_mutex_unlock(&f->mu);
}

void fake_tg_inject(fake_tg *f, const char *method, int count, int http_code, int retry_after,
                    int delay_ms)
{
    pthread_mutex_lock(&f->mu);
    if (f->nrules < 16) {
        rule *r = &f->rules[f->nrules++];
        snprintf(r->method, sizeof r->method, "%s", method);
        r->count = count;
        r->code = http_code;
        r->retry_after = retry_after;
        r->delay_ms = delay_ms;
    }
    pthread_mutex_unlock(&f->mu);
}

static int sent_matches(const fake_tg_sent *s, int64_t chat_id, const char *method)
{
    if (chat_id && s->chat_id != chat_id)
        return 0;
    if (method)
        return !strcmp(s->method, method);
    return 1;
}

int fake_tg_sent_count(fake_tg *f, int64_t chat_id, const char *method)
{
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nsent; i++)
        n += sent_matches(&f->sent[i], chat_id, method);
    pthread_mutex_unlock(&f->mu);
    return n;
}

int fake_tg_sent_get(fake_tg *f, int64_t chat_id, const char *method, int idx, fake_tg_sent *out)
{
    memset(out, 0, sizeof *out);
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    for (int i = 0, k = 0; i < f->nsent; i++) {
        if (!sent_matches(&f->sent[i], chat_id, method))
            continue;
        if (k++ == idx) {
            *out = f->sent[i];
            out->data = NULL;
            if (f->sent[i].data) {
                out->data = malloc(f->sent[i].len);
                if (out->data)
                    memcpy(out->data, f->sent[i].data, f->sent[i].len);
            }
            out->len = out->data ? f->sent[i].len : 0;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void fake_tg_sent_free(fake_tg_sent *s)
{
    if (s) {
        free(s->data);
        s->data = NULL;
        s->len = 0;
    }
}

int fake_tg_wait_sent(fake_tg *f, int64_t chat_id, const char *method, int count, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        n = 0;
        for (int i = 0; i < f->nsent; i++)
            n += sent_matches(&f->sent[i], chat_id, method);
        double left = end - now_ms();
        if (n >= count || left <= 0)
            break;
        struct timespec dl;
        deadline(&dl, left > 200 ? 200 : (int)left + 1);
        pthread_cond_timedwait(&f->cv, &f->mu, &dl);
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

int fake_tg_calls(fake_tg *f, const char *method)
{
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->ncalls; i++)
        if (!strcmp(f->calls[i].name, method))
            n = f->calls[i].n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int64_t fake_tg_confirmed(fake_tg *f)
{
    pthread_mutex_lock(&f->mu);
    int64_t c = f->confirmed;
    pthread_mutex_unlock(&f->mu);
    return c;
}

void fake_tg_unconfirm_all(fake_tg *f)
{
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nups; i++)
        f->ups[i].confirmed = 0;
    f->confirmed = 0;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void fake_tg_set_upload_limits(fake_tg *f, size_t photo_bytes, size_t document_bytes,
                               int photo_sides)
{
    pthread_mutex_lock(&f->mu);
    f->photo_max = photo_bytes;
    f->doc_max = document_bytes;
    f->photo_sides = photo_sides;
    pthread_mutex_unlock(&f->mu);
}

void fake_tg_set_webhook_route(fake_tg *f, const char *ipv4_port)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->hook_route, sizeof f->hook_route, "%s", ipv4_port ? ipv4_port : "");
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

int fake_tg_webhook(fake_tg *f, char *url, size_t ucap, char *secret, size_t scap)
{
    pthread_mutex_lock(&f->mu);
    int set = f->hook_url[0] != '\0';
    if (url && ucap)
        snprintf(url, ucap, "%s", f->hook_url);
    if (secret && scap)
        snprintf(secret, scap, "%s", f->hook_secret);
    pthread_mutex_unlock(&f->mu);
    return set;
}

void fake_tg_preset_webhook(fake_tg *f, const char *url, const char *secret)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->hook_url, sizeof f->hook_url, "%s", url ? url : "");
    snprintf(f->hook_secret, sizeof f->hook_secret, "%s", secret ? secret : "");
    f->hook_max_conn = 40;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void fake_tg_webhook_stats(fake_tg *f, int *delivered, int *failed, char *last_error, size_t cap)
{
    pthread_mutex_lock(&f->mu);
    if (delivered)
        *delivered = f->hook_ok;
    if (failed)
        *failed = f->hook_failed;
    if (last_error && cap)
        snprintf(last_error, cap, "%s", f->hook_error);
    pthread_mutex_unlock(&f->mu);
}

/*
 * px_telegram implementation: request building with Jansson, one retry loop
 * shared by every method, and the getUpdates parser.
 *
 * Requests with only scalar parameters go as a JSON body; uploads go as
 * multipart/form-data, the way the Bot API takes files. The retry loop reads
 * the answer's error shape rather than trusting the HTTP status alone (a
 * proxy may answer 502 with HTML; Telegram answers 429 with retry_after in
 * "parameters"), and sleeps in short slices so a cancel flag ends the wait.
 *
 * The parser treats the getUpdates body as hostile: every field is checked
 * for its JSON type, strings are copied with truncation into fixed fields,
 * and an update whose message has unexpected shapes is kept (so its id can
 * still be confirmed) with those fields left empty.
 */
#include "px_telegram.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "px_http.h"

struct px_tg {
    px_http *http;
    char *base;  /* "<api_url>/bot<token>/" */
    char *fbase; /* "<api_url>/file/bot<token>/" */
    px_tg_config cfg;
};

int px_tg_create(const px_tg_config *cfg, px_tg **out, px_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->api_url || !cfg->token || !cfg->token[0])
        return px_err_set(err, PX_EINVAL, "telegram: api_url and token are required");
    if (strchr(cfg->token, '/') || strchr(cfg->token, '?') || strchr(cfg->token, ' '))
        return px_err_set(err, PX_EINVAL, "telegram: the token has characters a token cannot have");
    px_tg *tg = px_calloc(1, sizeof *tg);
    if (!tg)
        return px_err_set(err, PX_ENOMEM, "telegram: out of memory");
    tg->cfg = *cfg;
    if (tg->cfg.max_attempts <= 0)
        tg->cfg.max_attempts = 5;
    if (tg->cfg.backoff_ms <= 0)
        tg->cfg.backoff_ms = 500;
    if (tg->cfg.max_retry_after_s <= 0)
        tg->cfg.max_retry_after_s = 120;
    if (tg->cfg.request_timeout_ms <= 0)
        tg->cfg.request_timeout_ms = 60000;
    size_t ul = strlen(cfg->api_url);
    while (ul > 0 && cfg->api_url[ul - 1] == '/')
        ul--;
    size_t tl = strlen(cfg->token);
    tg->base = px_malloc(ul + tl + 8);
    tg->fbase = px_malloc(ul + tl + 16);
    int st = px_http_create(&tg->http, err);
    if (!tg->base || !tg->fbase || st != PX_OK) {
        px_tg_destroy(tg);
        return st != PX_OK ? st : px_err_set(err, PX_ENOMEM, "telegram: out of memory");
    }
    sprintf(tg->base, "%.*s/bot%s/", (int)ul, cfg->api_url, cfg->token);
    sprintf(tg->fbase, "%.*s/file/bot%s/", (int)ul, cfg->api_url, cfg->token);
    tg->cfg.api_url = NULL; /* not kept: base holds it */
    tg->cfg.token = NULL;
    *out = tg;
    return PX_OK;
}

void px_tg_destroy(px_tg *tg)
{
    if (!tg)
        return;
    px_http_destroy(tg->http);
    if (tg->base) /* scrub the token before freeing (explicit_: not optimised away) */
        explicit_bzero(tg->base, strlen(tg->base));
    if (tg->fbase)
        explicit_bzero(tg->fbase, strlen(tg->fbase));
    free(tg->base);
    free(tg->fbase);
    free(tg);
}

static int cancelled(const px_tg *tg)
{
    return tg->cfg.cancel && atomic_load(tg->cfg.cancel);
}

/* Sleeps ms in 20 ms slices; returns non-zero when cancelled. */
static int nap(const px_tg *tg, long ms)
{
    while (ms > 0) {
        if (cancelled(tg))
            return 1;
        long s = ms < 20 ? ms : 20;
        struct timespec ts = {0, s * 1000000L};
        nanosleep(&ts, NULL);
        ms -= s;
    }
    return cancelled(tg);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Reads Telegram's answer. Returns PX_OK with *result borrowed from *root
 * (caller json_decref's root), or an error status with info filled. */
static int read_answer(const char *method, const px_http_response *r, json_t **root,
                       json_t **result, px_tg_error *info, px_err *err)
{
    *root = NULL;
    *result = NULL;
    memset(info, 0, sizeof *info);
    info->http_status = (int)r->status;
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, 0, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        info->error_code = (int)r->status;
        if (r->status >= 500 || r->status == 0)
            return px_err_set(err, PX_ENET, "telegram %s: HTTP %ld without a Bot API answer",
                              method, r->status);
        if (r->status == 429)
            return px_err_set(err, PX_EBUSY, "telegram %s: HTTP 429 without a Bot API answer",
                              method);
        return px_err_set(err, PX_EINVAL, "telegram %s: HTTP %ld, answer is not Bot API JSON",
                          method, r->status);
    }
    json_t *ok = json_object_get(j, "ok");
    if (json_is_true(ok) && r->status < 300) {
        *root = j;
        *result = json_object_get(j, "result");
        return PX_OK;
    }
    json_t *code = json_object_get(j, "error_code");
    info->error_code = json_is_integer(code) ? (int)json_integer_value(code) : (int)r->status;
    copy_str(info->description, sizeof info->description,
             json_string_value(json_object_get(j, "description")));
    json_t *ra = json_object_get(json_object_get(j, "parameters"), "retry_after");
    if (json_is_integer(ra) && json_integer_value(ra) > 0 && json_integer_value(ra) < 86400 * 7)
        info->retry_after = (int)json_integer_value(ra);
    json_decref(j);
    int c = info->error_code ? info->error_code : (int)r->status;
    int st = PX_EINVAL;
    if (c == 429)
        st = PX_EBUSY;
    else if (c == 409)
        st = PX_ECLOSED;
    else if (c >= 500 || r->status >= 500)
        st = PX_ENET;
    return px_err_set(err, st, "telegram %s: error %d: %s", method, c,
                      info->description[0] ? info->description : "(no description)");
}

/* One method call with retries. Exactly one of params (JSON body) or
 * parts/nparts (multipart) is used. On PX_OK *root must be json_decref'd and
 * *result is borrowed from it. */
static int call(px_tg *tg, const char *method, json_t *params, const px_http_part *parts,
                int nparts, long timeout_ms, json_t **root, json_t **result, px_tg_error *info,
                px_err *err)
{
    px_tg_error scratch;
    if (!info)
        info = &scratch;
    memset(info, 0, sizeof *info);
    *root = NULL;
    *result = NULL;
    size_t ul = strlen(tg->base) + strlen(method) + 1;
    char *url = px_malloc(ul);
    char *body = params ? json_dumps(params, JSON_COMPACT) : NULL;
    if (!url || (params && !body)) {
        free(url);
        free(body);
        return px_err_set(err, PX_ENOMEM, "telegram %s: out of memory", method);
    }
    snprintf(url, ul, "%s%s", tg->base, method);
    px_http_opts o = px_http_opts_default();
    o.timeout_ms = timeout_ms;
    o.max_body = (size_t)8 << 20;
    o.cancel = tg->cfg.cancel;
    long backoff = tg->cfg.backoff_ms;
    int st = PX_ENET, tries = 0;
    for (int attempt = 1; attempt <= tg->cfg.max_attempts; attempt++) {
        px_http_response r;
        tries = attempt;
        st = body ? px_http_post_json(tg->http, url, body, &o, &r, err)
                  : px_http_post_multipart(tg->http, url, parts, nparts, &o, &r, err);
        if (st == PX_OK) {
            st = read_answer(method, &r, root, result, info, err);
            px_http_response_free(&r);
            if (st == PX_OK)
                break;
        }
        if (st == PX_ECLOSED || st == PX_EINVAL || st == PX_ELIMIT || st == PX_ENOMEM)
            break; /* conflict, cancel, client errors: retrying gives the same answer */
        if (attempt == tg->cfg.max_attempts)
            break;
        long wait = backoff;
        if (st == PX_EBUSY) {
            if (info->retry_after > tg->cfg.max_retry_after_s)
                break;
            wait = info->retry_after > 0 ? info->retry_after * 1000L : backoff;
        } else {
            backoff *= 2;
        }
        if (nap(tg, wait)) {
            st = px_err_set(err, PX_ECLOSED, "telegram %s: cancelled", method);
            break;
        }
    }
    info->attempts = tries;
    free(url);
    free(body);
    return st;
}

/* A call whose result is just true: the answer is dropped. */
static int call_simple(px_tg *tg, const char *method, json_t *p, px_tg_error *info, px_err *err)
{
    if (!p)
        return px_err_set(err, PX_ENOMEM, "telegram %s: out of memory", method);
    json_t *root, *result;
    int st = call(tg, method, p, NULL, 0, tg->cfg.request_timeout_ms, &root, &result, info, err);
    json_decref(p);
    if (st == PX_OK)
        json_decref(root);
    return st;
}

static int add_reply(json_t *p, int64_t reply_to)
{
    if (reply_to <= 0)
        return 0;
    json_t *rp = json_pack("{s:I,s:b}", "message_id", (json_int_t)reply_to,
                           "allow_sending_without_reply", 1);
    return rp ? json_object_set_new(p, "reply_parameters", rp) : -1;
}

static int64_t sent_message_id(json_t *result)
{
    json_t *id = json_object_get(result, "message_id");
    return json_is_integer(id) ? (int64_t)json_integer_value(id) : 0;
}

/* ---- updates ---- */

static int64_t get_i64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static void get_str(json_t *o, const char *key, char *dst, size_t cap)
{
    copy_str(dst, cap, json_string_value(json_object_get(o, key)));
}

static void parse_message(json_t *m, px_tg_update *u)
{
    u->message_id = get_i64(m, "message_id");
    u->chat_id = get_i64(json_object_get(m, "chat"), "id");
    u->user_id = get_i64(json_object_get(m, "from"), "id");
    get_str(m, "media_group_id", u->media_group_id, sizeof u->media_group_id);
    json_t *photo = json_object_get(m, "photo");
    json_t *doc = json_object_get(m, "document");
    if (json_is_array(photo) && json_array_size(photo) > 0) {
        /* sizes come smallest first, but pick by area rather than trust it */
        json_t *best = NULL;
        int64_t best_area = -1;
        size_t i;
        json_t *ps;
        json_array_foreach(photo, i, ps)
        {
            if (!json_is_string(json_object_get(ps, "file_id")))
                continue;
            int64_t w = get_i64(ps, "width"), h = get_i64(ps, "height");
            int64_t area = (w > 0 && h > 0 && w < (1 << 20) && h < (1 << 20)) ? w * h : 0;
            if (area >= best_area) {
                best_area = area;
                best = ps;
            }
        }
        u->kind = PX_TG_MSG_PHOTO;
        if (best) {
            get_str(best, "file_id", u->file_id, sizeof u->file_id);
            get_str(best, "file_unique_id", u->file_unique_id, sizeof u->file_unique_id);
            u->file_size = get_i64(best, "file_size");
            u->width = (int)(get_i64(best, "width") & 0x7fffffff);
            u->height = (int)(get_i64(best, "height") & 0x7fffffff);
        }
        get_str(m, "caption", u->text, sizeof u->text);
    } else if (json_is_object(doc)) {
        u->kind = PX_TG_MSG_DOCUMENT;
        get_str(doc, "file_id", u->file_id, sizeof u->file_id);
        get_str(doc, "file_unique_id", u->file_unique_id, sizeof u->file_unique_id);
        get_str(doc, "mime_type", u->mime_type, sizeof u->mime_type);
        get_str(doc, "file_name", u->file_name, sizeof u->file_name);
        u->file_size = get_i64(doc, "file_size");
        get_str(m, "caption", u->text, sizeof u->text);
    } else if (json_is_string(json_object_get(m, "text"))) {
        u->kind = PX_TG_MSG_TEXT;
        get_str(m, "text", u->text, sizeof u->text);
    } else {
        u->kind = PX_TG_MSG_OTHER;
    }
}

/* One Update object into *out; -1 when it has no usable update_id. */
static int parse_one(json_t *u, px_tg_update *out)
{
    json_t *id = json_object_get(u, "update_id");
    if (!json_is_integer(id) || json_integer_value(id) < 0)
        return -1;
    out->update_id = (int64_t)json_integer_value(id);
    json_t *m = json_object_get(u, "message");
    if (json_is_object(m))
        parse_message(m, out);
    return 0;
}

static int parse_result(json_t *result, px_tg_update **ups, int *n, px_err *err)
{
    if (!json_is_array(result))
        return px_err_set(err, PX_EINVAL, "telegram getUpdates: \"result\" is not an array");
    size_t cnt = json_array_size(result);
    if (cnt > 1000)
        return px_err_set(err, PX_ELIMIT, "telegram getUpdates: %zu updates (expected <= 100)",
                          cnt);
    if (cnt == 0)
        return PX_OK;
    px_tg_update *a = px_calloc(cnt, sizeof *a);
    if (!a)
        return px_err_set(err, PX_ENOMEM, "telegram getUpdates: out of memory");
    int k = 0;
    size_t i;
    json_t *u;
    json_array_foreach(result, i, u)
    {
        if (parse_one(u, &a[k]) == 0)
            k++; /* else nothing to confirm it by: skipped */
    }
    if (k == 0) {
        free(a);
        return PX_OK;
    }
    *ups = a;
    *n = k;
    return PX_OK;
}

int px_tg_parse_updates(const char *json, size_t len, px_tg_update **ups, int *n, px_tg_error *info,
                        px_err *err)
{
    *ups = NULL;
    *n = 0;
    px_tg_error scratch;
    if (!info)
        info = &scratch;
    px_http_response r = {0};
    r.status = 200;
    r.body.data = (uint8_t *)(uintptr_t)json;
    r.body.len = json ? len : 0;
    json_t *root, *result;
    /* the error shape comes with a 4xx/5xx; read_answer maps it by error_code */
    int st = read_answer("getUpdates", &r, &root, &result, info, err);
    if (st != PX_OK)
        return st;
    st = parse_result(result, ups, n, err);
    json_decref(root);
    return st;
}

int px_tg_get_updates(px_tg *tg, int64_t offset, int timeout_s, int limit, px_tg_update **ups,
                      int *n, px_tg_error *info, px_err *err)
{
    *ups = NULL;
    *n = 0;
    if (timeout_s < 0)
        timeout_s = 0;
    if (limit < 1 || limit > 100)
        limit = 100;
    json_t *p = json_pack("{s:i,s:i,s:[s]}", "timeout", timeout_s, "limit", limit,
                          "allowed_updates", "message");
    if (!p)
        return px_err_set(err, PX_ENOMEM, "telegram getUpdates: out of memory");
    if (offset > 0)
        json_object_set_new(p, "offset", json_integer((json_int_t)offset));
    json_t *root, *result;
    int st =
        call(tg, "getUpdates", p, NULL, 0, timeout_s * 1000L + 15000, &root, &result, info, err);
    json_decref(p);
    if (st != PX_OK)
        return st;
    st = parse_result(result, ups, n, err);
    json_decref(root);
    return st;
}

/* ---- files ---- */

int px_tg_get_file(px_tg *tg, const char *file_id, char *path, size_t cap, int64_t *size,
                   px_tg_error *info, px_err *err)
{
    if (path && cap)
        path[0] = '\0';
    if (size)
        *size = 0;
    if (!file_id || !file_id[0] || !path || cap < 2)
        return px_err_set(err, PX_EINVAL, "telegram getFile: missing file_id");
    json_t *p = json_pack("{s:s}", "file_id", file_id);
    if (!p)
        return px_err_set(err, PX_ENOMEM, "telegram getFile: out of memory");
    json_t *root, *result;
    int st = call(tg, "getFile", p, NULL, 0, tg->cfg.request_timeout_ms, &root, &result, info, err);
    json_decref(p);
    if (st != PX_OK)
        return st;
    const char *fp = json_string_value(json_object_get(result, "file_path"));
    if (!fp || !fp[0] || strlen(fp) >= cap || strstr(fp, "..")) {
        json_decref(root);
        return px_err_set(err, PX_EINVAL, "telegram getFile: missing or unusable file_path");
    }
    copy_str(path, cap, fp);
    if (size)
        *size = get_i64(result, "file_size");
    json_decref(root);
    return PX_OK;
}

int px_tg_download(px_tg *tg, const char *path, size_t max_bytes, px_buf *out, px_tg_error *info,
                   px_err *err)
{
    px_tg_error scratch;
    if (!info)
        info = &scratch;
    memset(info, 0, sizeof *info);
    if (!path || !path[0])
        return px_err_set(err, PX_EINVAL, "telegram download: empty file path");
    if (path[0] == '/') {
        /* a local Bot API server (--local) hands out paths on its own disk */
        uint8_t *data = NULL;
        size_t len = 0;
        int st = px_read_file(path, max_bytes, &data, &len, err);
        if (st != PX_OK)
            return px_err_prefix(err, st, "telegram download");
        st = px_buf_append(out, data, len);
        free(data);
        return st == PX_OK ? PX_OK : px_err_set(err, st, "telegram download: out of memory");
    }
    size_t ul = strlen(tg->fbase) + strlen(path) + 1;
    char *url = px_malloc(ul);
    if (!url)
        return px_err_set(err, PX_ENOMEM, "telegram download: out of memory");
    snprintf(url, ul, "%s%s", tg->fbase, path);
    px_http_opts o = px_http_opts_default();
    o.timeout_ms = tg->cfg.request_timeout_ms;
    o.max_body = max_bytes;
    o.cancel = tg->cfg.cancel;
    long backoff = tg->cfg.backoff_ms;
    int st = PX_ENET;
    for (int attempt = 1; attempt <= tg->cfg.max_attempts; attempt++) {
        px_http_response r;
        info->attempts = attempt;
        st = px_http_get(tg->http, url, &o, &r, err);
        if (st == PX_OK) {
            info->http_status = info->error_code = (int)r.status;
            if (r.status == 200) {
                st = px_buf_append(out, r.body.data, r.body.len);
                px_http_response_free(&r);
                if (st != PX_OK)
                    px_err_set(err, st, "telegram download: out of memory");
                break;
            }
            px_http_response_free(&r);
            st = info->http_status >= 500 ? PX_ENET : PX_EINVAL;
            px_err_set(err, st, "telegram download: HTTP %d", info->http_status);
        }
        if (st != PX_ENET && st != PX_ETIMEOUT)
            break;
        if (attempt < tg->cfg.max_attempts && nap(tg, backoff)) {
            st = px_err_set(err, PX_ECLOSED, "telegram download: cancelled");
            break;
        }
        backoff *= 2;
    }
    free(url);
    return st;
}

/* ---- sending ---- */

int px_tg_send_message(px_tg *tg, int64_t chat_id, int64_t reply_to, const char *text,
                       int64_t *sent_id, px_tg_error *info, px_err *err)
{
    if (sent_id)
        *sent_id = 0;
    if (!text || !text[0])
        return px_err_set(err, PX_EINVAL, "telegram sendMessage: empty text");
    json_t *p = json_pack("{s:I,s:s}", "chat_id", (json_int_t)chat_id, "text", text);
    if (!p || add_reply(p, reply_to)) {
        json_decref(p);
        return px_err_set(err, PX_EINVAL, "telegram sendMessage: text is not UTF-8 or no memory");
    }
    json_t *root, *result;
    int st =
        call(tg, "sendMessage", p, NULL, 0, tg->cfg.request_timeout_ms, &root, &result, info, err);
    json_decref(p);
    if (st == PX_OK) {
        if (sent_id)
            *sent_id = sent_message_id(result);
        json_decref(root);
    }
    return st;
}

static int send_file(px_tg *tg, const char *method, const char *field, int64_t chat_id,
                     int64_t reply_to, const uint8_t *data, size_t len, const char *filename,
                     const char *mime, const char *caption, int64_t *sent_id, px_tg_error *info,
                     px_err *err)
{
    if (sent_id)
        *sent_id = 0;
    if (!data || len == 0)
        return px_err_set(err, PX_EINVAL, "telegram %s: empty file", method);
    char chat[32], rp[96];
    snprintf(chat, sizeof chat, "%lld", (long long)chat_id);
    snprintf(rp, sizeof rp, "{\"message_id\":%lld,\"allow_sending_without_reply\":true}",
             (long long)reply_to);
    px_http_part parts[4];
    int n = 0;
    parts[n++] = (px_http_part){.name = "chat_id", .value = chat};
    if (reply_to > 0)
        parts[n++] = (px_http_part){.name = "reply_parameters", .value = rp};
    if (caption && caption[0])
        parts[n++] = (px_http_part){.name = "caption", .value = caption};
    parts[n++] = (px_http_part){.name = field,
                                .data = data,
                                .len = len,
                                .filename = filename ? filename : "image",
                                .content_type = mime ? mime : "application/octet-stream"};
    json_t *root, *result;
    int st =
        call(tg, method, NULL, parts, n, tg->cfg.request_timeout_ms, &root, &result, info, err);
    if (st == PX_OK) {
        if (sent_id)
            *sent_id = sent_message_id(result);
        json_decref(root);
    }
    return st;
}

int px_tg_send_photo(px_tg *tg, int64_t chat_id, int64_t reply_to, const uint8_t *data, size_t len,
                     const char *filename, const char *mime, const char *caption, int64_t *sent_id,
                     px_tg_error *info, px_err *err)
{
    return send_file(tg, "sendPhoto", "photo", chat_id, reply_to, data, len, filename, mime,
                     caption, sent_id, info, err);
}

int px_tg_send_document(px_tg *tg, int64_t chat_id, int64_t reply_to, const uint8_t *data,
                        size_t len, const char *filename, const char *mime, const char *caption,
                        int64_t *sent_id, px_tg_error *info, px_err *err)
{
    return send_file(tg, "sendDocument", "document", chat_id, reply_to, data, len, filename, mime,
                     caption, sent_id, info, err);
}

int px_tg_send_chat_action(px_tg *tg, int64_t chat_id, const char *action, px_tg_error *info,
                           px_err *err)
{
    return call_simple(tg, "sendChatAction",
                       json_pack("{s:I,s:s}", "chat_id", (json_int_t)chat_id, "action",
                                 action ? action : "typing"),
                       info, err);
}

int px_tg_set_my_commands(px_tg *tg, const px_tg_command *cmds, int n, px_tg_error *info,
                          px_err *err)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s}", "command", cmds[i].command, "description",
                                             cmds[i].description));
    return call_simple(tg, "setMyCommands", arr ? json_pack("{s:o}", "commands", arr) : NULL, info,
                       err);
}

/* ---- webhooks ---- */

int px_tg_secret_token_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
    return n >= 1 && n <= 256 && s[n] == '\0';
}

int px_tg_set_webhook(px_tg *tg, const char *url, const char *secret_token, int max_connections,
                      px_tg_error *info, px_err *err)
{
    if (!url || strncmp(url, "https://", 8) || !url[8])
        return px_err_set(err, PX_EINVAL, "telegram setWebhook: the URL must start with https://");
    if (!px_tg_secret_token_valid(secret_token))
        return px_err_set(err, PX_EINVAL,
                          "telegram setWebhook: the secret token must be 1-256 characters of "
                          "A-Z, a-z, 0-9, _ and -");
    json_t *p = json_pack("{s:s,s:s,s:[s]}", "url", url, "secret_token", secret_token,
                          "allowed_updates", "message");
    if (p && max_connections > 0)
        json_object_set_new(p, "max_connections",
                            json_integer(max_connections > 100 ? 100 : max_connections));
    return call_simple(tg, "setWebhook", p, info, err);
}

int px_tg_delete_webhook(px_tg *tg, px_tg_error *info, px_err *err)
{
    return call_simple(tg, "deleteWebhook", json_pack("{s:b}", "drop_pending_updates", 0), info,
                       err);
}

int px_tg_get_webhook_info(px_tg *tg, px_tg_webhook_info *out, px_tg_error *info, px_err *err)
{
    memset(out, 0, sizeof *out);
    json_t *p = json_object();
    if (!p)
        return px_err_set(err, PX_ENOMEM, "telegram getWebhookInfo: out of memory");
    json_t *root, *result;
    int st = call(tg, "getWebhookInfo", p, NULL, 0, tg->cfg.request_timeout_ms, &root, &result,
                  info, err);
    json_decref(p);
    if (st != PX_OK)
        return st;
    if (!json_is_object(result)) {
        json_decref(root);
        return px_err_set(err, PX_EINVAL, "telegram getWebhookInfo: \"result\" is not an object");
    }
    get_str(result, "url", out->url, sizeof out->url);
    out->pending_update_count = get_i64(result, "pending_update_count");
    out->last_error_date = get_i64(result, "last_error_date");
    get_str(result, "last_error_message", out->last_error_message, sizeof out->last_error_message);
    out->max_connections = (int)(get_i64(result, "max_connections") & 0x7fffffff);
    json_decref(root);
    return PX_OK;
}

int px_tg_parse_update(const char *json, size_t len, px_tg_update *u, px_err *err)
{
    memset(u, 0, sizeof *u);
    json_error_t je;
    json_t *j = json ? json_loadb(json, len, 0, &je) : NULL;
    int bad = !json_is_object(j) || parse_one(j, u) != 0;
    json_decref(j);
    if (bad) {
        memset(u, 0, sizeof *u);
        return px_err_set(err, PX_EINVAL, "telegram update: not a JSON object with an update_id");
    }
    return PX_OK;
}

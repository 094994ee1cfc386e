/*
 * px_bot implementation: the poller, the per-chat job lists, the workers and
 * the replies.
 *
 * Ordering and parallelism: every accepted message becomes a job appended to
 * its chat's list. A chat with jobs is "scheduled" by putting it once on a
 * bounded ready queue; a worker takes a chat, runs its first job, and puts
 * the chat back only if more jobs wait. So one chat's jobs run one after the
 * other in arrival order, and chats run in parallel, without a worker ever
 * blocking on another chat.
 *
 * Confirmation: the poller asks getUpdates for offset = the smallest update
 * id still being worked on (or one past the largest seen when nothing is),
 * so Telegram forgets an update only after its reply went out. Updates it
 * hands back again while their jobs run are recognised (in-flight set) and
 * skipped; updates already answered before a restart are recognised by the
 * SQLite record. A job that could not reply because Telegram was unreachable
 * is left unrecorded and comes back with the next poll (bounded retries).
 *
 * Each job's image lives in the worker's memory only, from download to reply.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/px_telegram.h"
#include "px_bot.h"

typedef enum { JOB_MESSAGE = 0, JOB_RATE_LIMITED } job_kind;

typedef struct job {
    px_tg_update u;
    job_kind kind;
    double t_accept;
    struct job *next;
} job;

typedef struct chat_slot {
    int64_t chat_id;
    job *head, *tail;
    struct chat_slot *next; /* in bot->chats */
} chat_slot;

typedef struct {
    int64_t update_id;
    int failures;
} retry_rec;

struct px_bot {
    px_bot_config cfg;
    char *api_url, *token, *db_path;
    px_bot_store *store;
    atomic_int stop; /* polling ends */
    atomic_int hard; /* in-flight requests end too (never set by px_bot_stop) */
    uint64_t salt;
    px_tg *poll_tg, *ctl_tg;

    pthread_mutex_t mu;
    pthread_cond_t done_cv; /* a job finished */
    px_queue *ready;        /* chat_slot* with jobs, each at most once */
    chat_slot *chats;       /* every chat with jobs (queued or running) */
    int pending;            /* accepted jobs not finished */
    int64_t *inflight;      /* update ids of those jobs */
    int ninflight;
    retry_rec retries[64];
    int nretries;
    pthread_t *threads;
    int nthreads;
    int ran;
};

static const char *help_text =
    "I hide the faces in your photos.\n\n"
    "Send me a photo (or an image as a file: JPEG, PNG or WebP, up to 20 MB) and I answer with "
    "the same picture where every face I find is covered. A photo comes back as a photo, a file "
    "as a file in full quality. Albums work too: every photo is answered.\n\n"
    "/mode blur|pixelate|noise|solid chooses how faces are covered in this chat (default: "
    "noise, which keeps nothing of the face).\n\n"
    "Privacy: your picture is held in memory only while I work on it and is gone once I reply. "
    "I keep no image, caption or file; only this chat's /mode setting and the ids of messages "
    "already answered (so none is answered twice).";

px_bot_config px_bot_config_default(void)
{
    px_bot_config c;
    memset(&c, 0, sizeof c);
    c.api_url = "https://api.telegram.org";
    c.anon = px_anon_opts_default();
    c.workers = 2;
    c.queue_capacity = 64;
    c.poll_timeout_s = 50;
    c.max_file_bytes = (size_t)20 << 20;
    c.rate_per_minute = 30;
    c.backoff_ms = 500;
    c.max_attempts = 5;
    c.max_job_retries = 3;
    return c;
}

void px_bot_chat_tag(uint64_t salt, int64_t chat_id, char out[9])
{
    /* FNV-1a over salt and id, then a final avalanche: enough to correlate
     * lines of one run without printing the id */
    uint64_t h = 1469598103934665603ULL;
    uint64_t v[2] = {salt, (uint64_t)chat_id};
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < sizeof v; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    snprintf(out, 9, "%08x", (unsigned)(h & 0xffffffffu));
}

px_bot_cmd px_bot_parse_command(const char *text, char *arg, size_t cap)
{
    if (arg && cap)
        arg[0] = '\0';
    if (!text || text[0] != '/')
        return PX_BOT_CMD_NONE;
    const char *p = text + 1;
    size_t n = strcspn(p, " @\t\n");
    const char *rest = p + n;
    if (*rest == '@') /* "/mode@MyBot": the command is addressed to a bot */
        rest += strcspn(rest, " \t\n");
    while (*rest == ' ' || *rest == '\t' || *rest == '\n')
        rest++;
    if (arg && cap) {
        size_t an = strcspn(rest, " \t\n");
        if (an >= cap)
            an = cap - 1;
        memcpy(arg, rest, an);
        arg[an] = '\0';
    }
    if (n == 5 && !strncasecmp(p, "start", 5))
        return PX_BOT_CMD_START;
    if (n == 4 && !strncasecmp(p, "help", 4))
        return PX_BOT_CMD_HELP;
    if (n == 4 && !strncasecmp(p, "mode", 4))
        return PX_BOT_CMD_MODE;
    return PX_BOT_CMD_UNKNOWN;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = px_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int make_tg(px_bot *b, const atomic_int *cancel, px_tg **out, px_err *err)
{
    px_tg_config tc = {0};
    tc.api_url = b->api_url;
    tc.token = b->token;
    tc.max_attempts = b->cfg.max_attempts;
    tc.backoff_ms = b->cfg.backoff_ms;
    tc.cancel = cancel;
    return px_tg_create(&tc, out, err);
}

int px_bot_create(const px_bot_config *cfg, px_bot **out, px_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->token || !cfg->token[0])
        return px_err_set(err, PX_EINVAL, "bot: no token (PIXPIPE_TELEGRAM_TOKEN or --token-file)");
    if (!cfg->db_path || !cfg->db_path[0])
        return px_err_set(err, PX_EINVAL, "bot: no state database path");
    if (!cfg->det)
        return px_err_set(err, PX_EINVAL, "bot: no face detector");
    px_bot *b = px_calloc(1, sizeof *b);
    if (!b)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    px_bot_config d = px_bot_config_default();
    b->cfg = *cfg;
    if (b->cfg.workers <= 0)
        b->cfg.workers = d.workers;
    if (b->cfg.queue_capacity <= 0)
        b->cfg.queue_capacity = d.queue_capacity;
    if (b->cfg.poll_timeout_s <= 0)
        b->cfg.poll_timeout_s = d.poll_timeout_s;
    if (b->cfg.poll_timeout_s > 60)
        b->cfg.poll_timeout_s = 60;
    if (b->cfg.max_file_bytes == 0)
        b->cfg.max_file_bytes = d.max_file_bytes;
    if (b->cfg.rate_per_minute <= 0)
        b->cfg.rate_per_minute = d.rate_per_minute;
    if (b->cfg.max_job_retries <= 0)
        b->cfg.max_job_retries = d.max_job_retries;
    atomic_init(&b->stop, 0);
    atomic_init(&b->hard, 0);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->done_cv, NULL);
    b->api_url = dup_str(cfg->api_url ? cfg->api_url : d.api_url);
    b->token = dup_str(cfg->token);
    b->db_path = dup_str(cfg->db_path);
    b->inflight = px_calloc((size_t)b->cfg.queue_capacity, sizeof *b->inflight);
    b->threads = px_calloc((size_t)b->cfg.workers, sizeof *b->threads);
    int st = PX_ENOMEM;
    if (b->api_url && b->token && b->db_path && b->inflight && b->threads)
        st = px_queue_create((size_t)b->cfg.queue_capacity + 1, &b->ready);
    if (st != PX_OK) {
        px_err_set(err, st, "bot: out of memory");
        px_bot_destroy(b);
        return st;
    }
    b->cfg.api_url = b->api_url;
    b->cfg.token = b->token;
    b->cfg.db_path = b->db_path;
    if ((st = px_bot_store_open(b->db_path, &b->store, err)) != PX_OK ||
        (st = make_tg(b, &b->stop, &b->poll_tg, err)) != PX_OK ||
        (st = make_tg(b, &b->hard, &b->ctl_tg, err)) != PX_OK) {
        px_bot_destroy(b);
        return st;
    }
    /* the salt only has to differ between runs and be unknown to readers of the log */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    b->salt = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)b;
    *out = b;
    return PX_OK;
}

void px_bot_stop(px_bot *bot)
{
    if (bot)
        atomic_store(&bot->stop, 1);
}

void px_bot_destroy(px_bot *b)
{
    if (!b)
        return;
    px_tg_destroy(b->poll_tg);
    px_tg_destroy(b->ctl_tg);
    px_bot_store_close(b->store);
    px_queue_destroy(b->ready);
    while (b->chats) {
        chat_slot *c = b->chats;
        b->chats = c->next;
        while (c->head) {
            job *j = c->head;
            c->head = j->next;
            free(j);
        }
        free(c);
    }
    if (b->token)
        explicit_bzero(b->token, strlen(b->token));
    free(b->token);
    free(b->api_url);
    free(b->db_path);
    free(b->inflight);
    free(b->threads);
    pthread_cond_destroy(&b->done_cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* ---- in-flight bookkeeping (mu held) ---- */

static int inflight_has(const px_bot *b, int64_t id)
{
    for (int i = 0; i < b->ninflight; i++)
        if (b->inflight[i] == id)
            return 1;
    return 0;
}

static void inflight_remove(px_bot *b, int64_t id)
{
    for (int i = 0; i < b->ninflight; i++)
        if (b->inflight[i] == id) {
            b->inflight[i] = b->inflight[--b->ninflight];
            return;
        }
}

/* Counts a failed attempt; returns the failures so far for this update. */
static int retry_note(px_bot *b, int64_t id)
{
    for (int i = 0; i < b->nretries; i++)
        if (b->retries[i].update_id == id)
            return ++b->retries[i].failures;
    int slot = b->nretries < 64 ? b->nretries++ : (int)(id % 64);
    b->retries[slot].update_id = id;
    b->retries[slot].failures = 1;
    return 1;
}

static void retry_forget(px_bot *b, int64_t id)
{
    for (int i = 0; i < b->nretries; i++)
        if (b->retries[i].update_id == id) {
            b->retries[i] = b->retries[--b->nretries];
            return;
        }
}

/* ---- the jobs ---- */

typedef enum { OUT_SENT = 0, OUT_DROPPED, OUT_RETRY } outcome;

static const char *outcome_name(outcome o)
{
    return o == OUT_SENT ? "sent" : o == OUT_DROPPED ? "dropped" : "retry";
}

/* Maps a send's status to what happens to the update: a 4xx (other than
 * 429) will fail the same way again, so it is dropped; the rest is retried. */
static outcome send_outcome(int st, const px_err *e, char *detail, size_t cap)
{
    if (st == PX_OK)
        return OUT_SENT;
    snprintf(detail, cap, "%s", e->msg);
    return st == PX_EINVAL ? OUT_DROPPED : OUT_RETRY;
}

static outcome reply_text(px_tg *tg, const job *j, const char *text, char *detail, size_t cap)
{
    px_err e = {{0}};
    int st = px_tg_send_message(tg, j->u.chat_id, j->u.message_id, text, NULL, NULL, &e);
    return send_outcome(st, &e, detail, cap);
}

static int is_image_document(const px_tg_update *u)
{
    static const char *mimes[] = {"image/jpeg", "image/jpg", "image/png", "image/webp"};
    for (size_t i = 0; i < sizeof mimes / sizeof mimes[0]; i++)
        if (!strcasecmp(u->mime_type, mimes[i]))
            return 1;
    /* some clients send application/octet-stream: trust a known extension,
     * the decoder sniffs the bytes anyway */
    return !u->mime_type[0] || !strcasecmp(u->mime_type, "application/octet-stream")
               ? px_format_from_path(u->file_name) != PX_FMT_UNKNOWN
               : 0;
}

static const char *mime_of(px_format f)
{
    return f == PX_FMT_PNG ? "image/png" : f == PX_FMT_WEBP ? "image/webp" : "image/jpeg";
}

static outcome run_image(px_bot *b, px_tg *tg, const job *j, int *faces, char *detail, size_t cap)
{
    const px_tg_update *u = &j->u;
    char mb[64];
    snprintf(mb, sizeof mb, "%zu MB", b->cfg.max_file_bytes >> 20);
    char text[512];
    if (u->kind == PX_TG_MSG_DOCUMENT && !is_image_document(u))
        return reply_text(tg, j,
                          "That file is not an image I can work on. Send a photo, or a JPEG, PNG "
                          "or WebP image as a file.",
                          detail, cap);
    if (u->file_size > 0 && (uint64_t)u->file_size > b->cfg.max_file_bytes) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (!u->file_id[0])
        return reply_text(tg, j, "I could not find the image in that message.", detail, cap);

    px_err e = {{0}};
    px_tg_send_chat_action(tg, u->chat_id,
                           u->kind == PX_TG_MSG_PHOTO ? "upload_photo" : "upload_document", NULL,
                           NULL); /* cosmetic: a failure changes nothing */
    char path[1024];
    int64_t size = 0;
    px_tg_error info;
    int st = px_tg_get_file(tg, u->file_id, path, sizeof path, &size, &info, &e);
    if (st == PX_EINVAL && strstr(info.description, "too big")) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (st == PX_EINVAL) {
        snprintf(detail, cap, "%s", e.msg);
        return reply_text(tg, j, "Telegram would not give me that file; please send it again.",
                          detail, cap) == OUT_SENT
                   ? OUT_DROPPED
                   : OUT_RETRY;
    }
    if (st != PX_OK)
        return send_outcome(st, &e, detail, cap);
    if (size > 0 && (uint64_t)size > b->cfg.max_file_bytes) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    px_buf img = {0};
    st = px_tg_download(tg, path, b->cfg.max_file_bytes, &img, NULL, &e);
    if (st == PX_ELIMIT) {
        px_buf_free(&img);
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (st != PX_OK) {
        px_buf_free(&img);
        return send_outcome(st == PX_EINVAL ? PX_ENET : st, &e, detail, cap);
    }

    px_anon_opts o = b->cfg.anon;
    px_bot_store_get_mode(b->store, u->chat_id, b->cfg.anon.mode, &o.mode);
    /* a photo goes back as a photo (Telegram recompresses it to JPEG anyway);
     * a file keeps its own format at full quality */
    o.out_format = u->kind == PX_TG_MSG_PHOTO ? PX_FMT_JPEG : PX_FMT_UNKNOWN;
    if (u->kind == PX_TG_MSG_DOCUMENT)
        o.jpeg_quality = 95;
    px_anon_result r;
    st = px_anon_process(b->cfg.det, img.data, img.len, &o, &r, &e);
    px_buf_free(&img);
    if (st != PX_OK) {
        snprintf(detail, cap, "%s", e.msg);
        const char *why = st == PX_ELIMIT ? "That image has too many pixels for me."
                          : st == PX_ENOMEM
                              ? "I am short of memory right now; please try again in a minute."
                              : "I could not read that image. Send a photo, or a JPEG, PNG or "
                                "WebP image as a file.";
        char keep[256];
        snprintf(keep, sizeof keep, "%s", detail);
        outcome oc = reply_text(tg, j, why, detail, cap);
        if (oc == OUT_SENT)
            snprintf(detail, cap, "%s", keep);
        return oc;
    }
    *faces = r.n_faces;
    outcome oc;
    if (r.n_faces == 0) {
        oc = reply_text(tg, j,
                        "I found no face in this image, so there is nothing to hide. I am not "
                        "sending it back.",
                        detail, cap);
    } else {
        snprintf(text, sizeof text, "%d face%s hidden (%s). Nothing is kept after this reply.",
                 r.n_faces, r.n_faces == 1 ? "" : "s", px_anon_mode_name(o.mode));
        char fname[64];
        snprintf(fname, sizeof fname, "anonymized%s", px_format_extension(r.out_format));
        if (u->kind == PX_TG_MSG_PHOTO)
            st = px_tg_send_photo(tg, u->chat_id, u->message_id, r.out.data, r.out.len, fname,
                                  mime_of(r.out_format), text, NULL, NULL, &e);
        else
            st = px_tg_send_document(tg, u->chat_id, u->message_id, r.out.data, r.out.len, fname,
                                     mime_of(r.out_format), text, NULL, NULL, &e);
        oc = send_outcome(st, &e, detail, cap);
    }
    px_anon_result_free(&r);
    return oc;
}

static outcome run_text(px_bot *b, px_tg *tg, const job *j, char *detail, size_t cap)
{
    char arg[64], text[512];
    switch (px_bot_parse_command(j->u.text, arg, sizeof arg)) {
    case PX_BOT_CMD_START:
    case PX_BOT_CMD_HELP:
        return reply_text(tg, j, help_text, detail, cap);
    case PX_BOT_CMD_MODE: {
        px_conceal_mode m;
        if (!arg[0]) {
            px_bot_store_get_mode(b->store, j->u.chat_id, b->cfg.anon.mode, &m);
            snprintf(text, sizeof text,
                     "Faces in this chat are hidden with: %s. Change it with /mode "
                     "blur|pixelate|noise|solid.",
                     px_anon_mode_name(m));
        } else if (px_anon_mode_parse(arg, &m) != PX_OK) {
            snprintf(text, sizeof text,
                     "Unknown mode. Use /mode blur, /mode pixelate, /mode "
                     "noise or /mode solid.");
        } else {
            px_err e = {{0}};
            if (px_bot_store_set_mode(b->store, j->u.chat_id, m, &e) != PX_OK) {
                snprintf(detail, cap, "%s", e.msg);
                snprintf(text, sizeof text, "I could not save that setting; please try again.");
            } else {
                snprintf(text, sizeof text, "Done: faces in this chat will be hidden with %s.",
                         px_anon_mode_name(m));
            }
        }
        return reply_text(tg, j, text, detail, cap);
    }
    case PX_BOT_CMD_UNKNOWN:
        return reply_text(tg, j, "I do not know that command. /help lists what I can do.", detail,
                          cap);
    case PX_BOT_CMD_NONE:
    default:
        return reply_text(tg, j,
                          "Send me a photo and I will hide the faces in it. /help says more.",
                          detail, cap);
    }
}

static const char *kind_name(const job *j)
{
    if (j->kind == JOB_RATE_LIMITED)
        return "rate-limited";
    switch (j->u.kind) {
    case PX_TG_MSG_PHOTO:
        return "photo";
    case PX_TG_MSG_DOCUMENT:
        return "document";
    case PX_TG_MSG_TEXT:
        return "text";
    default:
        return "other";
    }
}

static void run_job(px_bot *b, px_tg *tg, job *j)
{
    double t0 = px_now_ms();
    px_log(PX_LOG_DEBUG, "bot: job update=%lld starts at %.0f ms (accepted at %.0f)",
           (long long)j->u.update_id, t0, j->t_accept);
    int faces = -1;
    char detail[512] = "";
    outcome oc;
    if (j->kind == JOB_RATE_LIMITED) {
        char text[256];
        snprintf(text, sizeof text,
                 "You are sending photos faster than I can take them (limit %d a minute). Please "
                 "wait a minute and send that one again.",
                 b->cfg.rate_per_minute);
        oc = reply_text(tg, j, text, detail, sizeof detail);
    } else if (j->u.kind == PX_TG_MSG_PHOTO || j->u.kind == PX_TG_MSG_DOCUMENT) {
        oc = run_image(b, tg, j, &faces, detail, sizeof detail);
    } else if (j->u.kind == PX_TG_MSG_TEXT) {
        oc = run_text(b, tg, j, detail, sizeof detail);
    } else {
        oc = reply_text(tg, j,
                        "I only work on photos and image files (JPEG, PNG, WebP). /help says more.",
                        detail, sizeof detail);
    }

    pthread_mutex_lock(&b->mu);
    if (oc == OUT_RETRY && retry_note(b, j->u.update_id) > b->cfg.max_job_retries)
        oc = OUT_DROPPED; /* Telegram kept failing: give up rather than loop forever */
    if (oc != OUT_RETRY)
        retry_forget(b, j->u.update_id);
    pthread_mutex_unlock(&b->mu);
    if (oc != OUT_RETRY) {
        px_err e = {{0}};
        if (px_bot_store_mark_handled(b->store, j->u.update_id, &e) != PX_OK)
            px_log(PX_LOG_ERROR, "bot: %s", e.msg);
    }
    char tag[9];
    px_bot_chat_tag(b->salt, j->u.chat_id, tag);
    double ms = px_now_ms() - t0, wait = t0 - j->t_accept;
    px_log(oc == OUT_SENT ? PX_LOG_INFO : PX_LOG_WARN,
           "bot job chat=%s update=%lld kind=%s faces=%d ms=%.0f queued_ms=%.0f outcome=%s%s%s",
           tag, (long long)j->u.update_id, kind_name(j), faces, ms, wait, outcome_name(oc),
           detail[0] ? " detail=" : "", detail);
}

typedef struct {
    px_bot *b;
    px_tg *tg;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    px_bot *b = wa->b;
    void *item;
    while (px_queue_pop(b->ready, &item, -1) == PX_OK) {
        chat_slot *c = item;
        pthread_mutex_lock(&b->mu);
        job *j = c->head;
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        int stopping = atomic_load(&b->stop);
        pthread_mutex_unlock(&b->mu);

        /* on stop, jobs not started stay unconfirmed: Telegram redelivers them
         * to the next run */
        if (!stopping)
            run_job(b, wa->tg, j);

        pthread_mutex_lock(&b->mu);
        if (!stopping)
            inflight_remove(b, j->u.update_id);
        b->pending--;
        if (c->head) {
            px_queue_try_push(b->ready, c); /* capacity covers every chat */
        } else {
            chat_slot **pp = &b->chats;
            while (*pp != c)
                pp = &(*pp)->next;
            *pp = c->next;
            free(c);
        }
        pthread_cond_broadcast(&b->done_cv);
        pthread_mutex_unlock(&b->mu);
        free(j);
    }
    px_tg_destroy(wa->tg);
    free(wa);
    return NULL;
}

/* ---- the poller ---- */

/* Appends a job to its chat (mu held). A chat that already has a slot is
 * either queued or running (popped, but its entry kept until its worker
 * ends), so appending is enough: the worker re-queues the chat when it
 * finishes. A slot is created only when the chat has no job at all, which is
 * exactly when it must be queued. */
static void enqueue(px_bot *b, job *j)
{
    chat_slot *c = b->chats;
    while (c && c->chat_id != j->u.chat_id)
        c = c->next;
    int schedule = 0;
    if (!c) {
        c = px_calloc(1, sizeof *c);
        if (!c) {
            free(j);
            return; /* stays unconfirmed; comes back with the next poll */
        }
        c->chat_id = j->u.chat_id;
        c->next = b->chats;
        b->chats = c;
        schedule = 1; /* a new slot is neither queued nor running */
    }
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    b->pending++;
    b->inflight[b->ninflight++] = j->u.update_id;
    if (schedule)
        px_queue_try_push(b->ready, c);
}

static void accept_update(px_bot *b, const px_tg_update *u)
{
    px_err e = {{0}};
    if (u->kind == PX_TG_MSG_NONE || u->chat_id == 0) {
        px_bot_store_mark_handled(b->store, u->update_id, &e); /* nothing to answer */
        return;
    }
    job *j = px_calloc(1, sizeof *j);
    if (!j)
        return; /* unconfirmed: retried at the next poll */
    j->u = *u;
    j->t_accept = px_now_ms();
    if (u->kind == PX_TG_MSG_PHOTO || u->kind == PX_TG_MSG_DOCUMENT) {
        int64_t who = u->user_id ? u->user_id : u->chat_id;
        if (px_bot_store_rate_take(b->store, who, b->cfg.rate_per_minute, (int64_t)time(NULL)) == 0)
            j->kind = JOB_RATE_LIMITED;
    }
    pthread_mutex_lock(&b->mu);
    int full = b->pending >= b->cfg.queue_capacity;
    if (!full)
        enqueue(b, j);
    pthread_mutex_unlock(&b->mu);
    if (!full)
        return;
    /* answered straight from the poller so the user hears something */
    int st = px_tg_send_message(b->ctl_tg, u->chat_id, u->message_id,
                                "I am busy right now; please try again shortly.", NULL, NULL, &e);
    char tag[9];
    px_bot_chat_tag(b->salt, u->chat_id, tag);
    px_log(PX_LOG_WARN, "bot job chat=%s update=%lld kind=%s faces=-1 ms=0 outcome=busy%s%s", tag,
           (long long)u->update_id, kind_name(j),
           st == PX_OK ? "" : " detail=", st == PX_OK ? "" : e.msg);
    if (st == PX_OK || st == PX_EINVAL)
        px_bot_store_mark_handled(b->store, u->update_id, &e);
    free(j);
}

static int64_t confirm_offset(px_bot *b, int64_t max_seen)
{
    int64_t off = max_seen > 0 ? max_seen + 1 : 0;
    for (int i = 0; i < b->ninflight; i++)
        if (b->inflight[i] < off || off == 0)
            off = b->inflight[i];
    return off;
}

static void wait_done(px_bot *b, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&b->done_cv, &b->mu, &ts);
}

static void nap(px_bot *b, int ms)
{
    for (; ms > 0 && !atomic_load(&b->stop); ms -= 20) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int px_bot_run(px_bot *b, px_err *err)
{
    if (!b)
        return px_err_set(err, PX_EINVAL, "bot: no bot");
    if (b->ran)
        return px_err_set(err, PX_EINVAL, "bot: px_bot_run called twice");
    b->ran = 1;
    px_err e = {{0}};
    static const px_tg_command cmds[] = {
        {"start", "what this bot does"},
        {"help", "how to use it, and privacy"},
        {"mode", "blur | pixelate | noise | solid: how faces are hidden"},
    };
    px_tg_error info;
    int st = px_tg_set_my_commands(b->ctl_tg, cmds, 3, &info, &e);
    if (st == PX_EINVAL && (info.error_code == 401 || info.error_code == 404))
        return px_err_set(err, PX_EINVAL, "bot: Telegram refused the token (%s)", e.msg);
    if (st != PX_OK)
        px_log(PX_LOG_WARN, "bot: setMyCommands failed (carrying on): %s", e.msg);

    int started = 0;
    for (; started < b->cfg.workers; started++) {
        worker_arg *wa = px_calloc(1, sizeof *wa);
        st = wa ? make_tg(b, &b->hard, &wa->tg, &e) : PX_ENOMEM;
        if (wa)
            wa->b = b;
        if (st != PX_OK || pthread_create(&b->threads[started], NULL, worker_main, wa) != 0) {
            if (wa)
                px_tg_destroy(wa->tg);
            free(wa);
            break;
        }
    }
    b->nthreads = started;
    int result = PX_OK;
    if (started == 0) {
        result = px_err_set(err, PX_ENOMEM, "bot: could not start any worker");
        atomic_store(&b->stop, 1);
    }
    px_log(PX_LOG_INFO, "bot: polling (%d workers, queue %d, long poll %d s)", started,
           b->cfg.queue_capacity, b->cfg.poll_timeout_s);

    int64_t max_seen = 0;
    int fails = 0;
    while (!atomic_load(&b->stop)) {
        pthread_mutex_lock(&b->mu);
        int64_t offset = confirm_offset(b, max_seen);
        pthread_mutex_unlock(&b->mu);
        px_tg_update *ups = NULL;
        int n = 0;
        st = px_tg_get_updates(b->poll_tg, offset, b->cfg.poll_timeout_s, 100, &ups, &n, &info, &e);
        if (st == PX_ECLOSED && atomic_load(&b->stop))
            break;
        if (st == PX_ECLOSED) {
            result = px_err_set(err, PX_ECLOSED,
                                "bot: Telegram answered 409 Conflict: another instance of this "
                                "bot is polling, or a webhook is set (%s)",
                                info.description);
            break;
        }
        if (st == PX_EINVAL && (info.error_code == 401 || info.error_code == 404)) {
            result = px_err_set(err, PX_EINVAL, "bot: Telegram refused the token (%s)", e.msg);
            break;
        }
        if (st != PX_OK) {
            int wait = b->cfg.backoff_ms << (fails < 6 ? fails : 6);
            fails++;
            px_log(PX_LOG_WARN, "bot: getUpdates failed, retrying in %d ms: %s", wait, e.msg);
            nap(b, wait);
            continue;
        }
        fails = 0;
        int fresh = 0;
        for (int i = 0; i < n; i++) {
            const px_tg_update *u = &ups[i];
            if (u->update_id > max_seen)
                max_seen = u->update_id;
            pthread_mutex_lock(&b->mu);
            int known = inflight_has(b, u->update_id);
            pthread_mutex_unlock(&b->mu);
            if (known || px_bot_store_is_handled(b->store, u->update_id) == 1)
                continue;
            fresh++;
            accept_update(b, u);
        }
        free(ups);
        px_log(PX_LOG_DEBUG, "bot: poll at %.0f ms: %d updates, %d new, offset %lld", px_now_ms(),
               n, fresh, (long long)offset);
        if (fresh == 0) {
            /* only updates we already work on came back: getUpdates does not
             * wait while they are unconfirmed, so wait for a job to end */
            pthread_mutex_lock(&b->mu);
            if (b->ninflight > 0 && !atomic_load(&b->stop))
                wait_done(b, 250);
            pthread_mutex_unlock(&b->mu);
        }
    }

    /* stop: workers finish what they run, skip what waits, then exit */
    atomic_store(&b->stop, 1);
    px_queue_close(b->ready);
    for (int i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
    b->nthreads = 0;
    if (result == PX_OK) {
        /* confirm what was answered; timeout 0 returns at once */
        int64_t offset = confirm_offset(b, max_seen);
        px_tg_update *ups = NULL;
        int n = 0;
        if (offset > 0 && px_tg_get_updates(b->ctl_tg, offset, 0, 1, &ups, &n, NULL, &e) != PX_OK)
            px_log(PX_LOG_WARN, "bot: final offset confirmation failed: %s", e.msg);
        free(ups);
    }
    px_log(PX_LOG_INFO, "bot: stopped");
    return result;
}

/*
 * The bot's SQLite state: which updates were answered, which were accepted
 * and still wait for their answer (pending: the durable job queue), each
 * chat's /mode, and each user's photo count in the current minute. One file, one
 * connection, WAL journal; a mutex around every use so that the
 * read-then-write of the rate limit is atomic across workers.
 *
 * The privacy promise ("nothing kept after the reply") covers images,
 * captions and file ids: a pending row holds a file id (and a command's
 * text, never a caption) only until the job is answered. Handled ids older than a
 * week are pruned at open (Telegram keeps undelivered updates for 24 hours,
 * so an older id can never come back), rate rows from past minutes too.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "px_bot.h"

struct px_bot_store {
    sqlite3 *db;
    pthread_mutex_t mu;
};

static const char *schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS handled(update_id INTEGER PRIMARY KEY, at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chat_settings(chat_id INTEGER PRIMARY KEY, mode TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rate(user_id INTEGER PRIMARY KEY, minute INTEGER NOT NULL,"
    " n INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pending(update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL,"
    " message_id INTEGER NOT NULL, user_id INTEGER NOT NULL, kind INTEGER NOT NULL,"
    " text TEXT NOT NULL, file_id TEXT NOT NULL, file_size INTEGER NOT NULL,"
    " mime TEXT NOT NULL, file_name TEXT NOT NULL, rate_limited INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, first_at INTEGER NOT NULL, next_at INTEGER NOT NULL);"
    "UPDATE pending SET next_at = 0;";

/* The file holds user and chat ids: only its owner may read it. SQLite
 * creates the -wal and -shm files with the database's mode, so creating the
 * database 0600 first (and narrowing an older, wider one and its companions)
 * covers all three. */
static int private_file(const char *path, px_err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return px_err_set(err, PX_EIO, "bot state %s: cannot open or create it", path);
    struct stat st;
    int r = PX_OK;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) != 0)
        r = px_err_set(err, PX_EIO, "bot state %s: mode %03o, cannot make it 0600", path,
                       (unsigned)(st.st_mode & 0777));
    close(fd);
    static const char *const side[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; r == PX_OK && i < sizeof side / sizeof side[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s%s", path, side[i]);
        if (stat(p, &st) == 0 && (st.st_mode & 077))
            chmod(p, st.st_mode & 0700);
    }
    return r;
}

int px_bot_store_open(const char *path, px_bot_store **out, px_err *err)
{
    *out = NULL;
    if (!path || !path[0])
        return px_err_set(err, PX_EINVAL, "bot state: no database path");
    int pr = private_file(path, err);
    if (pr != PX_OK)
        return pr;
    px_bot_store *s = px_calloc(1, sizeof *s);
    if (!s)
        return px_err_set(err, PX_ENOMEM, "bot state: out of memory");
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        px_err_set(err, PX_EIO, "bot state %s: %s", path,
                   s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sqlite3_close(s->db);
        free(s);
        return PX_EIO;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char *msg = NULL;
    char prune[256];
    long long now = (long long)time(NULL);
    snprintf(prune, sizeof prune,
             "DELETE FROM handled WHERE at < %lld; DELETE FROM rate WHERE minute < %lld;",
             now - 7 * 86400, now / 60 - 1);
    if (sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, prune, NULL, NULL, &msg) != SQLITE_OK) {
        px_err_set(err, PX_EIO, "bot state %s: %s", path, msg ? msg : "schema failed");
        sqlite3_free(msg);
        sqlite3_close(s->db);
        free(s);
        return PX_EIO;
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return PX_OK;
}

void px_bot_store_close(px_bot_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Runs a one-row query with up to two integer parameters; returns the first
 * column of the row (as *val) and 1, or 0 when no row, <0 on error. mu held. */
static int query_i64(px_bot_store *s, const char *sql, int64_t a, int64_t b, int64_t *val)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return PX_EIO;
    int np = sqlite3_bind_parameter_count(st);
    if (np >= 1)
        sqlite3_bind_int64(st, 1, a);
    if (np >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : PX_EIO;
    if (r == 1 && val)
        *val = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return r;
}

int px_bot_store_is_handled(px_bot_store *s, int64_t update_id)
{
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s, "SELECT 1 FROM handled WHERE update_id = ?1", update_id, 0, NULL);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_bot_store_mark_handled(px_bot_store *s, int64_t update_id, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s, "INSERT OR REPLACE INTO handled(update_id, at) VALUES (?1, ?2)", update_id,
                      (int64_t)time(NULL), NULL);
    if (r < 0)
        px_err_set(err, PX_EIO, "bot state: recording update %lld: %s", (long long)update_id,
                   sqlite3_errmsg(s->db));
    pthread_mutex_unlock(&s->mu);
    return r < 0 ? PX_EIO : PX_OK;
}

int px_bot_store_get_mode(px_bot_store *s, int64_t chat_id, px_conceal_mode def,
                          px_conceal_mode *mode)
{
    *mode = def;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int r = PX_EIO;
    if (sqlite3_prepare_v2(s->db, "SELECT mode FROM chat_settings WHERE chat_id = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, chat_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(st, 0);
            px_conceal_mode pm;
            if (m && px_anon_mode_parse(m, &pm) == PX_OK)
                *mode = pm;
            r = PX_OK;
        } else if (rc == SQLITE_DONE) {
            r = PX_OK;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_bot_store_set_mode(px_bot_store *s, int64_t chat_id, px_conceal_mode mode, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int r = PX_EIO;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT OR REPLACE INTO chat_settings(chat_id, mode) VALUES (?1, ?2)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, chat_id);
        sqlite3_bind_text(st, 2, px_anon_mode_name(mode), -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE)
            r = PX_OK;
    }
    if (r != PX_OK)
        px_err_set(err, PX_EIO, "bot state: saving the mode: %s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* The rate limit's read-then-write; mu held. */
static int rate_take_mu(px_bot_store *s, int64_t user_id, int limit, int64_t now_s)
{
    int64_t minute = now_s / 60, cur = 0, n = 0;
    int r = query_i64(s, "SELECT minute FROM rate WHERE user_id = ?1", user_id, 0, &cur);
    if (r == 1 && cur == minute)
        r = query_i64(s, "SELECT n FROM rate WHERE user_id = ?1", user_id, 0, &n);
    else if (r >= 0)
        n = 0, r = 1;
    if (r >= 0) {
        if (n >= limit) {
            r = 0;
        } else {
            sqlite3_stmt *st = NULL;
            r = PX_EIO;
            if (sqlite3_prepare_v2(
                    s->db, "INSERT OR REPLACE INTO rate(user_id, minute, n) VALUES (?1, ?2, ?3)",
                    -1, &st, NULL) == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, user_id);
                sqlite3_bind_int64(st, 2, minute);
                sqlite3_bind_int64(st, 3, n + 1);
                if (sqlite3_step(st) == SQLITE_DONE)
                    r = 1;
            }
            sqlite3_finalize(st);
        }
    }
    return r;
}

int px_bot_store_rate_take(px_bot_store *s, int64_t user_id, int limit, int64_t now_s)
{
    pthread_mutex_lock(&s->mu);
    int r = rate_take_mu(s, user_id, limit, now_s);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_bot_store_is_known(px_bot_store *s, int64_t update_id)
{
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s,
                      "SELECT 1 FROM handled WHERE update_id = ?1 UNION ALL "
                      "SELECT 1 FROM pending WHERE update_id = ?1",
                      update_id, 0, NULL);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Runs one statement with no parameters; 0 or PX_EIO. mu held. */
static int exec(px_bot_store *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : PX_EIO;
}

static int insert_pending(px_bot_store *s, const px_tg_update *u, int limited, int64_t now_s)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO pending(update_id, chat_id, message_id, user_id, kind, "
                           "text, file_id, file_size, mime, file_name, rate_limited, attempts, "
                           "first_at, next_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,0,?12,0)",
                           -1, &st, NULL) != SQLITE_OK)
        return PX_EIO;
    sqlite3_bind_int64(st, 1, u->update_id);
    sqlite3_bind_int64(st, 2, u->chat_id);
    sqlite3_bind_int64(st, 3, u->message_id);
    sqlite3_bind_int64(st, 4, u->user_id);
    sqlite3_bind_int(st, 5, (int)u->kind);
    /* a command's text is needed to answer it; a caption is not, so it is not kept */
    sqlite3_bind_text(st, 6, u->kind == PX_TG_MSG_TEXT ? u->text : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, u->file_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, u->file_size);
    sqlite3_bind_text(st, 9, u->mime_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, u->file_name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, limited);
    sqlite3_bind_int64(st, 12, now_s);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : PX_EIO;
    sqlite3_finalize(st);
    return r;
}

int px_bot_store_accept(px_bot_store *s, const px_tg_update *u, int rate_limit, int64_t now_s,
                        int *rate_limited, px_err *err)
{
    *rate_limited = 0;
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s,
                      "SELECT 1 FROM handled WHERE update_id = ?1 UNION ALL "
                      "SELECT 1 FROM pending WHERE update_id = ?1",
                      u->update_id, 0, NULL);
    if (r != 0) {
        pthread_mutex_unlock(&s->mu);
        if (r < 0)
            return px_err_set(err, PX_EIO, "bot state: looking up update %lld: %s",
                              (long long)u->update_id, sqlite3_errmsg(s->db));
        return 0;
    }
    r = exec(s, "BEGIN IMMEDIATE");
    if (r == 0 && (u->kind == PX_TG_MSG_PHOTO || u->kind == PX_TG_MSG_DOCUMENT)) {
        int64_t who = u->user_id ? u->user_id : u->chat_id;
        int t = rate_take_mu(s, who, rate_limit, now_s);
        if (t < 0)
            r = PX_EIO;
        *rate_limited = t == 0;
    }
    if (r == 0)
        r = insert_pending(s, u, *rate_limited, now_s);
    if (r == 0)
        r = exec(s, "COMMIT");
    if (r != 0) {
        px_err_set(err, PX_EIO, "bot state: recording update %lld: %s", (long long)u->update_id,
                   sqlite3_errmsg(s->db));
        exec(s, "ROLLBACK");
    }
    pthread_mutex_unlock(&s->mu);
    return r == 0 ? 1 : PX_EIO;
}

int px_bot_store_finish(px_bot_store *s, int64_t update_id, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int r = exec(s, "BEGIN IMMEDIATE");
    if (r == 0 && query_i64(s, "DELETE FROM pending WHERE update_id = ?1", update_id, 0, NULL) < 0)
        r = PX_EIO;
    if (r == 0 && query_i64(s, "INSERT OR REPLACE INTO handled(update_id, at) VALUES (?1, ?2)",
                            update_id, (int64_t)time(NULL), NULL) < 0)
        r = PX_EIO;
    if (r == 0)
        r = exec(s, "COMMIT");
    if (r != 0) {
        px_err_set(err, PX_EIO, "bot state: finishing update %lld: %s", (long long)update_id,
                   sqlite3_errmsg(s->db));
        exec(s, "ROLLBACK");
    }
    pthread_mutex_unlock(&s->mu);
    return r == 0 ? PX_OK : PX_EIO;
}

int px_bot_store_defer(px_bot_store *s, int64_t update_id, int64_t next_at_s, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s,
                      "UPDATE pending SET attempts = attempts + 1, next_at = ?2 "
                      "WHERE update_id = ?1",
                      update_id, next_at_s, NULL);
    if (r < 0)
        px_err_set(err, PX_EIO, "bot state: deferring update %lld: %s", (long long)update_id,
                   sqlite3_errmsg(s->db));
    pthread_mutex_unlock(&s->mu);
    return r < 0 ? PX_EIO : PX_OK;
}

static void column_str(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const char *v = (const char *)sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", v ? v : "");
}

int px_bot_store_due(px_bot_store *s, int64_t now_s, const int64_t *skip, int nskip,
                     px_bot_pending *out, int max)
{
    if (max <= 0)
        return 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT update_id, chat_id, message_id, user_id, kind, text, file_id, "
                           "file_size, mime, file_name, rate_limited, attempts, first_at "
                           "FROM pending WHERE next_at <= ?1 ORDER BY update_id",
                           -1, &st, NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&s->mu);
        return PX_EIO;
    }
    sqlite3_bind_int64(st, 1, now_s);
    int rc;
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int skipped = 0;
        for (int i = 0; i < nskip && !skipped; i++)
            skipped = skip[i] == id;
        if (skipped)
            continue;
        px_bot_pending *p = &out[n++];
        memset(p, 0, sizeof *p);
        p->u.update_id = id;
        p->u.chat_id = sqlite3_column_int64(st, 1);
        p->u.message_id = sqlite3_column_int64(st, 2);
        p->u.user_id = sqlite3_column_int64(st, 3);
        int kind = sqlite3_column_int(st, 4);
        p->u.kind = kind >= PX_TG_MSG_NONE && kind <= PX_TG_MSG_OTHER ? (px_tg_msg_kind)kind
                                                                      : PX_TG_MSG_OTHER;
        column_str(st, 5, p->u.text, sizeof p->u.text);
        column_str(st, 6, p->u.file_id, sizeof p->u.file_id);
        p->u.file_size = sqlite3_column_int64(st, 7);
        column_str(st, 8, p->u.mime_type, sizeof p->u.mime_type);
        column_str(st, 9, p->u.file_name, sizeof p->u.file_name);
        p->rate_limited = sqlite3_column_int(st, 10);
        p->attempts = sqlite3_column_int(st, 11);
        p->first_at = sqlite3_column_int64(st, 12);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return n;
}

int px_bot_store_next_due(px_bot_store *s, int64_t now_s, int64_t *at_s)
{
    pthread_mutex_lock(&s->mu);
    int r = query_i64(s, "SELECT MIN(next_at) FROM pending WHERE next_at > ?1 HAVING COUNT(*) > 0",
                      now_s, 0, at_s);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/*
 * The bot's SQLite state: which updates were answered, each chat's /mode,
 * and each user's photo count in the current minute. One file, one
 * connection, WAL journal; a mutex around every use so that the
 * read-then-write of the rate limit is atomic across workers.
 *
 * Nothing here identifies a photo: the privacy promise ("nothing kept after
 * the reply") covers images, captions and file ids. Handled ids older than a
 * week are pruned at open (Telegram keeps undelivered updates for 24 hours,
 * so an older id can never come back), rate rows from past minutes too.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    " n INTEGER NOT NULL);";

int px_bot_store_open(const char *path, px_bot_store **out, px_err *err)
{
    *out = NULL;
    if (!path || !path[0])
        return px_err_set(err, PX_EINVAL, "bot state: no database path");
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

int px_bot_store_rate_take(px_bot_store *s, int64_t user_id, int limit, int64_t now_s)
{
    int64_t minute = now_s / 60, cur = 0, n = 0;
    pthread_mutex_lock(&s->mu);
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
    pthread_mutex_unlock(&s->mu);
    return r;
}

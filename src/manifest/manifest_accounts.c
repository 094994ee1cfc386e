/*
 * Reviewer accounts and their login sessions, in the pool's manifest (see
 * px_manifest.h, "Accounts"). Neither a login token nor a session id is
 * stored: only their SHA-256, so a copy of the manifest lets nobody log in.
 * Tokens are 32 random bytes from getrandom(), shown once in hex by
 * `pixpipe serve reviewer add`.
 *
 * Sessions live here rather than in the server's memory so that a restart
 * of `pixpipe serve` does not log the whole team out, and removing an
 * account (another process: the CLI) ends its sessions at once.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int mf_step_accounts(struct px_manifest *s, char **msg);
int mf_step_accounts(struct px_manifest *s, char **msg)
{
    return sqlite3_exec(
        s->db,
        "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
        " role TEXT NOT NULL CHECK(role IN ('reviewer','admin')),"
        " token_sha256 TEXT UNIQUE NOT NULL, created_at TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS sessions(sid_sha256 TEXT PRIMARY KEY,"
        " account_id INTEGER NOT NULL, expires REAL NOT NULL, created_at TEXT NOT NULL);"
        "CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions(account_id);",
        NULL, NULL, msg);
}

int px_manifest_sha256_hex(const char *text, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return PX_ENOMEM;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return PX_OK;
}

int px_manifest_random_hex(char *out, size_t nbytes, px_err *err)
{
    unsigned char b[64];
    if (nbytes > sizeof b)
        return px_err_set(err, PX_EINVAL, "random: at most %zu bytes", sizeof b);
    size_t got = 0;
    while (got < nbytes) {
        ssize_t k = getrandom(b + got, nbytes - got, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return px_err_set(err, PX_EIO, "no random bytes from the system: %s",
                              strerror(errno));
        got += (size_t)k;
    }
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return PX_OK;
}

int px_manifest_account_name_ok(const char *name, px_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64)
        return px_err_set(err, PX_EINVAL, "reviewer name: expected 1..64 characters, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == ' ' || c == '.' || c == '_' || c == '-';
        if (!ok)
            return px_err_set(err, PX_EINVAL,
                              "reviewer name: character %zu is not a letter, digit, space, "
                              "'.', '_' or '-'",
                              i + 1);
    }
    if (name[0] == ' ' || name[n - 1] == ' ')
        return px_err_set(err, PX_EINVAL, "reviewer name: no leading or trailing spaces");
    return PX_OK;
}

int px_manifest_account_add(px_manifest *s, const char *name, int admin, char token[65],
                            int64_t *id, px_err *err)
{
    int st = px_manifest_account_name_ok(name, err);
    if (st)
        return st;
    char hash[65], now[32], fresh[65];
    if ((st = px_manifest_random_hex(fresh, 32, err)) != PX_OK)
        return st;
    if (px_manifest_sha256_hex(fresh, hash) != PX_OK)
        return px_err_set(err, PX_ENOMEM, "account: cannot hash the token");
    px_manifest_now_iso(now, sizeof now);
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q;
    st = mf_prep(s, "SELECT 1 FROM accounts WHERE name = ?", &q, err);
    if (!st) {
        mf_bind_text(q, 1, name);
        int exists = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
        if (exists)
            st = px_err_set(err, PX_EINVAL, "reviewer '%s' exists already (remove it first)",
                            name);
    }
    pthread_mutex_unlock(&s->mu);
    if (st)
        return st;
    st = mf_run_stmt(s, err, "add account", id, NULL,
                     "INSERT INTO accounts(name, role, token_sha256, created_at) "
                     "VALUES (?, ?, ?, ?)",
                     "tttt", name, admin ? "admin" : "reviewer", hash, now);
    if (!st)
        memcpy(token, fresh, sizeof fresh); /* the caller's buffer only changes on success */
    return st;
}

int px_manifest_account_remove(px_manifest *s, const char *name, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int st = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    sqlite3_stmt *q = NULL;
    int64_t id = 0;
    if (!st && !(st = mf_prep(s, "SELECT id FROM accounts WHERE name = ?", &q, err))) {
        mf_bind_text(q, 1, name);
        if (sqlite3_step(q) == SQLITE_ROW)
            id = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (!id)
            st = px_err_set(err, PX_ENOTFOUND, "no reviewer named '%s'", name ? name : "");
    }
    static const char *const dels[] = {"DELETE FROM sessions WHERE account_id = ?",
                                       "DELETE FROM leases WHERE account_id = ?",
                                       "DELETE FROM accounts WHERE id = ?"};
    for (size_t i = 0; !st && i < sizeof dels / sizeof dels[0]; i++) {
        if ((st = mf_prep(s, dels[i], &q, err)) != PX_OK)
            break;
        sqlite3_bind_int64(q, 1, id);
        st = mf_step_done(s, q, err, "remove account");
    }
    if (!st)
        st = mf_exec_locked(s, "COMMIT", err);
    else
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return st;
}

static void account_from_row(sqlite3_stmt *q, px_manifest_account *a)
{
    memset(a, 0, sizeof *a);
    a->id = sqlite3_column_int64(q, 0);
    snprintf(a->name, sizeof a->name, "%s", (const char *)sqlite3_column_text(q, 1));
    a->admin = !strcmp((const char *)sqlite3_column_text(q, 2), "admin");
    snprintf(a->created_at, sizeof a->created_at, "%s", (const char *)sqlite3_column_text(q, 3));
}

int px_manifest_account_list(px_manifest *s, px_manifest_account **out, size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    int total = 0;
    int st = px_manifest_account_count(s, &total, err);
    if (st || total == 0)
        return st;
    px_manifest_account *v = px_calloc((size_t)total, sizeof *v);
    if (!v)
        return px_err_set(err, PX_ENOMEM, "accounts: out of memory");
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q = NULL;
    st = mf_prep(s, "SELECT id, name, role, created_at FROM accounts ORDER BY name", &q, err);
    size_t k = 0;
    int rc = SQLITE_DONE;
    /* an account added since the count waits for the next listing */
    while (!st && k < (size_t)total && (rc = sqlite3_step(q)) == SQLITE_ROW)
        account_from_row(q, &v[k++]);
    if (!st && rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = mf_db_err(s, err, "list accounts");
    if (q)
        sqlite3_finalize(q);
    pthread_mutex_unlock(&s->mu);
    if (st) {
        free(v);
        return st;
    }
    *out = v;
    *n = k;
    return PX_OK;
}

/* One account row found by `sql` with one text parameter and one optional
 * real parameter (now). */
static int account_lookup(px_manifest *s, const char *sql, const char *key, double now,
                          px_manifest_account *out, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q;
    int st = mf_prep(s, sql, &q, err);
    if (!st) {
        mf_bind_text(q, 1, key);
        if (sqlite3_bind_parameter_count(q) > 1)
            sqlite3_bind_double(q, 2, now);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            account_from_row(q, out);
        else if (rc == SQLITE_DONE)
            st = PX_ENOTFOUND;
        else
            st = mf_db_err(s, err, "find account");
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int px_manifest_account_by_token(px_manifest *s, const char *token, px_manifest_account *out,
                                 px_err *err)
{
    char hash[65];
    if (!token || !*token || strlen(token) > 256 || px_manifest_sha256_hex(token, hash))
        return PX_ENOTFOUND;
    return account_lookup(s,
                          "SELECT id, name, role, created_at FROM accounts WHERE token_sha256 = ?",
                          hash, 0, out, err);
}

int px_manifest_account_count(px_manifest *s, int *n, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q;
    int st = mf_prep(s, "SELECT COUNT(*) FROM accounts", &q, err);
    if (!st) {
        *n = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int px_manifest_session_add(px_manifest *s, const char *sid, int64_t account_id, double expires,
                            px_err *err)
{
    char hash[65], now[32];
    if (px_manifest_sha256_hex(sid, hash))
        return px_err_set(err, PX_ENOMEM, "session: cannot hash");
    px_manifest_now_iso(now, sizeof now);
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q;
    int st = mf_prep(s, "INSERT INTO sessions(sid_sha256, account_id, expires, created_at) "
                        "VALUES (?, ?, ?, ?)", &q, err);
    if (!st) {
        mf_bind_text(q, 1, hash);
        sqlite3_bind_int64(q, 2, account_id);
        sqlite3_bind_double(q, 3, expires);
        mf_bind_text(q, 4, now);
        st = mf_step_done(s, q, err, "add session");
    }
    /* expired sessions go when new ones come */
    if (!st && !mf_prep(s, "DELETE FROM sessions WHERE expires < ?", &q, err)) {
        sqlite3_bind_double(q, 1, expires - 7 * 86400.0);
        mf_step_done(s, q, err, "drop old sessions");
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int px_manifest_session_get(px_manifest *s, const char *sid, double now, px_manifest_account *out,
                            px_err *err)
{
    char hash[65];
    if (!sid || !*sid || strlen(sid) > 256 || px_manifest_sha256_hex(sid, hash))
        return PX_ENOTFOUND;
    return account_lookup(s,
                          "SELECT a.id, a.name, a.role, a.created_at FROM sessions s JOIN accounts"
                          " a ON a.id = s.account_id WHERE s.sid_sha256 = ? AND s.expires > ?",
                          hash, now, out, err);
}

int px_manifest_session_remove(px_manifest *s, const char *sid, px_err *err)
{
    char hash[65];
    if (!sid || px_manifest_sha256_hex(sid, hash))
        return PX_OK;
    return mf_run_stmt(s, err, "remove session", NULL, NULL,
                       "DELETE FROM sessions WHERE sid_sha256 = ?", "t", hash);
}

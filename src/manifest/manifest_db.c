/*
 * The pool manifest on SQLite (see px_manifest.h for the schema and contract).
 *
 * One connection per handle, guarded by a mutex so any thread may call in;
 * statements are prepared per call (they are cheap next to an image render
 * and it keeps the code obvious). Writes that must agree (image row + job
 * done, prompt + job) happen in one BEGIN IMMEDIATE transaction so a kill -9
 * leaves either both or neither. synchronous=NORMAL in WAL mode: a process
 * crash loses nothing committed; only a power cut may lose the last commits,
 * which resume then simply redoes.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *k_schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS campaigns(id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " json TEXT NOT NULL, created_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS quotas(theme_slug TEXT NOT NULL, type TEXT NOT NULL,"
    " theme TEXT NOT NULL, quota INTEGER NOT NULL, campaign_id INTEGER,"
    " PRIMARY KEY(theme_slug, type));"
    "CREATE TABLE IF NOT EXISTS prompts(id INTEGER PRIMARY KEY, theme_slug TEXT NOT NULL,"
    " type TEXT NOT NULL, text TEXT NOT NULL, writer TEXT, subtopic TEXT, created_at TEXT);"
    "CREATE TABLE IF NOT EXISTS jobs(id INTEGER PRIMARY KEY, theme TEXT NOT NULL,"
    " theme_slug TEXT NOT NULL, type TEXT NOT NULL, prompt_id INTEGER REFERENCES prompts(id),"
    " prompt TEXT NOT NULL, negative TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL,"
    " width INTEGER, height INTEGER, steps INTEGER, cfg REAL, sampler TEXT, backend TEXT,"
    " model TEXT, status TEXT NOT NULL DEFAULT 'pending'"
    " CHECK(status IN ('pending','running','done','failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0, server TEXT, error TEXT, created_at TEXT,"
    " started_at TEXT, finished_at TEXT, render_ms REAL, rerender_of INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS jobs_by_slot ON jobs(theme_slug, type, status);"
    "CREATE TABLE IF NOT EXISTS images(id INTEGER PRIMARY KEY, job_id INTEGER UNIQUE NOT NULL"
    " REFERENCES jobs(id), theme_slug TEXT NOT NULL, type TEXT NOT NULL, path TEXT NOT NULL,"
    " sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, width INTEGER, height INTEGER,"
    " phash INTEGER, status TEXT NOT NULL CHECK(status IN ('accepted','flagged','rejected')),"
    " reason TEXT NOT NULL DEFAULT '', checks TEXT NOT NULL DEFAULT '{}', created_at TEXT);"
    "CREATE INDEX IF NOT EXISTS images_by_slot ON images(theme_slug, type, status);"
    "CREATE TABLE IF NOT EXISTS verdicts(id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL"
    " REFERENCES images(id), reviewer TEXT NOT NULL, verdict TEXT NOT NULL"
    " CHECK(verdict IN ('approve','reject','skip')), reason TEXT NOT NULL DEFAULT '',"
    " created_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS verdicts_by_image ON verdicts(image_id, id);";

void px_manifest_now_iso(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && cap > 0)
        buf[0] = '\0';
}

int mf_db_err(px_manifest *s, px_err *err, const char *what)
{
    int code = sqlite3_errcode(s->db);
    int st = PX_EIO;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        st = PX_ECORRUPT;
    else if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        st = PX_EBUSY;
    else if (code == SQLITE_NOMEM)
        st = PX_ENOMEM;
    else if (code == SQLITE_CONSTRAINT)
        st = PX_EINVAL;
    return px_err_set(err, st, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

char *mf_dupstr(const char *p)
{
    if (!p)
        p = "";
    size_t n = strlen(p);
    char *d = px_malloc(n + 1);
    if (d)
        memcpy(d, p, n + 1);
    return d;
}

char *mf_col_str(sqlite3_stmt *st, int i)
{
    return mf_dupstr((const char *)sqlite3_column_text(st, i));
}

int px_manifest_open(const char *db_path, int readonly, px_manifest **out, px_err *err)
{
    *out = NULL;
    if (!db_path || !*db_path)
        return px_err_set(err, PX_EINVAL, "manifest: empty database path");
    px_manifest *s = px_calloc(1, sizeof *s);
    if (!s || !(s->path = mf_dupstr(db_path))) {
        free(s);
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", db_path);
    }
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX; /* our own mutex serialises calls */
    int rc = sqlite3_open_v2(db_path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        int st = (readonly && rc == SQLITE_CANTOPEN) ? PX_ENOTFOUND : PX_EIO;
        px_err_set(err, st, "%s: cannot open manifest: %s", db_path,
                   s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sqlite3_close(s->db);
        free(s->path);
        free(s);
        return st;
    }
    pthread_mutex_init(&s->mu, NULL);
    sqlite3_busy_timeout(s->db, 5000);
    int st = PX_OK;
    if (!readonly) {
        char *msg = NULL;
        rc = sqlite3_exec(s->db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          " PRAGMA foreign_keys=ON; PRAGMA cache_size=-16384;",
                          NULL, NULL, &msg);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->db, k_schema, NULL, NULL, &msg);
        if (rc == SQLITE_OK)
            rc = mf_extend(s, &msg);
        if (rc != SQLITE_OK) {
            st = px_err_set(err, rc == SQLITE_NOTADB ? PX_ECORRUPT : PX_EIO,
                            "%s: cannot set up manifest: %s", db_path, msg ? msg : "?");
            sqlite3_free(msg);
        }
    }
    if (st == PX_OK) {
        char v[32];
        px_err e2;
        int g = px_manifest_meta_get(s, "schema_version", v, sizeof v, &e2);
        if (g == PX_ENOTFOUND && !readonly) {
            char b[16];
            snprintf(b, sizeof b, "%d", PX_MANIFEST_SCHEMA_VERSION);
            st = px_manifest_meta_set(s, "schema_version", b, err);
        } else if (g == PX_OK && atoi(v) > PX_MANIFEST_SCHEMA_VERSION) {
            st = px_err_set(err, PX_EUNSUPPORTED,
                            "%s: manifest schema version %s is newer than this pixpipe (%d)",
                            db_path, v, PX_MANIFEST_SCHEMA_VERSION);
        } else if (g != PX_OK && g != PX_ENOTFOUND) {
            st = px_err_set(err, g, "%s", e2.msg);
        }
    }
    if (st != PX_OK) {
        px_manifest_close(s);
        return st;
    }
    *out = s;
    return PX_OK;
}

void px_manifest_close(px_manifest *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

const char *px_manifest_path(const px_manifest *s)
{
    return s ? s->path : "";
}

/* Prepares sql, reporting failure through err. Caller holds the mutex. */
int mf_prep(px_manifest *s, const char *sql, sqlite3_stmt **st, px_err *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return mf_db_err(s, err, "prepare");
    return PX_OK;
}

int mf_exec_locked(px_manifest *s, const char *sql, px_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return mf_db_err(s, err, sql);
    return PX_OK;
}

void mf_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_TRANSIENT);
}

/* Runs a statement that returns no rows. */
int mf_step_done(px_manifest *s, sqlite3_stmt *st, px_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    int r = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? PX_OK : mf_db_err(s, err, what);
    sqlite3_finalize(st);
    return r;
}

/* Runs one statement that returns no rows, under the lock: binds the varargs
 * by `types`, one letter per ? in order ('t' const char * (NULL binds ""),
 * 'i' int, 'I' int64_t). *rowid (may be NULL) receives the last insert id,
 * *changes (may be NULL) the number of rows changed. `what` names the action
 * in errors. */
int mf_run_stmt(px_manifest *s, px_err *err, const char *what, int64_t *rowid, int *changes,
                    const char *sql, const char *types, ...)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, sql, &st, err);
    if (r == PX_OK) {
        va_list ap;
        va_start(ap, types);
        for (int i = 0; types[i]; i++) {
            if (types[i] == 't')
                mf_bind_text(st, i + 1, va_arg(ap, const char *));
            else if (types[i] == 'i')
                sqlite3_bind_int(st, i + 1, va_arg(ap, int));
            else
                sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
        va_end(ap);
        r = mf_step_done(s, st, err, what);
        if (r == PX_OK && rowid)
            *rowid = sqlite3_last_insert_rowid(s->db);
        if (r == PX_OK && changes)
            *changes = sqlite3_changes(s->db);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_manifest_meta_get(px_manifest *s, const char *key, char *buf, size_t cap, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, "SELECT value FROM meta WHERE key=?", &st, err);
    if (r == PX_OK) {
        mf_bind_text(st, 1, key);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            snprintf(buf, cap, "%s", v ? v : "");
        } else if (rc == SQLITE_DONE) {
            r = px_err_set(err, PX_ENOTFOUND, "%s: no setting '%s'", s->path, key);
        } else {
            r = mf_db_err(s, err, "read meta");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_manifest_meta_set(px_manifest *s, const char *key, const char *value, px_err *err)
{
    return mf_run_stmt(s, err, "write meta", NULL, NULL,
                    "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", "tt", key, value);
}

/* ---- images ------------------------------------------------------------- */

void px_manifest_image_clear(px_manifest_image *m)
{
    if (!m)
        return;
    char **strs[] = {&m->theme,   &m->theme_slug, &m->type,       &m->path,    &m->sha256,
                     &m->status,  &m->reason,     &m->checks,     &m->prompt,  &m->negative,
                     &m->backend, &m->model,      &m->created_at, &m->verdict, &m->verdict_by};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    memset(m, 0, sizeof *m);
}

void px_manifest_images_free(px_manifest_image *imgs, size_t n)
{
    if (!imgs)
        return;
    for (size_t i = 0; i < n; i++)
        px_manifest_image_clear(&imgs[i]);
    free(imgs);
}

#define IMAGE_COLS                                                                                 \
    "SELECT i.id, j.theme, i.theme_slug, i.type, i.path, i.sha256, i.bytes, i.width, i.height,"    \
    " i.phash, i.status, i.reason, i.checks, j.prompt, j.negative, j.seed, j.backend, j.model,"    \
    " i.created_at, COALESCE(v.verdict, ''), COALESCE(v.reviewer, '')"                             \
    " FROM images i JOIN jobs j ON j.id = i.job_id"                                                \
    " LEFT JOIN verdicts v ON v.id = (SELECT MAX(id) FROM verdicts WHERE image_id = i.id)"

static int read_image_row(sqlite3_stmt *st, px_manifest_image *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(st, 0);
    m->theme = mf_col_str(st, 1);
    m->theme_slug = mf_col_str(st, 2);
    m->type = mf_col_str(st, 3);
    m->path = mf_col_str(st, 4);
    m->sha256 = mf_col_str(st, 5);
    m->bytes = sqlite3_column_int64(st, 6);
    m->width = sqlite3_column_int(st, 7);
    m->height = sqlite3_column_int(st, 8);
    m->phash = (uint64_t)sqlite3_column_int64(st, 9);
    m->status = mf_col_str(st, 10);
    m->reason = mf_col_str(st, 11);
    m->checks = mf_col_str(st, 12);
    m->prompt = mf_col_str(st, 13);
    m->negative = mf_col_str(st, 14);
    m->seed = sqlite3_column_int64(st, 15);
    m->backend = mf_col_str(st, 16);
    m->model = mf_col_str(st, 17);
    m->created_at = mf_col_str(st, 18);
    m->verdict = mf_col_str(st, 19);
    m->verdict_by = mf_col_str(st, 20);
    if (!m->theme || !m->theme_slug || !m->type || !m->path || !m->sha256 || !m->status ||
        !m->reason || !m->checks || !m->prompt || !m->negative || !m->backend || !m->model ||
        !m->created_at || !m->verdict || !m->verdict_by) {
        px_manifest_image_clear(m);
        return PX_ENOMEM;
    }
    return PX_OK;
}

int px_manifest_list_images(px_manifest *s, const px_manifest_filter *f, px_manifest_image **out,
                            size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    px_manifest_filter def = {0};
    if (!f)
        f = &def;
    int limit = f->limit <= 0 ? 100 : (f->limit > 10000 ? 10000 : f->limit);
    if (f->verdict < PX_VERDICT_FILTER_ANY || f->verdict > PX_VERDICT_FILTER_SKIP)
        return px_err_set(err, PX_EINVAL, "%s: unknown verdict filter %d", s->path, f->verdict);
    char sql[1024];
    static const char *vf[] = {"", " AND v.id IS NULL", " AND v.verdict = 'approve'",
                               " AND v.verdict = 'reject'", " AND v.verdict = 'skip'"};
    snprintf(sql, sizeof sql,
             IMAGE_COLS " WHERE i.id > ?1 AND (?2 IS NULL OR i.theme_slug = ?2)"
                        " AND (?3 IS NULL OR i.type = ?3) AND (?4 IS NULL OR i.status = ?4)%s"
                        " ORDER BY i.id LIMIT ?5",
             vf[f->verdict]);
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, sql, &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, f->after_id);
        if (f->theme_slug)
            mf_bind_text(st, 2, f->theme_slug);
        if (f->type)
            mf_bind_text(st, 3, f->type);
        if (f->status)
            mf_bind_text(st, 4, f->status);
        sqlite3_bind_int(st, 5, limit);
        px_manifest_image *v = px_calloc((size_t)limit, sizeof *v);
        size_t k = 0;
        if (!v)
            r = px_err_set(err, PX_ENOMEM, "%s: out of memory listing images", s->path);
        int rc;
        while (r == PX_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (read_image_row(st, &v[k]) != PX_OK)
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory listing images", s->path);
            else
                k++;
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "list images");
        sqlite3_finalize(st);
        if (r != PX_OK || k == 0) {
            px_manifest_images_free(v, k);
        } else {
            *out = v;
            *n = k;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Reads the one row `sql` (with a single ? for id) selects into out with
 * read; `what` names the thing in errors ("image", "job"). Takes the lock. */
static int get_by_id(px_manifest *s, const char *sql, int64_t id,
                     int (*read)(sqlite3_stmt *, void *), void *out, const char *what, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, sql, &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            r = read(st, out) == PX_OK ? PX_OK
                                       : px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
        else if (rc == SQLITE_DONE)
            r = px_err_set(err, PX_ENOTFOUND, "%s: no %s with id %lld", s->path, what,
                           (long long)id);
        else
            r = mf_db_err(s, err, what);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int read_image_any(sqlite3_stmt *st, void *out)
{
    return read_image_row(st, out);
}

int px_manifest_get_image(px_manifest *s, int64_t id, px_manifest_image *out, px_err *err)
{
    memset(out, 0, sizeof *out);
    return get_by_id(s, IMAGE_COLS " WHERE i.id = ?", id, read_image_any, out, "image", err);
}

/* ---- verdicts ----------------------------------------------------------- */

int px_manifest_add_verdict(px_manifest *s, int64_t image_id, const char *reviewer,
                            const char *verdict, const char *reason, int64_t *id, px_err *err)
{
    if (!verdict ||
        (strcmp(verdict, "approve") && strcmp(verdict, "reject") && strcmp(verdict, "skip")))
        return px_err_set(err, PX_EINVAL, "verdict: expected approve, reject or skip, got '%s'",
                          verdict ? verdict : "(null)");
    if (!reviewer || !*reviewer || strlen(reviewer) > 128)
        return px_err_set(err, PX_EINVAL, "verdict: reviewer must be 1..128 bytes");
    if (reason && strlen(reason) > 2000)
        return px_err_set(err, PX_ELIMIT, "verdict: reason longer than 2000 bytes");
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    int changes = 0;
    int r = mf_run_stmt(s, err, "add verdict", id, &changes,
                     "INSERT INTO verdicts(image_id, reviewer, verdict, reason, created_at)"
                     " SELECT id, ?2, ?3, ?4, ?5 FROM images WHERE id = ?1",
                     "Itttt", image_id, reviewer, verdict, reason, (const char *)now);
    if (r == PX_OK && changes == 0)
        r = px_err_set(err, PX_ENOTFOUND, "%s: no image with id %lld", s->path,
                       (long long)image_id);
    return r;
}

void px_manifest_verdicts_free(px_manifest_verdict *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].reviewer);
        free(v[i].verdict);
        free(v[i].reason);
        free(v[i].created_at);
    }
    free(v);
}

int px_manifest_list_verdicts(px_manifest *s, int64_t image_id, px_manifest_verdict **out,
                              size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s,
                 "SELECT id, image_id, reviewer, verdict, reason, created_at FROM verdicts"
                 " WHERE ?1 = 0 OR image_id = ?1 ORDER BY id",
                 &st, err);
    px_manifest_verdict *v = NULL;
    size_t k = 0, cap = 0;
    int rc = SQLITE_DONE;
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, image_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 16;
                px_manifest_verdict *nv = px_realloc(v, nc * sizeof *nv);
                if (!nv) {
                    r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                    break;
                }
                v = nv;
                cap = nc;
            }
            px_manifest_verdict *e = &v[k++];
            e->id = sqlite3_column_int64(st, 0);
            e->image_id = sqlite3_column_int64(st, 1);
            e->reviewer = mf_col_str(st, 2);
            e->verdict = mf_col_str(st, 3);
            e->reason = mf_col_str(st, 4);
            e->created_at = mf_col_str(st, 5);
            if (!e->reviewer || !e->verdict || !e->reason || !e->created_at) {
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                break;
            }
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "list verdicts");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK || k == 0) {
        px_manifest_verdicts_free(v, k);
        return r;
    }
    *out = v;
    *n = k;
    return PX_OK;
}

/* ---- stats -------------------------------------------------------------- */

int px_manifest_stats(px_manifest *s, px_manifest_stat **out, size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    static const char *sql =
        "WITH slots AS (SELECT theme_slug, type FROM quotas UNION SELECT theme_slug, type FROM "
        "jobs),"
        " lv AS (SELECT v.image_id, v.verdict FROM verdicts v"
        "        WHERE v.id = (SELECT MAX(id) FROM verdicts w WHERE w.image_id = v.image_id))"
        " SELECT s.theme_slug, s.type,"
        "  COALESCE((SELECT theme FROM quotas q WHERE q.theme_slug=s.theme_slug AND q.type=s.type),"
        "           (SELECT theme FROM jobs j WHERE j.theme_slug=s.theme_slug LIMIT 1), "
        "s.theme_slug),"
        "  COALESCE((SELECT quota FROM quotas q WHERE q.theme_slug=s.theme_slug AND "
        "q.type=s.type), 0),"
        "  (SELECT COUNT(*) FROM images i WHERE i.theme_slug=s.theme_slug AND i.type=s.type"
        "    AND i.status='accepted'),"
        "  (SELECT COUNT(*) FROM images i WHERE i.theme_slug=s.theme_slug AND i.type=s.type"
        "    AND i.status='flagged'),"
        "  (SELECT COUNT(*) FROM images i WHERE i.theme_slug=s.theme_slug AND i.type=s.type"
        "    AND i.status='rejected'),"
        "  (SELECT COUNT(*) FROM jobs j WHERE j.theme_slug=s.theme_slug AND j.type=s.type"
        "    AND j.status IN ('pending','running') AND j.rerender_of = 0),"
        "  (SELECT COUNT(*) FROM jobs j WHERE j.theme_slug=s.theme_slug AND j.type=s.type"
        "    AND j.status='failed'),"
        "  (SELECT COUNT(*) FROM images i JOIN lv ON lv.image_id=i.id WHERE "
        "i.theme_slug=s.theme_slug"
        "    AND i.type=s.type AND lv.verdict='approve'),"
        "  (SELECT COUNT(*) FROM images i JOIN lv ON lv.image_id=i.id WHERE "
        "i.theme_slug=s.theme_slug"
        "    AND i.type=s.type AND lv.verdict='reject'),"
        "  (SELECT COUNT(*) FROM images i JOIN lv ON lv.image_id=i.id WHERE "
        "i.theme_slug=s.theme_slug"
        "    AND i.type=s.type AND lv.verdict='skip'),"
        "  (SELECT COUNT(*) FROM images i WHERE i.theme_slug=s.theme_slug AND i.type=s.type"
        "    AND i.status IN ('accepted','flagged')"
        "    AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.image_id=i.id))"
        " FROM slots s ORDER BY s.theme_slug, s.type";
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, sql, &st, err);
    px_manifest_stat *v = NULL;
    size_t k = 0, cap = 0;
    if (r == PX_OK) {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 64;
                px_manifest_stat *nv = px_realloc(v, nc * sizeof *nv);
                if (!nv) {
                    r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                    break;
                }
                v = nv;
                cap = nc;
            }
            px_manifest_stat *e = &v[k++];
            memset(e, 0, sizeof *e);
            snprintf(e->theme_slug, sizeof e->theme_slug, "%s", sqlite3_column_text(st, 0));
            snprintf(e->type, sizeof e->type, "%s", sqlite3_column_text(st, 1));
            snprintf(e->theme, sizeof e->theme, "%s", sqlite3_column_text(st, 2));
            int *f[] = {&e->quota,        &e->accepted,    &e->flagged,  &e->rejected,
                        &e->jobs_pending, &e->jobs_failed, &e->approved, &e->expert_rejected,
                        &e->skipped,      &e->unreviewed};
            for (int i = 0; i < 10; i++)
                *f[i] = sqlite3_column_int(st, 3 + i);
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "stats");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK || k == 0) {
        free(v);
        return r;
    }
    *out = v;
    *n = k;
    return PX_OK;
}

/* ---- campaign, quotas, prompts ------------------------------------------ */

int px_manifest_add_campaign(px_manifest *s, const char *name, const char *json, int64_t *id,
                             px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    return mf_run_stmt(s, err, "add campaign", id, NULL,
                    "INSERT INTO campaigns(name, json, created_at) VALUES(?, ?, ?)", "ttt", name,
                    json, (const char *)now);
}

int px_manifest_set_quota(px_manifest *s, int64_t campaign_id, const char *theme,
                          const char *theme_slug, const char *type, int quota, px_err *err)
{
    return mf_run_stmt(s, err, "set quota", NULL, NULL,
                    "INSERT OR REPLACE INTO quotas(theme_slug, type, theme, quota, campaign_id)"
                    " VALUES(?, ?, ?, ?, ?)",
                    "tttiI", theme_slug, type, theme, quota, campaign_id);
}

int px_manifest_count(px_manifest *s, const char *theme_slug, const char *type, int *good,
                      int *open, int *failed, int *rejected, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s,
                 "SELECT (SELECT COUNT(*) FROM images WHERE theme_slug=?1 AND type=?2"
                 "  AND status IN ('accepted','flagged')),"
                 " (SELECT COUNT(*) FROM jobs WHERE theme_slug=?1 AND type=?2"
                 "  AND status IN ('pending','running') AND rerender_of=0),"
                 " (SELECT COUNT(*) FROM jobs WHERE theme_slug=?1 AND type=?2 AND status='failed'),"
                 " (SELECT COUNT(*) FROM images WHERE theme_slug=?1 AND type=?2"
                 "  AND status='rejected')",
                 &st, err);
    if (r == PX_OK) {
        mf_bind_text(st, 1, theme_slug);
        mf_bind_text(st, 2, type);
        if (sqlite3_step(st) == SQLITE_ROW) {
            if (good)
                *good = sqlite3_column_int(st, 0);
            if (open)
                *open = sqlite3_column_int(st, 1);
            if (failed)
                *failed = sqlite3_column_int(st, 2);
            if (rejected)
                *rejected = sqlite3_column_int(st, 3);
        } else {
            r = mf_db_err(s, err, "count");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

void px_manifest_strings_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int px_manifest_all_prompts(px_manifest *s, char ***texts, size_t *n, px_err *err)
{
    *texts = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, "SELECT text FROM prompts ORDER BY id", &st, err);
    char **v = NULL;
    size_t k = 0, cap = 0;
    if (r == PX_OK) {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 256;
                char **nv = px_realloc(v, nc * sizeof *nv);
                if (!nv) {
                    r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                    break;
                }
                v = nv;
                cap = nc;
            }
            if (!(v[k] = mf_col_str(st, 0))) {
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                break;
            }
            k++;
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "list prompts");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK) {
        px_manifest_strings_free(v, k);
        return r;
    }
    *texts = v;
    *n = k;
    return PX_OK;
}

/* ---- jobs --------------------------------------------------------------- */

void px_manifest_job_clear(px_manifest_job *j)
{
    if (!j)
        return;
    char **strs[] = {&j->theme,   &j->theme_slug, &j->type,   &j->prompt, &j->negative, &j->sampler,
                     &j->backend, &j->model,      &j->status, &j->server, &j->error,    &j->scene};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    memset(j, 0, sizeof *j);
}

void px_manifest_jobs_free(px_manifest_job *j, size_t n)
{
    if (!j)
        return;
    for (size_t i = 0; i < n; i++)
        px_manifest_job_clear(&j[i]);
    free(j);
}

int px_manifest_add_job(px_manifest *s, const px_manifest_job *j, const char *writer,
                        const char *subtopic, int64_t *job_id, int64_t *seed, px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    pthread_mutex_lock(&s->mu);
    int r = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    if (r != PX_OK) {
        pthread_mutex_unlock(&s->mu);
        return r;
    }
    sqlite3_stmt *st;
    r = mf_prep(s,
             "INSERT INTO prompts(theme_slug, type, text, writer, subtopic, created_at)"
             " VALUES(?, ?, ?, ?, ?, ?)",
             &st, err);
    if (r == PX_OK) {
        mf_bind_text(st, 1, j->theme_slug);
        mf_bind_text(st, 2, j->type);
        mf_bind_text(st, 3, j->scene ? j->scene : j->prompt);
        mf_bind_text(st, 4, writer);
        mf_bind_text(st, 5, subtopic);
        mf_bind_text(st, 6, now);
        r = mf_step_done(s, st, err, "add prompt");
    }
    int64_t pid = sqlite3_last_insert_rowid(s->db), jid = 0, sd = j->seed;
    if (r == PX_OK)
        r = mf_prep(s,
                 "INSERT INTO jobs(theme, theme_slug, type, prompt_id, prompt, negative, seed,"
                 " width, height, steps, cfg, sampler, backend, model, status, created_at,"
                 " rerender_of) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)",
                 &st, err);
    if (r == PX_OK) {
        mf_bind_text(st, 1, j->theme);
        mf_bind_text(st, 2, j->theme_slug);
        mf_bind_text(st, 3, j->type);
        sqlite3_bind_int64(st, 4, pid);
        mf_bind_text(st, 5, j->prompt);
        mf_bind_text(st, 6, j->negative);
        sqlite3_bind_int64(st, 7, j->seed < 0 ? 0 : j->seed);
        sqlite3_bind_int(st, 8, j->width);
        sqlite3_bind_int(st, 9, j->height);
        sqlite3_bind_int(st, 10, j->steps);
        sqlite3_bind_double(st, 11, j->cfg);
        mf_bind_text(st, 12, j->sampler);
        mf_bind_text(st, 13, j->backend);
        mf_bind_text(st, 14, j->model);
        mf_bind_text(st, 15, now);
        sqlite3_bind_int64(st, 16, j->rerender_of);
        r = mf_step_done(s, st, err, "add job");
        jid = sqlite3_last_insert_rowid(s->db);
    }
    if (r == PX_OK && j->seed < 0) {
        /* a seed derived from the unique job id: distinct, reproducible, recorded */
        sd = jid;
        r = mf_prep(s, "UPDATE jobs SET seed = ? WHERE id = ?", &st, err);
        if (r == PX_OK) {
            sqlite3_bind_int64(st, 1, sd);
            sqlite3_bind_int64(st, 2, jid);
            r = mf_step_done(s, st, err, "set seed");
        }
    }
    if (r == PX_OK)
        r = mf_exec_locked(s, "COMMIT", err);
    if (r != PX_OK)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    if (r == PX_OK) {
        if (job_id)
            *job_id = jid;
        if (seed)
            *seed = sd;
    }
    return r;
}

#define JOB_COLS                                                                                   \
    "SELECT id, theme, theme_slug, type, prompt, negative, seed, width, height, steps, cfg,"       \
    " sampler, backend, model, status, attempts, server, error, rerender_of FROM jobs"

static int read_job_row(sqlite3_stmt *st, px_manifest_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = sqlite3_column_int64(st, 0);
    j->theme = mf_col_str(st, 1);
    j->theme_slug = mf_col_str(st, 2);
    j->type = mf_col_str(st, 3);
    j->prompt = mf_col_str(st, 4);
    j->negative = mf_col_str(st, 5);
    j->seed = sqlite3_column_int64(st, 6);
    j->width = sqlite3_column_int(st, 7);
    j->height = sqlite3_column_int(st, 8);
    j->steps = sqlite3_column_int(st, 9);
    j->cfg = sqlite3_column_double(st, 10);
    j->sampler = mf_col_str(st, 11);
    j->backend = mf_col_str(st, 12);
    j->model = mf_col_str(st, 13);
    j->status = mf_col_str(st, 14);
    j->attempts = sqlite3_column_int(st, 15);
    j->server = mf_col_str(st, 16);
    j->error = mf_col_str(st, 17);
    j->rerender_of = sqlite3_column_int64(st, 18);
    if (!j->theme || !j->theme_slug || !j->type || !j->prompt || !j->negative || !j->sampler ||
        !j->backend || !j->model || !j->status || !j->server || !j->error) {
        px_manifest_job_clear(j);
        return PX_ENOMEM;
    }
    return PX_OK;
}

int px_manifest_list_jobs(px_manifest *s, const char *status, int limit, px_manifest_job **out,
                          size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s,
                 JOB_COLS " WHERE (?1 IS NULL AND status IN ('pending','running')) OR status = ?1"
                          " ORDER BY id LIMIT ?2",
                 &st, err);
    px_manifest_job *v = NULL;
    size_t k = 0, cap = 0;
    if (r == PX_OK) {
        if (status)
            mf_bind_text(st, 1, status);
        sqlite3_bind_int(st, 2, limit <= 0 ? -1 : limit);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 64;
                px_manifest_job *nv = px_realloc(v, nc * sizeof *nv);
                if (!nv) {
                    r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                    break;
                }
                v = nv;
                cap = nc;
            }
            if (read_job_row(st, &v[k]) != PX_OK) {
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                break;
            }
            k++;
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "list jobs");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK || k == 0) {
        px_manifest_jobs_free(v, k);
        return r;
    }
    *out = v;
    *n = k;
    return PX_OK;
}

static int read_job_any(sqlite3_stmt *st, void *out)
{
    return read_job_row(st, out);
}

int px_manifest_get_job(px_manifest *s, int64_t id, px_manifest_job *out, px_err *err)
{
    memset(out, 0, sizeof *out);
    return get_by_id(s, JOB_COLS " WHERE id = ?", id, read_job_any, out, "job", err);
}

int px_manifest_job_start(px_manifest *s, int64_t id, const char *server, px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    return mf_run_stmt(s, err, "start job", NULL, NULL,
                    "UPDATE jobs SET status='running', attempts=attempts+1, server=?, started_at=?"
                    " WHERE id=?",
                    "ttI", server, (const char *)now, id);
}

int px_manifest_job_fail(px_manifest *s, int64_t id, const char *error, int give_up, px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    return mf_run_stmt(s, err, "fail job", NULL, NULL,
                    "UPDATE jobs SET status=?, error=?, finished_at=? WHERE id=?", "tttI",
                    give_up ? "failed" : "pending", error, (const char *)now, id);
}

int px_manifest_max_job_id(px_manifest *s, int64_t *id, px_err *err)
{
    *id = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s, "SELECT COALESCE(MAX(id), 0) FROM jobs", &st, err);
    if (r == PX_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            *id = sqlite3_column_int64(st, 0);
        else
            r = mf_db_err(s, err, "max job id");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_manifest_reset_running(px_manifest *s, int *n, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int r = mf_exec_locked(s, "UPDATE jobs SET status='pending' WHERE status='running'", err);
    if (r == PX_OK && n)
        *n = sqlite3_changes(s->db);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_manifest_add_image(px_manifest *s, const px_manifest_image_rec *rec, px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    pthread_mutex_lock(&s->mu);
    int r = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    if (r != PX_OK) {
        pthread_mutex_unlock(&s->mu);
        return r;
    }
    sqlite3_stmt *st;
    r = mf_prep(s,
             "INSERT OR REPLACE INTO images(id, job_id, theme_slug, type, path, sha256, bytes,"
             " width, height, phash, status, reason, checks, created_at)"
             " SELECT ?1, ?1, theme_slug, type, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11"
             " FROM jobs WHERE id = ?1",
             &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, rec->job_id);
        mf_bind_text(st, 2, rec->path);
        mf_bind_text(st, 3, rec->sha256);
        sqlite3_bind_int64(st, 4, rec->bytes);
        sqlite3_bind_int(st, 5, rec->width);
        sqlite3_bind_int(st, 6, rec->height);
        sqlite3_bind_int64(st, 7, (int64_t)rec->phash);
        mf_bind_text(st, 8, rec->status);
        mf_bind_text(st, 9, rec->reason);
        mf_bind_text(st, 10, rec->checks && *rec->checks ? rec->checks : "{}");
        mf_bind_text(st, 11, now);
        r = mf_step_done(s, st, err, "add image");
        if (r == PX_OK && sqlite3_changes(s->db) == 0)
            r = px_err_set(err, PX_ENOTFOUND, "%s: no job with id %lld", s->path,
                           (long long)rec->job_id);
    }
    if (r == PX_OK)
        r = mf_prep(s,
                 "UPDATE jobs SET status='done', server=?2, finished_at=?3,"
                 " render_ms=?4 WHERE id=?1",
                 &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, rec->job_id);
        mf_bind_text(st, 2, rec->server);
        mf_bind_text(st, 3, now);
        sqlite3_bind_double(st, 4, rec->render_ms);
        r = mf_step_done(s, st, err, "finish job");
    }
    if (r == PX_OK)
        r = mf_exec_locked(s, "COMMIT", err);
    if (r != PX_OK)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int px_manifest_all_phashes(px_manifest *s, int64_t **ids, uint64_t **hashes, size_t *n,
                            px_err *err)
{
    *ids = NULL;
    *hashes = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s,
                 "SELECT id, phash FROM images WHERE status IN ('accepted','flagged')"
                 " ORDER BY id",
                 &st, err);
    int64_t *vi = NULL;
    uint64_t *vh = NULL;
    size_t k = 0, cap = 0;
    if (r == PX_OK) {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 256;
                int64_t *ni = px_realloc(vi, nc * sizeof *ni);
                if (ni)
                    vi = ni;
                uint64_t *nh = ni ? px_realloc(vh, nc * sizeof *nh) : NULL;
                if (!ni || !nh) {
                    r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                    break;
                }
                vh = nh;
                cap = nc;
            }
            vi[k] = sqlite3_column_int64(st, 0);
            vh[k] = (uint64_t)sqlite3_column_int64(st, 1);
            k++;
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "list phashes");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK) {
        free(vi);
        free(vh);
        return r;
    }
    *ids = vi;
    *hashes = vh;
    *n = k;
    return PX_OK;
}

/*
 * Review work distribution in the manifest (see px_manifest.h, "Review"):
 * leases, verdicts by account, undo, double review, the review settings of
 * the campaign file, and the tallies that export and QC read.
 *
 * How a claim stays cheap on a 10,000-image pool: images.review_votes holds
 * the number of different reviewers with a verdict on the image, kept by two
 * triggers on verdicts (so verdicts written by any process or any code path
 * count), and a claim scans images in id order testing that column first;
 * only the few images that still need votes are looked up in leases and
 * verdicts. A claim runs in one BEGIN IMMEDIATE transaction, so two
 * reviewers (threads or processes) can never lease the same image.
 *
 * Times are Unix seconds (double) given by the caller, so tests can move
 * the clock; verdicts keep their ISO created_at too.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int has_column(struct px_manifest *s, const char *table, const char *col)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pragma_table_info('%s') WHERE name = ?", table);
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(q, 1, col, -1, SQLITE_STATIC);
    int yes = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return yes;
}

int mf_step_review(struct px_manifest *s, char **msg);
int mf_step_review(struct px_manifest *s, char **msg)
{
    int fresh = !has_column(s, "images", "review_votes");
    int rc = mf_add_column(s, "verdicts", "account_id INTEGER", msg);
    if (rc == SQLITE_OK)
        rc = mf_add_column(s, "verdicts", "at REAL", msg);
    if (rc == SQLITE_OK)
        rc = mf_add_column(s, "verdicts", "seconds REAL", msg);
    if (rc == SQLITE_OK)
        rc = mf_add_column(s, "images", "review_votes INTEGER NOT NULL DEFAULT 0", msg);
    if (rc != SQLITE_OK)
        return rc;
    char sql[1600];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS leases(image_id INTEGER PRIMARY KEY,"
             " account_id INTEGER NOT NULL, claimed REAL NOT NULL, expires REAL NOT NULL);"
             "CREATE INDEX IF NOT EXISTS leases_by_account ON leases(account_id, expires);"
             "CREATE INDEX IF NOT EXISTS verdicts_by_account ON verdicts(account_id, id);"
             /* the claim's "how many are left" counts from this index alone */
             "CREATE INDEX IF NOT EXISTS images_by_votes ON images(review_votes, status,"
             " theme_slug, type);"
             "CREATE TRIGGER IF NOT EXISTS verdicts_votes_in AFTER INSERT ON verdicts BEGIN"
             " UPDATE images SET review_votes = (SELECT COUNT(DISTINCT reviewer) FROM verdicts"
             " WHERE image_id = NEW.image_id) WHERE id = NEW.image_id; END;"
             "CREATE TRIGGER IF NOT EXISTS verdicts_votes_out AFTER DELETE ON verdicts BEGIN"
             " UPDATE images SET review_votes = (SELECT COUNT(DISTINCT reviewer) FROM verdicts"
             " WHERE image_id = OLD.image_id) WHERE id = OLD.image_id; END;"
             "%s",
             fresh ? "UPDATE images SET review_votes = (SELECT COUNT(DISTINCT reviewer) FROM"
                     " verdicts WHERE image_id = images.id);"
                   : "");
    return sqlite3_exec(s->db, sql, NULL, NULL, msg);
}

/* ---- settings ------------------------------------------------------------ */

static const char *const k_default_reasons[] = {
    "distorted anatomy or objects", "text, logo or watermark",      "off theme",
    "low quality or blurry",        "recognisable person or brand", "near duplicate",
};

void px_manifest_review_cfg_free(px_manifest_review_cfg *c)
{
    if (!c)
        return;
    px_manifest_strings_free(c->reasons, c->n_reasons);
    c->reasons = NULL;
    c->n_reasons = 0;
}

/* Reads "review" of the campaign JSON text into c (votes and reasons). */
static int cfg_from_json(const char *text, px_manifest_review_cfg *c, px_err *err)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    json_t *rv = root ? json_object_get(root, "review") : NULL;
    int st = PX_OK;
    if (rv && !json_is_object(rv))
        st = px_err_set(err, PX_EINVAL, "campaign: \"review\" must be an object");
    json_t *votes = rv ? json_object_get(rv, "votes") : NULL;
    if (!st && votes) {
        json_int_t v = json_is_integer(votes) ? json_integer_value(votes) : 0;
        if (v < 1 || v > 5)
            st = px_err_set(err, PX_EINVAL, "campaign: review.votes must be 1..5");
        else
            c->votes = (int)v;
    }
    json_t *rs = rv ? json_object_get(rv, "reject_reasons") : NULL;
    if (!st && rs) {
        size_t n = json_is_array(rs) ? json_array_size(rs) : 0;
        if (n == 0 || n > 40)
            st = px_err_set(err, PX_EINVAL,
                            "campaign: review.reject_reasons must be an array of 1..40 strings");
        char **v = st ? NULL : px_calloc(n, sizeof *v);
        if (!st && !v)
            st = px_err_set(err, PX_ENOMEM, "out of memory");
        for (size_t i = 0; !st && i < n; i++) {
            const char *t = json_string_value(json_array_get(rs, i));
            if (!t || !*t || strlen(t) > 200)
                st = px_err_set(err, PX_EINVAL,
                                "campaign: review.reject_reasons[%zu] must be a string of "
                                "1..200 bytes", i);
            else if (!(v[i] = px_strdup(t)))
                st = px_err_set(err, PX_ENOMEM, "out of memory");
        }
        if (st) {
            px_manifest_strings_free(v, v ? n : 0);
        } else {
            c->reasons = v;
            c->n_reasons = n;
        }
    }
    json_decref(root);
    return st;
}

int px_manifest_review_cfg_parse(const char *campaign_json, px_manifest_review_cfg *c, px_err *err)
{
    memset(c, 0, sizeof *c);
    c->votes = 1;
    int st = campaign_json ? cfg_from_json(campaign_json, c, err) : PX_OK;
    if (!st && !c->reasons) {
        size_t n = sizeof k_default_reasons / sizeof k_default_reasons[0];
        c->reasons = px_calloc(n, sizeof *c->reasons);
        for (size_t i = 0; c->reasons && i < n; i++)
            if (!(c->reasons[i] = px_strdup(k_default_reasons[i])))
                st = PX_ENOMEM;
        if (!c->reasons)
            st = PX_ENOMEM;
        c->n_reasons = c->reasons ? n : 0;
        if (st)
            px_err_set(err, st, "out of memory");
    }
    if (st)
        px_manifest_review_cfg_free(c);
    return st;
}

int px_manifest_review_cfg_get(px_manifest *s, px_manifest_review_cfg *c, px_err *err)
{
    char *text = NULL;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q;
    int st = mf_prep(s, "SELECT json FROM campaigns ORDER BY id DESC LIMIT 1", &q, err);
    if (!st) {
        if (sqlite3_step(q) == SQLITE_ROW && !(text = mf_col_str(q, 0)))
            st = px_err_set(err, PX_ENOMEM, "out of memory");
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&s->mu);
    if (!st)
        st = px_manifest_review_cfg_parse(text, c, err);
    free(text);
    return st;
}

/* ---- leases ---------------------------------------------------------------- */

/* Binds the claim filter's optional theme and type at positions i, i+1
 * (NULL matches any: the SQL says "(? IS NULL OR col = ?)" twice each). */
static void bind_filter(sqlite3_stmt *q, int i, const px_manifest_claim_req *r)
{
    if (r->theme_slug) {
        sqlite3_bind_text(q, i, r->theme_slug, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, i + 1, r->theme_slug, -1, SQLITE_TRANSIENT);
    }
    if (r->type) {
        sqlite3_bind_text(q, i + 2, r->type, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, i + 3, r->type, -1, SQLITE_TRANSIENT);
    }
}

#define FILTER_SQL                                                                                 \
    " AND (? IS NULL OR i.theme_slug = ?) AND (? IS NULL OR i.type = ?)"                          \
    " AND i.status IN ('accepted','flagged')"

/* The account as a bind value: 0 (anonymous, legacy token) is NULL in
 * verdicts, and `account_id IS ?` matches it. */
static void bind_account(sqlite3_stmt *q, int i, int64_t account_id)
{
    if (account_id > 0)
        sqlite3_bind_int64(q, i, account_id);
    else
        sqlite3_bind_null(q, i);
}

/* Appends the rows of q (image_id, expires) to out; renews when asked. */
static int collect_leases(struct px_manifest *s, sqlite3_stmt *q, px_manifest_lease *out,
                          size_t *n, size_t cap, px_err *err)
{
    int rc;
    while (*n < cap && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        out[*n].image_id = sqlite3_column_int64(q, 0);
        out[*n].expires = sqlite3_column_double(q, 1);
        (*n)++;
    }
    int st = PX_OK;
    if (*n < cap && rc != SQLITE_DONE)
        st = mf_db_err(s, err, "claim");
    sqlite3_finalize(q);
    return st;
}

/* With the lock held and a transaction open: the claim itself. */
static int claim_locked(struct px_manifest *s, const px_manifest_claim_req *r,
                        px_manifest_lease *out, size_t *n_out, px_err *err)
{
    const double until = r->now + r->lease_s;
    sqlite3_stmt *q;
    int st = mf_prep(s, "DELETE FROM leases WHERE expires <= ?", &q, err);
    if (!st) {
        sqlite3_bind_double(q, 1, r->now);
        st = mf_step_done(s, q, err, "claim: drop expired leases");
    }
    /* the caller's own leases first (a reload gets them back), renewed */
    if (!st && !(st = mf_prep(s, "UPDATE leases SET expires = ? WHERE account_id = ? AND"
                                 " image_id IN (SELECT l.image_id FROM leases l JOIN images i"
                                 " ON i.id = l.image_id WHERE l.account_id = ?" FILTER_SQL
                                 " ORDER BY l.image_id LIMIT ?)", &q, err))) {
        sqlite3_bind_double(q, 1, until);
        sqlite3_bind_int64(q, 2, r->account_id);
        sqlite3_bind_int64(q, 3, r->account_id);
        bind_filter(q, 4, r);
        sqlite3_bind_int(q, 8, r->n);
        st = mf_step_done(s, q, err, "claim: renew");
    }
    if (!st && !(st = mf_prep(s, "SELECT l.image_id, l.expires FROM leases l JOIN images i"
                                 " ON i.id = l.image_id WHERE l.account_id = ? AND l.expires = ?"
                                 FILTER_SQL " ORDER BY l.image_id LIMIT ?", &q, err))) {
        sqlite3_bind_int64(q, 1, r->account_id);
        sqlite3_bind_double(q, 2, until);
        bind_filter(q, 3, r);
        sqlite3_bind_int(q, 7, r->n);
        st = collect_leases(s, q, out, n_out, (size_t)r->n, err);
    }
    if (st || *n_out >= (size_t)r->n)
        return st;
    /* then images that still need a vote and that nobody holds */
    size_t first_new = *n_out;
    /* in id order (NOT INDEXED: the rowid walk, never the votes index and a sort) */
    if (!(st = mf_prep(s, "SELECT i.id, ? FROM images i NOT INDEXED WHERE i.review_votes < ?"
                          FILTER_SQL
                          " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = i.id)"
                          " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.image_id = i.id"
                          " AND v.account_id IS ?) ORDER BY i.id LIMIT ?", &q, err))) {
        sqlite3_bind_double(q, 1, until);
        sqlite3_bind_int(q, 2, r->votes);
        bind_filter(q, 3, r);
        bind_account(q, 7, r->account_id);
        sqlite3_bind_int(q, 8, (int)((size_t)r->n - *n_out));
        st = collect_leases(s, q, out, n_out, (size_t)r->n, err);
    }
    for (size_t i = first_new; !st && i < *n_out; i++) {
        if ((st = mf_prep(s, "INSERT INTO leases(image_id, account_id, claimed, expires)"
                             " VALUES (?, ?, ?, ?)", &q, err)))
            break;
        sqlite3_bind_int64(q, 1, out[i].image_id);
        sqlite3_bind_int64(q, 2, r->account_id);
        sqlite3_bind_double(q, 3, r->now);
        sqlite3_bind_double(q, 4, until);
        st = mf_step_done(s, q, err, "claim: lease");
    }
    return st;
}

/* How many images under the filter still need this account's vote and are
 * not held by someone else (three counts, so no per-image lookups). */
static int remaining_locked(struct px_manifest *s, const px_manifest_claim_req *r, int64_t *rem,
                            px_err *err)
{
    static const char *const sql[3] = {
        "SELECT COUNT(*) FROM images i WHERE i.review_votes < ?" FILTER_SQL
        " AND ? IS NOT -1 AND ? IS NOT -1",
        /* CROSS JOIN: the few leases and verdicts drive, never a walk over images */
        "SELECT COUNT(*) FROM leases l CROSS JOIN images i ON i.id = l.image_id WHERE"
        " i.review_votes < ?" FILTER_SQL " AND l.account_id <> ? AND l.expires > ?",
        "SELECT COUNT(DISTINCT v.image_id) FROM verdicts v CROSS JOIN images i"
        " ON i.id = v.image_id WHERE i.review_votes < ?" FILTER_SQL " AND v.account_id IS ? AND ? IS NOT -1"
        " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = i.id AND l.account_id <> "
        " COALESCE(v.account_id, 0))",
    };
    int64_t c[3] = {0, 0, 0};
    int st = PX_OK;
    for (int k = 0; k < 3 && !st; k++) {
        sqlite3_stmt *q;
        if ((st = mf_prep(s, sql[k], &q, err)))
            break;
        sqlite3_bind_int(q, 1, r->votes);
        bind_filter(q, 2, r);
        if (k == 2)
            bind_account(q, 6, r->account_id);
        else
            sqlite3_bind_int64(q, 6, r->account_id);
        sqlite3_bind_double(q, 7, r->now);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            c[k] = sqlite3_column_int64(q, 0);
        else
            st = mf_db_err(s, err, "claim: count");
        sqlite3_finalize(q);
    }
    *rem = c[0] - c[1] - c[2] > 0 ? c[0] - c[1] - c[2] : 0;
    return st;
}

int px_manifest_claim(px_manifest *s, const px_manifest_claim_req *r, px_manifest_lease *out,
                      size_t *n_out, int64_t *remaining, px_err *err)
{
    *n_out = 0;
    if (remaining)
        *remaining = 0;
    if (r->n < 1 || r->n > 100 || r->votes < 1 || r->lease_s < 1)
        return px_err_set(err, PX_EINVAL, "claim: n must be 1..100 (votes, lease >= 1)");
    pthread_mutex_lock(&s->mu);
    int st = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    if (!st)
        st = claim_locked(s, r, out, n_out, err);
    if (!st && remaining)
        st = remaining_locked(s, r, remaining, err);
    if (!st)
        st = mf_exec_locked(s, "COMMIT", err);
    else
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    if (st)
        *n_out = 0;
    return st;
}

/* ---- verdicts and undo -------------------------------------------------------- */

/* One int64 (or double) from a query with int64 parameters; 0 when no row. */
static int scalar_locked(struct px_manifest *s, const char *sql, int64_t a, int64_t b,
                         double *out, px_err *err)
{
    sqlite3_stmt *q;
    int st = mf_prep(s, sql, &q, err);
    if (st)
        return st;
    sqlite3_bind_int64(q, 1, a);
    if (sqlite3_bind_parameter_count(q) > 1)
        sqlite3_bind_int64(q, 2, b);
    int rc = sqlite3_step(q);
    *out = rc == SQLITE_ROW ? sqlite3_column_double(q, 0) : 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = mf_db_err(s, err, "review");
    sqlite3_finalize(q);
    return st;
}

static int verdict_locked(struct px_manifest *s, const px_manifest_vote_req *v, int64_t *vid,
                          px_err *err)
{
    double exists = 0, holder = -1, claimed = 0, last = 0;
    int st = scalar_locked(s, "SELECT 1 FROM images WHERE id = ?", v->image_id, 0, &exists, err);
    if (!st && !exists)
        return px_err_set(err, PX_ENOTFOUND, "no image with id %lld", (long long)v->image_id);
    sqlite3_stmt *q;
    if (!st && !(st = mf_prep(s, "SELECT account_id, claimed FROM leases WHERE image_id = ?"
                                 " AND expires > ?", &q, err))) {
        sqlite3_bind_int64(q, 1, v->image_id);
        sqlite3_bind_double(q, 2, v->now);
        if (sqlite3_step(q) == SQLITE_ROW) {
            holder = sqlite3_column_double(q, 0);
            claimed = sqlite3_column_double(q, 1);
        }
        sqlite3_finalize(q);
    }
    if (st)
        return st;
    if (holder >= 0 && (int64_t)holder != v->account_id)
        return px_err_set(err, PX_EBUSY, "image %lld is leased to another reviewer",
                          (long long)v->image_id);
    if (v->account_id > 0 &&
        (st = scalar_locked(s, "SELECT COALESCE(MAX(at), 0) FROM verdicts WHERE account_id = ?",
                            v->account_id, 0, &last, err)))
        return st;
    /* time on this image: since the reviewer's previous verdict or since the
     * claim, whichever is later; longer than 10 minutes is a break, not work */
    double start = last > claimed ? last : claimed;
    double secs = v->now - start;
    char now_iso[32];
    px_manifest_now_iso(now_iso, sizeof now_iso);
    if ((st = mf_prep(s, "INSERT INTO verdicts(image_id, reviewer, verdict, reason, created_at,"
                         " account_id, at, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", &q, err)))
        return st;
    sqlite3_bind_int64(q, 1, v->image_id);
    mf_bind_text(q, 2, v->reviewer);
    mf_bind_text(q, 3, v->verdict);
    mf_bind_text(q, 4, v->reason);
    mf_bind_text(q, 5, now_iso);
    bind_account(q, 6, v->account_id);
    sqlite3_bind_double(q, 7, v->now);
    if (start > 0 && secs >= 0 && secs <= 600)
        sqlite3_bind_double(q, 8, secs);
    else
        sqlite3_bind_null(q, 8);
    if ((st = mf_step_done(s, q, err, "add verdict")))
        return st;
    *vid = sqlite3_last_insert_rowid(s->db);
    if ((st = mf_prep(s, "DELETE FROM leases WHERE image_id = ?", &q, err)))
        return st;
    sqlite3_bind_int64(q, 1, v->image_id);
    return mf_step_done(s, q, err, "release lease");
}

int px_manifest_vote(px_manifest *s, const px_manifest_vote_req *v, int64_t *verdict_id, px_err *err)
{
    int64_t vid = 0;
    if (!v->verdict || (strcmp(v->verdict, "approve") && strcmp(v->verdict, "reject") &&
                        strcmp(v->verdict, "skip")))
        return px_err_set(err, PX_EINVAL, "verdict must be approve, reject or skip");
    if (!v->reviewer || !*v->reviewer || strlen(v->reviewer) > 128)
        return px_err_set(err, PX_EINVAL, "reviewer must be 1..128 bytes");
    if (v->reason && strlen(v->reason) > 2000)
        return px_err_set(err, PX_EINVAL, "reason longer than 2000 bytes");
    pthread_mutex_lock(&s->mu);
    int st = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    if (!st)
        st = verdict_locked(s, v, &vid, err);
    if (!st)
        st = mf_exec_locked(s, "COMMIT", err);
    else
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    if (!st && verdict_id)
        *verdict_id = vid;
    return st;
}

static int undo_locked(struct px_manifest *s, int64_t account_id, double now, int window_s,
                       int lease_s, int64_t *image_id, int64_t *verdict_id, px_err *err)
{
    sqlite3_stmt *q;
    int st = mf_prep(s, "SELECT id, image_id FROM verdicts WHERE account_id IS ? AND at >= ?"
                        " ORDER BY id DESC LIMIT 1", &q, err);
    if (st)
        return st;
    bind_account(q, 1, account_id);
    sqlite3_bind_double(q, 2, now - window_s);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *verdict_id = sqlite3_column_int64(q, 0);
        *image_id = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? px_err_set(err, PX_ENOTFOUND, "nothing to undo")
                                 : mf_db_err(s, err, "undo");
    if ((st = mf_prep(s, "DELETE FROM verdicts WHERE id = ?", &q, err)))
        return st;
    sqlite3_bind_int64(q, 1, *verdict_id);
    if ((st = mf_step_done(s, q, err, "undo")))
        return st;
    /* the image comes back to the reviewer, unless someone else holds it now */
    if ((st = mf_prep(s, "INSERT INTO leases(image_id, account_id, claimed, expires)"
                         " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(image_id) DO UPDATE SET"
                         " account_id = ?2, claimed = ?3, expires = ?4"
                         " WHERE leases.expires <= ?3 OR leases.account_id = ?2", &q, err)))
        return st;
    sqlite3_bind_int64(q, 1, *image_id);
    sqlite3_bind_int64(q, 2, account_id);
    sqlite3_bind_double(q, 3, now);
    sqlite3_bind_double(q, 4, now + lease_s);
    return mf_step_done(s, q, err, "undo: lease");
}

int px_manifest_undo(px_manifest *s, int64_t account_id, double now, int window_s, int lease_s,
                     int64_t *image_id, int64_t *verdict_id, px_err *err)
{
    *image_id = *verdict_id = 0;
    pthread_mutex_lock(&s->mu);
    int st = mf_exec_locked(s, "BEGIN IMMEDIATE", err);
    if (!st)
        st = undo_locked(s, account_id, now, window_s, lease_s, image_id, verdict_id, err);
    if (!st)
        st = mf_exec_locked(s, "COMMIT", err);
    else
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- tallies: double review, export, admin queue, QC ------------------------ */

typedef struct vote_row {
    int64_t image_id;
    char reviewer[132];
    char verdict; /* 'a', 'r', 's' */
    int admin;    /* by an admin account */
    double seconds; /* < 0: not measured */
} vote_row;

/* Every verdict, by image then id. Pools whose manifest predates accounts
 * (opened read-only, no extension steps) have no accounts or seconds. */
static int load_votes(struct px_manifest *s, vote_row **out, size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    int modern = has_column(s, "verdicts", "seconds") && has_column(s, "accounts", "role");
    sqlite3_stmt *q = NULL;
    int st = mf_prep(s, modern ? "SELECT v.image_id, v.reviewer, v.verdict, COALESCE(v.seconds,"
                                 " -1), COALESCE(a.role = 'admin', 0) FROM verdicts v LEFT JOIN"
                                 " accounts a ON a.id = v.account_id ORDER BY v.image_id, v.id"
                               : "SELECT image_id, reviewer, verdict, -1, 0 FROM verdicts"
                                 " ORDER BY image_id, id",
                     &q, err);
    size_t cap = 0;
    while (!st) {
        int rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = mf_db_err(s, err, "read verdicts");
            break;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            vote_row *g = px_realloc(*out, nc * sizeof *g);
            if (!g) {
                st = px_err_set(err, PX_ENOMEM, "review: out of memory");
                break;
            }
            *out = g;
            cap = nc;
        }
        vote_row *v = &(*out)[(*n)++];
        v->image_id = sqlite3_column_int64(q, 0);
        snprintf(v->reviewer, sizeof v->reviewer, "%s", (const char *)sqlite3_column_text(q, 1));
        const char *vt = (const char *)sqlite3_column_text(q, 2);
        v->verdict = vt ? vt[0] : 's';
        v->seconds = sqlite3_column_double(q, 3);
        v->admin = sqlite3_column_int(q, 4);
    }
    if (q)
        sqlite3_finalize(q);
    pthread_mutex_unlock(&s->mu);
    if (st) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return st;
}

#define MAX_VOTERS 32

/* The latest verdict of each reviewer among rows[0..n) (one image): indexes
 * into rows, in order of first appearance. */
static size_t latest_per_reviewer(const vote_row *rows, size_t n, size_t *idx)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < k && strcmp(rows[idx[j]].reviewer, rows[i].reviewer))
            j++;
        if (j < k)
            idx[j] = i;
        else if (k < MAX_VOTERS)
            idx[k++] = i;
    }
    return k;
}

/* The state of one image from its verdicts (rows of one image, in id order). */
static void tally_one(const vote_row *rows, size_t n, int votes, px_manifest_tally *t)
{
    size_t idx[MAX_VOTERS];
    size_t k = latest_per_reviewer(rows, n, idx);
    memset(t, 0, sizeof *t);
    t->image_id = rows[0].image_id;
    t->voters = (int)k;
    for (size_t j = 0; j < k; j++) {
        t->approvals += rows[idx[j]].verdict == 'a';
        t->rejects += rows[idx[j]].verdict == 'r';
    }
    const vote_row *last = &rows[n - 1];
    if (votes <= 1) {
        /* one vote: the latest verdict is the state, as before double review */
        t->decided = last->verdict == 'a' ? 1 : last->verdict == 'r' ? -1 : 0;
        return;
    }
    if (last->admin) {
        /* an admin's verdict after the others settles the image */
        t->decided = last->verdict == 'a' ? 1 : last->verdict == 'r' ? -1 : 0;
        t->settled = t->decided != 0;
        if (t->settled)
            return;
    }
    if (t->approvals > 0 && t->rejects > 0)
        t->disputed = 1;
    else if (t->rejects > 0 && t->rejects + t->approvals >= votes)
        t->decided = -1;
    else if (t->approvals >= votes)
        t->decided = 1;
}

int px_manifest_review_tally(px_manifest *s, int votes, px_manifest_tally **out, size_t *n,
                             px_err *err)
{
    *out = NULL;
    *n = 0;
    vote_row *rows;
    size_t nr;
    int st = load_votes(s, &rows, &nr, err);
    if (st)
        return st;
    size_t groups = 0;
    for (size_t i = 0; i < nr; i++)
        groups += i == 0 || rows[i].image_id != rows[i - 1].image_id;
    px_manifest_tally *t = groups ? px_calloc(groups, sizeof *t) : NULL;
    if (groups && !t) {
        free(rows);
        return px_err_set(err, PX_ENOMEM, "review: out of memory");
    }
    size_t g = 0;
    for (size_t i = 0; i < nr;) {
        size_t j = i;
        while (j < nr && rows[j].image_id == rows[i].image_id)
            j++;
        tally_one(rows + i, j - i, votes, &t[g++]);
        i = j;
    }
    free(rows);
    *out = t;
    *n = groups;
    return PX_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct qc_acc {
    px_manifest_qc q;
    double *secs;
    size_t n_secs, cap_secs;
    long agree, compared;
} qc_acc;

static qc_acc *qc_find(qc_acc **acc, size_t *n, size_t *cap, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*acc)[i].q.name, name))
            return &(*acc)[i];
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        qc_acc *g = px_realloc(*acc, nc * sizeof *g);
        if (!g)
            return NULL;
        *acc = g;
        *cap = nc;
    }
    qc_acc *a = &(*acc)[(*n)++];
    memset(a, 0, sizeof *a);
    snprintf(a->q.name, sizeof a->q.name, "%s", name);
    return a;
}

/* Adds one image's verdicts to the per-reviewer figures. */
static int qc_image(const vote_row *rows, size_t n, qc_acc **acc, size_t *na, size_t *cap)
{
    size_t idx[MAX_VOTERS];
    size_t k = latest_per_reviewer(rows, n, idx);
    for (size_t i = 0; i < n; i++) {
        qc_acc *a = qc_find(acc, na, cap, rows[i].reviewer);
        if (!a)
            return PX_ENOMEM;
        if (rows[i].seconds < 0)
            continue;
        if (a->n_secs == a->cap_secs) {
            size_t nc = a->cap_secs ? a->cap_secs * 2 : 64;
            double *g = px_realloc(a->secs, nc * sizeof *g);
            if (!g)
                return PX_ENOMEM;
            a->secs = g;
            a->cap_secs = nc;
        }
        a->secs[a->n_secs++] = rows[i].seconds;
    }
    for (size_t j = 0; j < k; j++) {
        const vote_row *me = &rows[idx[j]];
        qc_acc *a = qc_find(acc, na, cap, me->reviewer);
        if (!a)
            return PX_ENOMEM;
        a->q.judged++;
        a->q.approved += me->verdict == 'a';
        if (me->verdict == 's')
            continue;
        for (size_t o = 0; o < k; o++) {
            const vote_row *other = &rows[idx[o]];
            if (o == j || other->verdict == 's')
                continue;
            a->compared++;
            a->agree += other->verdict == me->verdict;
        }
    }
    return PX_OK;
}

int px_manifest_review_qc(px_manifest *s, px_manifest_qc **out, size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    vote_row *rows;
    size_t nr;
    int st = load_votes(s, &rows, &nr, err);
    if (st)
        return st;
    qc_acc *acc = NULL;
    size_t na = 0, cap = 0;
    for (size_t i = 0; i < nr && !st;) {
        size_t j = i;
        while (j < nr && rows[j].image_id == rows[i].image_id)
            j++;
        st = qc_image(rows + i, j - i, &acc, &na, &cap);
        i = j;
    }
    free(rows);
    px_manifest_qc *q = na ? px_calloc(na, sizeof *q) : NULL;
    if (na && !q)
        st = PX_ENOMEM;
    for (size_t i = 0; i < na; i++) {
        qc_acc *a = &acc[i];
        if (!st) {
            q[i] = a->q;
            q[i].approval_rate = a->q.judged ? (double)a->q.approved / a->q.judged : 0;
            q[i].median_seconds = -1;
            if (a->n_secs) {
                qsort(a->secs, a->n_secs, sizeof *a->secs, cmp_double);
                size_t m = a->n_secs / 2;
                q[i].median_seconds =
                    a->n_secs % 2 ? a->secs[m] : (a->secs[m - 1] + a->secs[m]) / 2;
            }
            q[i].agreement = a->compared ? (double)a->agree / a->compared : -1;
        }
        free(a->secs);
    }
    free(acc);
    if (st) {
        free(q);
        return px_err_set(err, PX_ENOMEM, "review QC: out of memory");
    }
    *out = q;
    *n = na;
    return PX_OK;
}

/* ---- checkpoints off the request path -------------------------------------- */

int px_manifest_wal_autocheckpoint(px_manifest *s, int pages, px_err *err)
{
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA wal_autocheckpoint=%d", pages < 0 ? 0 : pages);
    pthread_mutex_lock(&s->mu);
    int st = mf_exec_locked(s, sql, err);
    pthread_mutex_unlock(&s->mu);
    return st;
}

int px_manifest_checkpoint(px_manifest *s, px_err *err)
{
    pthread_mutex_lock(&s->mu);
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    int st = rc == SQLITE_OK || rc == SQLITE_BUSY ? PX_OK : mf_db_err(s, err, "checkpoint");
    pthread_mutex_unlock(&s->mu);
    return st;
}

/*
 * Internal to px_manifest: the open handle and the statement helpers that
 * manifest_db.c defines, so that each feature's tables live in a file of its
 * own (accounts, leases, campaign runs, server records) instead of one file
 * that grows without end.
 *
 * Schema growth: k_schema in manifest_db.c holds the original tables. Every
 * later table or column is added by an extension step listed in
 * manifest_ext.c (mf_extend). A step must be idempotent (CREATE ... IF NOT
 * EXISTS; mf_add_column for columns) because it runs at every read-write open.
 */
#ifndef PX_MANIFEST_INTERNAL_H
#define PX_MANIFEST_INTERNAL_H

#include "core/px_core.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

struct px_manifest {
    sqlite3 *db;
    pthread_mutex_t mu; /* serialises every statement on db */
    char *path;
};

/* Sets err from the connection's last error ("PATH: what: message"), mapping
 * SQLite's code onto a PX_E status, and returns that status. */
int mf_db_err(struct px_manifest *s, px_err *err, const char *what);
/* Copy of p ("" for NULL) through px_malloc; NULL when out of memory. */
char *mf_dupstr(const char *p);
/* Copy of column i of the current row ("" for NULL). */
char *mf_col_str(sqlite3_stmt *st, int i);
/* The following need the caller to hold s->mu. */
int mf_prep(struct px_manifest *s, const char *sql, sqlite3_stmt **st, px_err *err);
int mf_exec_locked(struct px_manifest *s, const char *sql, px_err *err);
void mf_bind_text(sqlite3_stmt *st, int i, const char *v); /* NULL binds "" */
/* Steps a statement that returns no rows and finalizes it. */
int mf_step_done(struct px_manifest *s, sqlite3_stmt *st, px_err *err, const char *what);
/* Takes s->mu itself: runs one statement, binding the varargs by `types`
 * ('t' const char *, 'i' int, 'I' int64_t); *rowid / *changes may be NULL. */
int mf_run_stmt(struct px_manifest *s, px_err *err, const char *what, int64_t *rowid,
                int *changes, const char *sql, const char *types, ...);

/* manifest_ext.c: runs every extension step in order at a read-write open
 * (no lock needed: the handle is not shared yet). Returns an SQLite code;
 * on failure *msg is an sqlite3_malloc'd message. */
int mf_extend(struct px_manifest *s, char **msg);
/* Adds column `decl` ("name TYPE ...") to table unless a column of that name
 * exists. Returns an SQLite code, *msg as above. */
int mf_add_column(struct px_manifest *s, const char *table, const char *decl, char **msg);

#endif

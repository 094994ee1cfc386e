/*
 * `pixpipe export --approved DIR`: the approved images of a pool, copied into
 * a stock layout with a metadata CSV (see px_manifest_export_approved in
 * px_manifest.h). It reads the manifest through the store API, in pages of
 * ids (keyset paging), so a pool of any size is exported with bounded memory.
 *
 * Paths come from the manifest and are resolved and checked to lie inside
 * the pool folder before anything is read, as the HTTP file route does.
 * Output names are built from the theme slug, type and numeric id only.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "px_manifest.h"

#define EXPORT_MAX_FILE (256u << 20)

/* Slugs and types become folder names: accept only [a-z0-9-]. */
static int safe_name(const char *s)
{
    if (!*s || strlen(s) > 96)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

/* Whether a text cell would be read as a formula by a spreadsheet (OWASP
 * "CSV injection": = + - @ tab CR at the start); such cells get a leading '
 * and quotes, so a prompt beginning "=HYPERLINK(...)" stays text. */
static int formula_like(const char *v)
{
    return v[0] && strchr("=+-@\t\r", v[0]) != NULL;
}

/* Appends one CSV field (quoted when it holds a comma, quote or newline, or
 * is guarded against formulas; numbers pass guard 0). */
static int csv_cell(px_buf *b, const char *v, int last, int guard)
{
    int formula = guard && formula_like(v);
    int quote = formula || strpbrk(v, ",\"\r\n") != NULL;
    int st = quote ? px_buf_append(b, "\"", 1) : PX_OK;
    if (!st && formula)
        st = px_buf_append(b, "'", 1);
    for (const char *p = v; !st && *p; p++)
        st = *p == '"' ? px_buf_append(b, "\"\"", 2) : px_buf_append(b, p, 1);
    if (!st && quote)
        st = px_buf_append(b, "\"", 1);
    if (!st)
        st = px_buf_append(b, last ? "\r\n" : ",", last ? 2 : 1);
    return st;
}

static int csv_field(px_buf *b, const char *v, int last)
{
    return csv_cell(b, v, last, 1);
}

static int csv_num(px_buf *b, long long v)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return csv_cell(b, s, 0, 0);
}

static int export_one(px_manifest *s, const char *pool, const char *out, const px_manifest_image *m,
                      px_buf *csv, px_err *err)
{
    if (!safe_name(m->theme_slug) || !safe_name(m->type))
        return px_err_set(err, PX_ECORRUPT,
                          "image %lld: theme '%s' / type '%s' not usable as a "
                          "folder name",
                          (long long)m->id, m->theme_slug, m->type);
    char src[PATH_MAX * 2], real[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", pool, m->path);
    size_t pl = strlen(pool);
    if (m->path[0] == '/' || !realpath(src, real) || strncmp(real, pool, pl) || real[pl] != '/')
        return px_err_set(err, PX_ENOTFOUND, "image %lld: file '%s' is missing from the pool",
                          (long long)m->id, m->path);
    const char *ext = strrchr(m->path, '.');
    if (!ext || strlen(ext) > 5 || strchr(ext, '/'))
        ext = ".png";
    char dir[PATH_MAX], dst[PATH_MAX + 64], rel[256];
    snprintf(dir, sizeof dir, "%s/%s/%s", out, m->theme_slug, m->type);
    snprintf(rel, sizeof rel, "%s/%s/%lld%s", m->theme_slug, m->type, (long long)m->id, ext);
    snprintf(dst, sizeof dst, "%s/%s", out, rel);
    int st = px_mkdir_p(dir, err);
    uint8_t *data = NULL;
    size_t len = 0;
    if (!st)
        st = px_read_file(real, EXPORT_MAX_FILE, &data, &len, err);
    if (!st)
        st = px_write_file_atomic(dst, data, len, err);
    free(data);
    if (st)
        return st;

    /* who approved it and when: the latest verdict (the one that made it approved) */
    px_manifest_verdict *v = NULL;
    size_t nv = 0;
    if ((st = px_manifest_list_verdicts(s, m->id, &v, &nv, err)) != PX_OK)
        return st;
    const char *by = nv ? v[nv - 1].reviewer : m->verdict_by;
    const char *at = nv ? v[nv - 1].created_at : "";
    /* a title for stock sites: the prompt's first clause, at most 120 bytes */
    char title[128];
    size_t tl = strcspn(m->prompt, ",.;\n");
    if (tl > 120)
        tl = 120;
    memcpy(title, m->prompt, tl);
    title[tl] = '\0';
    st = csv_field(csv, rel, 0);
    st = st ? st : csv_num(csv, m->id);
    st = st ? st : csv_field(csv, m->theme, 0);
    st = st ? st : csv_field(csv, m->theme_slug, 0);
    st = st ? st : csv_field(csv, m->type, 0);
    st = st ? st : csv_num(csv, m->width);
    st = st ? st : csv_num(csv, m->height);
    st = st ? st : csv_field(csv, title, 0);
    st = st ? st : csv_field(csv, m->prompt, 0);
    st = st ? st : csv_field(csv, m->sha256, 0);
    st = st ? st : csv_num(csv, m->bytes);
    st = st ? st : csv_field(csv, by, 0);
    st = st ? st : csv_field(csv, at, 0);
    st = st ? st : csv_field(csv, m->backend, 0);
    st = st ? st : csv_field(csv, m->model, 0);
    if (!st) {
        char seed[32];
        snprintf(seed, sizeof seed, "%lld", (long long)m->seed);
        st = csv_cell(csv, seed, 1, 0);
    }
    px_manifest_verdicts_free(v, nv);
    return st ? px_err_set(err, st, "export: out of memory") : PX_OK;
}

/* votes = 1: every image whose latest verdict is approve, in pages of ids. */
static int export_latest(px_manifest *s, const char *pool, const char *out_dir, px_buf *csv,
                         size_t *total, px_err *err)
{
    px_manifest_filter f;
    memset(&f, 0, sizeof f);
    f.verdict = PX_VERDICT_FILTER_APPROVE;
    f.limit = 500;
    int st = PX_OK;
    while (!st) {
        px_manifest_image *imgs = NULL;
        size_t n = 0;
        if ((st = px_manifest_list_images(s, &f, &imgs, &n, err)) != PX_OK)
            break;
        for (size_t i = 0; i < n && !st; i++)
            st = export_one(s, pool, out_dir, &imgs[i], csv, err);
        if (n)
            f.after_id = imgs[n - 1].id;
        px_manifest_images_free(imgs, n);
        *total += st ? 0 : n;
        if (n < (size_t)f.limit)
            break;
    }
    return st;
}

/* Double review (review.votes >= 2): only images with enough approvals and
 * no reject among the reviewers' latest verdicts, or settled by an admin. */
static int export_voted(px_manifest *s, const char *pool, const char *out_dir, int votes,
                        px_buf *csv, size_t *total, px_err *err)
{
    px_manifest_tally *t = NULL;
    size_t n = 0;
    int st = px_manifest_review_tally(s, votes, &t, &n, err);
    for (size_t i = 0; !st && i < n; i++) {
        if (t[i].decided != 1)
            continue;
        px_manifest_image m;
        if ((st = px_manifest_get_image(s, t[i].image_id, &m, err)) != PX_OK)
            break;
        st = export_one(s, pool, out_dir, &m, csv, err);
        px_manifest_image_clear(&m);
        *total += st ? 0 : 1;
    }
    free(t);
    return st;
}

int px_manifest_export_approved(const char *pool_dir, const char *out_dir, size_t *n_out,
                                px_err *err)
{
    if (n_out)
        *n_out = 0;
    char pool[PATH_MAX];
    if (!realpath(pool_dir, pool))
        return px_err_set(err, PX_ENOTFOUND, "pool '%s': %s", pool_dir, strerror(errno));
    char db[PATH_MAX + 32];
    snprintf(db, sizeof db, "%s/%s", pool, PX_MANIFEST_FILE);
    struct stat sb;
    if (stat(db, &sb) != 0)
        return px_err_set(err, PX_ENOTFOUND, "pool '%s': no %s in it", pool_dir, PX_MANIFEST_FILE);
    int st = px_mkdir_p(out_dir, err);
    if (st)
        return st;
    px_manifest *s = NULL;
    if ((st = px_manifest_open(db, 1, &s, err)) != PX_OK)
        return st;
    px_buf csv = {0};
    static const char header[] = "file,id,theme,theme_slug,type,width,height,title,prompt,sha256,"
                                 "bytes,reviewer,approved_at,backend,model,seed\r\n";
    st = px_buf_append(&csv, header, sizeof header - 1);
    size_t total = 0;
    px_manifest_review_cfg cfg;
    if (!st && (st = px_manifest_review_cfg_get(s, &cfg, err)) == PX_OK) {
        int votes = cfg.votes;
        px_manifest_review_cfg_free(&cfg);
        if (votes > 1)
            st = export_voted(s, pool, out_dir, votes, &csv, &total, err);
        else
            st = export_latest(s, pool, out_dir, &csv, &total, err);
    }
    if (!st) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/metadata.csv", out_dir);
        st = px_write_file_atomic(path, csv.data, csv.len, err);
    }
    px_buf_free(&csv);
    px_manifest_close(s);
    if (!st && n_out)
        *n_out = total;
    return st;
}

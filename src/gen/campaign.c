/*
 * Campaigns and quotas: parse the campaign JSON (Jansson), name slugs, and
 * turn counts and weights into exact integer quotas.
 *
 * Quotas are computed in two steps. Theme totals come from explicit counts or
 * from a largest-remainder split of the campaign total by weight. The theme x
 * type table is then rounded so both margins are exact: every row sums to its
 * theme total and every column to the campaign-wide largest-remainder type
 * split (10,000 at 60/20/20 gives exactly 6,000/2,000/2,000). Cells start at
 * the floor of their real share; the leftover units are placed by a small
 * max-flow over (theme, type) cells with a fractional part, taken in order of
 * largest fraction first, which is always feasible because the real table is
 * a fractional solution.
 */
#include "px_gen.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *k_types[PX_GEN_NTYPES] = {"interiors", "exteriors", "items"};

const char *px_gen_type_name(int type)
{
    return (type >= 0 && type < PX_GEN_NTYPES) ? k_types[type] : "?";
}

int px_gen_type_parse(const char *s, int *type, px_err *err)
{
    static const char *singular[PX_GEN_NTYPES] = {"interior", "exterior", "item"};
    for (int i = 0; s && i < PX_GEN_NTYPES; i++)
        if (!strcasecmp(s, k_types[i]) || !strcasecmp(s, singular[i])) {
            *type = i;
            return PX_OK;
        }
    return px_err_set(err, PX_EINVAL, "unknown image type '%s' (expected interiors, exteriors or items)",
                      s ? s : "");
}

int px_gen_slug(const char *theme, char *out, size_t cap, px_err *err)
{
    size_t k = 0;
    int dash = 0;
    for (const unsigned char *p = (const unsigned char *)theme; p && *p; p++) {
        if (isalnum(*p) && *p < 128) {
            if (dash && k > 0) {
                if (k + 1 >= cap)
                    goto toolong;
                out[k++] = '-';
            }
            dash = 0;
            if (k + 1 >= cap)
                goto toolong;
            out[k++] = (char)tolower(*p);
        } else {
            dash = 1;
        }
    }
    if (k == 0)
        return px_err_set(err, PX_EINVAL, "theme '%s': needs at least one letter or digit",
                          theme ? theme : "");
    out[k] = '\0';
    return PX_OK;
toolong:
    return px_err_set(err, PX_ELIMIT, "theme '%.60s...': name too long for a folder name", theme);
}

int px_gen_apportion(int total, const double *w, int n, int *out, px_err *err)
{
    if (n <= 0 || total < 0)
        return px_err_set(err, PX_EINVAL, "apportion: need n > 0 and total >= 0");
    double sum = 0;
    for (int i = 0; i < n; i++) {
        if (!(w[i] >= 0) || !isfinite(w[i]))
            return px_err_set(err, PX_EINVAL, "apportion: weight %d is not a finite number >= 0", i);
        sum += w[i];
    }
    if (!(sum > 0))
        return px_err_set(err, PX_EINVAL, "apportion: all weights are zero");
    int given = 0;
    double *rem = px_malloc((size_t)n * sizeof *rem);
    if (!rem)
        return px_err_set(err, PX_ENOMEM, "apportion: out of memory");
    for (int i = 0; i < n; i++) {
        double q = (double)total * w[i] / sum;
        out[i] = (int)floor(q);
        rem[i] = q - out[i];
        given += out[i];
    }
    /* hand the leftover units to the largest remainders, lower index on ties */
    while (given < total) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (w[i] > 0 && (best < 0 || rem[i] > rem[best] + 1e-12))
                best = i;
        out[best]++;
        rem[best] = -1;
        given++;
    }
    free(rem);
    return PX_OK;
}

/* ---- controlled rounding -------------------------------------------------- */

typedef struct {
    int nt;            /* themes */
    int *cap;          /* nt x 3: 1 when the cell may get +1 */
    int *flow;         /* nt x 3 */
    int *row_left;     /* units each theme still needs */
    int col_left[PX_GEN_NTYPES];
    int *seen_row;
    int seen_col[PX_GEN_NTYPES];
} rounding;

/* Tries to route one unit from row r to some column with room, re-routing
 * earlier units along alternating paths (classic bipartite augmenting path). */
static int augment(rounding *g, int r)
{
    if (g->seen_row[r])
        return 0;
    g->seen_row[r] = 1;
    for (int c = 0; c < PX_GEN_NTYPES; c++) {
        if (!g->cap[r * 3 + c] || g->flow[r * 3 + c] || g->seen_col[c])
            continue;
        g->seen_col[c] = 1;
        if (g->col_left[c] > 0) {
            g->col_left[c]--;
            g->flow[r * 3 + c] = 1;
            return 1;
        }
        /* column full: free a unit in it by moving another row's unit elsewhere */
        for (int r2 = 0; r2 < g->nt; r2++)
            if (g->flow[r2 * 3 + c] && augment(g, r2)) {
                g->flow[r2 * 3 + c] = 0;
                g->flow[r * 3 + c] = 1;
                return 1;
            }
    }
    return 0;
}

int px_gen_campaign_quotas(px_gen_campaign *c, px_err *err)
{
    int nt = c->nthemes;
    if (nt <= 0)
        return px_err_set(err, PX_EINVAL, "campaign '%s': no themes", c->name);
    int *tot = px_calloc((size_t)nt, sizeof *tot);
    double *w = px_calloc((size_t)nt, sizeof *w);
    double *frac = px_calloc((size_t)nt * 3, sizeof *frac);
    rounding g = {.nt = nt};
    g.cap = px_calloc((size_t)nt * 3, sizeof *g.cap);
    g.flow = px_calloc((size_t)nt * 3, sizeof *g.flow);
    g.row_left = px_calloc((size_t)nt, sizeof *g.row_left);
    g.seen_row = px_calloc((size_t)nt, sizeof *g.seen_row);
    int st = PX_OK;
    if (!tot || !w || !frac || !g.cap || !g.flow || !g.row_left || !g.seen_row) {
        st = px_err_set(err, PX_ENOMEM, "campaign: out of memory");
        goto out;
    }
    /* theme totals: explicit counts first, the rest shares what the total leaves */
    int fixed = 0, nshare = 0;
    for (int i = 0; i < nt; i++) {
        if (c->themes[i].count >= 0) {
            tot[i] = c->themes[i].count;
            fixed += tot[i];
        } else {
            w[i] = c->themes[i].weight;
            nshare++;
        }
    }
    if (nshare == 0 && c->total >= 0 && c->total != fixed) {
        st = px_err_set(err, PX_EINVAL,
                        "campaign '%s': \"total\" %d does not match the themes' counts (%d)",
                        c->name, c->total, fixed);
        goto out;
    }
    if (nshare > 0) {
        if (c->total < 0) {
            st = px_err_set(err, PX_EINVAL,
                            "campaign '%s': \"total\" is needed when a theme has no \"count\"",
                            c->name);
            goto out;
        }
        if (c->total < fixed) {
            st = px_err_set(err, PX_EINVAL,
                            "campaign '%s': total %d is less than the themes' counts (%d)",
                            c->name, c->total, fixed);
            goto out;
        }
        int *share = px_calloc((size_t)nt, sizeof *share);
        if (!share) {
            st = px_err_set(err, PX_ENOMEM, "campaign: out of memory");
            goto out;
        }
        st = px_gen_apportion(c->total - fixed, w, nt, share, err);
        for (int i = 0; st == PX_OK && i < nt; i++)
            if (c->themes[i].count < 0)
                tot[i] = share[i];
        free(share);
        if (st != PX_OK)
            goto out;
    }
    int all = 0;
    for (int i = 0; i < nt; i++)
        all += tot[i];
    double ssum = 0;
    for (int k = 0; k < 3; k++)
        ssum += c->split[k];
    int col[3];
    st = px_gen_apportion(all, c->split, 3, col, err);
    if (st != PX_OK)
        goto out;
    for (int k = 0; k < 3; k++)
        g.col_left[k] = col[k];
    for (int i = 0; i < nt; i++) {
        int rs = 0;
        for (int k = 0; k < 3; k++) {
            double q = (double)tot[i] * c->split[k] / ssum;
            int fl = (int)floor(q + 1e-9);
            c->themes[i].quota[k] = fl;
            frac[i * 3 + k] = q - fl;
            g.cap[i * 3 + k] = frac[i * 3 + k] > 1e-9;
            g.col_left[k] -= fl;
            rs += fl;
        }
        g.row_left[i] = tot[i] - rs;
    }
    /* rows in order of their largest fractional part, so big fractions get units first */
    for (;;) {
        int best = -1, bc = -1;
        double bf = -1;
        for (int i = 0; i < nt; i++)
            for (int k = 0; k < 3; k++)
                if (g.row_left[i] > 0 && g.cap[i * 3 + k] && !g.flow[i * 3 + k] &&
                    g.col_left[k] > 0 && frac[i * 3 + k] > bf) {
                    bf = frac[i * 3 + k];
                    best = i;
                    bc = k;
                }
        if (best < 0)
            break;
        g.flow[best * 3 + bc] = 1;
        g.col_left[bc]--;
        g.row_left[best]--;
    }
    for (int i = 0; i < nt; i++)
        while (g.row_left[i] > 0) {
            memset(g.seen_row, 0, (size_t)nt * sizeof *g.seen_row);
            memset(g.seen_col, 0, sizeof g.seen_col);
            if (!augment(&g, i)) {
                st = px_err_set(err, PX_EINVAL, "campaign '%s': cannot round quotas exactly",
                                c->name);
                goto out;
            }
            g.row_left[i]--;
        }
    for (int i = 0; i < nt; i++)
        for (int k = 0; k < 3; k++)
            c->themes[i].quota[k] += g.flow[i * 3 + k];
out:
    free(tot);
    free(w);
    free(frac);
    free(g.cap);
    free(g.flow);
    free(g.row_left);
    free(g.seen_row);
    return st;
}

/* ---- parsing -------------------------------------------------------------- */

void px_gen_campaign_free(px_gen_campaign *c)
{
    if (!c)
        return;
    free(c->themes);
    free(c->json);
    memset(c, 0, sizeof *c);
}

static void set_defaults(px_gen_campaign *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "batch");
    c->total = -1;
    c->split[0] = 60;
    c->split[1] = 20;
    c->split[2] = 20;
    c->render.width = 1024;
    c->render.height = 768;
    c->render.steps = 30;
    c->render.cfg = 6.0;
    snprintf(c->render.sampler, sizeof c->render.sampler, "DPM++ 2M Karras");
}

static int get_int(json_t *o, const char *key, int lo, int hi, int *v, const char *origin,
                   px_err *err)
{
    json_t *x = json_object_get(o, key);
    if (!x)
        return PX_OK;
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return px_err_set(err, PX_EINVAL, "%s: \"%s\": expected an integer in %d..%d", origin,
                          key, lo, hi);
    *v = (int)json_integer_value(x);
    return PX_OK;
}

static int get_str(json_t *o, const char *key, char *buf, size_t cap, const char *origin,
                   px_err *err)
{
    json_t *x = json_object_get(o, key);
    if (!x)
        return PX_OK;
    if (!json_is_string(x) || json_string_length(x) >= cap)
        return px_err_set(err, PX_EINVAL, "%s: \"%s\": expected a string of at most %zu bytes",
                          origin, key, cap - 1);
    snprintf(buf, cap, "%s", json_string_value(x));
    return PX_OK;
}

static int parse_defaults(json_t *d, px_gen_campaign *c, const char *origin, px_err *err)
{
    if (!json_is_object(d))
        return px_err_set(err, PX_EINVAL, "%s: \"defaults\": expected an object", origin);
    int st;
    if ((st = get_int(d, "width", 64, 4096, &c->render.width, origin, err)) ||
        (st = get_int(d, "height", 64, 4096, &c->render.height, origin, err)) ||
        (st = get_int(d, "steps", 1, 500, &c->render.steps, origin, err)) ||
        (st = get_str(d, "sampler", c->render.sampler, sizeof c->render.sampler, origin, err)) ||
        (st = get_str(d, "model", c->render.model, sizeof c->render.model, origin, err)))
        return st;
    /* the local backend fills a side the campaign leaves out from the model's native size */
    c->render.size_set =
        (json_object_get(d, "width") ? 1 : 0) | (json_object_get(d, "height") ? 2 : 0);
    json_t *cfg = json_object_get(d, "cfg");
    if (cfg) {
        if (!json_is_number(cfg) || json_number_value(cfg) <= 0 || json_number_value(cfg) > 50)
            return px_err_set(err, PX_EINVAL, "%s: \"defaults.cfg\": expected a number in (0, 50]",
                              origin);
        c->render.cfg = json_number_value(cfg);
    }
    json_t *fmt = json_object_get(d, "format");
    if (fmt) {
        c->format = json_is_string(fmt) ? px_format_parse(json_string_value(fmt)) : PX_FMT_UNKNOWN;
        if (c->format == PX_FMT_UNKNOWN)
            return px_err_set(err, PX_EINVAL, "%s: \"defaults.format\": expected \"png\", \"jpg\" "
                              "or \"webp\"", origin);
    }
    if ((st = get_int(d, "quality", 1, 100, &c->quality, origin, err)))
        return st;
    json_t *people = json_object_get(d, "allow_people");
    if (people) {
        if (!json_is_boolean(people))
            return px_err_set(err, PX_EINVAL, "%s: \"defaults.allow_people\": expected true or false",
                              origin);
        c->allow_people = json_is_true(people);
    }
    return PX_OK;
}

static int parse_theme(json_t *t, int idx, px_gen_campaign *c, const char *origin, px_err *err)
{
    px_gen_theme *th = &c->themes[idx];
    th->count = -1;
    th->weight = 1;
    const char *name = NULL;
    if (json_is_string(t)) {
        name = json_string_value(t);
    } else if (json_is_object(t)) {
        name = json_string_value(json_object_get(t, "name"));
        if (!name)
            return px_err_set(err, PX_EINVAL, "%s: themes[%d]: \"name\" (a string) is missing",
                              origin, idx);
        json_t *cnt = json_object_get(t, "count"), *wt = json_object_get(t, "weight");
        if (cnt) {
            if (!json_is_integer(cnt) || json_integer_value(cnt) < 0 ||
                json_integer_value(cnt) > 10000000)
                return px_err_set(err, PX_EINVAL,
                                  "%s: themes[%d] (%s): \"count\": expected an integer >= 0",
                                  origin, idx, name);
            th->count = (int)json_integer_value(cnt);
        }
        if (wt) {
            if (!json_is_number(wt) || !(json_number_value(wt) >= 0) ||
                !isfinite(json_number_value(wt)))
                return px_err_set(err, PX_EINVAL,
                                  "%s: themes[%d] (%s): \"weight\": expected a number >= 0",
                                  origin, idx, name);
            th->weight = json_number_value(wt);
        }
    } else {
        return px_err_set(err, PX_EINVAL, "%s: themes[%d]: expected a string or an object", origin,
                          idx);
    }
    if (strlen(name) >= sizeof th->name)
        return px_err_set(err, PX_EINVAL, "%s: themes[%d]: name longer than %zu bytes", origin,
                          idx, sizeof th->name - 1);
    snprintf(th->name, sizeof th->name, "%s", name);
    px_err e2;
    if (px_gen_slug(name, th->slug, sizeof th->slug, &e2) != PX_OK)
        return px_err_set(err, PX_EINVAL, "%s: themes[%d]: %s", origin, idx, e2.msg);
    for (int j = 0; j < idx; j++)
        if (!strcmp(c->themes[j].slug, th->slug))
            return px_err_set(err, PX_EINVAL, "%s: themes[%d] '%s' repeats themes[%d] '%s'", origin,
                              idx, name, j, c->themes[j].name);
    return PX_OK;
}

int px_gen_campaign_parse(const char *json, size_t len, const char *origin, px_gen_campaign *c,
                          px_err *err)
{
    set_defaults(c);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return px_err_set(err, PX_EINVAL, "%s: line %d column %d: %s", origin, je.line, je.column,
                          je.text);
    int st = PX_OK;
    if (!json_is_object(root)) {
        st = px_err_set(err, PX_EINVAL, "%s: expected a JSON object at the top", origin);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        static const char *known[] = {"name",     "total", "types", "themes",
                                      "defaults", "about", "review"};
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= !strcmp(key, known[i]);
        if (!ok) {
            st = px_err_set(err, PX_EINVAL,
                            "%s: unknown field \"%s\" (expected name, total, types, themes, "
                            "defaults, about, review)",
                            origin, key);
            goto out;
        }
    }
    if ((st = get_str(root, "name", c->name, sizeof c->name, origin, err)) ||
        (st = get_int(root, "total", 0, 10000000, &c->total, origin, err)))
        goto out;
    json_t *types = json_object_get(root, "types");
    if (types) {
        if (!json_is_object(types)) {
            st = px_err_set(err, PX_EINVAL, "%s: \"types\": expected an object like "
                            "{\"interiors\": 60, \"exteriors\": 20, \"items\": 20}", origin);
            goto out;
        }
        double sp[3] = {0, 0, 0};
        json_object_foreach(types, key, val)
        {
            int t = 0;
            px_err e2;
            if (px_gen_type_parse(key, &t, &e2) != PX_OK) {
                st = px_err_set(err, PX_EINVAL, "%s: \"types\": %s", origin, e2.msg);
                goto out;
            }
            if (!json_is_number(val) || !(json_number_value(val) >= 0) ||
                !isfinite(json_number_value(val))) {
                st = px_err_set(err, PX_EINVAL, "%s: \"types.%s\": expected a number >= 0", origin,
                                key);
                goto out;
            }
            sp[t] = json_number_value(val);
        }
        if (sp[0] + sp[1] + sp[2] <= 0) {
            st = px_err_set(err, PX_EINVAL, "%s: \"types\": all shares are zero", origin);
            goto out;
        }
        memcpy(c->split, sp, sizeof sp);
    }
    json_t *defs = json_object_get(root, "defaults");
    if (defs && (st = parse_defaults(defs, c, origin, err)))
        goto out;
    json_t *themes = json_object_get(root, "themes");
    if (!json_is_array(themes) || json_array_size(themes) == 0 || json_array_size(themes) > 1000) {
        st = px_err_set(err, PX_EINVAL, "%s: \"themes\": expected a non-empty array (at most 1000)",
                        origin);
        goto out;
    }
    c->nthemes = (int)json_array_size(themes);
    c->themes = px_calloc((size_t)c->nthemes, sizeof *c->themes);
    if (!c->themes) {
        st = px_err_set(err, PX_ENOMEM, "%s: out of memory", origin);
        goto out;
    }
    for (int i = 0; i < c->nthemes; i++)
        if ((st = parse_theme(json_array_get(themes, (size_t)i), i, c, origin, err)))
            goto out;
    if ((st = px_gen_campaign_quotas(c, err))) {
        px_err_prefix(err, st, "%s", origin);
        goto out;
    }
    c->json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!c->json) {
        st = px_err_set(err, PX_ENOMEM, "%s: out of memory", origin);
        goto out;
    }
    /* "review" (votes, reject reasons) is read by the review server from the
     * stored campaign: checked here by the same parser, so a bad one is
     * refused before anything renders */
    px_manifest_review_cfg rc;
    st = px_manifest_review_cfg_parse(c->json, &rc, err);
    px_manifest_review_cfg_free(&rc);
    if (st)
        px_err_prefix(err, st, "%s", origin);
out:
    json_decref(root);
    if (st != PX_OK)
        px_gen_campaign_free(c);
    return st;
}

int px_gen_campaign_load(const char *path, px_gen_campaign *c, px_err *err)
{
    uint8_t *data;
    size_t len;
    memset(c, 0, sizeof *c);
    int st = px_read_file(path, 4u << 20, &data, &len, err);
    if (st != PX_OK)
        return st;
    st = px_gen_campaign_parse((const char *)data, len, path, c, err);
    free(data);
    return st;
}

int px_gen_campaign_single(const char *theme, int type, int count, px_gen_campaign *c,
                           px_err *err)
{
    set_defaults(c);
    if (type < 0 || type >= PX_GEN_NTYPES)
        return px_err_set(err, PX_EINVAL, "unknown image type %d", type);
    if (count < 0 || count > 10000000)
        return px_err_set(err, PX_EINVAL, "--count %d: expected 0..10000000", count);
    if (!theme || strlen(theme) >= sizeof c->themes->name)
        return px_err_set(err, PX_EINVAL, "--theme: expected 1..127 bytes");
    c->themes = px_calloc(1, sizeof *c->themes);
    if (!c->themes)
        return px_err_set(err, PX_ENOMEM, "campaign: out of memory");
    c->nthemes = 1;
    px_gen_theme *t = &c->themes[0];
    snprintf(t->name, sizeof t->name, "%s", theme);
    int st = px_gen_slug(theme, t->slug, sizeof t->slug, err);
    if (st != PX_OK) {
        px_gen_campaign_free(c);
        return st;
    }
    t->count = count;
    t->weight = 1;
    c->total = count;
    t->quota[type] = count;
    json_t *j = json_pack("{s:s, s:i, s:{s:i}, s:[{s:s, s:i}]}", "name", "batch", "total", count,
                          "types", px_gen_type_name(type), 100, "themes", "name", theme, "count",
                          count);
    c->json = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    for (int k = 0; k < 3; k++)
        c->split[k] = k == type ? 100 : 0;
    if (!c->json) {
        px_gen_campaign_free(c);
        return px_err_set(err, PX_ENOMEM, "campaign: out of memory");
    }
    return PX_OK;
}

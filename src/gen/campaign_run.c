/*
 * The campaign of a recorded campaign run (px_manifest_campaign_run): what
 * the review server's Campaigns page started, read back the same way by the
 * server (on restart) and by `pixpipe generate --out POOL` (resuming it from
 * the command line). The campaign JSON goes through the campaign parser like
 * a file; the page's "add N more" and "replace rejected" are quota raises
 * per theme slug and type, kept beside it in run->extra and added here.
 */
#include "gen_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* Adds the raises of one group ({"SLUG/TYPE": n, ...}) to c's quotas. */
static int add_raises(json_t *group, const char *what, px_gen_campaign *c, px_err *err)
{
    if (!group)
        return PX_OK;
    if (!json_is_object(group))
        return px_err_set(err, PX_EINVAL, "campaign '%s': extra.%s: expected an object", c->name,
                          what);
    const char *key;
    json_t *val;
    json_object_foreach(group, key, val)
    {
        const char *slash = strchr(key, '/');
        json_int_t n = json_integer_value(val);
        int type = -1;
        px_err e2;
        if (!slash || !json_is_integer(val) || n < 0 || n > 10000000 ||
            px_gen_type_parse(slash + 1, &type, &e2) != PX_OK)
            return px_err_set(err, PX_EINVAL,
                              "campaign '%s': extra.%s: \"%s\": expected \"SLUG/TYPE\": count",
                              c->name, what, key);
        int t = 0;
        while (t < c->nthemes && (strlen(c->themes[t].slug) != (size_t)(slash - key) ||
                                  strncmp(c->themes[t].slug, key, (size_t)(slash - key))))
            t++;
        if (t == c->nthemes)
            return px_err_set(err, PX_EINVAL, "campaign '%s': extra.%s: no theme '%.*s'", c->name,
                              what, (int)(slash - key), key);
        c->themes[t].quota[type] += (int)n;
    }
    return PX_OK;
}

int px_gen_campaign_from_run(const px_manifest_campaign_run *run, px_gen_campaign *c, px_err *err)
{
    char origin[200];
    snprintf(origin, sizeof origin, "campaign '%.120s'", run->name ? run->name : "");
    const char *json = run->campaign ? run->campaign : "";
    int st = px_gen_campaign_parse(json, strlen(json), origin, c, err);
    if (st != PX_OK)
        return st;
    json_t *extra = run->extra && *run->extra ? json_loads(run->extra, 0, NULL) : NULL;
    if (run->extra && *run->extra && !json_is_object(extra))
        st = px_err_set(err, PX_EINVAL, "%s: extra: expected a JSON object", origin);
    if (st == PX_OK)
        st = add_raises(json_object_get(extra, "add"), "add", c, err);
    if (st == PX_OK)
        st = add_raises(json_object_get(extra, "replace"), "replace", c, err);
    json_decref(extra);
    if (st != PX_OK)
        px_gen_campaign_free(c);
    return st;
}

/* Opens the manifest of pool; readonly for looking (a folder without one
 * stays without one), read-write to record a run's end. */
static int open_manifest(const char *pool, int readonly, px_manifest **s, px_err *err)
{
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", pool, PX_MANIFEST_FILE);
    return px_manifest_open(db, readonly, s, err);
}

int px_gen_campaign_from_pool(const char *pool, px_gen_campaign *c, int64_t *run_id, px_err *err)
{
    *run_id = 0;
    px_manifest *s = NULL;
    px_manifest_campaign_run run;
    memset(&run, 0, sizeof run);
    /* no manifest, or one from before campaign runs existed: nothing to resume */
    int st = open_manifest(pool, 1, &s, err);
    if (st == PX_OK)
        st = px_manifest_campaign_run_get(s, 0, &run, err);
    if (st == PX_ENOTFOUND || (st != PX_OK && strstr(err->msg, "no such table")))
        st = px_err_set(err, PX_ENOTFOUND,
                        "pool '%s' has no campaign started from the Campaigns "
                        "page to resume; give --campaign FILE or --theme/--type/--count",
                        pool);
    if (st == PX_OK && !strcmp(run.state, "running"))
        st = px_err_set(err, PX_EBUSY,
                        "campaign %lld '%s' of pool '%s' is running in pixpipe "
                        "serve: pause it on the Campaigns page first (one campaign at a time per "
                        "pool)",
                        (long long)run.id, run.name, pool);
    if (st == PX_OK && !strcmp(run.state, "done"))
        st = px_err_set(err, PX_EINVAL,
                        "campaign %lld '%s' of pool '%s' is done; add images to "
                        "it on the Campaigns page, or give --campaign FILE",
                        (long long)run.id, run.name, pool);
    if (st == PX_OK && (st = px_gen_campaign_from_run(&run, c, err)) == PX_OK)
        *run_id = run.id;
    px_manifest_campaign_run_clear(&run);
    px_manifest_close(s);
    return st;
}

int px_gen_campaign_run_ended(const char *pool, int64_t run_id, int complete, px_err *err)
{
    px_manifest *s = NULL;
    int st = open_manifest(pool, 0, &s, err);
    if (st == PX_OK)
        st = px_manifest_campaign_run_set_state(
            s, run_id, complete ? "done" : "paused",
            complete ? "" : "paused: the command-line run ended short of the quotas", err);
    px_manifest_close(s);
    return st;
}

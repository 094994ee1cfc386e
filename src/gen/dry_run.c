/*
 * `pixpipe generate --dry-run`: the prompts a run would write, and nothing
 * else. The campaign's quotas, the styles, the writer and the near-duplicate
 * filter are the run's own; no job, image or server is touched, and the pool
 * (when there is one) is only read: what it already has (good images and open
 * jobs) is not asked for again, and its prompts count as duplicates, so the
 * preview is what the next run would add.
 */
#include "gen_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRY_MAX_IDLE 10 /* batches in a row with nothing new before a slot is left */

typedef struct dry_slot {
    const px_gen_theme *theme;
    int type, need, idle;
} dry_slot;

int px_gen_scene_fresh(px_gen_dedup *dd, const char *scene, px_gen_summary *sum, px_err *err)
{
    sum->prompts_written++;
    int dup = px_gen_dedup_add(dd, scene);
    if (dup < 0)
        return px_err_set(err, PX_ENOMEM, "dedup: out of memory");
    sum->prompts_dup += dup;
    return !dup;
}

void px_gen_compose(const px_gen_style *st, int type, int allow_people, const char *scene,
                    char *prompt, size_t pcap, char *neg, size_t ncap)
{
    snprintf(prompt, pcap, "%s, %s", scene, st->suffix[type]);
    snprintf(neg, ncap, "%s%s%s", st->negative[type], allow_people ? "" : ", ",
             allow_people ? "" : st->no_people);
}

/* The pool's counts and prompts, when the pool exists. */
static int read_pool(const px_gen_opts *o, dry_slot *sl, int ns, px_gen_dedup *dd, px_err *err)
{
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", o->pool ? o->pool : "", PX_MANIFEST_FILE);
    if (!o->pool || access(db, F_OK) != 0)
        return PX_OK;
    px_manifest *s;
    int st = px_manifest_open(db, 1, &s, err);
    for (int i = 0; st == PX_OK && i < ns; i++) {
        int good = 0, open = 0;
        st = px_manifest_count(s, sl[i].theme->slug, px_gen_type_name(sl[i].type), &good, &open,
                               NULL, NULL, err);
        sl[i].need -= good + open;
    }
    char **texts = NULL;
    size_t n = 0;
    if (st == PX_OK)
        st = px_manifest_all_prompts(s, &texts, &n, err);
    for (size_t i = 0; st == PX_OK && i < n; i++)
        if (px_gen_dedup_add(dd, texts[i]) < 0)
            st = px_err_set(err, PX_ENOMEM, "dedup: out of memory");
    px_manifest_strings_free(texts, n);
    px_manifest_close(s);
    return st;
}

/* One batch for slot s: each new scene goes to fn. */
static int dry_batch(const px_gen_opts *o, const px_gen_style *style, dry_slot *s, px_gen_dedup *dd,
                     int *left, px_gen_prompt_fn fn, void *ctx, px_gen_summary *sum, px_err *err)
{
    int want = s->need < *left ? s->need : *left;
    char **scenes = NULL, sub[700] = "";
    size_t n = 0;
    int wb = px_gen_llm_batch(o->writer);
    int st = px_gen_writer_write(o->writer, s->theme->name, s->theme->slug, s->type,
                                 want < wb ? want : wb, &scenes, &n, sub, sizeof sub, err);
    if (st != PX_OK)
        return st;
    int made = 0;
    for (size_t i = 0; i < n && made < want; i++) {
        int fresh = px_gen_scene_fresh(dd, scenes[i], sum, err);
        if (fresh < 0) {
            st = fresh;
            break;
        }
        if (!fresh)
            continue;
        char prompt[4096], neg[2048];
        px_gen_compose(style, s->type, o->campaign->allow_people, scenes[i], prompt, sizeof prompt,
                       neg, sizeof neg);
        px_gen_prompt_rec rec = {.theme = s->theme->name,
                                 .theme_slug = s->theme->slug,
                                 .type = px_gen_type_name(s->type),
                                 .scene = scenes[i],
                                 .prompt = prompt,
                                 .negative = neg,
                                 .subtopic = sub,
                                 .writer = px_gen_writer_name(o->writer)};
        fn(ctx, &rec);
        made++;
    }
    px_manifest_strings_free(scenes, n);
    s->need -= made;
    *left -= made;
    s->idle = made ? 0 : s->idle + 1;
    return st;
}

int px_gen_dry_run(const px_gen_opts *o, int max_prompts, px_gen_prompt_fn fn, void *ctx,
                   px_gen_summary *sum, px_err *err)
{
    memset(sum, 0, sizeof *sum);
    if (!o || !o->campaign || !o->writer || !fn)
        return px_err_set(err, PX_EINVAL, "dry run: no campaign, writer or output");
    const px_gen_campaign *c = o->campaign;
    px_gen_style *style = px_malloc(sizeof *style);
    dry_slot *sl = px_calloc((size_t)c->nthemes * PX_GEN_NTYPES + 1, sizeof *sl);
    px_gen_dedup *dd = NULL;
    int st = style && sl ? px_gen_dedup_create(o->dedup_threshold, &dd, err)
                         : px_err_set(err, PX_ENOMEM, "dry run: out of memory");
    if (st == PX_OK)
        st = px_gen_style_load(o->style_path, style, err);
    int ns = 0;
    for (int t = 0; st == PX_OK && t < c->nthemes; t++)
        for (int k = 0; k < PX_GEN_NTYPES; k++)
            if (c->themes[t].quota[k] > 0)
                sl[ns++] =
                    (dry_slot){.theme = &c->themes[t], .type = k, .need = c->themes[t].quota[k]};
    if (st == PX_OK)
        st = read_pool(o, sl, ns, dd, err);
    double t0 = px_now_ms();
    int left = max_prompts > 0 ? max_prompts : 1 << 30, active = 1;
    /* round robin, one batch per slot per round, so a capped preview covers every slot */
    while (st == PX_OK && left > 0 && active && !(o->stop && *o->stop)) {
        active = 0;
        for (int i = 0; st == PX_OK && i < ns && left > 0; i++) {
            if (sl[i].need <= 0 || sl[i].idle >= DRY_MAX_IDLE || (o->stop && *o->stop))
                continue;
            active = 1;
            st = dry_batch(o, style, &sl[i], dd, &left, fn, ctx, sum, err);
        }
    }
    sum->complete = st == PX_OK;
    for (int i = 0; i < ns; i++)
        if (sl[i].need > 0 && left > 0)
            sum->complete = 0;
    sum->seconds = (px_now_ms() - t0) / 1000;
    px_gen_dedup_destroy(dd);
    free(sl);
    free(style);
    return st;
}

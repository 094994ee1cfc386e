/*
 * Prompt writers: the offline template composer and the common writer
 * interface (the LLM writer lives in llm.c), plus per-type styles.
 *
 * The offline writer is a small wildcard grammar. vocab/<theme-slug>.json
 * holds, per type, a list of "templates" and named word lists; a template
 * such as "{place} with {detail}, {lighting}" is expanded by replacing each
 * {slot} with a random entry of that list (looked up in the type's object,
 * then the theme's top level, then vocab/_common.json), entries may hold
 * slots themselves (nesting depth is capped), and "{a|b|c}" picks inline.
 * A splitmix64 generator seeded per writer makes runs reproducible.
 */
#include "gen_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t px_gen_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct {
    char slug[96];
    json_t *root; /* NULL when the theme has no vocabulary file */
} vocab_entry;

typedef struct {
    char *dir;
    json_t *common;
    vocab_entry *cache;
    int ncache;
    uint64_t rng;
} offline_state;

struct px_gen_writer {
    const char *name;
    int (*write)(px_gen_writer *w, const char *theme, const char *slug, int type, int n,
                 char ***out, size_t *nout, char *subtopic, size_t cap, px_err *err);
    void (*destroy)(px_gen_writer *w);
    void *state;
    int requests, bad;
};

px_gen_writer *px_gen_writer_new(const char *name,
                                 int (*write)(px_gen_writer *, const char *, const char *, int, int,
                                              char ***, size_t *, char *, size_t, px_err *),
                                 void (*destroy)(px_gen_writer *), void *state)
{
    px_gen_writer *w = px_calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->name = name;
    w->write = write;
    w->destroy = destroy;
    w->state = state;
    return w;
}

void *px_gen_writer_state(px_gen_writer *w)
{
    return w->state;
}

void px_gen_writer_count(px_gen_writer *w, int requests, int bad)
{
    w->requests += requests;
    w->bad += bad;
}

int px_gen_writer_write(px_gen_writer *w, const char *theme, const char *slug, int type, int n,
                        char ***out, size_t *nout, char *subtopic, size_t cap, px_err *err)
{
    *out = NULL;
    *nout = 0;
    if (subtopic && cap)
        subtopic[0] = '\0';
    if (n < 1 || n > 50)
        return px_err_set(err, PX_EINVAL, "writer: asked for %d prompts (1..50)", n);
    if (type < 0 || type >= PX_GEN_NTYPES)
        return px_err_set(err, PX_EINVAL, "writer: unknown type %d", type);
    return w->write(w, theme, slug, type, n, out, nout, subtopic, cap, err);
}

const char *px_gen_writer_name(const px_gen_writer *w)
{
    return w ? w->name : "";
}

void px_gen_writer_stats(const px_gen_writer *w, int *requests, int *bad_answers)
{
    if (requests)
        *requests = w ? w->requests : 0;
    if (bad_answers)
        *bad_answers = w ? w->bad : 0;
}

void px_gen_writer_destroy(px_gen_writer *w)
{
    if (!w)
        return;
    if (w->destroy)
        w->destroy(w);
    free(w);
}

/* ---- offline ---------------------------------------------------------------- */

static void offline_destroy(px_gen_writer *w)
{
    offline_state *o = w->state;
    if (!o)
        return;
    for (int i = 0; i < o->ncache; i++)
        json_decref(o->cache[i].root);
    free(o->cache);
    json_decref(o->common);
    free(o->dir);
    free(o);
}

static int load_json_file(const char *path, json_t **out, px_err *err)
{
    *out = NULL;
    uint8_t *data;
    size_t len;
    int st = px_read_file(path, 4u << 20, &data, &len, err);
    if (st != PX_OK)
        return st;
    json_error_t je;
    json_t *j = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &je);
    free(data);
    if (!j)
        return px_err_set(err, PX_EINVAL, "%s: line %d column %d: %s", path, je.line, je.column,
                          je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return px_err_set(err, PX_EINVAL, "%s: expected a JSON object at the top", path);
    }
    *out = j;
    return PX_OK;
}

/* Returns the theme's vocabulary (cached), or NULL with PX_ENOTFOUND. */
static int offline_vocab(offline_state *o, const char *theme, const char *slug, json_t **out,
                         px_err *err)
{
    for (int i = 0; i < o->ncache; i++)
        if (!strcmp(o->cache[i].slug, slug)) {
            *out = o->cache[i].root;
            return PX_OK;
        }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.json", o->dir, slug);
    json_t *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return px_err_set(err, PX_ENOTFOUND,
                          "no vocabulary for theme '%s' (looked for %s); the offline writer "
                          "only knows the shipped themes: use an LLM (--llm URL) for this one",
                          theme, path);
    fclose(f);
    int st = load_json_file(path, &root, err);
    if (st != PX_OK)
        return st;
    vocab_entry *nc = px_realloc(o->cache, (size_t)(o->ncache + 1) * sizeof *nc);
    if (!nc) {
        json_decref(root);
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    }
    o->cache = nc;
    snprintf(nc[o->ncache].slug, sizeof nc[o->ncache].slug, "%s", slug);
    nc[o->ncache].root = root;
    o->ncache++;
    *out = root;
    return PX_OK;
}

typedef struct {
    offline_state *o;
    json_t *typeobj, *themeobj;
    const char *slug, *tname;
    px_buf out;
    px_err *err;
} expander;

static json_t *find_list(expander *x, const char *name)
{
    json_t *l = json_object_get(x->typeobj, name);
    if (!json_is_array(l))
        l = json_object_get(x->themeobj, name);
    if (!json_is_array(l) && x->o->common)
        l = json_object_get(x->o->common, name);
    return json_is_array(l) && json_array_size(l) > 0 ? l : NULL;
}

static int expand(expander *x, const char *s, size_t n, int depth)
{
    if (depth > 6)
        return px_err_set(x->err, PX_EINVAL, "vocab %s/%s: slots nest deeper than 6 (a loop?)",
                          x->slug, x->tname);
    size_t i = 0;
    while (i < n) {
        if (s[i] != '{') {
            size_t j = i;
            while (j < n && s[j] != '{')
                j++;
            if (px_buf_append(&x->out, s + i, j - i))
                return px_err_set(x->err, PX_ENOMEM, "writer: out of memory");
            i = j;
            continue;
        }
        size_t j = i + 1;
        while (j < n && s[j] != '}')
            j++;
        if (j >= n)
            return px_err_set(x->err, PX_EINVAL, "vocab %s/%s: unclosed '{' in \"%.*s\"", x->slug,
                              x->tname, (int)(n > 80 ? 80 : n), s);
        const char *name = s + i + 1;
        size_t nl = j - i - 1;
        if (memchr(name, '|', nl)) {
            /* inline alternatives {a|b|c} */
            int count = 1;
            for (size_t k = 0; k < nl; k++)
                count += name[k] == '|';
            int pick = (int)(px_gen_rand(&x->o->rng) % (uint64_t)count);
            size_t a = 0;
            for (int p = 0; p < pick; p++)
                a = (size_t)((const char *)memchr(name + a, '|', nl - a) - name) + 1;
            const char *e = memchr(name + a, '|', nl - a);
            size_t len = e ? (size_t)(e - (name + a)) : nl - a;
            int st = expand(x, name + a, len, depth + 1);
            if (st)
                return st;
        } else {
            char key[64];
            if (nl == 0 || nl >= sizeof key)
                return px_err_set(x->err, PX_EINVAL, "vocab %s/%s: bad slot name '{%.*s}'",
                                  x->slug, x->tname, (int)(nl > 40 ? 40 : nl), name);
            memcpy(key, name, nl);
            key[nl] = '\0';
            json_t *l = find_list(x, key);
            if (!l)
                return px_err_set(x->err, PX_EINVAL,
                                  "vocab %s/%s: slot '{%s}' has no word list (in the type, the "
                                  "theme or _common.json)",
                                  x->slug, x->tname, key);
            json_t *e = json_array_get(l, px_gen_rand(&x->o->rng) % json_array_size(l));
            if (!json_is_string(e))
                return px_err_set(x->err, PX_EINVAL, "vocab %s/%s: list '%s' holds a non-string",
                                  x->slug, x->tname, key);
            int st = expand(x, json_string_value(e), json_string_length(e), depth + 1);
            if (st)
                return st;
        }
        i = j + 1;
    }
    return PX_OK;
}

static int offline_write(px_gen_writer *w, const char *theme, const char *slug, int type, int n,
                         char ***out, size_t *nout, char *subtopic, size_t cap, px_err *err)
{
    offline_state *o = w->state;
    json_t *root;
    int st = offline_vocab(o, theme, slug, &root, err);
    if (st != PX_OK)
        return st;
    const char *tname = px_gen_type_name(type);
    json_t *typeobj = json_object_get(root, tname);
    json_t *templates = json_object_get(typeobj, "templates");
    if (!json_is_object(typeobj) || !json_is_array(templates) || json_array_size(templates) == 0)
        return px_err_set(err, PX_EINVAL, "vocab %s: \"%s.templates\": expected a non-empty array",
                          slug, tname);
    char **v = px_calloc((size_t)n, sizeof *v);
    if (!v)
        return px_err_set(err, PX_ENOMEM, "writer: out of memory");
    expander x = {.o = o, .typeobj = typeobj, .themeobj = root, .slug = slug, .tname = tname,
                  .err = err};
    int k = 0;
    for (; k < n; k++) {
        json_t *t = json_array_get(templates, px_gen_rand(&o->rng) % json_array_size(templates));
        if (!json_is_string(t)) {
            st = px_err_set(err, PX_EINVAL, "vocab %s: \"%s.templates\" holds a non-string", slug,
                            tname);
            break;
        }
        x.out.len = 0;
        if ((st = expand(&x, json_string_value(t), json_string_length(t), 0)) != PX_OK)
            break;
        if ((st = px_buf_append(&x.out, "", 1)) != PX_OK) {
            px_err_set(err, st, "writer: out of memory");
            break;
        }
        if (!(v[k] = px_strdup((const char *)x.out.data))) {
            st = px_err_set(err, PX_ENOMEM, "writer: out of memory");
            break;
        }
    }
    px_buf_free(&x.out);
    if (st != PX_OK) {
        px_manifest_strings_free(v, (size_t)k);
        return st;
    }
    px_gen_writer_count(w, 1, 0);
    if (subtopic && cap)
        snprintf(subtopic, cap, "templates of vocab/%s.json", slug);
    *out = v;
    *nout = (size_t)n;
    return PX_OK;
}

int px_gen_writer_offline_create(const char *vocab_dir, uint64_t seed, px_gen_writer **out,
                                 px_err *err)
{
    *out = NULL;
    offline_state *o = px_calloc(1, sizeof *o);
    if (!o || !(o->dir = px_strdup(vocab_dir ? vocab_dir : "vocab"))) {
        free(o);
        return px_err_set(err, PX_ENOMEM, "writer: out of memory");
    }
    o->rng = seed ^ 0x5851f42d4c957f2dULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/_common.json", o->dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        int st = load_json_file(path, &o->common, err);
        if (st != PX_OK) {
            free(o->dir);
            free(o);
            return st;
        }
    }
    px_gen_writer *w = px_gen_writer_new("offline", offline_write, offline_destroy, o);
    if (!w) {
        json_decref(o->common);
        free(o->dir);
        free(o);
        return px_err_set(err, PX_ENOMEM, "writer: out of memory");
    }
    *out = w;
    return PX_OK;
}

/* ---- styles ----------------------------------------------------------------- */

static void style_defaults(px_gen_style *s)
{
    static const char *suffix[3] = {
        "professional interior photograph, photorealistic stock photo, natural light, wide angle "
        "lens, 24mm, sharp focus, high detail",
        "professional architectural exterior photograph, photorealistic stock photo, golden hour, "
        "35mm lens, sharp focus, high detail",
        "professional product close-up photograph, photorealistic stock photo, softbox lighting, "
        "85mm macro lens, shallow depth of field, sharp focus"};
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 3; i++) {
        snprintf(s->suffix[i], sizeof s->suffix[i], "%s", suffix[i]);
        snprintf(s->negative[i], sizeof s->negative[i],
                 "text, watermark, logo, signature, caption, lowres, blurry, deformed, "
                 "oversaturated, cartoon, illustration, 3d render");
    }
    snprintf(s->no_people, sizeof s->no_people, "people, person, face, hands, crowd");
}

int px_gen_style_load(const char *path, px_gen_style *s, px_err *err)
{
    style_defaults(s);
    if (!path)
        return PX_OK;
    json_t *root;
    int st = load_json_file(path, &root, err);
    if (st != PX_OK)
        return st;
    for (int i = 0; i < 3 && st == PX_OK; i++) {
        json_t *o = json_object_get(root, px_gen_type_name(i));
        if (!o)
            continue;
        if (!json_is_object(o)) {
            st = px_err_set(err, PX_EINVAL, "%s: \"%s\": expected an object", path,
                            px_gen_type_name(i));
            break;
        }
        const char *keys[2] = {"suffix", "negative"};
        char *dst[2] = {s->suffix[i], s->negative[i]};
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(o, keys[k]);
            if (!v)
                continue;
            if (!json_is_string(v) || json_string_length(v) >= sizeof s->suffix[i]) {
                st = px_err_set(err, PX_EINVAL, "%s: \"%s.%s\": expected a string under %zu bytes",
                                path, px_gen_type_name(i), keys[k], sizeof s->suffix[i]);
                break;
            }
            snprintf(dst[k], sizeof s->suffix[i], "%s", json_string_value(v));
        }
    }
    json_t *np = json_object_get(root, "no_people");
    if (st == PX_OK && np) {
        if (!json_is_string(np) || json_string_length(np) >= sizeof s->no_people)
            st = px_err_set(err, PX_EINVAL, "%s: \"no_people\": expected a short string", path);
        else
            snprintf(s->no_people, sizeof s->no_people, "%s", json_string_value(np));
    }
    json_decref(root);
    return st;
}

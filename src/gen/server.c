/*
 * What a render server is, what it can do and what it says it did.
 *
 * Servers that speak "the A1111 API" differ by project and version, and the
 * differences decide whether our settings are used at all:
 *  - stable-diffusion.cpp's sd-server answers /sdcpp/v1/capabilities with its
 *    samplers ("dpm++2m"), schedulers ("karras"), loaded model and limits;
 *    it renders one image at a time. Its OpenAI route reads only prompt, n,
 *    size and output format; everything else must ride in the prompt as
 *    <sd_cpp_extra_args>{json}</sd_cpp_extra_args> (backend.c).
 *  - AUTOMATIC1111 >= 1.9 (and Forge) list samplers and schedulers apart
 *    (/sdapi/v1/samplers, /sdapi/v1/schedulers): "DPM++ 2M" + "Karras";
 *    older versions have no /schedulers and take the combined name
 *    "DPM++ 2M Karras". An unknown name silently falls back to a default on
 *    some versions, so names are checked against the server's list here.
 * What a server did comes back as A1111 infotext (A1111's `info`, and the
 * "parameters" text sd-server writes into its PNGs), parsed here.
 */
#include "gen_internal.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A1111 sampler names, sd-server's and ComfyUI's for the same method. */
static const struct {
    const char *a1111, *sdcpp, *comfy;
} k_samplers[] = {
    {"Euler a", "euler_a", "euler_ancestral"},
    {"Euler", "euler", "euler"},
    {"Heun", "heun", "heun"},
    {"DPM2", "dpm2", "dpm_2"},
    {"DPM++ 2S a", "dpm++2s_a", "dpmpp_2s_ancestral"},
    {"DPM++ 2M", "dpm++2m", "dpmpp_2m"},
    {"DPM++ 2M SDE", "dpm++2m_sde", "dpmpp_2m_sde"},
    {"LCM", "lcm", "lcm"},
    {"DDIM", "ddim_trailing", "ddim"},
    {"LMS", "lms", "lms"},
    {"iPNDM", "ipndm", "ipndm"},
    {"TCD", "tcd", NULL},
};
/* Scheduler suffixes of A1111's combined names and their scheduler names
 * (sd-server and ComfyUI spell them alike). */
static const struct {
    const char *suffix, *label, *sdcpp;
} k_schedulers[] = {
    {" Karras", "Karras", "karras"},
    {" Exponential", "Exponential", "exponential"},
    {" SGM Uniform", "SGM Uniform", "sgm_uniform"},
    {" Simple", "Simple", "simple"},
};
#define NSAMPLERS (sizeof k_samplers / sizeof k_samplers[0])
#define NSCHEDULERS (sizeof k_schedulers / sizeof k_schedulers[0])

/* GETs url and parses a 200 answer as JSON; *status gets the HTTP status. */
static int get_json(px_gen_client *c, const char *base, const char *path, long timeout_ms,
                    long *status, json_t **out, px_err *err)
{
    char url[1024];
    px_gen_join_url(base, path, url, sizeof url);
    px_buf resp = {0};
    *out = NULL;
    int st = px_gen_http(c, url, NULL, NULL, timeout_ms, 4u << 20, status, &resp, err);
    if (st == PX_OK && *status == 200) {
        *out = json_loadb((const char *)resp.data, resp.len, 0, NULL);
        if (!*out)
            st = px_err_set(err, PX_ECORRUPT, "%s: answer is not JSON", url);
    }
    px_buf_free(&resp);
    return st;
}

/* Appends the strings of arr (or of arr[i].key / aliases) to a name table. */
static int add_names(json_t *arr, const char *key, char (*tab)[40], int cap, int n)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *s =
            json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, key));
        if (s && n < cap && strlen(s) < 40)
            snprintf(tab[n++], 40, "%s", s);
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(v, "aliases"), k,
                           a) if (json_is_string(a) && n < cap && json_string_length(a) < 40)
            snprintf(tab[n++], 40, "%s", json_string_value(a));
    }
    return n;
}

static int probe_sdcpp(json_t *caps, px_gen_server_info *info)
{
    snprintf(info->kind, sizeof info->kind, "sd-server");
    info->split_scheduler = 1;
    info->nsamplers = add_names(json_object_get(caps, "samplers"), "name", info->samplers, 64, 0);
    char tmp[32][40];
    info->nschedulers = add_names(json_object_get(caps, "schedulers"), "name", tmp, 32, 0);
    for (int i = 0; i < info->nschedulers; i++)
        snprintf(info->schedulers[i], sizeof info->schedulers[i], "%.31s", tmp[i]);
    json_t *m = json_object_get(caps, "model");
    const char *stem = json_string_value(json_object_get(m, "stem"));
    snprintf(info->model, sizeof info->model, "%s", stem ? stem : "");
    info->max_inflight = 1; /* one generation thread drains its queue */
    return PX_OK;
}

static int probe_a1111(px_gen_client *c, const char *url, long timeout_ms, px_gen_server_info *info,
                       px_err *err)
{
    snprintf(info->kind, sizeof info->kind, "a1111");
    info->interrupt = 1;
    long status;
    json_t *j;
    int st = get_json(c, url, "/sdapi/v1/samplers", timeout_ms, &status, &j, err);
    if (st != PX_OK)
        return st;
    info->nsamplers = json_is_array(j) ? add_names(j, "name", info->samplers, 64, 0) : -1;
    json_decref(j);
    if ((st = get_json(c, url, "/sdapi/v1/schedulers", timeout_ms, &status, &j, err)))
        return st;
    info->split_scheduler = json_is_array(j);
    info->nschedulers = -1;
    if (info->split_scheduler) {
        char tmp[32][40];
        int n = add_names(j, "name", tmp, 32, 0);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) /* labels ("Karras") next to names ("karras") */
        {
            const char *l = json_string_value(json_object_get(v, "label"));
            if (l && n < 32 && strlen(l) < 32)
                snprintf(tmp[n++], 40, "%s", l);
        }
        for (int k = 0; k < n; k++)
            snprintf(info->schedulers[k], sizeof info->schedulers[k], "%.31s", tmp[k]);
        info->nschedulers = n;
    }
    json_decref(j);
    if ((st = get_json(c, url, "/sdapi/v1/options", timeout_ms, &status, &j, err)))
        return st;
    const char *m = json_string_value(json_object_get(j, "sd_model_checkpoint"));
    snprintf(info->model, sizeof info->model, "%s", m ? m : "");
    json_decref(j);
    return PX_OK;
}

int px_gen_probe(px_gen_client *c, px_gen_backend backend, const char *url, long timeout_ms,
                 px_gen_server_info *info, px_err *err)
{
    memset(info, 0, sizeof *info);
    info->nsamplers = info->nschedulers = -1;
    if (backend == PX_GEN_COMFYUI) {
        snprintf(info->kind, sizeof info->kind, "comfyui");
        return PX_OK;
    }
    long status;
    json_t *caps;
    int st = get_json(c, url, "/sdcpp/v1/capabilities", timeout_ms, &status, &caps, err);
    if (st != PX_OK)
        return st;
    if (json_is_object(caps)) {
        st = probe_sdcpp(caps, info);
        json_decref(caps);
        return st;
    }
    if (backend == PX_GEN_OPENAI) {
        snprintf(info->kind, sizeof info->kind, "openai");
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: --backend openai: the OpenAI images API carries no seed, steps, "
                          "CFG scale, negative prompt or sampler, and this server is not sd-server "
                          "(no /sdcpp/v1/capabilities), so they would not be used; use "
                          "--backend a1111 where the server has /sdapi/v1/txt2img",
                          url);
    }
    return probe_a1111(c, url, timeout_ms, info, err);
}

/* ---- samplers ------------------------------------------------------------------ */

static int listed(char (*tab)[40], int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcasecmp(tab[i], name))
            return i;
    return -1;
}

static int listed32(char (*tab)[32], int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcasecmp(tab[i], name))
            return i;
    return -1;
}

static void known_list(const px_gen_server_info *info, char *out, size_t cap)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < info->nsamplers && k + 50 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%s", i ? ", " : "", info->samplers[i]);
}

int px_gen_server_sampler(const px_gen_server_info *info, const char *name, char *sampler,
                          size_t scap, char *scheduler, size_t hcap, px_err *err)
{
    scheduler[0] = '\0';
    snprintf(sampler, scap, "%s", name ? name : "");
    if (!info || !name || !*name || !info->kind[0])
        return PX_OK;
    /* split "DPM++ 2M Karras" into the method and the scheduler */
    char base[64];
    snprintf(base, sizeof base, "%s", name);
    int sch = -1;
    size_t bl = strlen(base);
    for (size_t i = 0; i < NSCHEDULERS; i++) {
        size_t sl = strlen(k_schedulers[i].suffix);
        if (bl > sl && !strcasecmp(base + bl - sl, k_schedulers[i].suffix)) {
            base[bl - sl] = '\0';
            sch = (int)i;
            break;
        }
    }
    int sdcpp = !strcmp(info->kind, "sd-server"), comfy = !strcmp(info->kind, "comfyui");
    const char *method = comfy ? NULL : base;
    for (size_t i = 0; i < NSAMPLERS; i++)
        if (!strcasecmp(base, k_samplers[i].a1111) || !strcasecmp(base, k_samplers[i].sdcpp) ||
            (k_samplers[i].comfy && !strcasecmp(base, k_samplers[i].comfy)))
            method = sdcpp   ? k_samplers[i].sdcpp
                     : comfy ? k_samplers[i].comfy
                             : k_samplers[i].a1111;
    if (comfy) { /* ComfyUI: KSampler's sampler_name and scheduler ("normal" when none) */
        if (!method)
            return px_err_set(err, PX_EINVAL, "sampler '%s': no ComfyUI sampler of that name",
                              name);
        snprintf(sampler, scap, "%s", method);
        snprintf(scheduler, hcap, "%s", sch >= 0 ? k_schedulers[sch].sdcpp : "normal");
        return PX_OK;
    }
    char known[1200];
    if (!info->split_scheduler) { /* older A1111: one combined name, as given */
        if (info->nsamplers >= 0 &&
            listed((char(*)[40])info->samplers, info->nsamplers, name) < 0) {
            known_list(info, known, sizeof known);
            return px_err_set(err, PX_EINVAL,
                              "sampler '%s': the server does not know it (it has: "
                              "%s)",
                              name, known);
        }
        return PX_OK;
    }
    snprintf(sampler, scap, "%s", method);
    if (info->nsamplers >= 0 && listed((char(*)[40])info->samplers, info->nsamplers, method) < 0) {
        known_list(info, known, sizeof known);
        return px_err_set(err, PX_EINVAL,
                          "sampler '%s' (sent as '%s'): the server does not know it "
                          "(it has: %s)",
                          name, method, known);
    }
    if (sch < 0)
        return PX_OK;
    const char *want = sdcpp ? k_schedulers[sch].sdcpp : k_schedulers[sch].label;
    int at = info->nschedulers >= 0
                 ? listed32((char(*)[32])info->schedulers, info->nschedulers, want)
                 : 0;
    if (at < 0 && !sdcpp) /* A1111 lists names ("karras") and labels ("Karras") */
        at = listed32((char(*)[32])info->schedulers, info->nschedulers, k_schedulers[sch].sdcpp);
    if (at < 0)
        return px_err_set(err, PX_EINVAL, "sampler '%s': the server has no scheduler '%s'", name,
                          want);
    snprintf(scheduler, hcap, "%s", info->nschedulers >= 0 ? info->schedulers[at] : want);
    return PX_OK;
}

/* ---- what the server did ------------------------------------------------------ */

/* The value after "key: " in an infotext settings line, up to the next ", "
 * that starts another "Key: " (values such as a model name may hold commas). */
static int setting(const char *line, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p += kl) {
        if ((p != line && !(p >= line + 2 && p[-2] == ',' && p[-1] == ' ')) ||
            strncmp(p + kl, ": ", 2))
            continue;
        const char *v = p + kl + 2, *e = v;
        while (*e && *e != '\n') {
            if (e[0] == ',' && e[1] == ' ') {
                const char *q = e + 2;
                while (*q && (isalnum((unsigned char)*q) || *q == ' ' || *q == '-'))
                    q++;
                if (q[0] == ':' && q[1] == ' ')
                    break;
            }
            e++;
        }
        size_t n = (size_t)(e - v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == ',')) /* sd-server ends with ", " */
            n--;
        if (n >= cap)
            n = cap - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return 1;
    }
    return 0;
}

void px_gen_parse_infotext(const char *text, const char *negative, px_gen_render_used *u)
{
    if (!text || !*text)
        return;
    snprintf(u->info, sizeof u->info, "%s", text);
    const char *neg = strstr(text, "\nNegative prompt: ");
    /* the settings are on the last line that starts with "Steps: " */
    const char *line = NULL;
    for (const char *p = text; (p = strstr(p, "Steps: ")); p++)
        if (p == text || p[-1] == '\n')
            line = p;
    if (negative) {
        u->known |= PX_GEN_USED_NEGATIVE;
        if (neg) {
            const char *v = neg + 18;
            size_t n = strcspn(v, "\n");
            u->negative_same = strlen(negative) == n && !strncmp(v, negative, n);
        } else {
            u->negative_same = !*negative;
        }
    }
    if (!line)
        return;
    char v[256];
    if (setting(line, "Steps", v, sizeof v) && (u->steps = atoi(v)) > 0)
        u->known |= PX_GEN_USED_STEPS;
    if (setting(line, "CFG scale", v, sizeof v)) {
        u->cfg = atof(v);
        u->known |= PX_GEN_USED_CFG;
    }
    if (setting(line, "Seed", v, sizeof v)) {
        u->seed = strtoll(v, NULL, 10);
        u->known |= PX_GEN_USED_SEED;
    }
    if (setting(line, "Size", v, sizeof v) && sscanf(v, "%dx%d", &u->width, &u->height) == 2)
        u->known |= PX_GEN_USED_SIZE;
    if (setting(line, "Sampler", v, sizeof v)) {
        char sch[64];
        if (setting(line, "Schedule type", sch, sizeof sch) && strcasecmp(sch, "Automatic"))
            snprintf(u->sampler, sizeof u->sampler, "%.40s %.20s", v, sch);
        else
            snprintf(u->sampler, sizeof u->sampler, "%.63s", v);
        u->known |= PX_GEN_USED_SAMPLER;
    }
    if (setting(line, "Model", v, sizeof v)) {
        snprintf(u->model, sizeof u->model, "%s", v);
        u->known |= PX_GEN_USED_MODEL;
    }
    if (setting(line, "Model hash", v, sizeof v))
        snprintf(u->model_hash, sizeof u->model_hash, "%.31s", v);
}

/* ---- sizes ---------------------------------------------------------------------- */

int px_gen_size_policy_parse(const char *s, px_gen_size_policy *p, px_err *err)
{
    static const char *names[] = {"refuse", "rescale", "keep"};
    for (int i = 0; s && i < 3; i++)
        if (!strcmp(s, names[i])) {
            *p = (px_gen_size_policy)i;
            return PX_OK;
        }
    return px_err_set(err, PX_EINVAL, "--size-mismatch '%s': expected refuse, rescale or keep",
                      s ? s : "");
}

int px_gen_rescale(px_image *img, int w, int h, px_err *err)
{
    if (w < 1 || h < 1 || w > 16384 || h > 16384)
        return px_err_set(err, PX_EINVAL, "rescale: bad size %dx%d", w, h);
    /* the largest centred rectangle of the requested shape */
    double sx = 0, sy = 0, sw = img->w, sh = img->h;
    if ((double)img->w * h > (double)img->h * w) {
        sw = (double)img->h * w / h;
        sx = (img->w - sw) / 2;
    } else {
        sh = (double)img->w * h / w;
        sy = (img->h - sh) / 2;
    }
    px_image out;
    const int st = px_image_resample(img, (float)sx, (float)sy, (float)sw, (float)sh, w, h, &out);
    if (st != PX_OK)
        return px_err_set(err, st, "rescale: %s for %dx%d",
                          st == PX_ENOMEM ? "out of memory" : "nothing to scale", w, h);
    px_image_free(img);
    *img = out;
    return PX_OK;
}

/* ---- up-front checks and the record ---------------------------------------------- */

int px_gen_server_ready(const px_gen_server_info *info, const char *url,
                        const px_gen_render_defaults *r, px_err *err)
{
    char s[64], h[32];
    int st = px_gen_server_sampler(info, r->sampler, s, sizeof s, h, sizeof h, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "%s", url);
    /* sd-server renders with the model it was started with, whatever is asked */
    if (!strcmp(info->kind, "sd-server") && r->model[0] && info->model[0] &&
        !px_gen_model_matches(r->model, info->model))
        return px_err_set(err, PX_EINVAL,
                          "%s: model '%s' asked for, but sd-server has '%s' loaded and cannot "
                          "switch; start it with that model or leave the model setting empty",
                          url, r->model, info->model);
    return PX_OK;
}

/* Replaces *dst by a copy of v (PX_ENOMEM). */
static int replace_str(char **dst, const char *v)
{
    char *n = px_strdup(v);
    if (!n)
        return PX_ENOMEM;
    free(*dst);
    *dst = n;
    return PX_OK;
}

int px_gen_apply_used(px_manifest_job *j, const px_gen_server_info *info,
                      const px_gen_render_used *u, int got_w, int got_h, const char *size_policy,
                      char **render_info)
{
    *render_info = NULL;
    json_t *asked =
        json_pack("{s:I, s:i, s:i, s:i, s:f, s:s, s:s}", "seed", (json_int_t)j->seed, "width",
                  j->width, "height", j->height, "steps", j->steps, "cfg", j->cfg, "sampler",
                  j->sampler ? j->sampler : "", "model", j->model ? j->model : "");
    if (u->known & PX_GEN_USED_SEED)
        j->seed = u->seed;
    if (u->known & PX_GEN_USED_STEPS)
        j->steps = u->steps;
    if (u->known & PX_GEN_USED_CFG)
        j->cfg = u->cfg;
    int st = PX_OK;
    if ((u->known & PX_GEN_USED_SAMPLER) && u->sampler[0])
        st = replace_str(&j->sampler, u->sampler);
    if (st == PX_OK && (u->known & PX_GEN_USED_MODEL) && u->model[0]) {
        char m[300];
        snprintf(m, sizeof m, "%s%s%s%s", u->model, u->model_hash[0] ? " [" : "", u->model_hash,
                 u->model_hash[0] ? "]" : "");
        st = replace_str(&j->model, m);
    }
    json_t *o = json_pack("{s:s, s:o, s:s}", "server_kind", info ? info->kind : "", "asked", asked,
                          "server_said", u->info);
    /* the size it rendered is the image's; what it says (sd-server: the size asked) is its word */
    if (o && got_w > 0)
        json_object_set_new(o, "rendered_size", json_sprintf("%dx%d", got_w, got_h));
    if (o && size_policy)
        json_object_set_new(o, "size_mismatch", json_string(size_policy));
    if (o && (u->known & PX_GEN_USED_SIZE))
        json_object_set_new(o, "server_said_size", json_sprintf("%dx%d", u->width, u->height));
    *render_info = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return st != PX_OK || !*render_info ? PX_ENOMEM : PX_OK;
}

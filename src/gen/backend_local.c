/*
 * The local render backend: Stable Diffusion in this process, on the CPU,
 * with pixpipe's own engine (src/diffusion, px_sd.h) instead of a server.
 *
 * px_gen_local_create loads the model once (weights mapped read-only) and
 * reads its A1111 model hash (first 10 hex digits of the checkpoint's
 * SHA-256) once, so every image of a run names the same model. The render
 * workers of px_gen_run share the one model: px_sd_render runs one render
 * at a time on it (the thread pool and scratch arena are the model's), and
 * each render already keeps every core busy, so one worker is the default.
 *
 * Campaign settings speak A1111: px_gen_local_resolve turns the campaign's
 * render defaults into what this model will really do before any job is
 * recorded (the model's native size in a 3:2 landscape shape when the
 * campaign gives none; sides rounded to the UNet's multiple; the sampler's
 * canonical A1111 name; the model as "name [hash]", A1111's checkpoint
 * title), so the manifest records the settings used. px_gen_local_render
 * maps a job's sampler name ("DPM++ 2M Karras", "Euler a", or our names) to
 * the engine's and reports what the render used.
 */
#include "gen_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "diffusion/px_sd.h"

struct px_gen_local {
    px_sd_model *model;
    px_sd_model_info info;
    int use_taesd;
    char name[200]; /* file or folder name without .safetensors */
    char hash[11];
};

/* The model's name as A1111 writes it: the file or folder name without extension. */
static void model_name(const char *path, char *out, size_t cap)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/')
        tmp[--l] = '\0';
    const char *base = strrchr(tmp, '/');
    snprintf(out, cap, "%s", base ? base + 1 : tmp);
    char *dot = strrchr(out, '.');
    if (dot && dot != out && !strcmp(dot, ".safetensors"))
        *dot = '\0';
}

int px_gen_local_create(const px_gen_local_opts *o, px_gen_local **out, px_err *err)
{
    *out = NULL;
    if (!o || !o->model || !*o->model)
        return px_err_set(err, PX_EINVAL, "local backend: no model given (--model PATH)");
    px_gen_local *l = px_calloc(1, sizeof *l);
    if (!l)
        return px_err_set(err, PX_ENOMEM, "local backend: out of memory");
    px_sd_load_opts lo = {
        .tokenizer = o->tokenizer, .vocab = o->vocab, .taesd = o->taesd, .threads = o->threads};
    int st = px_sd_model_load(o->model, &lo, &l->model, err);
    if (st == PX_OK)
        st = px_sd_model_hash(l->model, l->hash, err);
    if (st != PX_OK) {
        px_gen_local_destroy(l);
        return st;
    }
    px_sd_model_describe(l->model, &l->info);
    l->use_taesd = o->taesd != NULL;
    model_name(o->model, l->name, sizeof l->name);
    *out = l;
    return PX_OK;
}

void px_gen_local_destroy(px_gen_local *l)
{
    if (!l)
        return;
    px_sd_model_free(l->model);
    free(l);
}

const char *px_gen_local_name(const px_gen_local *l)
{
    return l->name;
}

const char *px_gen_local_hash(const px_gen_local *l)
{
    return l->hash;
}

int px_gen_local_threads(const px_gen_local *l)
{
    return l->info.threads;
}

/* ---- samplers ------------------------------------------------------------------ */

int px_gen_local_sampler(const char *name, const char **ours, int *karras, px_err *err)
{
    /* A1111's display names, ComfyUI's and the engine's own, each optionally followed by
     * "Karras" (A1111 long wrote the schedule into the name, as in "DPM++ 2M Karras", and
     * campaigns and infotexts still say it that way) */
    static const struct {
        const char *name, *ours;
    } k_names[] = {
        {"euler", "euler"},       {"euler a", "euler_a"},
        {"euler_a", "euler_a"},   {"euler_ancestral", "euler_a"},
        {"dpm++ 2m", "dpmpp_2m"}, {"dpmpp_2m", "dpmpp_2m"},
        {"lcm", "lcm"},
    };
    char base[64];
    if (!name || strlen(name) >= sizeof base)
        goto unknown;
    snprintf(base, sizeof base, "%s", name);
    size_t n = strlen(base);
    *karras = 0;
    if (n > 7 && !strcasecmp(base + n - 7, " karras")) {
        base[n - 7] = '\0';
        *karras = 1;
    } else if (n > 7 && !strcasecmp(base + n - 7, "_karras")) {
        base[n - 7] = '\0';
        *karras = 1;
    }
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (!strcasecmp(base, k_names[i].name)) {
            if (*karras && !strcmp(k_names[i].ours, "lcm"))
                return px_err_set(err, PX_EINVAL, "sampler '%s': Karras sigmas do not apply to LCM",
                                  name);
            *ours = k_names[i].ours;
            return PX_OK;
        }
unknown:
    return px_err_set(err, PX_EINVAL,
                      "sampler '%s': the local backend runs \"Euler\", \"Euler a\", \"DPM++ 2M\" "
                      "and \"LCM\" (the first three also with \" Karras\", e.g. \"DPM++ 2M "
                      "Karras\"); our names euler, euler_a, dpmpp_2m and lcm work too",
                      name ? name : "(none)");
}

/* Engine parameters for a request; the sampler is mapped (err names it when unknown). */
static int make_params(const px_gen_local *l, const px_gen_render_req *req, px_sd_params *p,
                       px_err *err)
{
    px_sd_params_default(p);
    int st = px_gen_local_sampler(req->sampler, &p->sampler, &p->karras, err);
    if (st != PX_OK)
        return st;
    p->prompt = req->prompt ? req->prompt : "";
    p->negative = req->negative;
    p->width = req->width;
    p->height = req->height;
    p->steps = req->steps;
    p->cfg = (float)req->cfg;
    p->seed = req->seed;
    p->use_taesd = l->use_taesd;
    return PX_OK;
}

/* ---- campaign settings ---------------------------------------------------------- */

/* The campaign's size, what it left out filled in from the model: both sides
 * missing give the native size in 3:2 landscape (768x512 for SD 1.x), one
 * missing side follows the other in the same shape. */
static void pick_size(const px_gen_local *l, const px_gen_render_defaults *r, int *w, int *h)
{
    int native = l->info.native_size > 0 ? l->info.native_size : 512;
    *w = r->width;
    *h = r->height;
    if (!(r->size_set & 3)) {
        *w = native * 3 / 2;
        *h = native;
    } else if (!(r->size_set & 2)) {
        *h = *w * 2 / 3;
    } else if (!(r->size_set & 1)) {
        *w = *h * 3 / 2;
    }
}

int px_gen_local_resolve(px_gen_local *l, px_gen_render_defaults *r, char *note, size_t cap,
                         px_err *err)
{
    if (note && cap)
        note[0] = '\0';
    px_gen_render_req req = {
        .prompt = "", .steps = r->steps, .cfg = r->cfg, .sampler = r->sampler, .seed = 0};
    pick_size(l, r, &req.width, &req.height);
    px_sd_params p;
    int st = make_params(l, &req, &p, err);
    px_sd_result plan;
    if (st == PX_OK)
        st = px_sd_plan(l->model, &p, &plan, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "local backend: campaign render settings");
    const px_sd_memory *m = &plan.memory;
    if (m->available && m->total > m->available)
        return px_err_set(err, PX_ELIMIT,
                          "local backend: %dx%d needs about %llu MiB (weights %llu MiB), only "
                          "%llu MiB available: give the campaign a smaller size",
                          plan.width, plan.height, (unsigned long long)(m->total >> 20),
                          (unsigned long long)(m->weights >> 20),
                          (unsigned long long)(m->available >> 20));
    size_t k = 0;
    if (plan.rounded && note && cap)
        k += (size_t)snprintf(note, cap, "%dx%d is not a multiple of %d a side: rendering %dx%d",
                              plan.req_width, plan.req_height, l->info.size_multiple, plan.width,
                              plan.height);
    if (l->info.lcm && strcmp(plan.sampler, "lcm") && note && k + 2 < cap)
        snprintf(note + k, cap - k,
                 "%s%s is an LCM model: sampler \"LCM\", about 4 steps and "
                 "cfg 1-2 suit it better than \"%s\"",
                 k ? "; " : "", l->name, r->sampler);
    r->width = plan.width;
    r->height = plan.height;
    r->size_set = 3;
    r->steps = plan.steps; /* cfg stays the campaign's double: the engine takes it as is */
    snprintf(r->sampler, sizeof r->sampler, "%s", plan.sampler_a1111);
    snprintf(r->model, sizeof r->model, "%.100s [%s]", l->name, l->hash);
    return PX_OK;
}

/* ---- rendering ------------------------------------------------------------------ */

typedef struct {
    px_gen_local_step_fn fn;
    void *arg;
} step_ctx;

static int on_sd_step(void *ctx, const px_sd_progress *p)
{
    const step_ctx *c = ctx;
    return p->stage == PX_SD_STAGE_SAMPLE && c->fn && c->fn(c->arg, p->step, p->steps);
}

int px_gen_local_render(px_gen_local *l, const px_gen_render_req *req, px_gen_local_step_fn on_step,
                        void *step_arg, px_image *out, px_gen_local_used *used, px_err *err)
{
    memset(out, 0, sizeof *out);
    if (req->seed < 0)
        return px_err_set(err, PX_EINVAL, "local backend: seed %lld: expected 0 or more",
                          (long long)req->seed);
    px_sd_params p;
    int st = make_params(l, req, &p, err);
    if (st != PX_OK)
        return st;
    step_ctx sc = {on_step, step_arg};
    p.progress = on_sd_step;
    p.progress_ctx = &sc;
    px_sd_result r;
    st = px_sd_render(l->model, &p, out, &r, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "local render");
    if (used) {
        memset(used, 0, sizeof *used);
        used->seed = r.seed;
        used->width = r.width;
        used->height = r.height;
        used->steps = r.steps;
        used->cfg = req->cfg; /* as asked: r.cfg is the same value as a float */
        snprintf(used->sampler, sizeof used->sampler, "%s", r.sampler_a1111);
        used->ms = r.ms_total;
    }
    return PX_OK;
}

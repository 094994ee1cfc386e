/*
 * Render backends: one request shape per server family, all returning the
 * raw image file the server produced and what the server says it used
 * (px_gen_render_used), so the manifest records what was done, not what was
 * asked. Which shape a server gets follows px_gen_probe (server.c):
 *
 *  - AUTOMATIC1111 / Forge: POST /sdapi/v1/txt2img with sampler_name and,
 *    from 1.9, scheduler; base64 images in "images"; `info` (JSON text) says
 *    the seed, size, steps, CFG, sampler and model used. A timeout or cancel
 *    sends POST /sdapi/v1/interrupt so the server does not render on for
 *    nobody.
 *  - sd-server (stable-diffusion.cpp) under --backend a1111: its native async
 *    API, POST /sdcpp/v1/img_gen then GET /sdcpp/v1/jobs/{id}; a timeout or
 *    cancel cancels the job (sd-server can cancel only a queued one). What it
 *    used is read from the "parameters" text in its PNG.
 *  - OpenAI-style POST /v1/images/generations: only on sd-server, whose
 *    OpenAI route reads prompt, n, size and output_format and nothing else:
 *    our settings ride inside the prompt as
 *    <sd_cpp_extra_args>{json}</sd_cpp_extra_args>. Elsewhere the route
 *    cannot carry seed, steps, CFG, negative prompt or sampler and is refused.
 *  - ComfyUI: the user's API-format workflow with markers substituted
 *    ("%prompt%", "%negative%" inside strings; "%seed%", "%width%",
 *    "%height%", "%steps%", "%cfg%" as whole string values that become
 *    numbers), POST /prompt, poll /history/{id} with a growing interval until
 *    the outputs appear, then GET /view for the first image.
 * Every request is bounded by the caller's timeout; server garbage is
 * PX_ECORRUPT with a message naming the URL and what was missing.
 */
#include "gen_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_IMAGE_BYTES ((size_t)128 << 20)

static const char *k_backends[] = {"a1111", "openai", "comfyui", "local"};

const char *px_gen_backend_name(px_gen_backend b)
{
    return b >= 0 && b < 4 ? k_backends[b] : "?";
}

int px_gen_backend_parse(const char *s, px_gen_backend *b, px_err *err)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, k_backends[i])) {
            *b = i;
            return PX_OK;
        }
    return px_err_set(err, PX_EINVAL,
                      "unknown backend '%s' (expected a1111, openai, comfyui or local)", s ? s : "");
}

/* Decodes a base64 image string (optionally "data:...;base64,") into *image. */
static int take_b64(json_t *v, const char *url, const char *field, px_buf *image, px_err *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return px_err_set(err, PX_ECORRUPT, "%s: answer has no %s string", url, field);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', n);
        if (!comma)
            return px_err_set(err, PX_ECORRUPT, "%s: %s: data URL without a comma", url, field);
        n -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    uint8_t *d;
    size_t dl;
    int st = px_gen_b64_decode(s, n, &d, &dl);
    if (st == PX_ENOMEM)
        return px_err_set(err, st, "%s: out of memory", url);
    if (st != PX_OK || dl == 0) {
        free(d);
        return px_err_set(err, PX_ECORRUPT, "%s: %s is not base64", url, field);
    }
    image->len = 0;
    st = px_buf_append(image, d, dl);
    free(d);
    return st == PX_OK ? PX_OK : px_err_set(err, st, "%s: out of memory", url);
}

/* POSTs req (consumed; NULL means building it ran out of memory) and
 * returns the parsed JSON of a 200 answer. */
static int post_json(px_gen_client *c, const char *url, json_t *req, long timeout_ms, json_t **out,
                     px_err *err)
{
    *out = NULL;
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory building the request", url);
    px_buf resp = {0};
    long status;
    int st = px_gen_http(c, url, body, NULL, timeout_ms, MAX_IMAGE_BYTES * 2, &status, &resp, err);
    free(body);
    if (st == PX_OK && status != 200)
        st = px_err_set(err, status >= 500 || status == 429 ? PX_ENET : PX_ECORRUPT,
                        "%s: HTTP %ld: %.120s", url, status, resp.data ? (char *)resp.data : "");
    if (st == PX_OK) {
        json_error_t je;
        *out = json_loadb((const char *)resp.data, resp.len, 0, &je);
        if (!*out)
            st = px_err_set(err, PX_ECORRUPT, "%s: answer is not JSON (%s)", url, je.text);
    }
    px_buf_free(&resp);
    return st;
}

/* Model names compare without folder, extension and " [hash]": A1111 titles
 * are "name.safetensors [6ce0161689]", sd-server reports the file name. */
static void model_key(const char *m, char *out, size_t cap)
{
    const char *slash = strrchr(m, '/');
    snprintf(out, cap, "%s", slash ? slash + 1 : m);
    char *br = strstr(out, " [");
    if (br)
        *br = '\0';
    char *dot = strrchr(out, '.');
    if (dot && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".ckpt") || !strcmp(dot, ".gguf")))
        *dot = '\0';
}

int px_gen_model_matches(const char *asked, const char *used)
{
    if (!asked || !*asked || !used || !*used)
        return 1;
    char a[256], u[256];
    model_key(asked, a, sizeof a);
    model_key(used, u, sizeof u);
    return !strcmp(a, u);
}

/* What A1111 (or sd-server's A1111 route) says it did: `info` is a JSON
 * string with the seed, size, steps, CFG, sampler, model and infotexts. */
static void used_from_info(json_t *ans, const px_gen_render_req *r, px_gen_render_used *u)
{
    json_t *info = json_loads(json_string_value(json_object_get(ans, "info"))
                                  ? json_string_value(json_object_get(ans, "info"))
                                  : "null",
                              0, NULL);
    if (!json_is_object(info)) {
        json_decref(info);
        return;
    }
    px_gen_parse_infotext(json_string_value(json_array_get(json_object_get(info, "infotexts"), 0)),
                          r->negative ? r->negative : "", u);
    json_t *seeds = json_object_get(info, "all_seeds"), *v;
    v = json_is_integer(json_array_get(seeds, 0)) ? json_array_get(seeds, 0)
                                                  : json_object_get(info, "seed");
    if (json_is_integer(v)) {
        u->seed = json_integer_value(v);
        u->known |= PX_GEN_USED_SEED;
    }
    if (json_is_integer(v = json_object_get(info, "steps"))) {
        u->steps = (int)json_integer_value(v);
        u->known |= PX_GEN_USED_STEPS;
    }
    if (json_is_number(v = json_object_get(info, "cfg_scale"))) {
        u->cfg = json_number_value(v);
        u->known |= PX_GEN_USED_CFG;
    }
    if (json_is_integer(json_object_get(info, "width")) &&
        json_is_integer(json_object_get(info, "height"))) {
        u->width = (int)json_integer_value(json_object_get(info, "width"));
        u->height = (int)json_integer_value(json_object_get(info, "height"));
        u->known |= PX_GEN_USED_SIZE;
    }
    const char *s = json_string_value(json_object_get(info, "sampler_name"));
    if (s) {
        const char *sch = json_string_value(json_object_get(info, "scheduler"));
        if (!sch)
            sch = json_string_value(
                json_object_get(json_object_get(info, "extra_generation_params"), "Schedule type"));
        snprintf(u->sampler, sizeof u->sampler, "%.40s%s%.20s", s,
                 sch && *sch && strcasecmp(sch, "Automatic") ? " " : "",
                 sch && *sch && strcasecmp(sch, "Automatic") ? sch : "");
        u->known |= PX_GEN_USED_SAMPLER;
    }
    if ((s = json_string_value(json_object_get(info, "sd_model_name")))) {
        snprintf(u->model, sizeof u->model, "%s", s);
        u->known |= PX_GEN_USED_MODEL;
    }
    if ((s = json_string_value(json_object_get(info, "sd_model_hash"))))
        snprintf(u->model_hash, sizeof u->model_hash, "%s", s);
    if (json_is_string(v = json_object_get(info, "negative_prompt"))) {
        u->known |= PX_GEN_USED_NEGATIVE;
        u->negative_same = !strcmp(json_string_value(v), r->negative ? r->negative : "");
    }
    json_decref(info);
}

/* Reads the "parameters" text sd-server writes into its PNGs. */
static void used_from_png(const px_buf *image, const px_gen_render_req *r, px_gen_render_used *u)
{
    char *text = NULL;
    if (px_image_meta_read(image->data, image->len, PX_META_PARAMETERS, &text, NULL) == PX_OK)
        px_gen_parse_infotext(text, r->negative ? r->negative : "", u);
    free(text);
}

/* Refuses what the server says it did differently from what was asked and
 * cannot be put right by recording it: another model, another negative prompt. */
static int check_used(const char *url, const px_gen_render_req *r, const px_gen_render_used *u,
                      px_err *err)
{
    if ((u->known & PX_GEN_USED_MODEL) && !px_gen_model_matches(r->model, u->model))
        return px_err_set(err, PX_EINVAL,
                          "%s: asked for model '%s' but the server rendered with '%s' (it does not "
                          "switch models per request); load that model on the server, or leave "
                          "the model setting empty",
                          url, r->model, u->model);
    if ((u->known & PX_GEN_USED_NEGATIVE) && !u->negative_same)
        return px_err_set(err, PX_EINVAL, "%s: the server did not use our negative prompt", url);
    return PX_OK;
}

/* POSTs "{}" to base+path outside the client's cancel flag (which has
 * usually just fired): a short best-effort call that stops work on the
 * server. Logs what came of it; *status 0 when the server did not answer. */
static void post_aside(px_gen_client *c, const char *base, const char *path, long *status,
                       px_buf *resp, char *url, size_t cap)
{
    px_gen_join_url(base, path, url, cap);
    const void *saved = px_gen_client_get_cancel(c);
    px_gen_client_set_cancel(c, NULL);
    px_err e;
    *status = 0;
    if (px_gen_http(c, url, "{}", NULL, 5000, 4096, status, resp, &e) != PX_OK) {
        *status = 0;
        px_log(PX_LOG_WARN, "%s: could not stop the server's work: %s", url, e.msg);
    }
    px_gen_client_set_cancel(c, saved);
}

/* Tells an A1111 server to stop the render it is doing. */
static void a1111_interrupt(px_gen_client *c, const char *base)
{
    char url[1024];
    px_buf resp = {0};
    long status;
    post_aside(c, base, "/sdapi/v1/interrupt", &status, &resp, url, sizeof url);
    if (status)
        px_log(PX_LOG_INFO, "%s: asked the server to stop the render (HTTP %ld)", url, status);
    px_buf_free(&resp);
}

static int render_a1111(px_gen_client *c, const char *base, const px_gen_server_info *info,
                        const px_gen_render_req *r, long timeout_ms, px_buf *image,
                        px_gen_render_used *u, px_err *err)
{
    char url[1024], sampler[64], scheduler[32];
    px_gen_join_url(base, "/sdapi/v1/txt2img", url, sizeof url);
    int st = px_gen_server_sampler(info, r->sampler, sampler, sizeof sampler, scheduler,
                                   sizeof scheduler, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "%s", base);
    json_t *req =
        json_pack("{s:s, s:s, s:I, s:i, s:i, s:i, s:f, s:s, s:i, s:i}", "prompt", r->prompt,
                  "negative_prompt", r->negative ? r->negative : "", "seed", (json_int_t)r->seed,
                  "width", r->width, "height", r->height, "steps", r->steps, "cfg_scale", r->cfg,
                  "sampler_name", sampler, "batch_size", 1, "n_iter", 1);
    if (req && scheduler[0])
        json_object_set_new(req, "scheduler", json_string(scheduler));
    if (req && r->model && *r->model)
        json_object_set_new(req, "override_settings",
                            json_pack("{s:s}", "sd_model_checkpoint", r->model));
    json_t *ans;
    st = post_json(c, url, req, timeout_ms, &ans, err);
    if ((st == PX_ETIMEOUT || st == PX_ECLOSED) && info && info->interrupt)
        a1111_interrupt(c, base);
    if (st != PX_OK)
        return st;
    st = take_b64(json_array_get(json_object_get(ans, "images"), 0), url, "images[0]", image, err);
    if (st == PX_OK)
        used_from_info(ans, r, u);
    json_decref(ans);
    return st == PX_OK ? check_used(url, r, u, err) : st;
}

/* Our settings in sd-server's native request schema (also what
 * <sd_cpp_extra_args> holds on its OpenAI route). */
static json_t *sdcpp_params(const px_gen_render_req *r, const char *sampler, const char *scheduler)
{
    json_t *sp =
        json_pack("{s:i, s:{s:f}}", "sample_steps", r->steps, "guidance", "txt_cfg", r->cfg);
    if (sp && sampler[0])
        json_object_set_new(sp, "sample_method", json_string(sampler));
    if (sp && scheduler[0])
        json_object_set_new(sp, "scheduler", json_string(scheduler));
    return json_pack("{s:s, s:I, s:i, s:i, s:o}", "negative_prompt", r->negative ? r->negative : "",
                     "seed", (json_int_t)r->seed, "width", r->width, "height", r->height,
                     "sample_params", sp);
}

static int render_openai(px_gen_client *c, const char *base, const px_gen_server_info *info,
                         const px_gen_render_req *r, long timeout_ms, px_buf *image,
                         px_gen_render_used *u, px_err *err)
{
    char url[1024], size[32], sampler[64], scheduler[32];
    px_gen_join_url(base, "/v1/images/generations", url, sizeof url);
    if (!info || strcmp(info->kind, "sd-server"))
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: the OpenAI images API carries no seed, "
                          "steps, CFG, negative prompt or sampler (only sd-server's extension "
                          "does); use --backend a1111",
                          url);
    int st = px_gen_server_sampler(info, r->sampler, sampler, sizeof sampler, scheduler,
                                   sizeof scheduler, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "%s", base);
    snprintf(size, sizeof size, "%dx%d", r->width, r->height);
    /* sd-server reads only prompt, n, size and output_format here: the rest rides in the prompt */
    json_t *extra = sdcpp_params(r, sampler, scheduler);
    char *ej = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    json_decref(extra);
    size_t pl = ej ? strlen(r->prompt) + strlen(ej) + 64 : 0;
    char *prompt = ej ? px_malloc(pl) : NULL;
    if (!prompt) {
        free(ej);
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", url);
    }
    snprintf(prompt, pl, "%s <sd_cpp_extra_args>%s</sd_cpp_extra_args>", r->prompt, ej);
    free(ej);
    json_t *req = json_pack("{s:s, s:i, s:s, s:s}", "prompt", prompt, "n", 1, "size", size,
                            "output_format", "png");
    free(prompt);
    json_t *ans;
    st = post_json(c, url, req, timeout_ms, &ans, err);
    if (st != PX_OK)
        return st;
    json_t *first = json_array_get(json_object_get(ans, "data"), 0);
    st = take_b64(json_object_get(first, "b64_json"), url, "data[0].b64_json", image, err);
    json_decref(ans);
    if (st == PX_OK)
        used_from_png(image, r, u);
    return st == PX_OK ? check_used(url, r, u, err) : st;
}

/* Asks sd-server to cancel an async job; a job already generating cannot be
 * (features cancel_generating: false), which is said in the log. */
static long sdcpp_cancel(px_gen_client *c, const char *base, const char *id)
{
    char path[300], url[1400];
    snprintf(path, sizeof path, "/sdcpp/v1/jobs/%s/cancel", id);
    px_buf resp = {0};
    long status;
    post_aside(c, base, path, &status, &resp, url, sizeof url);
    if (status == 200)
        px_log(PX_LOG_INFO, "%s: job cancelled on the server", url);
    else if (status)
        px_log(PX_LOG_WARN, "%s: HTTP %ld: %.200s (the server keeps rendering it)", url, status,
               resp.data ? (const char *)resp.data : "");
    px_buf_free(&resp);
    return status;
}

static void sleep_ms(long ms);

/* After a timeout on a job sd-server would not cancel (409: generating):
 * waits, at most wait_ms and while the run is not cancelled (Ctrl-C ends the
 * wait), for it to end,
 * so that the next request is not queued behind a render nobody wants and
 * times out in its turn. */
static void sdcpp_wait_abandoned(px_gen_client *c, const char *poll, long wait_ms)
{
    px_log(PX_LOG_INFO,
           "%s: waiting up to %ld ms for the abandoned render to end before the "
           "next request",
           poll, wait_ms);
    double t0 = px_now_ms();
    for (;;) {
        long left = wait_ms - (long)(px_now_ms() - t0);
        if (left <= 0)
            return;
        px_buf resp = {0};
        long status;
        px_err e;
        if (px_gen_http(c, poll, NULL, NULL, left, MAX_IMAGE_BYTES * 2, &status, &resp, &e) !=
            PX_OK) {
            px_buf_free(&resp);
            return;
        }
        json_t *j = status == 200 ? json_loadb((const char *)resp.data, resp.len, 0, NULL) : NULL;
        px_buf_free(&resp);
        const char *state = json_string_value(json_object_get(j, "status"));
        int busy = state && (!strcmp(state, "generating") || !strcmp(state, "queued"));
        json_decref(j);
        if (!busy)
            return;
        sleep_ms(left < 250 ? left : 250);
    }
}

/* sd-server's native async API: POST /sdcpp/v1/img_gen, poll
 * /sdcpp/v1/jobs/{id}; on a timeout or cancel the job is cancelled there. */
static int render_sdcpp(px_gen_client *c, const char *base, const px_gen_server_info *info,
                        const px_gen_render_req *r, long timeout_ms, px_buf *image,
                        px_gen_render_used *u, px_err *err)
{
    char url[1024], sampler[64], scheduler[32];
    px_gen_join_url(base, "/sdcpp/v1/img_gen", url, sizeof url);
    int st = px_gen_server_sampler(info, r->sampler, sampler, sizeof sampler, scheduler,
                                   sizeof scheduler, err);
    if (st != PX_OK)
        return px_err_prefix(err, st, "%s", base);
    json_t *req = sdcpp_params(r, sampler, scheduler);
    if (req)
        json_object_set_new(req, "prompt", json_string(r->prompt));
    if (req)
        json_object_set_new(req, "output_format", json_string("png"));
    double t0 = px_now_ms();
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", url);
    px_buf resp = {0};
    long status;
    st = px_gen_http(c, url, body, NULL, timeout_ms, 1u << 20, &status, &resp, err);
    free(body);
    json_t *ans = st == PX_OK && status == 202
                      ? json_loadb((const char *)resp.data, resp.len, 0, NULL)
                      : NULL;
    if (st == PX_OK && !ans)
        st = px_err_set(err, status >= 500 || status == 429 ? PX_ENET : PX_ECORRUPT,
                        "%s: HTTP %ld: %.120s", url, status, resp.data ? (char *)resp.data : "");
    px_buf_free(&resp);
    if (st != PX_OK)
        return st;
    const char *idv = json_string_value(json_object_get(ans, "id"));
    char id[128], path[200], poll[1300];
    if (!idv || strlen(idv) >= sizeof id ||
        strspn(idv, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                    "qrstuvwxyz0123456789_-") != strlen(idv)) {
        json_decref(ans);
        return px_err_set(err, PX_ECORRUPT, "%s: answer has no job id", url);
    }
    snprintf(id, sizeof id, "%s", idv);
    json_decref(ans);
    snprintf(path, sizeof path, "/sdcpp/v1/jobs/%s", id);
    px_gen_join_url(base, path, poll, sizeof poll);
    long wait = 50;
    for (;;) {
        long left = timeout_ms - (long)(px_now_ms() - t0);
        if (left > 0) {
            st = px_gen_http(c, poll, NULL, NULL, left, MAX_IMAGE_BYTES * 2, &status, &resp, err);
            if (st == PX_ECLOSED)
                sdcpp_cancel(c, base, id);
            if (st != PX_OK && st != PX_ETIMEOUT)
                return st;
        }
        if (left <= 0 || st == PX_ETIMEOUT) {
            /* the time is up, also when it ran out in a slow status request: a job the server
             * will not cancel is waited for, 10 timeouts, at least 10 minutes (the server takes
             * nothing else meanwhile anyway; a 192x192 render that outlived a 5 s timeout ran
             * 92 s on a busy CPU), else the retry queues behind it and times out in its turn */
            if (sdcpp_cancel(c, base, id) == 409)
                sdcpp_wait_abandoned(c, poll, timeout_ms * 10 > 600000 ? timeout_ms * 10 : 600000);
            return px_err_set(err, PX_ETIMEOUT, "%s: no result within %ld ms", poll, timeout_ms);
        }
        json_t *j = status == 200 ? json_loadb((const char *)resp.data, resp.len, 0, NULL) : NULL;
        px_buf_free(&resp);
        const char *state = json_string_value(json_object_get(j, "status"));
        if (!state) {
            json_decref(j);
            return px_err_set(err, status >= 500 ? PX_ENET : PX_ECORRUPT,
                              "%s: HTTP %ld or no job status", poll, status);
        }
        if (!strcmp(state, "completed")) {
            json_t *img =
                json_array_get(json_object_get(json_object_get(j, "result"), "images"), 0);
            st = take_b64(json_object_get(img, "b64_json"), poll, "result.images[0].b64_json",
                          image, err);
            json_decref(j);
            if (st == PX_OK)
                used_from_png(image, r, u);
            return st == PX_OK ? check_used(poll, r, u, err) : st;
        }
        if (!strcmp(state, "failed") || !strcmp(state, "cancelled")) {
            const char *m =
                json_string_value(json_object_get(json_object_get(j, "error"), "message"));
            st = px_err_set(err, PX_ENET, "%s: job %s: %.200s", poll, state, m ? m : "");
            json_decref(j);
            return st;
        }
        json_decref(j);
        sleep_ms(wait < left ? wait : left);
        wait = wait * 3 / 2 > 500 ? 500 : wait * 3 / 2;
    }
}

/* ---- ComfyUI ----------------------------------------------------------------- */

/* Replaces every "%key%" in s by val; returns a new string or NULL. */
static char *replace_all(const char *s, const char *key, const char *val)
{
    px_buf b = {0};
    size_t kl = strlen(key), vl = strlen(val);
    const char *p = s, *q;
    while ((q = strstr(p, key))) {
        if (px_buf_append(&b, p, (size_t)(q - p)) || px_buf_append(&b, val, vl))
            goto fail;
        p = q + kl;
    }
    if (px_buf_append(&b, p, strlen(p) + 1))
        goto fail;
    return (char *)b.data;
fail:
    px_buf_free(&b);
    return NULL;
}

/* The markers a workflow must hold, so that what the campaign records is
 * what renders (the sampler may instead be a literal, which is recorded). */
static const char *const k_markers[] = {"%prompt%", "%negative%", "%seed%", "%width%",
                                        "%height%", "%steps%",    "%cfg%"};

int px_gen_comfy_check(const char *workflow, px_err *err)
{
    json_error_t je;
    json_t *wf = workflow ? json_loads(workflow, 0, &je) : NULL;
    if (!json_is_object(wf)) {
        json_decref(wf);
        return px_err_set(err, PX_EINVAL, "comfyui workflow: not a JSON object (%s)",
                          workflow ? je.text : "none given");
    }
    char *text = json_dumps(wf, JSON_COMPACT);
    json_decref(wf);
    if (!text)
        return px_err_set(err, PX_ENOMEM, "comfyui workflow: out of memory");
    char missing[200] = "";
    for (size_t i = 0; i < sizeof k_markers / sizeof k_markers[0]; i++)
        if (!strstr(text, k_markers[i]))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s",
                     missing[0] ? ", " : "", k_markers[i]);
    free(text);
    if (missing[0])
        return px_err_set(err, PX_EINVAL,
                          "comfyui workflow: no %s marker: the workflow's own "
                          "value would render while the campaign's is recorded; put the marker "
                          "in that node input (docs/generate.md)",
                          missing);
    return PX_OK;
}

/* Substitutes the markers in every node's inputs; *found counts prompts
 * placed; u->sampler gets the sampler (and scheduler) that will render:
 * ours through "%sampler%" / "%scheduler%", else the workflow's own. */
static int substitute(json_t *wf, const px_gen_render_req *r, const px_gen_server_info *info,
                      int *found, px_gen_render_used *u, px_err *err)
{
    const char *node_id;
    json_t *node;
    *found = 0;
    char sampler[64], scheduler[32], lit_s[64] = "", lit_h[32] = "";
    int st = px_gen_server_sampler(info, r->sampler, sampler, sizeof sampler, scheduler,
                                   sizeof scheduler, err);
    if (st != PX_OK)
        return st;
    int used_s = 0, used_h = 0;
    json_object_foreach(wf, node_id, node)
    {
        json_t *inputs = json_object_get(node, "inputs");
        const char *k;
        json_t *v;
        json_object_foreach(inputs, k, v)
        {
            if (!json_is_string(v))
                continue;
            const char *s = json_string_value(v);
            json_t *nv = NULL;
            if (!strcmp(s, "%seed%"))
                nv = json_integer(r->seed);
            else if (!strcmp(s, "%width%"))
                nv = json_integer(r->width);
            else if (!strcmp(s, "%height%"))
                nv = json_integer(r->height);
            else if (!strcmp(s, "%steps%"))
                nv = json_integer(r->steps);
            else if (!strcmp(s, "%cfg%"))
                nv = json_real(r->cfg);
            else if (!strcmp(s, "%sampler%") && (used_s = 1))
                nv = json_string(sampler);
            else if (!strcmp(s, "%scheduler%") && (used_h = 1))
                nv = json_string(scheduler);
            else if (!strcmp(k, "sampler_name") && !lit_s[0])
                snprintf(lit_s, sizeof lit_s, "%.63s", s);
            else if (!strcmp(k, "scheduler") && !lit_h[0])
                snprintf(lit_h, sizeof lit_h, "%.31s", s);
            else if (strstr(s, "%prompt%") || strstr(s, "%negative%")) {
                char *a = replace_all(s, "%prompt%", r->prompt);
                char *b = a ? replace_all(a, "%negative%", r->negative ? r->negative : "") : NULL;
                *found += strstr(s, "%prompt%") != NULL;
                nv = b ? json_string(b) : NULL;
                free(a);
                free(b);
                if (!nv)
                    return px_err_set(err, PX_ENOMEM, "comfyui workflow: out of memory");
            }
            if (nv && json_object_set_new(inputs, k, nv))
                return px_err_set(err, PX_ENOMEM, "comfyui workflow: out of memory");
        }
    }
    snprintf(u->sampler, sizeof u->sampler, "%.40s%s%.20s", used_s ? sampler : lit_s,
             (used_h ? scheduler : lit_h)[0] ? " " : "", used_h ? scheduler : lit_h);
    if (u->sampler[0])
        u->known |= PX_GEN_USED_SAMPLER;
    return PX_OK;
}

static void url_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[k++] = (char)*p;
        } else {
            out[k++] = '%';
            out[k++] = hex[*p >> 4];
            out[k++] = hex[*p & 15];
        }
    }
    out[k] = '\0';
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int render_comfy(px_gen_client *c, const char *base, const px_gen_server_info *info,
                        const char *workflow, const px_gen_render_req *r, long timeout_ms,
                        px_buf *image, px_gen_render_used *u, px_err *err)
{
    char url[1024];
    px_gen_join_url(base, "/prompt", url, sizeof url);
    if (!workflow)
        return px_err_set(err, PX_EINVAL, "comfyui: no workflow given (--workflow FILE)");
    json_error_t je;
    json_t *wf = json_loads(workflow, 0, &je);
    if (!json_is_object(wf)) {
        json_decref(wf);
        return px_err_set(err, PX_EINVAL, "comfyui workflow: not a JSON object (%s)", je.text);
    }
    int found = 0;
    int st = substitute(wf, r, info, &found, u, err);
    if (st != PX_OK) {
        json_decref(wf);
        return st;
    }
    if (!found) {
        json_decref(wf);
        return px_err_set(err, PX_EINVAL, "comfyui workflow: no input holds the %%prompt%% marker");
    }
    json_t *req = json_pack("{s:o, s:s}", "prompt", wf, "client_id", "pixpipe");
    json_t *ans;
    double t0 = px_now_ms();
    st = post_json(c, url, req, timeout_ms, &ans, err);
    if (st != PX_OK)
        return st;
    const char *pv = json_string_value(json_object_get(ans, "prompt_id"));
    if (!pv || !*pv || strlen(pv) > 200) {
        json_decref(ans);
        return px_err_set(err, PX_ECORRUPT, "%s: answer has no prompt_id", url);
    }
    char pid[256], id[800], hist[1300];
    snprintf(pid, sizeof pid, "%s", pv);
    url_escape(pid, id, sizeof id);
    json_decref(ans);
    char path[820];
    snprintf(path, sizeof path, "/history/%s", id);
    px_gen_join_url(base, path, hist, sizeof hist);
    long wait = 20;
    json_t *img = NULL;
    for (;;) {
        long left = timeout_ms - (long)(px_now_ms() - t0);
        if (left <= 0)
            return px_err_set(err, PX_ETIMEOUT, "%s: no result within %ld ms", hist, timeout_ms);
        px_buf resp = {0};
        long status;
        st = px_gen_http(c, hist, NULL, NULL, left, 16u << 20, &status, &resp, err);
        if (st != PX_OK)
            return st;
        json_t *h = status == 200 ? json_loadb((const char *)resp.data, resp.len, 0, NULL) : NULL;
        px_buf_free(&resp);
        if (status != 200 || !json_is_object(h)) {
            json_decref(h);
            return px_err_set(err, status >= 500 ? PX_ENET : PX_ECORRUPT,
                              "%s: HTTP %ld or not a JSON object", hist, status);
        }
        json_t *entry = json_object_get(h, pid);
        const char *sstr =
            json_string_value(json_object_get(json_object_get(entry, "status"), "status_str"));
        if (sstr && !strcmp(sstr, "error")) {
            json_decref(h);
            return px_err_set(err, PX_ENET, "%s: the workflow failed on the server", hist);
        }
        const char *nid;
        json_t *out;
        json_object_foreach(json_object_get(entry, "outputs"), nid, out)
        {
            json_t *first = json_array_get(json_object_get(out, "images"), 0);
            if (first) {
                img = json_incref(first);
                break;
            }
        }
        json_decref(h);
        if (img)
            break;
        if (entry && json_is_object(json_object_get(entry, "outputs")) && sstr &&
            !strcmp(sstr, "success")) {
            return px_err_set(err, PX_ECORRUPT, "%s: finished without an image output", hist);
        }
        sleep_ms(wait < left ? wait : left);
        wait = wait * 3 / 2 > 500 ? 500 : wait * 3 / 2;
    }
    const char *fn = json_string_value(json_object_get(img, "filename"));
    const char *sub = json_string_value(json_object_get(img, "subfolder"));
    const char *typ = json_string_value(json_object_get(img, "type"));
    if (!fn || strlen(fn) > 300) {
        json_decref(img);
        return px_err_set(err, PX_ECORRUPT, "%s: image output without a filename", hist);
    }
    char efn[1000], esub[1000], etyp[200], q[2300], view[2500];
    url_escape(fn, efn, sizeof efn);
    url_escape(sub ? sub : "", esub, sizeof esub);
    url_escape(typ ? typ : "output", etyp, sizeof etyp);
    json_decref(img);
    snprintf(q, sizeof q, "/view?filename=%s&subfolder=%s&type=%s", efn, esub, etyp);
    px_gen_join_url(base, q, view, sizeof view);
    long left = timeout_ms - (long)(px_now_ms() - t0);
    if (left <= 0)
        return px_err_set(err, PX_ETIMEOUT, "%s: no result within %ld ms", view, timeout_ms);
    long status;
    image->len = 0;
    st = px_gen_http(c, view, NULL, NULL, left, MAX_IMAGE_BYTES, &status, image, err);
    if (st == PX_OK && status != 200)
        st = px_err_set(err, status >= 500 ? PX_ENET : PX_ECORRUPT, "%s: HTTP %ld", view, status);
    return st;
}

int px_gen_render(px_gen_client *c, px_gen_backend backend, const char *base_url,
                  const px_gen_server_info *info, const char *workflow,
                  const px_gen_render_req *req, long timeout_ms, px_buf *image,
                  px_gen_render_used *used, px_err *err)
{
    image->len = 0;
    px_gen_render_used scratch;
    px_gen_render_used *u = used ? used : &scratch;
    memset(u, 0, sizeof *u);
    int sdcpp = info && !strcmp(info->kind, "sd-server");
    switch (backend) {
    case PX_GEN_A1111:
        return sdcpp ? render_sdcpp(c, base_url, info, req, timeout_ms, image, u, err)
                     : render_a1111(c, base_url, info, req, timeout_ms, image, u, err);
    case PX_GEN_OPENAI:
        return render_openai(c, base_url, info, req, timeout_ms, image, u, err);
    case PX_GEN_COMFYUI:
        return render_comfy(c, base_url, info, workflow, req, timeout_ms, image, u, err);
    case PX_GEN_LOCAL:
        return px_err_set(err, PX_EINVAL, "the local backend has no server: px_gen_local_render");
    default: return px_err_set(err, PX_EINVAL, "unknown backend %d", backend);
    }
}

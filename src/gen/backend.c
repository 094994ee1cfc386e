/*
 * Render backends: one request shape per server family, all returning the
 * raw image file the server produced.
 *
 *  - AUTOMATIC1111 / Forge / sd-server: POST /sdapi/v1/txt2img, base64 images
 *    in "images" (sometimes with a data: URL prefix).
 *  - OpenAI-style: POST /v1/images/generations with response_format
 *    b64_json; the SD extras (negative prompt, seed, steps, cfg) ride along
 *    as extra fields, which sd-server and LocalAI read and others ignore.
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

static int render_a1111(px_gen_client *c, const char *base, const px_gen_render_req *r,
                        long timeout_ms, px_buf *image, px_err *err)
{
    char url[1024];
    px_gen_join_url(base, "/sdapi/v1/txt2img", url, sizeof url);
    json_t *req = json_pack("{s:s, s:s, s:I, s:i, s:i, s:i, s:f, s:s, s:i, s:i}", "prompt",
                            r->prompt, "negative_prompt", r->negative ? r->negative : "", "seed",
                            (json_int_t)r->seed, "width", r->width, "height", r->height, "steps",
                            r->steps, "cfg_scale", r->cfg, "sampler_name",
                            r->sampler ? r->sampler : "", "batch_size", 1, "n_iter", 1);
    if (req && r->model && *r->model)
        json_object_set_new(req, "override_settings",
                            json_pack("{s:s}", "sd_model_checkpoint", r->model));
    json_t *ans;
    int st = post_json(c, url, req, timeout_ms, &ans, err);
    if (st != PX_OK)
        return st;
    st = take_b64(json_array_get(json_object_get(ans, "images"), 0), url, "images[0]", image, err);
    json_decref(ans);
    return st;
}

static int render_openai(px_gen_client *c, const char *base, const px_gen_render_req *r,
                         long timeout_ms, px_buf *image, px_err *err)
{
    char url[1024], size[32];
    px_gen_join_url(base, "/v1/images/generations", url, sizeof url);
    snprintf(size, sizeof size, "%dx%d", r->width, r->height);
    json_t *req = json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:i, s:f}", "prompt", r->prompt, "n",
                            1, "size", size, "response_format", "b64_json", "negative_prompt",
                            r->negative ? r->negative : "", "seed", (json_int_t)r->seed, "steps",
                            r->steps, "cfg_scale", r->cfg);
    if (req && r->model && *r->model)
        json_object_set_new(req, "model", json_string(r->model));
    json_t *ans;
    int st = post_json(c, url, req, timeout_ms, &ans, err);
    if (st != PX_OK)
        return st;
    json_t *first = json_array_get(json_object_get(ans, "data"), 0);
    st = take_b64(json_object_get(first, "b64_json"), url, "data[0].b64_json", image, err);
    json_decref(ans);
    return st;
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

/* Substitutes the markers in every node's inputs; *found counts prompts placed. */
static int substitute(json_t *wf, const px_gen_render_req *r, int *found)
{
    const char *node_id;
    json_t *node;
    *found = 0;
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
            else if (strstr(s, "%prompt%") || strstr(s, "%negative%")) {
                char *a = replace_all(s, "%prompt%", r->prompt);
                char *b = a ? replace_all(a, "%negative%", r->negative ? r->negative : "") : NULL;
                *found += strstr(s, "%prompt%") != NULL;
                nv = b ? json_string(b) : NULL;
                free(a);
                free(b);
                if (!nv)
                    return PX_ENOMEM;
            }
            if (nv && json_object_set_new(inputs, k, nv))
                return PX_ENOMEM;
        }
    }
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

static int render_comfy(px_gen_client *c, const char *base, const char *workflow,
                        const px_gen_render_req *r, long timeout_ms, px_buf *image, px_err *err)
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
    if (substitute(wf, r, &found) != PX_OK) {
        json_decref(wf);
        return px_err_set(err, PX_ENOMEM, "comfyui workflow: out of memory");
    }
    if (!found) {
        json_decref(wf);
        return px_err_set(err, PX_EINVAL, "comfyui workflow: no input holds the %%prompt%% marker");
    }
    json_t *req = json_pack("{s:o, s:s}", "prompt", wf, "client_id", "pixpipe");
    json_t *ans;
    double t0 = px_now_ms();
    int st = post_json(c, url, req, timeout_ms, &ans, err);
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

int px_gen_render(px_gen_client *c, px_gen_backend backend, const char *base_url, const char *workflow,
                  const px_gen_render_req *req, long timeout_ms, px_buf *image, px_err *err)
{
    image->len = 0;
    switch (backend) {
    case PX_GEN_A1111: return render_a1111(c, base_url, req, timeout_ms, image, err);
    case PX_GEN_OPENAI: return render_openai(c, base_url, req, timeout_ms, image, err);
    case PX_GEN_COMFYUI: return render_comfy(c, base_url, workflow, req, timeout_ms, image, err);
    case PX_GEN_LOCAL:
        return px_err_set(err, PX_EINVAL, "the local backend has no server: px_gen_local_render");
    default: return px_err_set(err, PX_EINVAL, "unknown backend %d", backend);
    }
}

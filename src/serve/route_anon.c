/*
 * POST /v1/anonymize: the request body is an encoded image (JPEG, PNG or
 * WebP); the answer is the same photo with every face concealed, encoded
 * with no metadata, or with ?format=json the face report instead.
 *
 * Query parameters (all optional; the server's defaults apply otherwise):
 *   mode=blur|pixelate|noise|solid   how faces are hidden
 *   boxes=1                          rectangular masks instead of ellipses
 *   format=jpeg|png|webp|json        output format (default: same as input)
 *   quality=1..100                   JPEG / WebP quality
 *   threshold=0..1                   detector score threshold
 *   min_face=8..4096                 smallest face side looked for, pixels
 *   seed=N                           noise seed (repeatable output)
 *
 * The body is checked on the I/O thread (empty -> 400, not an image -> 415)
 * so that bad requests never take a worker; the decode, detection and
 * concealment run on a worker thread through px_anon_process.
 */
#include "serve_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int px_serve_enqueue_locked(px_server *srv, anon_job *job);

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return PX_EINVAL;
    *out = x;
    return PX_OK;
}

int px_anon_query_opts(struct MHD_Connection *c, const px_anon_opts *defaults, px_anon_opts *o,
                       int *want_json, px_err *err)
{
    *o = *defaults;
    *want_json = 0;
    const char *v;
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "mode")) &&
        px_anon_mode_parse(v, &o->mode) != PX_OK)
        return px_err_set(err, PX_EINVAL, "query mode='%.40s': expected blur, pixelate, noise or "
                                          "solid", v);
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "boxes"))) {
        if (!strcmp(v, "1") || !strcmp(v, "true") || !*v) {
            o->mask.shape = PX_MASK_BOX;
            o->mask.scale = 1.2f;
        } else if (strcmp(v, "0") && strcmp(v, "false")) {
            return px_err_set(err, PX_EINVAL, "query boxes='%.40s': expected 1 or 0", v);
        }
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format"))) {
        if (!strcmp(v, "json"))
            *want_json = 1;
        else if (!strcmp(v, "jpeg") || !strcmp(v, "jpg"))
            o->out_format = PX_FMT_JPEG;
        else if (!strcmp(v, "png"))
            o->out_format = PX_FMT_PNG;
        else if (!strcmp(v, "webp"))
            o->out_format = PX_FMT_WEBP;
        else
            return px_err_set(err, PX_EINVAL, "query format='%.40s': expected jpeg, png, webp or "
                                              "json", v);
    }
    long x;
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "quality"))) {
        if (parse_long(v, 1, 100, &x))
            return px_err_set(err, PX_EINVAL, "query quality='%.40s': expected 1..100", v);
        o->jpeg_quality = (int)x;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_face"))) {
        if (parse_long(v, 8, 4096, &x))
            return px_err_set(err, PX_EINVAL, "query min_face='%.40s': expected 8..4096 pixels", v);
        o->detect.min_face = (int)x;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "threshold"))) {
        char *end;
        errno = 0;
        double t = strtod(v, &end);
        if (!*v || *end || errno || !(t > 0.0 && t < 1.0))
            return px_err_set(err, PX_EINVAL, "query threshold='%.40s': expected a number in "
                                              "(0, 1)", v);
        o->detect.score_threshold = (float)t;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "seed"))) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!*v || *end || errno || v[0] == '-')
            return px_err_set(err, PX_EINVAL, "query seed='%.40s': expected an unsigned integer",
                              v);
        o->seed = s;
    }
    return PX_OK;
}

enum MHD_Result px_anon_submit(struct MHD_Connection *c, px_req *r)
{
    px_server *srv = r->srv;
    if (r->body.len == 0)
        return px_reply_error(c, r, 400, "empty body: send a JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF image");
    if (px_image_sniff(r->body.data, r->body.len) == PX_FMT_UNKNOWN)
        return px_reply_error(c, r, 415, "body is not a JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF image (%zu bytes)",
                              r->body.len);
    px_anon_opts o;
    int want_json;
    px_err err = {{0}};
    if (px_anon_query_opts(c, &srv->o.anon, &o, &want_json, &err) != PX_OK)
        return px_reply_error(c, r, 400, "%s", err.msg);
    if (!srv->o.detector)
        return px_reply_error(c, r, 503, "anonymize is not available: the server has no face "
                                         "model loaded");
    anon_job *job = px_calloc(1, sizeof *job);
    if (!job)
        return px_reply_error(c, r, 500, "out of memory");
    atomic_init(&job->refs, 2);
    job->conn = c;
    job->body = r->body.data;
    job->len = r->body.len;
    job->opts = o;
    job->want_json = want_json;
    job->t_queued = px_now_ms();
    job->deadline = job->t_queued + srv->o.process_timeout_ms;
    memset(&r->body, 0, sizeof r->body);

    pthread_mutex_lock(&srv->mu);
    int st = px_serve_enqueue_locked(srv, job);
    if (st == PX_OK)
        r->job = job;
    pthread_mutex_unlock(&srv->mu);
    if (st == PX_OK)
        return MHD_YES; /* suspended until a worker or the watchdog resumes it */
    free(job->body);
    free(job);
    if (st == PX_EBUSY) {
        atomic_fetch_add(&srv->metrics.rejected_busy, 1);
        return px_reply_error(c, r, 503, "anonymize queue is full (%d waiting); retry later",
                              srv->o.queue_capacity);
    }
    return px_reply_error(c, r, 503, "server is shutting down");
}

void px_anon_job_run(px_server *srv, anon_job *job)
{
    job->status = px_anon_process(srv->o.detector, job->body, job->len, &job->opts, &job->res,
                                  &job->err);
    free(job->body); /* the input is not needed any more: give the memory back early */
    job->body = NULL;
    if (job->status == PX_OK) {
        px_metrics *m = &srv->metrics;
        atomic_fetch_add(&m->images, 1);
        atomic_fetch_add(&m->faces, (uint_fast64_t)job->res.n_faces);
        atomic_fetch_add(&m->stage_us[0], (uint_fast64_t)(job->res.ms_decode * 1000.0));
        atomic_fetch_add(&m->stage_us[1], (uint_fast64_t)(job->res.ms_detect * 1000.0));
        atomic_fetch_add(&m->stage_us[2], (uint_fast64_t)(job->res.ms_conceal * 1000.0));
        atomic_fetch_add(&m->stage_us[3], (uint_fast64_t)(job->res.ms_encode * 1000.0));
    }
}

static json_t *face_report(const anon_job *job, double ms_total)
{
    const px_anon_result *res = &job->res;
    json_t *faces = json_array();
    for (int i = 0; i < res->n_faces; i++) {
        const px_face *f = &res->faces[i];
        json_t *o = json_pack("{s:f,s:f,s:f,s:f,s:f}", "x1", (double)f->x1, "y1", (double)f->y1,
                              "x2", (double)f->x2, "y2", (double)f->y2, "score",
                              (double)f->score);
        if (o && f->has_landmarks) {
            json_t *lm = json_array();
            for (int k = 0; k < 5; k++)
                json_array_append_new(lm, json_pack("[f,f]", (double)f->lm[k][0],
                                                    (double)f->lm[k][1]));
            json_object_set_new(o, "landmarks", lm);
        }
        json_array_append_new(faces, o);
    }
    return json_pack("{s:i,s:o,s:i,s:i,s:s,s:s,s:i,s:i,s:{s:f,s:f,s:f,s:f,s:f}}", "count",
                     res->n_faces, "faces", faces, "width", res->width, "height", res->height,
                     "input_format", px_format_name(res->in_format), "mode",
                     px_anon_mode_name(job->opts.mode), "orientation", res->orientation,
                     "passes", res->detect_stats.passes, "ms", "decode", res->ms_decode,
                     "detect", res->ms_detect, "conceal", res->ms_conceal, "encode",
                     res->ms_encode, "total", ms_total);
}

enum MHD_Result px_anon_job_reply(struct MHD_Connection *c, px_req *r, anon_job *job)
{
    px_server *srv = r->srv;
    pthread_mutex_lock(&srv->mu);
    int answered = job->answered, outcome = job->outcome;
    pthread_mutex_unlock(&srv->mu);
    if (!answered) /* spurious call: stay suspended-equivalent by answering nothing yet */
        return MHD_YES;
    if (outcome == 504)
        return px_reply_error(c, r, 504, "anonymize took longer than the %d ms processing "
                                         "timeout", srv->o.process_timeout_ms);
    if (outcome != 200)
        return px_reply_error(c, r, 503, "server is shutting down; retry later");
    if (job->status != PX_OK)
        return px_reply_error(c, r, px_http_status_for(job->status), "image: %s",
                              job->err.msg[0] ? job->err.msg : px_strstatus(job->status));
    double ms = px_now_ms() - job->t_queued;
    if (job->want_json)
        return px_reply_json(c, r, 200, face_report(job, ms));
    px_buf *out = &job->res.out;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(out->len, out->data, free);
    if (!resp)
        return MHD_NO;
    memset(out, 0, sizeof *out); /* the response owns the bytes now */
    char n[32], t[32];
    snprintf(n, sizeof n, "%d", job->res.n_faces);
    snprintf(t, sizeof t, "%.1f", ms);
    MHD_add_response_header(resp, "X-Faces-Found", n);
    MHD_add_response_header(resp, "X-Processing-Ms", t);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    const char *ct = job->res.out_format == PX_FMT_PNG    ? "image/png"
                     : job->res.out_format == PX_FMT_WEBP ? "image/webp"
                                                          : "image/jpeg";
    return px_reply_response(c, r, 200, resp, ct);
}

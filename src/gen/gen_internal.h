/*
 * Internals shared by the files of src/gen (not part of the public API):
 * the random generator, the writer plumbing, the HTTP client calls, base64,
 * SHA-256 and JSON helpers.
 */
#ifndef PX_GEN_INTERNAL_H
#define PX_GEN_INTERNAL_H

#include "px_gen.h"

/* splitmix64: advances *state and returns the next 64 random bits. */
uint64_t px_gen_rand(uint64_t *state);

px_gen_writer *px_gen_writer_new(const char *name,
                                 int (*write)(px_gen_writer *, const char *, const char *, int, int,
                                              char ***, size_t *, char *, size_t, px_err *),
                                 void (*destroy)(px_gen_writer *), void *state);
void *px_gen_writer_state(px_gen_writer *w);
void px_gen_writer_count(px_gen_writer *w, int requests, int bad);

/* One HTTP request on the client's curl handle. body NULL means GET, else a
 * POST of JSON. bearer (may be NULL) goes into Authorization. On PX_OK
 * *status holds the HTTP status and resp the body (NUL-terminated, len
 * without the NUL); the caller frees resp. PX_ETIMEOUT, PX_ENET, PX_ELIMIT
 * (body over max_body) with err naming the URL. */
int px_gen_http(px_gen_client *c, const char *url, const char *body, const char *bearer,
                long timeout_ms, size_t max_body, long *status, px_buf *resp, px_err *err);

/* The cancel flag set by px_gen_client_set_cancel (NULL: none). */
const void *px_gen_client_get_cancel(const px_gen_client *c);

/* 1 when the model asked for (may be "" or NULL: any) is the one used, as
 * servers name them: folder, extension and an A1111 " [hash]" ignored. */
int px_gen_model_matches(const char *asked, const char *used);

/* Checks before the first render that the server can render r as asked
 * (sampler and scheduler known; sd-server: the model it has loaded).
 * PX_EINVAL naming url and the setting. (server.c) */
int px_gen_server_ready(const px_gen_server_info *info, const char *url,
                        const px_gen_render_defaults *r, px_err *err);
/* Puts what the server reported it used (u) into job j (seed, steps, CFG,
 * sampler, model; the size is the decoded image's, set by the caller) and
 * makes *render_info (malloc'd JSON: what was asked, the server's own
 * account, the size it rendered got_w x got_h (0: not known) and the
 * --size-mismatch policy applied (NULL: none was needed)) for
 * px_manifest_job_rendered. PX_ENOMEM. (server.c) */
int px_gen_apply_used(px_manifest_job *j, const px_gen_server_info *info,
                      const px_gen_render_used *u, int got_w, int got_h, const char *size_policy,
                      char **render_info);

/* Refuses a ComfyUI workflow without a marker for each setting the campaign
 * records (%prompt% %negative% %seed% %width% %height% %steps% %cfg%), naming
 * those missing: its own values would render instead. (backend.c) */
int px_gen_comfy_check(const char *workflow, px_err *err);

/* Base64 (standard alphabet, padding optional, whitespace skipped).
 * decode: PX_ECORRUPT on a bad character. Caller frees *out. */
int px_gen_b64_decode(const char *s, size_t n, uint8_t **out, size_t *outlen);
int px_gen_b64_encode(const uint8_t *d, size_t n, px_buf *out);

/* SHA-256 of data as 64 lowercase hex digits + NUL. */
void px_gen_sha256_hex(const uint8_t *data, size_t len, char hex[65]);

/* A writer's scene against the near-duplicate filter (dry_run.c): counts it
 * in sum (prompts_written, prompts_dup); 1 when new (and added), 0 for a
 * near-duplicate, PX_ENOMEM. */
int px_gen_scene_fresh(px_gen_dedup *dd, const char *scene, px_gen_summary *sum, px_err *err);
/* The prompt and negative prompt of a job: the scene with its type's style
 * suffix; the type's negative, plus "no people" unless they are allowed. */
void px_gen_compose(const px_gen_style *st, int type, int allow_people, const char *scene,
                    char *prompt, size_t pcap, char *neg, size_t ncap);

/* Joins base URL and path without doubling the slash, into out (cap). */
void px_gen_join_url(const char *base, const char *path, char *out, size_t cap);

#endif

/*
 * fake_imageserver: a test double of the image servers `pixpipe generate`
 * renders on, run inside the test's (or benchmark's) process on 127.0.0.1 at
 * a random free port with libmicrohttpd. One server speaks all three APIs:
 *   POST /sdapi/v1/txt2img          (AUTOMATIC1111; base64 PNG in "images")
 *   POST /v1/images/generations     (OpenAI; data[0].b64_json)
 *   POST /prompt, GET /history/{id}, GET /view  (ComfyUI; the prompt is the
 *        first "text" input of the workflow, the seed the first "seed" input)
 *
 * Images are real small PNGs drawn from the prompt and seed (gradients,
 * shapes, stripes and noise), so the same prompt and seed give the same
 * bytes, different seeds give images far apart in perceptual hash, and they
 * pass blank/dark/blur checks. Faults on request: a per-request delay, the
 * next N requests failing with an HTTP status, every k-th image blank, dark,
 * corrupt (truncated PNG) or not an image, garbage (non-JSON) answers, and a
 * given photo (e.g. with faces) served every k-th time.
 *
 * All functions are thread-safe.
 */
#ifndef FAKE_IMAGESERVER_H
#define FAKE_IMAGESERVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct fake_img fake_img;

/* Starts a server drawing w x h images (0: 96 x 64). Returns 0 or -1. */
int fake_img_start(int w, int h, fake_img **out);
void fake_img_stop(fake_img *f);           /* NULL is a no-op */
const char *fake_img_url(const fake_img *f); /* "http://127.0.0.1:PORT" */

void fake_img_set_delay(fake_img *f, int ms);          /* before each render answer */
/* sd-server flavour: before each answer to a job's status (a busy server answering slowly) */
void fake_img_set_poll_delay(fake_img *f, int ms);
void fake_img_fail_next(fake_img *f, int n, int http); /* next n renders answer HTTP http */
void fake_img_fail_always(fake_img *f, int http);      /* 0 turns it off */
/* every k-th render (k = 0 off) counted from the start: */
void fake_img_blank_every(fake_img *f, int k);
void fake_img_dark_every(fake_img *f, int k);
void fake_img_corrupt_every(fake_img *f, int k);
void fake_img_notimage_every(fake_img *f, int k);
void fake_img_garbage_every(fake_img *f, int k);
/* serve this file's bytes (copied) every k-th render instead of a drawing */
int fake_img_photo_every(fake_img *f, const char *path, int k);

int fake_img_renders(const fake_img *f);               /* render requests received */
int fake_img_seed_count(const fake_img *f, int64_t seed); /* renders asked for this seed */
int fake_img_distinct_seeds(const fake_img *f);

/* What the server is, as real servers differ (fake_img_set_flavor):
 *  FAKE_IMG_A1111      AUTOMATIC1111 >= 1.9 (default): GET /sdapi/v1/samplers ("DPM++ 2M", ...),
 *                      /sdapi/v1/schedulers ("karras"/"Karras"), /sdapi/v1/options; txt2img
 *                      refuses an unknown sampler (404) and answers `info` (JSON text) with
 *                      seed, all_seeds, size, steps, cfg_scale, sampler_name, scheduler,
 *                      sd_model_name, sd_model_hash and infotexts; POST /sdapi/v1/interrupt
 *                      ends the render under way at once. Seed -1 renders with 1234567.
 *  FAKE_IMG_A1111_OLD  before 1.9: combined names ("DPM++ 2M Karras"), no /schedulers
 *                      (404), the scheduler field ignored.
 *  FAKE_IMG_SDCPP      stable-diffusion.cpp's sd-server: GET /sdcpp/v1/capabilities (its
 *                      samplers "dpm++2m", schedulers "karras", model, limits); sizes rounded
 *                      up to a multiple of 64; what is not asked is seed 42, 20 steps, CFG 7,
 *                      euler_a, no negative prompt. Its A1111 route reads the A1111 fields
 *                      (an unknown sampler silently becomes euler_a, override_settings is
 *                      ignored) and answers `info`; its OpenAI route reads only prompt, n,
 *                      size and output_format and takes the rest from
 *                      <sd_cpp_extra_args>{json}</sd_cpp_extra_args> in the prompt; its native
 *                      async API (POST /sdcpp/v1/img_gen, GET /sdcpp/v1/jobs/{id},
 *                      POST .../cancel: 200 while queued, 409 while generating) renders one
 *                      job at a time. Its PNGs carry the A1111 "parameters" text.
 * The OpenAI route of the A1111 flavours keeps the old behaviour (seed, steps, cfg_scale and
 * negative_prompt read as top-level fields, as LocalAI does). */
enum { FAKE_IMG_A1111 = 0, FAKE_IMG_A1111_OLD, FAKE_IMG_SDCPP };
void fake_img_set_flavor(fake_img *f, int flavor);
/* The loaded model (default "base.safetensors"); switches: whether A1111's
 * override_settings.sd_model_checkpoint loads the model asked for (1, A1111's
 * own behaviour) or is ignored (0). */
void fake_img_set_model(fake_img *f, const char *model, int switches);

/* What the last render really used. */
typedef struct fake_img_used {
    int64_t seed;
    int width, height, steps; /* width x height: the image made */
    double cfg;
    char sampler[48], scheduler[32], negative[512], model[128];
} fake_img_used;
int fake_img_last(const fake_img *f, fake_img_used *u); /* 0, or -1 before any render */
int fake_img_interrupts(const fake_img *f); /* POST /sdapi/v1/interrupt received */
int fake_img_cancels(const fake_img *f);    /* async jobs cancelled (queued ones) */
int fake_img_cancels_refused(const fake_img *f); /* cancel asked while generating (409) */
int fake_img_busy(const fake_img *f);       /* renders under way (sync, and async not ended) */
int fake_img_max_inflight(const fake_img *f); /* most renders under way or queued at once */

/* Draws the image for (prompt, seed) as PNG bytes (malloc'd). Returns 0 or -1. */
int fake_img_draw_png(const char *prompt, int64_t seed, int w, int h, uint8_t **png, size_t *len);

#endif

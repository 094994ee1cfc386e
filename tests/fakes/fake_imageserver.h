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

/* Draws the image for (prompt, seed) as PNG bytes (malloc'd). Returns 0 or -1. */
int fake_img_draw_png(const char *prompt, int64_t seed, int w, int h, uint8_t **png, size_t *len);

#endif

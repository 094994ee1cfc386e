/*
 * libFuzzer target: px_image_decode on arbitrary bytes with a 4-megapixel cap
 * (so the fuzzer explores parsers, not allocation sizes). Any decoded image
 * is also pushed through orientation and a small tensor sample, which touch
 * every pixel and so catch a wrong size/stride.
 */
#include <stdint.h>
#include <stdlib.h>

#include "image/px_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = 4u << 20;
    px_image img;
    px_decode_info info;
    px_err err;
    if (px_image_decode(data, size, &o, &img, &info, &err) == PX_OK) {
        if ((uint64_t)img.w * (uint64_t)img.h > o.max_pixels || img.w <= 0 || img.h <= 0)
            abort();
        static float t[3 * 16 * 16];
        px_image_to_tensor(&img, 0, 0, (float)img.w, (float)img.h, 16, 16, 1, 0.f, 1.f, 0.f, t);
        px_image_free(&img);
    }
    return 0;
}

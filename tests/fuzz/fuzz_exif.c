/*
 * libFuzzer target: px_image_exif_orientation on arbitrary bytes. The input
 * is tried as is (JPEG/PNG/WebP sniffing, container walk, libexif), and also
 * wrapped as a JPEG APP1 "Exif" segment so that libexif sees mutated TIFF
 * structures directly instead of the fuzzer having to find the container.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/px_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int o = px_image_exif_orientation(data, size);
    if (o < 1 || o > 8)
        abort();
    if (size > 65000)
        return 0;
    /* SOI, APP1 (length covers "Exif\0\0" + data), then EOI */
    size_t n = 4 + 2 + 6 + size + 2;
    uint8_t *jpg = malloc(n);
    if (!jpg)
        return 0;
    size_t seg = 2 + 6 + size;
    const uint8_t head[] = {0xFF, 0xD8, 0xFF, 0xE1, (uint8_t)(seg >> 8), (uint8_t)seg, 'E', 'x',
                            'i',  'f',  0,    0};
    memcpy(jpg, head, sizeof head);
    memcpy(jpg + sizeof head, data, size);
    jpg[n - 2] = 0xFF;
    jpg[n - 1] = 0xD9;
    o = px_image_exif_orientation(jpg, n);
    free(jpg);
    if (o < 1 || o > 8)
        abort();
    return 0;
}

/*
 * EXIF orientation through libexif. The containers hand us the payload in two
 * shapes: JPEG APP1 carries "Exif\0\0" + TIFF, while PNG eXIf and the WebP
 * EXIF chunk normally carry the bare TIFF structure (some writers still add
 * the "Exif\0\0" prefix). libexif's loader wants the prefixed form, so bare
 * TIFF is copied behind a prefix first.
 *
 * Anything libexif cannot make sense of, or an Orientation tag of the wrong
 * type or out of 1..8, reads as 1 (upright): a broken EXIF block must never
 * stop an image from decoding.
 */
#include "image_internal.h"

#include <libexif/exif-data.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t exif_prefix[6] = {'E', 'x', 'i', 'f', 0, 0};

/* libexif clamps what it reads to 64 KiB anyway; refuse silly sizes early. */
#define PX_EXIF_MAX_PAYLOAD (1u << 20)

static int orientation_from_exifdata(ExifData *ed)
{
    ExifEntry *e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
    if (!e || !e->data || e->components < 1)
        return 1;
    ExifByteOrder bo = exif_data_get_byte_order(ed);
    int v;
    if (e->format == EXIF_FORMAT_SHORT && e->size >= 2)
        v = exif_get_short(e->data, bo);
    else if (e->format == EXIF_FORMAT_LONG && e->size >= 4) /* seen in the wild */
        v = (int)(exif_get_long(e->data, bo) & 0xffff);
    else
        return 1;
    return (v >= 1 && v <= 8) ? v : 1;
}

int px_exif_orientation_from_payload(const uint8_t *data, size_t len)
{
    if (!data || len < 8 || len > PX_EXIF_MAX_PAYLOAD)
        return 1;
    uint8_t *copy = NULL;
    const uint8_t *p = data;
    size_t n = len;
    if (memcmp(data, exif_prefix, sizeof exif_prefix) != 0) {
        int tiff = (data[0] == 'I' && data[1] == 'I' && data[2] == 42 && data[3] == 0) ||
                   (data[0] == 'M' && data[1] == 'M' && data[2] == 0 && data[3] == 42);
        if (!tiff)
            return 1;
        copy = px_malloc(len + sizeof exif_prefix);
        if (!copy)
            return 1;
        memcpy(copy, exif_prefix, sizeof exif_prefix);
        memcpy(copy + sizeof exif_prefix, data, len);
        p = copy;
        n = len + sizeof exif_prefix;
    }
    int o = 1;
    ExifData *ed = exif_data_new();
    if (ed) {
        /* Read what is there; do not let libexif "fix" the data by adding the
         * mandatory tags it thinks are missing. */
        exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
        exif_data_load_data(ed, p, (unsigned int)n);
        o = orientation_from_exifdata(ed);
        exif_data_unref(ed);
    }
    free(copy);
    return o;
}

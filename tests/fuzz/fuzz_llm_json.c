/*
 * libFuzzer target for the JSON the generate pipeline reads from outside:
 * LLM chat-completion answers (px_gen_llm_parse), campaign files
 * (px_gen_campaign_parse) and the metadata of pool files (px_image_meta_read:
 * PNG text chunks, JPEG/WebP EXIF UserComment and XMP). The first byte picks
 * the parser; the rest is the input.
 * Any crash, leak or sanitizer report is a bug: bad input must only ever be
 * an error status.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gen/px_gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    px_err err;
    switch (data[0] % 4) {
    case 0: {
        char **v = NULL;
        size_t k = 0;
        if (px_gen_llm_parse((const char *)p, n, &v, &k, &err) == PX_OK) {
            for (size_t i = 0; i < k; i++)
                if (strlen(v[i]) < 12 || strlen(v[i]) > 1000)
                    abort(); /* the documented bounds must hold */
            px_manifest_strings_free(v, k);
        }
        break;
    }
    case 1: {
        px_gen_campaign c;
        if (px_gen_campaign_parse((const char *)p, n, "fuzz.json", &c, &err) == PX_OK) {
            for (int i = 0; i < c.nthemes; i++)
                for (int t = 0; t < PX_GEN_NTYPES; t++)
                    if (c.themes[i].quota[t] < 0)
                        abort();
            px_gen_campaign_free(&c);
        }
        break;
    }
    default: {
        static const px_image_meta_key keys[] = {PX_META_PARAMETERS, PX_META_JSON};
        for (int k = 0; k < 2; k++) {
            char *v = NULL;
            if (px_image_meta_read(p, n, keys[k], &v, &err) == PX_OK)
                free(v);
        }
        break;
    }
    }
    return 0;
}

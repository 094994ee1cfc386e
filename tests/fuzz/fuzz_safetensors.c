/*
 * libFuzzer target for the safetensors reader (px_st_parse), the first thing
 * a downloaded model file goes through. On success every invariant the rest
 * of the engine relies on is checked: each tensor lies inside the buffer,
 * its byte size matches shape and dtype, lookup by name finds it. The first
 * and last byte of each tensor are read so ASan sees any range outside the
 * input. Any crash, leak or abort is a bug: bad input must only ever be an
 * error status.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sd_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    px_st_file *f = NULL;
    px_err err;
    if (px_st_parse(data, size, &f, &err) != PX_OK) {
        if (f || !err.msg[0])
            abort(); /* a failure leaves no handle and says why */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size || t->ndim < 0 || t->ndim > PX_ST_MAX_DIMS)
            abort();
        if (px_st_find(f, t->name) != t || strlen(t->dtype_name) == 0)
            abort();
        if (t->nbytes)
            sink ^= p[0] ^ p[t->nbytes - 1];
    }
    (void)px_st_metadata(f, "format");
    (void)sink;
    px_st_close(f);
    return 0;
}

/*
 * libFuzzer target for what render servers say about a render (src/gen/server.c):
 * the A1111 infotext that A1111 returns in `info` and sd-server writes into
 * its PNGs (px_gen_parse_infotext), and sampler names mapped against a
 * server's lists (px_gen_server_sampler). The first byte picks the server
 * kind; up to the first NUL is our negative prompt, the rest the text.
 * Any crash or sanitizer report is a bug: bad input is only ever "not known".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/px_gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 16))
        return 0;
    char *s = malloc(size); /* NUL-terminated copy of data[1..] */
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    size_t nl = strlen(s);
    const char *negative = s, *text = nl + 1 < size - 1 ? s + nl + 1 : "";
    px_gen_render_used u;
    memset(&u, 0, sizeof u);
    px_gen_parse_infotext(text, negative, &u);
    if (u.sampler[sizeof u.sampler - 1] || u.model[sizeof u.model - 1] ||
        u.model_hash[sizeof u.model_hash - 1] || u.info[sizeof u.info - 1])
        abort(); /* every string stays terminated within its field */
    static const char *const kinds[] = {"a1111", "sd-server", "comfyui"};
    px_gen_server_info in;
    memset(&in, 0, sizeof in);
    snprintf(in.kind, sizeof in.kind, "%s", kinds[data[0] % 3]);
    in.split_scheduler = data[0] & 4 ? 1 : 0;
    in.nsamplers = data[0] & 8 ? -1 : 2;
    snprintf(in.samplers[0], sizeof in.samplers[0], "DPM++ 2M");
    snprintf(in.samplers[1], sizeof in.samplers[1], "dpm++2m");
    in.nschedulers = data[0] & 16 ? -1 : 1;
    snprintf(in.schedulers[0], sizeof in.schedulers[0], "karras");
    char sampler[64], scheduler[32];
    px_err err;
    px_gen_server_sampler(&in, negative, sampler, sizeof sampler, scheduler, sizeof scheduler,
                          &err);
    free(s);
    return 0;
}

/*
 * libFuzzer target for the getUpdates parser (px_tg_parse_updates): the
 * server's answer is outside input. Besides "no crash, no leak", it checks
 * what the parser promises: every string field is NUL-terminated within its
 * array, and an update's kind is one of the enum's values.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/px_telegram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    px_tg_update *u = NULL;
    int n = 0;
    px_tg_error info;
    px_err e;
    int st = px_tg_parse_updates((const char *)data, size, &u, &n, &info, &e);
    if (st != PX_OK && (u || n))
        abort();
    for (int i = 0; i < n; i++) {
        if (memchr(u[i].text, 0, sizeof u[i].text) == NULL ||
            memchr(u[i].file_id, 0, sizeof u[i].file_id) == NULL ||
            memchr(u[i].mime_type, 0, sizeof u[i].mime_type) == NULL ||
            memchr(u[i].file_name, 0, sizeof u[i].file_name) == NULL ||
            memchr(u[i].media_group_id, 0, sizeof u[i].media_group_id) == NULL)
            abort();
        if (u[i].kind < PX_TG_MSG_NONE || u[i].kind > PX_TG_MSG_OTHER || u[i].update_id < 0)
            abort();
    }
    if (memchr(info.description, 0, sizeof info.description) == NULL)
        abort();
    free(u);
    return 0;
}

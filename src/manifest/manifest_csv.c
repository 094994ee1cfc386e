/*
 * `pixpipe export`: the manifest as CSV (RFC 4180 quoting) or JSON Lines,
 * one row per image with its job's prompt, seed and render settings, the
 * automatic checks and the latest expert verdict. Pages through the store
 * by id so a 10,000-image pool never sits in memory at once. Text cells that
 * a spreadsheet would take for a formula (OWASP "CSV injection": = + - @ tab
 * CR first) get a leading ' inside quotes; numbers are written as they are.
 */
#include "px_manifest.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void csv_field(FILE *f, const char *s)
{
    const int formula = s[0] && strchr("=+-@\t\r", s[0]) != NULL;
    if (!formula && !strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    if (formula)
        fputc('\'', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int px_manifest_export(px_manifest *s, void *file, int jsonl, px_err *err)
{
    FILE *f = file;
    if (!jsonl)
        fputs("id,theme,theme_slug,type,path,status,reason,prompt,negative,seed,backend,model,"
              "width,height,bytes,sha256,phash,checks,verdict,verdict_by,created_at\n",
              f);
    px_manifest_filter flt = {.limit = 1000};
    for (;;) {
        px_manifest_image *v;
        size_t n;
        int st = px_manifest_list_images(s, &flt, &v, &n, err);
        if (st != PX_OK)
            return st;
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            px_manifest_image *m = &v[i];
            char ph[17];
            snprintf(ph, sizeof ph, "%016" PRIx64, m->phash);
            if (jsonl) {
                json_t *o = json_pack(
                    "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:i, s:i, s:I,"
                    " s:s, s:s, s:s, s:s, s:s}",
                    "id", (json_int_t)m->id, "theme", m->theme, "theme_slug", m->theme_slug, "type",
                    m->type, "path", m->path, "status", m->status, "reason", m->reason, "prompt",
                    m->prompt, "negative", m->negative, "seed", (json_int_t)m->seed, "backend",
                    m->backend, "model", m->model, "width", m->width, "height", m->height, "bytes",
                    (json_int_t)m->bytes, "sha256", m->sha256, "phash", ph, "verdict", m->verdict,
                    "verdict_by", m->verdict_by, "created_at", m->created_at);
                json_t *c = json_loads(m->checks, 0, NULL);
                if (o && c)
                    json_object_set_new(o, "checks", c);
                else
                    json_decref(c);
                char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
                json_decref(o);
                if (!line) {
                    px_manifest_images_free(v, n);
                    return px_err_set(err, PX_ENOMEM, "export: out of memory");
                }
                fputs(line, f);
                fputc('\n', f);
                free(line);
            } else {
                fprintf(f, "%" PRId64 ",", m->id);
                const char *cols[] = {m->theme,  m->theme_slug, m->type,   m->path,
                                      m->status, m->reason,     m->prompt, m->negative};
                for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) {
                    csv_field(f, cols[k]);
                    fputc(',', f);
                }
                fprintf(f, "%" PRId64 ",", m->seed);
                csv_field(f, m->backend);
                fputc(',', f);
                csv_field(f, m->model);
                fprintf(f, ",%d,%d,%" PRId64 ",%s,%s,", m->width, m->height, m->bytes, m->sha256,
                        ph);
                csv_field(f, m->checks);
                fputc(',', f);
                csv_field(f, m->verdict);
                fputc(',', f);
                csv_field(f, m->verdict_by);
                fputc(',', f);
                csv_field(f, m->created_at);
                fputc('\n', f);
            }
            flt.after_id = m->id;
        }
        px_manifest_images_free(v, n);
        if (ferror(f))
            return px_err_set(err, PX_EIO, "export: write failed");
    }
    if (fflush(f) != 0 || ferror(f))
        return px_err_set(err, PX_EIO, "export: write failed");
    return PX_OK;
}

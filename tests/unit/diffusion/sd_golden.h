/*
 * What the SD engine's tests share: reading the golden arrays of
 * ../shared/golden/sd (raw little-endian files whose sizes index.json gives)
 * and comparing float arrays. Include after <cmocka.h>; a file that is
 * missing or of the wrong size fails the calling test.
 */
#ifndef PX_TEST_SD_GOLDEN_H
#define PX_TEST_SD_GOLDEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SD_GOLDEN PX_SHARED_DIR "/golden/sd"

/* The file golden/sd/<rel>, which must hold exactly `bytes` bytes; malloc'd. */
static inline void *sd_golden_read(const char *rel, size_t bytes)
{
    char path[1024];
    snprintf(path, sizeof path, SD_GOLDEN "/%s", rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    void *v = malloc(bytes ? bytes : 1);
    size_t got = v ? fread(v, 1, bytes, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (!v || got != bytes || extra != EOF)
        fail_msg("%s: expected exactly %zu bytes", path, bytes);
    return v;
}

/* n floats of golden/sd/<name>.f32; malloc'd. */
static inline float *sd_golden_f32(const char *name, size_t n)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s.f32", name);
    return (float *)sd_golden_read(rel, n * sizeof(float));
}

/* n int64 ids of golden/sd/<name>.i64, as int32. */
static inline void sd_golden_ids(const char *name, int32_t *ids, size_t n)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s.i64", name);
    int64_t *v = (int64_t *)sd_golden_read(rel, n * sizeof(int64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)v[i];
    free(v);
}

/* Largest |a[i] - b[i]|; infinity if any value is NaN. */
static inline double sd_max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= worst))
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

#endif

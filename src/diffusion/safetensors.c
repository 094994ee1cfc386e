/*
 * The safetensors container, read-only.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON that
 * describe every tensor (dtype, shape, [begin, end) offsets into the data
 * area that follows), then the data. We map the whole file read-only and
 * point tensors into the mapping, so opening a 2 GB checkpoint costs a page
 * table, not a copy. Because the file comes from outside, every number in the
 * header is checked before it is believed: the header must fit in the file,
 * each dtype must be one we know the size of, each shape product is computed
 * with overflow checks and must equal the byte range, ranges must lie inside
 * the data area and must not overlap. Jansson parses the JSON (with duplicate
 * keys refused, so a name cannot silently mean two tensors).
 *
 * Names and metadata are copied out of the JSON into one block owned by the
 * handle; a sorted index gives px_st_find its O(log n) lookup.
 */
#include "sd_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Real headers are a few hundred KB; anything near this is an attack or damage. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

struct px_st_file {
    const uint8_t *buf; /* whole file (mapping or caller's buffer) */
    size_t len;
    int mapped;
    px_st_tensor *t; /* in header order */
    size_t n;
    const px_st_tensor **sorted; /* by name, for px_st_find */
    char **meta;                 /* key, value, key, value, ... */
    size_t nmeta;
    char *strings; /* names, dtype names and metadata, one block */
};

static const struct {
    const char *name;
    px_st_dtype dtype;
    size_t size;
} st_dtypes[] = {
    {"F32", PX_ST_F32, 4},   {"F16", PX_ST_F16, 2},       {"BF16", PX_ST_BF16, 2},
    {"F64", PX_ST_F64, 8},   {"I64", PX_ST_I64, 8},       {"I32", PX_ST_I32, 4},
    {"I16", PX_ST_I16, 2},   {"I8", PX_ST_I8, 1},         {"U8", PX_ST_U8, 1},
    {"BOOL", PX_ST_BOOL, 1}, {"U16", PX_ST_OTHER, 2},     {"U32", PX_ST_OTHER, 4},
    {"U64", PX_ST_OTHER, 8}, {"F8_E4M3", PX_ST_OTHER, 1}, {"F8_E5M2", PX_ST_OTHER, 1},
};

int px_st_nn_dtype(px_st_dtype t)
{
    switch (t) {
    case PX_ST_F32:
        return PX_NN_F32;
    case PX_ST_F16:
        return PX_NN_F16;
    case PX_ST_BF16:
        return PX_NN_BF16;
    default:
        return -1;
    }
}

void px_st_close(px_st_file *f)
{
    if (!f)
        return;
    if (f->mapped && f->buf)
        munmap((void *)f->buf, f->len);
    free(f->t);
    free(f->sorted);
    free(f->meta);
    free(f->strings);
    free(f);
}

size_t px_st_count(const px_st_file *f)
{
    return f ? f->n : 0;
}

const px_st_tensor *px_st_at(const px_st_file *f, size_t i)
{
    return (f && i < f->n) ? &f->t[i] : NULL;
}

static int st_cmp_name(const void *a, const void *b)
{
    const px_st_tensor *x = *(const px_st_tensor *const *)a;
    const px_st_tensor *y = *(const px_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

const px_st_tensor *px_st_find(const px_st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->sorted[mid]->name);
        if (c == 0)
            return f->sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *px_st_metadata(const px_st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* Copies s into the string block at *pos (the block was sized beforehand). */
static char *st_put(char *block, size_t *pos, const char *s)
{
    size_t l = strlen(s) + 1;
    char *p = block + *pos;
    memcpy(p, s, l);
    *pos += l;
    return p;
}

/* Reads a JSON integer >= 0 (Jansson keeps integers as long long). */
static int st_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Validates one tensor entry and fills t (name/dtype_name set by the caller). */
static int st_tensor(const char *label, const char *name, const json_t *desc, const uint8_t *data,
                     uint64_t data_len, px_st_tensor *t, px_err *err)
{
    if (!json_is_object(desc))
        return px_err_set(err, PX_ECORRUPT, "%s: tensor %s: entry is not a JSON object", label,
                          name);
    const json_t *jd = json_object_get(desc, "dtype");
    const json_t *js = json_object_get(desc, "shape");
    const json_t *jo = json_object_get(desc, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return px_err_set(err, PX_ECORRUPT,
                          "%s: tensor %s: needs string dtype, array shape, array data_offsets",
                          label, name);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(json_string_value(jd), st_dtypes[i].name) == 0) {
            t->dtype = st_dtypes[i].dtype;
            esize = st_dtypes[i].size;
        }
    if (!esize)
        return px_err_set(err, PX_ECORRUPT, "%s: tensor %s: unknown dtype \"%.32s\"", label, name,
                          json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > PX_ST_MAX_DIMS)
        return px_err_set(err, PX_ECORRUPT, "%s: tensor %s: %zu dimensions, at most %d", label,
                          name, nd, PX_ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t bytes = esize;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!st_uint(json_array_get(js, i), &d))
            return px_err_set(err, PX_ECORRUPT,
                              "%s: tensor %s: shape entries must be integers >= 0", label, name);
        if (d > SIZE_MAX || px_mul_size(bytes, (size_t)d, &bytes) != PX_OK)
            return px_err_set(err, PX_ECORRUPT, "%s: tensor %s: shape product overflows", label,
                              name);
        t->shape[i] = (int64_t)d;
    }
    uint64_t b, e;
    if (json_array_size(jo) != 2 || !st_uint(json_array_get(jo, 0), &b) ||
        !st_uint(json_array_get(jo, 1), &e))
        return px_err_set(err, PX_ECORRUPT, "%s: tensor %s: data_offsets must be [begin, end]",
                          label, name);
    if (b > e || e > data_len)
        return px_err_set(err, PX_ECORRUPT,
                          "%s: tensor %s: data_offsets [%llu, %llu] outside the data area (%llu "
                          "bytes)",
                          label, name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)data_len);
    if (e - b != bytes)
        return px_err_set(err, PX_ECORRUPT,
                          "%s: tensor %s: data_offsets span %llu bytes, shape and dtype need %zu",
                          label, name, (unsigned long long)(e - b), bytes);
    t->data = data + b;
    t->nbytes = bytes;
    return PX_OK;
}

static int st_cmp_data(const void *a, const void *b)
{
    const uint8_t *x = (const uint8_t *)(*(const px_st_tensor *const *)a)->data;
    const uint8_t *y = (const uint8_t *)(*(const px_st_tensor *const *)b)->data;
    return (x > y) - (x < y);
}

/* Ranges must not overlap: two names sharing bytes is not something torch's
 * writer produces, and refusing it keeps "one tensor, one place" true. */
static int st_check_overlap(const char *label, px_st_file *f, px_err *err)
{
    const px_st_tensor **by = px_malloc((f->n ? f->n : 1) * sizeof *by);
    if (!by)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", label);
    for (size_t i = 0; i < f->n; i++)
        by[i] = &f->t[i];
    qsort(by, f->n, sizeof *by, st_cmp_data);
    int rc = PX_OK;
    size_t last = 0; /* the tensor reaching furthest so far (empty ones never overlap) */
    for (size_t i = 1; i < f->n; i++) {
        const uint8_t *end = (const uint8_t *)by[last]->data + by[last]->nbytes;
        if (by[i]->nbytes && by[last]->nbytes && (const uint8_t *)by[i]->data < end) {
            rc = px_err_set(err, PX_ECORRUPT, "%s: tensor %s overlaps tensor %s", label,
                            by[i]->name, by[last]->name);
            break;
        }
        if ((const uint8_t *)by[i]->data + by[i]->nbytes > end || !by[last]->nbytes)
            last = i;
    }
    free(by);
    return rc;
}

/* Sizes the string block: every key, dtype name and metadata value. */
static size_t st_strings_size(json_t *root)
{
    size_t total = 1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        total += strlen(key) + 1;
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                total +=
                    strlen(mk) + 1 + (json_is_string(mv) ? strlen(json_string_value(mv)) : 0) + 1;
            }
        } else if (json_is_object(v) && json_is_string(json_object_get(v, "dtype"))) {
            total += strlen(json_string_value(json_object_get(v, "dtype"))) + 1;
        }
    }
    return total;
}

static int st_metadata(const char *label, px_st_file *f, json_t *meta, size_t *pos, px_err *err)
{
    if (!json_is_object(meta))
        return px_err_set(err, PX_ECORRUPT, "%s: __metadata__ is not a JSON object", label);
    f->meta = px_calloc(2 * json_object_size(meta) + 1, sizeof *f->meta);
    if (!f->meta)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", label);
    const char *mk;
    json_t *mv;
    json_object_foreach(meta, mk, mv)
    {
        if (!json_is_string(mv))
            return px_err_set(err, PX_ECORRUPT, "%s: __metadata__ value of %s is not a string",
                              label, mk);
        f->meta[2 * f->nmeta] = st_put(f->strings, pos, mk);
        f->meta[2 * f->nmeta + 1] = st_put(f->strings, pos, json_string_value(mv));
        f->nmeta++;
    }
    return PX_OK;
}

/* Builds the tensor table from the parsed header. */
static int st_build(const char *label, px_st_file *f, json_t *root, const uint8_t *data,
                    uint64_t data_len, px_err *err)
{
    size_t cap = json_object_size(root);
    f->t = px_calloc(cap ? cap : 1, sizeof *f->t);
    f->sorted = px_calloc(cap ? cap : 1, sizeof *f->sorted);
    f->strings = px_malloc(st_strings_size(root));
    if (!f->t || !f->sorted || !f->strings)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory for %zu header entries", label, cap);
    size_t pos = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        int rc;
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = st_metadata(label, f, v, &pos, err)) != PX_OK)
                return rc;
            continue;
        }
        px_st_tensor *t = &f->t[f->n];
        if ((rc = st_tensor(label, key, v, data, data_len, t, err)) != PX_OK)
            return rc;
        t->name = st_put(f->strings, &pos, key);
        t->dtype_name = st_put(f->strings, &pos, json_string_value(json_object_get(v, "dtype")));
        f->sorted[f->n] = t;
        f->n++;
    }
    qsort(f->sorted, f->n, sizeof *f->sorted, st_cmp_name);
    return st_check_overlap(label, f, err);
}

/* Parses buf[0..len) (owned by f if f->mapped). label names it in errors. */
static int st_load(px_st_file *f, const char *label, px_err *err)
{
    if (f->len < 8)
        return px_err_set(err, PX_ECORRUPT, "%s: %zu bytes, too short for a safetensors header",
                          label, f->len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | f->buf[i];
    if (n > ST_MAX_HEADER)
        return px_err_set(err, PX_ECORRUPT,
                          "%s: header of %llu bytes (limit %llu): not a "
                          "safetensors file, or damaged",
                          label, (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n < 2)
        return px_err_set(err, PX_ECORRUPT, "%s: empty header (%llu bytes)", label,
                          (unsigned long long)n);
    if (n > f->len - 8)
        return px_err_set(err, PX_ECORRUPT,
                          "%s: header says %llu bytes but the file has %zu after the length", label,
                          (unsigned long long)n, f->len - 8);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return px_err_set(err, PX_ECORRUPT, "%s: header JSON: %s (line %d)", label, jerr.text,
                          jerr.line);
    int rc;
    if (!json_is_object(root))
        rc = px_err_set(err, PX_ECORRUPT, "%s: header JSON is not an object", label);
    else
        rc = st_build(label, f, root, f->buf + 8 + n, f->len - 8 - n, err);
    json_decref(root);
    return rc;
}

int px_st_parse(const uint8_t *buf, size_t len, px_st_file **out, px_err *err)
{
    *out = NULL;
    px_st_file *f = px_calloc(1, sizeof *f);
    if (!f)
        return px_err_set(err, PX_ENOMEM, "safetensors: out of memory");
    f->buf = buf;
    f->len = buf ? len : 0;
    int rc = st_load(f, "safetensors buffer", err);
    if (rc != PX_OK) {
        px_st_close(f);
        return rc;
    }
    *out = f;
    return PX_OK;
}

int px_st_open(const char *path, px_st_file **out, px_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return px_err_set(err, errno == ENOENT ? PX_ENOTFOUND : PX_EIO, "%s: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return px_err_set(err, PX_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size < 8) {
        close(fd);
        return px_err_set(err, PX_ECORRUPT, "%s: %lld bytes, too short for a safetensors header",
                          path, (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return px_err_set(err, PX_ELIMIT, "%s: too large to map", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return px_err_set(err, PX_EIO, "%s: mmap: %s", path, strerror(map_errno));
    px_st_file *f = px_calloc(1, sizeof *f);
    if (!f) {
        munmap(map, (size_t)st.st_size);
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    }
    f->buf = map;
    f->len = (size_t)st.st_size;
    f->mapped = 1;
    int rc = st_load(f, path, err);
    if (rc != PX_OK) {
        px_st_close(f);
        return rc;
    }
    *out = f;
    return PX_OK;
}

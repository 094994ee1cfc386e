/*
 * A Stable Diffusion model on disk, whatever its layout, as named tensors per
 * part (UNet, VAE, text encoder, TAESD) plus the architecture's config.
 *
 * Two layouts are read: a diffusers folder (unet/ vae/ text_encoder/, each a
 * config.json and a safetensors file, fp16 variants too), whose names are
 * already the ones the network code asks for, and one original-layout
 * ("ldm") .safetensors file, which weights_ldm.c renames tensor by tensor.
 * Either way the tensors stay in the mapped files, in their stored dtype;
 * px_sd_w_mat hands out views, px_sd_w_f32 converts 1-D parameters once.
 *
 * Pickle checkpoints (.ckpt .pt .pth .bin) are refused before anything is
 * read from them: unpickling runs arbitrary code. Other model families are
 * recognised (by keys in a file, by model_index.json / configs in a folder)
 * so the user hears "this is an SDXL checkpoint" rather than a shape error.
 */
#include "weights_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *px_sd_part_name(px_sd_part p)
{
    static const char *names[PX_SD_NPARTS] = {"unet", "vae", "text_encoder", "taesd"};
    return (p >= 0 && p < PX_SD_NPARTS) ? names[p] : "?";
}

static const char *arch_name(int arch)
{
    switch (arch) {
    case PX_SD_ARCH_SD2:
        return "a Stable Diffusion 2.x";
    case PX_SD_ARCH_SDXL:
        return "an SDXL";
    case PX_SD_ARCH_SD3:
        return "a Stable Diffusion 3";
    case PX_SD_ARCH_FLUX:
        return "a Flux";
    default:
        return "an unknown";
    }
}

int sd_w_add(px_sd_weights *w, px_sd_part part, const char *name, const px_st_tensor *t)
{
    sd_wpart *p = &w->parts[part];
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        sd_wref *r = px_realloc(p->r, cap * sizeof *r);
        if (!r)
            return PX_ENOMEM;
        p->r = r;
        p->cap = cap;
    }
    size_t l = strlen(name) + 1;
    char *copy = px_malloc(l);
    if (!copy)
        return PX_ENOMEM;
    memcpy(copy, name, l);
    p->r[p->n++] = (sd_wref){.name = copy, .t = t};
    return PX_OK;
}

int sd_w_keep(px_sd_weights *w, px_st_file *f)
{
    if (w->nfiles == SD_MAX_FILES)
        return PX_ELIMIT;
    w->files[w->nfiles++] = f;
    return PX_OK;
}

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(((const sd_wref *)a)->name, ((const sd_wref *)b)->name);
}

int sd_w_finish(px_sd_weights *w, const char *label, px_err *err)
{
    for (int p = 0; p < PX_SD_NPARTS; p++) {
        sd_wpart *wp = &w->parts[p];
        if (wp->n > 1)
            qsort(wp->r, wp->n, sizeof *wp->r, ref_cmp);
        for (size_t i = 1; i < wp->n; i++)
            if (strcmp(wp->r[i].name, wp->r[i - 1].name) == 0)
                return px_err_set(err, PX_ECORRUPT, "%s: %s: two tensors map to %s", label,
                                  px_sd_part_name((px_sd_part)p), wp->r[i].name);
    }
    return PX_OK;
}

static sd_wref *find_ref(const px_sd_weights *w, px_sd_part part, const char *name)
{
    if (!w || part < 0 || part >= PX_SD_NPARTS || !name)
        return NULL;
    const sd_wpart *p = &w->parts[part];
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, p->r[mid].name);
        if (c == 0)
            return &p->r[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const px_st_tensor *sd_w_get(const px_sd_weights *w, px_sd_part part, const char *name)
{
    const sd_wref *r = find_ref(w, part, name);
    return r ? r->t : NULL;
}

int px_sd_w_has(const px_sd_weights *w, px_sd_part part, const char *name)
{
    return find_ref(w, part, name) != NULL;
}

void px_sd_weights_close(px_sd_weights *w)
{
    if (!w)
        return;
    for (int p = 0; p < PX_SD_NPARTS; p++) {
        for (size_t i = 0; i < w->parts[p].n; i++) {
            free(w->parts[p].r[i].name);
            free(w->parts[p].r[i].f32);
        }
        free(w->parts[p].r);
    }
    for (int i = 0; i < w->nfiles; i++)
        px_st_close(w->files[i]);
    free(w->hash_path);
    free(w);
}

const px_sd_config *px_sd_weights_config(const px_sd_weights *w)
{
    return &w->cfg;
}

px_nn_dtype px_sd_weights_dtype(const px_sd_weights *w)
{
    size_t bytes[3] = {0, 0, 0};
    const sd_wpart *p = &w->parts[PX_SD_UNET];
    for (size_t i = 0; i < p->n; i++) {
        int d = px_st_nn_dtype(p->r[i].t->dtype);
        if (d >= 0)
            bytes[d] += p->r[i].t->nbytes;
    }
    int best = PX_NN_F32;
    for (int d = 1; d < 3; d++)
        if (bytes[d] > bytes[best])
            best = d;
    return (px_nn_dtype)best;
}

/* "[a,b,c]" into buf. */
static const char *shape_str(const int64_t *s, int n, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    pos += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < n && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%lld", i ? "," : "", (long long)s[i]);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
    return buf;
}

/* Rank once trailing size-1 dimensions beyond the second are dropped. */
static int core_rank(const int64_t *s, int n)
{
    while (n > 2 && s[n - 1] == 1)
        n--;
    return n;
}

static int ref_lookup(px_sd_weights *w, px_sd_part part, const char *name, sd_wref **out,
                      px_err *err)
{
    *out = find_ref(w, part, name);
    if (!*out)
        return px_err_set(err, PX_ENOTFOUND, "%s: missing tensor %s", px_sd_part_name(part),
                          name ? name : "(null)");
    return PX_OK;
}

int px_sd_w_mat(px_sd_weights *w, px_sd_part part, const char *name, int ndim, const int64_t *dims,
                px_nn_mat *out, px_err *err)
{
    sd_wref *r;
    int rc = ref_lookup(w, part, name, &r, err);
    if (rc != PX_OK)
        return rc;
    const px_st_tensor *t = r->t;
    int a = core_rank(t->shape, t->ndim), b = core_rank(dims, ndim);
    int same = a == b;
    for (int i = 0; same && i < a; i++)
        same = t->shape[i] == dims[i];
    if (!same || ndim < 1) {
        char s1[128], s2[128];
        return px_err_set(err, PX_EINVAL, "%s: tensor %s has shape %s, expected %s",
                          px_sd_part_name(part), name, shape_str(t->shape, t->ndim, s1, sizeof s1),
                          shape_str(dims, ndim, s2, sizeof s2));
    }
    int d = px_st_nn_dtype(t->dtype);
    if (d < 0)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: tensor %s has dtype %s, expected F32/F16/BF16",
                          px_sd_part_name(part), name, t->dtype_name);
    int64_t cols = 1;
    for (int i = 1; i < ndim; i++)
        cols *= dims[i];
    *out = (px_nn_mat){.dtype = (px_nn_dtype)d, .data = t->data, .rows = dims[0], .cols = cols};
    r->used = 1;
    return PX_OK;
}

int px_sd_w_f32(px_sd_weights *w, px_sd_part part, const char *name, int64_t n, const float **out,
                px_err *err)
{
    sd_wref *r;
    int rc = ref_lookup(w, part, name, &r, err);
    if (rc != PX_OK)
        return rc;
    const px_st_tensor *t = r->t;
    int64_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        count *= t->shape[i]; /* cannot overflow: px_st checked the byte size */
    if (count != n) {
        char s1[128];
        return px_err_set(err, PX_EINVAL, "%s: tensor %s has shape %s, expected %lld elements",
                          px_sd_part_name(part), name, shape_str(t->shape, t->ndim, s1, sizeof s1),
                          (long long)n);
    }
    if (!r->f32) {
        int d = px_st_nn_dtype(t->dtype);
        if (d < 0 && t->dtype != PX_ST_F64)
            return px_err_set(err, PX_EUNSUPPORTED,
                              "%s: tensor %s has dtype %s, expected F32/F16/BF16",
                              px_sd_part_name(part), name, t->dtype_name);
        float *f = px_malloc((size_t)(n ? n : 1) * sizeof *f);
        if (!f)
            return px_err_set(err, PX_ENOMEM, "%s: out of memory for tensor %s",
                              px_sd_part_name(part), name);
        if (d >= 0) {
            px_nn_to_f32((px_nn_dtype)d, t->data, f, (size_t)n);
        } else {
            for (int64_t i = 0; i < n; i++) {
                double v;
                memcpy(&v, (const uint8_t *)t->data + 8 * i, 8); /* little-endian host */
                f[i] = (float)v;
            }
        }
        r->f32 = f;
    }
    r->used = 1;
    *out = r->f32;
    return PX_OK;
}

/* Tensors that exist in real checkpoints but that no part of the engine
 * reads: registered buffers (position ids), CLIP's logit scale. */
static int known_unused(const char *name)
{
    size_t l = strlen(name);
    static const char *suffixes[] = {"position_ids", "logit_scale"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t s = strlen(suffixes[i]);
        if (l >= s && strcmp(name + l - s, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

size_t px_sd_weights_unused(const px_sd_weights *w, px_sd_part part, char *first, size_t len)
{
    size_t n = 0;
    if (first && len)
        first[0] = '\0';
    if (!w || part < 0 || part >= PX_SD_NPARTS)
        return 0;
    const sd_wpart *p = &w->parts[part];
    for (size_t i = 0; i < p->n; i++) {
        if (p->r[i].used || known_unused(p->r[i].name))
            continue;
        if (n == 0 && first && len)
            snprintf(first, len, "%s", p->r[i].name);
        n++;
    }
    return n;
}

int px_sd_weights_hash(px_sd_weights *w, char out[11], px_err *err)
{
    if (w->hashed) {
        memcpy(out, w->hash, 11);
        return PX_OK;
    }
    int fd = open(w->hash_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return px_err_set(err, PX_EIO, "%s: %s", w->hash_path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = px_malloc(1 << 20);
    int rc = PX_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        rc = px_err_set(err, PX_ENOMEM, "%s: cannot start SHA-256", w->hash_path);
        goto done;
    }
    for (;;) {
        ssize_t got = read(fd, buf, 1 << 20);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = px_err_set(err, PX_EIO, "%s: %s", w->hash_path, strerror(errno));
            goto done;
        }
        if (got == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)got);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (int i = 0; i < 5; i++)
        snprintf(w->hash + 2 * i, 3, "%02x", md[i]);
    w->hashed = 1;
    memcpy(out, w->hash, 11);
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    if (a < b)
        return 0;
    for (size_t i = 0; i < b; i++) {
        char c = s[a - b + i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != suf[i])
            return 0;
    }
    return 1;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Refuses a pickle by name or by magic: protocol 2+ pickles start 0x80 0x02..0x05,
 * torch >= 1.6 writes a zip ("PK\3\4"). */
static int refuse_pickle(const char *path, px_err *err)
{
    static const char *exts[] = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"};
    int pickle = 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        pickle |= has_suffix(path, exts[i]);
    if (!pickle) {
        unsigned char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        if (f) {
            size_t got = fread(magic, 1, sizeof magic, f);
            fclose(f);
            pickle = (got >= 2 && magic[0] == 0x80 && magic[1] >= 2 && magic[1] <= 5) ||
                     (got == 4 && memcmp(magic, "PK\x03\x04", 4) == 0);
        }
    }
    if (pickle)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: this is a pickle checkpoint, which can run code when loaded; "
                          "convert it to .safetensors",
                          path);
    return PX_OK;
}

/* dir/sub/name if it is a file, trying the fp16 variant second. Returns a
 * malloc'd path or NULL. */
static char *part_file(const char *dir, const char *sub, const char *stem)
{
    static const char *ext[] = {".safetensors", ".fp16.safetensors"};
    for (int i = 0; i < 2; i++) {
        size_t l = strlen(dir) + strlen(sub) + strlen(stem) + strlen(ext[i]) + 3;
        char *p = px_malloc(l);
        if (!p)
            return NULL;
        snprintf(p, l, "%s/%s/%s%s", dir, sub, stem, ext[i]);
        if (is_file(p))
            return p;
        free(p);
    }
    return NULL;
}

/* Opens one safetensors file and files each tensor under its own name in part. */
static int load_flat(px_sd_weights *w, px_sd_part part, const char *path, px_err *err)
{
    px_st_file *f;
    int rc = px_st_open(path, &f, err);
    if (rc != PX_OK)
        return rc;
    if (sd_w_keep(w, f) != PX_OK) {
        px_st_close(f);
        return px_err_set(err, PX_ELIMIT, "%s: too many files", path);
    }
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        if (sd_w_add(w, part, t->name, t) != PX_OK)
            return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    }
    return PX_OK;
}

static int open_folder(px_sd_weights *w, const char *dir, px_err *err)
{
    static const struct {
        px_sd_part part;
        const char *sub, *stem;
    } parts[] = {{PX_SD_UNET, "unet", "diffusion_pytorch_model"},
                 {PX_SD_VAE, "vae", "diffusion_pytorch_model"},
                 {PX_SD_CLIP, "text_encoder", "model"}};
    int rc = sd_folder_config(w, dir, err);
    if (rc != PX_OK)
        return rc;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *p = part_file(dir, parts[i].sub, parts[i].stem);
        if (!p)
            return px_err_set(err, PX_ENOTFOUND,
                              "%s: no %s/%s.safetensors (a .bin is a pickle: convert it)", dir,
                              parts[i].sub, parts[i].stem);
        rc = load_flat(w, parts[i].part, p, err);
        if (rc == PX_OK && parts[i].part == PX_SD_UNET)
            w->hash_path = p;
        else
            free(p);
        if (rc != PX_OK)
            return rc;
    }
    return PX_OK;
}

static int open_file(px_sd_weights *w, const char *path, px_err *err)
{
    int rc = refuse_pickle(path, err);
    if (rc != PX_OK)
        return rc;
    px_st_file *f;
    if ((rc = px_st_open(path, &f, err)) != PX_OK)
        return rc;
    if (sd_w_keep(w, f) != PX_OK) {
        px_st_close(f);
        return px_err_set(err, PX_ELIMIT, "%s: too many files", path);
    }
    int arch = sd_ldm_detect(f);
    if (arch == 0)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: not a Stable Diffusion checkpoint (no model.diffusion_model.* "
                          "tensors)",
                          path);
    if (arch != PX_SD_ARCH_SD1)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: this is %s checkpoint; only Stable Diffusion 1.x is supported", path,
                          arch_name(arch));
    w->cfg.arch = PX_SD_ARCH_SD1;
    w->cfg.single_file = 1;
    if ((rc = sd_ldm_load(w, f, path, err)) != PX_OK)
        return rc;
    size_t l = strlen(path) + 1;
    if (!(w->hash_path = px_malloc(l)))
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    memcpy(w->hash_path, path, l);
    return PX_OK;
}

/* TAESD's own release (taesd_decoder.safetensors) is a bare Sequential that
 * starts with a parameter-free Clamp: its "N.x" is diffusers'
 * "decoder.layers.<N-1>.x". */
static int load_taesd_raw(px_sd_weights *w, px_st_file *f, const char *path, px_err *err)
{
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        char *end;
        long n = strtol(t->name, &end, 10);
        char name[256];
        if (end == t->name || *end != '.' || n < 1 || n > 1000 ||
            snprintf(name, sizeof name, "decoder.layers.%ld%s", n - 1, end) >= (int)sizeof name)
            return px_err_set(err, PX_EUNSUPPORTED, "%s: taesd: unexpected tensor %s", path,
                              t->name);
        if (sd_w_add(w, PX_SD_TAESD, name, t) != PX_OK)
            return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    }
    return PX_OK;
}

/* A TAESD weights file: diffusers' AutoencoderTiny, or TAESD's decoder. */
static int load_taesd_file(px_sd_weights *w, const char *path, px_err *err)
{
    int rc = refuse_pickle(path, err);
    if (rc != PX_OK)
        return rc;
    px_st_file *f;
    if ((rc = px_st_open(path, &f, err)) != PX_OK)
        return rc;
    if (sd_w_keep(w, f) != PX_OK) {
        px_st_close(f);
        return px_err_set(err, PX_ELIMIT, "%s: too many files", path);
    }
    if (px_st_find(f, "1.weight") && !px_st_find(f, "0.weight"))
        return load_taesd_raw(w, f, path, err);
    if (!px_st_find(f, "decoder.layers.0.weight"))
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: not a TAESD decoder (no decoder.layers.0.weight, nor TAESD's own "
                          "1.weight)",
                          path);
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        if (sd_w_add(w, PX_SD_TAESD, t->name, t) != PX_OK)
            return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    }
    return PX_OK;
}

/* TAESD: a safetensors file, or a folder with diffusion_pytorch_model.safetensors
 * and (usually) config.json; without a config the shapes tell. */
static int open_taesd(px_sd_weights *w, const char *path, px_err *err)
{
    if (!is_dir(path))
        return load_taesd_file(w, path, err);
    char *p = part_file(path, ".", "diffusion_pytorch_model");
    if (!p)
        return px_err_set(err, PX_ENOTFOUND, "%s: no diffusion_pytorch_model.safetensors", path);
    int rc = load_taesd_file(w, p, err);
    free(p);
    if (rc == PX_OK)
        rc = sd_taesd_config(w, path, err);
    return rc;
}

int px_sd_weights_open(const char *path, const char *taesd_path, px_sd_weights **out, px_err *err)
{
    *out = NULL;
    px_sd_weights *w = px_calloc(1, sizeof *w);
    if (!w)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    sd_config_defaults(&w->cfg);
    int rc;
    if (is_dir(path))
        rc = open_folder(w, path, err);
    else if (is_file(path))
        rc = open_file(w, path, err);
    else
        rc = px_err_set(err, PX_ENOTFOUND, "%s: no such model file or folder", path);
    if (rc == PX_OK && taesd_path)
        rc = open_taesd(w, taesd_path, err);
    if (rc == PX_OK)
        rc = sd_w_finish(w, path, err);
    if (rc == PX_OK && w->cfg.single_file) {
        if ((rc = sd_infer_unet(w, &w->cfg.unet, path, err)) == PX_OK &&
            (rc = sd_infer_vae(w, &w->cfg.vae, path, err)) == PX_OK)
            rc = sd_infer_clip(w, &w->cfg.clip, path, err);
    }
    if (rc == PX_OK && taesd_path && !w->cfg.taesd.present)
        rc = sd_infer_taesd(w, &w->cfg.taesd, taesd_path, err);
    if (rc != PX_OK) {
        px_sd_weights_close(w);
        return rc;
    }
    *out = w;
    return PX_OK;
}

/*
 * Near-duplicate prompts: normalized word 3-shingles compared by Jaccard
 * similarity, estimated with MinHash so a new prompt is checked against every
 * prompt of the pool in constant time.
 *
 * Normalization lower-cases, keeps letters and digits, and drops a few
 * filler words ("a", "the", "with"...) so "A desk with a lamp" and "desk,
 * lamp" are not told apart by grammar alone. Each prompt gets a 64-value
 * MinHash signature; LSH banding (16 bands of 4 values) puts it in 16 hash
 * buckets, and only prompts sharing a bucket are compared (pairs at Jaccard
 * 0.7 share a band with probability > 0.99). The share of equal signature
 * values estimates the Jaccard similarity; at or above the threshold the
 * prompt is a duplicate.
 */
#include "gen_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define NHASH 64
#define BANDS 16
#define ROWS (NHASH / BANDS)

typedef struct node {
    uint64_t key;
    uint32_t doc;
    uint32_t next; /* index + 1 into nodes, 0 = end */
} node;

struct px_gen_dedup {
    double threshold;
    uint64_t *sigs; /* ndocs x NHASH */
    size_t ndocs, cap;
    uint32_t *heads; /* nbuckets, index + 1 into nodes */
    size_t nbuckets;
    node *nodes;
    size_t nnodes, nodecap;
};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int filler(const char *w, size_t n)
{
    static const char *words[] = {"a", "an", "the", "of", "with", "and", "in", "on", "at", "to",
                                  "for", "by", "its", "is", "are", "from"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && !memcmp(words[i], w, n))
            return 1;
    return 0;
}

/* Hashes of the normalized words of text into w (cap); returns the count. */
static size_t words_of(const char *text, uint64_t *w, size_t cap)
{
    size_t n = 0;
    char buf[64];
    const unsigned char *p = (const unsigned char *)text;
    while (*p && n < cap) {
        while (*p && !(isalnum(*p) && *p < 128))
            p++;
        size_t k = 0;
        while (*p && isalnum(*p) && *p < 128) {
            if (k < sizeof buf)
                buf[k++] = (char)tolower(*p);
            p++;
        }
        if (k == 0 || filler(buf, k))
            continue;
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (size_t i = 0; i < k; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
        w[n++] = h;
    }
    return n;
}

/* Shingle hashes (3 consecutive words; the words themselves when fewer). */
static size_t shingles_of(const char *text, uint64_t *sh, size_t cap)
{
    uint64_t w[512];
    size_t nw = words_of(text, w, 512), n = 0;
    if (nw < 3) {
        for (size_t i = 0; i < nw && n < cap; i++)
            sh[n++] = mix64(w[i]);
        return n;
    }
    for (size_t i = 0; i + 2 < nw && n < cap; i++)
        sh[n++] = mix64(w[i] * 31 + mix64(w[i + 1] * 17 + mix64(w[i + 2])));
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double px_gen_jaccard(const char *a, const char *b)
{
    uint64_t sa[512], sb[512];
    size_t na = shingles_of(a, sa, 512), nb = shingles_of(b, sb, 512);
    qsort(sa, na, sizeof *sa, cmp_u64);
    qsort(sb, nb, sizeof *sb, cmp_u64);
    size_t i = 0, j = 0, inter = 0, ua = 0, ub = 0;
    /* count distinct values on both sides while merging */
    while (i < na || j < nb) {
        if (j >= nb || (i < na && sa[i] < sb[j])) {
            uint64_t v = sa[i];
            while (i < na && sa[i] == v)
                i++;
            ua++;
        } else if (i >= na || sb[j] < sa[i]) {
            uint64_t v = sb[j];
            while (j < nb && sb[j] == v)
                j++;
            ub++;
        } else {
            uint64_t v = sa[i];
            while (i < na && sa[i] == v)
                i++;
            while (j < nb && sb[j] == v)
                j++;
            inter++;
        }
    }
    size_t uni = ua + ub + inter;
    return uni ? (double)inter / (double)uni : 1.0;
}

int px_gen_dedup_create(double threshold, px_gen_dedup **out, px_err *err)
{
    *out = NULL;
    px_gen_dedup *d = px_calloc(1, sizeof *d);
    if (!d)
        return px_err_set(err, PX_ENOMEM, "dedup: out of memory");
    d->threshold = threshold > 0 ? threshold : 0.7;
    d->nbuckets = 1024;
    d->heads = px_calloc(d->nbuckets, sizeof *d->heads);
    if (!d->heads) {
        free(d);
        return px_err_set(err, PX_ENOMEM, "dedup: out of memory");
    }
    *out = d;
    return PX_OK;
}

void px_gen_dedup_destroy(px_gen_dedup *d)
{
    if (!d)
        return;
    free(d->sigs);
    free(d->heads);
    free(d->nodes);
    free(d);
}

size_t px_gen_dedup_count(const px_gen_dedup *d)
{
    return d ? d->ndocs : 0;
}

static uint64_t band_key(const uint64_t *sig, int b)
{
    uint64_t k = (uint64_t)b * 0x9e3779b97f4a7c15ULL;
    for (int r = 0; r < ROWS; r++)
        k = mix64(k ^ sig[b * ROWS + r]);
    return k;
}

static int rehash(px_gen_dedup *d)
{
    size_t nb = d->nbuckets * 2;
    uint32_t *h = px_calloc(nb, sizeof *h);
    if (!h)
        return PX_ENOMEM;
    for (size_t i = 0; i < d->nnodes; i++) {
        size_t b = d->nodes[i].key & (nb - 1);
        d->nodes[i].next = h[b];
        h[b] = (uint32_t)(i + 1);
    }
    free(d->heads);
    d->heads = h;
    d->nbuckets = nb;
    return PX_OK;
}

int px_gen_dedup_add(px_gen_dedup *d, const char *text)
{
    uint64_t sh[512], sig[NHASH];
    size_t ns = shingles_of(text, sh, 512);
    for (int k = 0; k < NHASH; k++) {
        uint64_t m = UINT64_MAX, salt = mix64((uint64_t)(k + 1) * 0x2545f4914f6cdd1dULL);
        for (size_t i = 0; i < ns; i++) {
            uint64_t v = mix64(sh[i] ^ salt);
            if (v < m)
                m = v;
        }
        sig[k] = m;
    }
    uint64_t keys[BANDS];
    for (int b = 0; b < BANDS; b++) {
        keys[b] = band_key(sig, b);
        for (uint32_t i = d->heads[keys[b] & (d->nbuckets - 1)]; i; i = d->nodes[i - 1].next) {
            const node *nd = &d->nodes[i - 1];
            if (nd->key != keys[b])
                continue;
            const uint64_t *o = d->sigs + (size_t)nd->doc * NHASH;
            int same = 0;
            for (int k = 0; k < NHASH; k++)
                same += o[k] == sig[k];
            if ((double)same / NHASH >= d->threshold)
                return 1;
        }
    }
    if (d->ndocs == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 256;
        uint64_t *ns2 = px_realloc(d->sigs, nc * NHASH * sizeof *ns2);
        if (!ns2)
            return PX_ENOMEM;
        d->sigs = ns2;
        d->cap = nc;
    }
    if (d->nnodes + BANDS > d->nodecap) {
        size_t nc = d->nodecap ? d->nodecap * 2 : 4096;
        node *nn = px_realloc(d->nodes, nc * sizeof *nn);
        if (!nn)
            return PX_ENOMEM;
        d->nodes = nn;
        d->nodecap = nc;
    }
    memcpy(d->sigs + d->ndocs * NHASH, sig, sizeof sig);
    for (int b = 0; b < BANDS; b++) {
        size_t bk = keys[b] & (d->nbuckets - 1);
        d->nodes[d->nnodes] = (node){keys[b], (uint32_t)d->ndocs, d->heads[bk]};
        d->heads[bk] = (uint32_t)(++d->nnodes);
    }
    d->ndocs++;
    if (d->nnodes > d->nbuckets * 2 && rehash(d) != PX_OK)
        return PX_ENOMEM;
    return 0;
}

/*
 * CLIP's byte-level BPE tokenizer, giving the ids openai/CLIP's
 * simple_tokenizer (and transformers' CLIPTokenizer without ftfy) give.
 *
 * Written by hand because no C library does CLIP's exact pipeline, and an id
 * off by one changes the image. The steps, in the reference's order:
 *  1. html.unescape, twice: numeric references with Python's rules (C1
 *     controls read as windows-1252, surrogates and > U+10FFFF become U+FFFD,
 *     noncharacters vanish), and named references from a table: the 106 that
 *     HTML5 allows without ';' ("&amp", "&eacute") with Python's longest-prefix
 *     rule for them ("&ampx" -> "&x"), every name that begins with one of
 *     those (so the rule never misreads "&notin;"), Greek letters and the
 *     common typographic ones. The other ~2000 HTML5 names (&alefsym; ...)
 *     are left as written, where Python would replace them.
 *  2. strip, collapse every run of regex \s (Unicode White_Space) into one
 *     space, strip again (Python's strip also removes U+001C..U+001F).
 *  3. Python's str.lower(): utf8proc_tolower per code point, plus the two
 *     places where Python's full lowercasing differs from the simple mapping:
 *     U+0130 becomes "i" + U+0307, and U+03A3 becomes final sigma U+03C2 at the
 *     end of a word (Cased and Case_Ignorable are approximated from utf8proc's
 *     categories and case mappings, so an exotic neighbour may decide
 *     differently).
 *  4. the pre-token regex
 *     <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *     matched by hand, alternatives tried in order at each position, with the
 *     quirks of the regex module's IGNORECASE: "'s" also matches "'\u017f",
 *     and the negated set excludes characters whose case variants are letters
 *     (see tok_is_other). Combining marks are not letters: "cafe\u0301" is
 *     "cafe" then "\u0301". Categories come from utf8proc 2.8 (Unicode 15): a
 *     code point assigned later is punctuation here, where a newer regex
 *     module may call it a letter.
 *  5. each pre-token's UTF-8 bytes become the printable stand-ins of
 *     bytes_to_unicode, the last one carrying "</w>", and are merged by BPE
 *     with the reference's result: repeatedly take the adjacent pair with the
 *     lowest merge rank and merge all its occurrences left to right (done
 *     with a heap, see tok_bpe).
 * Besides the 150 golden prompts, this was compared with the Python reference
 * (regex module 2026.5.9, Python 3.11) on ~17000 random strings built to hit
 * entities, sigma contexts, case quirks and long words: the only differences
 * were code points unassigned in Unicode 15.
 *
 * Tokens are interned strings (symbols) with a hash map; merge ranks live in
 * a second hash map keyed by symbol pairs, so a merge is two integer
 * compares. Nothing is cached between calls and the tokenizer is read-only
 * after loading, so px_sd_tokenize is thread-safe without locks. Prompts over
 * 64 KiB (PX_ELIMIT) and invalid UTF-8 (PX_EINVAL, with the byte offset) are
 * refused.
 */
#include "sd_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>
#include <zlib.h>

#define TOK_MAX_TEXT 65536               /* bytes of prompt accepted */
#define TOK_MAX_MERGES (49152 - 256 - 2) /* the reference reads this many merge lines */
#define TOK_MAX_FILE ((size_t)64 << 20)  /* decompressed vocabulary / json cap */
#define TOK_EMPTY UINT32_MAX

typedef struct tok_sym {
    uint32_t off, len; /* into chars */
    int32_t id;        /* vocabulary id, -1 when the string is not in the vocabulary */
} tok_sym;

typedef struct tok_pair {
    uint32_t a, b;   /* symbols */
    int32_t rank;    /* -1: empty slot */
    uint32_t merged; /* symbol of a's string followed by b's */
} tok_pair;

struct px_sd_tokenizer {
    char *chars; /* all symbol strings, not NUL-terminated */
    size_t nchars, chars_cap;
    tok_sym *syms;
    uint32_t nsyms, syms_cap;
    uint32_t *slots; /* open addressing over syms; TOK_EMPTY when free */
    size_t slot_mask;
    tok_pair *pairs;
    size_t pair_mask;
    uint32_t byte_sym[256], byte_end_sym[256]; /* a byte's stand-in, and it + "</w>" */
    int32_t bos, eos, unk, sot_id, eot_id;     /* sot/eot: ids of the literal specials */
};

/* ---- symbols ------------------------------------------------------------ */

static uint32_t tok_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t tok_find(const px_sd_tokenizer *t, const char *s, size_t n)
{
    if (!t->slots)
        return TOK_EMPTY;
    for (size_t i = tok_hash(s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        uint32_t k = t->slots[i];
        if (k == TOK_EMPTY)
            return TOK_EMPTY;
        if (t->syms[k].len == n && memcmp(t->chars + t->syms[k].off, s, n) == 0)
            return k;
    }
}

static int tok_rehash(px_sd_tokenizer *t, size_t nslots)
{
    uint32_t *slots = px_malloc(nslots * sizeof *slots);
    if (!slots)
        return PX_ENOMEM;
    memset(slots, 0xff, nslots * sizeof *slots);
    for (uint32_t k = 0; k < t->nsyms; k++) {
        size_t i = tok_hash(t->chars + t->syms[k].off, t->syms[k].len) & (nslots - 1);
        while (slots[i] != TOK_EMPTY)
            i = (i + 1) & (nslots - 1);
        slots[i] = k;
    }
    free(t->slots);
    t->slots = slots;
    t->slot_mask = nslots - 1;
    return PX_OK;
}

/* Symbol of string s (added with id -1 when new). s must not point into t->chars. */
static int tok_intern(px_sd_tokenizer *t, const char *s, size_t n, uint32_t *out)
{
    uint32_t k = tok_find(t, s, n);
    if (k != TOK_EMPTY) {
        *out = k;
        return PX_OK;
    }
    if (n > UINT32_MAX / 2 || t->nchars + n > UINT32_MAX || t->nsyms >= UINT32_MAX / 4)
        return PX_ELIMIT;
    if ((size_t)(t->nsyms + 1) * 2 > t->slot_mask + 1) {
        int rc = tok_rehash(t, t->slots ? (t->slot_mask + 1) * 2 : 1024);
        if (rc)
            return rc;
    }
    if (t->nsyms == t->syms_cap) {
        uint32_t cap = t->syms_cap ? t->syms_cap * 2 : 1024;
        tok_sym *syms = px_realloc(t->syms, (size_t)cap * sizeof *syms);
        if (!syms)
            return PX_ENOMEM;
        t->syms = syms;
        t->syms_cap = cap;
    }
    if (t->nchars + n > t->chars_cap) {
        size_t cap = t->chars_cap ? t->chars_cap * 2 : 65536;
        while (cap < t->nchars + n)
            cap *= 2;
        char *chars = px_realloc(t->chars, cap);
        if (!chars)
            return PX_ENOMEM;
        t->chars = chars;
        t->chars_cap = cap;
    }
    memcpy(t->chars + t->nchars, s, n);
    k = t->nsyms++;
    t->syms[k] = (tok_sym){(uint32_t)t->nchars, (uint32_t)n, -1};
    t->nchars += n;
    size_t i = tok_hash(s, n) & t->slot_mask;
    while (t->slots[i] != TOK_EMPTY)
        i = (i + 1) & t->slot_mask;
    t->slots[i] = k;
    *out = k;
    return PX_OK;
}

/* Gives string s vocabulary id `id`; a later duplicate wins, as in the
 * reference's dict(zip(vocab, range(...))). */
static int tok_set_id(px_sd_tokenizer *t, const char *s, size_t n, int32_t id)
{
    uint32_t k;
    int rc = tok_intern(t, s, n, &k);
    if (rc)
        return rc;
    t->syms[k].id = id;
    return PX_OK;
}

static int32_t tok_id_of(const px_sd_tokenizer *t, const char *s)
{
    uint32_t k = tok_find(t, s, strlen(s));
    return k == TOK_EMPTY ? -1 : t->syms[k].id;
}

static size_t tok_pair_slot(const px_sd_tokenizer *t, uint32_t a, uint32_t b)
{
    return ((a * 0x9E3779B1u) ^ (b * 0x85EBCA77u) ^ (b >> 15)) & t->pair_mask;
}

static const tok_pair *tok_pair_find(const px_sd_tokenizer *t, uint32_t a, uint32_t b)
{
    for (size_t i = tok_pair_slot(t, a, b);; i = (i + 1) & t->pair_mask) {
        const tok_pair *p = &t->pairs[i];
        if (p->rank < 0)
            return NULL;
        if (p->a == a && p->b == b)
            return p;
    }
}

/* ---- bytes_to_unicode --------------------------------------------------- */

/* The reference's printable stand-in for each byte: printable Latin-1 bytes
 * stand for themselves, the others (controls, space, 0x7f-0xa0, 0xad) become
 * U+0100, U+0101, ... in byte order. order[i] = the byte of vocabulary id i. */
static void tok_byte_map(uint32_t cp[256], uint8_t order[256])
{
    int n = 0, k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        if (printable) {
            cp[b] = (uint32_t)b;
            order[k++] = (uint8_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        if (!printable) {
            cp[b] = 256u + (uint32_t)n++;
            order[k++] = (uint8_t)b;
        }
    }
}

/* Interns the 512 byte symbols; with ids 0..511 in the reference's order when
 * assign_ids (the openai vocabulary), else keeping whatever id they have. */
static int tok_byte_symbols(px_sd_tokenizer *t, int assign_ids)
{
    uint32_t cp[256];
    uint8_t order[256];
    tok_byte_map(cp, order);
    for (int i = 0; i < 256; i++) {
        uint8_t b = order[i];
        char s[8];
        size_t n = (size_t)utf8proc_encode_char((utf8proc_int32_t)cp[b], (utf8proc_uint8_t *)s);
        memcpy(s + n, "</w>", 4);
        int rc = tok_intern(t, s, n, &t->byte_sym[b]);
        if (!rc)
            rc = tok_intern(t, s, n + 4, &t->byte_end_sym[b]);
        if (rc)
            return rc;
        if (assign_ids) {
            t->syms[t->byte_sym[b]].id = i;
            t->syms[t->byte_end_sym[b]].id = 256 + i;
        }
    }
    return PX_OK;
}

/* ---- merges ------------------------------------------------------------- */

typedef struct tok_merge {
    const char *a, *b;
    size_t alen, blen;
} tok_merge;

static int tok_is_ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Splits merge lines 1..TOK_MAX_MERGES of buf (line 0 is "#version") into
 * pairs, as the reference's split('\n')[1:48895] then line.split(). strip:
 * strip the whole text first (transformers' CLIPTokenizer does). *m is
 * malloc'd and points into buf. */
static int tok_parse_merges(const char *buf, size_t len, int strip, const char *path, tok_merge **m,
                            size_t *nm, px_err *err)
{
    size_t b = 0, e = len;
    if (strip) {
        while (b < e && tok_is_ascii_space(buf[b]))
            b++;
        while (e > b && tok_is_ascii_space(buf[e - 1]))
            e--;
    }
    *m = px_malloc(TOK_MAX_MERGES * sizeof **m);
    if (!*m)
        return px_err_set(err, PX_ENOMEM, "tokenizer: no memory for merges of %s", path);
    size_t n = 0, line = 0, p = b;
    while (p < e && n < TOK_MAX_MERGES) { /* a final newline ends the last line */
        const char *nl = memchr(buf + p, '\n', e - p);
        size_t q = nl ? (size_t)(nl - buf) : e;
        if (line > 0) {
            const char *f[3] = {0};
            size_t fl[3] = {0}, nf = 0;
            for (size_t i = p; i < q;) {
                while (i < q && tok_is_ascii_space(buf[i]))
                    i++;
                if (i == q)
                    break;
                size_t s = i;
                while (i < q && !tok_is_ascii_space(buf[i]))
                    i++;
                if (nf < 3) {
                    f[nf] = buf + s;
                    fl[nf] = i - s;
                }
                nf++;
            }
            if (nf != 2) {
                free(*m);
                *m = NULL;
                return px_err_set(
                    err, PX_ECORRUPT,
                    "tokenizer: %s line %zu: expected a merge \"a b\", found %zu fields", path,
                    line + 1, nf);
            }
            (*m)[n++] = (tok_merge){f[0], f[1], fl[0], fl[1]};
        }
        line++;
        if (!nl)
            break;
        p = q + 1;
    }
    *nm = n;
    return PX_OK;
}

/* Records merge ranks 0..n-1 (a later duplicate pair wins, as in a dict);
 * with assign_ids each merge's concatenation gets id 512 + rank. */
static int tok_add_merges(px_sd_tokenizer *t, const tok_merge *m, size_t n, int assign_ids)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->pairs = px_malloc(cap * sizeof *t->pairs);
    if (!t->pairs)
        return PX_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        t->pairs[i].rank = -1;
    t->pair_mask = cap - 1;
    px_buf cat = {0};
    int rc = PX_OK;
    for (size_t r = 0; r < n && !rc; r++) {
        uint32_t a, b, ab;
        cat.len = 0;
        rc = px_buf_append(&cat, m[r].a, m[r].alen);
        if (!rc)
            rc = px_buf_append(&cat, m[r].b, m[r].blen);
        if (!rc)
            rc = tok_intern(t, m[r].a, m[r].alen, &a);
        if (!rc)
            rc = tok_intern(t, m[r].b, m[r].blen, &b);
        if (!rc)
            rc = tok_intern(t, (const char *)cat.data, cat.len, &ab);
        if (rc)
            break;
        if (assign_ids)
            t->syms[ab].id = (int32_t)(512 + r);
        size_t i = tok_pair_slot(t, a, b);
        while (t->pairs[i].rank >= 0 && !(t->pairs[i].a == a && t->pairs[i].b == b))
            i = (i + 1) & t->pair_mask;
        t->pairs[i] = (tok_pair){a, b, (int32_t)r, ab};
    }
    px_buf_free(&cat);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

/* Whole file through zlib (gzip or plain text alike), at most TOK_MAX_FILE. */
static int tok_read_gz(const char *path, px_buf *out, px_err *err)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return px_err_set(err, errno == ENOENT ? PX_ENOTFOUND : PX_EIO,
                          "tokenizer: cannot open %s: %s", path,
                          errno ? strerror(errno) : "out of memory");
    uint8_t chunk[65536];
    int rc = PX_OK;
    for (;;) {
        int n = gzread(f, chunk, sizeof chunk);
        if (n < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            rc = px_err_set(err, PX_ECORRUPT, "tokenizer: %s: %s", path, msg);
            break;
        }
        if (n == 0)
            break;
        if (out->len + (size_t)n > TOK_MAX_FILE) {
            rc = px_err_set(err, PX_ELIMIT, "tokenizer: %s is larger than %zu bytes", path,
                            TOK_MAX_FILE);
            break;
        }
        if (px_buf_append(out, chunk, (size_t)n)) {
            rc = px_err_set(err, PX_ENOMEM, "tokenizer: no memory to read %s", path);
            break;
        }
    }
    gzclose(f);
    return rc;
}

/* openai's bpe_simple_vocab_16e6.txt.gz: ids are the 256 byte stand-ins, the
 * same with "</w>", each merge's concatenation, then the two specials. */
static int tok_load_openai(px_sd_tokenizer *t, const char *path, px_err *err)
{
    px_buf buf = {0};
    int rc = tok_read_gz(path, &buf, err);
    tok_merge *m = NULL;
    size_t nm = 0;
    if (!rc)
        rc = tok_parse_merges((const char *)buf.data, buf.len, 0, path, &m, &nm, err);
    if (!rc && nm == 0)
        rc = px_err_set(err, PX_ECORRUPT, "tokenizer: %s has no merges", path);
    if (!rc) {
        int r = tok_byte_symbols(t, 1);
        if (!r)
            r = tok_add_merges(t, m, nm, 1);
        if (!r)
            r = tok_set_id(t, "<|startoftext|>", 15, (int32_t)(512 + nm));
        if (!r)
            r = tok_set_id(t, "<|endoftext|>", 13, (int32_t)(513 + nm));
        if (r)
            rc = px_err_set(err, r, "tokenizer: %s: %s while building the vocabulary", path,
                            px_strstatus(r));
    }
    if (!rc) {
        t->bos = t->sot_id = (int32_t)(512 + nm);
        t->eos = t->unk = t->eot_id = (int32_t)(513 + nm);
    }
    free(m);
    px_buf_free(&buf);
    return rc;
}

static json_t *tok_load_json(const char *dir, const char *name, int required, px_err *err, int *rc)
{
    char path[4096];
    uint8_t *data = NULL;
    size_t len = 0;
    px_err e2;
    *rc = PX_OK;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int r = px_read_file(path, TOK_MAX_FILE, &data, &len, &e2);
    if (r) {
        if (r != PX_ENOTFOUND || required)
            *rc = px_err_set(err, r, "tokenizer: %s", e2.msg);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)data, len, 0, &je);
    free(data);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        *rc = px_err_set(err, PX_ECORRUPT, "tokenizer: %s: expected a JSON object (%s, line %d)",
                         path, j ? "not an object" : je.text, j ? 0 : je.line);
    }
    return j;
}

/* A special token's text from tokenizer_config / special_tokens_map: a string
 * or {"content": string}. */
static const char *tok_special_name(const json_t *cfg, const json_t *map, const char *key,
                                    const char *dflt)
{
    const json_t *srcs[2] = {cfg, map};
    for (int i = 0; i < 2; i++) {
        const json_t *v = srcs[i] ? json_object_get(srcs[i], key) : NULL;
        if (json_is_object(v))
            v = json_object_get(v, "content");
        if (json_is_string(v))
            return json_string_value(v);
    }
    return dflt;
}

/* Adds token -> id entries of a JSON object (vocab.json, added_tokens.json). */
static int tok_add_vocab(px_sd_tokenizer *t, const json_t *obj, const char *what, px_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id > INT32_MAX)
            return px_err_set(err, PX_ECORRUPT, "tokenizer: %s: \"%s\" should map to an id >= 0",
                              what, key);
        int rc = tok_set_id(t, key, strlen(key), (int32_t)id);
        if (rc)
            return px_err_set(err, rc, "tokenizer: %s: %s", what, px_strstatus(rc));
    }
    return PX_OK;
}

/* Ids of the special tokens; added_tokens_decoder ({"525": {"content": ...}})
 * from tokenizer_config.json fills in ones the vocabulary lacks. */
static int tok_hf_specials(px_sd_tokenizer *t, const char *dir, const json_t *cfg,
                           const json_t *map, px_err *err)
{
    const json_t *dec = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (json_is_object(dec)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)dec, key, v)
        {
            const json_t *c = json_object_get(v, "content");
            char *end;
            long id = strtol(key, &end, 10);
            if (!json_is_string(c) || *end || id < 0 || id > INT32_MAX)
                continue;
            const char *s = json_string_value(c);
            if (tok_id_of(t, s) < 0 && tok_set_id(t, s, strlen(s), (int32_t)id))
                return px_err_set(err, PX_ENOMEM, "tokenizer: no memory");
        }
    }
    const char *names[3] = {tok_special_name(cfg, map, "bos_token", "<|startoftext|>"),
                            tok_special_name(cfg, map, "eos_token", "<|endoftext|>"),
                            tok_special_name(cfg, map, "unk_token", "<|endoftext|>")};
    int32_t *ids[3] = {&t->bos, &t->eos, &t->unk};
    for (int i = 0; i < 3; i++) {
        *ids[i] = tok_id_of(t, names[i]);
        if (*ids[i] < 0)
            return px_err_set(err, PX_ECORRUPT, "tokenizer: %s: special token %s has no id", dir,
                              names[i]);
    }
    t->sot_id = tok_id_of(t, "<|startoftext|>");
    t->eot_id = tok_id_of(t, "<|endoftext|>");
    return PX_OK;
}

/* merges.txt of a tokenizer folder, stripped as transformers reads it. */
static int tok_hf_merges(px_sd_tokenizer *t, const char *dir, px_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    uint8_t *data = NULL;
    size_t len = 0;
    tok_merge *m = NULL;
    size_t nm = 0;
    int rc = px_read_file(path, TOK_MAX_FILE, &data, &len, err);
    if (!rc)
        rc = tok_parse_merges((const char *)data, len, 1, path, &m, &nm, err);
    if (!rc) {
        int r = tok_byte_symbols(t, 0);
        if (!r)
            r = tok_add_merges(t, m, nm, 0);
        if (r)
            rc = px_err_set(err, r, "tokenizer: %s: %s", path, px_strstatus(r));
    }
    free(m);
    free(data);
    return rc;
}

/* A transformers/diffusers tokenizer folder: vocab.json, merges.txt, and
 * optionally added_tokens.json, tokenizer_config.json, special_tokens_map.json. */
static int tok_load_hf(px_sd_tokenizer *t, const char *dir, px_err *err)
{
    static const char *const names[4] = {"vocab.json", "added_tokens.json", "tokenizer_config.json",
                                         "special_tokens_map.json"};
    json_t *j[4] = {NULL, NULL, NULL, NULL};
    int rc = PX_OK;
    for (int i = 0; i < 4 && !rc; i++)
        j[i] = tok_load_json(dir, names[i], i == 0, err, &rc);
    for (int i = 0; i < 2 && !rc; i++)
        if (j[i])
            rc = tok_add_vocab(t, j[i], names[i], err);
    if (!rc)
        rc = tok_hf_merges(t, dir, err);
    if (!rc)
        rc = tok_hf_specials(t, dir, j[2], j[3], err);
    for (int i = 0; i < 4; i++)
        json_decref(j[i]);
    return rc;
}

int px_sd_tokenizer_load(const char *path, px_sd_tokenizer **out, px_err *err)
{
    if (!path || !out)
        return px_err_set(err, PX_EINVAL, "tokenizer: NULL path or output");
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return px_err_set(err, errno == ENOENT ? PX_ENOTFOUND : PX_EIO,
                          "tokenizer: cannot open %s: %s", path, strerror(errno));
    px_sd_tokenizer *t = px_calloc(1, sizeof *t);
    if (!t)
        return px_err_set(err, PX_ENOMEM, "tokenizer: no memory");
    int rc = S_ISDIR(st.st_mode) ? tok_load_hf(t, path, err) : tok_load_openai(t, path, err);
    if (rc) {
        px_sd_tokenizer_destroy(t);
        return rc;
    }
    *out = t;
    return PX_OK;
}

void px_sd_tokenizer_destroy(px_sd_tokenizer *t)
{
    if (!t)
        return;
    free(t->chars);
    free(t->syms);
    free(t->slots);
    free(t->pairs);
    free(t);
}

int32_t px_sd_tokenizer_bos(const px_sd_tokenizer *t)
{
    return t->bos;
}

int32_t px_sd_tokenizer_eos(const px_sd_tokenizer *t)
{
    return t->eos;
}

/* ---- html.unescape ------------------------------------------------------ */

typedef struct tok_entity {
    const char *name;
    uint32_t cp, cp2; /* cp2: a second code point, or 0 */
    int legacy;       /* HTML5 also accepts it without ';' */
} tok_entity;

/* Names of consecutive code points: Latin-1 (the 96 legacy names that, with
 * the markup ones below, are all HTML5 accepts without ';') and Greek. An
 * empty name is a hole. */
static const char *const tok_latin1_names[96] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};
static const char *const tok_greek_upper[25] = {
    "Alpha", "Beta",   "Gamma",   "Delta", "Epsilon", "Zeta",    "Eta",  "Theta", "Iota",
    "Kappa", "Lambda", "Mu",      "Nu",    "Xi",      "Omicron", "Pi",   "Rho",   "",
    "Sigma", "Tau",    "Upsilon", "Phi",   "Chi",     "Psi",     "Omega"};
static const char *const tok_greek_lower[25] = {
    "alpha", "beta",   "gamma",   "delta", "epsilon", "zeta",    "eta",  "theta", "iota",
    "kappa", "lambda", "mu",      "nu",    "xi",      "omicron", "pi",   "rho",   "sigmaf",
    "sigma", "tau",    "upsilon", "phi",   "chi",     "psi",     "omega"};
static const struct {
    const char *const *names;
    int count;
    uint32_t first;
    int legacy;
} tok_entity_runs[3] = {{tok_latin1_names, 96, 0xa0, 1},
                        {tok_greek_upper, 25, 0x391, 0},
                        {tok_greek_lower, 25, 0x3b1, 0}};

/* The other legacy names, common ';'-only ones, and every HTML5 name that
 * begins with a legacy name (&notin; must not become "¬in;" by the prefix rule). */
static const tok_entity tok_entities[] = {
    {"amp", '&', 0, 1},
    {"AMP", '&', 0, 1},
    {"lt", '<', 0, 1},
    {"LT", '<', 0, 1},
    {"gt", '>', 0, 1},
    {"GT", '>', 0, 1},
    {"quot", '"', 0, 1},
    {"QUOT", '"', 0, 1},
    {"COPY", 0xa9, 0, 1},
    {"REG", 0xae, 0, 1},
    {"apos", '\'', 0, 0},
    {"euro", 0x20ac, 0, 0},
    {"hellip", 0x2026, 0, 0},
    {"mdash", 0x2014, 0, 0},
    {"ndash", 0x2013, 0, 0},
    {"lsquo", 0x2018, 0, 0},
    {"rsquo", 0x2019, 0, 0},
    {"sbquo", 0x201a, 0, 0},
    {"ldquo", 0x201c, 0, 0},
    {"rdquo", 0x201d, 0, 0},
    {"bdquo", 0x201e, 0, 0},
    {"bull", 0x2022, 0, 0},
    {"trade", 0x2122, 0, 0},
    {"dagger", 0x2020, 0, 0},
    {"Dagger", 0x2021, 0, 0},
    {"permil", 0x2030, 0, 0},
    {"lsaquo", 0x2039, 0, 0},
    {"rsaquo", 0x203a, 0, 0},
    {"prime", 0x2032, 0, 0},
    {"Prime", 0x2033, 0, 0},
    {"larr", 0x2190, 0, 0},
    {"uarr", 0x2191, 0, 0},
    {"rarr", 0x2192, 0, 0},
    {"darr", 0x2193, 0, 0},
    {"harr", 0x2194, 0, 0},
    {"hearts", 0x2665, 0, 0},
    {"spades", 0x2660, 0, 0},
    {"clubs", 0x2663, 0, 0},
    {"diams", 0x2666, 0, 0},
    {"infin", 0x221e, 0, 0},
    {"ne", 0x2260, 0, 0},
    {"le", 0x2264, 0, 0},
    {"ge", 0x2265, 0, 0},
    {"minus", 0x2212, 0, 0},
    {"asymp", 0x2248, 0, 0},
    {"ensp", 0x2002, 0, 0},
    {"emsp", 0x2003, 0, 0},
    {"thinsp", 0x2009, 0, 0},
    {"zwnj", 0x200c, 0, 0},
    {"zwj", 0x200d, 0, 0},
    {"lrm", 0x200e, 0, 0},
    {"rlm", 0x200f, 0, 0},
    {"OElig", 0x152, 0, 0},
    {"oelig", 0x153, 0, 0},
    {"Scaron", 0x160, 0, 0},
    {"scaron", 0x161, 0, 0},
    {"Yuml", 0x178, 0, 0},
    {"fnof", 0x192, 0, 0},
    {"circ", 0x2c6, 0, 0},
    {"tilde", 0x2dc, 0, 0},
    {"star", 0x2606, 0, 0},
    {"check", 0x2713, 0, 0},
    {"sim", 0x223c, 0, 0},
    {"centerdot", 0xb7, 0, 0},
    {"copysr", 0x2117, 0, 0},
    {"divideontimes", 0x22c7, 0, 0},
    {"gtcc", 0x2aa7, 0, 0},
    {"gtcir", 0x2a7a, 0, 0},
    {"gtdot", 0x22d7, 0, 0},
    {"gtlPar", 0x2995, 0, 0},
    {"gtquest", 0x2a7c, 0, 0},
    {"gtrapprox", 0x2a86, 0, 0},
    {"gtrarr", 0x2978, 0, 0},
    {"gtrdot", 0x22d7, 0, 0},
    {"gtreqless", 0x22db, 0, 0},
    {"gtreqqless", 0x2a8c, 0, 0},
    {"gtrless", 0x2277, 0, 0},
    {"gtrsim", 0x2273, 0, 0},
    {"ltcc", 0x2aa6, 0, 0},
    {"ltcir", 0x2a79, 0, 0},
    {"ltdot", 0x22d6, 0, 0},
    {"lthree", 0x22cb, 0, 0},
    {"ltimes", 0x22c9, 0, 0},
    {"ltlarr", 0x2976, 0, 0},
    {"ltquest", 0x2a7b, 0, 0},
    {"ltrPar", 0x2996, 0, 0},
    {"ltri", 0x25c3, 0, 0},
    {"ltrie", 0x22b4, 0, 0},
    {"ltrif", 0x25c2, 0, 0},
    {"notin", 0x2209, 0, 0},
    {"notinE", 0x22f9, 0x338, 0},
    {"notindot", 0x22f5, 0x338, 0},
    {"notinva", 0x2209, 0, 0},
    {"notinvb", 0x22f7, 0, 0},
    {"notinvc", 0x22f6, 0, 0},
    {"notni", 0x220c, 0, 0},
    {"notniva", 0x220c, 0, 0},
    {"notnivb", 0x22fe, 0, 0},
    {"notnivc", 0x22fd, 0, 0},
    {"parallel", 0x2225, 0, 0},
    {"timesb", 0x22a0, 0, 0},
    {"timesbar", 0x2a31, 0, 0},
    {"timesd", 0x2a30, 0, 0},
};

static int tok_name_is(const char *name, const uint32_t *s, size_t n)
{
    size_t k = 0;
    while (k < n && name[k] && (uint32_t)(uint8_t)name[k] == s[k])
        k++;
    return k == n && !name[k];
}

/* The entity named exactly s[0..n) (code points): 1 and *e filled, or 0. */
static int tok_entity_find(const uint32_t *s, size_t n, tok_entity *e)
{
    if (n == 0)
        return 0;
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < tok_entity_runs[r].count; i++)
            if (tok_name_is(tok_entity_runs[r].names[i], s, n)) {
                *e = (tok_entity){tok_entity_runs[r].names[i],
                                  tok_entity_runs[r].first + (uint32_t)i, 0,
                                  tok_entity_runs[r].legacy};
                return 1;
            }
    for (size_t i = 0; i < sizeof tok_entities / sizeof tok_entities[0]; i++)
        if (tok_name_is(tok_entities[i].name, s, n)) {
            *e = tok_entities[i];
            return 1;
        }
    return 0;
}

/* Python's rules for a numeric reference: windows-1252 for 0x80-0x9f, U+FFFD
 * for 0, surrogates and beyond U+10FFFF, nothing for other controls and
 * noncharacters. Writes 0 or 1 code point; returns how many. */
static size_t tok_numeric_ref(uint64_t v, uint32_t *out)
{
    static const uint16_t cp1252[32] = {
        0x20ac, 0x81,   0x201a, 0x192,  0x201e, 0x2026, 0x2020, 0x2021, 0x2c6,  0x2030, 0x160,
        0x2039, 0x152,  0x8d,   0x17d,  0x8f,   0x90,   0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
        0x2013, 0x2014, 0x2dc,  0x2122, 0x161,  0x203a, 0x153,  0x9d,   0x17e,  0x178};
    if (v == 0 || (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff) {
        *out = 0xfffd;
        return 1;
    }
    if (v >= 0x80 && v <= 0x9f) {
        *out = cp1252[v - 0x80];
        return 1;
    }
    if (v == 0x0d) {
        *out = 0x0d;
        return 1;
    }
    if ((v >= 0x1 && v <= 0x8) || v == 0xb || (v >= 0xe && v <= 0x1f) || v == 0x7f ||
        (v >= 0xfdd0 && v <= 0xfdef) || (v & 0xfffe) == 0xfffe)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int tok_name_char(uint32_t c)
{
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
           c != ';';
}

static int tok_hexval(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* A character reference at s (just after '&'): returns the code points of s
 * it consumes (0: none, the '&' stays) and writes its replacement to out
 * (*nout code points, at most 2, never more than were consumed). */
static size_t tok_charref(const uint32_t *s, size_t n, uint32_t *out, size_t *nout)
{
    *nout = 0;
    if (n == 0)
        return 0;
    if (s[0] == '#') {
        size_t k = 1;
        int base = 10;
        if (n > 2 && (s[1] == 'x' || s[1] == 'X') && tok_hexval(s[2]) >= 0)
            base = 16, k = 2;
        else if (!(n > 1 && s[1] >= '0' && s[1] <= '9'))
            return 0;
        uint64_t v = 0;
        for (; k < n; k++) {
            int d = tok_hexval(s[k]);
            if (d < 0 || d >= base)
                break;
            v = v * (uint64_t)base + (uint64_t)d;
            if (v > 0x10ffff)
                v = 0x110000; /* stays beyond Unicode whatever follows */
        }
        if (k < n && s[k] == ';')
            k++;
        *nout = tok_numeric_ref(v, out);
        return k;
    }
    size_t k = 0;
    while (k < n && k < 32 && tok_name_char(s[k]))
        k++;
    if (k == 0)
        return 0;
    int semi = k < n && s[k] == ';';
    tok_entity e;
    if (tok_entity_find(s, k, &e) && (semi || e.legacy)) {
        out[0] = e.cp;
        out[1] = e.cp2;
        *nout = e.cp2 ? 2 : 1;
        return k + (size_t)semi;
    }
    /* Python's fallback: the longest legacy name that is a prefix, keeping the rest. */
    for (size_t x = k + (size_t)semi - 1; x >= 2; x--) {
        if (tok_entity_find(s, x, &e) && e.legacy) {
            out[0] = e.cp;
            *nout = 1;
            return x;
        }
    }
    return 0;
}

/* One html.unescape pass; out holds at least n code points (never grows). */
static size_t tok_unescape(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] == '&') {
            size_t nout;
            size_t used = tok_charref(in + i + 1, n - i - 1, out + o, &nout);
            if (used > 0) {
                o += nout;
                i += 1 + used;
                continue;
            }
        }
        out[o++] = in[i++];
    }
    return o;
}

/* ---- whitespace, lower-casing ------------------------------------------- */

/* regex's \s: Unicode White_Space. */
static int tok_is_ws(uint32_t c)
{
    return (c >= 0x9 && c <= 0xd) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* Python's str.isspace (what strip() removes): White_Space plus U+001C..U+001F. */
static int tok_is_pyspace(uint32_t c)
{
    return tok_is_ws(c) || (c >= 0x1c && c <= 0x1f);
}

/* strip; collapse runs of \s to ' '; strip. out may equal in (it never runs ahead). */
static size_t tok_clean(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t b = 0, e = n, o = 0;
    while (b < e && tok_is_pyspace(in[b]))
        b++;
    while (e > b && tok_is_pyspace(in[e - 1]))
        e--;
    int in_run = 0;
    for (size_t i = b; i < e; i++) {
        uint32_t c = in[i];
        if (!tok_is_ws(c)) {
            out[o++] = c;
            in_run = 0;
        } else if (!in_run) {
            out[o++] = ' ';
            in_run = 1;
        }
    }
    b = 0;
    while (b < o && tok_is_pyspace(out[b]))
        b++;
    while (o > b && tok_is_pyspace(out[o - 1]))
        o--;
    if (b > 0)
        memmove(out, out + b, (o - b) * sizeof *out);
    return o - b;
}

static int tok_cased(uint32_t c)
{
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
           cat == UTF8PROC_CATEGORY_LT || utf8proc_islower((utf8proc_int32_t)c) ||
           utf8proc_isupper((utf8proc_int32_t)c);
}

static int tok_case_ignorable(uint32_t c)
{
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    /* Word_Break MidLetter, MidNumLet, Single_Quote */
    static const uint32_t mid[] = {0x27,   0x2e,   0x3a,   0xb7,   0x387,  0x55f,
                                   0x5f4,  0x2018, 0x2019, 0x2024, 0x2027, 0xfe13,
                                   0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a};
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (mid[i] == c)
            return 1;
    return 0;
}

/* Python's Final_Sigma test for s[i] == U+03A3, on the text before lowering. */
static int tok_final_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && tok_case_ignorable(s[j - 1]))
        j--;
    if (j == 0 || !tok_cased(s[j - 1]))
        return 0;
    for (j = i + 1; j < n && tok_case_ignorable(s[j]); j++)
        ;
    return j == n || !tok_cased(s[j]);
}

/* str.lower(); out holds 2n code points. */
static size_t tok_lower(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0x130) {
            out[o++] = 'i';
            out[o++] = 0x307;
        } else if (in[i] == 0x3a3) {
            out[o++] = tok_final_sigma(in, n, i) ? 0x3c2 : 0x3c3;
        } else {
            out[o++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)in[i]);
        }
    }
    return o;
}

/* ---- pre-token regex ---------------------------------------------------- */

static int tok_cat_letter(utf8proc_int32_t c)
{
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int tok_cat_number(utf8proc_int32_t c)
{
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

static int tok_is_letter(uint32_t c)
{
    if (c < 0x80)
        return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return tok_cat_letter((utf8proc_int32_t)c);
}

static int tok_is_number(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    return tok_cat_number((utf8proc_int32_t)c);
}

/* [^\s\p{L}\p{N}] under IGNORECASE: the set matches when any case variant
 * of c is a member, so c is excluded when a variant is a letter or number.
 * ([\p{L}] and [\p{N}] alone are compiled to a plain property test, which
 * looks at c only; a character such as U+0345, whose uppercase U+0399 is a
 * letter, matches none of the alternatives and is dropped like a space.) */
static int tok_is_other(uint32_t c)
{
    if (c < 0x80)
        return !tok_is_ws(c) && !tok_is_letter(c) && !tok_is_number(c);
    if (tok_is_ws(c))
        return 0;
    utf8proc_int32_t v[4] = {(utf8proc_int32_t)c, utf8proc_toupper((utf8proc_int32_t)c),
                             utf8proc_tolower((utf8proc_int32_t)c),
                             utf8proc_totitle((utf8proc_int32_t)c)};
    for (int i = 0; i < 4; i++)
        if (tok_cat_letter(v[i]) || tok_cat_number(v[i]))
            return 0;
    return 1;
}

/* A literal under IGNORECASE on already lower-cased text: only U+017F (long
 * s) folds onto one of the ASCII letters the literals use. */
static size_t tok_literal(const uint32_t *s, size_t n, const char *lit, int *exact)
{
    size_t k = 0;
    *exact = 1;
    for (; lit[k]; k++) {
        if (k >= n)
            return 0;
        if (s[k] == (uint8_t)lit[k])
            continue;
        if (lit[k] == 's' && s[k] == 0x17f) {
            *exact = 0;
            continue;
        }
        return 0;
    }
    return k;
}

/* Length of the regex match at s[0] (0: none, skip one character). *special:
 * 1 for an exact <|startoftext|>, 2 for an exact <|endoftext|>. */
static size_t tok_match(const uint32_t *s, size_t n, int *special)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t m;
    int exact;
    *special = 0;
    if (s[0] == '<') {
        if ((m = tok_literal(s, n, "<|startoftext|>", &exact)) > 0) {
            *special = exact ? 1 : 0;
            return m;
        }
        if ((m = tok_literal(s, n, "<|endoftext|>", &exact)) > 0) {
            *special = exact ? 2 : 0;
            return m;
        }
    } else if (s[0] == '\'') {
        for (int i = 0; i < 7; i++)
            if ((m = tok_literal(s, n, contractions[i], &exact)) > 0)
                return m;
    }
    if (tok_is_letter(s[0])) {
        for (m = 1; m < n && tok_is_letter(s[m]); m++)
            ;
        return m;
    }
    if (tok_is_number(s[0]))
        return 1;
    if (!tok_is_other(s[0]))
        return 0;
    for (m = 1; m < n && tok_is_other(s[m]); m++)
        ;
    return m;
}

/* ---- BPE ---------------------------------------------------------------- */

/* Scratch for one pre-token of up to cap bytes: a linked list of symbols
 * (nodes keep their byte position; a merge keeps the left node) and a
 * min-heap of candidate merges keyed rank << 32 | node. */
typedef struct tok_scratch {
    size_t cap;
    uint8_t *bytes;              /* cap */
    uint32_t *sym, *next, *prev; /* cap each; sym TOK_EMPTY: merged away */
    uint64_t *heap, *pending;    /* 3 cap, 2 cap */
    size_t nheap, npending;
} tok_scratch;

static void tok_heap_push(tok_scratch *sc, uint64_t v)
{
    size_t i = sc->nheap++;
    while (i > 0 && sc->heap[(i - 1) / 2] > v) {
        sc->heap[i] = sc->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    sc->heap[i] = v;
}

static uint64_t tok_heap_pop(tok_scratch *sc)
{
    uint64_t top = sc->heap[0], v = sc->heap[--sc->nheap];
    size_t i = 0, n = sc->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && sc->heap[c + 1] < sc->heap[c])
            c++;
        if (sc->heap[c] >= v)
            break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n > 0)
        sc->heap[i] = v;
    return top;
}

/* Queues the pair starting at node k (if it is a merge) for after this pass. */
static void tok_queue_pair(const px_sd_tokenizer *t, tok_scratch *sc, uint32_t k, int to_heap)
{
    if (k == TOK_EMPTY || sc->next[k] == TOK_EMPTY)
        return;
    const tok_pair *p = tok_pair_find(t, sc->sym[k], sc->sym[sc->next[k]]);
    if (!p)
        return;
    uint64_t v = (uint64_t)p->rank << 32 | k;
    if (to_heap)
        tok_heap_push(sc, v);
    else
        sc->pending[sc->npending++] = v;
}

/* BPE of sc->bytes[0..nb), appending ids. The reference repeatedly takes the
 * pair of lowest rank and merges all its occurrences left to right, then
 * rescans; rescanning is quadratic in the word (seconds for a 64 KiB word), so
 * this pops the same merges from a heap instead, in (rank, position) order.
 * Pairs created by a pass wait in `pending` until the pass is over, so even a
 * merge list whose new pairs have lower ranks gives the reference's result;
 * stale heap entries are recognised by looking the pair up again. */
static void tok_bpe(const px_sd_tokenizer *t, tok_scratch *sc, size_t nb, int32_t *ids,
                    size_t *nids)
{
    for (size_t k = 0; k < nb; k++) {
        sc->sym[k] = k + 1 < nb ? t->byte_sym[sc->bytes[k]] : t->byte_end_sym[sc->bytes[k]];
        sc->next[k] = k + 1 < nb ? (uint32_t)(k + 1) : TOK_EMPTY;
        sc->prev[k] = k > 0 ? (uint32_t)(k - 1) : TOK_EMPTY;
    }
    sc->nheap = sc->npending = 0;
    for (size_t k = 0; k + 1 < nb; k++)
        tok_queue_pair(t, sc, (uint32_t)k, 1);
    int64_t rank = -1; /* of the pass under way */
    for (;;) {
        if (sc->nheap > 0 && (int64_t)(sc->heap[0] >> 32) == rank) {
            uint32_t k = (uint32_t)tok_heap_pop(sc);
            uint32_t j = sc->sym[k] == TOK_EMPTY ? TOK_EMPTY : sc->next[k];
            if (j == TOK_EMPTY)
                continue;
            const tok_pair *p = tok_pair_find(t, sc->sym[k], sc->sym[j]);
            if (!p || p->rank != rank)
                continue; /* this pair changed since it was queued */
            sc->sym[k] = p->merged;
            sc->sym[j] = TOK_EMPTY;
            sc->next[k] = sc->next[j];
            if (sc->next[k] != TOK_EMPTY)
                sc->prev[sc->next[k]] = k;
            tok_queue_pair(t, sc, sc->prev[k], 0);
            tok_queue_pair(t, sc, k, 0);
            continue;
        }
        for (size_t i = 0; i < sc->npending; i++)
            tok_heap_push(sc, sc->pending[i]);
        sc->npending = 0;
        if (sc->nheap == 0)
            break;
        rank = (int64_t)(sc->heap[0] >> 32);
    }
    for (uint32_t k = 0; k != TOK_EMPTY; k = sc->next[k]) {
        int32_t id = t->syms[sc->sym[k]].id;
        ids[(*nids)++] = id >= 0 ? id : t->unk;
    }
}

/* Pre-tokenizes the cleaned, lower-cased text s and appends BPE ids. */
static void tok_encode(const px_sd_tokenizer *t, const uint32_t *s, size_t n, tok_scratch *sc,
                       int32_t *ids, size_t *nids)
{
    for (size_t i = 0; i < n;) {
        int special;
        size_t m = tok_match(s + i, n - i, &special);
        if (m == 0) {
            i++;
            continue;
        }
        if (special) {
            int32_t id = special == 1 ? t->sot_id : t->eot_id;
            ids[(*nids)++] = id >= 0 ? id : t->unk;
        } else {
            size_t nb = 0;
            for (size_t k = 0; k < m; k++)
                nb += (size_t)utf8proc_encode_char((utf8proc_int32_t)s[i + k], sc->bytes + nb);
            tok_bpe(t, sc, nb, ids, nids);
        }
        i += m;
    }
}

static int tok_scratch_init(tok_scratch *sc, size_t cap)
{
    memset(sc, 0, sizeof *sc);
    sc->cap = cap;
    sc->bytes = px_malloc(cap);
    sc->sym = px_malloc(cap * sizeof *sc->sym);
    sc->next = px_malloc(cap * sizeof *sc->next);
    sc->prev = px_malloc(cap * sizeof *sc->prev);
    sc->heap = px_malloc(3 * cap * sizeof *sc->heap);
    sc->pending = px_malloc(2 * cap * sizeof *sc->pending);
    return sc->bytes && sc->sym && sc->next && sc->prev && sc->heap && sc->pending ? PX_OK
                                                                                   : PX_ENOMEM;
}

static void tok_scratch_free(tok_scratch *sc)
{
    free(sc->bytes);
    free(sc->sym);
    free(sc->next);
    free(sc->prev);
    free(sc->heap);
    free(sc->pending);
}

/* Text -> cleaned, lower-cased code points in *out (malloc'd, *n of them). */
static int tok_normalize(const char *text, size_t len, uint32_t **out, size_t *n, px_err *err)
{
    /* lower-casing at most doubles the code points (U+0130 -> i U+0307) */
    uint32_t *a = px_malloc((2 * len + 1) * sizeof *a);
    uint32_t *b = px_malloc((2 * len + 1) * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return px_err_set(err, PX_ENOMEM, "tokenizer: no memory for a %zu-byte prompt", len);
    }
    size_t na = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t r =
            utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
        if (r <= 0) {
            free(a);
            free(b);
            return px_err_set(err, PX_EINVAL,
                              "tokenizer: prompt is not valid UTF-8 at byte offset %zu", i);
        }
        a[na++] = (uint32_t)c;
        i += (size_t)r;
    }
    size_t nb = tok_unescape(a, na, b);
    na = tok_unescape(b, nb, a);
    na = tok_clean(a, na, a);
    *n = tok_lower(a, na, b);
    free(a);
    *out = b;
    return PX_OK;
}

int px_sd_tokenize(const px_sd_tokenizer *t, const char *text, int32_t **ids, size_t *n,
                   px_err *err)
{
    if (!t || !text || !ids || !n)
        return px_err_set(err, PX_EINVAL, "tokenizer: NULL argument");
    *ids = NULL;
    *n = 0;
    size_t len = strnlen(text, TOK_MAX_TEXT + 1);
    if (len > TOK_MAX_TEXT)
        return px_err_set(err, PX_ELIMIT, "tokenizer: prompt is longer than %d bytes",
                          TOK_MAX_TEXT);
    uint32_t *s = NULL;
    size_t ns = 0;
    int rc = tok_normalize(text, len, &s, &ns, err);
    if (rc)
        return rc;
    /* every id covers at least one byte of the UTF-8 text */
    size_t nbytes = 0;
    for (size_t i = 0; i < ns; i++)
        nbytes += s[i] < 0x80 ? 1 : s[i] < 0x800 ? 2 : s[i] < 0x10000 ? 3 : 4;
    tok_scratch sc;
    int32_t *out = px_malloc((nbytes + 2) * sizeof *out);
    if (tok_scratch_init(&sc, nbytes + 1) || !out) {
        rc = px_err_set(err, PX_ENOMEM, "tokenizer: no memory for a %zu-byte prompt", len);
    } else {
        size_t nids = 0;
        out[nids++] = t->bos;
        tok_encode(t, s, ns, &sc, out, &nids);
        out[nids++] = t->eos;
        *ids = out;
        *n = nids;
        out = NULL;
    }
    tok_scratch_free(&sc);
    free(out);
    free(s);
    return rc;
}

/*
 * CLIP tokenizer against the reference ids.
 *
 * golden/sd/clip_tokenizer/cases.jsonl holds 150 prompts with the ids of
 * openai/CLIP's simple_tokenizer (BOS ... EOS, neither truncated nor padded);
 * every one must match exactly, and cases_sd77.jsonl must match after the
 * pipeline's truncation (keeping EOS) and padding with 49407 to 77. The tiny
 * transformers tokenizer folder of the golden model must give the golden
 * prompt/negative ids (padded with its EOS 526 to 77, see index.json), and a
 * made-up folder checks BPE on a merge list out of learning order. The
 * pipeline details (html entities, whitespace, lower-casing, the pre-token
 * regex) are checked as equalities between tokenizations, which hold for the
 * reference too; invalid UTF-8 and oversize prompts must be refused, and
 * random bytes must never crash it.
 */
/* cmocka needs these first */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diffusion/sd_internal.h"

#define VOCAB PX_MODEL_DIR "/bpe_simple_vocab_16e6.txt.gz"
#define GOLDEN PX_SHARED_DIR "/golden/sd"
#define CTX 77

static px_sd_tokenizer *clip_tok(void)
{
    static px_sd_tokenizer *t;
    if (!t) {
        px_err err = {{0}};
        int rc = px_sd_tokenizer_load(VOCAB, &t, &err);
        if (rc)
            print_error("load %s: %s\n", VOCAB, err.msg);
        assert_int_equal(rc, PX_OK);
    }
    return t;
}

/* ids as the SD pipeline feeds them: at most 77, the last kept as EOS, padded. */
static void to_ctx(const int32_t *ids, size_t n, int32_t eos, int32_t pad, int32_t out[CTX],
                   int *truncated)
{
    *truncated = n > CTX;
    size_t k = n > CTX ? CTX - 1 : n;
    memcpy(out, ids, k * sizeof *ids);
    if (n > CTX)
        out[k++] = eos;
    for (; k < CTX; k++)
        out[k] = pad;
}

static size_t json_ids(const json_t *arr, int32_t *out, size_t cap)
{
    size_t n = json_array_size(arr);
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    print_message("  %s (%zu):", label, n);
    for (size_t i = 0; i < n; i++)
        print_message(" %d", ids[i]);
    print_message("\n");
}

/* Runs fn on every line of a .jsonl file; returns the number of lines. */
static size_t each_case(const char *path, void (*fn)(const json_t *, size_t *), size_t *bad)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char line[1 << 16];
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        assert_non_null(j);
        fn(j, bad);
        json_decref(j);
        n++;
    }
    fclose(f);
    return n;
}

static void check_case(const json_t *j, size_t *bad)
{
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    int32_t want[512];
    size_t nwant = json_ids(json_object_get(j, "ids"), want, 512);
    int32_t *got = NULL;
    size_t ngot = 0;
    px_err err = {{0}};
    assert_int_equal(px_sd_tokenize(clip_tok(), prompt, &got, &ngot, &err), PX_OK);
    if (ngot != nwant || memcmp(got, want, nwant * sizeof *got) != 0) {
        if (*bad == 0) {
            print_message("first mismatch: \"%s\"\n", prompt);
            print_ids("want", want, nwant);
            print_ids("got ", got, ngot);
        }
        (*bad)++;
    }
    free(got);
}

static void test_reference_cases(void **state)
{
    (void)state;
    size_t bad = 0;
    size_t n = each_case(GOLDEN "/clip_tokenizer/cases.jsonl", check_case, &bad);
    print_message("cases.jsonl: %zu/%zu prompts give exactly the reference ids\n", n - bad, n);
    assert_true(n >= 150);
    assert_int_equal(bad, 0);
}

static void check_case77(const json_t *j, size_t *bad)
{
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    int32_t want[CTX], ctx[CTX];
    assert_int_equal(json_ids(json_object_get(j, "ids77"), want, CTX), CTX);
    int32_t *got = NULL;
    size_t ngot = 0;
    px_err err = {{0}};
    assert_int_equal(px_sd_tokenize(clip_tok(), prompt, &got, &ngot, &err), PX_OK);
    int truncated;
    to_ctx(got, ngot, px_sd_tokenizer_eos(clip_tok()), 49407, ctx, &truncated);
    if (memcmp(ctx, want, sizeof ctx) != 0 ||
        truncated != json_is_true(json_object_get(j, "truncated"))) {
        if (*bad == 0)
            print_message("first sd77 mismatch: \"%s\"\n", prompt);
        (*bad)++;
    }
    bad[1] += (size_t)truncated;
    free(got);
}

static void test_reference_cases_77(void **state)
{
    (void)state;
    size_t bad[2] = {0, 0}; /* mismatches, truncated prompts */
    size_t n = each_case(GOLDEN "/clip_tokenizer/cases_sd77.jsonl", check_case77, bad);
    print_message("cases_sd77.jsonl: %zu/%zu match after truncation/padding (%zu truncated)\n",
                  n - bad[0], n, bad[1]);
    assert_int_equal(bad[0], 0);
    assert_true(bad[1] > 0); /* the set has prompts over 77 ids: truncation is exercised */
}

static void read_i64(const char *path, int32_t out[CTX])
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    for (int i = 0; i < CTX; i++) {
        uint8_t b[8];
        assert_int_equal(fread(b, 1, 8, f), 8);
        int64_t v = 0;
        for (int k = 7; k >= 0; k--)
            v = (v << 8) | b[k];
        out[i] = (int32_t)v;
    }
    fclose(f);
}

static void test_hf_folder(void **state)
{
    (void)state;
    px_sd_tokenizer *t = NULL;
    px_err err = {{0}};
    int rc = px_sd_tokenizer_load(GOLDEN "/tokenizer", &t, &err);
    if (rc)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, PX_OK);
    assert_int_equal(px_sd_tokenizer_bos(t), 525);
    assert_int_equal(px_sd_tokenizer_eos(t), 526);
    static const char *const prompts[2] = {"a photo of the cat and a dog", ""};
    static const char *const files[2] = {GOLDEN "/tok.prompt_ids.i64",
                                         GOLDEN "/tok.negative_ids.i64"};
    for (int p = 0; p < 2; p++) {
        int32_t want[CTX], ctx[CTX], *ids = NULL;
        size_t n = 0;
        int truncated;
        read_i64(files[p], want);
        assert_int_equal(px_sd_tokenize(t, prompts[p], &ids, &n, &err), PX_OK);
        /* index.json: padded with the pad token (= EOS, 526) to 77 */
        to_ctx(ids, n, px_sd_tokenizer_eos(t), px_sd_tokenizer_eos(t), ctx, &truncated);
        assert_memory_equal(ctx, want, sizeof want);
        free(ids);
    }
    px_sd_tokenizer_destroy(t);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A made-up folder whose merge list is not in learning order: the pair made by
 * rank 1 ("b c") has rank 0 ("bc b"). The reference finishes the rank-1 pass
 * before it looks again, so "bcbcd" is bc bc d, not bcb c d. Tokens missing
 * from the vocabulary become the unknown token (EOS here). */
static void test_merge_order(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_tok_XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_text(dir, "vocab.json",
               "{\"b\": 0, \"c\": 1, \"d</w>\": 2, \"bc\": 3, \"bcb\": 4, \"c</w>\": 5,"
               " \"<|startoftext|>\": 6, \"<|endoftext|>\": 7}");
    write_text(dir, "merges.txt", "#version: 0.2\nbc b\nb c\n");
    px_sd_tokenizer *t = NULL;
    px_err err = {{0}};
    int rc = px_sd_tokenizer_load(dir, &t, &err);
    if (rc)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, PX_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(px_sd_tokenize(t, "BCBCD bcbc z", &ids, &n, &err), PX_OK);
    static const int32_t want[] = {6, 3, 3, 2, 4, 5, 7, 7};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    px_sd_tokenizer_destroy(t);
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    remove(path);
    rmdir(dir);
}

/* Tokenizes, asserting success; caller frees. */
static int32_t *tok(const char *text, size_t *n)
{
    int32_t *ids = NULL;
    px_err err = {{0}};
    int rc = px_sd_tokenize(clip_tok(), text, &ids, n, &err);
    if (rc)
        print_error("\"%s\": %s\n", text, err.msg);
    assert_int_equal(rc, PX_OK);
    return ids;
}

static void assert_same(const char *a, const char *b)
{
    size_t na, nb;
    int32_t *ia = tok(a, &na), *ib = tok(b, &nb);
    if (na != nb || memcmp(ia, ib, na * sizeof *ia) != 0) {
        print_message("\"%s\" vs \"%s\"\n", a, b);
        print_ids("a", ia, na);
        print_ids("b", ib, nb);
        fail();
    }
    free(ia);
    free(ib);
}

static void assert_differ(const char *a, const char *b)
{
    size_t na, nb;
    int32_t *ia = tok(a, &na), *ib = tok(b, &nb);
    assert_false(na == nb && memcmp(ia, ib, na * sizeof *ia) == 0);
    free(ia);
    free(ib);
}

/* ids of text without BOS/EOS, appended to out. */
static size_t inner(const char *text, int32_t *out)
{
    size_t n;
    int32_t *ids = tok(text, &n);
    memcpy(out, ids + 1, (n - 2) * sizeof *ids);
    free(ids);
    return n - 2;
}

/* text pre-tokenizes into exactly the pieces listed (NULL-terminated). */
static void assert_pieces(const char *text, const char *const *pieces)
{
    int32_t want[256], got[256];
    size_t nw = 0;
    for (int i = 0; pieces[i]; i++)
        nw += inner(pieces[i], want + nw);
    size_t ng = inner(text, got);
    if (ng != nw || memcmp(got, want, nw * sizeof *got) != 0) {
        print_message("pieces of \"%s\" differ\n", text);
        print_ids("want", want, nw);
        print_ids("got ", got, ng);
        fail();
    }
}

static void test_empty_and_specials(void **state)
{
    (void)state;
    size_t n;
    int32_t *ids = tok("", &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 49406);
    assert_int_equal(ids[1], 49407);
    free(ids);
    ids = tok(" \t\n\r  ", &n);
    assert_int_equal(n, 2);
    free(ids);
    assert_int_equal(px_sd_tokenizer_bos(clip_tok()), 49406);
    assert_int_equal(px_sd_tokenizer_eos(clip_tok()), 49407);
    /* the reference's regex and cache turn the literal specials into their ids */
    ids = tok("a <|endoftext|> b<|startoftext|>", &n);
    assert_int_equal(n, 6);
    assert_int_equal(ids[2], 49407);
    assert_int_equal(ids[4], 49406);
    free(ids);
    /* "a" alone is one token: "a</w>" = 320 in CLIP's vocabulary */
    ids = tok("A", &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 320);
    free(ids);
}

static void test_pipeline(void **state)
{
    (void)state;
    /* html.unescape, applied twice */
    assert_same("salt &amp; pepper", "salt & pepper");
    assert_same("salt &amp;amp; pepper", "salt & pepper");
    assert_same("&lt;b&gt; &quot;x&quot; &#39;y&#39; &#x41;&#65;", "<b> \"x\" 'y' aa");
    assert_same("caf&eacute; &eacute", "café é");
    assert_same("&ampx &notit; &hellip; &hellipx", "&x ¬it; … &hellipx");
    assert_same("&#0; &#xD800; &#x110000; &#150;",
                "\xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd \xe2\x80\x93");
    assert_same("a&#1;b &#; &#x; &", "ab &#; &#x; &");
    /* whitespace: every Unicode White_Space run is one space; ends stripped */
    assert_same("  red \t\n car\xc2\xa0\xe3\x80\x80 blue  ", "red car blue");
    /* full lower-casing, including Python's special cases */
    assert_same("CAFÉ ÀÉÎÕÜ ΑΒΓ", "café àéîõü αβγ");
    assert_same("\xc4\xb0stanbul", "i\xcc\x87stanbul");
    assert_same("ΟΔΟΣ ΣΑ", "οδος σα");
    assert_differ("ΟΔΟΣ", "οδοσ");
    /* the pre-token regex */
    static const char *const p1[] = {"it", "'s", NULL};
    assert_pieces("it's", p1);
    static const char *const p2[] = {"we", "'ll", "go", NULL};
    assert_pieces("we'll go", p2);
    static const char *const p3[] = {"1", "2", "3", "mm", NULL};
    assert_pieces("123mm", p3);
    static const char *const p4[] = {"hello", ",!?", "world", NULL};
    assert_pieces("hello,!?world", p4);
    static const char *const p5[] = {"cafe", "\xcc\x81", NULL}; /* combining acute: not a letter */
    assert_pieces("cafe\xcc\x81", p5);
    static const char *const p6[] = {"日本語", "٣", "٤", NULL}; /* letters run; N one at a time */
    assert_pieces("日本語٣٤", p6);
    static const char *const p7[] = {"'", "sun", NULL};
    assert_differ("'sun", "' sun");
    assert_pieces("' sun", p7);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t offset;
    } bad[] = {
        {"\xff", 0},           {"abc\xc3", 3},           {"ok \xc0\xaf", 3},
        {"x\xed\xa0\x80y", 1}, {"\xf4\x90\x80\x80", 0},  {"ab\x80", 2},
        {"\xe2\x82", 0},       {"caf\xc3\xa9 \xc3(", 6},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = (int32_t *)&ids;
        size_t n = 99;
        px_err err = {{0}};
        assert_int_equal(px_sd_tokenize(clip_tok(), bad[i].text, &ids, &n, &err), PX_EINVAL);
        assert_null(ids);
        assert_int_equal(n, 0);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        if (!strstr(err.msg, want))
            print_error("case %zu: \"%s\" lacks \"%s\"\n", i, err.msg, want);
        assert_non_null(strstr(err.msg, want));
    }
}

static void test_limit(void **state)
{
    (void)state;
    size_t big = 65536;
    char *text = malloc(big + 2);
    assert_non_null(text);
    for (size_t i = 0; i < big; i++)
        text[i] = i % 2 ? ' ' : 'a';
    text[big] = '\0';
    size_t n;
    int32_t *ids = tok(text, &n);
    assert_int_equal(n, big / 2 + 2);
    free(ids);
    text[big] = 'a';
    text[big + 1] = '\0';
    px_err err = {{0}};
    assert_int_equal(px_sd_tokenize(clip_tok(), text, &ids, &n, &err), PX_ELIMIT);
    assert_null(ids);
    free(text);
}

/* Random strings built from pieces that stress the pipeline (entities,
 * apostrophes, specials, combining marks, case specials, emoji) with a random
 * raw byte now and then: valid ones tokenize to BOS ... EOS with ids in range,
 * invalid ones are refused; nothing crashes (the sanitizer build checks memory). */
static void test_fuzz(void **state)
{
    (void)state;
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "0",
                                         " ",
                                         "  ",
                                         "&",
                                         "#",
                                         ";",
                                         "'",
                                         "x",
                                         "s",
                                         "<|",
                                         "|>",
                                         "\t",
                                         "\n",
                                         "é",
                                         "Σ",
                                         "\xcc\x81",
                                         "€",
                                         "\xf0\x9f\x99\x82",
                                         "İ",
                                         "&amp;",
                                         "&#",
                                         "&#x",
                                         "ſ",
                                         "startoftext",
                                         "endoftext",
                                         "'ll",
                                         "日本",
                                         "٣",
                                         ",.!",
                                         "\xc2\xa0",
                                         "\xe2\x80\x83",
                                         "\x1c",
                                         "&eacute",
                                         "&amp",
                                         "9",
                                         "ͅ",
                                         "ΑΣ",
                                         "-"};
    const size_t npieces = sizeof pieces / sizeof pieces[0];
    uint32_t seed = 12345;
    size_t valid = 0, runs = 3000;
    for (size_t iter = 0; iter < runs; iter++) {
        char buf[512];
        size_t len = 0;
        seed = seed * 1664525u + 1013904223u;
        size_t count = (seed >> 8) % 40;
        for (size_t i = 0; i < count; i++) {
            seed = seed * 1664525u + 1013904223u;
            uint32_t r = seed >> 8;
            if (r % 24 == 0) {
                buf[len] = (char)(uint8_t)(r >> 8);
                len += buf[len] != '\0';
            } else {
                const char *p = pieces[(r >> 5) % npieces];
                memcpy(buf + len, p, strlen(p));
                len += strlen(p);
            }
        }
        buf[len] = '\0';
        int32_t *ids = NULL;
        size_t n = 0;
        px_err err = {{0}};
        int rc = px_sd_tokenize(clip_tok(), buf, &ids, &n, &err);
        assert_true(rc == PX_OK || rc == PX_EINVAL);
        if (rc == PX_OK) {
            valid++;
            assert_true(n >= 2);
            assert_int_equal(ids[0], 49406);
            assert_int_equal(ids[n - 1], 49407);
            for (size_t i = 0; i < n; i++)
                assert_true(ids[i] >= 0 && ids[i] < 49408);
        } else {
            assert_null(ids);
            assert_non_null(strstr(err.msg, "byte offset"));
        }
        free(ids);
    }
    print_message("fuzz: %zu random strings, %zu valid UTF-8, the rest refused\n", runs, valid);
    assert_true(valid > runs / 4 && valid < runs);
}

/* Many threads on one tokenizer give the same ids as one thread (the
 * contract says thread-safe; the TSan build checks for races). */
typedef struct thread_job {
    const char *text;
    int32_t want[64];
    size_t nwant;
    int ok;
} thread_job;

static void *tokenize_many(void *arg)
{
    thread_job *jobs = arg;
    int ok = 1;
    for (int round = 0; round < 200; round++) {
        thread_job *j = &jobs[round % 4];
        int32_t *ids = NULL;
        size_t n = 0;
        px_err err;
        if (px_sd_tokenize(clip_tok(), j->text, &ids, &n, &err) != PX_OK || n != j->nwant ||
            memcmp(ids, j->want, n * sizeof *ids) != 0)
            ok = 0;
        free(ids);
    }
    jobs[0].ok = ok; /* each thread has its own copy of the jobs */
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    static const char *const texts[4] = {"a portrait of an old fisherman, golden hour",
                                         "Café &amp; crème brûlée",
                                         "1990s film photo; kodak portra 400", "ΟΔΟΣ it's 3am"};
    thread_job jobs[4][4];
    for (int k = 0; k < 4; k++) {
        thread_job *j = &jobs[0][k];
        j->text = texts[k];
        int32_t *ids = tok(texts[k], &j->nwant);
        assert_true(j->nwant <= 64);
        memcpy(j->want, ids, j->nwant * sizeof *ids);
        free(ids);
    }
    jobs[0][0].ok = 1;
    for (int t = 1; t < 4; t++)
        memcpy(jobs[t], jobs[0], sizeof jobs[0]);
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, tokenize_many, jobs[t]), 0);
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(jobs[t][0].ok, 1);
    }
}

/* The openai format with a short merge list: ids are bytes, bytes + "</w>",
 * merges, then the specials, and a final newline is not a merge. */
static void test_small_openai_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_tok_XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_text(dir, "vocab.txt", "#version: 0.2\nh i\n");
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    px_sd_tokenizer *t = NULL;
    px_err err = {{0}};
    assert_int_equal(px_sd_tokenizer_load(path, &t, &err), PX_OK);
    assert_int_equal(px_sd_tokenizer_bos(t), 513);
    assert_int_equal(px_sd_tokenizer_eos(t), 514);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(px_sd_tokenize(t, "hix hi", &ids, &n, &err), PX_OK);
    /* 'h' is byte id 'h' - '!' = 71; "hi" is merge 0 = 512; "x</w>" 256 + 87; "i</w>" 256 + 72 */
    static const int32_t want[] = {513, 512, 343, 71, 328, 514};
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    px_sd_tokenizer_destroy(t);
    remove(path);
    rmdir(dir);
}

static void test_load_errors(void **state)
{
    (void)state;
    px_sd_tokenizer *t = (px_sd_tokenizer *)&t;
    px_err err = {{0}};
    assert_int_equal(px_sd_tokenizer_load(PX_MODEL_DIR "/no_such_vocab.txt.gz", &t, &err),
                     PX_ENOTFOUND);
    assert_null(t);
    assert_non_null(strstr(err.msg, "no_such_vocab"));
    /* a folder without vocab.json */
    assert_int_equal(px_sd_tokenizer_load(GOLDEN "/clip_tokenizer", &t, &err), PX_ENOTFOUND);
    /* a file whose merge lines are not pairs */
    assert_int_not_equal(px_sd_tokenizer_load(GOLDEN "/clip_tokenizer/LICENSE", &t, &err), PX_OK);
    assert_null(t);
    px_sd_tokenizer_destroy(NULL);
}

static int teardown(void **state)
{
    (void)state;
    px_sd_tokenizer_destroy(clip_tok());
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_reference_cases_77),
        cmocka_unit_test(test_hf_folder),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_empty_and_specials),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_small_openai_file),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}

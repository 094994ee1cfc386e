/*
 * px_nn_ops basics: the scratch arena, weight dtypes and their conversion to
 * float32, the ISA choice and the FLOP counter.
 *
 * Arena: an ordered list of chunks and a bump position. A position ("mark")
 * is a logical offset: the sizes of all earlier chunks plus the offset inside
 * the current one, so marks compare and release like a stack. When a block
 * does not fit in the current chunk we move to the next one; chunks beyond
 * the position are all free (stack discipline), so a next chunk too small for
 * the request is replaced by a bigger one. After one run at given shapes the
 * chunk list holds the peak and later runs allocate nothing.
 *
 * px_nn_ops_for hands the tasks of a GEMM layer to the pool's threads one at
 * a time (see ops_internal.h).
 *
 * f16 -> f32 is done by bit manipulation in the portable path (subnormals are
 * renormalised, inf/nan keep their payload) and with vcvtph2ps where the CPU
 * has F16C/AVX-512; bf16 is the top half of an f32, so a shift.
 */
#include "kernels_internal.h"
#include "ops_internal.h"
#include "px_nn.h"

#include <stdatomic.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define ARENA_MAX_CHUNKS 64

typedef struct arena_chunk {
    unsigned char *base;
    size_t size;  /* bytes */
    size_t start; /* logical offset of base: sum of the sizes of earlier chunks */
} arena_chunk;

struct px_nn_arena {
    arena_chunk chunks[ARENA_MAX_CHUNKS];
    int nchunks;
    int cur;    /* chunk holding the position */
    size_t off; /* offset inside chunks[cur] */
    size_t min_chunk;
    size_t peak;
    size_t reserved;
};

int px_nn_arena_create(size_t chunk_bytes, px_nn_arena **out)
{
    *out = NULL;
    px_nn_arena *a = px_calloc(1, sizeof *a);
    if (!a)
        return PX_ENOMEM;
    a->min_chunk = chunk_bytes ? chunk_bytes : (size_t)64 << 20;
    *out = a;
    return PX_OK;
}

void px_nn_arena_destroy(px_nn_arena *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->nchunks; i++)
        px_aligned_free(a->chunks[i].base);
    free(a);
}

static size_t arena_pos(const px_nn_arena *a)
{
    return a->nchunks ? a->chunks[a->cur].start + a->off : 0;
}

/* Puts a chunk of at least need bytes at index i (i <= nchunks), replacing
 * the free chunk there, if any, that was too small; the chunks after it are
 * free too and keep their sizes, only their logical starts move. Keeping
 * them (rather than dropping every chunk past i) matters when calls
 * alternate between shapes: each keeps finding the chunks it grew. */
static int arena_grow(px_nn_arena *a, int i, size_t need)
{
    if (i >= ARENA_MAX_CHUNKS)
        return PX_ENOMEM;
    size_t size = need > a->min_chunk ? need : a->min_chunk;
    size = (size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    unsigned char *p = px_aligned_alloc(size);
    if (!p)
        return PX_ENOMEM;
    if (i < a->nchunks) {
        a->reserved -= a->chunks[i].size;
        px_aligned_free(a->chunks[i].base);
    } else {
        a->nchunks = i + 1;
    }
    a->chunks[i].base = p;
    a->chunks[i].size = size;
    a->reserved += size;
    for (int j = i; j < a->nchunks; j++)
        a->chunks[j].start = j ? a->chunks[j - 1].start + a->chunks[j - 1].size : 0;
    return PX_OK;
}

void *px_nn_arena_alloc(px_nn_arena *a, size_t bytes)
{
    if (bytes > SIZE_MAX - 2 * ARENA_ALIGN)
        return NULL;
    /* Round up (0 -> 64) so every block is aligned and distinct. */
    size_t need = (bytes + ARENA_ALIGN) / ARENA_ALIGN * ARENA_ALIGN;
    if (a->nchunks == 0) {
        if (arena_grow(a, 0, need))
            return NULL;
        a->cur = 0;
        a->off = 0;
    }
    if (a->chunks[a->cur].size - a->off < need) {
        int next = a->cur + 1;
        if (next >= a->nchunks || a->chunks[next].size < need) {
            if (arena_grow(a, next, need))
                return NULL;
        }
        a->cur = next;
        a->off = 0;
    }
    void *p = a->chunks[a->cur].base + a->off;
    a->off += need;
    size_t pos = arena_pos(a);
    if (pos > a->peak)
        a->peak = pos;
    return p;
}

float *px_nn_arena_floats(px_nn_arena *a, size_t n)
{
    size_t bytes;
    if (px_mul_size(n, sizeof(float), &bytes))
        return NULL;
    return px_nn_arena_alloc(a, bytes);
}

size_t px_nn_arena_mark(const px_nn_arena *a)
{
    return arena_pos(a);
}

void px_nn_arena_release(px_nn_arena *a, size_t mark)
{
    if (a->nchunks == 0)
        return;
    /* The last chunk whose start is <= mark holds it (a mark at a chunk's
     * very end equals the next chunk's start: either reading is the same
     * free space). */
    int i = a->cur;
    while (i > 0 && a->chunks[i].start > mark)
        i--;
    size_t off = mark - a->chunks[i].start;
    if (off > a->chunks[i].size)
        off = a->chunks[i].size;
    a->cur = i;
    a->off = off;
}

size_t px_nn_arena_peak(const px_nn_arena *a)
{
    return a->peak;
}

size_t px_nn_arena_reserved(const px_nn_arena *a)
{
    return a->reserved;
}

/* ---- dtypes ---- */

size_t px_nn_dtype_size(px_nn_dtype t)
{
    return t == PX_NN_F32 ? 4 : 2;
}

const char *px_nn_dtype_name(px_nn_dtype t)
{
    switch (t) {
    case PX_NN_F32:
        return "f32";
    case PX_NN_F16:
        return "f16";
    case PX_NN_BF16:
        return "bf16";
    }
    return "?";
}

float px_nn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13); /* inf, or nan with its payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal: value = man * 2^-24; shift the leading 1 into place. */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void px_nn_f16_to_f32_generic(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = px_nn_f16_to_f32(h);
    }
}

void px_nn_bf16_to_f32_generic(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

void px_nn_to_f32(px_nn_dtype t, const void *src, float *dst, size_t n)
{
    int lvl = px_nn_ops_level();
    switch (t) {
    case PX_NN_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case PX_NN_F16:
        if (lvl == PX_OPS_AVX512)
            px_nn_f16_to_f32_avx512(src, dst, n);
        else if (lvl == PX_OPS_AVX2)
            px_nn_f16_to_f32_avx2(src, dst, n);
        else
            px_nn_f16_to_f32_generic(src, dst, n);
        return;
    case PX_NN_BF16:
        if (lvl == PX_OPS_AVX512)
            px_nn_bf16_to_f32_avx512(src, dst, n);
        else if (lvl == PX_OPS_AVX2)
            px_nn_bf16_to_f32_avx2(src, dst, n);
        else
            px_nn_bf16_to_f32_generic(src, dst, n);
        return;
    }
}

/* ---- machine ---- */

#if defined(__x86_64__) || defined(__i386__)
/* F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does
 * not know "f16c", and the OS-saves-YMM condition is already implied by avx2. */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static int cpu_level(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()))
        return PX_OPS_GENERIC;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return PX_OPS_AVX512;
    return PX_OPS_AVX2;
#else
    return PX_OPS_GENERIC;
#endif
}

static atomic_int g_cap = PX_OPS_AVX512;

void px_nn_ops_cap_level(int max_level)
{
    atomic_store(&g_cap, max_level);
}

int px_nn_ops_level(void)
{
    /* px_nn_use_avx2 folds in px_nn_force_generic. */
    static atomic_int cached = -1;
    int lvl = atomic_load_explicit(&cached, memory_order_relaxed);
    if (lvl < 0) {
        lvl = cpu_level();
        atomic_store_explicit(&cached, lvl, memory_order_relaxed);
    }
    int cap = atomic_load_explicit(&g_cap, memory_order_relaxed);
    if (lvl > cap)
        lvl = cap;
    return px_nn_use_avx2() ? lvl : PX_OPS_GENERIC;
}

const char *px_nn_ops_isa(void)
{
    switch (px_nn_ops_level()) {
    case PX_OPS_AVX512:
        return "avx512";
    case PX_OPS_AVX2:
        return "avx2+fma+f16c";
    default:
        return "generic";
    }
}

typedef struct ops_for_ctx {
    _Atomic int64_t next;
    int64_t n;
    px_pool_fn fn;
    void *ctx;
} ops_for_ctx;

static void ops_for_worker(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)begin;
    (void)end;
    ops_for_ctx *c = ctx;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (t >= c->n)
            return;
        c->fn(c->ctx, t, t + 1, worker);
    }
}

void px_nn_ops_for(px_pool *pool, int64_t ntasks, px_pool_fn fn, void *ctx)
{
    int nthr = px_pool_threads(pool);
    if (ntasks <= 0)
        return;
    if (nthr <= 1 || ntasks == 1) {
        fn(ctx, 0, ntasks, 0);
        return;
    }
    ops_for_ctx c = {.n = ntasks, .fn = fn, .ctx = ctx};
    atomic_init(&c.next, 0);
    px_pool_for(pool, nthr < ntasks ? nthr : ntasks, ops_for_worker, &c);
}

static _Atomic uint64_t g_flops;

void px_nn_ops_count(uint64_t flops)
{
    atomic_fetch_add_explicit(&g_flops, flops, memory_order_relaxed);
}

uint64_t px_nn_flops(void)
{
    return atomic_load(&g_flops);
}

void px_nn_flops_reset(void)
{
    atomic_store(&g_flops, 0);
}

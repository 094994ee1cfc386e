/*
 * Executor: sessions over a loaded (read-only) model.
 *
 * px_nn_session_create allocates everything a run needs, once: the arena the
 * planner sized, a pointer per tensor into it (or into the model's constant
 * data), the pointer lists of Concat steps, conv scratch for the session's
 * thread count (the largest any conv asks for) and the px_pool. A run is then
 * a loop over the steps calling the kernels with precomputed parameters; it
 * allocates nothing, and because every kernel splits work independently of
 * the thread count, outputs are bitwise identical for any thread count.
 *
 * px_nn_fold_step reuses the same step runner at load time, on constant inputs
 * and a temporary output, to fold nodes that only the kernels can compute.
 *
 * PX_NN_PROFILE=1 in the environment (read at session creation) makes every
 * run log one line per step (op, node name, algorithm, milliseconds, and for
 * convolutions their FLOPs and the rate achieved) and the total through
 * px_log, for finding the slow layers and how far each is from the GEMM peak.
 */
#include "graph.h"

#include <stdlib.h>
#include <string.h>

struct px_nn_session {
    const px_nn_model *m;
    px_pool *pool;
    uint8_t *arena;
    float **ptr;             /* per tensor: where its values are */
    const float **cat_ptrs;  /* inputs of all Concat steps, back to back */
    int *cat_base;           /* per step: first index in cat_ptrs */
    void *scratch;
    double *prof_ms;         /* per step, when profiling */
    int borrowed;            /* arena and pool belong to the caller (px_nn_session_create_in) */
};

int px_nn_model_num_inputs(const px_nn_model *m) { return m ? m->n_inputs : 0; }
int px_nn_model_num_outputs(const px_nn_model *m) { return m ? m->n_outputs : 0; }
int px_nn_model_num_steps(const px_nn_model *m) { return m ? m->n_run_steps : 0; }

static void fill_info(const nn_tensor *t, px_nn_tensor_info *info)
{
    info->name = t->name;
    info->rank = t->rank;
    for (int i = 0; i < PX_NN_MAX_DIMS; i++)
        info->dims[i] = i < t->rank ? t->dims[i] : 0;
    info->count = t->count;
}

int px_nn_model_input_info(const px_nn_model *m, int i, px_nn_tensor_info *info)
{
    if (!m || !info || i < 0 || i >= m->n_inputs)
        return PX_EINVAL;
    fill_info(&m->t[m->inputs[i]], info);
    return PX_OK;
}

int px_nn_model_output_info(const px_nn_model *m, int i, px_nn_tensor_info *info)
{
    if (!m || !info || i < 0 || i >= m->n_outputs)
        return PX_EINVAL;
    fill_info(&m->t[m->outputs[i]], info);
    return PX_OK;
}

int px_nn_model_find_output(const px_nn_model *m, const char *name)
{
    if (!m || !name)
        return -1;
    for (int i = 0; i < m->n_outputs; i++)
        if (strcmp(m->t[m->outputs[i]].name, name) == 0)
            return i;
    return -1;
}

void px_nn_session_destroy(px_nn_session *s)
{
    if (!s)
        return;
    if (!s->borrowed) {
        px_pool_destroy(s->pool);
        px_aligned_free(s->arena);
    }
    px_aligned_free(s->scratch);
    free(s->ptr);
    free(s->cat_ptrs);
    free(s->cat_base);
    free(s->prof_ms);
    free(s);
}

size_t px_nn_model_arena_bytes(const px_nn_model *m)
{
    return m ? (m->arena_bytes ? m->arena_bytes : 64) : 0;
}

static int session_make(const px_nn_model *m, int threads, px_pool *pool, uint8_t *arena,
                        size_t arena_len, px_nn_session **out, px_err *err);

int px_nn_session_create(const px_nn_model *m, int threads, px_nn_session **out, px_err *err)
{
    return session_make(m, threads, NULL, NULL, 0, out, err);
}

int px_nn_session_create_in(const px_nn_model *m, px_pool *pool, void *arena, size_t arena_len,
                            px_nn_session **out, px_err *err)
{
    if (!pool || !arena || arena_len < px_nn_model_arena_bytes(m)) {
        if (out)
            *out = NULL;
        return px_err_set(err, PX_EINVAL,
                          "px_nn_session_create_in: need a pool and %zu bytes of arena",
                          px_nn_model_arena_bytes(m));
    }
    return session_make(m, 0, pool, arena, arena_len, out, err);
}

static int session_make(const px_nn_model *m, int threads, px_pool *pool, uint8_t *arena,
                        size_t arena_len, px_nn_session **out, px_err *err)
{
    if (!m || !out)
        return px_err_set(err, PX_EINVAL, "px_nn_session_create: NULL argument");
    *out = NULL;
    px_nn_session *s = px_calloc(1, sizeof *s);
    if (!s)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    s->m = m;
    s->borrowed = pool != NULL;
    if (pool) {
        s->pool = pool;
        s->arena = arena;
    } else {
        int rc = px_pool_create(threads, &s->pool);
        if (rc < 0) {
            free(s);
            return px_err_set(err, rc, "cannot start %d compute threads", threads);
        }
    }
    int nthreads = px_pool_threads(s->pool);
    size_t n_cat = 0, scratch = 0;
    for (int i = 0; i < m->ns; i++) {
        const nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        if (st->kind == NN_OP_CONCAT)
            n_cat += (size_t)st->n_in;
        if (st->kind == NN_OP_CONV) {
            size_t z = px_nn_conv_scratch_size(st->u.conv.packed, nthreads);
            scratch = z > scratch ? z : scratch;
        }
    }
    if (!s->borrowed)
        s->arena = px_aligned_alloc(m->arena_bytes ? m->arena_bytes : 64);
    s->ptr = px_calloc((size_t)(m->nt ? m->nt : 1), sizeof *s->ptr);
    s->cat_ptrs = px_calloc(n_cat ? n_cat : 1, sizeof *s->cat_ptrs);
    s->cat_base = px_calloc((size_t)(m->ns ? m->ns : 1), sizeof *s->cat_base);
    s->scratch = scratch ? px_aligned_alloc(scratch) : NULL;
    const char *prof = getenv("PX_NN_PROFILE");
    if (prof && prof[0] && strcmp(prof, "0") != 0)
        s->prof_ms = px_calloc((size_t)(m->ns ? m->ns : 1), sizeof *s->prof_ms);
    if (!s->arena || !s->ptr || !s->cat_ptrs || !s->cat_base || (scratch && !s->scratch) ||
        (prof && prof[0] && strcmp(prof, "0") != 0 && !s->prof_ms)) {
        px_nn_session_destroy(s);
        return px_err_set(err, PX_ENOMEM, "cannot allocate %zu bytes of activations",
                          m->arena_bytes);
    }
    /* zeroed once so that a run without filled inputs is deterministic, not UB */
    if (!s->borrowed)
        memset(s->arena, 0, m->arena_bytes);
    (void)arena_len;
    for (int t = 0; t < m->nt; t++) {
        const nn_tensor *x = &m->t[t];
        if (x->kind == NN_CONST)
            s->ptr[t] = x->data;
        else
            s->ptr[t] = (float *)(void *)(s->arena + m->t[x->root].offset);
    }
    size_t k = 0;
    for (int i = 0; i < m->ns; i++) {
        const nn_step *st = &m->s[i];
        if (st->dead || st->kind != NN_OP_CONCAT)
            continue;
        s->cat_base[i] = (int)k;
        for (int j = 0; j < st->n_in; j++)
            s->cat_ptrs[k++] = s->ptr[st->many_in[j]];
    }
    *out = s;
    return PX_OK;
}

float *px_nn_session_input(px_nn_session *s, int i)
{
    if (!s || i < 0 || i >= s->m->n_inputs)
        return NULL;
    return s->ptr[s->m->inputs[i]];
}

const float *px_nn_session_output(const px_nn_session *s, int i)
{
    if (!s || i < 0 || i >= s->m->n_outputs)
        return NULL;
    return s->ptr[s->m->outputs[i]];
}

static void gather_run(const nn_step *st, const float *in, float *out)
{
    size_t inner = st->u.gather.inner, n = st->u.gather.n_idx;
    for (size_t o = 0; o < st->u.gather.outer; o++)
        for (size_t j = 0; j < n; j++)
            memcpy(out + (o * n + j) * inner,
                   in + (o * st->u.gather.axis_len + (size_t)st->u.gather.idx[j]) * inner,
                   inner * sizeof(float));
}

/* Runs one step. ptr: per-tensor data pointers; cat: this step's Concat input
 * pointers (NULL otherwise). Shared by sessions and by load-time folding. */
static void exec_step(const px_nn_model *m, const nn_step *st, float *const *ptr,
                      const float *const *cat, void *scratch, px_pool *pool)
{
    float *out = ptr[st->out];
    const float *in = st->in[0] >= 0 ? ptr[st->in[0]] : NULL;
    const nn_tensor *tout = &m->t[st->out];
    switch (st->kind) {
    case NN_OP_ALIAS:
        break;
    case NN_OP_CONV:
        px_nn_conv_run(st->u.conv.packed, in, out, scratch, pool);
        break;
    case NN_OP_UNARY:
        px_nn_unary(st->u.unary, in, out, tout->count, pool);
        break;
    case NN_OP_MAXPOOL:
        px_nn_maxpool2d(&st->u.pool, in, out, pool);
        break;
    case NN_OP_RESIZE:
        px_nn_resize_nearest(st->u.resize.c, st->u.resize.ih, st->u.resize.iw, st->u.resize.oh,
                          st->u.resize.ow, st->u.resize.ys, st->u.resize.xs, in, out, pool);
        break;
    case NN_OP_BINARY:
        px_nn_binary(st->u.bin.op, st->u.bin.rank, st->u.bin.od, in, st->u.bin.ad, ptr[st->in[1]],
                  st->u.bin.bd, out, pool);
        break;
    case NN_OP_SOFTMAX:
        px_nn_softmax(in, out, st->u.softmax.outer, st->u.softmax.len, st->u.softmax.inner);
        break;
    case NN_OP_CONCAT:
        px_nn_concat(cat, st->u.concat.lens, st->n_in, st->u.concat.outer, st->u.concat.inner, out);
        break;
    case NN_OP_TRANSPOSE:
        px_nn_permute(in, st->u.transpose.rank, st->u.transpose.dims, st->u.transpose.perm, out);
        break;
    case NN_OP_BATCHNORM:
        px_nn_batchnorm(in, out, st->u.bn.c, st->u.bn.hw, st->u.bn.scale, st->u.bn.bias,
                     st->u.bn.mean, st->u.bn.var, st->u.bn.eps);
        break;
    case NN_OP_SLICE:
        px_nn_slice_run(st->u.slice.rank, st->u.slice.in_dims, st->u.slice.starts, st->u.slice.steps,
                     st->u.slice.out_dims, in, out);
        break;
    case NN_OP_GATHER:
        gather_run(st, in, out);
        break;
    }
}

static void run_step(px_nn_session *s, int i)
{
    const nn_step *st = &s->m->s[i];
    exec_step(s->m, st, s->ptr, st->kind == NN_OP_CONCAT ? s->cat_ptrs + s->cat_base[i] : NULL,
              s->scratch, s->pool);
}

int px_nn_fold_step(px_nn_model *m, int si, px_err *err)
{
    nn_step *st = &m->s[si];
    nn_tensor *o = &m->t[st->out];
    size_t bytes = o->count * sizeof(float);
    int rc = PX_OK;
    if (m->fold_bytes + bytes > NN_MAX_FOLD_BYTES)
        return px_err_set(err, PX_ELIMIT, "node '%s' (%s): folded constants exceed %zu bytes",
                          st->name, st->op, NN_MAX_FOLD_BYTES);
    /* hostile files could ask for minutes of work at load: folding is for small things */
    double work = (double)o->count;
    if (st->kind == NN_OP_CONV)
        work *= (double)(st->u.conv.p.ic / st->u.conv.p.group) * st->u.conv.p.kh * st->u.conv.p.kw;
    else if (st->kind == NN_OP_MAXPOOL)
        work *= (double)st->u.pool.kh * st->u.pool.kw;
    if (work > 2e8)
        return px_err_set(err, PX_ELIMIT, "node '%s' (%s): too much work to fold at load time",
                          st->name, st->op);
    float *data = px_malloc(bytes ? bytes : 1);
    float **ptr = px_calloc((size_t)m->nt, sizeof *ptr);
    const float **cat = px_calloc((size_t)(st->n_in ? st->n_in : 1), sizeof *cat);
    void *scratch = NULL;
    if (!data || !ptr || !cat) {
        rc = px_err_set(err, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (int t = 0; t < m->nt; t++)
        if (m->t[t].kind == NN_CONST)
            ptr[t] = m->t[t].data;
    ptr[st->out] = data;
    for (int k = 0; st->many_in && k < st->n_in; k++)
        cat[k] = ptr[st->many_in[k]];
    if (st->kind == NN_OP_CONV) {
        rc = px_nn_conv_prepare(&st->u.conv.p, st->u.conv.w, st->u.conv.b, &st->u.conv.packed, err);
        if (rc < 0) {
            rc = px_err_prefix(err, rc, "node '%s' (Conv)", st->name);
            goto out;
        }
        size_t z = px_nn_conv_scratch_size(st->u.conv.packed, 1);
        if (z && !(scratch = px_aligned_alloc(z))) {
            rc = px_err_set(err, PX_ENOMEM, "out of memory");
            goto out;
        }
    }
    exec_step(m, st, ptr, cat, scratch, NULL);
    /* the step's output becomes a constant and the step disappears */
    o->kind = NN_CONST;
    o->data = data;
    o->producer = -1;
    data = NULL;
    m->fold_bytes += bytes;
    px_nn_step_free(st);
    if (si == m->ns - 1) {
        m->ns--;
    } else {
        st->dead = 1;
        st->out = -1;
    }
out:
    free(data);
    free(ptr);
    free(cat);
    px_aligned_free(scratch);
    return rc;
}

static const char *step_detail(const nn_step *st)
{
    return st->kind == NN_OP_CONV ? px_nn_conv_algo(st->u.conv.packed) : "";
}

int px_nn_session_run(px_nn_session *s, px_err *err)
{
    if (!s)
        return px_err_set(err, PX_EINVAL, "px_nn_session_run: NULL session");
    const px_nn_model *m = s->m;
    double t_start = s->prof_ms ? px_now_ms() : 0;
    for (int i = 0; i < m->ns; i++) {
        const nn_step *st = &m->s[i];
        if (st->dead || st->kind == NN_OP_ALIAS)
            continue;
        if (s->prof_ms) {
            double t0 = px_now_ms();
            run_step(s, i);
            s->prof_ms[i] = px_now_ms() - t0;
        } else {
            run_step(s, i);
        }
    }
    if (s->prof_ms) {
        const double total = px_now_ms() - t_start;
        double flops = 0.0;
        for (int i = 0; i < m->ns; i++) {
            const nn_step *st = &m->s[i];
            if (st->dead || st->kind == NN_OP_ALIAS)
                continue;
            const nn_tensor *o = &m->t[st->out];
            const double f = st->kind == NN_OP_CONV ? px_nn_conv_flops(st->u.conv.packed) : 0.0;
            flops += f;
            px_log(PX_LOG_INFO,
                   "nn profile: step %3d %-18s %-28s %-12s out %8zu  %8.3f ms %8.2f MFLOP %6.1f "
                   "GFLOP/s",
                   i, st->op, st->name, step_detail(st), o->count, s->prof_ms[i], f * 1e-6,
                   s->prof_ms[i] > 0 ? f * 1e-6 / s->prof_ms[i] : 0.0);
        }
        px_log(PX_LOG_INFO,
               "nn profile: %d steps, %d threads, total %.3f ms; convs %.1f MFLOP, %.1f GFLOP/s "
               "over the run",
               m->n_run_steps, px_pool_threads(s->pool), total, flops * 1e-6,
               total > 0 ? flops * 1e-6 / total : 0.0);
    }
    return PX_OK;
}

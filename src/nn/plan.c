/*
 * Optimiser and memory planner, run once at the end of loading.
 *
 * 1. Fusion. A Conv whose output feeds exactly one BatchNormalization (and
 *    nothing else, and is not a graph output) absorbs it: per output channel
 *    s = scale / sqrt(var + eps), w *= s, b = (b - mean) * s + beta. A Conv
 *    whose output feeds exactly one Relu absorbs it as px_nn_conv_params.act.
 *    The fused step is marked dead and the Conv writes the later tensor.
 * 2. Packing. Conv weights are handed to px_nn_conv_prepare (after fusion, as
 *    the packed layout depends on the final values) and the copies dropped.
 * 3. Storage. Every runtime tensor gets a root: itself, or for alias steps
 *    (Reshape & co.) the root of its input, or for a unary/softmax step whose
 *    input dies at that step, the input's root (in-place; the kernels allow
 *    in == out). A root lives from the step that produces it to the last step
 *    that reads any tensor sharing it; graph inputs and outputs are pinned
 *    for the whole run so outputs stay valid after it.
 * 4. Offsets. Walking the steps in order, each new root takes the best-fitting
 *    gap between the blocks alive at that moment (64-byte aligned), and roots
 *    whose last reader has run are released after the step (outputs are
 *    placed before inputs are released, so a kernel's in and out never overlap
 *    unless planned in-place). The arena is the high-water mark.
 */
#include "graph.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NN_ALIGN 64

/* Calls fn(tensor) for every input tensor of a step. */
#define FOR_INPUTS(st, var, body)                                                                  \
    do {                                                                                           \
        for (int k_ = 0; k_ < (st)->n_in; k_++) {                                                  \
            int var = (st)->many_in ? (st)->many_in[k_] : (st)->in[k_];                            \
            if (var < 0)                                                                           \
                continue;                                                                          \
            body;                                                                                  \
        }                                                                                          \
    } while (0)

static void fuse(px_nn_model *m, int *uses, int *user)
{
    for (int t = 0; t < m->nt; t++) {
        uses[t] = m->t[t].pinned ? 1 : 0;
        user[t] = -1;
    }
    for (int i = 0; i < m->ns; i++) {
        nn_step *st = &m->s[i];
        FOR_INPUTS(st, t, {
            uses[t]++;
            user[t] = i;
        });
    }
    for (int i = 0; i < m->ns; i++) {
        nn_step *cv = &m->s[i];
        if (cv->dead || cv->kind != NN_OP_CONV)
            continue;
        for (;;) {
            int t = cv->out;
            if (uses[t] != 1 || user[t] < 0)
                break;
            nn_step *nx = &m->s[user[t]];
            if (nx->dead || nx->in[0] != t)
                break;
            if (nx->kind == NN_OP_BATCHNORM && cv->u.conv.p.act == PX_NN_ACT_NONE &&
                nx->u.bn.c == cv->u.conv.p.oc) {
                const px_nn_conv_params *p = &cv->u.conv.p;
                size_t per = (size_t)(p->ic / p->group) * (size_t)p->kh * (size_t)p->kw;
                for (int o = 0; o < p->oc; o++) {
                    float s = nx->u.bn.scale[o] / sqrtf(nx->u.bn.var[o] + nx->u.bn.eps);
                    float *w = cv->u.conv.w + (size_t)o * per;
                    for (size_t k = 0; k < per; k++)
                        w[k] *= s;
                    cv->u.conv.b[o] = (cv->u.conv.b[o] - nx->u.bn.mean[o]) * s + nx->u.bn.bias[o];
                }
            } else if (nx->kind == NN_OP_UNARY && nx->u.unary == PX_NN_UN_RELU &&
                       cv->u.conv.p.act == PX_NN_ACT_NONE) {
                cv->u.conv.p.act = PX_NN_ACT_RELU;
            } else {
                break;
            }
            nx->dead = 1;
            m->t[t].producer = -1; /* the intermediate is never materialised */
            cv->out = nx->out;
            m->t[cv->out].producer = i;
        }
    }
}

typedef struct block {
    size_t off, size;
    int root;
} block;

/* Best-fit placement among the live blocks (sorted by offset). */
static size_t place(block *live, int *n_live, size_t size, int root, size_t *high)
{
    size_t best = SIZE_MAX, best_gap = SIZE_MAX, prev_end = 0;
    int pos = *n_live;
    for (int i = 0; i <= *n_live; i++) {
        size_t start = i < *n_live ? live[i].off : SIZE_MAX;
        if (start != SIZE_MAX && start >= prev_end) {
            size_t gap = start - prev_end;
            if (gap >= size && gap < best_gap) {
                best_gap = gap;
                best = prev_end;
                pos = i;
            }
        }
        if (i == *n_live && best == SIZE_MAX) {
            best = prev_end;
            pos = i;
        }
        if (i < *n_live)
            prev_end = live[i].off + live[i].size;
    }
    memmove(&live[pos + 1], &live[pos], (size_t)(*n_live - pos) * sizeof *live);
    live[pos].off = best;
    live[pos].size = size;
    live[pos].root = root;
    (*n_live)++;
    if (best + size > *high)
        *high = best + size;
    return best;
}

static int assign_storage(px_nn_model *m, int *root_last, block *live, px_err *err)
{
    const int INF = INT_MAX;
    for (int t = 0; t < m->nt; t++) {
        nn_tensor *x = &m->t[t];
        x->last_use = x->pinned ? INF : -1;
        x->root = t;
        root_last[t] = -1;
    }
    for (int i = 0; i < m->ns; i++) {
        nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        FOR_INPUTS(st, t, {
            if (m->t[t].last_use != INF)
                m->t[t].last_use = i;
        });
    }
    for (int k = 0; k < m->n_inputs; k++)
        root_last[m->inputs[k]] = INF;
    for (int i = 0; i < m->ns; i++) {
        nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        int o = st->out, r = o;
        nn_tensor *x = &m->t[o];
        if (st->kind == NN_OP_ALIAS && m->t[st->in[0]].kind != NN_CONST) {
            r = m->t[st->in[0]].root;
        } else if ((st->kind == NN_OP_UNARY || st->kind == NN_OP_SOFTMAX) &&
                   m->t[st->in[0]].kind == NN_ACT) {
            int ri = m->t[st->in[0]].root;
            if (root_last[ri] == i && m->t[ri].count == x->count)
                r = ri;
        }
        x->root = r;
        int last = x->last_use > i ? x->last_use : i;
        if (last > root_last[r])
            root_last[r] = last;
    }

    /* offsets */
    int n_live = 0;
    size_t high = 0;
    for (int k = 0; k < m->n_inputs; k++) {
        nn_tensor *x = &m->t[m->inputs[k]];
        size_t sz = (x->count * sizeof(float) + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
        x->offset = place(live, &n_live, sz, m->inputs[k], &high);
    }
    for (int i = 0; i < m->ns; i++) {
        nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        nn_tensor *x = &m->t[st->out];
        if (x->root == st->out) {
            size_t sz = (x->count * sizeof(float) + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
            x->offset = place(live, &n_live, sz, st->out, &high);
            if (high > NN_MAX_ARENA)
                return px_err_set(err, PX_ELIMIT, "activations need more than %zu bytes",
                                  NN_MAX_ARENA);
        }
        for (int b = 0; b < n_live;) {
            if (root_last[live[b].root] == i) {
                memmove(&live[b], &live[b + 1], (size_t)(n_live - b - 1) * sizeof *live);
                n_live--;
            } else {
                b++;
            }
        }
    }
    m->arena_bytes = high;
    return PX_OK;
}

int px_nn_plan(px_nn_model *m, px_err *err)
{
    int rc = PX_OK;
    int *a = px_malloc((size_t)(m->nt ? m->nt : 1) * sizeof(int));
    int *b = px_malloc((size_t)(m->nt ? m->nt : 1) * sizeof(int));
    block *live = px_malloc((size_t)(m->nt + 1) * sizeof(block));
    if (!a || !b || !live) {
        rc = px_err_set(err, PX_ENOMEM, "out of memory");
        goto out;
    }
    fuse(m, a, b);
    m->n_run_steps = 0;
    for (int i = 0; i < m->ns; i++) {
        nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        if (st->kind != NN_OP_ALIAS)
            m->n_run_steps++;
        if (st->kind != NN_OP_CONV)
            continue;
        {
            /* The conv's single consumer, if it is a depthwise 3x3 conv. */
            int t = st->out;
            nn_step *nx = a[t] == 1 && b[t] >= 0 ? &m->s[b[t]] : NULL;
            if (nx && (nx->dead || nx->kind != NN_OP_CONV || nx->in[0] != t))
                nx = NULL;
            /* A 2x2/2 MaxPool after the depthwise conv (nx, or st itself) is
             * folded into it: px_nn_conv_params.pool. */
            nn_step *dw = nx ? nx : st;
            int t2 = dw->out;
            nn_step *mp = a[t2] == 1 && b[t2] >= 0 ? &m->s[b[t2]] : NULL;
            if (mp && !mp->dead && mp->kind == NN_OP_MAXPOOL && mp->in[0] == t2 &&
                px_nn_conv_pool_fusable(&dw->u.conv.p) && mp->u.pool.kh == 2 && mp->u.pool.kw == 2 &&
                mp->u.pool.sh == 2 && mp->u.pool.sw == 2 && !mp->u.pool.pt && !mp->u.pool.pl &&
                !mp->u.pool.pb && !mp->u.pool.pr && mp->u.pool.oh == dw->u.conv.p.oh / 2 &&
                mp->u.pool.ow == dw->u.conv.p.ow / 2) {
                dw->u.conv.p.pool = 1;
                mp->dead = 1;
                m->t[t2].producer = -1;
                dw->out = mp->out;
                m->t[dw->out].producer = (int)(dw - m->s);
            }
            /* 1x1 conv -> depthwise 3x3 conv: one step (px_nn_conv_prepare_dp). */
            if (nx && px_nn_conv_dp_fusable(&st->u.conv.p, &nx->u.conv.p)) {
                rc = px_nn_conv_prepare_dp(&st->u.conv.p, st->u.conv.w, st->u.conv.b, &nx->u.conv.p,
                                        nx->u.conv.w, nx->u.conv.b, &st->u.conv.packed, err);
                if (rc < 0)
                    goto out;
                nx->dead = 1;
                m->t[t].producer = -1;
                st->out = nx->out;
                m->t[st->out].producer = i;
                free(st->u.conv.w);
                free(st->u.conv.b);
                st->u.conv.w = st->u.conv.b = NULL;
                continue;
            }
        }
        rc = px_nn_conv_prepare(&st->u.conv.p, st->u.conv.w, st->u.conv.b, &st->u.conv.packed, err);
        if (rc < 0) {
            rc = px_err_prefix(err, rc, "node '%s' (Conv)", st->name);
            goto out;
        }
        free(st->u.conv.w);
        free(st->u.conv.b);
        st->u.conv.w = st->u.conv.b = NULL;
    }
    rc = assign_storage(m, a, live, err);
out:
    free(a);
    free(b);
    free(live);
    return rc;
}

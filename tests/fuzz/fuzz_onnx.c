/*
 * libFuzzer target for the ONNX loader: any byte string goes through
 * px_nn_model_load_buffer (protobuf decoding, shape inference, folding,
 * fusion, memory planning). When the result is small enough to run quickly
 * (activation arena and conv work bounded below), one inference is run as
 * well, so that the plans the loader accepts are also exercised by the
 * executor under the sanitizers. Seeds: tests/fuzz/seeds/fuzz_onnx/ (a small
 * real model is a good start).
 */
#include <stddef.h>
#include <stdint.h>

#include "nn/graph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Multiply-adds of convs and pooling windows, to skip running plans that would take seconds. */
static double conv_work(const px_nn_model *m)
{
    double w = 0;
    for (int i = 0; i < m->ns; i++) {
        const nn_step *st = &m->s[i];
        if (st->dead)
            continue;
        if (st->kind == NN_OP_CONV) {
            const px_nn_conv_params *p = &st->u.conv.p;
            w += (double)p->oc * p->oh * p->ow * (p->ic / p->group) * p->kh * p->kw;
        } else if (st->kind == NN_OP_MAXPOOL) {
            const px_nn_pool2d_params *p = &st->u.pool;
            w += (double)p->c * p->oh * p->ow * p->kh * p->kw;
        }
    }
    return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    px_nn_model *m = NULL;
    px_err err;
    if (px_nn_model_load_buffer(data, size, &m, &err) != PX_OK)
        return 0;
    if (m->arena_bytes <= ((size_t)16 << 20) && conv_work(m) < 5e7) {
        px_nn_session *s = NULL;
        if (px_nn_session_create(m, 1, &s, &err) == PX_OK) {
            px_nn_tensor_info in;
            for (int i = 0; i < px_nn_model_num_inputs(m); i++) {
                if (px_nn_model_input_info(m, i, &in) != PX_OK)
                    continue;
                float *x = px_nn_session_input(s, i);
                for (size_t k = 0; k < in.count; k++)
                    x[k] = (float)(k % 17) - 8.0f;
            }
            px_nn_session_run(s, &err);
            px_nn_session_destroy(s);
        }
    }
    px_nn_model_destroy(m);
    return 0;
}

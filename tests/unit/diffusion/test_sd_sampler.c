/*
 * Tests of the torch-compatible generator (rng.c) and the samplers
 * (sampler.c) against diffusers v0.27 / torch 1.13 references in
 * PX_SHARED_DIR/golden/sd: for each sampler a 4-step loop at latents
 * [1,4,8,8], seed 42, with the guided UNet output of every step recorded, so
 * the samplers run here without any UNet: we feed eps_cfg of step i and
 * compare the latent after step i (chained from our own previous latent, as
 * a render runs). The noise must match bit for bit; timesteps exactly;
 * sigmas to 1e-6 relative; latents to 1e-6 absolute + 1e-6 relative (a
 * few ulps; the figures reached are printed). Karras sigmas and the LCM guidance embedding have no
 * golden and are checked against the formulas written out here in double.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "diffusion/sd_internal.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd/"
#define NLAT 256 /* [1,4,8,8] */
/* Latents: we reach diffusers' bits; allow 1e-6 abs + 1e-6 rel, a few ulps,
 * for another libm's logf/expf in the DPM++ coefficients. */
#define LATENT_TOL 1e-6

static void load_f32(const char *name, float *out, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s", GOLDEN, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        print_error("cannot open golden file %s\n", path);
        fail();
    }
    size_t got = fread(out, sizeof(float), n, f);
    fclose(f);
    if (got != n) {
        print_error("%s: %zu floats, expected %zu\n", path, got, n);
        fail();
    }
}

static px_sd_config sd15_config(void)
{
    px_sd_config c;
    memset(&c, 0, sizeof c);
    c.arch = PX_SD_ARCH_SD1;
    c.train_timesteps = 1000;
    c.beta_start = 0.00085f;
    c.beta_end = 0.012f;
    c.steps_offset = 1;
    c.prediction_v = 0;
    return c;
}

static int ulp_diff(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0)
        ia = INT32_MIN - ia;
    if (ib < 0)
        ib = INT32_MIN - ib;
    int64_t d = (int64_t)ia - (int64_t)ib;
    return (int)(d < 0 ? -d : d);
}

/* ------------------------------------------------------------------- rng */

static void test_rng_golden_noise(void **state)
{
    (void)state;
    px_sd_rng r;
    px_sd_rng_seed(&r, 42);
    float got[NLAT], want[NLAT];
    const char *names[] = {"sample.euler.init_noise.f32", "sample.euler_a.noise0.f32",
                           "sample.euler_a.noise1.f32", "sample.euler_a.noise2.f32",
                           "sample.euler_a.noise3.f32"};
    for (int d = 0; d < 5; d++) {
        load_f32(names[d], want, NLAT);
        px_sd_rng_randn(&r, got, NLAT);
        int worst = 0;
        for (int i = 0; i < NLAT; i++) {
            int u = ulp_diff(got[i], want[i]);
            worst = u > worst ? u : worst;
        }
        if (worst != 0) {
            print_error("%s: off by up to %d ulp\n", names[d], worst);
            fail();
        }
    }
    /* LCM drew the same sequence from the same seed */
    px_sd_rng_seed(&r, 42);
    px_sd_rng_randn(&r, got, NLAT);
    px_sd_rng_randn(&r, got, NLAT);
    load_f32("sample.lcm.noise0.f32", want, NLAT);
    assert_memory_equal(got, want, sizeof got);
}

/* torch.manual_seed(0); torch.randn(10): the values every tutorial shows
 * (scalar path: doubles, two normals per pair of 53-bit uniforms). */
static void test_rng_scalar_path(void **state)
{
    (void)state;
    static const double want[10] = {1.5410,  -0.2934, -2.1788, 0.5684,  -1.0845,
                                    -1.3986, 0.4033,  0.8380,  -0.7193, -0.4033};
    px_sd_rng r;
    px_sd_rng_seed(&r, 0);
    float got[10];
    px_sd_rng_randn(&r, got, 10);
    for (int i = 0; i < 10; i++)
        assert_true(fabs((double)got[i] - want[i]) < 6e-5);
    /* one at a time gives the same sequence: the spare normal is cached */
    px_sd_rng_seed(&r, 0);
    for (int i = 0; i < 10; i++) {
        float one;
        px_sd_rng_randn(&r, &one, 1);
        assert_true(one == got[i]);
    }
}

static void test_rng_seed_and_tail(void **state)
{
    (void)state;
    px_sd_rng a, b;
    float x[40], y[40];
    /* torch seeds mt19937 with the low 32 bits of the seed */
    px_sd_rng_seed(&a, 42);
    px_sd_rng_seed(&b, 42 + (UINT64_C(7) << 32));
    px_sd_rng_randn(&a, x, 40);
    px_sd_rng_randn(&b, y, 40);
    assert_memory_equal(x, y, sizeof x);
    px_sd_rng_seed(&b, 43);
    px_sd_rng_randn(&b, y, 40);
    assert_memory_not_equal(x, y, sizeof x);

    /* n % 16 != 0: the first 32 are the same as randn(32), the last 16
     * recomputed from 16 more uniforms; the sample is roughly normal */
    float z[32];
    px_sd_rng_seed(&b, 42);
    px_sd_rng_randn(&b, z, 32);
    assert_memory_equal(x, z, 24 * sizeof(float));
    assert_memory_not_equal(x + 24, z + 24, 8 * sizeof(float));
    float big[4096];
    px_sd_rng_seed(&b, 7);
    px_sd_rng_randn(&b, big, 4096);
    double m = 0.0, v = 0.0;
    for (int i = 0; i < 4096; i++)
        m += big[i];
    m /= 4096;
    for (int i = 0; i < 4096; i++)
        v += (big[i] - m) * (big[i] - m);
    v /= 4096;
    assert_true(fabs(m) < 0.08 && fabs(v - 1.0) < 0.08);
}

/* -------------------------------------------------------------- samplers */

/* draws: the randn tensors diffusers takes from the generator in the loop
 * (init noise included), after which ours must be at the same place. */
static void run_golden(px_sd_sampler_kind kind, const char *tag, int has_sigmas, int draws)
{
    px_sd_config cfg = sd15_config();
    px_sd_rng rng;
    px_sd_rng_seed(&rng, 42);
    px_sd_sampler *s = NULL;
    px_err err = {0};
    int rc = px_sd_sampler_create(kind, 4, 0, &cfg, NLAT, &rng, &s, &err);
    assert_int_equal(rc, PX_OK);
    char name[128];
    float want[NLAT], eps[NLAT], x[NLAT], noise[NLAT], sig[5], ts[4];

    snprintf(name, sizeof name, "sample.%s.timesteps.f32", tag);
    load_f32(name, ts, 4);
    for (int i = 0; i < 4; i++)
        assert_true(px_sd_sampler_timestep(s, i) == ts[i]);
    const float *ss = px_sd_sampler_sigmas(s);
    if (has_sigmas) {
        snprintf(name, sizeof name, "sample.%s.sigmas.f32", tag);
        load_f32(name, sig, 5);
        int exact = 0;
        for (int i = 0; i < 5; i++) {
            assert_true(fabsf(ss[i] - sig[i]) <= 1e-6f * fabsf(sig[i]));
            exact += ss[i] == sig[i];
        }
        print_message("%-8s sigmas: %d/5 bit-exact\n", tag, exact);
    }

    snprintf(name, sizeof name, "sample.%s.init_noise.f32", tag);
    load_f32(name, noise, NLAT);
    px_sd_sampler_init(s, x);
    float scale = kind == PX_SD_EULER || kind == PX_SD_EULER_A
                      ? sqrtf(px_sd_sampler_sigmas(s)[0] * px_sd_sampler_sigmas(s)[0] + 1.0f)
                      : 1.0f;
    for (int i = 0; i < NLAT; i++)
        assert_true(x[i] == noise[i] * scale);

    char report[256];
    int len = snprintf(report, sizeof report, "%-8s max |latent - diffusers| per step:", tag);
    for (int st = 0; st < 4; st++) {
        snprintf(name, sizeof name, "sample.%s.step%d.eps_cfg.f32", tag, st);
        load_f32(name, eps, NLAT);
        assert_int_equal(px_sd_sampler_step(s, st, eps, x), PX_OK);
        snprintf(name, sizeof name, "sample.%s.step%d.latent.f32", tag, st);
        load_f32(name, want, NLAT);
        double mx = 0.0;
        int worst_ulp = 0, bad = -1;
        for (int i = 0; i < NLAT; i++) {
            double d = fabs((double)x[i] - want[i]);
            mx = d > mx ? d : mx;
            int u = ulp_diff(x[i], want[i]);
            worst_ulp = u > worst_ulp ? u : worst_ulp;
            if (!(d <= LATENT_TOL * (1.0 + fabs(want[i]))) && bad < 0)
                bad = i;
        }
        len += snprintf(report + len, sizeof report - (size_t)len, " %.2g (%d ulp)", mx, worst_ulp);
        if (bad >= 0) {
            print_error("%s step %d element %d: %.9g, diffusers %.9g (max abs error %g)\n", tag, st,
                        bad, (double)x[bad], (double)want[bad], mx);
            fail();
        }
    }
    print_message("%s\n", report);
    snprintf(name, sizeof name, "sample.%s.final_latent.f32", tag);
    load_f32(name, want, NLAT);
    for (int i = 0; i < NLAT; i++)
        assert_true(fabs((double)x[i] - want[i]) <= LATENT_TOL * (1.0 + fabs(want[i])));
    px_sd_sampler_destroy(s);

    px_sd_rng ref;
    px_sd_rng_seed(&ref, 42);
    for (int d = 0; d < draws; d++)
        px_sd_rng_randn(&ref, want, NLAT);
    px_sd_rng_randn(&ref, want, NLAT);
    px_sd_rng_randn(&rng, x, NLAT);
    assert_memory_equal(x, want, sizeof x);
}

static void test_euler_golden(void **state)
{
    (void)state;
    run_golden(PX_SD_EULER, "euler", 1, 5);
}

static void test_euler_a_golden(void **state)
{
    (void)state;
    run_golden(PX_SD_EULER_A, "euler_a", 1, 5);
}

static void test_dpmpp2m_golden(void **state)
{
    (void)state;
    run_golden(PX_SD_DPMPP_2M, "dpmpp2m", 1, 1);
}

static void test_lcm_golden(void **state)
{
    (void)state;
    run_golden(PX_SD_LCM, "lcm", 0, 4);
}

/* alphas_cumprod of the SD schedule in double, for hand computations */
static double sigma_train(int t)
{
    double a = sqrt(0.00085), b = sqrt(0.012), ac = 1.0;
    for (int i = 0; i <= t; i++) {
        double beta = a + (b - a) * i / 999.0;
        ac *= 1.0 - beta * beta;
    }
    return sqrt((1.0 - ac) / ac);
}

static void check_karras(px_sd_sampler_kind kind, int steps, double smin, double smax)
{
    px_sd_config cfg = sd15_config();
    px_sd_rng rng;
    px_sd_rng_seed(&rng, 1);
    px_sd_sampler *s = NULL;
    px_err err = {0};
    assert_int_equal(px_sd_sampler_create(kind, steps, 1, &cfg, NLAT, &rng, &s, &err), PX_OK);
    const float *sg = px_sd_sampler_sigmas(s);
    for (int i = 0; i < steps; i++) {
        double ramp = (double)i / (steps - 1);
        double lo = pow(smin, 1.0 / 7.0), hi = pow(smax, 1.0 / 7.0);
        double want = pow(hi + ramp * (lo - hi), 7.0);
        if (!(fabs(sg[i] - want) <= 2e-5 * want)) {
            print_error("%s karras sigma %d: %.8g, formula %.8g\n", px_sd_sampler_name(kind), i,
                        (double)sg[i], want);
            fail();
        }
        if (i > 0)
            assert_true(px_sd_sampler_timestep(s, i) < px_sd_sampler_timestep(s, i - 1));
    }
    assert_true(sg[steps] == 0.0f);
    px_sd_sampler_destroy(s);
}

static void test_karras_sigmas(void **state)
{
    (void)state;
    /* Euler's range: the ends of the leading-spaced sigmas (t = 751 ... 1 at 4
     * steps, t = 951 ... 1 at 20), whose timesteps come back exactly */
    check_karras(PX_SD_EULER, 4, sigma_train(1), sigma_train(751));
    check_karras(PX_SD_EULER_A, 20, sigma_train(1), sigma_train(951));
    /* DPM++ 2M: the whole training range, 0.0292 ... 14.61 */
    check_karras(PX_SD_DPMPP_2M, 10, sigma_train(0), sigma_train(999));

    px_sd_config cfg = sd15_config();
    px_sd_rng rng;
    px_sd_rng_seed(&rng, 1);
    px_sd_sampler *s = NULL;
    px_err err = {0};
    assert_int_equal(px_sd_sampler_create(PX_SD_EULER, 4, 1, &cfg, NLAT, &rng, &s, &err), PX_OK);
    assert_true(fabsf(px_sd_sampler_timestep(s, 0) - 751.0f) < 1e-3f);
    assert_true(fabsf(px_sd_sampler_timestep(s, 3) - 1.0f) < 1e-3f);
    px_sd_sampler_destroy(s);
    assert_int_equal(px_sd_sampler_create(PX_SD_DPMPP_2M, 10, 1, &cfg, NLAT, &rng, &s, &err),
                     PX_OK);
    assert_true(px_sd_sampler_timestep(s, 0) == 999.0f);
    assert_true(px_sd_sampler_timestep(s, 9) == 0.0f);
    px_sd_sampler_destroy(s);
}

/* v-prediction: feeding v = alpha*eps - sigma_t*x0 (the v of the same noise)
 * must step like feeding eps. */
static void test_v_prediction(void **state)
{
    (void)state;
    for (int kind = PX_SD_EULER; kind <= PX_SD_LCM; kind++) {
        px_sd_config ce = sd15_config(), cv = sd15_config();
        cv.prediction_v = 1;
        px_sd_rng r1, r2;
        px_sd_rng_seed(&r1, 5);
        px_sd_rng_seed(&r2, 5);
        px_sd_sampler *se = NULL, *sv = NULL;
        px_err err = {0};
        assert_int_equal(px_sd_sampler_create(kind, 6, 0, &ce, NLAT, &r1, &se, &err), PX_OK);
        assert_int_equal(px_sd_sampler_create(kind, 6, 0, &cv, NLAT, &r2, &sv, &err), PX_OK);
        float xe[NLAT], xv[NLAT], eps[NLAT], v[NLAT];
        px_sd_sampler_init(se, xe);
        px_sd_sampler_init(sv, xv);
        for (int st = 0; st < 6; st++) {
            /* Euler's latent is x0 + sigma*eps; DPM's and LCM's are
             * alpha*x0 + sigma_t*eps, alpha = 1/sqrt(sigma^2 + 1) */
            double sg = px_sd_sampler_sigmas(se)[st];
            double alpha = 1.0 / sqrt(sg * sg + 1.0), sig_t = sg * alpha;
            for (int i = 0; i < NLAT; i++) {
                eps[i] = sinf((float)(i * 7 + st));
                double x0 =
                    kind <= PX_SD_EULER_A ? xe[i] - sg * eps[i] : (xe[i] - sig_t * eps[i]) / alpha;
                v[i] = (float)(alpha * eps[i] - sig_t * x0);
            }
            assert_int_equal(px_sd_sampler_step(se, st, eps, xe), PX_OK);
            assert_int_equal(px_sd_sampler_step(sv, st, v, xv), PX_OK);
            for (int i = 0; i < NLAT; i++) {
                if (!(fabsf(xe[i] - xv[i]) <= 1e-3f * (1.0f + fabsf(xe[i])))) {
                    print_error("%s step %d elem %d: eps %g v %g\n",
                                px_sd_sampler_name((px_sd_sampler_kind)kind), st, i, (double)xe[i],
                                (double)xv[i]);
                    fail();
                }
            }
        }
        px_sd_sampler_destroy(se);
        px_sd_sampler_destroy(sv);
    }
}

/* scale_model_input: Euler divides by sqrt(sigma^2 + 1), which the factor
 * input_scale approximates; DPM++ and LCM feed the latent as it is. */
static void test_scale_input(void **state)
{
    (void)state;
    px_sd_config cfg = sd15_config();
    px_sd_rng rng;
    px_sd_rng_seed(&rng, 3);
    for (int kind = 0; kind < 4; kind++) {
        px_sd_sampler *s = NULL;
        px_err err = {0};
        assert_int_equal(px_sd_sampler_create(kind, 4, 0, &cfg, NLAT, &rng, &s, &err), PX_OK);
        float x[NLAT], y[NLAT];
        px_sd_sampler_init(s, x);
        for (int st = 0; st < 4; st++) {
            px_sd_sampler_scale_input(s, st, x, y);
            float sg = px_sd_sampler_sigmas(s)[st];
            float sg2 = sg * sg;
            float div = kind <= PX_SD_EULER_A ? sqrtf(sg2 + 1.0f) : 1.0f;
            float f = px_sd_sampler_input_scale(s, st);
            assert_true(fabsf(f * div - 1.0f) < 1e-6f);
            for (int i = 0; i < NLAT; i++) {
                assert_true(y[i] == x[i] / div);
                assert_true(fabsf(y[i] - x[i] * f) <= 2e-7f * fabsf(y[i]));
            }
            float z[NLAT];
            memcpy(z, x, sizeof z);
            px_sd_sampler_scale_input(s, st, z, z);
            assert_memory_equal(z, y, sizeof z);
        }
        px_sd_sampler_destroy(s);
    }
}

static void test_guidance_embedding(void **state)
{
    (void)state;
    float e[257];
    const float scales[] = {1.0f, 1.5f, 8.5f};
    const double tols[] = {0.0, 1e-4, 5e-3}; /* float32 arguments up to 7500 rad */
    for (int c = 0; c < 3; c++) {
        px_sd_guidance_embedding(scales[c], 256, e);
        double w = ((double)scales[c] - 1.0) * 1000.0;
        for (int j = 0; j < 128; j++) {
            double arg = w * exp(-(double)j * log(10000.0) / 127.0);
            assert_true(fabs(e[j] - sin(arg)) <= tols[c]);
            assert_true(fabs(e[128 + j] - cos(arg)) <= tols[c]);
        }
    }
    e[256] = 9.0f;
    px_sd_guidance_embedding(1.5f, 257, e); /* odd: zero padded */
    assert_true(e[256] == 0.0f);
    assert_true(fabs(e[0] - sin(500.0)) < 1e-4);
}

static void test_names_and_errors(void **state)
{
    (void)state;
    px_sd_sampler_kind k;
    const struct {
        const char *s;
        px_sd_sampler_kind k;
    } ok[] = {{"euler", PX_SD_EULER},       {"Euler", PX_SD_EULER},
              {"euler_a", PX_SD_EULER_A},   {"Euler a", PX_SD_EULER_A},
              {"dpmpp_2m", PX_SD_DPMPP_2M}, {"DPM++ 2M", PX_SD_DPMPP_2M},
              {"lcm", PX_SD_LCM},           {"LCM", PX_SD_LCM}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(px_sd_sampler_parse(ok[i].s, &k), PX_OK);
        assert_int_equal(k, ok[i].k);
    }
    assert_int_equal(px_sd_sampler_parse("DPM++ 2M Karras", &k), PX_EINVAL);
    assert_int_equal(px_sd_sampler_parse("ddim", &k), PX_EINVAL);
    assert_int_equal(px_sd_sampler_parse("", &k), PX_EINVAL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(px_sd_sampler_parse(px_sd_sampler_name(i), &k), PX_OK);
        assert_int_equal(k, i);
        assert_int_equal(px_sd_sampler_parse(px_sd_sampler_a1111(i), &k), PX_OK);
        assert_int_equal(k, i);
    }

    px_sd_config cfg = sd15_config();
    px_sd_rng rng;
    px_sd_rng_seed(&rng, 1);
    px_sd_sampler *s = (px_sd_sampler *)&rng;
    px_err err = {0};
    assert_int_equal(px_sd_sampler_create(PX_SD_EULER, 0, 0, &cfg, NLAT, &rng, &s, &err),
                     PX_EINVAL);
    assert_null(s);
    assert_int_equal(px_sd_sampler_create(PX_SD_LCM, 51, 0, &cfg, NLAT, &rng, &s, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "51 steps"));
    assert_int_equal(px_sd_sampler_create(PX_SD_LCM, 8, 1, &cfg, NLAT, &rng, &s, &err), PX_EINVAL);
    assert_int_equal(px_sd_sampler_create(PX_SD_EULER, 20, 0, &cfg, 0, &rng, &s, &err), PX_EINVAL);
    cfg.beta_end = 0.0f;
    assert_int_equal(px_sd_sampler_create(PX_SD_EULER, 20, 0, &cfg, NLAT, &rng, &s, &err),
                     PX_EINVAL);
    px_sd_sampler_destroy(NULL);

    /* many steps: timesteps stay in range and decrease */
    cfg = sd15_config();
    for (int kind = 0; kind < 4; kind++) {
        int steps = kind == PX_SD_LCM ? 50 : 999;
        assert_int_equal(px_sd_sampler_create(kind, steps, 0, &cfg, 16, &rng, &s, &err), PX_OK);
        for (int i = 0; i < steps; i++) {
            float t = px_sd_sampler_timestep(s, i);
            assert_true(t >= 0.0f && t <= 1000.0f);
            if (i > 0)
                assert_true(t < px_sd_sampler_timestep(s, i - 1));
        }
        px_sd_sampler_destroy(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_golden_noise),   cmocka_unit_test(test_rng_scalar_path),
        cmocka_unit_test(test_rng_seed_and_tail),  cmocka_unit_test(test_euler_golden),
        cmocka_unit_test(test_euler_a_golden),     cmocka_unit_test(test_dpmpp2m_golden),
        cmocka_unit_test(test_lcm_golden),         cmocka_unit_test(test_karras_sigmas),
        cmocka_unit_test(test_v_prediction),       cmocka_unit_test(test_scale_input),
        cmocka_unit_test(test_guidance_embedding), cmocka_unit_test(test_names_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Noise schedules and samplers for Stable Diffusion, reproducing diffusers'
 * (v0.27) EulerDiscrete, EulerAncestralDiscrete, DPMSolverMultistep (2M,
 * "dpmsolver++", midpoint, lower-order final step) and LCM schedulers with
 * timestep_spacing "leading", so a seed gives diffusers' image.
 *
 * How it matches: diffusers builds the training schedule in float32 torch
 * tensors (betas from torch.linspace, alphas_cumprod by torch.cumprod, which
 * accumulates in double) and runs every step as separate float32 tensor
 * operations. We do the same operations in the same order in float (C11
 * without contraction rounds each one on its own), so with the golden UNet
 * outputs fed in, each step lands on diffusers' latents to the last bit or
 * within an ulp or two (torch's log/exp of 0-d tensors use SLEEF, we use
 * libm). Schedules that diffusers computes with numpy in float64 (timestep
 * selection, interpolation, Karras spacing) are computed in double here.
 * Karras sigmas (rho 7) follow each scheduler's own _convert_to_karras range:
 * Euler and Euler a take the ends of the selected leading-spaced sigmas,
 * DPM++ 2M the whole training range.
 *
 * All buffers are allocated by px_sd_sampler_create; stepping allocates
 * nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sd_internal.h"

#define LCM_ORIGINAL_STEPS 50 /* LCMScheduler original_inference_steps (LCM-distilled SD 1.5) */
#define LCM_TIMESTEP_SCALING 10.0f
#define LCM_SIGMA_DATA 0.5f
#define KARRAS_RHO 7.0

struct px_sd_sampler {
    px_sd_sampler_kind kind;
    int steps;
    int prediction_v;
    size_t n;
    px_sd_rng *rng;   /* borrowed */
    float init_sigma; /* init_noise_sigma */
    float *sigmas;    /* (steps + 1,), last 0 */
    float *timesteps; /* (steps,) as fed to the UNet */
    float *alpha_cp;  /* (steps,) LCM: alphas_cumprod at each timestep */
    float *x0_cur;    /* (n,) DPM++ 2M: data prediction of this step */
    float *x0_prev;   /* (n,) DPM++ 2M: data prediction of the previous step */
    float *noise;     /* (n,) Euler, Euler a, LCM: noise drawn by a step */
};

/* ---------------------------------------------------------------------- names */

static const char *const k_names[] = {"euler", "euler_a", "dpmpp_2m", "lcm"};
static const char *const k_a1111[] = {"Euler", "Euler a", "DPM++ 2M", "LCM"};

const char *px_sd_sampler_name(px_sd_sampler_kind k)
{
    return (unsigned)k < 4 ? k_names[k] : "unknown";
}

const char *px_sd_sampler_a1111(px_sd_sampler_kind k)
{
    return (unsigned)k < 4 ? k_a1111[k] : "unknown";
}

int px_sd_sampler_parse(const char *name, px_sd_sampler_kind *out)
{
    /* our names, A1111's display names, and the k-diffusion / ComfyUI spellings */
    static const struct {
        const char *name;
        px_sd_sampler_kind kind;
    } k_alias[] = {
        {"euler", PX_SD_EULER},
        {"k_euler", PX_SD_EULER},
        {"euler_a", PX_SD_EULER_A},
        {"euler a", PX_SD_EULER_A},
        {"euler_ancestral", PX_SD_EULER_A},
        {"k_euler_a", PX_SD_EULER_A},
        {"k_euler_ancestral", PX_SD_EULER_A},
        {"dpmpp_2m", PX_SD_DPMPP_2M},
        {"dpm++ 2m", PX_SD_DPMPP_2M},
        {"dpmpp2m", PX_SD_DPMPP_2M},
        {"dpm++2m", PX_SD_DPMPP_2M},
        {"k_dpmpp_2m", PX_SD_DPMPP_2M},
        {"lcm", PX_SD_LCM},
    };
    if (!name)
        return PX_EINVAL;
    for (size_t i = 0; i < sizeof k_alias / sizeof k_alias[0]; i++) {
        if (strcasecmp(name, k_alias[i].name) == 0) {
            *out = k_alias[i].kind;
            return PX_OK;
        }
    }
    return PX_EINVAL;
}

/* ------------------------------------------------------------------ schedules */

/* torch.linspace(a, b, n, dtype=float32) as torch 1.13 computes it on x86
 * (AVX2 build): a float step, the first half counted up from a and the
 * second down from b, in vectors of 8 whose lanes add k*step to the
 * vector's first value, multiply-adds fused by the compiler; the last
 * n % 16 values one by one. The lane arithmetic changes betas by an ulp
 * here and there, which is enough to move some sigmas by an ulp. */
static void torch_linspace_f32(float a, float b, int n, float *out)
{
    float step = (b - a) / (float)(n - 1);
    int half = n / 2;
    int idx = 0;
    for (; idx + 16 <= n; idx += 8) {
        float base = idx < half ? fmaf(step, (float)idx, a) : fmaf(-step, (float)(n - idx - 1), b);
        out[idx] = base;
        for (int k = 1; k < 8; k++)
            out[idx + k] = fmaf((float)k, step, base);
    }
    for (; idx < n; idx++)
        out[idx] = idx < half ? fmaf(step, (float)idx, a) : fmaf(-step, (float)(n - idx - 1), b);
}

/* The double a JSON config meant by the float we were given: the shortest
 * decimal that reads back as f (0.00085f -> 0.00085, not 0.000850000016).
 * diffusers takes sqrt of that double, and the float sqrt can differ. */
static double config_double(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

/* alphas_cumprod (T,) of the "scaled_linear" schedule, in float32 as diffusers
 * keeps it: betas = linspace(sqrt(b0), sqrt(b1), T)^2, cumprod in double. */
static void alphas_cumprod(const px_sd_config *cfg, float *ac)
{
    int T = cfg->train_timesteps;
    float a = (float)sqrt(config_double(cfg->beta_start));
    float b = (float)sqrt(config_double(cfg->beta_end));
    torch_linspace_f32(a, b, T, ac);
    double acc = 1.0;
    for (int i = 0; i < T; i++) {
        float beta = ac[i] * ac[i];
        float alpha = 1.0f - beta;
        acc *= (double)alpha;
        ac[i] = (float)acc;
    }
}

/* sigma^2 + 1 rounded after each operation, as the two tensor ops do (kept
 * apart so that no compiler fuses them) */
static float sq_plus_1(float sigma)
{
    float s2 = sigma * sigma;
    return s2 + 1.0f;
}

/* sigma of a training timestep, ((1 - ac) / ac) ** 0.5 in float32 */
static float sigma_of(float ac)
{
    float num = 1.0f - ac;
    return sqrtf(num / ac);
}

/* diffusers' _sigma_to_t: the (fractional) training timestep whose log-sigma,
 * interpolated linearly between neighbours, is log(sigma). */
static double sigma_to_t(double sigma, const float *log_sigmas, int T)
{
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int i = 0; i < T; i++) {
        if (ls - (double)log_sigmas[i] >= 0.0)
            low = i;
    }
    if (low > T - 2)
        low = T - 2;
    double lo = log_sigmas[low], hi = log_sigmas[low + 1];
    double w = (lo - ls) / (lo - hi);
    w = w < 0.0 ? 0.0 : (w > 1.0 ? 1.0 : w);
    return (1.0 - w) * low + w * (low + 1);
}

/* Karras et al. spacing between smax and smin (diffusers _convert_to_karras) */
static void karras(double smin, double smax, int steps, double *out)
{
    double min_inv = pow(smin, 1.0 / KARRAS_RHO);
    double max_inv = pow(smax, 1.0 / KARRAS_RHO);
    double dr = steps > 1 ? 1.0 / (double)(steps - 1) : 0.0;
    for (int i = 0; i < steps; i++) {
        double ramp = (i == steps - 1 && steps > 1) ? 1.0 : (double)i * dr;
        out[i] = pow(max_inv + ramp * (min_inv - max_inv), KARRAS_RHO);
    }
}

/* Timesteps and sigmas for one scheduler. ac and sig_full are (T,). */
static void make_schedule(px_sd_sampler *s, const px_sd_config *cfg, int karras_on, const float *ac,
                          const float *sig_full, float *log_sig, double *tmp)
{
    int T = cfg->train_timesteps, steps = s->steps, off = cfg->steps_offset;
    for (int i = 0; i < T; i++)
        log_sig[i] = (float)log((double)sig_full[i]);
    s->sigmas[steps] = 0.0f;

    if (s->kind == PX_SD_LCM) {
        /* LCMScheduler: the distillation's 50-step grid k*j - 1, walked down
         * at floor(linspace(0, 50, steps, endpoint=False)) */
        int k = T / LCM_ORIGINAL_STEPS;
        double dstep = (double)LCM_ORIGINAL_STEPS / (double)steps;
        for (int i = 0; i < steps; i++) {
            int idx = (int)floor((double)i * dstep);
            int t = (LCM_ORIGINAL_STEPS - idx) * k - 1;
            s->timesteps[i] = (float)t;
            s->alpha_cp[i] = ac[t];
            s->sigmas[i] = sig_full[t];
        }
        return;
    }
    if (s->kind == PX_SD_DPMPP_2M) {
        /* leading spacing over steps + 1 intervals, dropping the last (t = 0) */
        int ratio = T / (steps + 1);
        for (int i = 0; i < steps; i++) {
            int t = (steps - i) * ratio + off;
            if (t > T - 1)
                t = T - 1; /* np.interp clamps at the ends */
            s->timesteps[i] = (float)((steps - i) * ratio + off);
            s->sigmas[i] = sig_full[t];
        }
        if (karras_on) {
            karras((double)sig_full[0], (double)sig_full[T - 1], steps, tmp);
            for (int i = 0; i < steps; i++) {
                s->timesteps[i] = (float)nearbyint(sigma_to_t(tmp[i], log_sig, T));
                s->sigmas[i] = (float)tmp[i];
            }
        }
        return;
    }
    /* Euler, Euler a: leading spacing over steps intervals */
    int ratio = T / steps;
    for (int i = 0; i < steps; i++) {
        int t = (steps - 1 - i) * ratio + off;
        s->timesteps[i] = (float)t;
        s->sigmas[i] = sig_full[t > T - 1 ? T - 1 : t];
    }
    if (karras_on) {
        karras((double)s->sigmas[steps - 1], (double)s->sigmas[0], steps, tmp);
        for (int i = 0; i < steps; i++) {
            s->timesteps[i] = (float)sigma_to_t(tmp[i], log_sig, T);
            s->sigmas[i] = (float)tmp[i];
        }
    }
}

/* ------------------------------------------------------------------- lifetime */

static int check_args(px_sd_sampler_kind kind, int steps, int karras_on, const px_sd_config *cfg,
                      size_t n, px_sd_rng *rng, px_err *err)
{
    if ((unsigned)kind > PX_SD_LCM)
        return px_err_set(err, PX_EINVAL, "sampler: unknown kind %d", (int)kind);
    if (!cfg || !rng || n == 0 || n > SIZE_MAX / sizeof(float) / 2)
        return px_err_set(err, PX_EINVAL, "sampler: needs a config, an rng and n > 0 latents");
    int T = cfg->train_timesteps;
    if (T < LCM_ORIGINAL_STEPS || T > 100000)
        return px_err_set(err, PX_EINVAL, "sampler: train_timesteps %d, expected 50..100000", T);
    if (!(cfg->beta_start > 0.0f) || !(cfg->beta_end >= cfg->beta_start) || !(cfg->beta_end < 1.0f))
        return px_err_set(err, PX_EINVAL,
                          "sampler: betas %g..%g, expected 0 < beta_start <= beta_end < 1",
                          (double)cfg->beta_start, (double)cfg->beta_end);
    if (cfg->steps_offset < 0 || cfg->steps_offset >= T)
        return px_err_set(err, PX_EINVAL, "sampler: steps_offset %d, expected 0..%d",
                          cfg->steps_offset, T - 1);
    int max_steps = kind == PX_SD_LCM ? LCM_ORIGINAL_STEPS : T - 1;
    if (steps < 1 || steps > max_steps)
        return px_err_set(err, PX_EINVAL, "sampler %s: %d steps, expected 1..%d",
                          px_sd_sampler_name(kind), steps, max_steps);
    if (karras_on && kind == PX_SD_LCM)
        return px_err_set(err, PX_EINVAL, "sampler lcm: Karras sigmas do not apply to LCM");
    return PX_OK;
}

int px_sd_sampler_create(px_sd_sampler_kind kind, int steps, int karras_on, const px_sd_config *cfg,
                         size_t n, px_sd_rng *rng, px_sd_sampler **out, px_err *err)
{
    *out = NULL;
    int rc = check_args(kind, steps, karras_on, cfg, n, rng, err);
    if (rc != PX_OK)
        return rc;
    int T = cfg->train_timesteps;
    px_sd_sampler *s = px_calloc(1, sizeof *s);
    float *ac = px_malloc((size_t)T * sizeof(float));
    float *sig_full = px_malloc((size_t)T * sizeof(float));
    float *log_sig = px_malloc((size_t)T * sizeof(float));
    double *tmp = px_malloc((size_t)steps * sizeof(double));
    if (s) {
        s->kind = kind;
        s->steps = steps;
        s->prediction_v = cfg->prediction_v;
        s->n = n;
        s->rng = rng;
        s->sigmas = px_malloc((size_t)(steps + 1) * sizeof(float));
        s->timesteps = px_malloc((size_t)steps * sizeof(float));
        s->alpha_cp = px_malloc((size_t)steps * sizeof(float));
        if (kind == PX_SD_DPMPP_2M) {
            s->x0_cur = px_malloc(n * sizeof(float));
            s->x0_prev = px_malloc(n * sizeof(float));
        }
        if (kind != PX_SD_DPMPP_2M)
            s->noise = px_malloc(n * sizeof(float));
    }
    int dpm = kind == PX_SD_DPMPP_2M, noisy = !dpm;
    if (!s || !ac || !sig_full || !log_sig || !tmp || !s->sigmas || !s->timesteps || !s->alpha_cp ||
        (dpm && (!s->x0_cur || !s->x0_prev)) || (noisy && !s->noise)) {
        free(ac);
        free(sig_full);
        free(log_sig);
        free(tmp);
        px_sd_sampler_destroy(s);
        return px_err_set(err, PX_ENOMEM, "sampler: out of memory for %zu latents", n);
    }
    alphas_cumprod(cfg, ac);
    for (int i = 0; i < T; i++)
        sig_full[i] = sigma_of(ac[i]);
    make_schedule(s, cfg, karras_on, ac, sig_full, log_sig, tmp);
    free(ac);
    free(sig_full);
    free(log_sig);
    free(tmp);

    if (kind == PX_SD_EULER || kind == PX_SD_EULER_A) {
        /* leading spacing: sqrt(sigma_max^2 + 1), in float32 like the tensor */
        float mx = 0.0f;
        for (int i = 0; i <= steps; i++)
            mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
        s->init_sigma = sqrtf(sq_plus_1(mx));
    } else {
        s->init_sigma = 1.0f;
    }
    *out = s;
    return PX_OK;
}

void px_sd_sampler_destroy(px_sd_sampler *s)
{
    if (!s)
        return;
    free(s->sigmas);
    free(s->timesteps);
    free(s->alpha_cp);
    free(s->x0_cur);
    free(s->x0_prev);
    free(s->noise);
    free(s);
}

void px_sd_sampler_init(px_sd_sampler *s, float *latent)
{
    px_sd_rng_randn(s->rng, latent, s->n);
    if (s->init_sigma != 1.0f) {
        for (size_t i = 0; i < s->n; i++)
            latent[i] = latent[i] * s->init_sigma;
    }
}

float px_sd_sampler_timestep(const px_sd_sampler *s, int i)
{
    return (i >= 0 && i < s->steps) ? s->timesteps[i] : 0.0f;
}

float px_sd_sampler_input_scale(const px_sd_sampler *s, int i)
{
    if (s->kind == PX_SD_DPMPP_2M || s->kind == PX_SD_LCM || i < 0 || i >= s->steps)
        return 1.0f;
    float sg = s->sigmas[i];
    return 1.0f / sqrtf(sq_plus_1(sg));
}

void px_sd_sampler_scale_input(const px_sd_sampler *s, int i, const float *latent, float *x_in)
{
    if (s->kind == PX_SD_DPMPP_2M || s->kind == PX_SD_LCM || i < 0 || i >= s->steps) {
        if (x_in != latent)
            memcpy(x_in, latent, s->n * sizeof(float));
        return;
    }
    float div = sqrtf(sq_plus_1(s->sigmas[i]));
    for (size_t k = 0; k < s->n; k++)
        x_in[k] = latent[k] / div;
}

const float *px_sd_sampler_sigmas(const px_sd_sampler *s)
{
    return s->sigmas;
}

const float *px_sd_sampler_timesteps(const px_sd_sampler *s)
{
    return s->timesteps;
}

/* ---------------------------------------------------------------------- steps */

/* EulerDiscrete (s_churn 0) and EulerAncestralDiscrete. */
static void step_euler(px_sd_sampler *s, int i, const float *eps, float *x)
{
    float sigma = s->sigmas[i], next = s->sigmas[i + 1];
    float up = 0.0f, dt;
    if (s->kind == PX_SD_EULER_A) {
        float from2 = sigma * sigma, to2 = next * next;
        float diff = from2 - to2;
        float num = to2 * diff;
        up = sqrtf(num / from2);
        float up2 = up * up;
        float down = sqrtf(to2 - up2);
        dt = down - sigma;
    } else {
        dt = next - sigma;
    }
    /* v-prediction: x0 = v * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1) */
    float s2p1 = sq_plus_1(sigma);
    float vc = -sigma / sqrtf(s2p1);
    for (size_t k = 0; k < s->n; k++) {
        float x0;
        if (s->prediction_v) {
            float a = eps[k] * vc;
            float b = x[k] / s2p1;
            x0 = a + b;
        } else {
            float se = sigma * eps[k];
            x0 = x[k] - se;
        }
        float d = (x[k] - x0) / sigma;
        float move = d * dt;
        x[k] = x[k] + move;
    }
    /* diffusers draws noise on every step, the last one included, and plain
     * Euler too (it would be used only with s_churn > 0): drawing it keeps
     * the generator where diffusers leaves it, for whatever draws next */
    px_sd_rng_randn(s->rng, s->noise, s->n);
    if (s->kind == PX_SD_EULER_A) {
        for (size_t k = 0; k < s->n; k++) {
            float add = s->noise[k] * up;
            x[k] = x[k] + add;
        }
    }
}

/* alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t, lambda = log(alpha/sigma) */
static void dpm_alpha_sigma(float sigma, float *alpha, float *sig, float *lambda)
{
    float r = sqrtf(sq_plus_1(sigma));
    *alpha = 1.0f / r;
    *sig = sigma * *alpha;
    *lambda = logf(*alpha) - logf(*sig);
}

/* DPMSolverMultistep, dpmsolver++ 2M midpoint: first order on the first step
 * and on the last (lower_order_final; final sigma 0), second order between. */
static void step_dpmpp_2m(px_sd_sampler *s, int i, const float *eps, float *x)
{
    float a_s0, s_s0, l_s0, a_t, s_t, l_t;
    dpm_alpha_sigma(s->sigmas[i], &a_s0, &s_s0, &l_s0);
    dpm_alpha_sigma(s->sigmas[i + 1], &a_t, &s_t, &l_t);
    float *m0 = s->x0_cur, *m1 = s->x0_prev;
    for (size_t k = 0; k < s->n; k++) {
        if (s->prediction_v) {
            float a = a_s0 * x[k];
            float b = s_s0 * eps[k];
            m0[k] = a - b;
        } else {
            float se = s_s0 * eps[k];
            float num = x[k] - se;
            m0[k] = num / a_s0;
        }
    }
    float h = l_t - l_s0;
    float ratio = s_t / s_s0;
    float em1 = expf(-h) - 1.0f;
    float b0 = a_t * em1;
    if (i == 0 || i == s->steps - 1) {
        for (size_t k = 0; k < s->n; k++) {
            float a = ratio * x[k];
            float b = b0 * m0[k];
            x[k] = a - b;
        }
    } else {
        float a_s1, s_s1, l_s1;
        dpm_alpha_sigma(s->sigmas[i - 1], &a_s1, &s_s1, &l_s1);
        float h0 = l_s0 - l_s1;
        float r0 = h0 / h;
        float inv_r0 = 1.0f / r0;
        float b1 = 0.5f * b0;
        for (size_t k = 0; k < s->n; k++) {
            float dm = m0[k] - m1[k];
            float d1 = inv_r0 * dm;
            float a = ratio * x[k];
            float b = b0 * m0[k];
            float c = b1 * d1;
            float ab = a - b;
            x[k] = ab - c;
        }
    }
    s->x0_prev = m0; /* this step's prediction is the next step's m1 */
    s->x0_cur = m1;
}

/* LCMScheduler: consistency-model boundary scalings, then re-noise to the
 * next timestep (all but the last step). */
static void step_lcm(px_sd_sampler *s, int i, const float *eps, float *x)
{
    float a_t = s->alpha_cp[i];
    float b_t = 1.0f - a_t;
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float st = s->timesteps[i] * LCM_TIMESTEP_SCALING;
    float sd2 = LCM_SIGMA_DATA * LCM_SIGMA_DATA;
    float st2 = st * st;
    float den = st2 + sd2;
    float c_skip = (1.0f / den) * sd2; /* python scalar / tensor: reciprocal, then multiply */
    float c_out = st / sqrtf(den);
    int last = i == s->steps - 1;
    if (!last)
        px_sd_rng_randn(s->rng, s->noise, s->n);
    float a_p = last ? a_t : s->alpha_cp[i + 1];
    float sap = sqrtf(a_p), sbp = sqrtf(1.0f - a_p);
    for (size_t k = 0; k < s->n; k++) {
        float x0;
        if (s->prediction_v) {
            float a = sa * x[k];
            float b = sb * eps[k];
            x0 = a - b;
        } else {
            float se = sb * eps[k];
            float num = x[k] - se;
            x0 = num / sa;
        }
        float p = c_out * x0;
        float q = c_skip * x[k];
        float denoised = p + q;
        if (last) {
            x[k] = denoised;
        } else {
            float u = sap * denoised;
            float w = sbp * s->noise[k];
            x[k] = u + w;
        }
    }
}

int px_sd_sampler_step(px_sd_sampler *s, int i, const float *eps, float *latent)
{
    if (!s || i < 0 || i >= s->steps || !eps || !latent)
        return PX_EINVAL;
    switch (s->kind) {
    case PX_SD_EULER:
    case PX_SD_EULER_A:
        step_euler(s, i, eps, latent);
        break;
    case PX_SD_DPMPP_2M:
        step_dpmpp_2m(s, i, eps, latent);
        break;
    case PX_SD_LCM:
        step_lcm(s, i, eps, latent);
        break;
    }
    return PX_OK;
}

/* ------------------------------------------------------- LCM guidance embedding */

void px_sd_guidance_embedding(float guidance_scale, int dim, float *out)
{
    if (dim <= 0)
        return;
    /* torch.tensor(scale - 1) is float32; the rest are float32 tensor ops */
    float w = (float)((double)guidance_scale - 1.0);
    w = w * 1000.0f;
    int half = dim / 2;
    float f = half > 1 ? logf(10000.0f) / (float)(half - 1) : 0.0f;
    for (int j = 0; j < half; j++) {
        float e = (float)j * -f;
        float arg = w * expf(e);
        out[j] = sinf(arg);
        out[half + j] = cosf(arg);
    }
    if (dim % 2)
        out[dim - 1] = 0.0f;
}

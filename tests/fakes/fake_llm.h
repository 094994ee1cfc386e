/*
 * fake_llm: a test double of an OpenAI-compatible chat server
 * (POST /v1/chat/completions), in the test's process on 127.0.0.1 at a
 * random port (libmicrohttpd). In "valid" mode it answers the number of
 * scenes the request's json_schema asks for (maxItems, else 8), composed
 * from large word lists with a generator seeded by the request count, so
 * answers are varied. Other modes answer what real models and servers get
 * wrong: prose instead of JSON, JSON of the wrong shape, the same scenes
 * every time, HTTP errors. Thread-safe.
 *
 * Kinds (fake_llm_set_kind) behave like the real servers, as read in their
 * sources and seen against them (docs/generate.md, "Servers we have tried"):
 *   LLAMACPP_OLD  llama-server b4747: GET /props (build_info, model_path,
 *                 default_generation_settings.n_ctx), /v1/models owned_by
 *                 "llamacpp", POST /apply-template and /tokenize; a nested
 *                 response_format json_schema is accepted and ignored (only a
 *                 top-level "json_schema" or {"type":"json_object","schema"}
 *                 constrain), and without max_tokens it stops after 1 token
 *                 (its n_predict default); the answer's "model" echoes the request
 *   LLAMACPP      a later llama-server (b5200): the nested form works too
 *   OLLAMA        GET /api/version, /api/tags, POST /api/show (context_length),
 *                 POST /api/chat with "format": schema and options.num_predict;
 *                 no model: HTTP 400
 *   VLLM          GET /version, /v1/models (owned_by "vllm", max_model_len),
 *                 POST /tokenize of chat messages; "guided_json" or response_format;
 *                 an unknown model: HTTP 404; over max_model_len: HTTP 400
 *   OPENAI        (default) the behaviour above; GET /v1/models lists two models
 *   OPENAI_REASONING  as OPENAI, but "max_tokens" is refused (HTTP 400, OpenAI's wording)
 *                 and "max_completion_tokens" is the limit
 * Unconstrained requests of the first four get prose, as a model without a
 * grammar writes. Tokens are counted as 4 bytes each; an answer over
 * max_tokens is cut there with finish_reason "length".
 */
#ifndef FAKE_LLM_H
#define FAKE_LLM_H

typedef struct fake_llm fake_llm;

enum {
    FAKE_LLM_VALID = 0,  /* {"prompts": [...]} with fresh scenes */
    FAKE_LLM_FENCED,     /* the same, wrapped in ```json fences and chatter */
    FAKE_LLM_PROSE,      /* content is not JSON at all */
    FAKE_LLM_WRONG,      /* JSON without a prompts array ({"scenes": 3}) */
    FAKE_LLM_BROKEN,     /* the HTTP body itself is not JSON */
    FAKE_LLM_REPEAT,     /* the same fixed scenes on every call */
    FAKE_LLM_HTTP500,    /* HTTP 500 */
};

enum {
    FAKE_LLM_KIND_OPENAI = 0,
    FAKE_LLM_KIND_LLAMACPP_OLD,
    FAKE_LLM_KIND_LLAMACPP,
    FAKE_LLM_KIND_OLLAMA,
    FAKE_LLM_KIND_VLLM,
    FAKE_LLM_KIND_OPENAI_REASONING, /* OPENAI whose model refuses "max_tokens" (HTTP 400
                                     * naming "max_completion_tokens"), as OpenAI's o-series do */
};

int fake_llm_start(fake_llm **out); /* 0 or -1 */
void fake_llm_stop(fake_llm *f);    /* NULL is a no-op */
const char *fake_llm_url(const fake_llm *f);
void fake_llm_set_mode(fake_llm *f, int mode);
/* the next n answers use bad_mode, then the mode set above */
void fake_llm_bad_next(fake_llm *f, int n, int bad_mode);
int fake_llm_requests(const fake_llm *f);
/* malloc'd copy of the last request body, or NULL; caller frees */
char *fake_llm_last_request(const fake_llm *f);
/* server kind (FAKE_LLM_KIND_*), its context in tokens (default 4096) */
void fake_llm_set_kind(fake_llm *f, int kind);
void fake_llm_set_ctx(fake_llm *f, int n_ctx);
/* every chat answer waits this long first (default 0) */
void fake_llm_set_delay_ms(fake_llm *f, int ms);
/* chat answers given without a schema the server honoured (prose) */
int fake_llm_unconstrained(const fake_llm *f);
/* the Authorization header of the last request ("" when none), copied into buf */
void fake_llm_last_auth(const fake_llm *f, char *buf, int cap);

#endif

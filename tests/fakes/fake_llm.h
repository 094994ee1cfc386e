/*
 * fake_llm: a test double of an OpenAI-compatible chat server
 * (POST /v1/chat/completions), in the test's process on 127.0.0.1 at a
 * random port (libmicrohttpd). In "valid" mode it answers the number of
 * scenes the request's json_schema asks for (maxItems, else 8), composed
 * from large word lists with a generator seeded by the request count, so
 * answers are varied. Other modes answer what real models and servers get
 * wrong: prose instead of JSON, JSON of the wrong shape, the same scenes
 * every time, HTTP errors. Thread-safe.
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

int fake_llm_start(fake_llm **out); /* 0 or -1 */
void fake_llm_stop(fake_llm *f);    /* NULL is a no-op */
const char *fake_llm_url(const fake_llm *f);
void fake_llm_set_mode(fake_llm *f, int mode);
/* the next n answers use bad_mode, then the mode set above */
void fake_llm_bad_next(fake_llm *f, int n, int bad_mode);
int fake_llm_requests(const fake_llm *f);
/* malloc'd copy of the last request body, or NULL; caller frees */
char *fake_llm_last_request(const fake_llm *f);
/* the Authorization header of the last request ("" when none), copied into buf */
void fake_llm_last_auth(const fake_llm *f, char *buf, int cap);

#endif

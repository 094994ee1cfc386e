/*
 * The SHA-256 of a file, for the start-up log line that says which model the
 * bot runs (a path alone does not tell two versions of a model apart).
 * OpenSSL's EVP digest, fed in 64 KB reads so a large model is not loaded
 * into memory a second time.
 */
#include <openssl/evp.h>
#include <stdio.h>

#include "px_bot.h"

int px_bot_file_sha256(const char *path, char hex[65], px_err *err)
{
    hex[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return px_err_set(err, PX_EIO, "bot: cannot open %s to hash it", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, n);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    fclose(f);
    if (!ok)
        return px_err_set(err, PX_EIO, "bot: hashing %s failed", path);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return PX_OK;
}

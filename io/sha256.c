/* SHA-256 of a whole file: the shard content digest that lets scoring skip a shard whose
 * output already names the same source. OpenSSL's libcrypto (EVP) computes it: maintained,
 * and it uses the CPU's SHA extensions where they exist (about 10x the plain C this
 * replaced; docs/PERFORMANCE.md, "Shard digest"). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/shard.h"

ms_status_t ms_file_sha256(const char *path, char out[65])
{
    ms_status_t st = MS_OK;
    enum { BUF = 1 << 20 }; /* large reads: the digest runs at GB/s, syscalls must not show */
    uint8_t *buf = NULL;
    EVP_MD_CTX *ctx = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return MS_ERR(MS_EIO, "cannot read %s: %s", path, strerror(errno));
    MS_ALLOC(buf, BUF, "digest buffer");
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        MS_FAIL(MS_ENOMEM, "cannot start a SHA-256 digest (OpenSSL EVP) of %s", path);
    for (;;) {
        ssize_t n = read(fd, buf, BUF);
        if (n < 0 && errno == EINTR)
            continue; /* a signal (score stops after the current image, not here) */
        if (n < 0)
            MS_FAIL(MS_EIO, "read error in %s: %s", path, strerror(errno));
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            MS_FAIL(MS_EINTERNAL, "SHA-256 (OpenSSL EVP_DigestUpdate) of %s failed", path);
    }
    unsigned char md[32];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != 32)
        MS_FAIL(MS_EINTERNAL, "SHA-256 (OpenSSL EVP_DigestFinal_ex) of %s failed", path);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return st;
}

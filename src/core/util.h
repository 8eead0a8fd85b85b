/* util.h - small, widely used helpers: time, hex, random bytes. */
#ifndef CF_CORE_UTIL_H
#define CF_CORE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Microseconds since the Unix epoch, UTC. */
int64_t cf_time_now_us(void);

/* Writes us as RFC 3339 UTC with microseconds ("2026-11-25T20:43:28.123456Z") into buf,
 * which must hold CF_TIME_STR_MAX bytes. Returns buf. */
#define CF_TIME_STR_MAX 32
char *cf_time_format(int64_t us, char *buf);

/* Writes len bytes of data as hex (upper case if upper) plus a NUL into out, which must
 * hold 2 * len + 1 bytes. Returns out. */
char *cf_hex_encode(const unsigned char *data, size_t len, int upper, char *out);

/* The value of hex digit c (either case), or -1. */
int cf_hex_digit(char c);

/* Decodes exactly 2 * outlen hex digits from hex into out. Returns 0, or -1 when hex is not
 * that many hex digits. */
int cf_hex_decode(const char *hex, unsigned char *out, size_t outlen);

/* Fills buf with len bytes from the OS's CSPRNG (via OpenSSL). */
cf_err cf_random_bytes(unsigned char *buf, size_t len, cf_error *err);

/* strdup that aborts on allocation failure: for small strings whose loss would be fatal
 * anyway. NULL in, NULL out. */
char *cf_strdup(const char *s);

/* Compares a and b in time that depends only on len. Returns 1 if equal. */
int cf_ct_equal(const void *a, const void *b, size_t len);

/* Asks the C library to keep large freed blocks (up to 512 MiB) for reuse instead of
 * handing them back to the kernel. A CRL of a million entries is about 50 MB, rebuilt on
 * every revocation: a fresh mapping of that size costs its page faults and zeroing again
 * each time (a third of a rebuild); kept memory is reused warm. For the programs (main), not
 * for the library. */
void cf_keep_large_blocks(void);

#endif

/* fuzz_store_url.c - store URLs (--store, $CERTFLEET_STORE): cf_store_open must refuse
 * what it cannot open with a message, never crash.
 *
 * Kept off the network and inside a private directory: inputs that start with "postgres"
 * are skipped (they would connect to a real host), and the path of a "sqlite:" URL is
 * placed under the fuzzer's temporary directory, with ".." refused, so an input can neither
 * reach another file nor be read by SQLite as a "file:" URI. Every other input goes in as
 * it is. Seeds: corpus/fuzz_store_url/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "store/store.h"

#define URL_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char raw[URL_MAX], url[URL_MAX + 256];
    cf_store *st = NULL;
    cf_error err;

    if (size >= sizeof raw)
        return 0;
    memcpy(raw, data, size);
    raw[size] = '\0';
    if (strncmp(raw, "postgres", 8) == 0)
        return 0;
    if (strncmp(raw, "sqlite:", 7) == 0) {
        if (strstr(raw, ".."))
            return 0;
        snprintf(url, sizeof url, "sqlite:%s/%s", fz_tmpdir(), raw + 7);
    } else {
        snprintf(url, sizeof url, "%s", raw);
    }
    if (cf_store_open(url, &st, &err) == CF_OK) {
        int64_t version = 0;
        if (cf_store_schema_version(st, &version, &err) != CF_OK ||
            version != cf_store_schema_latest()) {
            fprintf(stderr, "fuzz_store_url: %s opened at schema %lld, expected %d\n", url,
                    (long long)version, cf_store_schema_latest());
            abort();
        }
        cf_store_close(st);
    }
    fz_tmpdir_clear();
    return 0;
}

/* p7walk.h - estload's look into an EST enrollment reply, without decoding it.
 *
 * OpenSSL's full decode of a certs-only PKCS#7 (every certificate's extensions cached, its
 * key decoded through the provider lookup) costs the load generator a sixth of a TLS
 * handshake: CPU time the server it shares the machine with would lose. This walks the DER
 * with ASN1_get_object instead, as far as each certificate's SubjectPublicKeyInfo. */
#ifndef CF_BENCH_P7WALK_H
#define CF_BENCH_P7WALK_H

#include <stddef.h>

/* Whether der (exactly len bytes of DER) is a ContentInfo of type signedData whose
 * certificates include one with the SubjectPublicKeyInfo spki (DER, spki_len bytes).
 * Indefinite lengths (BER) are refused; nothing beyond the path to the keys is checked. */
int p7_certs_only_has_key(const unsigned char *der, size_t len, const unsigned char *spki,
                          int spki_len);

#endif

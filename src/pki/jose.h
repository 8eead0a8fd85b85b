/* jose.h - the pieces of JOSE (RFC 7515 JWS, RFC 7517 JWK, RFC 7518 ES256) that signed
 * secure-element manifests use: base64url and base64 codecs, ES256 verification of a JWS
 * given as its base64url parts, EC JWK import and x5t#S256 thumbprints.
 *
 * Every decoder here is strict: no whitespace, no padding where the encoding has none, and
 * no non-zero bits in the unused low bits of the last character, so each byte string has
 * exactly one accepted encoding (a changed character never decodes to the same bytes). */
#ifndef CF_PKI_JOSE_H
#define CF_PKI_JOSE_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "core/err.h"
#include "pki/ecfixed.h"

/* Decodes base64url (RFC 4648 §5, without '=' padding, as RFC 7515 §2 requires) of inlen
 * characters into a new buffer (*out: free(); one spare NUL byte follows the *outlen bytes,
 * so decoded JSON can be handed on as a string). CF_ERR_INVALID says which character or
 * length is wrong; CF_ERR_NOMEM. */
cf_err cf_b64url_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen,
                        cf_error *err);

/* Decodes standard base64 (RFC 4648 §4, '+' '/' and mandatory '=' padding), as JWK x5c
 * (RFC 7517 §4.7) uses; otherwise as cf_b64url_decode. */
cf_err cf_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen,
                     cf_error *err);

/* Encodes len bytes as base64url without padding into out, which must hold
 * CF_B64URL_LEN(len) + 1 bytes. Returns out. */
#define CF_B64URL_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
char *cf_b64url_encode(const unsigned char *data, size_t len, char *out);

/* An x5t#S256 thumbprint (RFC 7515 §4.1.8): base64url of the SHA-256 of a certificate's
 * DER, 43 characters. */
#define CF_JOSE_X5T_MAX 44
cf_err cf_jose_x5t_s256(X509 *cert, char out[CF_JOSE_X5T_MAX], cf_error *err);

/* Verifies an ES256 JWS signature (RFC 7518 §3.4): sig is the raw 64-byte r||s, made over
 * the ASCII of protected_b64 + "." + payload_b64 exactly as they appear in the JWS. pub must
 * be an EC P-256 key. CF_ERR_TAMPERED when the signature does not verify, CF_ERR_INVALID
 * for a signature of the wrong length or a key of the wrong type, CF_ERR_CRYPTO. fixed, when
 * not NULL, is pub's table (pki/ecfixed.h): a signature it accepts needs nothing more. */
cf_err cf_jws_verify_es256(EVP_PKEY *pub, const cf_ec_fixed *fixed, const char *protected_b64,
                           size_t protected_len, const char *payload_b64, size_t payload_len,
                           const unsigned char *sig, size_t sig_len, cf_error *err);

/* The JOSE crv name of an EC key on an allowed curve ("P-256" or "P-384"); NULL for any
 * other key (other curves, RSA, Ed25519, explicit parameters). */
const char *cf_jose_ec_crv(EVP_PKEY *key);

/* Imports an EC public JWK (RFC 7518 §6.2: kty "EC", crv "P-256" or "P-384", base64url x and
 * y of exactly the curve's size) as a key (*out: EVP_PKEY_free). The point must lie on the
 * curve. Other kty or crv values are CF_ERR_POLICY; malformed members CF_ERR_INVALID. The
 * message names the member at fault ("crv", "x"). */
cf_err cf_jwk_ec_import(const json_t *jwk, EVP_PKEY **out, cf_error *err);

/* The members of an EC public JWK as cf_jwk_ec_import reads them, with the same checks and
 * errors except the one that needs the curve arithmetic (whether the point lies on the
 * curve): *curve_nid is NID_X9_62_prime256v1 or NID_secp384r1, point the SEC 1 uncompressed
 * point 04||x||y, *point_len its length (65 or 97). */
#define CF_JWK_POINT_MAX (1 + 2 * 48)
cf_err cf_jwk_ec_point(const json_t *jwk, int *curve_nid, unsigned char point[CF_JWK_POINT_MAX],
                       size_t *point_len, cf_error *err);

/* The SHA-256 of the SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey, the named curve, the
 * uncompressed point) of an EC key given as its curve and uncompressed point: the same bytes
 * i2d_PUBKEY writes for that key, without decoding it. */
cf_err cf_jose_ec_spki_sha256(int curve_nid, const unsigned char *point, size_t point_len,
                              unsigned char out[32], cf_error *err);

#endif

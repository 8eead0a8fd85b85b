/* manifest_json.h - a strict JSON parser for the manifest reader (src/pki/manifest.c):
 * manifest elements, and the protected headers and payloads inside them.
 *
 * It accepts what json_loadb(..., JSON_REJECT_DUPLICATES) accepts for a top-level object,
 * with the same result, at a fraction of the cost (see manifest_json.c), nested at most
 * CF_MANIFEST_DEPTH_MAX deep. */
#ifndef CF_PKI_MANIFEST_JSON_H
#define CF_PKI_MANIFEST_JSON_H

#include <jansson.h>
#include <stddef.h>

/* The reason given when the text is not an object at all (compare the pointer). */
extern const char cf_manifest_json_not_object[];

/* Parses len bytes of text as one JSON object followed by nothing but whitespace.
 * Returns a new object (json_decref), or NULL with *why the reason (a static string) and
 * *at the byte offset where the parse stopped. */
json_t *cf_manifest_json_parse(const void *text, size_t len, const char **why, size_t *at);

#endif

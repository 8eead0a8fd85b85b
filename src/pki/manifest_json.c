/* manifest_json.c - the JSON parser for manifest elements and the JWS parts inside them.
 *
 * Manifest elements, and the protected headers and payloads inside them, are parsed here
 * rather than by json_loadb: jansson's lexer spends some 12 ns on every byte, a sixth of an
 * entry's whole verification once the signatures are paid for, while nearly every byte of
 * an entry sits in a long base64 string that a scanner can pass over at a tenth of that.
 * What is accepted is RFC 8259 JSON with jansson's rules on top: UTF-8 only (RFC 3629: no
 * overlong forms, no surrogates), no NUL in strings, no unpaired \u surrogates, integers
 * that fit json_int_t, finite reals, duplicate object keys refused, and a top-level object
 * nested at most CF_MANIFEST_DEPTH_MAX deep with nothing but whitespace after it. The
 * result is jansson values, which the rest of the module reads. */

#include "pki/manifest_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pki/manifest.h"

typedef struct {
    const unsigned char *start, *p, *end;
    int depth;
    const char *why; /* the error; NULL while there is none */
} json_parser;

const char cf_manifest_json_not_object[] = "not a JSON object";

static json_t *jp_fail(json_parser *jp, const char *why)
{
    if (!jp->why)
        jp->why = why;
    return NULL;
}

static void jp_ws(json_parser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\n' || *jp->p == '\r' || *jp->p == '\t'))
        jp->p++;
}

/* The length of the UTF-8 sequence at p (RFC 3629 §4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* Decodes the escape at jp->p (after the backslash) into out (at least 4 bytes free);
 * returns the bytes written, 0 on error. */
static size_t jp_escape(json_parser *jp, char *out)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (jp->p >= jp->end)
        return jp_fail(jp, "truncated escape"), 0;
    const char *k = *jp->p ? strchr(from, *jp->p) : NULL;
    if (k) {
        jp->p++;
        *out = to[k - from];
        return 1;
    }
    unsigned cp, lo;
    if (*jp->p != 'u' || jp->end - jp->p < 5 || !hex4(jp->p + 1, &cp))
        return jp_fail(jp, "invalid escape"), 0;
    jp->p += 5;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return jp_fail(jp, "invalid Unicode escape (a lone low surrogate)"), 0;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (jp->end - jp->p < 6 || jp->p[0] != '\\' || jp->p[1] != 'u' || !hex4(jp->p + 2, &lo) ||
            lo < 0xdc00 || lo > 0xdfff)
            return jp_fail(jp, "invalid Unicode escape (a lone high surrogate)"), 0;
        jp->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp == 0)
        return jp_fail(jp, "\\u0000 is not allowed"), 0;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Reads the string at jp->p (its opening quote). *s, *len: its value, either inside the
 * input or, when it has escapes, in *owned (free()). Returns 1, or 0 on error. */
static int jp_string(json_parser *jp, const char **s, size_t *len, char **owned)
{
    const unsigned char *b = ++jp->p;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    *owned = NULL;
    for (;;) {
        const unsigned char *q = jp->p;
        while (q < jp->end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
            q++;
        if (buf && q > jp->p) { /* unescaped bytes after an escape */
            if (n + (size_t)(q - jp->p) + 4 > cap) {
                cap = 2 * (n + (size_t)(q - jp->p) + 4);
                char *g = realloc(buf, cap);
                if (!g)
                    goto nomem;
                buf = g;
            }
            memcpy(buf + n, jp->p, (size_t)(q - jp->p));
            n += (size_t)(q - jp->p);
        }
        jp->p = q;
        if (q == jp->end) {
            free(buf);
            return jp_fail(jp, "truncated string"), 0;
        }
        if (*q == '"') {
            jp->p++;
            if (buf) {
                *s = *owned = buf;
                *len = n;
            } else {
                *s = (const char *)b;
                *len = (size_t)(q - b);
            }
            return 1;
        }
        if (*q < 0x20) {
            free(buf);
            return jp_fail(jp, "control character in a string"), 0;
        }
        if (*q >= 0x80) {
            size_t u = utf8_len(q, jp->end);
            if (!u) {
                free(buf);
                return jp_fail(jp, "invalid UTF-8"), 0;
            }
            if (buf) {
                if (n + u + 4 > cap) {
                    cap = 2 * (n + u + 4);
                    char *g = realloc(buf, cap);
                    if (!g)
                        goto nomem;
                    buf = g;
                }
                memcpy(buf + n, q, u);
                n += u;
            }
            jp->p += u;
            continue;
        }
        /* A backslash: from here on the value is built in buf. */
        if (!buf) {
            n = (size_t)(q - b);
            cap = 2 * n + 64;
            if (!(buf = malloc(cap)))
                goto nomem;
            memcpy(buf, b, n);
        } else if (n + 4 > cap) {
            cap = 2 * (n + 4);
            char *g = realloc(buf, cap);
            if (!g)
                goto nomem;
            buf = g;
        }
        jp->p++;
        size_t e = jp_escape(jp, buf + n);
        if (!e) {
            free(buf);
            return 0;
        }
        n += e;
    }
nomem:
    free(buf);
    return jp_fail(jp, "out of memory"), 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The number at jp->p (RFC 8259 §6): an integer when it has no fraction and no exponent. */
static json_t *jp_number(json_parser *jp)
{
    const unsigned char *b = jp->p, *e = jp->end;
    const unsigned char *q = b;
    int real = 0;
    if (q < e && *q == '-')
        q++;
    if (q < e && *q == '0')
        q++;
    else if (q < e && is_digit(*q))
        while (q < e && is_digit(*q))
            q++;
    else
        return jp_fail(jp, "invalid number");
    if (q < e && *q == '.') {
        real = 1;
        if (++q == e || !is_digit(*q))
            return jp_fail(jp, "invalid number");
        while (q < e && is_digit(*q))
            q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        real = 1;
        if (++q < e && (*q == '+' || *q == '-'))
            q++;
        if (q == e || !is_digit(*q))
            return jp_fail(jp, "invalid number");
        while (q < e && is_digit(*q))
            q++;
    }
    size_t n = (size_t)(q - b);
    char *text = malloc(n + 1), *stop = NULL;
    if (!text)
        return jp_fail(jp, "out of memory");
    memcpy(text, b, n);
    text[n] = '\0';
    json_t *v = NULL;
    errno = 0;
    if (!real) {
        long long i = strtoll(text, &stop, 10);
        if (errno == ERANGE || stop != text + n)
            jp_fail(jp, "too big integer");
        else
            v = json_integer((json_int_t)i);
    } else {
        double d = strtod(text, &stop);
        if ((errno == ERANGE && (d > 1.0 || d < -1.0)) || stop != text + n)
            jp_fail(jp, "real number overflow");
        else
            v = json_real(d);
    }
    free(text);
    jp->p = q;
    return v || jp->why ? v : jp_fail(jp, "out of memory");
}

static json_t *jp_value(json_parser *jp);

static json_t *jp_object(json_parser *jp)
{
    json_t *obj = json_object();
    if (!obj)
        return jp_fail(jp, "out of memory");
    jp->p++;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == '}') {
        jp->p++;
        return obj;
    }
    for (;;) {
        const char *key;
        size_t klen;
        char *owned = NULL;
        if (jp->p == jp->end || *jp->p != '"' || !jp_string(jp, &key, &klen, &owned))
            goto fail_msg;
        jp_ws(jp);
        json_t *v = NULL;
        if (jp->p < jp->end && *jp->p == ':') {
            jp->p++;
            jp_ws(jp);
            v = jp_value(jp);
        } else {
            jp_fail(jp, "':' expected");
        }
        if (v && json_object_getn(obj, key, klen)) {
            json_decref(v);
            v = jp_fail(jp, "duplicate object key");
        }
        if (v && json_object_setn_new_nocheck(obj, key, klen, v) != 0)
            v = jp_fail(jp, "out of memory");
        free(owned);
        if (!v)
            goto fail;
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            jp_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == '}') {
            jp->p++;
            return obj;
        }
        jp_fail(jp, "',' or '}' expected");
        goto fail;
    }
fail_msg:
    jp_fail(jp, "string or '}' expected");
fail:
    json_decref(obj);
    return NULL;
}

static json_t *jp_array(json_parser *jp)
{
    json_t *arr = json_array();
    if (!arr)
        return jp_fail(jp, "out of memory");
    jp->p++;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
        return arr;
    }
    for (;;) {
        json_t *v = jp_value(jp);
        if (!v || json_array_append_new(arr, v) != 0) {
            jp_fail(jp, "out of memory");
            json_decref(arr);
            return NULL;
        }
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            jp_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
            return arr;
        }
        jp_fail(jp, "',' or ']' expected");
        json_decref(arr);
        return NULL;
    }
}

static json_t *jp_literal(json_parser *jp, const char *word, json_t *v)
{
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return jp_fail(jp, "invalid token");
    jp->p += n;
    return v;
}

static json_t *jp_value(json_parser *jp)
{
    if (jp->p == jp->end)
        return jp_fail(jp, "unexpected end of input");
    json_t *v;
    switch (*jp->p) {
    case '{':
    case '[':
        if (++jp->depth > CF_MANIFEST_DEPTH_MAX)
            return jp_fail(jp, "nested too deep");
        v = *jp->p == '{' ? jp_object(jp) : jp_array(jp);
        jp->depth--;
        return v;
    case '"': {
        const char *s;
        size_t len;
        char *owned = NULL;
        if (!jp_string(jp, &s, &len, &owned))
            return NULL;
        v = json_stringn_nocheck(s, len);
        free(owned);
        return v ? v : jp_fail(jp, "out of memory");
    }
    case 't':
        return jp_literal(jp, "true", json_true());
    case 'f':
        return jp_literal(jp, "false", json_false());
    case 'n':
        return jp_literal(jp, "null", json_null());
    default:
        return jp_number(jp);
    }
}

json_t *cf_manifest_json_parse(const void *text, size_t len, const char **why, size_t *at)
{
    json_parser jp = {.start = text, .p = text, .end = (const unsigned char *)text + len};
    json_t *v = NULL;
    jp_ws(&jp);
    if (jp.p < jp.end && *jp.p == '{')
        v = jp_value(&jp);
    else
        jp_fail(&jp, cf_manifest_json_not_object);
    if (v) {
        jp_ws(&jp);
        if (jp.p != jp.end) {
            json_decref(v);
            v = jp_fail(&jp, "end of input expected");
        }
    }
    *why = jp.why;
    *at = (size_t)(jp.p - jp.start);
    return v;
}

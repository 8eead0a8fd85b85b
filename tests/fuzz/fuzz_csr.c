/* fuzz_csr.c - certificate signing requests from outside (EST, the CLI's issue --csr).
 *
 * The input goes as it is to both ways of reading a request: cf_csr_parse then cf_csr_check
 * (key policy and proof of possession), and the issuance hot path's cf_csr_parse_check, so
 * the parsers' own PEM/DER detection is under test too. Besides "never crash", the two
 * must agree, as csr.h promises: the same inputs accepted with the same error codes, and
 * for an accepted request the same key and key description. The input also goes to
 * cf_csr_view_read (enrollment's look at the names before issuance), which must accept every
 * request the others accept, with the same subject. Seeds: corpus/fuzz_csr/. */
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki/csr.h"

static cf_csr_parser *parser;

static void disagree(const char *what, const cf_error *e1, const cf_error *e2)
{
    fprintf(stderr,
            "fuzz_csr: cf_csr_parse+check and cf_csr_parse_check disagree: %s\n"
            "  parse+check: %s\n  parse_check: %s\n",
            what, e1->msg, e2->msg);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    X509_REQ *req = NULL;
    X509_PUBKEY *spki = NULL;
    EVP_PKEY *pub1 = NULL, *pub2 = NULL;
    char desc1[64] = "", desc2[64] = "";
    cf_error e1 = {0}, e2 = {0};

    if (!parser && cf_csr_parser_new(&parser, &e1) != CF_OK)
        abort();
    cf_err rc1 = cf_csr_parse(data, size, &req, &e1);
    if (rc1 == CF_OK)
        rc1 = cf_csr_check(req, &pub1, desc1, sizeof desc1, &e1);
    cf_err rc2 = cf_csr_parse_check(parser, data, size, &spki, &pub2, desc2, sizeof desc2, &e2);

    if (rc1 != rc2)
        disagree("error codes differ", &e1, &e2);
    if (rc1 == CF_OK) {
        if (strcmp(desc1, desc2) != 0)
            disagree("key descriptions differ", &e1, &e2);
        if (EVP_PKEY_eq(pub1, pub2) != 1)
            disagree("keys differ", &e1, &e2);
    }
    cf_csr_view view;
    cf_error e3 = {0};
    cf_err rc3 = cf_csr_view_read(data, size, &view, &e3);
    if (rc1 == CF_OK && rc3 != CF_OK)
        disagree("cf_csr_view_read refuses an accepted request", &e1, &e3);
    if (rc1 == CF_OK && X509_NAME_cmp(view.subject, X509_REQ_get_subject_name(req)) != 0)
        disagree("cf_csr_view_read reads another subject", &e1, &e3);
    cf_csr_view_clear(&view);
    EVP_PKEY_free(pub1);
    EVP_PKEY_free(pub2);
    X509_PUBKEY_free(spki);
    X509_REQ_free(req);
    return 0;
}

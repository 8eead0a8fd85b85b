/* onboard.h - manufacturers and the import of their signed secure-element manifests.
 *
 * A manufacturer is a name with the certificates it is trusted by: roots of its devices'
 * birth-certificate chains, and the signers of its manifests. An import streams a manifest
 * (src/pki/manifest.h), verifies its entries on every core, and inserts the good ones as
 * devices in state on_hold, owned by the vendor, from one writer thread in batched
 * transactions. Everything is audited. */
#ifndef CF_FLEET_ONBOARD_H
#define CF_FLEET_ONBOARD_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet/fleet.h"

/* ---- manufacturers ---- */

/* A certificate given to cf_onboard_manufacturer_add: PEM (one or more) or one DER. */
typedef struct {
    const void *data;
    size_t len;
    const char *what; /* for messages: the file name */
} cf_onboard_cert_src;

typedef struct {
    const char *name; /* 1..128 of A-Z a-z 0-9 . _ : - (as a device id) */
    const cf_onboard_cert_src *roots;
    size_t nroots;
    const cf_onboard_cert_src *signers;
    size_t nsigners;
    const char *actor;
} cf_onboard_mfr_req;

/* Registers manufacturer req->name with its roots and manifest signers, or adds certificates
 * to an existing one (certificates it already has are skipped). Roots must be CA
 * certificates; a signer must be an EC or RSA (2048+) key and, when issued by one of the
 * manufacturer's roots, carry a valid signature by it; a signer that chains to none is
 * trusted because it is registered here (Microchip's are self-signed). A new manufacturer
 * needs at least one root. One transaction with a manufacturer.add audit record that names
 * every added certificate's subject and x5t#S256. *details (may be NULL): a new JSON object
 * {name, created, added: [{kind, subject, x5t}]} (json_decref). CF_ERR_INVALID for an
 * unreadable certificate, CF_ERR_POLICY for one refused, CF_ERR_EXISTS when nothing would
 * be added. */
cf_err cf_onboard_manufacturer_add(cf_fleet *f, const cf_onboard_mfr_req *req, json_t **details,
                                   cf_error *err);

/* Removes manufacturer name with its certificates and import records, audited
 * (manufacturer.remove). CF_ERR_POLICY, changing nothing, while devices reference it. */
cf_err cf_onboard_manufacturer_remove(cf_fleet *f, const char *name, const char *actor,
                                      cf_error *err);

/* Describes manufacturer name (or every manufacturer when name is NULL) as new JSON:
 * {id, name, created, devices, certificates: [{kind, subject, x5t, not_before, not_after}],
 * imports: [...]} (an array of those when name is NULL). *out: json_decref. */
cf_err cf_onboard_manufacturer_describe(cf_fleet *f, const char *name, json_t **out, cf_error *err);

/* ---- claim codes ---- */

/* claim_hash = SHA-256("certfleet-claim-v1" || device_id || the code's 16 canonical bytes),
 * the value devices.claim_hash holds (the code itself is never stored). */
void cf_onboard_claim_hash(const char *device_id, const unsigned char code[16],
                           unsigned char out[32]);

/* ---- imports ---- */

/* The key fingerprint stored per device (devices.key_fpr) is the lower-case hex SHA-256 of
 * the device key's SubjectPublicKeyInfo; an entry with no key at all (payload version 2) is
 * identified by "payload-sha256:" + the hex SHA-256 of its payload, so a changed entry for a
 * known unique id is a conflict too. */
#define CF_ONBOARD_FPR_MAX 80

typedef enum {
    CF_ONBOARD_PROBLEM_REJECTED,  /* the entry does not verify: nothing changed */
    CF_ONBOARD_PROBLEM_CONFLICT,  /* the id exists with another key: left alone */
    CF_ONBOARD_PROBLEM_DUPLICATE, /* the same entry came earlier in this manifest */
} cf_onboard_problem_kind;

const char *cf_onboard_problem_name(cf_onboard_problem_kind kind);

typedef struct {
    cf_onboard_problem_kind kind;
    size_t index;    /* 0-based position in the manifest */
    const char *uid; /* "?" when the entry names none readable */
    const char *reason;
} cf_onboard_problem;

typedef struct {
    uint64_t entries; /* entries read and handled (committed or reported) */
    uint64_t added, present, rejected, conflicts; /* rejected includes duplicates */
    uint64_t committed;                           /* entries whose outcome is committed */
    uint64_t bytes_read, bytes_total;             /* of the manifest (total 0 when unknown) */
    double seconds;
    int threads; /* verifying threads */
    int64_t import_id;
    int complete;    /* the manifest was read to its end */
    int interrupted; /* stopped by the cancel flag */
    char sha256[65]; /* hex, "" unless complete */
} cf_onboard_stats;

typedef struct {
    const char *manifest;     /* path */
    const char *manufacturer; /* name */
    const char *batch;        /* NULL: each entry's groupId, else the manifest's file name */
    const char *bundle_sig;   /* non-NULL: manifest is a PEM bundle and this is its detached
                                 signature file (raw or base64) */
    const char *claim_codes;  /* NULL, or claim-codes.csv ("unique_id,claim_code") */
    int threads;              /* verifying threads; 0: one per online CPU */
    int batch_size;           /* devices per transaction; 0: 2000 */
    int64_t verify_time;      /* 0: now; else check chains at this time (tests) */
    const char *actor;
    /* Called on the calling thread: after each committed transaction and about 4 times a
     * second while working (progress), and once per problem. Either may be NULL. */
    void (*progress)(void *arg, const cf_onboard_stats *stats);
    void (*problem)(void *arg, const cf_onboard_problem *p);
    void *arg;
    /* When it becomes non-zero (a SIGINT handler sets it) the import stops reading, commits
     * what is verified and returns CF_OK with stats->interrupted set. May be NULL. */
    volatile sig_atomic_t *cancel;
} cf_onboard_opts;

/* Imports a manifest (see the file comment). What has been committed stays committed
 * whatever happens later: run the same import again to finish an interrupted one; devices
 * already present are counted, not changed. The final transaction writes the import's
 * onboard.import audit record (counts, manifest SHA-256, manufacturer, batch). Returns
 * CF_OK when the manifest was read to its end (with rejected entries and conflicts
 * reported through opts->problem and counted in *stats) or interrupted; CF_ERR_INVALID /
 * CF_ERR_IO when the file itself is broken or unreadable, after committing the entries
 * before the break (stats says how many); CF_ERR_NOT_FOUND for an unknown manufacturer;
 * store errors as the store reports them. */
cf_err cf_onboard_import(cf_fleet *f, const cf_onboard_opts *opts, cf_onboard_stats *stats,
                         cf_error *err);

#endif

#include "audit/audit.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static void hash_field(EVP_MD_CTX *ctx, const char *s)
{
    unsigned char len[4];
    size_t n = s ? strlen(s) : 0;
    put_be(len, n, 4);
    EVP_DigestUpdate(ctx, len, 4);
    EVP_DigestUpdate(ctx, s ? s : "", n);
}

void cf_audit_hash(const cf_audit_rec *rec, unsigned char out[CF_HASH_LEN])
{
    static const char tag[] = "certfleet-audit-v1";
    unsigned char nums[16];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    put_be(nums, (uint64_t)rec->seq, 8);
    put_be(nums + 8, (uint64_t)rec->time_us, 8);
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        abort(); /* SHA-256 is always there; failing here means memory is gone */
    EVP_DigestUpdate(ctx, tag, sizeof tag - 1);
    EVP_DigestUpdate(ctx, rec->prev_hash, CF_HASH_LEN);
    EVP_DigestUpdate(ctx, nums, sizeof nums);
    hash_field(ctx, rec->actor);
    hash_field(ctx, rec->action);
    hash_field(ctx, rec->object);
    hash_field(ctx, rec->details);
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}

cf_err cf_audit_append(cf_store *st, const char *actor, const char *action, const char *object,
                       json_t *details, int64_t *seq, cf_error *err)
{
    cf_audit_rec rec = {0};
    char *canon = details ? json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    cf_err rc;
    if (details && !canon)
        return cf_error_set(err, CF_ERR_INVALID, "audit: details do not encode as JSON");
    if (!seq) { /* nobody waits for its number: written at commit, with the others */
        rc = cf_store_audit_queue(st, actor, action, object, canon ? canon : "{}", cf_audit_hash,
                                  err);
        if (rc != CF_OK)
            cf_error_prefix(err, "audit append");
        free(canon);
        return rc;
    }
    rc = cf_store_audit_lock_head(st, &rec.seq, rec.prev_hash, err);
    if (rc != CF_OK)
        goto out;
    rec.seq += 1;
    rec.time_us = cf_time_now_us();
    rec.actor = (char *)actor;
    rec.action = (char *)action;
    rec.object = (char *)object;
    rec.details = canon ? canon : "{}";
    cf_audit_hash(&rec, rec.hash);
    if ((rc = cf_store_audit_insert(st, &rec, err)) != CF_OK) {
        cf_error_prefix(err, "audit append");
        goto out;
    }
    if (seq)
        *seq = rec.seq;
out:
    free(canon);
    return rc;
}

struct verify_state {
    cf_audit_verify_result *res;
    int64_t expect_seq;
    unsigned char prev[CF_HASH_LEN];
};

static int fail_at(struct verify_state *vs, int64_t seq, const char *reason)
{
    vs->res->bad_seq = seq;
    snprintf(vs->res->reason, sizeof vs->res->reason, "%s", reason);
    return 1;
}

static int verify_one(void *arg, const cf_audit_rec *rec)
{
    struct verify_state *vs = arg;
    unsigned char h[CF_HASH_LEN];
    vs->res->records++;
    if (rec->seq < vs->expect_seq) {
        /* Only possible for seq < 1: rows certfleet never numbers, so never writes. */
        char why[128];
        snprintf(why, sizeof why, "a record numbered %lld stands before it (inserted)",
                 (long long)rec->seq);
        return fail_at(vs, vs->expect_seq, why);
    }
    if (rec->seq > vs->expect_seq)
        return fail_at(vs, vs->expect_seq, "missing (the chain skips to a later record)");
    if (rec->hashes_malformed)
        return fail_at(vs, rec->seq, "a stored hash is not 32 bytes long (record edited)");
    if (!cf_ct_equal(rec->prev_hash, vs->prev, CF_HASH_LEN))
        return fail_at(vs, rec->seq,
                       "its previous-hash does not match the record before it"
                       " (records removed, inserted or reordered)");
    cf_audit_hash(rec, h);
    if (!cf_ct_equal(h, rec->hash, CF_HASH_LEN))
        return fail_at(vs, rec->seq, "its content does not match its hash (record edited)");
    memcpy(vs->prev, rec->hash, CF_HASH_LEN);
    vs->expect_seq++;
    return 0;
}

cf_err cf_audit_verify(cf_store *st, cf_audit_verify_result *res, cf_error *err)
{
    struct verify_state vs = {.res = res, .expect_seq = 1};
    cf_audit_filter all = {.since_seq = INT64_MIN}; /* rows numbered 0 or less too */
    unsigned char head_hash[CF_HASH_LEN];
    memset(res, 0, sizeof *res);
    cf_err rc = cf_store_audit_head(st, &res->head_seq, head_hash, err);
    if (rc == CF_ERR_TAMPERED) {
        res->bad_seq = 1;
        snprintf(res->reason, sizeof res->reason, "the audit head record is missing");
        return rc;
    }
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_audit_scan(st, &all, verify_one, &vs, err)) != CF_OK)
        return rc;
    if (!res->bad_seq) {
        int64_t last = vs.expect_seq - 1;
        if (last != res->head_seq) {
            res->bad_seq = last < res->head_seq ? last + 1 : res->head_seq + 1;
            snprintf(res->reason, sizeof res->reason,
                     last < res->head_seq
                         ? "the log ends at record %lld but the head says %lld (records"
                           " removed from the tail)"
                         : "the log runs to record %lld but the head says %lld (records"
                           " appended outside certfleet)",
                     (long long)last, (long long)res->head_seq);
        } else if (!cf_ct_equal(vs.prev, head_hash, CF_HASH_LEN)) {
            res->bad_seq = last ? last : 1;
            snprintf(res->reason, sizeof res->reason,
                     "the last record's hash does not match the head");
        }
    }
    if (res->bad_seq)
        return cf_error_set(err, CF_ERR_TAMPERED, "audit record %lld: %s", (long long)res->bad_seq,
                            res->reason);
    return CF_OK;
}

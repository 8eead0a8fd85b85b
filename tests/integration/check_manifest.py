#!/usr/bin/env python3
"""check_manifest.py DIR [--devices N] [--version 1|2] - an independent check (python3-cryptography)
of what `certfleet manifest make` wrote into DIR: every entry's ES256 JWS verifies with the
manifest signer, the protected header names that signer (kid = SKI, x5t#S256 = SHA-256 of its
DER), header and payload unique ids agree and are distinct, the JWK equals the birth
certificate's key, the certificate's CN is "sn" + the upper-case unique id and it is signed by
x5c[1], which equals batch-ca.crt; the device keys match their entries, the claim codes are
distinct 128-bit codes. Writes each birth certificate to DIR/check/UID.pem for openssl verify.
Prints one line per failure and exits 1 when there is any."""
import argparse
import base64
import csv
import hashlib
import json
import os
import re
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
failures = []
serials = set()


def fail(msg):
    failures.append(msg)


def b64url(s):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_enc(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claim_bits(code):
    digits = code.replace("-", "")
    if len(digits) != 26 or any(c not in CROCKFORD for c in digits):
        raise ValueError("not 26 Crockford digits")
    v = 0
    for c in digits:
        v = v * 32 + CROCKFORD.index(c)
    if v >> 128:
        raise ValueError("more than 128 bits")
    return v


def check_entry(i, e, signer, signer_der, batch, version, prefix):
    uid = e.get("header", {}).get("uniqueId")
    where = f"entry {i} ({uid})"
    if set(e) != {"payload", "protected", "header", "signature"}:
        fail(f"{where}: members {sorted(e)}")
    prot = json.loads(b64url(e["protected"]))
    if prot.get("alg") != "ES256" or prot.get("typ") != "JWT":
        fail(f"{where}: protected header {prot}")
    if prot.get("x5t#S256") != b64url_enc(hashlib.sha256(signer_der).digest()):
        fail(f"{where}: x5t#S256 is not SHA-256 of the signer certificate")
    ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    if prot.get("kid") != b64url_enc(ski):
        fail(f"{where}: kid is not the signer's SKI")
    raw = b64url(e["signature"])
    if len(raw) != 64:
        fail(f"{where}: signature is {len(raw)} bytes, not 64")
        return None
    der_sig = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signed = (e["protected"] + "." + e["payload"]).encode()
    try:
        signer.public_key().verify(der_sig, signed, ec.ECDSA(hashes.SHA256()))
    except Exception:
        fail(f"{where}: JWS signature does not verify with the manifest signer")
    raw_payload = b64url(e["payload"])
    p = json.loads(raw_payload)
    if json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode() != raw_payload:
        fail(f"{where}: payload is not compact JSON")
    order = ["version", "model", "partNumber", "manufacturer", "provisioner", "distributor",
             "groupId", "provisioningTimestamp", "uniqueId"] + (["publicKeySet"] if version == 1 else [])
    if list(p) != order:
        fail(f"{where}: payload members {list(p)}")
    if p.get("version") != version:
        fail(f"{where}: version {p.get('version')}")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", p.get("provisioningTimestamp", "")):
        fail(f"{where}: provisioningTimestamp {p.get('provisioningTimestamp')}")
    if p.get("uniqueId") != uid or not re.fullmatch(r"01[0-9a-f]{16}", uid or ""):
        fail(f"{where}: payload uniqueId {p.get('uniqueId')} vs header {uid}")
    if version == 2:
        return uid, None
    keys = p["publicKeySet"]["keys"]
    if len(keys) != 1:
        fail(f"{where}: {len(keys)} keys")
    k = keys[0]
    if (k.get("kid"), k.get("kty"), k.get("crv")) != ("0", "EC", "P-256") or len(k.get("x5c", [])) != 2:
        fail(f"{where}: JWK {k.get('kid')} {k.get('kty')} {k.get('crv')}")
        return uid, None
    cert = x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0], validate=True))
    ca_der = base64.b64decode(k["x5c"][1], validate=True)
    if ca_der != batch.public_bytes(serialization.Encoding.DER):
        fail(f"{where}: x5c[1] is not batch-ca.crt")
    nums = cert.public_key().public_numbers()
    if b64url(k["x"]) != nums.x.to_bytes(32, "big") or b64url(k["y"]) != nums.y.to_bytes(32, "big"):
        fail(f"{where}: JWK x/y differ from the birth certificate's key")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    if cn != "sn" + uid.upper():
        fail(f"{where}: CN {cn}")
    if cert.issuer != batch.subject:
        fail(f"{where}: issuer {cert.issuer.rfc4514_string()}")
    try:
        batch.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                  ec.ECDSA(cert.signature_hash_algorithm))
    except Exception:
        fail(f"{where}: birth certificate not signed by the batch CA")
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    if bc.value.ca or not bc.critical:
        fail(f"{where}: basicConstraints")
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    if ski != x509.SubjectKeyIdentifier.from_public_key(cert.public_key()):
        fail(f"{where}: SKI is not the SHA-1 of the key")
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    batch_ski = batch.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    if aki.key_identifier != batch_ski.digest:
        fail(f"{where}: AKI is not the batch CA's SKI")
    if cert.serial_number in serials:
        fail(f"{where}: serial {cert.serial_number:x} repeats")
    serials.add(cert.serial_number)
    os.makedirs(os.path.join(prefix, "check"), exist_ok=True)
    with open(os.path.join(prefix, "check", uid + ".pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return uid, cert.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--devices", type=int)
    ap.add_argument("--version", type=int, default=1)
    a = ap.parse_args()
    d = a.dir

    def load(name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()

    signer = x509.load_pem_x509_certificate(load("manifest-signer.crt"))
    batch = x509.load_pem_x509_certificate(load("batch-ca.crt"))
    root = x509.load_pem_x509_certificate(load("root.crt"))
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    if signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        fail("manifest signer is a CA")
    if not signer.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
        fail("manifest signer lacks digitalSignature")
    if signer.issuer != signer.subject:
        fail("manifest signer is not self-signed")
    if not root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        fail("root is not a CA")

    entries = json.loads(load("manifest.json"))
    if a.devices is not None and len(entries) != a.devices:
        fail(f"{len(entries)} entries, expected {a.devices}")
    pubs = {}
    for i, e in enumerate(entries):
        r = check_entry(i, e, signer, signer_der, batch, a.version, d)
        if r:
            if r[0] in pubs:
                fail(f"entry {i}: unique id {r[0]} repeats")
            pubs[r[0]] = r[1]

    # device-keys.pem: "# uniqueId UID" then that device's key
    text = load("device-keys.pem").decode()
    blocks = re.findall(r"# uniqueId ([0-9a-f]+)\n(-----BEGIN PRIVATE KEY-----\n.*?"
                        r"-----END PRIVATE KEY-----\n)", text, re.S)
    if len(blocks) != len(entries):
        fail(f"device-keys.pem holds {len(blocks)} keys for {len(entries)} entries")
    for uid, pem in blocks:
        key = serialization.load_pem_private_key(pem.encode(), None)
        pub = key.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)
        if uid not in pubs:
            fail(f"device-keys.pem: {uid} is not in the manifest")
        elif pubs[uid] is not None and pubs[uid] != pub:
            fail(f"device-keys.pem: key of {uid} does not match its certificate")

    with open(os.path.join(d, "claim-codes.csv"), newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != ["unique_id", "claim_code"]:
        fail(f"claim-codes.csv header {rows[0]}")
    codes = set()
    for uid, code in rows[1:]:
        try:
            codes.add(claim_bits(code))
        except ValueError as ex:
            fail(f"claim code of {uid}: {ex}")
    if [r[0] for r in rows[1:]] != list(pubs):
        fail("claim-codes.csv does not list the manifest's devices in order")
    if len(codes) != len(rows) - 1:
        fail("claim codes repeat")

    for m in failures:
        print("FAIL:", m)
    if failures:
        sys.exit(1)
    print(f"ok: {len(entries)} entries")


if __name__ == "__main__":
    main()

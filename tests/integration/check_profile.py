"""check_profile.py - checks a device certificate and its chain against certfleet's profile.

An independent parser (python3-cryptography) reads the leaf, the issuing CA and the root,
and every extension is compared with what DESIGN.md promises. Prints one line per problem
and exits 1 if there was any; exits 0 and prints "profile ok" otherwise.

usage: check_profile.py LEAF ISSUING ROOT --device ID --org ORG [--base URL] [--days N]
                        [--serials FILE]
--serials FILE: a file of serials (hex, one a line) that must all be distinct.
"""
import argparse
import datetime
import hashlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def ext(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def ski_bits(cert):
    """RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def spki_sha1_by_hand(cert):
    """The same, computed without cryptography's helper: walk the SPKI DER ourselves."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def tlv(buf, off):
        tag = buf[off]
        n = buf[off + 1]
        off += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[off:off + k], "big")
            off += k
        return tag, off, n

    tag, off, _ = tlv(der, 0)  # SubjectPublicKeyInfo SEQUENCE
    assert tag == 0x30
    tag, alg_off, alg_len = tlv(der, off)  # AlgorithmIdentifier
    tag, bs_off, bs_len = tlv(der, alg_off + alg_len)  # subjectPublicKey BIT STRING
    assert tag == 0x03
    return hashlib.sha1(der[bs_off + 1:bs_off + bs_len]).digest()  # skip unused-bits byte


def verify_signature(cert, issuer):
    pub = issuer.public_key()
    data, sig = cert.tbs_certificate_bytes, cert.signature
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, data)
        else:
            return False
    except Exception:  # InvalidSignature and friends: any failure is a failed check
        return False
    return True


def check_ca(cert, issuer, name, pathlen):
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if check(bc is not None, f"{name}: no basicConstraints"):
        check(bc.critical, f"{name}: basicConstraints not critical")
        check(bc.value.ca, f"{name}: CA:FALSE")
        check(bc.value.path_length == pathlen,
              f"{name}: pathlen {bc.value.path_length}, expected {pathlen}")
    ku = ext(cert, ExtensionOID.KEY_USAGE)
    if check(ku is not None, f"{name}: no keyUsage"):
        k = ku.value
        check(ku.critical, f"{name}: keyUsage not critical")
        check(k.key_cert_sign and k.crl_sign, f"{name}: keyUsage lacks keyCertSign/cRLSign")
        check(not (k.digital_signature or k.key_encipherment or k.content_commitment
                   or k.data_encipherment or k.key_agreement),
              f"{name}: keyUsage has more than keyCertSign, cRLSign")
    ski = ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if check(ski is not None, f"{name}: no SKI"):
        check(ski.value.digest == ski_bits(cert), f"{name}: SKI is not SHA-1 of the key")
    check(cert.issuer == issuer.subject, f"{name}: issuer name != issuer's subject")
    check(verify_signature(cert, issuer), f"{name}: signature does not verify with its issuer")
    if cert is not issuer:
        aki = ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        if check(aki is not None, f"{name}: no AKI"):
            check(aki.value.key_identifier == ski_bits(issuer),
                  f"{name}: AKI keyid != issuer SKI")


def validity(cert):
    """notBefore and notAfter as aware UTC datetimes (older cryptography has no *_utc)."""
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    utc = datetime.timezone.utc
    return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)


def check_leaf(leaf, issuing, device, org, base, days):
    cn = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    o = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    check(cn == [device], f"leaf: subject CN {cn}, expected [{device!r}]")
    check(o == [org], f"leaf: subject O {o}, expected [{org!r}]")
    check(len(leaf.subject) == 2, f"leaf: subject has extra attributes: {leaf.subject}")
    check(leaf.version == x509.Version.v3, "leaf: not X.509 v3")
    check(leaf.issuer == issuing.subject, "leaf: issuer name != issuing CA subject")

    expected = {
        ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.FRESHEST_CRL,
    }
    got = [e.oid for e in leaf.extensions]
    check(len(got) == len(set(got)), "leaf: an extension appears twice")
    check(set(got) == expected,
          "leaf: extensions differ from the profile: extra "
          f"{[o._name for o in set(got) - expected]}, missing "
          f"{[o._name for o in expected - set(got)]}")

    san = ext(leaf, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if check(san is not None, "leaf: no SAN"):
        names = list(san.value)
        want = x509.UniformResourceIdentifier(f"urn:certfleet:device:{device}")
        check(names == [want], f"leaf: SAN {names}, expected exactly [{want}]")

    bc = ext(leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if check(bc is not None, "leaf: no basicConstraints"):
        check(bc.critical, "leaf: basicConstraints not critical")
        check(not bc.value.ca, "leaf: CA:TRUE")
        check(bc.value.path_length is None, "leaf: has a pathlen")

    ku = ext(leaf, ExtensionOID.KEY_USAGE)
    if check(ku is not None, "leaf: no keyUsage"):
        k = ku.value
        check(ku.critical, "leaf: keyUsage not critical")
        others = (k.content_commitment, k.key_encipherment, k.data_encipherment,
                  k.key_agreement, k.key_cert_sign, k.crl_sign)
        check(k.digital_signature and not any(others),
              "leaf: keyUsage is not digitalSignature alone")

    eku = ext(leaf, ExtensionOID.EXTENDED_KEY_USAGE)
    if check(eku is not None, "leaf: no extendedKeyUsage"):
        check(list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH],
              f"leaf: EKU {[u._name for u in eku.value]}, expected clientAuth only")

    ski = ext(leaf, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if check(ski is not None, "leaf: no SKI"):
        check(ski.value.digest == spki_sha1_by_hand(leaf),
              "leaf: SKI != SHA-1 of the subjectPublicKey bits")
        check(ski.value.digest == ski_bits(leaf), "leaf: SKI != cryptography's SKI")

    aki = ext(leaf, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    iss_ski = ext(issuing, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if check(aki is not None and iss_ski is not None, "leaf: no AKI or issuer has no SKI"):
        check(aki.value.key_identifier == iss_ski.value.digest, "leaf: AKI keyid != issuer SKI")

    crldp = ext(leaf, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    if check(crldp is not None, "leaf: no CRL distribution point"):
        uris = [n.value for dp in crldp.value for n in (dp.full_name or [])]
        check(uris == [f"{base}/crl/issuing-1.crl"],
              f"leaf: CRL DP {uris}, expected {base}/crl/issuing-1.crl")
    fresh = ext(leaf, ExtensionOID.FRESHEST_CRL)
    if check(fresh is not None, "leaf: no Freshest CRL pointer"):
        check(not fresh.critical, "leaf: Freshest CRL must be non-critical (RFC 5280 4.2.1.15)")
        uris = [n.value for dp in fresh.value for n in (dp.full_name or [])]
        check(uris == [f"{base}/crl/issuing-1-delta.crl"],
              f"leaf: Freshest CRL {uris}, expected {base}/crl/issuing-1-delta.crl")

    aia = ext(leaf, ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    if check(aia is not None, "leaf: no AIA"):
        got_aia = sorted((d.access_method.dotted_string, d.access_location.value)
                         for d in aia.value)
        want_aia = sorted([("1.3.6.1.5.5.7.48.1", f"{base}/ocsp"),
                           ("1.3.6.1.5.5.7.48.2", f"{base}/ca/issuing-1.crt")])
        check(got_aia == want_aia, f"leaf: AIA {got_aia}, expected {want_aia}")

    serial = leaf.serial_number
    check(serial > 0, f"leaf: serial {serial} is not positive")
    check(serial.bit_length() >= 120, f"leaf: serial has only {serial.bit_length()} bits")
    check(serial.bit_length() <= 159, "leaf: serial longer than 20 octets")

    now = datetime.datetime.now(datetime.timezone.utc)
    nb, na = validity(leaf)
    check(nb <= now, f"leaf: notBefore {nb} is in the future")
    check(now - nb < datetime.timedelta(minutes=15), f"leaf: notBefore {nb} is too far back")
    want_na = now + datetime.timedelta(days=days)
    check(abs((na - want_na).total_seconds()) < 120,
          f"leaf: notAfter {na}, expected about {want_na} ({days} days)")
    check(verify_signature(leaf, issuing), "leaf: signature does not verify with issuing CA key")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("leaf")
    ap.add_argument("issuing")
    ap.add_argument("root")
    ap.add_argument("--device", required=True)
    ap.add_argument("--org", required=True)
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--serials")
    a = ap.parse_args()
    leaf, issuing, root = load(a.leaf), load(a.issuing), load(a.root)

    check_leaf(leaf, issuing, a.device, a.org, a.base, a.days)
    check_ca(issuing, root, "issuing CA", 0)
    check_ca(root, root, "root CA", 1)
    check(root.issuer == root.subject, "root: not self-issued")
    if a.serials:
        with open(a.serials) as f:
            serials = [s.strip().upper() for s in f if s.strip()]
        check(len(serials) == len(set(serials)), f"serials repeat: {serials}")
        # as numbers: openssl prints whole octets ("0A..."), Python's hex drops the zero
        check(leaf.serial_number in {int(s, 16) for s in serials},
              "leaf serial missing from the list")

    for p in problems:
        print(f"PROFILE: {p}")
    if problems:
        return 1
    print("profile ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

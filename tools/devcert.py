"""Development certificates for the gateway's HTTPS listener (CPython tool).

    .venv/bin/python tools/devcert.py make [HOST ...] [--out DIR] [--days 825] [--rsa]
    .venv/bin/python tools/devcert.py convert in.pem out.der

`make` writes a self-signed certificate whose subjectAltName lists every HOST (a name or an IP
address; default: localhost 127.0.0.1), and its private key, into DIR (default: the current
folder):

    cert.der, key.der   for the board: copy them next to gateway.json and set
                        listen.tls_cert / listen.tls_key (docs/tls.md)
    cert.pem            for clients: `curl --cacert cert.pem https://HOST:8443/...`
    key.pem             the key as PEM, for host tools that want one

The key is EC P-256 unless --rsa asks for RSA 2048: MicroPython's ssl (mbedTLS) accepts both,
and on a board an ECDHE-ECDSA handshake takes a fraction of the time and memory of an RSA one.
The certificate is its own CA (basicConstraints CA:TRUE, pathlen 0), so clients can trust it
with --cacert; it is for development only.

`convert` turns a PEM certificate or private key (PKCS#8, SEC1 or PKCS#1, unencrypted) into the
DER the board loads: a certificate stays a certificate (the first, if the file holds a chain), a
key becomes PKCS#8.

It uses the `cryptography` package (pinned in requirements.txt, installed in .venv by `make
venv`) rather than the openssl command line: that is not part of a minimal Debian, and its flags
and key output formats differ between OpenSSL 1.1, 3.x and LibreSSL; the package behaves the same
on every host and lets the tests parse what it wrote.
"""

import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 825  # the longest validity some clients accept for a server certificate


def _san(host):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_pair(hosts=DEFAULT_HOSTS, days=DEFAULT_DAYS, use_rsa=False):
    """(certificate, private key) objects: self-signed, hosts in the subjectAltName."""
    hosts = list(hosts) or list(DEFAULT_HOSTS)
    key = rsa.generate_private_key(65537, 2048) if use_rsa else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # a board's clock may run a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=use_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_bytes(key, encoding):
    return key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make(out_dir=".", hosts=DEFAULT_HOSTS, days=DEFAULT_DAYS, use_rsa=False):
    """Write cert.der, key.der, cert.pem and key.pem into out_dir; returns {name: path}."""
    cert, key = make_pair(hosts, days, use_rsa)
    os.makedirs(out_dir, exist_ok=True)
    files = {
        "cert.der": (cert.public_bytes(serialization.Encoding.DER), False),
        "key.der": (_key_bytes(key, serialization.Encoding.DER), True),
        "cert.pem": (cert.public_bytes(serialization.Encoding.PEM), False),
        "key.pem": (_key_bytes(key, serialization.Encoding.PEM), True),
    }
    out = {}
    for name, (data, private) in files.items():
        path = os.path.join(out_dir, name)
        _write(path, data, private)
        out[name] = path
    return out


def convert(src, dst):
    """PEM certificate or private key at src -> DER at dst. Returns "certificate" or "key".
    Raises ValueError for anything else (an encrypted key, no PEM block)."""
    with open(src, "rb") as f:
        pem = f.read()
    if b"-----BEGIN CERTIFICATE-----" in pem:
        certs = x509.load_pem_x509_certificates(pem)
        if len(certs) > 1:
            print("%s holds %d certificates; %s gets the first (the board loads one)" % (src, len(certs), dst))
        _write(dst, certs[0].public_bytes(serialization.Encoding.DER))
        return "certificate"
    if b"PRIVATE KEY-----" in pem:
        if b"ENCRYPTED" in pem:
            raise ValueError("%s: an encrypted key; decrypt it first (the board loads an unencrypted one)" % src)
        key = serialization.load_pem_private_key(pem, password=None)
        _write(dst, _key_bytes(key, serialization.Encoding.DER), private=True)
        return "key"
    raise ValueError("%s: no PEM certificate or private key in it" % src)


def main(argv=None):
    p = argparse.ArgumentParser(description="Development certificates for the gateway's HTTPS listener.")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="a self-signed certificate and key (DER for the board, PEM for clients)")
    m.add_argument("hosts", nargs="*", metavar="HOST", help="names and IP addresses (default: localhost 127.0.0.1)")
    m.add_argument("--out", default=".", help="folder for cert.der, key.der, cert.pem, key.pem (default: .)")
    m.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days (default: %d)" % DEFAULT_DAYS)
    m.add_argument("--rsa", action="store_true", help="RSA 2048 instead of EC P-256")
    c = sub.add_parser("convert", help="a PEM certificate or key to DER")
    c.add_argument("src", help="PEM input")
    c.add_argument("dst", help="DER output")
    args = p.parse_args(argv)
    if args.cmd == "make":
        files = make(args.out, args.hosts or DEFAULT_HOSTS, args.days, args.rsa)
        for path in files.values():
            print(path)
        return 0
    try:
        kind = convert(args.src, args.dst)
    except (ValueError, OSError) as e:
        print("devcert: %s" % e, file=sys.stderr)
        return 1
    print("%s: %s -> %s (DER)" % (kind, args.src, args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())

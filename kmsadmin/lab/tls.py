"""Throwaway certificate authority and server certificate for the lab's HTTPS listeners.

Generated at start-up with ``cryptography`` (nothing is committed): a CA certificate that clients can trust
via ``cert_validation=<ca path>`` and a leaf certificate signed by it, with SANs for 127.0.0.1, localhost
and any host names given (the lab server gives none: its listeners are all addressed as 127.0.0.1). A
separate CA keeps the chain shaped like a real deployment, which also satisfies strict verifiers that
refuse a self-signed leaf used as its own trust anchor.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class LabCertificate:
    """Paths of the PEM files written for one lab server."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self, client_ca: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        if client_ca is not None:
            # Ask for a client certificate (certificate authentication), never require one.
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(client_ca)
        return ctx

    def channel_bindings(self) -> Any:
        """The listener's tls-server-end-point channel bindings (RFC 5929 §4.1: SHA-256 of the leaf)."""
        from spnego.channel_bindings import GssChannelBindings

        leaf = x509.load_pem_x509_certificates(self.cert_path.read_bytes())[0]
        digest = leaf.fingerprint(hashes.SHA256())
        return GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


def _dns_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in ("localhost", *names):
        key = name.lower()
        if not name or key in seen:
            continue
        seen.add(key)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate(directory: Path, host_names: Iterable[str]) -> LabCertificate:
    """Create the CA and leaf certificate in ``directory`` and return their paths."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)  # tolerate small clock differences

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmsadmin lab CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_dns_names(["127.0.0.1", *host_names])), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "lab-ca.pem"
    cert_path = directory / "lab-server.pem"
    key_path = directory / "lab-server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # The chain file carries the leaf then the CA, as a Windows listener would present it.
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return LabCertificate(ca_path=ca_path, cert_path=cert_path, key_path=key_path)


#: szOID_NT_PRINCIPAL_NAME: the UPN in a certificate's subject alternative name (otherName), which
#: WinRM's client certificate mapping matches ([MS-WSMV]; "Certificate-based authentication" in
#: learn.microsoft.com/windows/win32/winrm/authentication-for-remote-connections)
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


@dataclass(frozen=True, slots=True)
class ClientCa:
    """The CA whose certificates the lab's HTTPS listeners accept for certificate authentication."""

    cert_path: Path
    key_path: Path

    def issue(self, upn: str, directory: Path, name: str | None = None) -> tuple[Path, Path]:
        """A client certificate (Client Authentication EKU, UPN ``upn``); returns (cert PEM, key PEM)."""
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("the lab client CA key is not an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        # the UPN as a DER UTF8String inside the otherName
        raw = upn.encode("utf-8")
        der = b"\x0c" + _der_length(len(raw)) + raw
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, upn.split("@", 1)[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.OtherName(UPN_OID, der)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        stem = name or upn.replace("@", "_at_")
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def generate_client_ca(directory: Path) -> ClientCa:
    """A CA for client certificates (its key stays in ``directory``, mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmsadmin lab client CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "lab-client-ca.pem", directory / "lab-client-ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ClientCa(cert_path, key_path)


def client_upn(der: bytes) -> str | None:
    """The UPN of a client certificate (DER), or None."""
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for other in names.get_values_for_type(x509.OtherName):
        value = other.value if other.type_id == UPN_OID else b""
        if len(value) > 2 and value[0] == 0x0C:
            length = value[1]
            start = 2
            if length & 0x80:
                count = length & 0x7F
                length = int.from_bytes(value[2 : 2 + count], "big")
                start = 2 + count
            return value[start : start + length].decode("utf-8", "replace")
    return None

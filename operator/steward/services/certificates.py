"""The admission webhook's certificates: a private CA and a serving certificate it signs.

The API server calls the webhook over HTTPS and trusts only the CA in the webhook
configuration's ``caBundle``. Rather than depend on cert-manager (absent from a bare cluster and
from the local control plane), the operator keeps its own: on start it reads the Secret the
manifests ship empty, fills it when it is empty, wrong or about to expire, and puts the CA into
the configuration (Kueue's internal certificate management works the same way). The keys never
leave that Secret and the process; the CA signs nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from steward.exceptions import TransientError
from steward.storage.webhook import StaleSecretError, WebhookObjects

__all__ = [
    "CA_KEY",
    "CERT_KEY",
    "KEY_KEY",
    "RENEW_BEFORE",
    "VALIDITY",
    "WebhookCertificate",
    "ensure_certificate",
    "issue",
    "usable",
]

VALIDITY: Final = timedelta(days=365)
"""How long a serving certificate (and its CA) is valid."""

RENEW_BEFORE: Final = timedelta(days=30)
"""A certificate with less than this left is replaced at the next start."""

CA_KEY: Final = "ca.crt"
CERT_KEY: Final = "tls.crt"
KEY_KEY: Final = "tls.key"
"""Keys of the Secret, as cert-manager names them."""


@dataclass(frozen=True)
class WebhookCertificate:
    """PEM-encoded CA certificate, serving certificate and its private key."""

    ca: bytes
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        """The Secret's ``data`` (before base64)."""
        return {CA_KEY: self.ca, CERT_KEY: self.cert, KEY_KEY: self.key}

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> WebhookCertificate | None:
        """Read it back; None when the Secret is still empty or incomplete."""
        try:
            return cls(data[CA_KEY], data[CERT_KEY], data[KEY_KEY])
        except KeyError:
            return None


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(hosts: Sequence[str], now: datetime | None = None) -> WebhookCertificate:
    """Create a CA and a serving certificate for ``hosts`` (DNS names or IP addresses).

    Raises
    ------
    ValueError
        If ``hosts`` is empty: a certificate valid for nothing would never be trusted.
    """
    if not hosts:
        raise ValueError("the webhook certificate needs at least one host name or address")
    now = now or datetime.now(UTC)
    start, end = now - timedelta(minutes=5), now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "steward-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookCertificate(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def usable(
    certificate: WebhookCertificate, hosts: Sequence[str], now: datetime | None = None
) -> bool:
    """Whether ``certificate`` can be kept: parses, names every host, not due for renewal.

    A certificate another process wrote (the second process of a leader election, or the
    previous run) is reused when this holds, so every process serves the same one.
    """
    now = now or datetime.now(UTC)
    try:
        cert = x509.load_pem_x509_certificate(certificate.cert)
        x509.load_pem_x509_certificate(certificate.ca)
        serialization.load_pem_private_key(certificate.key, password=None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    return set(_names(hosts)) <= set(sans)


def ensure_certificate(
    objects: WebhookObjects, hosts: Sequence[str], now: datetime | None = None
) -> WebhookCertificate:
    """The certificate to serve: the Secret's if `usable`, else a new one written there.

    Then the configuration's ``caBundle`` is made to match, so the API server trusts it.

    Raises
    ------
    TransientError
        The Secret kept changing under us (three writers at once), or the API failed.
    NotFoundError
        The Secret or the configuration was not deployed.
    """
    for _ in range(3):
        data, version = objects.read_secret()
        current = WebhookCertificate.from_secret_data(data)
        if current is None or not usable(current, hosts, now):
            current = issue(hosts, now)
            try:
                objects.write_secret(current.as_secret_data(), version)
            except StaleSecretError:
                continue  # another process wrote one: read and use it
        objects.set_ca_bundle(current.ca)
        return current
    raise TransientError(f"Secret {objects.secret} changed three times while being written")

"""Certificates and keys for a throw-away control plane, made with the ``openssl`` command.

The layout follows envtest's: one CA signs a serving certificate that every component presents
on 127.0.0.1 and an admin client certificate in ``system:masters`` that every component and the
tests use; an EC key pair signs service-account tokens. The ``openssl`` command is used because
the project's environment has no Python X.509 library; OpenSSL >= 3.0 is needed for
``req -x509 -CA``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SERVICE_CLUSTER_IP_RANGE", "Pki", "ServingPki", "create_pki", "create_serving_pki"]

SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
"""Service IPs; the API server's own ``kubernetes`` Service takes the first, 10.0.0.1."""

_VALID_DAYS: Final = 365
"""Long enough that a developer's stack never sees its certificates expire."""

_SERVING_NAMES: Final = (
    "IP:127.0.0.1",
    "IP:10.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    directory: Path
    """Where the files live (inside the control plane's run directory)."""

    @property
    def ca_cert(self) -> Path:
        """CA certificate: trusted for serving and client certificates alike."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """CA key: the controller manager signs CertificateSigningRequests with it."""
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        """Serving certificate for 127.0.0.1, shared by every component."""
        return self.directory / "serving.crt"

    @property
    def serving_key(self) -> Path:
        """Key of `serving_cert`."""
        return self.directory / "serving.key"

    @property
    def admin_cert(self) -> Path:
        """Client certificate of user ``steward-admin`` in group ``system:masters``."""
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        """Key of `admin_cert`."""
        return self.directory / "admin.key"

    @property
    def service_account_key(self) -> Path:
        """Private key signing service-account tokens (PKCS#8)."""
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        """Public key verifying service-account tokens.

        The API server reads private keys for verification only in PKCS#1/SEC1 form, so the
        public half is written out on its own.
        """
        return self.directory / "sa.pub"


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("`openssl` (>= 3.0) is not on PATH: install it (Debian: openssl)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`openssl {' '.join(args)}` failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class ServingPki:
    """A CA of its own and one serving certificate it signed, for a webhook server."""

    directory: Path
    """Where the files live."""

    @property
    def ca_cert(self) -> Path:
        """CA certificate: the ``caBundle`` of the webhook configurations."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """CA key."""
        return self.directory / "ca.key"

    @property
    def cert_dir(self) -> Path:
        """Directory holding ``tls.crt`` and ``tls.key``, as controller-runtime reads them."""
        return self.directory / "serving"

    @property
    def serving_cert(self) -> Path:
        """Serving certificate."""
        return self.cert_dir / "tls.crt"

    @property
    def serving_key(self) -> Path:
        """Key of `serving_cert`."""
        return self.cert_dir / "tls.key"


def _certificate(
    pki: Pki | ServingPki,
    name: str,
    subject: dict[str, str],
    extensions: dict[str, str],
    *,
    self_signed: bool = False,
    out: tuple[Path, Path] | None = None,
    rsa: bool = False,
) -> None:
    """Write ``NAME.crt`` and ``NAME.key`` (EC P-256) with exactly the given extensions.

    With RSA the key is 2048 bits in PKCS#1 form, which some controllers insist on (Kueue's
    certificate rotator parses its CA key with Go's ``x509.ParsePKCS1PrivateKey``).

    A private config file keeps the system's openssl.cnf defaults (``v3_ca`` on every
    ``req -x509``) out of the leaf certificates. OUT names the certificate and key files
    when they are not ``NAME.crt`` and ``NAME.key`` in the PKI's directory.
    """
    cert_path, key_path = out or (pki.directory / f"{name}.crt", pki.directory / f"{name}.key")
    config = pki.directory / f"{name}.cnf"
    config.write_text(
        "\n".join(
            [
                "[req]",
                "distinguished_name = dn",
                "prompt = no",
                "[dn]",
                *(f"{key} = {value}" for key, value in subject.items()),
                "[ext]",
                *(f"{key} = {value}" for key, value in extensions.items()),
                "",
            ]
        )
    )
    signer = [] if self_signed else ["-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key)]
    key = (
        ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    )
    _openssl(
        "req", "-x509", "-new", "-config", str(config), "-extensions", "ext",
        *key, "-noenc",
        "-days", str(_VALID_DAYS),
        "-keyout", str(key_path),
        "-out", str(cert_path),
        *signer,
    )  # fmt: skip
    if rsa:
        _openssl("rsa", "-in", str(key_path), "-traditional", "-out", str(key_path))
    config.unlink()


_LEAF: dict[str, str] = {
    "basicConstraints": "critical,CA:FALSE",
    "keyUsage": "critical,digitalSignature,keyEncipherment",
    "authorityKeyIdentifier": "keyid",
}


def _ca(
    pki: Pki | ServingPki, common_name: str, *, alt_names: str | None = None, rsa: bool = False
) -> None:
    extensions = {
        "basicConstraints": "critical,CA:TRUE",
        "keyUsage": "critical,keyCertSign,cRLSign,digitalSignature",
        "subjectKeyIdentifier": "hash",
    }
    if alt_names:
        extensions["subjectAltName"] = alt_names
    _certificate(pki, "ca", {"CN": common_name}, extensions, self_signed=True, rsa=rsa)


def create_serving_pki(
    directory: Path, *, ca_name: str, dns_names: list[str], ip_addresses: list[str]
) -> ServingPki:
    """Create a CA and a serving certificate it signs, for one webhook server.

    Parameters
    ----------
    directory
        Created if missing; holds the CA key, so keep it private to the run.
    ca_name
        Common name of the CA, also its one DNS name: a controller that checks its CA
        (Kueue's certificate rotator verifies the CA for the name ``kueue-ca``) finds it.
    dns_names, ip_addresses
        Subject alternative names of the serving certificate: the names the server is
        reached by (127.0.0.1 for a ``url`` webhook) and the names its own checks expect.

    Returns
    -------
    ServingPki
        Paths of the files; ``cert_dir`` holds ``tls.crt`` and ``tls.key``. The keys are RSA
        in PKCS#1 form, the one form every webhook server's certificate code reads.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = ServingPki(directory)
    pki.cert_dir.mkdir(exist_ok=True, mode=0o700)
    _ca(pki, ca_name, alt_names=f"DNS:{ca_name}", rsa=True)
    names = [f"DNS:{name}" for name in dns_names] + [f"IP:{ip}" for ip in ip_addresses]
    _certificate(
        pki,
        "serving",
        {"CN": (dns_names or ip_addresses)[0]},
        {**_LEAF, "extendedKeyUsage": "serverAuth", "subjectAltName": ",".join(names)},
        out=(pki.serving_cert, pki.serving_key),
        rsa=True,
    )
    return pki


def create_pki(directory: Path) -> Pki:
    """Create the CA, serving and admin certificates and the service-account key in DIRECTORY.

    Parameters
    ----------
    directory
        Created if missing; should be private to the control plane (it holds the CA key).

    Returns
    -------
    Pki
        Paths of the files.

    Raises
    ------
    RuntimeError
        ``openssl`` is missing or failed.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = Pki(directory)
    _ca(pki, "steward-test-ca")
    leaf = _LEAF
    _certificate(
        pki,
        "serving",
        {"CN": "steward-control-plane"},
        {**leaf, "extendedKeyUsage": "serverAuth", "subjectAltName": ",".join(_SERVING_NAMES)},
    )
    _certificate(
        pki,
        "admin",
        {"O": "system:masters", "CN": "steward-admin"},
        {**leaf, "extendedKeyUsage": "clientAuth"},
    )
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", str(pki.service_account_key),
    )  # fmt: skip
    _openssl(
        "pkey", "-in", str(pki.service_account_key), "-pubout",
        "-out", str(pki.service_account_public_key),
    )  # fmt: skip
    return pki

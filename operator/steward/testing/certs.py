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

__all__ = ["SERVICE_CLUSTER_IP_RANGE", "Pki", "create_pki"]

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


def _certificate(
    pki: Pki,
    name: str,
    subject: dict[str, str],
    extensions: dict[str, str],
    *,
    self_signed: bool = False,
) -> None:
    """Write ``NAME.crt`` and ``NAME.key`` (EC P-256) with exactly the given extensions.

    A private config file keeps the system's openssl.cnf defaults (``v3_ca`` on every
    ``req -x509``) out of the leaf certificates.
    """
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
    _openssl(
        "req", "-x509", "-new", "-config", str(config), "-extensions", "ext",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
        "-days", str(_VALID_DAYS),
        "-keyout", str(pki.directory / f"{name}.key"),
        "-out", str(pki.directory / f"{name}.crt"),
        *signer,
    )  # fmt: skip
    config.unlink()


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
    _certificate(
        pki,
        "ca",
        {"CN": "steward-test-ca"},
        {
            "basicConstraints": "critical,CA:TRUE",
            "keyUsage": "critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier": "hash",
        },
        self_signed=True,
    )
    leaf = {
        "basicConstraints": "critical,CA:FALSE",
        "keyUsage": "critical,digitalSignature,keyEncipherment",
        "authorityKeyIdentifier": "keyid",
    }
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

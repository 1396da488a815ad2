"""The webhook's own CA and serving certificate (pure, with an injected clock)."""

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from steward.services.certificates import RENEW_BEFORE, VALIDITY, issue, usable

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_issued_certificate_names_every_host_and_is_signed_by_its_ca(tmp_path):
    certificate = issue(["steward.steward.svc", "127.0.0.1"], NOW)
    cert = x509.load_pem_x509_certificate(certificate.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["steward.steward.svc"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= VALIDITY
    ca = x509.load_pem_x509_certificate(certificate.ca)
    cert.verify_directly_issued_by(ca)
    # OpenSSL accepts the pair as a server would load it.
    (tmp_path / "tls.crt").write_bytes(certificate.cert)
    (tmp_path / "tls.key").write_bytes(certificate.key)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "tls.crt", tmp_path / "tls.key"
    )


def test_kept_while_valid_for_the_hosts_and_not_due():
    certificate = issue(["a.svc", "127.0.0.1"], NOW)
    assert usable(certificate, ["a.svc"], NOW)
    assert usable(certificate, ["127.0.0.1", "a.svc"], NOW + VALIDITY - RENEW_BEFORE * 2)
    assert not usable(certificate, ["b.svc"], NOW)
    assert not usable(certificate, ["a.svc"], NOW + VALIDITY - RENEW_BEFORE + timedelta(days=1))


def test_garbage_is_not_usable():
    certificate = issue(["a.svc"], NOW)
    broken = type(certificate)(certificate.ca, b"not a certificate", certificate.key)
    assert not usable(broken, ["a.svc"], NOW)


def test_secret_data_round_trip():
    certificate = issue(["a.svc"], NOW)
    data = certificate.as_secret_data()
    assert set(data) == {"ca.crt", "tls.crt", "tls.key"}
    assert type(certificate).from_secret_data(data) == certificate
    assert type(certificate).from_secret_data({}) is None


def test_no_host_no_certificate():
    with pytest.raises(ValueError, match="at least one host"):
        issue([], NOW)

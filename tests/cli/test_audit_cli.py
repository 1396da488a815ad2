import csv
import io
import json
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner

from steward.cli.main import cli
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.checkpoint import (
    Checkpoint,
    CheckpointService,
    ConfigMapWitness,
    SigningKey,
)
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.files import write_private
from steward.storage.kubernetes import ConfigMaps
from steward.testing.postgres import postgres_server
from support.database import rewrite_chain, tamper

STEWARD = Path(sys.executable).with_name("steward")

REF = ResourceRef(kind="Site", name="ncsa", generation=1, git_commit="b" * 40, git_author="ops")


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_upgrade_log_and_verify(database_url):
    assert "is current" in _run("audit", "--database-url", database_url, "upgrade").output
    engine = make_engine(database_url)
    service = AuditService(make_sessionmaker(engine))
    service.record(
        AuditRecord(resource=REF, action="rucio.rse.add", actor="op", target="NCSA_TAPE")
    )
    service.record(AuditRecord(resource=REF, action="rucio.rse.update", actor="op", after={"a": 1}))

    text = _run("audit", "--database-url", database_url, "log", "--kind", "Site").output
    assert "rucio.rse.add Site/ncsa gen=1 target=NCSA_TAPE success commit=bbbbbbbbbbbb" in text

    rows = json.loads(
        _run("audit", "--database-url", database_url, "log", "--format", "json").output
    )
    assert [r["action"] for r in rows] == ["rucio.rse.add", "rucio.rse.update"]
    assert rows[1]["after"] == {"a": 1}

    out = _run("audit", "--database-url", database_url, "log", "--format", "csv").output
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert parsed[0]["target"] == "NCSA_TAPE"

    result = _run("audit", "--database-url", database_url, "verify")
    assert result.exit_code == 0
    assert "audit trail intact: 2 rows" in result.output
    engine.dispose()


def test_log_on_a_database_without_schema_is_a_clear_error(database_url):
    result = CliRunner().invoke(cli, ["audit", "--database-url", database_url, "log"])
    assert result.exit_code == 1
    assert "run `steward audit upgrade` first" in result.output


# -- signed checkpoints ---------------------------------------------------------------------------


def _trail(database_url, rows):
    engine = make_engine(database_url)
    upgrade(engine)
    service = AuditService(make_sessionmaker(engine))
    for index in range(rows):
        service.record(
            AuditRecord(resource=REF, action="rucio.rse.add", actor="op", target=f"{index}")
        )
    return engine, service


def test_key_is_generated_private_and_shown(tmp_path, monkeypatch):
    path = tmp_path / "audit-key.pem"
    made = _run("audit", "key", "--generate", str(path))
    assert made.exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert made.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    monkeypatch.setenv("STEWARD_AUDIT_SIGNING_KEY_FILE", str(path))
    assert _run("audit", "key").stdout == made.stdout
    again = CliRunner().invoke(cli, ["audit", "key", "--generate", str(path)])
    assert again.exit_code == 1
    assert "not overwriting" in again.output


def test_export_keeps_what_the_database_loses(database_url, tmp_path, monkeypatch):
    engine, service = _trail(database_url, 5)
    key = SigningKey.generate()
    CheckpointService(service, key).checkpoint()
    export = tmp_path / "checkpoints.json"
    key_file = tmp_path / "key.pem"
    write_private(key_file, key.pem())
    monkeypatch.setenv("STEWARD_AUDIT_SIGNING_KEY_FILE", str(key_file))
    exported = _run("audit", "--database-url", database_url, "checkpoint", "--export", str(export))
    assert "1 checkpoints (1 new)" in exported.output
    assert json.loads(export.read_text())["keyId"] == key.public().key_id
    verified = _run("audit", "--database-url", database_url, "verify")
    assert "1 signed checkpoints verified" in verified.output

    # The administrator deletes the last rows, rewinds the head, and drops the checkpoints.
    row3 = service.walk(capture={3}).captured[3]
    tamper(
        engine,
        "DELETE FROM audit_entries WHERE id > 3",
        f"UPDATE audit_head SET seq = 3, hash = '{row3}'",  # noqa: S608 - the test's own value
        "DELETE FROM audit_checkpoints",
    )
    fooled = _run("audit", "--database-url", database_url, "verify")
    assert fooled.exit_code == 0
    assert "no signed checkpoint was checked" in fooled.output

    monkeypatch.delenv("STEWARD_AUDIT_SIGNING_KEY_FILE")  # the export carries the key
    caught = CliRunner().invoke(
        cli, ["audit", "--database-url", database_url, "verify", "--checkpoint", str(export)]
    )
    assert caught.exit_code == 1
    assert "rows 4-5 were deleted" in caught.output
    assert "first bad row: 4" in caught.output
    engine.dispose()


def test_a_checkpoint_file_signed_by_another_key_is_caught(database_url, tmp_path):
    engine, service = _trail(database_url, 2)
    genuine, mallory = SigningKey.generate(), SigningKey.generate()
    CheckpointService(service, genuine).checkpoint()
    forged = mallory.sign(
        Checkpoint(2, 2, service.walk().last_hash, datetime.now(UTC), "0" * 64, key_id="")
    )
    public = tmp_path / "audit.pub"
    public.write_text(genuine.public().pem())
    export = tmp_path / "forged.json"
    export.write_text(
        json.dumps({"publicKey": mallory.public().pem(), "checkpoints": [forged.to_json()]})
    )
    caught = CliRunner().invoke(
        cli,
        [
            "audit",
            "--database-url",
            database_url,
            "verify",
            "--checkpoint",
            str(export),
            "--public-key",
            str(public),
        ],
    )
    assert caught.exit_code == 1
    assert f"checkpoint 2: signed by another key ({mallory.public().key_id})" in caught.output
    engine.dispose()


@pytest.mark.kube
def test_verify_from_the_cluster(database_url, kube_api, namespace, control_plane, monkeypatch):
    engine, service = _trail(database_url, 4)
    key = SigningKey.generate()
    witness = ConfigMapWitness(ConfigMaps(kube_api, namespace))
    witness.publish_key(key.public())
    CheckpointService(service, key, witness).checkpoint()
    monkeypatch.setenv("STEWARD_OPERATOR_NAMESPACE", namespace)
    cluster = ["--kubeconfig", str(control_plane.kubeconfig)]

    shown = _run("audit", "key", "--from-cluster", *cluster)
    assert shown.stdout == key.public().pem()
    listed = _run("audit", "--database-url", database_url, "checkpoint", "--from-cluster", *cluster)
    assert "rows=4" in listed.output
    good = _run("audit", "--database-url", database_url, "verify", "--from-cluster", *cluster)
    assert "from the cluster's ConfigMap" in good.output

    rewrite_chain(engine, 2, {"actor": "mallory"})
    tamper(engine, "DELETE FROM audit_checkpoints")
    bad = CliRunner().invoke(
        cli, ["audit", "--database-url", database_url, "verify", "--from-cluster", *cluster]
    )
    assert bad.exit_code == 1
    assert "the trail was rewritten" in bad.output
    assert "first bad row: 1" in bad.output
    engine.dispose()


# -- no command prints a secret -------------------------------------------------------------------

SECRET = "p%zz%25s3cr3t"


@pytest.fixture
def postgres_url(_postgres_server):
    """A database on a real PostgreSQL (trust authentication: any password is accepted)."""
    if _postgres_server is not None:
        yield _postgres_server.create_database()
        return
    with postgres_server() as server:
        yield server.create_database()


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{quote_plus(password)}@{host}"


def _steward(*args, env=None):
    """The real command, so tracebacks and everything else it prints are seen."""
    done = subprocess.run(
        [str(STEWARD), *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    return done.returncode, done.stdout + done.stderr


def test_no_audit_command_prints_the_database_password(postgres_url, tmp_path):
    url = _with_password(postgres_url, SECRET)
    secrets = (SECRET, quote_plus(SECRET), quote(SECRET, safe=""))
    outputs = []
    code, out = _steward("audit", "--database-url", url, "upgrade")
    assert code == 0, out
    assert "is current" in out
    outputs.append(out)
    for args in (("log",), ("verify",), ("checkpoint",)):
        code, out = _steward("audit", "--database-url", url, *args)
        assert code == 0, out
        outputs.append(out)
    unreachable = _with_password("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", SECRET)
    code, out = _steward("audit", "--database-url", unreachable, "log")
    assert code == 1
    assert "cannot use the audit database postgresql+psycopg://postgres:***@127.0.0.1:1" in out
    outputs.append(out)
    for out in outputs:
        assert not any(secret in out for secret in secrets), out

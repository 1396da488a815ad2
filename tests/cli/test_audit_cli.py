import csv
import io
import json

from click.testing import CliRunner

from steward.cli.main import cli
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.storage.database import make_engine, make_sessionmaker

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

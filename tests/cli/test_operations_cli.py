"""`steward ingest` and `steward drill` as an operator (or a CronJob) runs them, real Rucio."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from steward.cli.main import cli
from steward.storage.database import make_engine, upgrade

pytestmark = pytest.mark.rucio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(rucio_server, database_url):
    """What `steward dev env` would export: Rucio and a current audit database."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    settings = rucio_server.settings()
    return {
        "STEWARD_RUCIO_HOST": settings.rucio_host,
        "STEWARD_RUCIO_ACCOUNT": settings.rucio_account,
        "STEWARD_RUCIO_USERNAME": settings.rucio_username,
        "STEWARD_RUCIO_PASSWORD": settings.rucio_secret().get_secret_value(),
        "STEWARD_DATABASE_URL": database_url,
        "STEWARD_CLUSTER_ID": "cli-test-cluster",
        "STEWARD_ACTOR": "kcarter",
    }


def _run(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_ingest_plans_first_then_registers_once(env, rucio_data, posix_site, tmp_path):
    paths = []
    for name in ("efd-annex-0001.tar", "efd-annex-0002.tar"):
        path = tmp_path / name
        path.write_bytes(name.encode() * 1000)
        paths.append(str(path))
    args = ["ingest", *paths, "--scope", rucio_data.scope, "--rse", posix_site.disk]
    args += ["--meta", "datatype=raw", "--dataset", "annex-2026-11"]

    dry = _run(env, *args)
    assert dry.exit_code == 2, dry.output
    assert f"+ register {rucio_data.scope}:efd-annex-0001.tar on {posix_site.disk}" in dry.stdout
    assert "expected at file://" in dry.stdout
    assert "dry run: nothing was registered; run again with --apply" in dry.stderr
    assert rucio_data.storage.get_collection(rucio_data.did("annex-2026-11")) is None

    applied = _run(env, *args, "--apply")
    assert applied.exit_code == 0, applied.output
    assert "ingested" in applied.stderr
    assert "2 registered, 2 attached, 1 metadata keys set" in applied.stderr
    logged = [json.loads(line) for line in applied.stderr.splitlines() if line.startswith("{")]
    assert "rucio.replica.add" in {line["event"] for line in logged}  # logs: stderr, as JSON

    again = _run(env, *args, "--apply", "--format", "json")
    assert again.exit_code == 0, again.output
    plan = json.loads(again.stdout)
    assert (plan["pending"], plan["alreadyRegistered"], plan["register"]) == (False, 2, [])

    log = json.loads(_run(env, "audit", "log", "--kind", "Ingest", "--format", "json").stdout)
    assert {row["actor"] for row in log} == {"kcarter"}
    assert log[0]["name"] == rucio_data.did("annex-2026-11")


def test_ingest_conflicts_exit_1_and_change_nothing(env, rucio_data, tmp_path):
    dataset = rucio_data.dataset(files=1)
    (file_did,) = rucio_data.files_of(dataset, 1)
    clash = tmp_path / file_did.split(":")[1]
    clash.write_bytes(b"not what Rucio has")
    result = CliRunner().invoke(
        cli, ["ingest", str(clash), "--scope", rucio_data.scope, "--rse", "NCSA_DISK"], env=env
    )
    assert result.exit_code == 1
    assert "is already in Rucio with other content" in result.stdout
    assert "1 conflicts; nothing was ingested" in result.output


class _Pushgateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture
def pushgateway():
    """A Prometheus Pushgateway stand-in on a free port: records what is pushed."""
    handler = type("Handler", (_Pushgateway,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler.received
    server.shutdown()
    server.server_close()


def test_drill_command_reports_pushes_metrics_and_fails_the_job(
    env, rucio_data, rucio_storage, pushgateway
):
    """On mock RSEs nothing can be read back: the drill says so and exits 1 (a failed Job)."""
    from steward.storage.rucio import File  # noqa: PLC0415 - after TMPDIR is set

    files = [File(rucio_data.did(f"t{i}"), bytes=10) for i in range(2)]
    rucio_storage.add_replicas("NCSA_TAPE", files)
    rucio_storage.add_dataset(rucio_data.did("tape-ds"), meta={"datatype": "raw"})
    rucio_storage.attach(rucio_data.did("tape-ds"), [f.did for f in files])
    address, received = pushgateway
    args = ["drill", "--scope", rucio_data.scope, "--tape", "NCSA_TAPE", "--scratch", "NCSA_DISK"]
    args += ["--files", "2", "--timeout", "2s", "--poll", "1s", "--seed", "5"]

    result = _run(env, *args, "--pushgateway", address, "--format", "json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["seed"] == 5
    assert len(report["files"]) == 2
    assert len(report["released"]) == 2
    assert report["passed"] is False
    ((method, path, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/steward-drill")
    assert (
        b'steward_drill_files{outcome="Timeout",scratch="NCSA_DISK",tape="NCSA_TAPE"} 2.0' in body
    )
    assert b"steward_drill_passed" in body


def test_a_drill_whose_metrics_cannot_be_pushed_fails_the_job(env, rucio_data):
    """Nothing to sample here; the report still prints, the push's failure is said and fails."""
    args = ["drill", "--scope", rucio_data.scope, "--tape", "NCSA_TAPE", "--scratch", "NCSA_DISK"]
    result = _run(env, *args, "--pushgateway", "127.0.0.1:9")
    assert result.exit_code == 1
    assert "has its only available replica on NCSA_TAPE" in result.stdout
    assert "could not push the drill's metrics to 127.0.0.1:9" in result.stderr


def test_drill_refuses_a_bad_duration():
    result = CliRunner().invoke(
        cli, ["drill", "--scope", "s", "--tape", "T", "--scratch", "S", "--timeout", "4 hours"]
    )
    assert result.exit_code == 2
    assert "invalid duration '4 hours'" in result.output


def test_the_documented_cronjob_runs_a_valid_drill_command():
    """docs/operations.md's CronJob: its command line is one `steward drill` accepts."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split("```yaml\n# drill-cronjob\n", 1)[1].split("```", 1)[0]
    cronjob = yaml.safe_load(block)
    assert cronjob["kind"] == "CronJob"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container["args"]
    assert command[:2] == ["steward", "drill"]
    context = cli.make_context("steward", command[1:], resilient_parsing=False)
    sub = cli.get_command(context, "drill")
    parsed = sub.make_context("drill", command[2:])
    assert parsed.params["tape"] == "NCSA_TAPE"
    assert parsed.params["scratch"] == "NCSA_SCRATCH"
    env_names = {e["name"] for e in container["env"]}
    assert {"RUCIO_CONFIG", "STEWARD_RUCIO_HOST", "STEWARD_DATABASE_URL"} <= env_names

"""The Rucio server harness: start, daemons, the rucio command, clean stops, PostgreSQL."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy

from steward.storage.rucio import File, RucioStorage, RuleSpec, RuleState
from steward.testing import rucio_server as harness
from steward.testing.devoperator import rucio_settings
from steward.testing.postgres import postgres_server
from steward.testing.rucio_server import DAEMONS, RucioHarnessError, RucioServer
from support.rucio import RucioData
from support.waiting import until

pytestmark = pytest.mark.rucio

_REPAIRER_LIMIT = 100
"""STUCK rules one run of Rucio's judge-repairer takes."""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies, which only wait for their parent's wait(), do not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _group(pgid: int) -> list[int]:
    """Pids of the process group (a server and its workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_server_answers_and_reports_timings(rucio_server: RucioServer) -> None:
    assert rucio_server.ping()
    assert rucio_server.host.startswith("http://127.0.0.1:")
    assert {"venv", "bootstrap", "api_start"} <= set(rucio_server.timings)
    names = [name for name, _ in rucio_server.processes()]
    assert "rucio-server" in names
    server_pid = dict(rucio_server.processes())["rucio-server"]
    assert len(_group(server_pid)) == 1 + rucio_server.workers  # gunicorn master + workers


def test_rucio_command_uses_the_local_server(rucio_server: RucioServer, tmp_path: Path) -> None:
    env = {**os.environ, **rucio_server.env(), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [str(rucio_server.venv / "bin" / "rucio"), "whoami"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "root" in result.stdout


def test_every_daemon_runs_one_pass(tmp_path: Path) -> None:
    # Pass times (0.01-0.08 s when idle) are reported in docs/rucio-dev.md, not asserted: a
    # loaded 2-core machine makes any bound either flaky or meaningless.
    with RucioServer(tmp_path) as server:
        for daemon in DAEMONS:
            run = server.daemons.run(daemon)
            assert run.daemon == daemon


def test_converge_stops_when_the_tests_scope_is_quiet(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    rucio_storage.add_rule(rucio_data.dataset(files=2), RuleSpec("IN2P3_DISK"))
    assert rucio_server.daemons.fingerprint(rucio_data.scope)["rules"] == {"REPLICATING": 1}
    result = rucio_server.daemons.converge(scope=rucio_data.scope)
    assert result.quiet
    assert result.state["rules"] == {"OK": 1}
    assert result.state["locks"] == {"OK": 2}
    assert result.state == rucio_server.daemons.fingerprint(rucio_data.scope)
    assert rucio_server.daemons.fingerprint()["rules"]["OK"] >= 1  # the whole server


def test_repairer_pass_reaches_every_stuck_rule(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    # Rucio's repairer takes 100 STUCK rules per run_once; a "pass" must take them all, or a
    # test's rule waits behind the STUCK rules other tests left on the shared server. Each
    # file is already at the destination, so a repaired rule has only OK locks and turns OK.
    files = [File(rucio_data.did(f"f{i}"), bytes=1000) for i in range(_REPAIRER_LIMIT + 5)]
    rucio_storage.add_replicas("IN2P3_DISK", files)
    spec = RuleSpec("IN2P3_DISK", comment=rucio_data.comment)
    for rule_id in rucio_storage.add_rules([f.did for f in files], spec).rule_ids.values():
        rucio_storage.update_rule(rule_id, state="STUCK")
    stuck = rucio_storage.list_rules(comment=rucio_data.comment, state=RuleState.STUCK)
    assert len(stuck) == len(files)

    rucio_server.daemons.run("judge-repairer")

    rules = rucio_storage.list_rules(comment=rucio_data.comment)
    assert {rule.state for rule in rules} == {RuleState.OK}


def test_unknown_daemon_is_a_clear_error(rucio_server: RucioServer) -> None:
    with pytest.raises(RucioHarnessError, match=r"unknown daemon .judge-nobody.*judge-cleaner"):
        rucio_server.daemons.run("judge-nobody")
    assert rucio_server.daemons.run("judge-cleaner").daemon == "judge-cleaner"


def test_failing_pass_reports_rucio_traceback(rucio_server: RucioServer) -> None:
    with pytest.raises(RucioHarnessError, match="unexpected keyword argument"):
        rucio_server.daemons.run("judge-evaluator", no_such_option=1)


def test_api_restarts_on_the_same_port(private_rucio_server: RucioServer) -> None:
    server = private_rucio_server
    port = server.port
    server.stop_api()
    assert not server.ping()
    server.start_api()
    assert server.port == port
    assert server.ping()


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    with RucioServer(tmp_path) as server:
        server.daemons.run("judge-cleaner")
        groups = [pid for _, pid in server.processes()]
        pids = [pid for group in groups for pid in _group(group)]
        assert len(pids) == 1 + server.workers + 1  # master, workers, daemon runner
    until("no process left", lambda: not any(_alive(pid) for pid in pids), timeout=15)


def test_killed_parent_takes_the_server_down(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, threading
        from pathlib import Path
        from steward.testing.rucio_server import RucioServer
        server = RucioServer(Path({str(tmp_path)!r}))
        server.start()
        server.daemons.run("judge-cleaner")
        print(json.dumps([pid for _, pid in server.processes()]), flush=True)
        threading.Event().wait()
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert parent.stdout is not None
        groups = json.loads(parent.stdout.readline())
        pids = [pid for group in groups for pid in _group(group)]
        assert len(pids) >= 3
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    until("server gone", lambda: not any(_alive(pid) for pid in pids), timeout=30)


def _blocked_on(path: Path) -> bool:
    """Whether someone waits for a lock on ``path`` (a ``->`` line of /proc/locks)."""
    inode = path.stat().st_ino
    return any(
        "->" in line and line.split()[-3].endswith(f":{inode}")
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_second_builder_waits_for_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEWARD_CACHE_DIR", str(tmp_path))
    root = tmp_path / "rucio" / harness.RUCIO_VERSION
    root.mkdir(parents=True)
    result: list[Path] = []
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a first builder at work
        waiter = threading.Thread(target=lambda: result.append(harness.ensure_venv()))
        waiter.start()
        until("the second builder to block on the lock", lambda: _blocked_on(root / ".lock"))
        assert result == []
        venv = root / "venv"
        venv.mkdir()
        (venv / ".steward-ready").write_text(json.dumps(list(harness.SERVER_REQUIREMENTS)))
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(30)
    assert result == [root / "venv"]  # reused, not rebuilt


def test_postgres_server_gives_fresh_databases() -> None:
    with postgres_server() as pg:
        first, second = pg.create_database(), pg.create_database()
        assert first != second
        engine = sqlalchemy.create_engine(first)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select 1")).scalar() == 1
        engine.dispose()
        pg.drop_database(first.rsplit("/", 1)[1])
        pids = _group(int((pg.directory / "data" / "postmaster.pid").read_text().split()[0]))
        assert pids
    until("postgres gone", lambda: not any(_alive(pid) for pid in pids), timeout=15)
    assert not pg.ping()
    assert not pg.directory.exists()


def test_dev_stack_component_runs_server_and_daemons(tmp_path: Path) -> None:
    component = harness.RucioComponent()
    component.start(SimpleNamespace(run_dir=tmp_path))
    try:
        processes = component.processes()
        assert [p.name for p in processes] == ["rucio-server", "rucio-daemons"]
        assert all(p.healthy() for p in processes)
        env = component.env()
        assert Path(env["RUCIO_CONFIG"]).is_file()
        assert env["STEWARD_RUCIO_HOST"].startswith("http://127.0.0.1:")
        password = Path(env["STEWARD_RUCIO_PASSWORD_FILE"]).read_text()
        assert password not in json.dumps(env)
        assert env["STEWARD_RUCIO_ACCOUNT"] == harness.ACCOUNT  # steward dev up makes it
        with RucioStorage(rucio_settings(env)) as storage:
            assert storage.is_admin(harness.ACCOUNT)
        assert any("rule list --account steward" in line for line in component.summary())
    finally:
        component.stop()
    until("stack stopped", lambda: not any(p.alive() for p in processes), timeout=15)


def test_steward_acts_as_a_dedicated_admin_account(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    # Rucio's unit of ownership, duplicate detection and listing cost is the account: Steward
    # has its own, with the admin attribute Rucio's permission policy asks for, never root.
    assert rucio_server.settings().rucio_account == harness.ACCOUNT == "steward"
    assert rucio_storage.is_admin(harness.ACCOUNT)
    rule_id = rucio_storage.add_rule(rucio_data.dataset(), RuleSpec("NCSA_DISK"))
    assert rucio_storage.get_rule(rule_id).account == "steward"
    rucio_storage.update_rule(rule_id, locked=True)  # needs admin
    assert rucio_storage.delete_rule(rule_id, unlock=True)


def test_the_server_database_is_chosen_as_dev_up_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(harness.DATABASE_ENV, raising=False)
    monkeypatch.setattr(harness, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    assert harness._database_kind(None) == "postgresql"

    def missing() -> Path:
        raise harness.PostgresError("not installed")

    monkeypatch.setattr(harness, "find_bindir", missing)
    assert harness._database_kind(None) == "sqlite"
    monkeypatch.setenv(harness.DATABASE_ENV, "postgresql")
    assert harness._database_kind(None) == "postgresql"
    with pytest.raises(RucioHarnessError, match="must be 'auto', 'sqlite' or 'postgresql'"):
        harness._database_kind("oracle")

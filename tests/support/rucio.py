"""Fixtures for the real Rucio server of `steward.testing.rucio_server`.

Tests marked ``rucio`` use them. One server serves the whole session (on PostgreSQL when it is
installed, else SQLite; ``STEWARD_TEST_RUCIO_DB`` forces one), with two mock sites registered
once: NCSA and IN2P3, each with a DISK and a TAPE RSE, one apart. Each test gets its own scope
from `rucio_data`, so tests never see each other's DIDs or rules; tests that register RSEs make
their own unique names.

The server's virtual environment is built (or found in the cache) once collection is done. The
session gets its own TMPDIR: Rucio's client caches tokens under it (fixed when
``rucio.client`` is first imported, hence ``pytest_configure``), and a token cached by another
session, or by a developer's own ``rucio`` command, must not stand in for ours. It is removed at
the end of a passing session and kept, with the server's logs, after a failing one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from steward.models.site import Site
from steward.testing.rucio_server import RucioServer, ensure_venv, run_rucio_server

if TYPE_CHECKING:
    from steward.storage.rucio import RucioStorage

_SESSION_TMP = pytest.StashKey[Path]()

MOCK_IMPL = "rucio.rse.protocols.mock.Default"


def pytest_configure(config: pytest.Config) -> None:
    """Give the session its own TMPDIR before anything imports ``rucio.client``."""
    directory = Path(tempfile.mkdtemp(prefix="steward-tests-"))
    config.stash[_SESSION_TMP] = directory
    os.environ["TMPDIR"] = str(directory)
    tempfile.tempdir = None  # forget the cached temporary directory


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or reuse the server venv when a selected test needs Rucio.

    A cold build takes about a minute; done here, it is not charged to the first test's
    timeout.
    """
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("rucio") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    ensure_venv(log=reporter.write_line if reporter else None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's TMPDIR if everything passed; say where it is otherwise."""
    directory = session.config.stash.get(_SESSION_TMP, None)
    if directory is None:
        return
    if exitstatus == 0:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"test session TMPDIR (Rucio logs) kept in {directory}")


def mock_site(name: str, facility: str, rses: dict[str, str], **spec: Any) -> Site:
    """A Site whose RSEs (name -> DISK/TAPE/CACHE) use Rucio's mock protocol."""
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": name},
            "spec": {
                "facility": facility,
                "rses": [
                    {
                        "name": rse,
                        "type": kind,
                        "attributes": {"custodial": True} if kind == "TAPE" else {},
                        "protocols": [
                            {
                                "scheme": "mock",
                                "hostname": "localhost",
                                "port": 0,
                                # The mock protocol writes nothing: the path is a label.
                                "prefix": f"/steward-mock/{rse.lower()}",
                                "impl": MOCK_IMPL,
                            }
                        ],
                    }
                    for rse, kind in rses.items()
                ],
                **spec,
            },
        }
    )


@dataclass(frozen=True)
class RucioSites:
    """The session's registered sites."""

    ncsa: Site
    in2p3: Site

    source = "NCSA_DISK"
    """Where `RucioData.dataset` puts replicas by default."""


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """The session's Rucio server; ``server.daemons`` runs daemon passes."""
    with run_rucio_server(tmp_path_factory.mktemp("rucio")) as server:
        yield server


@pytest.fixture
def private_rucio_server(tmp_path: Path) -> Iterator[RucioServer]:
    """A Rucio server of the test's own (SQLite, no sites), for tests that stop its API.

    Stopping the shared server's API would fail whatever else talks to it, and a restart may
    move it to another port; such tests take this one instead.
    """
    with run_rucio_server(tmp_path / "private-rucio", database="sqlite") as server:
        yield server


@pytest.fixture(scope="session")
def rucio_storage(rucio_server: RucioServer) -> Iterator[RucioStorage]:
    """The adapter as Steward's own account, with a rate cap high enough not to slow tests."""
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR is set

    with RucioStorage(rucio_server.settings(rucio_calls_per_second=10_000)) as storage:
        yield storage


@pytest.fixture(scope="session")
def rucio_root(rucio_server: RucioServer) -> Iterator[RucioStorage]:
    """The adapter logged in as ``root``: for other users' accounts and rules, never Steward's."""
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR is set

    with RucioStorage(rucio_server.root_settings(rucio_calls_per_second=10_000)) as storage:
        yield storage


class OtherAccounts:
    """Rucio accounts of other users (not Steward's), made on demand with their own login."""

    def __init__(self, server: RucioServer, root: RucioStorage, sites: RucioSites) -> None:
        self._server = server
        self._root = root
        self._sites = sites
        self._open: list[RucioStorage] = []

    def create(self) -> RucioStorage:
        """A new USER account with unlimited quota on the session's RSEs, logged in as it."""
        from pydantic import SecretStr  # noqa: PLC0415

        from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR is set

        name = f"user{secrets.token_hex(6)}"
        password = secrets.token_hex(16)
        self._root.ensure_account(name, email=f"{name}@localhost", account_type="USER")
        self._root.ensure_userpass_identity(name, name, password, email=f"{name}@localhost")
        for site in (self._sites.ncsa, self._sites.in2p3):
            for rse in site.spec.rses:
                self._root.set_quota(name, rse.name)
        storage = RucioStorage(
            self._server.settings(
                rucio_account=name,
                rucio_username=name,
                rucio_password=SecretStr(password),
                rucio_calls_per_second=10_000,
            )
        )
        self._open.append(storage)
        return storage

    def close(self) -> None:
        for storage in self._open:
            storage.close()


@pytest.fixture
def other_accounts(
    rucio_server: RucioServer, rucio_root: RucioStorage, rucio_sites: RucioSites
) -> Iterator[OtherAccounts]:
    """Make accounts of other Rucio users (their rules must never be Steward's business)."""
    accounts = OtherAccounts(rucio_server, rucio_root, rucio_sites)
    yield accounts
    accounts.close()


@pytest.fixture(scope="session")
def rucio_sites(rucio_storage: RucioStorage) -> RucioSites:
    """NCSA and IN2P3, a DISK and a TAPE RSE each, registered once; datatype ``raw`` allowed."""
    distance = [{"site": "in2p3", "distance": 1}]
    ncsa = mock_site("ncsa", "NCSA", {"NCSA_DISK": "DISK", "NCSA_TAPE": "TAPE"}, distances=distance)
    in2p3 = mock_site(
        "in2p3",
        "IN2P3",
        {"IN2P3_DISK": "DISK", "IN2P3_TAPE": "TAPE"},
        distances=[{"site": "ncsa", "distance": 1}],
    )
    rucio_storage.register_site(ncsa)
    rucio_storage.register_site(in2p3, peers=[ncsa])
    rucio_storage.register_site(ncsa, peers=[in2p3])
    rucio_storage.allow_metadata_values("datatype", ["raw", "calexp"])
    return RucioSites(ncsa, in2p3)


class RucioData:
    """A fresh scope for one test, and helpers to put data in it."""

    def __init__(self, storage: RucioStorage, sites: RucioSites) -> None:
        self.storage = storage
        self.sites = sites
        self.scope = f"t{secrets.token_hex(8)}"
        self.comment = f"steward-test:{self.scope}"
        """A comment unique to the test, to tag and find its rules."""
        storage.add_scope(self.scope)

    def did(self, name: str) -> str:
        """``scope:name`` in this test's scope."""
        return f"{self.scope}:{name}"

    def dataset(
        self,
        name: str | None = None,
        *,
        files: int = 2,
        rse: str = RucioSites.source,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """A dataset of ``files`` files whose replicas are on ``rse``; return its DID."""
        from steward.storage.rucio import File  # noqa: PLC0415 - after TMPDIR is set

        dataset = self.did(name or f"ds-{secrets.token_hex(4)}")
        members = [File(f"{dataset}.f{i}", bytes=1000 + i) for i in range(files)]
        self.storage.add_replicas(rse, members)
        self.storage.add_dataset(dataset, meta=meta)
        self.storage.attach(dataset, [f.did for f in members])
        return dataset

    def files_of(self, dataset: str, files: int = 2) -> list[str]:
        """File DIDs `dataset` created for a dataset."""
        return [f"{dataset}.f{i}" for i in range(files)]


@pytest.fixture
def rucio_data(rucio_storage: RucioStorage, rucio_sites: RucioSites) -> RucioData:
    """A fresh scope and helpers for one test."""
    return RucioData(rucio_storage, rucio_sites)


class Faults:
    """The real adapter with chosen calls failing as a Rucio outage makes them fail.

    Every call reaches the real server except those a rule matches, which raise the error a
    503 or a refused connection becomes in the adapter (`RucioTransientError`). Faults are
    part of the spec: a decision that depends on an answer must survive not getting it.
    """

    def __init__(self, storage: RucioStorage) -> None:
        self._storage = storage
        self._rules: list[tuple[str, Any]] = []

    def fail(self, method: str, when: Any = None) -> None:
        """Make ``method`` fail (only for arguments where ``when(*args, **kwargs)`` is true)."""
        self._rules.append((method, when))

    def heal(self) -> None:
        """Let every call through again."""
        self._rules.clear()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._storage, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            from steward.exceptions import RucioTransientError  # noqa: PLC0415

            for method, when in self._rules:
                if method == name and (when is None or when(*args, **kwargs)):
                    msg = f"Rucio {name} failed: RucioException: http status code: 503 (injected)"
                    raise RucioTransientError(msg)
            return attribute(*args, **kwargs)

        return call

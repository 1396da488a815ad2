"""Steward's own part of ``steward dev up``: namespace, audit store, policies, operator, demo data.

The stack components in `steward.testing.devstack` call these functions in order once the
control plane and Rucio run:

1. `create_namespace` makes the ``steward`` namespace the policies live in;
2. `migrate_audit` creates the audit database (SQLite, under the stack's run directory);
3. `apply_repository` applies ``sites/`` and ``policies/`` with Steward's own apply service,
   exactly what ``steward apply --allow-dirty sites policies`` does in the checkout, so every
   resource carries its git commit, path and author, and the apply is in the audit trail;
4. the operator is started (`operator_command`, `operator_env`) and registers the Sites' RSEs;
5. once every Site is Ready (`sites_not_ready`: RSEs and distances registered), `seed_demo_data`
   puts a few datasets into Rucio for the ReplicationRules to place.

The operator signs audit checkpoints with a key made for the stack (`make_signing_key`) and
keeps them in ConfigMaps of the ``steward`` namespace.

Nothing here pretends: `local_limitations` says which applied resources cannot work on this
stack, and why (kinds no operator reconciles yet, metadata keys the Rucio database refuses,
transfer windows), and the stack prints it with ``up`` and ``status``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from steward.config import Settings
from steward.exceptions import RucioError, TransientError
from steward.factory import CommandContext
from steward.models import KINDS
from steward.models.replication import ReplicationRule
from steward.services.checkpoint import SigningKey
from steward.services.replication import transfer_gate
from steward.services.validation import validate_paths
from steward.storage.database import make_engine, upgrade
from steward.storage.files import write_private
from steward.storage.kubernetes import KubeResources, api_client
from steward.storage.rucio import File, RucioStorage, RuleSpec
from steward.testing.postgres import PostgresError, find_bindir

__all__ = [
    "CAMPAIGN_INTERVAL",
    "DEMO_DATA",
    "DEMO_SITE",
    "NAMESPACE",
    "REFRESH_INTERVAL",
    "Applied",
    "DemoDataset",
    "DevOperatorError",
    "InvalidRepositoryError",
    "RucioDatabase",
    "apply_repository",
    "choose_rucio_database",
    "create_namespace",
    "declared_rses",
    "declared_sites",
    "demo_rses",
    "local_limitations",
    "make_signing_key",
    "migrate_audit",
    "operator_command",
    "operator_env",
    "reconciled_kinds",
    "refused_selections",
    "replication_rules",
    "rucio_settings",
    "seed_demo_data",
    "sites_not_ready",
    "unsupported_metadata_keys",
]

NAMESPACE: Final = "steward"
"""The namespace of every namespaced resource in policies/."""

REFRESH_INTERVAL: Final = 5.0
"""The operator's ``STEWARD_REFRESH_INTERVAL`` in the dev stack (production: 60 s).

Rucio has no watch, so rule states reach ``kubectl`` at the operator's next timer tick; the
Rucio component runs the judge and conveyor every 5 s too, so a rule goes from created to
Ready in about 15 s here.
"""

CALLS_PER_SECOND: Final = 50.0
"""The operator's Rucio rate cap in the dev stack (production default: 20)."""

DEMO_SITE: Final = "base"
"""The site whose Campaigns the dev stack's operator runs (``STEWARD_SITE``): the Base's daily
calibrations (policies/campaigns/ocs-calibs-20261122.yaml, 4 steps over 9 detectors) run on
the kwok nodes; campaigns of other sites are left to those sites' operators."""

CAMPAIGN_INTERVAL: Final = 2.0
"""The operator's ``STEWARD_CAMPAIGN_INTERVAL`` in the dev stack (production default: 5 s)."""

RucioDatabase = Literal["postgresql", "sqlite"]

# Variables of the caller's shell that must not leak into the operator: a shell that ran
# `eval "$(steward dev env)"` for an earlier stack still points at that stack's servers.
_STALE_PREFIXES: Final = ("STEWARD_", "RUCIO_")
_STALE_NAMES: Final = frozenset({"KUBECONFIG"})
_KEPT: Final = frozenset({"STEWARD_CACHE_DIR", "STEWARD_PG_BINDIR"})


class DevOperatorError(RuntimeError):
    """A step of bringing Steward up failed; the message says which and why."""


class InvalidRepositoryError(DevOperatorError):
    """sites/ or policies/ do not validate, so nothing was applied (as with ``steward apply``)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"    {problem}" for problem in problems)
        super().__init__(f"sites/ and policies/ do not validate:\n{listed}")


# --- the Rucio database ---------------------------------------------------------------------------


def choose_rucio_database(requested: str) -> tuple[RucioDatabase, str]:
    """Pick the Rucio server's database and say why, for ``status``.

    ``auto`` takes PostgreSQL when Debian's PostgreSQL binaries are installed (Rucio's JSON
    metadata plugin, which custom keys such as ``instrument`` or ``archive`` need, does not
    work on SQLite), SQLite otherwise.

    Raises
    ------
    DevOperatorError
        ``postgresql`` was requested and cannot be used.
    """
    if requested == "sqlite":
        return "sqlite", "SQLite (requested); custom DID metadata keys are refused"
    try:
        bindir = find_bindir()
    except PostgresError as error:
        if requested == "postgresql":
            raise DevOperatorError(str(error)) from error
        return "sqlite", (
            "SQLite, because PostgreSQL is not installed (apt-get install -y postgresql); "
            "custom DID metadata keys are refused"
        )
    return "postgresql", f"PostgreSQL ({bindir}); custom DID metadata keys work"


# --- Kubernetes and the audit store ---------------------------------------------------------------


def create_namespace(kubeconfig: Path, name: str = NAMESPACE) -> bool:
    """Create namespace ``name``; False if it existed."""
    with api_client(kubeconfig) as api:
        body = kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        try:
            kubernetes.client.CoreV1Api(api).create_namespace(body)
        except ApiException as error:
            if error.status == 409:  # noqa: PLR2004 - HTTP Conflict: it exists
                return False
            raise DevOperatorError(f"cannot create namespace {name}: {error.reason}") from error
    return True


def migrate_audit(url: str) -> None:
    """Create or migrate the audit database at ``url`` (``steward audit upgrade``)."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Applied:
    """What `apply_repository` applied."""

    commit: str
    """The checkout's HEAD."""
    dirty: list[str]
    """Files applied with uncommitted changes (their resources carry the last commit)."""
    changes: list[str]
    """``create Site/base`` and the like."""
    resources: list[dict[str, Any]]
    """The applied documents (with provenance), Sites first."""

    def count(self) -> dict[str, int]:
        """Resources per kind, in the order of `steward.models.KINDS`."""
        counts = {info.kind: 0 for info in KINDS}
        for body in self.resources:
            counts[body["kind"]] += 1
        return {kind: count for kind, count in counts.items() if count}


def apply_repository(
    repo_root: Path,
    kubeconfig: Path,
    database_url: str,
    *,
    progress: Callable[[str], None] = lambda _line: None,
) -> Applied:
    """Apply ``sites/`` and ``policies/`` of the checkout like ``steward apply --allow-dirty``.

    Raises
    ------
    InvalidRepositoryError
        The files do not validate (every problem is listed); nothing was applied.
    StewardError
        git or the API server failed.
    """
    targets = [path for path in (repo_root / "sites", repo_root / "policies") if path.is_dir()]
    if not targets:
        return Applied("", [], [], [])
    result = validate_paths(targets, repo_root / "sites")
    if not result.ok:
        raise InvalidRepositoryError([problem.format() for problem in result.problems])
    with CommandContext(database_url=database_url, kubeconfig=kubeconfig) as context:
        service = context.gitops(repo_root, audit=True, progress=progress)
        dirty = service.repo.dirty_files(targets)
        planned = service.plan(result, scope=targets)
        service.apply(planned)
        return Applied(
            commit=service.repo.head(),
            dirty=dirty,
            changes=[f"{c.action.value} {c.key}" for c in planned.pending],
            resources=[body for body, _provenance in service.desired(result)],
        )


# --- the operator process -------------------------------------------------------------------------


def operator_command(liveness_url: str, *, standalone: bool = True) -> list[str]:
    """``steward operator --standalone --liveness URL`` of this Python environment.

    Without ``standalone`` the process takes part in leader election (kopf peering), as the
    deployed operator does.
    """
    script = Path(sys.executable).with_name("steward")
    program = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "from steward.cli.main import main; main()"]
    )
    flags = ["--standalone"] if standalone else []
    return [*program, "operator", *flags, "--liveness", liveness_url]


def operator_env(
    base: Mapping[str, str],
    stack_env: Mapping[str, str],
    database_url: str,
    metrics_port: int,
    signing_key: Path | None = None,
) -> dict[str, str]:
    """The operator's environment: the stack's cluster, Rucio and audit store, nothing stale.

    Parameters
    ----------
    base
        The supervisor's environment; ``STEWARD_*``, ``RUCIO_*`` and ``KUBECONFIG`` are dropped
        from it (a shell may still point at an earlier stack).
    stack_env
        What the earlier components export (``KUBECONFIG``, ``STEWARD_RUCIO_*``...).
    database_url
        The audit store.
    metrics_port
        Port of the Prometheus endpoint.
    signing_key
        The key the operator signs audit checkpoints with (`make_signing_key`).
    """
    env = {
        key: value
        for key, value in base.items()
        if key in _KEPT or not (key.startswith(_STALE_PREFIXES) or key in _STALE_NAMES)
    }
    env.update(stack_env)
    env.update(
        {
            "STEWARD_DATABASE_URL": database_url,
            "STEWARD_REFRESH_INTERVAL": str(REFRESH_INTERVAL),
            "STEWARD_RUCIO_CALLS_PER_SECOND": str(CALLS_PER_SECOND),
            "STEWARD_METRICS_PORT": str(metrics_port),
            "STEWARD_SITE": DEMO_SITE,
            "STEWARD_CAMPAIGN_INTERVAL": str(CAMPAIGN_INTERVAL),
            "STEWARD_OPERATOR_NAMESPACE": NAMESPACE,
        }
    )
    if signing_key is not None:
        env["STEWARD_AUDIT_SIGNING_KEY_FILE"] = str(signing_key)
    return env


def make_signing_key(directory: Path) -> Path:
    """Write a fresh key for the operator's audit checkpoints (0600, never in the database)."""
    path = directory / "audit-signing-key.pem"
    write_private(path, SigningKey.generate().pem())
    return path


def rucio_settings(stack_env: Mapping[str, str]) -> Settings:
    """Settings reaching the stack's Rucio as Steward does, from the Rucio component's env."""
    host = stack_env["STEWARD_RUCIO_HOST"]
    return Settings(
        rucio_host=host,
        rucio_auth_host=host,
        rucio_account=stack_env["STEWARD_RUCIO_ACCOUNT"],
        rucio_username=stack_env["STEWARD_RUCIO_USERNAME"],
        rucio_password_file=Path(stack_env["STEWARD_RUCIO_PASSWORD_FILE"]),
        rucio_calls_per_second=1000.0,
    )


def reconciled_kinds() -> set[str]:
    """Kinds the operator has handlers for (each handler module names its ``PLURAL``)."""
    from steward import handlers  # noqa: PLC0415 - registers handlers with kopf; only here

    plurals = {getattr(getattr(handlers, module), "PLURAL", None) for module in handlers.__all__}
    return {info.kind for info in KINDS if info.plural in plurals}


# --- demo data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoDataset:
    """A dataset the dev stack puts into Rucio, with its files' replicas on one RSE."""

    did: str
    rse: str
    meta: Mapping[str, str]
    """DID columns only (``datatype``): these work on SQLite too."""
    custom: Mapping[str, str] = field(default_factory=dict)
    """Keys of Rucio's JSON metadata plugin (PostgreSQL only)."""
    files: int = 2
    file_bytes: int = 18_000_000
    rules: tuple[str, ...] = ()
    """RSE expressions of rules made for it as its owner would (retention then plans over
    them); ReplicationRules and the OODS cache make their own."""


DEMO_DATA: Final[tuple[DemoDataset, ...]] = (
    # Raw LSSTCam exposures at the Base, where the L1 Archiver ingests them (LDM-230 2.2): what
    # raw-to-ncsa-tape and raw-to-in2p3 place. The engineering exposure is marked archive=false
    # and is excluded by both.
    *(
        DemoDataset(
            f"raw:LSSTCam-20261122-{exposure:05d}",
            "BASE_DISK",
            {"datatype": "raw"},
            {"instrument": "LSSTCam", "archive": "true"},
        )
        for exposure in (1, 2, 3)
    ),
    DemoDataset(
        "raw:LSSTCam-20261122-engtest",
        "BASE_DISK",
        {"datatype": "raw"},
        {"instrument": "LSSTCam", "archive": "false"},
        files=1,
    ),
    # Master calibrations made at the Base (calibs-to-summit, -to-in2p3, -publish-after-backup).
    DemoDataset(
        "calib:bias-20261120", "BASE_DISK", {"datatype": "calib"}, {"instrument": "LSSTCam"}
    ),
    DemoDataset(
        "calib:flat-r-20261120", "BASE_DISK", {"datatype": "calib"}, {"instrument": "LSSTCam"}
    ),
    # Prompt processing output at NCSA (prompt-products-to-dbb).
    DemoDataset(
        "prompt:pvi-20261122-00001", "NCSA_PROMPT", {"datatype": "pvi"}, {"instrument": "LSSTCam"}
    ),
    # Data Release 1 at NCSA (release-to-chilean-dac, release-subset-to-in2p3-dac).
    DemoDataset(
        "release:DR1-coadd-tract-9813", "NCSA_DISK", {}, {"release": "DR1", "export_in2p3": "true"}
    ),
    DemoDataset("release:DR1-coadd-tract-9814", "NCSA_DISK", {}, {"release": "DR1"}),
    # What base-oods pins: the current master calibrations and a standard-star sequence.
    *(
        DemoDataset(
            f"calib:{instrument}-calib-current",
            "BASE_DISK",
            {"datatype": "calib"},
            {"instrument": instrument},
        )
        for instrument in ("LSSTCam", "LATISS")
    ),
    DemoDataset(
        "raw:LATISS-20261103-standard-star-sequence",
        "BASE_DISK",
        {"datatype": "raw"},
        {"instrument": "LATISS", "archive": "true"},
    ),
    # A developer's scratch outputs on NCSA scratch (scratch-kcarter), the baseline held.
    *(
        DemoDataset(
            f"user.kcarter:{name}",
            "NCSA_SCRATCH",
            {},
            {"lifecycle": "scratch"},
            rules=("NCSA_SCRATCH",),
        )
        for name in ("w46-jointcal-config-a", "w46-jointcal-config-b", "w45-jointcal-baseline")
    ),
    # Outputs of the failed DRP pilot, awaiting review (failed-drp-pilot-w10).
    DemoDataset(
        "drp.pilot-w10:calexp-tract-9813",
        "NCSA_DISK",
        {},
        {"campaign": "drp-pilot-w10"},
        rules=("NCSA_DISK",),
    ),
    # A value-added commissioning repository (comm-value-added) and shakedown outputs
    # (shakedown-cleanup).
    DemoDataset(
        "comm:auxtel-photometry-matched",
        "NCSA_DISK",
        {},
        {"repo_type": "value-added"},
        rules=("NCSA_DISK",),
    ),
    DemoDataset(
        "test:bps-upgrade-shakedown-1",
        "NCSA_DISK",
        {},
        {"processing": "shakedown"},
        rules=("NCSA_DISK",),
    ),
)
"""A little data for policies/ to place, cache and plan over (a few files each; the mock RSEs
store none)."""


def declared_rses(resources: Sequence[Mapping[str, Any]]) -> set[str]:
    """RSE names the applied Sites declare."""
    return {
        rse["name"]
        for body in resources
        if body.get("kind") == "Site"
        for rse in body.get("spec", {}).get("rses", [])
    }


def demo_rses() -> set[str]:
    """RSEs the demo data has replicas on (the operator must have registered them first)."""
    return {dataset.rse for dataset in DEMO_DATA}


def declared_sites(resources: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of the applied Sites."""
    return {body["metadata"]["name"] for body in resources if body.get("kind") == "Site"}


def sites_not_ready(kubeconfig: Path, names: Iterable[str]) -> list[str]:
    """Those of the Sites ``names`` not yet Ready at their generation, sorted.

    All of them while the API server cannot tell. A Site is Ready once the operator
    registered its RSEs and every distance it declares (`steward.services.site`), so once
    all are, every declared distance exists and Rucio can route a transfer between any two
    sites. Demo data waits for that: a replica put on an RSE whose Site is still registering
    (the RSE exists, its distances do not yet) gets rules whose transfers Rucio's conveyor
    marks NO_SOURCES, STUCK for hours: the likely way ``release-subset-to-in2p3-dac`` stayed
    not Ready in one run of four (NCSA_DISK -> IN2P3_DISK missing; a run's audit trail showed
    its rule made while NCSA's first registration was still under way).
    """
    wanted = set(names)
    try:
        with api_client(kubeconfig) as api:
            listed = KubeResources(api).list("Site")
    except TransientError:
        return sorted(wanted)
    ready = {item["metadata"]["name"] for item in listed if _ready(item)}
    return sorted(wanted - ready)


def _ready(body: Mapping[str, Any]) -> bool:
    generation = (body.get("metadata") or {}).get("generation")
    return any(
        condition.get("type") == "Ready"
        and condition.get("status") == "True"
        and condition.get("observedGeneration") == generation
        for condition in (body.get("status") or {}).get("conditions") or []
    )


_T = TypeVar("_T")
_LOCKED_ATTEMPTS: Final = 20


def _patiently(call: Callable[[], _T]) -> _T:
    """Make a Rucio call, again while Rucio's SQLite database is locked by another writer.

    On SQLite the API workers, the daemons and the operator contend for one write lock, and
    Rucio reports a lost race as an error; the failed call's transaction was rolled back, so
    making it again is safe.
    """
    for attempt in range(_LOCKED_ATTEMPTS):
        try:
            return call()
        except RucioError as error:
            if "database is locked" not in str(error) or attempt == _LOCKED_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    raise AssertionError  # pragma: no cover - the loop returns or raises


def seed_demo_data(storage: RucioStorage, rses: set[str]) -> list[str]:
    """Put `DEMO_DATA` into a fresh Rucio; return lines saying what went in, and what not.

    Only datasets on ``rses`` (registered RSEs) are loaded. Where Rucio refuses custom
    metadata keys (on SQLite), datasets are registered with their DID column metadata only,
    and those that would mean nothing without custom keys (the release) are left out.
    """
    scopes = sorted({dataset.did.split(":", 1)[0] for dataset in DEMO_DATA})
    for scope in scopes:
        _patiently(partial(storage.add_scope, scope))
    custom_keys = {key for dataset in DEMO_DATA for key in dataset.custom}
    custom = not unsupported_metadata_keys(storage, {scopes[0]: custom_keys})
    datatypes = sorted({d.meta["datatype"] for d in DEMO_DATA if "datatype" in d.meta})
    _patiently(partial(storage.allow_metadata_values, "datatype", datatypes))
    placed: dict[tuple[str, str], int] = {}
    skipped: list[str] = []
    for dataset in DEMO_DATA:
        if dataset.rse not in rses or (not custom and not dataset.meta):
            skipped.append(dataset.did)
            continue
        files = [
            File(f"{dataset.did}.f{index}", bytes=dataset.file_bytes)
            for index in range(dataset.files)
        ]
        _patiently(partial(storage.add_replicas, dataset.rse, files))
        meta = {**dataset.meta, **(dataset.custom if custom else {})}
        if _patiently(partial(storage.add_dataset, dataset.did, meta=meta)):
            _patiently(partial(storage.attach, dataset.did, [f.did for f in files]))
        for expression in dataset.rules:
            _patiently(partial(storage.add_rule, dataset.did, RuleSpec(rse_expression=expression)))
        scope = dataset.did.split(":", 1)[0]
        placed[scope, dataset.rse] = placed.get((scope, dataset.rse), 0) + 1
    loaded = ", ".join(f"{n} {scope} datasets on {rse}" for (scope, rse), n in placed.items())
    lines = [f"demo data in Rucio: {loaded or 'none'}"]
    if not custom:
        lines.append(
            f"demo data without custom metadata ({', '.join(sorted(custom_keys))}): this Rucio "
            "refuses those keys"
        )
    if skipped:
        lines.append(
            f"demo data not loaded: {', '.join(skipped)} (no custom metadata, or its RSE is not "
            "declared in sites/)"
        )
    return lines


# --- what cannot work here ------------------------------------------------------------------------


def unsupported_metadata_keys(storage: RucioStorage, keys: Mapping[str, set[str]]) -> set[str]:
    """Keys (by existing scope) this Rucio refuses in a DID filter, found by asking it."""
    refused: set[str] = set()
    for scope, names in sorted(keys.items()):
        for key in sorted(names - refused):
            try:
                _patiently(partial(storage.list_dids, scope, {key: "steward-dev-probe"}))
            except RucioError as error:
                if "InvalidMetadata" not in str(error):
                    raise
                refused.add(key)
    return refused


def refused_selections(storage: RucioStorage, rules: Iterable[ReplicationRule]) -> dict[str, str]:
    """ReplicationRules whose metadata selection this Rucio refuses, with Rucio's reason.

    Each rule's selection is run once, the way the operator runs it (`RucioStorage.list_dids`
    with its match and exclusions), so what is reported is what the operator meets. Rucio
    refuses a filter naming a key no metadata plugin manages (any custom key on SQLite) and a
    filter whose keys belong to different plugins (a DID column such as ``datatype`` next to a
    JSON key such as ``archive``, on any database).
    """
    refused = {}
    for rule in rules:
        selector = rule.spec.selector
        if selector.scope is None or selector.match is None:
            continue
        try:
            _patiently(
                partial(storage.list_dids, selector.scope, selector.match, exclude=selector.exclude)
            )
        except RucioError as error:
            if "InvalidMetadata" not in str(error):
                raise
            refused[rule.metadata.name] = str(error).split("InvalidMetadata: ", 1)[-1]
    return refused


def replication_rules(resources: Sequence[Mapping[str, Any]]) -> list[ReplicationRule]:
    """The ReplicationRules among applied documents."""
    return [
        ReplicationRule.model_validate(body)
        for body in resources
        if body.get("kind") == "ReplicationRule"
    ]


def local_limitations(
    resources: Sequence[Mapping[str, Any]],
    handled: set[str],
    refused: Mapping[str, str],
    now: datetime,
) -> list[str]:
    """Lines saying which applied resources cannot converge on this stack, and why.

    Parameters
    ----------
    resources
        The applied documents.
    handled
        Kinds the operator reconciles (`reconciled_kinds`).
    refused
        ReplicationRules whose selection Rucio refuses, with the reason (`refused_selections`).
    now
        When to tell transfer windows open or closed.
    """
    lines = []
    idle: dict[str, int] = {}
    for body in resources:
        if body["kind"] not in handled:
            idle[body["kind"]] = idle.get(body["kind"], 0) + 1
    if idle:
        listed = ", ".join(f"{count} {kind}" for kind, count in idle.items())
        lines.append(
            f"applied but not reconciled (no operator for these kinds yet): {listed}; "
            "their status stays empty"
        )
    elsewhere = sorted(
        f"{body['metadata']['name']} ({(body.get('spec') or {}).get('site')})"
        for body in resources
        if body["kind"] == "Campaign"
        and "Campaign" in handled
        and (body.get("spec") or {}).get("site") != DEMO_SITE
    )
    if elsewhere:
        lines.append(
            f"Campaigns of other sites are left alone (this operator runs site {DEMO_SITE}'s, "
            f"STEWARD_SITE): {', '.join(elsewhere)}; their status stays empty"
        )
    rules = replication_rules(resources)
    by_reason: dict[str, list[str]] = {}
    for name, reason in sorted(refused.items()):
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        lines.append(
            f"Rucio refuses the metadata selection of ReplicationRules {', '.join(names)} "
            f"({reason}): they select nothing and are Degraded, reason Refused "
            "(see docs/dev-stack.md)"
        )
    for rule in rules:
        window = rule.spec.transfer_window
        if window is not None and rule.metadata.name not in refused:
            is_open, _reason, edge = transfer_gate(rule.spec, now)
            state = "open" if is_open else "closed"
            when = f"{state} until {edge:%Y-%m-%d %H:%M} UTC" if edge else state
            lines.append(
                f"ReplicationRule {rule.metadata.name} creates Rucio rules only in its transfer "
                f"window {window.start}-{window.end} {window.timezone} ({when} at start-up; "
                "outside it: Ready False, reason WaitingForTransferWindow)"
            )
    return lines

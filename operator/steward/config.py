"""Settings, from the environment (``STEWARD_*``) or a mounted Secret, via pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Process-wide settings of the operator and the CLI."""

    model_config = SettingsConfigDict(env_prefix="STEWARD_", env_nested_delimiter="__")

    rucio_host: str | None = None
    """Rucio REST endpoint; when absent, the rucio client's own rucio.cfg (RUCIO_CONFIG) is used."""

    rucio_auth_host: str | None = None
    """Rucio authentication endpoint (defaults to ``rucio_host``)."""

    rucio_account: str = "steward"
    """Rucio account Steward acts as; every rule Steward creates belongs to it. A dedicated
    account with Rucio's ``admin`` attribute (needed to update, move and delete rules, add
    subscriptions and set quotas), never ``root``: the account is Rucio's unit of ownership, of
    duplicate detection and of listing cost (docs/rucio-dev.md)."""

    rucio_username: str | None = None
    """Userpass identity for Rucio."""

    rucio_password: SecretStr | None = None
    """Userpass password for Rucio (a SecretStr: never printed in logs or errors)."""

    rucio_password_file: Path | None = None
    """File holding the Rucio password, e.g. a mounted Kubernetes Secret."""

    rucio_calls_per_second: float = Field(default=20.0, gt=0)
    """Cap on Rucio API calls per second, so a thousand resources at start-up do not flood it."""

    rucio_connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to establish a connection to Rucio (a refused one fails at once)."""

    rucio_read_timeout: float = Field(default=10.0, gt=0)
    """Seconds a single read (``get_*``, ``whoami``, the ``ping`` probe) waits for Rucio's
    answer. Rucio's client waits 600 s by default, so a server that accepts connections and
    answers nothing went unnoticed for ten minutes per call."""

    rucio_write_timeout: float = Field(default=30.0, gt=0)
    """Seconds a write (adding rules for a batch of DIDs, attaching files) waits for Rucio."""

    rucio_listing_timeout: float = Field(default=60.0, gt=0)
    """Seconds a bulk listing (``list_*``: every rule of the account, a metadata query) waits
    for each part of Rucio's answer."""

    rucio_max_calls: int = Field(default=4, ge=1, le=63)
    """Rucio calls in flight at once, at most; below ``workers``, so calls that hang never
    hold all of kopf's handler threads."""

    database_url: str = "sqlite:///steward-audit.db"
    """SQLAlchemy URL of the audit store."""

    cluster_id: str | None = None
    """Identity of this Kubernetes cluster in owner tags (`steward.services.ownership`); the
    UID of the ``kube-system`` namespace when absent. Two clusters sharing one Rucio account
    must differ here, or they would own each other's rules."""

    deletion_freeze: str | None = None
    """While set (to the reason), no path of Steward removes data anywhere: plans are still
    computed and shown, in mode Frozen (during a restore or an incident)."""

    audit_signing_key_file: Path | None = None
    """PEM file of the Ed25519 key that signs audit checkpoints (e.g. a mounted Secret); made
    with ``steward audit key --generate FILE``. Never kept in the audit database."""

    audit_signing_key_secret: str | None = None
    """Kubernetes Secret (``name`` in ``operator_namespace``, or ``namespace/name``) whose key
    ``private-key.pem`` holds the signing key, when no file is given. Without either, no
    checkpoints are signed, and a deleted tail or a rewritten trail cannot be detected."""

    audit_checkpoint_entries: int = Field(default=1000, ge=1)
    """Sign a checkpoint after this many new audit rows..."""

    audit_checkpoint_interval: float = Field(default=300.0, gt=0)
    """...and at least every this many seconds, and at clean shutdown."""

    site: str | None = None
    """The compute site this operator runs Campaigns for (``metadata.name`` of a Site)."""

    campaign_interval: float = Field(default=5.0, gt=0)
    """Seconds between passes over each running Campaign: record ended pods, start steps,
    rerun what failed. Kubernetes has the Jobs; this is how soon Steward notices."""

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; all when empty."""

    refresh_interval: float = Field(default=60.0, gt=0)
    """Seconds between timer refreshes of external state (Rucio has no watch)."""

    heartbeat_writes: float = Field(default=2.0, gt=0)
    """Status writes a second that one kind's heartbeat may cost a process, at most. A
    status that did not change is written anyway once its ``lastSyncTime`` is ten refresh
    intervals old, or, with N resources, N / heartbeat_writes seconds old when that is
    longer: at 10,000 ReplicationRules ten intervals would be 17 writes a second at the
    default minute (100 at the bench's 10 s), each a watch event back to every watcher,
    for a field that only says the loop still runs."""

    full_resync_interval: float = Field(default=21600.0, gt=0)
    """Seconds between full listings of a metadata-selected ReplicationRule's scope, and of
    every rule of Steward's account (the shared rule snapshot); between them a refresh lists
    only DIDs new since its high-water mark, and only rules Rucio changed since the
    snapshot's. The safety net for what no time bound finds: deselections, DID-column
    metadata changed on old DIDs, rules removed behind Steward's back without a change."""

    selection_overlap: float = Field(default=300.0, ge=0)
    """Seconds an incremental listing (of DIDs, or of changed rules) reaches back before its
    high-water mark: covers clock skew with Rucio and rows committed after the time Rucio
    stamped on them."""

    release_max_rules: int = Field(default=100, ge=0)
    """Most Rucio rules one reconcile of one ReplicationRule may release (delete or orphan)
    because their DIDs are no longer selected; a larger release waits for the annotation
    ``steward.lsst.io/approve-release`` naming its size."""

    max_rules_per_pass: int = Field(default=10000, ge=1)
    """Most Rucio rules one reconcile of one ReplicationRule creates: a selection that finds
    more new DIDs (a backfill of a large scope) creates the rest in the following passes,
    seconds apart, and says so in status (``deferred``, reason ``Behind``), so one handler
    call never holds a worker thread for the whole of it."""

    release_max_fraction: float = Field(default=0.25, ge=0, le=1)
    """Largest fraction of a ReplicationRule's rules one reconcile may release without that
    annotation (a single rule may always go)."""

    workers: int = Field(default=8, ge=1, le=64)
    """Threads running synchronous handlers (Rucio and the database block)."""

    kube_connections: int = Field(default=32, ge=4, le=1024)
    """Connections the operator keeps to the Kubernetes API at most, watch streams included
    (one per kind and watched namespace, so keep it well above that). Unbounded, a burst of
    a thousand new resources opened 666 TLS connections at ~350 KiB each."""

    heap_trim_interval: float = Field(default=60.0, ge=0)
    """Seconds between returns of the heap's free memory to the operating system (glibc's
    ``malloc_trim``; nothing elsewhere), so the RSS falls after a burst of new resources
    instead of staying at its peak (`steward.heap`); 0 never returns it."""

    strip_managed_fields: bool = True
    """Compact watched objects before kopf keeps their last body: drop
    ``metadata.managedFields`` (half of each ReplicationRule's; nothing reads it) and intern
    keys and short strings, `steward.handlers.watchfilter`."""

    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the Prometheus endpoint; 0 disables it."""

    metrics_address: str = "127.0.0.1"
    """Address the metrics endpoint binds to (0.0.0.0 in a pod)."""

    operator_namespace: str = "steward"
    """Namespace the operator runs in: its webhook certificate Secret lives there, and the audit
    trail's witness ConfigMaps (the signed checkpoints and the public key)."""

    peering_name: str = "steward"
    """Name of the ClusterKopfPeering object the operator's processes elect a leader through
    (shipped by ``steward render``); every process but the oldest live one stands by."""

    peering_lifetime: int = Field(default=60, ge=5, le=3600)
    """Seconds a process's keep-alive in the peering object counts: a leader killed outright
    is replaced by a standby at most this long (plus one keep-alive) after its last one."""

    webhook_port: int = Field(default=0, ge=0, le=65535)
    """Port of the validating admission webhook (HTTPS); 0 disables it."""

    webhook_address: str = "127.0.0.1"
    """Address the webhook binds to (0.0.0.0 in a pod)."""

    webhook_hosts: list[str] = Field(default_factory=list)
    """DNS names and IP addresses the webhook's certificate is valid for (the Service's name,
    ``steward.<namespace>.svc``, in a pod; 127.0.0.1 when the API server calls a URL)."""

    webhook_secret: str = "steward-webhook-tls"  # noqa: S105 - a Secret's name
    """Secret (in ``operator_namespace``) holding the webhook's CA and serving certificate;
    the operator fills it on first start and renews the certificate before it expires."""

    webhook_configuration: str = "steward"
    """ValidatingWebhookConfiguration whose ``caBundle`` the operator keeps current."""

    @model_validator(mode="after")
    def _slots_below_workers(self) -> Settings:
        if self.rucio_max_calls >= self.workers:
            msg = (
                f"rucio_max_calls ({self.rucio_max_calls}) must be below workers "
                f"({self.workers}): hung Rucio calls would hold every handler thread"
            )
            raise ValueError(msg)
        return self

    def rucio_secret(self) -> SecretStr | None:
        """Return the Rucio password from the setting or the mounted file."""
        if self.rucio_password is not None:
            return self.rucio_password
        if self.rucio_password_file is not None:
            return SecretStr(self.rucio_password_file.read_text(encoding="utf-8").strip())
        return None

"""Structured JSON logs and Prometheus metrics, shared by the operator and the CLI.

One JSON object per line (structlog over the standard library), so kopf's own records and
Steward's share one format and a log pipeline parses both; kopf's per-object records carry the
object's ``kind``, ``namespace`` and ``name`` as keys, and every external action Steward takes
is logged once with ``kind``, ``namespace``, ``name``, ``action`` and its target (``rule_id``
for Rucio rules, ``campaign`` for campaigns) by `log_action`. Metrics are process-wide
prometheus_client collectors; the operator serves them on its metrics port. Families whose
code is still being written elsewhere (deletion plans, campaign invocations, audit
checkpoints) are defined here so dashboards and alerts can be written against one name; they
carry no series until that code lands.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from steward.models.replication import RuleState

__all__ = [
    "ADMISSION_REVIEWS",
    "AUDIT_CHECKPOINTS",
    "AUDIT_CHECKPOINT_AGE",
    "AUDIT_TRANSACTIONS",
    "CAMPAIGN_INVOCATIONS",
    "DELETION_PLANS",
    "EXTERNAL_ACTIONS",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "REFRESH_CYCLE_SECONDS",
    "REFRESH_GAP_SECONDS",
    "RUCIO_API_CALLS",
    "RUCIO_CALLS",
    "RUCIO_CALL_SECONDS",
    "RUCIO_ERRORS",
    "RUCIO_OUTAGES",
    "RUCIO_UP",
    "RULES_BY_STATE",
    "RULE_BACKLOG",
    "RULE_READ_BACKS",
    "configure_cli_logging",
    "configure_logging",
    "forget_rule_states",
    "get_logger",
    "log_action",
    "observe_backlog",
    "observe_rule_states",
]

RECONCILES = Counter(
    "steward_reconciles_total", "Reconciles by kind and outcome", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram(
    "steward_reconcile_seconds", "Time spent in one reconcile", ["kind", "outcome"]
)
REFRESH_GAP_SECONDS = Histogram(
    "steward_refresh_gap_seconds",
    "Time from one pass of a resource to its next refresh pass: how stale a resource's status "
    "and its drift repair may get; far above STEWARD_REFRESH_INTERVAL, the refresh falls behind",
    ["kind"],
    buckets=(1, 2, 5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600),
)
REFRESH_CYCLE_SECONDS = Histogram(
    "steward_refresh_cycle_seconds",
    "Time one refresh loop took to list every resource of its kind and pass the due ones; "
    "above STEWARD_REFRESH_INTERVAL, the next cycle starts late",
    ["kind"],
    buckets=(1, 5, 10, 30, 60, 90, 120, 180, 300, 600, 1800),
)
RUCIO_API_CALLS = Gauge(
    "steward_rucio_api_calls", "Rucio API calls made by this process (retries included)"
)
RUCIO_CALLS = Counter(
    "steward_rucio_calls_total",
    "Rucio API calls by client operation (each retry counts)",
    ["operation"],
)
RUCIO_ERRORS = Counter(
    "steward_rucio_errors_total",
    "Failed Rucio API calls by client operation and Steward's error class",
    ["operation", "error"],
)
RUCIO_UP = Gauge(
    "steward_rucio_up", "1 while Rucio answers this process, 0 while it is marked down"
)
RUCIO_OUTAGES = Counter(
    "steward_rucio_outages_total", "Times this process found Rucio not answering"
)
RUCIO_CALL_SECONDS = Histogram(
    "steward_rucio_call_seconds", "Latency of one Rucio API call", ["operation"]
)
AUDIT_TRANSACTIONS = Counter(
    "steward_audit_transactions_total",
    "Transactions that appended to the audit trail (each may hold several callers' rows)",
)
RULE_READ_BACKS = Counter(
    "steward_rule_read_backs_total",
    "Read-backs of a ReplicationRule's rules after a pass changed some, by how: shared (one "
    "listing of recent changes for several new resources), by-tag (a listing of its own "
    "tag), by-tag-after-shared (the shared one did not hold all its rules)",
    ["way"],
)
EXTERNAL_ACTIONS = Counter(
    "steward_external_actions_total", "Actions taken on Rucio or Kubernetes", ["kind", "action"]
)
AUDIT_CHECKPOINTS = Counter(
    "steward_audit_checkpoints_total",
    "Audit checkpoints signed (success) or not (failure: the trail no longer matches the last "
    "checkpoint, or the witness or database could not be written)",
    ["result"],
)
RULES_BY_STATE = Gauge(
    "steward_rucio_rules",
    "Rucio rules owned by a resource, by state",
    ["namespace", "name", "state"],
)
RULE_BACKLOG = Gauge(
    "steward_replication_backlog_rules",
    "Rules of a ReplicationRule not OK for longer than its catchUp.after, and whether it is "
    "catching up (phase: backlog, catching_up)",
    ["namespace", "name", "phase"],
)
_BACKLOG_PHASES = ("backlog", "catching_up")
"""The ``phase`` values of `RULE_BACKLOG`."""
ADMISSION_REVIEWS = Counter(
    "steward_admission_reviews_total",
    "Changes the admission webhooks reviewed, by kind and decision (allowed, refused, "
    "finalized: kopf's finalizer put on at creation)",
    ["kind", "decision"],
)
DELETION_PLANS = Counter(
    "steward_deletion_plans_total",
    "Deletion plans computed by the deletion gate, by kind and decision "
    "(executed, blocked, dry-run, awaiting-approval)",
    ["kind", "decision"],
)
CAMPAIGN_INVOCATIONS = Gauge(
    "steward_campaign_invocations",
    "Invocations of a campaign by state (pending, running, succeeded, failed)",
    ["namespace", "campaign", "state"],
)
AUDIT_CHECKPOINT_AGE = Gauge(
    "steward_audit_checkpoint_age_seconds",
    "Seconds since the last signed audit checkpoint (NaN while none was written)",
)
AUDIT_CHECKPOINT_AGE.set(float("nan"))


def observe_rule_states(namespace: str, name: str, counts: Mapping[str, int]) -> None:
    """Publish a ReplicationRule's Rucio rules by state (the status's ``counts``).

    Only the states that have rules have a series; a state whose count fell to zero loses
    its series. Every resource has one state or two, not six: a series costs the process
    about 700 bytes, so six per resource were 40 MiB at 10,000 resources
    (docs/replication.md, "At scale"), and a query summing by state reads the same.
    """
    for state, count in counts.items():
        if count:
            RULES_BY_STATE.labels(namespace, name, state).set(count)
        else:
            RULES_BY_STATE.remove(namespace, name, state)


def observe_backlog(namespace: str, name: str, catch_up: Mapping[str, object] | None) -> None:
    """Publish a ReplicationRule's catch-up backlog (the status's ``catchUp``), if it has one."""
    if catch_up is None:
        return
    backlog = catch_up.get("backlog")
    RULE_BACKLOG.labels(namespace, name, "backlog").set(backlog if isinstance(backlog, int) else 0)
    RULE_BACKLOG.labels(namespace, name, "catching_up").set(1 if catch_up.get("active") else 0)


def forget_rule_states(namespace: str, name: str) -> None:
    """Drop a deleted ReplicationRule's series, so it stops being reported.

    Removes each series it may have by name (removing one it lacks does nothing), rather
    than scanning every resource's series: deleting 10,000 resources would scan them
    10,000 times.
    """
    for state in RuleState:
        RULES_BY_STATE.remove(namespace, name, state.value)
    for phase in _BACKLOG_PHASES:
        RULE_BACKLOG.remove(namespace, name, phase)


def _kopf_object(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Lift the object a kopf record is about (``k8s_ref``) into top-level keys."""
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        for key in ("kind", "namespace", "name"):
            if ref.get(key) is not None:
                event_dict.setdefault(key, ref[key])
    return event_dict


def configure_logging(level: int = logging.INFO, *, others: int | None = None) -> None:
    """Send every record, Steward's and kopf's, to stderr as one JSON object per line.

    Safe to call again (the operator's start-up after the CLI's): the handler writes to
    whatever ``sys.stderr`` is when a record is emitted, so loggers cached on first use keep
    following it (a test runner swaps it per command). With ``others``, records of loggers
    outside ``steward`` pass only from that level up (a command wants their warnings, not
    their chatter).
    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _kopf_object],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(formatter)
    handler.addFilter(_TimerSuccessAtDebug())
    if others is not None:
        handler.addFilter(_OthersAtLeast(others))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _TimerSuccessAtDebug(logging.Filter):
    """Log kopf's "Timer 'x' succeeded." at DEBUG, not INFO.

    A timer succeeds once per object per refresh interval: at 10,000 ReplicationRules and
    the default 60 s that is about 170 lines a second, most of the operator's log, saying
    nothing happened. What a pass did is logged by Steward (its actions, at INFO); a timer
    that fails is still logged by kopf at its own level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.INFO
            and record.name == "kopf.objects"
            and isinstance(record.msg, str)
            and record.msg.startswith("Timer ")
            and record.msg.endswith(" succeeded.")
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class _OthersAtLeast(logging.Filter):
    """Pass Steward's records, and other libraries' from ``level`` up.

    A filter on the handler, not levels on loggers: a logger's level would outlive the
    command in a process that goes on (a test session), and hide Steward's debug records from
    whoever lowers the root level later.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return name == "steward" or name.startswith("steward.") or record.levelno >= self._level


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler bound to ``sys.stderr`` as it is at each record, not at set-up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:  # noqa: ANN401 - whatever sys.stderr is
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        """Ignore the stream StreamHandler stores: the current ``sys.stderr`` is used."""


def configure_cli_logging() -> None:
    """Keep a command's stdout for its results: Steward's log lines go to stderr, as JSON.

    Unconfigured, structlog prints to stdout, where a command's JSON output goes (``steward
    drill --format json``). Other libraries log their warnings only; ``steward operator``
    configures the operator's logging again at start-up.
    """
    configure_logging(logging.INFO, others=logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structured logger; bind context (kind, namespace, name) with ``.bind``."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


_ACTIONS = get_logger("steward.actions")


def log_action(
    *,
    kind: str,
    namespace: str | None,
    name: str,
    action: str,
    target: str | None,
    result: str,
    **fields: Any,  # noqa: ANN401 - more context, JSON-serialisable
) -> None:
    """Log one external action (the audit trail's row, for the log pipeline).

    ``target`` is named for what it is where that is known: ``rule_id`` for actions on Rucio
    rules, ``campaign`` for a Campaign's actions (its name), ``target`` otherwise.
    """
    extra: dict[str, Any] = dict(fields)
    if action.startswith("rucio.rule."):
        extra["rule_id"] = target
    elif target is not None:
        extra["target"] = target
    if kind == "Campaign":
        extra["campaign"] = name
    _ACTIONS.info(
        action,
        kind=kind,
        namespace=namespace,
        name=name,
        action=action,
        result=result,
        **extra,
    )

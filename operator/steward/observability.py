"""Structured JSON logs and Prometheus metrics, shared by the operator and the CLI.

One JSON object per line (structlog over the standard library), so kopf's own records and
Steward's share one format and a log pipeline parses both. Metrics are process-wide
prometheus_client collectors; the operator serves them on its metrics port.
"""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUDIT_CHECKPOINTS",
    "EXTERNAL_ACTIONS",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "RUCIO_API_CALLS",
    "RULES_BY_STATE",
    "configure_logging",
    "get_logger",
]

RECONCILES = Counter(
    "steward_reconciles_total", "Reconciles by kind and outcome", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram("steward_reconcile_seconds", "Time spent in one reconcile", ["kind"])
RUCIO_API_CALLS = Gauge(
    "steward_rucio_api_calls", "Rucio API calls made by this process (retries included)"
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


def configure_logging(level: int = logging.INFO) -> None:
    """Send every record, Steward's and kopf's, to stderr as one JSON object per line."""
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
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structured logger; bind context (kind, namespace, name) with ``.bind``."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger

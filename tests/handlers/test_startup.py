"""Leader election priorities and what the operator logs (pure)."""

import io
import json
import logging

import pytest

from steward.handlers.startup import peering_priority
from steward.observability import configure_logging, log_action


def test_older_processes_outrank_newer_ones_and_never_tie():
    started = 1_800_000_000.0
    oldest = peering_priority(started, 999)
    assert oldest > peering_priority(started + 0.001, 999)
    assert oldest > peering_priority(started + 3600, 999)
    assert peering_priority(started, 1) != peering_priority(started, 2)
    assert oldest > 0


@pytest.fixture
def _root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_root_logger")
@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_a_timer_that_succeeded_is_logged_at_debug(monkeypatch, level, shown):
    """Every object's timer succeeds every interval: at INFO that is most of the log."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(level)
    kopf = logging.getLogger("kopf.objects")
    ref = {"k8s_ref": {"kind": "ReplicationRule", "name": "raw", "namespace": "ops"}}
    kopf.info("Timer 'rule_timer' succeeded.", extra=ref)
    kopf.info("Handler 'rule_changed' succeeded.", extra=ref)
    kopf.error("Timer 'rule_timer' failed with an exception and will try again", extra=ref)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    expected = [
        *([("debug", "Timer 'rule_timer' succeeded.")] if shown else []),
        ("info", "Handler 'rule_changed' succeeded."),
        ("error", "Timer 'rule_timer' failed with an exception and will try again"),
    ]
    assert [(line["level"], line["event"]) for line in lines] == expected


@pytest.mark.usefixtures("_root_logger")
def test_actions_and_kopf_records_are_one_json_object_per_line(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging()
    log_action(
        kind="ReplicationRule",
        namespace="steward",
        name="raw",
        action="rucio.rule.add",
        target="a" * 32,
        result="success",
        audit_id=7,
    )
    log_action(
        kind="Campaign",
        namespace="prod",
        name="dr1",
        action="kube.job.create",
        target="dr1-step1-0",
        result="success",
    )
    kopf = logging.getLogger("kopf.objects")
    kopf.info(
        "Handler succeeded.", extra={"k8s_ref": {"kind": "Site", "name": "base", "namespace": None}}
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    rule, campaign, handler = lines
    assert rule | {"timestamp": None} == {
        "event": "rucio.rule.add",
        "kind": "ReplicationRule",
        "namespace": "steward",
        "name": "raw",
        "action": "rucio.rule.add",
        "result": "success",
        "rule_id": "a" * 32,
        "audit_id": 7,
        "level": "info",
        "logger": "steward.actions",
        "timestamp": None,
    }
    assert campaign["campaign"] == "dr1"
    assert campaign["target"] == "dr1-step1-0"
    assert handler["kind"] == "Site"
    assert handler["name"] == "base"
    assert "namespace" not in handler

"""SiteService against the real Rucio server: registration, downtimes, status."""

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.site import Site
from steward.services.audit import AuditService, ResourceRef
from steward.services.site import SiteService, availability_at, next_downtime_edge
from steward.storage.audit import AuditFilter
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from support.rucio import mock_site

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _site(downtimes=()):
    suffix = secrets.token_hex(3).upper()
    return mock_site(
        f"site-{suffix.lower()}",
        f"T{suffix}",
        {f"T{suffix}_DISK": "DISK", f"T{suffix}_TAPE": "TAPE"},
        downtimes=list(downtimes),
    )


def _downtime(start, end, **extra):
    return {"start": start.isoformat(), "end": end.isoformat(), "reason": "HPSS upgrade", **extra}


def test_availability_follows_the_downtime_window():
    site = _site([_downtime(NOW, NOW + timedelta(hours=2), operations=["write", "delete"])])
    before = availability_at(site, NOW - timedelta(seconds=1))
    during = availability_at(site, NOW + timedelta(hours=1))
    after = availability_at(site, NOW + timedelta(hours=2))
    assert all(f.read and f.write and f.delete for f in before.values())
    assert all(f.read and not f.write and not f.delete for f in during.values())
    assert after == before
    assert next_downtime_edge(site, NOW - timedelta(hours=1)) == NOW
    assert next_downtime_edge(site, NOW + timedelta(minutes=1)) == NOW + timedelta(hours=2)
    assert next_downtime_edge(site, NOW + timedelta(hours=3)) is None


def test_downtime_limited_to_named_rses():
    site = _site()
    tape = site.spec.rses[1].name
    site = Site.model_validate(
        {
            **site.model_dump(by_alias=True, mode="json"),
            "spec": {
                **site.spec.model_dump(by_alias=True, mode="json"),
                "downtimes": [_downtime(NOW, NOW + timedelta(hours=1), rses=[tape])],
            },
        }
    )
    flags = availability_at(site, NOW)
    assert not flags[tape].read
    assert flags[site.spec.rses[0].name].read


@pytest.fixture
def audit(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    upgrade(engine)
    yield AuditService(make_sessionmaker(engine))
    engine.dispose()


@pytest.mark.rucio
def test_registers_then_applies_and_lifts_a_downtime(rucio_storage, audit):
    site = _site([_downtime(NOW, NOW + timedelta(hours=2), operations=["write"])])
    ref = ResourceRef(kind="Site", name=site.metadata.name, generation=1)
    clock = {"now": NOW - timedelta(hours=1)}
    service = SiteService(rucio_storage, audit, clock=lambda: clock["now"])

    outcome = service.reconcile(site, ref)
    assert outcome.status["registered"] == 2
    assert outcome.status["available"] == 2
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert outcome.requeue_after == pytest.approx(3601, abs=1)
    assert audit.query(AuditFilter(kind="Site", name=site.metadata.name))

    again = service.reconcile(site, ref, old_conditions=outcome.status["conditions"])
    assert again.events == []
    assert again.status["conditions"] == outcome.status["conditions"]

    clock["now"] = NOW + timedelta(minutes=5)
    during = service.reconcile(site, ref, old_conditions=again.status["conditions"])
    assert during.status["available"] == 0
    assert all(r["inDowntime"] and r["availabilityWrite"] is False for r in during.status["rses"])
    assert all(r["availabilityRead"] for r in during.status["rses"])
    degraded = next(c for c in during.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ScheduledDowntime")
    assert all(
        not flags.write
        for flags in rucio_storage.rse_availability([r.name for r in site.spec.rses]).values()
    )

    clock["now"] = NOW + timedelta(hours=3)
    after = service.reconcile(site, ref, old_conditions=during.status["conditions"])
    assert after.status["available"] == 2
    assert all(
        flags.write
        for flags in rucio_storage.rse_availability([r.name for r in site.spec.rses]).values()
    )

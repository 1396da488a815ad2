"""The Rucio storage against a real Rucio server and its daemons (no mocks)."""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from rucio.common.config import clean_cached_config

from steward.config import Settings
from steward.exceptions import (
    RucioAuthenticationError,
    RucioNotFoundError,
    RucioPermanentError,
    RucioTransientError,
)
from steward.storage.rucio import (
    Availability,
    RetryPolicy,
    RucioStorage,
    Rule,
    RuleSpec,
    RuleState,
    SubscriptionSpec,
    TokenBucket,
)
from steward.testing.rucio_server import RucioServer
from support.clock import FakeTime
from support.rucio import RucioData, RucioSites, mock_site
from support.waiting import until

pytestmark = pytest.mark.rucio

CYCLE = (
    "judge-injector",
    "judge-evaluator",
    "conveyor-submitter",
    "conveyor-poller",
    "conveyor-finisher",
    "judge-cleaner",
)
"""Daemon passes, in the order a real deployment's loops would interleave them."""


def protected_copies(storage: RucioStorage, did: str, files: int) -> float:
    """Copies of each file held by OK locks of live rules on ``did`` (what Rucio guarantees)."""
    return sum(rule.locks_ok for rule in storage.list_did_rules(did)) / files


def step_until(
    server: RucioServer,
    done: Any,
    invariant: Any,
    *,
    rounds: int = 20,
) -> None:
    """Run daemon passes one by one, checking ``invariant`` after each, until ``done()``."""
    for _ in range(rounds):
        for daemon in CYCLE:
            server.daemons.run(daemon)
            invariant()
            if done():
                return
    pytest.fail(f"not done after {rounds} rounds of {', '.join(CYCLE)}")


def unique_rse(kind: str) -> str:
    return f"T{secrets.token_hex(4).upper()}_{kind}"


# -- sites -----------------------------------------------------------------------------------


def test_register_site_then_nothing_to_change(rucio_storage: RucioStorage) -> None:
    disk, tape = unique_rse("DISK"), unique_rse("TAPE")
    facility = f"F{secrets.token_hex(3).upper()}"
    site = mock_site("site-a", facility, {disk: "DISK", tape: "TAPE"})
    first = rucio_storage.register_site(site)
    assert f"{disk}: added (DISK)" in first.changes
    assert f"{tape}: attribute custodial=True" in first.changes
    assert first.pending == ()
    assert rucio_storage.register_site(site).changes == ()
    assert rucio_storage.list_rses(f"site={facility}&type=TAPE") == [tape]
    assert rucio_storage.list_rses(f"site={facility}&custodial") == [tape]
    assert rucio_storage.rse_availability([disk, "NO_SUCH_RSE"]) == {
        disk: Availability(),
        "NO_SUCH_RSE": None,
    }


def test_register_site_converges_every_declared_change(rucio_storage: RucioStorage) -> None:
    disk = unique_rse("DISK")
    before = mock_site("site-b", "FB", {disk: "DISK"})
    rucio_storage.register_site(before)
    declared = before.model_dump(by_alias=True, mode="json")
    rse = declared["spec"]["rses"][0]
    rse["attributes"] = {"tier": 2, "dac": True}
    rse["protocols"][0]["prefix"] = "/elsewhere"
    rse["limits"] = {"MinFreeSpace": 1000}
    rse["quota"] = "1TiB"
    rse["availabilityWrite"] = False
    declared["spec"]["transferLimits"] = [{"activity": "User Subscriptions", "maxTransfers": 7}]
    after = type(before).model_validate(declared)
    changes = rucio_storage.register_site(after).changes
    assert set(changes) >= {
        f"{disk}: availability_write=False",
        f"{disk}: attribute tier=2",
        f"{disk}: protocol mock://localhost:0 updated",
        f"{disk}: limit MinFreeSpace=1000",
        f"{disk}: quota of steward = {2**40}",
        f"{disk}: transfer limit User Subscriptions=7",
    }
    assert rucio_storage.list_rses("tier=2&dac") == [disk]
    assert rucio_storage.register_site(after).changes == ()
    # Undeclaring removes what Steward had set, and only that.
    rucio_storage.register_site(before)
    assert rucio_storage.list_rses("tier=2") == []
    assert rucio_storage.list_rses(f"site=FB&{disk}") == [disk]
    assert rucio_storage.register_site(before).changes == ()


def test_distances_wait_for_the_peer(rucio_storage: RucioStorage) -> None:
    here, there = unique_rse("DISK"), unique_rse("DISK")
    site = mock_site("here", "HERE", {here: "DISK"}, distances=[{"site": "there", "distance": 4}])
    peer = mock_site("there", "THERE", {there: "DISK"})
    assert rucio_storage.register_site(site).pending == ("distance to site there: site not known",)
    pending = rucio_storage.register_site(site, peers=[peer]).pending
    assert pending == (f"distance {here} -> {there}: RSE not registered yet",)
    rucio_storage.register_site(peer)
    result = rucio_storage.register_site(site, peers=[peer])
    assert result.changes == (f"{here} -> {there}: distance 4",)
    assert result.pending == ()


def _two_sites(distance: int) -> tuple[Any, Any, str, str, str]:
    """A source site and a DAC site (``dac`` on its disk), each declaring its distance to
    the other, with their own names: (source site, DAC site, source RSE, DAC RSE, DAC
    facility)."""
    token = secrets.token_hex(3)
    source, target = unique_rse("DISK"), unique_rse("DISK")
    facility = f"F{token.upper()}"
    source_site = mock_site(
        f"source-{token}",
        f"S{token.upper()}",
        {source: "DISK"},
        distances=[{"site": f"dac-{token}", "distance": distance}],
    )
    dac_site = mock_site(
        f"dac-{token}",
        facility,
        {target: "DISK"},
        attributes={target: {"dac": True}},
        distances=[{"site": f"source-{token}", "distance": distance}],
    )
    return source_site, dac_site, source, target, facility


def test_a_site_registered_after_its_peer_is_reachable_from_it_at_once(
    rucio_storage: RucioStorage, rucio_server: RucioServer, rucio_data: RucioData
) -> None:
    """The dev stack's STUCK release-subset-to-in2p3-dac, as one interleaving.

    The operator's first reconciles run in no set order: NCSA's came before IN2P3's RSEs
    existed, so NCSA -> IN2P3 waited for NCSA's next timer tick; IN2P3's reconcile made
    ``site=IN2P3&dac`` select IN2P3_DISK at once; a rule created then had its transfer from
    NCSA_DISK marked NO_SOURCES by the conveyor, its lock STUCK, and Rucio's repairer
    retries that only two hours later. The later site's reconcile sets the distances its
    registered peers declare towards it, so the rule is placed.
    """
    source_site, dac_site, source, target, facility = _two_sites(distance=2)
    early = rucio_storage.register_site(source_site, peers=[dac_site])
    assert early.pending == (f"distance {source} -> {target}: RSE not registered yet",)
    late = rucio_storage.register_site(dac_site, peers=[source_site])
    assert late.pending == ()
    # The source site's next reconcile has not come: the rule is made now.
    dataset = rucio_data.dataset(rse=source)
    rule_id = rucio_storage.add_rule(
        dataset, RuleSpec(f"site={facility}&dac", comment=rucio_data.comment)
    )
    rucio_server.daemons.converge(scope=rucio_data.scope)
    rule = rucio_storage.get_rule(rule_id)
    assert (rule.state, rule.locks_ok, rule.locks_stuck) == (RuleState.OK, 2, 0)
    assert f"{source} -> {target}: distance 2" in late.changes
    # The source site's next reconcile finds its declaration already carried out.
    assert rucio_storage.register_site(source_site, peers=[dac_site]) == type(early)((), ())


def test_an_rse_is_selectable_by_its_attributes_only_once_it_is_reachable(
    rucio_storage: RucioStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration cut off before its distances leaves the RSE out of every attribute
    expression: no rule can choose it while transfers to it have no path. The next
    registration completes it."""
    source_site, dac_site, _, target, facility = _two_sites(distance=3)
    rucio_storage.register_site(source_site)
    call = rucio_storage._call

    def cut(operation: str, function: Any) -> Any:
        if operation == "add_distance":
            msg = "Rucio add_distance failed: http status code: 503 (injected)"
            raise RucioTransientError(msg)
        return call(operation, function)

    monkeypatch.setattr(rucio_storage, "_call", cut)
    with pytest.raises(RucioTransientError, match="injected"):
        rucio_storage.register_site(dac_site, peers=[source_site])
    assert rucio_storage.rse_availability([target])[target] is not None  # registered...
    assert rucio_storage.list_rses(f"site={facility}") == []  # ...but not selectable
    monkeypatch.undo()
    rucio_storage.register_site(dac_site, peers=[source_site])
    assert rucio_storage.list_rses(f"site={facility}&dac") == [target]


def test_availability_flips_and_is_idempotent(rucio_storage: RucioStorage) -> None:
    disk = unique_rse("DISK")
    rucio_storage.register_site(mock_site("site-c", "FC", {disk: "DISK"}))
    downtime = Availability(read=True, write=False, delete=False)
    assert rucio_storage.set_rse_availability(disk, downtime)
    assert not rucio_storage.set_rse_availability(disk, downtime)
    assert rucio_storage.rse_availability([disk]) == {disk: downtime}
    with pytest.raises(RucioNotFoundError, match="NO_SUCH_RSE"):
        rucio_storage.set_rse_availability("NO_SUCH_RSE", downtime)


# -- creating rules ----------------------------------------------------------------------------


def test_same_rule_twice_is_one_rule(rucio_storage: RucioStorage, rucio_data: RucioData) -> None:
    dataset = rucio_data.dataset()
    first = rucio_storage.add_rule(dataset, RuleSpec("NCSA_TAPE|IN2P3_TAPE"))
    second = rucio_storage.add_rules([dataset], RuleSpec(" IN2P3_TAPE | (NCSA_TAPE) "))
    assert second.rule_ids == {dataset: first}
    assert second.adopted == {dataset}
    assert second.created == frozenset()
    rules = rucio_storage.list_did_rules(dataset)
    assert [rule.id for rule in rules] == [first]
    assert rules[0].rse_expression == "IN2P3_TAPE|NCSA_TAPE"


def test_batched_create_adopts_existing_rules(
    rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    datasets = [rucio_data.dataset(files=1) for _ in range(8)]
    spec = RuleSpec("NCSA_DISK", comment=rucio_data.comment)
    existing = rucio_storage.add_rules(datasets[2:4], spec).rule_ids
    calls = rucio_storage.api_calls
    result = rucio_storage.add_rules(datasets, spec)
    assert result.adopted == set(datasets[2:4])
    assert result.created == set(datasets) - set(datasets[2:4])
    assert {did: result.rule_ids[did] for did in existing} == existing
    assert rucio_storage.api_calls - calls == 3  # failed batch, listing, batch of the rest
    rules = rucio_storage.list_rules(comment=rucio_data.comment)
    assert sorted(rule.did for rule in rules) == sorted(datasets)


class RacingStorage(RucioStorage):
    """Its listing misses the existing rules, as if they were created just after it."""

    def _matching_rules(self, batch: list[str], adding: Any) -> dict[str, Rule]:  # noqa: ARG002
        return {}


def test_duplicate_created_meanwhile_falls_back_to_one_did_per_call(
    rucio_server: RucioServer, rucio_data: RucioData
) -> None:
    datasets = [rucio_data.dataset(files=1) for _ in range(4)]
    spec = RuleSpec("NCSA_DISK")
    existing = rucio_data.storage.add_rule(datasets[1], spec)
    with RacingStorage(rucio_server.settings(rucio_calls_per_second=1000)) as storage:
        result = storage.add_rules(datasets, spec)
    assert result.adopted == {datasets[1]}
    assert result.rule_ids[datasets[1]] == existing
    assert result.created == set(datasets) - {datasets[1]}
    assert all(len(rucio_data.storage.list_did_rules(did)) == 1 for did in datasets)


def test_rule_where_replicas_already_are_is_ok_after_judge(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=3)
    rule_id = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK"))
    rucio_server.daemons.run("judge-evaluator")
    rule = rucio_storage.get_rule(rule_id)
    assert (rule.state, rule.locks_ok, rule.locks_replicating) == (RuleState.OK, 3, 0)


def test_rule_elsewhere_replicates_then_is_ok(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=2)
    rule_id = rucio_storage.add_rule(dataset, RuleSpec("IN2P3_DISK", comment="x"))
    assert rucio_storage.get_rule(rule_id).state is RuleState.REPLICATING
    assert rucio_server.daemons.converge(scope=rucio_data.scope).quiet
    rule = rucio_storage.get_rule(rule_id)
    assert (rule.state, rule.locks_ok, rule.comment) == (RuleState.OK, 2, "x")
    replicas = rucio_storage.list_replicas([dataset])
    assert replicas == {
        f: {"NCSA_DISK": "AVAILABLE", "IN2P3_DISK": "AVAILABLE"}
        for f in rucio_data.files_of(dataset)
    }


def test_rule_fields_come_back_typed(rucio_storage: RucioStorage, rucio_data: RucioData) -> None:
    dataset = rucio_data.dataset()
    spec = RuleSpec("NCSA_DISK", lifetime=timedelta(days=2), comment="c", priority=4)
    rule = rucio_storage.get_rule(rucio_storage.add_rule(dataset, spec))
    assert isinstance(rule, Rule)
    assert (rule.did, rule.account, rule.copies, rule.priority) == (dataset, "steward", 1, 4)
    assert rule.expires_at is not None
    remaining = rule.expires_at - datetime.now(UTC)
    assert timedelta(days=2) - timedelta(minutes=5) < remaining <= timedelta(days=2)


def test_states_inject_and_waiting_approval(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    injected = rucio_storage.add_rule(
        rucio_data.dataset(), RuleSpec("IN2P3_DISK", asynchronous=True)
    )
    assert rucio_storage.get_rule(injected).state is RuleState.INJECT
    rucio_server.daemons.run("judge-injector")
    assert rucio_storage.get_rule(injected).state is RuleState.REPLICATING
    approval = rucio_storage.add_rule(
        rucio_data.dataset(), RuleSpec("IN2P3_DISK", ask_approval=True)
    )
    assert rucio_storage.get_rule(approval).state is RuleState.WAITING_APPROVAL


def test_unavailable_source_makes_the_rule_stuck(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=2)
    rucio_storage.set_replicas_available("NCSA_DISK", rucio_data.files_of(dataset), available=False)
    rule_id = rucio_storage.add_rule(dataset, RuleSpec("IN2P3_DISK"))
    rucio_server.daemons.converge()
    rule = rucio_storage.get_rule(rule_id)
    assert (rule.state, rule.locks_stuck) == (RuleState.STUCK, 2)
    assert rule.error is not None
    assert "NO_SOURCES" in rule.error


def test_invalid_input_is_a_permanent_error(
    rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset()
    with pytest.raises(RucioPermanentError, match="column 11"):
        rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK&"))
    with pytest.raises(RucioPermanentError, match="InvalidRSEExpression"):
        rucio_storage.add_rule(dataset, RuleSpec("site=NOWHERE"))
    with pytest.raises(RucioNotFoundError, match="DataIdentifierNotFound"):
        rucio_storage.add_rule(rucio_data.did("missing"), RuleSpec("NCSA_DISK"))
    with pytest.raises(RucioPermanentError, match="at least one copy"):
        RuleSpec("NCSA_DISK", copies=0)


# -- changing and deleting rules ------------------------------------------------------------------


def test_update_rule_in_place(rucio_storage: RucioStorage, rucio_data: RucioData) -> None:
    rule_id = rucio_storage.add_rule(rucio_data.dataset(), RuleSpec("IN2P3_DISK"))
    rucio_storage.update_rule(rule_id, comment="new", priority=5, locked=True)
    rule = rucio_storage.get_rule(rule_id)
    assert (rule.comment, rule.priority, rule.locked) == ("new", 5, True)
    rucio_storage.update_rule(rule_id, state="SUSPENDED")
    assert rucio_storage.get_rule(rule_id).state is RuleState.SUSPENDED
    rucio_storage.update_rule(rule_id, state="STUCK")
    assert rucio_storage.get_rule(rule_id).state is RuleState.STUCK
    rucio_storage.update_rule(rule_id)  # nothing given, nothing sent


def test_move_never_leaves_fewer_copies(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=2)
    old = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK", comment=rucio_data.comment))
    new = rucio_storage.change_rule(old, rse_expression="IN2P3_DISK")
    assert new != old
    assert rucio_storage.change_rule(old, rse_expression="IN2P3_DISK") == new  # idempotent

    def at_least_one_copy() -> None:
        assert protected_copies(rucio_storage, dataset, 2) >= 1

    def only_the_new_rule() -> bool:
        return [r.id for r in rucio_storage.list_did_rules(dataset)] == [new]

    step_until(rucio_server, only_the_new_rule, at_least_one_copy)
    rule = rucio_storage.get_rule(new)
    assert (rule.rse_expression, rule.state, rule.comment) == (
        "IN2P3_DISK",
        RuleState.OK,
        rucio_data.comment,
    )


def test_more_then_fewer_copies_never_drop_below_declared(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=2)
    expression = "NCSA_DISK|IN2P3_DISK"
    one = rucio_storage.add_rule(dataset, RuleSpec(expression, comment="keep"))
    two = rucio_storage.change_rule(one, copies=2)
    assert rucio_storage.get_rule(two).copies == 2

    def at_least(copies: int) -> Any:
        def check() -> None:
            assert protected_copies(rucio_storage, dataset, 2) >= copies

        return check

    def only(rule_id: str) -> Any:
        return lambda: [r.id for r in rucio_storage.list_did_rules(dataset)] == [rule_id]

    step_until(rucio_server, only(two), at_least(1))
    assert protected_copies(rucio_storage, dataset, 2) == 2
    back = rucio_storage.change_rule(two, copies=1)  # OK rule: Rucio's atomic reduce
    rule = rucio_storage.get_rule(back)
    assert (rule.copies, rule.state, rule.comment) == (1, RuleState.OK, "keep")
    assert [r.id for r in rucio_storage.list_did_rules(dataset)] == [back]
    assert rucio_storage.change_rule(back, rse_expression=expression) == back  # no change


def test_retargeting_a_move_in_progress(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=1)
    old = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK"))
    rucio_storage.change_rule(old, rse_expression="IN2P3_DISK")
    latest = rucio_storage.change_rule(old, rse_expression="IN2P3_TAPE", copies=1)
    assert rucio_storage.get_rule(old).child_rule_id == latest
    rucio_server.daemons.converge()
    rucio_server.daemons.run("judge-cleaner")
    rules = {r.rse_expression: r.state for r in rucio_storage.list_did_rules(dataset)}
    assert rules == {"IN2P3_TAPE": RuleState.OK}


def test_lifetime_in_the_past_is_cleaned_by_judge_cleaner(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    rule_id = rucio_storage.add_rule(rucio_data.dataset(), RuleSpec("NCSA_DISK"))
    rucio_storage.update_rule(rule_id, lifetime=timedelta(minutes=-10))
    expires_at = rucio_storage.get_rule(rule_id).expires_at
    assert expires_at is not None
    assert expires_at < datetime.now(UTC)
    rucio_server.daemons.run("judge-cleaner")
    with pytest.raises(RucioNotFoundError):
        rucio_storage.get_rule(rule_id)


def test_delete_is_soft_and_recreating_finds_the_rule_untouched(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset()
    spec = RuleSpec("NCSA_DISK", comment="made by hand")
    rule_id = rucio_storage.add_rule(dataset, spec)
    assert rucio_storage.delete_rule(rule_id)
    expires_at = rucio_storage.get_rule(rule_id).expires_at
    assert expires_at is not None
    assert expires_at <= datetime.now(UTC) + timedelta(hours=1)
    again = rucio_storage.add_rules([dataset], RuleSpec("NCSA_DISK", comment="other"))
    assert again.rule_ids == {dataset: rule_id}
    assert again.adopted == {dataset}
    found = again.existing[dataset]
    assert (found.id, found.comment) == (rule_id, "made by hand")
    # Finding a rule writes nothing to it: whether to take it over is the caller's decision.
    assert rucio_storage.get_rule(rule_id).expires_at == expires_at
    rucio_storage.update_rule(rule_id, lifetime=timedelta(0))
    rucio_server.daemons.run("judge-cleaner")
    assert not rucio_storage.delete_rule(rule_id)  # already gone


def test_locked_rule_is_deleted_only_when_asked_to_unlock(
    rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    rule_id = rucio_storage.add_rule(rucio_data.dataset(), RuleSpec("NCSA_TAPE"))
    assert rucio_storage.get_rule(rule_id).locked  # Rucio locks TAPE rules without lifetime
    with pytest.raises(RucioPermanentError, match="UnsupportedOperation"):
        rucio_storage.delete_rule(rule_id)
    assert rucio_storage.delete_rule(rule_id, unlock=True)


def test_reaper_removes_replicas_of_purged_rules(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset(files=2)
    rule_id = rucio_storage.add_rule(dataset, RuleSpec("IN2P3_DISK", purge_replicas=True))
    rucio_server.daemons.converge()
    rucio_storage.update_rule(rule_id, lifetime=timedelta(0))
    rucio_server.daemons.run("judge-cleaner")
    rucio_server.daemons.run("reaper", rses=["IN2P3_DISK"])
    replicas = rucio_storage.list_replicas([dataset])
    assert all(states == {"NCSA_DISK": "AVAILABLE"} for states in replicas.values()), replicas


# -- listing -----------------------------------------------------------------------------------


def test_list_and_refresh_rules_in_one_call(
    rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    datasets = [rucio_data.dataset(files=1) for _ in range(3)]
    ids = rucio_storage.add_rules(datasets, RuleSpec("NCSA_DISK", comment=rucio_data.comment))
    listed = rucio_storage.list_rules(comment=rucio_data.comment)
    assert {rule.id for rule in listed} == set(ids.rule_ids.values())
    assert rucio_storage.list_rules(comment=rucio_data.comment, state=RuleState.STUCK) == []
    assert rucio_storage.list_rules(account="nobody", comment=rucio_data.comment) == []
    calls = rucio_storage.api_calls
    refreshed = rucio_storage.refresh_rules([*ids.rule_ids.values(), "0" * 32])
    assert rucio_storage.api_calls == calls + 1
    assert set(refreshed) == set(ids.rule_ids.values())
    assert all(rule.state is RuleState.OK for rule in refreshed.values())


def test_list_rules_updated_after_returns_what_changed_since(
    rucio_storage: RucioStorage, rucio_data: RucioData, rucio_server: RucioServer
) -> None:
    datasets = [rucio_data.dataset(files=1) for _ in range(2)]
    ids = rucio_storage.add_rules(datasets, RuleSpec("NCSA_DISK", comment=rucio_data.comment))
    old, recent = (ids.rule_ids[did] for did in datasets)
    assert rucio_server.daemons.age_rule(old, 86400) == 1  # unchanged for a day
    since = rucio_storage.get_rule(recent).updated_at
    assert since is not None

    def changed(after: datetime) -> set[str]:
        rules = rucio_storage.list_rules(comment=rucio_data.comment, updated_after=after)
        return {rule.id for rule in rules}

    assert changed(since) == {recent}  # at or after: the bound is inclusive
    assert changed(since - timedelta(days=2)) == {old, recent}
    assert changed(since + timedelta(hours=1)) == set()
    rucio_storage.update_rule(old, priority=4)  # any change of the rule moves updated_at
    assert changed(since) == {old, recent}


def test_list_dids_by_metadata_with_exclusions(
    rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    keep = rucio_data.dataset("keep", meta={"datatype": "raw", "project": "lsstcam"})
    rucio_data.dataset("junk", meta={"datatype": "raw", "project": "junk"})
    rucio_data.dataset("other", meta={"datatype": "calexp"})
    bare = rucio_data.dataset("bare", meta={"datatype": "raw"})
    found = rucio_storage.list_dids(
        rucio_data.scope, {"datatype": "raw"}, exclude=[{"project": "junk"}]
    )
    assert found == sorted([keep, bare])
    assert rucio_storage.list_dids(rucio_data.scope, {"project": "lsstcam"}) == [keep]


def test_custom_metadata_keys_need_a_json_capable_database(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    dataset = rucio_data.dataset()
    if rucio_server.database_url is None:  # SQLite: Rucio's JSON metadata plugin is off
        with pytest.raises(RucioPermanentError, match=r"InvalidMetadata.*instrument"):
            rucio_storage.set_metadata(dataset, {"instrument": "LSSTCam"})
    else:
        rucio_storage.set_metadata(dataset, {"instrument": "LSSTCam"})
        found = rucio_storage.list_dids(rucio_data.scope, {"instrument": "LSSTCam"})
        assert found == [dataset]


def test_undertaker_removes_expired_datasets(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    kept = rucio_data.dataset("kept")
    assert rucio_storage.add_dataset(rucio_data.did("old"), lifetime=timedelta(seconds=-1))
    assert not rucio_storage.add_dataset(rucio_data.did("old"))  # exists already
    rucio_server.daemons.run("undertaker")
    assert rucio_storage.list_dids(rucio_data.scope) == [kept]


def test_helpers_are_idempotent(rucio_storage: RucioStorage, rucio_data: RucioData) -> None:
    assert not rucio_storage.add_scope(rucio_data.scope)
    assert rucio_storage.add_container(rucio_data.did("c"))
    assert not rucio_storage.add_container(rucio_data.did("c"))
    rucio_storage.attach(rucio_data.did("c"), [rucio_data.dataset("d")])
    rucio_storage.set_metadata(rucio_data.did("d"), {"project": "p1"})
    assert rucio_storage.list_dids(rucio_data.scope, {"project": "p1"}) == [rucio_data.did("d")]
    rucio_storage.allow_metadata_values("datatype", ["raw"])  # declared already: no error


# -- subscriptions -----------------------------------------------------------------------------


def test_subscription_places_new_matching_data(
    rucio_server: RucioServer, rucio_storage: RucioStorage, rucio_data: RucioData
) -> None:
    name = f"sub-{rucio_data.scope}"
    spec = SubscriptionSpec(
        name=name,
        filter={"scope": [rucio_data.scope], "did_type": ["DATASET"], "datatype": ["raw"]},
        rules=[RuleSpec("IN2P3_TAPE", lifetime=timedelta(days=30), comment=rucio_data.comment)],
        comments="test",
    )
    first = rucio_storage.add_subscription(spec)
    assert rucio_storage.add_subscription(spec) == first  # idempotent
    changed = SubscriptionSpec(
        name=name,
        filter=spec.filter,
        rules=[RuleSpec("IN2P3_DISK", comment=rucio_data.comment)],
        priority=2,
    )
    assert rucio_storage.update_subscription(changed) == first
    current = rucio_storage.get_subscription(name)
    assert current is not None
    assert [rule["rse_expression"] for rule in current.rules] == ["IN2P3_DISK"]
    assert current.priority == 2
    raw = rucio_data.dataset(meta={"datatype": "raw"})
    rucio_data.dataset(meta={"datatype": "calexp"})
    rucio_server.daemons.run("transmogrifier")
    rules = rucio_storage.list_rules(comment=rucio_data.comment)
    assert [(rule.did, rule.rse_expression) for rule in rules] == [(raw, "IN2P3_DISK")]
    assert rucio_storage.get_subscription("no-such-subscription") is None


# -- failures, credentials, rate ---------------------------------------------------------------


def test_outage_is_retried_until_the_server_is_back(private_rucio_server: RucioServer) -> None:
    server = private_rucio_server
    patient = RetryPolicy(attempts=40, initial_delay=0.2, max_delay=1.0, deadline=120)
    storage = RucioStorage(server.settings(), retry=patient)
    account = server.settings().rucio_account
    assert storage.whoami() == account  # logged in before the outage
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            outcome["account"] = storage.whoami()
        except Exception as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    server.stop_api()
    try:
        calls = storage.api_calls
        reader = threading.Thread(target=read)
        reader.start()
        until("three tries during the outage", lambda: storage.api_calls >= calls + 3, timeout=30)
        assert "account" not in outcome
    finally:
        server.start_api()  # in this thread: the server dies with the thread starting it
    reader.join(120)
    assert outcome == {"account": account}
    storage.close()


def test_outage_beyond_the_retries_is_a_transient_error(
    private_rucio_server: RucioServer,
) -> None:
    server = private_rucio_server
    storage = RucioStorage(
        server.settings(), retry=RetryPolicy(attempts=2, initial_delay=0.1, retry_after=42)
    )
    storage.whoami()
    server.stop_api()
    try:
        with pytest.raises(RucioTransientError, match="Connection refused") as info:
            storage.whoami()
    finally:
        server.start_api()
    assert info.value.retry_after == 42
    assert storage.whoami() == server.settings().rucio_account
    storage.close()


def test_bad_credentials_give_a_clear_error_without_the_password(
    rucio_server: RucioServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    storage = RucioStorage(
        rucio_server.settings(rucio_password=SecretStr(wrong)), retry=RetryPolicy(attempts=1)
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RucioAuthenticationError, match="credentials of account 'steward'") as info:
        storage.list_rules()
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value) + repr(storage)
    assert "CannotAuthenticate" in shown
    assert wrong not in shown
    assert wrong not in caplog.text
    storage.close()


def test_password_never_reaches_the_logs(
    rucio_server: RucioServer, caplog: pytest.LogCaptureFixture
) -> None:
    password = rucio_server.password.get_secret_value()
    caplog.set_level(logging.DEBUG)
    with RucioStorage(rucio_server.settings()) as storage:
        storage.list_rses("NCSA_DISK")
    assert "X-Rucio-Password: ***" in caplog.text  # Rucio logs the header; we mask it
    assert password not in caplog.text


def test_without_host_the_rucio_cfg_is_used(
    rucio_server: RucioServer, rucio_sites: RucioSites, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUCIO_CONFIG", str(rucio_server.config_path))
    clean_cached_config()  # Rucio reads its configuration once per process
    # rucio.cfg logs in as root (for the rucio command); the account comes from the settings.
    settings = Settings(
        rucio_host=None, rucio_username=None, rucio_password=None, rucio_account="root"
    )
    try:
        with RucioStorage(settings) as storage:
            assert storage.list_rses("NCSA_DISK") == ["NCSA_DISK"]
            assert "rucio.cfg" in repr(storage)
    finally:
        clean_cached_config()


def test_rate_cap_spaces_calls(rucio_server: RucioServer) -> None:
    fake = FakeTime()
    with RucioStorage(rucio_server.settings(rucio_calls_per_second=4)) as storage:
        storage._bucket = TokenBucket(4, clock=fake.clock, sleep=fake.sleep)
        for _ in range(9):
            storage.list_rses("NCSA_DISK")
        assert storage.api_calls == 9
    # A burst of 4, then one call every quarter second: 5 waits, 1.25 s in all.
    assert fake.slept == pytest.approx([0.25] * 5)


def test_the_default_account_is_stewards_own_not_root() -> None:
    assert Settings.model_fields["rucio_account"].default == "steward"


def test_an_expression_selecting_nothing_is_an_answer_not_an_error(
    rucio_storage: RucioStorage,
) -> None:
    attribute = f"nothing{secrets.token_hex(4)}"

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"operation": "list_rses", **labels}) or 0.0

    calls = sample("steward_rucio_calls_total")
    errors = sample("steward_rucio_errors_total", error="RucioPermanentError")
    assert rucio_storage.list_rses(attribute) == []
    assert rucio_storage.list_rses(f"{attribute}|type=NOSUCHTYPE{attribute}") == []
    assert sample("steward_rucio_calls_total") == calls + 2  # asked Rucio twice
    assert sample("steward_rucio_errors_total", error="RucioPermanentError") == errors

"""`FindService`: data by metadata with replicas and rule owners, paged, against real Rucio."""

import pytest

from steward.exceptions import PermanentError
from steward.services.find import FindQuery, FindService
from steward.services.ownership import owner_index, owner_tag
from steward.storage.rucio import File, RuleSpec

pytestmark = pytest.mark.rucio

CLUSTER = "cluster-under-test"


def test_results_carry_replicas_rules_and_their_owners(rucio_storage, rucio_data):
    placed = rucio_data.dataset(meta={"datatype": "raw"})
    bare = rucio_data.dataset(meta={"datatype": "raw"}, files=3)
    rucio_data.dataset(meta={"datatype": "calexp"})
    owned = rucio_storage.add_rule(
        placed, RuleSpec("IN2P3_TAPE", comment=owner_tag(CLUSTER, "uid-of-raw-to-in2p3"))
    )
    foreign = rucio_storage.add_rule(
        placed, RuleSpec("IN2P3_DISK", comment=owner_tag("another-cluster", "uid-x"))
    )
    manual = rucio_storage.add_rule(placed, RuleSpec("NCSA_TAPE", comment="placed by hand"))
    owners = owner_index(CLUSTER, [("uid-of-raw-to-in2p3", "ReplicationRule/steward/raw-x")])
    service = FindService(rucio_storage, owners)

    found = {f.did: f for f in service.find(FindQuery([rucio_data.scope], {"datatype": "raw"}))}

    assert set(found) == {placed, bare}
    assert (found[bare].files, found[bare].bytes) == (3, 1000 + 1001 + 1002)
    (replica,) = found[bare].replicas
    assert (replica.rse, replica.files, replica.available_files) == ("NCSA_DISK", 3, 3)
    assert found[bare].rules == ()
    rules = {rule.id: rule for rule in found[placed].rules}
    assert set(rules) == {owned, foreign, manual}
    assert rules[owned].owner == "ReplicationRule/steward/raw-x"
    assert rules[owned].rse_expression == "IN2P3_TAPE"
    assert (rules[foreign].owner, rules[foreign].steward) == (None, True)
    assert "no resource of this cluster" in rules[foreign].describe_owner()
    assert (rules[manual].owner, rules[manual].steward) == (None, False)
    account = rucio_storage.account
    assert rules[manual].describe_owner() == f"not Steward's ({account}: placed by hand)"
    assert found[placed].to_json()["rules"][0]["state"] in {"OK", "REPLICATING"}
    assert (service.stats.listed, service.stats.found) == (2, 2)


def test_a_large_selection_is_looked_up_one_page_at_a_time(rucio_storage, rucio_data):
    """The listing is read a page at a time and each dataset looked up when it is asked for."""
    for _ in range(23):
        rucio_data.dataset(meta={"datatype": "raw"}, files=1)
    service = FindService(rucio_storage, {}, page_size=5)
    before = rucio_storage.api_calls

    results = service.find(FindQuery([rucio_data.scope], {"datatype": "raw"}))
    first = next(results)

    assert first.did.startswith(rucio_data.scope)
    assert service.stats.pages == 1
    # the listing, then the first dataset's replicas and rules: not the whole page's
    assert rucio_storage.api_calls - before == 1 + 2
    rest = list(results)
    assert len(rest) == 22
    assert (service.stats.pages, service.stats.listed, service.stats.found) == (5, 23, 23)


def test_the_rse_filter_keeps_data_with_a_replica_there(rucio_storage, rucio_data):
    here = rucio_data.dataset(meta={"datatype": "raw"}, files=2)
    rucio_data.dataset(meta={"datatype": "raw"}, files=2)
    rucio_storage.add_replicas(
        "IN2P3_DISK", [File(f, bytes=1000 + i) for i, f in enumerate(rucio_data.files_of(here))]
    )
    service = FindService(rucio_storage, {})

    found = list(service.find(FindQuery([rucio_data.scope], rse_expression="site=IN2P3")))

    assert [f.did for f in found] == [here]
    assert [r.rse for r in found[0].replicas] == ["IN2P3_DISK", "NCSA_DISK"]
    assert service.stats.listed == 2
    with pytest.raises(PermanentError, match="selects no RSE"):
        list(service.find(FindQuery([rucio_data.scope], rse_expression="site=NOWHERE")))


def test_files_are_found_with_their_replicas(rucio_storage, rucio_data):
    dataset = rucio_data.dataset(files=2)
    service = FindService(rucio_storage, {})
    found = {f.did: f for f in service.find(FindQuery([rucio_data.scope], did_type="file"))}
    assert set(found) == set(rucio_data.files_of(dataset))
    first = found[rucio_data.files_of(dataset)[0]]
    assert (first.files, first.bytes) == (1, 1000)
    assert [(r.rse, r.state) for r in first.replicas] == [("NCSA_DISK", "AVAILABLE")]


def test_every_scope_is_searched_when_none_is_named(rucio_storage, rucio_data):
    rucio_storage.allow_metadata_values("datatype", ["find-every-scope"])
    dataset = rucio_data.dataset(meta={"datatype": "find-every-scope"})
    found = FindService(rucio_storage, {}).find(FindQuery(match={"datatype": "find-every-scope"}))
    assert [f.did for f in found] == [dataset]

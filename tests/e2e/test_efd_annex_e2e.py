"""The EFD Large File Annex policies through the real operator, API server and Rucio.

The three policies of policies/replication/efd-annex-*.yaml are applied as they are, except
that each one's scope is the test's and its destination is intersected with the test's own
RSEs (``(<destination>)&e2e=<token>``), which carry the attributes of sites/: an ingest RSE
like BASE_EFD, two Data Backbone disks that DACs serve from, two custodial tapes, an
independent DAC's disk. Annex files are ingested with `steward ingest`'s service; the test
then checks where the operator had Rucio put public and private files.
"""

import secrets
from pathlib import Path

import pytest
import yaml

from steward.models.rse_expression import canonical
from steward.services.ingest import IngestRequest, IngestService
from steward.storage.rucio import RucioStorage
from support.operator import condition_of
from support.rucio import mock_site
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("efd-annex-to-dbb", "efd-annex-to-dr", "efd-annex-to-independent-dac")


def _site(token):
    """One test site whose RSEs have the attributes sites/ gives the real ones."""
    facility = f"EFD{token}".upper()
    rses = {
        "EFD": ("DISK", {"efd": True}),
        "NCSA_DISK": ("DISK", {"dbb": True, "dac": True}),
        "BASE_DISK": ("DISK", {"dbb": True, "dac": True}),
        "NCSA_TAPE": ("TAPE", {"dbb": True, "custodial": True}),
        "IN2P3_TAPE": ("TAPE", {"custodial": True}),
        "IDAC_DISK": ("DISK", {"dac": True, "independent": True}),
    }
    site = mock_site(
        facility.lower(),
        facility,
        {f"{facility}_{suffix}": kind for suffix, (kind, _) in rses.items()},
        attributes={f"{facility}_{s}": {**a, "e2e": token} for s, (_, a) in rses.items()},
    )
    return facility, site


def _policy(name, namespace, scope, token, facility):
    """A repository policy, confined to the test's scope and RSEs."""
    body = yaml.safe_load((ROOT / "policies" / "replication" / f"{name}.yaml").read_text())
    spec = body["spec"]
    body["metadata"]["namespace"] = namespace
    spec["selector"]["scope"] = scope
    spec["destination"] = f"({spec['destination']})&e2e={token}"
    if "sourcePreference" in spec:
        spec["sourcePreference"] = {"BASE_EFD": f"{facility}_EFD"}[spec["sourcePreference"]]
    return body


def _ingest(storage, audit, scope, rse, directory, name, meta):
    directory.mkdir()
    paths = []
    for i in range(2):
        path = directory / f"{name}-{i}.tar"
        path.write_bytes(f"{name} {i}\n".encode() * 500)
        paths.append(path)
    service = IngestService(storage, audit, actor="efd-transformation-service")
    plan = service.plan(IngestRequest(paths, scope, rse, meta, name))
    service.apply(plan)
    return plan.dataset


def _holding(storage: RucioStorage, dataset: str) -> set[str]:
    """RSEs holding every file of the dataset, available."""
    return {r.rse for r in storage.list_dataset_replicas(dataset) if r.available_files == r.files}


def test_efd_annex_placement(
    custom_objects,
    namespace,
    steward_operator,
    rucio_server,
    rucio_storage,
    rucio_data,
    audit,
    tmp_path,
):
    """Public annex files go to both DBB disks, both tapes and the independent DAC; private
    ones to the tapes only."""
    token = secrets.token_hex(3)
    facility, site = _site(token)
    rucio_storage.register_site(site)
    rucio_storage.allow_metadata_values("datatype", ["efd_annex"])
    scope, rse = rucio_data.scope, f"{facility}_EFD"
    public = _ingest(
        rucio_storage, audit, scope, rse, tmp_path / "p", "annex", {"datatype": "efd_annex"}
    )
    private = None
    if rucio_server.database_url is not None:  # custom metadata needs PostgreSQL
        private = _ingest(
            rucio_storage,
            audit,
            scope,
            rse,
            tmp_path / "q",
            "annex-private",
            {"datatype": "efd_annex", "private": "true"},
        )

    for name in POLICIES:
        custom_objects.create("replicationrules", _policy(name, namespace, scope, token, facility))

    everywhere = {
        f"{facility}_{suffix}"
        for suffix in ("EFD", "NCSA_DISK", "BASE_DISK", "NCSA_TAPE", "IN2P3_TAPE", "IDAC_DISK")
    }
    tape_only = {f"{facility}_EFD", f"{facility}_NCSA_TAPE", f"{facility}_IN2P3_TAPE"}

    def placed():
        ready = all(
            (condition_of(custom_objects.get("replicationrules", n, namespace), "Ready") or {}).get(
                "status"
            )
            == "True"
            for n in POLICIES
        )
        return (
            ready
            and _holding(rucio_storage, public) == everywhere
            and (private is None or _holding(rucio_storage, private) == tape_only)
        )

    try:
        until(
            "public annex everywhere, private annex on tape only",
            placed,
            timeout=180,
            between=rucio_server.daemons.converge,
        )
    except pytest.fail.Exception:
        statuses = {
            n: (custom_objects.get("replicationrules", n, namespace) or {}).get("status")
            for n in POLICIES
        }
        where = {d: _holding(rucio_storage, d) for d in (public, private) if d}
        pytest.fail(f"not placed as the policies say: {where}; statuses {statuses}")
    dr = custom_objects.get("replicationrules", "efd-annex-to-dr", namespace)
    assert dr["status"]["selected"] == (1 if private is None else 2)
    for name in ("efd-annex-to-dbb", "efd-annex-to-independent-dac"):
        status = custom_objects.get("replicationrules", name, namespace)["status"]
        assert status["selected"] == 1  # the public dataset only
    if private is not None:
        rules = rucio_storage.list_did_rules(private)
        assert [r.rse_expression for r in rules] == [canonical(f"(custodial)&e2e={token}")]
        assert rules[0].locked
        assert rules[0].copies == 2

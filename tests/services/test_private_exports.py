"""`steward validate` refuses an export to a DAC that does not exclude data marked private."""

from pathlib import Path

import pytest
import yaml

from steward.services.validation import validate_paths

ROOT = Path(__file__).resolve().parents[2]
SITES = ROOT / "sites"


def _problems(tmp_path, spec):
    path = tmp_path / "export.yaml"
    path.write_text(
        "# Use case: 26\n"
        + yaml.safe_dump(
            {
                "apiVersion": "steward.lsst.io/v1alpha1",
                "kind": "ReplicationRule",
                "metadata": {"name": "export", "namespace": "steward"},
                "spec": spec,
            },
            sort_keys=False,
        )
    )
    return [p.message for p in validate_paths([path], SITES).problems]


SELECT = {"scope": "release", "match": {"release": "DR1"}}


@pytest.mark.parametrize(
    ("destination", "dac"),
    [
        ("independent&dac", "IDAC_DISK"),
        ("IDAC_DISK", "IDAC_DISK"),  # naming the RSE does not get around it
        ("site=NCSA&type=DISK&dbb", "NCSA_DISK"),  # the US DAC serves from the DBB disk
        ("dbb&type=DISK", "BASE_DISK, NCSA_DISK"),
    ],
)
def test_an_export_without_the_exclusion_is_refused(tmp_path, destination, dac):
    (message,) = _problems(tmp_path, {"selector": SELECT, "destination": destination})
    assert message.startswith(f"spec.selector: exports to DAC storage ({dac}) without excluding")
    assert 'add `exclude: [{private: "true"}]`' in message


def test_the_exclusion_among_others_is_enough(tmp_path):
    selector = {**SELECT, "exclude": [{"archive": "false"}, {"private": "true"}]}
    assert _problems(tmp_path, {"selector": selector, "destination": "independent&dac"}) == []


@pytest.mark.parametrize("destination", ["custodial", "site=NCSA&type=TAPE", "BASE_EFD"])
def test_placements_no_dac_serves_need_no_exclusion(tmp_path, destination):
    assert _problems(tmp_path, {"selector": SELECT, "destination": destination}) == []


def test_a_near_miss_is_not_the_exclusion(tmp_path):
    selector = {**SELECT, "exclude": [{"private": "yes"}]}
    (message,) = _problems(tmp_path, {"selector": selector, "destination": "IDAC_DISK"})
    assert "without excluding data marked private" in message


def test_an_explicit_list_cannot_be_an_export(tmp_path):
    selector = {"dids": ["release:dr1-coadd-0001"]}
    (message,) = _problems(tmp_path, {"selector": selector, "destination": "site=BASE&dac"})
    assert "select by metadata (match) and exclude private" in message


def test_every_export_in_the_repository_carries_the_exclusion():
    result = validate_paths([ROOT / "policies", SITES])
    assert result.ok, [p.format() for p in result.problems]
    exports = sorted(
        item.resource.metadata.name
        for item in result.resources
        if item.resource.kind == "ReplicationRule"
        and {"private": "true"} in item.resource.spec.selector.exclude
    )
    assert exports == [
        "calibs-to-in2p3",
        "efd-annex-to-dbb",
        "efd-annex-to-independent-dac",
        "prompt-products-to-dbb",
        "release-subset-to-in2p3-dac",
        "release-subset-to-independent-dac",
        "release-to-chilean-dac",
    ]

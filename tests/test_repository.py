"""Repository conventions, as tests (phalanx's tests/config_test.py does the same)."""

import re
from pathlib import Path

import pytest
import yaml

from steward.services.validation import validate_paths

ROOT = Path(__file__).resolve().parents[1]
POLICY_FILES = sorted((ROOT / "policies").rglob("*.yaml"))
SITE_FILES = sorted((ROOT / "sites").glob("*.yaml"))
NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def _documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_policies_and_sites():
    assert len(POLICY_FILES) >= 10
    assert {p.stem for p in SITE_FILES} >= {"ncsa", "base", "in2p3"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_policy_file_names_its_use_case(path):
    header = path.read_text().splitlines()[:15]
    assert any(re.match(r"^# Use case: \S", line) for line in header), (
        f"{path} must say which use case it serves in a '# Use case: ...' comment at the top"
    )


@pytest.mark.parametrize("path", POLICY_FILES + SITE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_names_follow_the_convention(path):
    for document in _documents(path):
        assert NAME.match(document["metadata"]["name"]), document["metadata"]["name"]


def test_everything_validates_together():
    result = validate_paths([ROOT / "policies", ROOT / "sites"])
    assert [p.format() for p in result.problems] == []
    kinds = {r.resource.kind for r in result.resources}
    assert kinds == {"Site", "ReplicationRule", "RetentionPolicy", "OODSCache", "Campaign"}


def test_every_site_referenced_exists():
    sites = {d["metadata"]["name"] for p in SITE_FILES for d in _documents(p)}
    for path in POLICY_FILES:
        for document in _documents(path):
            site = document.get("spec", {}).get("site")
            if site is not None:
                assert site in sites, f"{path}: unknown site {site}"


def test_sites_are_one_file_each():
    for path in SITE_FILES:
        (document,) = _documents(path)
        assert document["kind"] == "Site"
        assert document["metadata"]["name"] == path.stem

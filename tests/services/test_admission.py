"""Admission reviews one resource with validate's checks and words (pure: no API server)."""

from pathlib import Path

import yaml

from steward.services.admission import review
from steward.services.validation import validate_paths

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "data" / "broken"


def _sites():
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "sites").glob("*.yaml"))]


def _validate_messages(path):
    """validate's lines for a file, less ``path:line:column: ``."""
    result = validate_paths([path], ROOT / "sites")
    return [p.format().split(": ", 1)[1] for p in result.problems]


def test_semantic_refusals_use_validates_words():
    for name in ("rse-expression-no-matching-rse", "lifetime-shorter-than-window"):
        path = BROKEN / f"{name}.yaml"
        (body,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        result = review(body, _sites())
        assert not result.allowed
        assert result.refusals == _validate_messages(path)


def test_every_repository_policy_is_admitted():
    for path in sorted((ROOT / "policies").rglob("*.yaml")):
        for body in yaml.safe_load_all(path.read_text()):
            if body:
                result = review(body, _sites())
                assert result.allowed, (path, result.refusals)


def test_server_fields_and_status_are_ignored():
    (body,) = yaml.safe_load_all((ROOT / "policies/replication/raw-to-in2p3.yaml").read_text())
    body["metadata"] |= {
        "uid": "u",
        "resourceVersion": "1",
        "generation": 3,
        "managedFields": [{"manager": "kubectl"}],
    }
    body["status"] = {"anything": True}
    assert review(body, _sites()).allowed


def test_a_site_is_checked_against_the_others_not_itself():
    sites = _sites()
    (base,) = [s for s in sites if s["metadata"]["name"] == "base"]
    assert review(base, sites).allowed  # its own live version does not clash with itself
    (ncsa,) = [s for s in sites if s["metadata"]["name"] == "ncsa"]
    thief = {**base, "metadata": {"name": "thief"}}
    thief["spec"] = {**base["spec"], "rses": ncsa["spec"]["rses"], "distances": []}
    result = review(thief, sites)
    assert not result.allowed
    assert result.refusals[0].startswith(
        "Site/thief: RSE 'NCSA_DISK' is also declared by Site/ncsa"
    )


def test_unknown_peer_sites_only_warn():
    (base,) = [s for s in _sites() if s["metadata"]["name"] == "base"]
    result = review(base, [])  # the first Site of an empty cluster names the others
    assert result.allowed
    assert len(result.warnings) == 3
    assert all("spec.distances" in w and "unknown site" in w for w in result.warnings)


def test_without_sites_a_destination_matches_nothing():
    (body,) = yaml.safe_load_all((ROOT / "policies/replication/raw-to-in2p3.yaml").read_text())
    result = review(body, [])
    assert not result.allowed
    assert "matches no RSE declared in sites/" in result.refusals[0]

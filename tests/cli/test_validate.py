"""`steward validate`: exact messages and positions on the broken corpus, exit codes, JSON."""

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from steward.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
BROKEN = sorted((ROOT / "tests" / "data" / "broken").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _validate(*args):
    return CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)


def test_repository_policies_and_sites_are_valid():
    result = _validate()
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "0 problems" in result.stderr


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_file_gives_exact_message_and_exit_1(path):
    relative = path.relative_to(ROOT)
    expected = path.with_suffix(".expected").read_text().splitlines()
    result = _validate("sites", str(relative))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if re.match(r"^\S+:\d+:\d+: ", line)]
    assert lines == expected


def test_every_broken_file_has_expectations():
    assert len(BROKEN) >= 15
    for path in BROKEN:
        assert path.with_suffix(".expected").read_text().strip(), path


def test_all_problems_are_reported_not_only_the_first():
    result = _validate("sites", *[str(p.relative_to(ROOT)) for p in BROKEN])
    expected = sum(len(p.with_suffix(".expected").read_text().splitlines()) for p in BROKEN)
    printed = [line for line in result.output.splitlines() if re.match(r"^\S+:\d+:\d+: ", line)]
    assert result.exit_code == 1
    assert len(printed) >= expected


def test_json_format():
    path = "tests/data/broken/bad-duration-7-days.yaml"
    result = _validate("sites", path, "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert problem == {
        "path": path,
        "line": 15,
        "column": 13,
        "kind": "ReplicationRule",
        "name": "latiss-raw-at-base",
        "message": problem["message"],
    }
    assert problem["message"].startswith("spec.lifetime: invalid duration '7 days'")


def test_single_policy_file_is_checked_against_sites(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "steward.lsst.io/v1alpha1",
                "kind": "ReplicationRule",
                "metadata": {"name": "to-tape", "namespace": "steward"},
                "spec": {
                    "selector": {"dids": ["raw:a"]},
                    "destination": "site=NCSA&type=TAPE",
                    "copies": 2,
                },
            }
        )
    )
    result = _validate(str(policy))
    assert result.exit_code == 1
    assert "copies requested but destination 'site=NCSA&type=TAPE' matches only 1 RSE" in (
        result.output
    )


def test_validation_changes_nothing():
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "policies").rglob("*")}
    _validate()
    assert before == {p: p.stat().st_mtime_ns for p in (ROOT / "policies").rglob("*")}


def test_missing_path_is_a_usage_error():
    result = CliRunner().invoke(cli, ["validate", "does/not/exist.yaml"])
    assert result.exit_code == 2
    assert "does/not/exist.yaml" in result.output


def test_two_rules_needing_one_rucio_rule_are_refused(tmp_path):
    documents = [
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": "steward"},
            "spec": {"selector": {"dids": dids}, "destination": destination},
        }
        for name, dids, destination in [
            ("first", ["raw:a", "raw:b"], "site=NCSA&type=TAPE"),
            ("second", ["raw:b"], "type=TAPE&site=NCSA"),
            ("third", ["raw:b"], "site=IN2P3&type=TAPE"),
        ]
    ]
    policy = tmp_path / "rules.yaml"
    policy.write_text(yaml.safe_dump_all(documents))
    result = _validate(str(policy))
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if "Rucio keeps one rule" in line]
    assert len(lines) == 1
    assert (
        "ReplicationRule/second: spec.selector: selects data that ReplicationRule/first"
        in (lines[0])
    )

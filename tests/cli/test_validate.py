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
        "field": "spec.lifetime",
        "severity": "error",
        "message": problem["message"],
    }
    assert report["warnings"] == []
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


# Bad input never crashes -----------------------------------------------------------------

LINE = re.compile(r"^(?P<path>\S+):(?P<line>\d+):(?P<column>\d+): (?P<rest>.*)$")

RULE_HEAD = """\
apiVersion: steward.lsst.io/v1alpha1
kind: ReplicationRule
metadata:
  name: {name}
  namespace: steward
spec:
  selector:
    dids: ["raw:{name}"]
"""

CRASHERS = {
    "null-destination": ("  destination: null\n", 9, "got null"),
    "list-destination": ("  destination: [NCSA_TAPE]\n", 9, "got a list"),
    "huge-duration": (
        "  destination: NCSA_TAPE\n  lifetime: 99999999999999999999d\n",
        10,
        "longer than 1000 years",
    ),
    "impossible-date": (
        "  destination: NCSA_TAPE\n  notBefore: 2026-02-30T00:00:00Z\n",
        10,
        "day is out of range for month",
    ),
    "zone-directory": (
        (
            "  destination: NCSA_TAPE\n  transferWindow:\n    start: '08:00'\n    end: '09:00'\n"
            "    timezone: America\n"
        ),
        13,
        "a region of the zone database",
    ),
    "control-character": ("  destination: NCSA_TAPE\n  activity: a\x01b\n", 10, "U+0001"),
    "deep-parentheses": (
        "  destination: " + "(" * 200 + "NCSA_TAPE" + ")" * 200 + "\n",
        9,
        "nest deeper than 50 levels",
    ),
    "recursive-alias": ("  destination: NCSA_TAPE\n  x: &x [*x]\n", 10, "contains it"),
}


def _write_crashers(directory):
    for name, (tail, _, _) in CRASHERS.items():
        (directory / f"{name}.yaml").write_text(RULE_HEAD.format(name=name) + tail)
    (directory / "invalid-utf8.yaml").write_bytes(
        RULE_HEAD.format(name="invalid-utf8").encode() + b"  destination: NCSA_T\xffAPE\n"
    )
    (directory / "symlink-to-zero.yaml").symlink_to("/dev/zero")


def test_inputs_that_crashed_become_located_problems_of_their_own_file(tmp_path):
    _write_crashers(tmp_path)
    result = _validate("sites", str(tmp_path))
    assert result.exit_code == 1
    lines = [LINE.match(line) for line in result.stdout.splitlines()]
    assert all(lines), result.stdout
    by_file = {Path(m["path"]).stem: (int(m["line"]), m["rest"]) for m in lines if m}
    for name, (_, line, fragment) in CRASHERS.items():
        assert by_file[name][0] == line, (name, by_file[name])
        assert fragment in by_file[name][1], (name, by_file[name])
    assert by_file["invalid-utf8"] == (
        9,
        "invalid YAML: not UTF-8 text: byte 0xFF (invalid start byte); save the file as UTF-8",
    )
    assert "not a regular file" in by_file["symlink-to-zero"][1]
    assert "Traceback" not in result.output


def test_json_output_of_crashing_inputs_is_valid(tmp_path):
    _write_crashers(tmp_path)
    result = _validate("sites", str(tmp_path), "--format", "json")
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert {Path(p["path"]).stem for p in report["problems"]} == {
        *CRASHERS,
        "invalid-utf8",
        "symlink-to-zero",
    }
    assert all(p["line"] >= 1 and p["column"] >= 1 for p in report["problems"])


# Never more lenient than the API server --------------------------------------------------


def _one(tmp_path, text, *extra):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    result = _validate("sites", str(path), *extra)
    return result, [line for line in result.stdout.splitlines() if LINE.match(line)]


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("  copies: '2'\n", "spec.copies: expected an integer, got the string '2' (write it"),
        (
            "  copies: yes\n",
            (
                "spec.copies: expected an integer, got the boolean true (YAML reads the unquoted "
                "yes as the boolean true)"
            ),
        ),
        ("  copies: .nan\n", "spec.copies: expected an integer, got NaN (not a number)"),
        ("  priority: 9223372036854775808\n", "spec.priority: 9223372036854775808 does not fit"),
        ("  locked: 'true'\n", "spec.locked: expected true or false, got the string 'true'"),
        ("  notBefore: 1700000000\n", "spec.notBefore: expected an RFC 3339 time"),
    ],
)
def test_types_are_as_strict_as_the_crd(tmp_path, tail, message):
    text = RULE_HEAD.format(name="strict") + "  destination: NCSA_TAPE\n" + tail
    result, lines = _one(tmp_path, text)
    assert result.exit_code == 1
    assert len(lines) == 1
    assert lines[0].endswith(message) or message in lines[0], lines[0]
    assert ":10:" in lines[0]


@pytest.mark.parametrize(
    ("metadata", "line", "message"),
    [
        (
            "  name: m\n  namepsace: steward\n",
            5,
            "metadata: unknown field 'namepsace' (did you mean 'namespace'?)",
        ),
        ("  name: rule-\n  namespace: steward\n", 4, "'rule-' does not match"),
        ("  name: m\n  namespace: Steward_NS\n", 5, "namespace 'Steward_NS' is not a DNS label"),
        ("  name: m\n  namespace: s\n  labels:\n    team: data ops\n", 7, "label value 'data ops'"),
        ("  name: m\n  namespace: s\n  generation: 1e30\n", 6, "expected an integer"),
        (
            "  name: r\u0430w\n  namespace: s\n",
            4,
            "character 2 is '\u0430' (U+0430 CYRILLIC SMALL LETTER A), not ASCII",
        ),
    ],
)
def test_kubernetes_metadata_is_checked(tmp_path, metadata, line, message):
    head = RULE_HEAD.split("metadata:\n", maxsplit=1)[0] + "metadata:\n" + metadata
    text = head + "spec:\n  selector:\n    dids: [raw:a]\n  destination: NCSA_TAPE\n"
    result, lines = _one(tmp_path, text)
    assert result.exit_code == 1
    assert len(lines) == 1, lines
    assert f":{line}:" in lines[0]
    assert message in lines[0], lines[0]


# Data safety -----------------------------------------------------------------------------

RETENTION = """\
apiVersion: steward.lsst.io/v1alpha1
kind: RetentionPolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    scope: raw
    match:
      instrument: LATISS
  {age}
  action: Delete
"""


def test_zero_durations_are_refused(tmp_path):
    text = RETENTION.format(name="zero", namespace="steward", age="maxAge: 0s")
    result, lines = _one(tmp_path, text)
    assert result.exit_code == 1
    assert lines == [
        (
            f"{tmp_path}/policy.yaml:11:11: RetentionPolicy/zero: spec.maxAge: '0s' is not a "
            "positive duration; give a length such as 7d"
        )
    ]


def test_lifetime_ending_before_not_before_is_refused(tmp_path):
    text = (
        RULE_HEAD.format(name="embargo")
        + "  destination: NCSA_TAPE\n  lifetime: 30d\n  notBefore: 2999-01-01T00:00:00Z\n"
    )
    result, lines = _one(tmp_path, text)
    assert result.exit_code == 1
    assert len(lines) == 1
    assert (
        ":10:13: ReplicationRule/embargo: spec.lifetime: 30d from now ends before notBefore"
        in (lines[0])
    )


def test_retention_is_checked_against_rules_in_every_namespace(tmp_path):
    rule = (
        RULE_HEAD.format(name="keep-latiss").replace("namespace: steward", "namespace: archive")
        + "  destination: NCSA_TAPE\n"
    ).replace('dids: ["raw:keep-latiss"]', "scope: raw\n    match: {instrument: LATISS}")
    policy = RETENTION.format(name="cleanup", namespace="scratch", age="lifetime: 30d")
    result, lines = _one(tmp_path, rule + "---\n" + policy, "--reference", str(tmp_path))
    assert result.exit_code == 1
    assert lines == [
        (
            f"{tmp_path}/policy.yaml:18:3: RetentionPolicy/cleanup: spec.selector: would expire "
            f"data that ReplicationRule/keep-latiss ({tmp_path}/policy.yaml:4) keeps without "
            "lifetime; narrow the selector or give the rule a lifetime"
        )
    ]
    alone, lines = _one(tmp_path, policy)
    assert alone.exit_code == 1
    assert "would expire data that ReplicationRule/raw-to-in2p3 (policies/" in lines[0]
    assert "(and 1 other rule) keeps without lifetime" in lines[0]


def test_failed_campaign_retention_must_name_a_campaign_that_exists():
    path = ROOT / "policies" / "retention" / "failed-drp-pilot-w10.yaml"
    assert _validate(str(path.relative_to(ROOT))).exit_code == 0
    result = _validate(str(path.relative_to(ROOT)), "--reference", "sites")
    assert result.exit_code == 1
    assert "spec.campaign: Campaign/drp-pilot-w10 does not exist in namespace steward" in (
        result.stdout
    )


def test_empty_and_comment_only_files_are_warnings(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# Use case: 17\n# nothing yet\n")
    result = _validate("sites", str(tmp_path))
    assert result.exit_code == 0
    assert sorted(result.stdout.splitlines()) == [
        (
            f"{tmp_path}/comments.yaml:1:1: warning: no resources in this file (it is empty or "
            "only comments)"
        ),
        (
            f"{tmp_path}/empty.yaml:1:1: warning: no resources in this file (it is empty or only "
            "comments)"
        ),
    ]
    report = json.loads(_validate("sites", str(tmp_path), "--format", "json").stdout)
    assert report["ok"] is True
    assert [w["severity"] for w in report["warnings"]] == ["warning", "warning"]


# Messages at the right place -------------------------------------------------------------


def test_errors_inside_a_merge_point_at_the_merge(tmp_path):
    campaign = (ROOT / "policies" / "campaigns" / "drp-pilot-w10.yaml").read_text()
    steps = campaign[campaign.index("  steps:\n") : campaign.index("  coverage:\n")]
    merged = (
        "  steps:\n    - &step\n      name: step1\n      pipeline: DRP.yaml#step1\n"
        "      parallelism: lots\n    - <<: *step\n      name: step2\n"
    )
    text = campaign.replace(steps, merged).replace("name: drp-pilot-w10", "name: merged")
    _result, lines = _one(tmp_path, text)
    start = text[: text.index("- <<: *step")].count("\n") + 1
    assert [line.split(": ", 1)[0].split(":", 1)[1] for line in lines] == [
        f"{start - 1}:20",
        f"{start}:7",
    ]
    assert all("parallelism: expected an integer, got the string 'lots'" in x for x in lines)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "match: {archive: no}",
            "",
            (
                "spec.selector.match.archive: expected a string, got the boolean false; YAML reads "
                'the unquoted no as the boolean false: quote it ("no") for the text'
            ),
        ),
        (
            "match: {run: 0x1F}",
            "",
            (
                "spec.selector.match.run: expected a string, got the number 31; YAML reads the "
                'unquoted 0x1F as the number 31: quote it ("0x1F") for the text'
            ),
        ),
    ],
)
def test_yaml_11_values_where_text_is_expected_get_a_quoting_hint(tmp_path, field, value, message):
    text = RULE_HEAD.format(name="hint").replace(
        '    dids: ["raw:hint"]', f"    scope: raw\n    {field}{value}"
    )
    result, lines = _one(tmp_path, text + "  destination: NCSA_TAPE\n")
    assert result.exit_code == 1
    assert len(lines) == 1
    assert lines[0].endswith(message), lines[0]


def test_nan_is_not_a_number_not_out_of_range(tmp_path):
    text = (ROOT / "policies" / "oods" / "base-oods.yaml").read_text()
    result, lines = _one(tmp_path, text.replace("name: base-oods", "name: nan-oods") + "")
    assert result.exit_code == 0
    nan = text.replace("name: base-oods", "name: nan-oods").replace(
        "highWatermark: 0.9", "highWatermark: .nan"
    )
    result, lines = _one(tmp_path, nan)
    assert [line.split(": ", 2)[2] for line in lines] == [
        "spec.highWatermark: expected a number, got NaN (not a number)"
    ]

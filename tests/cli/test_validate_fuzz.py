"""Property: no mutation of a valid policy or site file makes ``steward validate`` crash.

Random mutations of the repository's own policies/ and sites/ files (values swapped for other
types, values out of range, keys renamed or removed, bytes flipped, documents truncated) must
always end in a clean pass or in problems that each name the file, a line and a column, and the
``--format json`` output must always be valid JSON of the documented shape. No problem may be
the crash guard's "internal error": the guard keeps validate running, but each one is a bug.
"""

import json
import math
import re
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steward.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("policies/**/*.yaml"), *ROOT.glob("sites/*.yaml")])
TEXTS = [path.read_bytes() for path in FILES]

ODD_VALUES = [
    None,
    True,
    False,
    "yes",
    "on",
    0,
    -1,
    2**63,
    2**64 + 1,
    1.5,
    math.nan,
    math.inf,
    [],
    {},
    [[[]]],
    "",
    "x" * 5000,
    "0s",
    "99999999999999d",
    "2026-02-30T00:00:00Z",
    "2026-12-01",
    "America",
    "(" * 80 + "A" + ")" * 80,
    "site=IN2\u04203",
    "NCSA_TAPE|" * 700 + "A",
    "a\u200bb",
    "\x07",
    "-",
    "*",
]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _structural(data, draw):
    """Change one node of one document: another type, a renamed key, a removed key."""
    documents = [d for d in yaml.safe_load_all(data) if isinstance(d, dict | list) and d]
    if not documents:
        raise ValueError(data)
    index = draw(st.integers(0, len(documents) - 1))
    paths = [p for p in _paths(documents[index]) if p]
    path = draw(st.sampled_from(paths))
    parent = documents[index]
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["value", "rename", "remove"]))
    if action == "value" or isinstance(parent, list):
        parent[path[-1]] = draw(st.sampled_from(ODD_VALUES))
    elif action == "rename":
        value = parent.pop(path[-1])
        new = draw(st.sampled_from([f"{path[-1]}x", str(path[-1]).upper(), "namepsace", "<<"]))
        parent[new] = value
    else:
        del parent[path[-1]]
    return yaml.safe_dump_all(documents, allow_unicode=True).encode()


def _bytes(data, draw):
    """Flip, insert or cut bytes."""
    action = draw(st.sampled_from(["flip", "insert", "truncate"]))
    if not data:
        return bytes([draw(st.integers(0, 255))])
    position = draw(st.integers(0, len(data) - 1))
    if action == "truncate":
        return data[:position]
    byte = bytes([draw(st.integers(0, 255))])
    if action == "insert":
        return data[:position] + byte + data[position:]
    return data[:position] + byte + data[position + 1 :]


@st.composite
def mutated(draw):
    data = TEXTS[draw(st.integers(0, len(TEXTS) - 1))]
    for _ in range(draw(st.integers(1, 3))):
        mutate = draw(st.sampled_from([_structural, _bytes]))
        try:
            data = mutate(data, draw)
        except (yaml.YAMLError, UnicodeDecodeError, ValueError, IndexError):
            data = _bytes(data, draw)
    return data


LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<column>\d+): \S")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated())
def test_mutated_files_never_crash_validate(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mutated.yaml"
    path.write_bytes(data)
    runner = CliRunner()
    args = ["validate", "--sites", str(ROOT / "sites"), str(path)]
    text = runner.invoke(cli, args, catch_exceptions=False)
    assert text.exit_code in {0, 1}, text.output
    for line in text.stdout.splitlines():
        match = LINE.match(line)
        assert match, line
        assert match["path"] == str(path)
        assert int(match["line"]) >= 1
        assert int(match["column"]) >= 1
    report = json.loads(runner.invoke(cli, [*args, "--format", "json"]).stdout)
    assert set(report) == {"ok", "files", "resources", "problems", "warnings"}
    assert report["ok"] is (text.exit_code == 0)
    assert report["ok"] is (report["problems"] == [])
    for problem in report["problems"] + report["warnings"]:
        assert problem["path"] == str(path)
        assert problem["line"] >= 1
        assert problem["column"] >= 1
        assert problem["severity"] in {"error", "warning"}
        assert problem["message"]
        assert "internal error" not in problem["message"], problem

import math
import os
import re
from pathlib import Path

import pytest

from steward.storage.yamlfile import (
    MAX_FILE_BYTES,
    Position,
    YAMLLoadError,
    load_documents,
    load_text,
)

P = Path("p.yaml")


def test_positions_of_nested_values():
    text = "kind: Campaign\nspec:\n  steps:\n    - name: a\n      dependsOn: [b, c]\n"
    (document,) = load_text(P, text)
    assert document.position(("spec", "steps", 0, "dependsOn", 1)) == Position(5, 22)
    assert document.position(("spec", "steps", 0, "name")) == Position(4, 7)
    assert document.position(("spec", "missing", 3)) == Position(2, 1)
    assert document.kind == "Campaign"
    assert document.name is None


def test_multi_document_files_keep_their_indices():
    text = "---\nkind: A\n---\n---\nkind: B\nmetadata: {name: b}\n"
    documents = list(load_text(P, text))
    assert [(d.index, d.kind, d.name) for d in documents] == [(0, "A", None), (2, "B", "b")]
    assert documents[1].position(("metadata", "name")) == Position(6, 12)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("a: 1\n b: 2\n", Position(2, 3), "mapping values are not allowed"),
        ("a: [1, 2\n", Position(2, 1), "expected ',' or ']'"),
        ("a: 1\na: 2\n", Position(2, 1), "duplicate key 'a' (first at line 1)"),
        ("x: !!python/object/apply:os.system [ls]\n", Position(1, 4), "not allowed"),
        ("x: !Ref thing\n", Position(1, 4), "not allowed"),
        ("x: *nothing\n", Position(1, 4), "undefined alias"),
    ],
)
def test_refusals_name_the_position(text, position, fragment):
    with pytest.raises(YAMLLoadError) as info:
        list(load_text(P, text))
    assert info.value.position == position
    assert fragment in info.value.message


def test_alias_bomb_is_refused():
    # 9**10 strings once expanded: refused while loading, without building them (the time it
    # takes is measured by bench/timings.py, not asserted here).
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    with pytest.raises(YAMLLoadError, match="alias bomb"):
        list(load_text(P, "\n".join(lines)))


def test_modest_aliases_are_fine():
    (document,) = load_text(P, "base: &b {x: 1}\nother: *b\n")
    assert document.data["other"] == {"x": 1}


def test_huge_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(YAMLLoadError, match="larger than"):
        load_documents(path)


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(YAMLLoadError, match="not UTF-8"):
        load_documents(path)


# Reading: anything a path can point at ends as a located error ----------------------------


def test_control_character_is_named_with_its_line_and_column():
    with pytest.raises(YAMLLoadError) as info:
        list(load_text(P, "a: 1\nb: x\x01y\n"))
    assert info.value.position == Position(2, 5)
    assert "U+0001" in info.value.message


def test_byte_order_mark_only_at_the_start():
    (document,) = load_text(P, "\ufeffa: 1\n")
    assert document.data == {"a": 1}
    with pytest.raises(YAMLLoadError, match="U\\+FEFF") as info:
        list(load_text(P, "a: 1\nb: \ufeff\n"))
    assert info.value.position == Position(2, 4)


def test_invalid_utf8_is_reported_at_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("kind: Site\nmetadata:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(YAMLLoadError, match="not UTF-8 text: byte 0xE9") as info:
        load_documents(path)
    assert info.value.position == Position(3, 12)


def test_a_symlink_to_an_endless_device_is_refused(tmp_path):
    path = tmp_path / "zero.yaml"
    path.symlink_to("/dev/zero")
    with pytest.raises(YAMLLoadError, match="not a regular file"):
        load_documents(path)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    with pytest.raises(YAMLLoadError, match="not a regular file"):
        load_documents(path)


def test_a_large_plain_file_is_not_an_alias_bomb():
    text = "items: [" + ",".join(str(i % 10) for i in range(250_000)) + "]\n"
    assert len(text) < MAX_FILE_BYTES
    (document,) = load_text(P, text)
    assert len(document.data["items"]) == 250_000


def test_aliases_are_counted_by_what_they_add():
    anchor = "a: &a [" + ", ".join(["x"] * 1000) + "]\n"
    (fine,) = load_text(P, anchor + "b: [" + ", ".join(["*a"] * 99) + "]\n")
    assert len(fine.data["b"]) == 99
    with pytest.raises(YAMLLoadError, match="aliases add 101,101 nodes") as info:
        list(load_text(P, anchor + "b: [" + ", ".join(["*a"] * 101) + "]\n"))
    assert info.value.position == Position(2, 5)


def test_an_alias_inside_its_own_anchor_is_refused():
    with pytest.raises(YAMLLoadError, match="refers to a node that contains it") as info:
        list(load_text(P, "a: &a\n  b: *a\n"))
    assert info.value.position == Position(2, 6)


def test_deep_nesting_is_a_located_error():
    with pytest.raises(YAMLLoadError, match="nesting depth"):
        list(load_text(P, "a: " + "[" * 5000 + "]" * 5000))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: !!binary aGVsbG8=\n", "tag !!binary is not allowed"),
        ("a: !!set {x}\n", "tag !!set is not allowed"),
        ("a: !!int three\n", "cannot read 'three' as !!int"),
        ("? [a, b]\n: 1\n", "a mapping key must be a plain value"),
        ("~: 1\n", "a mapping key must not be null"),
        ("a: 1\n<<: 2\n", "a merge (<<) needs a mapping"),
    ],
)
def test_unsupported_yaml_is_a_located_error(text, fragment):
    with pytest.raises(YAMLLoadError, match=re.escape(fragment)):
        list(load_text(P, text))


# Scalars as Kubernetes (go-yaml v2 through sigs.k8s.io/yaml) reads them ------------------------


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("yes", True),
        ("y", True),
        ("On", True),
        ("n", False),
        ("OFF", False),
        ("true", True),
        ("~", None),
        ("", None),
        ("2026-11-01", "2026-11-01"),
        ("2026-02-30T00:00:00Z", "2026-02-30T00:00:00Z"),
        ("22:00", "22:00"),
        ("0x1F", 31),
        ("0o17", 15),
        ("010", 8),
        ("08", 8.0),
        ("1_000", 1000),
        ("-0b101", -5),
        ("1e3", 1000.0),
        ("9223372036854775808", 2**63),
        ("99999999999999999999", 1e20),
        ("1e400", "1e400"),
        (".5", 0.5),
        ("+.inf", math.inf),
        ("=", "="),
        ('"yes"', "yes"),
        ("!!str 10", "10"),
        ("!!float 3", 3.0),
    ],
)
def test_plain_scalars_resolve_as_kubernetes_reads_them(scalar, value):
    (document,) = load_text(P, f"v: {scalar}\n")
    assert document.data["v"] == value
    assert type(document.data["v"]) is type(value)


def test_keys_become_the_text_kubernetes_sends_with_a_warning():
    (document,) = load_text(P, "match:\n  on: raw\n  1: one\n  'off': quoted\n")
    assert document.data["match"] == {"true": "raw", "1": "one", "off": "quoted"}
    assert document.warnings == [
        (
            Position(2, 3),
            (
                "the unquoted key on is read as 'true' (YAML 1.1, as Kubernetes reads it); quote "
                "it if you mean 'on'"
            ),
        )
    ]


# Positions ---------------------------------------------------------------------------------

MERGED = """\
defaults: &defaults
  copies: 2
  lifetime: 7 days
rule:
  name: a
  <<: *defaults
  priority: 9
other:
  inner: *defaults
"""


def test_values_from_a_merge_are_located_at_the_merge():
    (document,) = load_text(P, MERGED)
    assert document.data["rule"] == {"name": "a", "copies": 2, "lifetime": "7 days", "priority": 9}
    assert document.position(("rule", "lifetime"), value=True) == Position(6, 3)
    assert document.position(("rule", "priority"), value=True) == Position(7, 13)
    assert document.position(("other", "inner", "lifetime"), value=True) == Position(9, 10)
    assert document.position(("defaults", "lifetime"), value=True) == Position(3, 13)


def test_merge_order_follows_the_document_as_go_yaml_does():
    text = "a: &a {p: 1, q: 1}\nb: {p: 2, <<: *a, q: 3}\nc: {<<: [{x: 4}, {x: 5, z: 5}]}\n"
    (document,) = load_text(P, text)
    assert document.data["b"] == {"p": 1, "q": 3}
    assert document.data["c"] == {"x": 4, "z": 5}


def test_source_text_of_a_scalar():
    (document,) = load_text(P, "a:\n  b: on\n  c: 'on'\n")
    assert document.source(("a", "b")) == ("on", True)
    assert document.source(("a", "c")) == ("on", False)
    assert document.source(("a",)) is None

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

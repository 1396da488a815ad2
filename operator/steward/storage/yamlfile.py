"""Load YAML policy files safely, remembering where every value came from.

Errors must name the file, line and column, so each document keeps a map from its JSON path
(``("spec", "steps", 2, "dependsOn", 0)``) to the position of that node. Loading is safe:
only standard tags (a ``!!python/...`` tag is an error), a size cap per file, a cap on the
*expanded* size of aliases (a "billion laughs" bomb is refused before anything walks it), and
duplicate mapping keys are errors rather than the silent last-one-wins of PyYAML.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Document",
    "Position",
    "YAMLLoadError",
    "load_documents",
    "load_text",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest policy file accepted: far above any real policy, far below a memory problem."""

MAX_NODES = 200_000
"""Largest number of YAML nodes one file may expand to once aliases are followed."""

JSONPath = tuple[str | int, ...]

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - libyaml is in every wheel we install
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


class YAMLLoadError(ValueError):
    """A file could not be loaded; carries the position of the problem."""

    def __init__(self, path: Path, position: Position, message: str) -> None:
        super().__init__(f"{path}:{position.line}:{position.column}: {message}")
        self.path = path
        self.position = position
        self.message = message


@dataclass
class Document:
    """One YAML document of a file, with the positions of its nodes."""

    path: Path
    index: int
    data: Any
    positions: dict[JSONPath, Position] = field(default_factory=dict)
    values: dict[JSONPath, Position] = field(default_factory=dict)

    def position(self, path: JSONPath, *, value: bool = False) -> Position:
        """Return where ``path`` is, or its nearest ancestor that exists.

        ``value`` asks for the value of a mapping entry (``7 days`` in ``lifetime: 7 days``)
        rather than its key; a value that is a block collection is reported at its key, where
        a reader looks for it.
        """
        for end in range(len(path), -1, -1):
            prefix = tuple(path[:end])
            found = (value and end == len(path) and self.values.get(prefix)) or self.positions.get(
                prefix
            )
            if found:
                return found
        return Position(1, 1)

    @property
    def kind(self) -> str | None:
        """``kind`` of the document, if it is a mapping with one."""
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        """``metadata.name`` of the document, if any."""
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None


def _mark(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Count nodes as if every alias were copied, memoised so the count itself is cheap."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle counts once instead of recursing forever
    if isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _first_alias(text: str) -> Position | None:
    """Where the first ``*alias`` is: the composed graph no longer knows, the events do."""
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) and event.start_mark is not None:
            return Position(event.start_mark.line + 1, event.start_mark.column + 1)
    return None


def _check_node(path: Path, node: Node, text: str) -> None:
    """Refuse alias bombs, unsafe tags and duplicate keys before constructing anything."""
    size = _expanded_size(node, {})
    if size > MAX_NODES:
        raise YAMLLoadError(
            path,
            _first_alias(text) or _mark(node),
            f"document expands to {size:,} nodes through aliases (limit {MAX_NODES:,}); "
            "refusing what looks like an alias bomb",
        )
    stack: list[Node] = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.tag.startswith("tag:yaml.org,2002:python/") or current.tag.startswith("!"):
            tag = current.tag.replace("tag:yaml.org,2002:", "!!")
            raise YAMLLoadError(
                path, _mark(current), f"tag {tag} is not allowed in policy files (safe YAML only)"
            )
        if isinstance(current, MappingNode):
            keys: dict[object, Position] = {}
            for key_node, value_node in current.value:
                if isinstance(key_node, ScalarNode):
                    if key_node.value in keys:
                        first = keys[key_node.value]
                        raise YAMLLoadError(
                            path,
                            _mark(key_node),
                            f"duplicate key {key_node.value!r} (first at line {first.line})",
                        )
                    keys[key_node.value] = _mark(key_node)
                stack.extend((key_node, value_node))
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)


def _positions(node: Node) -> tuple[dict[JSONPath, Position], dict[JSONPath, Position]]:
    """Map every JSON path of a document to its key's position and its scalar value's."""
    keys: dict[JSONPath, Position] = {(): _mark(node)}
    values: dict[JSONPath, Position] = {}
    stack: list[tuple[JSONPath, Node]] = [((), node)]
    while stack:
        prefix, current = stack.pop()
        if isinstance(current, MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, ScalarNode):
                    child = (*prefix, key_node.value)
                    keys[child] = _mark(key_node)
                    if isinstance(value_node, ScalarNode) or value_node.flow_style:
                        values[child] = _mark(value_node)
                    stack.append((child, value_node))
        elif isinstance(current, SequenceNode):
            for index, item in enumerate(current.value):
                child = (*prefix, index)
                keys[child] = _mark(item)
                stack.append((child, item))
    return keys, values


def _problem_position(exc: yaml.MarkedYAMLError) -> Position:
    mark = exc.problem_mark or exc.context_mark
    return Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)


def load_text(path: Path, text: str) -> Iterator[Document]:
    """Yield the documents of ``text`` (read from ``path``), checked and with positions.

    Raises
    ------
    YAMLLoadError
        On a syntax error, a forbidden tag, a duplicate key or an alias bomb.
    """
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise YAMLLoadError(
            path, Position(1, 1), f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB"
        )
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            _check_node(path, node, text)
            try:
                data = loader.construct_document(node)
            except yaml.constructor.ConstructorError as exc:
                raise YAMLLoadError(path, _problem_position(exc), str(exc.problem)) from None
            if data is not None:
                keys, values = _positions(node)
                yield Document(path, index, data, keys, values)
            index += 1
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise YAMLLoadError(path, _problem_position(exc), problem) from None
    finally:
        loader.dispose()


def load_documents(path: Path) -> list[Document]:
    """Read ``path`` and return its documents.

    Raises
    ------
    YAMLLoadError
        As :func:`load_text`, or when the file is not UTF-8 text.
    """
    if path.stat().st_size > MAX_FILE_BYTES:
        raise YAMLLoadError(
            path, Position(1, 1), f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLLoadError(path, Position(1, 1), f"not UTF-8 text: {exc.reason}") from None
    return list(load_text(path, text))

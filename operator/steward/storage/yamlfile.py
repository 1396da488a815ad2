"""Load YAML policy files safely, as Kubernetes reads them, remembering where every value is.

Errors must name the file, line and column, so each document keeps its composed node graph and
finds the position of any JSON path (``("spec", "steps", 2, "dependsOn", 0)``) in it. Anything a
user can put in a file ends as a :class:`YAMLLoadError` with a position, never as another
exception:

- Reading: only regular files (a symlink to ``/dev/zero`` or a FIFO would never end), read
  through a bounded ``read`` (``stat()`` is not trusted: ``/proc`` files report size 0), and
  strict UTF-8, with the line and column of the first invalid byte.
- Characters YAML forbids (control characters, a byte-order mark inside the text) are found
  before the parser sees them and named by code point, with their line and column.
- Only standard tags: ``!!python/...``, local ``!tags`` and the like are errors.
- Duplicate mapping keys are errors rather than the silent last-one-wins of PyYAML and go-yaml.
- Aliases may add at most :data:`MAX_ALIAS_NODES` nodes to a document, so a "billion laughs"
  bomb is refused before anything walks it; a large file without aliases is only limited by
  :data:`MAX_FILE_BYTES`. An alias to a node that contains it is an error.
- Nesting depth is bounded by libyaml (1,000 levels), and construction walks the node graph with
  its own stack, never Python recursion.

Plain scalars are resolved the way Kubernetes' YAML library (go-yaml v2, through
sigs.k8s.io/yaml, used by kubectl and the API server) resolves them, not as PyYAML does, so that
``steward validate``, ``steward apply`` and ``kubectl apply`` read one file the same way:
``y``/``n``/``yes``/``no``/``on``/``off`` are booleans; timestamps stay the text written
(``2026-11-01`` is a string where a string is expected, a time where a time is expected);
there are no base-60 numbers (``22:00`` is a string); ``1e3`` is a float; mapping keys that are
booleans or numbers become their text (``on:`` is the key ``"true"``, with a warning). Merge
keys (``<<``) apply in document order, as go-yaml applies them, and a value that came from a
merge or an alias is reported at the merge or alias, where the reader of the file sees it.
"""

from __future__ import annotations

import gc
import math
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from steward.models.text import describe_character, shorten

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_FILE_BYTES",
    "Document",
    "JSONPath",
    "Position",
    "YAMLLoadError",
    "collector_paused",
    "load_documents",
    "load_text",
    "read_text",
]

MAX_FILE_BYTES = 2 * 1024 * 1024
"""Largest policy file accepted. Kubernetes cannot store an object larger than about 1.5 MiB
(etcd's default request limit), so a larger file is either several resources, which belong in
several files, or a mistake; the cap also bounds the time one file may take to check."""

MAX_ALIAS_NODES = 100_000
"""Most nodes aliases may add to one document (a node reached through an alias counts once more
each time): far above any real use of anchors, far below what makes validation slow."""

JSONPath = tuple[str | int, ...]

_PLAIN = "tag:steward.lsst.io,2026:plain"
"""Private tag the loader gives every plain scalar, so they can be resolved as go-yaml does."""

_STANDARD = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = f"{_STANDARD}str", f"{_STANDARD}map", f"{_STANDARD}seq"
_SCALAR_TAGS = {f"{_STANDARD}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MERGE_TAG = f"{_STANDARD}merge"
_ALLOWED_TAGS: dict[type[Node], set[str]] = {
    ScalarNode: _SCALAR_TAGS | {_PLAIN, _MERGE_TAG},
    MappingNode: {_MAP},
    SequenceNode: {_SEQ},
}

_BOOLEANS = {
    **dict.fromkeys(
        ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True
    ),
    **dict.fromkeys(
        ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False
    ),
}
_NULL_VALUES: dict[str, None] = dict.fromkeys(("", "~", "null", "Null", "NULL"))
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_WORDS: dict[str, object] = {**_BOOLEANS, **_NULL_VALUES, **_SPECIAL_FLOATS}
_NOT_A_WORD = object()
_LONGEST_UINT64 = len(str(2**64 - 1))
"""Decimal numbers with fewer digits are integers whatever they are."""
_GO_INTEGER = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_UINT64_MAX = 2**64 - 1
_GO_EXPONENT = 1e21
"""Where Go's ``%g`` formatting of a float key switches to an exponent."""
_INT64_MIN = -(2**63)

_FORBIDDEN_CHARACTER = re.compile(
    "[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
"""Characters outside YAML's printable set (and a byte-order mark anywhere but the start)."""


class _Loader(yaml.CSafeLoader):
    """libyaml's parser and composer; every plain scalar tagged for :func:`_resolve_plain`."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:  # noqa: ARG002 - PyYAML's signature
        """Tag untagged nodes: plain scalars ``_PLAIN`` (resolved later, as go-yaml does)."""
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _MAP if kind is MappingNode else _SEQ


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


class _Entry(NamedTuple):
    """One key of a constructed mapping (or one item of a sequence).

    The key's node (the item itself for a sequence), the value's node, and where the value came
    from when that is not the key (the ``<<`` of a merge, or an alias). Positions are computed
    only when a problem asks for one.
    """

    key: Node
    value: Node
    via: Position | None


@dataclass
class Document:
    """One YAML document of a file, with what is needed to locate any of its values.

    ``root`` is None for a document that did not come from YAML (a body from the API server,
    checked by the admission webhook); it then has no positions, and ``path`` only names where
    it came from.
    """

    path: Path
    index: int
    data: Any
    root: Node | None = None
    warnings: list[tuple[Position, str]] = field(default_factory=list)
    _entries: dict[int, dict[str, _Entry]] = field(default_factory=dict, repr=False)
    _aliases: dict[tuple[int, int], Position] = field(default_factory=dict, repr=False)

    def position(self, path: JSONPath, *, value: bool = False) -> Position:
        """Return where ``path`` is, or its nearest ancestor that exists.

        ``value`` asks for the value of a mapping entry (``7 days`` in ``lifetime: 7 days``)
        rather than its key; a value that is a block collection is reported at its key, where
        a reader looks for it. A value that came through a merge or an alias is reported at
        the ``<<`` or the alias. A document without YAML (see :attr:`located`) is all at 1:1.
        """
        if self.root is None:
            return Position(1, 1)
        node, here, via = self.root, _mark(self.root), None
        for depth, part in enumerate(path):
            step = self._child(node, part)
            if step is None:
                break
            here, node = _mark(step.key), step.value
            via = via or step.via
            last = depth == len(path) - 1
            if (
                last
                and value
                and (isinstance(node, ScalarNode) or getattr(node, "flow_style", False))
            ):
                here = _mark(node)
        return via or here

    def source(self, path: JSONPath) -> tuple[str, bool] | None:
        """The text of the scalar at ``path`` as written, and whether it was plain (unquoted)."""
        node = self.root
        for part in path:
            step = None if node is None else self._child(node, part)
            if step is None:
                return None
            node = step.value
        if not isinstance(node, ScalarNode):
            return None
        return node.value, node.tag == _PLAIN

    def _child(self, node: Node, part: str | int) -> _Entry | None:
        if isinstance(node, MappingNode) and isinstance(part, str):
            return self._entries_of(node).get(part)
        if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            item = node.value[part]
            return _Entry(item, item, self._aliases.get((id(node), part)))
        return None

    def _entries_of(self, node: MappingNode) -> dict[str, _Entry]:
        """The keys of a mapping as the loader built them, computed when first asked for.

        The node graph is already known to be valid (the loader raised otherwise), so this
        repeats the loader's reading of keys and merges without its checks.
        """
        entries = self._entries.get(id(node))
        if entries is None:
            entries = {}
            for index, (key_node, value_node) in enumerate(node.value):
                if _is_merge(key_node):
                    for source in _merged_sources(value_node):
                        if isinstance(source, MappingNode):
                            for key, entry in self._entries_of(source).items():
                                entries[key] = entry._replace(via=_mark(key_node))
                    continue
                text = _key_text(_scalar(key_node)) if isinstance(key_node, ScalarNode) else None
                if text is not None:
                    via = self._aliases.get((id(node), 2 * index + 1))
                    entries[text] = _Entry(key_node, value_node, via)
            self._entries[id(node)] = entries
        return entries

    @property
    def located(self) -> bool:
        """Whether the document came from YAML text, so that its positions mean something."""
        return self.root is not None

    @property
    def start(self) -> Position:
        """Where the document begins (1:1 for one without YAML)."""
        return _mark(self.root) if self.root is not None else Position(1, 1)

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


# Scalars -----------------------------------------------------------------------------------


def _go_number(text: str) -> int | float | None:
    """The number go-yaml v2 reads from a plain scalar starting with a digit or sign, or None.

    As ``resolve`` in go-yaml's resolve.go: underscores are dropped; Go's ``ParseInt`` with
    base 0 (``0x``, ``0o``, ``0b``, and a leading ``0`` meaning octal); then ``ParseUint``;
    then a float of YAML's float syntax if it is finite (``1e400`` stays a string).
    """
    plain = text.replace("_", "")
    match = _GO_INTEGER.fullmatch(plain)
    if match:
        sign, digits = match.groups()
        prefix = digits[:2].lower()
        base = {"0x": 16, "0o": 8, "0b": 2}.get(prefix)
        if base is None:
            number = int(digits, 8) if digits.startswith("0") and len(digits) > 1 else int(digits)
        else:
            number = int(digits[2:], base)
        number = -number if sign == "-" else number
        if _INT64_MIN <= number <= _UINT64_MAX:
            return number
    if _GO_FLOAT.fullmatch(plain):
        number_float = float(plain)
        if math.isfinite(number_float):
            return number_float
    return None


def _resolve_plain(text: str) -> object:
    """Resolve a plain scalar as go-yaml v2 does into an ``interface{}``."""
    word = _WORDS.get(text, _NOT_A_WORD)
    if word is not _NOT_A_WORD:
        return word
    first = text[0]
    if first in "123456789" and text.isascii() and text.isdigit():
        number = int(text) if len(text) < _LONGEST_UINT64 else _go_number(text)
        return text if number is None else number
    if first in "+-0123456789":
        number = _go_number(text)
    elif first == ".":
        try:
            number = float(text)
        except ValueError:
            number = None
    else:
        return text
    return text if number is None or not math.isfinite(number) else number


def _key_text(value: object) -> str | None:
    """A mapping key as sigs.k8s.io/yaml turns it into a JSON object key (None: unsupported)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, float):
        return None
    if not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return str(int(value)) if value.is_integer() and abs(value) < _GO_EXPONENT else repr(value)


_EXPLICIT_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "null": (type(None),),
}


def _scalar(node: ScalarNode) -> object:
    """The value of a scalar node with an allowed tag (see ``_Builder.check_tag``).

    Raises
    ------
    ValueError
        When an explicit tag (``!!int three``) does not fit the text.
    """
    text: str = node.value
    if node.tag in {_STR, f"{_STANDARD}timestamp"}:
        return text
    value = _resolve_plain(text)
    wanted = node.tag.removeprefix(_STANDARD)
    if wanted in _EXPLICIT_TYPES and (
        not isinstance(value, _EXPLICIT_TYPES[wanted])
        or (wanted != "bool" and isinstance(value, bool))
    ):
        msg = f"cannot read {shorten(text)} as !!{wanted}"
        raise ValueError(msg)
    return float(value) if wanted == "float" else value  # type: ignore[arg-type]


def _is_merge(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.value == "<<" and node.tag in {_PLAIN, _MERGE_TAG}


def _merged_sources(value: Node) -> list[Node]:
    """The mappings a ``<<`` merges, latest applied last (earlier ones of a list win)."""
    return list(reversed(value.value)) if isinstance(value, SequenceNode) else [value]


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, SequenceNode) else []


# Construction ------------------------------------------------------------------------------


class _Builder:
    """Turns one composed document into Python data, checking it on the way, without recursion.

    Nodes are visited in document order with an explicit stack; a node met a second time was
    reached through an alias, and the n-th such meeting is the n-th alias of the text (anchors
    precede their aliases), which is how an alias's own position is known: the composed graph
    keeps only the anchored node. Each node is constructed once and shared, as aliases share
    it; when there are aliases, :data:`MAX_ALIAS_NODES` bounds what they add.
    """

    def __init__(self, path: Path, document: Document, aliases: _AliasMarks) -> None:
        self.path = path
        self.document = document
        self.alias_marks = aliases
        self.values: dict[int, object] = {}
        self.open: set[int] = set()
        self.first_alias: Position | None = None

    def error(self, position: Position, message: str) -> YAMLLoadError:
        return YAMLLoadError(self.path, position, message)

    def build(self, root: Node) -> object:
        values, open_nodes = self.values, self.open
        stack: list[tuple[Node, int | None, int]] = [(root, 0, 0)]
        while stack:
            node, parent, index = stack.pop()
            key = id(node)
            if parent is None:
                self.finish(node)
                open_nodes.discard(key)
                continue
            if key in values or key in open_nodes:
                self.alias(node, parent, index)
                continue
            if type(node) is ScalarNode:
                values[key] = self.scalar(node)
                continue
            self.check_tag(node)
            if type(node) is MappingNode:
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value
            if all(type(child) is ScalarNode for child in children):
                self.leaves(node, children)
                continue
            open_nodes.add(key)
            stack.append((node, None, 0))
            stack.extend((children[i], key, i) for i in range(len(children) - 1, -1, -1))
        if self.first_alias is not None:
            self.check_expansion(root)
        return values[id(root)]

    def leaves(self, node: Node, children: list[ScalarNode]) -> None:
        """Construct a collection of scalars at once (most collections are), in order."""
        values = self.values
        for index, child in enumerate(children):
            if id(child) in values:
                self.alias(child, id(node), index)
            else:
                values[id(child)] = self.scalar(child)
        self.finish(node)

    def check_expansion(self, root: Node) -> None:
        """Refuse a document whose aliases add more than :data:`MAX_ALIAS_NODES` nodes.

        Sizes are counted once per distinct node (the graph has no cycle: a recursive alias was
        refused), so counting a bomb costs no more than reading it.
        """
        sizes: dict[int, int] = {}
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in sizes:
                continue
            children = _children(node)
            if ready or not children:
                sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
        added = sizes[id(root)] - len(sizes)
        if added > MAX_ALIAS_NODES:
            raise self.error(
                self.first_alias or _mark(root),
                f"aliases add {added:,} nodes to this document (limit {MAX_ALIAS_NODES:,}); "
                "refusing what looks like an alias bomb",
            )

    def alias(self, node: Node, parent: int, index: int) -> None:
        position = self.alias_marks.next() or _mark(node)
        self.first_alias = self.first_alias or position
        if id(node) in self.open:
            raise self.error(position, "this alias refers to a node that contains it")
        self.document._aliases[(parent, index)] = position  # noqa: SLF001 - built here

    def check_tag(self, node: Node) -> None:
        if node.tag not in _ALLOWED_TAGS[type(node)]:
            shown = node.tag.replace(_STANDARD, "!!")
            raise self.error(
                _mark(node), f"tag {shown} is not allowed in policy files (safe YAML only)"
            )

    def finish(self, node: Node) -> None:
        """Construct a collection whose children are all constructed."""
        if isinstance(node, SequenceNode):
            self.values[id(node)] = [self.values[id(item)] for item in node.value]
        else:
            assert isinstance(node, MappingNode)  # noqa: S101 - the composer makes only three
            self.values[id(node)] = self.mapping(node)

    def scalar(self, node: ScalarNode) -> object:
        if node.tag is _PLAIN:
            return _resolve_plain(node.value)
        self.check_tag(node)
        try:
            return _scalar(node)
        except ValueError as exc:
            raise self.error(_mark(node), str(exc)) from None

    def mapping(self, node: MappingNode) -> dict[str, object]:
        values = self.values
        data: dict[str, object] = {}
        explicit: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if _is_merge(key_node):
                self.merge(value_node, key_node, data)
                continue
            key = values[id(key_node)]
            if type(key) is not str:
                key = self.key(key_node)
            if key in explicit:
                first = _mark(explicit[key])
                raise self.error(
                    _mark(key_node), f"duplicate key {shorten(key)} (first at line {first.line})"
                )
            explicit[key] = key_node
            data[key] = values[id(value_node)]
        return data

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(
                _mark(node), "a mapping key must be a plain value, not a list or mapping"
            )
        value = self.values[id(node)]
        if type(value) is str:
            return value
        key = _key_text(value)
        if key is None:
            raise self.error(_mark(node), "a mapping key must not be null; quote it")
        if node.tag == _PLAIN and key != node.value:
            message = (
                f"the unquoted key {node.value} is read as {key!r} (YAML 1.1, as Kubernetes "
                f"reads it); quote it if you mean {node.value!r}"
            )
            self.document.warnings.append((_mark(node), message))
        return key

    def merge(self, value: Node, key_node: Node, data: dict[str, object]) -> None:
        """Apply ``<<: *anchor`` (or a list of them) in document order, as go-yaml does."""
        for source in _merged_sources(value):
            if not isinstance(source, MappingNode):
                raise self.error(
                    _mark(key_node), "a merge (<<) needs a mapping or a list of mappings"
                )
            merged = self.values[id(source)]
            assert isinstance(merged, dict)  # noqa: S101 - built from a mapping node
            data.update(merged)


class _AliasMarks:
    """Positions of the ``*alias`` events of a text, in order, parsed only if one is needed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.marks: Iterator[Position] | None = None

    def next(self) -> Position | None:
        if self.marks is None:
            self.marks = (
                Position(event.start_mark.line + 1, event.start_mark.column + 1)
                for event in yaml.parse(self.text, Loader=_Loader)
                if isinstance(event, yaml.AliasEvent) and event.start_mark is not None
            )
        return next(self.marks, None)


# Loading -----------------------------------------------------------------------------------


def _text_position(text: str, index: int) -> Position:
    line_start = text.rfind("\n", 0, index) + 1
    return Position(text.count("\n", 0, index) + 1, index - line_start + 1)


def _check_characters(path: Path, text: str) -> None:
    for match in _FORBIDDEN_CHARACTER.finditer(text):
        if match.start() == 0 and match.group() == "\ufeff":
            continue
        raise YAMLLoadError(
            path,
            _text_position(text, match.start()),
            f"{describe_character(match.group())} is not allowed in YAML; remove it, or write "
            f"it as the escape \\u{ord(match.group()):04X} inside double quotes",
        )


def _problem_position(exc: yaml.MarkedYAMLError) -> Position:
    mark = exc.problem_mark or exc.context_mark
    return Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)


def load_text(path: Path, text: str) -> Iterator[Document]:
    """Yield the documents of ``text`` (read from ``path``), checked and locatable.

    Documents that are empty (``---`` alone) are skipped, but still counted by ``index``.

    Raises
    ------
    YAMLLoadError
        On a forbidden character, a syntax error, a forbidden tag, a duplicate key, a
        recursive alias or an alias bomb.
    """
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise YAMLLoadError(path, Position(1, 1), _too_large())
    _check_characters(path, text)
    loader = _Loader(text)
    aliases = _AliasMarks(text)
    try:
        index = 0
        while loader.check_node():
            with collector_paused():
                node = loader.get_node()
                if node is None:  # pragma: no cover - check_node said there is one
                    break
                document = Document(path, index, None, node)
                document.data = _Builder(path, document, aliases).build(node)
            if document.data is not None:
                yield document
            index += 1
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise YAMLLoadError(path, _problem_position(exc), problem) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "position", None)
        position = _text_position(text, where) if isinstance(where, int) else Position(1, 1)
        raise YAMLLoadError(path, position, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while objects are created in bulk.

    Composing and constructing a large file creates hundreds of thousands of objects without
    cycles (a recursive alias is refused), and validating them creates as many again; the
    collector, triggered by every few hundred new objects, would walk the ones already there
    again and again: a 4 MiB campaign took 2.7 s of CPU to validate with it, 0.1 s without.
    Objects freed meanwhile by reference counting are freed as usual; the collector runs again
    when the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _too_large() -> str:
    return (
        f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB; Kubernetes stores objects of "
        "at most 1.5 MiB: split it, one resource per file"
    )


def read_text(path: Path) -> str:
    """Read a policy file as UTF-8, refusing what is not a regular file of a sane size.

    Raises
    ------
    YAMLLoadError
        When ``path`` is not a regular file (a device, FIFO or socket, perhaps behind a
        symlink), is larger than :data:`MAX_FILE_BYTES` (counted while reading), or is not
        UTF-8 (with the line and column of the first invalid byte).
    OSError
        When it cannot be opened or read.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise YAMLLoadError(
                path,
                Position(1, 1),
                "not a regular file (a device, pipe or socket, perhaps behind a symlink)",
            )
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise YAMLLoadError(path, Position(1, 1), _too_large())
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        position = Position(data.count(b"\n", 0, exc.start) + 1, column)
        raise YAMLLoadError(
            path,
            position,
            f"not UTF-8 text: byte 0x{data[exc.start]:02X} ({exc.reason}); save the file as UTF-8",
        ) from None


def load_documents(path: Path) -> list[Document]:
    """Read ``path`` and return its documents.

    Raises
    ------
    YAMLLoadError
        As :func:`read_text` and :func:`load_text`.
    OSError
        When the file cannot be opened or read.
    """
    return list(load_text(path, read_text(path)))

"""Validation of policy and site files: schema per document, then semantics across files.

Every problem names the file, line and column (from the YAML node marks) and the resource, and
all problems are reported, not only the first, so one run of ``steward validate`` in a policy
repository's CI shows everything to fix. Any input gives problems, never a traceback: each file,
each document and each cross-file check runs under a guard that turns an unexpected exception
into a located problem (and names it a bug), so one bad file never hides the others' problems.

The same checks serve the admission webhook through :func:`check_resource`: one resource body
as the API server sends it, checked against live resources, with field paths instead of lines.

Costs are linear in the input. The checks that compare resources (two rules that would need one
Rucio rule; a retention policy that would expire what a rule keeps forever) look candidates up
in a :class:`_SelectorIndex` instead of comparing every pair, and each RSE expression is
evaluated once.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from steward.constants import API_VERSION
from steward.models import KINDS, kind_info
from steward.models.campaign import Campaign
from steward.models.common import (
    DataSelector,
    LocatedValueError,
    Resource,
    describe_value,
    format_duration,
    names_may_overlap,
)
from steward.models.oods import OODSCache
from steward.models.replication import WEEKDAYS, ReplicationRule, TransferWindow
from steward.models.retention import DataClass, RetentionPolicy
from steward.models.rse_expression import AttributeValue, canonical, evaluate
from steward.models.site import RSEType, Site
from steward.models.text import non_ascii_note, shorten
from steward.storage.yamlfile import (
    Document,
    JSONPath,
    Position,
    YAMLLoadError,
    collector_paused,
    load_documents,
)

__all__ = [
    "BODY",
    "PRIVATE_EXCLUSION",
    "Loaded",
    "Problem",
    "Severity",
    "ValidationResult",
    "check_resource",
    "discover",
    "longest_window_wait",
    "validate_paths",
]

PRIVATE_EXCLUSION: Final = MappingProxyType({"private": "true"})
"""The exclusion every export to a DAC carries: data marked ``private=true`` stays home."""

BODY = Path("<body>")
"""The path of a document that came from the API server rather than from a file."""

T = TypeVar("T")


class Severity(StrEnum):
    """Errors fail validation (exit 1, admission refused); warnings are only shown."""

    ERROR = "error"
    WARNING = "warning"


def _one_line(text: str) -> str:
    """Keep a message on one line, whatever a quoted value held."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located in a file, or at a field of a body without a file."""

    path: Path | None
    line: int | None
    column: int | None
    message: str
    kind: str | None = None
    name: str | None = None
    severity: Severity = Severity.ERROR
    field: str | None = None
    """The field, dotted (``spec.copies``), when the problem is about one."""

    def format(self) -> str:
        """``path:line:column: Kind/name: message`` (the parts that are unknown omitted)."""
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:{self.line}:{self.column}")
        if self.kind:
            parts.append(f"{self.kind}/{shorten(self.name)[1:-1]}" if self.name else self.kind)
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        parts.append(prefix + _one_line(self.message))
        return ": ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary for ``--format json``."""
        return {
            "path": None if self.path is None else str(self.path),
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "name": self.name,
            "field": self.field,
            "severity": self.severity.value,
            "message": self.message,
        }


def _dotted(path: JSONPath) -> str:
    return ".".join(str(p) for p in path)


def _located(
    document: Document,
    path: JSONPath,
    message: str,
    *,
    value: bool = True,
    severity: Severity = Severity.ERROR,
    kind: str | None = None,
    name: str | None = None,
) -> Problem:
    pos = document.position(path, value=value) if document.located else None
    return Problem(
        None if pos is None else document.path,
        None if pos is None else pos.line,
        None if pos is None else pos.column,
        message,
        kind or document.kind,
        name or document.name,
        severity,
        _dotted(path) or None,
    )


def _at(document: Document, position: Position, message: str, severity: Severity) -> Problem:
    located = document.located
    return Problem(
        document.path if located else None,
        position.line if located else None,
        position.column if located else None,
        message,
        document.kind,
        document.name,
        severity,
    )


@dataclass(eq=False)
class Loaded:
    """A document that passed schema validation, with its model."""

    document: Document
    resource: Resource

    def problem(self, path: JSONPath, message: str, *, value: bool = True) -> Problem:
        """Return a problem located at ``path`` (its value, or its key) in this document."""
        return _located(
            self.document,
            path,
            message,
            value=value,
            kind=self.resource.kind,
            name=self.resource.metadata.name,
        )

    def where(self, path: JSONPath, *, column: bool = False) -> str:
        """``file:line`` (or ``file:line:column``) of ``path``, to name it in a message."""
        pos = self.document.position(path, value=column)
        if not self.document.located:
            meta = self.resource.metadata
            return f"namespace {meta.namespace}" if meta.namespace else "the cluster"
        return f"{self.document.path}:{pos.line}" + (f":{pos.column}" if column else "")

    @property
    def key(self) -> tuple[str, str | None, str]:
        """Kind, namespace and name: the identity of the resource."""
        meta = self.resource.metadata
        return (self.resource.kind, meta.namespace, meta.name)


@dataclass
class ValidationResult:
    """Everything validate found: the valid resources, the errors and the warnings."""

    resources: list[Loaded]
    problems: list[Problem]
    files: int
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether there is nothing to fix (warnings do not count)."""
        return not self.problems


def discover(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their ``*.yaml`` / ``*.yml`` files, sorted, without repeats.

    A ``*.yaml`` that is not a directory is kept even if it is not a regular file (a symlink to
    a device): loading it reports the problem instead of skipping it in silence.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*"), key=lambda p: p.parts):
                if child.suffix in {".yaml", ".yml"} and not child.is_dir():
                    found[child] = None
        else:
            found[path] = None
    return list(found)


# Schema ------------------------------------------------------------------------------------


def _field_names(model: type[BaseModel], loc: JSONPath) -> list[str]:
    """Wire names of the fields the model allows at ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        found = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part), None
        )
        if found is None:
            return []
        current = next(iter(_models_in(found.annotation)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


_SUGGESTED_LENGTH = 100
"""Longer words are not compared for "did you mean": they are not typos."""


def _suggest(word: str, choices: Iterable[str]) -> str:
    if len(word) > _SUGGESTED_LENGTH:
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_WANTS_TEXT = {"string_type", "enum", "literal_error"}
"""Pydantic error types where the field wanted text (a string, one of some words)."""


def _yaml_note(document: Document, loc: JSONPath, value: object, *, wants_text: bool) -> str:
    """Explain what YAML made of an unquoted value, when that is not what the field wants.

    ``on``, ``no``, ``y``, ``~`` and ``0x10`` are not text to YAML 1.1 (as Kubernetes reads
    it): a reader who meant the word needs to be told to quote it.
    """
    source = document.source(loc)
    if source is None or not source[1] or isinstance(value, str):
        return ""
    text, _ = source
    read = describe_value(value)
    if wants_text:
        return f'; YAML reads the unquoted {text} as {read}: quote it ("{text}") for the text'
    return f" (YAML reads the unquoted {text} as {read})" if _surprising(text, value) else ""


def _surprising(text: str, value: object) -> bool:
    """Whether YAML's reading of ``text`` differs from what it plainly says."""
    if isinstance(value, bool):
        return text.lower() not in {"true", "false"}
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, int | float):
        return text not in {repr(value), str(value)}
    return value is None and text != "null"


def _error_message(document: Document, error: ErrorDetails, loc: JSONPath) -> str:
    """The message for one pydantic error about a value."""
    kind = error["type"]
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        message = f"{shorten(str(value))} does not match {pattern}{non_ascii_note(str(value))}"
    elif kind == "string_type":
        message = f"expected a string, got {describe_value(value)}"
    elif kind in {"model_type", "dict_type"}:
        message = f"expected a mapping, got {describe_value(value)}"
    elif kind == "list_type":
        message = f"expected a list, got {describe_value(value)}"
    elif kind in _WANTS_TEXT and not isinstance(value, str):
        message = f"{message}, got {describe_value(value)}"
    return message + _yaml_note(document, loc, value, wants_text=kind in _WANTS_TEXT)


def _schema_problems(
    document: Document, model: type[BaseModel], exc: ValidationError
) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc: JSONPath = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, LocatedValueError):
            loc = (*loc, *cause.path)
        field = _dotted(loc)
        if error["type"] == "extra_forbidden":
            field = _dotted(loc[:-1])
            name = str(loc[-1])
            message = f"unknown field {shorten(name)}" + _suggest(
                name, _field_names(model, loc[:-1])
            )
            at_value = False
        elif error["type"] == "missing":
            field = _dotted(loc[:-1])
            message = f"required field {loc[-1]!r} is missing"
            at_value = False
        else:
            message, at_value = _error_message(document, error, loc), True
        text = f"{field}: {message}" if field else message
        problems.append(_located(document, loc, text, value=at_value))
    return problems


def _load(document: Document) -> Loaded | list[Problem]:
    data = document.data
    if not isinstance(data, dict):
        return [_located(document, (), "a document must be a mapping with apiVersion and kind")]
    if data.get("apiVersion") != API_VERSION:
        version = data.get("apiVersion")
        shown = shorten(version) if isinstance(version, str) else describe_value(version)
        return [
            _located(
                document,
                ("apiVersion",),
                f"apiVersion is {shown}; Steward resources use {API_VERSION!r}",
            )
        ]
    kind = data.get("kind")
    try:
        info = kind_info(kind if isinstance(kind, str) else "")
    except KeyError:
        known = ", ".join(k.kind for k in KINDS)
        shown = shorten(kind) if isinstance(kind, str) else describe_value(kind)
        return [_located(document, ("kind",), f"unknown kind {shown}; expected one of {known}")]
    try:
        resource = info.model.model_validate(data)
    except ValidationError as exc:
        return _schema_problems(document, info.model, exc)
    if info.scope == "Cluster" and resource.metadata.namespace:
        return [
            _located(
                document,
                ("metadata", "namespace"),
                f"{info.kind} is cluster-scoped; remove metadata.namespace",
                value=False,
            )
        ]
    return Loaded(document, resource)


def _bug(document: Document, exc: Exception) -> Problem:
    """A problem for an exception no check expected: a bug, reported rather than raised."""
    return _at(
        document,
        document.start,
        f"internal error while checking this document ({type(exc).__name__}: "
        f"{shorten(str(exc))}); this is a bug in Steward, please report it",
        Severity.ERROR,
    )


def _guarded(document: Document, check: Callable[[], list[Problem]]) -> list[Problem]:
    """Run ``check``; an unexpected exception becomes a problem located at the document."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - any failure must become a problem, not a crash
        return [_bug(document, exc)]


def _load_guarded(document: Document) -> Loaded | list[Problem]:
    try:
        return _load(document)
    except Exception as exc:  # noqa: BLE001 - any failure must become a problem, not a crash
        return [_bug(document, exc)]


# Cross-file checks -------------------------------------------------------------------------


class _Facility:
    """What sites/ declares: sites by name and RSE attributes by RSE name."""

    def __init__(self, sites: Sequence[Loaded]) -> None:
        self.sites: dict[str, Site] = {}
        self.rses: dict[str, dict[str, AttributeValue]] = {}
        self.rse_types: dict[str, RSEType] = {}
        self.rse_site: dict[str, str] = {}
        self.matches: dict[str, frozenset[str]] = {}
        for loaded in sites:
            site = loaded.resource
            assert isinstance(site, Site)  # noqa: S101 - filtered by kind above
            self.sites[site.metadata.name] = site
            for rse in site.spec.rses:
                self.rses[rse.name] = rse.effective_attributes(site.spec.facility)
                self.rse_types[rse.name] = rse.type
                self.rse_site[rse.name] = site.metadata.name

    def match(self, expression: str) -> frozenset[str]:
        """The RSEs ``expression`` selects, evaluated once per expression."""
        if expression not in self.matches:
            self.matches[expression] = evaluate(expression, self.rses)
        return self.matches[expression]


def longest_window_wait(window: TransferWindow) -> timedelta:
    """Longest time a transfer may wait for the window to open (the largest closed gap)."""
    start_h, start_m = (int(p) for p in window.start.split(":"))
    length = timedelta(hours=window.length_hours())
    openings = sorted(
        timedelta(days=WEEKDAYS.index(day), hours=start_h, minutes=start_m) for day in window.days
    )
    week = timedelta(days=7)
    gaps = [
        (openings[(i + 1) % len(openings)] - opening) % week or week
        for i, opening in enumerate(openings)
    ]
    return max(gaps) - length


_Filter = tuple[int, dict[str, str], str | None, T]
"""An indexed filter: its order, metadata match, name pattern and item."""


class _SelectorIndex(Generic[T]):
    """Items by selector, to find those whose selectors may select the same DID.

    Two selectors may overlap, judged from the files alone, when explicit lists share a DID, or
    filters search the same scope, agree on every metadata key they both name and have name
    patterns some name matches both of (a list against a filter cannot be judged without
    Rucio, so it is left to ``steward plan``).
    Filters are grouped by scope and by the set of keys they name; a query projects itself on
    the keys it shares with each group and looks the projection up, so a query costs the
    number of groups, not the number of items.
    """

    def __init__(self) -> None:
        self.count = 0
        self.by_did: dict[str, list[tuple[int, T]]] = {}
        self.filters: dict[str | None, dict[frozenset[str], list[_Filter[T]]]]
        self.filters = {}
        self.projections: dict[
            tuple[str | None, frozenset[str], frozenset[str]], dict[tuple[str, ...], list[int]]
        ] = {}

    def add(self, selector: DataSelector, item: T) -> None:
        """Index ``item`` under ``selector``."""
        order = self.count
        self.count += 1
        if selector.dids is not None:
            for did in dict.fromkeys(selector.dids):
                self.by_did.setdefault(did, []).append((order, item))
            return
        match = selector.match or {}
        keys = frozenset(match)
        group = self.filters.setdefault(selector.scope, {}).setdefault(keys, [])
        group.append((order, match, selector.name, item))
        for (scope, group_keys, shared), index in self.projections.items():
            if scope == selector.scope and group_keys == keys:
                index.setdefault(_project(match, shared), []).append(len(group) - 1)

    def overlapping(self, selector: DataSelector) -> list[T]:
        """Items whose selectors may overlap ``selector``, in the order they were added."""
        found: list[tuple[int, T]] = []
        if selector.dids is not None:
            seen: set[int] = set()
            for did in dict.fromkeys(selector.dids):
                for order, item in self.by_did.get(did, []):
                    if order not in seen:
                        seen.add(order)
                        found.append((order, item))
        else:
            match = selector.match or {}
            for keys, group in self.filters.get(selector.scope, {}).items():
                shared = keys & frozenset(match)
                index = self.projection(selector.scope, keys, shared, group)
                for position in index.get(_project(match, shared), []):
                    order, _, name, item = group[position]
                    if names_may_overlap(selector.name, name):
                        found.append((order, item))
        return [item for _, item in sorted(found, key=lambda pair: pair[0])]

    def projection(
        self,
        scope: str | None,
        keys: frozenset[str],
        shared: frozenset[str],
        group: list[_Filter[T]],
    ) -> dict[tuple[str, ...], list[int]]:
        """The group's filters by their values on the ``shared`` keys, built once."""
        cache_key = (scope, keys, shared)
        if cache_key not in self.projections:
            index: dict[tuple[str, ...], list[int]] = {}
            for position, (_, match, _, _) in enumerate(group):
                index.setdefault(_project(match, shared), []).append(position)
            self.projections[cache_key] = index
        return self.projections[cache_key]


def _project(match: Mapping[str, str], keys: frozenset[str]) -> tuple[str, ...]:
    return tuple(match[k] for k in sorted(keys))


class _CrossChecks:
    """Checks that need more than one document.

    ``loaded`` are the resources being validated; problems are reported for them only.
    ``context`` are resources they may refer to or conflict with (the facility's Sites when
    ``loaded`` has none, the policies of the repository, or the live objects of the cluster
    for the webhook): Rucio's data is global, so a retention policy is checked against rules in
    every namespace. The facility is every Site of both, a loaded one replacing a context one
    of the same name; a loaded Site declaring an RSE a context Site declares is reported.
    ``complete`` names the kinds of which ``loaded`` and ``context`` hold every object (None:
    all kinds); a check that a named object exists runs only for those kinds.
    """

    def __init__(
        self,
        loaded: Sequence[Loaded],
        context: Sequence[Loaded],
        now: datetime,
        complete: Collection[str] | None = None,
    ) -> None:
        self.loaded = loaded
        self.complete = complete
        self.context = context
        self.everything = [*context, *loaded]
        self.validated = {id(x) for x in loaded}
        self.facility = _Facility([x for x in self.everything if isinstance(x.resource, Site)])
        self.now = now
        self.problems: list[Problem] = []
        self.campaigns = {
            (x.resource.metadata.namespace, x.resource.metadata.name)
            for x in self.everything
            if isinstance(x.resource, Campaign)
        }

    def run(self) -> list[Problem]:
        checks = (
            self.duplicates,
            self.rse_names,
            self.shared_rules,
            self.kept_forever,
            self.private_exports,
            self.catch_up_shares,
        )
        for check in checks:
            self.problems.extend(self.guard(self.loaded[0].document, check) if self.loaded else [])
        per_kind: dict[type, Callable[[Loaded, Any], None]] = {
            Site: self.site,
            ReplicationRule: self.replication,
            RetentionPolicy: self.retention,
            OODSCache: self.oods,
            Campaign: self.campaign,
        }
        for item in self.loaded:
            by_kind = per_kind.get(type(item.resource))
            if by_kind is not None:
                self.problems.extend(
                    self.guard(item.document, partial(by_kind, item, item.resource))
                )
        return self.problems

    def guard(self, document: Document, check: Callable[[], None]) -> list[Problem]:
        """Run a check that appends to ``self.problems``; turn a crash into a problem."""

        def run() -> list[Problem]:
            check()
            return []

        return _guarded(document, run)

    def duplicates(self) -> None:
        seen: dict[tuple[str, str | None, str], Loaded] = {}
        for item in self.everything:
            first = seen.setdefault(item.key, item)
            if first is not item and id(item) in self.validated:
                self.problems.append(
                    item.problem(
                        ("metadata", "name"),
                        f"duplicate name: {item.resource.kind}/{item.resource.metadata.name} "
                        f"is already defined at {first.where(('metadata', 'name'), column=True)}",
                    )
                )

    def rse_names(self) -> None:
        owner: dict[str, str] = {}
        for item in self.everything:
            if not isinstance(item.resource, Site):
                continue
            for index, rse in enumerate(item.resource.spec.rses):
                other = owner.setdefault(rse.name, item.resource.metadata.name)
                if other != item.resource.metadata.name and id(item) in self.validated:
                    self.problems.append(
                        item.problem(
                            ("spec", "rses", index, "name"),
                            f"RSE {rse.name!r} is also declared by Site/{other}; "
                            "RSE names are global in Rucio",
                        )
                    )

    def knows(self, kind: str) -> bool:
        """Whether every object of ``kind`` is known, so that a missing one is a problem."""
        return self.complete is None or kind in self.complete

    def expression(self, item: Loaded, path: JSONPath, expression: str) -> frozenset[str]:
        matched = self.facility.match(expression)
        if not matched and self.knows("Site"):
            self.problems.append(
                item.problem(
                    path,
                    f"{_dotted(path)}: RSE expression {shorten(expression)} matches "
                    "no RSE declared in sites/",
                )
            )
        return matched

    def known_site(self, item: Loaded, path: JSONPath, site: str) -> bool:
        if site in self.facility.sites or not self.knows("Site"):
            return site in self.facility.sites
        known = ", ".join(sorted(self.facility.sites)) or "none"
        self.problems.append(
            item.problem(
                path,
                f"{_dotted(path)}: unknown site {site!r}"
                f"{_suggest(site, self.facility.sites)} (sites: {known})",
            )
        )
        return False

    def site(self, item: Loaded, site: Site) -> None:
        for index, distance in enumerate(site.spec.distances):
            self.known_site(item, ("spec", "distances", index, "site"), distance.site)

    def shared_rules(self) -> None:
        """Refuse two rules that would need one Rucio rule.

        Rucio keeps one rule per (DID, account, expression, copies), so the second resource
        could never own its placement. Each rule is reported once, against the first earlier
        rule it clashes with.
        """
        groups: dict[tuple[str, int], _SelectorIndex[Loaded]] = {}
        for item in self.everything:
            rule = item.resource
            if not isinstance(rule, ReplicationRule):
                continue
            spec = rule.spec
            index = groups.setdefault((canonical(spec.destination), spec.copies), _SelectorIndex())
            earlier = index.overlapping(spec.selector)
            if earlier and id(item) in self.validated:
                first = earlier[0]
                self.problems.append(
                    item.problem(
                        ("spec", "selector"),
                        f"spec.selector: selects data that ReplicationRule/"
                        f"{first.resource.metadata.name} ({first.where(('spec', 'selector'))}) "
                        "also places at the same destination with the same copies; Rucio keeps "
                        "one rule for both, so merge them or change copies or destination",
                        value=False,
                    )
                )
            index.add(spec.selector, item)

    def kept_forever(self) -> None:
        """Refuse a retention policy that would expire data a rule keeps without lifetime.

        Rucio's data is global: the rule may be in any namespace.
        """
        rules: _SelectorIndex[Loaded] = _SelectorIndex()
        for other in [*self.loaded, *self.context]:
            rule = other.resource
            if isinstance(rule, ReplicationRule) and rule.spec.lifetime is None:
                rules.add(rule.spec.selector, other)
        for item in self.loaded:
            policy = item.resource
            if not isinstance(policy, RetentionPolicy):
                continue
            spec = policy.spec
            where = self.facility.match(spec.rses) if spec.rses else None
            if where is not None and not where:
                continue
            kept = [
                other
                for other in rules.overlapping(spec.selector)
                if where is None or where & self.facility.match(other.resource.spec.destination)  # type: ignore[attr-defined]
            ]
            if kept:
                first = kept[0]
                others = len(kept) - 1
                more = f" (and {others} other rule{'s' if others > 1 else ''})" if others else ""
                self.problems.append(
                    item.problem(
                        ("spec", "selector"),
                        value=False,
                        message=f"spec.selector: would expire data that ReplicationRule/"
                        f"{first.resource.metadata.name} ({first.where(('metadata', 'name'))})"
                        f"{more} keeps without lifetime; narrow the selector or give the rule a "
                        "lifetime",
                    )
                )

    def private_exports(self) -> None:
        """Refuse an export to a DAC that does not exclude data marked private.

        LDM-230 2.4.3.1.3: information that is private "needs to be blocked on export". An
        export is any ReplicationRule whose destination can place data on storage a Data
        Access Center serves from (an RSE with the ``dac`` attribute in sites/), whatever the
        policy's intent, so naming the RSE instead of the attribute does not get around it.
        Its selector must exclude `PRIVATE_EXCLUSION`; an explicit DID list cannot (exclusions
        apply to metadata filters), so an export selects by metadata.
        """
        for item in self.loaded:
            rule = item.resource
            if not isinstance(rule, ReplicationRule):
                continue
            dac = sorted(
                name
                for name in self.facility.match(rule.spec.destination)
                if self.facility.rses[name].get("dac") is True
            )
            if not dac or dict(PRIVATE_EXCLUSION) in rule.spec.selector.exclude:
                continue
            how = (
                'add `exclude: [{private: "true"}]` to the selector'
                if rule.spec.selector.dids is None
                else 'select by metadata (match) and exclude private: "true"'
            )
            self.problems.append(
                item.problem(
                    ("spec", "selector"),
                    f"spec.selector: exports to DAC storage ({', '.join(dac)}) without "
                    f"excluding data marked private; {how} (LDM-230 2.4.3.1.3)",
                    value=False,
                )
            )

    def catch_up_shares(self) -> None:
        """Refuse two ReplicationRules owning one transfer limit (``catchUp.transfers``).

        The limit is Rucio's, keyed by destination expression and activity: two owners would
        set it in turn, one raising it for its catch-up while the other puts it back.
        """
        owners: dict[tuple[str, str], Loaded] = {}
        for item in self.everything:
            rule = item.resource
            if not isinstance(rule, ReplicationRule) or rule.spec.catch_up is None:
                continue
            if rule.spec.catch_up.transfers is None:
                continue
            key = (canonical(rule.spec.destination), rule.spec.activity)
            first = owners.setdefault(key, item)
            if first is not item and id(item) in self.validated:
                self.problems.append(
                    item.problem(
                        ("spec", "catchUp"),
                        f"spec.catchUp.transfers: the transfer limit of {key[1]} into "
                        f"{key[0]} is already owned by ReplicationRule/"
                        f"{first.resource.metadata.name} at "
                        f"{first.where(('spec', 'catchUp'), column=True)}; declare it once",
                    )
                )

    def replication(self, item: Loaded, rule: ReplicationRule) -> None:
        spec = rule.spec
        matched = self.expression(item, ("spec", "destination"), spec.destination)
        if matched and spec.copies > len(matched):
            self.problems.append(
                item.problem(
                    ("spec", "copies"),
                    f"spec.copies: {spec.copies} copies requested but destination "
                    f"{shorten(spec.destination)} matches only {len(matched)} RSE(s): "
                    f"{', '.join(sorted(matched))}",
                )
            )
        if spec.source_preference:
            self.expression(item, ("spec", "sourcePreference"), spec.source_preference)
        not_custodial = sorted(
            name for name in matched if self.facility.rses[name].get("custodial") is not True
        )
        if spec.publish and not_custodial:
            self.problems.append(
                item.problem(
                    ("spec", "destination"),
                    f"spec.destination: publish waits for a custodial copy (004 data sweeps), but "
                    f"{', '.join(not_custodial)} is not custodial",
                )
            )
        if spec.lifetime is not None:
            self.lifetime(item, rule)

    def lifetime(self, item: Loaded, rule: ReplicationRule) -> None:
        """Refuse a lifetime that could end before any transfer may start."""
        spec = rule.spec
        assert spec.lifetime is not None  # noqa: S101 - checked by the caller
        if spec.transfer_window is not None:
            wait = longest_window_wait(spec.transfer_window)
            if spec.lifetime <= wait:
                self.problems.append(
                    item.problem(
                        ("spec", "lifetime"),
                        f"spec.lifetime: {format_duration(spec.lifetime)} is not longer than "
                        f"the longest wait for the transfer window ({format_duration(wait)}); "
                        "the rule could expire before any transfer starts",
                    )
                )
        if spec.not_before is not None and self.now + spec.lifetime <= spec.not_before:
            self.problems.append(
                item.problem(
                    ("spec", "lifetime"),
                    f"spec.lifetime: {format_duration(spec.lifetime)} from now ends before "
                    f"notBefore ({spec.not_before.isoformat()}): a rule that exists before the "
                    "embargo lifts (Steward counts a lifetime from the rule's creation) would "
                    "expire before any transfer starts; lengthen the lifetime",
                )
            )

    def retention(self, item: Loaded, policy: RetentionPolicy) -> None:
        spec = policy.spec
        if spec.rses:
            self.expression(item, ("spec", "rses"), spec.rses)
        namespace = policy.metadata.namespace
        if (
            spec.data_class is DataClass.FAILED_CAMPAIGN_OUTPUTS
            and spec.campaign is not None
            and (namespace, spec.campaign) not in self.campaigns
            and self.knows("Campaign")
        ):
            names = [name for ns, name in self.campaigns if ns == namespace]
            self.problems.append(
                item.problem(
                    ("spec", "campaign"),
                    f"spec.campaign: Campaign/{spec.campaign} does not exist in namespace "
                    f"{namespace}{_suggest(spec.campaign, names)}; a failed campaign's outputs "
                    "are named by the campaign that wrote them",
                )
            )

    def oods(self, item: Loaded, cache: OODSCache) -> None:
        spec = cache.spec
        if not self.known_site(item, ("spec", "site"), spec.site):
            return
        site_of_rse = self.facility.rse_site.get(spec.rse)
        if site_of_rse != spec.site:
            self.problems.append(
                item.problem(
                    ("spec", "rse"),
                    f"spec.rse: RSE {spec.rse!r} is not declared by Site/{spec.site}",
                )
            )
        elif self.facility.rse_types[spec.rse] is not RSEType.CACHE:
            self.problems.append(
                item.problem(
                    ("spec", "rse"),
                    f"spec.rse: RSE {spec.rse!r} is {self.facility.rse_types[spec.rse]}, "
                    "not a CACHE RSE",
                )
            )

    def campaign(self, item: Loaded, campaign: Campaign) -> None:
        spec = campaign.spec
        self.known_site(item, ("spec", "site"), spec.site)
        if spec.inputs.destination:
            self.expression(item, ("spec", "inputs", "destination"), spec.inputs.destination)
        if spec.outputs.archive:
            self.expression(item, ("spec", "outputs", "archive"), spec.outputs.archive)


# Entry points ------------------------------------------------------------------------------


@dataclass
class _Collected:
    loaded: list[Loaded] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def _load_file(path: Path, into: _Collected) -> None:
    try:
        documents = load_documents(path)
    except YAMLLoadError as exc:
        into.problems.append(
            Problem(path, exc.position.line, exc.position.column, f"invalid YAML: {exc.message}")
        )
        return
    except OSError as exc:
        into.problems.append(Problem(path, 1, 1, f"cannot read: {exc.strerror or exc}"))
        return
    if not documents:
        into.warnings.append(
            Problem(
                path,
                1,
                1,
                "no resources in this file (it is empty or only comments)",
                severity=Severity.WARNING,
            )
        )
    for document in documents:
        into.warnings.extend(
            _at(document, position, message, Severity.WARNING)
            for position, message in document.warnings
        )
        result = _load_guarded(document)
        if isinstance(result, Loaded):
            into.loaded.append(result)
        else:
            into.problems.extend(result)


def _load_all(paths: Sequence[Path]) -> _Collected:
    collected = _Collected()
    for path in paths:
        try:
            _load_file(path, collected)
        except Exception as exc:  # noqa: BLE001 - one file's failure must not hide the others
            collected.problems.append(
                Problem(
                    path,
                    1,
                    1,
                    f"internal error while reading this file ({type(exc).__name__}: "
                    f"{shorten(str(exc))}); this is a bug in Steward, please report it",
                )
            )
    return collected


def _sort_key(problem: Problem) -> tuple[str, int, int, str]:
    return (str(problem.path or ""), problem.line or 0, problem.column or 0, problem.message)


def validate_paths(
    paths: Sequence[Path],
    sites_dir: Path | None = None,
    *,
    reference: Sequence[Path] = (),
    now: datetime | None = None,
) -> ValidationResult:
    """Validate every YAML file under ``paths``.

    Parameters
    ----------
    paths
        Files and directories to validate.
    sites_dir
        Where to find the Site declarations when ``paths`` include none (validating a single
        policy file still checks it against the facility's sites).
    reference
        Files and directories of other policies the checks may refer to (the Campaign a
        retention policy names, the rules that keep data forever) when ``paths`` do not
        include them. Their own problems are not reported; files also in ``paths`` are
        skipped.
    now
        The time to judge lifetimes against (default: the current time).
    """
    files = discover(paths)
    with collector_paused():
        collected = _load_all(files)
        context: list[Loaded] = []
        if sites_dir is not None and not any(
            isinstance(x.resource, Site) for x in collected.loaded
        ):
            context.extend(
                x for x in _load_all(discover([sites_dir])).loaded if isinstance(x.resource, Site)
            )
        validated = {path.resolve() for path in files}
        extra = [path for path in discover(reference) if path.resolve() not in validated]
        context.extend(_load_all(extra).loaded)
        checks = _CrossChecks(collected.loaded, context, now or datetime.now(UTC))
        problems = [*collected.problems, *checks.run()]
    return ValidationResult(
        collected.loaded,
        sorted(problems, key=_sort_key),
        len(files),
        sorted(collected.warnings, key=_sort_key),
    )


def check_resource(
    body: Mapping[str, Any],
    context: Iterable[Mapping[str, Any]] = (),
    *,
    complete: Collection[str] = frozenset({"Site"}),
    now: datetime | None = None,
) -> list[Problem]:
    """Check one resource body as ``steward validate`` checks a file, for admission.

    Parameters
    ----------
    body
        The object as the API server sends it (its ``status`` is ignored: it is the
        operator's).
    context
        Live objects the checks may refer to: the Sites (RSE expressions, site names), the
        Campaigns (named by failed-campaign retention policies) and the ReplicationRules (which
        a retention policy must not expire, and which must not need the same Rucio rule). An
        object that does not validate is ignored; the object with ``body``'s own kind,
        namespace and name is ignored too (it is the old version of ``body``).
    complete
        The kinds of which ``context`` holds every object in the cluster. A check that a
        named object exists runs only for these: the Sites (RSE expressions and site names),
        by default; add ``"Campaign"`` to refuse a failed-campaign retention policy naming a
        Campaign that does not exist. Checks that look for conflicts (rules needing one Rucio
        rule, retention expiring what a rule keeps) use whatever ``context`` holds.
    now
        The time to judge lifetimes against (default: the current time).

    Returns
    -------
    list[Problem]
        The errors and warnings, with ``path``, ``line`` and ``column`` None and the message
        led by the field path (``spec.copies: ...``), exactly the messages ``steward validate``
        prints for the same document in a file. Refuse the object if any has severity error.
    """
    document = Document(BODY, 0, {k: v for k, v in body.items() if k != "status"})
    result = _load_guarded(document)
    if not isinstance(result, Loaded):
        return result
    live: list[Loaded] = []
    for other in context:
        loaded = _load_guarded(Document(BODY, 0, {k: v for k, v in other.items() if k != "status"}))
        if isinstance(loaded, Loaded) and loaded.key != result.key:
            live.append(loaded)
    checks = _CrossChecks([result], live, now or datetime.now(UTC), complete)
    return sorted(checks.run(), key=_sort_key)

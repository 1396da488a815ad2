"""Validation of policy and site files: schema per document, then semantics across files.

Every problem names the file, line and column (from the YAML node marks) and the resource, and
all problems are reported, not only the first, so one run of ``steward validate`` in a policy
repository's CI shows everything to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from steward.constants import API_VERSION
from steward.models import KINDS, kind_info
from steward.models.campaign import Campaign
from steward.models.common import DataSelector, LocatedValueError, Resource, format_duration
from steward.models.oods import OODSCache
from steward.models.replication import WEEKDAYS, ReplicationRule, TransferWindow
from steward.models.retention import RetentionPolicy
from steward.models.rse_expression import AttributeValue, canonical, evaluate
from steward.models.site import RSEType, Site
from steward.storage.yamlfile import Document, JSONPath, YAMLLoadError, load_documents

__all__ = [
    "PRIVATE_EXCLUSION",
    "Problem",
    "ValidationResult",
    "discover",
    "longest_window_wait",
    "validate_paths",
]

PRIVATE_EXCLUSION: Final = MappingProxyType({"private": "true"})
"""The exclusion every export to a DAC carries: data marked ``private=true`` stays home."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located in a file."""

    path: Path
    line: int
    column: int
    message: str
    kind: str | None = None
    name: str | None = None

    def format(self) -> str:
        """``path:line:column: Kind/name: message`` (the resource part omitted if unknown)."""
        where = f"{self.path}:{self.line}:{self.column}"
        if self.kind and self.name:
            return f"{where}: {self.kind}/{self.name}: {self.message}"
        if self.kind:
            return f"{where}: {self.kind}: {self.message}"
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary for ``--format json``."""
        return {
            "path": str(self.path),
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "name": self.name,
            "message": self.message,
        }


@dataclass
class Loaded:
    """A document that passed schema validation, with its model."""

    document: Document
    resource: Resource

    def problem(self, path: JSONPath, message: str, *, value: bool = True) -> Problem:
        """Return a problem located at ``path`` (its value, or its key) in this document."""
        pos = self.document.position(path, value=value)
        return Problem(
            self.document.path,
            pos.line,
            pos.column,
            message,
            self.resource.kind,
            self.resource.metadata.name,
        )


@dataclass
class ValidationResult:
    """Everything validate found: the valid resources and the problems."""

    resources: list[Loaded]
    problems: list[Problem]
    files: int

    @property
    def ok(self) -> bool:
        """Whether there is nothing to fix."""
        return not self.problems


def discover(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their ``*.yaml`` / ``*.yml`` files, sorted, without repeats."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix in {".yaml", ".yml"} and child.is_file():
                    found[child] = None
        else:
            found[path] = None
    return list(found)


def _located(document: Document, path: JSONPath, message: str, *, value: bool = True) -> Problem:
    pos = document.position(path, value=value)
    return Problem(document.path, pos.line, pos.column, message, document.kind, document.name)


def _field_names(model: type[BaseModel], loc: JSONPath) -> list[str]:
    """Wire names of the fields the model allows at ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part), None
        )
        if field is None:
            return []
        current = next(iter(_models_in(field.annotation)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_problems(
    document: Document, model: type[BaseModel], exc: ValidationError
) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc: JSONPath = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, LocatedValueError):
            loc = (*loc, *cause.path)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        field = ".".join(str(p) for p in loc)
        at_value = True
        if error["type"] == "extra_forbidden":
            field = ".".join(str(p) for p in loc[:-1])
            message = f"unknown field {loc[-1]!r}" + _suggest(
                str(loc[-1]), _field_names(model, loc[:-1])
            )
            at_value = False
        elif error["type"] == "missing":
            field = ".".join(str(p) for p in loc[:-1])
            message = f"required field {loc[-1]!r} is missing"
            at_value = False
        elif error["type"] == "string_pattern_mismatch":
            pattern = (error.get("ctx") or {}).get("pattern")
            message = f"{error['input']!r} does not match {pattern}"
        text = f"{field}: {message}" if field else message
        problems.append(_located(document, loc, text, value=at_value))
    return problems


def _load(document: Document) -> Loaded | list[Problem]:
    data = document.data
    if not isinstance(data, dict):
        return [_located(document, (), "a document must be a mapping with apiVersion and kind")]
    if data.get("apiVersion") != API_VERSION:
        return [
            _located(
                document,
                ("apiVersion",),
                f"apiVersion is {data.get('apiVersion')!r}; Steward resources use {API_VERSION!r}",
            )
        ]
    kind = data.get("kind")
    try:
        info = kind_info(kind if isinstance(kind, str) else "")
    except KeyError:
        known = ", ".join(k.kind for k in KINDS)
        return [_located(document, ("kind",), f"unknown kind {kind!r}; expected one of {known}")]
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


class _Facility:
    """What sites/ declares: sites by name and RSE attributes by RSE name."""

    def __init__(self, sites: Sequence[Loaded]) -> None:
        self.sites: dict[str, Site] = {}
        self.rses: dict[str, dict[str, AttributeValue]] = {}
        self.rse_types: dict[str, RSEType] = {}
        self.rse_site: dict[str, str] = {}
        for loaded in sites:
            site = loaded.resource
            assert isinstance(site, Site)  # noqa: S101 - filtered by kind above
            self.sites[site.metadata.name] = site
            for rse in site.spec.rses:
                self.rses[rse.name] = rse.effective_attributes(site.spec.facility)
                self.rse_types[rse.name] = rse.type
                self.rse_site[rse.name] = site.metadata.name

    def match(self, expression: str) -> frozenset[str]:
        return evaluate(expression, self.rses)


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


def _may_overlap(a: DataSelector, b: DataSelector) -> bool:
    """Whether two selectors can select the same DID, judged from the files alone.

    Explicit lists overlap when they share a DID; metadata filters overlap when they search the
    same scope and agree on every key they both name. A list against a filter cannot be judged
    without Rucio, so it is left to ``steward plan``.
    """
    if a.dids is not None and b.dids is not None:
        return bool(set(a.dids) & set(b.dids))
    if a.match is not None and b.match is not None:
        if a.scope != b.scope:
            return False
        return all(b.match.get(k, v) == v for k, v in a.match.items())
    return False


class _CrossChecks:
    """Checks that need more than one document."""

    def __init__(self, loaded: Sequence[Loaded], reference_sites: Sequence[Loaded]) -> None:
        self.loaded = loaded
        sites = [x for x in loaded if isinstance(x.resource, Site)] or list(reference_sites)
        self.facility = _Facility(sites)
        self.problems: list[Problem] = []

    def run(self) -> list[Problem]:
        self.duplicates()
        self.rse_names()
        self.shared_rules()
        self.private_exports()
        for item in self.loaded:
            resource = item.resource
            if isinstance(resource, Site):
                self.site(item, resource)
            elif isinstance(resource, ReplicationRule):
                self.replication(item, resource)
            elif isinstance(resource, RetentionPolicy):
                self.retention(item, resource)
            elif isinstance(resource, OODSCache):
                self.oods(item, resource)
            elif isinstance(resource, Campaign):
                self.campaign(item, resource)
        return self.problems

    def duplicates(self) -> None:
        seen: dict[tuple[str, str | None, str], Loaded] = {}
        for item in self.loaded:
            meta = item.resource.metadata
            key = (item.resource.kind, meta.namespace, meta.name)
            if key in seen:
                first = seen[key].document
                pos = first.position(("metadata", "name"), value=True)
                self.problems.append(
                    item.problem(
                        ("metadata", "name"),
                        f"duplicate name: {item.resource.kind}/{meta.name} is already defined "
                        f"at {first.path}:{pos.line}:{pos.column}",
                    )
                )
            else:
                seen[key] = item

    def rse_names(self) -> None:
        owner: dict[str, str] = {}
        for item in self.loaded:
            if not isinstance(item.resource, Site):
                continue
            for index, rse in enumerate(item.resource.spec.rses):
                other = owner.setdefault(rse.name, item.resource.metadata.name)
                if other != item.resource.metadata.name:
                    self.problems.append(
                        item.problem(
                            ("spec", "rses", index, "name"),
                            f"RSE {rse.name!r} is also declared by Site/{other}; "
                            "RSE names are global in Rucio",
                        )
                    )

    def expression(self, item: Loaded, path: JSONPath, expression: str) -> frozenset[str]:
        matched = self.facility.match(expression)
        if not matched:
            self.problems.append(
                item.problem(
                    path,
                    f"{'.'.join(str(p) for p in path)}: RSE expression {expression!r} matches "
                    "no RSE declared in sites/",
                )
            )
        return matched

    def known_site(self, item: Loaded, path: JSONPath, site: str) -> bool:
        if site in self.facility.sites:
            return True
        known = ", ".join(sorted(self.facility.sites)) or "none"
        self.problems.append(
            item.problem(
                path,
                f"{'.'.join(str(p) for p in path)}: unknown site {site!r}"
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
        could never own its placement.
        """
        rules = [(x, x.resource) for x in self.loaded if isinstance(x.resource, ReplicationRule)]
        for index, (item, rule) in enumerate(rules):
            spec = rule.spec
            for earlier, earlier_rule in rules[:index]:
                other = earlier_rule.spec
                if (canonical(spec.destination), spec.copies) != (
                    canonical(other.destination),
                    other.copies,
                ) or not _may_overlap(spec.selector, other.selector):
                    continue
                pos = earlier.document.position(("spec", "selector"))
                self.problems.append(
                    item.problem(
                        ("spec", "selector"),
                        f"spec.selector: selects data that ReplicationRule/"
                        f"{earlier_rule.metadata.name} ({earlier.document.path}:{pos.line}) "
                        "also places at the same destination with the same copies; Rucio keeps "
                        "one rule for both, so merge them or change copies or destination",
                        value=False,
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
                if rule.spec.selector.match is not None
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

    def replication(self, item: Loaded, rule: ReplicationRule) -> None:
        spec = rule.spec
        matched = self.expression(item, ("spec", "destination"), spec.destination)
        if matched and spec.copies > len(matched):
            self.problems.append(
                item.problem(
                    ("spec", "copies"),
                    f"spec.copies: {spec.copies} copies requested but destination "
                    f"{spec.destination!r} matches only {len(matched)} RSE(s): "
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
        if spec.transfer_window is not None and spec.lifetime is not None:
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

    def retention(self, item: Loaded, policy: RetentionPolicy) -> None:
        spec = policy.spec
        where = self.expression(item, ("spec", "rses"), spec.rses) if spec.rses else None
        if spec.rses and not where:
            return
        for other in self.loaded:
            rule = other.resource
            if not isinstance(rule, ReplicationRule) or rule.spec.lifetime is not None:
                continue
            if rule.metadata.namespace != policy.metadata.namespace:
                continue
            if not _may_overlap(spec.selector, rule.spec.selector):
                continue
            destination = self.facility.match(rule.spec.destination)
            if where is not None and not (where & destination):
                continue
            pos = other.document.position(("metadata", "name"))
            self.problems.append(
                item.problem(
                    ("spec", "selector"),
                    value=False,
                    message=f"spec.selector: would expire data that ReplicationRule/"
                    f"{rule.metadata.name} ({other.document.path}:{pos.line}) keeps without "
                    "lifetime; narrow the selector or give the rule a lifetime",
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


def _load_all(paths: Sequence[Path]) -> tuple[list[Loaded], list[Problem]]:
    loaded: list[Loaded] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            documents = load_documents(path)
        except YAMLLoadError as exc:
            problems.append(
                Problem(
                    path, exc.position.line, exc.position.column, f"invalid YAML: {exc.message}"
                )
            )
            continue
        except OSError as exc:
            problems.append(Problem(path, 1, 1, f"cannot read: {exc.strerror}"))
            continue
        for document in documents:
            result = _load(document)
            if isinstance(result, Loaded):
                loaded.append(result)
            else:
                problems.extend(result)
    return loaded, problems


def validate_paths(paths: Sequence[Path], sites_dir: Path | None = None) -> ValidationResult:
    """Validate every YAML file under ``paths``.

    Parameters
    ----------
    paths
        Files and directories to validate.
    sites_dir
        Where to find the Site declarations when ``paths`` include none (validating a single
        policy file still checks it against the facility's sites).
    """
    files = discover(paths)
    loaded, problems = _load_all(files)
    reference: list[Loaded] = []
    if sites_dir is not None and not any(isinstance(x.resource, Site) for x in loaded):
        reference = [x for x in _load_all(discover([sites_dir]))[0] if isinstance(x.resource, Site)]
    problems.extend(_CrossChecks(loaded, reference).run())
    problems.sort(key=lambda p: (str(p.path), p.line, p.column, p.message))
    return ValidationResult(loaded, problems, len(files))

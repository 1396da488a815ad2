"""Types shared by every kind: the base models, strict scalars, durations, sizes, metadata.

Every field carries a docstring: pydantic turns it into the JSON-schema description, and
``steward crds`` puts that into the CRD, so ``kubectl explain`` shows it.

Strict types: never more lenient than the API server
-----------------------------------------------------
``steward validate``, the admission webhook and ``kubectl apply`` must give one verdict for one
document. Pydantic's default ("lax") mode is more lenient than the CRD: it reads ``copies: "2"``
and ``copies: yes`` as integers, ``dryRun: "false"`` as a boolean and ``notBefore: 1700000000``
as a time, all of which the API server refuses. Model-wide ``strict=True`` does not help: in
Python mode it also refuses the strings that enums and times legitimately arrive as. So every
field uses one of the annotated types of this module, whose validator accepts exactly what the
CRD's OpenAPI type accepts and says what it got otherwise:

========================  ==================================================================
use                       instead of
========================  ==================================================================
:data:`Int`               ``int``: integers only (a float with an integral value, as JSON may
                          carry it, too); never a boolean or a string; within int64
:data:`Bool`              ``bool``: ``true`` or ``false`` only
:data:`Number`            ``float``: an integer or a finite float; never NaN or infinity
:data:`Timestamp`         ``datetime``: RFC 3339 with a time zone, as the API server's
                          ``date-time`` format checks it, and a real calendar date
:data:`Duration`          ``timedelta``: ``7d``, ``36h``; positive and at most 1000 years
:data:`ByteSize`          sizes: ``500TiB``; within int64
:data:`RSEExpression`     RSE expressions: parsed, at most Rucio's 3,000 characters
:data:`Name`              resource names: DNS labels starting with a letter
:class:`Metadata`         ``metadata``: every ObjectMeta field, nothing else, each checked as the
                          API server checks it (names, namespaces, label keys and values)
========================  ==================================================================

``str`` needs no wrapper: pydantic never turns a number or a boolean into a string.
Constraints still go on ``Field`` (``copies: Int = Field(default=1, ge=1, le=10)``), and a new
field picks all this up by using these types; ``tests/models/test_strict.py`` fails for any
field declared with a bare ``int``, ``bool``, ``float`` or ``datetime``.

Validators here raise ``ValueError`` only (with :class:`LocatedValueError` to name a field
inside the model): pydantic turns that into a validation error, while any other exception
would escape as a traceback.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .rse_expression import MAX_LENGTH, RSEExpressionError, canonical
from .text import non_ascii_note, shorten

__all__ = [
    "DID",
    "INT64_MAX",
    "INT64_MIN",
    "Bool",
    "ByteSize",
    "CamelModel",
    "Condition",
    "ConditionStatus",
    "DIDType",
    "DataSelector",
    "Duration",
    "Int",
    "LocatedValueError",
    "Metadata",
    "Name",
    "NameWildcard",
    "Number",
    "RSEExpression",
    "Resource",
    "SpecModel",
    "Timestamp",
    "describe_value",
    "format_duration",
    "format_size",
    "name_wildcard_regex",
    "names_may_overlap",
    "parse_duration",
    "parse_size",
    "parse_timestamp",
    "strict_boolean",
    "strict_integer",
    "strict_number",
]

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""Resource names: DNS labels (no trailing ``-``) starting with a letter (repository
convention, stricter than the API server's DNS subdomains)."""

NAME_MAX_LENGTH = 63
"""Longest resource name: a DNS label."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)]
"""A Steward resource name."""


class CamelModel(BaseModel):
    """Base of every model: camelCase on the wire, snake_case in Python, docstrings as docs."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        validate_default=False,
    )


class SpecModel(CamelModel):
    """Base of every spec sub-model: unknown fields are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class LocatedValueError(ValueError):
    """A validation error that knows which field inside the model it is about.

    Model-level validators see the whole model, so pydantic reports their errors at the model;
    ``path`` (wire names, relative to the model) lets ``steward validate`` point at the exact
    line instead.
    """

    def __init__(self, message: str, *path: str | int) -> None:
        super().__init__(message)
        self.path: tuple[str | int, ...] = path


# Strict scalars ----------------------------------------------------------------------------

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_JSON_EXACT_INTEGER = 2**53
"""Largest float the API server still counts as an integer (go-openapi's JSON integer test)."""


def describe_value(value: object) -> str:
    """Say what a value is, the way a reader of the YAML would recognise it."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"the boolean {str(value).lower()}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN (not a number)" if math.isnan(value) else "infinity"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {shorten(value)}"
    return _CONTAINERS.get(type(value), f"a {type(value).__name__}")


_CONTAINERS: dict[type, str] = {list: "a list", dict: "a mapping"}


def _unquote_hint(value: object) -> str:
    return " (write it without quotes)" if isinstance(value, str) else ""


def strict_integer(value: object) -> object:
    """Accept what a CRD ``type: integer`` accepts, within int64."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            msg = f"{value} does not fit in 64 bits (Kubernetes integers are int64)"
            raise ValueError(msg)
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= _JSON_EXACT_INTEGER:
        return int(value)
    msg = f"expected an integer, got {describe_value(value)}{_unquote_hint(value)}"
    raise ValueError(msg)


def strict_boolean(value: object) -> object:
    """Accept only ``true`` and ``false``, as a CRD ``type: boolean`` does."""
    if isinstance(value, bool):
        return value
    msg = f"expected true or false, got {describe_value(value)}{_unquote_hint(value)}"
    raise ValueError(msg)


def strict_number(value: object) -> object:
    """Accept integers and finite floats, as a CRD ``type: number`` does (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"expected a number, got {describe_value(value)}{_unquote_hint(value)}"
        raise ValueError(msg)
    return value


Int = Annotated[int, BeforeValidator(strict_integer)]
"""An integer as the API server accepts it: no booleans, no strings, within int64."""

Bool = Annotated[bool, BeforeValidator(strict_boolean)]
"""A boolean: ``true`` or ``false``, never a string or a number."""

Number = Annotated[float, BeforeValidator(strict_number)]
"""A finite number; never a string, a boolean, NaN or infinity."""

_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]"
    r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_NO_ZONE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.]+)?$")
_EXAMPLE_TIME = "2026-12-01T08:00:00Z"


def parse_timestamp(value: object) -> datetime:
    """Parse an RFC 3339 time with a time zone, as the API server's ``date-time`` format does.

    A date without a time, a time without a zone, or an impossible date (February 30) is an
    error saying so, never an exception of another type.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            msg = f"{value.isoformat()} needs a time zone"
            raise ValueError(msg)
        return value
    if not isinstance(value, str):
        msg = f"expected an RFC 3339 time such as {_EXAMPLE_TIME}, got {describe_value(value)}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    match = _RFC3339.match(value)
    if match is None:
        if _NO_ZONE.match(value):
            msg = (
                f"{shorten(value)} needs a time zone: write a full time with Z or an offset, "
                f"e.g. {_EXAMPLE_TIME}"
            )
        else:
            msg = f"{shorten(value)} is not an RFC 3339 time such as {_EXAMPLE_TIME}"
        raise ValueError(msg)
    fraction = match.group(4) or ""
    text = value.replace(fraction, fraction[:7]) if fraction else value
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError as exc:
        msg = f"{shorten(value)} is not a real time: {exc}"
        raise ValueError(msg) from None


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
"""A time written as RFC 3339 with a time zone: ``2026-12-01T08:00:00Z``."""


# Durations ---------------------------------------------------------------------------------

_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:([0-9]+)([wdhms]))+$")
_DURATION_PART = re.compile(r"([0-9]+)([wdhms])")
DURATION_PATTERN = r"^([0-9]+[wdhms])*0*[1-9][0-9]*[wdhms]([0-9]+[wdhms])*$"
"""The CRD's pattern: unit-suffixed numbers, at least one of them not zero."""

MAX_DURATION = timedelta(days=365_000)
"""Longest duration accepted (1000 years): far beyond any lifetime, far below the year 9999
where adding it to now would overflow."""

_MAX_DURATION_DIGITS = 12


def parse_duration(value: object) -> timedelta:
    """Parse ``7d``, ``36h``, ``1d12h``, ``90m`` or ``2w`` into a positive timedelta.

    Integers are not accepted: Rucio counts lifetimes in seconds while an old docstring said
    hours, and a bare number is exactly the ambiguity that mistake came from. Zero is refused
    because no field means "nothing" by it (``maxAge: 0s`` with ``action: Delete`` would select
    everything at once), and so is anything past :data:`MAX_DURATION`.
    """
    if isinstance(value, timedelta):
        seconds_total = value.total_seconds()
    else:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not _DURATION.match(text):
            shown = shorten(value) if isinstance(value, str) else describe_value(value)
            msg = (
                f"invalid duration {shown}: use a number and a unit (w, d, h, m, s), "
                "for example 7d, 36h or 1d12h"
            )
            raise ValueError(msg)
        parts = _DURATION_PART.findall(text)
        if any(len(number.lstrip("0")) > _MAX_DURATION_DIGITS for number, _ in parts):
            seconds_total = math.inf
        else:
            seconds_total = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds_total <= 0:
        msg = f"{_shown_duration(value)} is not a positive duration; give a length such as 7d"
        raise ValueError(msg)
    if seconds_total > MAX_DURATION.total_seconds():
        msg = f"{_shown_duration(value)} is longer than 1000 years, the longest duration accepted"
        raise ValueError(msg)
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds_total)


def _shown_duration(value: object) -> str:
    return shorten(value) if isinstance(value, str) else str(value)


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the largest units that divide it exactly (``7d``, ``36h``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS.items():
        if unit == "w":
            continue
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A positive duration written as ``7d``, ``36h``, ``720h`` or ``1d12h``."""


# Sizes -------------------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "EB": 10**18,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
    "EiB": 2**60,
}
_SIZE = re.compile(r"^([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([KMGTPE]i?B|B)?$")
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([KMGTPE]i?B|B)?$"


def parse_size(value: object) -> int:
    """Parse ``500TiB``, ``2.5PB`` or a plain byte count into bytes (at most int64)."""
    if isinstance(value, bool):
        msg = f"invalid size {describe_value(value)}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic expects ValueError to report it
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            shown = shorten(value) if isinstance(value, str) else describe_value(value)
            msg = f"invalid size {shown}: use a number and a unit such as 500TiB, 2PB or 800GB"
            raise ValueError(msg)
        number, unit = match.groups()
        size = int(Decimal(number) * _SIZE_UNITS[unit or ""])
    if size < 0:
        msg = f"invalid size {value}: must not be negative"
        raise ValueError(msg)
    if size > INT64_MAX:
        msg = f"size {shorten(str(value))} is more than 8 EiB, the largest Kubernetes integer"
        raise ValueError(msg)
    return size


def format_size(value: int) -> str:
    """Render bytes in the largest binary unit that divides them exactly."""
    for unit in ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"):
        size = _SIZE_UNITS[unit]
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}B"


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema({"type": "string", "pattern": SIZE_PATTERN}),
]
"""A size written as ``500TiB``, ``2PB`` or ``800GB`` (decimal and binary units)."""


# RSE expressions and DIDs ------------------------------------------------------------------


def _validate_rse_expression(value: object) -> str:
    if not isinstance(value, str):
        msg = f"expected an RSE expression (a string), got {describe_value(value)}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    try:
        canonical(value)
    except RSEExpressionError as exc:
        msg = f"invalid RSE expression {shorten(value)}: {exc}"
        raise ValueError(msg) from None
    return value


RSEExpression = Annotated[
    str,
    BeforeValidator(_validate_rse_expression),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_LENGTH}),
]
"""A Rucio RSE expression such as ``site=IN2P3&type=TAPE`` (validated by Steward's parser)."""

NAME_WILDCARD_PATTERN = r"^[/A-Za-z0-9*][/A-Za-z0-9._\-*]*$"
"""A Rucio DID name with ``*`` wildcards: the characters of Rucio's name schema
(``rucio.common.schema.generic.NAME``: a letter, digit or ``/`` first, then letters, digits,
``/``, ``.``, ``-``, ``_``), and ``*`` anywhere."""

NAME_WILDCARD_MAX_LENGTH = 250
"""Longest name pattern: Rucio's ``NAME_LENGTH``."""

_NAME_WILDCARD = re.compile(NAME_WILDCARD_PATTERN)
_NAME_CHARACTER = re.compile(r"[/A-Za-z0-9._\-*]")


def _validate_name_wildcard(value: object) -> object:
    if not isinstance(value, str):
        msg = f"expected a DID name pattern (a string), got {describe_value(value)}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    if not value:
        msg = "the name pattern is empty; give a name such as 'w46-*' or leave 'name' out"
        raise ValueError(msg)
    if len(value) > NAME_WILDCARD_MAX_LENGTH:
        msg = (
            f"the name pattern is {len(value)} characters long; Rucio names have at most "
            f"{NAME_WILDCARD_MAX_LENGTH}"
        )
        raise ValueError(msg)
    if not _NAME_WILDCARD.fullmatch(value):
        position, character = next(
            (i, c)
            for i, c in enumerate(value)
            if not _NAME_CHARACTER.match(c) or (i == 0 and c in "._-")
        )
        msg = (
            f"{shorten(value)} is not a Rucio name pattern: {character!r} at position "
            f"{position + 1} is not allowed there (Rucio names are letters, digits, '/', '.', "
            "'-' and '_', starting with a letter, digit or '/'; '*' matches any characters)"
        )
        raise ValueError(msg)
    return value


NameWildcard = Annotated[
    str,
    BeforeValidator(_validate_name_wildcard),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_WILDCARD_MAX_LENGTH,
            "pattern": NAME_WILDCARD_PATTERN,
        }
    ),
]
"""A Rucio DID name pattern such as ``LSSTCam-20261122-*``, as ``rucio list-dids`` takes it."""


def name_wildcard_regex(pattern: str) -> str:
    """An anchored regular expression matching exactly the names ``pattern`` matches.

    ``*`` matches any run of characters (none included) and every other character only
    itself, case-sensitively: what Rucio's ``LIKE`` makes of the pattern on PostgreSQL (it
    turns ``*`` into ``%`` and escapes ``_``), and what its transmogrifier needs in a
    subscription's ``pattern`` (a regular expression applied with ``re.match``, which only
    anchors the start). A valid Rucio name has no line break, so ``$`` ends it.
    """
    return "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"


def names_may_overlap(first: str | None, second: str | None) -> bool:
    """Whether some DID name matches both name patterns (None: no pattern, every name).

    Decided from the patterns alone, so ``steward validate`` can tell ``w46-*`` from
    ``w47-*`` without Rucio. A pattern without ``*`` is one name: the other pattern matches
    it or not. Two patterns with ``*`` share a name exactly when their heads (before the
    first ``*``) are prefixes of one another and their tails (after the last ``*``) suffixes
    of one another: the longer head, then every middle part of both, then the longer tail
    is such a name.
    """
    if first is None or second is None:
        return True
    if "*" not in first:
        return re.match(name_wildcard_regex(second), first) is not None
    if "*" not in second:
        return re.match(name_wildcard_regex(first), second) is not None
    heads = sorted((first.split("*")[0], second.split("*")[0]), key=len)
    tails = sorted((first.split("*")[-1], second.split("*")[-1]), key=len)
    return heads[1].startswith(heads[0]) and tails[1].endswith(tails[0])


DID_PATTERN = r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-/]+$"


DID = Annotated[str, Field(pattern=DID_PATTERN)]
"""A Rucio data identifier, ``scope:name``."""


class DIDType(StrEnum):
    """Rucio DID types that rules and subscriptions apply to."""

    FILE = "FILE"
    DATASET = "DATASET"
    CONTAINER = "CONTAINER"


class DataSelector(SpecModel):
    """Which data a policy applies to: explicit DIDs, or a filter on one scope.

    A filter is a metadata ``match``, a ``name`` pattern, or both (data must then satisfy
    both). It is continuous: data that matches later is selected too.
    """

    dids: list[DID] | None = None
    """Explicit data identifiers (``scope:name``). Exclusive with ``match`` and ``name``."""

    scope: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Rucio scope to search when selecting by metadata or name (for example ``raw``)."""

    match: dict[str, str] | None = None
    """Metadata that selected data must have, e.g. ``{datatype: raw, instrument: LSSTCam}``."""

    name: NameWildcard | None = None
    """DID name pattern that selected data must match, e.g. ``LSSTCam-20261122-*``: ``*``
    matches any characters, everything else only itself (case-sensitively), as in
    ``rucio list-dids raw:LSSTCam-20261122-*``. Rucio applies it in the listing."""

    exclude: list[dict[str, str]] = Field(default_factory=list)
    """Metadata filters of data to leave out even if it matches (e.g. ``{archive: "false"}``)."""

    did_type: DIDType = DIDType.DATASET
    """DID type selected by a filter; Rucio subscriptions only see datasets and containers."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DataSelector:
        filtered = self.match is not None or self.name is not None
        if self.dids is None and not filtered:
            msg = (
                "give 'dids' (explicit list), or 'scope' with 'match' (metadata filter) "
                "and/or 'name' (name pattern)"
            )
            raise ValueError(msg)
        if self.dids is not None and filtered:
            field = "match" if self.match is not None else "name"
            msg = (
                f"'dids' (explicit list) cannot be combined with '{field}'; give either the "
                "list or a filter ('match' and/or 'name')"
            )
            raise LocatedValueError(msg, field)
        if filtered and self.scope is None:
            field = "match" if self.match is not None else "name"
            msg = f"a filter ('{field}') needs the 'scope' to search"
            raise LocatedValueError(msg, field)
        if self.match is not None and "name" in self.match:
            msg = "select names with the 'name' field (a pattern), not a 'name' metadata key"
            raise LocatedValueError(msg, "match", "name")
        if self.dids is not None and self.exclude:
            msg = "'exclude' applies to filters only; remove it or use 'match' or 'name'"
            raise LocatedValueError(msg, "exclude")
        return self

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.dids) != (has(self.match) || has(self.name))",
            "message": "give 'dids', or 'scope' with 'match' and/or 'name'",
        },
        {
            "rule": "!(has(self.match) || has(self.name)) || has(self.scope)",
            "message": "a filter ('match' or 'name') needs 'scope'",
        },
        {
            "rule": "!has(self.match) || !('name' in self.match)",
            "message": "select names with the 'name' field, not a 'name' metadata key",
        },
    ]


# Status ------------------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CamelModel):
    """A Kubernetes-convention status condition."""

    type: str
    """Condition type, e.g. Ready, Progressing, Degraded."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Machine-readable CamelCase reason for the last transition."""

    message: str = ""
    """Human-readable details."""

    last_transition_time: Timestamp
    """When the status last changed."""

    observed_generation: Int | None = None
    """The ``metadata.generation`` this condition was computed from."""


# Metadata ----------------------------------------------------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL_MAX = 63
_DNS_SUBDOMAIN_MAX = 253
_ANNOTATIONS_MAX_BYTES = 256 * 1024


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (label or annotation key), or None.

    The rules of ``IsQualifiedName`` in k8s.io/apimachinery: an optional DNS-subdomain prefix
    and ``/``, then a name of at most 63 alphanumerics, ``-``, ``_`` and ``.`` that starts and
    ends with an alphanumeric.
    """
    prefix, slash, name = key.rpartition("/")
    if slash:
        problem = _prefix_problem(prefix)
        if problem:
            return problem
    if not name:
        return "the name part is empty"
    if len(name) > _DNS_LABEL_MAX:
        return f"the name part is {len(name)} characters long (at most {_DNS_LABEL_MAX})"
    if not _QUALIFIED_NAME.match(name):
        return (
            "the name part must be alphanumerics, '-', '_' or '.', starting and ending with an "
            f"alphanumeric{non_ascii_note(name)}"
        )
    return None


def _prefix_problem(prefix: str) -> str | None:
    if not prefix:
        return "the prefix before '/' is empty"
    if "/" in prefix:
        return "a key has at most one '/'"
    if len(prefix) > _DNS_SUBDOMAIN_MAX or not _DNS_SUBDOMAIN.match(prefix):
        return (
            f"the prefix {shorten(prefix)} is not a DNS subdomain (lower-case alphanumerics, "
            f"'-' and '.', at most {_DNS_SUBDOMAIN_MAX} characters){non_ascii_note(prefix)}"
        )
    return None


class Metadata(CamelModel):
    """Kubernetes ``ObjectMeta``: the fields a policy file sets, and those the server sets.

    Unknown keys are errors (a misspelt ``namespace`` would otherwise move the resource to the
    default namespace in silence), and each field is checked as the API server checks it.
    """

    model_config = ConfigDict(extra="forbid")

    name: Name
    """Resource name."""

    namespace: str | None = Field(default=None, max_length=_DNS_LABEL_MAX)
    """Namespace of namespaced kinds: a DNS label."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels: qualified-name keys, values of at most 63 alphanumerics, ``-``, ``_``, ``.``."""

    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations: qualified-name keys, at most 256 KiB in all."""

    generate_name: str | None = None
    """Set by the API server's clients; unused by Steward."""

    generation: Int | None = None
    """Set by the API server."""

    uid: str | None = None
    """Set by the API server."""

    resource_version: str | None = None
    """Set by the API server."""

    creation_timestamp: Timestamp | None = None
    """Set by the API server."""

    deletion_timestamp: Timestamp | None = None
    """Set by the API server."""

    deletion_grace_period_seconds: Int | None = None
    """Set by the API server."""

    finalizers: list[str] = Field(default_factory=list)
    """Finalizers (Steward's operator adds its own)."""

    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    """Owners, for garbage collection."""

    managed_fields: list[dict[str, Any]] = Field(default_factory=list)
    """Server-side apply's field ownership, set by the API server."""

    self_link: str | None = None
    """Deprecated; set by old API servers."""

    @model_validator(mode="after")
    def _as_the_api_server_checks(self) -> Metadata:
        if self.namespace is not None and not DNS_LABEL.match(self.namespace):
            msg = (
                f"namespace {shorten(self.namespace)} is not a DNS label (lower-case "
                "alphanumerics and '-', starting and ending with an alphanumeric)"
                + non_ascii_note(self.namespace)
            )
            raise LocatedValueError(msg, "namespace")
        for key, value in self.labels.items():
            problem = qualified_name_problem(key)
            if problem:
                msg = f"label key {shorten(key)} is not valid: {problem}"
                raise LocatedValueError(msg, "labels", key)
            if len(value) > _DNS_LABEL_MAX or not _LABEL_VALUE.match(value):
                msg = (
                    f"label value {shorten(value)} is not valid: at most {_DNS_LABEL_MAX} "
                    "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                    + non_ascii_note(value)
                )
                raise LocatedValueError(msg, "labels", key)
        for key in self.annotations:
            problem = qualified_name_problem(key.lower())
            if problem:
                msg = f"annotation key {shorten(key)} is not valid: {problem}"
                raise LocatedValueError(msg, "annotations", key)
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.annotations.items())
        if size > _ANNOTATIONS_MAX_BYTES:
            msg = f"annotations hold {size:,} bytes; Kubernetes allows 256 KiB in all"
            raise LocatedValueError(msg, "annotations")
        return self


class Resource(CamelModel):
    """Fields common to every Steward resource document."""

    model_config = ConfigDict(extra="forbid")

    api_version: str
    """Must be ``steward.lsst.io/v1alpha1``."""

    kind: str
    """The kind."""

    metadata: Metadata
    """Object metadata."""

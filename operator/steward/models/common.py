"""Types shared by every kind: the base model, durations, sizes, DIDs, selectors, conditions.

Every field carries a docstring: pydantic turns it into the JSON-schema description, and
``steward crds`` puts that into the CRD, so ``kubectl explain`` shows it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar

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

from .rse_expression import RSEExpressionError, canonical

__all__ = [
    "DID",
    "ByteSize",
    "CamelModel",
    "Condition",
    "ConditionStatus",
    "DIDType",
    "DataSelector",
    "Duration",
    "LocatedValueError",
    "Metadata",
    "Name",
    "RSEExpression",
    "Resource",
    "SpecModel",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
"""Resource names: lower-case DNS labels starting with a letter (repository convention)."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
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


# Durations ---------------------------------------------------------------------------------

_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)([wdhms]))+$")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
DURATION_PATTERN = r"^([0-9]+[wdhms])+$"


def parse_duration(value: object) -> timedelta:
    """Parse ``7d``, ``36h``, ``1d12h``, ``90m`` or ``2w`` into a timedelta.

    Integers are not accepted: Rucio counts lifetimes in seconds while an old docstring said
    hours, and a bare number is exactly the ambiguity that mistake came from.
    """
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        msg = (
            f"invalid duration {value!r}: use a number and a unit (w, d, h, m, s), "
            "for example 7d, 36h or 1d12h"
        )
        raise ValueError(msg)
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value.strip()))
    return timedelta(seconds=seconds)


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
"""A duration written as ``7d``, ``36h``, ``720h`` or ``1d12h``."""


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
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]i?B|B)?$")
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([KMGTPE]i?B|B)?$"


def parse_size(value: object) -> int:
    """Parse ``500TiB``, ``2.5PB`` or a plain byte count into bytes."""
    if isinstance(value, bool):
        msg = f"invalid size {value!r}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic expects ValueError to report it
    if isinstance(value, int):
        if value < 0:
            msg = f"invalid size {value}: must not be negative"
            raise ValueError(msg)
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        msg = f"invalid size {value!r}: use a number and a unit such as 500TiB, 2PB or 800GB"
        raise ValueError(msg)
    number, unit = match.groups()
    return int(Decimal(number) * _SIZE_UNITS[unit or ""])


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
        msg = f"an RSE expression must be a string, not {type(value).__name__}"
        raise TypeError(msg)
    try:
        canonical(value)
    except RSEExpressionError as exc:
        msg = f"invalid RSE expression {value!r}: {exc}"
        raise ValueError(msg) from exc
    return value


RSEExpression = Annotated[
    str,
    BeforeValidator(_validate_rse_expression),
    WithJsonSchema({"type": "string", "minLength": 1}),
]
"""A Rucio RSE expression such as ``site=IN2P3&type=TAPE`` (validated by Steward's parser)."""

DID_PATTERN = r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-/]+$"


DID = Annotated[str, Field(pattern=DID_PATTERN)]
"""A Rucio data identifier, ``scope:name``."""


class DIDType(StrEnum):
    """Rucio DID types that rules and subscriptions apply to."""

    FILE = "FILE"
    DATASET = "DATASET"
    CONTAINER = "CONTAINER"


class DataSelector(SpecModel):
    """Which data a policy applies to: explicit DIDs, or a metadata filter.

    A metadata filter is continuous: data that matches later is selected too.
    """

    dids: list[DID] | None = None
    """Explicit data identifiers (``scope:name``). Exclusive with ``match``."""

    scope: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Rucio scope to search when selecting by metadata (for example ``raw``)."""

    match: dict[str, str] | None = None
    """Metadata that selected data must have, e.g. ``{datatype: raw, instrument: LSSTCam}``."""

    exclude: list[dict[str, str]] = Field(default_factory=list)
    """Metadata filters of data to leave out even if it matches (e.g. ``{archive: "false"}``)."""

    did_type: DIDType = DIDType.DATASET
    """DID type selected by a metadata filter; Rucio subscriptions only see datasets and
    containers."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DataSelector:
        if (self.dids is None) == (self.match is None):
            msg = "give exactly one of 'dids' (explicit list) or 'match' (metadata filter)"
            raise ValueError(msg)
        if self.match is not None and self.scope is None:
            msg = "a metadata filter ('match') needs the 'scope' to search"
            raise LocatedValueError(msg, "match")
        if self.dids is not None and self.exclude:
            msg = "'exclude' applies to metadata filters only; remove it or use 'match'"
            raise LocatedValueError(msg, "exclude")
        return self

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.dids) != has(self.match)",
            "message": "give exactly one of 'dids' or 'match'",
        },
        {
            "rule": "!has(self.match) || has(self.scope)",
            "message": "a metadata filter ('match') needs 'scope'",
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

    last_transition_time: datetime
    """When the status last changed."""

    observed_generation: int | None = None
    """The ``metadata.generation`` this condition was computed from."""


class Metadata(CamelModel):
    """The parts of ``metadata`` Steward reads from policy files."""

    model_config = ConfigDict(extra="allow")

    name: Name
    """Resource name."""

    namespace: str | None = None
    """Namespace of namespaced kinds."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels."""

    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations."""

    generation: int | None = None
    """Set by the API server."""

    uid: str | None = None
    """Set by the API server."""


class Resource(CamelModel):
    """Fields common to every Steward resource document."""

    model_config = ConfigDict(extra="forbid")

    api_version: str
    """Must be ``steward.lsst.io/v1alpha1``."""

    kind: str
    """The kind."""

    metadata: Metadata
    """Object metadata."""

"""Every field of every kind uses the strict types of steward.models.common.

Pydantic's lax ``int``, ``bool``, ``float`` and ``datetime`` accept what the API server refuses
(``copies: "2"``, ``dryRun: "yes"``, ``notBefore: 1700000000``), so ``steward validate`` would
pass a file ``kubectl apply`` rejects. The module docstring of steward.models.common lists the
types to use; this test fails for any field, in any kind, that declares one of those four bare.
"""

from datetime import datetime, timedelta
from typing import Annotated, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, BeforeValidator

from steward.models import KINDS

LAX = (int, bool, float, datetime, timedelta)


def _ours(metadata) -> bool:
    return any(
        isinstance(m, BeforeValidator) and m.func.__module__.startswith("steward.models.")
        for m in metadata
    )


def _lax(annotation, *, guarded: bool) -> list[str]:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return _lax(base, guarded=guarded or _ours(metadata))
    if isinstance(annotation, type) and annotation in LAX:
        return [] if guarded else [annotation.__name__]
    if get_origin(annotation) is Literal and any(
        isinstance(value, int | float) for value in get_args(annotation)
    ):
        return [] if guarded else [repr(annotation)]
    return [name for arg in get_args(annotation) for name in _lax(arg, guarded=guarded)]


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in _nested(field.annotation):
            _models(arg, seen)


def _nested(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _nested(arg)]


def _all_models() -> list[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    for info in KINDS:
        _models(info.model, seen)
    return sorted(seen, key=lambda m: m.__name__)


def test_the_walk_finds_nested_models():
    names = {m.__name__ for m in _all_models()}
    assert {"Metadata", "TransferWindow", "Downtime", "Protocol", "Step", "Condition"} <= names


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_no_field_uses_a_lax_type(model):
    lax = {
        name: found
        for name, field in model.model_fields.items()
        if (found := _lax(field.annotation, guarded=_ours(field.metadata)))
    }
    assert lax == {}, (
        f"{model.__name__}: use Int, Bool, Number, Timestamp or Duration from "
        f"steward.models.common for {lax}"
    )


def test_the_check_catches_a_lax_field():
    class Lax(BaseModel):
        count: int | None = None
        counts: dict[str, int] = {}
        always: Literal[True] = True

    assert _lax(Lax.model_fields["always"].annotation, guarded=False) == ["typing.Literal[True]"]
    assert _lax(Lax.model_fields["count"].annotation, guarded=False) == ["int"]
    assert _lax(Lax.model_fields["counts"].annotation, guarded=False) == ["int"]
